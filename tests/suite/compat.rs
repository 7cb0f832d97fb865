//! A project in the Python pipeline's own layout, with its own params.yaml (examples/dvc/,
//! only the puzzle count and dimension lowered), run against the mock Gemini server reached
//! through `GOOGLE_GEMINI_BASE_URL`: the outputs a consumer of the original reads must be
//! where and what that consumer expects.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use mock_gemini::{BlockingMockServer, MockConfig, start_blocking};
use serde_json::Value;

use crate::common::{self, KEY, read_json as json};

const DIMENSION: usize = 64;

/// Eight themes for two puzzles (no spare). Words recur across themes in other cases
/// (`Mercury`/`mercury`, `Gold`/`GOLD`), `Jupiter ` carries a space, and `zorpa`/`zorpass`
/// must both survive the plural rule while `Zorpas` and `apples` must not.
#[rustfmt::skip]
const THEMES: &[(&str, &[&str])] = &[
    ("Planets", &["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn"]),
    ("Chemical elements", &["mercury", "Iron", "Gold", "Silver", "Neon", "Zinc"]),
    ("Roman gods", &["venus", "MARS", "Jupiter ", "Neptune", "Vulcan", "Minerva"]),
    ("Nonsense words", &["zorpa", "zorpass", "blick", "frumious", "wug", "Zorpas"]),
    ("Fruit", &["Apple", "apples", "Pear", "Plum", "Cherry", "Grape"]),
    ("Trees", &["Oak", "Pine", "Maple", "Birch", "apple", "Cedar"]),
    ("Colours", &["Red", "Gold", "Silver", "Green", "cherry", "Navy"]),
    ("Metals", &["iron", "GOLD", "silver", "Copper", "Tin", "Lead"]),
];

/// The outputs, at the original's paths.
const OUTS: &[&str] = &[
    "data/outputs/final_puzzles.json",
    "data/outputs/puzzle_metadata.json",
    "reports/embedding_analysis.json",
    "reports/puzzles.html",
    "data/cache/all_embeddings.csv",
    "data/embeddings/puzzle_embeddings.csv",
];

/// A project directory in the original's layout; `cut` shortens theme `Fruit` to 3 words.
fn project(cut: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let params = std::fs::read_to_string(common::repo_file("examples/dvc/params.yaml")).unwrap();
    let lowered = params
        .replace("total_puzzle_count: 100", "total_puzzle_count: 2")
        .replace(
            "embedding_dimension: 3072",
            &format!("embedding_dimension: {DIMENSION}"),
        );
    assert_ne!(lowered, params, "examples/dvc/params.yaml changed shape");
    std::fs::write(root.join("params.yaml"), lowered).unwrap();
    std::fs::create_dir_all(root.join("data/themes")).unwrap();
    std::fs::create_dir_all(root.join("data/candidates")).unwrap();
    let names: Vec<&str> = THEMES.iter().map(|(t, _)| *t).collect();
    let mut cands = serde_json::Map::new();
    for (t, words) in THEMES {
        let words: Vec<&str> = if cut && *t == "Fruit" {
            words[..4].to_vec() // Apple, apples (a duplicate), Pear, Plum: 3 usable
        } else {
            words.to_vec()
        };
        cands.insert(
            t.to_string(),
            serde_json::json!({"words": words, "similarity_scores": vec![0.5; words.len()], "word_count": words.len()}),
        );
    }
    std::fs::write(
        root.join("data/themes/selected_themes.json"),
        serde_json::json!({"themes": names, "count": names.len()}).to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("data/candidates/candidate_words.json"),
        serde_json::json!({"candidates": cands, "metadata": {"method": "vector_search"}})
            .to_string(),
    )
    .unwrap();
    dir
}

fn mock() -> BlockingMockServer {
    start_blocking(MockConfig {
        dimension: DIMENSION,
        api_key: Some(KEY.into()),
        ..MockConfig::default()
    })
    .unwrap()
}

