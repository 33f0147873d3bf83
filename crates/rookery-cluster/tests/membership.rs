//! Membership against a real redis-server: join, views, leave, lease expiry, epochs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HEARTBEAT_MS, RedisServer, TTL_MS, eventually};
use rookery_cluster::{ClusterError, DEFAULT_SHARDS, Membership, ReadyFilter, Role, View};
use tokio::sync::watch;

const SETTLE: Duration = Duration::from_millis(HEARTBEAT_MS * 10);

fn nodes(v: &View) -> Vec<(String, u64)> {
    v.members
        .iter()
        .map(|m| (m.node.clone(), m.epoch))
        .collect()
}

async fn join(r: &RedisServer, node: &str, roles: &[Role]) -> Arc<Membership> {
    Membership::join(
        &common::config(r),
        node,
        roles,
        &format!("{node}:7000"),
        DEFAULT_SHARDS,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn three_members_see_each_other() {
    let r = RedisServer::start();
    let a = join(&r, "s-a", &[Role::Session]).await;
    // The first view is loaded by join and includes the node itself.
    assert!(a.view().is_live("s-a", a.me().epoch));
    assert_eq!(a.view().version, 1);
    let mut watch_a = a.watch();
    let b = join(&r, "s-b", &[Role::Session]).await;
    let c = join(&r, "cm-c", &[Role::Cm]).await;
    assert!(a.me().epoch < b.me().epoch && b.me().epoch < c.me().epoch);
    assert_eq!(c.me().roles, vec![Role::Cm]);
    for m in [&a, &b, &c] {
        let ok = eventually(SETTLE, || m.view().members.len() == 3).await;
        assert!(ok, "{} sees {:?}", m.me().node, nodes(&m.view()));
        let v = m.view();
        assert_eq!(
            nodes(&v),
            vec![
                ("cm-c".into(), c.me().epoch),
                ("s-a".into(), a.me().epoch),
                ("s-b".into(), b.me().epoch)
            ]
        );
        assert_eq!(v.member("cm-c").unwrap().grpc, "cm-c:7000");
        assert_eq!(v.session_nodes().count(), 2);
        assert_eq!(
            v.owned_shards("s-a").len() + v.owned_shards("s-b").len(),
            usize::from(DEFAULT_SHARDS)
        );
        assert!(!m.fenced());
    }
    // The watch got the changes, and versions increase.
    assert!(watch_a.has_changed().unwrap());
    let seen = watch_a.borrow_and_update().clone();
    assert!(seen.version > 1);
    // No change in membership: no new view for a few heartbeats.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 4)).await;
    assert!(!watch_a.has_changed().unwrap());
    assert_eq!(a.view().version, seen.version);
}

#[tokio::test]
async fn leave_is_seen_by_the_others() {
    let r = RedisServer::start();
    let a = join(&r, "s-a", &[Role::Session]).await;
    let b = join(&r, "s-b", &[Role::Session]).await;
    assert!(eventually(SETTLE, || a.view().members.len() == 2).await);
    let mut w = a.watch();
    let t0 = Instant::now();
    b.leave().await;
    assert!(b.fenced());
    assert!(!b.view().is_live("s-b", b.me().epoch));
    // Seen at a's next heartbeat, well before the lease would have lapsed.
    tokio::time::timeout(SETTLE, w.wait_for(|v| v.members.len() == 1))
        .await
        .expect("a never saw b leave")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_millis(TTL_MS));
    assert_eq!(a.view().shard_owner(5).unwrap().node, "s-a");
    assert_eq!(
        a.view().owned_shards("s-a").len(),
        usize::from(DEFAULT_SHARDS)
    );
}

#[tokio::test]
async fn a_stopped_member_expires_after_the_ttl_and_fences_itself_first() {
    let r = RedisServer::start();
    let a = join(&r, "s-a", &[Role::Session]).await;
    let b = join(&r, "s-b", &[Role::Session]).await;
    assert!(eventually(SETTLE, || a.view().members.len() == 2).await);
    let t0 = Instant::now();
    b.stop_heartbeat();
    assert!(!b.fenced());
    let mut b_fenced_at = None;
    let mut gone_at = None;
    let deadline = t0 + Duration::from_millis(TTL_MS * 4);
    while Instant::now() < deadline && gone_at.is_none() {
        if b_fenced_at.is_none() && b.fenced() {
            b_fenced_at = Some(t0.elapsed());
        }
        if !a.view().is_live("s-b", b.me().epoch) {
            gone_at = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gone_at = gone_at.expect("b never expired");
    let b_fenced_at = b_fenced_at.expect("b never considered itself fenced");
    // Not before its lease could have lapsed (minus one heartbeat of slack), ...
    assert!(
        gone_at >= Duration::from_millis(TTL_MS - HEARTBEAT_MS),
        "expired too early: {gone_at:?}"
    );
    // ... and b knew it was dead before a declared it dead.
    assert!(b_fenced_at < gone_at, "{b_fenced_at:?} vs {gone_at:?}");
    assert_eq!(a.view().members.len(), 1);
}

#[tokio::test]
async fn dropping_the_membership_stops_the_heartbeat() {
    let r = RedisServer::start();
    let a = join(&r, "s-a", &[Role::Session]).await;
    let b = join(&r, "s-b", &[Role::Session]).await;
    assert!(eventually(SETTLE, || a.view().members.len() == 2).await);
    drop(b);
    assert!(
        eventually(Duration::from_millis(TTL_MS * 3), || a.view().members.len()
            == 1)
        .await
    );
}

#[tokio::test]
async fn rejoin_takes_a_higher_epoch_and_fences_the_old_incarnation() {
    let r = RedisServer::start();
    let other = join(&r, "s-other", &[Role::Session]).await;
    let old = join(&r, "s-a", &[Role::Session]).await;
    let new = join(&r, "s-a", &[Role::Session]).await;
    assert!(new.me().epoch > old.me().epoch);
    assert!(!new.fenced());
    assert!(
        eventually(SETTLE, || old.fenced()).await,
        "old incarnation not fenced"
    );
    // The old incarnation stays fenced, and never takes its record back.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 4)).await;
    assert!(old.fenced());
    assert!(!new.fenced());
    assert!(
        eventually(SETTLE, || other.view().is_live("s-a", new.me().epoch)).await,
        "{:?}",
        nodes(&other.view())
    );
    assert!(!other.view().is_live("s-a", old.me().epoch));
    // A graceful leave of the old incarnation does not remove the new one.
    old.leave().await;
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 3)).await;
    assert!(other.view().is_live("s-a", new.me().epoch));
}

#[tokio::test]
async fn shard_count_mismatch_is_refused() {
    let r = RedisServer::start();
    let _a = join(&r, "s-a", &[Role::Session]).await;
    let err = Membership::join(&common::config(&r), "s-b", &[Role::Session], "b:1", 512)
        .await
        .unwrap_err();
    match err {
        ClusterError::Config(msg) => assert!(msg.contains("512") && msg.contains("1024"), "{msg}"),
        e => panic!("expected Config, got {e:?}"),
    }
    // Another prefix is another cluster, with its own shard count.
    let mut cfg = common::config(&r);
    cfg.prefix = "other".into();
    let b = Membership::join(&cfg, "s-b", &[Role::Session], "b:1", 512)
        .await
        .unwrap();
    assert_eq!(b.view().shards, 512);
    assert_eq!(b.view().members.len(), 1);
}

#[tokio::test]
async fn invalid_input_is_a_config_error() {
    let r = RedisServer::start();
    for node in ["", "a b", "x{y}"] {
        let e = Membership::join(&common::config(&r), node, &[], "x:1", 16)
            .await
            .unwrap_err();
        assert!(matches!(e, ClusterError::Config(_)), "{node:?}: {e:?}");
    }
    let mut cfg = common::config(&r);
    cfg.ttl_ms = cfg.heartbeat_ms;
    let e = Membership::join(&cfg, "n", &[], "x:1", 16)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Config(_)));
    let e = Membership::join(&common::config(&r), "n", &[], "x:1", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Config(_)));
}

