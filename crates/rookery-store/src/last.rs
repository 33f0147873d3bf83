//! [`LastActivityStore`] on SQLite: when each account was last seen.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::{LastActivity, LastActivityStore};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, unavailable};

/// No foreign key to `accounts`: the record goes with the account through
/// [`LastActivityStore::delete_user`], as in every backend.
pub(crate) const SCHEMA_1: &str = "
CREATE TABLE last_activity (
    jid    TEXT PRIMARY KEY NOT NULL,
    at_ms  INTEGER NOT NULL,
    status TEXT NOT NULL
) WITHOUT ROWID;
";

#[async_trait]
impl LastActivityStore for SqliteStore {
    async fn last_activity(&self, user: &Jid) -> Result<Option<LastActivity>, StoreError> {
        let jid = user.as_str().to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT at_ms, status FROM last_activity WHERE jid = ?1")
                .and_then(|mut st| {
                    st.query_row([&jid], |r| {
                        Ok(LastActivity {
                            at_ms: r.get(0)?,
                            status: r.get(1)?,
                        })
                    })
                    .optional()
                })
                .map_err(unavailable)
        })
        .await
    }

    async fn set_last_activity(
        &self,
        user: &Jid,
        activity: &LastActivity,
    ) -> Result<(), StoreError> {
        let (jid, a) = (user.as_str().to_owned(), activity.clone());
        self.with(move |c| {
            c.execute(
                "INSERT INTO last_activity (jid, at_ms, status) VALUES (?1, ?2, ?3)
                 ON CONFLICT (jid) DO UPDATE SET at_ms = excluded.at_ms, status = excluded.status",
                params![jid, a.at_ms, a.status],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(user, &[("last_activity", "jid")])
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_session::last_activity_store_conformance!(SqliteStore::in_memory().unwrap());
}