/// `puzzlegen run --config params.yaml [extra]` in `dir` under umask 022, as a user would type
/// it, with the key in GEMINI_API_KEY and the mock named by GOOGLE_GEMINI_BASE_URL.
fn run(dir: &Path, server: &BlockingMockServer, extra: &[&str]) -> Output {
    let umask = "umask 022 && exec \"$0\" run --config params.yaml \"$@\"";
    common::wrapped(dir, &["sh", "-c", umask])
        .args(extra)
        .env("GEMINI_API_KEY", KEY)
        .env("GOOGLE_GEMINI_BASE_URL", server.base_url())
        .output()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `path` (dot-separated) exists in `v` with JSON type `kind`.
fn assert_key(v: &Value, path: &str, kind: &str) {
    let mut at = v;
    for part in path.split('.') {
        at = at
            .get(part)
            .unwrap_or_else(|| panic!("missing key {path} (at {part}) in {v:#}"));
    }
    let ok = match kind {
        "int" => at.is_u64() || at.is_i64(),
        "float" => at.is_f64(),
        "string" => at.is_string(),
        "bool" => at.is_boolean(),
        "array" => at.is_array(),
        "object" => at.is_object(),
        _ => unreachable!("{kind}"),
    };
    assert!(ok, "{path}: expected {kind}, got {at}");
}

/// The original's rule for usable candidates (ImprovedThemeWorker._is_duplicate_word).
fn usable(words: &[&str]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for w in words {
        let lower = w.trim().to_lowercase();
        let dup = kept.contains(&lower)
            || (lower.len() > 1
                && lower.ends_with('s')
                && kept.contains(&lower[..lower.len() - 1].to_owned()))
            || kept.contains(&format!("{lower}s"));
        if !dup {
            kept.push(lower);
            out.push(w.trim().to_owned());
        }
    }
    out
}

/// Distinct texts of the run, ignoring case and surrounding whitespace.
fn distinct_texts() -> HashSet<String> {
    THEMES
        .iter()
        .flat_map(|(t, words)| std::iter::once(t.to_string()).chain(usable(words)))
        .map(|t| t.trim().to_lowercase())
        .collect()
}

/// The rows of a CSV file as header-keyed maps.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (header, rows)
}

fn expected_header(first: &[&str]) -> Vec<String> {
    first
        .iter()
        .map(|s| s.to_string())
        .chain((1..=DIMENSION).map(|d| format!("embedding_dim_{d}")))
        .collect()
}

