//! Every bad input gets its RFC 6120 error, and other connections keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_e2e::{RawClient, TestServer};

async fn ping_works(c: &mut RawClient) {
    let r = c
        .iq("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

async fn setup() -> (TestServer, RawClient, RawClient) {
    let s = TestServer::start().await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    let a = s.login("alice", "pw", "a").await;
    let b = s.login("bob", "pw", "b").await;
    (s, a, b)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn each_bad_input_gets_its_stream_error() {
    let (_s, mut a, mut b) = setup().await;
    let cases: [(&str, &str); 8] = [
        ("<message><body>x</message>", "not-well-formed"),
        (
            "<message to='bob@localhost'><!-- hidden --></message>",
            "restricted-xml",
        ),
        ("<?evil instruction?>", "restricted-xml"),
        ("<message><body>&xxe;</body></message>", "restricted-xml"),
        ("<message a='1' a='2'/>", "not-well-formed"),
        ("<message><body>\u{1}</body></message>", "not-well-formed"),
        ("<r xmlns='urn:xmpp:sm:3'/>", "unsupported-stanza-type"),
        (
            "<message xmlns:p='urn:x'><q:body/></message>",
            "not-well-formed",
        ),
    ];
    let s = &_s;
    for (input, cond) in cases {
        let mut c = s.login("alice", "pw", "victim").await;
        c.send(input).await;
        assert_eq!(c.expect_stream_error().await, cond, "{input}");
        ping_works(&mut a).await;
        ping_works(&mut b).await;
    }
    // Invalid UTF-8 bytes.
    let mut c = s.login("alice", "pw", "utf8").await;
    c.send_bytes(b"<message><body>\xff\xfe</body></message>")
        .await;
    assert_eq!(c.expect_stream_error().await, "not-well-formed");
}

#[tokio::test]
async fn doctype_and_billion_laughs_do_not_grow_memory() {
    let (s, mut a, _b) = setup().await;
    let before = rss_kib();
    let mut entities = String::from("<!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    let mut prev = "lol".to_owned();
    for i in 1..10 {
        let name = format!("lol{i}");
        entities.push_str(&format!(
            "<!ENTITY {name} '{}'>",
            format!("&{prev};").repeat(10)
        ));
        prev = name;
    }
    entities.push_str("]>");
    for _ in 0..20 {
        // Before the stream header.
        let mut c = RawClient::connect(s.addr()).await;
        c.send(&format!("<?xml version='1.0'?>{entities}<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message><body>&{prev};</body></message>"))
            .await;
        assert_eq!(c.expect_stream_error().await, "restricted-xml");
        // Inside an authenticated stream.
        let mut c = s.login("alice", "pw", "lol").await;
        c.send(&format!(
            "{entities}<message><body>&{prev};</body></message>"
        ))
        .await;
        assert_eq!(c.expect_stream_error().await, "restricted-xml");
    }
    let grown = rss_kib().saturating_sub(before);
    // 10^9 "lol"s would be gigabytes; allow for allocator noise only.
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB");
    ping_works(&mut a).await;
}

#[tokio::test]
async fn limits_give_policy_violation() {
    let s = TestServer::start_with(|c| {
        c.c2s.max_stanza_bytes = 16 * 1024;
        c.c2s.max_depth = 8;
    })
    .await;
    s.add_user("alice", "pw").await;
    let mut a = s.login("alice", "pw", "a").await;
    // One stanza over the limit.
    let mut c = s.login("alice", "pw", "big").await;
    c.send(&format!(
        "<message to='alice@localhost/a'><body>{}</body></message>",
        "x".repeat(20_000)
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "policy-violation");
    // An unterminated tag that only grows.
    let mut c = s.login("alice", "pw", "grow").await;
    c.send("<message to='").await;
    for _ in 0..5 {
        c.send(&"y".repeat(4096)).await;
    }
    assert_eq!(c.expect_stream_error().await, "policy-violation");
    // Too deep.
    let mut c = s.login("alice", "pw", "deep").await;
    c.send(&format!(
        "<message>{}{}</message>",
        "<a>".repeat(20),
        "</a>".repeat(20)
    ))
    .await;
    assert_eq!(c.expect_stream_error().await, "policy-violation");
    // Many stanzas under the limit are fine.
    for i in 0..50 {
        a.send(&format!(
            "<message to='alice@localhost/a' id='s{i}'><body>{}</body></message>",
            "z".repeat(8000)
        ))
        .await;
    }
    for i in 0..50 {
        let m = a.next_stanza().await;
        assert_eq!(m.attr("id"), Some(format!("s{i}").as_str()));
    }
    let m = s.http_get("/metrics").await;
    assert!(
        m.contains("rookery_stream_errors_total{condition=\"policy-violation\"} 3"),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_go_on() {
    let s = TestServer::start_with(|c| {
        c.c2s.max_queued_stanzas = 32;
        c.c2s.write_timeout_secs = 2;
    })
    .await;
    s.add_user("alice", "pw").await;
    s.add_user("bob", "pw").await;
    s.add_user("carol", "pw").await;
    let mut a = s.login("alice", "pw", "a").await;
    let mut b = s.login("bob", "pw", "b").await;
    // Carol never reads again.
    let _carol = s.login("carol", "pw", "stuck").await;
    let body = "q".repeat(16 * 1024);
    let mut errors = 0;
    let mut sent = 0;
    // Flood until the server gives up on Carol: she is dropped and Alice's
    // messages bounce instead of queueing without bound.
    while errors == 0 {
        assert!(sent < 5000, "the stuck client was never dropped");
        for _ in 0..20 {
            a.send(&format!("<message to='carol@localhost/stuck' type='chat' id='f{sent}'><body>{body}</body></message>"))
                .await;
            sent += 1;
        }
        // Bob keeps working all along.
        ping_works(&mut b).await;
        let r = a
            .iq(&format!(
                "<iq type='get' id='sync{sent}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ))
            .await;
        assert_eq!(r.attr("type"), Some("result"));
        errors += count_errors(&s).await;
    }
    let metrics = s.http_get("/metrics").await;
    assert!(
        !metrics.contains("rookery_slow_consumer_drops_total 0"),
        "{metrics}"
    );
    // Bob and Alice still talk.
    a.send("<message to='bob@localhost/b' id='after'><body>still here</body></message>")
        .await;
    loop {
        let m = b.next_stanza().await;
        if m.attr("id") == Some("after") {
            break;
        }
    }
}

async fn count_errors(s: &TestServer) -> u32 {
    let m = s.http_get("/metrics").await;
    m.lines()
        .find(|l| l.starts_with("rookery_slow_consumer_drops_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
}
