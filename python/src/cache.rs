//! `SharedEmbeddingCache(cache_file, backup_interval=60)`: the original's cache, kept in the
//! SQLite cache database next to `cache_file` (`<folder>/embeddings.sqlite3`, the engine's
//! default), so nothing is lost between backups; `backup_to_csv()` writes the original's
//! backup layout to `cache_file`.
//!
//! Vectors of any length are accepted: each length is its own embedding space in the
//! database (model id [`MODEL_ID`]), apart from the engine's own. Every entry of those spaces
//! is read into memory when the cache is made, as the original reads its CSV; a CSV at
//! `cache_file` is imported first (rows already in the database are skipped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use puzzlegen::cache::csv as cache_csv;
use puzzlegen::cache::store::{Row, Store};
use puzzlegen::embed::{Space, Vector};

/// The model id of the spaces this cache stores vectors in.
pub const MODEL_ID: &str = "python:SharedEmbeddingCache";

fn space(dimension: usize) -> Space {
    Space {
        model_id: MODEL_ID.to_owned(),
        dimension,
        task_type: String::new(),
    }
}

/// One entry, as the original's `EmbeddingEntry`.
struct Entry {
    word: String,
    vector: Vector,
    timestamp: f64,
    theme: Option<String>,
    word_type: Option<String>,
    similarity: Option<f64>,
}

impl Entry {
    fn row(&self) -> Row {
        Row {
            key: puzzlegen::cache::key(&self.word),
            word: self.word.clone(),
            theme: self.theme.clone(),
            word_type: self.word_type.clone(),
            similarity: self.similarity.map(|s| s as f32),
            timestamp: Some(format!("{:.6}", self.timestamp)),
            vector: Arc::clone(&self.vector),
        }
    }
}

struct State {
    store: Store,
    /// Entries in insertion order; `index` maps a key to its place.
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    hits: u64,
    misses: u64,
    writes: u64,
    backups: u64,
    last_backup: f64,
}

