//! End-to-end test helpers: a real server on port 0 with a temporary data
//! directory, and a raw XML client that speaks exactly what a test writes.
//!
//! The raw client deliberately has no XMPP smarts beyond the negotiation
//! steps; what a real client library does is covered by the interop tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod cluster;
pub mod muc;
pub mod scram;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rookery::config::Config;
use rookery::server::Running;
use rookery_xml::{Element, Limits, Parser, StreamEvent, ns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server with its own data directory.
pub struct TestServer {
    pub running: Option<Running>,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with test settings (all listeners on 127.0.0.1:0).
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after `f` adjusted the test configuration.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().join("data");
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.c2s.listen = vec![local];
        config.c2s.direct_tls_listen = vec![local];
        config.http.listen = vec![local];
        config.web.tls_listen = vec![local];
        config.s2s.listen = vec![local];
        // No federation (and so no DNS) unless a test turns it on: stanzas
        // to other domains get remote-server-not-found at once.
        config.s2s.enabled = false;
        // No HTTP upload service (and so no upload.localhost in the
        // server's disco#items) unless a test turns it on.
        config.upload.enabled = false;
        // Fast failure answers in tests; the throttle itself has a unit test.
        config.c2s.auth_failure_delay_ms = 10;
        config.c2s.auth_failure_max_delay_ms = 50;
        f(&mut config);
        config.check().unwrap();
        let running = rookery::server::start(config.clone()).await.unwrap();
        TestServer {
            running: Some(running),
            config,
            dir,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// The STARTTLS address.
    pub fn addr(&self) -> SocketAddr {
        self.running().c2s_addrs[0]
    }

    /// The direct TLS address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.running().direct_tls_addrs[0]
    }

    /// The HTTPS address of the web transports (WebSocket, BOSH, host-meta).
    pub fn web_tls_addr(&self) -> SocketAddr {
        self.running().web_tls_addrs[0]
    }

    /// The plain HTTP address of the web transports, when configured.
    pub fn web_addr(&self) -> SocketAddr {
        self.running().web_addrs[0]
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.running().http_addrs[0]
    }

    /// The served domain.
    pub fn domain(&self) -> &str {
        &self.config.server.domain
    }

    /// Creates an account.
    pub async fn add_user(&self, user: &str, password: &str) {
        let store = rookery::server::open_store(&self.config).unwrap();
        rookery::admin::add(&self.config, &store, user, password)
            .await
            .unwrap();
    }

    /// Logs a user in over STARTTLS with SCRAM-SHA-256 and binds `resource`.
    pub async fn login(&self, user: &str, password: &str, resource: &str) -> RawClient {
        let mut c = RawClient::connect(self.addr()).await;
        c.open(self.domain()).await;
        c.starttls(self.domain()).await;
        c.auth_scram("SCRAM-SHA-256", user, password).await.unwrap();
        c.open(self.domain()).await;
        c.bind(Some(resource)).await;
        c
    }

    /// Logs in (password `pw`), fetches the roster (so that the resource gets
    /// roster pushes, RFC 6121 §2.1.6) and sends initial presence, as a real
    /// client does; returns once its own presence came back (§4.2.2).
    pub async fn online(&self, user: &str, resource: &str) -> RawClient {
        let mut c = self.login(user, "pw", resource).await;
        c.iq("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        c.send("<presence/>").await;
        c.next_presence().await;
        c
    }

    /// Fetches a path from the HTTP listener.
    pub async fn http_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.http_addr()).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    /// Stops the server (SIGTERM path).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A TLS client configuration that trusts any certificate.
pub fn insecure_tls(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: bool,
) -> Arc<rustls::ClientConfig> {
    let p = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(rookery_loadtest::conn::AnyCert(p)))
        .with_no_client_auth();
    if alpn {
        c.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    Arc::new(c)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    None,
}

/// A client that sends raw XML and reads parsed elements.
pub struct RawClient {
    io: Io,
    parser: Parser,
    /// The channel-binding data of the TLS connection (tls-exporter), if TLS 1.3.
    pub exporter: Option<Vec<u8>>,
    /// The last features received.
    pub features: Option<Element>,
}

impl RawClient {
    /// Plain TCP connection (for STARTTLS).
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::try_connect(addr).await.unwrap()
    }

    /// Plain TCP connection, or the error (a server that is not up).
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<RawClient> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(RawClient {
            io: Io::Plain(tcp),
            parser: Parser::new(Limits {
                max_stanza_bytes: 4 << 20,
                ..Limits::default()
            }),
            exporter: None,
            features: None,
        })
    }

    /// Direct TLS (XEP-0368) with ALPN `xmpp-client`.
    pub async fn connect_direct_tls(addr: SocketAddr, domain: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.upgrade(
            domain,
            insecure_tls(&[&rustls::version::TLS13, &rustls::version::TLS12], true),
        )
        .await;
        c
    }

    async fn upgrade(&mut self, domain: &str, config: Arc<rustls::ClientConfig>) {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::None) else {
            panic!("not a plain connection")
        };
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned()).unwrap();
        let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let (_, conn) = tls.get_ref();
        self.exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
                .map(|k| k.to_vec())
        } else {
            None
        };
        self.io = Io::Tls(Box::new(tls));
        self.parser.reset(false);
    }

    /// The server's certificate (leaf, DER), once TLS is up.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.io {
            Io::Tls(t) => t
                .get_ref()
                .1
                .peer_certificates()?
                .first()
                .map(|c| c.to_vec()),
            _ => None,
        }
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, b: &[u8]) {
        let r = match &mut self.io {
            Io::Plain(s) => s.write_all(b).await,
            Io::Tls(s) => {
                let r = s.write_all(b).await;
                if r.is_ok() { s.flush().await } else { r }
            }
            Io::None => panic!("no connection"),
        };
        r.unwrap();
    }

    /// Sends raw XML.
    pub async fn send(&mut self, xml: &str) {
        self.send_bytes(xml.as_bytes()).await;
    }

    /// Reads more bytes; `false` at EOF.
    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, async {
            match &mut self.io {
                Io::Plain(s) => s.read(&mut buf).await,
                Io::Tls(s) => s.read(&mut buf).await,
                Io::None => Ok(0),
            }
        })
        .await
        .expect("timed out waiting for the server")
        .unwrap_or(0);
        if n == 0 {
            return false;
        }
        self.parser.feed(&buf[..n]).unwrap();
        true
    }

    /// The next event from the server, or `None` at EOF.
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(ev) = self.parser.next_event().expect("server sent bad XML") {
                return Some(ev);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// The next first-level element.
    pub async fn next(&mut self) -> Element {
        match self.next_event().await {
            Some(StreamEvent::Stanza(el)) => el,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// The next element that is not a server ping (answered automatically).
    pub async fn next_stanza(&mut self) -> Element {
        loop {
            let el = self.next().await;
            if el.name() == "iq"
                && el.attr("type") == Some("get")
                && el.child("ping", ns::PING).is_some()
            {
                let id = el.attr("id").unwrap_or_default().to_owned();
                self.send(&format!("<iq type='result' id='{id}'/>")).await;
                continue;
            }
            return el;
        }
    }

    /// The next `<message/>`, skipping presence and answering pings.
    pub async fn next_message(&mut self) -> Element {
        loop {
            let el = self.next_stanza().await;
            if el.name() == "message" {
                return el;
            }
        }
    }

    /// The next stanza for which `pred` holds, skipping (and returning) the others.
    pub async fn until(&mut self, pred: impl Fn(&Element) -> bool) -> (Element, Vec<Element>) {
        let mut skipped = Vec::new();
        loop {
            let el = self.next_stanza().await;
            if pred(&el) {
                return (el, skipped);
            }
            skipped.push(el);
        }
    }

    /// Answers a roster push (RFC 6121 §2.1.6) and returns its `<item/>`.
    pub async fn roster_push(&mut self) -> Element {
        let (push, _) = self
            .until(|e| {
                e.name() == "iq"
                    && e.attr("type") == Some("set")
                    && e.child("query", ns::ROSTER).is_some()
            })
            .await;
        let id = push.attr("id").unwrap_or_default().to_owned();
        self.send(&format!("<iq type='result' id='{id}'/>")).await;
        push.child("query", ns::ROSTER)
            .unwrap()
            .first_child()
            .unwrap()
            .clone()
    }

    /// The next presence stanza (pings answered).
    pub async fn next_presence(&mut self) -> Element {
        self.until(|e| e.name() == "presence").await.0
    }

    /// The next stanza that is not presence (pings answered).
    pub async fn next_non_presence(&mut self) -> Element {
        loop {
            let el = self.next_stanza().await;
            if el.name() != "presence" {
                return el;
            }
        }
    }

    /// Sends a stream header and reads the server's header and features.
    pub async fn open(&mut self, domain: &str) -> Element {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await;
        match self.next_event().await {
            Some(StreamEvent::Open(h)) => {
                assert_eq!(h.attr("from"), Some(domain));
                assert_eq!(h.attr("version"), Some("1.0"));
                assert!(h.attr("id").is_some_and(|i| i.len() >= 8));
            }
            other => panic!("expected a stream header, got {other:?}"),
        }
        let f = self.next().await;
        assert!(f.is("features", ns::STREAMS), "expected features, got {f}");
        self.features = Some(f.clone());
        f
    }

    /// STARTTLS (TLS 1.3) and a new stream.
    pub async fn starttls(&mut self, domain: &str) -> Element {
        self.starttls_with(domain, &[&rustls::version::TLS13]).await
    }

    /// STARTTLS with the given TLS versions and a new stream.
    pub async fn starttls_with(
        &mut self,
        domain: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Element {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let p = self.next().await;
        assert!(p.is("proceed", ns::TLS), "{p}");
        self.upgrade(domain, insecure_tls(versions, false)).await;
        self.open(domain).await
    }

    /// The SASL mechanisms of the last features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.child("mechanisms", ns::SASL))
            .map(|m| m.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// SASL PLAIN; `Err(condition)` on failure.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        self.sasl_outcome().await.map(|_| ())
    }

    async fn sasl_outcome(&mut self) -> Result<Option<Vec<u8>>, String> {
        let el = self.next().await;
        if el.is("success", ns::SASL) {
            self.parser.reset(true);
            let t = el.text();
            return Ok(if t.is_empty() {
                None
            } else {
                Some(B64.decode(t).unwrap())
            });
        }
        if el.is("failure", ns::SASL) {
            return Err(el
                .first_child()
                .map(|c| c.name().to_owned())
                .unwrap_or_default());
        }
        panic!("unexpected SASL answer {el}");
    }

    /// A SCRAM exchange with `mechanism` (e.g. `SCRAM-SHA-256-PLUS`); a
    /// non-PLUS mechanism is used as a client without channel binding (`n`).
    pub async fn auth_scram(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let cb = if mechanism.ends_with("-PLUS") {
            scram::Binding::TlsExporter(self.exporter.clone().expect("-PLUS needs TLS 1.3"))
        } else {
            scram::Binding::NotSupported
        };
        self.auth_scram_with(mechanism, user, password, cb).await
    }

    /// A SCRAM exchange with an explicit channel-binding flag.
    pub async fn auth_scram_with(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        cb: scram::Binding,
    ) -> Result<(), String> {
        let hash = scram::Hash::from_mechanism(mechanism);
        let mut client = scram::Client::new(hash, user, password, cb);
        let first = client.client_first();
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            B64.encode(&first)
        ))
        .await;
        let el = self.next().await;
        if el.is("failure", ns::SASL) {
            return Err(el
                .first_child()
                .map(|c| c.name().to_owned())
                .unwrap_or_default());
        }
        assert!(el.is("challenge", ns::SASL), "{el}");
        let server_first = B64.decode(el.text()).unwrap();
        let Some(final_msg) = client.client_final(&server_first) else {
            return Err("bad server-first".into());
        };
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(&final_msg)
        ))
        .await;
        let data = self.sasl_outcome().await?;
        let data = data.expect("SCRAM success carries server-final");
        assert!(
            client.verify_server_final(&data),
            "server signature must verify"
        );
        Ok(())
    }

    /// Binds a resource (or lets the server pick one); returns the full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> String {
        let res = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>"
        ))
        .await;
        let r = self.next().await;
        assert_eq!(r.attr("type"), Some("result"), "bind failed: {r}");
        r.child("bind", ns::BIND)
            .unwrap()
            .child("jid", ns::BIND)
            .unwrap()
            .text()
    }

    /// Sends an iq and waits for the answer with the same id.
    pub async fn iq(&mut self, xml: &str) -> Element {
        let el = Element::parse(&format!("<x xmlns='jabber:client'>{xml}</x>")).unwrap();
        let id = el
            .first_child()
            .and_then(|c| c.attr("id"))
            .expect("iq needs an id")
            .to_owned();
        self.send(xml).await;
        loop {
            let r = self.next_stanza().await;
            if r.name() == "iq" && r.attr("id") == Some(id.as_str()) {
                return r;
            }
        }
    }

    /// [`RawClient::iq`], asserting that the answer is a result.
    pub async fn iq_ok(&mut self, xml: &str) -> Element {
        let r = self.iq(xml).await;
        assert_eq!(r.attr("type"), Some("result"), "{r}\nfor {xml}");
        r
    }

    /// Reads until a stream error; returns its condition and checks that the
    /// stream is then closed.
    pub async fn expect_stream_error(&mut self) -> String {
        loop {
            match self.next_event().await {
                Some(StreamEvent::Stanza(el)) if el.is("error", ns::STREAMS) => {
                    let cond = el
                        .children()
                        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_owned())
                        .unwrap_or_default();
                    match self.next_event().await {
                        Some(StreamEvent::Close) | None => {}
                        other => {
                            panic!("expected the stream to close after the error, got {other:?}")
                        }
                    }
                    return cond;
                }
                Some(StreamEvent::Stanza(_)) | Some(StreamEvent::Open(_)) => continue,
                Some(StreamEvent::Close) | None => panic!("stream closed without a stream error"),
            }
        }
    }

    /// Expects `</stream:stream>` or EOF.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.next_event().await {
                Some(StreamEvent::Close) | None => return,
                Some(StreamEvent::Stanza(el)) if el.name() == "iq" => continue,
                other => panic!("expected the stream to close, got {other:?}"),
            }
        }
    }
}

