//! Federation end to end (RFC 6120 server-to-server streams): two complete
//! servers with different domains on loopback, routed to each other by the
//! `[s2s.peers]` table, with clients on each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rookery_e2e::cluster::free_port;
use rookery_e2e::{TestServer, roster_state, subscribe};
use rookery_xml::ns;

/// How the two servers authenticate to each other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Self-signed certificates nobody trusts: Server Dialback (XEP-0220).
    Dialback,
    /// Each trusts the other's certificate and refuses dialback: SASL
    /// EXTERNAL (RFC 6120 §6, XEP-0178).
    Certificates,
}

fn write_cert(dir: &Path, domain: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![domain.to_owned()]).unwrap();
    let (c, k) = (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    );
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (c, k)
}

async fn two_servers(auth: Auth) -> (TestServer, TestServer, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let (a_cert, a_key) = write_cert(certs.path(), "a.test");
    let (b_cert, b_key) = write_cert(certs.path(), "b.test");
    let configure = |me: &str, port: u16, other: &str, other_port: u16, cert, key, other_cert| {
        let (me, other) = (me.to_owned(), other.to_owned());
        move |c: &mut rookery::config::Config| {
            c.server.domain = me;
            c.s2s.enabled = true;
            c.s2s.listen = vec![format!("127.0.0.1:{port}").parse().unwrap()];
            c.tls.cert = Some(cert);
            c.tls.key = Some(key);
            let mut peer = rookery_s2s::PeerConfig {
                address: format!("127.0.0.1:{other_port}"),
                ..Default::default()
            };
            if auth == Auth::Certificates {
                peer.cert = Some(other_cert);
                c.s2s.require_valid_certificates = true;
            }
            c.s2s.peers.insert(other, peer);
            // A peer that refuses connections.
            c.s2s.peers.insert(
                "gone.test".into(),
                rookery_s2s::PeerConfig {
                    address: format!("127.0.0.1:{}", free_port()),
                    ..Default::default()
                },
            );
        }
    };
    let a = TestServer::start_with(configure(
        "a.test",
        a_port,
        "b.test",
        b_port,
        a_cert.clone(),
        a_key,
        b_cert.clone(),
    ))
    .await;
    let b = TestServer::start_with(configure(
        "b.test", b_port, "a.test", a_port, b_cert, b_key, a_cert,
    ))
    .await;
    a.add_user("alice", "pw").await;
    b.add_user("bob", "pw").await;
    (a, b, certs)
}

