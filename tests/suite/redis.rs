//! Runs that share one Redis (`--redis URL`, `distributed.*`): the URL and password checks,
//! the global limiter and the shared cache tier. Each test starts its own `redis-server` on a
//! free loopback port ([`RedisServer`]) and its own mock Gemini.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mock_gemini::start_blocking;
use puzzlegen::config::{DistributedSettings, RedisUrl};
use std::sync::Arc;

use puzzlegen::cache::Cache;
use puzzlegen::distributed::{GlobalLimiter, LimiterName, Redis, SharedSetup};
use puzzlegen::embed::Provider;
use puzzlegen::limit::{LimitSettings, MINUTE, RpmCounts};
use puzzlegen::service::{EmbeddingService, ServiceOptions};

use crate::common::{self, KEY, RedisServer, free_port};

/// A workload of `themes` themes of `words` candidates each, every name starting `prefix`.
/// Asserts that the puzzles `dir` wrote equal, timings aside, those of the same workload
/// (`themes` themes, `puzzles` puzzles, `extra` gemini lines) run alone: no Redis, fresh caches.
pub(crate) fn assert_same_as_a_run_alone(
    dir: &Path,
    base_url: &str,
    themes: usize,
    puzzles: usize,
    extra: &str,
) {
    let shared = std::fs::read_to_string(dir.join("out/final_puzzles.json")).unwrap();
    let alone = common::gemini_dir(base_url, themes, 14, puzzles, extra);
    let out = common::puzzlegen(alone.path())
        .args(["run", "--config", "params.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reference = std::fs::read_to_string(alone.path().join("out/final_puzzles.json")).unwrap();
    assert_eq!(
        strip_times(&shared),
        strip_times(&reference),
        "{themes} themes"
    );
}

fn write_named_workload(dir: &Path, prefix: &str, themes: usize, words: usize) {
    common::write_workload_named(
        dir,
        themes,
        words,
        |t| format!("{prefix} theme {t:03}"),
        |t, i| format!("{prefix}{t}x{i}"),
    );
}

/// Appends `yaml` to the params.yaml of `dir`.
fn append_params(dir: &Path, yaml: &str) {
    let p = dir.join("params.yaml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(yaml);
    std::fs::write(p, text).unwrap();
}

/// `puzzlegen run` in `dir` with `args` after it, started now, output piped.
pub(crate) fn spawn(dir: &Path, args: &[&str]) -> Child {
    common::command(dir)
        .args(["run", "--config", "params.yaml"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to the end: a user error (exit 2) with one `error:` line containing `needle`,
/// within 10 s, and `secret` nowhere in its output.
pub(crate) fn assert_quick_user_error(mut cmd: Command, needle: &str, secret: &str) {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let seconds = t.elapsed().as_secs_f64();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(seconds < 10.0, "{seconds:.1} s: {all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{all}");
    assert!(errors[0].contains(needle), "expected {needle:?} in {all}");
    assert!(!all.contains(secret), "the password was printed: {all}");
    assert!(!all.contains("panicked"), "{all}");
}

/// Runs `openssl` with `args` in `dir`; the test fails, saying how to install it, if it cannot.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install it: apt-get install -y openssl")
        });
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A test certificate authority and a certificate for 127.0.0.1 signed by it, in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn write_test_certificates(dir: &Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        ]
        .into_iter()
        .chain(["-out", "ca.pem", "-subj", "/CN=puzzlegen test CA"])
        .chain(days)
        .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "san.ext",
        ]
        .into_iter()
        .chain(days)
        .collect::<Vec<_>>(),
    );
}

/// `rediss://` connects over TLS when the server's certificate is trusted (here through
/// SSL_CERT_FILE), and is refused at once, with a line saying how to trust it, when not.
#[test]
fn rediss_connects_over_tls_to_a_trusted_server_only() {
    let certs = tempfile::tempdir().unwrap();
    write_test_certificates(certs.path());
    let tls_port = free_port().to_string();
    let file = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let dir = tempfile::tempdir().unwrap();
    common::write_workload(dir.path(), 4, 6);
    common::write_params(dir.path(), 1, "");
    let out = common::command(dir.path())
        .args(["run", "--config", "params.yaml", "--redis", &url])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The run shared its vectors through the TLS port (read back on the plain one).
    let stored = redis.command(&["EVAL", "return #redis.call('KEYS', 'puzzlegen:vec:*')", "0"]);
    let stored: usize = stored.trim().trim_start_matches(':').parse().unwrap();
    assert!(stored > 0, "no vector in the shared tier: {}", text(&out));
    // Not trusted: the system's store does not know the test authority.
    let mut untrusted = common::command(dir.path());
    untrusted
        .args(["run", "--config", "params.yaml", "--redis", &url])
        .env_remove("SSL_CERT_FILE");
    assert_quick_user_error(untrusted, "SSL_CERT_FILE", "no-secret-here");
}

/// A wrong Redis URL or password ends the run at once (exit 2, one line naming Redis), and
/// the password appears in no output, even with every log line on.
#[test]
fn wrong_redis_url_or_password_exits_2_quickly_without_the_password() {
    let secret = "pw-Sekrit-0815";
    let redis = RedisServer::start_with(&["--requirepass", "right-pw-4242"]);
    let server = start_blocking(common::mock_config(1, |_| {})).unwrap();
    let dir = common::gemini_dir(&server.base_url(), 4, 6, 1, "");
    let run = |args: &[String], env: Option<(&str, &str)>| {
        let mut cmd = common::command(dir.path());
        cmd.args(["run", "--config", "params.yaml"])
            .args(args)
            .env("RUST_LOG", "trace");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd
    };
    // Nothing listens there.
    let nobody = format!("redis://:{secret}@127.0.0.1:{}/", free_port());
    assert_quick_user_error(run(&["--redis".into(), nobody], None), "Redis", secret);
    // Wrong password in the URL.
    let wrong = format!("redis://:{secret}@127.0.0.1:{}/", redis.port);
    assert_quick_user_error(
        run(&["--redis".into(), wrong], None),
        "authentication failed",
        secret,
    );
    // Not a Redis URL at all.
    assert_quick_user_error(
        run(&["--redis".into(), format!("http://u:{secret}@x/")], None),
        "Redis URL",
        secret,
    );
    // Nothing listens there either, over TLS.
    assert_quick_user_error(
        run(
            &[
                "--redis".into(),
                format!("rediss://:{secret}@127.0.0.1:{}/", free_port()),
            ],
            None,
        ),
        "Redis",
        secret,
    );
    // `puzzlegen status` too.
    let status = |url: String| {
        let mut cmd = common::command(dir.path());
        cmd.args(["status", "--redis", &url])
            .env("RUST_LOG", "trace");
        cmd
    };
    let wrong = format!("redis://:{secret}@127.0.0.1:{}/", redis.port);
    assert_quick_user_error(status(wrong), "authentication failed", secret);
    let nobody = format!("redis://:{secret}@127.0.0.1:{}/", free_port());
    assert_quick_user_error(status(nobody), "Redis", secret);
    // REDIS_PASSWORD serves a URL without a password, for status as for run; status only
    // reads, so it does not claim to share anything.
    let bare = redis.url();
    let mut wrong_env = status(bare.clone());
    wrong_env.env("REDIS_PASSWORD", secret);
    assert_quick_user_error(wrong_env, "authentication failed", secret);
    let mut right_env = status(bare);
    right_env.env("REDIS_PASSWORD", "right-pw-4242");
    let out = right_env.output().unwrap();
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "REDIS_PASSWORD was not used: {all}"
    );
    assert!(!all.contains("right-pw-4242"), "{all}");
    assert!(!all.contains("sharing limits"), "status only reads: {all}");
    // A password in the URL wins over REDIS_PASSWORD.
    let mut url_wins = status(format!("redis://:right-pw-4242@127.0.0.1:{}/", redis.port));
    url_wins.env("REDIS_PASSWORD", secret);
    let out = url_wins.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Wrong password from the variable the config names.
    append_params(
        dir.path(),
        &format!(
            "distributed:\n  redis_url: {}\n  redis_password_env: PUZZLEGEN_TEST_REDIS_PW\n",
            redis.url()
        ),
    );
    assert_quick_user_error(
        run(&[], Some(("PUZZLEGEN_TEST_REDIS_PW", secret))),
        "authentication failed",
        secret,
    );
    // The variable named but unset.
    assert_quick_user_error(run(&[], None), "PUZZLEGEN_TEST_REDIS_PW", secret);
    assert_eq!(
        server.stats().requests,
        0,
        "no request before Redis was reached"
    );
    assert!(
        !dir.path().join("cache").exists(),
        "a run refused for its Redis made a cache database"
    );
    // The right one: the run goes through, and the password is still shown nowhere.
    let out = run(&[], Some(("PUZZLEGEN_TEST_REDIS_PW", "right-pw-4242")))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("right-pw-4242"), "{all}");
    assert!(
        all.contains("Redis"),
        "the log should say Redis is used: {all}"
    );
}

