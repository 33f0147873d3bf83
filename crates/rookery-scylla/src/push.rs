//! [`PushStore`] on ScyllaDB (XEP-0357 §5), table `push_registrations`
//! (`schema/011_push_registrations.cql`): one partition per account.
//!
//! The per-account limit is checked by reading the partition before the
//! write. Every write for an account comes from the session node that owns
//! it, so only two `<enable/>`s of the same account in the same instant can
//! pass the check together and exceed the limit by one; that is cheaper
//! than a lightweight transaction on every enable.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::modules::push::{PushRegistration, PushStore};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore};

#[derive(Debug)]
pub(crate) struct Statements {
    list: PreparedStatement,
    put: PreparedStatement,
    delete_one: PreparedStatement,
    delete_service: PreparedStatement,
    delete_user: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            list: p
                .prepare(
                    "SELECT service, node, client, options FROM {ks}.push_registrations \
                     WHERE owner = ?",
                    true,
                )
                .await?,
            put: p
                .prepare(
                    "INSERT INTO {ks}.push_registrations (owner, service, node, client, options) \
                     VALUES (?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete_one: p
                .prepare(
                    "DELETE FROM {ks}.push_registrations WHERE owner = ? AND service = ? AND node = ?",
                    true,
                )
                .await?,
            delete_service: p
                .prepare(
                    "DELETE FROM {ks}.push_registrations WHERE owner = ? AND service = ?",
                    true,
                )
                .await?,
            delete_user: p
                .prepare("DELETE FROM {ks}.push_registrations WHERE owner = ?", true)
                .await?,
        })
    }
}

type Row = (String, String, Option<String>, Option<String>);

#[async_trait]
impl PushStore for ScyllaStore {
    async fn put_push(
        &self,
        user: &Jid,
        reg: &PushRegistration,
        max: usize,
    ) -> Result<bool, StoreError> {
        let existing = self.push_registrations(user).await?;
        let replaces = existing
            .iter()
            .any(|r| r.service == reg.service && r.node == reg.node);
        if !replaces && existing.len() >= max {
            return Ok(false);
        }
        self.exec(
            &self.push.put,
            (
                user.as_str(),
                reg.service.as_str(),
                reg.node.as_str(),
                reg.client.as_str(),
                reg.options.as_deref(),
            ),
        )
        .await?;
        Ok(true)
    }

    async fn push_registrations(&self, user: &Jid) -> Result<Vec<PushRegistration>, StoreError> {
        Ok(self
            .all::<Row>(&self.push.list, (user.as_str(),))
            .await?
            .into_iter()
            .map(|(service, node, client, options)| PushRegistration {
                service,
                node,
                client: client.unwrap_or_default(),
                options,
            })
            .collect())
    }

    async fn remove_push(
        &self,
        user: &Jid,
        service: &str,
        node: Option<&str>,
    ) -> Result<usize, StoreError> {
        let n = self
            .push_registrations(user)
            .await?
            .iter()
            .filter(|r| r.service == service && node.is_none_or(|n| n == r.node))
            .count();
        if n > 0 {
            match node {
                Some(node) => {
                    self.exec(&self.push.delete_one, (user.as_str(), service, node))
                        .await?
                }
                None => {
                    self.exec(&self.push.delete_service, (user.as_str(), service))
                        .await?
                }
            };
        }
        Ok(n)
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.push.delete_user, (user.as_str(),))
            .await
            .map(|_| ())
    }
}
