//! Outbound server-to-server streams (RFC 6120 §9.1 as the initiating
//! entity): connection, STARTTLS, certificate check, SASL EXTERNAL or
//! Server Dialback, then the stanzas of one (local, remote) domain pair.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rookery_core::metrics::DirectionLabel;
use rookery_core::{StanzaError, StreamError};
use rookery_xml::{Element, StreamEvent, ns};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info};

use crate::discovery::{self, Target};
use crate::stream::{Fail, Socket, XmlStream};
use crate::{PeerTls, Queued, S2s, dialback};

/// Why no stream could be had.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nowhere to connect, connections refused, or negotiation refused
    /// (RFC 6120 §8.3.3.16 `remote-server-not-found`).
    NotFound(String),
    /// Nothing answered in time (§8.3.3.17 `remote-server-timeout`).
    Timeout(String),
}

impl Failure {
    fn stanza_error(&self) -> StanzaError {
        match self {
            Failure::NotFound(t) => StanzaError::remote_server_not_found().with_text(t.clone()),
            Failure::Timeout(t) => StanzaError::remote_server_timeout().with_text(t.clone()),
        }
    }
}

impl From<Fail> for Failure {
    fn from(f: Fail) -> Failure {
        Failure::NotFound(f.to_string())
    }
}

/// What the stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Stanzas: the stream must be authenticated.
    Stanzas,
    /// A `<db:verify/>` to the authoritative server: no authentication.
    Verify,
}

/// The places to try for `remote`: the static table, else DNS.
async fn targets(s2s: &S2s, remote: &str) -> Vec<Target> {
    if let Some(peer) = s2s.config.peers.get(remote)
        && !peer.address.is_empty()
    {
        return vec![Target {
            host: peer.address.clone(),
            port: 0,
            direct_tls: peer.tls == PeerTls::Direct,
        }];
    }
    discovery::resolve(s2s.resolver().await, remote).await
}

/// Opens a TCP (and for direct TLS, TLS) connection to the first target
/// that answers.
pub(crate) async fn connect(s2s: &S2s, remote: &str) -> Result<(Socket, bool), Failure> {
    let targets = targets(s2s, remote).await;
    if targets.is_empty() {
        return Err(Failure::NotFound(format!(
            "{remote} does not offer federation"
        )));
    }
    let connect_timeout = Duration::from_secs(s2s.config.connect_timeout_secs);
    let mut timed_out = false;
    let mut last = String::from("no address");
    for t in targets {
        let addrs: Vec<std::net::SocketAddr> = if t.port == 0 {
            tokio::net::lookup_host(t.host.as_str())
                .await
                .map(|a| a.collect())
        } else {
            tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map(|a| a.collect())
        }
        .unwrap_or_default();
        for addr in addrs {
            match timeout(connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    if !t.direct_tls {
                        return Ok((Socket::Plain(tcp), false));
                    }
                    match tls_connect(s2s, remote, tcp, true).await {
                        Ok(s) => return Ok((s, true)),
                        Err(e) => last = e,
                    }
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    timed_out = true;
                    last = format!("{addr}: connection timed out");
                }
            }
        }
    }
    if timed_out {
        Err(Failure::Timeout(last))
    } else {
        Err(Failure::NotFound(last))
    }
}

async fn tls_connect(
    s2s: &S2s,
    remote: &str,
    tcp: TcpStream,
    direct: bool,
) -> Result<Socket, String> {
    let name = rustls_pki_types::ServerName::try_from(remote.to_owned())
        .map_err(|e| format!("{remote}: {e}"))?;
    let connector = if direct {
        &s2s.tls.direct
    } else {
        &s2s.tls.starttls
    };
    connector
        .connect(name, tcp)
        .await
        .map(|t| Socket::Tls(Box::new(tokio_rustls::TlsStream::Client(t))))
        .map_err(|e| format!("TLS handshake with {remote}: {e}"))
}