/// A mock whose quota is 120 texts per minute (counted over 1 s windows), and two run folders
/// (`alpha`, `beta`: 8 themes of 14 words each, 2 puzzles) whose own limit, 1,200 texts a
/// minute, is far above it.
fn two_runs_against_a_quota() -> (mock_gemini::BlockingMockServer, Vec<tempfile::TempDir>) {
    let server = start_blocking(common::quota_mock_config()).unwrap();
    let limits = "  requests_per_minute: 1200\n  rpm_counts: items\n";
    let dirs: Vec<tempfile::TempDir> = ["alpha", "beta"]
        .iter()
        .map(|prefix| {
            let dir = tempfile::tempdir().unwrap();
            write_named_workload(dir.path(), prefix, 8, 14);
            common::write_gemini_params(dir.path(), 2, &server.base_url(), limits);
            dir
        })
        .collect();
    (server, dirs)
}

/// Two independent runs with one Redis and one key name, against one mock whose quota is the
/// limit: the global limiter holds for their sum. The budget is the one of
/// `gemini::rate_limit_of_the_config_binds_the_binary`: 1200 texts a minute (a burst of 100,
/// then 1100 a minute), so no 1 s window holds more than 100 + 1100 / 60 = 118.3 texts (120
/// allowed for the time a request takes to reach the mock, which enforces that over every
/// 1 s window). Each run alone may send that much, so without the shared limiter the two
/// together would be refused; together they need (240 - 100) / 1100 * 60 = 7.6 s at least.
#[test]
fn two_runs_on_one_redis_and_key_name_share_one_budget() {
    let redis = RedisServer::start();
    let (server, dirs) = two_runs_against_a_quota();
    // One names Redis in its config, the other on the command line.
    append_params(
        dirs[0].path(),
        &format!("distributed:\n  redis_url: {}\n", redis.url()),
    );
    let t = Instant::now();
    let a = spawn(dirs[0].path(), &[]);
    let b = spawn(dirs[1].path(), &["--redis", &redis.url()]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let s = server.stats();
    assert_eq!(s.responses_429, 0, "{s:?}");
    assert!(s.max_texts_in_any_60s <= 120, "{s:?}");
    assert!(s.peak_concurrency <= 4, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, 2 * 8 * 15, "{s:?}");
    assert!(
        seconds > 7.0,
        "{seconds:.1} s: the shared limiter did not bind"
    );
    assert!(seconds < 25.0, "{seconds:.1} s: the budget was not filled");
    // The limiter's state lives under the provider, key variable and model, never the key.
    let keys = redis.command(&["KEYS", "puzzlegen:limit:*"]);
    assert!(
        keys.contains("puzzlegen:limit:{gemini:PUZZLEGEN_TEST_KEY:gemini-embedding-001}:rpm"),
        "{keys}"
    );
    assert!(!redis.command(&["KEYS", "*"]).contains(KEY));
}

/// The baseline of [`two_runs_on_one_redis_and_key_name_share_one_budget`]: the same two
/// runs without Redis each keep their own budget, so together they break the mock's quota.
#[test]
fn without_redis_two_runs_each_spend_the_whole_budget() {
    let (server, dirs) = two_runs_against_a_quota();
    let a = spawn(dirs[0].path(), &[]);
    let b = spawn(dirs[1].path(), &[]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let s = server.stats();
    assert!(s.responses_429 > 0, "{s:?}");
}

/// Two runs over overlapping inputs at the same time, each with its own SQLite cache, on one
/// Redis: no text is paid for twice (the mock's duplicate counter), every text of both is in
/// the shared tier, and both write their normal outputs, each the same as a run alone.
#[test]
fn two_runs_over_overlapping_inputs_pay_for_each_text_once() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(3, |m| {
        m.latency = Duration::from_millis(100);
    }))
    .unwrap();
    let small = common::gemini_dir(&server.base_url(), 12, 14, 3, "");
    let large = common::gemini_dir(&server.base_url(), 16, 14, 4, "");
    let a = spawn(small.path(), &["--redis", &redis.url()]);
    let b = spawn(large.path(), &["--redis", &redis.url()]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let s = server.stats();
    assert_eq!(s.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, 16 * 15, "{s:?}");
    assert_eq!(s.texts_embedded, 16 * 15, "{s:?}");
    let stored = redis.command(&["EVAL", "return #redis.call('KEYS', 'puzzlegen:vec:*')", "0"]);
    assert_eq!(stored.trim(), ":240", "vectors in the shared tier");
    // Each text paid for by one of the runs; the other took it from the shared tier.
    let stats = |dir: &Path| {
        let m = common::read_json(&dir.join("out/puzzle_metadata.json"));
        let s = &m["embedding_stats"];
        (
            s["texts_embedded"].as_u64().unwrap(),
            s["shared_hits"].as_u64().unwrap(),
        )
    };
    let ((paid_a, shared_a), (paid_b, shared_b)) = (stats(small.path()), stats(large.path()));
    assert_eq!(paid_a + paid_b, 240);
    assert_eq!(
        shared_a + shared_b,
        12 * 15,
        "the small run's texts, paid once"
    );
    // Each output as a run alone (no Redis, fresh caches) writes it.
    for (dir, themes, puzzles) in [(&small, 12, 3), (&large, 16, 4)] {
        assert_same_as_a_run_alone(dir.path(), &server.base_url(), themes, puzzles, "");
    }
}

/// `final_puzzles.json` without fields that differ from run to run (times, durations).
pub(crate) fn strip_times(json: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| {
                    !(k.contains("time") || k.contains("date") || k.contains("seconds"))
                });
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    strip(&mut v);
    v
}

