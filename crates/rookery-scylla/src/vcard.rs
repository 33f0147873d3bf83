//! [`VCardStore`] on ScyllaDB (XEP-0054 §3), table `vcards`
//! (`schema/005_vcards.cql`): one row per account, replaced whole.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::VCardStore;
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, now_secs};

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
                .prepare("SELECT xml FROM {ks}.vcards WHERE owner = ?", true)
                .await?,
            set: p
                .prepare(
                    "INSERT INTO {ks}.vcards (owner, xml, updated_at) VALUES (?, ?, ?)",
                    true,
                )
                .await?,
            delete: p
                .prepare("DELETE FROM {ks}.vcards WHERE owner = ?", true)
                .await?,
        })
    }
}

#[async_trait]
impl VCardStore for ScyllaStore {
    async fn vcard(&self, user: &Jid) -> Result<Option<String>, StoreError> {
        Ok(self
            .one::<(Option<String>,)>(&self.vcards.get, (user.as_str(),))
            .await?
            .and_then(|(x,)| x))
    }

    async fn set_vcard(&self, user: &Jid, xml: &str) -> Result<(), StoreError> {
        self.exec(&self.vcards.set, (user.as_str(), xml, now_secs()))
            .await
            .map(|_| ())
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.vcards.delete, (user.as_str(),))
            .await
            .map(|_| ())
    }
}