/// Negotiates an outbound stream on a connected socket. Returns the
/// stream and the id the peer gave it.
pub(crate) async fn negotiate(
    s2s: &S2s,
    local: &str,
    remote: &str,
    socket: Socket,
    purpose: Purpose,
) -> Result<(XmlStream, String), Failure> {
    let peer = s2s.config.peers.get(remote);
    let dialback_only = peer.is_some_and(|p| p.dialback_only);
    let mut st = XmlStream::new(
        socket,
        s2s.config.limits(),
        Duration::from_secs(s2s.config.write_timeout_secs),
    );
    let mut cert: Option<Result<(), crate::CertError>> = None;
    let mut sasl_done = false;
    loop {
        st.write_header(local, Some(remote), None);
        st.flush().await?;
        let header = st.read_header().await?;
        let major = header
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return Err(Failure::NotFound(format!(
                "{remote} does not speak XMPP 1.0 streams"
            )));
        }
        let id = header.attr("id").unwrap_or_default().to_owned();
        let features = st.next_element().await?;
        if !features.is("features", ns::STREAMS) {
            return Err(Failure::NotFound("no stream features".into()));
        }
        if sasl_done {
            return Ok((st, id));
        }
        if !st.is_tls() {
            if features.child("starttls", ns::TLS).is_some() {
                st.send(&Element::new_static("starttls", ns::TLS)).await?;
                let answer = st.next_element().await?;
                if !answer.is("proceed", ns::TLS) {
                    return Err(Failure::NotFound(format!("{remote} refused STARTTLS")));
                }
                let Some(Socket::Plain(tcp)) = st.socket.take() else {
                    return Err(Failure::NotFound("connection lost".into()));
                };
                st.socket = Some(
                    tls_connect(s2s, remote, tcp, false)
                        .await
                        .map_err(Failure::NotFound)?,
                );
                // RFC 6120 §5.4.3.3: a new stream over TLS.
                st.parser.reset(false);
                st.header_sent = false;
                continue;
            }
            if s2s.config.require_tls {
                return Err(Failure::NotFound(format!("{remote} does not offer TLS")));
            }
        }
        if purpose == Purpose::Verify {
            return Ok((st, id));
        }
        let cert_ok = match &cert {
            Some(r) => r.is_ok(),
            None if st.is_tls() => {
                let certs = st
                    .socket
                    .as_ref()
                    .map(Socket::peer_certificates)
                    .unwrap_or_default();
                let r = s2s.trust.verify(&certs, remote);
                if let Err(e) = &r {
                    info!(%remote, error = %e, "peer certificate not valid");
                }
                let ok = r.is_ok();
                cert = Some(r);
                ok
            }
            None => false,
        };
        if !cert_ok && s2s.config.require_valid_certificates {
            let why = match &cert {
                Some(Err(e)) => e.to_string(),
                _ => "no TLS".to_owned(),
            };
            return Err(Failure::NotFound(format!(
                "{remote}: certificate required: {why}"
            )));
        }
        let external = features.child("mechanisms", ns::SASL).is_some_and(|m| {
            m.children()
                .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL")
        });
        if cert_ok && external && !dialback_only {
            // XEP-0178 §3 / RFC 6120 §6.4.6: authzid = our domain.
            let auth = Element::new_static("auth", ns::SASL)
                .with_attr("mechanism", "EXTERNAL")
                .with_text(B64.encode(local));
            st.send(&auth).await?;
            let answer = st.next_element().await?;
            if answer.is("success", ns::SASL) {
                sasl_done = true;
                // §6.4.6: restart, keeping what was pipelined.
                st.parser.reset(true);
                st.header_sent = false;
                continue;
            }
            debug!(%remote, "SASL EXTERNAL refused; trying dialback");
        }
        if s2s.config.require_valid_certificates {
            return Err(Failure::NotFound(format!(
                "{remote} did not accept our certificate"
            )));
        }
        // XEP-0220 §2.1.1: the dialback key.
        let key = dialback::key(&s2s.secret, remote, local, &id);
        dialback::write(&mut st.out, "result", local, remote, None, None, Some(&key));
        st.flush().await?;
        loop {
            let el = st.next_element().await?;
            if !el.is("result", ns::DIALBACK) || el.attr("from") != Some(remote) {
                continue;
            }
            return match el.attr("type") {
                Some("valid") => Ok((st, id)),
                Some("invalid") => Err(Failure::NotFound(format!(
                    "{remote} refused our dialback key"
                ))),
                _ => Err(Failure::NotFound(format!(
                    "{remote} answered dialback with an error"
                ))),
            };
        }
    }
}

/// XEP-0220 §2.2 step 2: asks the authoritative server of `remote`
/// whether `key` is the one it sent on our stream `stream_id`.
pub(crate) async fn verify_key(
    s2s: &S2s,
    local: &str,
    remote: &str,
    stream_id: &str,
    key: &str,
) -> Result<bool, Failure> {
    let neg = Duration::from_secs(s2s.config.negotiation_timeout_secs);
    let run = async {
        let (socket, _) = connect(s2s, remote).await?;
        let (mut st, _) = negotiate(s2s, local, remote, socket, Purpose::Verify).await?;
        dialback::write(
            &mut st.out,
            "verify",
            local,
            remote,
            Some(stream_id),
            None,
            Some(key),
        );
        st.flush().await?;
        loop {
            let el = st.next_element().await?;
            if el.is("verify", ns::DIALBACK) && el.attr("id") == Some(stream_id) {
                let valid = el.attr("type") == Some("valid");
                st.close(None, local).await;
                return Ok(valid);
            }
        }
    };
    match timeout(neg, run).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Timeout(format!(
            "{remote} did not answer db:verify"
        ))),
    }
}

