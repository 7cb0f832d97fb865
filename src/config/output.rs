//! Every path a run reads or writes: the outputs, reports and cache folders, the CSVs, the
//! cache database and the review page ([`OutputSettings`]: `paths`, `output`, `cache`,
//! `--out`), and the themes and candidates files (`paths.themes`, `paths.candidates`).

use std::path::{Path, PathBuf};

use super::validate::Validator;
use super::{ConfigError, Overrides, raw};

/// Output files and their precision (`output` + `paths`), all resolved to paths.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub outputs_dir: PathBuf,
    pub reports_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub csv_precision: usize,
    /// The embedding cache database (`cache.path`, default `<paths.cache>/embeddings.sqlite3`).
    pub cache_db: PathBuf,
    pub embedding_cache_file: PathBuf,
    pub puzzle_embeddings_file: PathBuf,
    /// The review page (`output.review_page`, default `<paths.reports>/puzzles.html`).
    pub review_page: PathBuf,
}

impl OutputSettings {
    /// Resolves `paths` (all but the input files), `output` and `cache`; `--out DIR` takes the
    /// place of `paths.outputs` and `paths.reports` and holds the puzzle embeddings CSV.
    pub(super) fn resolve(
        v: &Validator,
        p: &raw::Params,
        o: &Overrides,
    ) -> Result<OutputSettings, ConfigError> {
        let outputs_dir = outputs_dir(v, &p.paths, o)?;
        let reports_dir = match (&o.out, &p.paths.reports) {
            (Some(out), _) => out.join("reports"),
            (None, Some(dir)) => PathBuf::from(v.non_empty("paths.reports", dir)?),
            (None, None) => outputs_dir.join("reports"),
        };
        let cache_dir = match &p.paths.cache {
            Some(dir) => PathBuf::from(v.non_empty("paths.cache", dir)?),
            None => PathBuf::from("cache"),
        };
        let out = &p.output;
        let csv_precision = csv_precision(v, out)?;
        // As in the original, both CSV paths are used as written (relative to the working
        // directory), not joined with `paths.*`; only their defaults live under `paths.*`.
        let embedding_cache_file = match &out.embedding_cache_file {
            Some(file) => PathBuf::from(v.non_empty("output.embedding_cache_file", file)?),
            None => cache_dir.join("all_embeddings.csv"),
        };
        let puzzle_embeddings_file = puzzle_embeddings_file(v, p, o, &outputs_dir)?;
        let cache_db = cache_db(v, &p.cache, &cache_dir)?;
        let review_page = review_page(v, o, &out.review_page, &reports_dir)?;
        Ok(OutputSettings {
            outputs_dir,
            reports_dir,
            cache_dir,
            csv_precision,
            cache_db,
            embedding_cache_file,
            puzzle_embeddings_file,
            review_page,
        })
    }
}

/// `output.review_page` (as written, relative to the working directory; only its file name
/// kept under `--out DIR`, in `DIR/reports`), else `puzzles.html` in the reports folder.
fn review_page(
    v: &Validator,
    o: &Overrides,
    value: &Option<String>,
    reports_dir: &Path,
) -> Result<PathBuf, ConfigError> {
    const NAME: &str = "puzzles.html";
    Ok(match (&o.out, value) {
        (Some(_), Some(file)) => reports_dir.join(
            Path::new(&v.non_empty("output.review_page", file)?)
                .file_name()
                .unwrap_or(std::ffi::OsStr::new(NAME)),
        ),
        (None, Some(file)) => PathBuf::from(v.non_empty("output.review_page", file)?),
        (_, None) => reports_dir.join(NAME),
    })
}

/// The folder of `final_puzzles.json`: `--out`, else `paths.outputs` (required).
fn outputs_dir(v: &Validator, paths: &raw::Paths, o: &Overrides) -> Result<PathBuf, ConfigError> {
    match (&o.out, &paths.outputs) {
        (Some(out), _) => Ok(out.clone()),
        (None, Some(dir)) => Ok(PathBuf::from(v.non_empty("paths.outputs", dir)?)),
        (None, None) => Err(v.invalid(
            "paths.outputs",
            "a directory for final_puzzles.json (or --out DIR)",
            "nothing",
        )),
    }
}

/// `output.csv_precision`: decimals written in the CSVs, 0 to 17 (default 6).
fn csv_precision(v: &Validator, out: &raw::Output) -> Result<usize, ConfigError> {
    let csv_precision = v.at_least("output.csv_precision", out.csv_precision.unwrap_or(6), 0)?;
    if csv_precision > 17 {
        return Err(v.invalid(
            "output.csv_precision",
            "a number of decimals from 0 to 17",
            &csv_precision.to_string(),
        ));
    }
    Ok(csv_precision)
}

/// `output.puzzle_embeddings_file` (only its file name kept under `--out DIR`), else
/// `puzzle_embeddings.csv` in `--out`, `paths.embeddings` or the outputs folder.
fn puzzle_embeddings_file(
    v: &Validator,
    p: &raw::Params,
    o: &Overrides,
    outputs_dir: &Path,
) -> Result<PathBuf, ConfigError> {
    Ok(match (&o.out, &p.output.puzzle_embeddings_file) {
        (Some(dir), Some(file)) => dir.join(
            Path::new(&v.non_empty("output.puzzle_embeddings_file", file)?)
                .file_name()
                .unwrap_or(std::ffi::OsStr::new("puzzle_embeddings.csv")),
        ),
        (None, Some(file)) => PathBuf::from(v.non_empty("output.puzzle_embeddings_file", file)?),
        (Some(dir), None) => dir.join("puzzle_embeddings.csv"),
        (None, None) => match &p.paths.embeddings {
            Some(dir) => PathBuf::from(v.non_empty("paths.embeddings", dir)?),
            None => outputs_dir.to_owned(),
        }
        .join("puzzle_embeddings.csv"),
    })
}

/// The embedding cache database (`cache.path`, default `<paths.cache>/embeddings.sqlite3`).
fn cache_db(v: &Validator, c: &raw::Cache, cache_dir: &Path) -> Result<PathBuf, ConfigError> {
    Ok(match &c.path {
        Some(file) => PathBuf::from(v.non_empty("cache.path", file)?),
        None => cache_dir.join("embeddings.sqlite3"),
    })
}

/// The themes and candidates files (`paths.themes`, `paths.candidates`; `--themes` and
/// `--candidates` first), a folder standing for the original's file inside it.
pub(super) fn input_files(
    v: &Validator,
    paths: &raw::Paths,
    o: &Overrides,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let themes_file = v.input_path(
        "paths.themes",
        "--themes",
        THEMES_FILE_NAME,
        &o.themes,
        &paths.themes,
    )?;
    let candidates_file = v.input_path(
        "paths.candidates",
        "--candidates",
        CANDIDATES_FILE_NAME,
        &o.candidates,
        &paths.candidates,
    )?;
    Ok((themes_file, candidates_file))
}

/// The themes file the original reads inside the `paths.themes` folder.
pub const THEMES_FILE_NAME: &str = "selected_themes.json";
/// The candidates file the original reads inside the `paths.candidates` folder.
pub const CANDIDATES_FILE_NAME: &str = "candidate_words.json";
