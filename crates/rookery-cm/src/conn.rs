//! One client connection: stream negotiation (RFC 6120 §4–§7), then the
//! established stream.
//!
//! Negotiation runs in order: stream header → STARTTLS (unless direct TLS) →
//! header → SASL → header → resource binding. Every step has a deadline, and
//! anything out of order gets the stream error RFC 6120 names for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rookery_core::metrics::{AuthLabel, KindLabel, TransportLabel};
use rookery_core::roles::{SmError, SmParams};
use rookery_core::telemetry::{self, Carried, Hop, KeyValue, SpanKind};
use rookery_core::{
    BindRequest, ClientLink, DeliverError, Jid, Stanza, StanzaError, StanzaKind, StreamError,
    new_id,
};
use rookery_sasl::{CredentialLookup, LookupError, Mechanism, SaslServer, Step, StoredCredentials};
use rookery_xml::{Element, Parser, StreamEvent, StreamHeader, escape_attr, ns};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, info};

use crate::C2s;
use crate::framed::{FrameOut, Framed, Kind};
use crate::io::Socket;

/// Read chunk size. Bounds how many bytes one read adds to the parser.
const READ_CHUNK: usize = 4096;
/// Stanzas written per wake-up before flushing.
const WRITE_BATCH: usize = 64;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// XEP-0198 namespace.
const NS_SM: &str = "urn:xmpp:sm:3";
/// XEP-0198 §4: the server asks for an ack after this many stanzas.
const SM_REQUEST_EVERY: u32 = 5;

/// XEP-0198 state of this connection.
#[derive(Debug, Default)]
struct Sm {
    /// Stream management is enabled.
    enabled: bool,
    /// Resumption was granted.
    resumable: bool,
    /// Stanzas handled from the client (the `h` we send).
    inbound: u32,
    /// Stanzas written since our last `<r/>`.
    unrequested: u32,
}

/// How long a draining cm waits for the `<a/>` it asked for.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// The stream error for a client that cannot resume elsewhere.
fn moved_away(plan: Option<&crate::DrainPlan>) -> StreamError {
    match plan.and_then(|p| p.see_other_host.clone()) {
        Some(host) => StreamError::see_other_host(host),
        None => StreamError::new("system-shutdown"),
    }
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// Send this stream error, then close.
    Stream(StreamError),
    /// The client closed the stream (`</stream:stream>`): close ours too.
    Closed,
    /// The socket hit EOF or failed: nothing more can be sent.
    Gone,
}

impl From<StreamError> for End {
    fn from(e: StreamError) -> End {
        End::Stream(e)
    }
}

fn stream_err(condition: &'static str, text: &str) -> End {
    End::Stream(StreamError::new(condition).with_text(text))
}

/// A stanza queued for the client, with the span of the hop that queued it
/// when it is traced (the parent of its `c2s.write` span).
type Queued = (Arc<Element>, Carried);

/// The session side's handle on this connection (in-process [`ClientLink`]).
#[derive(Debug)]
struct ChannelLink {
    tx: mpsc::Sender<Queued>,
    close: watch::Sender<Option<StreamError>>,
}

impl ClientLink for ChannelLink {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        // The span of the caller (session routing, or the cm's Deliver)
        // goes along when tracing is on; nothing otherwise.
        self.tx
            .try_send((stanza, Carried::current()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => DeliverError::Full,
                mpsc::error::TrySendError::Closed(_) => DeliverError::Closed,
            })
    }
    fn close(&self, error: StreamError) {
        self.close.send_replace(Some(error));
    }
}

/// Credential lookup for SASL: the SASL username is the localpart of an
/// account of this domain (RFC 6120 §6.3.8 "simple user name").
struct StoreLookup<'a> {
    c2s: &'a C2s,
}

#[async_trait]
impl CredentialLookup for StoreLookup<'_> {
    async fn credentials(&self, username: &str) -> Result<Option<StoredCredentials>, LookupError> {
        let Ok(local) = rookery_jid::prep_localpart(username) else {
            return Ok(None);
        };
        let bare = format!("{local}@{}", self.c2s.domain);
        self.c2s
            .users
            .credentials(&bare)
            .await
            .map_err(|e| LookupError(e.to_string()))
    }
}

struct Conn {
    c2s: Arc<C2s>,
    id: u64,
    peer: SocketAddr,
    socket: Option<Socket>,
    parser: Parser,
    out: Vec<u8>,
    /// On a framed transport: where each message in `out` ends.
    bounds: Vec<usize>,
    header_sent: bool,
    /// The authenticated account (bare JID) after SASL.
    user: Option<Jid>,
    /// The bound full JID.
    jid: Option<Jid>,
    auth_failures: u32,
    bind_failures: u32,
    /// An account was registered in-band on this stream (XEP-0077 §3.1.1).
    registered: bool,
    ping_pending: Option<String>,
    sm: Sm,
    /// The stream ends because the cm drains: a resumable session stays,
    /// detached, for the client to resume elsewhere.
    draining: bool,
    /// `<a/>` elements received from the client.
    acks_in: u64,
    /// Stanzas from the session side, once bound.
    rx: Option<mpsc::Receiver<Queued>>,
    /// `c2s.write` spans of the traced stanzas in `out`, ended once it is
    /// written (always empty when tracing is off).
    writing: Vec<Hop>,
    /// XEP-0352: the client said it is inactive.
    inactive: bool,
    /// Stanzas held back while inactive.
    held: crate::csi::Held,
}

