//! Nothing paid for is lost: runs killed with SIGKILL resume with the remaining work only, and
//! two processes share one cache file. Every claim is checked against the mock server's own
//! counters and the database itself.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use mock_gemini::{BlockingMockServer, MockConfig, start_blocking};
use puzzlegen::cache::store::Store;
use puzzlegen::embed::{Space, normalize};

use crate::common;

const THEMES: usize = 24;
const WORDS: usize = 20;
/// Texts of the workload: each theme and its words.
const TEXTS: u64 = (THEMES * (WORDS + 1)) as u64;
const DIMENSION: usize = 768;
/// 10 texts per request: about 51 requests for the workload; a rate limit far above what the
/// mock can serve, so the runs are quick.
const GEMINI: &str = "  batch_size: 10\n  request_timeout: 30\n  requests_per_minute: 1000000\n";

fn space() -> Space {
    Space {
        model_id: "gemini-embedding-001".into(),
        dimension: DIMENSION,
        task_type: "SEMANTIC_SIMILARITY".into(),
    }
}

fn setup(server: &BlockingMockServer) -> tempfile::TempDir {
    common::gemini_dir(&server.base_url(), THEMES, WORDS, 6, GEMINI)
}

/// Waits for a run to end; returns its exit code, stdout and stderr.
fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the job in `dir` to the end; it must succeed. Returns its stdout.
fn run_to_end(dir: &Path) -> String {
    let (code, stdout, stderr) = finish(common::spawn_run(dir));
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// Rows of the test space in the cache database of `dir` (0 if there is none yet).
fn rows(db: &Path) -> u64 {
    if !db.exists() {
        return 0;
    }
    Store::open_existing(db)
        .unwrap()
        .spaces()
        .unwrap()
        .iter()
        .filter(|s| s.space == space())
        .map(|s| s.entries)
        .sum()
}

/// Polls `done` every 10 ms for up to a minute; panics with `what` if it never holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const OUTPUTS: [&str; 2] = ["out/final_puzzles.json", "out/puzzle_embeddings.csv"];

/// The cache CSV's vectors by text key (its row order, timestamps and which theme a shared
/// word is credited to depend on timing).
fn cache_csv_vectors(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let csv = std::fs::read_to_string(dir.join("cache/all_embeddings.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("word,theme,word_type,"));
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            (fields[0].trim().to_lowercase(), fields[5..].join(","))
        })
        .collect()
}

#[test]
fn runs_killed_at_several_points_finish_the_rest_without_paying_twice() {
    // The reference: one uninterrupted run.
    let reference_server = start_blocking(MockConfig::default()).unwrap();
    let reference = setup(&reference_server);
    run_to_end(reference.path());
    let requests_needed = reference_server.stats().responses_ok;
    assert!(requests_needed >= 40, "{requests_needed} requests");

    // The same job, killed three times, then run to the end.
    let server = start_blocking(MockConfig::default()).unwrap();
    let dir = setup(&server);
    let db = dir.path().join("cache/embeddings.sqlite3");
    for answered in [2, requests_needed / 3, requests_needed * 2 / 3] {
        server.hold_after(Some(answered));
        let mut child = common::spawn_run(dir.path());
        // Stopped at a known point: `answered` answers given, the next request waiting at
        // the gate, and every answered text committed to the database.
        wait_for(&format!("{answered} answers"), || {
            let s = server.stats();
            s.responses_ok == answered && server.held() > 0 && rows(&db) == s.texts_embedded
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let journal = std::fs::read_to_string(dir.path().join("out/run_journal.jsonl")).unwrap();
    assert!(
        journal.lines().count() > 1,
        "themes finished before the kills are journalled: {journal}"
    );
    server.hold_after(None);
    let stdout = run_to_end(dir.path());
    assert!(stdout.contains("resumed from the journal"), "{stdout}");

    let s = server.stats();
    assert_eq!(
        s.duplicate_texts, 0,
        "a text was paid for twice across the runs: {s:?}"
    );
    assert_eq!(s.distinct_texts_embedded, TEXTS, "{s:?}");
    assert_eq!(rows(&db), TEXTS);
    let ours = cache_csv_vectors(dir.path());
    assert_eq!(ours.len() as u64, TEXTS);
    assert!(
        ours == cache_csv_vectors(reference.path()),
        "the cache CSV's vectors differ from the uninterrupted run's"
    );
    for file in OUTPUTS {
        let ours = std::fs::read(dir.path().join(file)).unwrap();
        let theirs = std::fs::read(reference.path().join(file)).unwrap();
        assert!(
            ours == theirs,
            "{file} differs from the uninterrupted run's"
        );
    }
    assert!(
        !dir.path().join("out/run_journal.jsonl").exists(),
        "a complete run removes its journal"
    );
}

#[test]
fn a_restart_after_the_last_answer_makes_no_request_at_all() {
    let server = start_blocking(MockConfig::default()).unwrap();
    let dir = setup(&server);
    run_to_end(dir.path());
    let first = server.stats();
    // Outputs lost, cache kept: a second run pays for nothing.
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    run_to_end(dir.path());
    assert_eq!(server.stats().requests, first.requests, "no new request");
    assert!(dir.path().join("out/final_puzzles.json").is_file());
}

#[test]
fn two_processes_share_one_cache_file() {
    let server = start_blocking(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .unwrap();
    let shared = tempfile::tempdir().unwrap();
    let db: PathBuf = shared.path().join("shared.sqlite3");
    // Two jobs whose themes overlap by half: 0..24 and 12..36 of one 36-theme workload.
    let extra = format!(
        "  batch_size: 5\n  requests_per_minute: 1000000\ncache:\n  path: {}\n",
        db.display()
    );
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| common::gemini_dir(&server.base_url(), 36, WORDS, 6, &extra))
        .collect();
    for (i, d) in dirs.iter().enumerate() {
        let themes: Vec<String> = (i * 12..i * 12 + 24)
            .map(|t| format!("Theme {t:03}"))
            .collect();
        std::fs::write(
            d.path().join("themes.json"),
            serde_json::json!({ "themes": themes }).to_string(),
        )
        .unwrap();
    }
    let children: Vec<Child> = dirs.iter().map(|d| common::spawn_run(d.path())).collect();
    for child in children {
        let (code, _, stderr) = finish(child);
        assert_eq!(code, 0, "{stderr}");
        assert!(!stderr.contains("cache:"), "cache trouble: {stderr}");
    }

    // Every text of both jobs is stored once, with the vector the server gave for it.
    let store = Store::open_existing(&db).unwrap();
    let mut texts: Vec<String> = Vec::new();
    for t in 0..36 {
        texts.push(format!("Theme {t:03}"));
        texts.extend((0..WORDS).map(|i| format!("word{t}x{i}")));
    }
    assert_eq!(rows(&db), texts.len() as u64, "one row per text");
    let keys: Vec<String> = texts.iter().map(|t| puzzlegen::cache::key(t)).collect();
    let stored = store.get_many(&space(), &keys).unwrap();
    for (text, v) in texts.iter().zip(stored) {
        let v = v.unwrap_or_else(|| panic!("{text:?} missing"));
        let mut expected = mock_gemini::vectors::gemini_embedding(text, DIMENSION);
        normalize(&mut expected);
        assert_eq!(&*v, &expected[..], "{text:?}");
    }
}
