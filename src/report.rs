//! Output files, with the Python pipeline's names and shapes, each written atomically.
//!
//! - `<paths.outputs>/final_puzzles.json`
//! - `<paths.outputs>/puzzle_metadata.json`
//! - `<paths.reports>/embedding_analysis.json`
//! - `<paths.cache>/<output.embedding_cache_file>`: every processed theme and candidate
//! - `<paths.outputs>/<output.puzzle_embeddings_file>`: the words of every finished puzzle
//!
//! The CSVs have the header `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`
//! with values rounded to `output.csv_precision`. Every file goes to a temporary file in the
//! same directory first and is renamed over the target only when complete, so a crash never
//! leaves a half-written output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::assemble::Puzzle;
use crate::config::Config;
use crate::embed::Space;
use crate::embed::service::ServiceStats;
use crate::plan::Plan;
use crate::theme::ThemeResult;

/// Writing an output failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {source}")]
pub struct OutputError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A puzzle that could not be made, as listed in `puzzle_metadata.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedPuzzle {
    pub puzzle_id: String,
    pub themes: Vec<String>,
    pub error: String,
}

/// A failed theme replaced by a spare one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replacement {
    pub puzzle_id: String,
    pub failed_theme: String,
    pub reason: String,
    pub spare_theme: String,
}

/// A theme that could not be used, with the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedTheme {
    pub theme: String,
    pub error: String,
}

/// Everything a run produced, as the reports need it.
pub struct RunRecord<'a> {
    pub config: &'a Config,
    pub plan: &'a Plan,
    pub space: &'a Space,
    pub puzzles: &'a [Puzzle],
    pub failed_puzzles: &'a [FailedPuzzle],
    /// Every theme processed successfully, in processing order.
    pub themes_ok: &'a [&'a ThemeResult],
    pub themes_failed: &'a [FailedTheme],
    pub replacements: &'a [Replacement],
    pub stats: &'a ServiceStats,
    pub elapsed: Duration,
}

impl RunRecord<'_> {
    pub fn texts_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.texts_embedded as f64 / secs
        } else {
            0.0
        }
    }
}

/// Writes the output files of a run, all but the theme CSV ([`ThemeCsvWriter`]). Returns the
/// paths of all five.
pub fn write_all(r: &RunRecord) -> Result<Vec<PathBuf>, OutputError> {
    let out = &r.config.output;
    let precision = out.csv_precision;
    let files = vec![
        out.outputs_dir.join("final_puzzles.json"),
        out.outputs_dir.join("puzzle_metadata.json"),
        out.reports_dir.join("embedding_analysis.json"),
        out.embedding_cache_file.clone(),
        out.puzzle_embeddings_file.clone(),
    ];
    write_json(&files[0], &final_puzzles(r.puzzles))?;
    write_json(&files[1], &metadata(r))?;
    write_json(&files[2], &analysis(r))?;
    // files[3], the theme CSV, is written during the run by a ThemeCsvWriter.
    let puzzle_blocks: Vec<Block> = r
        .puzzles
        .iter()
        .flat_map(|p| {
            p.groups.iter().map(|g| {
                let theme = r
                    .themes_ok
                    .iter()
                    .find(|t| t.theme == g.theme)
                    .expect("every group comes from a processed theme");
                Block {
                    theme: &g.theme,
                    vector: &theme.vector,
                    words: &g.words,
                }
            })
        })
        .collect();
    write_csv(&files[4], r.space.dimension, precision, &puzzle_blocks)?;
    Ok(files)
}

/// Rounds to six decimals so JSON shows `0.8123` rather than an f32's binary tail.
fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// `{"puzzle_1": {"words": [16], "theme_similarity_scores": [16], "themes": [4], ...}}`.
pub fn final_puzzles(puzzles: &[Puzzle]) -> Value {
    let mut all = Map::new();
    for p in puzzles {
        let words: Vec<&str> = p
            .groups
            .iter()
            .flat_map(|g| g.words.iter().map(|w| w.word.as_str()))
            .collect();
        let scores: Vec<f64> = p
            .groups
            .iter()
            .flat_map(|g| g.words.iter().map(|w| round6(w.similarity)))
            .collect();
        let themes: Vec<&str> = p.groups.iter().map(|g| g.theme.as_str()).collect();
        all.insert(
            format!("puzzle_{}", p.id),
            json!({
                "words": words,
                "theme_similarity_scores": scores,
                "themes": themes,
                "all_candidates": [],
                "all_similarities": scores,
                "quality": { "min_margin": round6(p.min_margin) },
            }),
        );
    }
    Value::Object(all)
}

fn metadata(r: &RunRecord) -> Value {
    let c = r.config;
    json!({
        "total_themes_needed": r.plan.themes_needed,
        "total_themes_available": r.plan.themes_available,
        "themes_reused": r.plan.themes_reused(),
        "successful_puzzles": r.puzzles.len(),
        "failed_puzzles": r.failed_puzzles,
        "processing_time": r.elapsed.as_secs_f64(),
        "gemini_config": {
            "provider": c.provider.kind().to_string(),
            "model_id": r.space.model_id,
            "embedding_dimension": r.space.dimension,
            "task_type": r.space.task_type,
            "requests_per_minute": c.gemini.requests_per_minute,
            "min_request_interval": c.gemini.min_request_interval.as_secs_f64(),
            "max_retries": c.gemini.max_retries,
            "rpm_counts": c.gemini.rpm_counts,
            "max_concurrent_requests": c.engine.max_concurrent_requests,
        },
        "multiprocessing_stats": {
            "worker_count": c.engine.worker_count,
            "task_timeout_seconds": c.engine.task_timeout.as_secs_f64(),
            "themes_processed": r.themes_ok.len() + r.themes_failed.len(),
            "themes_succeeded": r.themes_ok.len(),
            "themes_failed": r.themes_failed.len(),
        },
        "failed_themes": r.themes_failed,
        "spare_themes_used": r.replacements,
        "embedding_stats": {
            "lookups": r.stats.lookups,
            "cache_hits": r.stats.cache_hits,
            "cache_hit_rate": r.stats.hit_rate(),
            "in_flight_hits": r.stats.in_flight_hits,
            "texts_embedded": r.stats.texts_embedded,
            "texts_sent": r.stats.texts_sent,
            "requests": r.stats.requests,
            "retries": r.stats.retries,
            "rate_limited_429": r.stats.rate_limited,
            "limiter_wait_seconds": r.stats.limiter_wait_seconds,
            "peak_concurrency": r.stats.peak_concurrency,
            "texts_per_second": r.texts_per_second(),
        },
        "puzzle_generation": {
            "total_puzzle_count": c.puzzle.total_puzzle_count,
            "words_per_theme": c.puzzle.words_per_theme,
            "themes_per_puzzle": c.puzzle.themes_per_puzzle,
            "random_seed": c.puzzle.random_seed,
        },
    })
}

/// Mean, min, max and standard deviation of `xs` (all zero when empty).
fn describe(xs: &[f64]) -> Value {
    if xs.is_empty() {
        return json!({"count": 0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0});
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({"count": xs.len(), "mean": mean, "std": var.sqrt(), "min": min, "max": max})
}

fn analysis(r: &RunRecord) -> Value {
    let selected: Vec<f64> = r
        .puzzles
        .iter()
        .flat_map(|p| p.groups.iter().flat_map(|g| g.words.iter()))
        .map(|w| f64::from(w.similarity))
        .collect();
    let candidates: Vec<f64> = r
        .themes_ok
        .iter()
        .flat_map(|t| t.ranked.iter().map(|w| f64::from(w.similarity)))
        .collect();
    let margins: Vec<f64> = r.puzzles.iter().map(|p| f64::from(p.min_margin)).collect();
    let negative = margins.iter().filter(|m| **m < 0.0).count();
    json!({
        "pipeline_info": {
            "provider": r.config.provider.kind().to_string(),
            "model_id": r.space.model_id,
            "embedding_dimension": r.space.dimension,
            "task_type": r.space.task_type,
            "puzzles_requested": r.config.puzzle.total_puzzle_count,
            "puzzles_generated": r.puzzles.len(),
            "tool": concat!("puzzlegen ", env!("CARGO_PKG_VERSION")),
        },
        "similarity_stats": {
            "selected_words": describe(&selected),
            "all_candidates": describe(&candidates),
        },
        "embedding_quality": {
            "puzzle_min_margin": describe(&margins),
            "puzzles_with_negative_margin": negative,
        },
        "performance_metrics": {
            "wall_time_seconds": r.elapsed.as_secs_f64(),
            "texts_embedded": r.stats.texts_embedded,
            "texts_per_second": r.texts_per_second(),
            "cache_hits": r.stats.cache_hits,
            "cache_hit_rate": r.stats.hit_rate(),
            "requests": r.stats.requests,
        },
    })
}

/// Writes `path` through a temporary file in the same directory, renamed into place at the end.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let err = |source| OutputError {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut w).map_err(err)?;
        w.flush().map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<(), OutputError> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        writeln!(w)
    })
}

/// A theme's rows in a CSV: the theme row (rank 0) then its words (rank 1..).
struct Block<'a> {
    theme: &'a str,
    vector: &'a crate::embed::Vector,
    words: &'a [crate::theme::ScoredWord],
}

impl<'a> Block<'a> {
    fn of(t: &'a ThemeResult) -> Block<'a> {
        Block {
            theme: &t.theme,
            vector: &t.vector,
            words: &t.ranked,
        }
    }
}

/// The CSV header: `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`.
fn write_header(w: &mut dyn Write, dimension: usize) -> std::io::Result<()> {
    let mut header = csv::Writer::from_writer(w);
    let mut names = vec![
        "theme".to_owned(),
        "word".into(),
        "word_type".into(),
        "similarity_to_theme".into(),
        "rank".into(),
    ];
    names.extend((1..=dimension).map(|d| format!("embedding_dim_{d}")));
    header.write_record(&names)?;
    header.flush()
}

/// Formats one block. Blocks are formatted in parallel: a 3072-dim run writes ~40 million
/// numbers (docs/PERFORMANCE.md).
fn format_block(b: &Block, precision: usize) -> std::io::Result<Vec<u8>> {
    let mut csv = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(
            (b.words.len() + 1) * b.vector.len() * (precision + 4),
        ));
    let mut number = String::new();
    let mut row = |theme: &str, word: &str, kind: &str, sim: f32, rank: usize, v: &[f32]| {
        csv.write_field(theme)?;
        csv.write_field(word)?;
        csv.write_field(kind)?;
        fixed(&mut number, sim, precision);
        csv.write_field(&number)?;
        csv.write_field(rank.to_string())?;
        for &x in v {
            fixed(&mut number, x, precision);
            csv.write_field(&number)?;
        }
        csv.write_record(None::<&[u8]>)
    };
    row(b.theme, b.theme, "theme", 1.0, 0, b.vector).map_err(std::io::Error::other)?;
    for (rank, w) in b.words.iter().enumerate() {
        row(
            b.theme,
            &w.word,
            "candidate",
            w.similarity,
            rank + 1,
            &w.vector,
        )
        .map_err(std::io::Error::other)?;
    }
    csv.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn write_csv(
    path: &Path,
    dimension: usize,
    precision: usize,
    blocks: &[Block],
) -> Result<(), OutputError> {
    use rayon::prelude::*;
    write_atomic(path, |w| {
        write_header(&mut *w, dimension)?;
        // Bounded memory: a few dozen blocks formatted at a time.
        for chunk in blocks.chunks(32) {
            let parts: Vec<Vec<u8>> = chunk
                .par_iter()
                .map(|b| format_block(b, precision))
                .collect::<std::io::Result<_>>()?;
            for part in parts {
                w.write_all(&part)?;
            }
        }
        Ok(())
    })
}

/// Writes `<paths.cache>/<output.embedding_cache_file>` while the run goes on: each theme's
/// block is formatted and written on a thread of its own as soon as the theme is done (in plan
/// order), so the 3072-dim export costs no time after the last answer. The file appears
/// (atomically) when [`ThemeCsvWriter::finish`] is called or the writer is dropped.
pub struct ThemeCsvWriter {
    tx: Option<std::sync::mpsc::Sender<(usize, Option<ThemeResult>)>>,
    thread: Option<std::thread::JoinHandle<Result<(), OutputError>>>,
}

impl ThemeCsvWriter {
    pub fn start(path: PathBuf, dimension: usize, precision: usize) -> ThemeCsvWriter {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<ThemeResult>)>();
        let thread = std::thread::spawn(move || {
            write_atomic(&path, |w| {
                write_header(&mut *w, dimension)?;
                let mut pending = std::collections::BTreeMap::new();
                let mut next = 0;
                let write = |w: &mut dyn Write, t: Option<ThemeResult>| match t {
                    Some(t) => w.write_all(&format_block(&Block::of(&t), precision)?),
                    None => Ok(()),
                };
                for (index, theme) in rx {
                    pending.insert(index, theme);
                    while let Some(t) = pending.remove(&next) {
                        write(&mut *w, t)?;
                        next += 1;
                    }
                }
                // Anything left (a stopped run): in order, gaps skipped.
                for (_, t) in pending {
                    write(&mut *w, t)?;
                }
                Ok(())
            })
        });
        ThemeCsvWriter {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Theme number `index` (counting every theme processed in the run, in order) is done.
    pub fn add(&self, index: usize, theme: Option<&ThemeResult>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((index, theme.cloned()));
        }
    }

    /// Writes what is left and puts the file in place.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), OutputError> {
        self.tx.take();
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }
}

impl Drop for ThemeCsvWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Writes `x` rounded to `precision` decimals into `out`, as `format!("{:.p$}")` would, but
/// with integer arithmetic: the CSVs hold millions of numbers (docs/PERFORMANCE.md).
fn fixed(out: &mut String, x: f32, precision: usize) {
    use std::fmt::Write as _;
    out.clear();
    let x = f64::from(x);
    if precision > 9 || !x.is_finite() || x.abs() >= 1e9 {
        let _ = write!(out, "{x:.precision$}");
        return;
    }
    let scale = 10u64.pow(precision as u32);
    let scaled = (x.abs() * scale as f64).round_ties_even() as u64;
    if x < 0.0 && scaled != 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", scaled / scale);
    if precision > 0 {
        let _ = write!(out, ".{:0width$}", scaled % scale, width = precision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_matches_format_rounding() {
        let mut s = String::new();
        for &(x, p) in &[
            (0.1234567f32, 6usize),
            (-0.0000004, 6),
            (-0.5, 0),
            (2.5, 0),
            (1.0, 3),
            (-12.25, 1),
            (0.999_999_7, 6),
            (3.0e-7, 6),
        ] {
            fixed(&mut s, x, p);
            let expected = format!("{:.*}", p, f64::from(x));
            // Both round to nearest; they may differ only on exact binary ties.
            let a: f64 = s.parse().unwrap();
            let b: f64 = expected.parse().unwrap();
            assert!(
                (a - b).abs() <= 0.5 * 10f64.powi(-(p as i32)) + 1e-12,
                "{x} {p}: {s} vs {expected}"
            );
            assert_eq!(s.split('.').nth(1).map_or(0, str::len), p, "{s}");
        }
        fixed(&mut s, -0.0000004, 6);
        assert_eq!(s, "0.000000");
    }

    #[test]
    fn atomic_write_leaves_the_old_file_when_filling_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.json");
        std::fs::write(&p, "old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }
}
