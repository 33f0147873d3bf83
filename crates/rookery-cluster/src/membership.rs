//! Cluster membership: epochs, heartbeats with TTL leases, and the live view.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::keys::Keys;
use crate::{ClusterError, ReadyFilter, Redis, RedisConfig, View, scripts};

/// A role a cluster node plays (the roles that matter to the shard map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Connection manager: holds client sockets.
    Cm,
    /// Session node: candidate owner of virtual shards.
    Session,
    /// Federation: keeps the server-to-server streams (RFC 6120 §4–§6);
    /// each remote domain is served by one s2s node.
    S2s,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Cm, Role::Session, Role::S2s];

    /// The role's name on the command line, in logs and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Cm => "cm",
            Role::Session => "session",
            Role::S2s => "s2s",
        }
    }
}

/// One incarnation of a cluster node, as stored in Redis (`{P}:member:<node>`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node name, stable across restarts (e.g. the pod name of a StatefulSet).
    pub node: String,
    /// Epoch of this incarnation: unique and increasing across the cluster (fencing token).
    pub epoch: u64,
    /// Roles the node plays.
    pub roles: Vec<Role>,
    /// `host:port` of the node's gRPC listener.
    pub grpc: String,
}

/// State shared by the [`Membership`] handle and its heartbeat task.
struct Shared {
    me: Member,
    record: String,
    cfg: RedisConfig,
    redis: Redis,
    keys: Keys,
    shards: u16,
    /// Local monotonic origin of `last_renewal_ms`.
    base: Instant,
    /// When (ms after `base`) the last successful lease renewal was *sent*: the lease in
    /// Redis runs from a later server time, so counting from here is conservative.
    last_renewal_ms: AtomicU64,
    /// A newer incarnation of this node name exists: fenced for good.
    superseded: AtomicBool,
    /// `leave` was called.
    left: AtomicBool,
    tx: watch::Sender<Arc<View>>,
    /// Readiness reported by the orchestrator (decision 0014); `None`: Redis alone decides.
    ready: Option<watch::Receiver<ReadyFilter>>,
    /// The live members as Redis last reported them, before the readiness filter (only
    /// kept when `ready` is set).
    live: Mutex<Vec<Member>>,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fenced(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
            || self.left.load(Ordering::Acquire)
            || self
                .elapsed_ms()
                .saturating_sub(self.last_renewal_ms.load(Ordering::Acquire))
                > self.cfg.self_lease_ms()
    }

    /// One heartbeat: renews the lease (when `refresh`), expires dead members and reloads
    /// the view. Returns the script's status: 1 renewed, 0 read only, -1 superseded.
    async fn beat(&self, refresh: bool) -> Result<i64, ClusterError> {
        let sent = self.elapsed_ms();
        let (status, _now, records): (i64, i64, Vec<String>) = self
            .redis
            .invoke(
                scripts::HEARTBEAT
                    .key(self.keys.members())
                    .key(self.keys.epoch())
                    .key(self.keys.shards())
                    .key(self.keys.incarnations())
                    .key(self.keys.member(&self.me.node))
                    .arg(&self.me.node)
                    .arg(self.me.epoch)
                    .arg(self.cfg.ttl_ms)
                    .arg(&self.record)
                    .arg(if refresh { "1" } else { "0" })
                    .arg(self.shards)
                    .arg(self.keys.member_prefix()),
            )
            .await?;
        if status == 1 {
            self.last_renewal_ms.fetch_max(sent, Ordering::AcqRel);
        } else if status == -1 && !self.superseded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                node = %self.me.node,
                epoch = self.me.epoch,
                "a newer incarnation of this node exists: fenced for good"
            );
        }
        self.apply(&records);
        Ok(status)
    }

    /// Publishes a new view if the live member set differs from the current one.
    fn apply(&self, records: &[String]) {
        let mut members: Vec<Member> = records
            .iter()
            .filter_map(|r| match serde_json::from_str::<Member>(r) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, record = %r, "ignoring an unreadable member record");
                    None
                }
            })
            .collect();
        members.sort_by(|a, b| a.node.cmp(&b.node).then(a.epoch.cmp(&b.epoch)));
        if self.ready.is_some() {
            if let Ok(mut live) = self.live.lock() {
                live.clone_from(&members);
            }
            members = self.admitted(members);
        }
        self.publish(members);
    }

    /// The members the readiness filter admits (all of them without a filter).
    fn admitted(&self, mut members: Vec<Member>) -> Vec<Member> {
        if let Some(ready) = &self.ready {
            let ready = ready.borrow();
            members.retain(|m| {
                let ok = ready.admits(m);
                if !ok {
                    tracing::trace!(node = %m.node, "live in Redis but not ready: left out of the view");
                }
                ok
            });
        }
        members
    }

    /// The readiness filter changed: publish the last Redis members filtered anew, without
    /// waiting for the next heartbeat.
    fn refilter(&self) {
        let live = match self.live.lock() {
            Ok(live) => live.clone(),
            Err(_) => return,
        };
        let members = self.admitted(live);
        self.publish(members);
    }

    fn publish(&self, members: Vec<Member>) {
        self.tx.send_if_modified(|view| {
            if view.members == members {
                return false;
            }
            *view = Arc::new(View {
                version: view.version + 1,
                shards: self.shards,
                members,
            });
            true
        });
    }

    async fn run(self: Arc<Self>) {
        let period = Duration::from_millis(self.cfg.heartbeat_ms);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; join has just beaten
        let mut failing = false;
        let mut was_fenced = false;
        let mut ready = self.ready.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = ready_changed(&mut ready) => {
                    self.refilter();
                    continue;
                }
            }
            let refresh =
                !self.superseded.load(Ordering::Acquire) && !self.left.load(Ordering::Acquire);
            match self.beat(refresh).await {
                Ok(_) => {
                    if failing {
                        tracing::info!(node = %self.me.node, "redis reachable again: lease renewed");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(node = %self.me.node, error = %e, "heartbeat failed; retrying");
                        failing = true;
                    } else {
                        tracing::debug!(node = %self.me.node, error = %e, "heartbeat failed again");
                    }
                }
            }
            let fenced = self.fenced();
            if fenced && !was_fenced && !self.left.load(Ordering::Acquire) {
                tracing::warn!(node = %self.me.node, epoch = self.me.epoch, "own lease not renewed in time: fenced");
            }
            was_fenced = fenced;
        }
    }
}

