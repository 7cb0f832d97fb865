//! The Python pipeline's cache CSVs, in and out.
//!
//! Two layouts exist in users' hands, told apart by their header:
//!
//! - backup: `word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N`
//!   (`SharedEmbeddingCache`'s periodic backup; what `cache export` writes);
//! - theme: `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`
//!   (`output.embedding_cache_file` / `output.puzzle_embeddings_file`).
//!
//! Columns are found by name, so a file missing the optional ones (`theme`, `word_type`,
//! `similarity_to_theme`, `timestamp`, `rank`) or holding them in another order still reads.
//! Only `word` and `embedding_dim_1..N` are required. A row that cannot be read (wrong number
//! of fields, a value that is not a number) is reported with its line number and skipped; the
//! good rows are kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::store::{Row, Store, StoreError};
use crate::embed::{Space, Vector};

/// Rows parsed (in parallel) and committed per transaction.
const CHUNK: usize = 1024;

/// Which of the Python pipeline's layouts a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N`
    Backup,
    /// `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`
    Theme,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Backup => "cache backup layout (word,theme,...,timestamp,embedding_dim_*)",
            Layout::Theme => "theme layout (theme,word,...,rank,embedding_dim_*)",
        })
    }
}

/// A file that cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Header { path: PathBuf, message: String },
    #[error("{path}: line {line}: {message}")]
    Damaged {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CsvError {
    /// True when the file named is at fault (missing, unreadable as a cache CSV, damaged).
    pub fn is_user_error(&self) -> bool {
        match self {
            CsvError::Store(e) => e.is_user_error(),
            _ => true,
        }
    }
}

/// A row skipped by an import.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Debug)]
pub struct ImportReport {
    pub layout: Layout,
    /// Data rows read (good and bad).
    pub rows: u64,
    /// Rows stored that the database did not have.
    pub added: u64,
    /// Good rows whose text the database already had (the stored vector is kept).
    pub already_present: u64,
    pub bad: Vec<BadRow>,
}

/// Where each column is.
struct Columns {
    layout: Layout,
    word: usize,
    theme: Option<usize>,
    word_type: Option<usize>,
    similarity: Option<usize>,
    timestamp: Option<usize>,
    dims: Vec<usize>,
    width: usize,
}

impl Columns {
    fn of(header: &csv::ByteRecord, path: &Path, dimension: usize) -> Result<Columns, CsvError> {
        let err = |message: String| CsvError::Header {
            path: path.to_owned(),
            message,
        };
        let names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let s = String::from_utf8_lossy(f);
                let s = if i == 0 {
                    s.trim_start_matches('\u{feff}')
                } else {
                    &*s
                };
                s.trim().to_owned()
            })
            .collect();
        let find = |name: &str| names.iter().position(|n| n == name);
        let word = find("word").ok_or_else(|| {
            err(format!(
                "no `word` column in the header: expected the cache backup layout \
                 (word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N) or the \
                 theme layout (theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N), \
                 found {}",
                preview(&names)
            ))
        })?;
        let mut dims: Vec<Option<usize>> = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(k) = n.strip_prefix("embedding_dim_") {
                let k: usize = k
                    .parse()
                    .ok()
                    .filter(|&k| k >= 1)
                    .ok_or_else(|| err(format!("column {}: bad name {n:?}", i + 1)))?;
                if dims.len() < k {
                    dims.resize(k, None);
                }
                if dims[k - 1].replace(i).is_some() {
                    return Err(err(format!("column {n} appears twice")));
                }
            }
        }
        if dims.is_empty() {
            return Err(err("no embedding_dim_1..N columns in the header".into()));
        }
        if dims.len() != dimension {
            return Err(err(format!(
                "the header has embedding_dim_1..{} but the cache's dimension is {dimension} \
                 (give --dimension, or gemini.embedding_dimension in the config)",
                dims.len()
            )));
        }
        let dims = dims
            .into_iter()
            .enumerate()
            .map(|(k, i)| i.ok_or_else(|| err(format!("no embedding_dim_{} column", k + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        let layout = if find("rank").is_some() || names.first().is_some_and(|n| n == "theme") {
            Layout::Theme
        } else {
            Layout::Backup
        };
        Ok(Columns {
            layout,
            word,
            theme: find("theme"),
            word_type: find("word_type"),
            similarity: find("similarity_to_theme"),
            timestamp: find("timestamp"),
            dims,
            width: names.len(),
        })
    }

    fn parse(&self, record: &csv::ByteRecord) -> Result<Row, String> {
        if record.len() != self.width {
            return Err(format!(
                "{} fields, expected {} (as in the header)",
                record.len(),
                self.width
            ));
        }
        let text = |i: usize| {
            std::str::from_utf8(&record[i])
                .map(|s| s.to_owned())
                .map_err(|_| format!("field {} is not valid UTF-8", i + 1))
        };
        let optional = |i: Option<usize>| -> Result<Option<String>, String> {
            match i {
                None => Ok(None),
                Some(i) => text(i).map(|s| Some(s).filter(|s| !s.is_empty())),
            }
        };
        let word = text(self.word)?;
        let key = super::key(&word);
        if key.is_empty() {
            return Err("empty word".into());
        }
        let similarity = match optional(self.similarity)? {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<f32>()
                    .map_err(|_| format!("similarity_to_theme: expected a number, got {s:?}"))?,
            ),
        };
        let mut vector = Vec::with_capacity(self.dims.len());
        for (k, &i) in self.dims.iter().enumerate() {
            let field = &record[i];
            let x = std::str::from_utf8(field)
                .ok()
                .and_then(|s| s.trim().parse::<f32>().ok())
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    format!(
                        "embedding_dim_{}: expected a finite number, got {:?}",
                        k + 1,
                        String::from_utf8_lossy(field)
                    )
                })?;
            vector.push(x);
        }
        Ok(Row {
            key,
            word,
            theme: optional(self.theme)?,
            word_type: optional(self.word_type)?,
            similarity,
            timestamp: optional(self.timestamp)?,
            vector: Vector::from(vector),
        })
    }
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
    let more = if names.len() > 6 { ",..." } else { "" };
    format!("{:?}", format!("{}{more}", shown.join(",")))
}

