//! Clients of the web transports for the tests: a WebSocket client speaking
//! RFC 7395 framing and a raw HTTPS client for BOSH (XEP-0124/0206) and
//! host-meta, both over TLS to `[web] tls_listen`.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use rookery_xml::{Element, ns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{WAIT, insecure_tls};

pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// A TLS connection to `addr` (the test certificate is not checked).
pub async fn tls(addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(insecure_tls(&[&rustls::version::TLS13], false))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A WebSocket client (RFC 7395).
pub struct Ws {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Ws {
    pub async fn try_connect(
        addr: SocketAddr,
        protocol: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = "wss://localhost/xmpp-websocket"
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tls(addr).await).await?;
        // RFC 7395 §3.1: the server echoes the subprotocol.
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some("xmpp")
        );
        Ok(Ws { ws })
    }

    pub async fn connect(addr: SocketAddr) -> Ws {
        Ws::try_connect(addr, Some("xmpp")).await.unwrap()
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text message; `None` once the WebSocket closed.
    pub async fn next_text(&mut self) -> Option<String> {
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
    pub async fn next(&mut self) -> Element {
        let t = self.next_text().await.expect("the WebSocket closed");
        Element::parse(&t).unwrap_or_else(|e| panic!("{t:?} does not stand alone: {e}"))
    }

    pub async fn open(&mut self) -> Element {
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

    /// RFC 7395 §3.7: SASL PLAIN (password `pw`), then a new `<open/>`, then bind.
    pub async fn login(addr: SocketAddr, user: &str, resource: &str) -> Ws {
        let mut ws = Ws::connect(addr).await;
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
    pub async fn expect_stream_error(&mut self) -> String {
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

/// An HTTP response.
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTPS request on its own connection.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    let mut s = tls(addr).await;
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
pub async fn bosh(addr: SocketAddr, body: &str) -> Element {
    let r = http(addr, "POST", "/http-bind", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let el = Element::parse(&r.body).unwrap_or_else(|e| panic!("{:?}: {e}", r.body));
    assert!(el.is("body", HTTPBIND), "{el:?}");
    el
}

pub fn req(sid: &str, rid: u64, attrs: &str, payload: &str) -> String {
    format!(
        "<body rid='{rid}' sid='{sid}' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'{attrs}>{payload}</body>"
    )
}

/// XEP-0206 Example 1, with a short wait.
pub fn create(rid: u64, wait: u64) -> String {
    format!(
        "<body content='text/xml; charset=utf-8' hold='1' rid='{rid}' to='localhost' ver='1.6' wait='{wait}' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>"
    )
}

/// Session creation, SASL PLAIN, restart, bind (XEP-0206 §3–§5).
/// (Password `pw`.)
pub async fn bosh_login(addr: SocketAddr, user: &str, resource: &str, rid: u64) -> String {
    let r = bosh(addr, &create(rid, 2)).await;
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
        addr,
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
        addr,
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
        addr,
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

pub fn condition(r: &Element) -> Option<&str> {
    assert_eq!(r.attr("type"), Some("terminate"), "{r:?}");
    r.attr("condition")
}
