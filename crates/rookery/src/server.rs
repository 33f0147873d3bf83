//! Wires the roles of one process together: store, session service,
//! connection manager, HTTP endpoints.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rookery_cm::C2s;
use rookery_cm::tls::{CertSource, ReloadingCert};
use rookery_core::UserStore;
use rookery_core::metrics::Metrics;
use rookery_core::users::StoreError;
use rookery_s2s::S2s;
use rookery_scylla::ScyllaStore;
use rookery_session::{LocalSessions, Stores};
use rookery_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::{Config, StoreBackend};
use crate::telemetry::Telemetry;

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Bound STARTTLS client addresses.
    pub c2s_addrs: Vec<SocketAddr>,
    /// Bound direct TLS client addresses.
    pub direct_tls_addrs: Vec<SocketAddr>,
    /// Bound HTTP (metrics, health) addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// Bound plain HTTP web transport addresses (`[web] listen`).
    pub web_addrs: Vec<SocketAddr>,
    /// Bound HTTPS web transport addresses (`[web] tls_listen`).
    pub web_tls_addrs: Vec<SocketAddr>,
    /// Bound server-to-server (STARTTLS) addresses.
    pub s2s_addrs: Vec<SocketAddr>,
    /// Bound server-to-server direct TLS addresses (XEP-0368).
    pub s2s_direct_tls_addrs: Vec<SocketAddr>,
    /// The session service.
    pub sessions: Arc<LocalSessions>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: StoreHandle,
    telemetry: Telemetry,
}

impl Running {
    /// Closes every stream with `<system-shutdown/>` after flushing what is
    /// queued, and waits (at most `grace`) for the connections to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let tasks = &mut self.tasks;
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        self.tasks.abort_all();
        // Archive rows still queued for the group commit go to disk.
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "archive rows not written at shutdown");
        }
        // The spans of the last stanzas go to the collector.
        self.telemetry.shutdown().await;
    }
}

/// The store of a process, as `[store] backend` chose it.
#[derive(Clone, Debug)]
pub enum StoreHandle {
    /// The embedded SQLite store under `server.data_dir`.
    Sqlite(SqliteStore),
    /// A ScyllaDB cluster (`[store.scylla]`).
    Scylla(Arc<ScyllaStore>),
}

impl StoreHandle {
    /// Opens the configured store: the embedded one (created and migrated
    /// on open), or a connection to ScyllaDB, whose schema must already be
    /// in place (`rookery store migrate`).
    pub async fn open(config: &Config) -> anyhow::Result<StoreHandle> {
        match config.store.backend {
            StoreBackend::Sqlite => Ok(StoreHandle::Sqlite(open_store(config)?)),
            StoreBackend::Scylla => {
                let cfg = &config.store.scylla;
                let store = ScyllaStore::connect(cfg).await.with_context(|| {
                    format!(
                        "opening the ScyllaDB store (keyspace {} on {})",
                        cfg.keyspace,
                        cfg.nodes.join(", ")
                    )
                })?;
                info!(
                    backend = "scylla",
                    keyspace = %cfg.keyspace,
                    nodes = %cfg.nodes.join(","),
                    consistency = %cfg.consistency,
                    "store opened"
                );
                Ok(StoreHandle::Scylla(Arc::new(store)))
            }
        }
    }

    /// Every feature store, served by this store.
    pub fn stores(&self) -> Stores {
        match self {
            StoreHandle::Sqlite(store) => stores(store),
            StoreHandle::Scylla(store) => with_roster_cache(store.stores()),
        }
    }

    /// The store of persistent MUC rooms.
    pub fn rooms(&self) -> Arc<dyn rookery_muc::RoomStore> {
        match self {
            StoreHandle::Sqlite(store) => Arc::new(store.clone()),
            StoreHandle::Scylla(store) => store.clone(),
        }
    }

    /// Writes out what is queued: the SQLite archive's group commit. Every
    /// ScyllaDB write completes before it is acknowledged, so nothing to do.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            StoreHandle::Sqlite(store) => store.flush().await,
            StoreHandle::Scylla(_) => Ok(()),
        }
    }
}

/// Opens the embedded store under the data directory (whatever
/// `[store] backend` says).
pub fn open_store(config: &Config) -> anyhow::Result<SqliteStore> {
    let path = config.server.data_dir.join("rookery.db");
    SqliteStore::open(&path).with_context(|| format!("opening the store at {}", path.display()))
}

/// Rosters kept in memory (see `rookery_session::roster_cache`).
const ROSTER_CACHE: usize = 10_000;

