//! The session node's side: the session service over a [`LocalSessions`],
//! links to the clients held by cms, and forwarding to other owners.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rookery_cluster::{Member, Membership, RouteEntry, Routes, View, shard_of};
use rookery_core::metrics::Metrics;
use rookery_core::roles::SmParams;
use rookery_core::{
    BindRequest, ClientLink, DeliverError, Jid, SessionService, StanzaError, StreamError,
};
use rookery_proto::cm::v1 as cmpb;
use rookery_proto::cm::v1::connection_manager_client::ConnectionManagerClient;
use rookery_proto::session::v1 as pb;
use rookery_proto::session::v1::session_server::{Session, SessionServer};
use rookery_session::LocalSessions;
use rookery_session::peers::{Forward, ForwardKind, Peers, ResourceState};
use rookery_xml::Element;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::{Channels, RpcConfig, conv, trace};
use rookery_core::telemetry::{self, Hop, KeyValue, names};

/// Deliveries queued for one cm before its clients are told it is full.
const CM_QUEUE: usize = 100_000;
/// Deliveries sent in one call.
const CM_BATCH: usize = 512;

/// A session node: serves the session service for the shards it owns.
#[derive(Debug)]
pub struct SessionNode {
    sessions: Arc<LocalSessions>,
    membership: Arc<Membership>,
    channels: Channels,
    config: RpcConfig,
    metrics: Arc<Metrics>,
    /// Senders to the cms holding our clients, one per cm incarnation.
    senders: Mutex<HashMap<(String, u64), Arc<CmSender>>>,
    /// Where each bound connection is, by session-side connection id.
    conns: Mutex<HashMap<u64, ConnInfo>>,
    /// Shards this node owns and has rebuilt: it serves their accounts.
    ready: RwLock<HashSet<u16>>,
    routes: Routes,
    /// Route writes to Redis, in the order of the changes.
    writes: mpsc::UnboundedSender<RouteOp>,
    /// One per virtual shard: held (read) by every request for an account
    /// of the shard while it runs; taken (write) when the shard is handed
    /// over, so that what runs for it finishes first.
    gates: Box<[tokio::sync::RwLock<()>]>,
    /// Set when the node drains: every request is refused.
    draining: std::sync::atomic::AtomicBool,
    me: Weak<SessionNode>,
}

/// A client connection as the session node knows it.
#[derive(Clone, Debug)]
struct ConnInfo {
    cm: String,
    cm_epoch: u64,
    cm_conn: u64,
}

/// One write to the routes in Redis.
#[derive(Debug)]
enum RouteOp {
    Put(String, RouteEntry),
    Remove(String, u64),
    Flush(oneshot::Sender<()>),
}

/// A link to a client whose cm is gone (for a session ended at once).
#[derive(Debug)]
struct Gone;

impl ClientLink for Gone {
    fn deliver(&self, _: Arc<Element>) -> Result<(), DeliverError> {
        Err(DeliverError::Closed)
    }
    fn close(&self, _: StreamError) {}
}

impl SessionNode {
    /// A session node over `sessions`; also makes it the sessions' peers.
    pub fn new(
        sessions: Arc<LocalSessions>,
        membership: Arc<Membership>,
        config: RpcConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<SessionNode> {
        let (writes, ops) = mpsc::unbounded_channel();
        let gates = (0..membership.shards())
            .map(|_| tokio::sync::RwLock::new(()))
            .collect();
        let node = Arc::new_cyclic(|me| SessionNode {
            sessions: sessions.clone(),
            routes: Routes::new(&membership),
            membership,
            channels: Channels::new(config.timeout),
            config,
            metrics,
            senders: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            ready: RwLock::new(HashSet::new()),
            writes,
            gates,
            draining: Default::default(),
            me: me.clone(),
        });
        sessions.set_peers(node.clone());
        tokio::spawn(run_writer(Arc::downgrade(&node), ops));
        tokio::spawn(watch_views(Arc::downgrade(&node)));
        node
    }

    /// Returns once every route write queued so far reached Redis (or
    /// failed), at most the call deadline.
    async fn flush_routes(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(RouteOp::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(self.config.timeout, rx).await;
        }
    }

    /// Returns once everything queued for the cms so far was taken by them
    /// (or their deadline passed): what this node acknowledges has left it.
    async fn flush_deliveries(&self) {
        let senders: Vec<Arc<CmSender>> = self
            .senders
            .lock()
            .map(|m| m.values().filter(|s| !s.is_dead()).cloned().collect())
            .unwrap_or_default();
        for s in senders {
            let target = s.enqueued.load(Ordering::Acquire);
            let mut acked = s.acked.subscribe();
            let _ = tokio::time::timeout(
                self.config.timeout,
                acked.wait_for(|a| *a >= target || s.is_dead()),
            )
            .await;
        }
    }

    fn remember_conn(&self, key: u64, cm: &pb::Caller, cm_conn: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.insert(
                key,
                ConnInfo {
                    cm: cm.node.clone(),
                    cm_epoch: cm.epoch,
                    cm_conn,
                },
            );
        }
    }