/// Opens `path` and reads its header.
fn open(path: &Path, dimension: usize) -> Result<(csv::Reader<std::fs::File>, Columns), CsvError> {
    let file = std::fs::File::open(path).map_err(|source| CsvError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let header = reader
        .byte_headers()
        .map_err(|e| read_error(path, e))?
        .clone();
    if header.iter().all(|f| f.is_empty()) {
        return Err(CsvError::Header {
            path: path.to_owned(),
            message: "empty file: expected a header line".into(),
        });
    }
    let columns = Columns::of(&header, path, dimension)?;
    Ok((reader, columns))
}

fn read_error(path: &Path, e: csv::Error) -> CsvError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => CsvError::Read {
            path: path.to_owned(),
            source,
        },
        other => CsvError::Damaged {
            path: path.to_owned(),
            line,
            message: format!("{other:?}"),
        },
    }
}

/// The layout of `path`, checked against `dimension`, from its header alone.
pub fn inspect(path: &Path, dimension: usize) -> Result<Layout, CsvError> {
    open(path, dimension).map(|(_, columns)| columns.layout)
}

/// Reads `path` (either layout) into `store` under `space`. Each chunk of rows is its own
/// transaction, so a long import never holds the database from other processes for long.
pub fn import(path: &Path, store: &mut Store, space: &Space) -> Result<ImportReport, CsvError> {
    let (mut reader, columns) = open(path, space.dimension)?;
    let mut report = ImportReport {
        layout: columns.layout,
        rows: 0,
        added: 0,
        already_present: 0,
        bad: Vec::new(),
    };
    // Chunk n is stored while chunk n+1 is read and parsed: the SQLite write (about half the
    // work, docs/PERFORMANCE.md) overlaps the parsing.
    let mut rows: Vec<Row> = Vec::new();
    let mut done = false;
    loop {
        let (stored, next) = rayon::join(
            || store.put(space, &rows, &[]),
            || {
                if done {
                    Ok(Vec::new())
                } else {
                    next_chunk(&mut reader, &columns, path)
                }
            },
        );
        let added = stored? as u64;
        report.added += added;
        report.already_present += rows.len() as u64 - added;
        let parsed = next?;
        if parsed.is_empty() && done {
            break;
        }
        done = parsed.len() < CHUNK;
        rows = Vec::with_capacity(parsed.len());
        for (line, row) in parsed {
            report.rows += 1;
            match row {
                Ok(row) => rows.push(row),
                Err(reason) => report.bad.push(BadRow { line, reason }),
            }
        }
    }
    Ok(report)
}