#[test]
fn the_originals_project_runs_unchanged_and_its_readers_find_their_files() {
    let server = mock();
    let dir = project(false);
    let root = dir.path();
    let out = run(root, &server, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unknown key"),
        "the original's keys are known: {stderr}"
    );

    // The five outputs, at the original's paths, with ordinary modes.
    for rel in OUTS {
        let meta = std::fs::metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{rel}");
    }

    // final_puzzles.json
    let puzzles = json(&root.join("data/outputs/final_puzzles.json"));
    let puzzles = puzzles.as_object().unwrap();
    assert_eq!(puzzles.keys().collect::<Vec<_>>(), ["puzzle_1", "puzzle_2"]);
    for p in puzzles.values() {
        for (key, len) in [
            ("words", 16),
            ("theme_similarity_scores", 16),
            ("themes", 4),
            ("all_candidates", 0),
            ("all_similarities", 16),
        ] {
            assert_key(p, key, "array");
            assert_eq!(p[key].as_array().unwrap().len(), len, "{key}");
        }
        assert!(p["theme_similarity_scores"][0].is_f64());
    }

    // puzzle_metadata.json: every key the original writes, with its JSON type.
    let meta = json(&root.join("data/outputs/puzzle_metadata.json"));
    for (key, kind) in [
        ("total_themes_needed", "int"),
        ("total_themes_available", "int"),
        ("themes_reused", "bool"),
        ("successful_puzzles", "int"),
        ("failed_puzzles", "array"),
        ("processing_time", "float"),
        ("gemini_config.model_id", "string"),
        ("gemini_config.embedding_dimension", "int"),
        ("gemini_config.words_per_theme", "int"),
        ("gemini_config.themes_per_puzzle", "int"),
        ("gemini_config.requests_per_minute", "int"),
        ("multiprocessing_enabled", "bool"),
        ("multiprocessing_implementation", "string"),
        ("multiprocessing_stats.total_tasks", "int"),
        ("multiprocessing_stats.completed_tasks", "int"),
        ("multiprocessing_stats.failed_tasks", "int"),
        ("multiprocessing_stats.success_rate", "float"),
        ("multiprocessing_stats.processing_time", "float"),
        ("multiprocessing_stats.tasks_per_second", "float"),
        ("multiprocessing_stats.worker_count", "int"),
        ("multiprocessing_stats.cache_stats.cache_size", "int"),
        ("multiprocessing_stats.cache_stats.hit_rate", "float"),
        ("multiprocessing_stats.cache_stats.total_requests", "int"),
        ("multiprocessing_stats.cache_stats.cache_file", "string"),
        ("multiprocessing_stats.cache_stats.hits", "int"),
        ("multiprocessing_stats.cache_stats.misses", "int"),
        ("multiprocessing_stats.cache_stats.writes", "int"),
        ("multiprocessing_stats.cache_stats.backups", "int"),
        ("multiprocessing_stats.cache_stats.last_backup", "int"),
        (
            "multiprocessing_stats.rate_limiter_stats.active_requests",
            "int",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.total_requests",
            "int",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.requests_this_minute",
            "int",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.requests_per_second",
            "float",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.requests_per_minute_limit",
            "int",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.max_concurrent_limit",
            "int",
        ),
        (
            "multiprocessing_stats.rate_limiter_stats.min_request_interval",
            "float",
        ),
    ] {
        assert_key(&meta, key, kind);
    }
    assert_eq!(meta["successful_puzzles"], 2);
    assert_eq!(meta["multiprocessing_stats"]["completed_tasks"], 8);
    assert_eq!(meta["gemini_config"]["requests_per_minute"], 2880);
    assert_eq!(
        meta["multiprocessing_stats"]["cache_stats"]["cache_file"],
        "data/cache/all_embeddings.csv"
    );

    // embedding_analysis.json
    let analysis = json(&root.join("reports/embedding_analysis.json"));
    for (key, kind) in [
        ("pipeline_info.gemini_model", "string"),
        ("pipeline_info.embedding_dimension", "int"),
        ("pipeline_info.total_embeddings", "int"),
        ("pipeline_info.themes_processed", "int"),
        ("pipeline_info.successful_puzzles", "int"),
        ("pipeline_info.processing_time", "float"),
        ("similarity_stats", "object"),
        ("embedding_quality.embedding_dimension", "int"),
        ("embedding_quality.mean_dimension_variance", "float"),
        ("embedding_quality.min_dimension_variance", "float"),
        ("embedding_quality.max_dimension_variance", "float"),
        ("embedding_quality.total_vectors", "int"),
        ("performance_metrics.avg_time_per_puzzle", "float"),
        ("performance_metrics.memory_estimate_mb", "float"),
    ] {
        assert_key(&analysis, key, kind);
    }
    assert_eq!(analysis["pipeline_info"]["total_embeddings"], 2 * 4 * 5);

    // puzzle_embeddings.csv: a theme row, then the chosen words as selected_word.
    let (header, rows) = csv_rows(&root.join("data/embeddings/puzzle_embeddings.csv"));
    assert_eq!(
        header,
        expected_header(&["theme", "word", "word_type", "similarity_to_theme", "rank"])
    );
    let kinds: BTreeSet<&str> = rows.iter().map(|r| r["word_type"].as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["selected_word", "theme"]));
    assert_eq!(rows.len(), 2 * 4 * 5);

    // all_embeddings.csv: the original's cache backup, one row per distinct text.
    let (header, rows) = csv_rows(&root.join("data/cache/all_embeddings.csv"));
    assert_eq!(
        header,
        expected_header(&[
            "word",
            "theme",
            "word_type",
            "similarity_to_theme",
            "timestamp"
        ])
    );
    let kinds: BTreeSet<&str> = rows.iter().map(|r| r["word_type"].as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["candidate", "theme"]));
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r["word"].trim().to_lowercase())
        .collect();
    let distinct: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(
        keys.len(),
        distinct.len(),
        "one row per text, ignoring case"
    );
    assert_eq!(distinct, distinct_texts());
    for r in &rows {
        // The original reads these back with float().
        r["timestamp"].parse::<f64>().unwrap();
        assert_eq!(
            r["similarity_to_theme"].is_empty(),
            r["word_type"] == "theme"
        );
    }
    for kept in ["zorpa", "zorpass"] {
        assert!(
            rows.iter()
                .any(|r| r["word"] == kept && r["theme"] == "Nonsense words"),
            "{kept} was dropped"
        );
    }

    // A second run reads every text from the cache database and writes the CSV from it: the
    // theme rows' similarity stays empty.
    let again = run(root, &server, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    let (_, rows_again) = csv_rows(&root.join("data/cache/all_embeddings.csv"));
    assert_eq!(rows_again.len(), rows.len());
    for r in &rows_again {
        assert_eq!(
            r["similarity_to_theme"].is_empty(),
            r["word_type"] == "theme",
            "{r:?}"
        );
    }

    // Every text once, although words recur across themes in other cases.
    let stats = server.stats();
    assert_eq!(stats.duplicate_texts, 0, "{stats:?}");
    assert_eq!(
        stats.texts_embedded as usize,
        distinct_texts().len(),
        "{stats:?}"
    );
}

