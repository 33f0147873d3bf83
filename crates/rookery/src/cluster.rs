//! Cluster mode: the roles of one process as members of a cluster, talking
//! to the other members over gRPC and finding them in Redis
//! (docs/decisions/0010-cluster.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::config::{Config, DrainConfig};
use crate::server::{
    StoreHandle, listen, serve_c2s, serve_http, serve_s2s, serve_web, server_secret, tls_config,
    tls_identity,
};
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
    /// Bound plain HTTP web transport addresses (cm role).
    pub web_addrs: Vec<SocketAddr>,
    /// Bound HTTPS web transport addresses (cm role).
    pub web_tls_addrs: Vec<SocketAddr>,
    /// Bound STARTTLS server-to-server addresses (s2s role).
    pub s2s_addrs: Vec<SocketAddr>,
    /// Bound direct TLS server-to-server addresses (s2s role).
    pub s2s_direct_tls_addrs: Vec<SocketAddr>,
    /// The sessions this node owns (session role).
    pub sessions: Option<Arc<LocalSessions>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    membership: Arc<Membership>,
    /// `[cluster.kubernetes]`: the EndpointSlice watch, kept alive with the
    /// node (it stops when dropped).
    #[cfg(feature = "kubernetes")]
    _kubernetes: Option<rookery_cluster::kubernetes::KubernetesDiscovery>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: StoreHandle,
    /// The client side (cm role).
    c2s: Option<Arc<C2s>>,
    /// The client listeners and their connections (cm role).
    c2s_tasks: JoinSet<()>,
    /// The session service (session role).
    session_node: Option<Arc<SessionNode>>,
    /// What `/ready` answers.
    ready: Arc<AtomicBool>,
    drain: DrainConfig,
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

/// How long a start waits for the first list of EndpointSlices.
#[cfg(feature = "kubernetes")]
const KUBERNETES_SYNC: Duration = Duration::from_secs(30);

#[cfg(feature = "kubernetes")]
type Discovery = Option<rookery_cluster::kubernetes::KubernetesDiscovery>;
#[cfg(not(feature = "kubernetes"))]
type Discovery = ();

/// Joins through Redis. With `[cluster.kubernetes] enabled`, first starts the
/// EndpointSlice watch and waits for its first list, then joins with views
/// that keep only ready pods (decision 0014).
async fn join(
    c: &crate::config::ClusterConfig,
    node: &str,
    roles: &[Role],
    advertise: &str,
) -> anyhow::Result<(Arc<Membership>, Discovery)> {
    let context = || {
        format!(
            "joining the cluster through Redis at {}",
            c.redis.urls.join(", ")
        )
    };
    if !c.kubernetes.enabled {
        let m = Membership::join(&c.redis, node, roles, advertise, c.shards)
            .await
            .with_context(context)?;
        return Ok((m, Discovery::default()));
    }
    #[cfg(not(feature = "kubernetes"))]
    anyhow::bail!(
        "cluster.kubernetes.enabled: this rookery was built without the `kubernetes` feature"
    );
    #[cfg(feature = "kubernetes")]
    {
        use rookery_cluster::kubernetes::KubernetesDiscovery;
        let k = &c.kubernetes;
        if node != default_node_name() {
            tracing::warn!(
                node,
                "cluster.node differs from the host name: with Kubernetes discovery the node name must be the pod name, or this node never enters the view"
            );
        }
        let discovery = KubernetesDiscovery::start(k).await?;
        anyhow::ensure!(
            discovery.wait_synced(KUBERNETES_SYNC).await,
            "the Kubernetes API did not list the EndpointSlices of {:?} and {:?} in namespace {:?} within {} s (the service account needs get, list and watch on endpointslices.discovery.k8s.io)",
            k.session_service,
            k.cm_service,
            discovery.namespace(),
            KUBERNETES_SYNC.as_secs()
        );
        info!(
            namespace = discovery.namespace(),
            "membership filtered by Kubernetes readiness"
        );
        let m = Membership::join_with_readiness(
            &c.redis,
            node,
            roles,
            advertise,
            c.shards,
            discovery.ready(),
        )
        .await
        .with_context(context)?;
        Ok((m, Some(discovery)))
    }
}

