//! Fuzzing the three files a user hands the tool (params.yaml, the themes file, the candidates
//! file) with proptest: mutations of a valid params.yaml (random keys, values, numbers, strings,
//! anchors, truncation) and random JSON (odd shapes, duplicate keys, BOMs, invisible and
//! non-BMP characters, truncation). Errors are fine; a panic, or a message on several lines, is
//! not. A fixed number of cases, no persistence: it runs in the normal test command.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use puzzlegen::config::{Config, Overrides};
use puzzlegen::input::Inputs;

const CASES: u32 = 256;

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

const VALID_YAML: &str = "\
puzzle_generation:
  total_puzzle_count: 10
  words_per_theme: 4
  themes_per_puzzle: 4
  random_seed: 42
gemini:
  model_id: gemini-embedding-001
  embedding_dimension: 3072
  api_key_env: GEMINI_API_KEY
  requests_per_minute: 3000
  min_request_interval: 0.02
  retry_base_delay: 1.0
  max_retries: 5
multiprocessing:
  enabled: true
  worker_count: 8
  task_timeout_seconds: 300
  max_concurrent_requests: 6
output:
  csv_precision: 6
  embedding_cache_file: data/cache/all_embeddings.csv
paths:
  outputs: out
  themes: data/themes/
  candidates: data/candidates/
embedding:
  provider: local
  local:
    model_dir: models/all-MiniLM-L6-v2
";

/// Odd text: invisible characters, BOMs, quotes, control and non-BMP characters.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z ]{0,12}",
        Just(String::new()),
        Just("\u{200B}".to_owned()),
        Just("\u{FEFF}Planets".to_owned()),
        Just(" Planets\u{00AD} ".to_owned()),
        Just("\u{2060}\u{200C}\u{200D}".to_owned()),
        Just("\"'\\\n\t\r".to_owned()),
        Just("🦀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢".to_owned()),
        any::<String>(),
    ]
}

/// A YAML value: numbers of every size, strings, flow collections, anchors and aliases.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:e}")),
        Just("1e308".to_owned()),
        Just("-1e308".to_owned()),
        Just("1e999".to_owned()),
        Just(".nan".to_owned()),
        Just("-.inf".to_owned()),
        Just("99999999999999999999999999999999999999".to_owned()),
        Just("~".to_owned()),
        Just("[1, [2, [3]]]".to_owned()),
        Just("{a: 1, a: 2}".to_owned()),
        Just("&x [1, 2]".to_owned()),
        Just("*x".to_owned()),
        Just("!!binary aGVsbG8=".to_owned()),
        Just("|\n  block".to_owned()),
        Just("[unclosed".to_owned()),
        "[a-z]{1,8}",
        odd_text().prop_map(|s| format!("{s:?}")),
    ]
}

#[derive(Debug, Clone)]
enum YamlEdit {
    /// Line `n` gets a new value after its key.
    Value(usize, String),
    /// A new `key: value` line (maybe a duplicate key) at indentation 0 or 2 after line `n`.
    Insert(usize, bool, String, String),
    /// Line `n` is removed.
    Remove(usize),
}

fn yaml_edit() -> impl Strategy<Value = YamlEdit> {
    let key = prop_oneof![
        Just("total_puzzle_count".to_owned()),
        Just("worker_count".to_owned()),
        Just("paths".to_owned()),
        Just("embedding".to_owned()),
        Just("<<".to_owned()),
        "[a-z_]{1,10}",
        odd_text(),
    ];
    prop_oneof![
        (0..40usize, yaml_value()).prop_map(|(n, v)| YamlEdit::Value(n, v)),
        (0..40usize, any::<bool>(), key, yaml_value())
            .prop_map(|(n, nested, k, v)| YamlEdit::Insert(n, nested, k, v)),
        (0..40usize).prop_map(YamlEdit::Remove),
    ]
}

