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

use super::store::{Annotation, Discard, Row, Store, StoreError};
use crate::embed::Space;

/// Most rows in one transaction.
pub const MAX_BATCH: usize = 2000;

enum Msg {
    Discard(Discard),
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

/// Told the rows of each successful commit (the cache then drops them from memory).
pub type OnCommit = Box<dyn Fn(&[Row]) + Send>;

/// Handle to the writer thread of one store and space.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: JoinHandle<WriterReport>,
}

impl Writer {
    /// Starts the thread; `on_commit` sees the rows of each successful commit.
    pub fn start(store: Store, space: Space, on_commit: OnCommit) -> Writer {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || run(store, space, on_commit, rx))
            .expect("cannot start the cache writer thread");
        Writer { tx, thread }
    }

    /// Queues a row to be committed.
    pub fn put(&self, row: Row) {
        let _ = self.tx.send(Msg::Row(row));
    }

    /// Queues the removal of an unusable stored row, committed with (before) the rows queued
    /// after it.
    pub fn discard(&self, discard: Discard) {
        let _ = self.tx.send(Msg::Discard(discard));
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

/// The writer thread's pending work and what it did so far.
struct State {
    store: Store,
    space: Space,
    on_commit: OnCommit,
    discards: Vec<Discard>,
    rows: Vec<Row>,
    notes: Vec<Annotation>,
    flushes: Vec<mpsc::Sender<()>>,
    report: WriterReport,
    /// Set while commits fail: when to try again and the pause after that.
    retry: Option<(Instant, Duration)>,
}

/// The writer thread: commits what arrives until the channel closes, then what is left.
fn run(store: Store, space: Space, on_commit: OnCommit, rx: mpsc::Receiver<Msg>) -> WriterReport {
    let mut state = State {
        store,
        space,
        on_commit,
        discards: Vec::new(),
        rows: Vec::new(),
        notes: Vec::new(),
        flushes: Vec::new(),
        report: WriterReport::default(),
        retry: None,
    };
    let mut open = true;
    while open {
        let first = next_message(&rx, state.retry, &mut open);
        state.take_waiting(&rx, first);
        let due = state.retry.is_none_or(|(at, _)| Instant::now() >= at);
        if open && due {
            state.try_commit();
        }
        for done in state.flushes.drain(..) {
            let _ = done.send(());
        }
    }
    // The channel is closed: a last attempt for whatever is left.
    state.last_attempt()
}

/// Waits for the next message: as long as it takes while no retry is pending, else until the
/// retry is due (`None` then). Clears `open` when the channel is closed.
fn next_message(
    rx: &mpsc::Receiver<Msg>,
    retry: Option<(Instant, Duration)>,
    open: &mut bool,
) -> Option<Msg> {
    let first = match retry {
        None => rx.recv().ok(),
        Some((at, _)) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                *open = false;
                None
            }
        },
    };
    if first.is_none() && retry.is_none() {
        *open = false;
    }
    first
}

impl State {
    /// Takes `first` and everything waiting after it: up to [`MAX_BATCH`] rows, or all of it
    /// while commits fail (the rows are kept in memory anyway).
    fn take_waiting(&mut self, rx: &mpsc::Receiver<Msg>, first: Option<Msg>) {
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Discard(d) => self.discards.push(d),
                Msg::Row(r) => self.rows.push(r),
                Msg::Note(n) => self.notes.push(n),
                Msg::Flush(done) => self.flushes.push(done),
            }
            if self.rows.len() < MAX_BATCH || self.retry.is_some() {
                next = rx.try_recv().ok();
            }
        }
    }

    /// Commits what is pending; on failure keeps it and schedules the next attempt (the first
    /// failure is logged at warn level, the following ones at debug).
    fn try_commit(&mut self) {
        match self.commit() {
            Ok(()) => {
                if self.retry.take().is_some() {
                    self.log_recovered();
                }
            }
            Err(e) => {
                let delay = match self.retry {
                    None => {
                        tracing::warn!(
                            "cache: {} embedding(s) not stored yet: {e}; they are kept in \
                             memory and tried again until the run ends",
                            self.rows.len()
                        );
                        FIRST_RETRY_DELAY
                    }
                    Some((_, d)) => {
                        tracing::debug!("cache: commit failed again: {e}");
                        (d * 2).min(MAX_RETRY_DELAY)
                    }
                };
                self.retry = Some((Instant::now() + delay, delay));
                self.report.error = Some(e);
            }
        }
    }

    /// The channel is closed: a last attempt for whatever is left; what still cannot be
    /// written goes back in the report.
    fn last_attempt(mut self) -> WriterReport {
        if !self.discards.is_empty() || !self.rows.is_empty() || !self.notes.is_empty() {
            match self.commit() {
                Ok(()) => {
                    if self.retry.is_some() {
                        self.log_recovered();
                    }
                    self.report.error = None;
                }
                Err(e) => {
                    self.report.unsaved = std::mem::take(&mut self.rows);
                    self.report.unsaved_notes = self.notes.len();
                    self.report.error = Some(e);
                }
            }
        } else {
            self.report.error = None;
        }
        self.report
    }

    /// Commits the pending discards, rows and notes in one transaction; on failure they stay pending.
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.discards.is_empty() && self.rows.is_empty() && self.notes.is_empty() {
            return Ok(());
        }
        let n = self
            .store
            .put_discarding(&self.space, &self.discards, &self.rows, &self.notes)?;
        self.report.written += n as u64;
        (self.on_commit)(&self.rows);
        self.discards.clear();
        self.rows.clear();
        self.notes.clear();
        Ok(())
    }

    /// Says that the rows kept in memory after failed commits are now stored.
    fn log_recovered(&self) {
        tracing::info!(
            "cache: the embeddings kept in memory are now stored in {}",
            self.store.path().display()
        );
    }
}
