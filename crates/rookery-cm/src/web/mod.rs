//! Web transports on one client-facing HTTP listener
//! (docs/decisions/0016-web-transports.md):
//!
//! - `/xmpp-websocket`: XMPP over WebSocket (RFC 7395), module [`ws`];
//! - `/http-bind`: BOSH (XEP-0124 1.11, XEP-0206 1.4), module [`bosh`];
//! - `/.well-known/host-meta` and `/.well-known/host-meta.json`: where to
//!   find both (XEP-0156 §2).
//!
//! Both transports drive the same c2s stream as TCP (`conn.rs`) over a
//! framed transport (`framed.rs`); the HTTPS listener counts as TLS for
//! stream negotiation. The plain HTTP listener is for a TLS-terminating
//! reverse proxy: its streams count as encrypted only with
//! `behind_tls_proxy`, otherwise `[c2s] require_tls` refuses them.

mod bosh;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{RwLock, mpsc, watch};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::C2s;

/// `[web]` section of the configuration: the HTTP listener of the web
/// transports.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Plain HTTP addresses (`ws://`, `http://`), for use behind a reverse
    /// proxy that terminates TLS. Empty by default.
    pub listen: Vec<SocketAddr>,
    /// HTTPS addresses (`wss://`, `https://`), with the certificate of the
    /// client listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// Streams on `listen` count as encrypted (a proxy did TLS in front):
    /// no STARTTLS, PLAIN offered. Off: `[c2s] require_tls` refuses them.
    pub behind_tls_proxy: bool,
    /// The base URL clients reach this listener at, advertised in
    /// host-meta (XEP-0156), e.g. `https://chat.example.org`; empty:
    /// `https://<domain>:<port of the first tls_listen>`.
    pub public_url: String,
    /// `Access-Control-Allow-Origin` of every answer (browsers).
    pub cors_allow_origin: String,
    /// BOSH: the longest a request is held, seconds (XEP-0124 §7.2 `wait`;
    /// a client asking for less gets what it asked).
    pub bosh_max_wait_secs: u64,
    /// BOSH: seconds without a pending request after which the session
    /// ends (XEP-0124 §10 `inactivity`).
    pub bosh_inactivity_secs: u64,
    /// BOSH: the shortest polling interval, seconds (XEP-0124 §12 `polling`).
    pub bosh_polling_secs: u64,
    /// BOSH sessions of this process at most.
    pub bosh_max_sessions: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: Vec::new(),
            tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5443))],
            behind_tls_proxy: false,
            public_url: String::new(),
            cors_allow_origin: "*".into(),
            bosh_max_wait_secs: 60,
            bosh_inactivity_secs: 60,
            bosh_polling_secs: 2,
            bosh_max_sessions: 10_000,
        }
    }
}