/// What ended an established stream.
enum Ended {
    /// Idle or shut down: queued stanzas may go on a new stream.
    Clean(Option<StreamError>),
    /// Broken: queued stanzas are bounced.
    Broken(String),
}

/// The task of one outbound stream: negotiates, then writes queued
/// stanzas until idle, broken or shut down.
pub(crate) async fn run(
    s2s: Arc<S2s>,
    key: (String, String),
    mut rx: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
    generation: u64,
) {
    let (local, remote) = (key.0.as_str(), key.1.as_str());
    let neg = Duration::from_secs(s2s.config.negotiation_timeout_secs);
    let mut shutdown = s2s.shutdown.clone();
    let established = async {
        let (socket, _) = connect(&s2s, remote).await?;
        negotiate(&s2s, local, remote, socket, Purpose::Stanzas).await
    };
    let result = tokio::select! {
        r = timeout(neg, established) => match r {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(format!("{remote} did not answer in time"))),
        },
        _ = shutdown.changed() => Err(Failure::NotFound("server shutting down".into())),
    };
    let mut st = match result {
        Ok((st, _)) => st,
        Err(f) => {
            info!(%local, %remote, failure = ?f, "outbound s2s stream failed");
            s2s.metrics.s2s_failures.inc();
            s2s.forget_outbound(&key, generation);
            rx.close();
            let err = f.stanza_error();
            while let Ok(q) = rx.try_recv() {
                queued.fetch_sub(q.bytes.len(), Ordering::Relaxed);
                s2s.bounce(&q.stanza, err.clone()).await;
            }
            return;
        }
    };
    info!(%local, %remote, "outbound s2s stream established");
    let gauge = s2s
        .metrics
        .s2s_streams
        .get_or_create(&DirectionLabel { direction: "out" })
        .clone();
    gauge.inc();
    let ended = established_loop(&s2s, &mut st, &mut rx, &queued).await;
    gauge.dec();
    s2s.forget_outbound(&key, generation);
    rx.close();
    let leftover: Vec<Queued> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    match ended {
        Ended::Clean(err) => {
            st.close(err.as_ref(), local).await;
            // Stanzas that came while it closed go on a new stream.
            for q in leftover {
                queued.fetch_sub(q.bytes.len(), Ordering::Relaxed);
                if let Err(q) = s2s.enqueue(local, remote, q) {
                    s2s.bounce(&q.stanza, StanzaError::resource_constraint())
                        .await;
                }
            }
        }
        Ended::Broken(why) => {
            debug!(%remote, %why, "outbound s2s stream broken");
            st.close(None, local).await;
            for q in leftover {
                queued.fetch_sub(q.bytes.len(), Ordering::Relaxed);
                s2s.bounce(
                    &q.stanza,
                    StanzaError::remote_server_not_found().with_text(why.clone()),
                )
                .await;
            }
        }
    }
}

/// Stanzas written per wake-up before flushing.
const WRITE_BATCH: usize = 64;

async fn established_loop(
    s2s: &S2s,
    st: &mut XmlStream,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    queued: &AtomicUsize,
) -> Ended {
    enum Ev {
        Out(Option<Queued>),
        In(Result<StreamEvent, Fail>),
        Idle,
        Shutdown,
    }
    let idle = Duration::from_secs(s2s.config.idle_timeout_secs);
    let mut deadline = Instant::now() + idle;
    let mut shutdown = s2s.shutdown.clone();
    let counter = s2s
        .metrics
        .s2s_stanzas
        .get_or_create(&DirectionLabel { direction: "out" })
        .clone();
    loop {
        let ev = tokio::select! {
            q = rx.recv() => Ev::Out(q),
            r = st.next_event() => Ev::In(r),
            _ = sleep_until(deadline) => Ev::Idle,
            _ = shutdown.changed() => Ev::Shutdown,
        };
        match ev {
            Ev::Out(None) => return Ended::Clean(None),
            Ev::Out(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                for q in &batch {
                    st.out.extend_from_slice(&q.bytes);
                    queued.fetch_sub(q.bytes.len(), Ordering::Relaxed);
                    counter.inc();
                }
                if let Err(e) = st.flush().await {
                    // What was in the write is lost; the senders learn it.
                    for q in batch {
                        s2s.bounce(&q.stanza, StanzaError::remote_server_not_found())
                            .await;
                    }
                    return Ended::Broken(e.to_string());
                }
                deadline = Instant::now() + idle;
            }
            Ev::In(Ok(StreamEvent::Close)) => return Ended::Clean(None),
            // Dialback answers for other pairs, whitespace: nothing to do.
            Ev::In(Ok(_)) => {}
            Ev::In(Err(Fail::Stream(e))) => return Ended::Clean(Some(e)),
            Ev::In(Err(e)) => return Ended::Broken(e.to_string()),
            Ev::Idle => return Ended::Clean(None),
            Ev::Shutdown => return Ended::Clean(None),
        }
    }
}
