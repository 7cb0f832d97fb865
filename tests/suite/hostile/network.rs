//! Hostile cases: network. Never silent, never endless: a server that answers 429 forever is
//! reported at the default log level and stops the run at `gemini.stall_timeout`; keys and
//! URLs that cannot work are refused before any work; a refusal no retry can change is not
//! retried and an HTML error page is cut to one line; the summary counts only requests sent.

use std::path::Path;

use mock_gemini::{BlockingMockServer, FixedAnswer, MockConfig, start_blocking};

use crate::common::{self, Finished, KEY, puzzlegen};

fn mock(f: impl FnOnce(&mut MockConfig)) -> BlockingMockServer {
    start_blocking(common::mock_config(3, f)).unwrap()
}

/// A run directory with 4 themes x 8 words (1 puzzle) for the Gemini provider at `base_url`.
fn workspace(base_url: &str, gemini_extra: &str) -> tempfile::TempDir {
    common::gemini_dir(base_url, 4, 8, 1, gemini_extra)
}

/// Runs `puzzlegen run` in `dir` at the default log level with `key` in the key variable.
fn run(dir: &Path, key: &str) -> Finished {
    common::finish(puzzlegen(dir).env("PUZZLEGEN_TEST_KEY", key).args([
        "run",
        "--config",
        "params.yaml",
    ]))
}

#[test]
fn a_server_answering_429_forever_stops_the_run_at_the_stall_timeout() {
    let server = mock(|m| m.rate_429 = 1.0);
    let dir = workspace(&server.base_url(), "  stall_timeout: 2\n");
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr
            .contains("no request to the embedding API succeeded for 2 s (gemini.stall_timeout)")
            && r.stderr.contains("last error: rate limited"),
        "{}",
        r.all()
    );
    // 2 s of stall, plus start-up and the 5 s shutdown grace at most: never the
    // rounds x task_timeout_seconds (120 s) of old.
    assert!(r.seconds < 15.0, "{:.1} s\n{}", r.seconds, r.all());
    // The pauses were reported at the default level, not only with -v.
    assert!(
        r.stderr
            .contains("rate limited by the API (HTTP 429): pausing all requests for 1.0 s"),
        "{}",
        r.all()
    );
    assert!(server.stats().responses_429 > 0);
}

#[test]
fn nothing_listening_is_one_line_per_cause_and_honest_figures() {
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let dir = common::gemini_dir(&url, 8, 8, 2, "  stall_timeout: 3\n");
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 3, "{}", r.all());
    // Many retries, each a line at debug; at the default level the first, and the themes and
    // puzzles it failed counted in one line each.
    let connect_warnings = r
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot connect"))
        .count();
    let theme_lines = r
        .stderr
        .lines()
        .filter(|l| l.contains("WARN theme"))
        .count();
    let puzzle_lines = r
        .stderr
        .lines()
        .filter(|l| l.contains("WARN puzzle"))
        .count();
    assert!(
        connect_warnings <= 3 && theme_lines <= 1 && puzzle_lines == 0,
        "{}",
        r.all()
    );
    assert!(
        r.stderr.contains("more theme(s) failed the same way"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr
            .contains("2 puzzle(s) not made because the run stopped"),
        "{}",
        r.all()
    );
    // Time held by the limiter cannot exceed the run's time.
    let line = r.stdout.lines().find(|l| l.starts_with("api:")).unwrap();
    let held: f64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" s with requests held by the limiter"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limiter figure in {line}"));
    assert!(
        held <= r.seconds,
        "{held} s held in {:.1} s: {line}",
        r.seconds
    );
    // A stopped run gets no advice about its limits.
    assert!(!r.stdout.contains("limits:"), "{}", r.all());
}

#[test]
fn a_server_that_never_answers_stops_the_run_at_the_stall_timeout() {
    let server = mock(|m| m.rate_hang = 1.0);
    let dir = workspace(
        &server.base_url(),
        "  stall_timeout: 2\n  request_timeout: 0.5\n",
    );
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr
            .contains("no request to the embedding API succeeded for 2 s")
            && r.stderr
                .contains("last error: embedding failed: request timed out"),
        "{}",
        r.all()
    );
    assert!(r.seconds < 15.0, "{:.1} s\n{}", r.seconds, r.all());
    // The timeouts were reported as they happened, at the default level.
    assert!(
        r.stderr.contains("request timed out") && r.stderr.contains("; retrying"),
        "{}",
        r.all()
    );
}