/// The web transports of one process.
pub struct Web {
    c2s: Arc<C2s>,
    config: WebConfig,
    /// The advertised base URL, without a trailing slash.
    public_url: String,
    bosh: bosh::Sessions,
    /// Held (shared) by every WebSocket and BOSH stream; taken exclusively
    /// once they are all gone.
    streams: Arc<RwLock<()>>,
    /// Routes of other features served on this listener (XEP-0363 slot
    /// URLs), with their own state, body handling and CORS.
    routes: Router,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// Which listener a request came through.
#[derive(Clone, Debug)]
struct Listener {
    web: Arc<Web>,
    /// HTTPS, or plain HTTP behind a TLS proxy (`behind_tls_proxy`).
    secure: bool,
}

/// The client's address, for the c2s stream (throttles, logs).
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsIncoming>> for Peer {
    fn connect_info(s: IncomingStream<'_, TlsIncoming>) -> Peer {
        Peer(*s.remote_addr())
    }
}

/// TLS connections, handshaken off the accept loop (a slow client does not
/// hold up the others).
struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor stopped: so does the server (graceful shutdown).
            None => std::future::pending().await,
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Web {
    /// The web transports over `c2s`. `public_url`: the base URL to
    /// advertise (the caller derives the default from the bound address).
    pub fn new(c2s: Arc<C2s>, config: WebConfig, public_url: &str) -> Arc<Web> {
        Web::with_routes(c2s, config, public_url, Router::new())
    }

    /// [`Web::new`], also serving `routes` (paths apart from the
    /// transports'; the transports' body limit does not apply to them).
    pub fn with_routes(
        c2s: Arc<C2s>,
        config: WebConfig,
        public_url: &str,
        routes: Router,
    ) -> Arc<Web> {
        let bosh = bosh::Sessions::new(&config, c2s.metrics.clone());
        Arc::new(Web {
            c2s,
            config,
            public_url: public_url.trim_end_matches('/').to_owned(),
            bosh,
            streams: Arc::new(RwLock::new(())),
            routes,
        })
    }

    /// Open BOSH sessions.
    pub fn bosh_sessions(&self) -> usize {
        self.bosh.len()
    }

    /// Serves an already-bound listener until shutdown (or a drain), then
    /// waits for its WebSocket and BOSH streams to end (each gets
    /// `<system-shutdown/>` from the c2s stream). `tls`: HTTPS.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        let secure = tls || self.config.behind_tls_proxy;
        let app = self.router(secure);
        let mut shutdown = self.c2s.shutdown.clone();
        let mut drain = self.c2s.drain.subscribe();
        let stop = async move {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = drain.wait_for(|p| p.is_some()) => {}
            }
        };
        let addr = listener.local_addr().ok();
        let r = if tls {
            let local = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "web listener has no address");
                    return;
                }
            };
            let (tx, rx) = mpsc::channel(64);
            let acceptor = tokio::spawn(accept_tls(
                self.c2s.clone(),
                http_acceptor(&self.c2s.tls),
                listener,
                tx,
                self.c2s.shutdown.clone(),
            ));
            let incoming = TlsIncoming { rx, local };
            let r = axum::serve(incoming, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await;
            acceptor.abort();
            r
        } else {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await
        };
        if let Err(e) = r {
            warn!(error = %e, "web listener failed");
        }
        info!(addr = ?addr, "web listener stopped; closing its streams");
        let _all_gone = self.streams.write().await;
    }

    fn router(self: &Arc<Self>, secure: bool) -> Router {
        let state = Listener {
            web: self.clone(),
            secure,
        };
        Router::new()
            .route("/xmpp-websocket", get(ws::upgrade))
            .route(
                "/http-bind",
                get(bosh::info).post(bosh::request).options(preflight),
            )
            .route(
                "/.well-known/host-meta",
                get(host_meta_xrd).options(preflight),
            )
            .route(
                "/.well-known/host-meta.json",
                get(host_meta_json).options(preflight),
            )
            // A BOSH <body/> is parsed as one element under the c2s limits
            // (`max_stanza_bytes` for the body and all its payloads).
            .layer(axum::extract::DefaultBodyLimit::max(
                self.c2s.config.max_stanza_bytes.saturating_add(1024),
            ))
            .with_state(state)
            .merge(self.routes.clone())
    }

    /// The CORS headers of every answer (browsers read BOSH answers and
    /// host-meta from pages of other origins).
    fn cors(&self, mut r: Response) -> Response {
        let h = r.headers_mut();
        if let Ok(origin) = HeaderValue::from_str(&self.config.cors_allow_origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    }

    /// `wss://…/xmpp-websocket` and `https://…/http-bind` from the base URL.
    fn endpoints(&self) -> (String, String) {
        let base = &self.public_url;
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.clone()
        };
        (format!("{ws}/xmpp-websocket"), format!("{base}/http-bind"))
    }

    /// A permit for one more stream, unless the process is full, stops or
    /// drains.
    fn admit(&self) -> Option<StreamPermit> {
        if *self.c2s.shutdown.borrow() || self.c2s.drain.borrow().is_some() {
            return None;
        }
        let conn = self.c2s.limit.clone().try_acquire_owned().ok()?;
        let live = self.streams.clone().try_read_owned().ok()?;
        Some(StreamPermit {
            _conn: conn,
            _live: live,
        })
    }
}

/// Held by a WebSocket or BOSH stream for its whole life.
#[derive(Debug)]
struct StreamPermit {
    _conn: tokio::sync::OwnedSemaphorePermit,
    _live: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// The c2s TLS configuration (same reloading certificate) with the ALPN of
/// HTTP/1.1: the c2s one offers only `xmpp-client` (XEP-0368), and rustls
/// refuses a client whose ALPN list shares nothing with the server's (RFC
/// 7301 §3.2) — every browser and HTTP library offers `h2`/`http/1.1`.
/// Clients that send no ALPN are served as before.
fn http_acceptor(c2s: &tokio_rustls::TlsAcceptor) -> tokio_rustls::TlsAcceptor {
    let mut config = (**c2s.config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Accepts TCP connections and hands them over once their TLS handshake is
/// done.
async fn accept_tls(
    c2s: Arc<C2s>,
    acceptor: tokio_rustls::TlsAcceptor,
    listener: TcpListener,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshake = Duration::from_secs(c2s.config.negotiation_timeout_secs.clamp(1, 30));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "web TLS handshake failed"),
                Err(_) => debug!(%peer, "web TLS handshake timed out"),
            }
        });
    }
}

async fn preflight(axum::extract::State(l): axum::extract::State<Listener>) -> Response {
    l.web.cors(StatusCode::NO_CONTENT.into_response())
}

/// XEP-0156 §2.1: the XRD document (RFC 6415) with both alternative
/// connection methods.
async fn host_meta_xrd(axum::extract::State(l): axum::extract::State<Listener>) -> Response {
    let (ws, bosh) = l.web.endpoints();
    let mut body = String::from(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
    );
    for (rel, href) in [
        ("urn:xmpp:alt-connections:xbosh", bosh),
        ("urn:xmpp:alt-connections:websocket", ws),
    ] {
        let mut esc = Vec::new();
        rookery_xml::escape_attr(&mut esc, &href);
        body.push_str(&format!(
            "  <Link rel='{rel}' href='{}'/>\n",
            String::from_utf8_lossy(&esc)
        ));
    }
    body.push_str("</XRD>\n");
    l.web.cors(
        (
            [(header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// XEP-0156 §2.1: the same links as JRD (RFC 6415 Appendix A).
async fn host_meta_json(axum::extract::State(l): axum::extract::State<Listener>) -> Response {
    let (ws, bosh) = l.web.endpoints();
    let body = serde_json::json!({
        "links": [
            { "rel": "urn:xmpp:alt-connections:xbosh", "href": bosh },
            { "rel": "urn:xmpp:alt-connections:websocket", "href": ws },
        ]
    });
    l.web.cors(
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}
