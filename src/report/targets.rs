//! Where a run's outputs may go: the output files a config names, the files they must never
//! replace (the cache database, the journal, the inputs), and the leftovers of earlier runs.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::fsx::{Target, parent, remove_stale_in, replaces, resolve_target, same_file};

/// The folder under `paths.outputs` where a run that stopped early writes its outputs.
pub const PARTIAL_DIR: &str = "partial";

/// An output that must not be written where it was asked to be.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {reason}; nothing was written")]
pub struct TargetError {
    pub key: String,
    pub path: PathBuf,
    pub reason: String,
}

/// The output files of a run, with the key or flag that places each.
pub fn outputs(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let o = &config.output;
    vec![
        ("paths.outputs", o.outputs_dir.join("final_puzzles.json")),
        ("paths.outputs", o.outputs_dir.join("puzzle_metadata.json")),
        (
            "paths.reports",
            o.reports_dir.join("embedding_analysis.json"),
        ),
        (
            "output.puzzle_embeddings_file",
            o.puzzle_embeddings_file.clone(),
        ),
        (
            "output.embedding_cache_file",
            o.embedding_cache_file.clone(),
        ),
        ("output.review_page", o.review_page.clone()),
    ]
}

/// Files an output may never replace: the cache database (and its -wal and -shm files).
pub fn database_files(db: &Path) -> Vec<PathBuf> {
    let mut files = vec![db.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        files.push(PathBuf::from(p));
    }
    files
}

/// Refuses a run whose outputs would replace the cache database, the run journal, an input
/// file or one another, or that names a directory as an output file.
pub fn check_targets(config: &Config) -> Result<(), TargetError> {
    let o = &config.output;
    let mut protected: Vec<(String, PathBuf)> = database_files(&o.cache_db)
        .into_iter()
        .map(|p| ("the cache database (cache.path)".to_owned(), p))
        .collect();
    protected.push((
        "the run journal".into(),
        o.outputs_dir.join(crate::journal::FILE_NAME),
    ));
    protected.push((
        "the themes file (paths.themes)".into(),
        config.themes_file.clone(),
    ));
    protected.push((
        "the candidates file (paths.candidates)".into(),
        config.candidates_file.clone(),
    ));
    protected.push(("the config file".into(), config.source.clone()));
    let outputs = outputs(config);
    for (i, (key, path)) in outputs.iter().enumerate() {
        let refuse = |reason: String| TargetError {
            key: (*key).to_owned(),
            path: path.clone(),
            reason,
        };
        if let Err(e) = resolve_target(path) {
            return Err(refuse(format!("cannot write: {e}")));
        }
        if !replaces(path) {
            // Written through (a device, FIFO, descriptor): nothing is replaced.
            continue;
        }
        for (what, p) in &protected {
            if same_file(path, p) {
                return Err(refuse(format!(
                    "is {what}; refusing to write an output onto it"
                )));
            }
        }
        for (other_key, other) in &outputs[..i] {
            if same_file(path, other) {
                return Err(refuse(format!(
                    "is also the output of {other_key}; give each output its own file"
                )));
            }
        }
    }
    Ok(())
}

/// Removes temporary files of ours (named [`crate::fsx::TEMP_PREFIX`]`...`) that a killed run left in the
/// output directories of `config` (and its `partial/` folder). Returns how many were removed.
pub fn remove_stale_temps(config: &Config) -> usize {
    let o = &config.output;
    let mut dirs: Vec<PathBuf> = vec![
        o.outputs_dir.clone(),
        o.outputs_dir.join(PARTIAL_DIR),
        o.reports_dir.clone(),
    ];
    for file in [
        &o.puzzle_embeddings_file,
        &o.embedding_cache_file,
        &o.review_page,
    ] {
        if let Ok(Target::Replace(dest)) = resolve_target(file) {
            dirs.push(parent(&dest).to_owned());
        }
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut removed = 0;
    for dir in dirs {
        match dir.canonicalize() {
            Ok(d) if !seen.contains(&d) => seen.push(d),
            _ => continue,
        }
        removed += remove_stale_in(&dir);
    }
    removed
}