/// How a connection starts.
enum Start {
    /// An accepted TCP connection: STARTTLS, or direct TLS (XEP-0368).
    Tcp(TcpStream, bool),
    /// A framed transport (WebSocket, BOSH).
    Framed(Box<Framed>),
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn run(c2s: Arc<C2s>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let label = TransportLabel {
        transport: if direct_tls { "directtls" } else { "starttls" },
    };
    run_with(c2s, peer, label, Start::Tcp(tcp, direct_tls)).await;
}

/// Serves one stream over a framed transport (RFC 7395 WebSocket, XEP-0206
/// BOSH) to its end: the same negotiation and established stream as TCP.
pub(crate) async fn run_framed(c2s: Arc<C2s>, framed: Framed, peer: SocketAddr) {
    let label = TransportLabel {
        transport: match framed.kind {
            Kind::WebSocket => "websocket",
            Kind::Bosh => "bosh",
        },
    };
    run_with(c2s, peer, label, Start::Framed(Box::new(framed))).await;
}

async fn run_with(c2s: Arc<C2s>, peer: SocketAddr, label: TransportLabel, start: Start) {
    c2s.metrics.connections_total.inc();
    let gauge = c2s.metrics.connections.get_or_create(&label).clone();
    gauge.inc();
    c2s.open.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        parser: Parser::new(c2s.config.limits()),
        c2s,
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        peer,
        socket: None,
        out: Vec::new(),
        bounds: Vec::new(),
        header_sent: false,
        user: None,
        jid: None,
        auth_failures: 0,
        bind_failures: 0,
        registered: false,
        ping_pending: None,
        sm: Sm::default(),
        draining: false,
        acks_in: 0,
        rx: None,
        writing: Vec::new(),
        inactive: false,
        held: Default::default(),
    };
    let end = conn.drive(start).await;
    if let Some(jid) = conn.jid.take() {
        // XEP-0198 §5: a resumable session that did not close cleanly
        // waits for the client to resume it.
        // A shutdown ends it too, unless the cm only drains (the session
        // side lives on, docs/decisions/0015-draining.md).
        let detach = conn.sm.resumable
            && !matches!(&end, End::Closed)
            && (conn.draining
                || !matches!(&end, End::Stream(e) if e.condition == "system-shutdown"));
        if detach {
            conn.c2s
                .sessions
                .detach(&jid, conn.id, conn.sm.inbound)
                .await;
        } else {
            conn.c2s.sessions.unbind(&jid, conn.id).await;
        }
    }
    conn.finish(end).await;
    gauge.dec();
    conn.c2s.open.fetch_sub(1, Ordering::Relaxed);
}

impl Conn {
    fn socket(&mut self) -> Result<&mut Socket, End> {
        self.socket.as_mut().ok_or(End::Gone)
    }

    async fn drive(&mut self, start: Start) -> End {
        let negotiation = Duration::from_secs(self.c2s.config.negotiation_timeout_secs);
        let deadline = Instant::now() + negotiation;
        // The TCP connection that starts with a TLS handshake, if any.
        let direct_tls = match start {
            Start::Tcp(tcp, false) => {
                self.socket = Some(Socket::Plain(tcp));
                None
            }
            Start::Tcp(tcp, true) => Some(tcp),
            Start::Framed(f) => {
                self.socket = Some(Socket::Framed(f));
                None
            }
        };
        if let Some(tcp) = direct_tls {
            // Boxed, like the negotiation below: the connection's future is
            // as large as its largest state, and these two end early.
            match timeout_at(deadline, Box::pin(self.c2s.tls.accept(tcp))).await {
                Ok(Ok(tls)) => self.socket = Some(Socket::Tls(Box::new(tls))),
                Ok(Err(e)) => {
                    debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    return End::Gone;
                }
                Err(_) => return End::Gone,
            }
        }
        let mut shutdown = self.c2s.shutdown.clone();
        let mut drain = self.c2s.drain.subscribe();
        let negotiated = tokio::select! {
            r = timeout_at(deadline, Box::pin(self.negotiate())) => match r {
                Ok(r) => r,
                Err(_) => Err(stream_err("connection-timeout", "stream negotiation took too long")),
            },
            _ = shutdown.changed() => Err(End::Stream(StreamError::new("system-shutdown"))),
            // Nothing to keep yet: it goes at once.
            Ok(plan) = drain.wait_for(|p| p.is_some()) => {
                Err(End::Stream(moved_away(plan.as_ref())))
            }
        };
        let (rx, close_rx) = match negotiated {
            Ok(channels) => channels,
            Err(end) => return end,
        };
        match self.established(rx, close_rx).await {
            Ok(()) => End::Closed,
            Err(end) => end,
        }
    }

    /// Sends the closing error or tag and shuts the socket down.
    async fn finish(&mut self, end: End) {
        let write_timeout = Duration::from_secs(self.c2s.config.write_timeout_secs);
        match end {
            End::Gone => {}
            End::Closed => self.write_close(),
            End::Stream(e) => {
                debug!(peer = %self.peer, condition = e.condition, text = ?e.text, "stream error");
                self.c2s.metrics.stream_error(e.condition);
                if !self.header_sent {
                    // RFC 7395 §3.5: the <open/> answer comes first there too.
                    self.write_header(None);
                }
                self.write_el(&e.to_element());
                self.write_close();
            }
        }
        if self.framed().is_some() {
            // The transport closes when the stream's end of it goes.
            let _ = self.flush().await;
            self.socket = None;
            return;
        }
        if let Some(mut s) = self.socket.take() {
            let out = std::mem::take(&mut self.out);
            let _ = timeout(write_timeout, async {
                if !out.is_empty() {
                    s.write_all(&out).await?;
                }
                s.shutdown().await
            })
            .await;
        }
    }

    // ---- output -------------------------------------------------------

    /// The framed transport, if this stream runs over one.
    fn framed(&self) -> Option<&Framed> {
        match &self.socket {
            Some(Socket::Framed(f)) => Some(f),
            _ => None,
        }
    }

    /// Ends a message in `out` (framed transports).
    fn end_message(&mut self) {
        if self.framed().is_some() {
            self.bounds.push(self.out.len());
        }
    }

    /// Writes one first-level element.
    fn write_el(&mut self, el: &Element) {
        if self.framed().is_some() {
            crate::framed::serialize(el, &mut self.out);
            self.end_message();
        } else {
            el.write_to(&mut self.out, ns::CLIENT);
        }
    }

