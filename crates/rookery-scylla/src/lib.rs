//! The ScyllaDB backend of every store trait.
//!
//! [`ScyllaStore`] implements [`rookery_core::UserStore`] and the per-feature
//! stores of `rookery-session` on a ScyllaDB (or Apache Cassandra) cluster
//! through the `scylla` driver. The CQL schema lives in `schema/*.cql` beside
//! this crate ([`SCHEMA`]) and is applied by [`migrate`] (`rookery store
//! migrate`); [`ScyllaStore::connect`] refuses a keyspace whose schema is
//! missing or behind. Every statement is prepared once at connect time.
//!
//! Tables are partitioned by the owning account, so that every request of
//! one user touches one partition (two for an archive query spanning time
//! buckets); nothing uses `ALLOW FILTERING` or a secondary index. What is and
//! is not atomic compared with the SQLite store is recorded in
//! `docs/decisions/0012-scylladb-backend.md`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use rookery_core::users::StoreError;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use serde::{Deserialize, Serialize};

mod blocking;
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

pub use mam::{BUCKET_MICROS, bucket_of};

/// The schema steps, in the order [`migrate`] applies them: `(name, CQL)`,
/// one per file of `crates/rookery-scylla/schema/`. A step is never edited
/// once released; a change is a new file.
pub const SCHEMA: &[(&str, &str)] = &[
    ("001_accounts", include_str!("../schema/001_accounts.cql")),
    ("002_roster", include_str!("../schema/002_roster.cql")),
    ("003_offline", include_str!("../schema/003_offline.cql")),
    ("004_blocklist", include_str!("../schema/004_blocklist.cql")),
    ("005_vcards", include_str!("../schema/005_vcards.cql")),
    (
        "006_private_xml",
        include_str!("../schema/006_private_xml.cql"),
    ),
    (
        "007_last_activity",
        include_str!("../schema/007_last_activity.cql"),
    ),
    ("008_mam", include_str!("../schema/008_mam.cql")),
    ("009_muc_rooms", include_str!("../schema/009_muc_rooms.cql")),
    ("010_pubsub", include_str!("../schema/010_pubsub.cql")),
    (
        "011_push_registrations",
        include_str!("../schema/011_push_registrations.cql"),
    ),
];

/// The `[store.scylla]` section of the configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the other nodes.
    pub nodes: Vec<String>,
    /// The keyspace holding Rookery's tables (a lower-case CQL identifier).
    pub keyspace: String,
    /// The replication of the keyspace as a CQL map literal, used when
    /// [`migrate`] creates it.
    pub replication: String,
    /// User name for password authentication.
    pub username: Option<String>,
    /// Password for password authentication.
    pub password: Option<String>,
    /// The local datacenter: when set, requests go to its nodes only
    /// (DC-aware, token-aware load balancing).
    pub local_datacenter: Option<String>,
    /// Client-side timeout of one request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Consistency level of reads and writes: `local_quorum` (default),
    /// `quorum`, `one`, `local_one` or `all`.
    pub consistency: String,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "rookery".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            username: None,
            password: None,
            local_datacenter: None,
            request_timeout_ms: 5000,
            consistency: "local_quorum".into(),
        }
    }
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("local_datacenter", &self.local_datacenter)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("consistency", &self.consistency)
            .finish()
    }
}

impl ScyllaConfig {
    /// The configured consistency level, and the serial consistency that
    /// lightweight transactions use with it (`LOCAL_SERIAL` unless the
    /// level spans datacenters).
    pub fn consistency_levels(&self) -> Result<(Consistency, SerialConsistency), StoreError> {
        let c = parse_consistency(&self.consistency)?;
        let serial = match c {
            Consistency::Quorum | Consistency::All => SerialConsistency::Serial,
            _ => SerialConsistency::LocalSerial,
        };
        Ok((c, serial))
    }

