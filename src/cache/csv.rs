//! The Python pipeline's cache CSVs, in and out.
//!
//! Two layouts exist in users' hands, told apart by their header:
//!
//! - backup: `word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N`
//!   (`SharedEmbeddingCache`'s periodic backup; what `cache export` and
//!   [`BackupCsvWriter`](super::backup_csv::BackupCsvWriter) write);
//! - theme: `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`
//!   (`output.embedding_cache_file` / `output.puzzle_embeddings_file`).
//!
//! Columns are found by name, so a file missing the optional ones (`theme`, `word_type`,
//! `similarity_to_theme`, `timestamp`, `rank`) or holding them in another order still reads.
//! Only `word` and `embedding_dim_1..N` are required. A row that cannot be read (wrong number
//! of fields, a value that is not a number) is reported with its line number and skipped; the
//! good rows are kept.
//!
//! Written backup files are read back by the original with Python's `csv.DictReader`,
//! `float()` of every `embedding_dim_*` and of `timestamp` (a row where either fails is
//! skipped), keyed by `word.lower().strip()`. So: one row per key (the first), vector values in
//! full precision (the shortest text that reads back as the same f32), `timestamp` in UNIX
//! seconds (see [`backup_timestamp`]).

use std::collections::HashSet;
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
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CsvError {
    /// True when the file named is at fault (missing, unreadable as a cache CSV, damaged).
    pub fn is_user_error(&self) -> bool {
        match self {
            CsvError::Store(e) => e.is_user_error(),
            CsvError::Write { .. } => false,
            _ => true,
        }
    }
}

impl From<crate::fsx::WriteError> for CsvError {
    fn from(e: crate::fsx::WriteError) -> Self {
        CsvError::Write {
            path: e.path,
            source: e.source,
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
                .ok_or_else(|| {
                    format!(
                        "embedding_dim_{}: expected a finite number, got {:?}",
                        k + 1,
                        String::from_utf8_lossy(field)
                    )
                })?;
            vector.push(x);
        }
        // Checked as an API answer is: a vector every text would score 0 (or NaN) against
        // would have groups chosen at random.
        crate::embed::check_vector(&vector, self.dims.len())?;
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

/// Line numbers of byte offsets in a file, for the few rows that are reported. The csv crate's
/// own line count is off after a CRLF or a blank line, so lines are counted here, reading the
/// file forward once however many rows are asked about (in increasing order).
struct LineCounter {
    reader: std::io::BufReader<std::fs::File>,
    at: u64,
    line: u64,
}

impl LineCounter {
    fn open(path: &Path) -> std::io::Result<LineCounter> {
        Ok(LineCounter {
            reader: std::io::BufReader::new(std::fs::File::open(path)?),
            at: 0,
            line: 1,
        })
    }

    /// The 1-based line holding byte `offset` (offsets asked in increasing order).
    fn line_of(&mut self, offset: u64) -> u64 {
        use std::io::BufRead;
        while self.at < offset {
            let Ok(buf) = self.reader.fill_buf() else {
                break;
            };
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min((offset - self.at) as usize);
            self.line += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.at += n as u64;
            self.reader.consume(n);
        }
        // The csv crate may place a record at the line end before it (a CRLF's `\n`, blank
        // lines): the record starts at the first byte that is not a line end.
        while let Ok(buf) = self.reader.fill_buf() {
            let n = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if n == 0 {
                break;
            }
            self.line += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.at += n as u64;
            self.reader.consume(n);
        }
        self.line
    }
}

/// The 1-based line of byte `offset` of `path` (0 when the file cannot be read again).
fn line_of_byte(path: &Path, offset: u64) -> u64 {
    LineCounter::open(path).map_or(0, |mut c| c.line_of(offset))
}

fn read_error(path: &Path, e: csv::Error) -> CsvError {
    let line = e
        .position()
        .map(|p| line_of_byte(path, p.byte()))
        .unwrap_or(0);
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
    // Opened at the first bad row: the line numbers of the rows reported.
    let mut lines: Option<LineCounter> = None;
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
        for (byte, row) in parsed {
            report.rows += 1;
            match row {
                Ok(row) => rows.push(row),
                Err(reason) => {
                    if lines.is_none() {
                        lines = Some(LineCounter::open(path).map_err(|source| CsvError::Read {
                            path: path.to_owned(),
                            source,
                        })?);
                    }
                    let line = lines.as_mut().map_or(0, |l| l.line_of(byte));
                    report.bad.push(BadRow { line, reason })
                }
            }
        }
    }
    Ok(report)
}

/// Reads up to [`CHUNK`] records and parses them in parallel: each with its byte offset.
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
            let byte = r.position().map(|p| p.byte()).unwrap_or(0);
            (byte, columns.parse(r))
        })
        .collect())
}