    /// The end of the stream: `</stream:stream>`, or `<close/>` (RFC 7395 §3.6).
    fn write_close(&mut self) {
        if self.framed().is_some() {
            self.out
                .extend_from_slice(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
            self.end_message();
        } else {
            self.out.extend_from_slice(b"</stream:stream>");
        }
    }

    fn write_header(&mut self, to: Option<&str>) {
        if self.framed().is_some() {
            // RFC 7395 §3.4: <open/> with the attributes of RFC 6120 §4.7.
            self.out
                .extend_from_slice(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='");
            self.out.extend_from_slice(new_id().as_bytes());
            self.out.extend_from_slice(b"' from='");
            escape_attr(&mut self.out, &self.c2s.domain);
            if let Some(to) = to {
                self.out.extend_from_slice(b"' to='");
                escape_attr(&mut self.out, to);
            }
            self.out
                .extend_from_slice(b"' version='1.0' xml:lang='en'/>");
            self.end_message();
            self.header_sent = true;
            return;
        }
        // RFC 6120 §4.7: from is our domain, to echoes the client's from,
        // id is fresh per stream.
        self.out.extend_from_slice(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='",
        );
        self.out.extend_from_slice(new_id().as_bytes());
        self.out.extend_from_slice(b"' from='");
        escape_attr(&mut self.out, &self.c2s.domain);
        if let Some(to) = to {
            self.out.extend_from_slice(b"' to='");
            escape_attr(&mut self.out, to);
        }
        self.out
            .extend_from_slice(b"' version='1.0' xml:lang='en'>");
        self.header_sent = true;
    }

    fn push(&mut self, el: &Element) {
        if let Some(kind) = StanzaKind::of(el) {
            if self.sm.enabled {
                self.sm.unrequested += 1;
            }
            self.c2s
                .metrics
                .stanzas_out
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .inc();
        }
        self.write_el(el);
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write_timeout = Duration::from_secs(self.c2s.config.write_timeout_secs);
        let out = std::mem::take(&mut self.out);
        let bounds = std::mem::take(&mut self.bounds);
        let s = self.socket()?;
        let r = match s {
            Socket::Framed(f) => {
                let tx = f.tx.clone();
                timeout(write_timeout, async move {
                    let mut at = 0;
                    for end in bounds {
                        let text = String::from_utf8_lossy(&out[at..end]).into_owned();
                        at = end;
                        tx.send(FrameOut::Text(text))
                            .await
                            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
                    }
                    Ok(())
                })
                .await
            }
            s => {
                timeout(write_timeout, async {
                    s.write_all(&out).await?;
                    s.flush().await
                })
                .await
            }
        };
        // The traced stanzas in this write are written (or lost with it).
        for hop in self.writing.drain(..) {
            if !matches!(r, Ok(Ok(()))) {
                hop.fail("not written");
            }
        }
        match r {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::Gone),
            Err(_) => {
                info!(peer = %self.peer, "client is not reading; dropping the connection");
                return Err(End::Gone);
            }
        }
        // The buffer goes with `out`: a connection waiting for its next
        // stanza holds no write buffer (the next write allocates its own).
        Ok(())
    }

    async fn send(&mut self, el: &Element) -> Result<(), End> {
        self.push(el);
        self.flush().await
    }

    // ---- input --------------------------------------------------------

    /// Reads until the parser yields an event.
    async fn next_event(&mut self) -> Result<StreamEvent, End> {
        loop {
            if let Some(ev) = self.parsed()? {
                return Ok(ev);
            }
            self.read_more().await?;
        }
    }

    /// The next complete event already received, if any.
    fn parsed(&mut self) -> Result<Option<StreamEvent>, End> {
        if let Some(Socket::Framed(f)) = &mut self.socket {
            return Ok(f.next_event());
        }
        Ok(self.parser.next_event().map_err(StreamError::from)?)
    }

    async fn read_more(&mut self) -> Result<(), End> {
        read_into(&mut self.socket, &mut self.parser).await
    }

    /// Reads the next first-level element during negotiation.
    async fn next_element(&mut self) -> Result<Element, End> {
        match self.next_event().await? {
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::Close => Err(End::Closed),
            StreamEvent::Open(_) => Err(stream_err("not-well-formed", "unexpected stream header")),
        }
    }

    /// RFC 6120 §4.7: reads and checks the client's stream header, then
    /// answers with ours.
    async fn open_stream(&mut self) -> Result<(), End> {
        let header: StreamHeader = match self.next_event().await? {
            StreamEvent::Open(h) => h,
            _ => return Err(stream_err("not-well-formed", "expected a stream header")),
        };
        self.write_header(header.attr("from"));
        // §4.9.3.10: wrong stream or content namespace.
        if header.name != "stream" || header.ns != ns::STREAMS {
            return Err(stream_err("invalid-namespace", "not an XMPP stream"));
        }
        if header.default_ns.as_deref() != Some(ns::CLIENT) {
            return Err(stream_err(
                "invalid-namespace",
                "content namespace must be jabber:client",
            ));
        }
        // §4.7.5: no version means 0.9, which this server does not speak.
        let major = header
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return Err(stream_err("unsupported-version", "version 1.0 is required"));
        }
        // §4.9.3.6: a domain we do not serve.
        if let Some(to) = header.attr("to") {
            let ok = rookery_jid::prep_domainpart(to)
                .map(|d| d == self.c2s.domain)
                .unwrap_or(false);
            if !ok {
                return Err(stream_err(
                    "host-unknown",
                    "this server does not serve that domain",
                ));
            }
        }
        // A framed transport without TLS cannot upgrade (RFC 7395 §3.9).
        if self.framed().is_some_and(|f| !f.secure) && self.c2s.config.require_tls {
            return Err(stream_err(
                "policy-violation",
                "TLS is required: connect with wss:// or https://",
            ));
        }
        let features = self.features();
        self.send(&features).await
    }

