//! The durable embedding store: one SQLite database (WAL mode) that any number of puzzlegen
//! processes, and Python's own `sqlite3` module, can open at the same time.
//!
//! Schema (version 2, `PRAGMA user_version = 2`), documented for users in the README:
//!
//! ```sql
//! CREATE TABLE embeddings (
//!     id                  INTEGER PRIMARY KEY,
//!     model_id            TEXT    NOT NULL,  -- e.g. gemini-embedding-001
//!     dimension           INTEGER NOT NULL,  -- e.g. 3072
//!     task_type           TEXT    NOT NULL,  -- e.g. SEMANTIC_SIMILARITY
//!     text_key            TEXT    NOT NULL,  -- cache::key: text.lower().strip() in Python
//!     word                TEXT    NOT NULL,  -- the text as first sent or imported
//!     theme               TEXT,              -- metadata of the Python cache CSV
//!     word_type           TEXT,              -- 'theme' or 'candidate'
//!     similarity_to_theme REAL,
//!     timestamp           TEXT    NOT NULL,  -- when stored (ISO 8601 UTC, or as imported)
//!     vector              BLOB    NOT NULL   -- `dimension` little-endian f32
//! );
//! CREATE INDEX embeddings_by_key ON embeddings (model_id, dimension, task_type, text_key);
//! CREATE TABLE runs (...);  -- one row per finished run: lookups, cache hits (cache stats)
//! ```
//!
//! A key may have several rows (a v1 database held `Mercury` and `mercury` apart; another
//! program may add rows): the oldest (lowest `id`) is the key's entry, for lookups, annotations,
//! exports and counts. This build never adds a second row for a key: it inserts only if absent,
//! inside an IMMEDIATE transaction, so two processes cannot both insert one.
//!
//! Version 1 (`UNIQUE (model_id, dimension, task_type, text_key)`, keys with inner whitespace
//! collapsed and case kept) is migrated on open, in one transaction: every row is kept, keys are
//! recomputed with [`crate::cache::key`].
//!
//! Lookups go through the index, one row at a time: opening the store never reads it whole, so
//! the time to the first lookup does not grow with its size.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::embed::{Space, Vector, from_bytes, to_bytes, values_of};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another process's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the start-up integrity check (`PRAGMA quick_check`, see [`Store::quick_check`]) may
/// take. It reads every page: about 0.8 s for 100,000 vectors of 768 dimensions (417 MB) and
/// 0.7 s for 25,000 of 3072 (322 MB), file in the page cache; a larger database is checked for
/// this long, the rest as it is read.
pub const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(2);

/// How long a wait for a lock lasts before it is reported (a commit of our own other
/// connection takes milliseconds).
const LOCK_NOTICE_AFTER: Duration = Duration::from_millis(250);

/// Shortest time between two default-level "waiting for the lock" lines of one connection.
const LOCK_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// What to do when the cache cannot be written, named in every such message.
const MOVE_HINT: &str = "or point `cache.path` (or `paths.cache`) at a writable place";

/// The `embeddings` table (version 2) named `name`.
fn embeddings_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    id                  INTEGER PRIMARY KEY,
    model_id            TEXT    NOT NULL,
    dimension           INTEGER NOT NULL,
    task_type           TEXT    NOT NULL,
    text_key            TEXT    NOT NULL,
    word                TEXT    NOT NULL,
    theme               TEXT,
    word_type           TEXT,
    similarity_to_theme REAL,
    timestamp           TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    vector              BLOB    NOT NULL
);"
    )
}

const INDEX: &str = "CREATE INDEX IF NOT EXISTS embeddings_by_key \
     ON embeddings (model_id, dimension, task_type, text_key);";

const RUNS: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY,
    finished_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    model_id       TEXT    NOT NULL,
    dimension      INTEGER NOT NULL,
    task_type      TEXT    NOT NULL,
    lookups        INTEGER NOT NULL,
    cache_hits     INTEGER NOT NULL,
    texts_embedded INTEGER NOT NULL
);
";

/// The columns of a row, in `embeddings_table` order (for the v1 -> v2 copy).
const COLUMNS: &str = "id, model_id, dimension, task_type, text_key, word, theme, word_type, \
     similarity_to_theme, timestamp, vector";

/// The key's entry: its oldest row.
const LOOKUP: &str = "SELECT vector FROM embeddings \
     WHERE model_id = ?1 AND dimension = ?2 AND task_type = ?3 AND text_key = ?4 \
     ORDER BY id LIMIT 1";

/// Removes a key's row holding exactly `vector` (an unusable one, see [`Store::lookup_many`]).
const DISCARD: &str = "DELETE FROM embeddings \
     WHERE model_id = ?1 AND dimension = ?2 AND task_type = ?3 AND text_key = ?4 AND vector = ?5";

/// Insert if absent: run inside an IMMEDIATE transaction, so no other writer can add the key
/// between the check and the insert.
const INSERT: &str = "INSERT INTO embeddings \
     (model_id, dimension, task_type, text_key, word, theme, word_type, similarity_to_theme, \
      timestamp, vector) \
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
            coalesce(?9, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), ?10 \
     WHERE NOT EXISTS (SELECT 1 FROM embeddings \
         WHERE model_id = ?1 AND dimension = ?2 AND task_type = ?3 AND text_key = ?4)";