    fn forget_conn(&self, key: u64) -> Option<ConnInfo> {
        self.conns.lock().ok()?.remove(&key)
    }

    /// Reacts to a new view of the membership: sessions on cms that are
    /// gone end (or wait for resumption), shards that moved away are
    /// forgotten, and shards that moved here are rebuilt from Redis before
    /// this node serves them.
    async fn on_view(&self, view: &View) {
        // Clients of cms that are gone.
        let lost: Vec<(u64, ConnInfo)> = self
            .conns
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, i)| !view.is_live(&i.cm, i.cm_epoch))
                    .map(|(k, i)| (*k, i.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if !lost.is_empty() {
            let jids = self.jids_of(lost.iter().map(|(k, _)| *k).collect());
            for (jid, key) in jids {
                debug!(%jid, "its cm is gone");
                self.sessions.connection_lost(&jid, key).await;
            }
        }
        if self.membership.fenced() {
            return;
        }
        let me = self.membership.me();
        let mine: HashSet<u16> = if view.is_live(&me.node, me.epoch) {
            view.owned_shards(&me.node).into_iter().collect()
        } else {
            HashSet::new()
        };
        let ready: HashSet<u16> = self.ready.read().map(|r| r.clone()).unwrap_or_default();
        let lost: HashSet<u16> = ready.difference(&mine).copied().collect();
        let gained: Vec<u16> = mine.difference(&ready).copied().collect();
        if !lost.is_empty() {
            self.hand_over(&lost, view.shards).await;
            for bare in self.sessions.bound_accounts() {
                if lost.contains(&shard_of(bare.as_str(), view.shards)) {
                    self.sessions.forget(&bare);
                }
            }
        }
        let mut restored = 0;
        if !gained.is_empty() {
            self.flush_routes().await;
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in gained.chunks(gained.len().div_ceil(16).max(1)) {
                let (chunk, me) = (chunk.to_vec(), self.me.clone());
                let view = view.clone();
                tasks.spawn(async move {
                    let mut restored = 0;
                    for shard in chunk {
                        let Some(n) = me.upgrade() else {
                            return restored;
                        };
                        restored += n.rebuild(shard, &view).await;
                    }
                    restored
                });
            }
            while let Some(r) = tasks.join_next().await {
                restored += r.unwrap_or(0);
            }
        }
        self.metrics
            .shard_handovers
            .inc_by((lost.len() + gained.len()) as u64);
        self.metrics
            .shards_owned
            .set(self.ready.read().map(|r| r.len()).unwrap_or(0) as i64);
        // Logged once the metrics show it.
        if !lost.is_empty() {
            info!(moved_away = lost.len(), "shards handed over");
        }
        if !gained.is_empty() {
            info!(
                taken_over = gained.len(),
                sessions = restored,
                "shards rebuilt"
            );
        }
    }

    /// Gives `shards` up gracefully, each on its own so that one waiting
    /// for its requests does not hold the others: once the requests
    /// running for the shard's accounts have finished, stops serving it,
    /// writes its sessions' state to Redis with their XEP-0198 queues (so
    /// the next owner replays exactly what the clients have not
    /// acknowledged), and releases the claim, so that the next owner takes
    /// it at once.
    async fn hand_over(&self, shards: &HashSet<u16>, total: u16) {
        // Components (MUC rooms) give up what lives in those shards first,
        // while this node is still a member that may route what that sends.
        self.release_components(Some((shards.clone(), total))).await;
        let mut accounts: HashMap<u16, Vec<Jid>> = HashMap::new();
        for bare in self.sessions.bound_accounts() {
            let shard = shard_of(bare.as_str(), total);
            if shards.contains(&shard) {
                accounts.entry(shard).or_default().push(bare);
            }
        }
        let me = self.membership.me().clone();
        let mut one = |shard: u16| {
            let accounts = accounts.remove(&shard).unwrap_or_default();
            let me = &me;
            async move {
                // Bounded: a request stuck on a peer must not hold the shard.
                let gate = self.gates.get(usize::from(shard));
                let _held = match gate {
                    Some(g) => tokio::time::timeout(self.config.timeout, g.write())
                        .await
                        .ok(),
                    None => None,
                };
                if let Ok(mut r) = self.ready.write() {
                    r.remove(&shard);
                }
                drop(_held);
                let n = self.sessions.hand_over(&accounts);
                self.flush_routes().await;
                match self.routes.release_shard(shard, &me.node, me.epoch).await {
                    Ok(released) => (n, usize::from(released)),
                    Err(e) => {
                        // The next owner claims it after a wait instead.
                        self.metrics.redis_errors.inc();
                        warn!(shard, error = %e, "shard claim not released");
                        (n, 0)
                    }
                }
            }
        };
        let jobs: Vec<_> = shards.iter().map(|s| one(*s)).collect();
        let mut sessions = 0;
        let mut released = 0;
        for (n, r) in join_all(jobs).await {
            sessions += n;
            released += r;
        }
        self.flush_deliveries().await;
        // What was made in those shards meanwhile is given up too.
        self.release_components(None).await;
        debug!(
            shards = shards.len(),
            released, sessions, "sessions written for the next owner"
        );
    }

    /// Tells the components what this node still serves: the shards it
    /// owns, less `leaving` (shards about to be handed over, of `total`).
    async fn release_components(&self, leaving: Option<(HashSet<u16>, u16)>) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let owns: rookery_core::Ownership = Arc::new(move |j: &Jid| {
            me.owns(j)
                && leaving
                    .as_ref()
                    .is_none_or(|(l, total)| !l.contains(&shard_of(j.as_str(), *total)))
        });
        self.sessions.release_components(owns).await;
    }

    /// Graceful exit (SIGTERM): refuses every request from now on (callers
    /// retry with the next owner), hands every shard over, leaves the
    /// membership, and waits — at most `grace` — until other nodes have
    /// claimed the shards. The sessions stay up: their clients see nothing
    /// but a short delay.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let shards: HashSet<u16> = self.ready.read().map(|r| r.clone()).unwrap_or_default();
        info!(shards = shards.len(), "draining: handing the shards over");
        self.draining.store(true, Ordering::Release);
        self.hand_over(&shards, self.membership.shards()).await;
        self.membership.leave().await;
        let me = self.membership.me().clone();
        let mut waiting: Vec<u16> = shards.into_iter().collect();
        while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for shard in waiting {
                match self.routes.claimant(shard).await {
                    Ok(Some((node, _))) if node != me.node => {}
                    Ok(_) | Err(_) => still.push(shard),
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if waiting.is_empty() {
            info!("drained: every shard has a new owner");
        } else {
            warn!(
                unclaimed = waiting.len(),
                "drain grace over with shards not yet taken over"
            );
        }
    }

    /// Refuses a request while draining or for an account that is not
    /// ours; otherwise holds the account's shard gate for the request.
    async fn enter(
        &self,
        user: &Jid,
    ) -> Result<Option<tokio::sync::RwLockReadGuard<'_, ()>>, Status> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "this session node is handing its shards over",
            ));
        }
        let shard = shard_of(user.to_bare().as_str(), self.membership.shards());
        let gate = match self.gates.get(usize::from(shard)) {
            Some(g) => Some(g.read().await),
            None => None,
        };
        // Checked with the gate held: a handover of the shard is complete.
        self.check_owner(user)?;
        Ok(gate)
    }

    /// After Redis lost its data (restarted empty), claims the shards this
    /// node serves again and writes the routes of its sessions back, so
    /// that a later handover finds them.
    async fn reassert(&self) {
        let me = self.membership.me().clone();
        let shards: Vec<u16> = self
            .ready
            .read()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        // Every shard served here must be claimed by this node. A claim can
        // be missing because Redis lost it, or because a previous owner that
        // was still claiming the shard (its own start-up) released it after
        // this node had claimed it; then this node's writes for the shard
        // fail until it claims it again.
        let mut unclaimed = Vec::new();
        for shard in shards {
            match self.routes.claimant(shard).await {
                Ok(None) => unclaimed.push(shard),
                // Ours, or being taken over (the view will say so).
                Ok(Some(_)) => {}
                Err(e) => {
                    self.metrics.redis_errors.inc();
                    return warn!(error = %e, "shard claims not checked");
                }
            }
        }
        if unclaimed.is_empty() {
            return;
        }
        for shard in &unclaimed {
            if let Err(e) = self.routes.claim_shard(*shard, &me.node, me.epoch).await {
                self.metrics.redis_errors.inc();
                return warn!(error = %e, "shards not claimed again");
            }
        }
        let n = self.sessions.republish();
        info!(
            shards = unclaimed.len(),
            sessions = n,
            "claims and routes written again after Redis lost them"
        );
    }

    /// The full JIDs bound on the given connections.
    fn jids_of(&self, keys: Vec<u64>) -> Vec<(Jid, u64)> {
        let mut out = Vec::new();
        for bare in self.sessions.bound_accounts() {
            for (jid, key) in self.sessions.connections_of(&bare) {
                if keys.contains(&key) {
                    out.push((jid, key));
                }
            }
        }
        out
    }

    /// Takes over `shard`: claims it (fencing its previous owner's writes)
    /// and rebuilds its sessions from the routes in Redis. Returns the
    /// number of sessions restored. The shard is served afterwards even if
    /// Redis failed (its sessions are then lost, as with a dead owner).
    async fn rebuild(&self, shard: u16, view: &View) -> usize {
        let me = self.membership.me().clone();
        let mut restored = 0;
        let result: Result<(), rookery_cluster::ClusterError> = async {
            // A live previous owner hands the shard over (its sessions'
            // queues written, its claim released); wait for that, bounded.
            let deadline = tokio::time::Instant::now() + self.handover_wait();
            while let Some((node, epoch)) = self.routes.claimant(shard).await?
                && !(node == me.node && epoch == me.epoch)
                && view.is_live(&node, epoch)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.routes.claim_shard(shard, &me.node, me.epoch).await?;
            for bare in self.routes.shard_users(shard).await? {
                for (resource, entry) in self.routes.resources(&bare).await? {
                    let full = format!("{bare}/{resource}");
                    let Ok(jid) = Jid::parse(&full) else { continue };
                    let state: ResourceState =
                        serde_json::from_str(&entry.state).unwrap_or_default();
                    let key = SessionNode::conn_key(
                        &pb::Caller {
                            node: entry.cm.clone(),
                            epoch: entry.cm_epoch,
                        },
                        entry.conn_id,
                    );
                    let cm = pb::Caller {
                        node: entry.cm.clone(),
                        epoch: entry.cm_epoch,
                    };
                    self.remember_conn(key, &cm, entry.conn_id);
                    let live = view.is_live(&entry.cm, entry.cm_epoch);
                    let link = if live {
                        self.link(&cm, entry.conn_id).ok()
                    } else {
                        None
                    };
                    if self
                        .sessions
                        .restore(jid.clone(), key, link.clone(), state.clone())
                    {
                        restored += 1;
                        if !live && state.sm.as_ref().is_none_or(|s| s.id.is_none()) {
                            self.sessions.unbind(&jid, key).await;
                        }
                    } else {
                        // Its cm is gone and it cannot resume: it ends now,
                        // as if its stream had closed (contacts see it go).
                        self.sessions
                            .restore(jid.clone(), key, Some(Arc::new(Gone)), state);
                        self.sessions.unbind(&jid, key).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.metrics.redis_errors.inc();
            warn!(shard, error = %e, "shard rebuilt without its sessions");
        }
        if let Ok(mut r) = self.ready.write() {
            r.insert(shard);
        }
        restored
    }

    /// How long a new owner waits for a live previous owner to release a
    /// shard: its view settles (two heartbeats), then it writes and
    /// releases (within one call timeout); with a margin.
    fn handover_wait(&self) -> Duration {
        Duration::from_millis(self.membership.config().heartbeat_ms * 4) + self.config.timeout
    }

    /// The gRPC service.
    pub fn service(self: &Arc<Self>) -> SessionServer<SessionGrpc> {
        SessionServer::new(SessionGrpc(self.clone())).max_decoding_message_size(16 << 20)
    }

    /// The session-side id of a cm connection: unique across cms, as
    /// epochs are (the low 40 bits are the cm's own id).
    fn conn_key(cm: &pb::Caller, conn_id: u64) -> u64 {
        (cm.epoch << 40) | (conn_id & ((1 << 40) - 1))
    }

    /// Checks the caller is a live member (its epoch is current).
    fn check_caller(&self, c: Option<&pb::Caller>) -> Result<pb::Caller, Status> {
        let c = c.ok_or_else(|| Status::invalid_argument("no caller"))?;
        if !self.membership.view().is_live(&c.node, c.epoch) {
            return Err(Status::failed_precondition(format!(
                "{} (epoch {}) is not a live member",
                c.node, c.epoch
            )));
        }
        Ok(c.clone())
    }

    /// Refuses requests for accounts whose shard is not ours (the caller
    /// has a stale view; it retries with a fresh one).
    fn check_owner(&self, user: &Jid) -> Result<(), Status> {
        if self.membership.fenced() {
            return Err(Status::unavailable("this session node is fenced"));
        }
        if self.owns(&user.to_bare()) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "not the owner of {}",
                user.to_bare()
            )))
        }
    }

    fn sender(&self, cm: &pb::Caller) -> Result<Arc<CmSender>, Status> {
        let view = self.membership.view();
        let member = view
            .member(&cm.node)
            .filter(|m| m.epoch == cm.epoch)
            .ok_or_else(|| Status::failed_precondition("unknown cm"))?
            .clone();
        let mut senders = self
            .senders
            .lock()
            .map_err(|_| Status::internal("senders poisoned"))?;
        senders.retain(|_, s| !s.is_dead());
        let key = (member.node.clone(), member.epoch);
        if let Some(s) = senders.get(&key) {
            return Ok(s.clone());
        }
        let s = CmSender::start(
            member,
            self.channels.get_for(&cm.node, cm.epoch, &view)?,
            self.me.clone(),
        );
        senders.insert(key, s.clone());
        Ok(s)
    }

    fn link(&self, cm: &pb::Caller, conn_id: u64) -> Result<Arc<dyn ClientLink>, Status> {
        Ok(Arc::new(RemoteLink {
            sender: self.sender(cm)?,
            conn_id,
        }))
    }
}

