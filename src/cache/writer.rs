//! The store's writer: one thread that commits new embeddings in short transactions.
//!
//! Rows arrive over a channel; the thread takes everything waiting (up to [`MAX_BATCH`] rows)
//! and commits it in one transaction, so an answer is on disk a few milliseconds after it
//! arrived when the store is idle, and batches grow by themselves when it is busy. A commit that
//! fails (disk full, a lock held longer than the busy timeout) is retried once; rows that still
//! cannot be written are handed back by [`Writer::finish`] so they can be saved elsewhere
//! rather than lost.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    pub error: Option<StoreError>,
}

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

    /// Waits until everything queued so far is committed (or failed).
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
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Row(r) => rows.push(r),
                Msg::Note(n) => notes.push(n),
                Msg::Flush(done) => flushes.push(done),
            }
            if rows.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut store, &space, &mut rows, &mut notes, &mut report);
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    report
}

fn commit(
    store: &mut Store,
    space: &Space,
    rows: &mut Vec<Row>,
    notes: &mut Vec<Annotation>,
    report: &mut WriterReport,
) {
    if rows.is_empty() && notes.is_empty() {
        return;
    }
    let mut result = store.put(space, rows, notes);
    if let Err(e) = &result {
        tracing::warn!("cache: commit failed, retrying in 1 s: {e}");
        std::thread::sleep(Duration::from_secs(1));
        result = store.put(space, rows, notes);
    }
    match result {
        Ok(n) => {
            report.written += n as u64;
            rows.clear();
        }
        Err(e) => {
            tracing::error!("cache: {} embedding(s) not stored: {e}", rows.len());
            report.unsaved.append(rows);
            report.error = Some(e);
        }
    }
    notes.clear();
}
