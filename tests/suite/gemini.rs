//! The Gemini and OpenAI-compatible providers against the mock server, through the real
//! `puzzlegen` binary. Every claim is checked from the mock's own counters.

use std::path::Path;
use std::process::Command as StdCommand;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mock_gemini::{BlockingMockServer, MockConfig, QuotaUnit, Stats, start_blocking};
use puzzlegen::service::EmbeddingService;
use serde_json::Value;

use crate::common::{self, KEY, puzzlegen};

/// A mock with `mock` settings and a run directory holding a workload of `themes` x `words`
/// for `puzzles` puzzles, configured for that mock.
fn setup(
    mock: MockConfig,
    themes: usize,
    words: usize,
    puzzles: usize,
    gemini_extra: &str,
) -> (BlockingMockServer, tempfile::TempDir) {
    let server = start_blocking(mock).unwrap();
    let dir = common::gemini_dir(&server.base_url(), themes, words, puzzles, gemini_extra);
    (server, dir)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    puzzles: String,
    stats: Stats,
    seconds: f64,
}

/// Runs the 12-theme workload (3 puzzles) against a mock with `mock` settings.
fn run_against(
    mock: MockConfig,
    gemini_extra: &str,
) -> (Run, tempfile::TempDir, BlockingMockServer) {
    let (server, dir) = setup(mock, 12, 15, 3, gemini_extra);
    let run = run_in(dir.path(), &server);
    (run, dir, server)
}

/// Runs puzzlegen in `dir` (set up by [`setup`]) and collects what it did.
fn run_in(dir: &Path, server: &BlockingMockServer) -> Run {
    let t = Instant::now();
    let out = puzzlegen(dir)
        .args(["run", "--config", "params.yaml"])
        .output()
        .unwrap();
    let seconds = t.elapsed().as_secs_f64();
    let puzzles = std::fs::read_to_string(dir.join("out/final_puzzles.json")).unwrap_or_default();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        puzzles,
        stats: server.stats(),
        seconds,
    }
}

/// Fault-free reference output for the 12-theme workload: run once, shared by every test
/// that compares with it.
fn reference() -> &'static str {
    static REFERENCE: OnceLock<String> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let (run, _dir, _server) = run_against(
            MockConfig {
                dimension: 768,
                ..MockConfig::default()
            },
            "",
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.puzzles
    })
}

fn assert_complete_and_equal(run: &Run, reference: &str, what: &str) {
    assert_eq!(
        run.code, 0,
        "{what}: exit {}\n{}\n{}",
        run.code, run.stdout, run.stderr
    );
    let p: Value = serde_json::from_str(&run.puzzles).unwrap();
    assert_eq!(p.as_object().unwrap().len(), 3, "{what}");
    assert_eq!(
        run.puzzles, reference,
        "{what}: output differs from a fault-free run"
    );
    assert_eq!(
        run.stats.duplicate_texts, 0,
        "{what}: a text was embedded twice: {:?}",
        run.stats
    );
    assert_eq!(
        run.stats.distinct_texts_embedded,
        12 * 16,
        "{what}: {:?}",
        run.stats
    );
}

fn faults(f: impl FnOnce(&mut MockConfig)) -> MockConfig {
    common::mock_config(7, f)
}

// Small batches (2 texts) make ~100 requests per run, so rare faults do happen.
const SMALL_BATCHES: &str = "  batch_size: 2\n";

#[test]
fn survives_a_429_storm() {
    let reference = reference();
    // Each storm 429 asks for a 200 ms pause (the API's usual 1 s would make this test the
    // suite's slowest by far; the pacing logic is the same).
    let storm = faults(|m| {
        m.rate_429 = 0.3;
        m.storm_retry_delay = Duration::from_millis(200);
    });
    let (run, _d, _s) = run_against(storm, SMALL_BATCHES);
    assert_complete_and_equal(&run, reference, "429 storm at 30%");
    assert!(run.stats.responses_429 > 0, "{:?}", run.stats);
    assert!(run.stdout.contains(" x 429"), "{}", run.stdout);
}

#[test]
fn survives_server_errors() {
    let reference = reference();
    let (run, _d, _s) = run_against(
        faults(|m| {
            m.rate_500 = 0.1;
            m.rate_503 = 0.1
        }),
        SMALL_BATCHES,
    );
    assert_complete_and_equal(&run, reference, "5xx at 20%");
    assert!(run.stats.responses_5xx > 0, "{:?}", run.stats);
}

#[test]
fn survives_hanging_requests_within_bounded_time() {
    let reference = reference();
    let (run, _d, _s) = run_against(faults(|m| m.rate_hang = 0.04), SMALL_BATCHES);
    assert_complete_and_equal(&run, reference, "hangs");
    assert!(run.stats.hangs > 0, "{:?}", run.stats);
    // Each hang costs one request timeout (1 s) plus back-off, never the whole run.
    assert!(run.seconds < 60.0, "took {:.1} s", run.seconds);
}

