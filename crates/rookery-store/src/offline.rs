//! [`OfflineStore`] on SQLite.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::offline::OfflineStore;
use rusqlite::params;

use crate::{SqliteStore, now, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE offline_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner      TEXT NOT NULL,
    stanza     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX offline_messages_owner ON offline_messages (owner, id);
";

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push(&self, user: &Jid, stanza: &str, max: usize) -> Result<bool, StoreError> {
        let (owner, stanza) = (user.as_str().to_owned(), stanza.to_owned());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            let n: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM offline_messages WHERE owner = ?1",
                    [&owner],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            if n as usize >= max {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO offline_messages (owner, stanza, created_at) VALUES (?1, ?2, ?3)",
                params![owner, stanza, now()],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn list(&self, user: &Jid) -> Result<Vec<(i64, String)>, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, stanza FROM offline_messages WHERE owner = ?1 ORDER BY id",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map([&owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn remove(&self, user: &Jid, ids: &[i64]) -> Result<(), StoreError> {
        let (owner, ids) = (user.as_str().to_owned(), ids.to_vec());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            {
                let mut st = tx
                    .prepare_cached("DELETE FROM offline_messages WHERE owner = ?1 AND id = ?2")
                    .map_err(unavailable)?;
                for id in ids {
                    st.execute(params![owner, id]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn count(&self, user: &Jid) -> Result<usize, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM offline_messages WHERE owner = ?1",
                [&owner],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(user, &[("offline_messages", "owner")])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offline_store_conformance() {
        let store = SqliteStore::in_memory().unwrap();
        rookery_session::offline::conformance::run(&store).await;
    }
}
