//! The role traits through which the connection manager (cm) and the session
//! service meet (DESIGN.md "Roles and the path of a stanza").
//!
//! In one process these are direct calls on `Arc<dyn …>`, with no serialization;
//! the cluster mode implements the same traits over gRPC.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rookery_jid::Jid;
use rookery_xml::Element;

use crate::error::{StanzaError, StreamError};
use crate::stanza::Stanza;

/// Why a stanza could not be queued for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The connection has gone.
    #[error("connection closed")]
    Closed,
    /// The client is not reading and its queue is full.
    #[error("client queue full")]
    Full,
}

/// The session side's handle on one bound client connection, implemented by
/// the cm (a channel in one process, a gRPC stream in a cluster).
pub trait ClientLink: Send + Sync + std::fmt::Debug {
    /// Queues a stanza for the client without waiting for the socket.
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError>;
    /// Closes the stream with a stream error (e.g. `conflict` when a new
    /// session replaces this one, `system-shutdown`).
    fn close(&self, error: StreamError);
}

/// RFC 6120 §7: a request to bind a resource for an authenticated user.
#[derive(Debug)]
pub struct BindRequest {
    /// The authenticated account (bare JID).
    pub user: Jid,
    /// The resource the client asked for (already prepared per RFC 7622
    /// §3.4), or `None` for a server-generated one.
    pub resource: Option<String>,
    /// Where stanzas for the new session go.
    pub link: Arc<dyn ClientLink>,
    /// Identifies the connection (unique within the cm); `unbind` names it
    /// so that a session replaced by a newer one is not unbound by the old
    /// connection's cleanup.
    pub conn_id: u64,
}

/// Why a bind failed (RFC 6120 §7.6.2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// §7.7.2.3: the resource is in use and the policy keeps the old session.
    #[error("resource in use")]
    Conflict,
    /// §7.6.2.1: the account has reached its limit of resources.
    #[error("too many resources")]
    ResourceConstraint,
    /// §7.6.2.2: the account may not bind now.
    #[error("not allowed")]
    NotAllowed,
    /// A dependency failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BindError {
    /// The stanza error answered to the bind iq.
    pub fn to_stanza_error(&self) -> StanzaError {
        match self {
            BindError::Conflict => StanzaError::conflict(),
            BindError::ResourceConstraint => StanzaError::resource_constraint(),
            BindError::NotAllowed => StanzaError::not_allowed(),
            BindError::Internal(_) => StanzaError::internal_server_error(),
        }
    }
}

/// XEP-0198: what the cm asks for when a client enables stream management.
#[derive(Clone, Copy, Debug)]
pub struct SmParams {
    /// The client asked for resumption (`resume='true'`).
    pub resume: bool,
    /// How long a detached session waits for a resumption (`max`).
    pub timeout: Duration,
    /// Unacknowledged stanzas kept at most; beyond that the session gives up
    /// resumption (detached) or the stream is closed (attached).
    pub max_queue: usize,
}

/// Why a stream management request failed (XEP-0198 §3, §5, §6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// No such (resumable) session for this user: `<item-not-found/>`.
    #[error("no such session")]
    NotFound,
    /// Stream management is already enabled: `<unexpected-request/>`.
    #[error("already enabled")]
    Unexpected,
    /// The peer acknowledged more stanzas than it was sent (§4,
    /// `<undefined-condition/>` with `handled-count-too-high`).
    #[error("acknowledged {h} stanzas, but only {sent} were sent")]
    TooHigh {
        /// The client's h.
        h: u32,
        /// Stanzas sent so far.
        sent: u32,
    },
}

/// A resumed session (XEP-0198 §5).
#[derive(Clone, Debug)]
pub struct Resumed {
    /// The session's full JID.
    pub jid: Jid,
    /// Stanzas the server handled from the client on the previous stream.
    pub h: u32,
}

/// The session service as the cm sees it.
#[async_trait]
pub trait SessionService: Send + Sync + std::fmt::Debug {
    /// Binds a resource and returns the full JID of the new session.
    async fn bind(&self, req: BindRequest) -> Result<Jid, BindError>;
    /// Ends the session of connection `conn_id` (the connection closed or failed).
    async fn unbind(&self, jid: &Jid, conn_id: u64);
    /// Routes a stanza sent by the bound session `from`; `from` is already
    /// stamped on the stanza (RFC 6120 §8.1.2.1). Returns once routed.
    async fn route(&self, from: &Jid, stanza: Stanza);