const ANNOTATE: &str = "UPDATE embeddings SET theme = ?5, word_type = ?6, similarity_to_theme = ?7 \
     WHERE id = (SELECT id FROM embeddings \
         WHERE model_id = ?1 AND dimension = ?2 AND task_type = ?3 AND text_key = ?4 \
         ORDER BY id LIMIT 1) \
       AND theme IS NULL";

/// One row per key of a space (its oldest), in insertion order: the ids come from the index
/// (sorted, small), the rows by id, so no sort of whole rows.
const EACH_ROW: &str = "SELECT text_key, word, theme, word_type, similarity_to_theme, \
     timestamp, vector FROM embeddings \
     WHERE id IN (SELECT min(id) FROM embeddings \
         WHERE model_id = ?1 AND dimension = ?2 AND task_type = ?3 GROUP BY text_key) \
     ORDER BY id";

/// A store problem, always naming the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path}: the cache database is damaged ({detail}): move it aside (or restore a copy) \
         and run again, or bring vectors back with `puzzlegen cache import`"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path}: cache schema version {found} is newer than this puzzlegen understands \
         ({SCHEMA_VERSION}); use a newer puzzlegen"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}{}", busy_hint(source))]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The database (or its folder) cannot be written: read-only, immutable, disk full.
    #[error("{path}: {cause}: {fix}")]
    Unwritable {
        path: PathBuf,
        cause: String,
        fix: String,
    },
}

/// What to say after a lock that was held too long.
fn busy_hint(e: &rusqlite::Error) -> String {
    if is_busy(e) {
        format!(
            " (another process held the lock for over {} s: let it finish, or stop it)",
            BUSY_TIMEOUT.as_secs()
        )
    } else {
        String::new()
    }
}

/// Why `path` (a `folder` or the database file) cannot be written, from the error of an
/// attempt to write it; `None` when the error says something else.
fn unwritable(path: &Path, folder: bool, e: &std::io::Error) -> Option<StoreError> {
    let what = if folder {
        "the cache folder"
    } else {
        "the cache database"
    };
    let shown = path.display();
    let (cause, fix) = match e.raw_os_error() {
        Some(13) => (
            format!("{what} is read-only (permission denied)"),
            format!("make it writable (chmod u+w {shown}) {MOVE_HINT}"),
        ),
        Some(1) => (
            format!("{what} is immutable (chattr +i)"),
            format!("remove the flag (chattr -i {shown}) {MOVE_HINT}"),
        ),
        Some(30) => (
            format!("{what} is on a read-only file system"),
            format!("remount it read-write {MOVE_HINT}"),
        ),
        Some(28 | 122) => (
            format!("the disk holding {what} is full"),
            format!("free some space {MOVE_HINT}"),
        ),
        _ => return None,
    };
    Some(StoreError::Unwritable {
        path: path.to_owned(),
        cause,
        fix,
    })
}

impl StoreError {
    /// True when the file itself is at fault (the user's to fix), not the system.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Damaged { .. } | StoreError::TooNew { .. } | StoreError::Unwritable { .. }
        )
    }

    fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, DiskFull, NotADatabase, ReadOnly};
        match source.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => StoreError::Damaged {
                path: path.to_owned(),
                detail: source.to_string(),
            },
            Some(DiskFull) => StoreError::Unwritable {
                path: path.to_owned(),
                cause: "the disk holding the cache database is full".into(),
                fix: format!("free some space {MOVE_HINT}"),
            },
            Some(ReadOnly) => StoreError::Unwritable {
                path: path.to_owned(),
                cause: "the cache database became read-only".into(),
                fix: format!(
                    "make it and its folder writable again (chmod u+w, chattr -i, a read-write \
                     mount) {MOVE_HINT}"
                ),
            },
            _ => StoreError::Sql {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// One embedding with the metadata of the Python cache CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub word: String,
    pub theme: Option<String>,
    pub word_type: Option<String>,
    pub similarity: Option<f32>,
    /// `None`: now.
    pub timestamp: Option<String>,
    pub vector: Vector,
}

/// A stored vector that cannot be used (see [`crate::embed::check_vector`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Unusable {
    pub reason: String,
    /// Its bytes as stored, so that exactly this row is removed (see [`Store::put_discarding`]).
    pub bytes: Vec<u8>,
}

/// A key whose stored row `bytes` is to be removed (it is replaced by a row of the same put).
#[derive(Debug, Clone, PartialEq)]
pub struct Discard {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// Metadata learned when a theme finishes, for rows stored without it.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub key: String,
    pub theme: String,
    pub word_type: &'static str,
    /// Empty on a theme's own row, as the Python cache wrote it.
    pub similarity: Option<f32>,
}

/// Entries of one embedding space (`cache stats`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceCount {
    pub space: Space,
    pub entries: u64,
}

/// The counters of the last finished run (`cache stats`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunCount {
    pub finished_at: String,
    pub space: Space,
    pub lookups: u64,
    pub cache_hits: u64,
    pub texts_embedded: u64,
}

