//! Shared types of Rookery's roles: stanzas, errors, the role traits through
//! which the connection manager and the session service meet, the user store
//! trait, and metrics.
//!
//! In one process the role traits are direct calls on `Arc<dyn …>`; in a
//! cluster the same traits are implemented by gRPC clients and servers.

pub mod error;
pub mod metrics;
pub mod roles;
pub mod stanza;
pub mod telemetry;
pub mod users;

pub use error::{ErrorType, StanzaError, StreamError};
pub use roles::{
    BindError, BindRequest, ClientLink, Component, ComponentRouter, DeliverError, InboundRouter,
    Ownership, Placement, RemoteRouter, SessionService,
};
pub use stanza::{Stanza, StanzaKind, new_id};
pub use users::{StoreError, UserStore};

pub use rookery_jid::Jid;
pub use rookery_xml::{Element, ns};