/// The leading columns of the Python pipeline's cache backup layout (the cache CSV).
pub const BACKUP_COLUMNS: [&str; 5] = [
    "word",
    "theme",
    "word_type",
    "similarity_to_theme",
    "timestamp",
];

/// The leading columns of the pipeline's output layout (`output.puzzle_embeddings_file`, and
/// older cache CSVs).
pub const OUTPUT_COLUMNS: [&str; 5] = ["theme", "word", "word_type", "similarity_to_theme", "rank"];

/// A header: the `leading` columns, then `embedding_dim_1..dimension`.
pub fn header(leading: &[&str], dimension: usize) -> Vec<String> {
    leading
        .iter()
        .map(|c| c.to_string())
        .chain((1..=dimension).map(|d| format!("embedding_dim_{d}")))
        .collect()
}

/// Rows formatted per parallel task.
const FORMAT_CHUNK: usize = 64;

/// Rows read from the database before they are formatted (in parallel) and written.
pub(crate) const READ_CHUNK: usize = 1024;

/// Writes a backup-layout CSV: the header, then rows, each key ([`super::key`] of `word`)
/// once, the first row given for it. The one writer of the layout, shared by `cache export`,
/// the rescue file and [`BackupCsvWriter`](super::backup_csv::BackupCsvWriter).
pub(crate) struct BackupSink<'w> {
    out: &'w mut dyn Write,
    seen: HashSet<String>,
    written: u64,
}

impl<'w> BackupSink<'w> {
    /// Starts the file: writes the header.
    pub(crate) fn new(out: &'w mut dyn Write, dimension: usize) -> std::io::Result<Self> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(header(&BACKUP_COLUMNS, dimension))?;
        out.write_all(
            &csv.into_inner()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        )?;
        Ok(BackupSink {
            out,
            seen: HashSet::new(),
            written: 0,
        })
    }

    /// Writes the rows of keys not written yet (formatted in parallel, written in order).
    pub(crate) fn write<'r>(
        &mut self,
        rows: impl IntoIterator<Item = &'r Row>,
    ) -> std::io::Result<()> {
        let fresh: Vec<&Row> = rows
            .into_iter()
            .filter(|r| self.seen.insert(super::key(&r.word)))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let now = crate::clock::unix_seconds();
        let blocks = fresh
            .par_chunks(FORMAT_CHUNK)
            .map(|chunk| format_backup_rows(chunk, now))
            .collect::<std::io::Result<Vec<Vec<u8>>>>()?;
        for b in blocks {
            self.out.write_all(&b)?;
        }
        self.written += fresh.len() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }
}