fn mutated_yaml() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(yaml_edit(), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
        any::<bool>(),
    )
        .prop_map(|(edits, truncate, bom)| {
            let mut lines: Vec<String> = VALID_YAML.lines().map(str::to_owned).collect();
            for edit in edits {
                let n = lines.len().max(1);
                match edit {
                    YamlEdit::Value(i, v) => {
                        if let Some(line) = lines.get_mut(i % n)
                            && let Some(colon) = line.find(':')
                        {
                            *line = format!("{}: {v}", &line[..colon]);
                        }
                    }
                    YamlEdit::Insert(i, nested, k, v) => {
                        let indent = if nested { "  " } else { "" };
                        lines.insert((i % n + 1).min(lines.len()), format!("{indent}{k}: {v}"));
                    }
                    YamlEdit::Remove(i) => {
                        if !lines.is_empty() {
                            lines.remove(i % n);
                        }
                    }
                }
            }
            let mut bytes = if bom { "\u{FEFF}".into() } else { Vec::new() };
            bytes.extend_from_slice(lines.join("\n").as_bytes());
            if let Some(at) = truncate {
                // Any byte, so also inside a multi-byte character.
                bytes.truncate(at.index(bytes.len() + 1));
            }
            bytes
        })
}

/// A JSON tree written by hand, so that objects may repeat keys.
#[derive(Debug, Clone)]
enum Json {
    Raw(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Raw(s) => out.push_str(s),
            Json::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("themes".to_owned()),
        Just("candidates".to_owned()),
        Just("words".to_owned()),
        Just("Planets".to_owned()),
        Just(" planets ".to_owned()),
        Just("PLANETS\u{200B}".to_owned()),
        odd_text(),
    ]
}

fn json_tree() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Raw("null".into())),
        Just(Json::Raw("true".into())),
        any::<i64>().prop_map(|n| Json::Raw(n.to_string())),
        Just(Json::Raw("1e308".into())),
        Just(Json::Raw("123456789012345678901234567890".into())),
        odd_text().prop_map(Json::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((json_key(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

/// A themes file: mostly the right shape with odd names, sometimes anything.
fn themes_json() -> impl Strategy<Value = Json> {
    prop_oneof![
        3 => prop::collection::vec(odd_text().prop_map(Json::Str), 0..8)
            .prop_map(|names| Json::Object(vec![("themes".into(), Json::Array(names))])),
        1 => json_tree(),
    ]
}

/// A candidates file: mostly the right shape with odd keys and words, sometimes anything.
fn candidates_json() -> impl Strategy<Value = Json> {
    let words = prop::collection::vec(odd_text().prop_map(Json::Str), 0..8)
        .prop_map(|w| Json::Object(vec![("words".into(), Json::Array(w))]));
    prop_oneof![
        3 => prop::collection::vec((json_key(), words), 0..6)
            .prop_map(|c| Json::Object(vec![("candidates".into(), Json::Object(c))])),
        1 => json_tree(),
    ]
}

/// The file's bytes: maybe a BOM first, maybe cut anywhere.
fn file_bytes(json: &Json, bom: bool, truncate: Option<prop::sample::Index>) -> Vec<u8> {
    let mut text = String::new();
    json.write(&mut text);
    let mut bytes = if bom { "\u{FEFF}".into() } else { Vec::new() };
    bytes.extend_from_slice(text.as_bytes());
    if let Some(at) = truncate {
        bytes.truncate(at.index(bytes.len() + 1));
    }
    bytes
}

#[test]
fn params_yaml_mutations_never_panic() {
    runner()
        .run(&mutated_yaml(), |bytes| {
            let path = Path::new("params.yaml");
            if let Err(e) = Config::from_yaml_bytes(path, &bytes, &Overrides::default()) {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "{message}");
                prop_assert!(message.starts_with("params.yaml: "), "{message}");
                prop_assert!(message.len() < 1000, "{message}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn input_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let themes = dir.path().join("selected_themes.json");
    let candidates = dir.path().join("candidate_words.json");
    let strategy = (
        themes_json(),
        candidates_json(),
        any::<(bool, bool)>(),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    );
    runner()
        .run(&strategy, |(t, c, (bom_t, bom_c), cut_t, cut_c)| {
            std::fs::write(&themes, file_bytes(&t, bom_t, cut_t)).unwrap();
            std::fs::write(&candidates, file_bytes(&c, bom_c, cut_c)).unwrap();
            match Inputs::load(&themes, &candidates) {
                Ok(inputs) => {
                    // What loads is normalised: no empty or invisible-only names or words.
                    for theme in &inputs.themes {
                        prop_assert!(!theme.trim().is_empty());
                        prop_assert!(!theme.contains('\u{200B}'), "{theme:?}");
                        if let Some(words) = inputs.candidates_of(theme) {
                            prop_assert!(words.iter().all(|w| !w.trim().is_empty()));
                        }
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(!message.contains('\n'), "{message}");
                }
            }
            Ok(())
        })
        .unwrap();
}
