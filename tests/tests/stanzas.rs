//! RFC 6120 §8 and §10 black-box: routing between local users, the server's
//! own iqs (XEP-0030, XEP-0199, XEP-0092, XEP-0202), stanza errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::TestServer;
use rookery_xml::ns;

async fn two_users() -> (TestServer, rookery_e2e::RawClient, rookery_e2e::RawClient) {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let a = s.login("alice", "pw", "laptop").await;
    let b = s.login("bob", "pw", "phone").await;
    (s, a, b)
}

#[tokio::test]
async fn message_to_full_jid_is_stamped_and_reserialized() {
    let (_s, mut a, mut b) = two_users().await;
    // A spoofed 'from' of our own bare JID is allowed and replaced by the full JID.
    a.send("<message to='bob@localhost/phone' type='chat' id='m1' from='alice@localhost'><body>hi &amp; &lt;bye&gt;</body><x xmlns='urn:example' a='&quot;'/></message>")
        .await;
    let m = b.next_stanza().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/laptop"));
    assert_eq!(m.attr("to"), Some("bob@localhost/phone"));
    assert_eq!(m.attr("id"), Some("m1"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi & <bye>");
    assert_eq!(m.child("x", "urn:example").unwrap().attr("a"), Some("\""));
}

#[tokio::test]
async fn message_to_bare_jid_follows_presence_and_priority() {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let mut a = s.login("alice", "pw", "a").await;
    let mut b1 = s.login("bob", "pw", "one").await;
    let mut b2 = s.login("bob", "pw", "two").await;
    // No available resource yet: offline storage (XEP-0160), handed to the
    // first resource that becomes available.
    a.send("<message to='bob@localhost' type='chat' id='early'><body>0</body></message>")
        .await;
    a.iq("<iq type='get' id='sync0'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    b1.send("<presence><priority>5</priority></presence>").await;
    let early = b1.next_message().await;
    assert_eq!(early.attr("id"), Some("early"));
    assert!(early.child("delay", "urn:xmpp:delay").is_some(), "{early}");
    b2.send("<presence><priority>1</priority></presence>").await;
    // Presence is processed in order per connection; make sure both landed.
    b1.iq("<iq type='get' id='sync1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    b2.iq("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='m2'><body>to the best</body></message>")
        .await;
    let m = b1.next_message().await;
    assert_eq!(m.attr("id"), Some("m2"));
    // Equal priorities: every resource of that priority gets it.
    b2.send("<presence><priority>5</priority></presence>").await;
    b2.iq("<iq type='get' id='sync3'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='m3'><body>both</body></message>")
        .await;
    assert_eq!(b1.next_message().await.attr("id"), Some("m3"));
    assert_eq!(b2.next_message().await.attr("id"), Some("m3"));
    // Negative priority never receives bare-JID messages (RFC 6121 §8.5.2.1.1).
    b1.send("<presence><priority>-1</priority></presence>")
        .await;
    b2.send("<presence type='unavailable'/>").await;
    b1.iq("<iq type='get' id='sync4'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    b2.iq("<iq type='get' id='sync5'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='m4'><body>none</body></message>")
        .await;
    a.iq("<iq type='get' id='sync4a'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    // Stored, and handed over when a non-negative resource appears.
    b2.send("<presence/>").await;
    assert_eq!(b2.next_message().await.attr("id"), Some("m4"));
    // A message to an unknown full JID of an online user falls back to the bare JID rules.
    b2.iq("<iq type='get' id='sync6'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.send("<message to='bob@localhost/gone' type='chat' id='m5'><body>fallback</body></message>")
        .await;
    assert_eq!(b2.next_message().await.attr("id"), Some("m5"));
}

#[tokio::test]
async fn iq_between_users_and_errors() {
    let (_s, mut a, mut b) = two_users().await;
    a.send(
        "<iq to='bob@localhost/phone' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let q = b.next_stanza().await;
    assert_eq!(q.attr("from"), Some("alice@localhost/laptop"));
    b.send("<iq to='alice@localhost/laptop' type='result' id='q1'><query xmlns='jabber:iq:version'><name>bob</name></query></iq>")
        .await;
    let r = a.next_stanza().await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("from"), Some("bob@localhost/phone"));
    // Unknown resource: service-unavailable (RFC 6120 §10.5.3.2).
    let e = a.iq("<iq to='bob@localhost/none' type='get' id='q2'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(e.attr("from"), Some("bob@localhost/none"));
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    // Unknown account.
    let e = a
        .iq("<iq to='nobody@localhost' type='get' id='q3'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("service-unavailable"), "{e}");
    // An account's bare JID is answered by the server on its behalf.
    let r = a
        .iq("<iq to='bob@localhost' type='get' id='q4'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    // A remote domain (federation is off in test servers): remote-server-not-found.
    let e = a
        .iq("<iq to='juliet@example.net' type='get' id='q5'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("remote-server-not-found"), "{e}");
    // A malformed 'to' is jid-malformed (RFC 6120 §8.3.3.8).
    let e = a
        .iq("<iq to='@@bad' type='get' id='q6'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("jid-malformed"), "{e}");
    // An iq get with two payloads is bad-request (RFC 6120 §8.2.3).
    let e = a.iq("<iq type='get' id='q7'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert!(e.to_string().contains("bad-request"), "{e}");
    // Presence directed to a full JID is delivered.
    a.send("<presence to='bob@localhost/phone'/>").await;
    let p = b.next_stanza().await;
    assert_eq!(p.name(), "presence");
    assert_eq!(p.attr("from"), Some("alice@localhost/laptop"));
}

#[tokio::test]
async fn server_iqs() {
    let (s, mut a, _b) = two_users().await;
    let info = a.iq("<iq to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let q = info.child("query", ns::DISCO_INFO).unwrap();
    let id = q.child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("server"), Some("im"))
    );
    let features: Vec<&str> = q
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in [
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::VERSION,
        ns::TIME,
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    let items = a.iq("<iq to='localhost' type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    assert_eq!(items.attr("type"), Some("result"));
    let node = a.iq("<iq to='localhost' type='get' id='d3'><query xmlns='http://jabber.org/protocol/disco#info' node='nope'/></iq>").await;
    assert!(node.to_string().contains("item-not-found"));
    let acct = a.iq("<iq to='bob@localhost' type='get' id='d4'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let idn = acct
        .child("query", ns::DISCO_INFO)
        .unwrap()
        .child("identity", ns::DISCO_INFO)
        .unwrap();
    assert_eq!(idn.attr("category"), Some("account"));

    let v = a
        .iq("<iq to='localhost' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let q = v.child("query", ns::VERSION).unwrap();
    assert_eq!(q.child("name", ns::VERSION).unwrap().text(), "Rookery");
    assert!(
        q.child("os", ns::VERSION).is_none(),
        "OS is private by default"
    );

    let t = a
        .iq("<iq to='localhost' type='get' id='t1'><time xmlns='urn:xmpp:time'/></iq>")
        .await;
    let tm = t.child("time", ns::TIME).unwrap();
    assert_eq!(tm.child("tzo", ns::TIME).unwrap().text(), "+00:00");
    assert!(tm.child("utc", ns::TIME).unwrap().text().ends_with('Z'));

    // No 'to' means the server on behalf of the account.
    let p = a
        .iq("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(p.attr("type"), Some("result"));
    let e = a
        .iq("<iq to='localhost' type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(e.to_string().contains("service-unavailable"));

    let m = s.http_get("/metrics").await;
    assert!(m.contains("rookery_stanzas_in_total{kind=\"iq\"}"), "{m}");
    assert!(m.contains("rookery_sessions 2"), "{m}");
    assert!(s.http_get("/health").await.ends_with("ok\n"));
}

#[tokio::test]
async fn version_can_be_turned_off() {
    let s = TestServer::start_with(|c| c.modules.version = false).await;
    s.add_user("alice", "pw").await;
    let mut a = s.login("alice", "pw", "r").await;
    let e = a
        .iq("<iq to='localhost' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert!(e.to_string().contains("service-unavailable"));
    let info = a.iq("<iq to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert!(!info.to_string().contains(ns::VERSION));
}

#[tokio::test]
async fn invalid_from_closes_the_stream() {
    let (_s, mut a, _b) = two_users().await;
    a.send("<message to='bob@localhost' from='bob@localhost/phone'><body>spoof</body></message>")
        .await;
    assert_eq!(a.expect_stream_error().await, "invalid-from");
}

#[tokio::test]
async fn server_pings_idle_clients_and_drops_dead_ones() {
    let s = TestServer::start_with(|c| {
        c.c2s.ping_interval_secs = 1;
        c.c2s.ping_timeout_secs = 1;
    })
    .await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let mut a = s.login("alice", "pw", "r").await;
    let mut b = s.login("bob", "pw", "r").await;
    // Alice answers pings (next_stanza does) and stays; Bob does not and is dropped.
    let alice = tokio::spawn(async move {
        // Nothing but pings arrives, so this only ends by the timeout.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(4), a.next_stanza()).await;
        a
    });
    let ping = b.next().await;
    assert!(ping.child("ping", ns::PING).is_some(), "{ping}");
    assert_eq!(ping.attr("from"), Some("localhost"));
    assert_eq!(b.expect_stream_error().await, "connection-timeout");
    let mut a = alice.await.unwrap();
    let r = a
        .iq("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn shutdown_sends_system_shutdown_after_flushing() {
    let (mut s, mut a, mut b) = two_users().await;
    a.send("<message to='bob@localhost/phone' id='last'><body>before shutdown</body></message>")
        .await;
    // Wait until Bob got it, then stop the server.
    assert_eq!(b.next_stanza().await.attr("id"), Some("last"));
    s.stop().await;
    assert_eq!(a.expect_stream_error().await, "system-shutdown");
    assert_eq!(b.expect_stream_error().await, "system-shutdown");
}

#[tokio::test]
async fn client_closing_its_stream_ends_the_session() {
    let (s, mut a, mut b) = two_users().await;
    b.send("</stream:stream>").await;
    b.expect_closed().await;
    wait_for_one_session(&s).await;
    let e = a
        .iq("<iq to='bob@localhost/phone' type='get' id='g'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(e.to_string().contains("service-unavailable"), "{e}");
}

async fn wait_for_one_session(s: &TestServer) {
    let sessions = s.running.as_ref().unwrap().sessions.clone();
    rookery_e2e::eventually(|| sessions.session_count() == 1).await;
}
