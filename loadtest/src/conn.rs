//! One client connection: TCP (from a chosen loopback source address), TLS
//! (STARTTLS per RFC 6120 §5 or direct TLS per XEP-0368), SASL (§6), resource
//! binding (§7), roster get (RFC 6121 §2.1.3) and initial presence (§4.2),
//! with the time of each step recorded.
//!
//! Memory per connection is kept small: one 2 KiB read buffer, the parser's
//! unconsumed tail, and the TLS state.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rookery_xml::{Element, Limits, Parser, StreamEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::sasl::{Exchange, Mechanism, SaltCache};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS on the c2s port (RFC 6120 §5).
    Starttls,
    /// TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    Direct,
    /// No TLS (only for servers that allow it).
    None,
}

/// Where and how to connect; shared by every connection of a run.
#[derive(Clone, Debug)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// XMPP domain.
    pub domain: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// SASL mechanism.
    pub mech: Mechanism,
    /// Number of loopback source addresses to spread connections over
    /// (127.1.x.y); 1 = let the kernel choose.
    pub source_ips: u32,
    /// Longest wait for any single answer.
    pub step_timeout: Duration,
    /// TLS client configuration (trusts any certificate: loopback only).
    pub tls_config: Arc<rustls::ClientConfig>,
    /// Cache of SCRAM salted passwords.
    pub salts: SaltCache,
}

impl Target {
    /// The source address for connection number `i`, if spreading.
    fn source_ip(&self, i: u64) -> Option<IpAddr> {
        if self.source_ips <= 1 || !self.addr.ip().is_loopback() {
            return None;
        }
        let k = u32::try_from(i % u64::from(self.source_ips)).unwrap_or(0);
        let [_, _, b, c] = (k / 250 * 256 + k % 250 + 1).to_be_bytes();
        Some(IpAddr::V4(Ipv4Addr::new(127, 1, b, c)))
    }
}

/// Time spent in each login step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    /// TCP connect.
    pub connect: Duration,
    /// First stream header until features (includes direct TLS handshake).
    pub stream: Duration,
    /// STARTTLS request until the features of the new stream.
    pub tls: Duration,
    /// SASL exchange until `<success/>`.
    pub auth: Duration,
    /// Stream restart, bind (and session where required).
    pub bind: Duration,
    /// Roster get until the result.
    pub roster: Duration,
    /// Initial presence until it comes back to the sender.
    pub presence: Duration,
    /// The whole login.
    pub total: Duration,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// An XMPP client connection.
pub struct Conn {
    io: Io,
    parser: Parser,
    /// Stanzas received while waiting for something else.
    pub pending: VecDeque<Element>,
    /// The bound full JID.
    pub jid: String,
    /// The localpart.
    pub user: String,
    /// Roster items of the roster result, if the roster was fetched.
    pub roster: Vec<Element>,
    features: Option<Element>,
    step_timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("jid", &self.jid).finish()
    }
}

/// What a login should do after authenticating.
#[derive(Clone, Copy, Debug)]
pub struct LoginSteps {
    /// Fetch the roster.
    pub roster: bool,
    /// Send initial presence and wait for it to come back.
    pub presence: bool,
}

impl Conn {
    /// Opens a TCP connection (number `index`, for the source address) and
    /// the stream, with TLS as the target says; returns the stream features.
    async fn open(target: &Target, index: u64, times: &mut StepTimes) -> anyhow::Result<Conn> {
        let t = Instant::now();
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = target.source_ip(index) {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind {ip}"))?;
        }
        let tcp = tokio::time::timeout(target.step_timeout, socket.connect(target.addr))
            .await
            .map_err(|_| anyhow!("connect timed out"))?
            .context("connect")?;
        tcp.set_nodelay(true)?;
        times.connect = t.elapsed();
        let mut conn = Conn {
            io: Io::Plain(tcp),
            parser: Parser::new(Limits {
                max_stanza_bytes: 1 << 20,
                ..Limits::default()
            }),
            pending: VecDeque::new(),
            jid: String::new(),
            user: String::new(),
            roster: Vec::new(),
            features: None,
            step_timeout: target.step_timeout,
        };
        let t = Instant::now();
        if target.tls == TlsMode::Direct {
            conn.upgrade(target, true).await?;
        }
        let features = conn.restart(&target.domain).await?;
        times.stream = t.elapsed();
        if target.tls == TlsMode::Starttls {
            let t = Instant::now();
            if features.child("starttls", NS_TLS).is_none() {
                bail!("server offers no STARTTLS");
            }
            conn.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await?;
            let answer = conn.next_element().await?;
            if answer.name() != "proceed" {
                bail!("STARTTLS answered with <{}/>", answer.name());
            }
            conn.upgrade(target, false).await?;
            conn.features = Some(conn.restart(&target.domain).await?);
            times.tls = t.elapsed();
        } else {
            conn.features = Some(features);
        }
        Ok(conn)
    }

