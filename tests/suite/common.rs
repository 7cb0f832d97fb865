//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key the tests give the mock server and puzzlegen.
pub const KEY: &str = "test-KEY-sekrit-4711";

/// The `puzzlegen` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_puzzlegen"))
}

/// `puzzlegen` to run in `dir`, as every test runs it: the test key in `PUZZLEGEN_TEST_KEY`,
/// nothing from the caller's `RUST_LOG` or `GOOGLE_GEMINI_BASE_URL`, backtraces on, no stdin.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    test_env(&mut cmd, dir);
    cmd
}

/// `wrapper` (a program and its arguments) followed by the path of `puzzlegen`, in `dir` with
/// the environment of [`command`]: a shell that sets a limit and `exec "$0"`, a tool that drops
/// capabilities, and so on.
pub fn wrapped(dir: &Path, wrapper: &[&str]) -> Command {
    let (program, args) = wrapper.split_first().expect("a wrapper program");
    let mut cmd = Command::new(program);
    cmd.args(args).arg(bin());
    test_env(&mut cmd, dir);
    cmd
}

fn test_env(cmd: &mut Command, dir: &Path) {
    cmd.current_dir(dir)
        .env("PUZZLEGEN_TEST_KEY", KEY)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .env_remove("GOOGLE_GEMINI_BASE_URL")
        .env_remove("REDIS_PASSWORD")
        .stdin(Stdio::null());
}

/// [`command`] for `assert_cmd`, killed if it runs for more than 180 s.
pub fn puzzlegen(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(command(dir));
    cmd.timeout(Duration::from_secs(180));
    cmd
}

