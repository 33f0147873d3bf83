//! The storage of nodes and items, for PEP (the service is the owner's
//! bare JID) and the pubsub service (the service is its domain).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rookery_core::users::StoreError;

/// One node as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredNode {
    /// The NodeID.
    pub name: String,
    /// Its configuration as JSON ([`crate::NodeConfig`]); opaque to the store.
    pub config: String,
    /// Affiliations other than `none`: bare JID → `owner`, `publisher`,
    /// `member` or `outcast`.
    pub affiliations: BTreeMap<String, String>,
    /// Explicit subscriptions (XEP-0060 §6.1): JID → `subscribed`.
    pub subscriptions: BTreeMap<String, String>,
}

/// One published item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredItem {
    /// The ItemID.
    pub id: String,
    /// Publication order: larger is newer (microseconds, made unique by the
    /// engine).
    pub seq: i64,
    /// The publisher's bare JID.
    pub publisher: String,
    /// The payload's canonical XML (empty for an item without payload).
    pub payload: String,
}

/// Nodes and items of pubsub services, keyed by the service (a bare JID
/// for PEP, a domain for the pubsub service) and the NodeID.
#[async_trait]
pub trait PubsubStore: Send + Sync + std::fmt::Debug {
    /// Every node of a service, by name.
    async fn nodes(&self, service: &str) -> Result<Vec<StoredNode>, StoreError>;
    /// One node.
    async fn node(&self, service: &str, name: &str) -> Result<Option<StoredNode>, StoreError>;
    /// Creates or replaces a node (whole; its items stay).
    async fn save_node(&self, service: &str, node: &StoredNode) -> Result<(), StoreError>;
    /// Deletes a node and its items; whether it existed.
    async fn delete_node(&self, service: &str, name: &str) -> Result<bool, StoreError>;
    /// The items of a node in publication order (oldest first); with
    /// `last`, only the newest `last` of them.
    async fn items(
        &self,
        service: &str,
        node: &str,
        last: Option<usize>,
    ) -> Result<Vec<StoredItem>, StoreError>;
    /// One item.
    async fn item(
        &self,
        service: &str,
        node: &str,
        id: &str,
    ) -> Result<Option<StoredItem>, StoreError>;
    /// Stores an item, replacing one with the same id (which then becomes
    /// the newest, XEP-0060 §12.19), and drops the oldest items beyond
    /// `keep`.
    async fn put_item(
        &self,
        service: &str,
        node: &str,
        item: &StoredItem,
        keep: usize,
    ) -> Result<(), StoreError>;
    /// Removes one item; whether it existed.
    async fn retract_item(&self, service: &str, node: &str, id: &str) -> Result<bool, StoreError>;
    /// Removes every item of a node.
    async fn purge(&self, service: &str, node: &str) -> Result<(), StoreError>;
    /// Removes every node and item of a service (account removal).
    async fn delete_service(&self, service: &str) -> Result<(), StoreError>;
}

/// The conformance suite every [`PubsubStore`] backend runs: invoke it once
/// per backend with an expression that builds a fresh, empty store.
#[cfg(feature = "test-util")]
#[macro_export]
macro_rules! pubsub_store_conformance {
    ($make:expr) => {
        #[tokio::test]
        async fn pubsub_store_conformance() {
            let store = $make;
            $crate::store::conformance::run(&store).await;
        }
    };
}

/// The body of [`pubsub_store_conformance!`].
#[cfg(feature = "test-util")]
#[allow(clippy::unwrap_used)]
pub mod conformance {
    use super::*;

    fn item(id: &str, seq: i64, payload: &str) -> StoredItem {
        StoredItem {
            id: id.into(),
            seq,
            publisher: "a@example.org".into(),
            payload: payload.into(),
        }
    }

