//! The Python pipeline's cache backup, written at `output.embedding_cache_file` on every run:
//! `word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N`, one row per
//! distinct text (case-insensitive), as the original's `SharedEmbeddingCache.backup_to_csv`
//! leaves it and its `_load_from_csv` reads it back.
//!
//! [`BackupCsvWriter`] writes it on a background thread while the run goes on: first what the
//! database held when the writer started, then each theme's rows as they are given, so that at
//! the end of a run only the last rows are left (a 3072-dimension cache file is hundreds of
//! megabytes). The file is staged ([`crate::fsx::stage`]): [`BackupCsvWriter::finish`]
//! hands it back complete but not in place, so the run puts it in place with its other outputs,
//! as a set. The layout and formatting are [`csv::export`]'s.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::csv::{self, BackupSink, CsvError};
use super::store::{Row, Store};
use crate::embed::Space;
use crate::fsx::Staged;

/// What the writer thread ends with: rows written, and the file (none if it never started).
type Written = Result<(u64, Option<Staged>), CsvError>;

enum Msg {
    Rows(Vec<Row>),
    Finish(Vec<Row>),
}

/// A backup CSV being written; see the module documentation.
pub struct BackupCsvWriter {
    path: PathBuf,
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<Written>>,
}

impl BackupCsvWriter {
    /// Starts writing `path` (staged: a temporary file next to it, put in place by the caller) in
    /// the backup layout: first every row the database `db` holds for `space` at the moment
    /// this returns (one per key, the oldest), then the rows given to [`add`](Self::add) and
    /// [`finish`](Self::finish), each key ([`cache::key`](super::key) of `word`) once: the
    /// first row for a key wins. `db` `None`: no database rows.
    ///
    /// Fails if the database cannot be opened or read.
    pub fn start(
        db: Option<PathBuf>,
        space: Space,
        path: PathBuf,
    ) -> Result<BackupCsvWriter, CsvError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), CsvError>>(1);
        let (tx, rx) = mpsc::channel::<Msg>();
        let target = path.clone();
        let thread = std::thread::Builder::new()
            .name("cache-backup-csv".into())
            .spawn(move || write(db, space, target, ready_tx, rx))
            .map_err(|source| CsvError::Write {
                path: path.clone(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(BackupCsvWriter {
                path,
                tx: Some(tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked.
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(r) => Err(r.err().unwrap_or_else(|| CsvError::Write {
                    path,
                    source: std::io::Error::other("the backup writer stopped"),
                })),
            },
        }
    }

    /// Queues rows to be written (rows of keys already written are skipped).
    pub fn add(&self, rows: Vec<Row>) {
        if let Some(tx) = &self.tx
            && !rows.is_empty()
        {
            let _ = tx.send(Msg::Rows(rows));
        }
    }

    /// Writes `rest` (rows of keys not written yet; others are skipped) after everything
    /// queued; returns the number of rows written and the file, complete and synced, for the
    /// caller to put in place ([`Staged::commit`]; dropped, it is removed).
    pub fn finish(mut self, rest: Vec<Row>) -> Result<(u64, Staged), CsvError> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Finish(rest));
        }
        match self.join()? {
            (n, Some(staged)) => Ok((n, staged)),
            (_, None) => Err(CsvError::Write {
                path: self.path.clone(),
                source: std::io::Error::other("the backup writer stopped"),
            }),
        }
    }

    /// The file being written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn join(&mut self) -> Written {
        self.tx.take();
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok((0, None)),
        }
    }
}

impl Drop for BackupCsvWriter {
    /// Not finished (a run that failed): the file is not put in place; the old one stays.
    fn drop(&mut self) {
        if self.thread.is_some()
            && let Err(e) = self.join()
        {
            tracing::warn!("cache backup CSV: {e}");
        }
    }
}

