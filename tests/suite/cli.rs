//! End-to-end tests of the `puzzlegen` command, as a user would run it.

use std::collections::HashSet;

use assert_cmd::Command;
use predicates::prelude::*;
use puzzlegen::words::dedupe_key;

use crate::common::{self, assert_user_error, puzzlegen, read_json};

#[test]
fn example_run_makes_twelve_valid_puzzles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Run in a fresh directory so the cache (paths.cache: cache) starts empty.
    puzzlegen(dir.path())
        .args(["run", "--quiet", "--config"])
        .arg(common::repo_file("examples/params.yaml"))
        .arg("--themes")
        .arg(common::repo_file("examples/selected_themes.json"))
        .arg("--candidates")
        .arg(common::repo_file("examples/candidate_words.json"))
        .arg("--out")
        .arg(&out)
        .arg("--model-dir")
        .arg(common::model_dir())
        .assert()
        .success();

    let puzzles = read_json(&out.join("final_puzzles.json"));
    let puzzles = puzzles.as_object().unwrap();
    assert_eq!(puzzles.len(), 12);
    for i in 1..=12 {
        let p = &puzzles[&format!("puzzle_{i}")];
        let words: Vec<&str> = p["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let scores = p["theme_similarity_scores"].as_array().unwrap();
        let themes = p["themes"].as_array().unwrap();
        assert_eq!(words.len(), 16, "puzzle_{i}");
        assert_eq!(scores.len(), 16, "puzzle_{i}");
        assert_eq!(p["all_similarities"].as_array().unwrap().len(), 16);
        assert_eq!(themes.len(), 4, "puzzle_{i}");
        let keys: HashSet<String> = words.iter().map(|w| dedupe_key(w)).collect();
        assert_eq!(keys.len(), 16, "puzzle_{i} repeats a word: {words:?}");
        assert!(p["quality"]["min_margin"].is_number());
        assert_eq!(p["quality"]["word_margins"].as_array().unwrap().len(), 16);
        assert_eq!(p["quality"]["group_coherence"].as_array().unwrap().len(), 4);
        let q = &p["quality"];
        let weakest = q["weakest_word"].as_str().unwrap();
        assert!(words.contains(&weakest), "puzzle_{i}: {weakest}");
        assert!(q["mean_coherence"].as_f64().unwrap() >= q["min_coherence"].as_f64().unwrap());
        assert!(q["mean_margin"].as_f64().unwrap() >= q["min_margin"].as_f64().unwrap());
        for s in scores {
            let s = s.as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&s));
        }
    }
    let meta = read_json(&out.join("puzzle_metadata.json"));
    assert_eq!(meta["successful_puzzles"], 12);
    assert_eq!(meta["total_themes_needed"], 48);
    assert_eq!(meta["failed_puzzles"].as_array().unwrap().len(), 0);
    for key in [
        "total_themes_available",
        "themes_reused",
        "processing_time",
        "gemini_config",
        "multiprocessing_stats",
    ] {
        assert!(meta.get(key).is_some(), "puzzle_metadata.json lacks {key}");
    }
    let analysis = read_json(&out.join("reports/embedding_analysis.json"));
    for key in [
        "pipeline_info",
        "similarity_stats",
        "embedding_quality",
        "performance_metrics",
    ] {
        assert!(
            analysis.get(key).is_some(),
            "embedding_analysis.json lacks {key}"
        );
    }
    assert_eq!(analysis["pipeline_info"]["embedding_dimension"], 384);
    // The quality summaries: 12 x 16 word margins, 12 x 4 groups, in the histograms too.
    assert_eq!(meta["quality"]["word_margin"]["count"], 192);
    assert_eq!(meta["quality"]["group_coherence"]["count"], 48);
    assert_eq!(meta["puzzle_generation"]["coherence_weight"], 4.0);
    let stats = &analysis["similarity_stats"];
    assert_eq!(stats["word_margins"]["count"], 192);
    for (key, total) in [
        ("word_margin_histogram", 192),
        ("group_coherence_histogram", 48),
    ] {
        let counts = stats[key]["counts"].as_array().unwrap();
        assert_eq!(
            stats[key]["edges"].as_array().unwrap().len(),
            counts.len() + 1
        );
        let sum: u64 = counts.iter().map(|c| c.as_u64().unwrap()).sum();
        assert_eq!(sum, total, "{key}");
    }

    // The puzzle CSV: header, then per group a theme row and its 4 words, 6 decimals.
    let csv = std::fs::read_to_string(out.join("puzzle_embeddings.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header[..5],
        ["theme", "word", "word_type", "similarity_to_theme", "rank"]
    );
    assert_eq!(header.len(), 5 + 384);
    assert_eq!(header[5], "embedding_dim_1");
    assert_eq!(lines.clone().count(), 12 * 4 * 5);
    let first = lines.next().unwrap();
    let last_field = first.rsplit(',').next().unwrap();
    assert_eq!(
        last_field.split('.').nth(1).unwrap().len(),
        6,
        "{last_field}"
    );
    let _ = dir;
}

