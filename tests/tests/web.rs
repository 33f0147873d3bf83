//! The web transports against a real server: XMPP over WebSocket (RFC 7395),
//! BOSH (XEP-0124, XEP-0206) and host-meta (XEP-0156), each next to a TCP
//! client, with bad input that must end only the offending stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rookery_e2e::web::{FRAMING, Message, Ws, bosh, bosh_login, condition, create, http, req};
use rookery_e2e::{RawClient, TestServer, WAIT};
use rookery_xml::{Element, ns};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A TCP client answers the server's ping: it still works.
async fn still_works(c: &mut RawClient) {
    let r = c
        .iq("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn websocket_login_and_chat_with_a_tcp_client() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.online("bob", "tcp").await;
    let mut alice = Ws::login(server.web_tls_addr(), "alice", "web").await;

    // Stanzas without a namespace are read as jabber:client.
    alice
        .send("<message to='bob@localhost/tcp' type='chat'><body>hi over ws</body></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi over ws");

    bob.send("<message to='alice@localhost/web' type='chat'><body>hi over tcp</body></message>")
        .await;
    let text = loop {
        let t = alice.next_text().await.unwrap();
        if t.starts_with("<message") {
            break t;
        }
    };
    // RFC 7395 §3.3.3: every message declares its namespaces.
    assert!(text.starts_with("<message xmlns='jabber:client'"), "{text}");
    let m = Element::parse(&text).unwrap();
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi over tcp");

    // RFC 7395 §3.6: <close/> is answered by <close/> and a WebSocket close.
    alice
        .send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
        .await;
    loop {
        let el = alice.next().await;
        if el.is("close", FRAMING) {
            break;
        }
    }
    assert_eq!(alice.next_text().await, None);
    still_works(&mut bob).await;
}

#[tokio::test]
async fn websocket_bad_messages_get_stream_errors() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.online("bob", "tcp").await;
    let mut other = Ws::login(server.web_tls_addr(), "alice", "steady").await;

    for (bad, condition) in [
        // Two stanzas in one message, half a stanza, not XML: none is one
        // well-formed document (RFC 7395 §3.3.3, RFC 6120 §4.9.3.13).
        (
            "<message to='bob@localhost'><body>1</body></message><message to='bob@localhost'><body>2</body></message>",
            "not-well-formed",
        ),
        ("<message to='bob@localhost'><body>half", "not-well-formed"),
        ("this is not XML", "not-well-formed"),
    ] {
        let mut ws = Ws::login(server.web_tls_addr(), "alice", "bad").await;
        ws.send(bad).await;
        assert_eq!(ws.expect_stream_error().await, condition, "{bad}");
    }
    // Before the stream is even open.
    let mut ws = Ws::connect(server.web_tls_addr()).await;
    ws.send(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'><unclosed>",
    )
    .await;
    assert_eq!(ws.expect_stream_error().await, "not-well-formed");
    // A binary frame (RFC 7395 §3.2: text only).
    let mut ws = Ws::connect(server.web_tls_addr()).await;
    ws.open().await;
    ws.ws
        .send(Message::binary(b"<presence/>".to_vec()))
        .await
        .unwrap();
    assert_eq!(ws.expect_stream_error().await, "bad-format");

    // Nothing of that touched the others.
    still_works(&mut bob).await;
    other
        .send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>still here</body></message>")
        .await;
    let m = bob.next_message().await;
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "still here");
    // The bad messages were never delivered.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), bob.next_message())
            .await
            .is_err()
    );
}

/// RFC 7395 §3.8: no whitespace; the server's keepalive is a WebSocket
/// ping, and the client's pong (tungstenite answers by itself) keeps the
/// stream up.
#[tokio::test]
async fn websocket_keepalive_is_a_ping_frame() {
    let server = TestServer::start_with(|c| {
        c.c2s.ping_interval_secs = 1;
        c.c2s.ping_timeout_secs = 1;
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut ws = Ws::login(server.web_tls_addr(), "alice", "idle").await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(m) = tokio::time::timeout_at(until, ws.ws.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Text(t))) => panic!("unexpected message {t}"),
            other => panic!("the stream ended: {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    // Still up.
    ws.send("<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = ws.next().await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

#[tokio::test]
async fn websocket_needs_the_xmpp_subprotocol() {
    let server = TestServer::start().await;
    for protocol in [None, Some("chat")] {
        match Ws::try_connect(server.web_tls_addr(), protocol).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{protocol:?}");
            }
            Err(e) => panic!("{protocol:?}: {e}"),
            Ok(_) => panic!("{protocol:?}: upgraded without the xmpp subprotocol"),
        }
    }
    // And the listener still serves good clients.
    let mut ws = Ws::connect(server.web_tls_addr()).await;
    ws.open().await;
}

/// Plain HTTP without `behind_tls_proxy`: the stream is plaintext with no
/// way to upgrade, so `require_tls` refuses it.
#[tokio::test]
async fn websocket_plain_http_needs_tls_unless_behind_a_proxy() {
    for behind_proxy in [false, true] {
        let server = TestServer::start_with(|c| {
            c.web.listen = vec!["127.0.0.1:0".parse().unwrap()];
            c.web.behind_tls_proxy = behind_proxy;
        })
        .await;
        let tcp = TcpStream::connect(server.web_addr()).await.unwrap();
        let mut req = "ws://localhost/xmpp-websocket"
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::text(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        ))
        .await
        .unwrap();
        let mut texts = Vec::new();
        while texts.len() < 2 {
            match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
                other => panic!("{other:?}"),
            }
        }
        let second = Element::parse(&texts[1]).unwrap();
        if behind_proxy {
            assert!(second.is("features", ns::STREAMS), "{second:?}");
            assert!(texts[1].contains("PLAIN"));
        } else {
            assert!(second.is("error", ns::STREAMS), "{second:?}");
            assert!(
                second
                    .child("policy-violation", ns::STREAM_ERRORS)
                    .is_some()
            );
        }
    }
}

