//! Hostile cases: what the tool says and shows. A wrongly typed value anywhere in params.yaml
//! is named by its dotted key and the type expected; a journal left by a run in another
//! embedding space is said to be unusable, not "held"; the review page shows control and bidi
//! characters as visible markers and cuts overlong text, its whole text in a `title`.

use std::time::{Duration, Instant};

use mock_gemini::{MockConfig, start_blocking};

use crate::common::{self, finish, puzzlegen};

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

#[test]
fn a_journal_from_another_dimension_is_said_to_be_unusable() {
    // A run at 768 dimensions killed once a theme is journalled: the server answers one
    // request more each time the run's only request in flight is held at its gate.
    let first = start_blocking(MockConfig {
        dimension: 768,
        ..MockConfig::default()
    })
    .unwrap();
    let dir = common::gemini_dir(
        &first.base_url(),
        12,
        9,
        3,
        "  request_timeout: 30
",
    );
    let params = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(&params)
        .unwrap()
        .replace("max_concurrent_requests: 4", "max_concurrent_requests: 1");
    std::fs::write(&params, &yaml).unwrap();
    let journal = dir.path().join("out/run_journal.jsonl");
    // Whole entries (a line cut short by the kill is no entry), not counting the header.
    let entries = || {
        std::fs::read_to_string(&journal).map_or(0, |t| t.matches('\n').count().saturating_sub(1))
    };
    let mut answers = 1;
    first.hold_after(Some(answers));
    let mut child = common::spawn_run(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while entries() == 0 {
        assert!(Instant::now() < deadline, "no theme journalled in a minute");
        if first.held() > 0 {
            answers += 1;
            first.hold_after(Some(answers));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let held = entries();
    let kept = std::fs::read(&journal).unwrap();

    // Run again at 768 dimensions: the journal answers for it.
    first.hold_after(None);
    let resumed = finish(puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]));
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let said = format!("resuming: the run journal holds {held} finished theme(s)");
    assert!(
        resumed.stderr.contains(&said),
        "{said:?} not in {}",
        resumed.stderr
    );
    assert!(!resumed.stderr.contains("not used"), "{}", resumed.stderr);
    std::fs::write(&journal, kept).unwrap();

    // The same job and journal at 384 dimensions: nothing in the journal answers for it.
    let server = start_blocking(MockConfig {
        dimension: 384,
        ..MockConfig::default()
    })
    .unwrap();
    let yaml = yaml
        .replace(&first.base_url(), &server.base_url())
        .replace("embedding_dimension: 768", "embedding_dimension: 384");
    std::fs::write(&params, yaml).unwrap();
    let run = finish(puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]));
    assert_eq!(run.code, 0, "{}", run.all());
    let said = format!(
        "run_journal.jsonl: {held} finished theme(s) from another embedding space or other \
         candidates: not used"
    );
    assert!(run.stderr.contains(&said), "{said:?} not in {}", run.stderr);
    assert!(!run.stderr.contains("resuming"), "{}", run.stderr);
    // Every theme was embedded again, none taken from the journal.
    assert_eq!(server.stats().texts_embedded, 12 * 10);
}

/// Characters that must never reach the page raw: bidi embeddings, overrides, isolates and
/// marks, C0 and C1 controls.
const HIDDEN: &[char] = &[
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}', '\u{200E}', '\u{200F}', '\u{0007}', '\u{001B}', '\u{0085}', '\u{009B}',
];

/// `html` without the values of its `title` attributes.
fn without_titles(html: &str) -> String {
    let mut parts = html.split("title=\"");
    let mut out = parts.next().unwrap().to_owned();
    for p in parts {
        out.push_str(p.split_once('"').expect("a closed title").1);
    }
    out
}

#[test]
fn the_review_page_shows_hidden_characters_as_markers_and_cuts_overlong_text() {
    let long_theme = format!("Overlong{}", "x".repeat(6000));
    let long_word = format!("overlong{}", "y".repeat(6000));
    let failing = format!("\u{202E}Failing{}", "z".repeat(6000));
    let dir = tempfile::tempdir().unwrap();
    common::write_params(dir.path(), 1, "");
    let themes: [(&str, &[&str]); 5] = [
        // Too few words: fails, and its name is in the failed themes.
        (failing.as_str(), &["lonely"]),
        (
            "\u{202E}gnp.exe",
            &["\u{202E}fdp.exe", "river", "lake", "sea"],
        ),
        (
            "Rivers \u{202A}\u{202B}\u{202C}\u{202D} and \u{2066}\u{2067}\u{2068}\u{2069}",
            &["\u{200E}left\u{200F}", "delta", "stream", "brook"],
        ),
        (
            "Bells\u{0007} and \u{001B}[31mescapes\u{0085}\u{009B}",
            &["ring\u{0007}", "chime", "gong", "tone"],
        ),
        (long_theme.as_str(), &[long_word.as_str(), "x", "xx", "xxx"]),
    ];
    common::write_inputs(dir.path(), &themes);
    let run = finish(puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]));
    assert_eq!(run.code, 0, "{}", run.all());
    let html = std::fs::read_to_string(dir.path().join("out/reports/puzzles.html")).unwrap();
    for c in HIDDEN {
        assert!(
            !html.contains(*c),
            "U+{:04X} raw in the page",
            u32::from(*c)
        );
    }
    for marker in [
        "\u{27E8}U+202E\u{27E9}",
        "\u{27E8}U+0007\u{27E9}",
        "\u{27E8}U+0085\u{27E9}",
    ] {
        assert!(html.contains(marker), "no {marker} in the page");
    }
    assert!(html.contains("Failing"), "the failed theme is not shown");
    // Each overlong text is whole in a title (its marker shown as text), and nowhere else.
    for long in [
        &long_theme,
        &long_word,
        &failing.replace('\u{202E}', "\u{27E8}U+202E\u{27E9}"),
    ] {
        assert!(
            html.contains(&format!("title=\"{long}\"")),
            "{}... not whole in a title",
            &long[..20]
        );
    }
    let shown = without_titles(&html);
    for letter in ["x", "y", "z"] {
        assert!(
            !shown.contains(&letter.repeat(301)),
            "more than 300 {letter}s outside titles"
        );
    }
    assert!(shown.contains('\u{2026}'), "no ellipsis where text was cut");
}