/// Every feature store, all backed by the embedded store.
pub fn stores(store: &SqliteStore) -> Stores {
    with_roster_cache(Stores {
        users: Arc::new(store.clone()),
        roster: Arc::new(store.clone()),
        offline: Arc::new(store.clone()),
        blocklist: Arc::new(store.clone()),
        vcards: Arc::new(store.clone()),
        private: Arc::new(store.clone()),
        last_activity: Arc::new(store.clone()),
        archive: Arc::new(store.clone()),
        pubsub: Arc::new(store.clone()),
        push: Arc::new(store.clone()),
    })
}

/// Puts the roster cache in front of the roster store: presence broadcasts
/// read the sender's roster on every change.
fn with_roster_cache(stores: Stores) -> Stores {
    Stores {
        roster: Arc::new(rookery_session::roster_cache::CachedRosterStore::new(
            stores.roster,
            ROSTER_CACHE,
        )),
        ..stores
    }
}

/// Reads (or creates) the per-installation secret, used to keep SASL
/// answers for unknown users stable across restarts (no user enumeration).
pub(crate) fn server_secret(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join("secret");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(arr);
    }
    let secret: [u8; 32] = rand::random();
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(&secret)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, secret)?;
    Ok(secret)
}

/// Listen backlog: a login storm opens thousands of connections at once,
/// and tokio's default of 1,024 (128 after the kernel's old `somaxconn`)
/// refuses some of them; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub(crate) async fn bind_all(addrs: &[SocketAddr], what: &str) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = listen(*a).with_context(|| format!("binding {what} on {a}"))?;
        out.push(l);
    }
    Ok(out)
}

/// The TLS configuration of the client listeners: the configured
/// certificate, or a generated one kept under the data directory.
pub(crate) fn tls_config(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    Ok(tls_identity(config)?.0)
}

/// [`tls_config`], and the certificate it serves (also the s2s role's).
pub(crate) fn tls_identity(
    config: &Config,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<ReloadingCert>)> {
    let cert = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => CertSource::SelfSigned {
            dir: config.server.data_dir.join("tls"),
            domain: config.server.domain.clone(),
        },
    };
    let (tls, cert) = rookery_cm::tls::reloading_server_config(&cert).context("TLS certificate")?;
    if config.tls.reload_secs > 0 {
        cert.clone()
            .watch(Duration::from_secs(config.tls.reload_secs));
    }
    Ok((tls, cert))
}

/// The s2s role of a process: the streams, and the addresses it listens on.
pub(crate) struct S2sRole {
    pub s2s: Arc<S2s>,
    pub starttls: Vec<SocketAddr>,
    pub direct_tls: Vec<SocketAddr>,
}

/// The bytes that key the dialback keys: `[s2s] dialback_secret_file` (one
/// for all s2s nodes of a cluster) or the installation secret.
fn dialback_secret(config: &Config, installation: &[u8]) -> anyhow::Result<Vec<u8>> {
    let Some(path) = &config.s2s.dialback_secret_file else {
        return Ok(installation.to_vec());
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("[s2s] dialback_secret_file {}", path.display()))?;
    let secret = bytes.trim_ascii();
    anyhow::ensure!(
        secret.len() >= 16,
        "[s2s] dialback_secret_file {}: at least 16 bytes are needed, it has {}",
        path.display(),
        secret.len()
    );
    Ok(secret.to_vec())
}

