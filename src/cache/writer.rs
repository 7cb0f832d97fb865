//! The store's writer: one thread that commits new embeddings in short transactions.
//!
//! Rows arrive over a channel; the thread takes everything waiting (up to [`MAX_BATCH`] rows)
//! and commits it in one transaction, so an answer is on disk a few milliseconds after it
//! arrived when the store is idle, and batches grow by themselves when it is busy. A commit that
//! fails (disk full, a lock held longer than the busy timeout, a table dropped by another
//! program) keeps its rows in memory: the failure is logged once, naming the cause, and the rows
//! are tried again with back-off (1 s doubling to 30 s) together with everything that arrives
//! meanwhile, and a last time when the writer stops. Rows that still cannot be written are
//! handed back by [`Writer::finish`] so they can be saved elsewhere rather than lost.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::store::{Annotation, Row, Store, StoreError};
use crate::embed::Space;

/// Most rows in one transaction.
pub const MAX_BATCH: usize = 2000;

enum Msg {
    Row(Row),
    Note(Annotation),
    Flush(mpsc::Sender<()>),
}

/// What the writer did, returned when it stops.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Rows newly stored.
    pub written: u64,
    /// Rows that could not be committed, with the last error.
    pub unsaved: Vec<Row>,
    /// Annotations (theme, similarity of stored rows) that could not be recorded.
    pub unsaved_notes: usize,
    pub error: Option<StoreError>,
}

/// First pause after a failed commit; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Handle to the writer thread of one store and space.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: JoinHandle<WriterReport>,
}

impl Writer {
    pub fn start(store: Store, space: Space) -> Writer {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || run(store, space, rx))
            .expect("cannot start the cache writer thread");
        Writer { tx, thread }
    }

    /// Queues a row to be committed.
    pub fn put(&self, row: Row) {
        let _ = self.tx.send(Msg::Row(row));
    }

    /// Queues metadata for a stored row that has none.
    pub fn annotate(&self, note: Annotation) {
        let _ = self.tx.send(Msg::Note(note));
    }

    /// Waits until everything queued so far is committed (or failed: the rows are then kept
    /// for the next attempt).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Commits what is queued and stops the thread.
    pub fn finish(self) -> WriterReport {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| WriterReport {
            error: None,
            ..Default::default()
        })
    }
}

fn run(mut store: Store, space: Space, rx: mpsc::Receiver<Msg>) -> WriterReport {
    let mut report = WriterReport::default();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut flushes = Vec::new();
    // Set while commits fail: when to try again and the pause after that.
    let mut retry: Option<(Instant, Duration)> = None;
    let mut open = true;
    while open {
        let first = match retry {
            None => rx.recv().ok(),
            Some((at, _)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            },
        };
        if first.is_none() && retry.is_none() {
            open = false;
        }
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Row(r) => rows.push(r),
                Msg::Note(n) => notes.push(n),
                Msg::Flush(done) => flushes.push(done),
            }
            if rows.len() < MAX_BATCH || retry.is_some() {
                next = rx.try_recv().ok();
            }
        }
        let due = retry.is_none_or(|(at, _)| Instant::now() >= at);
        if open && due {
            match commit(&mut store, &space, &mut rows, &mut notes, &mut report) {
                Ok(()) => {
                    if retry.take().is_some() {
                        tracing::info!(
                            "cache: the embeddings kept in memory are now stored in {}",
                            store.path().display()
                        );
                    }
                }
                Err(e) => {
                    let delay = match retry {
                        None => {
                            tracing::warn!(
                                "cache: {} embedding(s) not stored yet: {e}; they are kept in \
                                 memory and tried again until the run ends",
                                rows.len()
                            );
                            FIRST_RETRY_DELAY
                        }
                        Some((_, d)) => {
                            tracing::debug!("cache: commit failed again: {e}");
                            (d * 2).min(MAX_RETRY_DELAY)
                        }
                    };
                    retry = Some((Instant::now() + delay, delay));
                    report.error = Some(e);
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    // The channel is closed: a last attempt for whatever is left.
    if !rows.is_empty() || !notes.is_empty() {
        match commit(&mut store, &space, &mut rows, &mut notes, &mut report) {
            Ok(()) => {
                if retry.is_some() {
                    tracing::info!(
                        "cache: the embeddings kept in memory are now stored in {}",
                        store.path().display()
                    );
                }
                report.error = None;
            }
            Err(e) => {
                report.unsaved = std::mem::take(&mut rows);
                report.unsaved_notes = notes.len();
                report.error = Some(e);
            }
        }
    } else {
        report.error = None;
    }
    report
}

/// Commits the pending rows and notes in one transaction; on failure they stay pending.
fn commit(
    store: &mut Store,
    space: &Space,
    rows: &mut Vec<Row>,
    notes: &mut Vec<Annotation>,
    report: &mut WriterReport,
) -> Result<(), StoreError> {
    if rows.is_empty() && notes.is_empty() {
        return Ok(());
    }
    let n = store.put(space, rows, notes)?;
    report.written += n as u64;
    rows.clear();
    notes.clear();
    Ok(())
}
