//! The s2s role: federation with other XMPP servers over server-to-server
//! streams (RFC 6120 §4–§6, §9.1, §13.7).
//!
//! - Outbound ([`S2s`] implements [`RemoteRouter`]): one stream per (local
//!   domain, remote domain), opened when the first stanza for the remote
//!   domain is sent; stanzas wait in a bounded queue while it is negotiated,
//!   and are bounced with `remote-server-not-found` / `remote-server-timeout`
//!   when it cannot be. The stream uses STARTTLS (or XEP-0368 direct TLS),
//!   verifies the peer's certificate (RFC 6125), and authenticates with SASL
//!   EXTERNAL (RFC 6120 §6, XEP-0178) when the peer accepts our certificate,
//!   else with Server Dialback (XEP-0220).
//! - Inbound ([`S2s::serve`]): STARTTLS, SASL EXTERNAL for peers whose client
//!   certificate is valid for their domain, dialback (answering
//!   `<db:result/>` by asking the originating domain's authoritative server
//!   with `<db:verify/>`, and answering `<db:verify/>` for keys we sent).
//!   Stanzas go to the [`InboundRouter`].
//! - Discovery: SRV records (RFC 6120 §3.2, XEP-0368), or the static
//!   `[s2s.peers]` table.
//!
//! See docs/decisions/0017-federation.md.

pub mod certs;
pub mod dialback;
pub mod discovery;
mod inbound;
mod outbound;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use rookery_cm::tls::ReloadingCert;
use rookery_core::metrics::Metrics;
use rookery_core::{InboundRouter, RemoteRouter, Stanza, StanzaError};
use rookery_xml::ns;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use certs::{ALPN_XMPP_SERVER, CertError, Trust};

/// `[s2s]` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2sConfig {
    /// Turns federation on. Off: stanzas to other domains are answered with
    /// `remote-server-not-found` and no listener is bound.
    pub enabled: bool,
    /// Addresses for STARTTLS server connections (RFC 6120 §5), port 5269.
    pub listen: Vec<SocketAddr>,
    /// Addresses for direct TLS server connections (XEP-0368), e.g. port
    /// 5270; empty by default (announce it with an `_xmpps-server._tcp`
    /// SRV record when used).
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse streams without TLS in both directions (RFC 7590 §3.1).
    pub require_tls: bool,
    /// Accept only peers with a certificate valid for their domain: no
    /// Server Dialback fallback, in either direction.
    pub require_valid_certificates: bool,
    /// A file whose bytes key the dialback keys (XEP-0185) instead of the
    /// installation secret in the data directory. Every s2s node of a
    /// cluster needs the same one: a remote server verifies a key with
    /// whichever node its verification connection reaches.
    pub dialback_secret_file: Option<PathBuf>,
    /// Seconds to open a TCP connection to one address of a peer.
    pub connect_timeout_secs: u64,
    /// Seconds from the first connection attempt to an authenticated
    /// stream (and from accept to authentication, inbound); queued stanzas
    /// are bounced with `remote-server-timeout` after it.
    pub negotiation_timeout_secs: u64,
    /// Seconds a stream may stay without traffic before it is closed
    /// (outbound: nothing sent; inbound: nothing received).
    pub idle_timeout_secs: u64,
    /// Seconds a write may block before the connection is dropped.
    pub write_timeout_secs: u64,
    /// Bytes of stanzas waiting for one remote domain; beyond it stanzas
    /// are bounced with `resource-constraint`.
    pub max_queued_bytes: usize,
    /// Inbound streams from one remote domain (the stream header's `from`).
    pub max_inbound_per_domain: usize,
    /// Inbound streams of this process.
    pub max_inbound: usize,
    /// Maximum bytes of one stanza (RFC 6120 §13.12: at least 10,000).
    pub max_stanza_bytes: usize,
    /// Maximum XML nesting depth of a stanza.
    pub max_depth: usize,
    /// Maximum attributes per element.
    pub max_attrs: usize,
    /// Maximum length of an element or attribute name.
    pub max_name_len: usize,
    /// `[s2s.peers."domain"]`: static routes and trust, instead of DNS.
    pub peers: BTreeMap<String, PeerConfig>,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5269))],
            direct_tls_listen: Vec::new(),
            require_tls: true,
            require_valid_certificates: false,
            dialback_secret_file: None,
            connect_timeout_secs: 10,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 600,
            write_timeout_secs: 30,
            max_queued_bytes: 1024 * 1024,
            max_inbound_per_domain: 16,
            max_inbound: 10_000,
            max_stanza_bytes: 256 * 1024,
            max_depth: 48,
            max_attrs: 64,
            max_name_len: 256,
            peers: BTreeMap::new(),
        }
    }
}