impl State {
    fn insert(&mut self, key: String, entry: Entry) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    fn lookup(&mut self, word: &str) -> Option<Vector> {
        let found = self
            .index
            .get(&puzzlegen::cache::key(word))
            .map(|&i| Arc::clone(&self.entries[i].vector));
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Commits `entries` to the database (one transaction per vector length), each replacing
    /// what the database held for its key (the last write wins, as in the original), then
    /// keeps them.
    fn put(&mut self, entries: Vec<Entry>) -> PyResult<()> {
        let mut by_dim: HashMap<usize, Vec<Row>> = HashMap::new();
        for e in &entries {
            by_dim.entry(e.vector.len()).or_default().push(e.row());
        }
        for (dim, rows) in by_dim {
            self.store
                .replace(&space(dim), &rows)
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        }
        self.writes += entries.len() as u64;
        for e in entries {
            self.insert(puzzlegen::cache::key(&e.word), e);
        }
        Ok(())
    }
}

/// The number of `embedding_dim_*` columns of a backup CSV's header (0 if none or unreadable).
fn csv_dimension(path: &Path) -> usize {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut header = String::new();
    if std::io::BufReader::new(f).read_line(&mut header).is_err() {
        return 0;
    }
    header
        .trim_end()
        .split(',')
        .filter(|c| c.trim_matches('"').starts_with("embedding_dim_"))
        .count()
}

/// Opens the database, imports the CSV, reads every entry.
fn open(cache_file: &Path, db: &Path) -> Result<State, String> {
    let mut store = Store::open(db).map_err(|e| e.to_string())?;
    if cache_file.is_file() {
        let dim = csv_dimension(cache_file);
        if dim > 0 {
            match cache_csv::import(cache_file, &mut store, &space(dim)) {
                Ok(r) if !r.bad.is_empty() => tracing::warn!(
                    "{}: {} row(s) could not be read and were skipped",
                    cache_file.display(),
                    r.bad.len()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: not loaded: {e}", cache_file.display()),
            }
        }
    }
    let mut state = State {
        store,
        entries: Vec::new(),
        index: HashMap::new(),
        hits: 0,
        misses: 0,
        writes: 0,
        backups: 0,
        last_backup: 0.0,
    };
    let spaces = state.store.spaces().map_err(|e| e.to_string())?;
    let now = puzzlegen::clock::unix_seconds();
    let mut loaded = Vec::new();
    for s in spaces.iter().filter(|s| s.space.model_id == MODEL_ID) {
        state
            .store
            .for_each_row(&s.space, |r| {
                let timestamp = cache_csv::backup_timestamp(r.timestamp.as_deref(), now)
                    .parse()
                    .unwrap_or(now);
                loaded.push(Entry {
                    word: r.word,
                    vector: r.vector,
                    timestamp,
                    theme: r.theme,
                    word_type: r.word_type,
                    similarity: r.similarity.map(f64::from),
                });
                Ok(())
            })
            .map_err(|e| e.to_string())?;
    }
    for e in loaded {
        state.insert(puzzlegen::cache::key(&e.word), e);
    }
    Ok(state)
}

fn floats(py: Python<'_>, v: &[f32]) -> PyResult<Py<PyList>> {
    Ok(PyList::new(py, v.iter().map(|x| f64::from(*x)))?.unbind())
}

fn vector_of(word: &str, embedding: Vec<f64>) -> PyResult<Vector> {
    if embedding.is_empty() {
        return Err(PyValueError::new_err(format!(
            "the embedding of {word:?} is empty"
        )));
    }
    Ok(embedding.into_iter().map(|x| x as f32).collect())
}

/// The original's shared embedding cache, stored in the SQLite cache database next to
/// `cache_file` (`<folder of cache_file>/embeddings.sqlite3`): every `put` is committed at
/// once, so nothing is lost between backups. Keys are `word.lower().strip()`; `get` returns
/// the floats given, as float32 values. `backup_to_csv()` writes `cache_file` in the
/// original's backup layout; a new instance on the same file reads everything back.
/// Safe to share between threads.
#[pyclass(module = "puzzlegen", frozen)]
pub struct SharedEmbeddingCache {
    cache_file: PathBuf,
    database: PathBuf,
    #[pyo3(get)]
    backup_interval: f64,
    state: Mutex<State>,
}

impl SharedEmbeddingCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl SharedEmbeddingCache {
    #[new]
    #[pyo3(signature = (cache_file, backup_interval = 60.0))]
    fn new(py: Python<'_>, cache_file: PathBuf, backup_interval: f64) -> PyResult<Self> {
        let dir = cache_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let database = dir.join("embeddings.sqlite3");
        let state = py
            .allow_threads(|| open(&cache_file, &database))
            .map_err(PyRuntimeError::new_err)?;
        Ok(SharedEmbeddingCache {
            cache_file,
            database,
            backup_interval,
            state: Mutex::new(state),
        })
    }

    /// The CSV `backup_to_csv()` writes.
    #[getter]
    fn cache_file(&self) -> PathBuf {
        self.cache_file.clone()
    }

    /// The SQLite database the entries are kept in.
    #[getter]
    fn database(&self) -> PathBuf {
        self.database.clone()
    }

    /// The embedding of `word` (`word.lower().strip()`), or None.
    fn get(&self, py: Python<'_>, word: &str) -> PyResult<Option<Py<PyList>>> {
        let found = self.state().lookup(word);
        found.map(|v| floats(py, &v)).transpose()
    }

    /// The embedding of each word (None where missing).
    fn get_batch(&self, py: Python<'_>, words: Vec<String>) -> PyResult<Vec<Option<Py<PyList>>>> {
        let found: Vec<Option<Vector>> = {
            let mut s = self.state();
            words.iter().map(|w| s.lookup(w)).collect()
        };
        found
            .into_iter()
            .map(|v| v.map(|v| floats(py, &v)).transpose())
            .collect()
    }

    /// Stores `embedding` for `word`, committed to the database at once.
    #[pyo3(signature = (word, embedding, theme = None, word_type = None, similarity_to_theme = None))]
    fn put(
        &self,
        py: Python<'_>,
        word: String,
        embedding: Vec<f64>,
        theme: Option<String>,
        word_type: Option<String>,
        similarity_to_theme: Option<f64>,
    ) -> PyResult<()> {
        let entry = Entry {
            vector: vector_of(&word, embedding)?,
            word,
            timestamp: puzzlegen::clock::unix_seconds(),
            theme,
            word_type,
            similarity: similarity_to_theme,
        };
        py.allow_threads(|| self.state().put(vec![entry]))
    }

    /// Stores `(word, embedding)` pairs in one transaction; `word_types` and `similarities`,
    /// if given, are aligned with `embeddings`.
    #[pyo3(signature = (embeddings, theme = None, word_types = None, similarities = None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        embeddings: Vec<(String, Vec<f64>)>,
        theme: Option<String>,
        word_types: Option<Vec<Option<String>>>,
        similarities: Option<Vec<Option<f64>>>,
    ) -> PyResult<()> {
        let now = puzzlegen::clock::unix_seconds();
        let entries = embeddings
            .into_iter()
            .enumerate()
            .map(|(i, (word, embedding))| {
                Ok(Entry {
                    vector: vector_of(&word, embedding)?,
                    word,
                    timestamp: now,
                    theme: theme.clone(),
                    word_type: word_types
                        .as_ref()
                        .and_then(|t| t.get(i).cloned().flatten()),
                    similarity: similarities
                        .as_ref()
                        .and_then(|s| s.get(i).copied().flatten()),
                })
            })
            .collect::<PyResult<Vec<Entry>>>()?;
        py.allow_threads(|| self.state().put(entries))
    }

    /// True if `word` is cached.
    fn contains(&self, word: &str) -> bool {
        self.state()
            .index
            .contains_key(&puzzlegen::cache::key(word))
    }

    fn __contains__(&self, word: &str) -> bool {
        self.contains(word)
    }

    fn __len__(&self) -> usize {
        self.state().entries.len()
    }

    /// Writes every entry to `cache_file` in the original's backup layout
    /// (`word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N`), atomically.
    /// Does nothing when the cache is empty. One file holds one vector length (the first
    /// entry's, as the original's header): entries of another length stay in the database.
    fn backup_to_csv(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| {
            let mut s = self.state();
            let Some(first) = s.entries.first() else {
                return Ok(());
            };
            let dim = first.vector.len();
            // One CSV holds one vector length (the first entry's, as the original's header):
            // entries of another length stay in the database only.
            let rows: Vec<Row> = s
                .entries
                .iter()
                .filter(|e| e.vector.len() == dim)
                .map(Entry::row)
                .collect();
            let skipped = s.entries.len() - rows.len();
            if skipped > 0 {
                tracing::warn!(
                    "{}: {skipped} embedding(s) not {dim}-dimensional left out of the backup \
                     (they stay in {})",
                    self.cache_file.display(),
                    self.database.display()
                );
            }
            cache_csv::write_backup(&self.cache_file, dim, &rows).map_err(|e| {
                PyRuntimeError::new_err(format!("{}: {e}", self.cache_file.display()))
            })?;
            s.backups += 1;
            s.last_backup = puzzlegen::clock::unix_seconds();
            Ok(())
        })
    }

    /// The original's statistics: cache_size, hit_rate, total_requests, cache_file, hits,
    /// misses, writes, backups, last_backup (and database).
    fn get_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.state();
        let total = s.hits + s.misses;
        let d = PyDict::new(py);
        d.set_item("cache_size", s.entries.len())?;
        d.set_item(
            "hit_rate",
            if total > 0 {
                s.hits as f64 / total as f64
            } else {
                0.0
            },
        )?;
        d.set_item("total_requests", total)?;
        d.set_item("cache_file", self.cache_file.display().to_string())?;
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("writes", s.writes)?;
        d.set_item("backups", s.backups)?;
        d.set_item("last_backup", s.last_backup)?;
        d.set_item("database", self.database.display().to_string())?;
        Ok(d)
    }

    /// Empties this instance (the database keeps its entries).
    fn clear(&self) {
        let mut s = self.state();
        s.entries.clear();
        s.index.clear();
    }

    fn __repr__(&self) -> String {
        format!(
            "SharedEmbeddingCache({:?}, entries={})",
            self.cache_file.display().to_string(),
            self.state().entries.len()
        )
    }
}
