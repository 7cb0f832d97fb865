//! The optional CSV copy of the cache (`cache.csv_export`): rewritten every
//! `multiprocessing.cache_backup_interval` while a run goes on and once at its end, in the
//! Python pipeline's backup layout, for tools that still read that file. Durability does not
//! depend on it: the database has every answer within milliseconds.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::csv::{self, CsvError};
use super::store::Store;
use crate::embed::Space;

/// A running periodic export.
pub struct CsvBackup {
    job: Job,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Job {
    db: PathBuf,
    space: Space,
    path: PathBuf,
}

impl Job {
    /// Writes the CSV from what the database holds now (through its own connection).
    fn export(&self) -> Result<u64, CsvError> {
        let store = Store::open_existing(&self.db)?;
        csv::export(&store, &self.space, &self.path)
    }
}

impl CsvBackup {
    /// Starts exporting `space` of the database `db` to `path` every `every` (never, if zero:
    /// only at the end). Runs on the current tokio runtime.
    pub fn start(db: PathBuf, space: Space, path: PathBuf, every: Duration) -> CsvBackup {
        let job = Job { db, space, path };
        let stop = CancellationToken::new();
        let task = {
            let (job, stop) = (job.clone(), stop.clone());
            tokio::spawn(async move {
                if every.is_zero() {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.cancelled() => return,
                    }
                    let job = job.clone();
                    match tokio::task::spawn_blocking(move || job.export()).await {
                        Ok(Ok(n)) => tracing::debug!("cache CSV export: {n} rows"),
                        Ok(Err(e)) => tracing::warn!("cache CSV export: {e}"),
                        Err(e) => tracing::warn!("cache CSV export: {e}"),
                    }
                }
            })
        };
        CsvBackup { job, stop, task }
    }

    /// Stops the periodic export and writes the file a last time; returns the rows written.
    /// Call it after the cache is closed, so every answer of the run is in the file.
    pub async fn finish(self) -> Result<u64, CsvError> {
        self.stop.cancel();
        let _ = self.task.await;
        let job = self.job;
        tokio::task::spawn_blocking(move || job.export())
            .await
            .unwrap_or_else(|e| {
                Err(CsvError::Read {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}
