//! [`ArchiveStore`] on ScyllaDB (XEP-0313, paging per XEP-0059), tables
//! `mam_messages`, `mam_by_with`, `mam_ids`, `mam_partitions` and
//! `mam_prefs` (`schema/008_mam.cql`).
//!
//! A message's position is its key `(ts, seq)`: the archive time and a
//! per-process increasing tiebreaker, so that messages archived in the same
//! microsecond keep their append order. Messages live in partitions of
//! (owner, 30-day bucket) clustered by that key; a query visits the buckets
//! listed in `mam_partitions` that overlap its range, in paging order, each
//! with one clustering slice `(ts, seq) >= lo AND (ts, seq) <= hi`. Every
//! filter of the trait becomes such a range: `start`/`end` bound `ts`,
//! `after-id`/`before-id` and the RSM cursor bound the key of that id (looked
//! up in `mam_ids`); `with` selects the copy of the archive keyed by the
//! contact (`mam_by_with`, keyed by `with` as appended: a bare JID in user
//! archives, an occupant JID in room archives); an `ids` list is fetched id by id and paged in
//! memory, as it is small.
//!
//! The `<count/>` and `<first index/>` of a page (XEP-0059 §2.6) are
//! `SELECT COUNT(*)` over the same slices: like the SQLite store, a page
//! costs a scan of the filtered range.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use rookery_core::Jid;
use rookery_core::users::StoreError;
use rookery_session::mam::{
    ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveStore, ArchivedMessage, DefaultMode, Page,
    QueryError,
};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::{Preparer, ScyllaStore, fail};

/// The span of one archive partition: 30 days, in microseconds.
pub const BUCKET_MICROS: i64 = 30 * 86_400 * 1_000_000;

/// The bucket (partition) of an archive timestamp in microseconds.
pub fn bucket_of(ts: i64) -> i32 {
    let b = ts.div_euclid(BUCKET_MICROS);
    i32::try_from(b).unwrap_or(if b < 0 { i32::MIN } else { i32::MAX })
}

/// A message's position in an archive: (archive time, tiebreaker).
pub(crate) type Key = (i64, i64);

const MIN_KEY: Key = (i64::MIN, i64::MIN);
const MAX_KEY: Key = (i64::MAX, i64::MAX);

/// The smallest key after `k` (`k` itself at the very end).
pub(crate) fn succ(k: Key) -> Key {
    match k {
        (ts, i64::MAX) if ts < i64::MAX => (ts + 1, i64::MIN),
        (ts, seq) => (ts, seq.saturating_add(1)),
    }
}

/// The largest key before `k` (`k` itself at the very start).
pub(crate) fn pred(k: Key) -> Key {
    match k {
        (ts, i64::MIN) if ts > i64::MIN => (ts - 1, i64::MAX),
        (ts, seq) => (ts, seq.saturating_sub(1)),
    }
}

/// An inclusive range of keys; empty when `lo > hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) lo: Key,
    pub(crate) hi: Key,
}

impl Range {
    const ALL: Range = Range {
        lo: MIN_KEY,
        hi: MAX_KEY,
    };

    fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    fn contains(&self, k: Key) -> bool {
        self.lo <= k && k <= self.hi
    }

    /// Only keys at or after `lo`.
    fn from(self, lo: Key) -> Range {
        Range {
            lo: self.lo.max(lo),
            ..self
        }
    }

    /// Only keys at or before `hi`.
    fn to(self, hi: Key) -> Range {
        Range {
            hi: self.hi.min(hi),
            ..self
        }
    }

    /// The buckets this range can touch, from a sorted list of buckets.
    fn buckets(&self, all: &[i32]) -> Vec<i32> {
        if self.is_empty() {
            return Vec::new();
        }
        let (first, last) = (bucket_of(self.lo.0), bucket_of(self.hi.0));
        all.iter()
            .copied()
            .filter(|b| first <= *b && *b <= last)
            .collect()
    }
}

