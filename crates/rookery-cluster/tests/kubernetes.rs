//! Kubernetes discovery (feature `kubernetes`, decision 0014) against kube's mock
//! client service: the test plays the API server with recorded EndpointSlice responses
//! (tests/fixtures/endpointslices: a list, watch events as newline-delimited JSON, a 410
//! Gone, API errors) and checks the requests and the ready sets published. A full test
//! needs a real cluster (docs/operations/cluster.md, "Kubernetes discovery").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use rookery_cluster::kubernetes::KubernetesDiscovery;
use rookery_cluster::{KubernetesConfig, Membership, ReadyFilter, Role, View};
use tokio::sync::watch;
use tower_test::mock::{Handle, SendResponse};

type Api = Handle<Request<Body>, Response<Body>>;

/// Bound of every wait (a request from the watcher, a change on a channel). The
/// watcher's backoff after an error is about a second.
const WAIT: Duration = Duration::from_secs(15);

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/chat/endpointslices";
const BOTH: &str = "kubernetes.io/service-name in (rookery-cm,rookery-session)";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/endpointslices/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(namespace: &str) -> KubernetesConfig {
    KubernetesConfig {
        enabled: true,
        namespace: namespace.into(),
        ..KubernetesConfig::default()
    }
}

/// A discovery whose client talks to the returned mock API server.
fn discovery(cfg: &KubernetesConfig) -> (KubernetesDiscovery, Api) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (KubernetesDiscovery::with_client(client, cfg), handle)
}

/// The next request the watcher sends, its path and its decoded query.
async fn next_request(
    api: &mut Api,
) -> (
    String,
    BTreeMap<String, String>,
    SendResponse<Response<Body>>,
) {
    let (req, send) = tokio::time::timeout(WAIT, api.next_request())
        .await
        .expect("the watcher sends a request in time")
        .expect("the client is alive");
    assert_eq!(req.method(), http::Method::GET);
    let query = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    (req.uri().path().to_owned(), query, send)
}

/// application/x-www-form-urlencoded decoding ('+' is a space, %XX a byte).
fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("hex escape"));
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}

fn respond(send: SendResponse<Response<Body>>, status: StatusCode, body: String) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.into_bytes()))
        .unwrap();
    send.send_response(response);
}

/// Expects the initial list request (no watch, no resourceVersion: a consistent read,
/// paged).
async fn expect_list(api: &mut Api, path: &str, selector: &str) -> SendResponse<Response<Body>> {
    let (p, q, send) = next_request(api).await;
    assert_eq!(p, path);
    assert_eq!(q.get("labelSelector").map(String::as_str), Some(selector));
    assert_eq!(q.get("limit").map(String::as_str), Some("500"));
    assert!(!q.contains_key("watch"), "{q:?}");
    assert!(!q.contains_key("resourceVersion"), "{q:?}");
    send
}

/// Expects a watch request from `rv`.
async fn expect_watch(
    api: &mut Api,
    path: &str,
    selector: &str,
    rv: &str,
) -> SendResponse<Response<Body>> {
    let (p, q, send) = next_request(api).await;
    assert_eq!(p, path);
    assert_eq!(q.get("watch").map(String::as_str), Some("true"), "{q:?}");
    assert_eq!(q.get("resourceVersion").map(String::as_str), Some(rv));
    assert_eq!(q.get("labelSelector").map(String::as_str), Some(selector));
    assert_eq!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert!(q.contains_key("timeoutSeconds"));
    send
}

fn set(names: &[&str]) -> Option<BTreeSet<String>> {
    Some(names.iter().map(|s| s.to_string()).collect())
}