impl Channels {
    fn get_for(
        &self,
        node: &str,
        epoch: u64,
        view: &rookery_cluster::View,
    ) -> Result<tonic::transport::Channel, Status> {
        let m = view
            .member(node)
            .filter(|m| m.epoch == epoch)
            .ok_or_else(|| Status::failed_precondition("unknown member"))?;
        self.get(m)
    }
}

#[async_trait]
impl Peers for SessionNode {
    fn owns(&self, bare: &Jid) -> bool {
        let me = self.membership.me();
        let view = self.membership.view();
        view.owner_of(bare.as_str())
            .is_some_and(|m| m.node == me.node && m.epoch == me.epoch)
            && self
                .ready
                .read()
                .is_ok_and(|r| r.contains(&shard_of(bare.as_str(), view.shards)))
    }

    fn resource_changed(&self, jid: &Jid, conn_id: u64, state: Option<ResourceState>) {
        let me = self.membership.me();
        let op = match state {
            Some(state) => {
                let Some(info) = self
                    .conns
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&conn_id).cloned())
                else {
                    return;
                };
                let entry = RouteEntry {
                    cm: info.cm,
                    cm_epoch: info.cm_epoch,
                    conn_id: info.cm_conn,
                    session: me.node.clone(),
                    session_epoch: me.epoch,
                    priority: state.presence,
                    state: serde_json::to_string(&state).unwrap_or_default(),
                };
                RouteOp::Put(jid.as_str().to_owned(), entry)
            }
            None => {
                let Some(info) = self.forget_conn(conn_id) else {
                    return;
                };
                RouteOp::Remove(jid.as_str().to_owned(), info.cm_conn)
            }
        };
        let _ = self.writes.send(op);
    }

    async fn forward(&self, job: Forward) -> Result<(), StanzaError> {
        let kind = match job.kind {
            ForwardKind::Route { archived: false } => pb::ForwardKind::Route,
            ForwardKind::Route { archived: true } => pb::ForwardKind::RouteArchived,
            ForwardKind::Presence => pb::ForwardKind::Presence,
            ForwardKind::Deliver => pb::ForwardKind::Deliver,
            ForwardKind::FromRemote => pb::ForwardKind::FromRemote,
            ForwardKind::Component => pb::ForwardKind::Component,
        };
        let r = crate::forward_to_owner(
            &self.membership,
            &self.channels,
            &self.config,
            &self.metrics,
            "session",
            kind,
            &job.from,
            &job.to,
            &job.stanza,
        )
        .await;
        r.map(|_| ()).map_err(|s| {
            warn!(to = %job.to, error = %s, "no owner took a stanza");
            StanzaError::resource_constraint()
                .with_text("the recipient's session service is unavailable")
        })
    }
}

