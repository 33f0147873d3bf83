//! [`PushStore`] on SQLite: the XEP-0357 registrations of each account.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::modules::push::{PushRegistration, PushStore};
use rusqlite::params;

use crate::{SqliteStore, unavailable};

/// One row per (account, app server, node). No foreign key to `accounts`:
/// the rows go with the account through [`PushStore::delete_user`].
pub(crate) const SCHEMA_1: &str = "
CREATE TABLE push_registrations (
    jid        TEXT NOT NULL,
    service    TEXT NOT NULL,
    node       TEXT NOT NULL,
    client     TEXT NOT NULL,
    options    TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (jid, service, node)
) WITHOUT ROWID;
";

#[async_trait]
impl PushStore for SqliteStore {
    async fn put_push(
        &self,
        user: &Jid,
        reg: &PushRegistration,
        max: usize,
    ) -> Result<bool, StoreError> {
        let (jid, reg) = (user.as_str().to_owned(), reg.clone());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
            let (count, exists): (i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(service = ?2 AND node = ?3), 0)
                     FROM push_registrations WHERE jid = ?1",
                    params![jid, reg.service, reg.node],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(unavailable)?;
            if exists == 0 && usize::try_from(count).unwrap_or(usize::MAX) >= max {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO push_registrations (jid, service, node, client, options, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (jid, service, node) DO UPDATE SET
                     client = excluded.client, options = excluded.options,
                     created_at = excluded.created_at",
                params![
                    jid,
                    reg.service,
                    reg.node,
                    reg.client,
                    reg.options,
                    crate::now()
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn push_registrations(&self, user: &Jid) -> Result<Vec<PushRegistration>, StoreError> {
        let jid = user.as_str().to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT service, node, client, options FROM push_registrations WHERE jid = ?1",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map([&jid], |r| {
                    Ok(PushRegistration {
                        service: r.get(0)?,
                        node: r.get(1)?,
                        client: r.get(2)?,
                        options: r.get(3)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn remove_push(
        &self,
        user: &Jid,
        service: &str,
        node: Option<&str>,
    ) -> Result<usize, StoreError> {
        let (jid, service, node) = (
            user.as_str().to_owned(),
            service.to_owned(),
            node.map(str::to_owned),
        );
        self.with(move |c| {
            match &node {
                Some(n) => c.execute(
                    "DELETE FROM push_registrations WHERE jid = ?1 AND service = ?2 AND node = ?3",
                    params![jid, service, n],
                ),
                None => c.execute(
                    "DELETE FROM push_registrations WHERE jid = ?1 AND service = ?2",
                    params![jid, service],
                ),
            }
            .map_err(unavailable)
        })
        .await
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.delete_user_rows(user, &[("push_registrations", "jid")])
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;

    rookery_session::push_store_conformance!(SqliteStore::in_memory().unwrap());
}