#[test]
fn help_explains_every_flag() {
    let out = Command::cargo_bin("puzzlegen")
        .unwrap()
        .args(["run", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for flag in [
        "--config",
        "--themes",
        "--candidates",
        "--out",
        "--provider",
        "--model-dir",
        "Exit code",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn usage_error_exits_2() {
    Command::cargo_bin("puzzlegen")
        .unwrap()
        .args(["run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--config"));
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "nope.yaml"]),
        "nope.yaml: cannot read",
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "paths:\n  outputs: out\n  themes: [oops\n",
    )
    .unwrap();
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "p.yaml"]),
        "p.yaml: ",
    );
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "p.yaml"]),
        "line 3",
    );
}

/// A new directory set up for `puzzlegen run --config params.yaml`: params.yaml for `puzzles`
/// puzzles of the local model, with `params_extra` appended (see [`common::write_params`]), and
/// themes.json and candidates.json from `themes` (see [`common::write_inputs`]).
fn project(puzzles: usize, params_extra: &str, themes: &[(&str, &[&str])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_params(dir.path(), puzzles, params_extra);
    common::write_inputs(dir.path(), themes);
    dir
}

/// Sets up a [`project`] for one puzzle, writes each of `files` (name, content) into it over
/// what is there, and runs `puzzlegen run --config params.yaml`: a user error naming `needle`
/// (see [`assert_user_error`]).
fn refused(params_extra: &str, themes: &[(&str, &[&str])], files: &[(&str, &[u8])], needle: &str) {
    let dir = project(1, params_extra, themes);
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]),
        needle,
    );
}

#[test]
fn invalid_value_names_the_key() {
    refused(
        "multiprocessing:\n  worker_count: 0\n",
        &[("A", &["x"])],
        &[],
        "params.yaml: multiprocessing.worker_count: expected an integer from 1 to 10000, got 0",
    );
}

#[test]
fn malformed_json_names_file_and_line() {
    refused(
        "",
        &[("A", &["x"])],
        &[(
            "candidates.json",
            b"{\"candidates\": {\n\"A\": {\"words\": [1, 2]}}}",
        )],
        "candidates.json: line 2",
    );
}

#[test]
fn non_utf8_input_is_reported() {
    refused(
        "",
        &[("A", &["x"])],
        &[("themes.json", b"{\"themes\": [\"caf\xe9\"]}")],
        "themes.json: not valid UTF-8 (line 1)",
    );
}

#[test]
fn empty_theme_string_is_rejected() {
    refused(
        "",
        &[("A", &["x"]), ("", &["y"])],
        &[],
        "themes.json: themes[1]: expected a theme name, got an empty string",
    );
}

#[test]
fn words_per_theme_larger_than_any_list_is_rejected() {
    let words: &[&str] = &["a", "b", "c"];
    refused(
        "",
        &[("A", words), ("B", words), ("C", words), ("D", words)],
        &[],
        "words_per_theme is 4 but the largest candidate list",
    );
}

const FRUIT: &[&str] = &["apple", "banana", "cherry", "grape", "mango"];
const TOOLS: &[&str] = &["hammer", "wrench", "pliers", "screwdriver", "saw"];
const PLANETS: &[&str] = &["Mars", "Venus", "Jupiter", "Saturn", "Neptune"];
const DOGS: &[&str] = &["poodle", "beagle", "terrier", "collie", "husky"];
const BIRDS: &[&str] = &["robin", "sparrow", "eagle", "owl", "heron"];

