//! Redis going away and coming back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{HEARTBEAT_MS, RedisServer, TIMEOUT_MS, TTL_MS, eventually};
use rookery_cluster::{ClusterError, DEFAULT_SHARDS, Membership, Role, RouteEntry, Routes};

#[tokio::test]
async fn redis_down_fails_fast_fences_and_recovers() {
    let mut r = RedisServer::start();
    let a = Membership::join(
        &common::config(&r),
        "s-a",
        &[Role::Session],
        "a:1",
        DEFAULT_SHARDS,
    )
    .await
    .unwrap();
    let routes = Routes::new(&a);
    let epoch = a.me().epoch;
    assert!(!a.fenced());

    r.kill();
    // Commands fail within the deadline instead of hanging.
    for _ in 0..3 {
        let t0 = Instant::now();
        let e = routes.resources("alice@example.org").await.unwrap_err();
        assert!(matches!(e, ClusterError::Redis(_)), "{e:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(TIMEOUT_MS + 200),
            "took {:?}",
            t0.elapsed()
        );
    }
    // The node gives up ownership once its lease can no longer be trusted.
    assert!(
        eventually(Duration::from_millis(TTL_MS * 2), || a.fenced()).await,
        "never fenced while Redis was down"
    );
    let e = routes.claim_shard(1, "s-a", epoch).await.unwrap_err();
    assert_eq!(e, ClusterError::Fenced);

    // Redis comes back empty (no persistence): the same Membership re-registers with the
    // same epoch, and the epoch counter is restored so a new node gets a higher one.
    r.restart();
    // A node joining at once (possibly before a's next heartbeat) still gets a higher
    // epoch: the lost counter is reseeded from the server clock.
    let b = Membership::join(
        &common::config(&r),
        "s-b",
        &[Role::Session],
        "b:1",
        DEFAULT_SHARDS,
    )
    .await
    .unwrap();
    assert!(
        b.me().epoch > epoch,
        "epoch went backwards: {} <= {epoch}",
        b.me().epoch
    );
    assert!(
        eventually(Duration::from_secs(5), || !a.fenced()).await,
        "membership did not recover"
    );
    assert!(
        eventually(Duration::from_millis(HEARTBEAT_MS * 10), || b
            .view()
            .is_live("s-a", epoch))
        .await,
        "{:?}",
        b.view()
    );
    assert!(
        eventually(Duration::from_millis(HEARTBEAT_MS * 10), || a
            .view()
            .members
            .len()
            == 2)
        .await
    );
    // Routes work again.
    routes
        .claim_shard(routes.shard_of("alice@example.org"), "s-a", epoch)
        .await
        .unwrap();
    let e = RouteEntry {
        cm: "cm".into(),
        cm_epoch: 1,
        conn_id: 1,
        session: "s-a".into(),
        session_epoch: epoch,
        priority: None,
        state: "{}".into(),
    };
    routes.put("alice@example.org/x", &e).await.unwrap();
    assert_eq!(
        routes.resources("alice@example.org").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn join_fails_fast_without_redis() {
    let mut r = RedisServer::start();
    let cfg = common::config(&r);
    r.kill();
    let t0 = Instant::now();
    let e = Membership::join(&cfg, "s-a", &[Role::Session], "a:1", DEFAULT_SHARDS)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Redis(_)), "{e:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(TIMEOUT_MS * 2 + 200),
        "{:?}",
        t0.elapsed()
    );
}