    /// XEP-0198 §3: enables stream management for a bound session. From now
    /// on every stanza to the client is counted and kept until acknowledged;
    /// `<enabled/>` is queued on the link before the first counted stanza.
    /// Returns the resumption id if resumption was granted.
    async fn sm_enable(
        &self,
        jid: &Jid,
        conn_id: u64,
        params: SmParams,
    ) -> Result<Option<String>, SmError>;
    /// XEP-0198 §4: the client acknowledged `h` stanzas; `inbound` is the
    /// number of stanzas the cm has handled from it so far.
    async fn sm_ack(&self, jid: &Jid, conn_id: u64, h: u32, inbound: u32) -> Result<(), SmError>;
    /// A stanza the cm itself sends to an SM-enabled client (ping, error
    /// replies), so that it is counted like the others.
    fn sm_send(&self, jid: &Jid, conn_id: u64, stanza: Element);
    /// The connection of an SM-enabled session failed: a resumable session
    /// hibernates (stanzas are queued) until resumed or timed out; any other
    /// is unbound. `inbound` as for [`SessionService::sm_ack`].
    async fn detach(&self, jid: &Jid, conn_id: u64, inbound: u32);
    /// XEP-0198 §5: resumes the session `previd` of `user` on connection
    /// `conn_id`. Queues `<resumed/>` and then every stanza after the
    /// client's `h` on `link`.
    async fn resume(
        &self,
        user: &Jid,
        previd: &str,
        h: u32,
        link: Arc<dyn ClientLink>,
        conn_id: u64,
    ) -> Result<Resumed, SmError>;
}

/// Federation (the s2s role) as the session service sees it: where stanzas
/// for a domain this server does not serve go (RFC 6120 §10.4).
pub trait RemoteRouter: Send + Sync + std::fmt::Debug {
    /// Queues `stanza` for its remote domain and returns at once. `from` is
    /// a local address (already stamped), `to` a remote one. When the
    /// stanza cannot be delivered (no such server, timeout, refused), the
    /// error reply (RFC 6120 §8.3, `remote-server-not-found` or
    /// `remote-server-timeout`, from the remote address the stanza was for)
    /// comes back through [`InboundRouter::route_inbound`]; error stanzas
    /// themselves are never bounced.
    fn send_remote(&self, stanza: Stanza);
}

/// The session service as the s2s role sees it.
#[async_trait]
pub trait InboundRouter: Send + Sync + std::fmt::Debug {
    /// True if `domain` is served here (an inbound stream or stanza for any
    /// other gets `<host-unknown/>`, RFC 6120 §4.9.3.6).
    fn serves(&self, domain: &str) -> bool;
    /// A stanza from a remote server (or a bounce made by the s2s role).
    /// Its `from` belongs to the authenticated remote domain and its `to` to
    /// a domain [`InboundRouter::serves`]. Returns once it was handed to
    /// the recipient's owner.
    async fn route_inbound(&self, stanza: Stanza);
}

/// A service with a domain of its own (XEP-0045 Multi-User Chat on
/// `conference.<domain>`, later upload and pubsub): the session service
/// hands it every stanza addressed to that domain or to a JID within it,
/// whoever sent it (a local account or, over federation, a remote one).
#[async_trait]
pub trait Component: Send + Sync + std::fmt::Debug {
    /// The domain the component serves (already prepared per RFC 7622).
    fn domain(&self) -> &str;
    /// Queues a stanza for the component and returns at once; stanzas are
    /// handled in the order they were queued. Its `from` is stamped.
    fn handle(&self, stanza: Stanza);
    /// Which session node of a cluster serves a stanza for this component
    /// (docs/decisions/0023-components-in-a-cluster.md). On a single node
    /// every stanza is served where it arrives.
    fn placement(&self) -> Placement {
        Placement::Single
    }
    /// With [`Placement::ByKey`]: the bare JID whose shard owner serves
    /// `stanza`, or `None` to serve it where it arrives.
    fn shard_key(&self, _stanza: &Stanza) -> Option<Jid> {
        None
    }
    /// In a cluster, when this node's shards change: the addresses for
    /// which `owns` answers `false` are served by other nodes from now on,
    /// so the state kept for them here is given up. Returns once what that
    /// sends (e.g. to the occupants of a room) has been routed.
    async fn release(&self, _owns: Ownership) {}
}

/// Answers whether this session node owns the shard of a bare JID.
pub type Ownership = std::sync::Arc<dyn Fn(&Jid) -> bool + Send + Sync>;

/// Where the stanzas of a [`Component`] are served in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On any node, where they arrive: the component keeps no state that
    /// two nodes could disagree on (XEP-0363 slots are signed URLs).
    Anywhere,
    /// On the owner of the shard of the recipient's bare JID, like an
    /// account (XEP-0045 rooms: `room@conference.example.org`); stanzas to
    /// the bare domain are served where they arrive.
    ByBareJid,
    /// The whole service on one node: the owner of the shard of its
    /// domain's JID.
    Single,
    /// On the owner of the shard of the key [`Component::shard_key`]
    /// derives from the stanza (XEP-0060 nodes: from the node name).
    ByKey,
}

/// How a component sends its stanzas (from JIDs of its domain) to users:
/// to a local account by the RFC 6121 rules for a stanza from another
/// domain, or over federation to a remote one.
#[async_trait]
pub trait ComponentRouter: Send + Sync + std::fmt::Debug {
    /// Routes `stanza`, whose `from` belongs to the component's domain.
    /// Returns once it was handed to the recipient's owner.
    async fn route_from_component(&self, stanza: Stanza);
}
