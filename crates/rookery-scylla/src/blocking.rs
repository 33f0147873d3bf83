//! [`BlocklistStore`] on ScyllaDB (XEP-0191 §3), table `blocklist`
//! (`schema/004_blocklist.cql`). A user's list is one partition; a block or
//! unblock of several JIDs is one unlogged batch on it, which a single
//! partition applies atomically.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::blocking::BlocklistStore;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, fail};

#[derive(Debug)]
pub(crate) struct Statements {
    list: PreparedStatement,
    insert: PreparedStatement,
    delete: PreparedStatement,
    delete_user: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            list: p
                .prepare("SELECT jid FROM {ks}.blocklist WHERE owner = ?", true)
                .await?,
            insert: p
                .prepare(
                    "INSERT INTO {ks}.blocklist (owner, jid) VALUES (?, ?)",
                    true,
                )
                .await?,
            delete: p
                .prepare(
                    "DELETE FROM {ks}.blocklist WHERE owner = ? AND jid = ?",
                    true,
                )
                .await?,
            delete_user: p
                .prepare("DELETE FROM {ks}.blocklist WHERE owner = ?", true)
                .await?,
        })
    }
}

impl ScyllaStore {
    /// Runs `st` once per JID, as one batch on the user's partition.
    async fn blocklist_batch(
        &self,
        st: &PreparedStatement,
        user: &Jid,
        jids: &[Jid],
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_is_idempotent(true);
        let mut values = Vec::with_capacity(jids.len());
        for j in jids {
            batch.append_statement(st.clone());
            values.push((user.as_str(), j.as_str()));
        }
        self.session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(fail)
    }
}

#[async_trait]
impl BlocklistStore for ScyllaStore {
    async fn blocklist(&self, user: &Jid) -> Result<Vec<Jid>, StoreError> {
        let mut jids = self
            .all::<(String,)>(&self.blocklist.list, (user.as_str(),))
            .await?
            .into_iter()
            .map(|(j,)| Jid::parse(&j).map_err(fail))
            .collect::<Result<Vec<_>, _>>()?;
        jids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(jids)
    }

    async fn block(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError> {
        if jids.is_empty() {
            return Ok(());
        }
        self.blocklist_batch(&self.blocklist.insert, user, jids)
            .await
    }

    async fn unblock(&self, user: &Jid, jids: &[Jid]) -> Result<(), StoreError> {
        if jids.is_empty() {
            // XEP-0191 §3.4: an empty unblock clears the list.
            return self.delete_user(user).await;
        }
        self.blocklist_batch(&self.blocklist.delete, user, jids)
            .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.blocklist.delete_user, (user.as_str(),))
            .await
            .map(|_| ())
    }
}