    /// RFC 6120 §4.3.2: the features for the current negotiation state.
    fn features(&self) -> Element {
        let mut f = Element::new_static("features", ns::STREAMS);
        let tls = self.socket.as_ref().is_some_and(Socket::is_tls);
        // RFC 7395 §3.9, XEP-0206 §4: no STARTTLS inside a framed transport.
        if !tls && self.framed().is_none() {
            let mut st = Element::new_static("starttls", ns::TLS);
            if self.c2s.config.require_tls {
                st.push_child(Element::new_static("required", ns::TLS));
            }
            f.push_child(st);
            if self.c2s.config.require_tls {
                return f;
            }
        }
        if self.user.is_none() {
            let exporter = self.socket.as_ref().and_then(Socket::tls_exporter);
            let mut mechs = Element::new_static("mechanisms", ns::SASL);
            for m in self.offered(tls, exporter.is_some()) {
                mechs.push_child(Element::new_static("mechanism", ns::SASL).with_text(m.name()));
            }
            f.push_child(mechs);
            if self.c2s.registration.enabled {
                // XEP-0077 §4: the registration stream feature.
                f.push_child(Element::new_static("register", ns::REGISTER_FEATURE));
            }
            if exporter.is_some() {
                // XEP-0440 §3: the channel-binding types we support.
                f.push_child(
                    Element::new_static("sasl-channel-binding", ns::SASL_CB).with_child(
                        Element::new_static("channel-binding", ns::SASL_CB)
                            .with_attr("type", "tls-exporter"),
                    ),
                );
            }
            return f;
        }
        f.push_child(Element::new_static("bind", ns::BIND));
        // XEP-0198 §2.
        f.push_child(Element::new_static("sm", NS_SM));
        // RFC 6121 §2.6.1: roster versioning is supported.
        f.push_child(Element::new_static("ver", "urn:xmpp:features:rosterver"));
        // XEP-0352 §3.
        f.push_child(crate::csi::feature());
        if self.c2s.config.legacy_session {
            f.push_child(
                Element::new_static("session", ns::SESSION)
                    .with_child(Element::new_static("optional", ns::SESSION)),
            );
        }
        f
    }

    fn offered(&self, tls: bool, channel_binding: bool) -> Vec<Mechanism> {
        rookery_sasl::offered_mechanisms(tls, channel_binding, tls && self.c2s.config.allow_plain)
    }

