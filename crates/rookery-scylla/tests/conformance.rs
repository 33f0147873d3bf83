//! The conformance suites of every store trait, run against ScyllaDB (or
//! Apache Cassandra) when `ROOKERY_TEST_SCYLLA=host:port` names a node.
//! Each test migrates a fresh keyspace of its own (SimpleStrategy, one
//! replica), runs its suite and drops the keyspace. Without the variable
//! each test says it was skipped, and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rookery_scylla::{ScyllaConfig, ScyllaStore, migrate};

const VAR: &str = "ROOKERY_TEST_SCYLLA";

fn node(test: &str) -> Option<String> {
    match std::env::var(VAR) {
        Ok(n) if !n.trim().is_empty() => Some(n.trim().to_owned()),
        _ => {
            println!(
                "{test}: skipped: {VAR} is not set (host:port of a ScyllaDB or Cassandra node)"
            );
            None
        }
    }
}

fn config(node: String) -> ScyllaConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    ScyllaConfig {
        nodes: vec![node],
        keyspace: format!(
            "rookery_test_{:x}_{}_{}",
            t & 0xffff_ffff,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        consistency: "one".into(),
        request_timeout_ms: 30_000,
        ..Default::default()
    }
}

async fn drop_keyspace(cfg: &ScyllaConfig) {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&cfg.nodes)
        .build()
        .await
        .expect("connect to drop the test keyspace");
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", cfg.keyspace), ())
        .await
        .expect("drop the test keyspace");
}

/// Migrates a fresh keyspace, runs `suite` on a store connected to it, and
/// drops the keyspace, also when the suite fails.
async fn with_store<F, Fut>(test: &str, suite: F)
where
    F: FnOnce(Arc<ScyllaStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(node) = node(test) else { return };
    let cfg = config(node);
    let applied = migrate(&cfg).await.expect("migrate");
    let names: Vec<&str> = rookery_scylla::SCHEMA.iter().map(|(n, _)| *n).collect();
    assert_eq!(applied, names);
    let store = Arc::new(ScyllaStore::connect(&cfg).await.expect("connect"));
    let outcome = tokio::spawn(suite(store)).await;
    drop_keyspace(&cfg).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn user_store_conformance() {
    with_store("user_store_conformance", |s| async move {
        rookery_core::users::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn roster_store_conformance() {
    with_store("roster_store_conformance", |s| async move {
        rookery_session::roster::conformance::run(s.as_ref()).await;
    })
    .await;
}

/// The roster cache of `rookery-session` in front of this store behaves
/// like the store.
#[tokio::test]
async fn cached_roster_store_conformance() {
    with_store("cached_roster_store_conformance", |s| async move {
        let cached = rookery_session::roster_cache::CachedRosterStore::new(s, 1000);
        rookery_session::roster::conformance::run(&cached).await;
    })
    .await;
}

#[tokio::test]
async fn offline_store_conformance() {
    with_store("offline_store_conformance", |s| async move {
        rookery_session::offline::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn blocklist_store_conformance() {
    with_store("blocklist_store_conformance", |s| async move {
        rookery_session::blocking::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn vcard_store_conformance() {
    with_store("vcard_store_conformance", |s| async move {
        rookery_session::modules::vcard::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn private_store_conformance() {
    with_store("private_store_conformance", |s| async move {
        rookery_session::modules::private::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn last_activity_store_conformance() {
    with_store("last_activity_store_conformance", |s| async move {
        rookery_session::modules::last::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn archive_store_conformance() {
    with_store("archive_store_conformance", |s| async move {
        rookery_session::mam::conformance::run(s.as_ref()).await;
    })
    .await;
}

/// `connect` refuses a keyspace without the schema; `migrate` applies each
/// step once; `stores()` serves every trait (account deletion included).
#[tokio::test]
async fn migrate_is_idempotent_and_connect_needs_it() {
    let Some(node) = node("migrate_is_idempotent_and_connect_needs_it") else {
        return;
    };
    let cfg = config(node);
    let err = ScyllaStore::connect(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("rookery store migrate"), "{err}");
    assert_eq!(
        migrate(&cfg).await.unwrap().len(),
        rookery_scylla::SCHEMA.len()
    );
    let outcome = tokio::spawn({
        let cfg = cfg.clone();
        async move {
            assert!(migrate(&cfg).await.unwrap().is_empty());
            let store = Arc::new(ScyllaStore::connect(&cfg).await.unwrap());
            let stores = store.stores();
            let jid = rookery_core::Jid::parse("a@example.org").unwrap();
            let creds = rookery_sasl::StoredCredentials::derive("pw", 4096);
            stores.users.create(jid.as_str(), &creds).await.unwrap();
            stores
                .vcards
                .set_vcard(&jid, "<vCard xmlns='vcard-temp'/>")
                .await
                .unwrap();
            assert!(stores.delete_account(&jid).await.unwrap());
            assert!(!stores.users.exists(jid.as_str()).await.unwrap());
            assert_eq!(stores.vcards.vcard(&jid).await.unwrap(), None);
        }
    })
    .await;
    drop_keyspace(&cfg).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn room_store_conformance() {
    with_store("room_store_conformance", |s| async move {
        rookery_muc::store::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn pubsub_store_conformance() {
    with_store("pubsub_store_conformance", |s| async move {
        rookery_pubsub::store::conformance::run(s.as_ref()).await;
    })
    .await;
}

#[tokio::test]
async fn push_store_conformance() {
    with_store("push_store_conformance", |s| async move {
        rookery_session::modules::push::conformance::run(s.as_ref()).await;
    })
    .await;
}