/// Formats rows in the backup layout (no header); values in full precision: `{x}`, the
/// shortest text that reads back as the same f32 (a faster formatter was measured and is not
/// byte-identical: it breaks ties between two shortest texts differently).
fn format_backup_rows(rows: &[&Row], now: f64) -> std::io::Result<Vec<u8>> {
    use std::fmt::Write as _;
    let width: usize = rows.first().map_or(0, |r| r.vector.len()) * 12 + 64;
    let mut csv = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * width));
    let mut number = String::new();
    for r in rows {
        let opt = |s: &Option<String>| s.as_deref().unwrap_or("").to_owned();
        csv.write_field(&r.word)?;
        csv.write_field(opt(&r.theme))?;
        csv.write_field(opt(&r.word_type))?;
        number.clear();
        if let Some(s) = r.similarity {
            let _ = write!(number, "{s}");
        }
        csv.write_field(&number)?;
        csv.write_field(backup_timestamp(r.timestamp.as_deref(), now))?;
        for x in r.vector.iter() {
            number.clear();
            let _ = write!(number, "{x}");
            csv.write_field(&number)?;
        }
        csv.write_record(None::<&[u8]>)?;
    }
    csv.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The backup's `timestamp` field: UNIX seconds with a fractional part, which the original
/// reads with Python's `float()` (a row where that fails is skipped). A stored number (the
/// original's own `time.time()`, imported) is kept as written; an ISO 8601 time (what the
/// database stores, `2025-11-27T14:29:38Z`) is converted; anything else, or none, is `now`.
pub fn backup_timestamp(stored: Option<&str>, now: f64) -> String {
    if let Some(s) = stored {
        let t = s.trim();
        if t.parse::<f64>().is_ok() {
            return s.to_owned();
        }
        if let Some(secs) = parse_iso8601(t) {
            return format!("{secs:.6}");
        }
    }
    format!("{now:.6}")
}

/// Seconds since the UNIX epoch of `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|+HH:MM|-HH:MM]` (no zone:
/// UTC, as SQLite reads it), `None` if `s` is not of that form.
fn parse_iso8601(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(at(4, b'-') && at(7, b'-') && (at(10, b'T') || at(10, b' ')) && at(13, b':')) {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0.0;
    if at(i, b':') {
        second = num(i + 1, 2)? as f64;
        i += 3;
        if at(i, b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            second += std::str::from_utf8(&b[i..i + 1 + digits])
                .ok()?
                .parse::<f64>()
                .ok()?;
            i += 1 + digits;
        }
    }
    let offset = match b.get(i) {
        None => 0,
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b':') => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if sign == b'+' { m * 60 } else { -m * 60 }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second >= 61.0 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 - offset) as f64 + second)
}