/// Builds the s2s role when `[s2s] enabled`, binds its listeners and serves
/// them on `tasks`. What remote servers send goes to `router` (the session
/// service, or in a cluster the owners over gRPC); the caller hands the
/// returned role to whatever sends stanzas to other domains.
pub(crate) async fn serve_s2s(
    config: &Config,
    installation_secret: &[u8],
    identity: Arc<ReloadingCert>,
    router: Arc<dyn rookery_core::InboundRouter>,
    metrics: &Arc<Metrics>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<S2sRole>> {
    if !config.s2s.enabled {
        return Ok(None);
    }
    let s2s = S2s::new(
        vec![config.server.domain.clone()],
        config.s2s.clone(),
        identity,
        &dialback_secret(config, installation_secret)?,
        router,
        metrics.clone(),
        shutdown.clone(),
    )
    .context("s2s")?;
    let mut starttls = Vec::new();
    for l in bind_all(&config.s2s.listen, "s2s").await? {
        let addr = l.local_addr()?;
        info!(role = "s2s", %addr, transport = "starttls", "listening");
        starttls.push(addr);
        tasks.spawn(s2s.clone().serve(l, false));
    }
    let mut direct_tls = Vec::new();
    for l in bind_all(&config.s2s.direct_tls_listen, "s2s direct TLS").await? {
        let addr = l.local_addr()?;
        info!(role = "s2s", %addr, transport = "directtls", "listening");
        direct_tls.push(addr);
        tasks.spawn(s2s.clone().serve(l, true));
    }
    Ok(Some(S2sRole {
        s2s,
        starttls,
        direct_tls,
    }))
}

/// Binds the client listeners (STARTTLS, direct TLS) and serves them on
/// `tasks`; returns their addresses.
pub(crate) async fn serve_c2s(
    c2s: &Arc<C2s>,
    config: &Config,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let mut starttls = Vec::new();
    for l in bind_all(&config.c2s.listen, "c2s").await? {
        let addr = l.local_addr()?;
        info!(role = "c2s", %addr, transport = "starttls", "listening");
        starttls.push(addr);
        tasks.spawn(c2s.clone().serve(l, false));
    }
    let mut direct = Vec::new();
    for l in bind_all(&config.c2s.direct_tls_listen, "c2s direct TLS").await? {
        let addr = l.local_addr()?;
        info!(role = "c2s", %addr, transport = "directtls", "listening");
        direct.push(addr);
        tasks.spawn(c2s.clone().serve(l, true));
    }
    Ok((starttls, direct))
}

/// Binds the web transport listeners (WebSocket, BOSH, host-meta, and
/// `routes` of other features) and serves them on `tasks`; returns the
/// plain and the HTTPS addresses and the public URL (empty without a
/// listener).
pub(crate) async fn serve_web(
    c2s: &Arc<C2s>,
    config: &Config,
    routes: axum::Router,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<SocketAddr>, String)> {
    let plain = bind_all(&config.web.listen, "web").await?;
    let tls = bind_all(&config.web.tls_listen, "web TLS").await?;
    // XEP-0156: advertised as configured, or the domain with the port
    // actually bound.
    let public_url = if !config.web.public_url.is_empty() {
        config.web.public_url.clone()
    } else {
        let domain = &config.server.domain;
        match (tls.first(), plain.first()) {
            (Some(l), _) => match l.local_addr()?.port() {
                443 => format!("https://{domain}"),
                port => format!("https://{domain}:{port}"),
            },
            (None, Some(l)) => format!("http://{domain}:{}", l.local_addr()?.port()),
            (None, None) => return Ok((Vec::new(), Vec::new(), String::new())),
        }
    };
    let web = rookery_cm::Web::with_routes(c2s.clone(), config.web.clone(), &public_url, routes);
    let mut out = (Vec::new(), Vec::new(), public_url.clone());
    for (l, is_tls) in plain
        .into_iter()
        .map(|l| (l, false))
        .chain(tls.into_iter().map(|l| (l, true)))
    {
        let addr = l.local_addr()?;
        let transport = if is_tls { "https" } else { "http" };
        info!(role = "web", %addr, transport, %public_url, "listening");
        if is_tls { &mut out.1 } else { &mut out.0 }.push(addr);
        tasks.spawn(web.clone().serve(l, is_tls));
    }
    Ok(out)
}

/// Binds the operations endpoints and serves them on `tasks`; returns
/// their addresses. Started last: its "listening" line says the process is up.
pub(crate) async fn serve_http(
    config: &Config,
    metrics: &Arc<Metrics>,
    ready: &Arc<std::sync::atomic::AtomicBool>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for l in bind_all(&config.http.listen, "http").await? {
        let addr = l.local_addr()?;
        info!(role = "http", %addr, "listening");
        out.push(addr);
        tasks.spawn(crate::http::serve(
            l,
            metrics.clone(),
            ready.clone(),
            shutdown.clone(),
        ));
    }
    Ok(out)
}

/// Starts the XEP-0045 service on its domain, when `[muc] enabled`: its
/// rooms live in this process (docs/decisions/0018-muc.md).
pub(crate) fn start_muc(config: &Config, store: &StoreHandle, sessions: &Arc<LocalSessions>) {
    if !config.muc.enabled {
        return;
    }
    let weak: std::sync::Weak<LocalSessions> = Arc::downgrade(sessions);
    let router: std::sync::Weak<dyn rookery_core::ComponentRouter> = weak;
    // Room archives share the store (and the page cap) of user archives.
    let archive = rookery_muc::RoomArchive {
        store: sessions.stores().archive.clone(),
        max_page: config.session.mam_max_page,
    };
    let muc = rookery_muc::Muc::start(
        &config.muc.domain,
        config.muc.clone(),
        store.rooms(),
        archive,
        router,
    );
    info!(domain = %config.muc.domain, "MUC service");
    sessions.add_component(muc);
}

/// Starts the XEP-0060 service on its domain, when `[pubsub] enabled`
/// (docs/decisions/0019-pubsub-pep.md), and gives PEP its limits.
pub(crate) fn start_pubsub(config: &Config, store: &StoreHandle, sessions: &Arc<LocalSessions>) {
    sessions.set_pubsub_limits(config.pubsub.limits());
    if !config.pubsub.enabled {
        return;
    }
    let weak: std::sync::Weak<LocalSessions> = Arc::downgrade(sessions);
    let router: std::sync::Weak<dyn rookery_core::ComponentRouter> = weak;
    let pubsub = rookery_pubsub::Pubsub::start(
        &config.pubsub.domain,
        &config.server.domain,
        &config.pubsub,
        store.stores().pubsub,
        router,
    );
    info!(domain = %config.pubsub.domain, "pubsub service");
    sessions.add_component(pubsub);
}

/// Starts every role of a single-node server.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let domain = config.server.domain.clone();
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let secret = server_secret(&data_dir)?;
    rookery_sasl::configure_unknown_users(secret, config.server.scram_iterations);

    let telemetry = Telemetry::start(
        &config.telemetry,
        &crate::cluster::node_name(&config),
        "single",
    )?;
    let store = StoreHandle::open(&config).await?;
    let stores = store.stores();
    let users: Arc<dyn UserStore> = stores.users.clone();
    let metrics = Metrics::new();
    let sessions = LocalSessions::new(
        &domain,
        config.session.clone(),
        config.modules.clone(),
        config.server.scram_iterations,
        stores,
        metrics.clone(),
    );
    start_muc(&config, &store, &sessions);
    start_pubsub(&config, &store, &sessions);
    let (tls, identity) = tls_identity(&config)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let c2s = C2s::new(
        &domain,
        config.c2s.clone(),
        config.registration.clone(),
        config.server.scram_iterations,
        tls,
        sessions.clone(),
        users,
        metrics.clone(),
        shutdown_rx.clone(),
    );

    let mut tasks = JoinSet::new();
    let mut running = Running {
        c2s_addrs: Vec::new(),
        direct_tls_addrs: Vec::new(),
        http_addrs: Vec::new(),
        web_addrs: Vec::new(),
        web_tls_addrs: Vec::new(),
        s2s_addrs: Vec::new(),
        s2s_direct_tls_addrs: Vec::new(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown_tx,
        tasks: JoinSet::new(),
        store,
        telemetry,
    };
    (running.c2s_addrs, running.direct_tls_addrs) = serve_c2s(&c2s, &config, &mut tasks).await?;
    let upload = crate::upload::http(&config, &secret, &shutdown_rx, &mut tasks)?;
    let routes = upload
        .as_ref()
        .map(|(h, _)| h.router())
        .unwrap_or_else(axum::Router::new);
    let web_url;
    (running.web_addrs, running.web_tls_addrs, web_url) =
        serve_web(&c2s, &config, routes, &mut tasks).await?;
    if let Some((_, signer)) = upload {
        crate::upload::start_service(&config, &web_url, signer, &sessions);
    }
    if let Some(role) = serve_s2s(
        &config,
        &secret,
        identity,
        sessions.clone(),
        &metrics,
        &shutdown_rx,
        &mut tasks,
    )
    .await?
    {
        sessions.set_remote(role.s2s);
        (running.s2s_addrs, running.s2s_direct_tls_addrs) = (role.starttls, role.direct_tls);
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    running.http_addrs = serve_http(&config, &metrics, &ready, &shutdown_rx, &mut tasks).await?;
    info!(domain = %domain, data_dir = %data_dir.display(), store = ?config.store.backend, "rookery started");
    running.tasks = tasks;
    Ok(running)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dialback_secret_comes_from_the_file_or_the_installation() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        assert_eq!(
            dialback_secret(&config, b"installation").unwrap(),
            b"installation"
        );

        let file = dir.path().join("dialback");
        std::fs::write(&file, "  0123456789abcdef-shared\n").unwrap();
        config.s2s.dialback_secret_file = Some(file.clone());
        assert_eq!(
            dialback_secret(&config, b"installation").unwrap(),
            b"0123456789abcdef-shared"
        );

        std::fs::write(&file, "short\n").unwrap();
        let e = dialback_secret(&config, b"installation").unwrap_err();
        assert!(e.to_string().contains("at least 16 bytes"), "{e}");

        config.s2s.dialback_secret_file = Some(dir.path().join("missing"));
        let e = dialback_secret(&config, b"installation").unwrap_err();
        assert!(e.to_string().contains("dialback_secret_file"), "{e}");
    }
}
