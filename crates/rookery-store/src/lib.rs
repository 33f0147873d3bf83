//! The embedded store: SQLite (bundled), one file under the data directory.
//!
//! It implements the storage traits that the features define: [`UserStore`]
//! (accounts), and the per-user stores of `rookery-session`
//! ([`rookery_session::VCardStore`], [`rookery_session::PrivateStore`],
//! [`rookery_session::LastActivityStore`]), each in its own module with its
//! own schema steps. SQLite was chosen over an embedded key-value engine because
//! rosters, archives and rooms are relational and range-queried (MAM paging),
//! and because an operator can open the file with the `sqlite3` shell; see
//! `docs/decisions/0002-embedded-store.md`.
//!
//! All access goes through one connection on a blocking thread
//! (`spawn_blocking`), so the async runtime never waits on disk. WAL mode lets
//! readers proceed during writes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rookery_core::users::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

mod blocking;
mod last;
mod mam;
mod offline;
mod private;
mod roster;
mod users;
mod vcard;

/// Schema steps of every feature, applied once each in this order and
/// recorded in `schema_migrations`. A feature appends its own steps; a step is
/// never edited once released.
const MIGRATIONS: &[(&str, &str)] = &[
    ("accounts-1", users::SCHEMA_1),
    ("roster-1", roster::SCHEMA_1),
    ("offline-1", offline::SCHEMA_1),
    ("blocklist-1", blocking::SCHEMA_1),
    ("vcards-1", vcard::SCHEMA_1),
    ("private-xml-1", private::SCHEMA_1),
    ("last-activity-1", last::SCHEMA_1),
    ("mam-1", mam::SCHEMA_1),
];

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and applies migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        SqliteStore::init(conn)
    }

    /// A private in-memory store (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(unavailable)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .map_err(unavailable)?;
        for (name, sql) in MIGRATIONS {
            let done: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM schema_migrations WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            if done.is_some() {
                continue;
            }
            let tx = conn.unchecked_transaction().map_err(unavailable)?;
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Unavailable(format!("migration {name}: {e}")))?;
            tx.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)",
                params![name, now()],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            tracing::info!(migration = name, "store schema updated");
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    /// Deletes every row of `user` from each `(table, key column)` in one
    /// transaction: the `delete_user` of every feature store.
    pub(crate) async fn delete_user_rows(
        &self,
        user: &rookery_core::Jid,
        tables: &'static [(&'static str, &'static str)],
    ) -> Result<(), StoreError> {
        let key = user.as_str().to_owned();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            for (table, column) in tables {
                tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [&key])
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            f(&mut c)
        })
        .await
        .map_err(unavailable)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_core::UserStore;
    use rookery_sasl::StoredCredentials;

    rookery_core::user_store_conformance!(SqliteStore::in_memory().unwrap());

    #[tokio::test]
    async fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rookery.db");
        let creds = StoredCredentials::derive("pw", 4096);
        SqliteStore::open(&path)
            .unwrap()
            .create("a@b", &creds)
            .await
            .unwrap();
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.credentials("a@b").await.unwrap(), Some(creds));
    }
}