/// A readiness filter (decision 0014: Kubernetes says which pods are ready) narrows the
/// live Redis members; its changes show at once, and the view is the same for everyone.
#[tokio::test]
async fn readiness_filter_narrows_the_view() {
    let r = RedisServer::start();
    let ready = |names: &[&str]| ReadyFilter {
        session: Some(names.iter().map(|s| s.to_string()).collect()),
        cm: None,
    };
    let (tx, rx) = watch::channel(ready(&["s-a"]));
    let join = |node: &'static str, roles: &'static [Role]| {
        let (cfg, rx) = (common::config(&r), rx.clone());
        async move {
            Membership::join_with_readiness(&cfg, node, roles, "x:7000", DEFAULT_SHARDS, rx)
                .await
                .unwrap()
        }
    };
    let a = join("s-a", &[Role::Session]).await;
    // Not ready: joins (epoch, lease), but is not in any view, its own included.
    let b = join("s-b", &[Role::Session]).await;
    let c = join("cm-c", &[Role::Cm]).await;
    assert!(!b.view().is_live("s-b", b.me().epoch));
    assert!(b.view().owned_shards("s-b").is_empty());
    assert!(!b.fenced());
    let wait = |m: &Arc<Membership>, want: &'static [&'static str]| {
        let mut w = m.watch();
        async move {
            tokio::time::timeout(
                SETTLE,
                w.wait_for(|v| {
                    v.members
                        .iter()
                        .map(|m| m.node.as_str())
                        .eq(want.iter().copied())
                }),
            )
            .await
            .expect("the view in time")
            .unwrap();
        }
    };
    for m in [&a, &b, &c] {
        wait(m, &["cm-c", "s-a"]).await;
    }
    // Ready: in every view, without waiting for Redis.
    tx.send_replace(ready(&["s-a", "s-b"]));
    for m in [&a, &b, &c] {
        wait(m, &["cm-c", "s-a", "s-b"]).await;
    }
    assert_eq!(
        a.view().owned_shards("s-a").len() + a.view().owned_shards("s-b").len(),
        usize::from(DEFAULT_SHARDS)
    );
    // Not ready any more: out at once, well before a lease could lapse; still alive
    // in Redis (not fenced).
    let t0 = Instant::now();
    tx.send_replace(ready(&["s-b"]));
    for m in [&a, &b, &c] {
        wait(m, &["cm-c", "s-b"]).await;
    }
    assert!(t0.elapsed() < Duration::from_millis(TTL_MS));
    assert!(!a.fenced());
    assert_eq!(
        b.view().owned_shards("s-b").len(),
        usize::from(DEFAULT_SHARDS)
    );
    // The readiness source goes away: its last state stays in force, and Redis still
    // removes members whose lease lapses.
    drop(tx);
    b.leave().await;
    for m in [&a, &c] {
        wait(m, &["cm-c"]).await;
    }
}
