//! [`RosterStore`] on ScyllaDB (RFC 6121 §2, versioning §2.6), tables
//! `roster` and `roster_pending_in` (`schema/002_roster.cql`).
//!
//! A roster is one partition. Its version is the static column `version`;
//! every modification reads it and writes the item together with the next
//! version in one lightweight transaction conditioned on the version read
//! (`IF version = ?`), retried when another writer won. So, as on SQLite,
//! versions of one roster are unique and increasing and an item never
//! carries a version that was not committed with it. Removed items stay as
//! rows with `removed = true` to answer [`RosterStore::changes_since`].

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::roster::{Roster, RosterChange, RosterItem, RosterStore, Subscription};
use scylla::statement::prepared::PreparedStatement;

use crate::{CAS_ATTEMPTS, Preparer, ScyllaStore, fail, now_micros};

#[derive(Debug)]
pub(crate) struct Statements {
    version: PreparedStatement,
    rows: PreparedStatement,
    item: PreparedStatement,
    put: PreparedStatement,
    remove: PreparedStatement,
    delete_user: PreparedStatement,
    pending_get: PreparedStatement,
    pending_insert: PreparedStatement,
    pending_update: PreparedStatement,
    pending_delete: PreparedStatement,
    pending_all: PreparedStatement,
    pending_delete_user: PreparedStatement,
}

const ROW_COLUMNS: &str = "contact, name, subscription, ask, approved, groups, ver, removed";

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            version: p
                .prepare("SELECT version FROM {ks}.roster WHERE owner = ? LIMIT 1", true)
                .await?,
            rows: p
                .prepare(
                    &format!("SELECT {ROW_COLUMNS}, version FROM {{ks}}.roster WHERE owner = ?"),
                    true,
                )
                .await?,
            item: p
                .prepare(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM {{ks}}.roster WHERE owner = ? AND contact = ?"
                    ),
                    true,
                )
                .await?,
            put: p
                .prepare(
                    "UPDATE {ks}.roster SET version = ?, name = ?, subscription = ?, ask = ?, \
                     approved = ?, groups = ?, ver = ?, removed = false \
                     WHERE owner = ? AND contact = ? IF version = ?",
                    false,
                )
                .await?,
            remove: p
                .prepare(
                    "UPDATE {ks}.roster SET version = ?, ver = ?, removed = true, name = null, \
                     subscription = null, ask = null, approved = null, groups = null \
                     WHERE owner = ? AND contact = ? IF version = ?",
                    false,
                )
                .await?,
            delete_user: p
                .prepare("DELETE FROM {ks}.roster WHERE owner = ?", true)
                .await?,
            pending_get: p
                .prepare(
                    "SELECT contact FROM {ks}.roster_pending_in WHERE owner = ? AND contact = ?",
                    true,
                )
                .await?,
            pending_insert: p
                .prepare(
                    "INSERT INTO {ks}.roster_pending_in (owner, contact, stanza, created_at) \
                     VALUES (?, ?, ?, ?)",
                    true,
                )
                .await?,
            pending_update: p
                .prepare(
                    "UPDATE {ks}.roster_pending_in SET stanza = ? WHERE owner = ? AND contact = ?",
                    true,
                )
                .await?,
            pending_delete: p
                .prepare(
                    "DELETE FROM {ks}.roster_pending_in WHERE owner = ? AND contact = ?",
                    true,
                )
                .await?,
            pending_all: p
                .prepare(
                    "SELECT contact, stanza, created_at FROM {ks}.roster_pending_in WHERE owner = ?",
                    true,
                )
                .await?,
            pending_delete_user: p
                .prepare("DELETE FROM {ks}.roster_pending_in WHERE owner = ?", true)
                .await?,
        })
    }
}

/// A `roster` row as read: contact (null on a partition holding only the
/// static version), name, subscription, ask, approved, groups, ver, removed.
type RowValues = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<Vec<String>>,
    Option<i64>,
    Option<bool>,
);

