//! XEP-0198 stream management black-box: enabling, acks in both
//! directions, resumption after a dropped connection, and what happens to
//! unacknowledged messages when a session ends for good.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rookery_e2e::{RawClient, TestServer};
use rookery_xml::{Element, ns};

const SM: &str = "urn:xmpp:sm:3";

/// Authenticates without binding a resource.
async fn authed(s: &TestServer, user: &str) -> RawClient {
    let mut c = RawClient::connect(s.addr()).await;
    c.open(s.domain()).await;
    c.starttls(s.domain()).await;
    c.auth_scram("SCRAM-SHA-256", user, "pw").await.unwrap();
    let f = c.open(s.domain()).await;
    assert!(f.child("sm", SM).is_some(), "sm feature missing: {f}");
    c
}

/// The next element that is not the server's `<r/>`.
async fn next_no_r(c: &mut RawClient) -> Element {
    loop {
        let el = c.next().await;
        if !el.is("r", SM) {
            return el;
        }
    }
}

async fn ack_count(c: &mut RawClient) -> u32 {
    c.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    loop {
        let el = next_no_r(c).await;
        if el.is("a", SM) {
            return el.attr("h").unwrap().parse().unwrap();
        }
    }
}

async fn enable_resume(c: &mut RawClient) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = next_no_r(c).await;
    assert!(e.is("enabled", SM), "{e}");
    assert_eq!(e.attr("resume"), Some("true"));
    assert_eq!(e.attr("max"), Some("300"));
    e.attr("id").unwrap().to_owned()
}

fn failed_condition(el: &Element) -> String {
    assert!(el.is("failed", SM), "expected <failed/>, got {el}");
    el.first_child().unwrap().name().to_owned()
}

async fn users() -> TestServer {
    users_with(|_| {}).await
}

async fn users_with(f: impl FnOnce(&mut rookery::config::Config)) -> TestServer {
    let s = TestServer::start_with(f).await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    s
}

#[tokio::test]
async fn enable_and_ack_counting() {
    let s = users().await;
    // <enable/> before binding is refused.
    let mut early = authed(&s, "alice").await;
    early.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(failed_condition(&early.next().await), "unexpected-request");
    early.bind(Some("early")).await;

    let mut a = s.login("alice", "pw", "laptop").await;
    let mut b = s.login("bob", "pw", "phone").await;
    // Stanzas before <enable/> do not count (§4: h starts at zero when
    // stream management is enabled).
    let r = a
        .iq("<iq type='get' id='before'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    a.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = a.next().await;
    assert!(e.is("enabled", SM), "{e}");
    assert_eq!(e.attr("id"), None, "no resumption was asked for");
    // Twice is an error.
    a.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert_eq!(failed_condition(&a.next().await), "unexpected-request");
    assert_eq!(ack_count(&mut a).await, 0);
    // Three stanzas in: two messages and a ping.
    a.send("<message to='bob@localhost/phone' id='m1'><body>1</body></message>")
        .await;
    a.send("<message to='bob@localhost/phone' id='m2'><body>2</body></message>")
        .await;
    a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = next_no_r(&mut a).await;
    assert_eq!(pong.attr("id"), Some("p1"));
    assert_eq!(ack_count(&mut a).await, 3);
    assert_eq!(b.next_message().await.attr("id"), Some("m1"));
    assert_eq!(b.next_message().await.attr("id"), Some("m2"));
    // The server asks for an ack after five stanzas.
    for i in 0..5 {
        b.send(&format!(
            "<message to='alice@localhost/laptop' id='b{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    // Five stanzas since the last request (the pong counts): an <r/>
    // comes at the latest after the fifth message.
    let (mut got, mut asked) = (0, false);
    while got < 5 || !asked {
        let el = a.next().await;
        if el.is("r", SM) {
            asked = true;
            continue;
        }
        assert_eq!(el.name(), "message", "{el}");
        got += 1;
    }
    // Six stanzas sent to alice since <enable/>: the pong and five messages.
    a.send("<a xmlns='urn:xmpp:sm:3' h='6'/>").await;
    a.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("p2"));
    // Acknowledging more than was sent ends the stream (§4).
    a.send("<a xmlns='urn:xmpp:sm:3' h='20'/>").await;
    assert_eq!(a.expect_stream_error().await, "undefined-condition");
}

#[tokio::test]
async fn resume_replays_unacked_and_queued_stanzas() {
    let s = users().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let mut b = s.login("bob", "pw", "phone").await;
    let id = enable_resume(&mut a).await;
    a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("p1"));
    a.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    b.send("<message to='alice@localhost/laptop' id='m1'><body>1</body></message>")
        .await;
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("m1"));
    // The TCP connection drops without m1 being acknowledged.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send("<message to='alice@localhost/laptop' id='m2'><body>2</body></message>")
        .await;
    b.iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;

    let mut a = authed(&s, "alice").await;
    a.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='1' previd='{id}'/>"
    ))
    .await;
    let r = next_no_r(&mut a).await;
    assert!(r.is("resumed", SM), "{r}");
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(r.attr("h"), Some("1"), "the server handled one stanza");
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("m1"));
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("m2"));
    // The same full JID, the same counters.
    b.send("<message to='alice@localhost/laptop' id='m3'><body>3</body></message>")
        .await;
    let m3 = next_no_r(&mut a).await;
    assert_eq!(m3.attr("id"), Some("m3"));
    assert_eq!(m3.attr("to"), Some("alice@localhost/laptop"));
    assert_eq!(ack_count(&mut a).await, 1);
    a.send("<a xmlns='urn:xmpp:sm:3' h='4'/>").await;
    a.send("<message to='bob@localhost/phone' id='back'><body>b</body></message>")
        .await;
    let back = b.next_message().await;
    assert_eq!(back.attr("from"), Some("alice@localhost/laptop"));
}

