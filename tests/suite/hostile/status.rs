//! `puzzlegen status` on a hostile Redis (issue 20, item 4 and the killed coordinator): a
//! value that is not a number or a key of the wrong type is named (key and what is wrong, in
//! the text and in `--json`) while everything else is still shown, with exit 0; a queue run
//! whose coordinator died shows as orphaned, and no worker spends budget on it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Finished, RedisServer};
use crate::redis::{spawn, start_worker, status_json, stop_worker};

const LIMITER: &str = "puzzlegen:limit:{gemini:SOME_KEY_VAR:gemini-embedding-001}";
const COORDINATOR: &str = "coordinator-4242-r1";
const RUN: &str = "r1";

fn key(suffix: &str) -> String {
    format!("{LIMITER}:{suffix}")
}

fn run_key(part: &str) -> String {
    format!("puzzlegen:queue:{{{RUN}}}:{part}")
}

fn beat_key() -> String {
    format!("puzzlegen:worker:{COORDINATOR}")
}

/// Redis's clock (`TIME`): seconds and microseconds.
fn redis_time(redis: &RedisServer) -> (u64, u64) {
    let raw = redis.command(&["TIME"]);
    let lines: Vec<&str> = raw.lines().collect();
    (lines[2].parse().unwrap(), lines[4].parse().unwrap())
}