    fn ids(items: &[StoredItem]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    /// Runs every check against an empty store.
    pub async fn run(store: &dyn PubsubStore) {
        let a = "a@example.org";
        let b = "b@example.org";
        assert!(store.nodes(a).await.unwrap().is_empty());
        assert_eq!(store.node(a, "n").await.unwrap(), None);
        let mut n = StoredNode {
            name: "urn:xmpp:omemo:2:devices".into(),
            config: "{\"title\":\"Änne & <Bob>\"}".into(),
            affiliations: BTreeMap::from([(a.to_owned(), "owner".to_owned())]),
            subscriptions: BTreeMap::from([("c@example.org/r".to_owned(), "subscribed".into())]),
        };
        store.save_node(a, &n).await.unwrap();
        let m = StoredNode {
            name: "m".into(),
            config: "{}".into(),
            ..Default::default()
        };
        store.save_node(a, &m).await.unwrap();
        store.save_node(b, &m).await.unwrap();
        assert_eq!(store.nodes(a).await.unwrap(), vec![m.clone(), n.clone()]);
        assert_eq!(store.node(a, &n.name).await.unwrap(), Some(n.clone()));
        // Replaced whole.
        n.subscriptions.clear();
        n.affiliations
            .insert("d@example.org".into(), "member".into());
        store.save_node(a, &n).await.unwrap();
        assert_eq!(store.node(a, &n.name).await.unwrap(), Some(n.clone()));

        // Items: publication order, replacement moves to the newest, trimming.
        let p = |s: &str| format!("<p xmlns='urn:x'>{s} &amp; ü</p>");
        store
            .put_item(a, "m", &item("1", 10, &p("1")), 3)
            .await
            .unwrap();
        store
            .put_item(a, "m", &item("2", 20, &p("2")), 3)
            .await
            .unwrap();
        store
            .put_item(a, "m", &item("3", 30, &p("3")), 3)
            .await
            .unwrap();
        assert_eq!(
            ids(&store.items(a, "m", None).await.unwrap()),
            ["1", "2", "3"]
        );
        store
            .put_item(a, "m", &item("1", 40, &p("1b")), 3)
            .await
            .unwrap();
        let all = store.items(a, "m", None).await.unwrap();
        assert_eq!(ids(&all), ["2", "3", "1"]);
        assert_eq!(all[2], item("1", 40, &p("1b")));
        assert_eq!(
            ids(&store.items(a, "m", Some(2)).await.unwrap()),
            ["3", "1"]
        );
        store.put_item(a, "m", &item("4", 50, ""), 3).await.unwrap();
        assert_eq!(
            ids(&store.items(a, "m", None).await.unwrap()),
            ["3", "1", "4"]
        );
        assert_eq!(store.item(a, "m", "2").await.unwrap(), None);
        assert_eq!(
            store.item(a, "m", "4").await.unwrap(),
            Some(item("4", 50, ""))
        );
        // A smaller keep trims at once.
        store
            .put_item(a, "m", &item("5", 60, &p("5")), 1)
            .await
            .unwrap();
        assert_eq!(ids(&store.items(a, "m", None).await.unwrap()), ["5"]);
        // Nodes and services are apart.
        assert!(store.items(b, "m", None).await.unwrap().is_empty());
        store
            .put_item(b, "m", &item("x", 1, &p("x")), 5)
            .await
            .unwrap();
        store
            .put_item(a, &n.name, &item("x", 1, &p("y")), 5)
            .await
            .unwrap();
        assert!(store.retract_item(a, "m", "5").await.unwrap());
        assert!(!store.retract_item(a, "m", "5").await.unwrap());
        assert!(store.items(a, "m", None).await.unwrap().is_empty());
        store
            .put_item(a, "m", &item("6", 70, &p("6")), 5)
            .await
            .unwrap();
        store.purge(a, "m").await.unwrap();
        assert!(store.items(a, "m", None).await.unwrap().is_empty());
        assert_eq!(store.items(b, "m", None).await.unwrap().len(), 1);
        // Deleting a node takes its items; a node created again is empty.
        assert!(store.delete_node(a, &n.name).await.unwrap());
        assert!(!store.delete_node(a, &n.name).await.unwrap());
        assert_eq!(store.node(a, &n.name).await.unwrap(), None);
        store.save_node(a, &n).await.unwrap();
        assert!(store.items(a, &n.name, None).await.unwrap().is_empty());
        // A whole service goes at once.
        store
            .put_item(a, "m", &item("7", 80, &p("7")), 5)
            .await
            .unwrap();
        store.delete_service(a).await.unwrap();
        assert!(store.nodes(a).await.unwrap().is_empty());
        assert!(store.items(a, "m", None).await.unwrap().is_empty());
        assert_eq!(store.nodes(b).await.unwrap(), vec![m]);
        assert_eq!(store.items(b, "m", None).await.unwrap().len(), 1);
        store.delete_service(a).await.unwrap();
    }
}