/// Waits until the readiness filter changes. Never returns without a filter, or once its
/// sender is gone (the last filter then stays in force).
async fn ready_changed(ready: &mut Option<watch::Receiver<ReadyFilter>>) {
    if let Some(rx) = ready {
        if rx.changed().await.is_ok() {
            return;
        }
        tracing::warn!("readiness source ended: its last state stays in force");
        *ready = None;
    }
    std::future::pending::<()>().await;
}

/// This node's membership of the cluster: its epoch, its lease (renewed by a heartbeat
/// task), and the live [`View`] of all members.
///
/// Dropping the last handle stops the heartbeat without deleting the member record (as a
/// crash would: the others see the lease lapse after `ttl_ms`); [`Membership::leave`] is
/// the graceful exit.
pub struct Membership {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.shared.me)
            .field("shards", &self.shared.shards)
            .field("fenced", &self.fenced())
            .field("view_version", &self.shared.tx.borrow().version)
            .finish_non_exhaustive()
    }
}

fn check_node_name(node: &str) -> Result<(), ClusterError> {
    if node.is_empty()
        || node
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(ClusterError::Config(format!(
            "invalid node name {node:?}: must be non-empty, without braces, spaces or control characters"
        )));
    }
    Ok(())
}

impl Membership {
    /// Connects, takes a new epoch (INCR of a global counter), registers the member with
    /// a lease, checks that the cluster's shard count (stored once in Redis) equals
    /// `shards` (else [`ClusterError::Config`]), starts the heartbeat task, and returns
    /// once the first view is loaded (which includes itself).
    pub async fn join(
        cfg: &RedisConfig,
        node: &str,
        roles: &[Role],
        grpc: &str,
        shards: u16,
    ) -> Result<Arc<Membership>, ClusterError> {
        Self::join_inner(cfg, node, roles, grpc, shards, None).await
    }

    /// [`Membership::join`], with views that keep only the live members `ready` admits
    /// (decision 0014: Kubernetes reports which pods are ready). A change of `ready` is
    /// published at once, without waiting for the next heartbeat; epochs, leases and
    /// fencing are unchanged. The first view includes this node only if `ready` admits
    /// it; while the sender of `ready` is gone its last value stays in force.
    pub async fn join_with_readiness(
        cfg: &RedisConfig,
        node: &str,
        roles: &[Role],
        grpc: &str,
        shards: u16,
        ready: watch::Receiver<ReadyFilter>,
    ) -> Result<Arc<Membership>, ClusterError> {
        Self::join_inner(cfg, node, roles, grpc, shards, Some(ready)).await
    }

