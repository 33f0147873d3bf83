//! Cluster mode with real processes (docs/decisions/0010-cluster.md): a
//! Redis server, two session nodes and two connection managers on
//! loopback, driven by stock slixmpp and by raw clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rookery_cluster::shard_of;
use rookery_e2e::RawClient;
use rookery_e2e::cluster::Cluster;
use rookery_e2e::cluster::user_on;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rookery"))
}

async fn login(c: &Cluster, cm: &str, user: &str, resource: &str) -> RawClient {
    let mut r = RawClient::connect(c.cm_addr(cm)).await;
    r.open("localhost").await;
    r.starttls("localhost").await;
    r.auth_scram("SCRAM-SHA-256", user, "pw").await.unwrap();
    r.open("localhost").await;
    r.bind(Some(resource)).await;
    r
}

/// Runs the slixmpp script `name` (tests/interop/) with `args`, asserts
/// that it succeeded and printed every marker, and returns its output.
async fn slixmpp(name: &str, args: Vec<String>, markers: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .arg(script)
            .args(args)
            .output()
            .expect("python3-slixmpp")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in markers {
        assert!(stdout.contains(m), "{name}: missing {m:?}:\n{stdout}");
    }
    stdout
}

/// Stock slixmpp, three sessions over two cms, the two accounts owned by
/// different session nodes: subscription handshake, presence both ways,
/// messages and carbons (tests/interop/slixmpp_im.py).
#[tokio::test]
async fn slixmpp_across_connection_managers_and_session_nodes() {
    let c = Cluster::start(bin(), 2, 2, "", "");
    c.wait_settled().await;
    let (alice, bob) = (user_on("alice", "session1"), user_on("bob", "session2"));
    c.add_user(&alice, "pass").await;
    c.add_user(&bob, "pass").await;
    let (p1, p2) = (c.cm_addr("cm1").port(), c.cm_addr("cm2").port());
    let args = [
        "--port",
        &p1.to_string(),
        "--port2",
        &p2.to_string(),
        "--alice",
        &alice,
        "--bob",
        &bob,
        "--password",
        "pass",
    ]
    .map(str::to_owned)
    .to_vec();
    slixmpp(
        "slixmpp_im.py",
        args,
        &[
            "subscriptions: both/both",
            "received carbon",
            "sent carbon",
            "OK",
        ],
    )
    .await;
    // The stanzas did cross between the session nodes.
    let forwarded = c
        .session_metric_sum(
            "rookery_rpc_latency_seconds_count{role=\"session\",method=\"Forward\",outcome=\"ok\"}",
        )
        .await;
    assert!(forwarded >= 4.0, "{forwarded} forwards");
}