/// A read transaction on a [`Store`] (see [`Store::snapshot`]); ends when dropped.
pub struct Snapshot<'a> {
    _tx: rusqlite::Transaction<'a>,
}

/// An open connection to the store.
pub struct Store {
    path: PathBuf,
    conn: Connection,
    /// When this connection started waiting for another process's lock, if it is waiting.
    waiting_since: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and its parent directory.
    ///
    /// A new file gets an ordinary mode, 0666 less the umask (SQLite itself would create it
    /// 0644 whatever the umask): it is created empty here first, which SQLite takes for a new
    /// database; its `-wal` and `-shm` files take the database's mode.
    ///
    /// A database that cannot be written (a read-only or immutable file or folder, a
    /// read-only file system, a full disk) is refused here, before any work, naming the
    /// cause and the fix: SQLite itself would open it read-only and fail at the first write.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| {
            unwritable(dir, true, &source).unwrap_or_else(|| StoreError::Io {
                path: dir.to_owned(),
                source,
            })
        })?;
        // `create_new`: an existing file (perhaps created by another process a moment ago)
        // is never truncated.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // SQLite would quietly open a file it cannot write read-only.
                if let Err(source) = std::fs::OpenOptions::new().write(true).open(path)
                    && let Some(e) = unwritable(path, false, &source)
                {
                    return Err(e);
                }
            }
            Err(source) => {
                return Err(unwritable(dir, true, &source).unwrap_or(StoreError::Io {
                    path: path.to_owned(),
                    source,
                }));
            }
        }
        // The folder must take the database's `-wal` and `-shm` files too.
        let probe = dir.join(format!(
            ".puzzlegen-write-check-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(source) => {
                if let Some(e) = unwritable(dir, true, &source) {
                    return Err(e);
                }
            }
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Opens an existing database (an error if there is none).
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, OpenFlags::empty())
    }

    fn open_with(path: &Path, create: OpenFlags) -> Result<Store, StoreError> {
        check_header(path)?;
        // Switching a new file to WAL and creating the schema can meet another process doing
        // the same; SQLite then answers "locked" at once rather than through the busy
        // timeout, so the whole setup is retried for as long as the busy timeout.
        let started = std::time::Instant::now();
        let deadline = started + BUSY_TIMEOUT;
        let mut told = false;
        loop {
            let mut conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | create,
            )
            .map_err(|e| StoreError::sql(path, e))?;
            let waiting_since = std::sync::Arc::default();
            install_busy_handler(&mut conn, path, std::sync::Arc::clone(&waiting_since))
                .map_err(|e| StoreError::sql(path, e))?;
            let store = Store {
                path: path.to_owned(),
                conn,
                waiting_since,
            };
            match store.prepare() {
                Err(StoreError::Sql { source, .. })
                    if is_busy(&source) && std::time::Instant::now() < deadline =>
                {
                    if !told && started.elapsed() > Duration::from_millis(500) {
                        told = true;
                        tracing::warn!(
                            "waiting for the lock on {}, held by another process (up to {} s)",
                            path.display(),
                            BUSY_TIMEOUT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map(|()| store),
            }
        }
    }

    fn prepare(&self) -> Result<(), StoreError> {
        let c = &self.conn;
        let e = |e| StoreError::sql(&self.path, e);
        c.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        // WAL + NORMAL: a committed transaction survives a crash of the process (kill -9);
        // only a power cut can lose the last ones.
        c.pragma_update(None, "synchronous", "NORMAL").map_err(e)?;
        let found = self.user_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        if found < SCHEMA_VERSION {
            self.upgrade()?;
        }
        Ok(())
    }

    fn user_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Creates the schema, or migrates a version 1 database, in one IMMEDIATE transaction.
    /// Another process may be doing the same: the version is read again under the lock, and
    /// whoever comes second finds the work done.
    fn upgrade(&self) -> Result<(), StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(e)?;
        match self.user_version()? {
            0 => tx
                .execute_batch(&format!(
                    "{} {INDEX} {RUNS}",
                    embeddings_table("embeddings")
                ))
                .map_err(e)?,
            1 => self.migrate_v1(&tx)?,
            SCHEMA_VERSION => return Ok(()),
            found => {
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    found,
                });
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Version 1 -> 2: the UNIQUE constraint goes (rows whose keys now collide are all kept),
    /// every key is recomputed with [`crate::cache::key`], an index replaces the constraint.
    fn migrate_v1(&self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        tx.execute_batch(&format!(
            "{} INSERT INTO embeddings_v2 ({COLUMNS}) SELECT {COLUMNS} FROM embeddings ORDER BY id;",
            embeddings_table("embeddings_v2")
        ))
        .map_err(e)?;
        let changed: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare("SELECT id, text_key FROM embeddings_v2")
                .map_err(e)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(e)?;
            let mut changed = Vec::new();
            for row in rows {
                let (id, old) = row.map_err(e)?;
                let new = crate::cache::key(&old);
                if new != old {
                    changed.push((id, new));
                }
            }
            changed
        };
        {
            let mut update = tx
                .prepare("UPDATE embeddings_v2 SET text_key = ?2 WHERE id = ?1")
                .map_err(e)?;
            for (id, key) in &changed {
                update.execute(params![id, key]).map_err(e)?;
            }
        }
        tx.execute_batch(&format!(
            "DROP TABLE embeddings; ALTER TABLE embeddings_v2 RENAME TO embeddings; {INDEX} {RUNS}"
        ))
        .map_err(e)?;
        tracing::info!(
            "{}: cache schema upgraded to version {SCHEMA_VERSION} ({} key(s) rewritten as \
             text.lower().strip())",
            self.path.display(),
            changed.len()
        );
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the whole file (`PRAGMA quick_check`: every page, every b-tree; not the values)
    /// for at most `budget`, so that damage in the middle of it is found before a run pays
    /// for anything rather than in the middle of the run. A check cut short by the budget
    /// passes (said at info level).
    pub fn quick_check(&self, budget: Duration) -> Result<(), StoreError> {
        let interrupt = self.conn.get_interrupt_handle();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let timer = std::thread::spawn(move || {
            let late =
                finished.recv_timeout(budget) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
            if late {
                interrupt.interrupt();
            }
        });
        let found: rusqlite::Result<Vec<String>> = self
            .conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
        drop(done);
        let _ = timer.join();
        match found {
            Ok(lines) if lines == ["ok"] => Ok(()),
            Ok(lines) => Err(StoreError::Damaged {
                path: self.path.clone(),
                detail: crate::text::cut(&format!("quick_check: {}", lines.join("; ")), 300),
            }),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                tracing::info!(
                    "{}: the start-up check stopped after {} s (a large database); the rest is \
                     checked as it is read",
                    self.path.display(),
                    budget.as_secs()
                );
                Ok(())
            }
            Err(e) => Err(match StoreError::sql(&self.path, e) {
                StoreError::Damaged { path, detail } => StoreError::Damaged {
                    path,
                    detail: format!("quick_check: {detail}"),
                },
                other => other,
            }),
        }
    }

    /// The stored vector of each key (its oldest row's), `None` where it is missing or cannot
    /// be used (see [`Store::lookup_many`] to know why).
    pub fn get_many(
        &self,
        space: &Space,
        keys: &[String],
    ) -> Result<Vec<Option<Vector>>, StoreError> {
        Ok(self
            .lookup_many(space, keys)?
            .into_iter()
            .map(|found| found.and_then(Result::ok))
            .collect())
    }

    /// The stored row of each key (its oldest), `None` where it is missing: its vector, or
    /// why that vector cannot be used (checked as an API answer is).
    pub fn lookup_many(
        &self,
        space: &Space,
        keys: &[String],
    ) -> Result<Vec<Option<Result<Vector, Unusable>>>, StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        let mut stmt = self.conn.prepare_cached(LOOKUP).map_err(e)?;
        keys.iter()
            .map(|key| {
                let blob: Option<Vec<u8>> = stmt
                    .query_row(
                        params![space.model_id, space.dimension as i64, space.task_type, key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(e)?;
                Ok(blob.map(|bytes| {
                    from_bytes(&bytes, space.dimension).map_err(|reason| Unusable { reason, bytes })
                }))
            })
            .collect()
    }

    /// Stores rows (a key already present keeps its first vector: nothing is added) and
    /// metadata (on the key's oldest row), in one IMMEDIATE transaction. Returns how many rows
    /// were new.
    pub fn put(
        &mut self,
        space: &Space,
        rows: &[Row],
        annotations: &[Annotation],
    ) -> Result<usize, StoreError> {
        self.put_discarding(space, &[], rows, annotations)
    }

    /// [`Store::put`], removing first, in the same transaction, the unusable rows `discards`
    /// (so that a new vector of their key is stored in their place).
    pub fn put_discarding(
        &mut self,
        space: &Space,
        discards: &[Discard],
        rows: &[Row],
        annotations: &[Annotation],
    ) -> Result<usize, StoreError> {
        if discards.is_empty() && rows.is_empty() && annotations.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let e = |e| StoreError::sql(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut added = 0;
        {
            let dim = space.dimension as i64;
            let mut discard = tx.prepare_cached(DISCARD).map_err(e)?;
            for d in discards {
                discard
                    .execute(params![
                        space.model_id,
                        dim,
                        space.task_type,
                        d.key,
                        d.bytes
                    ])
                    .map_err(e)?;
            }
            let mut insert = tx.prepare_cached(INSERT).map_err(e)?;
            for r in rows {
                added += insert_row(&mut insert, space, r).map_err(e)?;
            }
            let mut annotate = tx.prepare_cached(ANNOTATE).map_err(e)?;
            for a in annotations {
                annotate
                    .execute(params![
                        space.model_id,
                        dim,
                        space.task_type,
                        a.key,
                        a.theme,
                        a.word_type,
                        a.similarity,
                    ])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        let waited = self
            .waiting_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(since) = waited {
            tracing::info!(
                "got the lock on {} after {:.1} s",
                self.path.display(),
                since.elapsed().as_secs_f64()
            );
        }
        Ok(added)
    }

    /// Stores rows, each replacing every row `space.model_id` holds for its key (in any
    /// dimension or task type), in one IMMEDIATE transaction: the last write wins, as in the
    /// Python original's `SharedEmbeddingCache.put` (the Python package's cache; runs use
    /// [`Store::put`], where the first vector stays). Returns how many rows were stored.
    pub fn replace(&mut self, space: &Space, rows: &[Row]) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let e = |e| StoreError::sql(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut stored = 0;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM embeddings WHERE model_id = ?1 AND text_key = ?2")
                .map_err(e)?;
            let mut insert = tx.prepare_cached(INSERT).map_err(e)?;
            for r in rows {
                delete.execute(params![space.model_id, r.key]).map_err(e)?;
                stored += insert_row(&mut insert, space, r).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(stored)
    }

    /// Starts a read transaction: until the [`Snapshot`] is dropped, every read through this
    /// store sees the database as it is now, whatever other connections commit meanwhile.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Deferred,
        )
        .map_err(e)?;
        // A deferred transaction takes its snapshot at its first read.
        tx.query_row("SELECT 1 FROM embeddings LIMIT 1", [], |_| Ok(()))
            .optional()
            .map_err(e)?;
        Ok(Snapshot { _tx: tx })
    }

    /// One row per key of one space (the key's oldest), in insertion order, as stored; a row
    /// whose vector has the wrong number of bytes is left out, with a warning naming it.
    pub fn for_each_row(
        &self,
        space: &Space,
        mut f: impl FnMut(Row) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        let mut stmt = self.conn.prepare(EACH_ROW).map_err(e)?;
        let mut rows = stmt
            .query(params![
                space.model_id,
                space.dimension as i64,
                space.task_type
            ])
            .map_err(e)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(e)? {
            let blob: Vec<u8> = r.get(6).map_err(e)?;
            let key: String = r.get(0).map_err(e)?;
            let Some(vector) = values_of(&blob, space.dimension) else {
                // A damaged row costs that row, not the export (nor the run writing it).
                tracing::warn!(
                    "{}: the row of {key:?} holds {} bytes, not {} values of 4 bytes: left out",
                    self.path.display(),
                    blob.len(),
                    space.dimension
                );
                continue;
            };
            f(Row {
                key,
                word: r.get(1).map_err(e)?,
                theme: r.get(2).map_err(e)?,
                word_type: r.get(3).map_err(e)?,
                similarity: r.get::<_, Option<f64>>(4).map_err(e)?.map(|s| s as f32),
                timestamp: r.get(5).map_err(e)?,
                vector,
            })
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// Entries (distinct keys) per embedding space.
    pub fn spaces(&self) -> Result<Vec<SpaceCount>, StoreError> {
        let e = |e| StoreError::sql(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT model_id, dimension, task_type, count(DISTINCT text_key) FROM embeddings \
                 GROUP BY model_id, dimension, task_type ORDER BY model_id, dimension, task_type",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SpaceCount {
                    space: Space {
                        model_id: r.get(0)?,
                        dimension: r.get::<_, i64>(1)? as usize,
                        task_type: r.get(2)?,
                    },
                    entries: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Records a finished run's counters (the hit rate `cache stats` shows).
    pub fn record_run(
        &self,
        space: &Space,
        lookups: u64,
        cache_hits: u64,
        texts_embedded: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs (model_id, dimension, task_type, lookups, cache_hits, \
                 texts_embedded) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    space.model_id,
                    space.dimension as i64,
                    space.task_type,
                    lookups as i64,
                    cache_hits as i64,
                    texts_embedded as i64
                ],
            )
            .map_err(|e| StoreError::sql(&self.path, e))?;
        Ok(())
    }

    /// The last run recorded, if any.
    pub fn last_run(&self) -> Result<Option<RunCount>, StoreError> {
        self.conn
            .query_row(
                "SELECT finished_at, model_id, dimension, task_type, lookups, cache_hits, \
                 texts_embedded FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(RunCount {
                        finished_at: r.get(0)?,
                        space: Space {
                            model_id: r.get(1)?,
                            dimension: r.get::<_, i64>(2)? as usize,
                            task_type: r.get(3)?,
                        },
                        lookups: r.get::<_, i64>(4)? as u64,
                        cache_hits: r.get::<_, i64>(5)? as u64,
                        texts_embedded: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| StoreError::sql(&self.path, e))
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn size_on_disk(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| {
                let mut p = self.path.clone().into_os_string();
                p.push(s);
                std::fs::metadata(p).ok()
            })
            .map(|m| m.len())
            .sum()
    }
}

/// Runs [`INSERT`] for row `r` of `space`; the number of rows stored (0: the key was there).
fn insert_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    space: &Space,
    r: &Row,
) -> rusqlite::Result<usize> {
    insert.execute(params![
        space.model_id,
        space.dimension as i64,
        space.task_type,
        r.key,
        r.word,
        r.theme,
        r.word_type,
        r.similarity,
        r.timestamp,
        to_bytes(&r.vector),
    ])
}

/// Waits for another process's lock as a busy timeout of [`BUSY_TIMEOUT`] would, but says so:
/// once a statement has waited [`LOCK_NOTICE_AFTER`], a line names the database (at most one
/// line every [`LOCK_NOTICE_INTERVAL`] per connection; the rest at debug).
fn install_busy_handler(
    conn: &mut Connection,
    path: &Path,
    waiting_since: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
) -> rusqlite::Result<()> {
    let path = path.to_owned();
    let mut started = std::time::Instant::now();
    let mut told = false;
    let mut last_notice: Option<std::time::Instant> = None;
    conn.busy_handler(Some(move |count: i32| {
        let now = std::time::Instant::now();
        if count == 0 {
            started = now;
            told = false;
            waiting_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(now);
        }
        // Our own connections wait on each other for milliseconds: say nothing about those.
        if !told && now.duration_since(started) >= LOCK_NOTICE_AFTER {
            told = true;
            let line = format!(
                "waiting for the lock on {}, held by another process (up to {} s)",
                path.display(),
                BUSY_TIMEOUT.as_secs()
            );
            if last_notice.is_none_or(|t| now.duration_since(t) >= LOCK_NOTICE_INTERVAL) {
                last_notice = Some(now);
                tracing::warn!("{line}");
            } else {
                tracing::debug!("{line}");
            }
        }
        if now.duration_since(started) >= BUSY_TIMEOUT {
            waiting_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            return false;
        }
        // 1, 2, 4 ... ms, then every 50 ms.
        let pause =
            Duration::from_millis(1 << count.clamp(0, 6) as u32).min(Duration::from_millis(50));
        std::thread::sleep(pause);
        true
    }))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

/// Refuses, before SQLite sees it, a file that is not a database or is shorter than its own
/// header says (a truncated copy): SQLite itself would only notice when it reads a missing page,
/// possibly in the middle of a run.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let len = file
        .metadata()
        .map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut header = [0u8; 100];
    if len < 100 || file.read_exact(&mut header).is_err() {
        return Err(damaged(format!(
            "{len} bytes, shorter than a database header"
        )));
    }
    if &header[..16] != b"SQLite format 3\0" {
        return Err(damaged("not an SQLite database".into()));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // The page count is valid only when the change counter matches "version-valid-for".
    if be32(24) == be32(92) && len < pages * page_size {
        return Err(damaged(format!(
            "truncated: {len} bytes, its header says {} pages of {page_size} bytes",
            pages
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        crate::embed::test_space(3)
    }

    fn row(key: &str, v: [f32; 3]) -> Row {
        Row {
            key: key.into(),
            word: key.into(),
            theme: None,
            word_type: None,
            similarity: None,
            timestamp: None,
            vector: Vector::from(v.to_vec()),
        }
    }

    #[test]
    fn rows_round_trip_and_first_vector_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.sqlite3");
        let mut s = Store::open(&path).unwrap();
        let added = s
            .put(
                &space(),
                &[row("a", [1.0, 2.0, 3.0]), row("b", [0.5, -1.0, 0.25])],
                &[],
            )
            .unwrap();
        assert_eq!(added, 2);
        let again = s.put(&space(), &[row("a", [9.0, 9.0, 9.0])], &[]).unwrap();
        assert_eq!(again, 0);
        let got = s
            .get_many(&space(), &["a".into(), "zz".into(), "b".into()])
            .unwrap();
        assert_eq!(&*got[0].clone().unwrap(), &[1.0, 2.0, 3.0]);
        assert!(got[1].is_none());
        assert_eq!(&*got[2].clone().unwrap(), &[0.5, -1.0, 0.25]);
        let other = Space {
            dimension: 3,
            model_id: "other".into(),
            task_type: "t".into(),
        };
        assert!(s.get_many(&other, &["a".into()]).unwrap()[0].is_none());
        s.put(
            &space(),
            &[],
            &[Annotation {
                key: "a".into(),
                theme: "T".into(),
                word_type: "candidate",
                similarity: Some(0.5),
            }],
        )
        .unwrap();
        let mut seen = Vec::new();
        s.for_each_row(&space(), |r| {
            seen.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0].theme.as_deref(), Some("T"));
        assert_eq!(seen[0].similarity, Some(0.5));
        assert_eq!(seen[1].theme, None);
        assert_eq!(s.spaces().unwrap()[0].entries, 2);
    }

    #[test]
    fn a_file_that_is_not_a_database_or_is_truncated_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.sqlite3");
        std::fs::write(&junk, b"word,theme\nspoon,cutlery\n").unwrap();
        let e = Store::open(&junk).err().unwrap().to_string();
        assert!(e.contains("junk.sqlite3") && e.contains("damaged"), "{e}");
        assert_eq!(std::fs::read(&junk).unwrap().len(), 25, "left as it was");

        let good = dir.path().join("good.sqlite3");
        {
            let mut s = Store::open(&good).unwrap();
            let rows: Vec<Row> = (0..500).map(|i| row(&format!("w{i}"), [1.0; 3])).collect();
            s.put(&space(), &rows, &[]).unwrap();
        } // The last connection to close checkpoints the log into the file.
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.sqlite3");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = Store::open(&cut).err().unwrap().to_string();
        assert!(e.contains("cut.sqlite3") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn damage_in_the_middle_of_the_file_is_found_by_the_start_up_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        {
            let mut s = Store::open(&path).unwrap();
            let rows: Vec<Row> = (0..500).map(|i| row(&format!("w{i}"), [1.0; 3])).collect();
            s.put(&space(), &rows, &[]).unwrap();
            s.quick_check(QUICK_CHECK_BUDGET).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2 / 4096 * 4096;
        bytes[middle..middle + 4096].fill(0xab);
        std::fs::write(&path, &bytes).unwrap();
        let s = Store::open(&path).unwrap();
        let e = s.quick_check(QUICK_CHECK_BUDGET).unwrap_err().to_string();
        assert!(
            e.contains("c.sqlite3: the cache database is damaged (quick_check: "),
            "{e}"
        );
    }

    /// The version 1 schema, as released.
    const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS embeddings (
    id                  INTEGER PRIMARY KEY,
    model_id            TEXT    NOT NULL,
    dimension           INTEGER NOT NULL,
    task_type           TEXT    NOT NULL,
    text_key            TEXT    NOT NULL,
    word                TEXT    NOT NULL,
    theme               TEXT,
    word_type           TEXT,
    similarity_to_theme REAL,
    timestamp           TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    vector              BLOB    NOT NULL,
    UNIQUE (model_id, dimension, task_type, text_key)
);
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY,
    finished_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    model_id       TEXT    NOT NULL,
    dimension      INTEGER NOT NULL,
    task_type      TEXT    NOT NULL,
    lookups        INTEGER NOT NULL,
    cache_hits     INTEGER NOT NULL,
    texts_embedded INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

    /// A version 1 database at `path` holding `Mercury` then `mercury` (different vectors),
    /// an uncollapsed key, a row of another space and a run.
    fn v1_database(path: &Path) {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        let rows: [(&str, &str, &str, [f32; 3]); 5] = [
            ("m", "Mercury", "Mercury", [1.0, 0.0, 0.0]),
            ("m", "mercury", "mercury", [0.0, 1.0, 0.0]),
            (
                "m",
                "  Rivers  of Europe",
                "Rivers  of Europe",
                [0.0, 0.0, 1.0],
            ),
            ("m", "Rivers of Europe", "Rivers of Europe", [0.5, 0.5, 0.0]),
            ("other", "Mercury", "Mercury", [2.0, 2.0, 2.0]),
        ];
        for (model, key, word, v) in rows {
            c.execute(
                "INSERT INTO embeddings (model_id, dimension, task_type, text_key, word, vector) \
                 VALUES (?1, 3, 't', ?2, ?3, ?4)",
                params![model, key, word, to_bytes(&v)],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO runs (model_id, dimension, task_type, lookups, cache_hits, \
             texts_embedded) VALUES ('m', 3, 't', 10, 4, 6)",
            [],
        )
        .unwrap();
    }

    fn count(path: &Path, sql: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    /// Checks the schema of the database at `path` just migrated from version 1, which held
    /// `before` embeddings.
    fn assert_migrated_to_version_2(path: &Path, before: i64) {
        assert_eq!(count(path, "SELECT count(*) FROM embeddings"), before);
        assert_eq!(count(path, "PRAGMA user_version"), 2);
        assert_eq!(count(path, "SELECT count(*) FROM runs"), 1, "runs kept");
        assert_eq!(
            count(
                path,
                "SELECT count(*) FROM pragma_index_list('embeddings') WHERE \"unique\""
            ),
            0,
            "no UNIQUE constraint left"
        );
        assert_eq!(
            count(
                path,
                "SELECT count(*) FROM embeddings WHERE text_key IN ('mercury', 'rivers  of europe', 'rivers of europe')"
            ),
            5,
            "every key recomputed as text.lower().strip(), in every space"
        );
    }

    /// Checks the lookups in the migrated [`v1_database`]: both `Mercury` and `mercury` are
    /// kept; the older answers for the key.
    fn assert_the_oldest_row_answers(s: &Store) {
        let key = |t: &str| crate::cache::key(t);
        let got = s
            .get_many(
                &space(),
                &[
                    key("mercury"),
                    key("  Rivers  of Europe"),
                    key("Rivers of Europe"),
                ],
            )
            .unwrap();
        assert_eq!(&*got[0].clone().unwrap(), &[1.0, 0.0, 0.0]);
        assert_eq!(&*got[1].clone().unwrap(), &[0.0, 0.0, 1.0]);
        assert_eq!(&*got[2].clone().unwrap(), &[0.5, 0.5, 0.0]);
        let other = Space {
            model_id: "other".into(),
            ..space()
        };
        assert_eq!(
            &*s.get_many(&other, &[key("MERCURY")]).unwrap()[0]
                .clone()
                .unwrap(),
            &[2.0, 2.0, 2.0]
        );
    }

    /// Checks export and stats of the migrated [`v1_database`] at `path`: one row per key,
    /// the oldest; annotations go to that row.
    fn assert_one_row_per_key(s: &mut Store, path: &Path) {
        s.put(
            &space(),
            &[],
            &[Annotation {
                key: "mercury".into(),
                theme: "Planets".into(),
                word_type: "candidate",
                similarity: Some(0.5),
            }],
        )
        .unwrap();
        let mut seen = Vec::new();
        s.for_each_row(&space(), |r| {
            seen.push((r.key, r.word, r.theme, r.vector[0]));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (
                    "mercury".into(),
                    "Mercury".into(),
                    Some("Planets".into()),
                    1.0
                ),
                (
                    "rivers  of europe".into(),
                    "Rivers  of Europe".into(),
                    None,
                    0.0
                ),
                (
                    "rivers of europe".into(),
                    "Rivers of Europe".into(),
                    None,
                    0.5
                ),
            ]
        );
        assert_eq!(
            count(
                path,
                "SELECT count(*) FROM embeddings WHERE theme IS NOT NULL"
            ),
            1
        );
        let entries: Vec<(String, u64)> = s
            .spaces()
            .unwrap()
            .into_iter()
            .map(|c| (c.space.model_id, c.entries))
            .collect();
        assert_eq!(entries, vec![("m".into(), 3), ("other".into(), 1)]);
    }

    #[test]
    fn a_version_1_database_is_migrated_keeping_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite3");
        v1_database(&path);
        let before = count(&path, "SELECT count(*) FROM embeddings");
        assert_eq!(before, 5);

        let mut s = Store::open(&path).unwrap();
        assert_migrated_to_version_2(&path, before);
        assert_the_oldest_row_answers(&s);
        assert_one_row_per_key(&mut s, &path);

        // A key present (in any case) is not stored again.
        assert_eq!(
            s.put(&space(), &[row("mercury", [9.0; 3])], &[]).unwrap(),
            0
        );
        drop(s);

        // Version 2 is used as it is; a newer version is refused.
        Store::open(&path).unwrap();
        assert_eq!(count(&path, "SELECT count(*) FROM embeddings"), before);
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 3")
            .unwrap();
        assert!(matches!(
            Store::open(&path).err().unwrap(),
            StoreError::TooNew { found: 3, .. }
        ));
    }

    #[test]
    fn processes_opening_a_version_1_database_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite3");
        v1_database(&path);
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    barrier.wait();
                    let s = Store::open(&path).unwrap();
                    let got = s.get_many(&space(), &["mercury".into()]).unwrap();
                    assert_eq!(&*got[0].clone().unwrap(), &[1.0, 0.0, 0.0]);
                });
            }
        });
        assert_eq!(count(&path, "SELECT count(*) FROM embeddings"), 5);
        assert_eq!(count(&path, "PRAGMA user_version"), 2);
    }

    #[test]
    fn inserts_add_a_key_once_and_lookups_use_the_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let mut s = Store::open(&path).unwrap();
        let added = s
            .put(
                &space(),
                &[row("a", [1.0; 3]), row("a", [2.0; 3]), row("b", [3.0; 3])],
                &[],
            )
            .unwrap();
        assert_eq!(added, 2, "the second `a` of one batch is not stored");
        assert_eq!(count(&path, "SELECT count(*) FROM embeddings"), 2);
        let plan = |sql: &str, n: usize| -> Vec<String> {
            let mut stmt = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let args = ["m", "3", "t", "a"];
            stmt.query_map(rusqlite::params_from_iter(&args[..n]), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        for (sql, n) in [(LOOKUP, 4), (EACH_ROW, 3)] {
            let plan = plan(sql, n);
            assert!(
                plan.iter().any(|p| p.contains("embeddings_by_key"))
                    && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// The process's umask, from /proc/self/status (setting it would race other test threads).
    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .expect("an Umask: line in /proc/self/status");
        u32::from_str_radix(line.trim(), 8).unwrap()
    }

    /// Checks the modes of a new database's files under the current umask.
    fn new_files_get_0666_less_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite3");
        let mut s = Store::open(&path).unwrap();
        s.put(&space(), &[row("a", [1.0; 3])], &[]).unwrap();
        let expected = 0o666 & !current_umask();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, expected, "{suffix}: {mode:o}, expected {expected:o}");
        }
        // An empty file (created by another process a moment ago) is a new database.
        let empty = dir.path().join("empty.sqlite3");
        std::fs::write(&empty, b"").unwrap();
        Store::open(&empty).unwrap();
        assert!(std::fs::metadata(&empty).unwrap().len() > 0);
    }

    #[test]
    fn a_new_database_file_gets_an_ordinary_mode() {
        new_files_get_0666_less_the_umask();
        if std::env::var_os("PUZZLEGEN_UMASK_CHILD").is_some() {
            assert_eq!(current_umask(), 0o002);
            return;
        }
        // Again under umask 0002, where SQLite's own 0644 would show, in a child process
        // (setting the umask here would race the other test threads).
        let name = "cache::store::tests::a_new_database_file_gets_an_ordinary_mode";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 0002 && exec \"$0\" --exact \"$1\" --test-threads=1")
            .arg(std::env::current_exe().unwrap())
            .arg(name)
            .env("PUZZLEGEN_UMASK_CHILD", "1")
            .output()
            .expect("sh is needed for this test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "under umask 0002: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