    async fn join_inner(
        cfg: &RedisConfig,
        node: &str,
        roles: &[Role],
        grpc: &str,
        shards: u16,
        ready: Option<watch::Receiver<ReadyFilter>>,
    ) -> Result<Arc<Membership>, ClusterError> {
        cfg.validate()?;
        check_node_name(node)?;
        if shards == 0 {
            return Err(ClusterError::Config("shard count must be positive".into()));
        }
        let redis = Redis::connect(cfg).await?;
        let keys = Keys::new(&cfg.prefix);
        let (ok, value): (i64, u64) = redis
            .invoke(
                scripts::JOIN
                    .key(keys.epoch())
                    .key(keys.shards())
                    .key(keys.incarnations())
                    .arg(shards)
                    .arg(node),
            )
            .await?;
        if ok != 1 {
            return Err(ClusterError::Config(format!(
                "this node is configured with {shards} shards but the cluster has {value}"
            )));
        }
        let me = Member {
            node: node.to_owned(),
            epoch: value,
            roles: roles.to_vec(),
            grpc: grpc.to_owned(),
        };
        let record = serde_json::to_string(&me)
            .map_err(|e| ClusterError::Config(format!("member record: {e}")))?;
        let (tx, _) = watch::channel(Arc::new(View {
            version: 0,
            shards,
            members: Vec::new(),
        }));
        let shared = Arc::new(Shared {
            me,
            record,
            cfg: cfg.clone(),
            redis,
            keys,
            shards,
            base: Instant::now(),
            last_renewal_ms: AtomicU64::new(0),
            superseded: AtomicBool::new(false),
            left: AtomicBool::new(false),
            tx,
            ready,
            live: Mutex::new(Vec::new()),
        });
        if shared.beat(true).await? != 1 {
            return Err(ClusterError::Fenced);
        }
        tracing::info!(node, epoch = shared.me.epoch, "joined the cluster");
        let task = tokio::spawn(shared.clone().run());
        Ok(Arc::new(Membership {
            shared,
            task: Mutex::new(Some(task)),
        }))
    }

    /// This node's incarnation.
    pub fn me(&self) -> &Member {
        &self.shared.me
    }

    /// The number of virtual shards of the cluster.
    pub fn shards(&self) -> u16 {
        self.shared.shards
    }

    /// The current view (cheap: clones an `Arc`).
    pub fn view(&self) -> Arc<View> {
        self.shared.tx.borrow().clone()
    }

    /// A receiver that gets a new [`View`] whenever the member set changes.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.shared.tx.subscribe()
    }

    /// True when this node must not act as an owner: its lease has not been renewed
    /// within `ttl_ms - heartbeat_ms` (Redis unreachable or partitioned), Redis holds a
    /// newer epoch for its node name (a newer incarnation exists), or it has left.
    /// Cheap (atomics and a clock read).
    pub fn fenced(&self) -> bool {
        self.shared.fenced()
    }

    /// The shared Redis connection, for [`crate::Routes`] and other users.
    pub fn redis(&self) -> &Redis {
        &self.shared.redis
    }

    /// The configuration this membership was joined with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.cfg
    }

    /// Stops the heartbeat task without touching Redis, as if the process had died: the
    /// lease lapses after `ttl_ms` and this node becomes fenced. For tests and for a
    /// shutdown that must not look graceful.
    pub fn stop_heartbeat(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }

    /// Graceful exit: deletes its member record at once (the others see it gone at their
    /// next heartbeat) and stops the heartbeat. Afterwards [`Membership::fenced`] is true.
    /// A Redis error is logged, not returned: the lease then lapses by itself.
    pub async fn leave(&self) {
        self.shared.left.store(true, Ordering::Release);
        self.stop_heartbeat();
        let s = &self.shared;
        let res: Result<i64, _> = s
            .redis
            .invoke(
                scripts::LEAVE
                    .key(s.keys.members())
                    .key(s.keys.member(&s.me.node))
                    .key(s.keys.incarnations())
                    .arg(&s.me.node)
                    .arg(s.me.epoch),
            )
            .await;
        match res {
            Ok(_) => tracing::info!(node = %s.me.node, epoch = s.me.epoch, "left the cluster"),
            Err(e) => {
                tracing::warn!(node = %s.me.node, error = %e, "leave failed; the lease will lapse")
            }
        }
        if let Ok(mut live) = s.live.lock() {
            live.retain(|m| m.node != s.me.node);
        }
        let members: Vec<Member> =
            s.tx.borrow()
                .members
                .iter()
                .filter(|m| m.node != s.me.node)
                .cloned()
                .collect();
        s.publish(members);
    }

    pub(crate) fn fence_source(&self) -> FenceSource {
        FenceSource(self.shared.clone())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Lets [`crate::Routes`] refuse writes in this node's name once it is fenced.
#[derive(Clone)]
pub(crate) struct FenceSource(Arc<Shared>);

impl FenceSource {
    /// Whether `(node, epoch)` is this node's incarnation and this node is fenced.
    pub(crate) fn fenced_as(&self, node: &str, epoch: u64) -> bool {
        self.0.me.node == node && self.0.me.epoch == epoch && self.0.fenced()
    }
}

impl fmt::Debug for FenceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceSource")
            .field("node", &self.0.me.node)
            .field("epoch", &self.0.me.epoch)
            .finish()
    }
}