/// Messages between users on different cms and different session nodes
/// arrive, all of them, in the order sent, both ways.
#[tokio::test]
async fn messages_cross_nodes_in_order() {
    let c = Cluster::start(bin(), 2, 2, "", "");
    c.wait_settled().await;
    let (a, b) = (user_on("a", "session1"), user_on("b", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    const N: usize = 200;
    for i in 0..N {
        ca.send(&format!(
            "<message to='{b}@localhost/r' id='a{i}' type='chat'><body>{i}</body></message>"
        ))
        .await;
        cb.send(&format!(
            "<message to='{a}@localhost/r' id='b{i}' type='chat'><body>{i}</body></message>"
        ))
        .await;
    }
    for i in 0..N {
        let m = cb.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("a{i}").as_str()), "{m}");
        assert_eq!(m.attr("from"), Some(format!("{a}@localhost/r").as_str()));
        let m = ca.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("b{i}").as_str()), "{m}");
    }
    // An iq to the other account's bare JID is answered by its owner on
    // its behalf (RFC 6120 §10.5.3.2): an error for an unknown namespace.
    let r = ca
        .iq(&format!(
            "<iq type='get' id='q' to='{b}@localhost'><query xmlns='urn:example:none'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(r.to_string().contains("service-unavailable"), "{r}");
}

/// Redis goes away: stanzas meanwhile get an XMPP error (not silence) and
/// connections stay up; Redis comes back empty: the members register again
/// and messages flow.
#[tokio::test]
async fn redis_restart_errors_then_recovers() {
    let mut c = Cluster::start(
        bin(),
        2,
        2,
        "retry_for_ms = 2500\nrpc_timeout_ms = 500",
        "timeout_ms = 300",
    );
    c.wait_settled().await;
    let (a, b) = (user_on("ra", "session1"), user_on("rb", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='before'><body>1</body></message>"
    ))
    .await;
    assert_eq!(cb.next_message().await.attr("id"), Some("before"));

    let marks: Vec<usize> = ["session1", "session2"]
        .iter()
        .map(|n| c.node(n).log.mark())
        .collect();
    c.redis.kill();
    // Past the lease (ttl 1000 ms) the session nodes stop acting as owners.
    for (n, m) in ["session1", "session2"].iter().zip(&marks) {
        c.wait_log(n, "fenced", *m).await;
    }
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='during'><body>2</body></message>"
    ))
    .await;
    let e = ca.next_message().await;
    assert_eq!(e.attr("id"), Some("during"), "{e}");
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert!(e.to_string().contains("resource-constraint"), "{e}");

    // Redis comes back empty: each session node registers again, finds its
    // shard claims gone, claims them again and writes its routes back
    // (decision 0010, "Handover").
    let marks: Vec<usize> = ["session1", "session2"]
        .iter()
        .map(|n| c.node(n).log.mark())
        .collect();
    c.redis.restart();
    for (n, m) in ["session1", "session2"].iter().zip(&marks) {
        c.wait_log(n, "claims and routes written again", *m).await;
    }
    c.wait_settled().await;
    // The same streams carry messages again.
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='after'><body>3</body></message>"
    ))
    .await;
    assert_eq!(cb.next_message().await.attr("id"), Some("after"));
    // a's route is in Redis again, so the death of its owner does not lose
    // a's session.
    let shard = shard_of(&format!("{a}@localhost"), rookery_cluster::DEFAULT_SHARDS);
    let key = format!("{{rookery:s{shard}}}:r:{a}@localhost");
    let out = Command::new("redis-cli")
        .args(["-p", &c.redis.port().to_string(), "HEXISTS", &key, "r"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{key}");
    c.kill("session1");
    cb.send(&format!(
        "<message to='{a}@localhost/r' id='rebuilt'><body>4</body></message>"
    ))
    .await;
    let m = ca.next_message().await;
    assert_eq!(m.attr("id"), Some("rebuilt"), "{m}");
}

/// A gRPC peer that misbehaves: malformed envelopes get InvalidArgument, a
/// caller that is not a live member (or has a stale epoch) gets
/// FailedPrecondition, and the nodes go on serving clients.
#[tokio::test]
async fn bad_envelopes_and_stale_epochs_are_refused() {
    use rookery_proto::cm::v1 as cmpb;
    use rookery_proto::session::v1 as pb;
    use tonic::Code;

    let c = Cluster::start(bin(), 2, 1, "", "");
    c.wait_settled().await;
    let (a, b) = (user_on("x", "session1"), user_on("y", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm1", &b, "r").await;

    // The live cm's identity, as Redis knows it.
    let epoch_of = |node: &str| {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &c.redis.port().to_string(),
                "GET",
                &format!("{{rookery}}:member:{node}"),
            ])
            .output()
            .unwrap();
        let json = String::from_utf8_lossy(&out.stdout).to_string();
        let at = json.find("\"epoch\":").unwrap() + 8;
        json[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let cm = pb::Caller {
        node: "cm1".into(),
        epoch: epoch_of("cm1"),
    };
    let stale = pb::Caller {
        node: "cm1".into(),
        epoch: cm.epoch - 1,
    };
    let s1 = format!("http://127.0.0.1:{}", c.node("session1").grpc);
    let mut client = pb::session_client::SessionClient::connect(s1.clone())
        .await
        .unwrap();
    let env = |xml: &str, kind: pb::StanzaKind| pb::Envelope {
        from: format!("{a}@localhost/r"),
        to: format!("{b}@localhost"),
        kind: kind as i32,
        xml: xml.as_bytes().to_vec(),
        ..Default::default()
    };
    let route = |caller: &pb::Caller, e: pb::Envelope| pb::RouteRequest {
        cm: Some(caller.clone()),
        conn_id: 1,
        stanza: Some(e),
    };
    let good = format!(
        "<message xmlns='jabber:client' from='{a}@localhost/r' to='{b}@localhost' id='g'><body>g</body></message>"
    );
    for (what, e) in [
        (
            "half a stanza",
            env(
                "<message xmlns='jabber:client'><body>",
                pb::StanzaKind::Message,
            ),
        ),
        (
            "not UTF-8",
            pb::Envelope {
                xml: vec![0xc3, 0x28],
                ..env("", pb::StanzaKind::Message)
            },
        ),
        ("wrong kind", env(&good, pb::StanzaKind::Iq)),
        (
            "not a stanza",
            env("<foo xmlns='jabber:client'/>", pb::StanzaKind::Message),
        ),
        (
            "two stanzas",
            env(&format!("{good}{good}"), pb::StanzaKind::Message),
        ),
    ] {
        let err = client.route(route(&cm, e)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    let err = client
        .route(pb::RouteRequest {
            cm: None,
            conn_id: 1,
            stanza: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A stale epoch of a live node, and a node that never joined.
    for caller in [
        stale.clone(),
        pb::Caller {
            node: "intruder".into(),
            epoch: cm.epoch,
        },
    ] {
        let err = client
            .route(route(&caller, env(&good, pb::StanzaKind::Message)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{caller:?}: {err:?}");
        let err = client
            .forward(pb::ForwardRequest {
                caller: Some(caller.clone()),
                kind: pb::ForwardKind::Route as i32,
                stanza: Some(env(&good, pb::StanzaKind::Message)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{caller:?}: {err:?}");
    }
    // The cm refuses deliveries from a session node that is not live.
    let mut cmc = cmpb::connection_manager_client::ConnectionManagerClient::connect(format!(
        "http://127.0.0.1:{}",
        c.node("cm1").grpc
    ))
    .await
    .unwrap();
    let err = cmc
        .deliver(cmpb::DeliverRequest {
            node: "session1".into(),
            epoch: epoch_of("session1") - 1,
            deliveries: vec![cmpb::Delivery {
                conn_id: 1,
                what: Some(cmpb::delivery::What::Xml(
                    b"<message xmlns='jabber:client'><body>spoof</body></message>".to_vec(),
                )),
                trace: None,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Nothing of that reached the clients, and the nodes still serve them.
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='ok'><body>still here</body></message>"
    ))
    .await;
    let m = cb.next_message().await;
    assert_eq!(m.attr("id"), Some("ok"), "{m}");
}

/// Reads stanzas until the message `until_id` arrived and then until the
/// answer to a ping: returns the ids of the messages delivered and of the
/// messages bounced (type error) on the way, in order. Everything a cm
/// bounced for this client's earlier stanzas precedes that answer.
async fn drain(c: &mut RawClient, until_id: &str) -> (Vec<String>, Vec<String>) {
    let (mut delivered, mut bounced) = (Vec::new(), Vec::new());
    let mut marker = false;
    let mut pinged = false;
    loop {
        if marker && !pinged {
            c.send("<iq type='get' id='drain'><ping xmlns='urn:xmpp:ping'/></iq>")
                .await;
            pinged = true;
        }
        let el = c.next_stanza().await;
        let id = el.attr("id").unwrap_or_default().to_owned();
        if el.name() == "iq" && id == "drain" {
            return (delivered, bounced);
        }
        if el.name() != "message" {
            continue;
        }
        if id == until_id {
            marker = true;
        } else if el.attr("type") == Some("error") {
            bounced.push(id);
        } else {
            delivered.push(id);
        }
    }
}

/// kill -9 of a session node mid-traffic: its shards move to the other
/// node, which rebuilds the sessions from Redis; the clients stay
/// connected, and every message is delivered, in order, or (if no owner
/// took it within `retry_for_ms`) bounced to its sender — none is lost.
#[tokio::test]
async fn kill_a_session_node_mid_traffic() {
    let mut c = Cluster::start(bin(), 2, 2, "", "");
    c.wait_settled().await;
    let (a, b) = (user_on("ka", "session1"), user_on("kb", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for i in 0..100 {
        if i == 50 {
            c.kill("session1");
        }
        let (ia, ib) = (format!("to-a-{i}"), format!("to-b-{i}"));
        cb.send(&format!(
            "<message to='{a}@localhost/r' id='{ia}' type='chat'><body>{i}</body></message>"
        ))
        .await;
        ca.send(&format!(
            "<message to='{b}@localhost/r' id='{ib}' type='chat'><body>{i}</body></message>"
        ))
        .await;
        to_a.push(ia);
        to_b.push(ib);
    }
    // Each side's last message marks the end of its stream of messages.
    cb.send(&format!(
        "<message to='{a}@localhost/r' id='end-b'><body>end</body></message>"
    ))
    .await;
    ca.send(&format!(
        "<message to='{b}@localhost/r' id='end-a'><body>end</body></message>"
    ))
    .await;
    let (got_a, bounced_a) = drain(&mut ca, "end-b").await;
    let (got_b, bounced_b) = drain(&mut cb, "end-a").await;
    // Every message arrived exactly once, in order, or bounced to its
    // sender; with the other node taking over within the retry window,
    // none bounced.
    for (sent, got, bounced) in [(&to_a, &got_a, &bounced_b), (&to_b, &got_b, &bounced_a)] {
        for id in sent {
            assert!(
                got.contains(id) != bounced.contains(id),
                "{id} lost or twice"
            );
        }
        assert_eq!(got, sent, "bounced: {bounced:?}");
    }
    // session2 now owns every shard, and the streams are still usable.
    c.wait_settled().await;
    let r = ca
        .iq("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    // The restarted node takes its shards back and rebuilds them.
    c.restart("session1");
    c.wait_settled().await;
    cb.send(&format!(
        "<message to='{a}@localhost/r' id='back'><body>x</body></message>"
    ))
    .await;
    let m = ca.next_message().await;
    assert_eq!(m.attr("id"), Some("back"), "{m}");
}

/// kill -9 of a connection manager: a client with stream management
/// reconnects to the other cm and resumes (XEP-0198 §5); the session node
/// replays what it had not acknowledged, including what arrived while it
/// was away.
#[tokio::test]
async fn kill_a_cm_and_resume_on_another() {
    const SM: &str = "urn:xmpp:sm:3";
    let mut c = Cluster::start(bin(), 2, 2, "", "");
    c.wait_settled().await;
    let (a, b) = (user_on("ca", "session1"), user_on("cb", "session2"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    ca.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = ca.next().await;
    assert!(enabled.is("enabled", SM), "{enabled}");
    let previd = enabled.attr("id").unwrap().to_owned();
    let mut cb = login(&c, "cm2", &b, "r").await;
    for i in 0..5 {
        cb.send(&format!(
            "<message to='{a}@localhost/r' id='m{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    for i in 0..5 {
        assert_eq!(
            ca.next_message().await.attr("id"),
            Some(format!("m{i}").as_str())
        );
    }
    // The client acknowledges the first two, then its cm dies.
    ca.send("<a xmlns='urn:xmpp:sm:3' h='2'/>").await;
    let _ = ca
        .iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let mark = c.node("session1").log.mark();
    c.kill("cm1");
    for i in 5..10 {
        cb.send(&format!(
            "<message to='{a}@localhost/r' id='m{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    // Once the owner saw the cm go (its lease, 1 s), the session waits,
    // detached, and the client resumes on cm2.
    c.wait_log("session1", "its cm is gone", mark).await;
    let mut r = RawClient::connect(c.cm_addr("cm2")).await;
    r.open("localhost").await;
    r.starttls("localhost").await;
    r.auth_scram("SCRAM-SHA-256", &a, "pw").await.unwrap();
    r.open("localhost").await;
    r.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='2'/>"
    ))
    .await;
    let answer = r.next().await;
    assert!(answer.is("resumed", SM), "{answer}");
    // m2..m9: the three never acknowledged, then the five sent meanwhile.
    for i in 2..10 {
        let m = r.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("m{i}").as_str()), "{m}");
    }
    // The resumed stream is the session: replies go out through cm2.
    r.send(&format!(
        "<message to='{b}@localhost/r' id='re'><body>back</body></message>"
    ))
    .await;
    assert_eq!(cb.next_message().await.attr("id"), Some("re"));
}

/// Scaling out under traffic: a second session node joins while messages
/// flow; the shards it takes are handed over (the old owner forgets them,
/// the new one rebuilds them from Redis) and no message is lost, bounced or
/// reordered.
#[tokio::test]
async fn a_session_node_joins_mid_traffic() {
    let mut c = Cluster::start(bin(), 1, 2, "", "");
    c.wait_settled().await;
    // a's account moves to session2 when it joins; b's stays on session1.
    let (a, b) = (user_on("ja", "session2"), user_on("jb", "session1"));
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    // One message each way at a time, each awaited at its recipient (a
    // bounce arrives instead and fails the test); session2 joins after 50
    // rounds, and 20 rounds go on after the handover was logged on both
    // sides.
    let mut marks = None;
    let mut last = None;
    for i in 0.. {
        if i == 50 {
            marks = Some(c.node("session1").log.mark());
            c.add_node("session2", "session");
        }
        cb.send(&format!(
            "<message to='{a}@localhost/r' id='to-a-{i}' type='chat'><body>{i}</body></message>"
        ))
        .await;
        ca.send(&format!(
            "<message to='{b}@localhost/r' id='to-b-{i}' type='chat'><body>{i}</body></message>"
        ))
        .await;
        let m = ca.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("to-a-{i}").as_str()), "{m}");
        let m = cb.next_message().await;
        assert_eq!(m.attr("id"), Some(format!("to-b-{i}").as_str()), "{m}");
        if last.is_none()
            && let Some(mark) = marks
            && c.node("session1")
                .log
                .contains_since("shards handed over", mark)
            && c.node("session2").log.contains_since("shards rebuilt", 0)
        {
            last = Some(i + 20);
        }
        if last == Some(i) {
            break;
        }
        assert!(i < 20_000, "no handover logged\n{}", c.logs());
    }
    c.wait_settled().await;
    // a's session is now served by session2.
    let owned = rookery_e2e::cluster::metric(c.node("session2").http, "rookery_shards_owned")
        .await
        .unwrap();
    assert!(owned > 0.0 && owned < 1024.0, "{owned}");
}

/// One client of the rolling-restart test: stream management with
/// resumption, as a mobile client does it (XEP-0198 §4–§5): it answers
/// every `<r/>` with what it handled, keeps what it sent until the server
/// acknowledges it, and when its cm drains (`<system-shutdown/>`) it
/// resumes on the other cm and sends again what the server had not handled.
struct SmClient {
    user: String,
    peer: String,
    cms: [std::net::SocketAddr; 2],
    /// Index in `cms` of the cm it is on.
    on: usize,
    conn: RawClient,
    previd: String,
    /// Stanzas received since `<enable/>` (the `h` it reports).
    h_in: u32,
    /// The server's last `h` for our stanzas.
    acked: u32,
    /// Sent and not yet acknowledged by the server, oldest first.
    unacked: std::collections::VecDeque<String>,
    /// Message ids received from the peer, in order.
    received: Vec<String>,
    /// Messages sent (`{user}-0` …).
    sent: usize,
    resumes: usize,
}

impl SmClient {
    async fn start(c: &Cluster, user: &str, peer: &str, on: usize) -> SmClient {
        const SM: &str = "urn:xmpp:sm:3";
        let cms = [c.cm_addr("cm1"), c.cm_addr("cm2")];
        let mut conn = login(c, ["cm1", "cm2"][on], user, "r").await;
        conn.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let enabled = conn.next().await;
        assert!(enabled.is("enabled", SM), "{enabled}");
        SmClient {
            user: user.to_owned(),
            peer: peer.to_owned(),
            cms,
            on,
            conn,
            previd: enabled.attr("id").unwrap().to_owned(),
            h_in: 0,
            acked: 0,
            unacked: Default::default(),
            received: Vec::new(),
            sent: 0,
            resumes: 0,
        }
    }

    /// Sends a stanza and keeps it until acknowledged.
    async fn send_stanza(&mut self, xml: String) {
        self.conn.send(&xml).await;
        self.unacked.push_back(xml);
    }

    async fn send_next(&mut self) {
        let xml = format!(
            "<message to='{}@localhost/r' id='{}-{}' type='chat'><body>{}</body></message>",
            self.peer, self.user, self.sent, self.sent
        );
        self.sent += 1;
        self.send_stanza(xml).await;
        if self.sent.is_multiple_of(10) {
            self.conn.send("<r xmlns='urn:xmpp:sm:3'/>").await;
        }
    }

    fn acknowledged(&mut self, h: u32) {
        let n = h.wrapping_sub(self.acked) as usize;
        assert!(
            n <= self.unacked.len(),
            "{}: h={h} acks more than sent",
            self.user
        );
        self.unacked.drain(..n);
        self.acked = h;
    }

    /// Handles one event from the server.
    async fn handle(&mut self, ev: Option<rookery_xml::StreamEvent>) {
        use rookery_xml::StreamEvent;
        let el = match ev {
            Some(StreamEvent::Stanza(el)) => el,
            other => panic!("{}: stream ended without an error: {other:?}", self.user),
        };
        match (el.name(), el.ns()) {
            ("r", "urn:xmpp:sm:3") => {
                let a = format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.h_in);
                self.conn.send(&a).await;
            }
            ("a", "urn:xmpp:sm:3") => {
                self.acknowledged(el.attr("h").unwrap().parse().unwrap());
            }
            ("error", "http://etherx.jabber.org/streams") => {
                let cond = el
                    .children()
                    .find(|c| c.name() != "text")
                    .map(|c| c.name().to_owned());
                assert_eq!(
                    cond.as_deref(),
                    Some("system-shutdown"),
                    "{}: {el}",
                    self.user
                );
                self.resume().await;
            }
            ("message", _) => {
                self.h_in += 1;
                assert_eq!(el.attr("type"), Some("chat"), "{}: {el}", self.user);
                self.received.push(el.attr("id").unwrap().to_owned());
            }
            ("iq", _) => {
                self.h_in += 1;
                if el.attr("type") == Some("get") {
                    let id = el.attr("id").unwrap_or_default();
                    self.send_stanza(format!("<iq type='result' id='{id}'/>"))
                        .await;
                }
            }
            ("presence", _) => self.h_in += 1,
            _ => panic!("{}: unexpected {el}", self.user),
        }
    }

    /// Resumes the session on the other cm (§5) and sends again what the
    /// server did not handle.
    async fn resume(&mut self) {
        const SM: &str = "urn:xmpp:sm:3";
        self.on = 1 - self.on;
        let mut r = RawClient::try_connect(self.cms[self.on])
            .await
            .unwrap_or_else(|e| panic!("{}: the other cm is down: {e}", self.user));
        r.open("localhost").await;
        r.starttls("localhost").await;
        r.auth_scram("SCRAM-SHA-256", &self.user, "pw")
            .await
            .unwrap();
        r.open("localhost").await;
        r.send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{}' h='{}'/>",
            self.previd, self.h_in
        ))
        .await;
        let answer = r.next().await;
        assert!(answer.is("resumed", SM), "{}: {answer}", self.user);
        self.conn = r;
        self.resumes += 1;
        self.acknowledged(answer.attr("h").unwrap().parse().unwrap());
        let again: Vec<String> = self.unacked.drain(..).collect();
        for xml in again {
            self.send_stanza(xml).await;
        }
    }
}

/// Where a sequence of `{user}-{n}` ids skips or repeats: `(expected, got)`.
fn gaps(ids: &[String]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut next = 0;
    for id in ids {
        let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        if n != next {
            out.push((next, n));
        }
        next = n + 1;
    }
    out
}

/// A rolling restart of every process under steady traffic loses nothing
/// (docs/decisions/0015-draining.md): each session node in turn gets
/// SIGTERM, hands its shards over (XEP-0198 queues included) and exits; it
/// comes back and takes its shards back; then each cm in turn moves its
/// clients away, which resume on the other cm without logging in again.
/// Every message each client sent arrives exactly once and in order.
#[tokio::test]
async fn rolling_restart_loses_nothing() {
    let mut c = Cluster::start(bin(), 2, 2, "[drain]\ngrace_secs = 2\n", "");
    c.wait_settled().await;
    // Two pairs, each across session nodes and cms.
    let a = user_on("ra", "session1");
    let b = user_on("rb", "session2");
    let cc = user_on("rc", "session2");
    let d = user_on("rd", "session1");
    for u in [&a, &b, &cc, &d] {
        c.add_user(u, "pw").await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Once a client has stopped sending and the server acknowledged all,
    // it says how many it sent; it ends once it has all of its peer's.
    let finals: Vec<tokio::sync::watch::Sender<Option<usize>>> = (0..4)
        .map(|_| tokio::sync::watch::Sender::new(None))
        .collect();
    let progress = tokio::sync::watch::Sender::new(0usize);
    let spec = [
        (&a, &b, 0, 1),
        (&b, &a, 1, 0),
        (&cc, &d, 0, 3),
        (&d, &cc, 1, 2),
    ];
    // Everyone is online before anyone sends.
    let mut clients = Vec::new();
    for (user, peer, on, _) in spec {
        clients.push(SmClient::start(&c, user, peer, on).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for ((i, (_, _, _, peer_i)), mut client) in spec.into_iter().enumerate().zip(clients) {
        let mut stop = stop_rx.clone();
        let mine = finals[i].clone();
        let mut theirs = finals[peer_i].subscribe();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut sending = true;
            let mut asked = false;
            loop {
                if !sending && client.unacked.is_empty() && mine.borrow().is_none() {
                    mine.send_replace(Some(client.sent));
                }
                if mine.borrow().is_some()
                    && theirs.borrow().is_some_and(|n| client.received.len() >= n)
                {
                    return client;
                }
                tokio::select! {
                    _ = tick.tick(), if sending => {
                        client.send_next().await;
                    }
                    _ = stop.changed(), if sending => {
                        sending = false;
                    }
                    _ = theirs.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(8)) => panic!(
                        "{}: stalled: sent {}, unacked {}, h_in {}, received {} of {:?}, last {:?}, resumes {}, gaps {:?}",
                        client.user,
                        client.sent,
                        client.unacked.len(),
                        client.h_in,
                        client.received.len(),
                        *theirs.borrow(),
                        client.received.last(),
                        client.resumes,
                        gaps(&client.received)
                    ),
                    ev = client.conn.next_event() => {
                        let before = client.received.len();
                        client.handle(ev).await;
                        if client.received.len() > before {
                            progress.send_modify(|p| *p += 1);
                        }
                    }
                }
                if !sending && !asked {
                    // A last request: the server acknowledges everything.
                    client.conn.send("<r xmlns='urn:xmpp:sm:3'/>").await;
                    asked = true;
                }
            }
        });
    }
    // Traffic flows through every step: wait for more deliveries.
    let flowing = |n: usize| {
        let mut rx = progress.subscribe();
        async move {
            let start = *rx.borrow_and_update();
            tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|p| *p >= start + n))
                .await
                .expect("traffic stalled")
                .unwrap();
        }
    };
    flowing(40).await;
    for node in ["session1", "session2"] {
        let status = c.terminate(node, Duration::from_secs(20)).await;
        assert!(status.success(), "{node}: {status}\n{}", c.logs());
        assert!(
            c.node(node)
                .log
                .contains_since("drained: every shard has a new owner", 0),
            "{}",
            c.logs()
        );
        flowing(40).await;
        let mark = c.node(node).log.mark();
        c.restart(node);
        c.wait_log(node, "shards rebuilt", mark).await;
        c.wait_settled().await;
        flowing(40).await;
    }
    for node in ["cm1", "cm2"] {
        let status = c.terminate(node, Duration::from_secs(20)).await;
        assert!(status.success(), "{node}: {status}\n{}", c.logs());
        flowing(40).await;
        c.restart(node);
        flowing(40).await;
    }
    stop_tx.send_replace(true);
    let mut clients = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(client) => clients.push(client),
                Err(e) => panic!("a client failed: {e}\n{}", c.logs()),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "clients did not finish\n{}", c.logs());
    for client in &clients {
        let peer = clients.iter().find(|p| p.user == client.peer).unwrap();
        let expected: Vec<String> = (0..peer.sent)
            .map(|i| format!("{}-{i}", peer.user))
            .collect();
        assert!(peer.sent > 100, "{} sent only {}", peer.user, peer.sent);
        assert_eq!(
            client.received, expected,
            "{} did not get {}'s messages exactly once, in order",
            client.user, peer.user
        );
        // Clients of cm1 moved twice, those of cm2 once; never a new login.
        assert!(client.resumes >= 1, "{} never resumed", client.user);
    }
}

/// A draining cm (SIGTERM) turns `/ready` to 503 and stops accepting;
/// clients that cannot resume — one without stream management, one still
/// negotiating — get `<see-other-host/>` with the configured host (RFC 6120
/// §4.9.3.19), and the process exits cleanly.
#[tokio::test]
async fn a_draining_cm_sends_clients_elsewhere() {
    let mut c = Cluster::start(
        bin(),
        1,
        1,
        "[drain]\ngrace_secs = 3\nsee_other_host = \"xmpp2.example.net:5222\"\n",
        "",
    );
    c.wait_settled().await;
    let a = user_on("da", "session1");
    c.add_user(&a, "pw").await;
    let http = c.node("cm1").http;
    let ready = ready_status(http).await;
    assert!(ready.contains("200"), "{ready}");
    let mut bound = login(&c, "cm1", &a, "r").await;
    let mut negotiating = RawClient::connect(c.cm_addr("cm1")).await;
    negotiating.open("localhost").await;
    let mark = c.node("cm1").log.mark();
    c.sigterm("cm1");
    // Not ready from the start of the drain (`/ready` turns first), while
    // the clients are moved.
    c.wait_log("cm1", "draining client connections", mark).await;
    let ready = ready_status(http).await;
    assert!(ready.contains("503"), "{ready}");
    for client in [&mut negotiating, &mut bound] {
        let (el, _) = client
            .until(|e| e.is("error", "http://etherx.jabber.org/streams"))
            .await;
        let host = el
            .child("see-other-host", "urn:ietf:params:xml:ns:xmpp-streams")
            .unwrap_or_else(|| panic!("{el}"));
        assert_eq!(host.text(), "xmpp2.example.net:5222");
        client.expect_closed().await;
    }
    assert!(
        RawClient::try_connect(c.cm_addr("cm1")).await.is_err(),
        "a draining cm accepted a connection"
    );
    let status = c.wait_exit("cm1", Duration::from_secs(15)).await;
    assert!(status.success(), "{status}\n{}", c.logs());
}

/// The web transports live on the cm role: a WebSocket client on one cm
/// and a BOSH client on the other chat through the session node.
#[tokio::test]
async fn web_transports_on_connection_managers() {
    use rookery_e2e::web::{Ws, bosh, bosh_login, req};
    let c = Cluster::start(bin(), 1, 2, "", "");
    c.wait_settled().await;
    let a = user_on("wa", "session1");
    let b = user_on("wb", "session1");
    c.add_user(&a, "pw").await;
    c.add_user(&b, "pw").await;
    let mut ws = Ws::login(c.web_addr("cm1"), &a, "ws").await;
    let web2 = c.web_addr("cm2");
    let sid = bosh_login(web2, &b, "bosh", 500).await;
    let held = tokio::spawn({
        let sid = sid.clone();
        async move { bosh(web2, &req(&sid, 504, "", "")).await }
    });
    ws.send(&format!(
        "<message xmlns='jabber:client' to='{b}@localhost/bosh' type='chat'><body>across cms</body></message>"
    ))
    .await;
    let r = held.await.unwrap();
    let m = r
        .child("message", "jabber:client")
        .unwrap_or_else(|| panic!("{r:?}\n{}", c.logs()));
    assert_eq!(m.attr("from"), Some(format!("{a}@localhost/ws").as_str()));
    // Held until its `wait`: not awaited.
    let back = format!(
        "<message xmlns='jabber:client' to='{a}@localhost/ws' type='chat'><body>and back</body></message>"
    );
    let _held = tokio::spawn(async move { bosh(web2, &req(&sid, 505, "", &back)).await });
    let m = loop {
        let el = ws.next().await;
        if el.name() == "message" {
            break el;
        }
    };
    assert_eq!(m.child("body", "jabber:client").unwrap().text(), "and back");
}

async fn ready_status(http: u16) -> String {
    rookery_e2e::cluster::http_status(http, "/ready")
        .await
        .unwrap_or_default()
}

/// Waits until `metric` reads `want` on the node serving HTTP on `http`.
async fn wait_metric(http: u16, metric: &str, want: f64) {
    rookery_e2e::wait_for(&format!("{metric} = {want}"), || async {
        rookery_e2e::cluster::metric(http, metric).await == Some(want)
    })
    .await;
}

/// Federation from a cluster (RFC 6120 §4–§6 with `--role s2s`): two s2s
/// nodes, two session nodes and a cm federate with a single-node Rookery
/// on another domain. The remote server reaches the cluster through the s2s
/// node that does NOT keep the cluster's stream to it, so the dialback key
/// one s2s node sends is verified by the other (the shared
/// `dialback_secret_file`), and what the remote server sends comes in on one
/// node while the cluster's stanzas leave from the other. Subscriptions,
/// presence, messages and iq errors cross both ways.
#[tokio::test]
async fn federation_through_s2s_nodes() {
    use rookery_e2e::cluster::{free_port, s2s_node_for};
    let remote_port = free_port();
    let tail = format!("[s2s.peers.\"b.test\"]\naddress = \"127.0.0.1:{remote_port}\"\n");
    let mut c = Cluster::start_with(bin(), 2, 1, "", "", &tail, &[]);
    c.add_node("s2s1", "s2s");
    c.add_node("s2s2", "s2s");
    c.wait_settled().await;
    for session in ["session1", "session2"] {
        let http = c.node(session).http;
        wait_metric(http, "rookery_cluster_members{role=\"s2s\"}", 2.0).await;
    }
    let outbound = s2s_node_for("b.test", &["s2s1", "s2s2"]);
    let entry = if outbound == "s2s1" { "s2s2" } else { "s2s1" };
    let entry_port = c.node(entry).s2s.unwrap();

    let remote = rookery_e2e::TestServer::start_with(move |cfg| {
        cfg.server.domain = "b.test".into();
        cfg.s2s.enabled = true;
        cfg.s2s.listen = vec![format!("127.0.0.1:{remote_port}").parse().unwrap()];
        cfg.s2s.peers.insert(
            "localhost".into(),
            rookery_s2s::PeerConfig {
                address: format!("127.0.0.1:{entry_port}"),
                ..Default::default()
            },
        );
    })
    .await;
    remote.add_user("bob", "pw").await;
    let alice = user_on("alice", "session2");
    c.add_user(&alice, "pw").await;
    let alice_bare = format!("{alice}@localhost");
    let alice_full = format!("{alice_bare}/laptop");

    let mut a = login(&c, "cm1", &alice, "laptop").await;
    a.iq("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    a.send("<presence/>").await;
    a.next_presence().await;
    let mut bob = remote.online("bob", "phone").await;

    // RFC 6121 §3.1 both ways, with presence.
    rookery_e2e::subscribe(&mut a, &alice_bare, &mut bob, "bob@b.test/phone").await;
    rookery_e2e::subscribe(&mut bob, "bob@b.test", &mut a, &alice_full).await;
    assert_eq!(
        rookery_e2e::roster_state(&mut a, "bob@b.test").await,
        Some(("both".into(), None))
    );
    assert_eq!(
        rookery_e2e::roster_state(&mut bob, &alice_bare).await,
        Some(("both".into(), None))
    );

    // Messages both ways.
    a.send("<message to='bob@b.test/phone' type='chat' id='m1'><body>from the cluster</body></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some(alice_full.as_str()), "{m}");
    bob.send(&format!(
        "<message to='{alice_full}' type='chat' id='m2'><body>to the cluster</body></message>"
    ))
    .await;
    let m = a.next_message().await;
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"), "{m}");
    assert_eq!(
        m.child("body", rookery_xml::ns::CLIENT).unwrap().text(),
        "to the cluster"
    );

    // An iq to a missing account of the remote server: its error comes back
    // through the s2s nodes (RFC 6121 §8.5.1); and one from the remote server
    // to a missing account of the cluster gets the cluster's answer.
    let r = a
        .iq("<iq to='nobody@b.test/x' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(
        r.child("error", rookery_xml::ns::CLIENT)
            .and_then(|e| e.child("service-unavailable", rookery_xml::ns::STANZAS))
            .is_some(),
        "{r}"
    );
    let r = bob
        .iq("<iq to='nobody@localhost/x' type='get' id='v2'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert_eq!(r.attr("from"), Some("nobody@localhost/x"), "{r}");

    // The cluster's stream to b.test left from the node rendezvous hashing
    // chose; b.test's stream came in on the other.
    let out = rookery_e2e::cluster::metric(
        c.node(&outbound).http,
        "rookery_s2s_streams{direction=\"out\"}",
    )
    .await;
    assert_eq!(out, Some(1.0), "{outbound}\n{}", c.logs());
    let inbound =
        rookery_e2e::cluster::metric(c.node(entry).http, "rookery_s2s_streams{direction=\"in\"}")
            .await;
    assert!(inbound >= Some(1.0), "{entry}: {inbound:?}\n{}", c.logs());

    // A stopped s2s node: the other takes over the remote domain.
    let status = c.terminate(&outbound, Duration::from_secs(20)).await;
    assert!(status.success(), "{outbound} exited with {status}");
    for session in ["session1", "session2"] {
        let http = c.node(session).http;
        wait_metric(http, "rookery_cluster_members{role=\"s2s\"}", 1.0).await;
    }
    a.send(
        "<message to='bob@b.test/phone' type='chat' id='m3'><body>after the stop</body></message>",
    )
    .await;
    let m = bob.next_message().await;
    assert_eq!(
        m.child("body", rookery_xml::ns::CLIENT).unwrap().text(),
        "after the stop",
        "{m}"
    );
}

const MUC: &str = "http://jabber.org/protocol/muc";

/// The status codes of a MUC presence, sorted.
fn muc_codes(p: &rookery_xml::Element) -> Vec<String> {
    let mut v: Vec<String> = p
        .child("x", "http://jabber.org/protocol/muc#user")
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `<item/>` of a MUC presence: (affiliation, role).
fn muc_item(p: &rookery_xml::Element) -> (String, String) {
    let item = p
        .child("x", "http://jabber.org/protocol/muc#user")
        .and_then(|x| x.child("item", "http://jabber.org/protocol/muc#user"))
        .unwrap_or_else(|| panic!("no item in {p}"));
    (
        item.attr("affiliation").unwrap_or_default().to_owned(),
        item.attr("role").unwrap_or_default().to_owned(),
    )
}

/// Joins `occupant` and reads up to the subject message (the service
/// sends it last); returns the presences received on the way.
async fn muc_join(c: &mut RawClient, occupant: &str) -> Vec<rookery_xml::Element> {
    c.send(&format!(
        "<presence to='{occupant}'><x xmlns='{MUC}'/></presence>"
    ))
    .await;
    let (_, before) = c
        .until(|e| e.name() == "message" && e.child("subject", "jabber:client").is_some())
        .await;
    before
}

/// XEP-0045 rooms in a cluster (docs/decisions/0023): a room lives on the
/// session node that owns its shard, and occupants whose accounts live on
/// the other node reach it through `Forward`; when that node drains, the
/// occupants leave with status 332, and the room, loaded from the store by
/// its new node, keeps its configuration and owner.
#[tokio::test]
async fn muc_rooms_across_session_nodes() {
    use rookery_e2e::cluster::room_on;
    let mut c = Cluster::start(bin(), 2, 2, "[drain]\ngrace_secs = 2\n", "");
    c.wait_settled().await;
    let (a, b, d) = (
        user_on("ma", "session1"),
        user_on("mb", "session2"),
        user_on("md", "session1"),
    );
    for u in [&a, &b, &d] {
        c.add_user(u, "pw").await;
    }
    let room = format!("{}@conference.localhost", room_on("hall", "session2"));
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    let mut cd = login(&c, "cm2", &d, "r").await;

    // §10.1.2: a creates the room (locked, 201) and makes it persistent.
    let got = muc_join(&mut ca, &format!("{room}/A")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(muc_codes(&got[0]), ["110", "201"]);
    ca.send(&format!(
        "<iq type='set' to='{room}' id='cfg'><query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{MUC}#roomconfig</value></field><field var='muc#roomconfig_persistentroom'><value>1</value></field><field var='muc#roomconfig_roomname'><value>Cluster hall</value></field></x></query></iq>"
    ))
    .await;
    let (r, _) = ca.until(|e| e.attr("id") == Some("cfg")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // b (its account on the room's node) and d (on the other) enter; each
    // sees the others first, then itself (§7.2.3).
    let got = muc_join(&mut cb, &format!("{room}/B")).await;
    let froms: Vec<&str> = got.iter().filter_map(|p| p.attr("from")).collect();
    assert_eq!(froms, [format!("{room}/A"), format!("{room}/B")]);
    let got = muc_join(&mut cd, &format!("{room}/D")).await;
    let froms: Vec<&str> = got.iter().filter_map(|p| p.attr("from")).collect();
    assert_eq!(
        froms,
        [
            format!("{room}/A"),
            format!("{room}/B"),
            format!("{room}/D")
        ]
    );
    let (p, _) = ca
        .until(|e| e.attr("from") == Some(format!("{room}/D").as_str()))
        .await;
    assert_eq!(muc_item(&p), ("none".into(), "participant".into()));

    // §7.4: a groupchat message reaches every occupant, in order.
    for i in 0..20 {
        ca.send(&format!(
            "<message to='{room}' type='groupchat' id='g{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    for (client, me) in [(&mut ca, &a), (&mut cb, &b), (&mut cd, &d)] {
        for i in 0..20 {
            let m = client.next_message().await;
            assert_eq!(m.attr("from"), Some(format!("{room}/A").as_str()), "{m}");
            assert_eq!(m.attr("to"), Some(format!("{me}@localhost/r").as_str()));
            assert_eq!(m.attr("type"), Some("groupchat"));
            assert_eq!(m.attr("id"), Some(format!("g{i}").as_str()), "{m}");
            let body = m.child("body", "jabber:client").map(|b| b.text());
            assert_eq!(body.as_deref(), Some(i.to_string().as_str()));
        }
    }
    // a's and d's stanzas crossed to the room's node.
    let forwarded = rookery_e2e::cluster::metric_sum(
        c.node("session1").http,
        "rookery_rpc_latency_seconds_count{role=\"session\",method=\"Forward\",outcome=\"ok\"}",
    )
    .await;
    assert!(forwarded >= 22.0, "{forwarded} forwards from session1");

    // The room's node drains: every occupant leaves with 332.
    c.sigterm("session2");
    for (client, nick) in [(&mut ca, "A"), (&mut cb, "B"), (&mut cd, "D")] {
        let (p, _) = client
            .until(|e| e.name() == "presence" && muc_codes(e).contains(&"332".to_owned()))
            .await;
        assert_eq!(p.attr("from"), Some(format!("{room}/{nick}").as_str()));
        assert_eq!(p.attr("type"), Some("unavailable"));
        assert_eq!(muc_codes(&p), ["110", "332"]);
        assert_eq!(muc_item(&p).1, "none");
    }
    assert!(
        c.wait_exit("session2", Duration::from_secs(20))
            .await
            .success()
    );

    // session1 now serves the room, as stored: a is still its owner, and
    // the name stays.
    let got = muc_join(&mut ca, &format!("{room}/A")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(muc_codes(&got[0]), ["110"]);
    assert_eq!(muc_item(&got[0]), ("owner".into(), "moderator".into()));
    let info = ca
        .iq(&format!(
            "<iq type='get' to='{room}' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
    let identity = info.first_child().and_then(|q| q.first_child()).unwrap();
    assert_eq!(identity.attr("name"), Some("Cluster hall"), "{info}");
    let got = muc_join(&mut cb, &format!("{room}/B")).await;
    assert_eq!(got.len(), 2, "{got:?}");
    cb.send(&format!(
        "<message to='{room}' type='groupchat' id='after'><body>back</body></message>"
    ))
    .await;
    let (m, _) = ca.until(|e| e.attr("id") == Some("after")).await;
    assert_eq!(m.attr("from"), Some(format!("{room}/B").as_str()), "{m}");
}

/// The pubsub service and the upload slot service in a cluster: a pubsub
/// node is served by the owner of the shard of its name's key, the slot
/// service by the owner of its domain's shard, whichever node the
/// requester's account lives on; a slot granted there is taken by any cm,
/// as the nodes share `[upload] secret`.
#[tokio::test]
async fn pubsub_and_upload_across_session_nodes() {
    let tail = "[upload]\npublic_url = \"https://upload.test\"\nsecret = \"a shared upload key for the cluster\"\n";
    let c = Cluster::start_with(bin(), 2, 2, "", "", tail, &[]);
    c.wait_settled().await;
    let (a, b) = (user_on("pa", "session1"), user_on("pb", "session2"));
    for u in [&a, &b] {
        c.add_user(u, "pw").await;
    }
    let mut ca = login(&c, "cm1", &a, "r").await;
    let mut cb = login(&c, "cm2", &b, "r").await;
    // Notifications go to the bare JID: to available resources.
    for (cx, u) in [(&mut ca, &a), (&mut cb, &b)] {
        cx.send("<presence/>").await;
        let (p, _) = cx.until(|e| e.name() == "presence").await;
        assert_eq!(p.attr("from"), Some(format!("{u}@localhost/r").as_str()));
    }
    const PS: &str = "http://jabber.org/protocol/pubsub";
    // Pubsub nodes are sharded by name: one served by each session node.
    let node_on = |prefix: &str, session: &str| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|n| {
                rookery_e2e::cluster::owner_of(
                    &rookery_pubsub::shard_key_of("pubsub.localhost", n),
                    &["session1", "session2"],
                ) == session
            })
            .unwrap()
    };
    for (news, publisher) in [
        (node_on("news", "session2"), 0),
        (node_on("notes", "session1"), 1),
    ] {
        let (pc, sc, sub) = if publisher == 0 {
            (&mut ca, &mut cb, &b)
        } else {
            (&mut cb, &mut ca, &a)
        };
        let news = news.as_str();
        pc.iq_ok(&format!(
                "<iq type='set' to='pubsub.localhost' id='c'><pubsub xmlns='{PS}'><create node='{news}'/></pubsub></iq>"
            )).await;
        sc.iq_ok(&format!(
                "<iq type='set' to='pubsub.localhost' id='s'><pubsub xmlns='{PS}'><subscribe node='{news}' jid='{sub}@localhost'/></pubsub></iq>"
            )).await;
        pc.iq_ok(&format!(
                "<iq type='set' to='pubsub.localhost' id='p'><pubsub xmlns='{PS}'><publish node='{news}'><item id='i1'><entry xmlns='urn:example:news'>hello</entry></item></publish></pubsub></iq>"
            )).await;
        let (m, _) = sc.until(|e| e.name() == "message").await;
        rookery_e2e::assert_reply_xml(
            &m,
            &format!(
                "<message from='pubsub.localhost' to='{sub}@localhost' type='headline'><event xmlns='{PS}#event'><items node='{news}'><item id='i1'><entry xmlns='urn:example:news'>hello</entry></item></items></event></message>"
            ),
        );
    }
    // Each session node served one of the two nodes' requests for a
    // requester on the other.
    for session in ["session1", "session2"] {
        let n = rookery_e2e::cluster::metric_sum(
            c.node(session).http,
            "rookery_rpc_latency_seconds_count{role=\"session\",method=\"Forward\",outcome=\"ok\"}",
        )
        .await;
        assert!(n >= 2.0, "{n} forwards from {session}");
    }

    // XEP-0363: a slot from the service, the PUT through cm1's web
    // listener and the GET through cm2's.
    let r = ca.iq_ok("<iq type='get' to='upload.localhost' id='u'><request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='5' content-type='text/plain'/></iq>").await;
    let slot = r.first_child().unwrap();
    let url = |name: &str| {
        slot.child(name, "urn:xmpp:http:upload:0")
            .and_then(|e| e.attr("url"))
            .unwrap()
            .to_owned()
    };
    let (put, get) = (url("put"), url("get"));
    assert!(put.starts_with("https://upload.test/"), "{put}");
    let curl = |cm: &str, args: Vec<String>| {
        let to = format!("upload.test:443:127.0.0.1:{}", c.web_addr(cm).port());
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(["--connect-to", &to])
        .args(args);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = curl(
        "cm1",
        vec![
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            "Content-Type: text/plain".into(),
            "--data-binary".into(),
            "hello".into(),
            put,
        ],
    )
    .await;
    assert!(out.ends_with("201"), "{out}");
    let out = curl("cm2", vec![get]).await;
    assert_eq!(out, "hello\n200");
}

/// Stock slixmpp's XEP-0045 and XEP-0313 plugins against a cluster
/// (tests/interop/slixmpp_muc.py): three users create, join, chat, kick
/// and read the room's archive, with the room and the accounts spread over
/// two session nodes.
#[tokio::test]
async fn slixmpp_muc_in_a_cluster() {
    use rookery_e2e::cluster::owner_of;
    let c = Cluster::start(bin(), 2, 1, "", "");
    c.wait_settled().await;
    for u in ["alice", "bob", "carol"] {
        c.add_user(u, "pass").await;
    }
    // The script's room and accounts do not all live on one node.
    let nodes = ["session1", "session2"];
    let room = owner_of("lab@conference.localhost", &nodes);
    let owners: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| owner_of(&format!("{u}@localhost"), &nodes))
        .collect();
    assert!(owners.iter().any(|o| *o != room), "{room} {owners:?}");
    let port = c.cm_addr("cm1").port().to_string();
    slixmpp(
        "slixmpp_muc.py",
        vec!["--port".into(), port, "--password".into(), "pass".into()],
        &[
            "alice created the room",
            "bob and carol joined",
            "everyone got both messages in order, with the same stanza-ids",
            "kick: carol got 110+307",
            "archive: carol paged through both messages, ids as live",
            "OK",
        ],
    )
    .await;
}
