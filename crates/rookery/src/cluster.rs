//! Cluster mode: the roles of one process as members of a cluster, talking
//! to the other members over gRPC and finding them in Redis
//! (docs/decisions/0010-cluster.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rookery_cluster::{Membership, Role};
use rookery_cm::C2s;
use rookery_core::metrics::Metrics;
use rookery_core::{SessionService, UserStore};
use rookery_rpc::{RemoteSessions, RpcConfig, SessionNode};
use rookery_session::LocalSessions;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::Config;
use crate::server::{StoreHandle, listen, serve_c2s, serve_http, server_secret, tls_config};
use crate::telemetry::Telemetry;

/// A running cluster member.
#[derive(Debug)]
pub struct ClusterNode {
    /// This member as the others see it.
    pub member: rookery_cluster::Member,
    /// Bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// Bound STARTTLS client addresses (cm role).
    pub c2s_addrs: Vec<SocketAddr>,
    /// Bound direct TLS client addresses (cm role).
    pub direct_tls_addrs: Vec<SocketAddr>,
    /// Bound HTTP (metrics, health) addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// The sessions this node owns (session role).
    pub sessions: Option<Arc<LocalSessions>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    membership: Arc<Membership>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: StoreHandle,
    telemetry: Telemetry,
}

/// This node's name: `cluster.node`, or else the host name.
pub(crate) fn node_name(config: &Config) -> String {
    if config.cluster.node.is_empty() {
        default_node_name()
    } else {
        config.cluster.node.clone()
    }
}

/// The node name when none is configured: the host name.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rookery".to_owned())
}

/// Starts `roles` of this process as a cluster member.
pub async fn start(config: Config, roles: &[Role]) -> anyhow::Result<ClusterNode> {
    anyhow::ensure!(!roles.is_empty(), "no role to run");
    let c = &config.cluster;
    let domain = config.server.domain.clone();
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = StoreHandle::open(&config).await?;
    let stores = store.stores();
    let metrics = Metrics::new();
    let rpc = RpcConfig {
        timeout: Duration::from_millis(c.rpc_timeout_ms),
        retry_for: Duration::from_millis(c.retry_for_ms),
    };

    let grpc_listener =
        listen(c.grpc_listen).with_context(|| format!("binding gRPC on {}", c.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let advertise = if c.grpc_advertise.is_empty() {
        grpc_addr.to_string()
    } else {
        c.grpc_advertise.clone()
    };
    let node = node_name(&config);
    let role_names: Vec<&str> = roles
        .iter()
        .map(|r| match r {
            Role::Cm => "cm",
            Role::Session => "session",
        })
        .collect();
    let telemetry = Telemetry::start(&config.telemetry, &node, &role_names.join(","))?;
    let membership = Membership::join(&c.redis, &node, roles, &advertise, c.shards)
        .await
        .with_context(|| {
            format!(
                "joining the cluster through Redis at {}",
                c.redis.urls.join(", ")
            )
        })?;
    let member = membership.me().clone();
    info!(node = %member.node, epoch = member.epoch, grpc = %advertise, ?roles, "joined the cluster");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut out = ClusterNode {
        member,
        grpc_addr,
        c2s_addrs: Vec::new(),
        direct_tls_addrs: Vec::new(),
        http_addrs: Vec::new(),
        sessions: None,
        metrics: metrics.clone(),
        membership: membership.clone(),
        shutdown: shutdown_tx,
        tasks: JoinSet::new(),
        store,
        telemetry,
    };

    let session_service = if roles.contains(&Role::Session) {
        let sessions = LocalSessions::new(
            &domain,
            config.session.clone(),
            config.modules.clone(),
            config.server.scram_iterations,
            stores.clone(),
            metrics.clone(),
        );
        let node = SessionNode::new(sessions.clone(), membership.clone(), rpc, metrics.clone());
        out.sessions = Some(sessions);
        Some(node.service())
    } else {
        None
    };
    let (cm_service, remote) = if roles.contains(&Role::Cm) {
        let remote = RemoteSessions::new(membership.clone(), rpc, metrics.clone());
        (Some(remote.cm_service()), Some(remote))
    } else {
        (None, None)
    };
    let mut grpc_shutdown = shutdown_rx.clone();
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_optional_service(session_service)
        .add_optional_service(cm_service);
    tasks.spawn(async move {
        let stop = async move {
            let _ = grpc_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = server.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    info!(role = "grpc", addr = %grpc_addr, "listening");

    if let Some(remote) = remote {
        rookery_sasl::configure_unknown_users(
            server_secret(&data_dir)?,
            config.server.scram_iterations,
        );
        let users: Arc<dyn UserStore> = stores.users.clone();
        let sessions: Arc<dyn SessionService> = remote;
        let c2s = C2s::new(
            &domain,
            config.c2s.clone(),
            config.registration.clone(),
            config.server.scram_iterations,
            tls_config(&config)?,
            sessions,
            users,
            metrics.clone(),
            shutdown_rx.clone(),
        );
        (out.c2s_addrs, out.direct_tls_addrs) = serve_c2s(&c2s, &config, &mut tasks).await?;
    }
    out.http_addrs = serve_http(&config, &metrics, &shutdown_rx, &mut tasks).await?;
    out.tasks = tasks;
    Ok(out)
}

impl ClusterNode {
    /// Leaves the cluster, closes every stream with `<system-shutdown/>`
    /// and waits (at most `grace`) for the connections to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        self.membership.leave().await;
        if let Some(s) = &self.sessions {
            s.shutdown();
        }
        let _ = self.shutdown.send(true);
        let tasks = &mut self.tasks;
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        self.tasks.abort_all();
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "archive rows not written at shutdown");
        }
        // The spans of the last stanzas go to the collector.
        self.telemetry.shutdown().await;
    }
}
