//! The role traits through which the connection manager (cm) and the session
//! service meet (DESIGN.md "Roles and the path of a stanza").
//!
//! In one process these are direct calls on `Arc<dyn …>`, with no serialization;
//! the cluster mode implements the same traits over gRPC.

use std::sync::Arc;

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
}
