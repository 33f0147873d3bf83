//! `rookery user …`: account administration against the store.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use rookery_core::UserStore;
use rookery_core::users::StoreError;
use rookery_jid::Jid;
use rookery_sasl::StoredCredentials;
use rookery_session::Stores;

use crate::config::Config;

/// Parses `user` or `user@domain` into the bare JID of an account of the
/// served domain.
pub fn account_jid(config: &Config, s: &str) -> anyhow::Result<Jid> {
    let jid = if s.contains('@') {
        Jid::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?
    } else {
        Jid::new(Some(s), &config.server.domain, None).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?
    };
    if jid.node().is_none() || jid.resource().is_some() {
        bail!("{s:?} is not an account address (user@domain)");
    }
    if jid.domain() != config.server.domain {
        bail!(
            "{} is not served here (server.domain is {})",
            jid.domain(),
            config.server.domain
        );
    }
    Ok(jid)
}

fn derive(config: &Config, password: &str) -> anyhow::Result<StoredCredentials> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    rookery_sasl::prepare_password(password)
        .map_err(|e| anyhow::anyhow!("password refused: {e}"))?;
    Ok(StoredCredentials::derive(
        password,
        config.server.scram_iterations,
    ))
}

/// `user add`
pub async fn add(
    config: &Config,
    store: &dyn UserStore,
    jid: &str,
    password: &str,
) -> anyhow::Result<()> {
    let jid = account_jid(config, jid)?;
    let creds = derive(config, password)?;
    match store.create(jid.as_str(), &creds).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists) => bail!("{jid} already exists"),
        Err(e) => Err(e.into()),
    }
}

/// `user passwd`
pub async fn passwd(
    config: &Config,
    store: &dyn UserStore,
    jid: &str,
    password: &str,
) -> anyhow::Result<()> {
    let jid = account_jid(config, jid)?;
    let creds = derive(config, password)?;
    match store.set_credentials(jid.as_str(), &creds).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => bail!("{jid} does not exist"),
        Err(e) => Err(e.into()),
    }
}

/// `user del`: the account and everything stored for it.
pub async fn delete(config: &Config, stores: &Stores, jid: &str) -> anyhow::Result<()> {
    let jid = account_jid(config, jid)?;
    if !stores.delete_account(&jid).await? {
        bail!("{jid} does not exist");
    }
    Ok(())
}

/// `user import`: one `jid password` per line (blank lines and `#` comments
/// skipped). Accounts are created or their password replaced.
///
/// Credentials are derived once per distinct password of the file, on all
/// cores, so that provisioning thousands of load-test accounts takes seconds;
/// accounts imported together with the same password share a salt (see
/// docs/decisions/0004-bulk-import.md). `unique_salts` derives per account.
pub async fn import(
    config: &Config,
    store: &dyn UserStore,
    file: &Path,
    unique_salts: bool,
) -> anyhow::Result<usize> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut entries = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((jid, password)) = line.split_once(char::is_whitespace) else {
            bail!("line {}: expected `jid password`", n + 1);
        };
        let jid = account_jid(config, jid).with_context(|| format!("line {}", n + 1))?;
        let password = password.trim();
        if password.is_empty() {
            bail!("line {}: empty password", n + 1);
        }
        rookery_sasl::prepare_password(password)
            .map_err(|e| anyhow::anyhow!("line {}: password refused: {e}", n + 1))?;
        entries.push((jid.as_str().to_owned(), password.to_owned()));
    }
    let iterations = config.server.scram_iterations;
    let derived = derive_all(&entries, unique_salts, iterations).await?;
    let n = store.import(derived).await?;
    Ok(n)
}

async fn derive_all(
    entries: &[(String, String)],
    unique_salts: bool,
    iterations: u32,
) -> anyhow::Result<Vec<(String, StoredCredentials)>> {
    let expected = entries.len();
    let entries = entries.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let key_of = |(jid, pw): &(String, String)| {
            if unique_salts {
                jid.clone()
            } else {
                pw.clone()
            }
        };
        let mut work: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if seen.insert(key_of(e)) {
                work.push((key_of(e), e.1.clone()));
            }
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = work.len().div_ceil(threads).max(1);
        let derived: HashMap<String, StoredCredentials> = std::thread::scope(|s| {
            let handles: Vec<_> = work
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(k, pw)| (k.clone(), StoredCredentials::derive(pw, iterations)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        entries
            .iter()
            .filter_map(|e| derived.get(&key_of(e)).map(|c| (e.0.clone(), c.clone())))
            .collect::<Vec<_>>()
    })
    .await?;
    if out.len() != expected {
        bail!("deriving credentials failed");
    }
    Ok(out)
}