/// The range of the time and id filters (XEP-0313 §4.1.2, §4.1.3), given
/// the keys of `after-id` and `before-id`.
pub(crate) fn filter_range(
    start: Option<i64>,
    end: Option<i64>,
    after: Option<Key>,
    before: Option<Key>,
) -> Range {
    let mut r = Range::ALL;
    if let Some(s) = start {
        r = r.from((s, i64::MIN));
    }
    if let Some(e) = end {
        r = r.to((e, i64::MAX));
    }
    if let Some(a) = after {
        r = if a == MAX_KEY {
            r.from(MAX_KEY).to(MIN_KEY)
        } else {
            r.from(succ(a))
        };
    }
    if let Some(b) = before {
        r = if b == MIN_KEY {
            r.from(MAX_KEY).to(MIN_KEY)
        } else {
            r.to(pred(b))
        };
    }
    r
}

/// Pages a sorted list of keys in memory: the indexes of the page and
/// whether it is the last one in its direction.
pub(crate) fn page_in_memory(
    keys: &[Key],
    cursor: Option<Key>,
    backward: bool,
    limit: usize,
) -> (std::ops::Range<usize>, bool) {
    if backward {
        let end = cursor.map_or(keys.len(), |c| keys.partition_point(|k| *k < c));
        let start = end.saturating_sub(limit);
        (start..end, start == 0)
    } else {
        let start = cursor.map_or(0, |c| keys.partition_point(|k| *k <= c));
        let end = start.saturating_add(limit).min(keys.len());
        (start..end, end == keys.len())
    }
}

/// Which copy of the archive a query reads.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// `mam_messages`: everything.
    All,
    /// `mam_by_with`: the messages whose `with` is this JID.
    With(&'a str),
}

impl Source<'_> {
    fn with_bare(&self) -> &str {
        match self {
            Source::All => "",
            Source::With(w) => w,
        }
    }
}

/// The slices of one message table.
#[derive(Debug)]
struct Slices {
    count: PreparedStatement,
    asc: PreparedStatement,
    desc: PreparedStatement,
}

