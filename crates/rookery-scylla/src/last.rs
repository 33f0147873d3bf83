//! [`LastActivityStore`] on ScyllaDB (XEP-0012 §3), table `last_activity`
//! (`schema/007_last_activity.cql`): one row per account.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::{LastActivity, LastActivityStore};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore};

#[derive(Debug)]
pub(crate) struct Statements {
    get: PreparedStatement,
    set: PreparedStatement,
    delete: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            get: p
                .prepare(
                    "SELECT at_ms, status FROM {ks}.last_activity WHERE owner = ?",
                    true,
                )
                .await?,
            set: p
                .prepare(
                    "INSERT INTO {ks}.last_activity (owner, at_ms, status) VALUES (?, ?, ?)",
                    true,
                )
                .await?,
            delete: p
                .prepare("DELETE FROM {ks}.last_activity WHERE owner = ?", true)
                .await?,
        })
    }
}

#[async_trait]
impl LastActivityStore for ScyllaStore {
    async fn last_activity(&self, user: &Jid) -> Result<Option<LastActivity>, StoreError> {
        Ok(self
            .one::<(Option<i64>, Option<String>)>(&self.last.get, (user.as_str(),))
            .await?
            .map(|(at_ms, status)| LastActivity {
                at_ms: at_ms.unwrap_or(0),
                status: status.unwrap_or_default(),
            }))
    }

    async fn set_last_activity(
        &self,
        user: &Jid,
        activity: &LastActivity,
    ) -> Result<(), StoreError> {
        self.exec(
            &self.last.set,
            (user.as_str(), activity.at_ms, activity.status.as_str()),
        )
        .await
        .map(|_| ())
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.last.delete, (user.as_str(),))
            .await
            .map(|_| ())
    }
}