async fn messages_and_errors_across_servers(auth: Auth) {
    let (a, b, _certs) = two_servers(auth).await;
    let mut alice = a.login("alice", "pw", "laptop").await;
    let mut bob = b.login("bob", "pw", "phone").await;

    alice
        .send("<message to='bob@b.test/phone' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let m = bob.next_stanza().await;
    assert_eq!(m.name(), "message");
    assert_eq!(m.attr("from"), Some("alice@a.test/laptop"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi bob");

    bob.send(
        "<message to='alice@a.test/laptop' type='chat' id='m2'><body>hi alice</body></message>",
    )
    .await;
    let m = alice.next_stanza().await;
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi alice");

    // An iq to an account that does not exist on the other server:
    // service-unavailable comes back across the federation (RFC 6121 §8.5.1).
    let r = alice
        .iq("<iq to='nobody@b.test/x' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert_eq!(r.attr("from"), Some("nobody@b.test/x"));
    let e = r.child("error", ns::CLIENT).unwrap();
    assert!(e.child("service-unavailable", ns::STANZAS).is_some(), "{r}");

    // The other server's own iqs answer too (XEP-0199 ping to the domain).
    let r = bob
        .iq_ok("<iq to='a.test' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("from"), Some("a.test"));

    // A server that cannot be reached: remote-server-not-found (RFC 6120 §8.3.3.16).
    let r = alice
        .iq("<iq to='gone.test' type='get' id='g1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(
        r.child("error", ns::CLIENT)
            .unwrap()
            .child("remote-server-not-found", ns::STANZAS)
            .is_some(),
        "{r}"
    );
}

#[tokio::test]
async fn federation_with_dialback() {
    messages_and_errors_across_servers(Auth::Dialback).await;
}

#[tokio::test]
async fn federation_with_certificates_and_sasl_external() {
    messages_and_errors_across_servers(Auth::Certificates).await;
}

/// RFC 6121 §3 and §4 across servers (issue 5 item 5): the subscription
/// handshake both ways, presence broadcast, unavailable on disconnect, and
/// the probe of a returning user answered by the other server.
async fn subscriptions_and_presence_across_servers(auth: Auth) {
    let (a, b, _certs) = two_servers(auth).await;
    let mut alice = a.online("alice", "laptop").await;
    let mut bob = b.online("bob", "phone").await;

    // §3.1: alice asks, bob approves; then the other way round. The
    // contact's address is prepared by alice's server (`Bob@` → `bob@`).
    alice
        .send("<presence to='Bob@b.test' type='subscribe' id='sub1'/>")
        .await;
    let (req, _) = bob
        .until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(
        req.to_xml_string(),
        "<presence xmlns='jabber:client' to='bob@b.test' type='subscribe' id='sub1' from='alice@a.test'/>"
    );
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    let (ok, _) = alice
        .until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(ok.attr("from"), Some("bob@b.test"), "{ok}");
    let (p, _) = alice
        .until(|e| e.name() == "presence" && e.attr("type").is_none())
        .await;
    assert_eq!(p.attr("from"), Some("bob@b.test/phone"), "{p}");
    subscribe(&mut bob, "bob@b.test", &mut alice, "alice@a.test/laptop").await;

    // Both rosters say `both`, with no pending request (§2.1.2.5).
    assert_eq!(
        roster_state(&mut alice, "bob@b.test").await,
        Some(("both".into(), None))
    );
    assert_eq!(
        roster_state(&mut bob, "alice@a.test").await,
        Some(("both".into(), None))
    );

    // §4.4: a presence change reaches the contact on the other server.
    bob.send("<presence><show>away</show><status>out</status></presence>")
        .await;
    let (p, _) = alice
        .until(|e| e.name() == "presence" && e.child("show", ns::CLIENT).is_some())
        .await;
    assert_eq!(
        p.to_xml_string(),
        "<presence xmlns='jabber:client' from='bob@b.test/phone' to='alice@a.test'><show>away</show><status>out</status></presence>"
    );

    // §4.5.2: bob's connection drops; alice sees him go.
    drop(bob);
    let (gone, _) = alice
        .until(|e| e.name() == "presence" && e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(gone.attr("from"), Some("bob@b.test/phone"), "{gone}");

    // §4.3: back online, bob's server probes alice's across the
    // federation: her presence comes back to him, and she sees him.
    let mut bob = b.login("bob", "pw", "tablet").await;
    // An interested resource (it fetched the roster, RFC 6121 §2.1.6), so
    // that subscription changes reach it (§3.2.3).
    bob.iq("<iq type='get' id='roster2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    bob.send("<presence/>").await;
    let (hers, _) = bob
        .until(|e| e.name() == "presence" && e.attr("from") == Some("alice@a.test/laptop"))
        .await;
    assert_eq!(hers.attr("type"), None, "{hers}");
    let (his, _) = alice
        .until(|e| e.name() == "presence" && e.attr("from") == Some("bob@b.test/tablet"))
        .await;
    assert_eq!(his.attr("type"), None, "{his}");

    // §3.2: alice cancels bob's subscription; both rosters follow.
    alice
        .send("<presence to='bob@b.test' type='unsubscribed'/>")
        .await;
    let (cancel, _) = bob
        .until(|e| e.name() == "presence" && e.attr("type") == Some("unsubscribed"))
        .await;
    assert_eq!(cancel.attr("from"), Some("alice@a.test"), "{cancel}");
    assert_eq!(
        roster_state(&mut bob, "alice@a.test").await,
        Some(("from".into(), None))
    );
    assert_eq!(
        roster_state(&mut alice, "bob@b.test").await,
        Some(("to".into(), None))
    );
}

#[tokio::test]
async fn subscriptions_and_presence_with_dialback() {
    subscriptions_and_presence_across_servers(Auth::Dialback).await;
}

#[tokio::test]
async fn subscriptions_and_presence_with_certificates() {
    subscriptions_and_presence_across_servers(Auth::Certificates).await;
}