    /// Checks the section without contacting the cluster: keyspace name,
    /// replication literal, a node to contact, consistency level.
    pub fn check(&self) -> Result<(), StoreError> {
        check_identifier(&self.keyspace)?;
        let r = self.replication.trim();
        if !(r.starts_with('{') && r.ends_with('}')) || r.contains(';') {
            return Err(StoreError::Unavailable(format!(
                "store.scylla.replication must be a CQL map literal, not {r:?}"
            )));
        }
        if self.nodes.is_empty() {
            return Err(StoreError::Unavailable(
                "store.scylla.nodes lists no node".into(),
            ));
        }
        self.consistency_levels().map(|_| ())
    }
}

/// Parses a consistency level name (case-insensitive).
pub fn parse_consistency(s: &str) -> Result<Consistency, StoreError> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "local_quorum" => Consistency::LocalQuorum,
        "quorum" => Consistency::Quorum,
        "one" => Consistency::One,
        "local_one" => Consistency::LocalOne,
        "all" => Consistency::All,
        other => {
            return Err(StoreError::Unavailable(format!(
                "unknown consistency {other:?} (local_quorum, quorum, one, local_one, all)"
            )));
        }
    })
}

/// A keyspace name Rookery accepts: 1 to 48 of `[a-z0-9_]`, starting with a
/// letter (so it needs no quoting and means the same in every statement).
fn check_identifier(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid keyspace name {name:?}: use 1 to 48 of a-z, 0-9 and _, starting with a letter"
        )))
    }
}

/// Splits CQL text into its statements: on `;` outside string literals
/// (`'...'` with `''` escapes, `$$...$$`), quoted identifiers and comments
/// (`--`, `//`, `/* */`). Comments are dropped; empty statements are skipped.
pub fn split_statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = cql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            cur.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                cur.push_str("$$");
                let mut prev = ' ';
                for d in chars.by_ref() {
                    cur.push(d);
                    if prev == '$' && d == '$' {
                        break;
                    }
                    prev = d;
                }
            }
            '-' | '/' if chars.peek() == Some(&c) => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                cur.push(' ');
            }
            ';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_owned());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
    out
}

pub(crate) fn fail(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How many times a lightweight transaction that lost a race is retried
/// before the store reports contention.
pub(crate) const CAS_ATTEMPTS: usize = 32;

/// The next id of a time-ordered sequence: `micros << 10 | salt`, where
/// `salt` (10 bits) tells processes apart, and always above `last` (by a
/// multiple of 1024, keeping the salt) so that ids of one process increase
/// even if its clock steps back.
pub fn next_id(last: i64, now_micros: i64, salt: i64) -> i64 {
    let salt = salt & 0x3ff;
    let candidate = (now_micros.max(0) << 10) | salt;
    if candidate > last {
        candidate
    } else {
        // The smallest id above `last` with this salt.
        let base = last & !0x3ff;
        let next = base | salt;
        if next > last { next } else { next + 1024 }
    }
}

/// Generator of [`next_id`]s for this process.
#[derive(Debug)]
pub(crate) struct Ids {
    last: AtomicI64,
    salt: i64,
}

impl Ids {
    fn new() -> Ids {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(now_micros());
        Ids {
            last: AtomicI64::new(0),
            salt: (h.finish() & 0x3ff) as i64,
        }
    }

    pub(crate) fn next(&self) -> i64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let id = next_id(last, now_micros(), self.salt);
            match self
                .last
                .compare_exchange_weak(last, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(seen) => last = seen,
            }
        }
    }
}

/// The ScyllaDB store: one driver session (which pools connections to every
/// node) and the prepared statements of every feature.
#[derive(Debug)]
pub struct ScyllaStore {
    session: Session,
    keyspace: String,
    ids: Ids,
    users: users::Statements,
    roster: roster::Statements,
    offline: offline::Statements,
    blocklist: blocking::Statements,
    vcards: vcard::Statements,
    private: private::Statements,
    last: last::Statements,
    mam: mam::Statements,
    muc: muc::Statements,
    pubsub: pubsub::Statements,
    push: push::Statements,
}

