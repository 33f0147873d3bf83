//! [`RosterStore`] on SQLite. Every modification bumps the user's roster
//! version; removals leave a tombstone so that interim pushes (RFC 6121
//! §2.6.3) can report them.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::roster::{Roster, RosterChange, RosterItem, RosterStore, Subscription};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{SqliteStore, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE roster_items (
    owner        TEXT NOT NULL,
    contact      TEXT NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL,
    ask          INTEGER NOT NULL,
    approved     INTEGER NOT NULL,
    groups       TEXT NOT NULL,
    ver          INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE TABLE roster_removed (
    owner   TEXT NOT NULL,
    contact TEXT NOT NULL,
    ver     INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE TABLE roster_pending_in (
    owner      TEXT NOT NULL,
    contact    TEXT NOT NULL,
    stanza     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE TABLE roster_versions (
    owner   TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Groups joined by U+001F, which XML character data cannot contain.
const SEP: char = '\u{1f}';

fn row_item(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, Option<String>, String, bool, bool, String)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_item(
    (contact, name, sub, ask, approved, groups): (
        String,
        Option<String>,
        String,
        bool,
        bool,
        String,
    ),
) -> Result<RosterItem, StoreError> {
    Ok(RosterItem {
        jid: Jid::parse(&contact).map_err(unavailable)?,
        name,
        subscription: Subscription::parse(&sub)
            .ok_or_else(|| unavailable("bad subscription value"))?,
        ask,
        approved,
        groups: if groups.is_empty() {
            Vec::new()
        } else {
            groups.split(SEP).map(str::to_owned).collect()
        },
    })
}

const ITEM_COLUMNS: &str = "contact, name, subscription, ask, approved, groups";

fn bump(tx: &Transaction<'_>, owner: &str) -> rusqlite::Result<u64> {
    tx.query_row(
        "INSERT INTO roster_versions (owner, version) VALUES (?1, 1)
         ON CONFLICT(owner) DO UPDATE SET version = version + 1 RETURNING version",
        [owner],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v as u64)
}

fn version(c: &rusqlite::Connection, owner: &str) -> rusqlite::Result<u64> {
    Ok(c.query_row(
        "SELECT version FROM roster_versions WHERE owner = ?1",
        [owner],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .unwrap_or(0) as u64)
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn roster(&self, user: &Jid) -> Result<Roster, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            let version = version(c, &owner).map_err(unavailable)?;
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM roster_items WHERE owner = ?1 ORDER BY contact"
                ))
                .map_err(unavailable)?;
            let rows = st.query_map([&owner], row_item).map_err(unavailable)?;
            let mut items = Vec::new();
            for r in rows {
                items.push(to_item(r.map_err(unavailable)?)?);
            }
            Ok(Roster { version, items })
        })
        .await
    }

    async fn item(&self, user: &Jid, contact: &Jid) -> Result<Option<RosterItem>, StoreError> {
        let (owner, contact) = (user.as_str().to_owned(), contact.as_str().to_owned());
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {ITEM_COLUMNS} FROM roster_items WHERE owner = ?1 AND contact = ?2"
                    ),
                    [&owner, &contact],
                    row_item,
                )
                .optional()
                .map_err(unavailable)?;
            row.map(to_item).transpose()
        })
        .await
    }

    async fn count(&self, user: &Jid) -> Result<usize, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM roster_items WHERE owner = ?1",
                [&owner],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(unavailable)
        })
        .await
    }

    async fn put(&self, user: &Jid, item: &RosterItem) -> Result<u64, StoreError> {
        let owner = user.as_str().to_owned();
        let item = item.clone();
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            let v = bump(&tx, &owner).map_err(unavailable)?;
            let groups = item.groups.join(&SEP.to_string());
            tx.execute(
                "INSERT OR REPLACE INTO roster_items (owner, contact, name, subscription, ask, approved, groups, ver)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    owner,
                    item.jid.as_str(),
                    item.name,
                    item.subscription.as_str(),
                    item.ask,
                    item.approved,
                    groups,
                    v as i64
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM roster_removed WHERE owner = ?1 AND contact = ?2",
                params![owner, item.jid.as_str()],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(v)
        })
        .await
    }

    async fn remove(&self, user: &Jid, contact: &Jid) -> Result<Option<u64>, StoreError> {
        let (owner, contact) = (user.as_str().to_owned(), contact.as_str().to_owned());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            let n = tx
                .execute(
                    "DELETE FROM roster_items WHERE owner = ?1 AND contact = ?2",
                    [&owner, &contact],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Ok(None);
            }
            let v = bump(&tx, &owner).map_err(unavailable)?;
            tx.execute(
                "INSERT OR REPLACE INTO roster_removed (owner, contact, ver) VALUES (?1, ?2, ?3)",
                params![owner, contact, v as i64],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Some(v))
        })
        .await
    }

    async fn changes_since(
        &self,
        user: &Jid,
        since: u64,
    ) -> Result<Option<(u64, Vec<RosterChange>)>, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            let current = version(c, &owner).map_err(unavailable)?;
            if since > current {
                return Ok(None);
            }
            let mut changes: Vec<(i64, RosterChange)> = Vec::new();
            {
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS}, ver FROM roster_items WHERE owner = ?1 AND ver > ?2"
                    ))
                    .map_err(unavailable)?;
                let rows = st
                    .query_map(params![owner, since as i64], |r| {
                        Ok((row_item(r)?, r.get::<_, i64>(6)?))
                    })
                    .map_err(unavailable)?;
                for r in rows {
                    let (item, ver) = r.map_err(unavailable)?;
                    changes.push((ver, RosterChange::Updated(to_item(item)?)));
                }
                let mut st = c
                    .prepare_cached(
                        "SELECT contact, ver FROM roster_removed WHERE owner = ?1 AND ver > ?2",
                    )
                    .map_err(unavailable)?;
                let rows = st
                    .query_map(params![owner, since as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })
                    .map_err(unavailable)?;
                for r in rows {
                    let (contact, ver) = r.map_err(unavailable)?;
                    changes.push((
                        ver,
                        RosterChange::Removed(Jid::parse(&contact).map_err(unavailable)?),
                    ));
                }
            }
            changes.sort_by_key(|(v, _)| *v);
            Ok(Some((
                current,
                changes.into_iter().map(|(_, c)| c).collect(),
            )))
        })
        .await
    }

    async fn add_pending_in(
        &self,
        user: &Jid,
        contact: &Jid,
        stanza: &str,
    ) -> Result<(), StoreError> {
        let (o, c, st) = (
            user.as_str().to_owned(),
            contact.as_str().to_owned(),
            stanza.to_owned(),
        );
        self.pending_op(move |conn| {
            conn.execute(
                "INSERT INTO roster_pending_in (owner, contact, stanza, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(owner, contact) DO UPDATE SET stanza = excluded.stanza",
                params![o, c, st, crate::now()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn remove_pending_in(&self, user: &Jid, contact: &Jid) -> Result<bool, StoreError> {
        let (o, c) = (user.as_str().to_owned(), contact.as_str().to_owned());
        self.pending_op(move |conn| {
            conn.execute(
                "DELETE FROM roster_pending_in WHERE owner = ?1 AND contact = ?2",
                [&o, &c],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn pending_in(&self, user: &Jid) -> Result<Vec<(Jid, String)>, StoreError> {
        let o = user.as_str().to_owned();
        let rows: Vec<(String, String)> = self
            .pending_op(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT contact, stanza FROM roster_pending_in WHERE owner = ?1 ORDER BY created_at, contact",
                )?;
                let rows = st.query_map([&o], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(c, s)| Ok((Jid::parse(&c).map_err(unavailable)?, s)))
            .collect()
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(
            user,
            &[
                ("roster_items", "owner"),
                ("roster_removed", "owner"),
                ("roster_versions", "owner"),
                ("roster_pending_in", "owner"),
            ],
        )
        .await
    }
}

impl SqliteStore {
    async fn pending_op<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with(move |c| f(c).map_err(unavailable)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roster_store_conformance() {
        let store = SqliteStore::in_memory().unwrap();
        rookery_session::roster::conformance::run(&store).await;
    }

    /// The cache in front of the store behaves exactly like the store.
    #[tokio::test]
    async fn cached_roster_store_conformance() {
        let inner = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        let store = rookery_session::roster_cache::CachedRosterStore::new(inner, 1);
        rookery_session::roster::conformance::run(&store).await;
        let inner = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        let store = rookery_session::roster_cache::CachedRosterStore::new(inner, 1000);
        rookery_session::roster::conformance::run(&store).await;
    }
}
