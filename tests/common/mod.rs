//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The local model directory fetched by scripts/fetch-model.sh; fails with how to get it.
pub fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the local model is missing from {}: run scripts/fetch-model.sh (scripts/test does it)",
        dir.display()
    );
    dir
}

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes a params.yaml for the local provider into `dir`, with extra YAML appended.
pub fn write_params(dir: &Path, puzzles: usize, extra: &str) -> PathBuf {
    let p = dir.join("params.yaml");
    let yaml = format!(
        "puzzle_generation:\n  total_puzzle_count: {puzzles}\n  words_per_theme: 4\n  themes_per_puzzle: 4\n\
         embedding:\n  provider: local\n  local:\n    model_dir: {model}\n\
         paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n  reports: out/reports\n  cache: cache\n{extra}",
        model = model_dir().display()
    );
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Writes themes.json and candidates.json into `dir` from (theme, words) pairs.
pub fn write_inputs(dir: &Path, themes: &[(&str, &[&str])]) {
    let names: Vec<&str> = themes.iter().map(|(t, _)| *t).collect();
    let mut cands = serde_json::Map::new();
    for (t, words) in themes {
        cands.insert(
            t.to_string(),
            serde_json::json!({"words": words, "similarity_scores": vec![0.5; words.len()], "word_count": words.len()}),
        );
    }
    std::fs::write(
        dir.join("themes.json"),
        serde_json::to_string(&serde_json::json!({"themes": names})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("candidates.json"),
        serde_json::to_string(&serde_json::json!({"candidates": cands, "metadata": {}})).unwrap(),
    )
    .unwrap();
}
