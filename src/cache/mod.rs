//! The embedding cache: vectors already paid for, keyed by normalised text within one
//! embedding space.
//!
//! A [`Cache`] belongs to exactly one [`Space`] (model id, dimension, task type), so vectors of
//! one model never answer for another. It has two layers:
//!
//! - memory: every vector this run has seen, shared by every theme in flight;
//! - the durable [`store`] (SQLite, WAL), read one key at a time on a memory miss and written
//!   by a [`writer`] thread that commits each answer within milliseconds.
//!
//! [`csv`] brings the Python pipeline's cache files in and writes them out again;
//! [`backup_csv`] writes the Python pipeline's cache backup (`output.embedding_cache_file`)
//! during a run.

pub mod backup_csv;
pub mod csv;
pub mod store;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::embed::{Space, Vector};
use store::{Annotation, Row, Store, StoreError};
use writer::Writer;

/// The cache key of a text, as the Python original's `text.lower().strip()`: surrounding
/// whitespace removed, lower case. `Mercury`, `mercury` and ` MERCURY ` are one embedding;
/// inner whitespace is kept as written. What is sent to the provider is the text as first
/// asked for (trimmed, case kept), see [`crate::service`].
pub fn key(text: &str) -> String {
    text.trim().to_lowercase()
}

/// How the durable layer ended (see [`Cache::close`]).
#[derive(Debug, Default)]
pub struct Closed {
    /// Rows newly committed by this run.
    pub written: u64,
    /// Where rows that could not be committed were saved instead (import them later).
    pub rescued: Option<PathBuf>,
    /// How many rows were saved there.
    pub rescued_rows: u64,
}

struct Durable {
    path: PathBuf,
    reader: Mutex<Store>,
    writer: Mutex<Option<Writer>>,
}

/// Texts to vectors for one embedding space, safe to share between tasks.
pub struct Cache {
    space: Space,
    memory: Mutex<HashMap<String, Vector>>,
    durable: Option<Durable>,
}

impl Cache {
    /// A cache that lives only as long as the run (tests, benchmarks).
    pub fn in_memory(space: Space) -> Cache {
        Cache {
            space,
            memory: Mutex::new(HashMap::new()),
            durable: None,
        }
    }

