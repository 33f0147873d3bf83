//! The other session nodes of a cluster, as the session logic sees them.
//!
//! Everything the RFC 6121 rules do on behalf of a recipient (delivery to
//! its resources, offline storage, its archive, inbound presence and
//! subscription handling) runs on the node that owns the recipient's shard;
//! a node that is not the owner hands the job over with [`Peers::forward`]
//! (DESIGN.md "Roles and the path of a stanza": cm → owner of sender →
//! owner of recipient → cm). On one node there are no peers and every
//! account is local.

use async_trait::async_trait;
use rookery_core::{Jid, StanzaError};
use rookery_xml::Element;

/// What the owner of the recipient is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardKind {
    /// The recipient side of RFC 6120 §10.5 / RFC 6121 §8.5 for a stanza
    /// to a local account; `archived` for a message already in the
    /// recipient's archive (XEP-0198 rerouting).
    Route {
        /// Already archived for the recipient.
        archived: bool,
    },
    /// Presence for a local account: the inbound rules of RFC 6121 §3, §4.
    Presence,
    /// A stanza for one bound full JID as it is (replies and errors).
    Deliver,
    /// A stanza from a remote server for a local address
    /// ([`rookery_core::InboundRouter::route_inbound`] on the owner).
    FromRemote,
    /// A stanza for a component whose state for `to` (a MUC room's bare
    /// JID) lives on the owner of its shard
    /// ([`rookery_core::Placement`]); the stanza keeps its own `to`.
    Component,
}

/// One job for the owner of `to`'s account.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The job.
    pub kind: ForwardKind,
    /// The sender as routing knows it (the stanza's `from`).
    pub from: Jid,
    /// The recipient (a local account, bare or full).
    pub to: Jid,
    /// The stanza.
    pub stanza: Element,
}

/// The cluster's session nodes.
#[async_trait]
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// True if this node owns the shard of the account `bare`.
    fn owns(&self, bare: &Jid) -> bool;
    /// Hands `job` to the owner of `job.to`'s account and returns once that
    /// owner acknowledged it, retrying while the owner changes; an error
    /// once no owner took it within the deadline.
    async fn forward(&self, job: Forward) -> Result<(), StanzaError>;
    /// A resource of an account this node owns was bound, changed or (with
    /// `None`) removed: what a new owner needs to rebuild it after a
    /// handover. Called in the order of the changes; must not block.
    fn resource_changed(&self, _jid: &Jid, _conn_id: u64, _state: Option<ResourceState>) {}
}

/// What a session node keeps about one bound resource, beside its link:
/// enough for a new owner of the account to take it over (DESIGN.md "What
/// a failure costs": the new owner rebuilds its sessions from Redis).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceState {
    /// Priority of its available presence; `None` while unavailable.
    pub presence: Option<i8>,
    /// Its last broadcast presence (XML), to answer probes.
    pub last_presence: Option<String>,
    /// It requested the roster (RFC 6121 §2.1.6).
    pub interested: bool,
    /// It requested the block list (XEP-0191).
    pub blocklist_interested: bool,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
    /// Directed presence targets (RFC 6121 §4.6).
    pub directed: Vec<String>,
    /// Status of its last unavailable presence (XEP-0012).
    pub last_status: Option<String>,
    /// XEP-0198 state, once enabled.
    pub sm: Option<SmState>,
}

/// The XEP-0198 part of a [`ResourceState`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SmState {
    /// Resumption id, if resumption was granted.
    pub id: Option<String>,
    /// Resumption timeout, seconds.
    pub timeout_secs: u64,
    /// Most unacknowledged stanzas kept.
    pub max_queue: usize,
    /// The stream is gone and the session waits for a resumption.
    pub detached: bool,
    /// The counters and unacknowledged stanzas, written only when an owner
    /// hands the account over gracefully (a rolling restart, a node
    /// joining); a new owner that finds them continues exactly where the
    /// old one stopped. Without them (the old owner died) the counters are
    /// rebased on the client's next acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<SmQueue>,
}

/// The XEP-0198 counters and queue of a session handed over (§4).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SmQueue {
    /// Stanzas sent since `<enable/>` (mod 2^32).
    pub sent: u32,
    /// The last `h` the client acknowledged.
    pub acked: u32,
    /// Stanzas handled from the client, as last reported by its cm.
    pub inbound: u32,
    /// The stanzas `acked + 1 ..= sent`, serialized.
    pub stanzas: Vec<String>,
}