/// Writes `rows` to `path` in the backup layout (atomically: complete or not at all), each
/// key once.
pub fn write_backup<'a>(
    path: &Path,
    dimension: usize,
    rows: impl IntoIterator<Item = &'a Row>,
) -> std::io::Result<()> {
    crate::fsx::write_atomic(path, |w| BackupSink::new(w, dimension)?.write(rows))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Writes every row of `space` in `store` (one per key, the oldest) to `path` in the backup
/// layout, as [`BackupCsvWriter`](super::backup_csv::BackupCsvWriter) does; returns the count.
pub fn export(store: &Store, space: &Space, path: &Path) -> Result<u64, CsvError> {
    let mut count = 0;
    let mut failure = None;
    crate::fsx::write_atomic(path, |w| {
        let mut sink = BackupSink::new(w, space.dimension)?;
        match write_store_rows(&mut sink, store, space) {
            Ok(()) => {
                count = sink.written();
                Ok(())
            }
            Err(e) => Err(match e {
                CsvError::Write { source, .. } => source,
                other => {
                    failure = Some(other);
                    std::io::Error::other("reading the cache failed")
                }
            }),
        }
    })
    .map_err(|e| failure.take().unwrap_or_else(|| e.into()))?;
    Ok(count)
}

/// Every row of `space` in `store` into `sink`, read and written in chunks. A write error comes
/// back as [`CsvError::Write`] (with an empty path), a read error as [`CsvError::Store`].
pub(crate) fn write_store_rows(
    sink: &mut BackupSink<'_>,
    store: &Store,
    space: &Space,
) -> Result<(), CsvError> {
    let mut chunk: Vec<Row> = Vec::with_capacity(READ_CHUNK);
    let mut write_error = None;
    let read = store.for_each_row(space, |r| {
        chunk.push(r);
        if chunk.len() == READ_CHUNK {
            let rows = std::mem::take(&mut chunk);
            if let Err(e) = sink.write(&rows) {
                write_error = Some(std::io::Error::new(e.kind(), e.to_string()));
                return Err(e);
            }
        }
        Ok(())
    });
    let as_write = |source| CsvError::Write {
        path: PathBuf::new(),
        source,
    };
    if let Some(e) = write_error {
        return Err(as_write(e));
    }
    read?;
    sink.write(&chunk).map_err(as_write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(dimension: usize) -> Space {
        crate::embed::test_space(dimension)
    }

    /// Imports `text` (2 dimensions): rows added, and the refused rows' lines and reasons.
    fn import_text(text: &str) -> (u64, Vec<(u64, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("in.csv");
        std::fs::write(&csv, text).unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite3")).unwrap();
        let r = import(&csv, &mut store, &space(2)).unwrap();
        (
            r.added,
            r.bad.into_iter().map(|b| (b.line, b.reason)).collect(),
        )
    }

    #[test]
    fn zero_vectors_are_refused_and_lines_counted_from_the_header_as_1() {
        let (added, bad) = import_text(
            "word,embedding_dim_1,embedding_dim_2\r\nzero,0,0.0\r\n\r\ngood,0.5,1\r\nbad,x,1\r\n",
        );
        assert_eq!(added, 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].0, 2, "{bad:?}");
        assert!(bad[0].1.starts_with("all-zero vector"), "{bad:?}");
        assert_eq!(bad[1].0, 5, "{bad:?}");
    }

    #[test]
    fn rows_an_api_answer_would_be_refused_for_are_refused_with_their_line() {
        let (added, bad) = import_text(
            "word,embedding_dim_1,embedding_dim_2\nabsurd,1e30,1e30\ninf,inf,1\ngood,0.5,1\n",
        );
        assert_eq!(added, 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].0, 2);
        assert!(bad[0].1.contains("absurd"), "{bad:?}");
        assert_eq!(
            bad[1],
            (3, "embedding_dim_1 is inf, not a finite number".into())
        );
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
                timestamp: Some("2025-01-02T03:04:05Z".into()),
                // Large but scorable (f32::MAX would be refused on import: its square overflows).
                vector: Vector::from(vec![0.1f32, -1.0e-7, 1.0e19]),
            },
            Row {
                key: "café".into(),
                word: "café".into(),
                theme: None,
                word_type: None,
                similarity: None,
                timestamp: Some("1735689600.5".into()),
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
        // Times come back in UNIX seconds, as the original writes and reads them.
        let mut expected = rows;
        expected[0].timestamp = Some("1735787045.000000".into());
        assert_eq!(back, expected);
    }

    #[test]
    fn backup_timestamps_are_unix_seconds_the_original_can_read_with_float() {
        let now = 1_764_253_778.5;
        let t = |s: Option<&str>| backup_timestamp(s, now);
        assert_eq!(t(Some("2025-11-27T14:29:38Z")), "1764253778.000000");
        assert_eq!(t(Some("1969-07-20 20:17:40")), "-14182940.000000");
        assert_eq!(t(Some("2024-02-29T23:59:59.25")), "1709251199.250000");
        assert_eq!(t(Some("2025-11-27T16:29:38+02:00")), "1764253778.000000");
        assert_eq!(t(Some("2025-11-27T14:29")), "1764253740.000000");
        // Numbers (the original's own time.time()) are kept as written.
        assert_eq!(t(Some("1735689600.5")), "1735689600.5");
        assert_eq!(t(Some(" 17e8 ")), " 17e8 ");
        // Anything else is now: a row the original could not read would be lost to it.
        for bad in [
            "t",
            "",
            "2025-02-29T00:00:00Z",
            "2025-11-27T24:00:00Z",
            "2025-11-27T14:29:38Zjunk",
            "2025-11-27",
        ] {
            assert_eq!(t(Some(bad)), "1764253778.500000", "{bad:?}");
        }
        assert_eq!(t(None), "1764253778.500000");
    }
}