#[test]
fn survives_garbage_answers() {
    let reference = reference();
    let (run, _d, _s) = run_against(
        faults(|m| {
            m.rate_truncated = 0.0125;
            m.rate_wrong_count = 0.0125;
            m.rate_wrong_dimension = 0.0125;
            m.rate_nan = 0.0125;
        }),
        SMALL_BATCHES,
    );
    assert_complete_and_equal(&run, reference, "garbage at 5%");
    assert!(run.stats.faults_injected > 0, "{:?}", run.stats);
}

#[test]
fn wrong_key_stops_at_once_without_showing_the_key() {
    let mock = MockConfig {
        dimension: 768,
        api_key: Some("the-right-key".into()),
        ..MockConfig::default()
    };
    let (run, dir, _s) = run_against(mock, "");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.seconds < 10.0, "took {:.1} s", run.seconds);
    assert!(run.stderr.contains("API key not valid"), "{}", run.stderr);
    // One line per cause: the error, the first theme it failed, the count of the others, the
    // puzzles not made, the exit line.
    let warnings = run.stderr.lines().filter(|l| l.contains("WARN")).count();
    let key_lines = run.stderr.matches("API key not valid").count();
    assert!(warnings <= 3 && key_lines <= 4, "{}", run.stderr);
    assert!(
        run.stats.requests <= 4,
        "kept calling with a bad key: {:?}",
        run.stats
    );
    assert!(!run.stderr.contains(KEY) && !run.stdout.contains(KEY));
    assert_key_absent_from(dir.path());
}

fn assert_key_absent_from(dir: &Path) {
    for entry in common::files_under(dir) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(KEY), "the API key is in {}", entry.display());
    }
}

#[test]
fn key_appears_in_no_log_line_or_output_file() {
    // Debug logging and some failures, so that retries and errors are logged too.
    let (_server, dir) = setup(faults(|m| m.rate_500 = 0.2), 12, 15, 3, SMALL_BATCHES);
    let out = puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml", "-vv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.lines().count() > 5, "expected debug logs:\n{logs}");
    assert!(!logs.contains(KEY), "key in the logs");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(KEY));
    assert!(common::files_under(dir.path()).len() >= 6);
    assert_key_absent_from(dir.path());
}

#[test]
fn daily_quota_stops_gracefully_and_names_the_quota() {
    let mock = MockConfig {
        dimension: 768,
        quota_per_day: Some(40),
        quota_unit: QuotaUnit::Texts,
        ..MockConfig::default()
    };
    let (run, dir, _s) = run_against(mock, "  batch_size: 10\n");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("PerDay"), "{}", run.stderr);
    assert!(run.seconds < 20.0, "took {:.1} s", run.seconds);
    // A run that stopped early writes its outputs to out/partial/.
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/partial/puzzle_metadata.json")).unwrap(),
    )
    .unwrap();
    assert!(!meta["failed_puzzles"].as_array().unwrap().is_empty());
    // Whatever was embedded before the quota ran out is in the cache CSV, once.
    let csv = std::fs::read_to_string(dir.path().join("out/partial/all_embeddings.csv")).unwrap();
    assert!(run.stats.distinct_texts_embedded > 0, "{:?}", run.stats);
    assert_eq!(
        csv.lines().count() - 1,
        run.stats.distinct_texts_embedded as usize,
        "{:?}",
        run.stats
    );
}

