//! [`BlocklistStore`] on SQLite.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::blocking::BlocklistStore;

use crate::{SqliteStore, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE blocklist (
    owner   TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (owner, blocked)
) WITHOUT ROWID;
";

#[async_trait]
impl BlocklistStore for SqliteStore {
    async fn blocklist(&self, user: &Jid) -> Result<Vec<Jid>, StoreError> {
        let owner = user.as_str().to_owned();
        let rows: Vec<String> = self
            .with(move |c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT blocked FROM blocklist WHERE owner = ?1 ORDER BY blocked",
                    )
                    .map_err(unavailable)?;
                let rows = st.query_map([&owner], |r| r.get(0)).map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|j| Jid::parse(j).map_err(unavailable))
            .collect()
    }

    async fn block(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        let jids: Vec<String> = jids.iter().map(|j| j.as_str().to_owned()).collect();
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO blocklist (owner, blocked) VALUES (?1, ?2)",
                    )
                    .map_err(unavailable)?;
                for j in &jids {
                    st.execute([&owner, j]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn unblock(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        let jids: Vec<String> = jids.iter().map(|j| j.as_str().to_owned()).collect();
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            if jids.is_empty() {
                tx.execute("DELETE FROM blocklist WHERE owner = ?1", [&owner])
                    .map_err(unavailable)?;
            } else {
                let mut st = tx
                    .prepare_cached("DELETE FROM blocklist WHERE owner = ?1 AND blocked = ?2")
                    .map_err(unavailable)?;
                for j in &jids {
                    st.execute([&owner, j]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.unblock(user, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocklist_store_conformance() {
        let store = SqliteStore::in_memory().unwrap();
        rookery_session::blocking::conformance::run(&store).await;
    }
}