/// The writer thread: snapshot, then database rows, then queued rows until `Finish` (or until
/// the handle is dropped).
fn write(
    db: Option<PathBuf>,
    space: Space,
    path: PathBuf,
    ready: mpsc::SyncSender<Result<(), CsvError>>,
    rx: mpsc::Receiver<Msg>,
) -> Written {
    let store = match db.as_deref().map(Store::open_existing).transpose() {
        Ok(store) => store,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok((0, None));
        }
    };
    let snapshot = match store.as_ref().map(Store::snapshot).transpose() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok((0, None));
        }
    };
    let _ = ready.send(Ok(()));
    let mut written = 0;
    let mut failure = None;
    let staged = crate::fsx::stage(&path, |w| {
        let mut sink = BackupSink::new(w, space.dimension)?;
        if let Some(store) = &store {
            let r = csv::write_store_rows(&mut sink, store, &space);
            drop(snapshot);
            match r {
                Ok(()) => {}
                Err(CsvError::Write { source, .. }) => return Err(source),
                Err(other) => {
                    failure = Some(other);
                    return Err(std::io::Error::other("reading the cache failed"));
                }
            }
        }
        write_queued(&mut sink, &rx)?;
        written = sink.written();
        Ok(())
    });
    match (staged, failure) {
        (Ok(staged), _) => Ok((written, Some(staged))),
        // The database cannot be read to the end (damaged in the middle of the run): the file
        // is not replaced by one missing its rows. The run's new embeddings are in the
        // database or in the file `Cache::close` saves them to.
        (Err(_), Some(cause)) => {
            tracing::warn!("{}: not rewritten, left as it was: {cause}", path.display());
            keep_as_it_was(&path, space.dimension, &rx).map(|staged| (0, Some(staged)))
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// Writes the rows queued on `rx` until `Finish` (or until the handle is dropped); the first
/// row for a key wins.
fn write_queued(sink: &mut BackupSink<'_>, rx: &mpsc::Receiver<Msg>) -> std::io::Result<()> {
    // Everything waiting is written at once: fewer, larger parallel formatting rounds.
    while let Ok(first) = rx.recv() {
        let mut rows = Vec::new();
        let mut last = false;
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Rows(r) => rows.extend(r),
                Msg::Finish(r) => {
                    rows.extend(r);
                    last = true;
                }
            }
        }
        sink.write(&rows)?;
        if last {
            break;
        }
    }
    Ok(())
}

