//! The gRPC implementations of Rookery's role traits: what runs between
//! processes in cluster mode (DESIGN.md "One process or many";
//! docs/decisions/0010-cluster.md).
//!
//! - On a connection manager, [`RemoteSessions`] implements
//!   [`rookery_core::SessionService`] by calling the node that owns the
//!   user's shard, and [`CmService`] takes the stanzas session nodes push
//!   for its clients.
//! - On a session node, [`SessionNode`] serves the session service over a
//!   [`rookery_session::LocalSessions`], pushes stanzas to the cms that hold
//!   the clients, and implements [`rookery_session::peers::Peers`] so that
//!   the recipient side of every stanza runs on the recipient's owner.
//!
//! Every call has a deadline; a caller retries (with a fresh view of the
//! shard map) while the owner is unreachable or says it is not the owner,
//! until an owner acknowledges or `retry_for` has passed.

mod cm;
mod conv;
mod s2s;
mod session;
mod trace;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rookery_cluster::{Member, Membership};
use rookery_core::metrics::{Metrics, RpcLabel};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub use cm::{CmService, RemoteSessions};
pub use s2s::{FederationService, RemoteInbound, S2sClient};
pub use session::SessionNode;

/// Timing of calls between roles.
#[derive(Clone, Copy, Debug)]
pub struct RpcConfig {
    /// Deadline of one call.
    pub timeout: Duration,
    /// How long a caller keeps retrying before it gives up and answers the
    /// client with an error.
    pub retry_for: Duration,
}

impl RpcConfig {
    /// The deadline of a call to a session node: its own work may include
    /// handing stanzas to other owners, each retried for `retry_for`.
    pub fn call_deadline(&self) -> Duration {
        self.retry_for + self.timeout
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            timeout: Duration::from_secs(2),
            retry_for: Duration::from_secs(10),
        }
    }
}

/// Lazily connected channels to cluster members, one per incarnation.
#[derive(Debug)]
pub(crate) struct Channels {
    map: Mutex<HashMap<(String, u64), Channel>>,
    timeout: Duration,
}

impl Channels {
    fn new(timeout: Duration) -> Channels {
        Channels {
            map: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn get(&self, m: &Member) -> Result<Channel, Status> {
        let key = (m.node.clone(), m.epoch);
        let mut map = self
            .map
            .lock()
            .map_err(|_| Status::internal("channel map poisoned"))?;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        // Channels of earlier incarnations of the node are of no more use.
        map.retain(|(n, _), _| *n != m.node);
        let ch = Endpoint::from_shared(format!("http://{}", m.grpc))
            .map_err(|e| Status::invalid_argument(format!("gRPC address of {}: {e}", m.node)))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.timeout)
            .connect_lazy();
        map.insert(key, ch.clone());
        Ok(ch)
    }
}

/// Whether a failed call may be tried again (perhaps on another owner).
/// `Unavailable`: the node is down or restarting; `FailedPrecondition`: it
/// is not (or no longer) the owner, or it does not know the caller yet;
/// `Unknown`: the connection broke mid-call.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::FailedPrecondition | Code::Unknown
    )
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
        Code::ResourceExhausted => "resource_exhausted",
        _ => "other",
    }
}

/// Calls the owner of `bare`'s shard with `call`, retrying as described in
/// the crate docs. Records latency and retries.
pub(crate) async fn call_owner<T, F, Fut>(
    membership: &Membership,
    channels: &Channels,
    config: &RpcConfig,
    metrics: &Metrics,
    labels: (&'static str, &'static str),
    bare: &str,
    call: F,
) -> Result<T, Status>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    call_member(
        membership,
        channels,
        config,
        metrics,
        labels,
        |view| view.owner_of(bare).cloned(),
        call,
    )
    .await
}

/// `Session.Forward` of one job to the owner of `to`'s account, with the
/// trace context, retried as [`call_owner`] does. The envelope names the
/// job's sender and recipient, which may differ from the stanza's
/// addresses (a bare JID's presence).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward_to_owner(
    membership: &Membership,
    channels: &Channels,
    config: &RpcConfig,
    metrics: &Metrics,
    role: &'static str,
    kind: rookery_proto::session::v1::ForwardKind,
    from: &rookery_core::Jid,
    to: &rookery_core::Jid,
    stanza: &rookery_xml::Element,
) -> Result<(), Status> {
    use rookery_proto::session::v1 as pb;
    let me = membership.me();
    let mut env = conv::envelope(stanza, to, membership.view().shards);
    env.from = from.as_str().to_owned();
    env.to = to.as_str().to_owned();
    let msg = pb::ForwardRequest {
        caller: Some(pb::Caller {
            node: me.node.clone(),
            epoch: me.epoch,
        }),
        kind: kind as i32,
        stanza: Some(env),
    };
    let deadline = config.call_deadline();
    let hop = trace::client(rookery_core::telemetry::names::RPC_FORWARD);
    let r = call_owner(
        membership,
        channels,
        config,
        metrics,
        (role, "Forward"),
        to.to_bare().as_str(),
        |ch| {
            let mut r = tonic::Request::new(msg.clone());
            r.set_timeout(deadline);
            trace::inject(&mut r, hop.as_ref());
            async move { pb::session_client::SessionClient::new(ch).forward(r).await }
        },
    )
    .await;
    trace::outcome(hop.as_ref(), &r);
    r.map(|_| ())
}

/// [`call_owner`] with the member chosen by `pick` from each fresh view.
pub(crate) async fn call_member<T, F, Fut>(
    membership: &Membership,
    channels: &Channels,
    config: &RpcConfig,
    metrics: &Metrics,
    labels: (&'static str, &'static str),
    pick: impl Fn(&rookery_cluster::View) -> Option<Member>,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + config.retry_for;
    let mut backoff = Duration::from_millis(10);
    loop {
        let view = membership.view();
        let last = match pick(&view).as_ref() {
            Some(owner) => {
                let started = Instant::now();
                let r = match channels.get(owner) {
                    // The deadline is also sent (grpc-timeout); this one
                    // holds when the peer does not answer at all.
                    Ok(ch) => tokio::time::timeout(config.call_deadline(), call(ch))
                        .await
                        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time"))),
                    Err(s) => Err(s),
                };
                let outcome = match &r {
                    Ok(_) => "ok",
                    Err(s) => code_name(s.code()),
                };
                metrics
                    .rpc_latency
                    .get_or_create(&RpcLabel {
                        role: labels.0,
                        method: labels.1,
                        outcome,
                    })
                    .observe(started.elapsed().as_secs_f64());
                match r {
                    Ok(v) => return Ok(v),
                    Err(s) if retryable(&s) => s,
                    Err(s) => return Err(s),
                }
            }
            None => Status::unavailable(format!("no node is up to take {}", labels.1)),
        };
        if Instant::now() + backoff > deadline {
            return Err(last);
        }
        metrics.rpc_retries.inc();
        tracing::debug!(method = labels.1, error = %last, "retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
