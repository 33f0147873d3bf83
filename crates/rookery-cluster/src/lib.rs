//! Cluster membership, shard ownership and routes in Redis.
//!
//! This crate is the Redis layer of cluster mode (see
//! `docs/decisions/0011-redis-cluster-state.md` for the key layout):
//!
//! - [`Membership`]: every node joins with a fresh *epoch* (a fencing token taken from a
//!   global counter), renews a TTL lease by heartbeat, and watches the set of live
//!   members as a [`View`].
//! - Virtual shards: a bare JID maps to one of a fixed number of shards ([`shard_of`]);
//!   each shard is owned by one live session node chosen by rendezvous hashing
//!   ([`rendezvous`], [`View::shard_owner`]).
//! - [`Routes`]: the online-session registry (full JID → connection manager and session
//!   owner), where every write is fenced by the shard's current claim.
//!
//! Leases use the Redis server's clock (`TIME` inside Lua), never the local one. Every
//! Redis command has a deadline ([`RedisConfig::timeout_ms`]), and errors surface as
//! [`ClusterError::Redis`]; nothing here panics on a Redis failure.

mod config;
mod conn;
mod error;
mod hash;
mod keys;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod membership;
mod ready;
mod routes;
mod scripts;
mod view;

pub use config::{KubernetesConfig, RedisConfig};
pub use conn::Redis;
pub use error::ClusterError;
pub use hash::{DEFAULT_SHARDS, rendezvous, rendezvous_weight, shard_of};
pub use membership::{Member, Membership, Role};
pub use ready::ReadyFilter;
pub use routes::{RouteEntry, Routes};
pub use view::View;

/// The `redis` crate this one is built on, re-exported so that users of [`Redis::query`]
/// and [`Redis::invoke`] build commands with the same version.
pub use redis;

#[cfg(feature = "test-util")]
pub mod testing;