impl S2sConfig {
    pub(crate) fn limits(&self) -> rookery_xml::Limits {
        rookery_xml::Limits {
            max_stanza_bytes: self.max_stanza_bytes,
            max_depth: self.max_depth,
            max_attrs: self.max_attrs,
            max_name_len: self.max_name_len,
        }
    }
}

/// How to reach a peer of the static table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTls {
    /// Plain TCP, then STARTTLS (RFC 6120 §5).
    #[default]
    Starttls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

/// `[s2s.peers."example.org"]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// `host:port` to connect to instead of looking up DNS SRV records.
    pub address: String,
    /// `starttls` or `direct`.
    pub tls: PeerTls,
    /// PEM file of CA certificates trusted (alone) for this domain.
    pub ca: Option<PathBuf>,
    /// PEM file of the peer's own certificate, trusted as it is.
    pub cert: Option<PathBuf>,
    /// Authenticate outbound streams with dialback even when the peer
    /// offers SASL EXTERNAL.
    pub dialback_only: bool,
}

/// Errors building the s2s role.
#[derive(Debug, thiserror::Error)]
pub enum S2sError {
    /// A trust file of `[s2s.peers]` could not be used.
    #[error("s2s peer {0}: {1}")]
    Peer(String, String),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// A stanza waiting for (or on its way to) a remote domain: serialized
/// once, for the stream it goes out on.
#[derive(Debug)]
pub(crate) struct Queued {
    pub stanza: Stanza,
    pub bytes: Vec<u8>,
}

/// The sending side of one outbound stream.
#[derive(Debug)]
struct OutboundHandle {
    tx: mpsc::UnboundedSender<Queued>,
    /// Bytes in the queue (limit: `max_queued_bytes`).
    queued: Arc<AtomicUsize>,
    generation: u64,
}

/// The s2s role of a process.
pub struct S2s {
    pub(crate) domains: Vec<String>,
    pub(crate) config: S2sConfig,
    pub(crate) router: Arc<dyn InboundRouter>,
    pub(crate) tls: certs::TlsConfigs,
    pub(crate) trust: Trust,
    pub(crate) secret: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    resolver: tokio::sync::OnceCell<Option<TokioResolver>>,
    outbound: Mutex<HashMap<(String, String), OutboundHandle>>,
    pub(crate) inbound_per_domain: Mutex<HashMap<String, usize>>,
    inbound_limit: Arc<Semaphore>,
    next_generation: AtomicU64,
    pub(crate) me: Weak<S2s>,
}

impl std::fmt::Debug for S2s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2s")
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl S2s {
    /// Builds the s2s role for `domains` (prepared per RFC 7622).
    /// `identity` is the certificate the c2s listeners serve, presented
    /// here both as server and as client certificate; `installation_secret`
    /// keys the dialback keys (XEP-0220 §2.1.1).
    pub fn new(
        domains: Vec<String>,
        config: S2sConfig,
        identity: Arc<ReloadingCert>,
        installation_secret: &[u8],
        router: Arc<dyn InboundRouter>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<S2s>, S2sError> {
        let mut trust = Trust::new();
        for (domain, peer) in &config.peers {
            if let Some(ca) = &peer.ca {
                trust
                    .add_ca(domain, ca)
                    .map_err(|e| S2sError::Peer(domain.clone(), e))?;
            }
            if let Some(cert) = &peer.cert {
                trust
                    .add_pinned(domain, cert)
                    .map_err(|e| S2sError::Peer(domain.clone(), e))?;
            }
        }
        let tls = certs::TlsConfigs::new(identity)?;
        Ok(Arc::new_cyclic(|me| S2s {
            domains,
            inbound_limit: Arc::new(Semaphore::new(config.max_inbound)),
            config,
            router,
            tls,
            trust,
            secret: dialback::derive_secret(installation_secret),
            metrics,
            shutdown,
            resolver: tokio::sync::OnceCell::new(),
            outbound: Mutex::new(HashMap::new()),
            inbound_per_domain: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            me: me.clone(),
        }))
    }

    /// True for a domain of this server.
    pub(crate) fn is_local(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain) || self.router.serves(domain)
    }

    /// The DNS resolver, built on first use from the system configuration
    /// (none if it cannot be read: then only A/AAAA through the system).
    pub(crate) async fn resolver(&self) -> Option<&TokioResolver> {
        self.resolver
            .get_or_init(|| async {
                match TokioResolver::builder_tokio() {
                    Ok(b) => Some(b.build()),
                    Err(e) => {
                        warn!(error = %e, "no DNS resolver configuration; SRV lookups disabled");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// Outbound streams open or being negotiated.
    pub fn outbound_streams(&self) -> usize {
        self.outbound.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Accepts server connections on an already-bound listener until
    /// shutdown. `direct_tls` selects XEP-0368 direct TLS.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, direct_tls: bool) {
        let mut shutdown = self.shutdown.clone();
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "s2s accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.inbound_limit.clone().try_acquire_owned() else {
                debug!(%peer, "too many inbound s2s streams; refused");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            tasks.spawn(async move {
                inbound::run(this, tcp, peer, direct_tls).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        info!(addr = ?listener.local_addr().ok(), "s2s listener stopped");
        drop(listener);
        while tasks.join_next().await.is_some() {}
    }

    /// RFC 6120 §8.3.1: the error reply of a stanza that could not be
    /// delivered, back to its local sender through the session side. Error
    /// stanzas are dropped (never answered with an error).
    pub(crate) async fn bounce(&self, stanza: &Stanza, error: StanzaError) {
        let Some(reply) = stanza.error_reply(&error) else {
            return;
        };
        self.metrics
            .s2s_bounced
            .get_or_create(&rookery_core::metrics::ConditionLabel {
                condition: error.condition,
            })
            .inc();
        match Stanza::parse(reply) {
            Ok(st) => self.router.route_inbound(st).await,
            Err((_, e)) => debug!(error = %e, "bounce not routable"),
        }
    }

    /// Removes the outbound handle of generation `generation` (the stream
    /// task ending), so that the next stanza opens a new stream.
    pub(crate) fn forget_outbound(&self, key: &(String, String), generation: u64) {
        if let Ok(mut map) = self.outbound.lock()
            && map.get(key).is_some_and(|h| h.generation == generation)
        {
            map.remove(key);
        }
    }

    /// Queues `stanza` for `remote`, opening the stream if needed; returns
    /// the stanza back when the queue is full.
    fn enqueue(&self, local: &str, remote: &str, q: Queued) -> Result<(), Queued> {
        let key = (local.to_owned(), remote.to_owned());
        let Ok(mut map) = self.outbound.lock() else {
            return Err(q);
        };
        let handle = match map.get(&key) {
            Some(h) if !h.tx.is_closed() => h,
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                let Some(me) = self.me.upgrade() else {
                    return Err(q);
                };
                tokio::spawn(outbound::run(
                    me,
                    key.clone(),
                    rx,
                    queued.clone(),
                    generation,
                ));
                map.insert(
                    key.clone(),
                    OutboundHandle {
                        tx,
                        queued,
                        generation,
                    },
                );
                match map.get(&key) {
                    Some(h) => h,
                    None => return Err(q),
                }
            }
        };
        let len = q.bytes.len();
        if handle.queued.load(Ordering::Relaxed) + len > self.config.max_queued_bytes {
            return Err(q);
        }
        handle.queued.fetch_add(len, Ordering::Relaxed);
        handle.tx.send(q).map_err(|e| {
            handle.queued.fetch_sub(len, Ordering::Relaxed);
            e.0
        })
    }
}

impl RemoteRouter for S2s {
    fn send_remote(&self, stanza: Stanza) {
        let (Some(from), Some(to)) = (stanza.from(), stanza.to()) else {
            return;
        };
        let local = from.domain().to_owned();
        let remote = to.domain().to_owned();
        if !self.is_local(&local) || self.is_local(&remote) {
            debug!(%local, %remote, "not a stanza for federation; dropped");
            return;
        }
        let me = self.me.upgrade();
        if !self.config.enabled {
            if let Some(me) = me {
                tokio::spawn(async move {
                    me.bounce(&stanza, StanzaError::remote_server_not_found())
                        .await
                });
            }
            return;
        }
        // Serialized once, for the jabber:server stream (RFC 6120 §4.8.3).
        let mut bytes = Vec::with_capacity(256);
        stanza
            .element()
            .write_to_mapped(&mut bytes, ns::SERVER, (ns::CLIENT, ns::SERVER));
        if let Err(q) = self.enqueue(&local, &remote, Queued { stanza, bytes }) {
            debug!(%remote, "s2s queue full; bounced");
            if let Some(me) = me {
                tokio::spawn(async move {
                    me.bounce(
                        &q.stanza,
                        StanzaError::resource_constraint()
                            .with_text("too many stanzas waiting for that server"),
                    )
                    .await
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
