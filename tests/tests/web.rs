//! The web transports against a real server: XMPP over WebSocket (RFC 7395),
//! BOSH (XEP-0124, XEP-0206) and host-meta (XEP-0156), each next to a TCP
//! client, with bad input that must end only the offending stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use rookery_e2e::{RawClient, TestServer, WAIT, insecure_tls};
use rookery_xml::{Element, ns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

async fn tls(server: &TestServer) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.web_tls_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(insecure_tls(&[&rustls::version::TLS13], false))
        .connect(name, tcp)
        .await
        .unwrap()
}

// ---- WebSocket ------------------------------------------------------------

struct Ws {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Ws {
    async fn try_connect(
        server: &TestServer,
        protocol: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = "wss://localhost/xmpp-websocket"
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tls(server).await).await?;
        // RFC 7395 §3.1: the server echoes the subprotocol.
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some("xmpp")
        );
        Ok(Ws { ws })
    }

    async fn connect(server: &TestServer) -> Ws {
        Ws::try_connect(server, Some("xmpp")).await.unwrap()
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text message; `None` once the WebSocket closed.
    async fn next_text(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next message, parsed on its own (RFC 7395 §3.3.3: each one must
    /// be a standalone document).
    async fn next(&mut self) -> Element {
        let t = self.next_text().await.expect("the WebSocket closed");
        Element::parse(&t).unwrap_or_else(|e| panic!("{t:?} does not stand alone: {e}"))
    }

    async fn open(&mut self) -> Element {
        self.send(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        )
        .await;
        let open = self.next().await;
        assert!(open.is("open", FRAMING), "{open:?}");
        assert_eq!(open.attr("from"), Some("localhost"));
        assert_eq!(open.attr("version"), Some("1.0"));
        let features = self.next().await;
        assert!(features.is("features", ns::STREAMS), "{features:?}");
        features
    }

    /// RFC 7395 §3.7: SASL, then a new `<open/>`, then bind.
    async fn login(server: &TestServer, user: &str, resource: &str) -> Ws {
        let mut ws = Ws::connect(server).await;
        let features = ws.open().await;
        // Inside TLS: no STARTTLS, PLAIN allowed.
        assert!(features.child("starttls", ns::TLS).is_none());
        let mechs: Vec<String> = features
            .child("mechanisms", ns::SASL)
            .unwrap()
            .children()
            .map(|m| m.text())
            .collect();
        assert!(mechs.contains(&"PLAIN".to_owned()), "{mechs:?}");
        let creds = B64.encode(format!("\0{user}\0pw"));
        ws.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        assert!(ws.next().await.is("success", ns::SASL));
        let features = ws.open().await;
        assert!(features.child("bind", ns::BIND).is_some());
        ws.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = ws.next().await;
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        ws
    }

    /// A stream error, then `<close/>`, then the WebSocket close (RFC 7395 §3.5, §3.6).
    async fn expect_stream_error(&mut self) -> String {
        let err = loop {
            let el = self.next().await;
            if el.is("error", ns::STREAMS) {
                break el;
            }
        };
        let close = self.next().await;
        assert!(close.is("close", FRAMING), "{close:?}");
        assert_eq!(self.next_text().await, None, "the WebSocket should close");
        err.children()
            .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_default()
    }
}

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
    let mut alice = Ws::login(&server, "alice", "web").await;

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
    let mut other = Ws::login(&server, "alice", "steady").await;

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
        let mut ws = Ws::login(&server, "alice", "bad").await;
        ws.send(bad).await;
        assert_eq!(ws.expect_stream_error().await, condition, "{bad}");
    }
    // Before the stream is even open.
    let mut ws = Ws::connect(&server).await;
    ws.send(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'><unclosed>",
    )
    .await;
    assert_eq!(ws.expect_stream_error().await, "not-well-formed");
    // A binary frame (RFC 7395 §3.2: text only).
    let mut ws = Ws::connect(&server).await;
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
    let mut ws = Ws::login(&server, "alice", "idle").await;
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
        match Ws::try_connect(&server, protocol).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{protocol:?}");
            }
            Err(e) => panic!("{protocol:?}: {e}"),
            Ok(_) => panic!("{protocol:?}: upgraded without the xmpp subprotocol"),
        }
    }
    // And the listener still serves good clients.
    let mut ws = Ws::connect(&server).await;
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

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn http(server: &TestServer, method: &str, path: &str, body: &str) -> HttpResponse {
    let mut s = tls(server).await;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    // A TLS close_notify may be missing: read what came.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Posts a `<body/>` and parses the answer.
async fn bosh(server: &TestServer, body: &str) -> Element {
    let r = http(server, "POST", "/http-bind", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let el = Element::parse(&r.body).unwrap_or_else(|e| panic!("{:?}: {e}", r.body));
    assert!(el.is("body", HTTPBIND), "{el:?}");
    el
}

fn req(sid: &str, rid: u64, attrs: &str, payload: &str) -> String {
    format!(
        "<body rid='{rid}' sid='{sid}' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'{attrs}>{payload}</body>"
    )
}

/// XEP-0206 Example 1, with a short wait.
fn create(rid: u64, wait: u64) -> String {
    format!(
        "<body content='text/xml; charset=utf-8' hold='1' rid='{rid}' to='localhost' ver='1.6' wait='{wait}' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>"
    )
}

/// Session creation, SASL PLAIN, restart, bind (XEP-0206 §3–§5).
async fn bosh_login(server: &TestServer, user: &str, resource: &str, rid: u64) -> String {
    let r = bosh(server, &create(rid, 2)).await;
    let sid = r.attr("sid").unwrap().to_owned();
    assert_eq!(r.attr("requests"), Some("2"));
    assert_eq!(r.attr("hold"), Some("1"));
    assert_eq!(r.attr("wait"), Some("2"));
    assert_eq!(r.attr_ns("version", "urn:xmpp:xbosh"), Some("1.0"));
    assert_eq!(r.attr_ns("restartlogic", "urn:xmpp:xbosh"), Some("true"));
    let features = r
        .child("features", ns::STREAMS)
        .expect("features in the creation response");
    assert!(features.child("starttls", ns::TLS).is_none());
    let creds = B64.encode(format!("\0{user}\0pw"));
    let r = bosh(
        server,
        &req(
            &sid,
            rid + 1,
            "",
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
            ),
        ),
    )
    .await;
    assert!(r.child("success", ns::SASL).is_some(), "{r:?}");
    let r = bosh(
        server,
        &req(
            &sid,
            rid + 2,
            " to='localhost' xml:lang='en' xmpp:restart='true'",
            "",
        ),
    )
    .await;
    let features = r
        .child("features", ns::STREAMS)
        .expect("features after restart");
    assert!(features.child("bind", ns::BIND).is_some());
    let r = bosh(
        server,
        &req(
            &sid,
            rid + 3,
            "",
            &format!("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
        ),
    )
    .await;
    let iq = r.child("iq", ns::CLIENT).expect("bind result");
    assert_eq!(iq.attr("type"), Some("result"));
    sid
}

fn condition(r: &Element) -> Option<&str> {
    assert_eq!(r.attr("type"), Some("terminate"), "{r:?}");
    r.attr("condition")
}

#[tokio::test]
async fn bosh_login_and_chat_with_a_tcp_client() {
    let server = Arc::new(TestServer::start().await);
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.online("bob", "tcp").await;
    let sid = bosh_login(&server, "alice", "web", 1000).await;

    // The request carrying the message is held until there is something
    // to answer: bob's reply.
    let held = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move {
            bosh(
                &server,
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
    let r = bosh(&server, &req(&sid, 1005, "", "")).await;
    assert!(r.children().next().is_none(), "{r:?}");

    // XEP-0124 §13: terminate, with a last payload.
    let r = bosh(
        &server,
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
    let r = bosh(&server, &req(&sid, 1007, "", "")).await;
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
    let r = bosh(&server, &req("nosuchsid", 5, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));
    // Not a <body/> at all.
    let r = http(&server, "POST", "/http-bind", "<body rid='1'").await;
    assert_eq!(r.status, 400);
    // A host we do not serve.
    let r = bosh(
        &server,
        &create(1, 2).replace("to='localhost'", "to='example.net'"),
    )
    .await;
    assert_eq!(condition(&r), Some("host-unknown"));

    // A repeated rid gets the same answer (§14.3); one beyond the window
    // ends the session (§14.2).
    let sid = bosh_login(&server, "alice", "one", 100).await;
    let again = bosh(
        &server,
        &req(&sid, 103, "", "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>one</resource></bind></iq>"),
    )
    .await;
    let iq = again.child("iq", ns::CLIENT).expect("the kept answer");
    assert_eq!(iq.attr("id"), Some("b"));
    let r = bosh(&server, &req(&sid, 110, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));
    let r = bosh(&server, &req(&sid, 104, "", "")).await;
    assert_eq!(condition(&r), Some("item-not-found"));

    // Too many simultaneous requests (§11): one held, one waiting for the
    // rid before it, and a third.
    let sid = bosh_login(&server, "alice", "two", 200).await;
    let held = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move { bosh(&server, &req(&sid, 204, "", "")).await }
    });
    let waiting = tokio::spawn({
        let (server, sid) = (server.clone(), sid.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            bosh(&server, &req(&sid, 206, "", "")).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = bosh(&server, &req(&sid, 205, "", "")).await;
    assert_eq!(condition(&r), Some("policy-violation"));
    // The other requests end with the session.
    assert_eq!(held.await.unwrap().attr("type"), Some("terminate"));
    assert_eq!(waiting.await.unwrap().attr("type"), Some("terminate"));

    // A stream error ends the session with `remote-stream-error`, the
    // error inside (XEP-0124 §17.2).
    let r = bosh(&server, &create(300, 2)).await;
    let sid = r.attr("sid").unwrap().to_owned();
    let r = bosh(
        &server,
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

#[tokio::test]
async fn bosh_inactivity_ends_the_session() {
    let server = TestServer::start_with(|c| c.web.bosh_inactivity_secs = 1).await;
    server.add_user("alice", "pw").await;
    let _sid = bosh_login(&server, "alice", "idle", 10).await;
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
    let _ = bosh_login(&server, "alice", "idle", 50).await;
}

#[tokio::test]
async fn bosh_cors_preflight() {
    let server = TestServer::start().await;
    let r = http(&server, "OPTIONS", "/http-bind", "").await;
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

    let r = http(&server, "GET", "/.well-known/host-meta", "").await;
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

    let r = http(&server, "GET", "/.well-known/host-meta.json", "").await;
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
    let r = http(&server, "GET", "/.well-known/host-meta.json", "").await;
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
