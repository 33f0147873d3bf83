//! The routes registry against a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, TTL_MS, eventually};
use rookery_cluster::{ClusterError, DEFAULT_SHARDS, Membership, Role, RouteEntry, Routes};

async fn session(r: &RedisServer, node: &str) -> Arc<Membership> {
    Membership::join(
        &common::config(r),
        node,
        &[Role::Session],
        "x:1",
        DEFAULT_SHARDS,
    )
    .await
    .unwrap()
}

fn entry(
    m: &Membership,
    cm: &str,
    cm_epoch: u64,
    conn_id: u64,
    priority: Option<i8>,
) -> RouteEntry {
    RouteEntry {
        cm: cm.into(),
        cm_epoch,
        conn_id,
        session: m.me().node.clone(),
        session_epoch: m.me().epoch,
        priority,
        state: format!(r#"{{"conn":{conn_id}}}"#),
    }
}

#[tokio::test]
async fn claim_put_remove_round_trip() {
    let r = RedisServer::start();
    let m = session(&r, "s-a").await;
    let routes = Routes::new(&m);
    let me = m.me().clone();
    let shard = routes.shard_of("alice@example.org");
    assert_eq!(shard, 656);
    assert_eq!(routes.claimant(shard).await.unwrap(), None);
    routes.claim_shard(shard, &me.node, me.epoch).await.unwrap();
    assert_eq!(
        routes.claimant(shard).await.unwrap(),
        Some((me.node.clone(), me.epoch))
    );

    // u64::MAX would lose precision in a Lua double: it must still match exactly.
    let big = u64::MAX - 1;
    let phone = entry(&m, "cm-1", 4, big, Some(5));
    let laptop = entry(&m, "cm-2", 6, 2, None);
    routes.put("alice@example.org/phone", &phone).await.unwrap();
    routes
        .put("alice@example.org/laptop", &laptop)
        .await
        .unwrap();
    let got = routes.resources("alice@example.org").await.unwrap();
    assert_eq!(
        got,
        vec![
            ("laptop".to_owned(), laptop.clone()),
            ("phone".to_owned(), phone.clone())
        ]
    );
    assert_eq!(
        routes.shard_users(shard).await.unwrap(),
        vec!["alice@example.org".to_owned()]
    );
    assert!(
        routes
            .resources("bob@example.org")
            .await
            .unwrap()
            .is_empty()
    );

    // Replacing a route (new presence).
    let phone2 = RouteEntry {
        priority: Some(-1),
        ..phone.clone()
    };
    routes
        .put("alice@example.org/phone", &phone2)
        .await
        .unwrap();
    assert_eq!(
        routes.resources("alice@example.org").await.unwrap()[1].1,
        phone2
    );

    // Wrong conn_id: nothing removed.
    assert!(
        !routes
            .remove("alice@example.org/phone", big - 1, &me.node, me.epoch)
            .await
            .unwrap()
    );
    assert!(
        !routes
            .remove("alice@example.org/tablet", big, &me.node, me.epoch)
            .await
            .unwrap()
    );
    assert_eq!(
        routes.resources("alice@example.org").await.unwrap().len(),
        2
    );
    assert!(
        routes
            .remove("alice@example.org/phone", big, &me.node, me.epoch)
            .await
            .unwrap()
    );
    assert!(
        !routes
            .remove("alice@example.org/phone", big, &me.node, me.epoch)
            .await
            .unwrap()
    );
    assert_eq!(routes.shard_users(shard).await.unwrap().len(), 1);
    assert!(
        routes
            .remove("alice@example.org/laptop", 2, &me.node, me.epoch)
            .await
            .unwrap()
    );
    assert!(
        routes
            .resources("alice@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(routes.shard_users(shard).await.unwrap().is_empty());

    // A bare JID is not a full JID.
    let e = routes.put("alice@example.org", &laptop).await.unwrap_err();
    assert!(matches!(e, ClusterError::Config(_)));
}

#[tokio::test]
async fn writes_by_a_non_claimant_are_fenced() {
    let r = RedisServer::start();
    let a = session(&r, "s-a").await;
    let b = session(&r, "s-b").await;
    let ra = Routes::new(&a);
    let rb = Routes::new(&b);
    let bare = "juliet@capulet.lit";
    let full = "juliet@capulet.lit/balcony";
    let shard = ra.shard_of(bare);

    // No claim at all: fenced.
    let e = ra
        .put(full, &entry(&a, "cm", 1, 1, None))
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::Fenced);

    ra.claim_shard(shard, &a.me().node, a.me().epoch)
        .await
        .unwrap();
    ra.put(full, &entry(&a, "cm", 1, 1, None)).await.unwrap();
    // b is not the claimant.
    assert_eq!(
        rb.put(full, &entry(&b, "cm", 1, 9, None))
            .await
            .unwrap_err(),
        ClusterError::Fenced
    );
    assert_eq!(
        rb.remove(full, 1, &b.me().node, b.me().epoch)
            .await
            .unwrap_err(),
        ClusterError::Fenced
    );
    // The shard moves to b: a's writes are now fenced, b's succeed, and b sees the route.
    rb.claim_shard(shard, &b.me().node, b.me().epoch)
        .await
        .unwrap();
    assert_eq!(
        ra.put(full, &entry(&a, "cm", 1, 2, None))
            .await
            .unwrap_err(),
        ClusterError::Fenced
    );
    assert_eq!(
        ra.remove(full, 1, &a.me().node, a.me().epoch)
            .await
            .unwrap_err(),
        ClusterError::Fenced
    );
    assert_eq!(rb.shard_users(shard).await.unwrap(), vec![bare.to_owned()]);
    assert_eq!(rb.resources(bare).await.unwrap()[0].1.session, "s-a");
    rb.put(full, &entry(&b, "cm", 1, 1, Some(0))).await.unwrap();
    assert_eq!(rb.resources(bare).await.unwrap()[0].1.session, "s-b");
    assert!(
        rb.remove(full, 1, &b.me().node, b.me().epoch)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_older_incarnation_cannot_take_a_claim_back() {
    let r = RedisServer::start();
    let old = session(&r, "s-a").await;
    let new = session(&r, "s-a").await;
    let routes = Routes::new(&new);
    routes.claim_shard(3, "s-a", new.me().epoch).await.unwrap();
    let e = routes
        .claim_shard(3, "s-a", old.me().epoch)
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::Fenced);
    assert_eq!(
        routes.claimant(3).await.unwrap(),
        Some(("s-a".into(), new.me().epoch))
    );
    // Another node can take it (ownership moves by rendezvous, not by epoch order).
    routes.claim_shard(3, "s-b", 1).await.unwrap();
}

#[tokio::test]
async fn a_fenced_node_cannot_write_in_its_own_name() {
    let r = RedisServer::start();
    let a = session(&r, "s-a").await;
    let routes = Routes::new(&a);
    let shard = routes.shard_of("romeo@montague.lit");
    routes
        .claim_shard(shard, &a.me().node, a.me().epoch)
        .await
        .unwrap();
    routes
        .put("romeo@montague.lit/x", &entry(&a, "cm", 1, 1, None))
        .await
        .unwrap();
    a.stop_heartbeat();
    assert!(eventually(Duration::from_millis(TTL_MS * 2), || a.fenced()).await);
    let e = routes
        .put("romeo@montague.lit/y", &entry(&a, "cm", 1, 2, None))
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::Fenced);
    let e = routes
        .claim_shard(shard, &a.me().node, a.me().epoch)
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::Fenced);
    // Reads still work.
    assert_eq!(
        routes.resources("romeo@montague.lit").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn purge_cm_removes_exactly_that_cm_incarnation() {
    let r = RedisServer::start();
    let a = session(&r, "s-a").await;
    let routes = Routes::new(&a);
    let me = a.me().clone();
    for s in 0..DEFAULT_SHARDS {
        routes.claim_shard(s, &me.node, me.epoch).await.unwrap();
    }
    // 300 users: each has a route via cm-1@1, one via cm-1@2 (a newer incarnation of the
    // same cm) and, for every third user, one via cm-2@1.
    let mut expected = 0;
    for i in 0..300u64 {
        let bare = format!("user{i}@example.org");
        routes
            .put(&format!("{bare}/a"), &entry(&a, "cm-1", 1, i, None))
            .await
            .unwrap();
        expected += 1;
        routes
            .put(&format!("{bare}/b"), &entry(&a, "cm-1", 2, i, None))
            .await
            .unwrap();
        if i % 3 == 0 {
            routes
                .put(&format!("{bare}/c"), &entry(&a, "cm-2", 1, i, None))
                .await
                .unwrap();
        }
    }
    // user0's /a moved to cm-2 (resumed elsewhere) and user1's /a was removed: neither
    // counts as cm-1@1's any more.
    routes
        .put("user0@example.org/a", &entry(&a, "cm-2", 1, 1000, None))
        .await
        .unwrap();
    assert!(
        routes
            .remove("user1@example.org/a", 1, &me.node, me.epoch)
            .await
            .unwrap()
    );
    expected -= 2;

    let n = routes.purge_cm("cm-1", 1).await.unwrap();
    assert_eq!(n, expected);
    for i in 0..300u64 {
        let bare = format!("user{i}@example.org");
        let res = routes.resources(&bare).await.unwrap();
        let names: Vec<&str> = res.iter().map(|(r, _)| r.as_str()).collect();
        assert!(
            res.iter()
                .all(|(_, e)| !(e.cm == "cm-1" && e.cm_epoch == 1)),
            "{bare}: {res:?}"
        );
        let mut want = if i == 0 {
            vec!["a", "b", "c"]
        } else if i % 3 == 0 {
            vec!["b", "c"]
        } else {
            vec!["b"]
        };
        want.sort();
        assert_eq!(names, want, "{bare}");
    }
    // Idempotent.
    assert_eq!(routes.purge_cm("cm-1", 1).await.unwrap(), 0);
    // Users whose last route goes disappear from their shard.
    assert_eq!(routes.purge_cm("cm-1", 2).await.unwrap(), 300);
    let mut users = 0;
    for s in 0..DEFAULT_SHARDS {
        users += routes.shard_users(s).await.unwrap().len();
    }
    assert_eq!(users, 100);
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    #[allow(dead_code)]
    async fn all(m: Arc<Membership>, r: Routes, e: RouteEntry) {
        send(Membership::join(m.config(), "n", &[], "g", 1));
        send(m.leave());
        send(r.put("a@b/c", &e));
        send(r.remove("a@b/c", 1, "n", 1));
        send(r.resources("a@b"));
        send(r.purge_cm("n", 1));
    }
}

/// A graceful handover: the owner releases its claim (only its own), after
/// which its writes for the shard are fenced and the next owner claims it.
#[tokio::test]
async fn release_gives_up_only_ones_own_claim() {
    let r = RedisServer::start();
    let a = session(&r, "s-a").await;
    let b = session(&r, "s-b").await;
    let (ra, rb) = (Routes::new(&a), Routes::new(&b));
    let (ma, mb) = (a.me().clone(), b.me().clone());
    let shard = ra.shard_of("alice@example.org");
    ra.claim_shard(shard, &ma.node, ma.epoch).await.unwrap();
    ra.put("alice@example.org/r", &entry(&a, "cm-1", 1, 1, None))
        .await
        .unwrap();
    // Someone else's release changes nothing.
    assert!(!rb.release_shard(shard, &mb.node, mb.epoch).await.unwrap());
    assert!(
        !ra.release_shard(shard, &ma.node, ma.epoch + 1)
            .await
            .unwrap()
    );
    assert_eq!(
        ra.claimant(shard).await.unwrap(),
        Some((ma.node.clone(), ma.epoch))
    );
    // Released: no claimant, the old owner's writes are refused, the
    // routes stay for the next owner.
    assert!(ra.release_shard(shard, &ma.node, ma.epoch).await.unwrap());
    assert_eq!(ra.claimant(shard).await.unwrap(), None);
    let e = ra
        .put("alice@example.org/r", &entry(&a, "cm-1", 1, 2, None))
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::Fenced), "{e:?}");
    rb.claim_shard(shard, &mb.node, mb.epoch).await.unwrap();
    let got = rb.resources("alice@example.org").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.conn_id, 1);
    // Releasing again is a no-op.
    assert!(!ra.release_shard(shard, &ma.node, ma.epoch).await.unwrap());
}
