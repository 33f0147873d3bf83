//! Group commit of archive appends (XEP-0313 rows, written for every
//! archived message on the routing path).
//!
//! One writer thread owns the batching: it blocks for the first job, takes
//! every other job already queued (up to [`MAX_BATCH`]), writes all the rows
//! in one transaction, then answers the flushes among them. While a batch
//! commits, new rows queue up for the next one, so the batch size grows with
//! the load by itself; a batch smaller than [`LINGER_BELOW`] rows also
//! waits [`LINGER`] (5 ms) for more, so that a lightly loaded server does
//! not pay one commit per row.
//!
//! Appending does not wait for the commit: routing a message costs one
//! channel send, not two thread round trips (the sender's and the
//! recipient's copy). Readers that must see every row appended before them
//! (archive queries, account deletion) first [`Writer::flush`]. The queue is
//! bounded: when the disk falls behind, appends wait for room, which slows
//! the senders instead of growing memory. Rows still queued when the process
//! dies are lost, the same window as SQLite's `synchronous = NORMAL`;
//! `docs/decisions/0009-archive-group-commit.md` has the reasoning.

use std::sync::{Arc, Mutex};

use rookery_core::users::StoreError;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use crate::unavailable;

/// Most jobs in one transaction.
const MAX_BATCH: usize = 1024;

/// How long the writer lets rows gather after the first one of a batch.
/// Bounds how late a row becomes durable (a flush is answered no later).
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Batches smaller than this wait [`LINGER`] for more rows.
const LINGER_BELOW: usize = 64;

/// Rows that may wait for the writer before appends wait for room.
const QUEUE: usize = 16 * 1024;

/// One archive row to insert.
#[derive(Debug)]
pub(crate) struct Row {
    pub owner: String,
    pub id: String,
    pub ts: i64,
    pub with: String,
    pub stanza: String,
}

#[derive(Debug)]
enum Job {
    Append(Row),
    /// Answered once every row queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
}

/// Handle of the writer thread; the thread ends when the last handle goes.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("archive writer stopped".into())
}

impl Writer {
    /// Starts the writer thread on the shared connection.
    pub(crate) fn start(conn: Arc<Mutex<Connection>>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("rookery-archive".into())
            .spawn(move || run(&conn, rx))
            .map_err(unavailable)?;
        Ok(Writer { tx })
    }

    /// Queues a row for the next batch.
    pub(crate) async fn append(&self, row: Row) -> Result<(), StoreError> {
        self.tx.send(Job::Append(row)).await.map_err(|_| stopped())
    }

    /// Returns once every row queued before the call is committed.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Flush(done))
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())
    }
}

fn run(conn: &Mutex<Connection>, mut rx: mpsc::Receiver<Job>) {
    let mut rows: Vec<Row> = Vec::with_capacity(MAX_BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut job = Some(first);
        let mut lingered = false;
        loop {
            while let Some(j) = job.take() {
                match j {
                    Job::Append(r) => rows.push(r),
                    Job::Flush(f) => flushes.push(f),
                }
                if rows.len() + flushes.len() < MAX_BATCH {
                    job = rx.try_recv().ok();
                }
            }
            // A small batch with nobody waiting for it: let it fill, since
            // nobody waits for an append's commit and a commit costs about
            // the same for one row as for dozens. A backlog goes at once.
            if lingered || !flushes.is_empty() || rows.len() >= LINGER_BELOW {
                break;
            }
            std::thread::sleep(LINGER);
            lingered = true;
            job = rx.try_recv().ok();
        }
        if !rows.is_empty() {
            match conn.lock() {
                Ok(mut c) => {
                    if let Err(e) = write(&mut c, &rows) {
                        // The transaction was rolled back: insert the rows
                        // one by one so that only the failing rows are lost.
                        tracing::warn!(error = %e, rows = rows.len(), "archive batch failed, retrying row by row");
                        for r in &rows {
                            if let Err(e) = write_one(&c, r) {
                                tracing::warn!(error = %e, owner = %r.owner, "message not archived");
                            }
                        }
                    }
                }
                Err(_) => tracing::error!(
                    rows = rows.len(),
                    "store lock poisoned: messages not archived"
                ),
            }
            rows.clear();
        }
        for f in flushes.drain(..) {
            // A caller that went away no longer needs the answer.
            let _ = f.send(());
        }
    }
}

const INSERT: &str =
    "INSERT INTO mam_messages (owner, id, ts, with_jid, stanza) VALUES (?1, ?2, ?3, ?4, ?5)";

fn write_one(c: &Connection, r: &Row) -> Result<(), StoreError> {
    c.prepare_cached(INSERT)
        .and_then(|mut st| st.execute(params![r.owner, r.id, r.ts, r.with, r.stanza]))
        .map(|_| ())
        .map_err(unavailable)
}

fn write(c: &mut Connection, rows: &[Row]) -> Result<(), StoreError> {
    let tx = crate::write_tx(c)?;
    {
        let mut st = tx.prepare_cached(INSERT).map_err(unavailable)?;
        for r in rows {
            st.execute(params![r.owner, r.id, r.ts, r.with, r.stanza])
                .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    fn row(owner: &str, id: &str) -> Row {
        Row {
            owner: owner.into(),
            id: id.into(),
            ts: 1,
            with: "b@x".into(),
            stanza: "<message/>".into(),
        }
    }

    /// Many appends at once are committed in batches; a row that violates
    /// the unique (owner, id) index is dropped alone, the rest of its batch
    /// lands, and a flush returns only after all of it is committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_batch_and_fail_alone() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .archive_writer
            .append(row("a@x", "dup"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let s = store.clone();
            let id = if i == 150 {
                "dup".to_owned()
            } else {
                format!("m{i}")
            };
            tasks.push(tokio::spawn(async move {
                s.archive_writer.append(row("a@x", &id)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        store.archive_writer.flush().await.unwrap();
        let n: i64 = store
            .with(|c| {
                c.query_row("SELECT COUNT(*) FROM mam_messages", [], |r| r.get(0))
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(n, 300);
    }
}