    /// A cache backed by the database at `path` (created if missing). Nothing is read yet.
    pub fn open(path: &Path, space: Space) -> Result<Cache, StoreError> {
        let reader = Store::open(path)?;
        let writer = Writer::start(Store::open(path)?, space.clone());
        Ok(Cache {
            space,
            memory: Mutex::new(HashMap::new()),
            durable: Some(Durable {
                path: path.to_owned(),
                reader: Mutex::new(reader),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The database file, if the cache has one.
    pub fn path(&self) -> Option<&Path> {
        self.durable.as_ref().map(|d| d.path.as_path())
    }

    /// The cached vector of each key, `None` where it is missing. Memory first, then the
    /// store; what the store had is kept in memory for the rest of the run.
    pub fn get_many(&self, keys: &[String]) -> Vec<Option<Vector>> {
        let mut found = {
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|k| memory.get(k).cloned())
                .collect::<Vec<_>>()
        };
        let Some(d) = &self.durable else {
            return found;
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return found;
        }
        let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        let stored = d
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_many(&self.space, &wanted);
        match stored {
            Ok(stored) => {
                let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                for (i, v) in missing.into_iter().zip(stored) {
                    if let Some(v) = v {
                        memory.insert(keys[i].clone(), v.clone());
                        found[i] = Some(v);
                    }
                }
            }
            // A read error costs requests, never results: the texts are embedded again.
            Err(e) => tracing::warn!("cache: lookup failed, treating as missing: {e}"),
        }
        found
    }

    /// The vector of `key` if this run already has it in memory.
    pub fn get_in_memory(&self, key: &str) -> Option<Vector> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every vector of this run's memory layer as a bare row (no theme yet), for the cache CSV's
    /// last rows: texts answered for themes that did not finish.
    pub fn memory_rows(&self) -> Vec<Row> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| Row {
                key: k.clone(),
                word: k.clone(),
                theme: None,
                word_type: None,
                similarity: None,
                timestamp: None,
                vector: v.clone(),
            })
            .collect()
    }

    /// Stores new vectors (same order as `texts`) under each text's [`key`], with the text
    /// trimmed as the stored `word`: in memory at once, on disk within milliseconds. See
    /// [`Cache::insert_words`] to give key and word yourself.
    pub fn insert_many(&self, texts: &[String], vectors: &[Vector]) {
        let texts: Vec<(String, String)> = texts
            .iter()
            .map(|t| (key(t), t.trim().to_owned()))
            .collect();
        self.insert_words(&texts, vectors);
    }

    /// Stores new vectors (same order as `texts`, each `(key, word)`: the [`key`] and the
    /// text as it was sent, which the store keeps in its `word` column): in memory at once, on
    /// disk within milliseconds.
    pub fn insert_words(&self, texts: &[(String, String)], vectors: &[Vector]) {
        {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            for ((k, _), v) in texts.iter().zip(vectors) {
                memory.insert(k.clone(), v.clone());
            }
        }
        self.with_writer(|w| {
            for ((k, word), v) in texts.iter().zip(vectors) {
                w.put(Row {
                    key: k.clone(),
                    word: word.clone(),
                    theme: None,
                    word_type: None,
                    similarity: None,
                    timestamp: None,
                    vector: v.clone(),
                });
            }
        });
    }

    /// Records the theme, word type and similarity of stored rows that have none yet.
    pub fn annotate(&self, notes: Vec<Annotation>) {
        self.with_writer(|w| notes.into_iter().for_each(|n| w.annotate(n)));
    }

    /// Waits until everything inserted so far is on disk.
    pub fn flush(&self) {
        self.with_writer(Writer::flush);
    }

    fn with_writer(&self, f: impl FnOnce(&Writer)) {
        if let Some(d) = &self.durable
            && let Some(w) = d.writer.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            f(w);
        }
    }

    /// Records a finished run's counters for `cache stats`.
    pub fn record_run(&self, lookups: u64, cache_hits: u64, texts_embedded: u64) {
        if let Some(d) = &self.durable {
            let r = d
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_run(&self.space, lookups, cache_hits, texts_embedded);
            if let Err(e) = r {
                tracing::warn!("cache: cannot record the run's hit rate: {e}");
            }
        }
    }

    /// Commits everything queued and stops the writer. Rows the store refused to the end are
    /// written to `<database>.unsaved-<unix time>.csv` (the backup layout `cache import` reads)
    /// or, if that folder cannot take it, to the same name in the working directory or the
    /// temporary directory: never dropped, and no file when there is nothing to save. Later
    /// inserts stay in memory only.
    pub fn close(&self) -> Result<Closed, CloseError> {
        let Some(d) = &self.durable else {
            return Ok(Closed::default());
        };
        let Some(writer) = d.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(Closed::default());
        };
        let report = writer.finish();
        let mut closed = Closed {
            written: report.written,
            rescued: None,
            rescued_rows: 0,
        };
        let error = match &report.error {
            Some(e) => e.to_string(),
            None => return Ok(closed),
        };
        if report.unsaved.is_empty() {
            if report.unsaved_notes > 0 {
                tracing::warn!(
                    "cache: the theme and similarity of {} stored embedding(s) could not be \
                     recorded ({error}); the vectors themselves are stored",
                    report.unsaved_notes
                );
            }
            return Ok(closed);
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut name = d.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".unsaved-{secs}.csv"));
        let mut places = vec![d.path.with_file_name(&name), PathBuf::from(&name)];
        places.push(std::env::temp_dir().join(&name));
        let mut failures = Vec::new();
        for rescue in places {
            match csv::write_backup(&rescue, self.space.dimension, report.unsaved.iter()) {
                Ok(()) => {
                    tracing::warn!(
                        "cache: {} embedding(s) could not be stored in {} ({error}); they were \
                         saved to {} instead: bring them back with `puzzlegen cache import {}`",
                        report.unsaved.len(),
                        d.path.display(),
                        rescue.display(),
                        rescue.display()
                    );
                    closed.rescued = Some(rescue);
                    closed.rescued_rows = report.unsaved.len() as u64;
                    return Ok(closed);
                }
                Err(e) => failures.push(format!("{}: {e}", rescue.display())),
            }
        }
        Err(CloseError::Rescue {
            rows: report.unsaved.len(),
            written: report.written,
            error,
            failures: failures.join("; "),
        })
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!("{e}");
        }
    }
}

