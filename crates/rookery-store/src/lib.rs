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
//! readers proceed during writes. Archive appends, the one write on the
//! message path, go through a group-commit writer thread instead: every
//! append waiting while a batch commits goes into the next transaction, so
//! under load one commit (and one WAL sync point) serves many messages while
//! each caller still returns only after its row is committed
//! (`docs/decisions/0009-archive-group-commit.md`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rookery_core::users::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

mod blocking;
mod group_commit;
mod last;
mod mam;
mod muc;
mod offline;
mod private;
mod pubsub;
mod push;
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
    ("muc-1", muc::SCHEMA_1),
    ("pubsub-1", pubsub::SCHEMA_1),
    ("push-1", push::SCHEMA_1),
];

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL size past which the checkpointer truncates it.
const WAL_LIMIT: u64 = 64 << 20;

/// Moves WAL checkpoints off the writing connection: a thread with its own
/// connection runs a PASSIVE checkpoint (which never blocks readers or the
/// writer) every [`CHECKPOINT_EVERY`], and the main connection stops
/// checkpointing itself. Under load the archive writer was spending a
/// third of its time copying pages back (docs/benchmarks.md); this puts
/// that work on the other core.
fn start_checkpointer(
    main: &Arc<Mutex<Connection>>,
    path: &Path,
) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let own = Connection::open(path).map_err(unavailable)?;
    own.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(unavailable)?;
    main.lock()
        .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?
        .execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .map_err(unavailable)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(0);
    std::thread::Builder::new()
        .name("rookery-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = own.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                // Under sustained writes a PASSIVE checkpoint never finds the
                // WAL idle, so SQLite never starts it over and it grows
                // without bound: past the limit, wait for the writer between
                // two transactions and truncate it (a short pause, since the
                // passive pass just copied almost everything).
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT)
                    && let Err(e) = own.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                {
                    tracing::warn!(error = %e, "WAL truncation failed");
                }
            }
            // The store is gone: fold the WAL back in before exiting.
            let _ = own.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        })
        .map_err(unavailable)?;
    Ok(tx)
}

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    archive_writer: group_commit::Writer,
    /// Dropping the last clone stops the checkpointer thread.
    _checkpointer: Option<Arc<std::sync::mpsc::SyncSender<()>>>,
}

/// Begins a transaction that takes the write lock at once (`BEGIN
/// IMMEDIATE`). A deferred one that reads first and then writes cannot wait
/// for another connection's writer: SQLite fails its upgrade with
/// `SQLITE_BUSY` at once instead of calling the busy handler, and another
/// process on the same file (`rookery user add` beside a running server) is
/// enough to hit that.
pub(crate) fn write_tx(c: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)
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
        let mut store = SqliteStore::init(conn)?;
        store._checkpointer = Some(Arc::new(start_checkpointer(&store.conn, path)?));
        Ok(store)
    }

    /// A private in-memory store (tests).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        // 8 MiB of page cache (4x the default; much larger caches made every
        // commit slower, as SQLite scans the cache's hash at the end of each
        // transaction), and reads through mmap instead of pread copies.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -8192; PRAGMA mmap_size = 268435456;",
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
            let tx = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(unavailable)?;
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
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore {
            archive_writer: group_commit::Writer::start(conn.clone())?,
            conn,
            _checkpointer: None,
        })
    }

    /// Returns once every archive row queued so far is committed (for a
    /// clean shutdown; queries and deletions flush by themselves).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.archive_writer.flush().await
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
            let tx = crate::write_tx(c)?;
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

    /// Another process on the same file (the `rookery user` command beside
    /// a running server) must not make the server's read-then-write
    /// transactions fail: they wait for its writer instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_writer_on_the_file_is_waited_for() {
        use rookery_session::offline::OfflineStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery.db");
        let server = SqliteStore::open(&path).unwrap();
        let bob = rookery_core::Jid::parse("bob@b").unwrap();
        let other = {
            let path = path.clone();
            tokio::spawn(async move {
                let creds = StoredCredentials::derive("pw", 1);
                for i in 0..30 {
                    let admin = SqliteStore::open(&path).unwrap();
                    admin.create(&format!("u{i}@b"), &creds).await.unwrap();
                }
            })
        };
        let mut pushed = 0;
        while !other.is_finished() {
            server.push(&bob, "<message/>", usize::MAX).await.unwrap();
            pushed += 1;
        }
        other.await.unwrap();
        assert!(pushed > 0);
        assert_eq!(server.count(&bob).await.unwrap(), pushed);
    }
}