    /// Connects and logs `user` in: TLS, SASL, bind, then the optional
    /// roster get and initial presence.
    pub async fn login(
        target: &Target,
        index: u64,
        user: &str,
        password: &str,
        steps: LoginSteps,
    ) -> anyhow::Result<(Conn, StepTimes)> {
        let start = Instant::now();
        let mut times = StepTimes::default();
        let mut conn = Conn::open(target, index, &mut times).await?;
        conn.user = user.to_owned();
        let t = Instant::now();
        conn.authenticate(target, user, password).await?;
        times.auth = t.elapsed();
        let t = Instant::now();
        let features = conn.restart(&target.domain).await?;
        conn.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>load</resource></bind></iq>"
        ))
        .await?;
        let res = conn
            .until(|e| e.name() == "iq" && e.attr("id") == Some("bind"))
            .await?;
        conn.jid = res
            .child("bind", NS_BIND)
            .and_then(|b| b.child("jid", NS_BIND))
            .map(|j| j.text())
            .ok_or_else(|| anyhow!("bind failed: {}", res.to_xml_string()))?;
        // RFC 3921 session establishment, only where the server still
        // requires it (RFC 6121 Appendix E: <optional/> means skip it).
        if let Some(s) = features.child("session", NS_SESSION)
            && s.child("optional", NS_SESSION).is_none()
        {
            conn.send(&format!(
                "<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>"
            ))
            .await?;
            conn.until(|e| e.name() == "iq" && e.attr("id") == Some("sess"))
                .await?;
        }
        times.bind = t.elapsed();
        if steps.roster {
            let t = Instant::now();
            conn.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
                .await?;
            let r = conn
                .until(|e| e.name() == "iq" && e.attr("id") == Some("roster"))
                .await?;
            if r.attr("type") != Some("result") {
                bail!("roster get failed: {}", r.to_xml_string());
            }
            conn.roster = r
                .child("query", "jabber:iq:roster")
                .map(|q| q.children().cloned().collect())
                .unwrap_or_default();
            times.roster = t.elapsed();
        }
        if steps.presence {
            let t = Instant::now();
            conn.send("<presence/>").await?;
            let me = conn.jid.clone();
            conn.until(|e| e.name() == "presence" && e.attr("from") == Some(me.as_str()))
                .await?;
            times.presence = t.elapsed();
        }
        times.total = start.elapsed();
        Ok((conn, times))
    }

    /// In-band registration (XEP-0077 §3.1) on a fresh stream; `Ok(false)` if
    /// the account already exists (`<conflict/>`).
    pub async fn register(
        target: &Target,
        index: u64,
        user: &str,
        password: &str,
    ) -> anyhow::Result<bool> {
        let mut times = StepTimes::default();
        let mut conn = Conn::open(target, index, &mut times).await?;
        conn.send(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
        ))
        .await?;
        let r = conn
            .until(|e| e.name() == "iq" && e.attr("id") == Some("reg"))
            .await?;
        let ok = match r.attr("type") {
            Some("result") => true,
            _ if r
                .child("error", "jabber:client")
                .and_then(|e| e.child("conflict", "urn:ietf:params:xml:ns:xmpp-stanzas"))
                .is_some() =>
            {
                false
            }
            _ => bail!("registration of {user} failed: {}", r.to_xml_string()),
        };
        conn.close().await;
        Ok(ok)
    }

    async fn authenticate(
        &mut self,
        target: &Target,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let mech = target.mech;
        let offered = self
            .features
            .as_ref()
            .and_then(|f| f.child("mechanisms", NS_SASL))
            .is_some_and(|m| m.children().any(|c| c.text() == mech.name()));
        if !offered {
            bail!("server does not offer {}", mech.name());
        }
        let mut x = Exchange::new(mech, user, password);
        self.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{}</auth>",
            mech.name(),
            B64.encode(x.initial())
        ))
        .await?;
        loop {
            let e = self.next_element().await?;
            let data = B64
                .decode(e.text().trim())
                .map_err(|_| anyhow!("bad base64 in <{}/>", e.name()))?;
            match e.name() {
                "challenge" => {
                    let resp = x.respond(&data, &target.salts).map_err(|m| anyhow!(m))?;
                    self.send(&format!(
                        "<response xmlns='{NS_SASL}'>{}</response>",
                        B64.encode(resp)
                    ))
                    .await?;
                }
                "success" => {
                    x.verify_success(&data).map_err(|m| anyhow!(m))?;
                    return Ok(());
                }
                _ => bail!("authentication failed: {}", e.to_xml_string()),
            }
        }
    }

    async fn upgrade(&mut self, target: &Target, alpn: bool) -> anyhow::Result<()> {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            bail!("TLS on a connection that is not plain TCP");
        };
        let name = rustls::pki_types::ServerName::try_from(target.domain.clone())?;
        let mut config = target.tls_config.clone();
        if alpn {
            let mut c = (*config).clone();
            c.alpn_protocols = vec![b"xmpp-client".to_vec()];
            config = Arc::new(c);
        }
        let tls = tokio::time::timeout(
            self.step_timeout,
            TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake")?;
        self.io = Io::Tls(Box::new(tls));
        self.parser.reset(false);
        Ok(())
    }

    /// Sends a stream header and reads the header and features of the answer.
    async fn restart(&mut self, domain: &str) -> anyhow::Result<Element> {
        self.parser.reset(false);
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>"
        ))
        .await?;
        loop {
            match self.next_event().await? {
                StreamEvent::Open(_) => {}
                StreamEvent::Stanza(e) if e.is("features", NS_STREAMS) => return Ok(e),
                StreamEvent::Stanza(e) => bail!("expected features, got {}", e.to_xml_string()),
                StreamEvent::Close => bail!("stream closed during negotiation"),
            }
        }
    }

    /// Sends raw XML.
    pub async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        match &mut self.io {
            Io::Plain(s) => s.write_all(xml.as_bytes()).await?,
            Io::Tls(s) => {
                s.write_all(xml.as_bytes()).await?;
                s.flush().await?;
            }
            Io::Gone => bail!("connection gone"),
        }
        Ok(())
    }

    /// The next stream event; errors at EOF or after the step timeout.
    async fn next_event(&mut self) -> anyhow::Result<StreamEvent> {
        let timeout = self.step_timeout;
        tokio::time::timeout(timeout, self.read_event())
            .await
            .map_err(|_| anyhow!("no answer within {timeout:?}"))?
    }

    /// The next stream event, without a timeout. Cancel-safe: bytes are
    /// fed to the parser only after a read completed.
    pub async fn read_event(&mut self) -> anyhow::Result<StreamEvent> {
        loop {
            if let Some(ev) = self.parser.next_event()? {
                return Ok(ev);
            }
            let mut buf = [0u8; 2048];
            let n = match &mut self.io {
                Io::Plain(s) => s.read(&mut buf).await?,
                Io::Tls(s) => s.read(&mut buf).await?,
                Io::Gone => 0,
            };
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.parser.feed(&buf[..n])?;
        }
    }

    /// The next stanza, `pending` ones first; no timeout; an error when
    /// the stream ends. Cancel-safe.
    pub async fn next_stanza(&mut self) -> anyhow::Result<Element> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(e);
        }
        match self.read_event().await? {
            StreamEvent::Stanza(e) if e.is("error", NS_STREAMS) => {
                bail!("stream error: {}", e.to_xml_string())
            }
            StreamEvent::Stanza(e) => Ok(e),
            StreamEvent::Close => bail!("server closed the stream"),
            StreamEvent::Open(_) => bail!("unexpected stream header"),
        }
    }

    /// The next top-level element (stanza or nonza), in arrival order.
    pub async fn next_element(&mut self) -> anyhow::Result<Element> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(e);
        }
        match self.next_event().await? {
            StreamEvent::Stanza(e) => Ok(e),
            StreamEvent::Close => bail!("server closed the stream"),
            StreamEvent::Open(_) => bail!("unexpected stream header"),
        }
    }

    /// Reads until an element matches; earlier ones stay in `pending`.
    /// Stream errors end the wait with an error.
    pub async fn until(&mut self, pred: impl Fn(&Element) -> bool) -> anyhow::Result<Element> {
        loop {
            let e = match self.next_event().await? {
                StreamEvent::Stanza(e) => e,
                StreamEvent::Close => bail!("server closed the stream"),
                StreamEvent::Open(_) => bail!("unexpected stream header"),
            };
            if pred(&e) {
                return Ok(e);
            }
            if e.is("error", NS_STREAMS) {
                bail!("stream error: {}", e.to_xml_string());
            }
            self.pending.push_back(e);
        }
    }

    /// Closes the stream politely and drops the connection.
    pub async fn close(mut self) {
        let _ = self.send("</stream:stream>").await;
        if let Io::Tls(s) = &mut self.io {
            let _ = s.shutdown().await;
        }
    }
}