/// What a finished `puzzlegen` did.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl Finished {
    /// Exit code, stdout and stderr, for assertion messages.
    pub fn all(&self) -> String {
        format!("exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to the end and collects what it did.
pub fn finish(cmd: &mut assert_cmd::Command) -> Finished {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// Starts `puzzlegen run --config params.yaml` in `dir` ([`command`]), its output piped.
pub fn spawn_run(dir: &Path) -> std::process::Child {
    command(dir)
        .args(["run", "--config", "params.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `cmd`, a user error: exit 2 with exactly one `error:` line, containing `needle`, and
/// no panic. Returns stderr.
pub fn assert_user_error(cmd: &mut assert_cmd::Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(needle),
        "expected {needle:?} in {stderr}"
    );
    stderr
}

/// A mock configuration of 768-dimension vectors with fault seed `seed`, then changed by `f`.
pub fn mock_config(
    seed: u64,
    f: impl FnOnce(&mut mock_gemini::MockConfig),
) -> mock_gemini::MockConfig {
    let mut m = mock_gemini::MockConfig {
        dimension: 768,
        seed,
        ..mock_gemini::MockConfig::default()
    };
    f(&mut m);
    m
}

/// A new directory holding a workload of `themes` x `words` (see [`write_workload`]) for
/// `puzzles` puzzles, configured for the Gemini provider at `base_url` (see
/// [`write_gemini_params`]).
pub fn gemini_dir(
    base_url: &str,
    themes: usize,
    words: usize,
    puzzles: usize,
    gemini_extra: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_workload(dir.path(), themes, words);
    write_gemini_params(dir.path(), puzzles, base_url, gemini_extra);
    dir
}

/// The files under `dir` holding `secret` (raw bytes: SQLite databases included).
pub fn files_holding(dir: &Path, secret: &str) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
        })
        .map(|f| f.display().to_string())
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(files_under(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// The parsed JSON file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The local model directory fetched by scripts/fetch-model.sh; fails with how to get it.
pub fn model_dir() -> PathBuf {
    fetched_model("all-MiniLM-L6-v2", "scripts/fetch-model.sh")
}

/// all-mpnet-base-v2, fetched by `scripts/fetch-model.sh all-mpnet-base-v2`.
pub fn mpnet_dir() -> PathBuf {
    fetched_model(
        "all-mpnet-base-v2",
        "scripts/fetch-model.sh all-mpnet-base-v2",
    )
}

/// `models/<name>`; fails with the command that fetches it when it is missing.
fn fetched_model(name: &str, fetch: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "the local model is missing from {}: run {fetch} (scripts/test does it)",
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

/// A workload of `themes` themes with `words` distinct candidates each, in `dir`.
pub fn write_workload(dir: &Path, themes: usize, words: usize) {
    write_workload_named(
        dir,
        themes,
        words,
        |t| format!("Theme {t:03}"),
        |t, i| format!("word{t}x{i}"),
    );
}

/// As [`write_workload`], with theme `t` named `theme(t)` and its word `i` named `word(t, i)`.
pub fn write_workload_named(
    dir: &Path,
    themes: usize,
    words: usize,
    theme: impl Fn(usize) -> String,
    word: impl Fn(usize, usize) -> String,
) {
    let names: Vec<String> = (0..themes).map(&theme).collect();
    let mut cands = serde_json::Map::new();
    for (t, name) in names.iter().enumerate() {
        let w: Vec<String> = (0..words).map(|i| word(t, i)).collect();
        cands.insert(name.clone(), serde_json::json!({ "words": w }));
    }
    std::fs::write(
        dir.join("themes.json"),
        serde_json::json!({ "themes": names }).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("candidates.json"),
        serde_json::json!({ "candidates": cands }).to_string(),
    )
    .unwrap();
}

/// params.yaml for the Gemini provider at `base_url` (key in the `PUZZLEGEN_TEST_KEY`
/// variable), with `gemini_extra` lines appended to the `gemini:` section. Requests time out
/// after 1 s unless `gemini_extra` sets `request_timeout`.
pub fn write_gemini_params(
    dir: &Path,
    puzzles: usize,
    base_url: &str,
    gemini_extra: &str,
) -> PathBuf {
    let p = dir.join("params.yaml");
    let timeout = if gemini_extra.contains("request_timeout") {
        ""
    } else {
        "  request_timeout: 1\n"
    };
    std::fs::write(
        &p,
        format!(
            "puzzle_generation:\n  total_puzzle_count: {puzzles}\n\
             embedding:\n  provider: gemini\n\
             gemini:\n  base_url: {base_url}\n  api_key_env: PUZZLEGEN_TEST_KEY\n  \
             embedding_dimension: 768\n  retry_base_delay: 0.05\n  max_retries: 6\n\
             {timeout}{gemini_extra}\
             multiprocessing:\n  worker_count: 4\n  max_concurrent_requests: 4\n  task_timeout_seconds: 120\n\
             paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n  cache: cache\n"
        ),
    )
    .unwrap();
    p
}

/// The name of an environment variable already set whose value a header can carry (printable
/// ASCII): it serves as the "API key" for a mock that checks none, since setting a variable in
/// a threaded test is unsound.
pub fn any_key_variable() -> String {
    std::env::vars()
        .find(|(_, v)| !v.trim().is_empty() && v.chars().all(|c| (' '..='~').contains(&c)))
        .map(|(name, _)| name)
        .expect("no environment variable of printable ASCII")
}

/// The budget of 1,200 texts a `window` (a 100-text burst, concurrency 4) against a mock with
/// that quota: no 429, no window over 1,200 texts and the busiest at least 1,100 (filled), no
/// text twice, all `texts` embedded, and, since they cannot all fit in one window, the run
/// took longer than a window.
pub fn assert_budget_filled_never_broken(
    s: &mock_gemini::Stats,
    texts: u64,
    seconds: f64,
    window: std::time::Duration,
) {
    assert_eq!(s.responses_429, 0, "{s:?}");
    assert!(s.max_texts_in_any_60s <= 1200, "{s:?}");
    assert!(
        s.max_texts_in_any_60s >= 1100,
        "the budget was not filled: {s:?}"
    );
    assert!(s.peak_concurrency <= 4, "{s:?}");
    assert_eq!(s.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, texts, "{s:?}");
    assert!(
        seconds > window.as_secs_f64(),
        "{seconds:.1} s: the limiter did not bind"
    );
}

/// A mock (768 dims, 100 ms latency) enforcing a quota of 1,200 texts per `window`.
pub fn window_budget_mock(window: Duration) -> mock_gemini::BlockingMockServer {
    mock_gemini::start_blocking(mock_gemini::MockConfig {
        dimension: 768,
        latency: Duration::from_millis(100),
        quota_per_minute: Some(1200),
        quota_unit: mock_gemini::QuotaUnit::Texts,
        quota_window: window,
        ..mock_gemini::MockConfig::default()
    })
    .unwrap()
}

/// The service a run builds, with a budget of 1,200 texts a `window` (its "minute"): 4
/// requests at once, batches of up to 100, 6 retries.
pub fn window_budget_options(window: Duration) -> puzzlegen::service::ServiceOptions {
    use puzzlegen::limit::{LimitSettings, RpmCounts};
    puzzlegen::service::ServiceOptions {
        limits: LimitSettings {
            requests_per_minute: 1200.0,
            rpm_counts: RpmCounts::Items,
            min_request_interval: Duration::ZERO,
            tokens_per_minute: None,
            max_concurrent_requests: 4,
            window,
        },
        max_retries: 6,
        retry_base_delay: Duration::from_millis(50),
        linger: Duration::from_millis(20),
        batch_size: 100,
        stall_timeout: puzzlegen::service::DEFAULT_STALL_TIMEOUT,
    }
}

/// The Gemini provider against the mock at `base_url` (768 dims, 1 s request timeout).
pub fn window_budget_provider(base_url: &str) -> puzzlegen::embed::gemini::GeminiProvider {
    use puzzlegen::embed::gemini::{GeminiOptions, GeminiProvider};
    GeminiProvider::new(&GeminiOptions {
        base_url: base_url.to_owned(),
        model_id: "gemini-embedding-001".into(),
        dimension: 768,
        task_type: "SEMANTIC_SIMILARITY".into(),
        api_key_env: any_key_variable(),
        request_timeout: Duration::from_secs(1),
    })
    .unwrap()
}

/// A mock of 768 dimensions, 100 ms a request, whose quota is 120 texts a minute counted over
/// 1 s windows (so that a budget is checked within seconds).
pub fn quota_mock_config() -> mock_gemini::MockConfig {
    mock_gemini::MockConfig {
        dimension: 768,
        latency: Duration::from_millis(100),
        quota_per_minute: Some(120),
        quota_unit: mock_gemini::QuotaUnit::Texts,
        quota_window: Duration::from_secs(1),
        ..mock_gemini::MockConfig::default()
    }
}

/// A `redis-server` of a test: a free loopback port, append-only file in its own temporary
/// directory, no snapshots. Killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Started with extra arguments (`--requirepass`, ...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_redis(port, dir.path(), extra);
        let server = RedisServer { child, port, dir };
        server.wait_for_ping();
        server
    }

    pub fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} never answered PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash would), then starts it again on the same port and data
    /// directory (its append-only file) after `down`.
    pub fn crash_and_restart(&mut self, down: Duration) {
        self.kill();
        std::thread::sleep(down);
        self.child = spawn_redis(self.port, self.dir.path(), &[]);
        self.wait_for_ping();
    }

    /// Stops the server without closing anything (SIGSTOP): it answers no one, as a machine
    /// that hangs or a network that drops packets. Killed as usual when dropped.
    pub fn pause(&self) {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -STOP failed");
    }

    /// Kills the server for good (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// True once the server answers PING (or asks for a password: it is up).
    pub fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }

    /// How many results the (one) queue run on this server holds, as Redis answers (`:N`).
    pub fn results_of_the_run(&self) -> String {
        self.command(&[
            "EVAL",
            "local k = redis.call('KEYS', 'puzzlegen:queue:*:results') return redis.call('HLEN', k[1])",
            "0",
        ])
    }

    /// Sends one command (no password) and returns the raw answer.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16, dir: &Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--appendonly", "yes", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}): install it: apt-get install -y redis-server")
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `child` to end, reading its output as it comes; past `limit` it is killed
/// (SIGKILL) and the test fails with what it printed, so a hang fails instead of hanging.
pub fn output_within(
    child: std::process::Child,
    limit: std::time::Duration,
) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        let _ = tx.send(());
        out
    });
    let hung = rx.recv_timeout(limit).is_err();
    if hung {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let out = reader.join().unwrap();
    assert!(
        !hung,
        "still running after {limit:?}, killed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