impl Slices {
    async fn prepare(p: &Preparer<'_>, table: &str, key: &str) -> Result<Slices, StoreError> {
        let range = format!(
            "FROM {{ks}}.{table} WHERE {key} AND (ts, seq) >= (?, ?) AND (ts, seq) <= (?, ?)"
        );
        let select = format!("SELECT ts, seq, id, with_jid, stanza {range}");
        Ok(Slices {
            count: p.prepare(&format!("SELECT COUNT(*) {range}"), true).await?,
            asc: p
                .prepare(&format!("{select} ORDER BY ts ASC, seq ASC LIMIT ?"), true)
                .await?,
            desc: p
                .prepare(
                    &format!("{select} ORDER BY ts DESC, seq DESC LIMIT ?"),
                    true,
                )
                .await?,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Statements {
    all: Slices,
    with: Slices,
    insert_message: PreparedStatement,
    insert_by_with: PreparedStatement,
    insert_id: PreparedStatement,
    insert_partition: PreparedStatement,
    id: PreparedStatement,
    message: PreparedStatement,
    buckets: PreparedStatement,
    partitions: PreparedStatement,
    delete_messages: PreparedStatement,
    delete_by_with: PreparedStatement,
    delete_ids: PreparedStatement,
    delete_partitions: PreparedStatement,
    prefs: PreparedStatement,
    set_prefs: PreparedStatement,
    delete_prefs: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(p: &Preparer<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            all: Slices::prepare(p, "mam_messages", "owner = ? AND bucket = ?").await?,
            with: Slices::prepare(
                p,
                "mam_by_with",
                "owner = ? AND with_bare = ? AND bucket = ?",
            )
            .await?,
            insert_message: p
                .prepare(
                    "INSERT INTO {ks}.mam_messages (owner, bucket, ts, seq, id, with_jid, stanza) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            insert_by_with: p
                .prepare(
                    "INSERT INTO {ks}.mam_by_with \
                     (owner, with_bare, bucket, ts, seq, id, with_jid, stanza) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            insert_id: p
                .prepare(
                    "INSERT INTO {ks}.mam_ids (owner, id, ts, seq, with_jid) VALUES (?, ?, ?, ?, ?)",
                    true,
                )
                .await?,
            insert_partition: p
                .prepare(
                    "INSERT INTO {ks}.mam_partitions (owner, with_bare, bucket) VALUES (?, ?, ?)",
                    true,
                )
                .await?,
            id: p
                .prepare(
                    "SELECT ts, seq FROM {ks}.mam_ids WHERE owner = ? AND id = ?",
                    true,
                )
                .await?,
            message: p
                .prepare(
                    "SELECT ts, seq, id, with_jid, stanza FROM {ks}.mam_messages \
                     WHERE owner = ? AND bucket = ? AND ts = ? AND seq = ?",
                    true,
                )
                .await?,
            buckets: p
                .prepare(
                    "SELECT bucket FROM {ks}.mam_partitions WHERE owner = ? AND with_bare = ?",
                    true,
                )
                .await?,
            partitions: p
                .prepare(
                    "SELECT with_bare, bucket FROM {ks}.mam_partitions WHERE owner = ?",
                    true,
                )
                .await?,
            delete_messages: p
                .prepare(
                    "DELETE FROM {ks}.mam_messages WHERE owner = ? AND bucket = ?",
                    true,
                )
                .await?,
            delete_by_with: p
                .prepare(
                    "DELETE FROM {ks}.mam_by_with WHERE owner = ? AND with_bare = ? AND bucket = ?",
                    true,
                )
                .await?,
            delete_ids: p
                .prepare("DELETE FROM {ks}.mam_ids WHERE owner = ?", true)
                .await?,
            delete_partitions: p
                .prepare("DELETE FROM {ks}.mam_partitions WHERE owner = ?", true)
                .await?,
            prefs: p
                .prepare(
                    "SELECT default_mode, always, never FROM {ks}.mam_prefs WHERE owner = ?",
                    true,
                )
                .await?,
            set_prefs: p
                .prepare(
                    "INSERT INTO {ks}.mam_prefs (owner, default_mode, always, never) \
                     VALUES (?, ?, ?, ?)",
                    true,
                )
                .await?,
            delete_prefs: p
                .prepare("DELETE FROM {ks}.mam_prefs WHERE owner = ?", true)
                .await?,
        })
    }
}

/// A message row: ts, seq, id, with, stanza.
type MessageRow = (i64, i64, String, String, String);

fn to_message((ts, _, id, with, stanza): MessageRow) -> Result<ArchivedMessage, QueryError> {
    Ok(ArchivedMessage {
        id,
        ts,
        with: Jid::parse(&with).map_err(|e| QueryError::Store(fail(e)))?,
        stanza,
    })
}

/// A CQL `LIMIT` (an int) for "at most `n`".
fn cql_limit(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX).max(1)
}

fn jids(list: Option<Vec<String>>) -> Result<Vec<Jid>, StoreError> {
    list.unwrap_or_default()
        .iter()
        .map(|j| Jid::parse(j).map_err(fail))
        .collect()
}

impl ScyllaStore {
    /// The key of an archive id; item-not-found if `owner` has no such id.
    async fn key_of(&self, owner: &str, id: &str) -> Result<Key, QueryError> {
        self.one::<(i64, i64)>(&self.mam.id, (owner, id))
            .await?
            .ok_or(QueryError::ItemNotFound)
    }

    async fn key_opt(&self, owner: &str, id: Option<&String>) -> Result<Option<Key>, QueryError> {
        match id {
            Some(id) => self.key_of(owner, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// The sorted buckets of one copy of an archive.
    async fn archive_buckets(&self, owner: &str, src: Source<'_>) -> Result<Vec<i32>, StoreError> {
        let mut b: Vec<i32> = self
            .all::<(i32,)>(&self.mam.buckets, (owner, src.with_bare()))
            .await?
            .into_iter()
            .map(|(b,)| b)
            .collect();
        b.sort_unstable();
        Ok(b)
    }

    /// How many messages of `range` one copy holds.
    async fn count_range(
        &self,
        owner: &str,
        src: Source<'_>,
        buckets: &[i32],
        range: Range,
    ) -> Result<usize, StoreError> {
        let mut total = 0usize;
        for b in range.buckets(buckets) {
            let (lo, hi) = (range.lo, range.hi);
            let n = match src {
                Source::All => {
                    self.one::<(i64,)>(&self.mam.all.count, (owner, b, lo.0, lo.1, hi.0, hi.1))
                        .await?
                }
                Source::With(w) => {
                    self.one::<(i64,)>(&self.mam.with.count, (owner, w, b, lo.0, lo.1, hi.0, hi.1))
                        .await?
                }
            };
            total += n.map_or(0, |(n,)| usize::try_from(n).unwrap_or(0));
        }
        Ok(total)
    }

    /// Up to `n` messages of `range`, in paging order.
    async fn fetch_range(
        &self,
        owner: &str,
        src: Source<'_>,
        buckets: &[i32],
        range: Range,
        backward: bool,
        n: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let mut out: Vec<MessageRow> = Vec::new();
        let mut visit = range.buckets(buckets);
        if backward {
            visit.reverse();
        }
        for b in visit {
            if out.len() >= n {
                break;
            }
            let (lo, hi) = (range.lo, range.hi);
            let want = cql_limit(n - out.len());
            let rows = match (src, backward) {
                (Source::All, false) => {
                    self.all::<MessageRow>(
                        &self.mam.all.asc,
                        (owner, b, lo.0, lo.1, hi.0, hi.1, want),
                    )
                    .await?
                }
                (Source::All, true) => {
                    self.all::<MessageRow>(
                        &self.mam.all.desc,
                        (owner, b, lo.0, lo.1, hi.0, hi.1, want),
                    )
                    .await?
                }
                (Source::With(w), false) => {
                    self.all::<MessageRow>(
                        &self.mam.with.asc,
                        (owner, w, b, lo.0, lo.1, hi.0, hi.1, want),
                    )
                    .await?
                }
                (Source::With(w), true) => {
                    self.all::<MessageRow>(
                        &self.mam.with.desc,
                        (owner, w, b, lo.0, lo.1, hi.0, hi.1, want),
                    )
                    .await?
                }
            };
            out.extend(rows);
        }
        out.truncate(n);
        Ok(out)
    }

    /// A query with an `ids` list: the listed messages, filtered and paged
    /// in memory.
    async fn query_ids(
        &self,
        owner: &str,
        filter: &ArchiveFilter,
        range: Range,
        cursor: Option<Key>,
        backward: bool,
        limit: usize,
    ) -> Result<ArchivePage, QueryError> {
        let mut keys = Vec::with_capacity(filter.ids.len());
        for id in &filter.ids {
            keys.push(self.key_of(owner, id).await?);
        }
        keys.sort_unstable();
        keys.dedup();
        let with = filter.with.as_ref().map(Jid::as_str);
        let mut rows: Vec<MessageRow> = Vec::new();
        for k in keys.into_iter().filter(|k| range.contains(*k)) {
            let row = self
                .one::<MessageRow>(&self.mam.message, (owner, bucket_of(k.0), k.0, k.1))
                .await?;
            if let Some(row) = row {
                let keep = match &with {
                    Some(w) => row.3 == *w,
                    None => true,
                };
                if keep {
                    rows.push(row);
                }
            }
        }
        let keys: Vec<Key> = rows.iter().map(|r| (r.0, r.1)).collect();
        // Complete when nothing is left past the page in its direction (so
        // never for a limit of 0 with messages left), as on SQLite.
        let (page, complete) = page_in_memory(&keys, cursor, backward, limit);
        let count = rows.len();
        let first_index = (!page.is_empty()).then_some(page.start);
        let items = rows
            .drain(page)
            .map(to_message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ArchivePage {
            items,
            complete,
            count,
            first_index,
        })
    }
}

#[async_trait]
impl ArchiveStore for ScyllaStore {
    async fn append(&self, user: &Jid, item: &ArchivedMessage) -> Result<(), StoreError> {
        let owner = user.as_str();
        // `mam_by_with` is keyed by `with` as given: the contact's bare JID
        // in a user archive, the occupant JID in a room archive.
        let with_bare = item.with.as_str();
        let (ts, seq) = (item.ts, self.ids.next());
        let bucket = bucket_of(ts);
        let (id, with, stanza) = (item.id.as_str(), item.with.as_str(), item.stanza.as_str());
        // One logged batch: the copies, the id and the partition list are
        // all written, or (after a failure) eventually all written.
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_is_idempotent(true);
        batch.append_statement(self.mam.insert_message.clone());
        batch.append_statement(self.mam.insert_by_with.clone());
        batch.append_statement(self.mam.insert_id.clone());
        batch.append_statement(self.mam.insert_partition.clone());
        batch.append_statement(self.mam.insert_partition.clone());
        let values = (
            (owner, bucket, ts, seq, id, with, stanza),
            (owner, with_bare, bucket, ts, seq, id, with, stanza),
            (owner, id, ts, seq, with),
            (owner, "", bucket),
            (owner, with_bare, bucket),
        );
        self.session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(fail)
    }

    async fn query(
        &self,
        user: &Jid,
        filter: &ArchiveFilter,
        page: &Page,
        limit: usize,
    ) -> Result<ArchivePage, QueryError> {
        let owner = user.as_str();
        let after = self.key_opt(owner, filter.after_id.as_ref()).await?;
        let before = self.key_opt(owner, filter.before_id.as_ref()).await?;
        let (cursor, backward) = match page {
            Page::Forward(c) => (self.key_opt(owner, c.as_ref()).await?, false),
            Page::Backward(c) => (self.key_opt(owner, c.as_ref()).await?, true),
        };
        let range = filter_range(filter.start, filter.end, after, before);
        if !filter.ids.is_empty() {
            return self
                .query_ids(owner, filter, range, cursor, backward, limit)
                .await;
        }
        let src = match &filter.with {
            Some(w) => Source::With(w.as_str()),
            None => Source::All,
        };
        let buckets = self.archive_buckets(owner, src).await?;
        let count = self.count_range(owner, src, &buckets, range).await?;
        let window = match cursor {
            Some(c) if backward => filter_range(None, None, None, Some(c)),
            Some(c) => filter_range(None, None, Some(c), None),
            None => Range::ALL,
        };
        let window = range.from(window.lo).to(window.hi);
        let mut rows = self
            .fetch_range(
                owner,
                src,
                &buckets,
                window,
                backward,
                limit.saturating_add(1),
            )
            .await?;
        let complete = rows.len() <= limit;
        rows.truncate(limit);
        if backward {
            rows.reverse();
        }
        let first_index = match rows.first() {
            Some(first) => Some(
                self.count_range(owner, src, &buckets, range.to(pred((first.0, first.1))))
                    .await?,
            ),
            None => None,
        };
        let items = rows
            .into_iter()
            .map(to_message)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ArchivePage {
            items,
            complete,
            count,
            first_index,
        })
    }

    async fn delete_user(&self, user: &Jid) -> Result<(), StoreError> {
        let owner = user.as_str();
        let parts = self
            .all::<(String, i32)>(&self.mam.partitions, (owner,))
            .await?;
        futures::stream::iter(parts)
            .map(|(w, b)| async move {
                if w.is_empty() {
                    self.exec(&self.mam.delete_messages, (owner, b)).await
                } else {
                    self.exec(&self.mam.delete_by_with, (owner, w, b)).await
                }
            })
            .buffer_unordered(16)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        // The lists last: a failure above leaves them to find the rest.
        self.exec(&self.mam.delete_ids, (owner,)).await?;
        self.exec(&self.mam.delete_partitions, (owner,)).await?;
        self.exec(&self.mam.delete_prefs, (owner,)).await?;
        Ok(())
    }

    async fn prefs(&self, user: &Jid) -> Result<ArchivePrefs, StoreError> {
        type PrefsRow = (Option<String>, Option<Vec<String>>, Option<Vec<String>>);
        let Some((mode, always, never)) = self
            .one::<PrefsRow>(&self.mam.prefs, (user.as_str(),))
            .await?
        else {
            return Ok(ArchivePrefs::default());
        };
        Ok(ArchivePrefs {
            default: mode
                .as_deref()
                .and_then(DefaultMode::parse)
                .unwrap_or_default(),
            always: jids(always)?,
            never: jids(never)?,
        })
    }

    async fn set_prefs(&self, user: &Jid, prefs: &ArchivePrefs) -> Result<(), StoreError> {
        let list = |l: &[Jid]| l.iter().map(|j| j.as_str().to_owned()).collect::<Vec<_>>();
        self.exec(
            &self.mam.set_prefs,
            (
                user.as_str(),
                prefs.default.as_str(),
                list(&prefs.always),
                list(&prefs.never),
            ),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_30_day_spans() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_MICROS - 1), 0);
        assert_eq!(bucket_of(BUCKET_MICROS), 1);
        assert_eq!(bucket_of(-1), -1);
        // 2024-01-01T00:00:00Z
        assert_eq!(bucket_of(1_704_067_200_000_000), 657);
        assert_eq!(bucket_of(i64::MAX), 3_558_399);
        assert_eq!(bucket_of(i64::MIN), -3_558_400);
        let r = Range {
            lo: (BUCKET_MICROS, 0),
            hi: (3 * BUCKET_MICROS - 1, 0),
        };
        assert_eq!(r.buckets(&[0, 1, 2, 3, 7]), vec![1, 2]);
        assert_eq!(Range::ALL.buckets(&[-1, 0, 5]), vec![-1, 0, 5]);
        let empty = Range {
            lo: (5, 0),
            hi: (4, 0),
        };
        assert!(empty.buckets(&[0]).is_empty());
    }

    #[test]
    fn successors_and_predecessors() {
        assert_eq!(succ((5, 7)), (5, 8));
        assert_eq!(succ((5, i64::MAX)), (6, i64::MIN));
        assert_eq!(succ(MAX_KEY), MAX_KEY);
        assert_eq!(pred((5, 7)), (5, 6));
        assert_eq!(pred((5, i64::MIN)), (4, i64::MAX));
        assert_eq!(pred(MIN_KEY), MIN_KEY);
        for k in [(0, 0), (3, i64::MAX), (3, i64::MIN), (-9, 1)] {
            assert_eq!(pred(succ(k)), k);
            assert!(succ(k) > k && pred(k) < k);
        }
    }

    #[test]
    fn filters_become_inclusive_ranges() {
        assert_eq!(filter_range(None, None, None, None), Range::ALL);
        let r = filter_range(Some(3000), Some(5000), None, None);
        assert!(r.contains((3000, i64::MIN)) && r.contains((5000, i64::MAX)));
        assert!(!r.contains((2999, i64::MAX)) && !r.contains((5001, i64::MIN)));
        // after-id and before-id exclude the ids themselves.
        let r = filter_range(None, None, Some((10, 1)), Some((20, 1)));
        assert!(!r.contains((10, 1)) && r.contains((10, 2)));
        assert!(!r.contains((20, 1)) && r.contains((20, 0)));
        // They narrow the time range, never widen it.
        let r = filter_range(Some(15), None, Some((10, 1)), None);
        assert_eq!(r.lo, (15, i64::MIN));
        assert!(filter_range(None, None, Some(MAX_KEY), None).is_empty());
        assert!(filter_range(None, None, None, Some(MIN_KEY)).is_empty());
        assert!(filter_range(None, None, Some((5, 5)), Some((5, 6))).is_empty());
        assert!(filter_range(Some(10), Some(9), None, None).is_empty());
    }

    #[test]
    fn in_memory_pages_follow_rsm() {
        let keys: Vec<Key> = (0..10).map(|i| (i * 10, 0)).collect();
        assert_eq!(page_in_memory(&keys, None, false, 4), (0..4, false));
        assert_eq!(
            page_in_memory(&keys, Some((30, 0)), false, 4),
            (4..8, false)
        );
        assert_eq!(
            page_in_memory(&keys, Some((50, 0)), false, 4),
            (6..10, true)
        );
        assert_eq!(
            page_in_memory(&keys, Some((90, 0)), false, 4),
            (10..10, true)
        );
        assert_eq!(page_in_memory(&keys, None, true, 4), (6..10, false));
        assert_eq!(page_in_memory(&keys, Some((60, 0)), true, 4), (2..6, false));
        assert_eq!(page_in_memory(&keys, Some((20, 0)), true, 4), (0..2, true));
        // A cursor between keys (an id filtered out) still splits the set.
        assert_eq!(
            page_in_memory(&keys, Some((35, 0)), false, 2),
            (4..6, false)
        );
        assert_eq!(page_in_memory(&keys, Some((35, 0)), true, 2), (2..4, false));
        assert_eq!(page_in_memory(&[], None, false, 4), (0..0, true));
    }

    #[test]
    fn limits_fit_cql() {
        assert_eq!(cql_limit(0), 1);
        assert_eq!(cql_limit(11), 11);
        assert_eq!(cql_limit(usize::MAX), i32::MAX);
    }
}