async fn open_session(cfg: &ScyllaConfig) -> Result<Session, StoreError> {
    cfg.check()?;
    let (consistency, serial) = cfg.consistency_levels()?;
    let mut profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(serial))
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)));
    if let Some(dc) = &cfg.local_datacenter {
        profile = profile.load_balancing_policy(
            DefaultPolicy::builder()
                .prefer_datacenter(dc.clone())
                .token_aware(true)
                .permit_dc_failover(false)
                .build(),
        );
    }
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.nodes)
        .default_execution_profile_handle(profile.build().into_handle());
    if let Some(dc) = &cfg.local_datacenter {
        builder = builder.prefer_datacenter(dc.clone());
    }
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => builder = builder.user(u, p),
        (None, None) => {}
        _ => {
            return Err(StoreError::Unavailable(
                "store.scylla needs both username and password, or neither".into(),
            ));
        }
    }
    builder
        .build()
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to ScyllaDB: {e}")))
}

async fn applied_migrations(session: &Session, ks: &str) -> Result<HashSet<String>, StoreError> {
    let pager = session
        .query_iter(format!("SELECT name FROM {ks}.schema_migrations"), ())
        .await
        .map_err(fail)?;
    let rows: Vec<(String,)> = pager
        .rows_stream::<(String,)>()
        .map_err(fail)?
        .try_collect()
        .await
        .map_err(fail)?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}

/// Creates the keyspace (with `cfg.replication`) if it is missing and applies
/// every schema step of [`SCHEMA`] not yet recorded in its
/// `schema_migrations` table, in order. Idempotent: every statement is
/// `IF NOT EXISTS`, so a step interrupted half-way is simply applied again.
/// Returns the names of the steps applied.
pub async fn migrate(cfg: &ScyllaConfig) -> Result<Vec<String>, StoreError> {
    let session = open_session(cfg).await?;
    let ks = &cfg.keyspace;
    let ddl = |e| StoreError::Unavailable(format!("schema change failed: {e}"));
    session
        .query_unpaged(
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                cfg.replication.trim()
            ),
            (),
        )
        .await
        .map_err(ddl)?;
    session
        .use_keyspace(ks.as_str(), false)
        .await
        .map_err(fail)?;
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at bigint)",
            (),
        )
        .await
        .map_err(ddl)?;
    let done = applied_migrations(&session, ks).await?;
    let record = session
        .prepare(format!(
            "INSERT INTO {ks}.schema_migrations (name, applied_at) VALUES (?, ?)"
        ))
        .await
        .map_err(fail)?;
    let mut applied = Vec::new();
    for (name, cql) in SCHEMA {
        if done.contains(*name) {
            continue;
        }
        for statement in split_statements(cql) {
            session
                .query_unpaged(statement, ())
                .await
                .map_err(|e| StoreError::Unavailable(format!("migration {name}: {e}")))?;
        }
        session
            .execute_unpaged(&record, (*name, now_secs()))
            .await
            .map_err(fail)?;
        tracing::info!(migration = name, keyspace = %ks, "ScyllaDB schema updated");
        applied.push((*name).to_owned());
    }
    Ok(applied)
}