/// The gRPC face of a [`SessionNode`].
#[derive(Debug)]
pub struct SessionGrpc(Arc<SessionNode>);

impl SessionGrpc {
    /// `Route`, within its server span.
    async fn route_inner(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        n.check_caller(r.cm.as_ref())?;
        let stanza = conv::open(r.stanza)?;
        let from = stanza
            .from()
            .cloned()
            .ok_or_else(|| Status::invalid_argument("a routed stanza needs a from"))?;
        let _gate = n.enter(&from).await?;
        n.sessions.route(&from, stanza).await;
        // Acknowledged means handed on: what was queued for cms is with them.
        n.flush_deliveries().await;
        Ok(Response::new(pb::RouteResponse {}))
    }

    /// `Forward`, within its server span.
    async fn forward_inner(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        n.check_caller(r.caller.as_ref())?;
        let env = r
            .stanza
            .ok_or_else(|| Status::invalid_argument("no stanza"))?;
        let from = conv::jid(&env.from, "from")?;
        let to = conv::jid(&env.to, "to")?;
        let _gate = n.enter(&to).await?;
        let kind = match pb::ForwardKind::try_from(r.kind) {
            Ok(pb::ForwardKind::Route) => ForwardKind::Route { archived: false },
            Ok(pb::ForwardKind::RouteArchived) => ForwardKind::Route { archived: true },
            Ok(pb::ForwardKind::Presence) => ForwardKind::Presence,
            Ok(pb::ForwardKind::Deliver) => ForwardKind::Deliver,
            Ok(pb::ForwardKind::FromRemote) => ForwardKind::FromRemote,
            Ok(pb::ForwardKind::Component) => ForwardKind::Component,
            _ => return Err(Status::invalid_argument("unknown forward kind")),
        };
        let stanza = conv::open(Some(env))?.element().clone();
        n.sessions
            .inbound(Forward {
                kind,
                from,
                to,
                stanza,
            })
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        n.flush_deliveries().await;
        Ok(Response::new(pb::ForwardResponse {}))
    }
}

