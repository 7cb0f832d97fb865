//! Hostile cases: inputs. Keys and theme names are normalised once (invisible characters
//! removed, Unicode whitespace trimmed, case ignored for identity); collisions, duplicate keys
//! and empty words are reported, the first spelling kept; a BOM is accepted; a wrong shape,
//! an oversized file and a bad params.yaml get a message naming the file and the key or line.

use std::path::Path;

use crate::common::{self, puzzlegen, read_json};

/// Runs `params.yaml` in `dir`; returns (exit code, stderr).
pub fn run(dir: &Path) -> (i32, String) {
    let out = puzzlegen(dir)
        .args(["run", "--config", "params.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// Runs `params.yaml` in `dir` and expects exit 2 with exactly one `error:` line containing
/// `needle`.
pub fn assert_user_error(dir: &Path, needle: &str) -> String {
    common::assert_user_error(
        puzzlegen(dir).args(["run", "--config", "params.yaml"]),
        needle,
    )
}

const PLANETS: &[&str] = &["Mercury", "Venus", "Mars", "Jupiter", "Saturn", "Neptune"];
const TREES: &[&str] = &["Pine", "Maple", "Birch", "Oak", "Cedar", "Willow"];
const COLOURS: &[&str] = &["Red", "Green", "Blue", "Yellow", "Purple", "Orange"];
const ANIMALS: &[&str] = &["Lion", "Tiger", "Horse", "Rabbit", "Wolf", "Bear"];
const FISH: &[&str] = &["Salmon", "Trout", "Tuna", "Cod", "Haddock", "Herring"];

/// themes.json naming the four themes every successful run here uses.
const FOUR_THEMES: &str = r#"{"themes": ["Planets", "Trees", "Colours", "Animals"]}"#;

/// The text of a candidates.json holding `entries` (theme key, words) in this order, each as
/// `{"words": [...]}`; a key may repeat, as only a raw text can.
fn candidates(entries: &[(&str, &[&str])]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(key, words)| {
            let words = serde_json::json!({ "words": words });
            format!("{}: {words}", serde_json::Value::from(*key))
        })
        .collect();
    format!(r#"{{"candidates": {{{}}}}}"#, entries.join(", "))
}

/// A new directory with params.yaml for one puzzle (see [`common::write_params`]) and the raw
/// JSON texts `themes` and `candidates` as themes.json and candidates.json (so keys may repeat).
fn raw_project(themes: &str, candidates: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_params(dir.path(), 1, "");
    write_raw(dir.path(), themes, candidates);
    dir
}

/// Runs a [`raw_project`] of `themes` and `candidates` (see [`run`]); returns the directory,
/// for its outputs, the exit code and stderr.
fn run_raw(themes: &str, candidates: &str) -> (tempfile::TempDir, i32, String) {
    let dir = raw_project(themes, candidates);
    let (code, stderr) = run(dir.path());
    (dir, code, stderr)
}

/// Writes themes.json and candidates.json from raw JSON texts (so keys may repeat).
fn write_raw(dir: &Path, themes: &str, candidates: &str) {
    std::fs::write(dir.join("themes.json"), themes).unwrap();
    std::fs::write(dir.join("candidates.json"), candidates).unwrap();
}

/// The words of `theme`'s group in `puzzle_1` (groups in the order of `themes`, 4 each).
fn group_of(dir: &Path, theme: &str) -> Vec<String> {
    let themes = puzzle_themes(dir);
    let i = themes
        .iter()
        .position(|t| t == theme)
        .unwrap_or_else(|| panic!("{theme} not in {themes:?}"));
    let p = read_json(&dir.join("out/final_puzzles.json"));
    p["puzzle_1"]["words"].as_array().unwrap()[i * 4..i * 4 + 4]
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

fn puzzle_themes(dir: &Path) -> Vec<String> {
    let p = read_json(&dir.join("out/final_puzzles.json"));
    p["puzzle_1"]["themes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn keys_equal_but_for_spaces_warn_and_the_first_is_kept() {
    let (dir, code, stderr) = run_raw(
        FOUR_THEMES,
        &candidates(&[
            (" Planets ", PLANETS),
            ("Planets", TREES),
            ("Colours", COLOURS),
            ("Animals", ANIMALS),
            ("Trees", &["Elm", "Spruce", "Ash", "Fir", "Larch"]),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(r#"" Planets ""#) && l.contains(r#""Planets""#))
        .unwrap_or_else(|| panic!("no warning naming both spellings in {stderr}"));
    assert!(warning.contains("candidates.json"), "{warning}");
    assert!(warning.contains("the first"), "{warning}");
    let group = group_of(dir.path(), "Planets");
    for w in &group {
        assert!(PLANETS.contains(&w.as_str()), "{group:?}");
    }
}

#[test]
fn theme_names_equal_but_for_case_are_one_theme() {
    let (dir, code, stderr) = run_raw(
        r#"{"themes": ["Planets", "planets", "PLANETS", "Trees", "Colours", "Animals"]}"#,
        &candidates(&[
            ("Planets", PLANETS),
            ("Trees", TREES),
            ("Colours", COLOURS),
            ("Animals", ANIMALS),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    for spelling in ["planets", "PLANETS"] {
        assert!(
            stderr.lines().any(|l| l.contains("themes.json")
                && l.contains(&format!("{spelling:?}"))
                && l.contains(r#""Planets""#)),
            "no warning naming {spelling:?} and \"Planets\" in {stderr}"
        );
    }
    assert_eq!(
        puzzle_themes(dir.path()),
        ["Planets", "Trees", "Colours", "Animals"]
    );
}

#[test]
fn a_zero_width_word_is_dropped_with_a_warning() {
    // Four real words and a zero-width space: only four usable words for Planets.
    let planets = ["Mercury", "\u{200B}", "Venus", "Mars", "Jupiter"];
    let (dir, code, stderr) = run_raw(
        FOUR_THEMES,
        &candidates(&[
            ("Planets", &planets),
            ("Trees", TREES),
            ("Colours", COLOURS),
            ("Animals", ANIMALS),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("candidates.json")
            && l.contains(r#"candidates["Planets"].words[1]"#)
            && l.contains("dropped")),
        "{stderr}"
    );
    let mut group = group_of(dir.path(), "Planets");
    group.sort();
    assert_eq!(group, ["Jupiter", "Mars", "Mercury", "Venus"]);
}

#[test]
fn a_zero_width_theme_name_is_refused() {
    let dir = raw_project(
        "{\"themes\": [\"Planets\", \"\u{200B}\"]}",
        &candidates(&[("Planets", PLANETS)]),
    );
    assert_user_error(
        dir.path(),
        r#"themes.json: themes[1]: expected a theme name, got "\u{200b}" (only spaces or invisible characters)"#,
    );
}

#[test]
fn a_duplicate_json_key_is_reported_and_the_first_wins() {
    let (dir, code, stderr) = run_raw(
        FOUR_THEMES,
        &candidates(&[
            ("Planets", PLANETS),
            ("Trees", TREES),
            ("Colours", COLOURS),
            ("Animals", ANIMALS),
            ("Planets", FISH),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("candidates.json")
            && l.contains(r#"key "Planets" appears more than once"#)
            && l.contains("first is used")),
        "{stderr}"
    );
    for w in group_of(dir.path(), "Planets") {
        assert!(PLANETS.contains(&w.as_str()), "{w}");
    }
}

#[test]
fn a_utf8_bom_is_accepted() {
    let cands = candidates(&[
        ("Planets", PLANETS),
        ("Trees", TREES),
        ("Colours", COLOURS),
        ("Animals", ANIMALS),
    ]);
    let (dir, code, stderr) = run_raw(
        &format!("\u{FEFF}{FOUR_THEMES}"),
        &format!("\u{FEFF}{cands}"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        puzzle_themes(dir.path()),
        ["Planets", "Trees", "Colours", "Animals"]
    );
}

#[test]
fn a_bare_list_says_what_was_expected() {
    let dir = raw_project(
        r#"["Planets", "Trees", "Colours", "Animals"]"#,
        &candidates(&[("Planets", PLANETS)]),
    );
    assert_user_error(
        dir.path(),
        r#"themes.json: expected an object {"themes": [...]}, got a list"#,
    );
}

#[test]
fn an_oversized_input_file_is_refused_unread() {
    let dir = raw_project(r#"{"themes": ["Planets"]}"#, "");
    // Sparse: 300 MB that take no disk and, read, would take 300 MB of memory.
    let f = std::fs::File::create(dir.path().join("candidates.json")).unwrap();
    f.set_len(300 * 1024 * 1024).unwrap();
    let started = std::time::Instant::now();
    assert_user_error(
        dir.path(),
        "candidates.json: too large: an input file may hold at most 256 MB",
    );
    assert!(started.elapsed().as_secs_f64() < 5.0);
}

// params.yaml messages: the line, the key, what was expected.

/// Runs `yaml` as params.yaml and expects exit 2 with one error line containing `needle`;
/// returns stderr.
fn yaml_error(yaml: &str, needle: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("params.yaml"), yaml).unwrap();
    write_raw(
        dir.path(),
        r#"{"themes": ["Planets"]}"#,
        r#"{"candidates": {}}"#,
    );
    assert_user_error(dir.path(), needle)
}

#[test]
fn yaml_mistakes_name_the_line_and_key_in_plain_words() {
    // (params.yaml, the message expected, what it must not show)
    for (yaml, needle, not) in [
        (
            "puzzle_generation:\n  total_puzzle_count: 1e308\npaths:\n  outputs: out\n",
            "params.yaml: line 2: puzzle_generation.total_puzzle_count: expected an integer, got 1e308",
            "column",
        ),
        (
            "gemini:\n  requests_per_minute: -1e308\npaths:\n  outputs: out\n",
            "params.yaml: gemini.requests_per_minute: expected a number > 0, got -1e308",
            "00000000",
        ),
        (
            "paths:\n  outputs: out\n  outputs: elsewhere\n",
            "params.yaml: line 3: duplicate key paths.outputs",
            "DuplicateKeyPolicy",
        ),
    ] {
        let stderr = yaml_error(yaml, needle);
        assert!(!stderr.contains(not), "{stderr}");
    }
}

#[test]
fn a_yaml_bomb_is_refused_plainly() {
    // 10^10 nodes: each of the anchors b1..b9 refers ten times to the one before it.
    let mut y = String::from(
        "paths:\n  outputs: out\nlogging:\n  b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*b{}", i - 1); 10].join(", ");
        y.push_str(&format!("  b{i}: &b{i} [{refs}]\n"));
    }
    let started = std::time::Instant::now();
    let stderr = yaml_error(
        &y,
        "params.yaml: too large or too deeply nested (alias expansion)",
    );
    assert!(!stderr.contains("budget"), "{stderr}");
    // Expanding 10^10 nodes would not end (or end the memory); refusing takes ~0.1 s in a
    // release build, ~2 s of CPU in a test build. The bound only tells the two apart, with
    // room for a busy machine (at load 8 on 2 cores it took 14-20 s).
    assert!(started.elapsed().as_secs_f64() < 90.0);
}

// `cache import`: vectors must be finite and non-zero; rows are numbered as an editor shows
// them (header line 1), also in CRLF files, which Python's csv module writes by default.

#[test]
fn import_refuses_an_all_zero_vector_and_numbers_lines_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cache.csv"),
        "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2\r\n\
         mars,Planets,candidate,0.5,1735689600,0.6,0.8\r\n\
         venus,Planets,candidate,0.5,1735689600,0,0.0\r\n\
         pluto,Planets,candidate,0.5,1735689600,inf,1\r\n",
    )
    .unwrap();
    let out = puzzlegen(dir.path())
        .args(["cache", "import", "cache.csv", "--db", "c.sqlite3"])
        .args(["--model", "m", "--dimension", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cache.csv: line 3: all-zero vector") && stderr.contains("(skipped)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cache.csv: line 4: embedding_dim_1"),
        "{stderr}"
    );
    assert!(stdout.contains("1 added"), "{stdout}");
    assert!(stdout.contains("2 skipped"), "{stdout}");
}

#[test]
fn a_bad_model_file_is_one_line_naming_it_and_the_fetch_script() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(common::model_dir().join(f), model.join(f)).unwrap();
    }
    // A well-formed safetensors file without the model's tensors: candle's error for it
    // carries a backtrace (printed when RUST_BACKTRACE is set, as `puzzlegen()` sets it).
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(model.join("model.safetensors"), bytes).unwrap();
    common::write_params(dir.path(), 1, "");
    common::write_workload(dir.path(), 4, 6);
    let stderr = common::assert_user_error(
        puzzlegen(dir.path()).args(["run", "--config", "params.yaml", "--model-dir", "model"]),
        "model/model.safetensors: not a usable",
    );
    // The one error line names the fetch script too.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("scripts/fetch-model.sh")),
        "{stderr}"
    );
    assert!(!stderr.contains("candle_core"), "{stderr}");
    assert!(!stderr.contains("   0: "), "{stderr}");
}