/// Waits until `cond` holds (polling), failing the test after [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// RFC 6121 §3.1 between two online clients (they fetched their rosters and
/// sent initial presence), on one server or across servers: `user` (bare
/// JID `user_jid`) asks `contact` (full JID `contact_full`) for a
/// subscription (§3.1.1), `contact` sees the request from `user_jid`
/// (§3.1.3) and approves it (§3.1.5); returns once `user` was told
/// (`subscribed` from the contact's bare JID, §3.1.6) and got the contact's
/// available presence from `contact_full`. Roster pushes on either side are
/// skipped (not answered): callers assert on rosters with a roster get.
pub async fn subscribe(
    user: &mut RawClient,
    user_jid: &str,
    contact: &mut RawClient,
    contact_full: &str,
) {
    let contact_bare = contact_full.split('/').next().unwrap_or(contact_full);
    user.send(&format!(
        "<presence to='{contact_bare}' type='subscribe' id='sub-{contact_bare}'/>"
    ))
    .await;
    let (req, _) = contact
        .until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(req.attr("from"), Some(user_jid), "{req}");
    contact
        .send(&format!("<presence to='{user_jid}' type='subscribed'/>"))
        .await;
    let (ok, _) = user
        .until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(ok.attr("from"), Some(contact_bare), "{ok}");
    user.until(|e| {
        e.name() == "presence" && e.attr("type").is_none() && e.attr("from") == Some(contact_full)
    })
    .await;
}

