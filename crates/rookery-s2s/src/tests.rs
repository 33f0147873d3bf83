//! Two s2s roles in one process, on loopback, routed by the `[s2s.peers]`
//! table, with certificates made by rcgen.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rookery_cm::tls::{CertSource, ReloadingCert, reloading_server_config};
use rookery_core::metrics::Metrics;
use rookery_core::{InboundRouter, Jid, RemoteRouter, Stanza, StanzaError};
use rookery_xml::{Element, ns};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::outbound::{Purpose, connect, negotiate};
use crate::stream::Fail;

const WAIT: Duration = Duration::from_secs(10);

/// The session side of a test node: a channel.
#[derive(Debug)]
struct Sink {
    domains: Vec<String>,
    tx: mpsc::UnboundedSender<Stanza>,
}

#[async_trait]
impl InboundRouter for Sink {
    fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }
    async fn route_inbound(&self, stanza: Stanza) {
        let _ = self.tx.send(stanza);
    }
}

struct Node {
    s2s: Arc<S2s>,
    rx: mpsc::UnboundedReceiver<Stanza>,
    _shutdown: watch::Sender<bool>,
}

impl Node {
    async fn next(&mut self) -> Stanza {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a stanza in time")
            .unwrap()
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rookery-s2s-{}", rookery_core::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A self-signed certificate for `names`, written to `dir/<file>.{crt,key}`.
fn self_signed(dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let (c, k) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn identity(cert: &Path, key: &Path) -> Arc<ReloadingCert> {
    reloading_server_config(&CertSource::Files {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })
    .unwrap()
    .1
}

fn config() -> S2sConfig {
    S2sConfig {
        negotiation_timeout_secs: 5,
        connect_timeout_secs: 2,
        ..S2sConfig::default()
    }
}

fn peer(addr: SocketAddr) -> PeerConfig {
    PeerConfig {
        address: addr.to_string(),
        ..PeerConfig::default()
    }
}

async fn start(
    domain: &str,
    listener: TcpListener,
    cert: (PathBuf, PathBuf),
    config: S2sConfig,
) -> Node {
    let (tx, rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sink = Arc::new(Sink {
        domains: vec![domain.to_owned()],
        tx,
    });
    let s2s = S2s::new(
        vec![domain.to_owned()],
        config,
        identity(&cert.0, &cert.1),
        domain.as_bytes(),
        sink,
        Metrics::new(),
        shutdown_rx,
    )
    .unwrap();
    tokio::spawn(s2s.clone().serve(listener, false));
    Node {
        s2s,
        rx,
        _shutdown: shutdown_tx,
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn message(from: &str, to: &str, body: &str) -> Stanza {
    let el = Element::new_static("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", "m1")
        .with_child(Element::new_static("body", ns::CLIENT).with_text(body));
    Stanza::parse(el).unwrap()
}

/// Two nodes that know each other's address; `f` adjusts both configs
/// (the second argument is the other side's certificate path).
async fn pair(f: impl Fn(&str, &mut S2sConfig, &Path)) -> (Node, Node, PathBuf) {
    let dir = temp_dir();
    let (la, aa) = bind().await;
    let (lb, ab) = bind().await;
    let ca = self_signed(&dir, "a", &["a.example"]);
    let cb = self_signed(&dir, "b", &["b.example"]);
    let mut cfg_a = config();
    cfg_a.peers.insert("b.example".into(), peer(ab));
    f("a.example", &mut cfg_a, &cb.0);
    let mut cfg_b = config();
    cfg_b.peers.insert("a.example".into(), peer(aa));
    f("b.example", &mut cfg_b, &ca.0);
    let a = start("a.example", la, ca, cfg_a).await;
    let b = start("b.example", lb, cb, cfg_b).await;
    (a, b, dir)
}

async fn exchange(a: &mut Node, b: &mut Node) {
    a.s2s
        .send_remote(message("alice@a.example/x", "bob@b.example", "hello bob"));
    let got = b.next().await;
    assert_eq!(got.from().unwrap().as_str(), "alice@a.example/x");
    assert_eq!(got.to().unwrap().as_str(), "bob@b.example");
    // The rest of the server sees the jabber:client tree it knows.
    assert_eq!(got.element().ns(), ns::CLIENT);
    assert_eq!(
        got.element().child("body", ns::CLIENT).unwrap().text(),
        "hello bob"
    );
    b.s2s
        .send_remote(message("bob@b.example/y", "alice@a.example", "hello alice"));
    let got = a.next().await;
    assert_eq!(got.from().unwrap().as_str(), "bob@b.example/y");
    assert_eq!(
        got.element().child("body", ns::CLIENT).unwrap().text(),
        "hello alice"
    );
}

/// Untrusted self-signed certificates: both directions authenticate with
/// Server Dialback (XEP-0220), each side verifying the other's key with
/// a `<db:verify/>` connection back.
#[tokio::test]
async fn messages_both_ways_with_dialback() {
    let (mut a, mut b, _dir) = pair(|_, _, _| {}).await;
    exchange(&mut a, &mut b).await;
    // Several stanzas on the same stream, in order.
    for i in 0..5 {
        a.s2s.send_remote(message(
            "alice@a.example",
            "bob@b.example",
            &format!("n{i}"),
        ));
    }
    for i in 0..5 {
        let got = b.next().await;
        assert_eq!(
            got.element().child("body", ns::CLIENT).unwrap().text(),
            format!("n{i}")
        );
    }
    assert_eq!(a.s2s.outbound_streams(), 1);
}

/// Each side trusts the other's certificate and dialback is off
/// (`require_valid_certificates`): the streams can only have been
/// authenticated with SASL EXTERNAL.
#[tokio::test]
async fn messages_both_ways_with_sasl_external() {
    let (mut a, mut b, _dir) = pair(|me, cfg, other_cert| {
        let other = if me == "a.example" {
            "b.example"
        } else {
            "a.example"
        };
        cfg.require_valid_certificates = true;
        cfg.peers.get_mut(other).unwrap().cert = Some(other_cert.to_owned());
    })
    .await;
    exchange(&mut a, &mut b).await;
}

/// A peer whose port refuses connections: the stanza comes back as
/// `remote-server-not-found` from the address it was for; an error stanza
/// is never bounced.
#[tokio::test]
async fn refused_connection_bounces_remote_server_not_found() {
    let dir = temp_dir();
    let (la, _) = bind().await;
    let (closed, closed_addr) = bind().await;
    drop(closed);
    let mut cfg = config();
    cfg.peers.insert("gone.example".into(), peer(closed_addr));
    let mut a = start("a.example", la, self_signed(&dir, "a", &["a.example"]), cfg).await;
    let mut err = Element::new_static("message", ns::CLIENT)
        .with_attr("from", "alice@a.example/x")
        .with_attr("to", "bob@gone.example")
        .with_attr("type", "error");
    err.push_child(StanzaError::service_unavailable().to_element());
    a.s2s.send_remote(Stanza::parse(err).unwrap());
    a.s2s
        .send_remote(message("alice@a.example/x", "bob@gone.example", "hi"));
    let bounce = a.next().await;
    assert_eq!(bounce.stanza_type(), Some("error"));
    assert_eq!(bounce.from().unwrap().as_str(), "bob@gone.example");
    assert_eq!(bounce.to().unwrap().as_str(), "alice@a.example/x");
    let e = StanzaError::from_stanza(bounce.element()).unwrap();
    assert_eq!(e.condition, "remote-server-not-found");
    // Only that one: the error stanza was dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.rx.recv())
            .await
            .is_err()
    );
}

/// A peer that accepts TCP and then says nothing: `remote-server-timeout`
/// after the negotiation timeout, while another domain is served at once;
/// beyond the queue's byte limit stanzas are bounced at once with
/// `resource-constraint`.
#[tokio::test]
async fn silent_peer_times_out_without_blocking_others() {
    let dir = temp_dir();
    let (la, _) = bind().await;
    let (lb, ab) = bind().await;
    let (silent, silent_addr) = bind().await;
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            if let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        }
    });
    let ca = self_signed(&dir, "a", &["a.example"]);
    let cb = self_signed(&dir, "b", &["b.example"]);
    let a_addr = la.local_addr().unwrap();
    let mut cfg_a = config();
    cfg_a.negotiation_timeout_secs = 2;
    cfg_a.max_queued_bytes = 400;
    cfg_a
        .peers
        .insert("silent.example".into(), peer(silent_addr));
    cfg_a.peers.insert("b.example".into(), peer(ab));
    let mut cfg_b = config();
    cfg_b.peers.insert("a.example".into(), peer(a_addr));
    let mut a = start("a.example", la, ca, cfg_a).await;
    let mut b = start("b.example", lb, cb, cfg_b).await;

    let started = tokio::time::Instant::now();
    a.s2s
        .send_remote(message("alice@a.example", "x@silent.example", "one"));
    a.s2s.send_remote(message(
        "alice@a.example",
        "x@silent.example",
        &"long ".repeat(60),
    ));
    // The second did not fit in the queue.
    let full = a.next().await;
    assert_eq!(
        StanzaError::from_stanza(full.element()).unwrap().condition,
        "resource-constraint"
    );
    a.s2s
        .send_remote(message("alice@a.example", "bob@b.example", "meanwhile"));
    let got = b.next().await;
    assert_eq!(got.to().unwrap().as_str(), "bob@b.example");
    assert!(
        a.rx.try_recv().is_err(),
        "the silent peer's stanza is still waiting"
    );
    let bounce = a.next().await;
    let e = StanzaError::from_stanza(bounce.element()).unwrap();
    assert_eq!(e.condition, "remote-server-timeout");
    assert_eq!(bounce.from().unwrap().as_str(), "x@silent.example");
    assert!(started.elapsed() >= Duration::from_secs(2));
    held.abort();
}

/// A stream idle for `idle_timeout_secs` is closed, and the next stanza
/// opens a new one.
#[tokio::test]
async fn idle_streams_close_and_reopen() {
    let (mut a, mut b, _dir) = pair(|_, cfg, _| cfg.idle_timeout_secs = 1).await;
    exchange(&mut a, &mut b).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.s2s.outbound_streams() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "stream not closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exchange(&mut a, &mut b).await;
}

/// An authenticated stream from a.example (here negotiated by hand with
/// the outbound code) that sends a stanza from another domain gets
/// `<invalid-from/>`; one for a domain B does not serve `<host-unknown/>`.
#[tokio::test]
async fn spoofed_from_and_unserved_to_are_stream_errors() {
    for (from, to, condition) in [
        ("mallory@evil.example", "bob@b.example", "invalid-from"),
        ("alice@a.example", "bob@elsewhere.example", "host-unknown"),
    ] {
        let (a, _b, _dir) = pair(|_, _, _| {}).await;
        let (socket, _) = connect(&a.s2s, "b.example").await.unwrap();
        let (mut st, _) = negotiate(&a.s2s, "a.example", "b.example", socket, Purpose::Stanzas)
            .await
            .unwrap();
        let mut m = Vec::new();
        message(from, to, "spoof").element().write_to_mapped(
            &mut m,
            ns::SERVER,
            (ns::CLIENT, ns::SERVER),
        );
        st.out.extend_from_slice(&m);
        st.flush().await.unwrap();
        match tokio::time::timeout(WAIT, st.next_event()).await.unwrap() {
            Err(Fail::Peer(c)) => assert_eq!(c, condition),
            other => panic!("expected {condition}, got {other:?}"),
        }
    }
}

/// XEP-0220 §2.2.1 Example 10: a `<db:result/>` for a domain the receiving
/// server does not serve is a dialback error, and the stream stays open.
#[tokio::test]
async fn dialback_for_unserved_domain_is_an_error() {
    let (a, _b, _dir) = pair(|_, _, _| {}).await;
    let (socket, _) = connect(&a.s2s, "b.example").await.unwrap();
    let (mut st, _) = negotiate(&a.s2s, "a.example", "b.example", socket, Purpose::Verify)
        .await
        .unwrap();
    for _ in 0..2 {
        dialback::write(
            &mut st.out,
            "result",
            "a.example",
            "nowhere.example",
            None,
            None,
            Some("0123"),
        );
        st.flush().await.unwrap();
        let el = tokio::time::timeout(WAIT, st.next_element())
            .await
            .unwrap()
            .unwrap();
        assert!(el.is("result", ns::DIALBACK), "{el}");
        assert_eq!(el.attr("type"), Some("error"));
        assert_eq!(el.attr("from"), Some("nowhere.example"));
        let error = el.child("error", ns::SERVER).unwrap();
        assert!(error.child("item-not-found", ns::STANZAS).is_some());
    }
}

/// A certificate chain that is trusted but names another domain is
/// refused (RFC 6125 §6): with dialback allowed the stream falls back to
/// it; with valid certificates required the stanza is bounced.
#[tokio::test]
async fn wrong_name_certificate_falls_back_or_is_refused() {
    let dir = temp_dir();
    // A CA that A trusts for b.example, and B's leaf for the wrong name.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["wrong.example".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let cb = (dir.join("b.crt"), dir.join("b.key"));
    std::fs::write(&cb.0, leaf.pem()).unwrap();
    std::fs::write(&cb.1, leaf_key.serialize_pem()).unwrap();

    for require in [false, true] {
        let (la, aa) = bind().await;
        let (lb, ab) = bind().await;
        let mut cfg_a = config();
        cfg_a.require_valid_certificates = require;
        cfg_a.peers.insert(
            "b.example".into(),
            PeerConfig {
                ca: Some(dir.join("ca.pem")),
                ..peer(ab)
            },
        );
        let mut cfg_b = config();
        cfg_b.peers.insert("a.example".into(), peer(aa));
        let mut a = start(
            "a.example",
            la,
            self_signed(&dir, "a", &["a.example"]),
            cfg_a,
        )
        .await;
        let mut b = start("b.example", lb, cb.clone(), cfg_b).await;
        a.s2s
            .send_remote(message("alice@a.example", "bob@b.example", "hi"));
        if require {
            let bounce = a.next().await;
            let e = StanzaError::from_stanza(bounce.element()).unwrap();
            assert_eq!(e.condition, "remote-server-not-found");
            assert!(e.text.unwrap().contains("certificate"));
        } else {
            let got = b.next().await;
            assert_eq!(got.to().unwrap(), &Jid::parse("bob@b.example").unwrap());
        }
    }
}

/// The `[s2s]` section parses with its defaults and rejects unknown keys.
#[test]
fn config_parses() {
    let c: S2sConfig = toml::from_str(
        "require_valid_certificates = true\n[peers.\"b.example\"]\naddress = \"127.0.0.1:5270\"\ntls = \"direct\"\n",
    )
    .unwrap();
    assert!(c.require_valid_certificates);
    assert_eq!(c.peers["b.example"].tls, PeerTls::Direct);
    assert_eq!(c.listen, S2sConfig::default().listen);
    assert!(toml::from_str::<S2sConfig>("nope = 1").is_err());
}

/// XEP-0368: a peer reached with direct TLS (ALPN `xmpp-server`) on its
/// direct TLS listener.
#[tokio::test]
async fn direct_tls_peer() {
    let dir = temp_dir();
    let (la, aa) = bind().await;
    let (lb, _) = bind().await;
    let (lb_direct, ab_direct) = bind().await;
    let mut cfg_a = config();
    cfg_a.peers.insert(
        "b.example".into(),
        PeerConfig {
            tls: PeerTls::Direct,
            ..peer(ab_direct)
        },
    );
    let mut cfg_b = config();
    cfg_b.peers.insert("a.example".into(), peer(aa));
    let a = start(
        "a.example",
        la,
        self_signed(&dir, "a", &["a.example"]),
        cfg_a,
    )
    .await;
    let mut b = start(
        "b.example",
        lb,
        self_signed(&dir, "b", &["b.example"]),
        cfg_b,
    )
    .await;
    tokio::spawn(b.s2s.clone().serve(lb_direct, true));
    a.s2s
        .send_remote(message("alice@a.example", "bob@b.example", "direct"));
    let got = b.next().await;
    assert_eq!(
        got.element().child("body", ns::CLIENT).unwrap().text(),
        "direct"
    );
}

/// The parser limits of c2s apply: a stanza over `max_stanza_bytes` is a
/// `<policy-violation/>` (RFC 6120 §4.9.3.14); more streams from one domain
/// than `max_inbound_per_domain` too.
#[tokio::test]
async fn stanza_size_and_stream_count_limits() {
    let (a, _b, _dir) = pair(|me, cfg, _| {
        if me == "b.example" {
            cfg.max_stanza_bytes = 10_000;
            cfg.max_inbound_per_domain = 2;
        }
    })
    .await;
    let (socket, _) = connect(&a.s2s, "b.example").await.unwrap();
    let (mut st, _) = negotiate(&a.s2s, "a.example", "b.example", socket, Purpose::Stanzas)
        .await
        .unwrap();
    // That stream and a second one from a.example fill b.example's limit
    // of 2 (the dialback callback went the other way, to a.example).
    let (socket, _) = connect(&a.s2s, "b.example").await.unwrap();
    let (_second, _) = negotiate(&a.s2s, "a.example", "b.example", socket, Purpose::Verify)
        .await
        .unwrap();
    let (socket, _) = connect(&a.s2s, "b.example").await.unwrap();
    match negotiate(&a.s2s, "a.example", "b.example", socket, Purpose::Verify).await {
        Err(outbound::Failure::NotFound(why)) => {
            assert!(why.contains("policy-violation"), "{why}")
        }
        other => panic!("expected policy-violation, got {:?}", other.map(|_| ())),
    }
    let mut m = Vec::new();
    message("alice@a.example", "bob@b.example", &"x".repeat(20_000))
        .element()
        .write_to_mapped(&mut m, ns::SERVER, (ns::CLIENT, ns::SERVER));
    st.out.extend_from_slice(&m);
    let _ = st.flush().await;
    match tokio::time::timeout(WAIT, st.next_event()).await.unwrap() {
        Err(Fail::Peer(c)) => assert_eq!(c, "policy-violation"),
        other => panic!("expected policy-violation, got {other:?}"),
    }
}