/// What a row says: nothing (a static-only row), a live item or a removal,
/// with the version of its last change.
fn decode(row: RowValues) -> Result<Option<(u64, RosterChange)>, StoreError> {
    let (contact, name, sub, ask, approved, groups, ver, removed) = row;
    let Some(contact) = contact else {
        return Ok(None);
    };
    let jid = Jid::parse(&contact).map_err(fail)?;
    let ver = u64::try_from(ver.unwrap_or(0)).unwrap_or(0);
    if removed == Some(true) {
        return Ok(Some((ver, RosterChange::Removed(jid))));
    }
    let subscription = match sub {
        Some(s) => Subscription::parse(&s).ok_or_else(|| fail("bad subscription value"))?,
        None => Subscription::None,
    };
    Ok(Some((
        ver,
        RosterChange::Updated(RosterItem {
            jid,
            name,
            subscription,
            ask: ask.unwrap_or(false),
            approved: approved.unwrap_or(false),
            groups: groups.unwrap_or_default(),
        }),
    )))
}

fn as_version(v: Option<i64>) -> u64 {
    u64::try_from(v.unwrap_or(0)).unwrap_or(0)
}

fn contention() -> StoreError {
    fail("roster update lost too many concurrent races; try again")
}

impl ScyllaStore {
    /// The stored version (the static column), `None` for a roster never
    /// modified.
    async fn roster_version(&self, owner: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .one::<(Option<i64>,)>(&self.roster.version, (owner,))
            .await?
            .and_then(|(v,)| v))
    }

    /// Every row of a roster, decoded, and the roster's version.
    async fn roster_rows(
        &self,
        owner: &str,
    ) -> Result<(u64, Vec<(u64, RosterChange)>), StoreError> {
        type Full = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<bool>,
            Option<bool>,
            Option<Vec<String>>,
            Option<i64>,
            Option<bool>,
            Option<i64>,
        );
        let rows = self.all::<Full>(&self.roster.rows, (owner,)).await?;
        let mut version = 0;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            version = version.max(as_version(r.8));
            if let Some(change) = decode((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7))? {
                out.push(change);
            }
        }
        Ok((version, out))
    }
}

#[async_trait]
impl RosterStore for ScyllaStore {
    async fn roster(&self, user: &Jid) -> Result<Roster, StoreError> {
        let (version, rows) = self.roster_rows(user.as_str()).await?;
        let mut items: Vec<RosterItem> = rows
            .into_iter()
            .filter_map(|(_, c)| match c {
                RosterChange::Updated(i) => Some(i),
                RosterChange::Removed(_) => None,
            })
            .collect();
        items.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
        Ok(Roster { version, items })
    }

    async fn item(&self, user: &Jid, contact: &Jid) -> Result<Option<RosterItem>, StoreError> {
        let row = self
            .one::<RowValues>(&self.roster.item, (user.as_str(), contact.as_str()))
            .await?;
        Ok(match row.map(decode).transpose()?.flatten() {
            Some((_, RosterChange::Updated(i))) => Some(i),
            _ => None,
        })
    }

    async fn count(&self, user: &Jid) -> Result<usize, StoreError> {
        let (_, rows) = self.roster_rows(user.as_str()).await?;
        Ok(rows
            .iter()
            .filter(|(_, c)| matches!(c, RosterChange::Updated(_)))
            .count())
    }