#[test]
fn a_failed_puzzle_is_listed_and_exits_0_unless_strict() {
    let server = mock();
    let dir = project(true);
    let out = run(dir.path(), &server, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let meta = json(&dir.path().join("data/outputs/puzzle_metadata.json"));
    let failed = meta["failed_puzzles"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{meta:#}");
    assert_eq!(failed[0]["puzzle_id"], 2, "an integer: {meta:#}");
    assert!(failed[0]["error"].as_str().unwrap().contains("Fruit"));
    assert_eq!(meta["successful_puzzles"], 1);

    let out = run(dir.path(), &server, &["--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

#[test]
fn an_original_cache_csv_is_imported_and_none_of_its_texts_is_requested() {
    let server = mock();
    let dir = project(false);
    let root = dir.path();
    // The original's cache backup: two themes' texts, as SharedEmbeddingCache.backup_to_csv
    // writes it (Python floats, a UNIX timestamp, empty similarity on theme rows).
    let mut preloaded = Vec::new();
    let mut csv = String::from("word,theme,word_type,similarity_to_theme,timestamp");
    for d in 1..=DIMENSION {
        csv.push_str(&format!(",embedding_dim_{d}"));
    }
    csv.push('\n');
    for (theme, words) in &THEMES[..2] {
        for (i, text) in std::iter::once(theme.to_string())
            .chain(usable(words))
            .enumerate()
        {
            let (kind, sim) = if i == 0 {
                ("theme", String::new())
            } else {
                ("candidate", "0.5".into())
            };
            let vector = mock_gemini::vectors::gemini_embedding(&text, DIMENSION);
            let values: Vec<String> = vector.iter().map(|x| f64::from(*x).to_string()).collect();
            csv.push_str(&format!(
                "{text},{theme},{kind},{sim},1732712345.25,{}\n",
                values.join(",")
            ));
            preloaded.push(text.to_lowercase());
        }
    }
    std::fs::create_dir_all(root.join("data/cache")).unwrap();
    std::fs::write(root.join("data/cache/all_embeddings.csv"), csv).unwrap();
    let preloaded: HashSet<String> = preloaded.into_iter().collect();

    let out = run(root, &server, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stats = server.stats();
    let expected = distinct_texts().difference(&preloaded).count();
    assert_eq!(stats.texts_embedded as usize, expected, "{stats:?}");
    assert_eq!(stats.duplicate_texts, 0, "{stats:?}");
    let meta = json(&root.join("data/outputs/puzzle_metadata.json"));
    assert_eq!(
        meta["multiprocessing_stats"]["cache_stats"]["hits"],
        preloaded.len() as u64
    );
}

#[test]
fn the_dvc_stage_gets_exactly_its_outs() {
    let stage: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(common::repo_file("examples/dvc/dvc.yaml")).unwrap(),
    )
    .unwrap();
    let stage = &stage["stages"]["enhance_with_gemini"];
    assert_eq!(stage["cmd"], "puzzlegen run --config params.yaml");
    let outs: BTreeSet<String> = stage["outs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| match o {
            Value::String(s) => s.clone(),
            Value::Object(m) => m.keys().next().unwrap().clone(),
            other => panic!("unexpected out {other}"),
        })
        .collect();
    let deps: BTreeSet<String> = stage["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outs, OUTS.iter().map(|s| s.to_string()).collect());

    let server = mock();
    let dir = project(false);
    let root = dir.path();
    let before = files_under(root);
    for dep in &deps {
        assert!(
            before.contains(dep),
            "dep {dep} is not an input of the project"
        );
    }
    let out = run(root, &server, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let written: BTreeSet<String> = files_under(root).difference(&before).cloned().collect();
    // Besides the outs, only the cache database (next to all_embeddings.csv) is written.
    let db: BTreeSet<String> = written
        .iter()
        .filter(|f| f.starts_with("data/cache/embeddings.sqlite3"))
        .cloned()
        .collect();
    assert!(db.contains("data/cache/embeddings.sqlite3"), "{written:?}");
    assert_eq!(
        written.difference(&db).cloned().collect::<BTreeSet<_>>(),
        outs
    );
}

/// Every file under `root`, as relative paths with `/`.
fn files_under(root: &Path) -> BTreeSet<String> {
    common::files_under(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}