/// The answer a client owes the server for an iq request (RFC 6120 §8.2.3):
/// an empty result for roster pushes (RFC 6121 §2.1.6) and pings
/// (XEP-0199), `service-unavailable` for anything else.
pub fn iq_answer(e: &Element) -> Option<String> {
    if e.name() != "iq" || !matches!(e.attr("type"), Some("get" | "set")) {
        return None;
    }
    let id = e.attr("id").unwrap_or_default();
    let to = e.attr("from").unwrap_or_default();
    let known = e.child("query", "jabber:iq:roster").is_some()
        || e.child("ping", "urn:xmpp:ping").is_some();
    Some(if known {
        format!("<iq type='result' id='{}' to='{}'/>", esc(id), esc(to))
    } else {
        format!(
            "<iq type='error' id='{}' to='{}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            esc(id),
            esc(to)
        )
    })
}

fn esc(s: &str) -> String {
    let mut out = Vec::new();
    rookery_xml::escape_attr(&mut out, s);
    String::from_utf8(out).unwrap_or_default()
}

/// Accepts any server certificate: the load generator (and the end-to-end
/// tests) only talk to servers on loopback that use self-signed
/// certificates. Signatures are still checked with the provider.
#[derive(Debug)]
pub struct AnyCert(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS 1.3 and 1.2 client configuration trusting any certificate, with
/// session resumption off so that every login pays a full handshake.
pub fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let p = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(c))
}
