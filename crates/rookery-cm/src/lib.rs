//! The connection manager (cm) role: client-to-server streams (RFC 6120).
//!
//! It terminates TCP, STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368),
//! parses the stream with hard limits, runs SASL (RFC 6120 §6) against
//! credentials fetched from the user store, binds resources (§7) through the
//! session service, and then shuttles stanzas between the socket and the
//! session service. It holds sockets and nothing that must survive it.
//!
//! The shape follows mini-redis: [`C2s::serve`] is the listener loop with a
//! connection-limit semaphore and a shutdown signal; each connection is one
//! task running [`conn`].

mod conn;
mod csi;
mod framed;
mod io;
mod register;
mod throttle;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rookery_core::metrics::Metrics;
use rookery_core::{SessionService, UserStore};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use throttle::AuthThrottle;
pub use web::{Web, WebConfig};

/// `[c2s]` section of the configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sConfig {
    /// Addresses for STARTTLS client connections (RFC 6120 §5), port 5222.
    pub listen: Vec<SocketAddr>,
    /// Addresses for direct TLS client connections (XEP-0368), port 5223.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Refuse to go further than the stream header without TLS
    /// (RFC 6120 §5.3.1 "mandatory-to-negotiate").
    pub require_tls: bool,
    /// Offer SASL PLAIN (always only inside TLS, RFC 6120 §13.8.3).
    pub allow_plain: bool,
    /// Refuse a SCRAM client that sends the `y` channel-binding flag while
    /// -PLUS was offered (RFC 5802 §6 downgrade detection). Off by default:
    /// deployed clients (slixmpp 1.8) send `y` when they support only a
    /// binding type the server does not offer; see docs/decisions/0003-sasl.md.
    pub reject_channel_binding_downgrade: bool,
    /// Maximum bytes of one stanza (RFC 6120 §13.12: at least 10,000).
    pub max_stanza_bytes: usize,
    /// Maximum XML nesting depth of a stanza.
    pub max_depth: usize,
    /// Maximum attributes per element.
    pub max_attrs: usize,
    /// Maximum length of an element or attribute name.
    pub max_name_len: usize,
    /// Maximum simultaneous client connections of this process.
    pub max_connections: usize,
    /// Seconds allowed from TCP accept to a bound resource.
    pub negotiation_timeout_secs: u64,
    /// Seconds of silence from a client after which the server pings it
    /// (XEP-0199 §4.1).
    pub ping_interval_secs: u64,
    /// Seconds to wait for any data after a ping before closing the stream
    /// with `<connection-timeout/>`.
    pub ping_timeout_secs: u64,
    /// Seconds a write to a client may block before the client is dropped as
    /// not reading.
    pub write_timeout_secs: u64,
    /// Stanzas queued for one client before it is considered not reading.
    pub max_queued_stanzas: usize,
    /// Failed SASL attempts on one stream before `<policy-violation/>`
    /// (RFC 6120 §6.4.5: 5 to 10).
    pub max_auth_failures: u32,
    /// Delay per recent failure from the same IP address before a
    /// `<failure/>` is sent, in milliseconds (grows linearly, capped).
    pub auth_failure_delay_ms: u64,
    /// Upper bound of that delay, in milliseconds.
    pub auth_failure_max_delay_ms: u64,
    /// Offer the optional legacy `<session/>` feature (RFC 3921 §3) for old clients.
    pub legacy_session: bool,
    /// XEP-0198: seconds a detached session waits for a resumption (`max`).
    pub sm_resume_timeout_secs: u64,
    /// XEP-0198: unacknowledged stanzas kept per session at most.
    pub sm_max_queue: usize,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5222))],
            direct_tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5223))],
            require_tls: true,
            allow_plain: true,
            reject_channel_binding_downgrade: false,
            max_stanza_bytes: 256 * 1024,
            max_depth: 48,
            max_attrs: 64,
            max_name_len: 256,
            max_connections: 100_000,
            negotiation_timeout_secs: 60,
            ping_interval_secs: 300,
            ping_timeout_secs: 60,
            write_timeout_secs: 30,
            max_queued_stanzas: 1024,
            max_auth_failures: 5,
            auth_failure_delay_ms: 250,
            auth_failure_max_delay_ms: 5_000,
            legacy_session: true,
            sm_resume_timeout_secs: 300,
            sm_max_queue: 1000,
        }
    }
}

impl C2sConfig {
    pub(crate) fn limits(&self) -> rookery_xml::Limits {
        rookery_xml::Limits {
            max_stanza_bytes: self.max_stanza_bytes,
            max_depth: self.max_depth,
            max_attrs: self.max_attrs,
            max_name_len: self.max_name_len,
        }
    }
}

/// `[registration]`: XEP-0077 in-band registration of new accounts, before
/// authentication. Off by default: open registration invites spam accounts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Allow clients to create accounts in-band.
    pub enabled: bool,
    /// Seconds between two accounts created from the same IP address.
    pub min_interval_secs: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            min_interval_secs: 60,
        }
    }
}