/// The `subscription` of `contact` in `client`'s roster (RFC 6121 §2.1.3),
/// with its `ask`, or `None` when it has no item.
pub async fn roster_state(
    client: &mut RawClient,
    contact: &str,
) -> Option<(String, Option<String>)> {
    let r = client
        .iq("<iq type='get' id='roster-state'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let q = r.child("query", ns::ROSTER)?;
    q.children()
        .find(|i| i.attr("jid") == Some(contact))
        .map(|i| {
            (
                i.attr("subscription").unwrap_or("none").to_owned(),
                i.attr("ask").map(str::to_owned),
            )
        })
}

/// A canonical form of an element: attributes sorted, namespaces explicit,
/// so that two elements compare equal whatever their attribute order.
pub fn canon(el: &Element) -> String {
    let mut attrs: Vec<String> = el
        .attrs()
        .iter()
        .map(|a| {
            format!(
                "{{{}}}{}={:?}",
                a.ns.as_deref().unwrap_or(""),
                a.name,
                a.value
            )
        })
        .collect();
    attrs.sort();
    let mut out = format!("<{{{}}}{} {}>", el.ns(), el.name(), attrs.join(" "));
    for n in el.nodes() {
        match n {
            rookery_xml::Node::Element(c) => out.push_str(&canon(c)),
            rookery_xml::Node::Text(t) => out.push_str(&format!("{t:?}")),
        }
    }
    out.push_str("</>");
    out
}

/// Parses a stanza as a client stream would (default namespace `jabber:client`).
pub fn stanza(xml: &str) -> Element {
    Element::parse(&format!("<x xmlns='jabber:client'>{xml}</x>"))
        .expect("well-formed XML")
        .first_child()
        .expect("one element")
        .clone()
}

/// Asserts that `got` is exactly the element written in `expected`
/// (compared in [`canon`]ical form).
#[track_caller]
pub fn assert_xml(got: &Element, expected: &str) {
    assert_eq!(
        canon(got),
        canon(&stanza(expected)),
        "\n got: {got}\nwant: {expected}"
    );
}

/// [`assert_xml`] for a server's reply: an `id` the server chose (absent
/// from `expected`) is not compared, and of an error reply, which carries
/// the request's payload (RFC 6120 §8.3.1), only the error is.
#[track_caller]
pub fn assert_reply_xml(got: &Element, expected: &str) {
    let want = stanza(expected);
    let mut got = got.clone();
    if want.attr("id").is_none() {
        got.remove_attr("id");
    }
    if got.attr("type") == Some("error") && want.attr("type") == Some("error") {
        got.retain_children(|c| c.name() == "error");
    }
    assert_eq!(canon(&got), canon(&want), "\n got: {got}\nwant: {expected}");
}

/// Waits until the async condition `cond` holds (checked every 20 ms),
/// failing the test with `what` after [`WAIT`]. For conditions only
/// visible by asking (a metric, an HTTP answer).
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