/// Five themes for a one-puzzle run: the first four fill the puzzle, `Birds` is the spare.
const FIVE_THEMES: &[(&str, &[&str])] = &[
    ("Fruit", FRUIT),
    ("Tools", TOOLS),
    ("Planets", PLANETS),
    ("Dogs", DOGS),
    ("Birds", BIRDS),
];

#[test]
fn theme_missing_from_candidates_uses_a_spare() {
    let dir = project(1, "", FIVE_THEMES);
    // Drop "Tools" from the candidates, keep it in the themes.
    let mut c = read_json(&dir.path().join("candidates.json"));
    c["candidates"].as_object_mut().unwrap().remove("Tools");
    std::fs::write(dir.path().join("candidates.json"), c.to_string()).unwrap();

    puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "no candidates for theme \"Tools\"",
        ));
    let p = read_json(&dir.path().join("out/final_puzzles.json"));
    assert_eq!(
        p["puzzle_1"]["themes"],
        serde_json::json!(["Fruit", "Birds", "Planets", "Dogs"])
    );
    let meta = read_json(&dir.path().join("out/puzzle_metadata.json"));
    assert_eq!(meta["spare_themes_used"][0]["failed_theme"], "Tools");
    assert_eq!(meta["spare_themes_used"][0]["spare_theme"], "Birds");
}

#[test]
fn empty_candidate_list_without_spare_fails_that_puzzle_and_still_exits_0() {
    // 5 themes, 2 puzzles: themes cycle, no spares; "Dogs" (only in puzzle 1) has no words.
    let dir = project(
        2,
        "",
        &[
            ("Fruit", FRUIT),
            ("Tools", TOOLS),
            ("Planets", PLANETS),
            ("Dogs", &[]),
            ("Birds", BIRDS),
        ],
    );
    // The outputs were written: exit 0, as the original (a DVC stage keeps its outs).
    let out = puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("puzzles: 1 ok, 1 failed"), "{stdout}");
    let meta = read_json(&dir.path().join("out/puzzle_metadata.json"));
    let failed = meta["failed_puzzles"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("\"Dogs\" failed: only 0 usable candidate(s)"),
        "{error}"
    );
    assert_eq!(failed[0]["puzzle_id"], 1);
    // The finished themes are still in the cache CSV: nothing paid for is lost.
    let csv = std::fs::read_to_string(dir.path().join("cache/all_embeddings.csv")).unwrap();
    assert!(
        csv.contains("\nJupiter,Planets,candidate,"),
        "{}",
        &csv[..200.min(csv.len())]
    );
}

/// A model folder in a fresh project: MiniLM's tokenizer.json, `config` as config.json and,
/// if `weights`, MiniLM's weights.
fn project_with_model_folder(config: &str, weights: bool) -> tempfile::TempDir {
    let dir = project(1, "", &FIVE_THEMES[..4]);
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("config.json"), config).unwrap();
    let mut files = vec!["tokenizer.json"];
    if weights {
        files.push("model.safetensors");
    }
    for f in files {
        std::fs::copy(common::model_dir().join(f), model.join(f)).unwrap();
    }
    dir
}

#[test]
fn an_unsupported_model_type_is_one_line_naming_the_file_and_the_supported_types() {
    let dir = project_with_model_folder(r#"{"model_type": "roberta", "hidden_size": 8}"#, true);
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "params.yaml", "--model-dir", "model"]),
        "model/config.json: model_type \"roberta\" is not supported (supported: bert, mpnet)",
    );
}

#[test]
fn a_model_folder_without_its_weights_is_one_line_naming_the_missing_file() {
    let config = std::fs::read_to_string(common::model_dir().join("config.json")).unwrap();
    let dir = project_with_model_folder(&config, false);
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "params.yaml", "--model-dir", "model"]),
        "model/model.safetensors not found",
    );
}

#[test]
fn missing_model_is_a_clear_error() {
    // No spare: only the four themes of the puzzle.
    let dir = project(1, "", &FIVE_THEMES[..4]);
    assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "params.yaml", "--model-dir", "nowhere"]),
        "scripts/fetch-model.sh",
    );
}
