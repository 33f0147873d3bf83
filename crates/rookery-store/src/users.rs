//! [`UserStore`] on SQLite: accounts and their SCRAM keys.

use async_trait::async_trait;
use rookery_core::users::{StoreError, UserStore};
use rookery_sasl::{ScramKeys, StoredCredentials};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, now, unavailable};

pub(crate) const SCHEMA_1: &str = "
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

#[async_trait]
impl UserStore for SqliteStore {
    async fn create(&self, bare_jid: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        let (jid, creds) = (bare_jid.to_owned(), creds.clone());
        self.with(move |c| {
            let tx = crate::write_tx(c)?;
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
            let tx = crate::write_tx(c)?;
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
            let tx = crate::write_tx(c)?;
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
