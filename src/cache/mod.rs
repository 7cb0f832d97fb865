//! The embedding cache: vectors already paid for, keyed by normalised text within one
//! embedding space.
//!
//! A [`Cache`] belongs to exactly one [`Space`] (model id, dimension, task type), so vectors of
//! one model never answer for another. It has two layers:
//!
//! - memory: the vectors not on disk yet (all of them for a cache without a database), so a
//!   run's memory does not grow with its number of texts;
//! - the durable [`store`] (SQLite, WAL), read on a memory miss and written by a [`writer`]
//!   thread that commits each answer within milliseconds; a committed vector leaves memory.
//!
//! [`csv`] brings the Python pipeline's cache files in and writes them out again;
//! [`backup_csv`] writes the Python pipeline's cache backup (`output.embedding_cache_file`)
//! during a run.

pub mod backup_csv;
pub mod csv;
pub mod store;
pub mod writer;

use crate::metrics::METRICS;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::embed::{Space, Vector};
use crate::words::{ScoredWord, ThemeResult};
use store::{Annotation, Discard, Row, Store, StoreError};
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
    memory: Arc<Mutex<HashMap<String, Vector>>>,
    /// Keys inserted by this run and not yet given to the cache CSV (see
    /// [`Cache::unexported_rows`]).
    unexported: Mutex<HashSet<String>>,
    /// Vectors found unusable in a tier (see [`Cache::reject`]): each `(source, key)` once.
    rejected: Mutex<HashSet<(String, String)>>,
    durable: Option<Durable>,
}