/// Everything a client connection needs, shared by all of them.
pub struct C2s {
    pub(crate) domain: String,
    pub(crate) config: C2sConfig,
    pub(crate) tls: tokio_rustls::TlsAcceptor,
    pub(crate) sessions: Arc<dyn SessionService>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) throttle: AuthThrottle,
    pub(crate) registration: RegistrationConfig,
    pub(crate) registrations:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>,
    pub(crate) scram_iterations: u32,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    /// Set once, when the cm drains (SIGTERM in a cluster).
    pub(crate) drain: watch::Sender<Option<DrainPlan>>,
    /// Client connections open now.
    pub(crate) open: std::sync::atomic::AtomicUsize,
}

/// How a draining cm moves its clients away (docs/decisions/0015-draining.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainPlan {
    /// Connections are closed one by one, spread evenly over this period,
    /// so that their reconnections do not all land at once.
    pub over: Duration,
    /// Sent in `<see-other-host/>` to clients that cannot resume; `None`:
    /// `<system-shutdown/>`.
    pub see_other_host: Option<String>,
}

impl DrainPlan {
    /// When connection `id` goes, after the start of the drain: a spread
    /// from a hash of the id, so that neighbouring ids do not go together.
    pub(crate) fn offset(&self, id: u64) -> Duration {
        let spread = self.over.as_millis() as u64;
        if spread == 0 {
            return Duration::ZERO;
        }
        // splitmix64's finalizer: consecutive ids land all over the period
        // (a bare multiplication left 20 consecutive ids in its first half).
        let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Duration::from_millis(z % spread)
    }
}

impl std::fmt::Debug for C2s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2s")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl C2s {
    /// Builds the c2s service. `shutdown` flips to `true` when the server stops.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        domain: &str,
        config: C2sConfig,
        registration: RegistrationConfig,
        scram_iterations: u32,
        tls: Arc<rustls::ServerConfig>,
        sessions: Arc<dyn SessionService>,
        users: Arc<dyn UserStore>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<C2s> {
        let throttle = AuthThrottle::new(
            Duration::from_millis(config.auth_failure_delay_ms),
            Duration::from_millis(config.auth_failure_max_delay_ms),
        );
        Arc::new(C2s {
            domain: domain.to_owned(),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            config,
            tls: tokio_rustls::TlsAcceptor::from(tls),
            sessions,
            users,
            metrics,
            throttle,
            registration,
            registrations: Default::default(),
            scram_iterations,
            shutdown,
            drain: watch::Sender::new(None),
            open: Default::default(),
        })
    }

    /// Starts draining (a cluster member's SIGTERM): the listeners stop
    /// accepting, connections still negotiating end at once, and every
    /// established stream is closed at its moment of `plan.over`, after
    /// what was queued for it is written. A stream with resumable XEP-0198
    /// is first asked for an acknowledgement, then closed with
    /// `<system-shutdown/>` while its session stays on the session side,
    /// detached, for the client to resume on another cm; any other gets
    /// `<see-other-host/>` (if configured) or `<system-shutdown/>` and its
    /// session ends. Streams end by themselves as [`C2s::serve`] waits for
    /// them.
    pub fn drain(&self, plan: DrainPlan) {
        info!(over = ?plan.over, "draining client connections");
        self.drain.send_replace(Some(plan));
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Accepts connections on an already-bound listener until shutdown, then
    /// waits for every connection to close (each sends `<system-shutdown/>`).
    /// `direct_tls` selects XEP-0368 direct TLS instead of STARTTLS.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, direct_tls: bool) {
        let mut shutdown = self.shutdown.clone();
        let mut drain = self.drain.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow() || drain.borrow().is_some() {
                break;
            }
            let permit = tokio::select! {
                p = self.limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
                _ = drain.changed() => break,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
                _ = drain.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            tasks.spawn(async move {
                conn::run(this, tcp, peer, direct_tls).await;
                drop(permit);
            });
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
        }
        info!(addr = ?listener.local_addr().ok(), "listener stopped; closing connections");
        drop(listener);
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    /// Consecutive connection ids (as a cm hands them out) are spread over
    /// the whole drain period, not bunched.
    #[test]
    fn drain_offsets_spread_consecutive_ids() {
        let plan = DrainPlan {
            over: Duration::from_secs(4),
            see_other_host: None,
        };
        for start in [0u64, 100, 1000, 123_456] {
            let offs: Vec<u128> = (start..start + 20)
                .map(|id| plan.offset(id).as_millis())
                .collect();
            assert!(offs.iter().all(|o| *o < 4000), "{offs:?}");
            let early = offs.iter().filter(|o| **o < 2000).count();
            assert!((4..=16).contains(&early), "{start}: {offs:?}");
            assert!(offs.iter().any(|o| *o >= 3000), "{start}: {offs:?}");
        }
        let none = DrainPlan::default();
        assert_eq!(none.offset(7), Duration::ZERO);
    }
}
