//! Test helper: the crate's own `testing` servers with short timings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rookery_cluster::RedisConfig;
pub use rookery_cluster::testing::{RedisCluster, RedisServer};

/// Short timings so that lease tests take well under a second each.
pub const HEARTBEAT_MS: u64 = 100;
pub const TTL_MS: u64 = 600;
pub const TIMEOUT_MS: u64 = 300;

/// A config for a single server with the short test timings.
pub fn config(r: &RedisServer) -> RedisConfig {
    RedisConfig {
        urls: vec![r.url()],
        cluster: false,
        prefix: "test".into(),
        heartbeat_ms: HEARTBEAT_MS,
        ttl_ms: TTL_MS,
        timeout_ms: TIMEOUT_MS,
    }
}

/// A config for a Redis Cluster with the short test timings.
pub fn cluster_config(c: &RedisCluster) -> RedisConfig {
    RedisConfig {
        urls: c.nodes.iter().map(RedisServer::url).collect(),
        cluster: true,
        prefix: "test".into(),
        heartbeat_ms: HEARTBEAT_MS,
        ttl_ms: TTL_MS,
        timeout_ms: 1000,
    }
}

/// Polls `f` every 10 ms until it is true or `within` has passed; returns whether it
/// became true. (For conditions on views that several members compute; a
/// single member's view changes are awaited on its watch channel.)
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