    /// Stream negotiation up to a bound resource.
    async fn negotiate(
        &mut self,
    ) -> Result<(mpsc::Receiver<Queued>, watch::Receiver<Option<StreamError>>), End> {
        'restart: loop {
            self.open_stream().await?;
            loop {
                let el = self.next_element().await?;
                let tls = self.socket.as_ref().is_some_and(Socket::is_tls);
                if el.is("starttls", ns::TLS) {
                    if tls {
                        return Err(stream_err("policy-violation", "TLS is already established"));
                    }
                    if self.framed().is_some() {
                        // RFC 7395 §3.9: TLS is negotiated below the framing.
                        return Err(stream_err(
                            "policy-violation",
                            "no STARTTLS over this transport",
                        ));
                    }
                    self.starttls().await?;
                    continue 'restart;
                }
                if el.ns() == ns::SASL && el.name() == "auth" {
                    if self.user.is_some() {
                        return Err(stream_err("policy-violation", "already authenticated"));
                    }
                    if !tls && self.c2s.config.require_tls {
                        // RFC 6120 §6.5.4.
                        self.send(&sasl_failure("encryption-required")).await?;
                        continue;
                    }
                    if self.sasl(el).await? {
                        // §6.4.6: restart, keeping what the client pipelined.
                        self.parser.reset(true);
                        continue 'restart;
                    }
                    continue;
                }
                if self.user.is_none()
                    && (tls || !self.c2s.config.require_tls)
                    && el.name() == "iq"
                    && el.child("query", ns::REGISTER).is_some()
                {
                    let reply = crate::register::handle(
                        &self.c2s,
                        self.peer.ip(),
                        &el,
                        &mut self.registered,
                    )
                    .await;
                    self.send(&reply).await?;
                    continue;
                }
                if el.ns() == NS_SM && self.user.is_some() {
                    if el.name() == "resume" {
                        if let Some(channels) = self.resume(&el).await? {
                            return Ok(channels);
                        }
                        continue;
                    }
                    if el.name() == "enable" {
                        // XEP-0198 §3: only after binding.
                        self.send(&sm_failed("unexpected-request")).await?;
                        continue;
                    }
                }
                if StanzaKind::of(&el).is_some() {
                    if self.user.is_none() {
                        // RFC 6120 §4.3.5 (stanzas before authentication).
                        return Err(stream_err("not-authorized", "authenticate first"));
                    }
                    if el.name() == "iq" && el.child("bind", ns::BIND).is_some() {
                        if let Some(channels) = self.bind(el).await? {
                            return Ok(channels);
                        }
                        continue;
                    }
                    // §7.1: nothing but binding before a resource is bound.
                    return Err(stream_err("not-authorized", "bind a resource first"));
                }
                if !tls && self.c2s.config.require_tls {
                    return Err(stream_err("policy-violation", "STARTTLS is required"));
                }
                return Err(stream_err(
                    "unsupported-stanza-type",
                    "unexpected element during negotiation",
                ));
            }
        }
    }

    /// RFC 6120 §5.4.2–§5.4.3: proceed, handshake, and drop everything the
    /// client sent in plaintext after `<starttls/>`.
    async fn starttls(&mut self) -> Result<(), End> {
        self.send(&Element::new_static("proceed", ns::TLS)).await?;
        let Some(Socket::Plain(tcp)) = self.socket.take() else {
            return Err(End::Gone);
        };
        match self.c2s.tls.accept(tcp).await {
            Ok(tls) => {
                self.socket = Some(Socket::Tls(Box::new(tls)));
                self.parser.reset(false);
                self.header_sent = false;
                Ok(())
            }
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                Err(End::Gone)
            }
        }
    }

    /// RFC 6120 §6.4: one SASL exchange. Returns whether it succeeded.
    async fn sasl(&mut self, auth: Element) -> Result<bool, End> {
        let tls = self.socket.as_ref().is_some_and(Socket::is_tls);
        let exporter = self.socket.as_ref().and_then(Socket::tls_exporter);
        let offered = self.offered(tls, exporter.is_some());
        let mech = auth
            .attr("mechanism")
            .and_then(Mechanism::from_name)
            .filter(|m| offered.contains(m));
        let Some(mech) = mech else {
            self.send(&sasl_failure("invalid-mechanism")).await?;
            return Ok(false);
        };
        let mut server = SaslServer::new(mech, exporter)
            .reject_downgrade(self.c2s.config.reject_channel_binding_downgrade);
        let mut input = match decode_b64(&auth.text()) {
            Some(v) => v,
            None => return self.sasl_failed(mech, "incorrect-encoding", true).await,
        };
        loop {
            let step = {
                let lookup = StoreLookup { c2s: &self.c2s };
                server.step(&input, &lookup).await
            };
            match step {
                Step::Challenge(data) => {
                    self.send(
                        &Element::new_static("challenge", ns::SASL).with_text(encode_b64(&data)),
                    )
                    .await?;
                    let el = self.next_element().await?;
                    if el.is("abort", ns::SASL) {
                        return self.sasl_failed(mech, "aborted", false).await;
                    }
                    if !el.is("response", ns::SASL) {
                        return Err(stream_err("not-authorized", "expected a SASL response"));
                    }
                    input = match decode_b64(&el.text()) {
                        Some(v) => v,
                        None => return self.sasl_failed(mech, "incorrect-encoding", true).await,
                    };
                }
                Step::Success {
                    authcid,
                    authzid,
                    additional_data,
                } => {
                    let user = rookery_jid::prep_localpart(&authcid)
                        .ok()
                        .and_then(|l| Jid::new(Some(&l), &self.c2s.domain, None).ok());
                    let Some(user) = user else {
                        return self.sasl_failed(mech, "not-authorized", true).await;
                    };
                    // RFC 6120 §6.4.6: an authzid must be the account itself.
                    if let Some(z) = authzid.as_deref().filter(|z| !z.is_empty())
                        && Jid::parse(z).ok().as_ref() != Some(&user)
                    {
                        return self.sasl_failed(mech, "invalid-authzid", true).await;
                    }
                    let mut ok = Element::new_static("success", ns::SASL);
                    if let Some(d) = additional_data {
                        ok.push_text(B64.encode(d));
                    }
                    self.send(&ok).await?;
                    self.c2s
                        .metrics
                        .auth
                        .get_or_create(&AuthLabel {
                            mechanism: mech.name(),
                            outcome: "success",
                        })
                        .inc();
                    debug!(peer = %self.peer, user = %user, mechanism = mech.name(), "authenticated");
                    self.user = Some(user);
                    return Ok(true);
                }
                Step::Failure(f) if !f.may_be_a_guess() => {
                    return self.sasl_failed(mech, f.condition(), false).await;
                }
                Step::Failure(f) => return self.sasl_failed(mech, f.condition(), true).await,
            }
        }
    }

    /// Answers a failed exchange, slowed down per source address, and closes
    /// the stream once the retry limit is reached (RFC 6120 §6.4.5).
    /// `guess`: the failure may have been a password guess (slowed down);
    /// an abort or a refused channel-binding type is not.
    async fn sasl_failed(
        &mut self,
        mech: Mechanism,
        condition: &'static str,
        guess: bool,
    ) -> Result<bool, End> {
        self.c2s
            .metrics
            .auth
            .get_or_create(&AuthLabel {
                mechanism: mech.name(),
                outcome: "failure",
            })
            .inc();
        self.auth_failures += 1;
        if guess {
            let delay = self.c2s.throttle.failure(self.peer.ip());
            info!(peer = %self.peer, mechanism = mech.name(), condition, failures = self.auth_failures, "authentication failed");
            tokio::time::sleep(delay).await;
        }
        self.send(&sasl_failure(condition)).await?;
        if self.auth_failures >= self.c2s.config.max_auth_failures {
            return Err(stream_err(
                "policy-violation",
                "too many failed authentication attempts",
            ));
        }
        Ok(false)
    }

    /// RFC 6120 §7: binds a resource. `None` if the bind failed and the
    /// client may retry.
    async fn bind(
        &mut self,
        iq: Element,
    ) -> Result<Option<(mpsc::Receiver<Queued>, watch::Receiver<Option<StreamError>>)>, End> {
        let Some(user) = self.user.clone() else {
            return Err(stream_err("not-authorized", "authenticate first"));
        };
        let id = iq.attr("id").unwrap_or_default().to_owned();
        let reply_err = |e: StanzaError| {
            Element::new_static("iq", ns::CLIENT)
                .with_attr("type", "error")
                .with_attr("id", id.clone())
                .with_child(e.to_element())
        };
        if iq.attr("type") != Some("set") {
            self.send(&reply_err(StanzaError::bad_request("bind is a set")))
                .await?;
            return self.bind_failed();
        }
        let requested = iq
            .child("bind", ns::BIND)
            .and_then(|b| b.child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.is_empty());
        let resource = match requested {
            None => None,
            Some(r) => match rookery_jid::prep_resourcepart(&r) {
                Ok(r) => Some(r.into_owned()),
                Err(_) => {
                    // §7.7.2.1
                    self.send(&reply_err(StanzaError::bad_request("invalid resourcepart")))
                        .await?;
                    return self.bind_failed();
                }
            },
        };
        let (tx, rx) = mpsc::channel(self.c2s.config.max_queued_stanzas.max(1));
        let (close, close_rx) = watch::channel(None);
        let link = Arc::new(ChannelLink { tx, close });
        let req = BindRequest {
            user,
            resource,
            link,
            conn_id: self.id,
        };
        match self.c2s.sessions.bind(req).await {
            Ok(jid) => {
                let result =
                    Element::new_static("iq", ns::CLIENT)
                        .with_attr("type", "result")
                        .with_attr("id", id.clone())
                        .with_child(Element::new_static("bind", ns::BIND).with_child(
                            Element::new_static("jid", ns::BIND).with_text(jid.as_str()),
                        ));
                self.jid = Some(jid);
                self.send(&result).await?;
                Ok(Some((rx, close_rx)))
            }
            Err(e) => {
                self.send(&reply_err(e.to_stanza_error())).await?;
                self.bind_failed()
            }
        }
    }

    /// XEP-0198 §5: resumes a previous session instead of binding. `None`
    /// if it failed and the client may bind.
    async fn resume(
        &mut self,
        el: &Element,
    ) -> Result<Option<(mpsc::Receiver<Queued>, watch::Receiver<Option<StreamError>>)>, End> {
        let Some(user) = self.user.clone() else {
            return Err(stream_err("not-authorized", "authenticate first"));
        };
        let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
        let (Some(h), Some(previd)) = (h, el.attr("previd")) else {
            self.send(&sm_failed("bad-request")).await?;
            return self.bind_failed();
        };
        let (tx, rx) = mpsc::channel(self.c2s.config.max_queued_stanzas.max(1));
        let (close, close_rx) = watch::channel(None);
        let link = Arc::new(ChannelLink { tx, close });
        match self
            .c2s
            .sessions
            .resume(&user, previd, h, link, self.id)
            .await
        {
            Ok(resumed) => {
                debug!(peer = %self.peer, jid = %resumed.jid, "stream resumed");
                self.jid = Some(resumed.jid);
                self.sm = Sm {
                    enabled: true,
                    resumable: true,
                    inbound: resumed.h,
                    unrequested: 0,
                };
                Ok(Some((rx, close_rx)))
            }
            Err(SmError::TooHigh { h, sent }) => Err(too_high(h, sent)),
            Err(_) => {
                self.send(&sm_failed("item-not-found")).await?;
                self.bind_failed()
            }
        }
    }

    /// XEP-0198: a stream management element on an established stream.
    async fn sm_element(&mut self, el: &Element, full: &Jid) -> Result<(), End> {
        match el.name() {
            "enable" => {
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                let params = SmParams {
                    resume,
                    timeout: Duration::from_secs(self.c2s.config.sm_resume_timeout_secs),
                    max_queue: self.c2s.config.sm_max_queue.max(1),
                };
                match self.c2s.sessions.sm_enable(full, self.id, params).await {
                    Ok(id) => {
                        // `<enabled/>` comes through the session's channel,
                        // after what was queued uncounted before it.
                        self.drain_rx();
                        self.sm.enabled = true;
                        // §4: h counts what was handled since <enable/>
                        // (found by @xmpp/client, which fails on a count
                        // that includes the stanzas before it).
                        self.sm.inbound = 0;
                        self.sm.unrequested = 0;
                        self.sm.resumable = id.is_some();
                    }
                    Err(_) => self.push(&sm_failed("unexpected-request")),
                }
                Ok(())
            }
            "r" if self.sm.enabled => {
                let a = Element::new_static("a", NS_SM).with_attr("h", self.sm.inbound.to_string());
                self.push(&a);
                Ok(())
            }
            "a" if self.sm.enabled => {
                self.acks_in += 1;
                let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return Err(stream_err("bad-format", "<a/> needs a numeric h"));
                };
                match self
                    .c2s
                    .sessions
                    .sm_ack(full, self.id, h, self.sm.inbound)
                    .await
                {
                    Err(SmError::TooHigh { h, sent }) => Err(too_high(h, sent)),
                    _ => Ok(()),
                }
            }
            // Acks before <enable/> are no extension we speak on this stream.
            "r" | "a" => Err(stream_err(
                "unsupported-stanza-type",
                "stream management is not enabled",
            )),
            _ => {
                self.push(&sm_failed("unexpected-request"));
                Ok(())
            }
        }
    }

    /// The cm drains and this stream's moment came: writes what is queued;
    /// with resumable stream management, asks for an acknowledgement and
    /// waits a moment for it (so that the resumption replays little), then
    /// ends the stream, leaving the session detached for the client to
    /// resume on another cm. Returns how the stream ends.
    async fn move_away(&mut self) -> End {
        self.drain_rx();
        if !(self.sm.enabled && self.sm.resumable) {
            let plan = self.c2s.drain.borrow().clone();
            return End::Stream(moved_away(plan.as_ref()));
        }
        self.request_ack();
        if let Err(e) = self.flush().await {
            return e;
        }
        let acks = self.acks_in;
        let until = Instant::now() + ACK_WAIT;
        while self.acks_in == acks {
            tokio::select! {
                r = read_into(&mut self.socket, &mut self.parser) => {
                    if let Err(e) = r {
                        return e;
                    }
                    if let Err(e) = self.drain_input().await {
                        return e;
                    }
                }
                Some(el) = recv_opt(&mut self.rx) => {
                    self.outbound(el);
                    if let Err(e) = self.flush().await {
                        return e;
                    }
                }
                _ = sleep_until(until) => break,
            }
        }
        self.drain_rx();
        self.draining = true;
        End::Stream(
            StreamError::new("system-shutdown")
                .with_text("this server is restarting; resume the session (XEP-0198) to continue"),
        )
    }

    /// XEP-0198 §4: asks the client for an acknowledgement.
    fn request_ack(&mut self) {
        self.sm.unrequested = 0;
        self.out.extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
        self.end_message();
    }

    /// A stanza the cm itself sends to the bound client: through the
    /// session when stream management counts it.
    fn reply(&mut self, el: Element) {
        match (&self.jid, self.sm.enabled) {
            (Some(jid), true) => self.c2s.sessions.sm_send(jid, self.id, el),
            _ => self.push(&el),
        }
    }

    /// RFC 6120 §7.7.2.1: a limited number of bind retries.
    fn bind_failed<T>(&mut self) -> Result<Option<T>, End> {
        self.bind_failures += 1;
        if self.bind_failures >= 10 {
            return Err(stream_err("policy-violation", "too many bind attempts"));
        }
        Ok(None)
    }

    // ---- established stream --------------------------------------------

    /// Writes out what the session side has queued so far.
    fn drain_rx(&mut self) {
        self.release_held();
        while let Some((el, carried)) = self.rx.as_mut().and_then(|r| r.try_recv().ok()) {
            self.write_hop(&el, &carried);
            self.push(&el);
        }
    }

    /// Starts the `c2s.write` span of a traced stanza taken from the queue;
    /// it ends when the write that carries it is done.
    fn write_hop(&mut self, el: &Element, carried: &Carried) {
        if carried.is_some()
            && let Some(hop) = carried.start(telemetry::names::WRITE, SpanKind::Producer, || {
                vec![
                    KeyValue::new(
                        "xmpp.stanza.kind",
                        StanzaKind::of(el).map_or("other", StanzaKind::as_str),
                    ),
                    KeyValue::new("rookery.conn", self.id as i64),
                ]
            })
        {
            self.writing.push(hop);
        }
    }

    async fn established(
        &mut self,
        rx: mpsc::Receiver<Queued>,
        mut close_rx: watch::Receiver<Option<StreamError>>,
    ) -> Result<(), End> {
        self.rx = Some(rx);
        // XEP-0198: `<resumed/>` and the replay come before anything else.
        self.drain_rx();
        let mut shutdown = self.c2s.shutdown.clone();
        let interval = Duration::from_secs(self.c2s.config.ping_interval_secs.max(1));
        let ping_timeout = Duration::from_secs(self.c2s.config.ping_timeout_secs.max(1));
        let mut deadline = Instant::now() + interval;
        let mut drain = self.c2s.drain.subscribe();
        // When this stream goes, once the cm drains.
        let mut leave_at: Option<Instant> = drain
            .borrow_and_update()
            .as_ref()
            .map(|p| Instant::now() + p.offset(self.id));
        // Anything the client pipelined behind the bind request.
        self.drain_input().await?;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    // Flush what is queued, then <system-shutdown/>.
                    self.drain_rx();
                    return Err(End::Stream(StreamError::new("system-shutdown")));
                }
                r = drain.changed(), if leave_at.is_none() => {
                    let plan = drain.borrow_and_update().clone();
                    match (r, plan) {
                        (Ok(()), Some(p)) => leave_at = Some(Instant::now() + p.offset(self.id)),
                        // The C2s is gone: so is the drain.
                        (Err(_), _) => leave_at = Some(Instant::now() + Duration::from_secs(86_400 * 365)),
                        (Ok(()), None) => {}
                    }
                }
                _ = sleep_until(leave_at.unwrap_or(deadline)), if leave_at.is_some() => {
                    return Err(self.move_away().await);
                }
                changed = close_rx.changed() => {
                    if changed.is_ok()
                        && let Some(e) = close_rx.borrow_and_update().clone()
                    {
                        // What was queued before the close goes out first.
                        self.drain_rx();
                        return Err(End::Stream(e));
                    }
                }
                Some(q) = recv_opt(&mut self.rx) => {
                    self.outbound(q);
                    for _ in 1..WRITE_BATCH {
                        match self.rx.as_mut().map(|r| r.try_recv()) {
                            Some(Ok(q)) => self.outbound(q),
                            _ => break,
                        }
                    }
                    if self.sm.enabled && self.sm.unrequested >= SM_REQUEST_EVERY {
                        self.request_ack();
                    }
                    self.flush().await?;
                }
                r = read_into(&mut self.socket, &mut self.parser) => {
                    r?;
                    // Any data proves the client alive (XEP-0199 §4.1).
                    self.ping_pending = None;
                    deadline = Instant::now() + interval;
                    self.drain_input().await?;
                }
                _ = sleep_until(deadline) => {
                    if self.sm.enabled && self.sm.unrequested > 0 {
                        // Idle with unacknowledged stanzas.
                        self.request_ack();
                    }
                    if self.ping_pending.is_some() {
                        return Err(stream_err("connection-timeout", "no answer to ping"));
                    }
                    match self.framed().map(|f| (f.kind, f.tx.clone())) {
                        Some((Kind::WebSocket, tx)) => {
                            // RFC 7395 §3.8: a WebSocket ping; any message
                            // (the pong included) answers it.
                            self.flush().await?;
                            let _ = tx.try_send(FrameOut::Ping);
                            self.ping_pending = Some(String::new());
                            deadline = Instant::now() + ping_timeout;
                            continue;
                        }
                        Some((Kind::Bosh, _)) => {
                            // XEP-0124 §10: the BOSH session's inactivity
                            // period watches the client.
                            self.flush().await?;
                            deadline = Instant::now() + interval;
                            continue;
                        }
                        None => {}
                    }
                    let id = new_id();
                    let ping = Element::new_static("iq", ns::CLIENT)
                        .with_attr("type", "get")
                        .with_attr("id", id.clone())
                        .with_attr("from", self.c2s.domain.clone())
                        .with_child(Element::new_static("ping", ns::PING));
                    self.ping_pending = Some(id);
                    self.reply(ping);
                    self.flush().await?;
                    deadline = Instant::now() + ping_timeout;
                }
            }
        }
    }

    /// Handles every complete element already buffered.
    async fn drain_input(&mut self) -> Result<(), End> {
        while let Some(ev) = self.parsed()? {
            match ev {
                StreamEvent::Stanza(el) => self.client_stanza(el).await?,
                StreamEvent::Close => return Err(End::Closed),
                StreamEvent::Open(_) => {
                    return Err(stream_err("not-well-formed", "unexpected stream header"));
                }
            }
        }
        self.flush().await
    }

    /// A stanza for the client: written, or held while the client is
    /// inactive and the stanza can wait (XEP-0352).
    fn outbound(&mut self, (el, carried): Queued) {
        if self.inactive && !crate::csi::urgent(&el) {
            // Held: its trace ends here (a held stanza has no write span).
            if !self.held.hold(el) {
                self.release_held();
            }
            return;
        }
        self.release_held();
        self.write_hop(&el, &carried);
        self.push(&el);
    }

    /// Writes everything held back, in order.
    fn release_held(&mut self) {
        for el in self.held.take() {
            self.push(&el);
        }
    }

    /// A first-level element from a bound client.
    async fn client_stanza(&mut self, mut el: Element) -> Result<(), End> {
        if el.ns() == NS_SM {
            let Some(full) = self.jid.clone() else {
                return Err(End::Gone);
            };
            return self.sm_element(&el, &full).await;
        }
        if let Some(active) = crate::csi::state(&el) {
            // XEP-0352 §4: becoming active flushes what was held.
            self.inactive = !active;
            if active {
                self.release_held();
            }
            return Ok(());
        }
        let Some(kind) = StanzaKind::of(&el) else {
            // RFC 6120 §4.9.3.24: not a stanza and no extension we speak.
            return Err(stream_err(
                "unsupported-stanza-type",
                "unknown first-level element",
            ));
        };
        self.c2s
            .metrics
            .stanzas_in
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
        let Some(full) = self.jid.clone() else {
            return Err(End::Gone);
        };
        // RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only
        // claim its own full or bare JID.
        if let Some(f) = el.attr("from") {
            match Jid::parse(f) {
                Ok(j) if j == full || j == full.to_bare() => {}
                _ => {
                    return Err(stream_err(
                        "invalid-from",
                        "from does not match the session",
                    ));
                }
            }
        }
        el.set_attr("from", full.as_str());
        // XEP-0198 §4: every stanza received counts.
        self.sm.inbound = self.sm.inbound.wrapping_add(1);
        let to_server = el
            .attr("to")
            .is_none_or(|t| rookery_jid::prep_domainpart(t).is_ok_and(|d| d == self.c2s.domain));
        if kind == StanzaKind::Iq && to_server {
            // The answer to our keepalive ping.
            if self.ping_pending.as_deref() == el.attr("id")
                && matches!(el.attr("type"), Some("result" | "error"))
            {
                self.ping_pending = None;
                return Ok(());
            }
            // The legacy session element: nothing left to do (RFC 6121 §1.4 / RFC 3921 §3).
            if el.attr("type") == Some("set") && el.child("session", ns::SESSION).is_some() {
                let mut r = Element::new_static("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", el.attr("id").unwrap_or_default());
                r.set_attr("to", full.as_str());
                self.reply(r);
                return Ok(());
            }
        }
        match Stanza::parse(el) {
            Ok(stanza) => {
                // The root of the stanza's trace (when tracing is on).
                let hop = Hop::start(
                    telemetry::names::RECEIVE,
                    SpanKind::Server,
                    &telemetry::Context::new(),
                    || {
                        let mut a = vec![
                            KeyValue::new("xmpp.stanza.kind", kind.as_str()),
                            KeyValue::new("rookery.conn", self.id as i64),
                        ];
                        a.extend(telemetry::node());
                        a
                    },
                );
                telemetry::within(hop.as_ref(), self.c2s.sessions.route(&full, stanza)).await;
                Ok(())
            }
            Err((el, e)) => {
                if let Some(mut r) = rookery_core::stanza::error_reply(&el, &e) {
                    // The bad address is not echoed back as 'from'.
                    if e.condition == "jid-malformed" {
                        r.remove_attr("from");
                    }
                    self.reply(r);
                }
                Ok(())
            }
        }
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Queued>>) -> Option<Queued> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