/// Concurrency leases: a lease is renewed while its holder lives (a request longer than the
/// lease TTL keeps its slot); a holder that dies without releasing frees its slot one TTL after
/// its last renewal; a released lease frees it at once. Below the binary, with the library's
/// limiter.
#[test]
fn a_dead_holders_lease_expires_and_frees_its_slot() {
    let redis = RedisServer::start();
    let settings = DistributedSettings {
        redis_url: Some(RedisUrl::new(redis.url())),
        ..DistributedSettings::default()
    };
    let limits = LimitSettings {
        requests_per_minute: 1e6,
        rpm_counts: RpmCounts::Requests,
        min_request_interval: Duration::ZERO,
        tokens_per_minute: None,
        max_concurrent_requests: 1,
        window: MINUTE,
    };
    let ttl = Duration::from_millis(400);
    let limiter = |c: Redis| GlobalLimiter::new(c, "gemini", "KEYVAR", "m", &limits, 10, ttl);
    // A process that takes the slot and dies holding it: its runtime (and so its renewals)
    // ends with the thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            let doomed = tokio::runtime::Runtime::new().unwrap();
            doomed.block_on(async {
                let conn = Redis::connect(&settings).await.unwrap().unwrap();
                std::mem::forget(limiter(conn).acquire(1, 1).await);
            });
        });
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let conn = Redis::connect(&settings).await.unwrap().unwrap();
        let (one, two) = (limiter(conn.clone()), limiter(conn.clone()));
        // The dead holder's slot comes back when its lease expires.
        let t = Instant::now();
        let permit = one.acquire(1, 1).await;
        let waited = t.elapsed();
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // A live holder keeps its slot for three TTLs (renewed), then releases it: the other
        // gets it at once.
        let taken = tokio::spawn(async move {
            let t = Instant::now();
            let _p = two.acquire(1, 1).await;
            t.elapsed()
        });
        tokio::time::sleep(ttl * 3).await;
        assert!(!taken.is_finished(), "a renewed lease was taken over");
        drop(permit);
        let waited = taken.await.unwrap();
        assert!(
            (ttl * 3..ttl * 3 + Duration::from_millis(1500)).contains(&waited),
            "{waited:?}"
        );
        // A 429 pause set by one holds for every process sharing the limiter.
        one.back_off(Duration::from_millis(300)).await;
        let t = Instant::now();
        let _p = one.acquire(1, 1).await;
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    });
}