// ---- HTTP (BOSH, host-meta) -------------------------------------------------

#[tokio::test]
async fn bosh_login_and_chat_with_a_tcp_client() {
    let server = Arc::new(TestServer::start().await);
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.online("bob", "tcp").await;
    let sid = bosh_login(server.web_tls_addr(), "alice", "web", 1000).await;

    // The request carrying the message is held until there is something
    // to answer: bob's reply.
    let held = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move {
            bosh(
                server.web_tls_addr(),
                &req(
                    &sid,
                    1004,
                    "",
                    "<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>hi over bosh</body></message>",
                ),
            )
            .await
        }
    });
    let m = bob.next_message().await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi over bosh");
    bob.send("<message to='alice@localhost/web' type='chat'><body>hi over tcp</body></message>")
        .await;
    let r = held.await.unwrap();
    let m = r.child("message", ns::CLIENT).expect("bob's message");
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"));
    assert_eq!(m.child("body", ns::CLIENT).unwrap().text(), "hi over tcp");

    // An empty poll is answered empty after `wait`.
    let r = bosh(server.web_tls_addr(), &req(&sid, 1005, "", "")).await;
    assert!(r.children().next().is_none(), "{r:?}");

    // XEP-0124 §13: terminate, with a last payload.
    let r = bosh(
        server.web_tls_addr(),
        &req(
            &sid,
            1006,
            " type='terminate'",
            "<presence xmlns='jabber:client' type='unavailable'/>",
        ),
    )
    .await;
    assert_eq!(condition(&r), None);
    // The session is gone.
    let r = bosh(server.web_tls_addr(), &req(&sid, 1007, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));
    still_works(&mut bob).await;
}

#[tokio::test]
async fn bosh_errors_end_only_their_session() {
    let server = Arc::new(TestServer::start().await);
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.online("bob", "tcp").await;

    // An unknown sid (XEP-0124 §17.2).
    let r = bosh(server.web_tls_addr(), &req("nosuchsid", 5, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));
    // Not a <body/> at all.
    let r = http(server.web_tls_addr(), "POST", "/http-bind", "<body rid='1'").await;
    assert_eq!(r.status, 400);
    // A host we do not serve.
    let r = bosh(
        server.web_tls_addr(),
        &create(1, 2).replace("to='localhost'", "to='example.net'"),
    )
    .await;
    assert_eq!(condition(&r), Some("host-unknown"));

    // A repeated rid gets the same answer (§14.3); one beyond the window
    // ends the session (§14.2).
    let sid = bosh_login(server.web_tls_addr(), "alice", "one", 100).await;
    let again = bosh(
        server.web_tls_addr(),
        &req(&sid, 103, "", "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>one</resource></bind></iq>"),
    )
    .await;
    let iq = again.child("iq", ns::CLIENT).expect("the kept answer");
    assert_eq!(iq.attr("id"), Some("b"));
    let r = bosh(server.web_tls_addr(), &req(&sid, 110, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));
    let r = bosh(server.web_tls_addr(), &req(&sid, 104, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));

    // Too many simultaneous requests (§11): one held, one waiting for the
    // rid before it, and a third. Each is sent once the server counts the
    // one before it (`rookery_bosh_requests_held`), so they arrive in order.
    let sid = bosh_login(server.web_tls_addr(), "alice", "two", 200).await;
    let held = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move { bosh(server.web_tls_addr(), &req(&sid, 204, "", "")).await }
    });
    wait_held(&server, 1).await;
    let waiting = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move { bosh(server.web_tls_addr(), &req(&sid, 206, "", "")).await }
    });
    wait_held(&server, 2).await;
    let r = bosh(server.web_tls_addr(), &req(&sid, 205, "", "")).await;
    assert_eq!(condition(&r), Some("policy-violation"));
    // The other requests end with the session.
    assert_eq!(held.await.unwrap().attr("type"), Some("terminate"));
    assert_eq!(waiting.await.unwrap().attr("type"), Some("terminate"));

    // A stream error ends the session with `remote-stream-error`, the
    // error inside (XEP-0124 §17.2).
    let r = bosh(server.web_tls_addr(), &create(300, 2)).await;
    let sid = r.attr("sid").unwrap().to_owned();
    let r = bosh(
        server.web_tls_addr(),
        &req(&sid, 301, "", "<nonsense xmlns='urn:example'/>"),
    )
    .await;
    assert_eq!(condition(&r), Some("remote-stream-error"));
    let err = r.child("error", ns::STREAMS).expect("the stream error");
    assert!(
        err.child("unsupported-stanza-type", ns::STREAM_ERRORS)
            .is_some(),
        "{err:?}"
    );

    // The TCP client never noticed.
    still_works(&mut bob).await;
}