/// Rows could be neither committed nor saved elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error(
        "cache: {rows} embedding(s) could not be stored ({error}) nor saved to a file ({failures}); \
         they are lost"
    )]
    Rescue {
        rows: usize,
        /// Rows that were stored.
        written: u64,
        error: String,
        failures: String,
    },
}

impl CloseError {
    /// Rows the run did store before the failure.
    pub fn written(&self) -> u64 {
        match self {
            CloseError::Rescue { written, .. } => *written,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        crate::embed::test_space(2)
    }

    #[test]
    fn keys_are_the_originals_lower_strip() {
        assert_eq!(key("  Rivers \t of\nEurope "), "rivers \t of\neurope");
        assert_eq!(key("Mercury"), key("mercury "));
        assert_eq!(key("\u{a0}MERCURY\n"), "mercury");
        assert_eq!(key("ΟΔΟΣ"), "οδος", "final sigma, as Python's lower()");
        assert_eq!(key("Turkey"), key("turkey"));
    }

    #[test]
    fn vectors_outlive_the_cache_that_stored_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let v: Vector = Vector::from(vec![0.6f32, 0.8]);
        {
            let cache = Cache::open(&path, space()).unwrap();
            cache.insert_many(&["a".into()], std::slice::from_ref(&v));
            assert_eq!(cache.close().unwrap().written, 1);
        }
        let cache = Cache::open(&path, space()).unwrap();
        let got = cache.get_many(&["a".into(), "b".into()]);
        assert_eq!(got[0].as_deref(), Some(&[0.6f32, 0.8][..]));
        assert!(got[1].is_none());
        assert!(cache.get_in_memory("a").is_some(), "promoted to memory");
        let other = Cache::open(
            &path,
            Space {
                dimension: 2,
                model_id: "other".into(),
                task_type: "t".into(),
            },
        )
        .unwrap();
        assert!(other.get_many(&["a".into()])[0].is_none());
    }

    #[test]
    fn rows_the_database_refuses_are_saved_to_a_csv_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path, space()).unwrap();
        // Another process breaks the database under the run's feet.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE embeddings")
            .unwrap();
        cache.insert_many(&["a, b".into()], &[Vector::from(vec![0.25f32, -1.0])]);
        let closed = cache.close().unwrap();
        assert_eq!(closed.written, 0);
        let rescued = closed.rescued.expect("a rescue file");
        assert!(
            rescued
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("c.sqlite3.unsaved-")
        );
        let text = std::fs::read_to_string(&rescued).unwrap();
        let (header, row) = text.split_once('\n').unwrap();
        assert_eq!(
            header,
            "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2"
        );
        // The time it was not stored, in UNIX seconds (the original reads it with float()).
        let secs: f64 = row
            .strip_prefix("\"a, b\",,,,")
            .and_then(|r| r.strip_suffix(",0.25,-1\n"))
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("{row:?}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 60.0..=now).contains(&secs), "{row:?}");
    }

    #[test]
    fn rows_refused_for_a_while_are_kept_and_stored_when_the_database_takes_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path, space()).unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch("ALTER TABLE embeddings RENAME TO away")
            .unwrap();
        cache.insert_many(&["a".into()], &[Vector::from(vec![0.6f32, 0.8])]);
        cache.flush();
        std::thread::sleep(std::time::Duration::from_millis(300));
        other
            .execute_batch("ALTER TABLE away RENAME TO embeddings")
            .unwrap();
        cache.insert_many(&["b".into()], &[Vector::from(vec![0.8f32, 0.6])]);
        // The writer tries again 1 s after the failure, with everything that came meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let n: i64 = other
            .query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "stored before the run ends");
        let closed = cache.close().unwrap();
        assert_eq!((closed.written, closed.rescued), (2, None));
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("unsaved"))
            .collect();
        assert!(files.is_empty(), "{files:?}");
    }
}
