//! The embedded store: SQLite (bundled), one file under the data directory.
//!
//! It implements the storage traits that the features define (today
//! [`UserStore`]). SQLite was chosen over an embedded key-value engine because
//! rosters, archives and rooms are relational and range-queried (MAM paging),
//! and because an operator can open the file with the `sqlite3` shell; see
//! `docs/decisions/0002-embedded-store.md`.
//!
//! All access goes through one connection on a blocking thread
//! (`spawn_blocking`), so the async runtime never waits on disk. WAL mode lets
//! readers proceed during writes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rookery_core::users::{StoreError, UserStore};
use rookery_sasl::{ScramKeys, StoredCredentials};
use rusqlite::{Connection, OptionalExtension, params};

/// Schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE accounts (
    jid        TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE scram_credentials (
    jid        TEXT NOT NULL REFERENCES accounts(jid) ON DELETE CASCADE,
    hash       TEXT NOT NULL,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (jid, hash)
) WITHOUT ROWID;
";

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
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
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(unavailable)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "store schema version {version} is newer than this build ({SCHEMA_VERSION})"
            )));
        }
        if version < 1 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
            ))
            .map_err(unavailable)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
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

const HASHES: [&str; 3] = ["SHA-1", "SHA-256", "SHA-512"];

fn keys_of(c: &StoredCredentials) -> [(&'static str, &ScramKeys); 3] {
    [
        (HASHES[0], &c.sha1),
        (HASHES[1], &c.sha256),
        (HASHES[2], &c.sha512),
    ]
}

fn write_creds(
    tx: &rusqlite::Transaction<'_>,
    jid: &str,
    c: &StoredCredentials,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO scram_credentials (jid, hash, salt, iterations, stored_key, server_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (hash, k) in keys_of(c) {
        st.execute(params![
            jid,
            hash,
            k.salt,
            k.iterations,
            k.stored_key,
            k.server_key
        ])?;
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create(&self, bare_jid: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        let (jid, creds) = (bare_jid.to_owned(), creds.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO accounts (jid, created_at) VALUES (?1, ?2)",
                    params![jid, now()],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists);
            }
            write_creds(&tx, &jid, &creds).map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn set_credentials(
        &self,
        bare_jid: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StoreError> {
        let (jid, creds) = (bare_jid.to_owned(), creds.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM accounts WHERE jid = ?1", [&jid], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(unavailable)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            write_creds(&tx, &jid, &creds).map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn credentials(&self, bare_jid: &str) -> Result<Option<StoredCredentials>, StoreError> {
        let jid = bare_jid.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT hash, salt, iterations, stored_key, server_key FROM scram_credentials WHERE jid = ?1",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map([&jid], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        ScramKeys {
                            salt: r.get(1)?,
                            iterations: r.get(2)?,
                            stored_key: r.get(3)?,
                            server_key: r.get(4)?,
                        },
                    ))
                })
                .map_err(unavailable)?;
            let (mut sha1, mut sha256, mut sha512) = (None, None, None);
            for row in rows {
                let (hash, keys) = row.map_err(unavailable)?;
                match hash.as_str() {
                    "SHA-1" => sha1 = Some(keys),
                    "SHA-256" => sha256 = Some(keys),
                    "SHA-512" => sha512 = Some(keys),
                    _ => {}
                }
            }
            match (sha1, sha256, sha512) {
                (Some(sha1), Some(sha256), Some(sha512)) => Ok(Some(StoredCredentials { sha1, sha256, sha512 })),
                (None, None, None) => Ok(None),
                _ => Err(StoreError::Unavailable(format!("incomplete credentials for {jid}"))),
            }
        })
        .await
    }

    async fn exists(&self, bare_jid: &str) -> Result<bool, StoreError> {
        let jid = bare_jid.to_owned();
        self.with(move |c| {
            c.query_row("SELECT 1 FROM accounts WHERE jid = ?1", [&jid], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
                .map_err(unavailable)
        })
        .await
    }

    async fn delete(&self, bare_jid: &str) -> Result<bool, StoreError> {
        let jid = bare_jid.to_owned();
        self.with(move |c| {
            c.execute("DELETE FROM accounts WHERE jid = ?1", [&jid])
                .map(|n| n > 0)
                .map_err(unavailable)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare_cached("SELECT jid FROM accounts ORDER BY jid")
                .map_err(unavailable)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(unavailable)?;
            rows.collect::<Result<Vec<String>, _>>()
                .map_err(unavailable)
        })
        .await
    }

    async fn import(
        &self,
        accounts: Vec<(String, StoredCredentials)>,
    ) -> Result<usize, StoreError> {
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            {
                let mut acc = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO accounts (jid, created_at) VALUES (?1, ?2)",
                    )
                    .map_err(unavailable)?;
                let t = now();
                for (jid, creds) in &accounts {
                    acc.execute(params![jid, t]).map_err(unavailable)?;
                    write_creds(&tx, jid, creds).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(accounts.len())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
