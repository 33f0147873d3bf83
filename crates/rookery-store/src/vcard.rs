//! [`VCardStore`] on SQLite: one vCard (canonical XML) per account.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::VCardStore;
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, now, unavailable};

/// No foreign key to `accounts`: the vCard goes with the account through
/// [`VCardStore::delete_user`], as in every backend.
pub(crate) const SCHEMA_1: &str = "
CREATE TABLE vcards (
    jid        TEXT PRIMARY KEY NOT NULL,
    xml        TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
";

#[async_trait]
impl VCardStore for SqliteStore {
    async fn vcard(&self, user: &Jid) -> Result<Option<String>, StoreError> {
        let jid = user.as_str().to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT xml FROM vcards WHERE jid = ?1")
                .and_then(|mut st| st.query_row([&jid], |r| r.get(0)).optional())
                .map_err(unavailable)
        })
        .await
    }

    async fn set_vcard(&self, user: &Jid, xml: &str) -> Result<(), StoreError> {
        let (jid, xml) = (user.as_str().to_owned(), xml.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO vcards (jid, xml, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (jid) DO UPDATE SET xml = excluded.xml, updated_at = excluded.updated_at",
                params![jid, xml, now()],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(user, &[("vcards", "jid")]).await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_session::vcard_store_conformance!(SqliteStore::in_memory().unwrap());
}