/// Locks a mutex, going on with its data if a thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// A cache that lives only as long as the run (tests, benchmarks): every vector stays in
    /// memory.
    pub fn in_memory(space: Space) -> Cache {
        Cache {
            space,
            memory: Arc::default(),
            unexported: Mutex::default(),
            rejected: Mutex::default(),
            durable: None,
        }
    }

    /// A cache backed by the database at `path` (created if missing), checked for damage
    /// first (see [`Store::quick_check`]). No row is read yet.
    pub fn open(path: &Path, space: Space) -> Result<Cache, StoreError> {
        let reader = Store::open(path)?;
        reader.quick_check(store::QUICK_CHECK_BUDGET)?;
        let memory: Arc<Mutex<HashMap<String, Vector>>> = Arc::default();
        // Committed rows leave memory (unless the key got another vector since).
        let on_commit = {
            let memory = Arc::clone(&memory);
            Box::new(move |rows: &[Row]| {
                let mut memory = lock(&memory);
                for r in rows {
                    if memory
                        .get(&r.key)
                        .is_some_and(|v| Arc::ptr_eq(v, &r.vector))
                    {
                        memory.remove(&r.key);
                    }
                }
            })
        };
        let writer = Writer::start(Store::open(path)?, space.clone(), on_commit);
        Ok(Cache {
            space,
            memory,
            unexported: Mutex::default(),
            rejected: Mutex::default(),
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

    /// The cached vector of each key, `None` where it is missing: memory first, then the
    /// store (what the store has is not kept in memory).
    pub fn get_many(&self, keys: &[String]) -> Vec<Option<Vector>> {
        let mut found = {
            let memory = lock(&self.memory);
            keys.iter()
                .map(|k| memory.get(k).cloned())
                .collect::<Vec<_>>()
        };
        let hits = |found: &[Option<Vector>]| found.iter().filter(|v| v.is_some()).count() as u64;
        let in_memory = hits(&found);
        METRICS
            .cache_hits
            .with_label_values(&["memory"])
            .inc_by(in_memory);
        let Some(d) = &self.durable else {
            return found;
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return found;
        }
        let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        match lock(&d.reader).lookup_many(&self.space, &wanted) {
            Ok(stored) => {
                for (i, v) in missing.into_iter().zip(stored) {
                    found[i] = match v {
                        Some(Err(bad)) => {
                            self.reject_stored(d, &keys[i], bad);
                            None
                        }
                        v => v.and_then(Result::ok),
                    };
                }
            }
            // A read error costs requests, never results: the texts are embedded again.
            Err(e) => tracing::warn!("cache: lookup failed, treating as missing: {e}"),
        }
        METRICS
            .cache_hits
            .with_label_values(&["sqlite"])
            .inc_by(hits(&found) - in_memory);
        found
    }

    /// A stored vector that cannot be used: rejected, and its row removed when the text's new
    /// vector is stored.
    fn reject_stored(&self, d: &Durable, key: &str, bad: store::Unusable) {
        let source = d.path.display().to_string();
        if self.reject(key, &source, &bad.reason) {
            self.with_writer(|w| {
                w.discard(Discard {
                    key: key.to_owned(),
                    bytes: bad.bytes,
                })
            });
        }
    }

    /// Says that the vector `source` (a file, a Redis URL without its password) holds for
    /// `key` cannot be used (`reason`, see [`crate::embed::check_vector`]): the text is
    /// embedded again. Logged and counted once per source and key; `false` if it was already.
    pub fn reject(&self, key: &str, source: &str, reason: &str) -> bool {
        let new = lock(&self.rejected).insert((source.to_owned(), key.to_owned()));
        if new {
            tracing::warn!(
                "cache: the vector of {key:?} in {source} cannot be used ({reason}); the text \
                 is embedded again"
            );
        }
        new
    }

    /// How many vectors read from a tier could not be used (see [`Cache::reject`]).
    pub fn rejected(&self) -> u64 {
        lock(&self.rejected).len() as u64
    }

    /// The cached vector of `key` (memory, then the store).
    pub fn get(&self, key: &str) -> Option<Vector> {
        self.get_many(&[key.to_owned()]).pop().flatten()
    }

    /// A theme's result rebuilt from its scores (`ranked`: word and similarity, best first)
    /// with the vectors from the cache; `None` if one of them is missing.
    pub fn theme_result(&self, theme: &str, ranked: &[(String, f32)]) -> Option<ThemeResult> {
        let keys: Vec<String> = std::iter::once(theme)
            .chain(ranked.iter().map(|(w, _)| w.as_str()))
            .map(key)
            .collect();
        let mut vectors = self.get_many(&keys).into_iter();
        let vector = vectors.next()??;
        let ranked = ranked
            .iter()
            .zip(vectors)
            .map(|((word, similarity), v)| {
                Some(ScoredWord {
                    word: word.clone(),
                    similarity: *similarity,
                    vector: v?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ThemeResult {
            theme: theme.to_owned(),
            vector,
            ranked,
        })
    }

    /// Says that the cache CSV has the rows of `keys` (see [`Cache::unexported_rows`]).
    pub fn mark_exported<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut unexported = lock(&self.unexported);
        for k in keys {
            unexported.remove(k);
        }
    }

    /// Every vector this run inserted whose row the cache CSV did not get (texts answered for
    /// themes that did not finish), as bare rows (no theme yet; the key as word).
    pub fn unexported_rows(&self) -> Vec<Row> {
        let keys: Vec<String> = lock(&self.unexported).drain().collect();
        let vectors = self.get_many(&keys);
        keys.into_iter()
            .zip(vectors)
            .filter_map(|(k, v)| {
                Some(Row {
                    key: k.clone(),
                    word: k,
                    theme: None,
                    word_type: None,
                    similarity: None,
                    timestamp: None,
                    vector: v?,
                })
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
            let mut memory = lock(&self.memory);
            let mut unexported = lock(&self.unexported);
            for ((k, _), v) in texts.iter().zip(vectors) {
                memory.insert(k.clone(), v.clone());
                unexported.insert(k.clone());
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
            && let Some(w) = lock(&d.writer).as_ref()
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
        let Some(writer) = lock(&d.writer).take() else {
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
        let secs = crate::clock::unix_secs();
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
        assert!(
            lock(&cache.memory).is_empty(),
            "store hits are not kept in memory"
        );
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
    fn committed_vectors_leave_memory_and_are_read_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3"), space()).unwrap();
        let texts: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let vectors: Vec<Vector> = (0..100)
            .map(|i| Vector::from(vec![i as f32, 1.0]))
            .collect();
        cache.insert_many(&texts, &vectors);
        cache.flush();
        assert!(
            lock(&cache.memory).is_empty(),
            "committed rows stay in memory"
        );
        let got = cache.get_many(&texts);
        assert!(
            got.iter()
                .zip(&vectors)
                .all(|(g, v)| g.as_deref() == Some(&v[..]))
        );
        // The cache CSV got half of them: the other half come back as bare rows.
        cache.mark_exported(texts[..50].iter().map(String::as_str));
        let mut rest: Vec<String> = cache.unexported_rows().into_iter().map(|r| r.key).collect();
        rest.sort();
        let mut want = texts[50..].to_vec();
        want.sort();
        assert_eq!(rest, want);
        assert!(cache.unexported_rows().is_empty(), "handed out once");
    }

    #[test]
    fn an_unusable_stored_vector_is_rejected_once_and_its_row_replaced_by_the_new_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        {
            let cache = Cache::open(&path, space()).unwrap();
            cache.insert_many(&["a".into()], &[Vector::from(vec![0.6f32, 0.8])]);
            cache.close().unwrap();
        }
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "UPDATE embeddings SET vector = ?1 WHERE text_key = 'a'",
            [crate::embed::to_bytes(&[f32::INFINITY, 0.0])],
        )
        .unwrap();
        let cache = Cache::open(&path, space()).unwrap();
        assert!(cache.get("a").is_none(), "an infinite value is not used");
        assert!(cache.get("a").is_none());
        assert_eq!(cache.rejected(), 1, "counted once");
        cache.insert_many(&["a".into()], &[Vector::from(vec![0.8f32, 0.6])]);
        cache.flush();
        assert!(lock(&cache.memory).is_empty(), "committed");
        assert_eq!(cache.get("a").as_deref(), Some(&[0.8f32, 0.6][..]));
        let rows: i64 = db
            .query_row("SELECT count(*) FROM embeddings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "the unusable row was replaced");
    }

    #[test]
    fn without_a_database_every_vector_stays_in_memory() {
        let cache = Cache::in_memory(space());
        cache.insert_many(&["a".into()], &[Vector::from(vec![1.0f32, 0.0])]);
        cache.flush();
        assert!(cache.get("a").is_some());
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
        let now = crate::clock::unix_seconds();
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