#[test]
fn rate_limit_pauses_are_reported_at_the_default_level_a_line_every_few_seconds() {
    let server = mock(|m| m.rate_429 = 0.5);
    let dir = workspace(&server.base_url(), "  batch_size: 2\n");
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 0, "{}", r.all());
    let pauses = server.stats().responses_429;
    assert!(pauses >= 3, "the mock should have refused some: {pauses}");
    let lines = r
        .stderr
        .lines()
        .filter(|l| l.contains("rate limited by the API (HTTP 429): pausing all requests"))
        .count();
    assert!(lines >= 1, "no 429 line at the default level:\n{}", r.all());
    // Rate-limited: at most one line per 5 s, plus the first.
    let most = (r.seconds / 5.0).ceil() as usize + 1;
    assert!(
        lines <= most,
        "{lines} lines for {pauses} x 429 in {:.1} s:\n{}",
        r.seconds,
        r.all()
    );
    assert!(r.stderr.contains("so far)"), "{}", r.all());
}

#[test]
fn a_key_with_a_line_break_is_refused_before_any_work_without_showing_it() {
    let server = mock(|_| {});
    let dir = workspace(&server.base_url(), "");
    let key = "sekrit-part-one\r\nX-Injected: sekrit-part-two";
    let r = run(dir.path(), key);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("PUZZLEGEN_TEST_KEY") && r.stderr.contains("line break"),
        "{}",
        r.all()
    );
    assert!(
        !r.all().contains("sekrit"),
        "the key was echoed:\n{}",
        r.all()
    );
    assert!(r.seconds < 10.0, "{:.1} s", r.seconds);
    assert_eq!(server.stats().requests, 0);
    assert!(!dir.path().join("out/final_puzzles.json").exists());

    // A key that is not ASCII cannot travel in a header either.
    let r = run(dir.path(), "sekrit-clé");
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("non-ASCII"), "{}", r.all());
    assert!(!r.all().contains("sekrit"), "{}", r.all());

    // An empty variable is "empty", not "not set".
    let r = run(dir.path(), "  ");
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("PUZZLEGEN_TEST_KEY is empty"),
        "{}",
        r.all()
    );
    assert_eq!(server.stats().requests, 0);
}

#[test]
fn a_base_url_that_is_not_a_url_is_refused_at_load() {
    let dir = workspace("\"not a url\"", "");
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("gemini.base_url")
            && r.stderr.contains("not a url")
            && r.stderr.contains("http://"),
        "{}",
        r.all()
    );
    assert!(!r.stderr.contains("builder error"), "{}", r.all());
    assert!(r.seconds < 5.0, "{:.1} s", r.seconds);

    // The OpenAI-compatible provider's URL too.
    let params = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(&params)
        .unwrap()
        .replace("\"not a url\"", "http://127.0.0.1:9")
        .replace(
            "embedding:\n  provider: gemini\n",
            "embedding:\n  provider: openai\n  openai:\n    base_url: localhost:11434\n    model: m\n",
        );
    std::fs::write(&params, yaml).unwrap();
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("embedding.openai.base_url"),
        "{}",
        r.all()
    );
}

#[test]
fn http_431_is_not_retried_and_an_html_page_is_cut_to_one_line() {
    let server = mock(|m| {
        m.fixed_answer = Some(FixedAnswer::html(
            431,
            "Request Header Fields Too Large",
            560,
        ))
    });
    let dir = workspace(&server.base_url(), "");
    let r = run(dir.path(), KEY);
    assert_eq!(r.code, 3, "{}", r.all());
    let requests = server.stats().requests;
    // One request per batch in flight at most (4 at once), none retried.
    assert!(requests <= 4, "{requests} requests: 431 was retried");
    assert!(
        r.stderr
            .contains("HTTP 431): 431 Request Header Fields Too Large (the request headers are too large: check the API key in the environment variable PUZZLEGEN_TEST_KEY)"),
        "{}",
        r.all()
    );
    assert!(
        !r.stderr.contains('<') && !r.stderr.contains("padding line"),
        "HTML reached the terminal:\n{}",
        r.all()
    );
    assert!(
        r.stderr.lines().count() < 30,
        "{} lines on stderr:\n{}",
        r.stderr.lines().count(),
        r.all()
    );
    assert!(!r.all().contains(KEY));
}

#[test]
fn requests_that_never_left_are_not_counted() {
    // A port nobody listens on: every connection is refused, nothing is sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = workspace(&format!("http://127.0.0.1:{port}"), "  stall_timeout: 3\n");
    let r = run(dir.path(), KEY);
    assert!(
        r.stdout.contains("api:     0 requests, 0 texts sent"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("cannot connect"), "{}", r.all());
    // The metadata agrees, wherever this run's outputs went (but they went somewhere).
    let written: Vec<&str> = [
        "out/puzzle_metadata.json",
        "out/partial/puzzle_metadata.json",
    ]
    .into_iter()
    .filter(|path| dir.path().join(path).is_file())
    .collect();
    assert_eq!(written.len(), 1, "{written:?}\n{}", r.all());
    for path in written {
        let v = common::read_json(&dir.path().join(path));
        assert_eq!(
            v["multiprocessing_stats"]["rate_limiter_stats"]["total_requests"], 0,
            "{path}"
        );
    }
}