thread_local! {
    /// The read buffer of every connection polled on this thread.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the socket has and feeds it to the parser. The bytes pass
/// through a per-thread buffer and are copied into the parser within the
/// same poll, so a connection waiting for input holds no read buffer of its
/// own (4 KiB less per idle connection). Cancel-safe: nothing is read
/// unless it is also fed.
async fn read_into(socket: &mut Option<Socket>, parser: &mut Parser) -> Result<(), End> {
    if let Some(Socket::Framed(f)) = socket {
        return f.read().await.map_err(|e| e.map_or(End::Gone, End::Stream));
    }
    std::future::poll_fn(|cx| {
        let Some(s) = socket.as_mut() else {
            return Poll::Ready(Err(End::Gone));
        };
        READ_BUF.with_borrow_mut(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *s).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(_)) => Poll::Ready(Err(End::Gone)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(End::Gone)),
                Poll::Ready(Ok(())) => Poll::Ready(
                    parser
                        .feed(rb.filled())
                        .map_err(|e| End::from(StreamError::from(e))),
                ),
            }
        })
    })
    .await
}

/// XEP-0198 `<failed/>` with a stanza error condition.
fn sm_failed(condition: &'static str) -> Element {
    Element::new_static("failed", NS_SM).with_child(Element::new_static(condition, ns::STANZAS))
}

/// XEP-0198 §4: the peer acknowledged more than it was sent.
fn too_high(h: u32, sent: u32) -> End {
    stream_err(
        "undefined-condition",
        &format!("handled-count-too-high: you acknowledged {h} stanzas, but only {sent} were sent"),
    )
}

fn sasl_failure(condition: &'static str) -> Element {
    Element::new_static("failure", ns::SASL).with_child(Element::new_static(condition, ns::SASL))
}

/// RFC 6120 §6.4.2: `=` stands for an empty payload; whitespace is not allowed.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text == "=" {
        return Some(Vec::new());
    }
    B64.decode(text).ok()
}

fn encode_b64(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}