/// Sends each command of `commands`, asserting none is refused.
fn send(redis: &RedisServer, commands: &[Vec<String>]) {
    for c in commands {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let answer = redis.command(&args);
        assert!(!answer.starts_with('-'), "{c:?}: {answer}");
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Everything `status` reads, written by hand as the processes write it: one limiter (this
/// second's counters 3 requests and 30 texts, a pause a minute ahead, 2 429s, one lease of
/// 4), one coordinator's heartbeat, and its queue run (2 tasks, one delivered, one result,
/// one dead letter). Returns this second (the counters' key suffix).
fn write_healthy(redis: &RedisServer) -> u64 {
    let (seconds, micros) = redis_time(redis);
    let now_us = seconds * 1_000_000 + micros;
    let ahead = (now_us + 60_000_000).to_string();
    let beat = json!({
        "id": COORDINATOR, "role": "coordinator", "host": "h", "pid": 4242,
        "started_at": seconds, "tasks": [], "texts_embedded": 7
    })
    .to_string();
    let started = seconds.to_string();
    let space = "gemini-embedding-001:768:SEMANTIC_SIMILARITY";
    let (tasks, results, dead, meta) = (
        run_key("tasks"),
        run_key("results"),
        run_key("dead"),
        run_key("meta"),
    );
    send(
        redis,
        &[
            cmd(&["FLUSHALL"]),
            cmd(&[
                "HSET",
                &key("settings"),
                "per_minute",
                "600",
                "unit",
                "requests",
            ]),
            cmd(&["HSET", &key("settings"), "concurrency", "4"]),
            cmd(&[
                "HSET",
                &key(&format!("second:{seconds}")),
                "requests",
                "3",
                "texts",
                "30",
            ]),
            cmd(&["SET", &key("pause"), &ahead]),
            cmd(&["SET", &key("429s"), "2"]),
            cmd(&["ZADD", &key("leases"), &ahead, "lease-1"]),
            cmd(&["SET", &beat_key(), &beat]),
            cmd(&[
                "HSET",
                &meta,
                "space",
                space,
                "tasks",
                "2",
                "started_at",
                &started,
            ]),
            cmd(&["HSET", &meta, "coordinator", COORDINATOR]),
            cmd(&["ZADD", "puzzlegen:queue:all", &started, RUN]),
            cmd(&["HSET", "puzzlegen:queue:runs", RUN, space]),
            cmd(&["XGROUP", "CREATE", &tasks, "workers", "$", "MKSTREAM"]),
            cmd(&["XADD", &tasks, "*", "theme", "A", "texts", "[]"]),
            cmd(&["XADD", &tasks, "*", "theme", "B", "texts", "[]"]),
            cmd(&[
                "XREADGROUP",
                "GROUP",
                "workers",
                "w",
                "COUNT",
                "1",
                "STREAMS",
                &tasks,
                ">",
            ]),
            cmd(&["HSET", &results, "A", "ok"]),
            cmd(&["XADD", &dead, "*", "theme", "C", "error", "dead letter"]),
        ],
    );
    seconds
}

/// `puzzlegen status` (with `--json` or not) on `redis`, run to the end.
fn status(redis: &RedisServer, json: bool) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::puzzlegen(dir.path());
    cmd.args(["status", "--redis", &redis.url()]);
    if json {
        cmd.arg("--json");
    }
    common::finish(&mut cmd)
}

/// The figures of the healthy state, as `(JSON pointer, value)`.
fn healthy_figures() -> Vec<(&'static str, Value)> {
    vec![
        ("/limiters/0/limit_per_minute", json!(600.0)),
        ("/limiters/0/unit", json!("requests")),
        ("/limiters/0/max_concurrent", json!(4)),
        ("/limiters/0/requests_last_minute", json!(3)),
        ("/limiters/0/texts_last_minute", json!(30)),
        ("/limiters/0/rate_limited", json!(2)),
        ("/limiters/0/leases_in_use", json!(1)),
        ("/workers/0/id", json!(COORDINATOR)),
        ("/runs/0/run", json!(RUN)),
        ("/runs/0/state", json!("running")),
        ("/runs/0/tasks", json!(2)),
        ("/runs/0/backlog", json!(1)),
        ("/runs/0/in_flight", json!(1)),
        ("/runs/0/done", json!(1)),
        ("/runs/0/dead_letters", json!(1)),
        ("/unreadable", json!([])),
    ]
}

/// The hand-written state reads back as written: the test's key layout is the code's.
#[test]
fn status_reads_the_hand_written_state_back() {
    let redis = RedisServer::start();
    write_healthy(&redis);
    let r = status(&redis, true);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    for (pointer, want) in healthy_figures() {
        assert_eq!(v.pointer(pointer), Some(&want), "{pointer}: {v:#}");
    }
    let pause = v["limiters"][0]["pause_seconds"].as_f64().unwrap();
    assert!((50.0..=60.0).contains(&pause), "{v:#}");
}

/// One poisoned key: what is written to it, what `status` must say of it, the figure it can
/// no longer give (`null` in the JSON, empty: none) and one it still gives.
struct Poison {
    key: String,
    commands: Vec<Vec<String>>,
    problem: &'static str,
    lost: &'static str,
    kept: (&'static str, Value),
}

/// `key` holding `value` (a string) instead of what it held.
fn string(key: &str, value: &str) -> Vec<Vec<String>> {
    vec![cmd(&["DEL", key]), cmd(&["SET", key, value])]
}

/// `key` holding a hash instead of what it held.
fn hash(key: &str) -> Vec<Vec<String>> {
    vec![cmd(&["DEL", key]), cmd(&["HSET", key, "f", "v"])]
}

/// `key` holding a list instead of what it held.
fn list(key: &str) -> Vec<Vec<String>> {
    vec![cmd(&["DEL", key]), cmd(&["RPUSH", key, "x"])]
}

fn poisons(second: u64) -> Vec<Poison> {
    let counters = key(&format!("second:{second}"));
    let p = |key: String,
             commands: Vec<Vec<String>>,
             problem: &'static str,
             lost: &'static str,
             kept: (&'static str, Value)| Poison {
        key,
        commands,
        problem,
        lost,
        kept,
    };
    let nan = "not a number";
    let wrong = "wrong type";
    vec![
        // Values that are not numbers, in each numeric key.
        p(
            key("429s"),
            string(&key("429s"), "abc"),
            nan,
            "/limiters/0/rate_limited",
            ("/limiters/0/requests_last_minute", json!(3)),
        ),
        p(
            key("pause"),
            string(&key("pause"), "abc"),
            nan,
            "/limiters/0/pause_seconds",
            ("/limiters/0/rate_limited", json!(2)),
        ),
        p(
            counters.clone(),
            vec![cmd(&["HSET", &counters, "requests", "abc"])],
            nan,
            "/limiters/0/requests_last_minute",
            ("/limiters/0/texts_last_minute", json!(30)),
        ),
        p(
            counters.clone(),
            vec![cmd(&["HSET", &counters, "texts", "many"])],
            nan,
            "/limiters/0/texts_last_minute",
            ("/limiters/0/requests_last_minute", json!(3)),
        ),
        p(
            key("settings"),
            vec![cmd(&["HSET", &key("settings"), "per_minute", "lots"])],
            nan,
            "/limiters/0/limit_per_minute",
            ("/limiters/0/leases_in_use", json!(1)),
        ),
        p(
            key("settings"),
            vec![cmd(&["HSET", &key("settings"), "concurrency", "x"])],
            nan,
            "/limiters/0/max_concurrent",
            ("/limiters/0/limit_per_minute", json!(600.0)),
        ),
        p(
            run_key("meta"),
            vec![cmd(&["HSET", &run_key("meta"), "tasks", "two"])],
            nan,
            "/runs/0/tasks",
            ("/runs/0/done", json!(1)),
        ),
        p(
            run_key("meta"),
            vec![cmd(&["HSET", &run_key("meta"), "started_at", "yesterday"])],
            nan,
            "/runs/0/started_at",
            ("/runs/0/tasks", json!(2)),
        ),
        p(
            beat_key(),
            string(&beat_key(), "not a heartbeat"),
            "not a heartbeat",
            "",
            ("/runs/0/state", json!("running")),
        ),
        // Keys of the wrong type, of each kind.
        p(
            key("settings"),
            string(&key("settings"), "x"),
            wrong,
            "/limiters/0/limit_per_minute",
            ("/limiters/0/requests_last_minute", json!(3)),
        ),
        p(
            counters.clone(),
            string(&counters, "3"),
            wrong,
            "/limiters/0/requests_last_minute",
            ("/limiters/0/rate_limited", json!(2)),
        ),
        p(
            key("pause"),
            hash(&key("pause")),
            wrong,
            "/limiters/0/pause_seconds",
            ("/limiters/0/leases_in_use", json!(1)),
        ),
        p(
            key("429s"),
            list(&key("429s")),
            wrong,
            "/limiters/0/rate_limited",
            ("/limiters/0/texts_last_minute", json!(30)),
        ),
        p(
            key("leases"),
            string(&key("leases"), "1"),
            wrong,
            "/limiters/0/leases_in_use",
            ("/limiters/0/rate_limited", json!(2)),
        ),
        p(
            beat_key(),
            hash(&beat_key()),
            wrong,
            "",
            ("/runs/0/done", json!(1)),
        ),
        p(
            run_key("meta"),
            string(&run_key("meta"), "x"),
            wrong,
            "/runs/0/tasks",
            ("/runs/0/done", json!(1)),
        ),
        p(
            "puzzlegen:queue:all".into(),
            string("puzzlegen:queue:all", "x"),
            wrong,
            "",
            ("/runs/0/state", json!("running")),
        ),
        p(
            "puzzlegen:queue:runs".into(),
            list("puzzlegen:queue:runs"),
            wrong,
            "",
            ("/runs/0/tasks", json!(2)),
        ),
        p(
            run_key("tasks"),
            string(&run_key("tasks"), "x"),
            wrong,
            "/runs/0/backlog",
            ("/runs/0/done", json!(1)),
        ),
        p(
            run_key("results"),
            list(&run_key("results")),
            wrong,
            "/runs/0/done",
            ("/runs/0/backlog", json!(1)),
        ),
        p(
            run_key("dead"),
            hash(&run_key("dead")),
            wrong,
            "/runs/0/dead_letters",
            ("/runs/0/in_flight", json!(1)),
        ),
    ]
}

/// Each poisoned key in turn, the rest as written: exit 0, no panic, the key named with what
/// is wrong with it in the text and in the JSON, the figure it gave `null`, the others shown;
/// the limiter, the run and the heartbeat (unless its own key is the poisoned one) still
/// listed.
#[test]
fn status_names_each_unreadable_key_and_shows_the_rest() {
    let redis = RedisServer::start();
    for i in 0..poisons(0).len() {
        let poison = poisons(write_healthy(&redis)).swap_remove(i);
        send(&redis, &poison.commands);
        let what = format!("{} ({:?})", poison.key, poison.commands);
        let r = status(&redis, true);
        assert_eq!(r.code, 0, "{what}: {}", r.all());
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.all());
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let named = v["unreadable"].as_array().unwrap().iter().any(|u| {
            u["key"] == poison.key.as_str()
                && u["problem"].as_str().unwrap().contains(poison.problem)
        });
        assert!(named, "{what}: not named: {v:#}");
        if !poison.lost.is_empty() {
            assert_eq!(v.pointer(poison.lost), Some(&Value::Null), "{what}: {v:#}");
        }
        let (pointer, want) = &poison.kept;
        assert_eq!(v.pointer(pointer), Some(want), "{what}: {pointer}: {v:#}");
        assert_eq!(v["limiters"].as_array().unwrap().len(), 1, "{what}: {v:#}");
        assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{what}: {v:#}");
        let text = status(&redis, false);
        assert_eq!(text.code, 0, "{what}: {}", text.all());
        assert!(
            text.stdout
                .lines()
                .any(|l| l.contains(&poison.key) && l.contains(poison.problem)),
            "{what}: not named in the text: {}",
            text.all()
        );
    }
}

/// Polls `puzzlegen status --json` until `ready` holds of it (the test fails after `within`).
fn wait_for_status(redis: &str, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status_json(redis);
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never came: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A coordinator killed with SIGKILL mid-run: once its heartbeat has lapsed its run shows as
/// orphaned (JSON and text), and a worker started afterwards takes the run off the list
/// (one log line, the run's meta marked, its keys set to expire) and sends the mock no
/// request for it.
#[test]
fn a_killed_coordinators_run_is_orphaned_and_costs_no_worker_request() {
    let redis = RedisServer::start();
    let server = mock_gemini::start_blocking(common::mock_config(23, |m| {
        m.latency = Duration::from_millis(1500);
    }))
    .unwrap();
    let extra = "  batch_size: 5\n";
    let coordinator = common::gemini_dir(&server.base_url(), 20, 14, 5, extra);
    let mut run = spawn(coordinator.path(), &["--redis", &redis.url()]);
    // Mid-run: the run registered and a request of it at the mock.
    let running = |s: &Value| {
        s["runs"].as_array().is_some_and(|r| !r.is_empty()) && server.stats().requests > 0
    };
    let mid = wait_for_status(&redis.url(), Duration::from_secs(30), running);
    assert_eq!(mid["runs"][0]["state"], "running", "{mid:#}");
    assert!(run.try_wait().unwrap().is_none(), "the run ended first");
    run.kill().unwrap();
    run.wait().unwrap();
    let id = mid["runs"][0]["run"].as_str().unwrap().to_owned();
    let orphaned = |s: &Value| s["runs"][0]["state"] == "orphaned";
    wait_for_status(&redis.url(), Duration::from_secs(15), orphaned);
    let text = common::finish(common::puzzlegen(coordinator.path()).args([
        "status",
        "--redis",
        &redis.url(),
    ]));
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains(&id) && l.contains("orphaned")),
        "{}",
        text.all()
    );
    let before = server.stats().requests;
    let (_worker_dir, worker) = start_worker(&server.base_url(), &redis.url(), extra);
    // Until the worker took the run off the list, or spent a request on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis
        .command(&["HEXISTS", "puzzlegen:queue:runs", &id])
        .trim()
        == ":1"
        && server.stats().requests == before
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = stop_worker(worker);
    assert_eq!(server.stats().requests, before, "the worker spent: {log}");
    let lines = log
        .lines()
        .filter(|l| l.contains(&id) && l.contains("orphaned"));
    assert_eq!(lines.count(), 1, "{log}");
    let meta = format!("puzzlegen:queue:{{{id}}}:meta");
    assert_eq!(
        redis.command(&["HEXISTS", &meta, "orphaned_at"]).trim(),
        ":1"
    );
    let ttl = redis.command(&["TTL", &format!("puzzlegen:queue:{{{id}}}:tasks")]);
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0, "the run's keys do not expire: {ttl}");
    let after = status_json(&redis.url());
    assert_eq!(after["runs"][0]["state"], "orphaned", "{after:#}");
}