/// The per-minute budget summed over two services on one Redis, below the binary, with the
/// limiter's "minute" and the mock's shortened to [`WINDOW`] (as
/// `gemini::rate_limit_is_filled_but_never_broken` does for one service): a budget of 1200
/// texts a window, a mock enforcing exactly that, 720 distinct texts each (1440 together,
/// more than a window of work). No 429, no window over budget, the budget filled.
#[test]
fn two_services_on_one_redis_keep_the_quota_of_the_mock_exactly() {
    const WINDOW: Duration = Duration::from_secs(5);
    let redis = RedisServer::start();
    let server = common::window_budget_mock(WINDOW);
    let options = common::window_budget_options(WINDOW);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seconds = runtime.block_on(async {
        let settings = DistributedSettings {
            redis_url: Some(RedisUrl::new(redis.url())),
            ..DistributedSettings::default()
        };
        let conn = Redis::connect(&settings).await.unwrap().unwrap();
        let service = |prefix: &str| {
            let provider: Arc<dyn Provider> =
                Arc::new(common::window_budget_provider(&server.base_url()));
            let cache = Cache::in_memory(provider.space().clone());
            let shared = SharedSetup {
                redis: conn.clone(),
                limiter: Some(LimiterName {
                    provider: "gemini".into(),
                    key_variable: "SAME_KEY_NAME".into(),
                    model: "gemini-embedding-001".into(),
                }),
                lease_ttl: Duration::from_secs(6),
            };
            let texts: Vec<String> = (0..720).map(|i| format!("{prefix} text {i}")).collect();
            (
                EmbeddingService::with_shared(provider, options.clone(), cache, Some(shared)),
                texts,
            )
        };
        let ((a, ta), (b, tb)) = (service("first"), service("second"));
        let t = Instant::now();
        let (va, vb) = tokio::join!(a.embed(&ta), b.embed(&tb));
        let seconds = t.elapsed().as_secs_f64();
        assert_eq!((va.unwrap().len(), vb.unwrap().len()), (720, 720));
        a.shutdown(Duration::from_secs(1)).await;
        b.shutdown(Duration::from_secs(1)).await;
        seconds
    });
    common::assert_budget_filled_never_broken(&server.stats(), 1440, seconds, WINDOW);
}

/// Redis killed mid-run and started again a second later (same port, its append-only file):
/// the run reconnects and completes with the same puzzles as a run without Redis.
#[test]
fn a_run_survives_a_redis_restart_with_the_same_puzzles() {
    let mut redis = RedisServer::start();
    let server = start_blocking(common::mock_config(5, |m| {
        m.latency = Duration::from_millis(250);
    }))
    .unwrap();
    // Small batches and slow answers: about 6 s of requests.
    let extra = "  batch_size: 5\n";
    let dir = common::gemini_dir(&server.base_url(), 24, 14, 6, extra);
    let run = spawn(dir.path(), &["--redis", &redis.url()]);
    std::thread::sleep(Duration::from_millis(1500));
    let sent_before = server.stats().texts;
    redis.crash_and_restart(Duration::from_millis(1000));
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = server.stats();
    assert!(
        sent_before > 0 && sent_before < 24 * 15,
        "Redis went down mid-run ({sent_before} texts sent before): {s:?}"
    );
    assert_eq!(s.distinct_texts_embedded, 24 * 15, "{s:?}");
    assert_same_as_a_run_alone(dir.path(), &server.base_url(), 24, 6, extra);
}