async fn changed(rx: &mut watch::Receiver<ReadyFilter>) -> ReadyFilter {
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("a change in time")
        .expect("the discovery is alive");
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn list_then_watch_then_relist() {
    let (d, mut api) = discovery(&config("chat"));
    assert_eq!(d.namespace(), "chat");
    let mut ready = d.ready();
    // Before the first list: nobody of either role.
    assert_eq!(*ready.borrow_and_update(), ReadyFilter::nobody(true, true));

    let send = expect_list(&mut api, SLICES, BOTH).await;
    assert!(!d.wait_synced(Duration::ZERO).await);
    respond(send, StatusCode::OK, fixture("list.json"));
    // Two session slices merged; session-2 is not ready yet; the endpoint without a
    // targetRef is ignored.
    let f = changed(&mut ready).await;
    assert_eq!(
        f.session,
        set(&[
            "rookery-session-0",
            "rookery-session-1",
            "rookery-session-3"
        ])
    );
    assert_eq!(f.cm, set(&["rookery-cm-0", "rookery-cm-1"]));
    assert!(d.wait_synced(WAIT).await);

    // Each watch response below ends its stream; the watcher then watches again from
    // the last resourceVersion it saw, so the next request also proves that every event
    // of the previous response was applied.
    let send = expect_watch(&mut api, SLICES, BOTH, "41873").await;
    respond(send, StatusCode::OK, fixture("watch-1.jsonl"));
    // session-1 fails its readiness probe (not terminating): out; session-2 ready: in.
    // (A terminating pod stays in while it drains: the unit tests of the module.)
    let f = changed(&mut ready).await;
    assert_eq!(
        f.session,
        set(&[
            "rookery-session-0",
            "rookery-session-2",
            "rookery-session-3"
        ])
    );

    let send = expect_watch(&mut api, SLICES, BOTH, "41902").await;
    respond(send, StatusCode::OK, fixture("watch-2.jsonl"));
    // The second session slice is deleted: its pod goes with it.
    let f = changed(&mut ready).await;
    assert_eq!(f.session, set(&["rookery-session-0", "rookery-session-2"]));

    let send = expect_watch(&mut api, SLICES, BOTH, "41915").await;
    respond(send, StatusCode::OK, fixture("watch-3.jsonl"));
    // A second cm slice is merged in; cm-1 fails its readiness probe; then a bookmark.
    let send = expect_watch(&mut api, SLICES, BOTH, "41990").await;
    let f = ready.borrow_and_update().clone();
    assert_eq!(f.cm, set(&["rookery-cm-0", "rookery-cm-2"]));
    assert_eq!(f.session, set(&["rookery-session-0", "rookery-session-2"]));

    // The resourceVersion expired (410 Gone inside the watch stream): relist.
    respond(send, StatusCode::OK, fixture("watch-gone.jsonl"));
    let send = expect_list(&mut api, SLICES, BOTH).await;
    // The relist fails (API error): the last known sets stay in force.
    respond(
        send,
        StatusCode::INTERNAL_SERVER_ERROR,
        fixture("error-500.json"),
    );
    let send = expect_list(&mut api, SLICES, BOTH).await;
    assert!(!ready.has_changed().unwrap());
    assert_eq!(*ready.borrow(), f);
    // The relist replaces the whole state: cm-2's slice is gone, session-1 is back.
    respond(send, StatusCode::OK, fixture("relist.json"));
    let f = changed(&mut ready).await;
    assert_eq!(
        f.session,
        set(&[
            "rookery-session-0",
            "rookery-session-1",
            "rookery-session-2"
        ])
    );
    assert_eq!(f.cm, set(&["rookery-cm-0"]));
    let send = expect_watch(&mut api, SLICES, BOTH, "52340").await;

    // The API becomes unreachable: the watch cannot even start. Nothing changes.
    send.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    let _send = expect_watch(&mut api, SLICES, BOTH, "52340").await;
    assert!(!ready.has_changed().unwrap());
    assert_eq!(*ready.borrow(), f);
}

#[tokio::test]
async fn forbidden_until_rbac_exists_admits_nobody() {
    // Only the session Service; the namespace is the client's (the pod's own).
    let cfg = KubernetesConfig {
        cm_service: String::new(),
        ..config("")
    };
    let (d, mut api) = discovery(&cfg);
    assert_eq!(d.namespace(), "default");
    let path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let selector = "kubernetes.io/service-name=rookery-session";
    let mut ready = d.ready();
    let send = expect_list(&mut api, path, selector).await;
    respond(send, StatusCode::FORBIDDEN, fixture("forbidden.json"));
    // Retried after a backoff; meanwhile nobody is admitted, and cms are not filtered.
    let send = expect_list(&mut api, path, selector).await;
    assert!(!ready.has_changed().unwrap());
    assert_eq!(*ready.borrow(), ReadyFilter::nobody(true, false));
    assert!(!d.wait_synced(Duration::ZERO).await);
    // The list of namespace "chat" answers for "default" here: only the session
    // Service's slices count.
    respond(send, StatusCode::OK, fixture("list.json"));
    let f = changed(&mut ready).await;
    assert_eq!(
        f.session,
        set(&[
            "rookery-session-0",
            "rookery-session-1",
            "rookery-session-3"
        ])
    );
    assert_eq!(f.cm, None);
    assert!(d.wait_synced(WAIT).await);
    let _send = expect_watch(&mut api, path, selector, "41873").await;
}

fn nodes(v: &View) -> Vec<&str> {
    v.members.iter().map(|m| m.node.as_str()).collect()
}

async fn next_view(rx: &mut watch::Receiver<Arc<View>>) -> Arc<View> {
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("a new view in time")
        .expect("membership alive");
    rx.borrow_and_update().clone()
}

/// The combination: Redis says who is alive (and holds epochs), the EndpointSlices say
/// who is ready; the view holds members that are both.
#[tokio::test]
async fn view_keeps_only_ready_members() {
    let r = RedisServer::start();
    let redis = common::config(&r);
    let cfg = KubernetesConfig {
        cm_service: String::new(),
        ..config("chat")
    };
    let (d, mut api) = discovery(&cfg);
    let selector = "kubernetes.io/service-name=rookery-session";
    let join = |node: &'static str, role: Role| {
        let redis = redis.clone();
        let ready = d.ready();
        async move {
            Membership::join_with_readiness(&redis, node, &[role], "x:7400", 64, ready)
                .await
                .unwrap()
        }
    };
    // Before Kubernetes has answered: no session node is admitted, not even itself.
    let s0 = join("rookery-session-0", Role::Session).await;
    let s1 = join("rookery-session-1", Role::Session).await;
    let cm = join("cm-a", Role::Cm).await;
    let mut views = s0.watch();
    assert!(!s0.view().is_live("rookery-session-0", s0.me().epoch));
    assert!(s0.view().owned_shards("rookery-session-0").is_empty());
    assert!(!s0.fenced());

    // session-0 and session-1 are ready; session-2 and -3 are ready in Kubernetes but
    // not members in Redis: a view only holds live Redis members.
    let send = expect_list(&mut api, SLICES, selector).await;
    respond(send, StatusCode::OK, fixture("list.json"));
    let v = loop {
        let v = next_view(&mut views).await;
        if v.members.len() == 3 {
            break v;
        }
    };
    assert_eq!(
        nodes(&v),
        ["cm-a", "rookery-session-0", "rookery-session-1"]
    );
    assert_eq!(
        v.owned_shards("rookery-session-0").len() + v.owned_shards("rookery-session-1").len(),
        64
    );

    // session-1 fails its readiness probe: it leaves the view at once, with its Redis lease still
    // alive (the heartbeat would not drop it before ttl_ms).
    let send = expect_watch(&mut api, SLICES, selector, "41873").await;
    respond(send, StatusCode::OK, fixture("watch-1.jsonl"));
    let v = next_view(&mut views).await;
    assert_eq!(nodes(&v), ["cm-a", "rookery-session-0"]);
    assert_eq!(v.owned_shards("rookery-session-0").len(), 64);
    assert!(!s1.fenced());
    // Redis still has it: its own view says the same as everyone's.
    let mut v1 = s1.watch();
    let own = v1.borrow_and_update().clone();
    let own = if own.member("rookery-session-1").is_some() {
        next_view(&mut v1).await
    } else {
        own
    };
    assert!(own.member("rookery-session-1").is_none());
    assert!(own.owned_shards("rookery-session-1").is_empty());

    // The cm sees the same.
    let mut cm_views = cm.watch();
    tokio::time::timeout(
        WAIT,
        cm_views.wait_for(|v| nodes(v) == ["cm-a", "rookery-session-0"]),
    )
    .await
    .expect("the cm's view in time")
    .unwrap();

    // The API goes away (the client sees an error): the last set stays in force.
    let send = expect_watch(&mut api, SLICES, selector, "41902").await;
    drop(send);
    let _send = expect_watch(&mut api, SLICES, selector, "41902").await;
    assert_eq!(nodes(&s0.view()), ["cm-a", "rookery-session-0"]);
    drop(d);
}