/// The cache CSV at `path` staged as it is (a copy: putting it in place changes nothing),
/// once the rows queued on `rx` are done with; with no file there, those rows.
fn keep_as_it_was(
    path: &std::path::Path,
    dimension: usize,
    rx: &mpsc::Receiver<Msg>,
) -> Result<Staged, CsvError> {
    let old = match std::fs::File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(CsvError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(crate::fsx::stage(path, |w| match old {
        Some(mut f) => {
            std::io::copy(&mut f, w)?;
            while let Ok(msg) = rx.recv() {
                if matches!(msg, Msg::Finish(_)) {
                    break;
                }
            }
            Ok(())
        }
        None => write_queued(&mut BackupSink::new(w, dimension)?, rx),
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Vector;

    fn space() -> Space {
        crate::embed::test_space(3)
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        word: &str,
        theme: Option<&str>,
        word_type: Option<&str>,
        similarity: Option<f32>,
        timestamp: Option<&str>,
        v: [f32; 3],
    ) -> Row {
        Row {
            key: crate::cache::key(word),
            word: word.into(),
            theme: theme.map(Into::into),
            word_type: word_type.map(Into::into),
            similarity,
            timestamp: timestamp.map(Into::into),
            vector: Vector::from(v.to_vec()),
        }
    }

    /// Reads a backup CSV as the original's `SharedEmbeddingCache._load_from_csv` does, and
    /// prints what it loaded (floats as `repr`, exact) as JSON.
    const LOAD_FROM_CSV: &str = r#"
import csv, json, sys, time
entries, skipped = {}, 0
with open(sys.argv[1], 'r', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    for row in reader:
        try:
            word = row['word']
            embedding = []
            for key, value in row.items():
                if key.startswith('embedding_dim_'):
                    embedding.append(float(value))
            if not embedding:
                skipped += 1
                continue
            entries[word.lower().strip()] = {
                'word': word,
                'embedding': [repr(x) for x in embedding],
                'timestamp': repr(float(row.get('timestamp', time.time()))),
                'theme': row.get('theme') if row.get('theme') else None,
                'word_type': row.get('word_type') if row.get('word_type') else None,
                'similarity_to_theme': repr(float(row['similarity_to_theme'])) if row.get('similarity_to_theme') else None,
            }
        except Exception as e:
            skipped += 1
print(json.dumps({'entries': entries, 'skipped': skipped}))
"#;

    fn load_from_csv(path: &std::path::Path) -> serde_json::Value {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(LOAD_FROM_CSV)
            .arg(path)
            .output()
            .expect("python3 is needed for this test (it reads the file as the original does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn now() -> f64 {
        crate::clock::unix_seconds()
    }

    /// The rows in the database before the backup starts: a timestamp as ISO 8601, as UNIX
    /// seconds and none; quotes, commas and doubled spaces; extreme and subnormal floats.
    fn stored_rows() -> [Row; 3] {
        [
            row(
                "Mercury",
                Some("Planets"),
                Some("candidate"),
                Some(0.5),
                Some("2025-11-27T14:29:38Z"),
                [0.1, -1e-7, 3.402_823_5e38],
            ),
            row(
                "New York, NY",
                Some("Cities \"big\""),
                Some("candidate"),
                Some(0.123_456_79),
                Some("1735689600.5"),
                [f32::MIN_POSITIVE, 1e-45, -0.0],
            ),
            row(
                "Rivers  of Europe",
                Some("Rivers  of Europe"),
                Some("theme"),
                None,
                None,
                [0.333_333_34, -0.999_999_94, 16_777_216.0],
            ),
        ]
    }

    /// Checks that the original loaded `r` from the backup exactly: every field, the vector
    /// bit for bit, and the timestamp (the time of writing, between `started` and `finished`,
    /// when `r` has none or an unreadable one).
    fn assert_loaded_as_stored(loaded: &serde_json::Value, r: &Row, started: f64, finished: f64) {
        let entries = loaded["entries"].as_object().unwrap();
        let float = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
        let key = r.word.to_lowercase().trim().to_owned();
        let e = &entries
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} missing: {loaded}"));
        assert_eq!(e["word"], r.word.as_str());
        assert_eq!(e["theme"].as_str(), r.theme.as_deref());
        assert_eq!(e["word_type"].as_str(), r.word_type.as_deref());
        assert_eq!(
            e["similarity_to_theme"]
                .as_str()
                .map(|s| s.parse::<f64>().unwrap() as f32),
            r.similarity,
            "{key:?}"
        );
        let back: Vec<u32> = e["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (float(x) as f32).to_bits())
            .collect();
        let want: Vec<u32> = r.vector.iter().map(|x| x.to_bits()).collect();
        assert_eq!(back, want, "{key:?}");
        let ts = float(&e["timestamp"]);
        match r.timestamp.as_deref() {
            Some("2025-11-27T14:29:38Z") => assert_eq!(ts, 1_764_253_778.0),
            Some("1735689600.5") => assert_eq!(ts, 1_735_689_600.5),
            Some("1764253778.123456") => assert_eq!(ts, 1_764_253_778.123_456),
            // None (stored: the database's time, whole seconds) or unreadable ("t"): now.
            _ => assert!(
                ts >= started.floor() - 1.0 && ts <= finished + 1.0,
                "{key:?}: {ts}"
            ),
        }
    }

    /// The first `records` CSV records of `text` (all of it if it has fewer).
    fn first_records(text: &str, records: usize) -> String {
        // Records end with "\n" outside quotes (one word holds a quoted newline).
        let mut quoted = false;
        let mut seen = 0;
        for (i, c) in text.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '\n' if !quoted => {
                    seen += 1;
                    if seen == records {
                        return text[..=i].to_owned();
                    }
                }
                _ => {}
            }
        }
        text.to_owned()
    }

    #[test]
    fn the_original_reads_back_every_key_once_with_exact_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.sqlite3");
        let started = now();
        let stored = stored_rows();
        let mut store = Store::open(&db).unwrap();
        assert_eq!(store.put(&space(), &stored, &[]).unwrap(), 3);

        let out = dir.path().join("out/all_embeddings.csv");
        let writer = BackupCsvWriter::start(Some(db.clone()), space(), out.clone()).unwrap();
        // Committed after start() returned: not part of the database rows written.
        let late = row("Late", None, None, None, None, [7.0; 3]);
        store
            .put(&space(), std::slice::from_ref(&late), &[])
            .unwrap();

        let venus = row("Venus", None, None, None, None, [0.25, 1.5, -2.0]);
        let creme = row(
            "crème, \"brûlée\"\nx",
            Some("Desserts"),
            Some("candidate"),
            Some(-0.0625),
            Some("t"),
            [1.0, 2.0, 3.0],
        );
        writer.add(vec![
            row(" MERCURY ", None, None, None, None, [9.0; 3]),
            venus.clone(),
            creme.clone(),
        ]);
        writer.add(vec![row("venus", None, None, None, None, [9.0; 3])]);
        let saturn = row(
            "Saturn",
            Some("Planets"),
            Some("candidate"),
            Some(0.75),
            Some("1764253778.123456"),
            [-0.5, 0.5, 1e-3],
        );
        let (written, staged) = writer
            .finish(vec![
                row("VENUS", None, None, None, None, [9.0; 3]),
                saturn.clone(),
            ])
            .unwrap();
        assert!(!out.exists(), "staged, not yet in place");
        staged.commit().unwrap();
        let finished = now();
        assert_eq!(written, 6);

        let loaded = load_from_csv(&out);
        assert_eq!(loaded["skipped"], 0, "{loaded}");
        let entries = loaded["entries"].as_object().unwrap();
        let expected = [&stored[0], &stored[1], &stored[2], &venus, &creme, &saturn];
        assert_eq!(entries.len(), expected.len(), "{loaded}");
        for r in expected {
            assert_loaded_as_stored(&loaded, r, started, finished);
        }

        // `cache export` writes the database rows exactly as the backup writer did.
        let exported = dir.path().join("export.csv");
        assert_eq!(csv::export(&store, &space(), &exported).unwrap(), 4);
        let exported = std::fs::read_to_string(&exported).unwrap();
        let backup = std::fs::read_to_string(&out).unwrap();
        assert_eq!(first_records(&backup, 4), first_records(&exported, 4));
        assert!(exported.contains("\nLate,,,,"), "{exported}");
        assert!(!backup.contains("Late"), "{backup}");
    }

    #[test]
    fn without_a_database_only_the_rows_given_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.csv");
        let writer = BackupCsvWriter::start(None, space(), out.clone()).unwrap();
        writer.add(vec![row("a", None, None, None, Some("1.5"), [1.0; 3])]);
        let (n, staged) = writer.finish(Vec::new()).unwrap();
        assert_eq!(n, 1);
        staged.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2,\
             embedding_dim_3\na,,,,1.5,1,1,1\n"
        );
        let e = BackupCsvWriter::start(Some(dir.path().join("missing.sqlite3")), space(), out)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing.sqlite3"), "{e}");
    }

    #[test]
    fn a_database_that_cannot_be_read_to_the_end_leaves_the_old_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.sqlite3");
        let space = crate::embed::test_space(768);
        {
            let mut store = Store::open(&db).unwrap();
            let rows: Vec<Row> = (0..40)
                .map(|i| Row {
                    key: format!("w{i}"),
                    word: format!("w{i}"),
                    theme: None,
                    word_type: None,
                    similarity: None,
                    timestamp: None,
                    vector: Vector::from(vec![0.5f32; 768]),
                })
                .collect();
            store.put(&space, &rows, &[]).unwrap();
        }
        // One row per page: garbage over pages in the middle, not the first ones.
        let mut bytes = std::fs::read(&db).unwrap();
        let middle = bytes.len() / 2 / 4096 * 4096;
        bytes[middle..middle + 4 * 4096].fill(0xab);
        std::fs::write(&db, &bytes).unwrap();
        let out = dir.path().join("all_embeddings.csv");
        std::fs::write(&out, "the old file\n").unwrap();
        let writer = BackupCsvWriter::start(Some(db.clone()), space.clone(), out.clone()).unwrap();
        writer.add(vec![Row {
            key: "new".into(),
            word: "new".into(),
            theme: None,
            word_type: None,
            similarity: None,
            timestamp: None,
            vector: Vector::from(vec![0.5f32; 768]),
        }]);
        let (n, staged) = writer.finish(Vec::new()).unwrap();
        staged.commit().unwrap();
        assert_eq!(n, 0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "the old file\n");
    }
}