/// `min_request_interval` and the per-minute burst hold for the sum of two limiters on one
/// Redis (two processes as far as Redis can tell), below the binary.
#[test]
fn interval_and_burst_hold_across_limiters() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = DistributedSettings {
            redis_url: Some(RedisUrl::new(redis.url())),
            ..DistributedSettings::default()
        };
        let conn = Redis::connect(&settings).await.unwrap().unwrap();
        let mut limits = LimitSettings {
            requests_per_minute: 1e6,
            rpm_counts: RpmCounts::Requests,
            min_request_interval: Duration::from_millis(50),
            tokens_per_minute: None,
            max_concurrent_requests: 8,
            window: MINUTE,
        };
        let ttl = Duration::from_secs(5);
        let both = |limits: &LimitSettings, name: &str| {
            (
                GlobalLimiter::new(conn.clone(), "gemini", name, "m", limits, 20, ttl),
                GlobalLimiter::new(conn.clone(), "gemini", name, "m", limits, 20, ttl),
            )
        };
        // 50 ms apart, whoever asks: 10 or 11 requests in 0.525 s from the two together.
        let (one, two) = both(&limits, "INTERVAL");
        let n = admitted_within(&one, &two, 1, 0.525).await;
        assert!(
            (10..=11).contains(&n),
            "{n} requests in 0.525 s at 50 ms spacing"
        );
        // 1200 texts a minute in batches of 20 (burst 20), minute shortened to 12 s: at most
        // 20 + (1200 - 20) / 12 * 0.6 = 79 texts in 0.6 s from the two together.
        limits.min_request_interval = Duration::ZERO;
        limits.requests_per_minute = 1200.0;
        limits.rpm_counts = RpmCounts::Items;
        limits.window = Duration::from_secs(12);
        let (one, two) = both(&limits, "BURST");
        let n = admitted_within(&one, &two, 20, 0.6).await;
        assert!((60..=79).contains(&n), "{n} texts in 0.6 s");
    });
}

/// Texts admitted by `one` and `two` together within `secs` seconds, each asking for batches
/// of `texts` in a loop.
async fn admitted_within(
    one: &GlobalLimiter,
    two: &GlobalLimiter,
    texts: usize,
    secs: f64,
) -> usize {
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let (a, b) = tokio::join!(
        admitted_until(one, texts, end),
        admitted_until(two, texts, end)
    );
    a + b
}

async fn admitted_until(l: &GlobalLimiter, texts: usize, end: tokio::time::Instant) -> usize {
    let mut n = 0;
    loop {
        tokio::select! {
            p = l.acquire(texts, 1) => { n += texts; drop(p); }
            _ = tokio::time::sleep_until(end) => return n,
        }
    }
}

/// `puzzlegen worker` with the config and key variable of `dir`, serving runs on `redis`.
fn spawn_worker(dir: &Path, redis: &str) -> Child {
    common::command(dir)
        .args(["worker", "--config", "params.yaml", "--redis", redis])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A worker of its own folder (one theme of 6 words in its config, gemini at `base_url`,
/// `extra` gemini lines) serving runs on `redis`; the folder lives as long as it is held.
pub(crate) fn start_worker(base_url: &str, redis: &str, extra: &str) -> (tempfile::TempDir, Child) {
    let dir = common::gemini_dir(base_url, 1, 6, 1, extra);
    let child = spawn_worker(dir.path(), redis);
    (dir, child)
}

/// Stops a worker with SIGTERM; its stderr.
pub(crate) fn stop_worker(child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One coordinator (`run --redis`) and three `puzzlegen worker` processes, each with its own
/// config, cache and key variable (the same name), against a mock whose quota is the limit
/// (as in [`two_runs_on_one_redis_and_key_name_share_one_budget`]): the puzzles are those of a
/// run alone, no text is requested twice, no 429, the concurrency held for all together, and
/// the workers did embed themes.
#[test]
fn a_coordinator_and_three_workers_make_the_puzzles_of_a_run_alone() {
    let redis = RedisServer::start();
    let server = start_blocking(common::quota_mock_config()).unwrap();
    let limits = "  requests_per_minute: 1200\n  rpm_counts: items\n";
    let workers: Vec<(tempfile::TempDir, Child)> = (0..3)
        .map(|_| start_worker(&server.base_url(), &redis.url(), limits))
        .collect();
    let coordinator = common::gemini_dir(&server.base_url(), 12, 14, 3, limits);
    let out = common::puzzlegen(coordinator.path())
        .args(["run", "--config", "params.yaml", "--redis", &redis.url()])
        .output()
        .unwrap();
    let logs: Vec<String> = workers.into_iter().map(|(_, c)| stop_worker(c)).collect();
    assert_eq!(out.status.code(), Some(0), "{}\n{logs:?}", text(&out));
    let s = server.stats();
    assert_eq!(s.responses_429, 0, "{s:?}");
    assert!(s.max_texts_in_any_60s <= 120, "{s:?}");
    assert!(s.peak_concurrency <= 4, "{s:?}");
    assert_eq!(s.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.distinct_texts_embedded, 12 * 15, "{s:?}");
    // Each process works on up to 4 tasks at once (worker_count): 16 slots for 12 tasks, so
    // not every worker need get one, but the workers together take a share.
    let done_by_workers: usize = logs.iter().map(|l| l.matches(": ok").count()).sum();
    assert!(
        done_by_workers >= 2,
        "the workers did not take tasks: {logs:?}"
    );
    assert_same_as_a_run_alone(coordinator.path(), &server.base_url(), 12, 3, limits);
}

/// A worker killed with SIGKILL mid-run: its task is claimed by another once it has not been
/// touched for a few seconds (and its texts once their locks expire), the run completes with
/// the puzzles of a run alone, and each theme has one result.
#[test]
fn a_worker_killed_mid_run_leaves_no_task_behind() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(7, |m| {
        m.latency = Duration::from_millis(500);
    }))
    .unwrap();
    let extra = "  batch_size: 5\n";
    let mut workers: Vec<(tempfile::TempDir, Child)> = (0..2)
        .map(|_| start_worker(&server.base_url(), &redis.url(), extra))
        .collect();
    let coordinator = common::gemini_dir(&server.base_url(), 20, 14, 5, extra);
    let run = spawn(coordinator.path(), &["--redis", &redis.url()]);
    std::thread::sleep(Duration::from_millis(1200));
    let mut run = run;
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended before the kill"
    );
    let (_dir, mut victim) = workers.remove(0);
    victim.kill().unwrap();
    let victim_log = victim.wait_with_output().unwrap();
    let out = run.wait_with_output().unwrap();
    let logs: Vec<String> = workers.into_iter().map(|(_, c)| stop_worker(c)).collect();
    assert_eq!(out.status.code(), Some(0), "{}\n{logs:?}", text(&out));
    assert_eq!(server.stats().distinct_texts_embedded, 20 * 15);
    let all = format!("{}{logs:?}", text(&out));
    assert!(all.contains("claimed task"), "no task was claimed: {all}");
    let results = redis.results_of_the_run();
    assert_eq!(results.trim(), ":20", "one result per theme");
    assert!(
        !String::from_utf8_lossy(&victim_log.stderr).contains("dead letter"),
        "{logs:?}"
    );
    assert_same_as_a_run_alone(coordinator.path(), &server.base_url(), 20, 5, extra);
}

