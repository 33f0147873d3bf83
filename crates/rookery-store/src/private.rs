//! [`PrivateStore`] on SQLite: XEP-0049 elements per account, keyed by
//! (namespace, name), with their size for the per-account quota.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::{PrivateItem, PrivateStore};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, now, unavailable};

/// No foreign key to `accounts`: the items go with the account through
/// [`PrivateStore::delete_user`], as in every backend.
pub(crate) const SCHEMA_1: &str = "
CREATE TABLE private_xml (
    jid        TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    xml        TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (jid, namespace, name)
) WITHOUT ROWID;
";

#[async_trait]
impl PrivateStore for SqliteStore {
    async fn private_item(
        &self,
        user: &Jid,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let (jid, namespace, name) = (
            user.as_str().to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        );
        self.with(move |c| {
            c.prepare_cached(
                "SELECT xml FROM private_xml WHERE jid = ?1 AND namespace = ?2 AND name = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![jid, namespace, name], |r| r.get(0))
                    .optional()
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn put_private(
        &self,
        user: &Jid,
        items: &[PrivateItem],
        quota: u64,
    ) -> Result<bool, StoreError> {
        let (jid, items) = (user.as_str().to_owned(), items.to_vec());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO private_xml (jid, namespace, name, xml, bytes, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (jid, namespace, name) DO UPDATE SET
                             xml = excluded.xml, bytes = excluded.bytes,
                             updated_at = excluded.updated_at",
                    )
                    .map_err(unavailable)?;
                let t = now();
                for i in &items {
                    let bytes = i64::try_from(i.xml.len()).unwrap_or(i64::MAX);
                    st.execute(params![jid, i.namespace, i.name, i.xml, bytes, t])
                        .map_err(unavailable)?;
                }
            }
            let total: i64 = tx
                .query_row(
                    "SELECT COALESCE(SUM(bytes), 0) FROM private_xml WHERE jid = ?1",
                    [&jid],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            if u64::try_from(total).unwrap_or(u64::MAX) > quota {
                // Dropping the transaction rolls the writes back.
                return Ok(false);
            }
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(user, &[("private_xml", "jid")]).await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_session::private_store_conformance!(SqliteStore::in_memory().unwrap());
}