impl ScyllaStore {
    /// Connects to the cluster, checks that the keyspace carries every
    /// schema step (otherwise: run `rookery store migrate`), `USE`s it and
    /// prepares every statement.
    pub async fn connect(cfg: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        let session = open_session(cfg).await?;
        let ks = cfg.keyspace.clone();
        let done = applied_migrations(&session, &ks).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "keyspace {ks} has no Rookery schema ({e}); run `rookery store migrate`"
            ))
        })?;
        let missing: Vec<&str> = SCHEMA
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !done.contains(*n))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "the schema of keyspace {ks} is behind (missing {}); run `rookery store migrate`",
                missing.join(", ")
            )));
        }
        session
            .use_keyspace(ks.as_str(), false)
            .await
            .map_err(fail)?;
        let p = Preparer {
            session: &session,
            ks: &ks,
        };
        Ok(ScyllaStore {
            users: users::Statements::prepare(&p).await?,
            roster: roster::Statements::prepare(&p).await?,
            offline: offline::Statements::prepare(&p).await?,
            blocklist: blocking::Statements::prepare(&p).await?,
            vcards: vcard::Statements::prepare(&p).await?,
            private: private::Statements::prepare(&p).await?,
            last: last::Statements::prepare(&p).await?,
            mam: mam::Statements::prepare(&p).await?,
            muc: muc::Statements::prepare(&p).await?,
            pubsub: pubsub::Statements::prepare(&p).await?,
            push: push::Statements::prepare(&p).await?,
            ids: Ids::new(),
            keyspace: ks,
            session,
        })
    }

    /// The keyspace in use.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Every store trait, served by this store.
    pub fn stores(self: &Arc<Self>) -> rookery_session::Stores {
        rookery_session::Stores {
            users: self.clone(),
            roster: self.clone(),
            offline: self.clone(),
            blocklist: self.clone(),
            vcards: self.clone(),
            private: self.clone(),
            last_activity: self.clone(),
            archive: self.clone(),
            pubsub: self.clone(),
            push: self.clone(),
        }
    }

    /// Runs a statement, ignoring any result.
    pub(crate) async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session.execute_unpaged(st, values).await.map_err(fail)
    }

    /// The first row of a statement's result, if any.
    pub(crate) async fn one<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let rows = self
            .exec(st, values)
            .await?
            .into_rows_result()
            .map_err(fail)?;
        rows.maybe_first_row::<R>().map_err(fail)
    }

    /// Every row of a statement's result, fetched page by page.
    pub(crate) async fn all<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
    {
        self.session
            .execute_iter(st.clone(), values)
            .await
            .map_err(fail)?
            .rows_stream::<R>()
            .map_err(fail)?
            .try_collect()
            .await
            .map_err(fail)
    }

    /// Runs a lightweight transaction; returns whether it applied.
    pub(crate) async fn cas(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<bool, StoreError> {
        applied(self.exec(st, values).await?)
    }
}

/// The `[applied]` column of a lightweight transaction's result (its first
/// column; the others, present when it did not apply, are ignored).
pub(crate) fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(fail)?;
    match rows.maybe_first_row::<Row>().map_err(fail)? {
        Some(row) => match row.columns.first() {
            Some(Some(CqlValue::Boolean(b))) => Ok(*b),
            _ => Err(fail("a conditional statement answered without [applied]")),
        },
        None => Err(fail("a conditional statement answered no row")),
    }
}

/// Prepares the statements of one feature against the store's keyspace.
pub(crate) struct Preparer<'a> {
    session: &'a Session,
    ks: &'a str,
}

