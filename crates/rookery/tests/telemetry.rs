//! Traces (docs/decisions/0013-telemetry.md): an OTLP/gRPC collector in the
//! test takes the spans the servers export, and one message yields one
//! trace whose spans form a parent chain over every hop — across four
//! processes in a cluster, and in one process on a single node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rookery_e2e::cluster::Cluster;
use rookery_e2e::cluster::user_on;
use rookery_e2e::{RawClient, TestServer};
use tokio::sync::watch;

/// How long the spans of one message may take to reach the collector: the
/// export delay is short (100 ms in the cluster, the shutdown flush on one
/// node), the rest is slack for a loaded machine.
const SPANS_WAIT: Duration = Duration::from_secs(60);

/// One span as the collector received it, with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    instance: String,
    roles: String,
    name: String,
    kind: SpanKind,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// An OTLP/gRPC trace collector on loopback that keeps what it receives.
#[derive(Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    /// Bumped at every export.
    exports: watch::Sender<u64>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = attrs(
                rs.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            let res = |k: &str| resource.get(k).cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Got {
                        service: res("service.name"),
                        instance: res("service.instance.id"),
                        roles: res("rookery.roles"),
                        name: s.name.clone(),
                        kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                        attributes: attrs(&s.attributes),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(got);
        self.exports.send_modify(|n| *n += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on 127.0.0.1, a free port; returns the collector and its
    /// `http://` endpoint.
    async fn start() -> (Collector, String) {
        let c = Collector {
            spans: Arc::default(),
            exports: watch::Sender::new(0),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        (c, format!("http://{addr}"))
    }

    /// Waits (at most [`SPANS_WAIT`]) until `found` picks a result from the
    /// spans received so far; checked again at every export.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Got]) -> Option<T>) -> T {
        let mut exports = self.exports.subscribe();
        let r = tokio::time::timeout(SPANS_WAIT, async {
            loop {
                exports.borrow_and_update();
                if let Some(t) = found(&self.spans.lock().unwrap()) {
                    return t;
                }
                exports.changed().await.unwrap();
            }
        })
        .await;
        match r {
            Ok(t) => t,
            Err(_) => panic!(
                "{what}: not received in {SPANS_WAIT:?}; spans:\n{}",
                dump(&self.spans.lock().unwrap())
            ),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dump(spans: &[Got]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {:?} {} trace={} span={} parent={}",
                s.instance,
                s.name,
                s.kind,
                s.roles,
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The spans of the trace that has a span named `leaf` on `instance`,
/// once it holds `n` spans.
fn trace_of(spans: &[Got], leaf: &str, instance: &str, n: usize) -> Option<Vec<Got>> {
    let leaf = spans
        .iter()
        .find(|s| s.name == leaf && s.instance == instance)?;
    let trace: Vec<Got> = spans
        .iter()
        .filter(|s| s.trace_id == leaf.trace_id)
        .cloned()
        .collect();
    (trace.len() >= n).then_some(trace)
}

/// The chain of parents from the span named `leaf`, leaf first, up to the
/// root (whose parent id is empty); fails if a parent is missing.
fn chain(trace: &[Got], leaf: &str) -> Vec<Got> {
    let by_id: HashMap<&[u8], &Got> = trace.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let mut s = *trace
        .iter()
        .find(|s| s.name == leaf)
        .as_ref()
        .expect("the leaf span");
    let mut out = vec![s.clone()];
    while !s.parent_span_id.is_empty() {
        s = by_id
            .get(s.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("parent of {} missing:\n{}", s.name, dump(trace)));
        out.push(s.clone());
        assert!(out.len() < 32, "a cycle:\n{}", dump(trace));
    }
    out
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rookery"))
}

async fn login(c: &Cluster, cm: &str, user: &str) -> RawClient {
    let mut r = RawClient::connect(c.cm_addr(cm)).await;
    r.open("localhost").await;
    r.starttls("localhost").await;
    r.auth_scram("SCRAM-SHA-256", user, "pw").await.unwrap();
    r.open("localhost").await;
    r.bind(Some("r")).await;
    r
}

/// One message from a client on cm1 (account owned by session1) to a
/// client on cm2 (account owned by session2): its spans share one trace id
/// and form one parent chain cm1 → session1 → session2 → cm2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_the_cluster() {
    let (collector, endpoint) = Collector::start().await;
    let c = Cluster::start_with(
        bin(),
        2,
        2,
        "",
        "",
        &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"rookery-test\"\n"),
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    c.wait_settled().await;
    let (a, b) = (user_on("ta", "session1"), user_on("tb", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a).await;
    let mut cb = login(&c, "cm2", &b).await;
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='traced' type='chat'><body>hi</body></message>"
    ))
    .await;
    let m = cb.next_message().await;
    assert_eq!(m.attr("id"), Some("traced"), "{m}");

    // The trace of the write to b's stream on cm2, once all nine hops of
    // it are in.
    let trace = collector
        .wait_for("the message's trace", |spans| {
            trace_of(spans, "c2s.write", "cm2", 9)
        })
        .await;
    let got = chain(&trace, "c2s.write");
    let steps: Vec<(&str, SpanKind, &str)> = got
        .iter()
        .map(|s| (s.name.as_str(), s.kind, s.instance.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("c2s.write", SpanKind::Producer, "cm2"),
            (
                "rookery.cm.v1.ConnectionManager/Deliver",
                SpanKind::Server,
                "cm2"
            ),
            (
                "rookery.cm.v1.ConnectionManager/Deliver",
                SpanKind::Client,
                "session2"
            ),
            (
                "rookery.session.v1.Session/Forward",
                SpanKind::Server,
                "session2"
            ),
            (
                "rookery.session.v1.Session/Forward",
                SpanKind::Client,
                "session1"
            ),
            ("session.route", SpanKind::Internal, "session1"),
            (
                "rookery.session.v1.Session/Route",
                SpanKind::Server,
                "session1"
            ),
            ("rookery.session.v1.Session/Route", SpanKind::Client, "cm1"),
            ("c2s.receive", SpanKind::Server, "cm1"),
        ],
        "\n{}",
        dump(&trace)
    );
    for s in &got {
        assert_eq!(s.trace_id, got[0].trace_id);
        assert_eq!(s.service, "rookery-test");
        let roles = if s.instance.starts_with("cm") {
            "cm"
        } else {
            "session"
        };
        assert_eq!(s.roles, roles, "{s:?}");
    }
    let root = got.last().unwrap();
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.attributes["xmpp.stanza.kind"], "message");
    assert_eq!(root.attributes["rookery.node"], "cm1");
    let route = &got[7];
    assert_eq!(route.attributes["rpc.system"], "grpc");
    assert_eq!(route.attributes["rpc.grpc.status_code"], "0");
    drop((ca, cb));
}

/// On one node the same logical hops give connected spans in-process:
/// receive → route → write, one trace, exported at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_on_a_single_node() {
    let (collector, endpoint) = Collector::start().await;
    let mut server = TestServer::start_with(|c| {
        c.telemetry.otlp_endpoint = endpoint.clone();
        c.cluster.node = "solo".into();
    })
    .await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut a = server.login("alice", "pw", "r").await;
    let mut b = server.login("bob", "pw", "r").await;
    a.send("<message to='bob@localhost/r' id='traced' type='chat'><body>hi</body></message>")
        .await;
    let m = b.next_message().await;
    assert_eq!(m.attr("id"), Some("traced"), "{m}");
    // The default export delay is 5 s: shutting down exports what is
    // buffered (that is tested too).
    server.stop().await;
    let trace = collector
        .wait_for("the message's trace", |spans| {
            trace_of(spans, "c2s.write", "solo", 3)
        })
        .await;
    let got = chain(&trace, "c2s.write");
    let steps: Vec<(&str, SpanKind)> = got.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        steps,
        vec![
            ("c2s.write", SpanKind::Producer),
            ("session.route", SpanKind::Internal),
            ("c2s.receive", SpanKind::Server),
        ],
        "\n{}",
        dump(&trace)
    );
    for s in &got {
        assert_eq!(
            (s.service.as_str(), s.instance.as_str()),
            ("rookery", "solo")
        );
        assert_eq!(s.roles, "single");
    }
    assert_eq!(got[2].attributes["xmpp.stanza.kind"], "message");
    assert_eq!(got[2].attributes["rookery.node"], "solo");
    drop((a, b));

    // Sampled out at the root (ratio 0): no hop makes a span. Shutdown
    // returns once every export is done, so the count is final then.
    let before = collector.spans.lock().unwrap().len();
    let mut server = TestServer::start_with(|c| {
        c.telemetry.otlp_endpoint = endpoint.clone();
        c.telemetry.sample_ratio = 0.0;
    })
    .await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut a = server.login("alice", "pw", "r").await;
    let mut b = server.login("bob", "pw", "r").await;
    a.send("<message to='bob@localhost/r' id='unsampled'><body>hi</body></message>")
        .await;
    assert_eq!(b.next_message().await.attr("id"), Some("unsampled"));
    server.stop().await;
    let after = collector.spans.lock().unwrap().len();
    assert_eq!(
        before,
        after,
        "\n{}",
        dump(&collector.spans.lock().unwrap())
    );
    drop((a, b));
}