/// Reads up to [`CHUNK`] records and parses them in parallel: each with its line number.
#[allow(clippy::type_complexity)]
fn next_chunk(
    reader: &mut csv::Reader<std::fs::File>,
    columns: &Columns,
    path: &Path,
) -> Result<Vec<(u64, Result<Row, String>)>, CsvError> {
    let mut chunk = Vec::with_capacity(CHUNK);
    while chunk.len() < CHUNK {
        let mut record = csv::ByteRecord::new();
        if !reader
            .read_byte_record(&mut record)
            .map_err(|e| read_error(path, e))?
        {
            break;
        }
        chunk.push(record);
    }
    Ok(chunk
        .par_iter()
        .map(|r| {
            let line = r.position().map(|p| p.line()).unwrap_or(0);
            (line, columns.parse(r))
        })
        .collect())
}

/// The backup layout's header for `dimension`.
fn backup_header(dimension: usize) -> Vec<String> {
    let mut names: Vec<String> = [
        "word",
        "theme",
        "word_type",
        "similarity_to_theme",
        "timestamp",
    ]
    .map(String::from)
    .to_vec();
    names.extend((1..=dimension).map(|d| format!("embedding_dim_{d}")));
    names
}

fn write_backup_rows<'a>(
    w: &mut dyn Write,
    dimension: usize,
    rows: impl IntoIterator<Item = &'a Row>,
) -> std::io::Result<u64> {
    let mut csv = csv::Writer::from_writer(w);
    csv.write_record(backup_header(dimension))?;
    let mut n = 0;
    for r in rows {
        write_backup_row(&mut csv, r)?;
        n += 1;
    }
    csv.flush()?;
    Ok(n)
}

/// One row; values in full precision (the shortest text that reads back as the same f32).
fn write_backup_row<W: Write>(csv: &mut csv::Writer<W>, r: &Row) -> std::io::Result<()> {
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    csv.write_field(&r.word)?;
    csv.write_field(opt(&r.theme))?;
    csv.write_field(opt(&r.word_type))?;
    csv.write_field(r.similarity.map(|s| s.to_string()).unwrap_or_default())?;
    csv.write_field(opt(&r.timestamp))?;
    let mut number = String::new();
    for x in r.vector.iter() {
        number.clear();
        std::fmt::Write::write_fmt(&mut number, format_args!("{x}")).expect("in memory");
        csv.write_field(&number)?;
    }
    csv.write_record(None::<&[u8]>)?;
    Ok(())
}

/// Writes `rows` to `path` in the backup layout (atomically: complete or not at all).
pub fn write_backup<'a>(
    path: &Path,
    dimension: usize,
    rows: impl IntoIterator<Item = &'a Row>,
) -> std::io::Result<()> {
    crate::report::write_atomic(path, |w| write_backup_rows(w, dimension, rows).map(|_| ()))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Writes every row of `space` in `store` to `path` in the backup layout; returns the count.
pub fn export(store: &Store, space: &Space, path: &Path) -> Result<u64, CsvError> {
    let mut count = 0;
    let mut failure = None;
    crate::report::write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(backup_header(space.dimension))?;
        match store.for_each_row(space, |r| write_backup_row(&mut csv, &r)) {
            Ok(n) => count = n,
            Err(e) => {
                failure = Some(e);
                return Err(std::io::Error::other("reading the cache failed"));
            }
        }
        csv.flush()
    })
    .map_err(|e| match failure.take() {
        Some(store) => CsvError::Store(store),
        None => CsvError::Read {
            path: e.path,
            source: e.source,
        },
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(dimension: usize) -> Space {
        crate::embed::test_space(dimension)
    }

    #[test]
    fn export_then_import_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Store::open(&dir.path().join("a.sqlite3")).unwrap();
        let rows = vec![
            Row {
                key: "new york, ny".into(),
                word: "New York, NY".into(),
                theme: Some("Cities \"big\"".into()),
                word_type: Some("candidate".into()),
                similarity: Some(0.123_456_79),
                timestamp: Some("2025-01-02T03:04:05".into()),
                vector: Vector::from(vec![0.1f32, -1.0e-7, 3.402_823_5e38]),
            },
            Row {
                key: "café".into(),
                word: "café".into(),
                theme: None,
                word_type: None,
                similarity: None,
                timestamp: Some("t".into()),
                vector: Vector::from(vec![1.0f32, 2.0, 3.0]),
            },
        ];
        a.put(&space(3), &rows, &[]).unwrap();
        let csv = dir.path().join("out.csv");
        assert_eq!(export(&a, &space(3), &csv).unwrap(), 2);
        let mut b = Store::open(&dir.path().join("b.sqlite3")).unwrap();
        let report = import(&csv, &mut b, &space(3)).unwrap();
        assert_eq!((report.layout, report.added), (Layout::Backup, 2));
        assert!(report.bad.is_empty());
        let mut back = Vec::new();
        b.for_each_row(&space(3), |r| {
            back.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, rows);
    }
}
