//! [`PrivateStore`] on ScyllaDB (XEP-0049 §2), table `private_xml`
//! (`schema/006_private_xml.cql`).
//!
//! An account's items are one partition whose static column `bytes_total`
//! is the sum of their sizes. A write reads the partition, computes the new
//! total and, if it is within the quota, writes every item and the new total
//! in one conditional batch (`IF bytes_total = <the total read>`): all items
//! or none, and two concurrent writers cannot together exceed the quota (the
//! loser re-reads and tries again).

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::{PrivateItem, PrivateStore};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::{CAS_ATTEMPTS, Preparer, ScyllaStore, applied, fail};

#[derive(Debug)]
pub(crate) struct Statements {
    get: PreparedStatement,
    sizes: PreparedStatement,
    put: PreparedStatement,
    delete_user: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            get: p
                .prepare(
                    "SELECT xml FROM {ks}.private_xml WHERE owner = ? AND namespace = ? AND name = ?",
                    true,
                )
                .await?,
            sizes: p
                .prepare(
                    "SELECT namespace, name, bytes, bytes_total FROM {ks}.private_xml WHERE owner = ?",
                    true,
                )
                .await?,
            put: p
                .prepare(
                    "UPDATE {ks}.private_xml SET bytes_total = ?, xml = ?, bytes = ? \
                     WHERE owner = ? AND namespace = ? AND name = ? IF bytes_total = ?",
                    false,
                )
                .await?,
            delete_user: p
                .prepare("DELETE FROM {ks}.private_xml WHERE owner = ?", true)
                .await?,
        })
    }
}

fn size(xml: &str) -> i64 {
    i64::try_from(xml.len()).unwrap_or(i64::MAX)
}

/// The account's total after writing `items` over the stored
/// `(namespace, name, bytes)` rows.
pub(crate) fn total_after(stored: &[(String, String, i64)], items: &[PrivateItem]) -> i64 {
    let kept: i64 = stored
        .iter()
        .filter(|(ns, n, _)| !items.iter().any(|i| &i.namespace == ns && &i.name == n))
        .map(|(_, _, b)| *b)
        .sum();
    items
        .iter()
        .map(|i| size(&i.xml))
        .fold(kept, i64::saturating_add)
}

#[async_trait]
impl PrivateStore for ScyllaStore {
    async fn private_item(
        &self,
        user: &Jid,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .one::<(Option<String>,)>(&self.private.get, (user.as_str(), namespace, name))
            .await?
            .and_then(|(x,)| x))
    }

    async fn put_private(
        &self,
        user: &Jid,
        items: &[PrivateItem],
        quota: u64,
    ) -> Result<bool, StoreError> {
        let owner = user.as_str();
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        for _ in 0..CAS_ATTEMPTS {
            type SizeRow = (Option<String>, Option<String>, Option<i64>, Option<i64>);
            let rows = self.all::<SizeRow>(&self.private.sizes, (owner,)).await?;
            let read_total = rows.iter().find_map(|r| r.3);
            let stored: Vec<(String, String, i64)> = rows
                .into_iter()
                .filter_map(|(ns, n, b, _)| Some((ns?, n?, b.unwrap_or(0))))
                .collect();
            let total = total_after(&stored, items);
            if total > quota {
                return Ok(false);
            }
            if items.is_empty() {
                return Ok(true);
            }
            let mut batch = Batch::new(BatchType::Logged);
            let mut values = Vec::with_capacity(items.len());
            for i in items {
                batch.append_statement(self.private.put.clone());
                values.push((
                    total,
                    i.xml.as_str(),
                    size(&i.xml),
                    owner,
                    i.namespace.as_str(),
                    i.name.as_str(),
                    read_total,
                ));
            }
            let result = self.session.batch(&batch, values).await.map_err(fail)?;
            if applied(result)? {
                return Ok(true);
            }
        }
        Err(fail(
            "private XML update lost too many concurrent races; try again",
        ))
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.private.delete_user, (user.as_str(),))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ns: &str, name: &str, xml: &str) -> PrivateItem {
        PrivateItem {
            namespace: ns.into(),
            name: name.into(),
            xml: xml.into(),
        }
    }

    #[test]
    fn totals_count_replacements_once() {
        let stored = vec![
            ("urn:x".to_owned(), "p".to_owned(), 10),
            ("urn:x".to_owned(), "r".to_owned(), 5),
        ];
        assert_eq!(total_after(&stored, &[]), 15);
        assert_eq!(total_after(&stored, &[item("urn:x", "p", "abc")]), 8);
        assert_eq!(total_after(&stored, &[item("urn:y", "p", "abc")]), 18);
        assert_eq!(
            total_after(&[], &[item("a", "b", "12"), item("a", "c", "345")]),
            5
        );
    }
}