impl Preparer<'_> {
    /// Prepares `cql`, in which `{ks}` stands for the keyspace. `idempotent`
    /// lets the driver retry it after a timeout.
    pub(crate) async fn prepare(
        &self,
        cql: &str,
        idempotent: bool,
    ) -> Result<PreparedStatement, StoreError> {
        let text = cql.replace("{ks}", self.ks);
        let mut st = self
            .session
            .prepare(text.as_str())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot prepare {text:?}: {e}")))?;
        st.set_is_idempotent(idempotent);
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_is_a_list_of_create_statements() {
        let mut names = Vec::new();
        for (name, cql) in SCHEMA {
            let statements = split_statements(cql);
            assert!(!statements.is_empty(), "{name} has no statement");
            for s in &statements {
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS ")
                        || s.starts_with("CREATE TYPE IF NOT EXISTS "),
                    "{name}: {s}"
                );
                assert!(!s.contains(';'), "{name}: {s}");
                assert!(!s.contains("--"), "{name}: comment left in {s}");
                assert!(!s.contains("ALLOW FILTERING"), "{name}: {s}");
                assert!(!s.contains("INDEX"), "{name}: {s}");
            }
            names.push(*name);
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "steps are applied in name order");
    }

    #[test]
    fn the_splitter_respects_strings_and_comments() {
        let cql = "-- a comment; with a semicolon\n\
                   CREATE TABLE a (x text); /* block; comment */\n\
                   INSERT INTO a (x) VALUES ('it''s; fine');\n\
                   // another; comment\n\
                   CREATE FUNCTION f() RETURNS text LANGUAGE lua AS $$ return ';' $$;\n\
                   SELECT \"we;ird\" FROM a\n";
        assert_eq!(
            split_statements(cql),
            vec![
                "CREATE TABLE a (x text)",
                "INSERT INTO a (x) VALUES ('it''s; fine')",
                "CREATE FUNCTION f() RETURNS text LANGUAGE lua AS $$ return ';' $$",
                "SELECT \"we;ird\" FROM a",
            ]
        );
        assert!(split_statements(" ;; -- nothing\n").is_empty());
    }

    #[test]
    fn config_defaults_and_parsing() {
        let d = ScyllaConfig::default();
        assert_eq!(d.nodes, vec!["127.0.0.1:9042"]);
        assert_eq!(d.keyspace, "rookery");
        assert_eq!(
            d.replication,
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert_eq!(d.request_timeout_ms, 5000);
        assert_eq!(d.consistency, "local_quorum");
        assert!(d.username.is_none() && d.password.is_none() && d.local_datacenter.is_none());
        assert!(d.check().is_ok());
        // Every field has its default; unknown fields are refused.
        let c: ScyllaConfig =
            serde_json::from_str(r#"{"keyspace": "chat", "password": "pw"}"#).unwrap();
        assert_eq!(c.keyspace, "chat");
        assert_eq!(c.nodes, d.nodes);
        assert!(
            !format!("{c:?}").contains("pw"),
            "the password is not shown"
        );
        assert!(serde_json::from_str::<ScyllaConfig>(r#"{"nodez": []}"#).is_err());
        let round: ScyllaConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn consistency_levels() {
        for (s, c) in [
            ("local_quorum", Consistency::LocalQuorum),
            ("QUORUM", Consistency::Quorum),
            ("one", Consistency::One),
            (" local_one ", Consistency::LocalOne),
            ("all", Consistency::All),
        ] {
            assert_eq!(parse_consistency(s).unwrap(), c, "{s}");
        }
        assert!(parse_consistency("any").is_err());
        assert!(parse_consistency("").is_err());
        let mut cfg = ScyllaConfig::default();
        assert_eq!(
            cfg.consistency_levels().unwrap(),
            (Consistency::LocalQuorum, SerialConsistency::LocalSerial)
        );
        cfg.consistency = "quorum".into();
        assert_eq!(
            cfg.consistency_levels().unwrap(),
            (Consistency::Quorum, SerialConsistency::Serial)
        );
        cfg.consistency = "eventually".into();
        assert!(cfg.check().is_err());
    }

    #[test]
    fn keyspace_names_and_replication_are_checked() {
        for ok in ["rookery", "r", "rookery_test_42"] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Rookery", "1abc", "a-b", "a;drop", &"a".repeat(49)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
        let mut cfg = ScyllaConfig {
            replication: "{'class': 'SimpleStrategy'}; DROP KEYSPACE x".into(),
            ..Default::default()
        };
        assert!(cfg.check().is_err());
        cfg.replication = "SimpleStrategy".into();
        assert!(cfg.check().is_err());
        cfg.replication = " {'class': 'SimpleStrategy', 'replication_factor': 1} ".into();
        assert!(cfg.check().is_ok());
        cfg.nodes.clear();
        assert!(cfg.check().is_err());
    }

    #[test]
    fn ids_increase_and_keep_their_salt() {
        let salt = 0x2a;
        let a = next_id(0, 1_000, salt);
        assert_eq!(a, (1_000 << 10) | salt);
        // Same microsecond: the next id with the same salt.
        let b = next_id(a, 1_000, salt);
        assert_eq!(b, a + 1024);
        // The clock stepped back: still increasing.
        let c = next_id(b, 10, salt);
        assert!(c > b);
        assert_eq!(c & 0x3ff, salt);
        // Time moved on: the time-based id again.
        assert_eq!(next_id(c, 5_000, salt), (5_000 << 10) | salt);
        // Another process's id in between is passed with this salt.
        let other = (7_000 << 10) | 0x3ff;
        let d = next_id(other, 7_000, salt);
        assert!(d > other && d & 0x3ff == salt);
        let ids = Ids::new();
        let mut last = 0;
        for _ in 0..1000 {
            let id = ids.next();
            assert!(id > last);
            last = id;
        }
    }
}
