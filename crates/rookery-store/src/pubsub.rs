//! [`PubsubStore`] on SQLite: XEP-0060 nodes (PEP and the pubsub service),
//! one row per node with its affiliations and subscriptions as JSON, one
//! row per item ordered by its publication sequence.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rookery_core::users::StoreError;
use rookery_pubsub::{PubsubStore, StoredItem, StoredNode};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE pubsub_nodes (
    service       TEXT NOT NULL,
    node          TEXT NOT NULL,
    config        TEXT NOT NULL,
    affiliations  TEXT NOT NULL,
    subscriptions TEXT NOT NULL,
    PRIMARY KEY (service, node)
) WITHOUT ROWID;
CREATE TABLE pubsub_items (
    service   TEXT NOT NULL,
    node      TEXT NOT NULL,
    id        TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    payload   TEXT NOT NULL,
    PRIMARY KEY (service, node, id)
) WITHOUT ROWID;
CREATE INDEX pubsub_items_seq ON pubsub_items (service, node, seq);
";

fn map(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNode> {
    Ok(StoredNode {
        name: r.get(0)?,
        config: r.get(1)?,
        affiliations: map(&r.get::<_, String>(2)?),
        subscriptions: map(&r.get::<_, String>(3)?),
    })
}

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredItem> {
    Ok(StoredItem {
        id: r.get(0)?,
        seq: r.get(1)?,
        publisher: r.get(2)?,
        payload: r.get(3)?,
    })
}

#[async_trait]
impl PubsubStore for SqliteStore {
    async fn nodes(&self, service: &str) -> Result<Vec<StoredNode>, StoreError> {
        let service = service.to_owned();
        self.with(move |c| {
            c.prepare_cached(
                "SELECT node, config, affiliations, subscriptions FROM pubsub_nodes WHERE service = ?1 ORDER BY node",
            )
            .and_then(|mut st| st.query_map([&service], node_row)?.collect())
            .map_err(unavailable)
        })
        .await
    }

    async fn node(&self, service: &str, name: &str) -> Result<Option<StoredNode>, StoreError> {
        let (service, name) = (service.to_owned(), name.to_owned());
        self.with(move |c| {
            c.prepare_cached(
                "SELECT node, config, affiliations, subscriptions FROM pubsub_nodes WHERE service = ?1 AND node = ?2",
            )
            .and_then(|mut st| st.query_row(params![service, name], node_row).optional())
            .map_err(unavailable)
        })
        .await
    }

    async fn save_node(&self, service: &str, node: &StoredNode) -> Result<(), StoreError> {
        let (service, node) = (service.to_owned(), node.clone());
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO pubsub_nodes (service, node, config, affiliations, subscriptions)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    service,
                    node.name,
                    node.config,
                    json(&node.affiliations),
                    json(&node.subscriptions)
                ],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_node(&self, service: &str, name: &str) -> Result<bool, StoreError> {
        let (service, name) = (service.to_owned(), name.to_owned());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            let n = tx
                .execute(
                    "DELETE FROM pubsub_nodes WHERE service = ?1 AND node = ?2",
                    params![service, name],
                )
                .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM pubsub_items WHERE service = ?1 AND node = ?2",
                params![service, name],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }

    async fn items(
        &self,
        service: &str,
        node: &str,
        last: Option<usize>,
    ) -> Result<Vec<StoredItem>, StoreError> {
        let (service, node) = (service.to_owned(), node.to_owned());
        let limit = last.map(|n| n as i64).unwrap_or(-1);
        self.with(move |c| {
            let mut items: Vec<StoredItem> = c
                .prepare_cached(
                    "SELECT id, seq, publisher, payload FROM pubsub_items
                     WHERE service = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3",
                )
                .and_then(|mut st| {
                    st.query_map(params![service, node, limit], item_row)?
                        .collect()
                })
                .map_err(unavailable)?;
            items.reverse();
            Ok(items)
        })
        .await
    }

    async fn item(
        &self,
        service: &str,
        node: &str,
        id: &str,
    ) -> Result<Option<StoredItem>, StoreError> {
        let (service, node, id) = (service.to_owned(), node.to_owned(), id.to_owned());
        self.with(move |c| {
            c.prepare_cached(
                "SELECT id, seq, publisher, payload FROM pubsub_items
                 WHERE service = ?1 AND node = ?2 AND id = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![service, node, id], item_row)
                    .optional()
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn put_item(
        &self,
        service: &str,
        node: &str,
        item: &StoredItem,
        keep: usize,
    ) -> Result<(), StoreError> {
        let (service, node, item) = (service.to_owned(), node.to_owned(), item.clone());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            tx.execute(
                "INSERT OR REPLACE INTO pubsub_items (service, node, id, seq, publisher, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    service,
                    node,
                    item.id,
                    item.seq,
                    item.publisher,
                    item.payload
                ],
            )
            .map_err(unavailable)?;
            // XEP-0060 §12.19 / max_items: the oldest beyond `keep` go.
            tx.execute(
                "DELETE FROM pubsub_items WHERE service = ?1 AND node = ?2 AND id NOT IN
                   (SELECT id FROM pubsub_items WHERE service = ?1 AND node = ?2
                    ORDER BY seq DESC LIMIT ?3)",
                params![service, node, keep as i64],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn retract_item(&self, service: &str, node: &str, id: &str) -> Result<bool, StoreError> {
        let (service, node, id) = (service.to_owned(), node.to_owned(), id.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM pubsub_items WHERE service = ?1 AND node = ?2 AND id = ?3",
                params![service, node, id],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    async fn purge(&self, service: &str, node: &str) -> Result<(), StoreError> {
        let (service, node) = (service.to_owned(), node.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM pubsub_items WHERE service = ?1 AND node = ?2",
                params![service, node],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_service(&self, service: &str) -> Result<(), StoreError> {
        let service = service.to_owned();
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            tx.execute("DELETE FROM pubsub_nodes WHERE service = ?1", [&service])
                .map_err(unavailable)?;
            tx.execute("DELETE FROM pubsub_items WHERE service = ?1", [&service])
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_pubsub::pubsub_store_conformance!(SqliteStore::in_memory().unwrap());
}