#[test]
fn openai_compatible_endpoint_works() {
    let server = start_blocking(MockConfig {
        dimension: 256,
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    common::write_workload(dir.path(), 8, 10);
    std::fs::write(
        dir.path().join("params.yaml"),
        format!(
            "puzzle_generation:\n  total_puzzle_count: 2\n\
             embedding:\n  provider: openai\n  openai:\n    base_url: {}/v1\n    model: nomic-embed-text\n    api_key_env: PUZZLEGEN_TEST_KEY\n\
             paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n  cache: cache\n",
            server.base_url()
        ),
    )
    .unwrap();
    puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml"])
        .assert()
        .success();
    let p: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/final_puzzles.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(p["puzzle_2"]["words"].as_array().unwrap().len(), 16);
    let s = server.stats();
    assert_eq!(s.duplicate_texts, 0);
    // 8 x 11 texts + the dimension probe.
    assert_eq!(s.distinct_texts_embedded, 8 * 11 + 1);
}

#[test]
fn sigterm_writes_partial_outputs_and_exits_cleanly() {
    let mock = MockConfig {
        dimension: 768,
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    };
    let (server, dir) = setup(
        mock,
        12,
        15,
        3,
        "  batch_size: 4\n  min_request_interval: 0.25\n",
    );
    let mut child = common::spawn_run(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run should still be going"
    );
    let signalled_ms = unix_ms();
    let sent = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status.code(),
        Some(130),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopped: interrupted"), "{stdout}");
    // A run that stopped early writes its outputs to out/partial/.
    for f in [
        "out/partial/final_puzzles.json",
        "out/partial/puzzle_metadata.json",
        "out/partial/embedding_analysis.json",
    ] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        serde_json::from_str::<Value>(&text).unwrap();
    }
    // No request starts after the signal (requests in flight finish; 250 ms of slack for the
    // signal to be handled), and nothing keeps calling the server after the process is gone.
    let last = server.stats().last_request_unix_ms.unwrap();
    assert!(
        last <= signalled_ms + 250,
        "a request started {} ms after SIGTERM",
        last - signalled_ms
    );
    let before = server.stats().requests;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(server.stats().requests, before);
    assert_eq!(server.stats().in_flight, 0);
}

/// Milliseconds since the UNIX epoch, as the mock's request times.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The per-minute budget over whole windows, below the binary: the Gemini provider and the
/// embedding service as a run builds them (4 requests at once, batches of up to 100, 1 s
/// request timeout, 6 retries), with the limiter's "minute" and the mock's shortened from 60 s
/// to [`WINDOW`] and the same numbers per window as the ~70 s end-to-end run this replaces:
/// a budget of 1200 texts a window, a mock enforcing exactly that, 1440 texts (more than a
/// window of work). No 429, no window over budget, concurrency kept, the budget filled.
#[test]
fn rate_limit_is_filled_but_never_broken() {
    const WINDOW: Duration = Duration::from_secs(5);
    let server = common::window_budget_mock(WINDOW);
    // The 40 x 35 workload: each theme and its words.
    let texts: Vec<String> = (0..40)
        .flat_map(|t| {
            std::iter::once(format!("Theme {t:03}"))
                .chain((0..35).map(move |i| format!("word{t}x{i}")))
        })
        .collect();
    let options = common::window_budget_options(WINDOW);
    let provider = common::window_budget_provider(&server.base_url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seconds = runtime.block_on(async {
        let service = EmbeddingService::new(Arc::new(provider), options);
        let t = Instant::now();
        let vectors = service.embed(&texts).await.unwrap();
        let seconds = t.elapsed().as_secs_f64();
        assert_eq!(vectors.len(), 40 * 36);
        service.shutdown(Duration::from_secs(1)).await;
        seconds
    });
    common::assert_budget_filled_never_broken(&server.stats(), 40 * 36, seconds, WINDOW);
}

/// The same property end to end, with the real 60 s minute: the budget of params.yaml binds
/// the binary's requests. 180 texts at 1200 a minute (a burst of 100, then 1100 a minute)
/// cannot take less than (180 - 100) / 1100 * 60 = 4.4 s, and no 1 s window holds more than
/// 100 + 1100 / 60 = 118.3 texts (120 allowed for the time a request takes to reach the
/// mock, which enforces that over every 1 s window).
#[test]
fn rate_limit_of_the_config_binds_the_binary() {
    let mock = common::quota_mock_config();
    let (server, dir) = setup(
        mock,
        12,
        14,
        3,
        "  requests_per_minute: 1200\n  rpm_counts: items\n",
    );
    let run = run_in(dir.path(), &server);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = run.stats;
    assert_eq!(s.responses_429, 0, "{s:?}");
    assert!(s.max_texts_in_any_60s <= 120, "{s:?}");
    assert!(s.peak_concurrency <= 4, "{s:?}");
    assert_eq!(s.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, 12 * 15);
    assert!(
        run.seconds > 4.3,
        "{:.1} s: the limiter did not bind",
        run.seconds
    );
    assert!(
        run.seconds < 15.0,
        "{:.1} s: the budget was not filled",
        run.seconds
    );
    // The summary: time held by the limiter is wall-clock time (at most the run's), and a
    // run the limiter held back names the setting.
    let figure = |line: &str, before: &str| -> f64 {
        let l = run.stdout.lines().find(|l| l.starts_with(line)).unwrap();
        let at = l
            .find(before)
            .unwrap_or_else(|| panic!("{before:?} in {l}"));
        let start = l[..at].rfind(' ').unwrap() + 1;
        l[start..at].parse().unwrap()
    };
    let held = figure("api:", " s with requests held by the limiter");
    let wall = figure("time:", " s wall");
    assert!(held <= wall && held > wall / 2.0, "{}", run.stdout);
    let limits = run.stdout.lines().find(|l| l.starts_with("limits:"));
    assert!(
        limits.is_some_and(|l| l.contains("gemini.requests_per_minute, which counts texts")),
        "{}",
        run.stdout
    );
}
