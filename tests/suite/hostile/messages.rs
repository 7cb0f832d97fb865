//! Hostile cases: what the tool says and shows. A wrongly typed value anywhere in params.yaml
//! is named by its dotted key and the type expected.

use crate::common::{self, puzzlegen};

#[test]
fn a_wrongly_typed_value_in_params_names_the_file_its_dotted_key_and_the_type() {
    // (params.yaml, the error line expected)
    for (yaml, error) in [
        // A sequence where an integer is expected (the case).
        (
            "puzzle_generation:\n  total_puzzle_count: 1\n  words_per_theme: [1,2]\n",
            "params.yaml: line 3: puzzle_generation.words_per_theme: expected an integer, got a list",
        ),
        // A mapping where a number is expected.
        (
            "gemini:\n  requests_per_minute:\n    per: minute\n",
            "params.yaml: line 3: gemini.requests_per_minute: expected a number, got a mapping",
        ),
        // A string where an integer is expected, written in flow style.
        (
            "multiprocessing: {worker_count: many, enabled: true}\n",
            "params.yaml: line 1: multiprocessing.worker_count: expected an integer, got many",
        ),
        // A number where a string is expected.
        (
            "paths:\n  outputs: 2024\n",
            "params.yaml: line 2: paths.outputs: expected a string, got 2024",
        ),
        // A sequence where a string is expected, three levels down.
        (
            "embedding:\n  local:\n    model_dir:\n      - models\n",
            "params.yaml: line 4: embedding.local.model_dir: expected a string, got a list",
        ),
        // A string where a section is expected.
        (
            "paths:\n  outputs: out\noutput: none\n",
            "params.yaml: line 3: output: expected a mapping",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("params.yaml"), yaml).unwrap();
        let stderr = common::assert_user_error(
            puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]),
            &format!("error: {error}"),
        );
        assert!(!stderr.contains("column"), "{stderr}");
    }
}
