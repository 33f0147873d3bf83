//! Shard and rendezvous hashing: stability, balance, minimal movement. No Redis needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use rookery_cluster::{
    DEFAULT_SHARDS, Member, Role, View, rendezvous, rendezvous_weight, shard_of,
};

fn member(node: &str, epoch: u64, roles: &[Role]) -> Member {
    Member {
        node: node.into(),
        epoch,
        roles: roles.to_vec(),
        grpc: format!("{node}:7000"),
    }
}

fn session(node: &str) -> Member {
    member(node, 1, &[Role::Session])
}

/// Hard-coded values (computed independently with Python's hashlib): a change of the
/// hash would move every user of a running cluster, so it must fail here.
#[test]
fn shard_of_is_pinned() {
    assert_eq!(shard_of("alice@example.org", 1024), 656);
    assert_eq!(shard_of("bob@example.org", 1024), 941);
    assert_eq!(shard_of("carol@example.net", 1024), 586);
    assert_eq!(shard_of("", 1024), 20);
    assert_eq!(shard_of("alice@example.org", 7), 0);
    assert_eq!(shard_of("juliet@capulet.lit", 65535), 11349);
    assert_eq!(shard_of("alice@example.org", 0), 0);
    assert_eq!(DEFAULT_SHARDS, 1024);
}

#[test]
fn rendezvous_weight_is_pinned() {
    assert_eq!(rendezvous_weight("node-a", 0), 7766845754729900817);
    assert_eq!(rendezvous_weight("node-a", 17), 12332904116464312236);
    assert_eq!(rendezvous_weight("node-b", 17), 15931445810647370478);
    let (a, b) = (session("node-a"), session("node-b"));
    assert_eq!(rendezvous(17, [&a, &b]).unwrap().node, "node-b");
    assert!(rendezvous(17, std::iter::empty::<&Member>()).is_none());
}

#[test]
fn rendezvous_ignores_epoch_and_order() {
    let a1 = member("a", 1, &[Role::Session]);
    let a9 = member("a", 9, &[Role::Session]);
    let b = session("b");
    let c = session("c");
    for s in 0..DEFAULT_SHARDS {
        let x = rendezvous(s, [&a1, &b, &c]).unwrap().node.clone();
        let y = rendezvous(s, [&c, &a9, &b]).unwrap().node.clone();
        assert_eq!(x, y, "shard {s}");
    }
}

fn owners(nodes: &[Member]) -> Vec<String> {
    (0..DEFAULT_SHARDS)
        .map(|s| rendezvous(s, nodes).unwrap().node.clone())
        .collect()
}

#[test]
fn rendezvous_balance() {
    let nodes = vec![
        session("session-0"),
        session("session-1"),
        session("session-2"),
    ];
    let mut count: HashMap<String, usize> = HashMap::new();
    for o in owners(&nodes) {
        *count.entry(o).or_default() += 1;
    }
    assert_eq!(count.len(), 3);
    for (node, n) in &count {
        let share = *n as f64 / f64::from(DEFAULT_SHARDS);
        assert!((0.25..=0.42).contains(&share), "{node} owns {n} shards");
    }
}

#[test]
fn rendezvous_minimal_movement() {
    let three = vec![
        session("session-0"),
        session("session-1"),
        session("session-2"),
    ];
    let before = owners(&three);

    // Removing session-1 moves only the shards it had.
    let two = vec![three[0].clone(), three[2].clone()];
    let after = owners(&two);
    for (s, (b, a)) in before.iter().zip(&after).enumerate() {
        if b != "session-1" {
            assert_eq!(b, a, "shard {s} moved although its owner stayed");
        } else {
            assert_ne!(a, "session-1");
        }
    }

    // Adding a fourth node moves to it only shards it takes, about a quarter of them.
    let mut four = three.clone();
    four.push(session("session-3"));
    let after = owners(&four);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(a, "session-3", "a shard moved between two old nodes");
            moved += 1;
        }
    }
    let share = f64::from(moved) / f64::from(DEFAULT_SHARDS);
    assert!(
        (0.18..=0.32).contains(&share),
        "new node took {moved} shards"
    );
}

#[test]
fn view_helpers() {
    let mut members = vec![
        member("cm-0", 3, &[Role::Cm]),
        member("s-0", 1, &[Role::Session]),
        member("s-1", 2, &[Role::Session, Role::Cm]),
    ];
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let view = View {
        version: 1,
        shards: 64,
        members,
    };
    assert_eq!(view.session_nodes().count(), 2);
    assert!(view.owned_shards("cm-0").is_empty());
    assert!(view.owned_shards("nobody").is_empty());
    let s0 = view.owned_shards("s-0");
    let s1 = view.owned_shards("s-1");
    assert_eq!(s0.len() + s1.len(), 64);
    assert!(!s0.is_empty() && !s1.is_empty());
    assert!(s0.iter().all(|s| !s1.contains(s)));
    let owner = view.owner_of("alice@example.org").unwrap();
    assert_eq!(
        owner.node,
        view.shard_owner(shard_of("alice@example.org", 64))
            .unwrap()
            .node
    );
    assert!(view.is_live("s-1", 2));
    assert!(!view.is_live("s-1", 1));
    assert!(!view.is_live("gone", 1));
    assert_eq!(view.member("cm-0").unwrap().epoch, 3);
    let empty = View {
        version: 0,
        shards: 64,
        members: vec![member("cm-0", 3, &[Role::Cm])],
    };
    assert!(empty.shard_owner(0).is_none());
}

#[test]
fn member_json_shape() {
    let m = member("s-0", 7, &[Role::Cm, Role::Session]);
    let j = serde_json::to_string(&m).unwrap();
    assert_eq!(
        j,
        r#"{"node":"s-0","epoch":7,"roles":["cm","session"],"grpc":"s-0:7000"}"#
    );
    assert_eq!(serde_json::from_str::<Member>(&j).unwrap(), m);
}