/// SIGTERM stops a worker within seconds with its task handed back (queued again at once,
/// not left for a claim): the run completes with one result per theme.
#[test]
fn sigterm_stops_a_worker_and_hands_its_task_back() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(9, |m| {
        m.latency = Duration::from_millis(500);
    }))
    .unwrap();
    let extra = "  batch_size: 5\n";
    let (_worker_dir, worker) = start_worker(&server.base_url(), &redis.url(), extra);
    let coordinator = common::gemini_dir(&server.base_url(), 12, 14, 3, extra);
    let mut run = spawn(coordinator.path(), &["--redis", &redis.url()]);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(run.try_wait().unwrap().is_none(), "the run ended first");
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let stopped = worker.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "{:?}: {log}",
        t.elapsed()
    );
    assert_eq!(stopped.status.code(), Some(0), "{log}");
    assert!(
        log.contains("queued again"),
        "no task was handed back: {log}"
    );
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{log}", text(&out));
    assert_eq!(server.stats().distinct_texts_embedded, 12 * 15);
    let results = redis.results_of_the_run();
    assert_eq!(results.trim(), ":12", "one result per theme");
}

/// The bulk string of a raw RESP answer (`$<n>\r\n<value>\r\n`).
fn bulk(resp: &str) -> String {
    resp.lines().nth(1).unwrap_or_default().to_owned()
}

