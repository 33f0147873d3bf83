//! Against a real three-master Redis Cluster: every script's keys must share a slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{HEARTBEAT_MS, RedisCluster, TTL_MS, eventually};
use rookery_cluster::{ClusterError, DEFAULT_SHARDS, Membership, Role, RouteEntry, Routes};

#[tokio::test]
async fn membership_and_routes_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let cfg = common::cluster_config(&cluster);
    let a = Membership::join(&cfg, "s-a", &[Role::Session], "a:1", DEFAULT_SHARDS)
        .await
        .unwrap();
    let b = Membership::join(
        &cfg,
        "s-b",
        &[Role::Session, Role::Cm],
        "b:1",
        DEFAULT_SHARDS,
    )
    .await
    .unwrap();
    assert!(a.redis().is_cluster());
    assert!(
        eventually(Duration::from_millis(HEARTBEAT_MS * 10), || a
            .view()
            .members
            .len()
            == 2)
        .await
    );
    let ra = Routes::new(&a);
    let rb = Routes::new(&b);

    // Users spread over many shards, hence over all three masters.
    for i in 0..60u64 {
        let bare = format!("user{i}@example.org");
        let shard = ra.shard_of(&bare);
        let owner = a.view().owner_of(&bare).unwrap().clone();
        let (routes, m) = if owner.node == "s-a" {
            (&ra, &a)
        } else {
            (&rb, &b)
        };
        routes
            .claim_shard(shard, &m.me().node, m.me().epoch)
            .await
            .unwrap();
        let entry = RouteEntry {
            cm: format!("cm-{}", i % 2),
            cm_epoch: 1,
            conn_id: i,
            session: m.me().node.clone(),
            session_epoch: m.me().epoch,
            priority: Some(1),
            state: "{}".into(),
        };
        routes.put(&format!("{bare}/r"), &entry).await.unwrap();
        // The other node is not the claimant.
        let other = if owner.node == "s-a" { &rb } else { &ra };
        let wrong = RouteEntry {
            session: "nobody".into(),
            ..entry.clone()
        };
        assert_eq!(
            other.put(&format!("{bare}/r2"), &wrong).await.unwrap_err(),
            ClusterError::Fenced
        );
        assert_eq!(
            ra.resources(&bare).await.unwrap(),
            vec![("r".to_owned(), entry)]
        );
        assert!(rb.shard_users(shard).await.unwrap().contains(&bare));
    }
    assert_eq!(ra.purge_cm("cm-0", 1).await.unwrap(), 30);
    assert!(ra.resources("user0@example.org").await.unwrap().is_empty());
    assert_eq!(ra.resources("user1@example.org").await.unwrap().len(), 1);

    // Leases and leave work across the cluster too.
    b.leave().await;
    assert!(
        eventually(Duration::from_millis(HEARTBEAT_MS * 10), || a
            .view()
            .members
            .len()
            == 1)
        .await
    );
    a.stop_heartbeat();
    assert!(eventually(Duration::from_millis(TTL_MS * 2), || a.fenced()).await);
}