#[tokio::test]
async fn resume_while_attached_takes_over() {
    let s = users().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let id = enable_resume(&mut a).await;
    let mut a2 = authed(&s, "alice").await;
    a2.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='0' previd='{id}'/>"
    ))
    .await;
    let r = next_no_r(&mut a2).await;
    assert!(r.is("resumed", SM), "{r}");
    assert_eq!(a.expect_stream_error().await, "conflict");
    assert_eq!(ack_count(&mut a2).await, 0);
}

#[tokio::test]
async fn resume_with_unknown_id_fails_and_bind_still_works() {
    let s = users().await;
    let mut a = authed(&s, "alice").await;
    a.send("<resume xmlns='urn:xmpp:sm:3' h='0' previd='nope'/>")
        .await;
    assert_eq!(failed_condition(&a.next().await), "item-not-found");
    let jid = a.bind(Some("laptop")).await;
    assert_eq!(jid, "alice@localhost/laptop");
}

#[tokio::test]
async fn resume_by_another_user_fails() {
    let s = users().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let id = enable_resume(&mut a).await;
    drop(a);
    let mut b = authed(&s, "bob").await;
    b.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='0' previd='{id}'/>"
    ))
    .await;
    assert_eq!(failed_condition(&b.next().await), "item-not-found");
    b.bind(None).await;
}

#[tokio::test]
async fn resumption_timeout_stores_unacked_messages_offline() {
    let s = users_with(|c| c.c2s.sm_resume_timeout_secs = 1).await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let mut b = s.login("bob", "pw", "phone").await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let e = next_no_r(&mut a).await;
    assert_eq!(e.attr("max"), Some("1"));
    let id = e.attr("id").unwrap().to_owned();
    b.send("<message to='alice@localhost/laptop' type='chat' id='m1'><body>1</body></message>")
        .await;
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("m1"));
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.send("<message to='alice@localhost/laptop' type='chat' id='m2'><body>2</body></message>")
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // The session is gone: resuming fails, and both messages were stored.
    let mut a = authed(&s, "alice").await;
    a.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' h='0' previd='{id}'/>"
    ))
    .await;
    assert_eq!(failed_condition(&a.next().await), "item-not-found");
    a.bind(Some("laptop")).await;
    a.send("<presence/>").await;
    let m1 = a.next_message().await;
    assert_eq!(m1.attr("id"), Some("m1"));
    assert!(m1.child("delay", "urn:xmpp:delay").is_some(), "{m1}");
    assert_eq!(a.next_message().await.attr("id"), Some("m2"));
}

#[tokio::test]
async fn clean_close_does_not_lose_unacked_messages() {
    let s = users().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let mut b = s.login("bob", "pw", "phone").await;
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    assert!(next_no_r(&mut a).await.is("enabled", SM));
    b.send("<message to='alice@localhost/laptop' type='chat' id='m1'><body>1</body></message>")
        .await;
    let m1 = next_no_r(&mut a).await;
    assert_eq!(m1.attr("id"), Some("m1"));
    assert_eq!(m1.child("body", ns::CLIENT).unwrap().text(), "1");
    a.send("</stream:stream>").await;
    a.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut a = s.login("alice", "pw", "desk").await;
    a.send("<presence/>").await;
    assert_eq!(a.next_message().await.attr("id"), Some("m1"));
}

/// A client that logs in again with the same resource instead of resuming
/// (its old session detached, or still attached) replaces the old session
/// and gets what that session's client never acknowledged, then the rest.
#[tokio::test]
async fn a_new_login_on_the_same_resource_gets_the_unacked_messages() {
    let s = users().await;
    let mut a = s.login("alice", "pw", "laptop").await;
    let mut b = s.login("bob", "pw", "phone").await;
    enable_resume(&mut a).await;
    b.send("<message to='alice@localhost/laptop' type='chat' id='m1'><body>1</body></message>")
        .await;
    assert_eq!(next_no_r(&mut a).await.attr("id"), Some("m1"));
    // The connection drops, m1 unacknowledged; m2 comes meanwhile.
    drop(a);
    b.send("<message to='alice@localhost/laptop' type='chat' id='m2'><body>2</body></message>")
        .await;
    b.iq("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    // A fresh login, same resource, no <resume/>.
    let mut a = s.login("alice", "pw", "laptop").await;
    assert_eq!(a.next_message().await.attr("id"), Some("m1"));
    assert_eq!(a.next_message().await.attr("id"), Some("m2"));
    b.send("<message to='alice@localhost/laptop' type='chat' id='m3'><body>3</body></message>")
        .await;
    assert_eq!(a.next_message().await.attr("id"), Some("m3"));
}
