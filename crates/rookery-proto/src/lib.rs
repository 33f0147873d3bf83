//! The gRPC messages and services between Rookery's roles, generated at
//! build time from the versioned packages in `proto/` (DESIGN.md "One
//! process or many"; docs/decisions/0010-cluster.md).
#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// `rookery.session.v1`: the session service (cm → owner of the sender,
/// session node → owner of the recipient).
pub mod session {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("rookery.session.v1");
    }
}

/// `rookery.cm.v1`: the connection manager's delivery service.
pub mod cm {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("rookery.cm.v1");
    }
}

/// `rookery.s2s.v1`: federation (session node → s2s node).
pub mod s2s {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("rookery.s2s.v1");
    }
}
