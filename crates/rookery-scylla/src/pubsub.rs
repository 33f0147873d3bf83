//! [`PubsubStore`] on ScyllaDB (XEP-0060 nodes and items), tables
//! `pubsub_nodes` and `pubsub_items` (`schema/010_pubsub.cql`). A node's
//! items are one partition; their publication order is kept in `seq` and
//! sorted here (a node holds at most `max_items_per_node` items).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_pubsub::{PubsubStore, StoredItem, StoredNode};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore};

#[derive(Debug)]
pub(crate) struct Statements {
    nodes: PreparedStatement,
    node: PreparedStatement,
    save_node: PreparedStatement,
    delete_node: PreparedStatement,
    delete_nodes: PreparedStatement,
    items: PreparedStatement,
    item: PreparedStatement,
    put_item: PreparedStatement,
    delete_item: PreparedStatement,
    purge: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            nodes: p
                .prepare(
                    "SELECT node, config, affiliations, subscriptions FROM {ks}.pubsub_nodes WHERE service = ?",
                    true,
                )
                .await?,
            node: p
                .prepare(
                    "SELECT node, config, affiliations, subscriptions FROM {ks}.pubsub_nodes WHERE service = ? AND node = ?",
                    true,
                )
                .await?,
            save_node: p
                .prepare(
                    "INSERT INTO {ks}.pubsub_nodes (service, node, config, affiliations, subscriptions) VALUES (?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete_node: p
                .prepare(
                    "DELETE FROM {ks}.pubsub_nodes WHERE service = ? AND node = ?",
                    true,
                )
                .await?,
            delete_nodes: p
                .prepare("DELETE FROM {ks}.pubsub_nodes WHERE service = ?", true)
                .await?,
            items: p
                .prepare(
                    "SELECT id, seq, publisher, payload FROM {ks}.pubsub_items WHERE service = ? AND node = ?",
                    true,
                )
                .await?,
            item: p
                .prepare(
                    "SELECT id, seq, publisher, payload FROM {ks}.pubsub_items WHERE service = ? AND node = ? AND id = ?",
                    true,
                )
                .await?,
            put_item: p
                .prepare(
                    "INSERT INTO {ks}.pubsub_items (service, node, id, seq, publisher, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete_item: p
                .prepare(
                    "DELETE FROM {ks}.pubsub_items WHERE service = ? AND node = ? AND id = ?",
                    true,
                )
                .await?,
            purge: p
                .prepare(
                    "DELETE FROM {ks}.pubsub_items WHERE service = ? AND node = ?",
                    true,
                )
                .await?,
        })
    }
}

type NodeRow = (
    String,
    Option<String>,
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
);
type ItemRow = (String, Option<i64>, Option<String>, Option<String>);

fn node_of((name, config, affiliations, subscriptions): NodeRow) -> StoredNode {
    StoredNode {
        name,
        config: config.unwrap_or_default(),
        affiliations: affiliations.unwrap_or_default(),
        subscriptions: subscriptions.unwrap_or_default(),
    }
}

fn item_of((id, seq, publisher, payload): ItemRow) -> StoredItem {
    StoredItem {
        id,
        seq: seq.unwrap_or(0),
        publisher: publisher.unwrap_or_default(),
        payload: payload.unwrap_or_default(),
    }
}

impl ScyllaStore {
    /// Every item of a node in publication order.
    async fn all_items(&self, service: &str, node: &str) -> Result<Vec<StoredItem>, StoreError> {
        let rows: Vec<ItemRow> = self.all(&self.pubsub.items, (service, node)).await?;
        let mut items: Vec<StoredItem> = rows.into_iter().map(item_of).collect();
        items.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.id.cmp(&b.id)));
        Ok(items)
    }
}

#[async_trait]
impl PubsubStore for ScyllaStore {
    async fn nodes(&self, service: &str) -> Result<Vec<StoredNode>, StoreError> {
        let rows: Vec<NodeRow> = self.all(&self.pubsub.nodes, (service,)).await?;
        Ok(rows.into_iter().map(node_of).collect())
    }

    async fn node(&self, service: &str, name: &str) -> Result<Option<StoredNode>, StoreError> {
        let row: Option<NodeRow> = self.one(&self.pubsub.node, (service, name)).await?;
        Ok(row.map(node_of))
    }

    async fn save_node(&self, service: &str, node: &StoredNode) -> Result<(), StoreError> {
        self.exec(
            &self.pubsub.save_node,
            (
                service,
                node.name.as_str(),
                node.config.as_str(),
                &node.affiliations,
                &node.subscriptions,
            ),
        )
        .await
        .map(|_| ())
    }

    async fn delete_node(&self, service: &str, name: &str) -> Result<bool, StoreError> {
        let existed = self.node(service, name).await?.is_some();
        self.exec(&self.pubsub.delete_node, (service, name)).await?;
        self.exec(&self.pubsub.purge, (service, name)).await?;
        Ok(existed)
    }

    async fn items(
        &self,
        service: &str,
        node: &str,
        last: Option<usize>,
    ) -> Result<Vec<StoredItem>, StoreError> {
        let mut items = self.all_items(service, node).await?;
        if let Some(n) = last
            && items.len() > n
        {
            items.drain(..items.len() - n);
        }
        Ok(items)
    }

    async fn item(
        &self,
        service: &str,
        node: &str,
        id: &str,
    ) -> Result<Option<StoredItem>, StoreError> {
        let row: Option<ItemRow> = self.one(&self.pubsub.item, (service, node, id)).await?;
        Ok(row.map(item_of))
    }

    async fn put_item(
        &self,
        service: &str,
        node: &str,
        item: &StoredItem,
        keep: usize,
    ) -> Result<(), StoreError> {
        self.exec(
            &self.pubsub.put_item,
            (
                service,
                node,
                item.id.as_str(),
                item.seq,
                item.publisher.as_str(),
                item.payload.as_str(),
            ),
        )
        .await?;
        let items = self.all_items(service, node).await?;
        if items.len() > keep {
            for old in &items[..items.len() - keep] {
                self.exec(&self.pubsub.delete_item, (service, node, old.id.as_str()))
                    .await?;
            }
        }
        Ok(())
    }

    async fn retract_item(&self, service: &str, node: &str, id: &str) -> Result<bool, StoreError> {
        let existed = self.item(service, node, id).await?.is_some();
        self.exec(&self.pubsub.delete_item, (service, node, id))
            .await?;
        Ok(existed)
    }

    async fn purge(&self, service: &str, node: &str) -> Result<(), StoreError> {
        self.exec(&self.pubsub.purge, (service, node))
            .await
            .map(|_| ())
    }

    async fn delete_service(&self, service: &str) -> Result<(), StoreError> {
        for n in self.nodes(service).await? {
            self.exec(&self.pubsub.purge, (service, n.name.as_str()))
                .await?;
        }
        self.exec(&self.pubsub.delete_nodes, (service,))
            .await
            .map(|_| ())
    }
}
