//! [`ArchiveStore`] (XEP-0313) on SQLite.
//!
//! Items are ordered by `seq`, the append order (XEP-0313 §3.1: timestamps
//! alone may tie); the archive id is unique per owner and only used to find
//! an item's `seq` for paging. Time filters use the `(owner, ts, seq)` index.

use async_trait::async_trait;
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::mam::{
    ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveStore, ArchivedMessage, DefaultMode, Page,
    QueryError,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::{SqliteStore, unavailable};

pub(crate) const SCHEMA_1: &str = "
CREATE TABLE mam_messages (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    owner    TEXT NOT NULL,
    id       TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    with_jid TEXT NOT NULL,
    stanza   TEXT NOT NULL
);
CREATE UNIQUE INDEX mam_messages_owner_id ON mam_messages (owner, id);
CREATE INDEX mam_messages_owner_ts ON mam_messages (owner, ts, seq);
CREATE INDEX mam_messages_owner_with ON mam_messages (owner, with_jid, seq);
CREATE TABLE mam_prefs (
    owner        TEXT PRIMARY KEY NOT NULL,
    default_mode TEXT NOT NULL,
    always       TEXT NOT NULL,
    never        TEXT NOT NULL
) WITHOUT ROWID;
";

fn seq_of(c: &Connection, owner: &str, id: &str) -> Result<i64, QueryError> {
    c.prepare_cached("SELECT seq FROM mam_messages WHERE owner = ?1 AND id = ?2")
        .and_then(|mut st| st.query_row(params![owner, id], |r| r.get(0)).optional())
        .map_err(|e| QueryError::Store(unavailable(e)))?
        .ok_or(QueryError::ItemNotFound)
}

fn count(c: &Connection, sql: &str, args: &[Value]) -> Result<usize, QueryError> {
    c.query_row(sql, params_from_iter(args.iter()), |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .map_err(|e| QueryError::Store(unavailable(e)))
}

fn query(
    c: &Connection,
    owner: &str,
    filter: &ArchiveFilter,
    page: &Page,
    limit: usize,
) -> Result<ArchivePage, QueryError> {
    let store_err = |e: rusqlite::Error| QueryError::Store(unavailable(e));
    let mut conds = vec!["owner = ?".to_owned()];
    let mut args: Vec<Value> = vec![Value::Text(owner.to_owned())];
    if let Some(w) = &filter.with {
        conds.push("with_jid = ?".into());
        args.push(Value::Text(w.as_str().to_owned()));
    }
    if let Some(s) = filter.start {
        conds.push("ts >= ?".into());
        args.push(Value::Integer(s));
    }
    if let Some(e) = filter.end {
        conds.push("ts <= ?".into());
        args.push(Value::Integer(e));
    }
    if let Some(id) = &filter.after_id {
        conds.push("seq > ?".into());
        args.push(Value::Integer(seq_of(c, owner, id)?));
    }
    if let Some(id) = &filter.before_id {
        conds.push("seq < ?".into());
        args.push(Value::Integer(seq_of(c, owner, id)?));
    }
    if !filter.ids.is_empty() {
        let mut seqs = Vec::with_capacity(filter.ids.len());
        for id in &filter.ids {
            seqs.push(seq_of(c, owner, id)?.to_string());
        }
        // Integers only: safe to inline.
        conds.push(format!("seq IN ({})", seqs.join(",")));
    }
    let base = conds.join(" AND ");
    let total = count(
        c,
        &format!("SELECT COUNT(*) FROM mam_messages WHERE {base}"),
        &args,
    )?;
    let (cursor, backward) = match page {
        Page::Forward(after) => (after.as_ref().map(|id| ("seq > ?", id)), false),
        Page::Backward(before) => (before.as_ref().map(|id| ("seq < ?", id)), true),
    };
    let mut page_conds = base.clone();
    let mut page_args = args.clone();
    if let Some((cond, id)) = cursor {
        page_conds.push_str(" AND ");
        page_conds.push_str(cond);
        page_args.push(Value::Integer(seq_of(c, owner, id)?));
    }
    page_args.push(Value::Integer(
        limit.saturating_add(1).min(i64::MAX as usize) as i64,
    ));
    let sql = format!(
        "SELECT seq, id, ts, with_jid, stanza FROM mam_messages WHERE {page_conds} ORDER BY seq {} LIMIT ?",
        if backward { "DESC" } else { "ASC" }
    );
    let mut st = c.prepare(&sql).map_err(store_err)?;
    let rows = st
        .query_map(params_from_iter(page_args.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(store_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_err)?;
    let complete = rows.len() <= limit;
    let mut rows: Vec<_> = rows.into_iter().take(limit).collect();
    if backward {
        rows.reverse();
    }
    let first_index = match rows.first() {
        Some((seq, ..)) => {
            let mut a = args.clone();
            a.push(Value::Integer(*seq));
            Some(count(
                c,
                &format!("SELECT COUNT(*) FROM mam_messages WHERE {base} AND seq < ?"),
                &a,
            )?)
        }
        None => None,
    };
    let mut items = Vec::with_capacity(rows.len());
    for (_, id, ts, with, stanza) in rows {
        let with = Jid::parse(&with).map_err(|e| QueryError::Store(unavailable(e)))?;
        items.push(ArchivedMessage {
            id,
            ts,
            with,
            stanza,
        });
    }
    Ok(ArchivePage {
        items,
        complete,
        count: total,
        first_index,
    })
}

fn jid_list(s: &str) -> Result<Vec<Jid>, StoreError> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|l| Jid::parse(l).map_err(unavailable))
        .collect()
}

fn join_jids(l: &[Jid]) -> String {
    l.iter().map(Jid::as_str).collect::<Vec<_>>().join("\n")
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn append(&self, user: &Jid, item: &ArchivedMessage) -> Result<(), StoreError> {
        self.archive_writer
            .append(crate::group_commit::Row {
                owner: user.as_str().to_owned(),
                id: item.id.clone(),
                ts: item.ts,
                with: item.with.as_str().to_owned(),
                stanza: item.stanza.clone(),
            })
            .await
    }

    async fn query(
        &self,
        user: &Jid,
        filter: &ArchiveFilter,
        page: &Page,
        limit: usize,
    ) -> Result<ArchivePage, QueryError> {
        // Read your writes: every row queued before the query is committed.
        self.archive_writer.flush().await?;
        let owner = user.as_str().to_owned();
        let (filter, page) = (filter.clone(), page.clone());
        self.with(move |c| Ok(query(c, &owner, &filter, &page, limit)))
            .await?
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        self.archive_writer.flush().await?;
        self.delete_user_rows(user, &[("mam_messages", "owner"), ("mam_prefs", "owner")])
            .await
    }

    async fn prefs(&self, user: &Jid) -> Result<ArchivePrefs, StoreError> {
        let owner = user.as_str().to_owned();
        self.with(move |c| {
            let row: Option<(String, String, String)> = c
                .query_row(
                    "SELECT default_mode, always, never FROM mam_prefs WHERE owner = ?1",
                    [&owner],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let Some((mode, always, never)) = row else {
                return Ok(ArchivePrefs::default());
            };
            Ok(ArchivePrefs {
                default: DefaultMode::parse(&mode).unwrap_or_default(),
                always: jid_list(&always)?,
                never: jid_list(&never)?,
            })
        })
        .await
    }

    async fn set_prefs(&self, user: &Jid, prefs: &ArchivePrefs) -> Result<(), StoreError> {
        let owner = user.as_str().to_owned();
        let (mode, always, never) = (
            prefs.default.as_str(),
            join_jids(&prefs.always),
            join_jids(&prefs.never),
        );
        self.with(move |c| {
            c.execute(
                "INSERT INTO mam_prefs (owner, default_mode, always, never) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner) DO UPDATE SET default_mode = ?2, always = ?3, never = ?4",
                params![owner, mode, always, never],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn archive_store_conformance() {
        let store = SqliteStore::in_memory().unwrap();
        rookery_session::mam::conformance::run(&store).await;
    }
}