#[async_trait]
impl Session for SessionGrpc {
    async fn route(
        &self,
        request: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        let hop = trace::server(names::RPC_ROUTE, &request);
        let r = telemetry::within(hop.as_ref(), self.route_inner(request)).await;
        trace::outcome(hop.as_ref(), &r);
        r
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let hop = trace::server(names::RPC_FORWARD, &request);
        let r = telemetry::within(hop.as_ref(), self.forward_inner(request)).await;
        trace::outcome(hop.as_ref(), &r);
        r
    }

    async fn bind(
        &self,
        request: Request<pb::BindRequest>,
    ) -> Result<Response<pb::BindResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let user = conv::jid(&r.user, "user")?.to_bare();
        let _gate = n.enter(&user).await?;
        let link = n.link(&cm, r.conn_id)?;
        let key = SessionNode::conn_key(&cm, r.conn_id);
        n.remember_conn(key, &cm, r.conn_id);
        let result = n
            .sessions
            .bind(BindRequest {
                user,
                resource: (!r.resource.is_empty()).then_some(r.resource),
                link,
                conn_id: key,
            })
            .await;
        if result.is_err() {
            n.forget_conn(key);
        }
        // A new owner must find the session in Redis.
        n.flush_routes().await;
        Ok(Response::new(pb::BindResponse {
            result: Some(match result {
                Ok(jid) => pb::bind_response::Result::Jid(jid.as_str().to_owned()),
                Err(e) => pb::bind_response::Result::Error(conv::bind_error_name(&e)),
            }),
        }))
    }

    async fn unbind(
        &self,
        request: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm =
            r.cm.clone()
                .ok_or_else(|| Status::invalid_argument("no caller"))?;
        let jid = conv::jid(&r.jid, "jid")?;
        let _gate = n.enter(&jid).await?;
        n.sessions
            .unbind(&jid, SessionNode::conn_key(&cm, r.conn_id))
            .await;
        Ok(Response::new(pb::UnbindResponse {}))
    }

    async fn sm_enable(
        &self,
        request: Request<pb::SmEnableRequest>,
    ) -> Result<Response<pb::SmEnableResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        let _gate = n.enter(&jid).await?;
        let params = SmParams {
            resume: r.resume,
            timeout: Duration::from_secs(u64::from(r.timeout_secs)),
            max_queue: r.max_queue as usize,
        };
        let result = match n
            .sessions
            .sm_enable(&jid, SessionNode::conn_key(&cm, r.conn_id), params)
            .await
        {
            Ok(id) => pb::sm_enable_response::Result::Id(id.unwrap_or_default()),
            Err(e) => pb::sm_enable_response::Result::Failure(conv::sm_failure(&e)),
        };
        Ok(Response::new(pb::SmEnableResponse {
            result: Some(result),
        }))
    }

    async fn sm_ack(
        &self,
        request: Request<pb::SmAckRequest>,
    ) -> Result<Response<pb::SmAckResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        let _gate = n.enter(&jid).await?;
        let failure = n
            .sessions
            .sm_ack(&jid, SessionNode::conn_key(&cm, r.conn_id), r.h, r.inbound)
            .await
            .err()
            .map(|e| conv::sm_failure(&e));
        Ok(Response::new(pb::SmAckResponse { failure }))
    }

    async fn sm_send(
        &self,
        request: Request<pb::SmSendRequest>,
    ) -> Result<Response<pb::SmSendResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let jid = conv::jid(&r.jid, "jid")?;
        let _gate = n.enter(&jid).await?;
        let el = std::str::from_utf8(&r.xml)
            .ok()
            .and_then(|s| Element::parse(s).ok())
            .ok_or_else(|| Status::invalid_argument("stanza is not well-formed"))?;
        n.sessions
            .sm_send(&jid, SessionNode::conn_key(&cm, r.conn_id), el);
        Ok(Response::new(pb::SmSendResponse {}))
    }

    async fn detach(
        &self,
        request: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::DetachResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm =
            r.cm.clone()
                .ok_or_else(|| Status::invalid_argument("no caller"))?;
        let jid = conv::jid(&r.jid, "jid")?;
        let _gate = n.enter(&jid).await?;
        n.sessions
            .detach(&jid, SessionNode::conn_key(&cm, r.conn_id), r.inbound)
            .await;
        Ok(Response::new(pb::DetachResponse {}))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let n = &self.0;
        let r = request.into_inner();
        let cm = n.check_caller(r.cm.as_ref())?;
        let user = conv::jid(&r.user, "user")?.to_bare();
        let _gate = n.enter(&user).await?;
        let link = n.link(&cm, r.conn_id)?;
        let key = SessionNode::conn_key(&cm, r.conn_id);
        n.remember_conn(key, &cm, r.conn_id);
        let result = match n.sessions.resume(&user, &r.previd, r.h, link, key).await {
            Ok(res) => pb::resume_response::Result::Resumed(pb::Resumed {
                jid: res.jid.as_str().to_owned(),
                h: res.h,
            }),
            Err(e) => {
                n.forget_conn(key);
                pb::resume_response::Result::Failure(conv::sm_failure(&e))
            }
        };
        n.flush_routes().await;
        Ok(Response::new(pb::ResumeResponse {
            result: Some(result),
        }))
    }
}