/// A task delivered more times than allowed (its workers kept dying) goes to the run's
/// dead-letter stream with its error, its theme gets an error result, and it is acknowledged;
/// nothing is embedded for it. Below the binary: the task is delivered three times by hand,
/// then a worker (`pipeline::queue::serve`) claims it a fourth time.
#[test]
fn a_task_delivered_too_often_goes_to_the_dead_letter_stream() {
    use puzzlegen::embed::fake::FakeProvider;
    let redis = RedisServer::start();
    let tasks = "puzzlegen:queue:{r1}:tasks";
    redis.command(&["HSET", "puzzlegen:queue:runs", "r1", "fake:4:test"]);
    redis.command(&["XGROUP", "CREATE", tasks, "workers", "$", "MKSTREAM"]);
    let id = bulk(&redis.command(&["XADD", tasks, "*", "theme", "T", "texts", "[\"a\",\"b\"]"]));
    redis.command(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "c1",
        "COUNT",
        "1",
        "STREAMS",
        tasks,
        ">",
    ]);
    redis.command(&["XCLAIM", tasks, "workers", "c2", "0", &id]);
    redis.command(&["XCLAIM", tasks, "workers", "c3", "0", &id, "IDLE", "60000"]);
    let fake = Arc::new(FakeProvider::new(4, 10));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let settings = DistributedSettings {
            redis_url: Some(RedisUrl::new(redis.url())),
            ..Default::default()
        };
        let conn = Redis::connect(&settings).await.unwrap().unwrap();
        let service = Arc::new(EmbeddingService::new(
            fake.clone(),
            ServiceOptions::unlimited(),
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let worker = tokio::spawn(puzzlegen::pipeline::queue::serve(
            conn,
            Arc::clone(&service),
            2,
            stop.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !redis
            .command(&["HGET", "puzzlegen:queue:{r1}:results", "T"])
            .contains("dead letter")
        {
            assert!(Instant::now() < deadline, "no dead letter");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        worker.await.unwrap();
    });
    let dead = redis.command(&["XRANGE", "puzzlegen:queue:{r1}:dead", "-", "+"]);
    assert!(dead.contains("delivered 4 times"), "{dead}");
    let pending = redis.command(&["XPENDING", tasks, "workers"]);
    assert!(pending.starts_with("*4\r\n:0"), "still pending: {pending}");
    assert!(
        fake.calls.lock().unwrap().is_empty(),
        "a dead task was embedded"
    );
}

/// A worker whose key the API refuses hands its task back and exits (a user error, exit 2)
/// instead of failing every theme it takes; the run completes with every theme.
#[test]
fn a_worker_with_a_refused_key_hands_back_and_exits() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(11, |m| {
        m.latency = Duration::from_millis(200);
        m.api_key = Some(KEY.to_owned());
    }))
    .unwrap();
    let worker_dir = common::gemini_dir(&server.base_url(), 1, 6, 1, "");
    let worker = common::command(worker_dir.path())
        .args(["worker", "--config", "params.yaml", "--redis", &redis.url()])
        .env("PUZZLEGEN_TEST_KEY", "a-wrong-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let coordinator = common::gemini_dir(&server.base_url(), 12, 14, 3, "");
    let out = common::puzzlegen(coordinator.path())
        .args(["run", "--config", "params.yaml", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = Instant::now();
    let mut worker = worker;
    while worker.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = worker.try_wait().unwrap();
    if ended.is_none() {
        let _ = worker.kill();
    }
    let log = String::from_utf8_lossy(&worker.wait_with_output().unwrap().stderr).into_owned();
    assert_eq!(ended.and_then(|s| s.code()), Some(2), "{log}");
    assert!(!log.contains("a-wrong-key"), "{log}");
    let results = redis.results_of_the_run();
    assert_eq!(results.trim(), ":12", "one result per theme");
    let puzzles = common::read_json(&coordinator.path().join("out/final_puzzles.json"));
    assert_eq!(puzzles.as_object().map(|m| m.len()), Some(3), "{puzzles}");
}

/// A task that goes to the dead-letter stream fails its theme with that error, and the theme
/// is replaced by a spare, which goes through the queue too (a second queue run). The task
/// is made a dead letter from outside: once the run's tasks are queued, this test takes every
/// task not yet delivered (as a worker would) and marks the last one as delivered three times
/// long ago; the coordinator claims it (a fourth delivery) and dead-letters it. The others
/// are claimed back after [`puzzlegen::pipeline::queue::CLAIM_AFTER`].
#[test]
fn a_dead_lettered_task_fails_its_theme_and_a_spare_replaces_it() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(13, |m| {
        m.latency = Duration::from_millis(300);
    }))
    .unwrap();
    // 16 themes, 3 puzzles of 4: 12 planned, 4 spares; one slot at a time on the coordinator.
    let dir = common::gemini_dir(&server.base_url(), 16, 14, 3, "");
    let params = std::fs::read_to_string(dir.path().join("params.yaml")).unwrap();
    std::fs::write(
        dir.path().join("params.yaml"),
        params.replace("worker_count: 4", "worker_count: 1"),
    )
    .unwrap();
    let run = spawn(dir.path(), &["--redis", &redis.url()]);
    let victim = poison_last_task(&redis, 12);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let meta = common::read_json(&dir.path().join("out/puzzle_metadata.json"));
    let failed = meta["failed_themes"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{meta}");
    assert_eq!(failed[0]["theme"], victim.as_str(), "{meta}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("dead letter"), "{error}");
    let used = meta["spare_themes_used"].as_array().unwrap();
    assert_eq!(used.len(), 1, "{meta}");
    assert_eq!(used[0]["failed_theme"], victim.as_str(), "{meta}");
    assert!(used[0]["reason"].as_str().unwrap().contains("dead letter"));
    let puzzles = common::read_json(&dir.path().join("out/final_puzzles.json"));
    assert_eq!(puzzles.as_object().map(|m| m.len()), Some(3), "{puzzles}");
    // The spare went through the queue: a second run with one result.
    let runs = redis.command(&["ZCARD", "puzzlegen:queue:all"]);
    assert_eq!(
        runs.trim(),
        ":2",
        "one queue run for the plan, one for the spare"
    );
    let dead = redis.command(&[
        "EVAL",
        "local n = 0 for _, k in ipairs(redis.call('KEYS', 'puzzlegen:queue:*:dead')) do \
         n = n + redis.call('XLEN', k) end return n",
        "0",
    ]);
    assert_eq!(dead.trim(), ":1", "one dead letter");
}

/// Waits for the first queue run's `queued` tasks, takes every task not yet delivered and
/// marks the last one delivered three times, idle for ten minutes; returns its theme.
fn poison_last_task(redis: &RedisServer, queued: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    // The stream exists before its tasks are added (in batches): wait for all of them.
    let tasks = loop {
        let keys = redis.command(&["KEYS", "puzzlegen:queue:*:tasks"]);
        if let Some(key) = keys.lines().find(|l| l.starts_with("puzzlegen:queue:"))
            && redis.command(&["XLEN", key]).trim() == format!(":{queued}")
        {
            break key.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the {queued} tasks were not queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let taken = redis.command(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "thief",
        "COUNT",
        "1000",
        "STREAMS",
        &tasks,
        ">",
    ]);
    let last = redis.command(&["XREVRANGE", &tasks, "+", "-", "COUNT", "1"]);
    let lines: Vec<&str> = last.lines().collect();
    let id = lines
        .iter()
        .find(|l| l.contains('-') && !l.starts_with('$') && !l.starts_with('*'))
        .unwrap()
        .to_string();
    let theme = lines
        .iter()
        .position(|l| *l == "theme")
        .map(|i| lines[i + 2].to_owned())
        .unwrap();
    assert!(
        taken.contains(&id),
        "the last task was delivered before it was taken: {taken}"
    );
    redis.command(&[
        "XCLAIM",
        &tasks,
        "workers",
        "thief",
        "0",
        &id,
        "IDLE",
        "600000",
        "RETRYCOUNT",
        "3",
    ]);
    theme
}

/// `puzzlegen status --json` of `redis`, parsed (asserting exit 0).
pub(crate) fn status_json(redis: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = common::command(dir.path())
        .args(["status", "--json", "--redis", redis])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `puzzlegen status` mid-run (a coordinator and a worker against a slow mock) and after:
/// both processes alive with their tasks in hand, the run's figures coherent (backlog, in
/// flight and done cover its tasks; in flight no more than the slots and the tasks in hand),
/// then the run finished with every task done, the coordinator's heartbeat gone, and the
/// limiter's last-minute count equal to the requests the mock saw.
#[test]
fn status_shows_workers_runs_and_the_limiter_mid_run_and_after() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(17, |m| {
        m.latency = Duration::from_millis(400);
    }))
    .unwrap();
    let extra = "  batch_size: 5
  requests_per_minute: 6000
  rpm_counts: requests
";
    let (worker_dir, worker) = start_worker(&server.base_url(), &redis.url(), extra);
    let coordinator = common::gemini_dir(&server.base_url(), 24, 14, 6, extra);
    let run = spawn(coordinator.path(), &["--redis", &redis.url()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mid = loop {
        let s = status_json(&redis.url());
        let workers = s["workers"].as_array().unwrap();
        let busy = workers
            .iter()
            .all(|w| !w["tasks"].as_array().unwrap().is_empty());
        let running = s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "running");
        if workers.len() == 2 && busy && running {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "never saw both processes at work: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let r = &mid["runs"][0];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&r["tasks"]), 24, "{mid}");
    assert!(n(&r["done"]) < 24, "{mid}");
    assert!(
        n(&r["backlog"]) + n(&r["in_flight"]) + n(&r["done"]) >= 24,
        "tasks unaccounted for: {mid}"
    );
    assert!(n(&r["in_flight"]) <= 8, "two processes of 4 slots: {mid}");
    let in_hand: usize = mid["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tasks"].as_array().unwrap().len())
        .sum();
    assert!((1..=8).contains(&in_hand), "{mid}");
    let roles: Vec<&str> = mid["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["coordinator", "worker"], "{mid}");
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Heartbeats are refreshed every second: the worker shows idle within a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let s = status_json(&redis.url());
        let idle = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["tasks"] == serde_json::json!([]));
        if idle || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = stop_worker(worker);
    let r = &after["runs"][0];
    assert_eq!(r["state"], "finished", "{after}");
    assert_eq!(
        (
            n(&r["done"]),
            n(&r["backlog"]),
            n(&r["in_flight"]),
            n(&r["dead_letters"])
        ),
        (24, 0, 0, 0),
        "{after}"
    );
    let workers = after["workers"].as_array().unwrap();
    assert_eq!(
        workers.len(),
        1,
        "the coordinator's heartbeat is gone: {after}\n{log}"
    );
    assert_eq!(workers[0]["role"], "worker");
    assert!(
        workers[0]["tasks"].as_array().unwrap().is_empty(),
        "{after}"
    );
    let l = &after["limiters"][0];
    let s = server.stats();
    assert_eq!(n(&l["requests_last_minute"]), s.requests, "{after}\n{s:?}");
    assert_eq!(l["unit"], "requests");
    assert_eq!(l["limit_per_minute"].as_f64(), Some(6000.0), "{after}");
    assert_eq!(n(&l["rate_limited"]), 0);
    // The text form says the same in lines.
    let text_out = common::command(worker_dir.path())
        .args(["status", "--config", "params.yaml", "--redis", &redis.url()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&text_out.stdout);
    // The worker was stopped: its heartbeat went with it.
    assert!(shown.contains("workers alive: 0"), "{shown}");
    assert!(
        shown.contains("done 24 (0 failed), dead letters 0"),
        "{shown}"
    );
}
