//! [`UserStore`] on ScyllaDB: accounts and their SCRAM verifiers (RFC 5802
//! §3, RFC 7677), table `accounts` (`schema/001_accounts.cql`).
//!
//! Creating and deleting an account and replacing its credentials are
//! lightweight transactions on the account's row, so `AlreadyExists` and
//! `NotFound` are exact under concurrency. [`UserStore::import`] writes plain
//! upserts (it creates or replaces), concurrently.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rookery_core::users::{StoreError, UserStore};
use rookery_sasl::{ScramKeys, StoredCredentials};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, fail, now_secs};

const KEY_COLUMNS: &str = "sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, \
    sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, \
    sha512_salt, sha512_iterations, sha512_stored_key, sha512_server_key";

#[derive(Debug)]
pub(crate) struct Statements {
    create: PreparedStatement,
    upsert: PreparedStatement,
    set_credentials: PreparedStatement,
    credentials: PreparedStatement,
    exists: PreparedStatement,
    delete: PreparedStatement,
    list: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        let insert = format!(
            "INSERT INTO {{ks}}.accounts (jid, created_at, {KEY_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        let set = KEY_COLUMNS
            .split(", ")
            .map(|c| format!("{} = ?", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Statements {
            create: p.prepare(&format!("{insert} IF NOT EXISTS"), false).await?,
            upsert: p.prepare(&insert, true).await?,
            set_credentials: p
                .prepare(
                    &format!("UPDATE {{ks}}.accounts SET {set} WHERE jid = ? IF EXISTS"),
                    false,
                )
                .await?,
            credentials: p
                .prepare(
                    &format!("SELECT {KEY_COLUMNS} FROM {{ks}}.accounts WHERE jid = ?"),
                    true,
                )
                .await?,
            exists: p
                .prepare("SELECT jid FROM {ks}.accounts WHERE jid = ?", true)
                .await?,
            delete: p
                .prepare("DELETE FROM {ks}.accounts WHERE jid = ? IF EXISTS", false)
                .await?,
            list: p.prepare("SELECT jid FROM {ks}.accounts", true).await?,
        })
    }
}

/// One hash's keys as CQL values: (salt, iterations, stored key, server key).
type KeyValues<'a> = (&'a [u8], i32, &'a [u8], &'a [u8]);

fn key_values(k: &ScramKeys) -> Result<KeyValues<'_>, StoreError> {
    let iterations = i32::try_from(k.iterations)
        .map_err(|_| fail(format!("iteration count {} too large", k.iterations)))?;
    Ok((&k.salt, iterations, &k.stored_key, &k.server_key))
}

type StoredKeys = (
    Option<Vec<u8>>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

fn keys_of(
    jid: &str,
    (salt, iterations, stored, server): StoredKeys,
) -> Result<ScramKeys, StoreError> {
    match (salt, iterations, stored, server) {
        (Some(salt), Some(iterations), Some(stored_key), Some(server_key)) => Ok(ScramKeys {
            salt,
            iterations: u32::try_from(iterations)
                .map_err(|_| fail(format!("negative iteration count for {jid}")))?,
            stored_key,
            server_key,
        }),
        _ => Err(fail(format!("incomplete credentials for {jid}"))),
    }
}

impl ScyllaStore {
    /// Writes an account row with `st` (the conditional create or the
    /// upsert of an import); returns whether it applied.
    async fn write_account(
        &self,
        st: &PreparedStatement,
        jid: &str,
        c: &StoredCredentials,
        conditional: bool,
    ) -> Result<bool, StoreError> {
        let (a, b, d) = (
            key_values(&c.sha1)?,
            key_values(&c.sha256)?,
            key_values(&c.sha512)?,
        );
        let values = (
            jid,
            now_secs(),
            a.0,
            a.1,
            a.2,
            a.3,
            b.0,
            b.1,
            b.2,
            b.3,
            d.0,
            d.1,
            d.2,
            d.3,
        );
        if conditional {
            self.cas(st, values).await
        } else {
            self.exec(st, values).await.map(|_| true)
        }
    }
}

#[async_trait]
impl UserStore for ScyllaStore {
    async fn create(&self, bare_jid: &str, creds: &StoredCredentials) -> Result<(), StoreError> {
        if self
            .write_account(&self.users.create, bare_jid, creds, true)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists)
        }
    }

    async fn set_credentials(
        &self,
        bare_jid: &str,
        c: &StoredCredentials,
    ) -> Result<(), StoreError> {
        let (a, b, d) = (
            key_values(&c.sha1)?,
            key_values(&c.sha256)?,
            key_values(&c.sha512)?,
        );
        let values = (
            a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3, d.0, d.1, d.2, d.3, bare_jid,
        );
        if self.cas(&self.users.set_credentials, values).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn credentials(&self, bare_jid: &str) -> Result<Option<StoredCredentials>, StoreError> {
        type KeysRow = (
            Option<Vec<u8>>,
            Option<i32>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i32>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i32>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let Some(r) = self
            .one::<KeysRow>(&self.users.credentials, (bare_jid,))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredCredentials {
            sha1: keys_of(bare_jid, (r.0, r.1, r.2, r.3))?,
            sha256: keys_of(bare_jid, (r.4, r.5, r.6, r.7))?,
            sha512: keys_of(bare_jid, (r.8, r.9, r.10, r.11))?,
        }))
    }

    async fn exists(&self, bare_jid: &str) -> Result<bool, StoreError> {
        Ok(self
            .one::<(String,)>(&self.users.exists, (bare_jid,))
            .await?
            .is_some())
    }

    async fn delete(&self, bare_jid: &str) -> Result<bool, StoreError> {
        self.cas(&self.users.delete, (bare_jid,)).await
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        // A scan of the whole table, in token order: an administrative
        // operation, sorted here.
        let mut jids: Vec<String> = self
            .all::<(String,)>(&self.users.list, ())
            .await?
            .into_iter()
            .map(|(j,)| j)
            .collect();
        jids.sort_unstable();
        Ok(jids)
    }

    async fn import(
        &self,
        accounts: Vec<(String, StoredCredentials)>,
    ) -> Result<usize, StoreError> {
        let n = accounts.len();
        futures::stream::iter(accounts)
            .map(|(jid, creds)| async move {
                self.write_account(&self.users.upsert, &jid, &creds, false)
                    .await
            })
            .buffer_unordered(32)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_incomplete_rows_are_errors() {
        let c = StoredCredentials::derive("pw", 4096);
        let (salt, it, st, sv) = key_values(&c.sha256).unwrap();
        let back = keys_of(
            "a@b",
            (
                Some(salt.to_vec()),
                Some(it),
                Some(st.to_vec()),
                Some(sv.to_vec()),
            ),
        )
        .unwrap();
        assert_eq!(back, c.sha256);
        assert!(keys_of("a@b", (None, Some(1), None, None)).is_err());
        assert!(keys_of("a@b", (Some(vec![]), Some(-1), Some(vec![]), Some(vec![]))).is_err());
        let mut big = c.sha1.clone();
        big.iterations = u32::MAX;
        assert!(key_values(&big).is_err());
    }
}