/// One queued thing for a cm.
type Delivery = cmpb::Delivery;

/// Sends what the session node has for the clients of one cm, in order,
/// in batches.
#[derive(Debug)]
struct CmSender {
    tx: mpsc::Sender<Delivery>,
    dead: std::sync::atomic::AtomicBool,
    /// Deliveries queued so far, and taken by the cm so far.
    enqueued: AtomicU64,
    acked: watch::Sender<u64>,
}

impl CmSender {
    fn start(
        cm: Member,
        channel: tonic::transport::Channel,
        node: Weak<SessionNode>,
    ) -> Arc<CmSender> {
        let (tx, rx) = mpsc::channel(CM_QUEUE);
        let s = Arc::new(CmSender {
            tx,
            dead: Default::default(),
            enqueued: AtomicU64::new(0),
            acked: watch::Sender::new(0),
        });
        tokio::spawn(run_sender(cm, channel, node, rx, Arc::downgrade(&s)));
        s
    }

    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::Relaxed) || self.tx.is_closed()
    }

    fn push(&self, d: Delivery) -> Result<(), DeliverError> {
        if self.is_dead() {
            return Err(DeliverError::Closed);
        }
        self.tx.try_send(d).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliverError::Full,
            mpsc::error::TrySendError::Closed(_) => DeliverError::Closed,
        })?;
        self.enqueued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