    async fn put(&self, user: &Jid, item: &RosterItem) -> Result<u64, StoreError> {
        let owner = user.as_str();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.roster_version(owner).await?;
            let next = current.unwrap_or(0) + 1;
            let values = (
                next,
                item.name.as_deref(),
                item.subscription.as_str(),
                item.ask,
                item.approved,
                &item.groups,
                next,
                owner,
                item.jid.as_str(),
                current,
            );
            if self.cas(&self.roster.put, values).await? {
                return Ok(as_version(Some(next)));
            }
        }
        Err(contention())
    }

    async fn remove(&self, user: &Jid, contact: &Jid) -> Result<Option<u64>, StoreError> {
        let owner = user.as_str();
        for _ in 0..CAS_ATTEMPTS {
            // The version first: if the item changes after this read, so
            // does the version, and the transaction below does not apply.
            let current = self.roster_version(owner).await?;
            if self.item(user, contact).await?.is_none() {
                return Ok(None);
            }
            let next = current.unwrap_or(0) + 1;
            let values = (next, next, owner, contact.as_str(), current);
            if self.cas(&self.roster.remove, values).await? {
                return Ok(Some(as_version(Some(next))));
            }
        }
        Err(contention())
    }

    async fn changes_since(
        &self,
        user: &Jid,
        since: u64,
    ) -> Result<Option<(u64, Vec<RosterChange>)>, StoreError> {
        let (current, mut rows) = self.roster_rows(user.as_str()).await?;
        if since > current {
            return Ok(None);
        }
        rows.retain(|(v, _)| *v > since);
        rows.sort_by_key(|(v, _)| *v);
        Ok(Some((current, rows.into_iter().map(|(_, c)| c).collect())))
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.exec(&self.roster.delete_user, (user.as_str(),))
            .await?;
        self.exec(&self.roster.pending_delete_user, (user.as_str(),))
            .await?;
        Ok(())
    }

    async fn add_pending_in(
        &self,
        user: &Jid,
        contact: &Jid,
        stanza: &str,
    ) -> Result<(), StoreError> {
        let key = (user.as_str(), contact.as_str());
        // A replaced request keeps its place in the order (its created_at).
        if self
            .one::<(String,)>(&self.roster.pending_get, key)
            .await?
            .is_some()
        {
            self.exec(&self.roster.pending_update, (stanza, key.0, key.1))
                .await?;
        } else {
            self.exec(
                &self.roster.pending_insert,
                (key.0, key.1, stanza, now_micros()),
            )
            .await?;
        }
        Ok(())
    }

    async fn remove_pending_in(&self, user: &Jid, contact: &Jid) -> Result<bool, StoreError> {
        let key = (user.as_str(), contact.as_str());
        let existed = self
            .one::<(String,)>(&self.roster.pending_get, key)
            .await?
            .is_some();
        if existed {
            self.exec(&self.roster.pending_delete, key).await?;
        }
        Ok(existed)
    }

    async fn pending_in(&self, user: &Jid) -> Result<Vec<(Jid, String)>, StoreError> {
        let mut rows = self
            .all::<(String, Option<String>, Option<i64>)>(
                &self.roster.pending_all,
                (user.as_str(),),
            )
            .await?;
        rows.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        rows.into_iter()
            .map(|(c, s, _)| Ok((Jid::parse(&c).map_err(fail)?, s.unwrap_or_default())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_to_items_removals_or_nothing() {
        assert_eq!(
            decode((None, None, None, None, None, None, None, None)).unwrap(),
            None
        );
        let (v, c) = decode((
            Some("romeo@example.net".into()),
            Some("Romeo".into()),
            Some("both".into()),
            Some(true),
            None,
            None,
            Some(3),
            Some(false),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(v, 3);
        let mut want = RosterItem::new(Jid::parse("romeo@example.net").unwrap());
        want.name = Some("Romeo".into());
        want.subscription = Subscription::Both;
        want.ask = true;
        assert_eq!(c, RosterChange::Updated(want));
        let (v, c) = decode((
            Some("nurse@example.com".into()),
            None,
            None,
            None,
            None,
            None,
            Some(7),
            Some(true),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(v, 7);
        assert_eq!(
            c,
            RosterChange::Removed(Jid::parse("nurse@example.com").unwrap())
        );
        assert!(
            decode((
                Some("a@b".into()),
                None,
                Some("sideways".into()),
                None,
                None,
                None,
                Some(1),
                None
            ))
            .is_err()
        );
    }
}
