//! Hostile cases, round two (issue 20): a run with a Redis never spins and ends as a run alone
//! would; a 429 pause no server could have asked for is stale; no secret (the API key, a Redis
//! password) is echoed, whatever a server answers or a URL looks like.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use mock_gemini::{BlockingMockServer, FixedAnswer, MockConfig, QuotaUnit, start_blocking};

use crate::common::{self, Finished, KEY, RedisServer, puzzlegen};

/// The most times one line of `stderr` occurs, and the line.
fn most_repeated_line(stderr: &str) -> (usize, String) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in stderr.lines() {
        *counts.entry(line.trim()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(l, n)| (n, l.to_owned()))
        .max()
        .unwrap_or_default()
}

fn mock(f: impl FnOnce(&mut MockConfig)) -> BlockingMockServer {
    start_blocking(common::mock_config(5, f)).unwrap()
}

/// `puzzlegen run` in `dir`, with `args` after it.
fn run(dir: &Path, args: &[&str]) -> Finished {
    common::finish(
        puzzlegen(dir)
            .args(["run", "--config", "params.yaml"])
            .args(args),
    )
}

/// With a Redis, an API that never lets a request through ends the run at the stall timeout
/// with exit 3, as without: each task handed back once, no line repeated faster than the
/// once-per-5-s rule allows. Both ways an API can refuse: a 429 to every request, and a
/// quota of one request a minute.
#[test]
fn a_redis_run_that_stalls_exits_3_as_a_run_alone_does() {
    let redis = RedisServer::start();
    type Refusal = (&'static str, fn(&mut MockConfig));
    let refusals: [Refusal; 2] = [
        ("429 to every request", |m| m.rate_429 = 1.0),
        ("one request a minute", |m| {
            m.quota_per_minute = Some(1);
            m.quota_unit = QuotaUnit::Requests;
        }),
    ];
    for (what, refuse) in refusals {
        let server = mock(refuse);
        let dir = common::gemini_dir(&server.base_url(), 8, 8, 2, "  stall_timeout: 3\n");
        let r = run(dir.path(), &["--redis", &redis.url()]);
        assert_eq!(r.code, 3, "{what}: {}", r.all());
        assert!(
            r.stderr.contains("(gemini.stall_timeout)"),
            "{what}: {}",
            r.all()
        );
        assert!(r.seconds < 3.0 + 15.0, "{what}: {:.1} s", r.seconds);
        let handed_back = r.stderr.matches("queued again").count();
        assert!(
            handed_back <= 4,
            "{what}: {handed_back} hand-backs for 4 slots:\n{}",
            r.all()
        );
        let (n, line) = most_repeated_line(&r.stderr);
        let allowed = (r.seconds / 5.0).ceil() as usize + 2;
        assert!(
            n <= allowed,
            "{what}: {line:?} {n} times in {:.1} s",
            r.seconds
        );
        assert!(r.stderr.lines().count() < 100, "{what}: {}", r.all());
    }
}

/// The key of the shared 429 pause of the tests' Gemini runs.
fn pause_key() -> String {
    "puzzlegen:limit:{gemini:PUZZLEGEN_TEST_KEY:gemini-embedding-001}:pause".to_owned()
}

/// A shared pause further ahead than any delay a server can ask for (an hour), or one that
/// is not a number, is stale: removed, said so, and the run goes on.
#[test]
fn a_stale_shared_pause_is_said_and_removed() {
    let server = mock(|_| {});
    let hour_ahead = "local t = redis.call('TIME') \
        redis.call('SET', KEYS[1], string.format('%.0f', (tonumber(t[1]) + 3600) * 1000000)) \
        return 1";
    for (what, set) in [
        ("an hour ahead", vec!["EVAL", hour_ahead, "1", &pause_key()]),
        ("not a number", vec!["SET", &pause_key(), "soon"]),
    ] {
        // A Redis of its own: the texts are not in its shared tier yet.
        let redis = RedisServer::start();
        redis.command(&set);
        let dir = common::gemini_dir(&server.base_url(), 4, 8, 1, "  stall_timeout: 5\n");
        let r = run(dir.path(), &["--redis", &redis.url()]);
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert!(
            r.stderr.contains("treated as stale and removed"),
            "{what}: {}",
            r.all()
        );
        assert!(redis.command(&["EXISTS", &pause_key()]).starts_with(":0"));
    }
}

/// Limiter keys of the wrong type or holding text (written by anything but puzzlegen) never
/// stop admission: a run whose every limiter key is poisoned (the schedules, the leases, the
/// pause, the 429 count, the settings, the per-second counters of the next minute) finishes
/// as a clean one does, against a server that answers 429 half the time (so the pause is
/// written too).
#[test]
fn poisoned_limiter_keys_never_stop_a_run() {
    let redis = RedisServer::start();
    let prefix = "puzzlegen:limit:{gemini:PUZZLEGEN_TEST_KEY:gemini-embedding-001}";
    const POISON: &str = "
local p = ARGV[1]
redis.call('HSET', p .. ':rpm', 'x', 'y')
redis.call('SET', p .. ':interval', 'soon')
redis.call('LPUSH', p .. ':tpm', 'x')
redis.call('SET', p .. ':leases', 'none')
redis.call('SADD', p .. ':pause', 'x')
redis.call('LPUSH', p .. ':429s', 'x')
redis.call('SET', p .. ':settings', 'x')
local now = tonumber(redis.call('TIME')[1])
for s = now, now + 90 do redis.call('SET', p .. ':second:' .. s, 'x') end
return 1";
    redis.command(&["EVAL", POISON, "0", prefix]);
    let server = mock(|m| m.rate_429 = 0.5);
    let dir = common::gemini_dir(&server.base_url(), 4, 8, 1, "  stall_timeout: 20\n");
    let r = run(dir.path(), &["--redis", &redis.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("treated as stale and removed"),
        "{}",
        r.all()
    );
    assert!(server.stats().responses_ok > 0);
}

/// Everything a run left in Redis (keys, and the values of strings, hashes, lists, sets and
/// streams), as text.
fn everything_in(redis: &RedisServer) -> String {
    const DUMP: &str = r#"
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  table.insert(out, k)
  local t = redis.call('TYPE', k).ok
  local vals = {}
  if t == 'string' then vals = {redis.call('GET', k)}
  elseif t == 'hash' then vals = redis.call('HGETALL', k)
  elseif t == 'list' then vals = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then vals = redis.call('SMEMBERS', k)
  elseif t == 'zset' then vals = redis.call('ZRANGE', k, 0, -1)
  elseif t == 'stream' then
    for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do
      for _, v in ipairs(e[2]) do table.insert(vals, v) end
    end
  end
  for _, v in ipairs(vals) do table.insert(out, v) end
end
return table.concat(out, '\n')
"#;
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--raw", "EVAL", DUMP, "0"])
        .output()
        .expect("redis-cli (apt-get install -y redis-tools)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server may put the key anywhere in its answer: a 200 of the wrong shape (as a string,
/// inside the values, cut short, JSON-escaped), an error body (JSON, HTML, past the point where
/// messages are cut), a header. The key shows in no output, log line, journal, cache or Redis
/// key, with or without Redis.
#[test]
fn the_api_key_echoed_anywhere_in_an_answer_is_never_shown() {
    let redis = RedisServer::start();
    let escaped: String = KEY
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let json = |status: u16, body: String| FixedAnswer {
        status,
        content_type: "application/json".into(),
        body,
        headers: Vec::new(),
    };
    let answers = [
        json(200, format!(r#"{{"embeddings": "{KEY} is your key"}}"#)),
        json(
            200,
            format!(r#"{{"embeddings": [{{"values": ["{KEY}"]}}]}}"#),
        ),
        json(200, format!(r#"{{"embeddings": [{{"values": [{KEY}"#)),
        json(200, format!(r#"{{"embeddings": "{escaped}"}}"#)),
        json(
            400,
            format!(r#"{{"error": {{"message": "API key {KEY} not valid"}}}}"#),
        ),
        json(
            503,
            format!(
                r#"{{"error": {{"message": "{} {KEY}"}}}}"#,
                "overloaded ".repeat(18)
            ),
        ),
        FixedAnswer {
            status: 500,
            content_type: "text/html".into(),
            body: format!("<html><title>{KEY}</title><body><p>key {KEY}</p></body></html>"),
            headers: Vec::new(),
        },
        FixedAnswer {
            status: 429,
            content_type: "application/json".into(),
            body: "{}".into(),
            headers: vec![
                ("retry-after".into(), KEY.into()),
                ("x-echo".into(), KEY.into()),
            ],
        },
    ];
    for answer in answers {
        let what = format!("HTTP {} {:.60}", answer.status, answer.body);
        let server = mock(|m| m.fixed_answer = Some(answer));
        for with_redis in [false, true] {
            let dir = common::gemini_dir(&server.base_url(), 4, 8, 1, "  stall_timeout: 2\n");
            let args: &[&str] = if with_redis {
                &["--redis", &redis.url()]
            } else {
                &[]
            };
            let r = run(dir.path(), args);
            assert!(!r.all().contains("panicked"), "{what}: {}", r.all());
            assert!(!r.all().contains(KEY), "{what}: {}", r.all());
            let files = common::files_holding(dir.path(), KEY);
            assert!(files.is_empty(), "{what}: the key is in {files:?}");
            let stored = everything_in(&redis);
            assert!(!stored.contains(KEY), "{what}: the key is in Redis");
        }
    }
}

/// No message shows a Redis URL's password, whatever characters it holds (`/`, `@`, `?`,
/// `#`, `:`): from `run` and from `status`, with a server that wants another password.
#[test]
fn a_redis_password_of_any_shape_is_never_printed() {
    let redis = RedisServer::start_with(&["--requirepass", "right-pw-4242"]);
    // No request is ever sent: Redis is checked first.
    let dir = common::gemini_dir("http://127.0.0.1:9", 4, 8, 1, "");
    for password in ["Top/Secret", "p@ss/w0rd", "a?b#c", "x:y/z", "/leading"] {
        let url = format!("redis://user:{password}@127.0.0.1:{}/", redis.port);
        for args in [
            vec!["run", "--config", "params.yaml", "--redis", &url],
            vec!["status", "--redis", &url],
        ] {
            let out = puzzlegen(dir.path()).args(&args).output().unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
            assert!(!all.contains(password), "{args:?}: {all}");
            assert!(all.contains("user:***@"), "{args:?}: {all}");
            assert!(!all.contains("panicked"), "{all}");
        }
    }
}

/// Redis killed mid-run and not restarted: the run ends at the stall timeout naming Redis as
/// the cause, not "last error: none".
#[test]
fn redis_gone_for_good_is_named_as_the_cause_of_a_stall() {
    let mut redis = RedisServer::start();
    let server = mock(|m| m.latency = std::time::Duration::from_millis(300));
    // 600 texts a minute: most requests are still to be sent when Redis goes.
    let dir = common::gemini_dir(
        &server.base_url(),
        24,
        10,
        6,
        "  stall_timeout: 3\n  requests_per_minute: 600\n",
    );
    let child = common::command(dir.path())
        .args(["run", "--config", "params.yaml", "--redis", &redis.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the run is at work (its first requests went out).
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while server.stats().requests == 0 {
        assert!(Instant::now() < deadline, "no request within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    redis.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(last.contains("Redis"), "{last}\n{stderr}");
    assert!(!last.contains("last error: none"), "{last}");
}