/// Waits until the server holds `n` BOSH requests.
async fn wait_held(server: &TestServer, n: u32) {
    let want = format!("rookery_bosh_requests_held {n}");
    rookery_e2e::wait_for(&want, || async {
        server.http_get("/metrics").await.lines().any(|l| l == want)
    })
    .await;
}

/// A held request whose client goes away (the HTTP connection closes) no
/// longer counts against the session's `requests` limit (XEP-0124 §11):
/// the next two requests are both taken.
#[tokio::test]
async fn a_bosh_request_dropped_by_its_client_is_not_counted() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let addr = server.web_tls_addr();
    let sid = bosh_login(addr, "alice", "gone", 10).await;
    let dropped = tokio::spawn({
        let sid = sid.clone();
        async move { bosh(addr, &req(&sid, 14, "", "")).await }
    });
    wait_held(&server, 1).await;
    dropped.abort();
    wait_held(&server, 0).await;
    let first = tokio::spawn({
        let sid = sid.clone();
        async move { bosh(addr, &req(&sid, 15, "", "")).await }
    });
    wait_held(&server, 1).await;
    // 16 supersedes the held 15 (hold='1'), and is itself held for `wait`.
    let second = bosh(addr, &req(&sid, 16, "", "")).await;
    assert_eq!(second.attr("type"), None, "{second:?}");
    let first = first.await.unwrap();
    assert_eq!(first.attr("type"), None, "{first:?}");
}

#[tokio::test]
async fn bosh_inactivity_ends_the_session() {
    let server = TestServer::start_with(|c| c.web.bosh_inactivity_secs = 1).await;
    server.add_user("alice", "pw").await;
    let _sid = bosh_login(server.web_tls_addr(), "alice", "idle", 10).await;
    let bound = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("rookery_c2s_connections{transport=\"bosh\"}"))
            .map(|l| l.ends_with(" 1"))
    };
    assert_eq!(bound(&server.http_get("/metrics").await), Some(true));
    let start = std::time::Instant::now();
    loop {
        let m = server.http_get("/metrics").await;
        if bound(&m) == Some(false) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the idle BOSH session did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its resource is gone: a new login may take the same resource again.
    let _ = bosh_login(server.web_tls_addr(), "alice", "idle", 50).await;
}

#[tokio::test]
async fn bosh_cors_preflight() {
    let server = TestServer::start().await;
    let r = http(server.web_tls_addr(), "OPTIONS", "/http-bind", "").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(
        r.header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        r.header("Access-Control-Allow-Headers")
            .unwrap()
            .contains("Content-Type")
    );
}

#[tokio::test]
async fn host_meta_lists_both_transports() {
    let server = TestServer::start().await;
    let port = server.web_tls_addr().port();
    let ws = format!("wss://localhost:{port}/xmpp-websocket");
    let bosh = format!("https://localhost:{port}/http-bind");

    let r = http(server.web_tls_addr(), "GET", "/.well-known/host-meta", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let xrd = Element::parse(
        r.body
            .trim_start_matches(|c| c != '<')
            .split_once("?>")
            .unwrap()
            .1
            .trim(),
    )
    .unwrap();
    assert!(xrd.is("XRD", "http://docs.oasis-open.org/ns/xri/xrd-1.0"));
    let links: Vec<(String, String)> = xrd
        .children()
        .map(|l| {
            (
                l.attr("rel").unwrap().to_owned(),
                l.attr("href").unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        links.contains(&("urn:xmpp:alt-connections:websocket".into(), ws.clone())),
        "{links:?}"
    );
    assert!(
        links.contains(&("urn:xmpp:alt-connections:xbosh".into(), bosh.clone())),
        "{links:?}"
    );

    let r = http(
        server.web_tls_addr(),
        "GET",
        "/.well-known/host-meta.json",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("application/json")
    );
    let expected_ws =
        format!("{{\"href\":\"{ws}\",\"rel\":\"urn:xmpp:alt-connections:websocket\"}}");
    let expected_bosh =
        format!("{{\"href\":\"{bosh}\",\"rel\":\"urn:xmpp:alt-connections:xbosh\"}}");
    assert!(r.body.contains(&expected_ws), "{}", r.body);
    assert!(r.body.contains(&expected_bosh), "{}", r.body);

    // A configured public URL wins.
    let server =
        TestServer::start_with(|c| c.web.public_url = "https://chat.example.org/".into()).await;
    let r = http(
        server.web_tls_addr(),
        "GET",
        "/.well-known/host-meta.json",
        "",
    )
    .await;
    assert!(
        r.body.contains("wss://chat.example.org/xmpp-websocket"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("https://chat.example.org/http-bind"),
        "{}",
        r.body
    );
}
