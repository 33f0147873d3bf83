//! [`OfflineStore`] on ScyllaDB (XEP-0160, RFC 6121 §8.5.2.2.1), table
//! `offline_messages` (`schema/003_offline.cql`).
//!
//! The quota is checked by counting the user's partition and then inserting:
//! two requests, not one transaction, so messages pushed concurrently from
//! several nodes for the same user can exceed `max` by the number of such
//! races (docs/decisions/0012-scylladb-backend.md). Ids come from
//! [`crate::next_id`]: time-ordered, so a listing is oldest first.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::offline::OfflineStore;
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, now_secs};

#[derive(Debug)]
pub(crate) struct Statements {
    count: PreparedStatement,
    insert: PreparedStatement,
    list: PreparedStatement,
    remove: PreparedStatement,
    delete_user: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            count: p
                .prepare(
                    "SELECT COUNT(*) FROM {ks}.offline_messages WHERE owner = ?",
                    true,
                )
                .await?,
            insert: p
                .prepare(
                    "INSERT INTO {ks}.offline_messages (owner, id, stanza, created_at) \
                     VALUES (?, ?, ?, ?)",
                    true,
                )
                .await?,
            list: p
                .prepare(
                    "SELECT id, stanza FROM {ks}.offline_messages WHERE owner = ?",
                    true,
                )
                .await?,
            remove: p
                .prepare(
                    "DELETE FROM {ks}.offline_messages WHERE owner = ? AND id IN ?",
                    true,
                )
                .await?,
            delete_user: p
                .prepare("DELETE FROM {ks}.offline_messages WHERE owner = ?", true)
                .await?,
        })
    }
}

#[async_trait]
impl OfflineStore for ScyllaStore {
    async fn push(&self, user: &Jid, stanza: &str, max: usize) -> Result<bool, StoreError> {
        if self.count(user).await? >= max {
            return Ok(false);
        }
        let id = self.ids.next();
        self.exec(
            &self.offline.insert,
            (user.as_str(), id, stanza, now_secs()),
        )
        .await?;
        Ok(true)
    }

    async fn list(&self, user: &Jid) -> Result<Vec<(i64, String)>, StoreError> {
        self.all::<(i64, String)>(&self.offline.list, (user.as_str(),))
            .await
    }

    async fn remove(&self, user: &Jid, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(100) {
            self.exec(&self.offline.remove, (user.as_str(), chunk))
                .await?;
        }
        Ok(())
    }

    async fn count(&self, user: &Jid) -> Result<usize, StoreError> {
        let n = self
            .one::<(i64,)>(&self.offline.count, (user.as_str(),))
            .await?
            .map_or(0, |(n,)| n);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.offline.delete_user, (user.as_str(),))
            .await
            .map(|_| ())
    }
}