/// Keeps `rookery_cluster_members{role}` equal to the live members of each
/// role in this node's view.
async fn count_members(
    mut views: watch::Receiver<Arc<rookery_cluster::View>>,
    metrics: Arc<Metrics>,
) {
    loop {
        let counts = {
            let view = views.borrow_and_update();
            Role::ALL.map(|role| {
                let n = view
                    .members
                    .iter()
                    .filter(|m| m.roles.contains(&role))
                    .count();
                (role, n)
            })
        };
        for (role, n) in counts {
            metrics
                .cluster_members
                .get_or_create(&rookery_core::metrics::RoleLabel { role: role.name() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if views.changed().await.is_err() {
            return;
        }
    }
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
    let role_names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    let telemetry = Telemetry::start(&config.telemetry, &node, &role_names.join(","))?;
    let (membership, discovery) = join(c, &node, roles, &advertise).await?;
    #[cfg(not(feature = "kubernetes"))]
    let () = discovery;
    let member = membership.me().clone();
    info!(node = %member.node, epoch = member.epoch, grpc = %advertise, ?roles, "joined the cluster");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(count_members(membership.watch(), metrics.clone()));
    let mut out = ClusterNode {
        member,
        grpc_addr,
        c2s_addrs: Vec::new(),
        direct_tls_addrs: Vec::new(),
        http_addrs: Vec::new(),
        web_addrs: Vec::new(),
        web_tls_addrs: Vec::new(),
        s2s_addrs: Vec::new(),
        s2s_direct_tls_addrs: Vec::new(),
        sessions: None,
        metrics: metrics.clone(),
        membership: membership.clone(),
        #[cfg(feature = "kubernetes")]
        _kubernetes: discovery,
        shutdown: shutdown_tx,
        tasks: JoinSet::new(),
        store,
        c2s: None,
        c2s_tasks: JoinSet::new(),
        session_node: None,
        ready: Arc::new(AtomicBool::new(true)),
        drain: config.drain.clone(),
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
        // The services on domains of their own run on every session node;
        // each stanza is served by the node their placement names: a MUC
        // room by the owner of its shard, pubsub and upload slots by the
        // owner of their domain's shard
        // (docs/decisions/0023-components-in-a-cluster.md).
        crate::server::start_muc(&config, &out.store, &sessions);
        crate::server::start_pubsub(&config, &out.store, &sessions);
        if config.upload.enabled {
            if config.upload.secret.is_empty() {
                tracing::warn!(
                    "[upload] secret is not set: slot URLs signed by this session node fail on \
                     connection managers with another data_dir"
                );
            }
            let signer = config.upload.signer(&server_secret(&data_dir)?);
            crate::upload::start_service(&config, "", signer, &sessions);
        }
        // Stanzas for other domains go to the s2s node of their domain.
        sessions.set_remote(rookery_rpc::S2sClient::new(
            membership.clone(),
            rpc,
            metrics.clone(),
            sessions.clone(),
        ));
        let node = SessionNode::new(sessions.clone(), membership.clone(), rpc, metrics.clone());
        out.sessions = Some(sessions);
        out.session_node = Some(node.clone());
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
    // The s2s role: streams with remote servers; what they send goes to the
    // recipient's owner (`Session.Forward`), what session nodes send comes
    // in through `Federation.Send`.
    let federation_service = if roles.contains(&Role::S2s) && config.s2s.enabled {
        if config.s2s.dialback_secret_file.is_none() {
            tracing::warn!(
                "[s2s] dialback_secret_file is not set: this node keys dialback with its own \
                 data_dir secret, which fails whenever more than one s2s node runs"
            );
        }
        let inbound = rookery_rpc::RemoteInbound::new(
            membership.clone(),
            rpc,
            metrics.clone(),
            config.served_domains(),
        );
        let (_, identity) = tls_identity(&config)?;
        let role = serve_s2s(
            &config,
            &server_secret(&data_dir)?,
            identity,
            inbound.clone(),
            &metrics,
            &shutdown_rx,
            &mut tasks,
        )
        .await?
        .context("the s2s role")?;
        inbound.set_answer(role.s2s.clone());
        out.s2s_addrs = role.starttls;
        out.s2s_direct_tls_addrs = role.direct_tls;
        Some(rookery_rpc::FederationService::server(
            membership.clone(),
            role.s2s,
        ))
    } else {
        None
    };
    let mut grpc_shutdown = shutdown_rx.clone();
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_optional_service(session_service)
        .add_optional_service(cm_service)
        .add_optional_service(federation_service);
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
        (out.c2s_addrs, out.direct_tls_addrs) =
            serve_c2s(&c2s, &config, &mut out.c2s_tasks).await?;
        // XEP-0363 slot URLs: checked by their signature, so any cm takes
        // a PUT (docs/decisions/0020-http-upload.md).
        let upload = crate::upload::http(
            &config,
            &server_secret(&data_dir)?,
            &shutdown_rx,
            &mut tasks,
        )?;
        let routes = upload
            .map(|(h, _)| h.router())
            .unwrap_or_else(axum::Router::new);
        (out.web_addrs, out.web_tls_addrs, _) =
            serve_web(&c2s, &config, routes, &mut out.c2s_tasks).await?;
        out.c2s = Some(c2s);
    }
    out.http_addrs = serve_http(&config, &metrics, &out.ready, &shutdown_rx, &mut tasks).await?;
    out.tasks = tasks;
    Ok(out)
}

impl ClusterNode {
    /// Leaves the cluster, closes every stream with `<system-shutdown/>`
    /// and waits (at most `grace`) for the connections to finish.
    pub async fn shutdown(self, grace: Duration) {
        self.membership.leave().await;
        if let Some(s) = &self.sessions {
            s.shutdown();
        }
        let _ = self.shutdown.send(true);
        self.stop(grace).await;
    }

    /// Graceful exit without losing anyone (SIGTERM; `[drain]`,
    /// docs/decisions/0015-draining.md): `/ready` turns 503; a cm stops
    /// accepting and moves its clients away over `grace_secs` (resumable
    /// sessions stay, detached, for the clients to resume on another cm);
    /// a session node then hands its shards over to the others, XEP-0198
    /// queues included, and leaves; then the process stops.
    pub async fn drain(mut self) {
        self.ready.store(false, Ordering::Release);
        let grace = Duration::from_secs(self.drain.grace_secs);
        if let Some(c2s) = self.c2s.take() {
            let before = c2s.connections();
            c2s.drain(rookery_cm::DrainPlan {
                // The last ones still have time to be written and acked.
                over: grace.mul_f64(0.8),
                see_other_host: (!self.drain.see_other_host.is_empty())
                    .then(|| self.drain.see_other_host.clone()),
            });
            let tasks = &mut self.c2s_tasks;
            let done = tokio::time::timeout(grace + Duration::from_secs(5), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            info!(
                connections = before,
                left = c2s.connections(),
                complete = done.is_ok(),
                "client connections moved away"
            );
        }
        match &self.session_node {
            Some(node) => node.drain(grace).await,
            None => self.membership.leave().await,
        }
        let _ = self.shutdown.send(true);
        self.stop(Duration::from_secs(2)).await;
    }

    /// Waits for the tasks (at most `grace`), then writes what the store
    /// still holds.
    async fn stop(mut self, grace: Duration) {
        let tasks = &mut self.tasks;
        let c2s_tasks = &mut self.c2s_tasks;
        let _ = tokio::time::timeout(grace, async {
            while tasks.join_next().await.is_some() {}
            while c2s_tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        self.c2s_tasks.abort_all();
        if let Err(e) = self.store.flush().await {
            tracing::warn!(error = %e, "archive rows not written at shutdown");
        }
        // The spans of the last stanzas go to the collector.
        self.telemetry.shutdown().await;
    }
}