async fn run_sender(
    cm: Member,
    channel: tonic::transport::Channel,
    node: Weak<SessionNode>,
    mut rx: mpsc::Receiver<Delivery>,
    me: Weak<CmSender>,
) {
    let mut client = ConnectionManagerClient::new(channel).max_decoding_message_size(16 << 20);
    let mut batch = Vec::with_capacity(CM_BATCH);
    while rx.recv_many(&mut batch, CM_BATCH).await > 0 {
        let Some(n) = node.upgrade() else { return };
        let me_member = n.membership.me().clone();
        let mut backoff = Duration::from_millis(10);
        let hop = deliver_hop(&batch);
        loop {
            let mut r = Request::new(cmpb::DeliverRequest {
                node: me_member.node.clone(),
                epoch: me_member.epoch,
                deliveries: batch.clone(),
            });
            r.set_timeout(n.config.timeout);
            trace::inject(&mut r, hop.as_ref());
            let started = std::time::Instant::now();
            let res = tokio::time::timeout(n.config.timeout, client.deliver(r))
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
            n.metrics
                .rpc_latency
                .get_or_create(&rookery_core::metrics::RpcLabel {
                    role: "session",
                    method: "Deliver",
                    outcome: if res.is_ok() { "ok" } else { "error" },
                })
                .observe(started.elapsed().as_secs_f64());
            if res.is_ok() {
                trace::outcome(hop.as_ref(), &res);
            }
            match res {
                Ok(_) => {
                    if let Some(me) = me.upgrade() {
                        me.acked.send_modify(|a| *a += batch.len() as u64);
                    }
                    break;
                }
                Err(s) => {
                    // Retried while the cm is alive; once it is gone, so are
                    // its clients (they resume elsewhere, and the session
                    // side keeps what stream management has not seen acked).
                    if !n.membership.view().is_live(&cm.node, cm.epoch) {
                        debug!(cm = %cm.node, "cm gone, its deliveries dropped");
                        trace::outcome(hop.as_ref(), &Err::<(), _>(s));
                        if let Some(me) = me.upgrade() {
                            me.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                            me.acked.send_modify(|_| {});
                        }
                        return;
                    }
                    warn!(cm = %cm.node, error = %s, "delivery to cm failed, retrying");
                    n.metrics.rpc_retries.inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
        batch.clear();
    }
}

/// The client span of a `Deliver` call, when some of its deliveries are
/// traced: under the first traced delivery's span, linked to those of
/// other traces (at most 32).
fn deliver_hop(batch: &[Delivery]) -> Option<Hop> {
    if !telemetry::enabled() {
        return None;
    }
    let mut traced = batch.iter().filter_map(|d| d.trace.as_ref());
    let parent = trace::carried(traced.next()?);
    let trace_id = telemetry::span_context(&parent).trace_id();
    let mut links = Vec::new();
    for t in traced {
        let sc = telemetry::span_context(&trace::carried(t));
        if sc.is_valid() && sc.trace_id() != trace_id && links.len() < 32 {
            links.push(sc);
        }
    }
    let hop = trace::client_under(names::RPC_DELIVER, &parent, links)?;
    hop.set(KeyValue::new("rookery.deliveries", batch.len() as i64));
    Some(hop)
}

/// A client held by a cm, as the session logic sees it.
#[derive(Debug)]
struct RemoteLink {
    sender: Arc<CmSender>,
    conn_id: u64,
}

impl ClientLink for RemoteLink {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        self.sender.push(Delivery {
            conn_id: self.conn_id,
            what: Some(cmpb::delivery::What::Xml(
                stanza.to_xml_string().into_bytes(),
            )),
            // The span of the hop delivering it, when traced.
            trace: trace::carry(),
        })
    }

    fn close(&self, error: StreamError) {
        let _ = self.sender.push(Delivery {
            conn_id: self.conn_id,
            what: Some(cmpb::delivery::What::Close(cmpb::StreamClose {
                condition: error.condition.to_owned(),
                text: error.text.unwrap_or_default(),
            })),
            trace: None,
        });
    }
}

/// Applies route writes in order.
async fn run_writer(node: Weak<SessionNode>, mut ops: mpsc::UnboundedReceiver<RouteOp>) {
    while let Some(op) = ops.recv().await {
        let Some(n) = node.upgrade() else { return };
        let me = n.membership.me().clone();
        let r = match op {
            RouteOp::Put(full, entry) => n.routes.put(&full, &entry).await,
            RouteOp::Remove(full, conn) => n
                .routes
                .remove(&full, conn, &me.node, me.epoch)
                .await
                .map(|_| ()),
            RouteOp::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = r {
            n.metrics.redis_errors.inc();
            warn!(error = %e, "route not written to Redis");
        }
    }
}

/// Follows the membership.
async fn watch_views(node: Weak<SessionNode>) {
    let Some(mut views) = node.upgrade().map(|n| n.membership.watch()) else {
        return;
    };
    // A change is acted on once it has held for two heartbeats: members
    // reappear one by one after Redis restarts empty, and a view without
    // some of them would move their shards for nothing.
    let settle = node
        .upgrade()
        .map(|n| Duration::from_millis(n.membership.config().heartbeat_ms * 2))
        .unwrap_or_default();
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(settle).await;
        }
        first = false;
        let view = views.borrow_and_update().clone();
        match node.upgrade() {
            Some(n) => {
                n.on_view(&view).await;
                n.reassert().await;
            }
            None => return,
        }
        // Between changes, check now and then that Redis still has this
        // node's claims (it may have restarted empty without the view
        // changing as seen from here).
        loop {
            tokio::select! {
                r = views.changed() => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(settle * 3) => match node.upgrade() {
                    Some(n) => n.reassert().await,
                    None => return,
                },
            }
        }
    }
}
