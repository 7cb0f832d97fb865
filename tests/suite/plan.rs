//! `puzzlegen plan` (issue 25): the texts it says a run will embed are the texts the run then
//! sends, it sends and writes nothing itself, and the batch and pricing keys are checked.

use mock_gemini::start_blocking;
use serde_json::Value;

use crate::common::{self, assert_user_error, files_under, puzzlegen};

/// `plan --json` in `dir`.
pub(crate) fn plan_json(dir: &std::path::Path) -> Value {
    json_of(dir, &["plan"])
}

/// The JSON `puzzlegen <command...> --config params.yaml --json` prints in `dir` (it must succeed).
pub(crate) fn json_of(dir: &std::path::Path, command: &[&str]) -> Value {
    let out = puzzlegen(dir)
        .args(command)
        .args(["--config", "params.yaml", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Before a run: every text to embed, none cached, no request and no file; the run then sends
/// exactly those texts in that many requests; after it, everything is cached.
#[test]
fn plan_says_what_the_run_then_sends_and_sends_nothing_itself() {
    let server = start_blocking(common::mock_config(25, |_| {})).unwrap();
    // 14 themes of 12 words for 3 puzzles: 12 themes planned, 2 spares; batch_size 10.
    let dir = common::gemini_dir(&server.base_url(), 14, 12, 3, "  batch_size: 10\n");
    // A word shared by two themes is one text.
    let before = files_under(dir.path());
    let p = plan_json(dir.path());
    assert_eq!(files_under(dir.path()), before, "plan wrote a file");
    assert_eq!(server.stats().requests, 0, "plan sent a request");
    assert_eq!(p["puzzles"], 3);
    assert_eq!(p["themes"], 12);
    assert_eq!(p["spare_themes"], 2);
    assert_eq!(p["texts_cached"], 0);
    assert_eq!(p["texts_to_embed"], p["texts_total"]);
    let to_embed = p["texts_to_embed"].as_u64().unwrap();
    assert!(to_embed >= 12 * 5, "{p}");
    assert_eq!(p["requests"].as_u64().unwrap(), to_embed.div_ceil(10));
    assert_eq!(p["batch_jobs"], 1);
    let tokens = p["tokens_estimate"].as_u64().unwrap();
    assert!(tokens >= to_embed, "{p}");
    let interactive = p["cost_usd"]["interactive"].as_f64().unwrap();
    let batch = p["cost_usd"]["batch"].as_f64().unwrap();
    assert!(
        (interactive - tokens as f64 * 0.15 / 1e6).abs() < 1e-12,
        "{p}"
    );
    assert!((batch * 2.0 - interactive).abs() < 1e-12, "{p}");
    assert!(p["seconds_estimate"].as_f64().unwrap() > 0.0, "{p}");

    let run = common::finish(puzzlegen(dir.path()).args(["run", "--config", "params.yaml"]));
    assert_eq!(run.code, 0, "{}", run.all());
    let s = server.stats();
    assert_eq!(s.distinct_texts_embedded, to_embed, "{s:?}\n{p}");
    assert_eq!(s.texts_embedded, to_embed, "{s:?}");
    assert_eq!(s.requests, p["requests"].as_u64().unwrap(), "{s:?}\n{p}");

    let db = dir.path().join("cache/embeddings.sqlite3");
    let (files, bytes) = (files_under(dir.path()), std::fs::read(&db).unwrap());
    let after = plan_json(dir.path());
    assert_eq!(files_under(dir.path()), files, "plan left a file behind");
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "plan changed the cache database"
    );
    assert_eq!(after["texts_cached"], p["texts_total"], "{after}");
    assert_eq!(after["texts_to_embed"], 0);
    assert_eq!(after["requests"], 0);
    assert_eq!(after["cost_usd"]["interactive"], 0.0);
    assert_eq!(server.stats().requests, s.requests);
}

/// The human form names the counts and both modes' costs.
#[test]
fn plan_prints_counts_costs_and_time() {
    let dir = common::gemini_dir("http://127.0.0.1:9/", 6, 8, 1, "");
    let out = puzzlegen(dir.path())
        .args(["plan", "--config", "params.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in ["to embed", "interactive:", "batch:", "cost $", "time:"] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
}

/// An unknown mode, batch with the local provider, and a price that is not a number are exit
/// 2 naming the key.
#[test]
fn bad_mode_and_pricing_are_exit_2_naming_the_key() {
    let cases = [
        ("embedding:\n  mode: fast\n", "embedding.mode"),
        (
            "embedding:\n  provider: local\n  mode: batch\n",
            "embedding.mode: expected interactive with the local provider",
        ),
        (
            "embedding:\n  mode: batch\npricing:\n  gemini-embedding-001:\n    batch: cheap\n",
            "pricing.gemini-embedding-001.batch",
        ),
        (
            "pricing:\n  my-model:\n    batch: 0.1\n",
            "pricing.my-model.interactive",
        ),
        ("batch:\n  max_active_jobs: 0\n", "batch.max_active_jobs"),
        (
            "embedding:\n  provider: openai\n  mode: batch\n  openai:\n    base_url: http://127.0.0.1:9/v1\n    model: m\nbatch:\n  max_texts_per_job: 60000\n",
            "batch.max_texts_per_job: expected at most 50000 with the openai provider",
        ),
    ];
    for (yaml, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        common::write_workload(dir.path(), 4, 6);
        std::fs::write(
            dir.path().join("params.yaml"),
            format!(
                "paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n\
                 {yaml}"
            ),
        )
        .unwrap();
        for cmd in ["plan", "run"] {
            assert_user_error(
                puzzlegen(dir.path()).args([cmd, "--config", "params.yaml"]),
                needle,
            );
        }
    }
}

/// With a Redis, `plan` also looks in the shared tier (read only): texts another run paid for
/// count as cached, and the run then sends none of them.
#[test]
fn plan_counts_the_shared_redis_tier() {
    let redis = common::RedisServer::start();
    let server = start_blocking(common::mock_config(33, |_| {})).unwrap();
    let run = |dir: &std::path::Path| {
        let out = puzzlegen(dir)
            .args(["run", "--config", "params.yaml", "--redis", &redis.url()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
    };
    let first = common::gemini_dir(&server.base_url(), 8, 10, 2, "");
    run(first.path());
    let paid = server.stats().requests;
    // Vectors and locks (heartbeats and limiter keys expire on their own meanwhile).
    let count = |pattern: &str| {
        redis.command(&[
            "EVAL",
            &format!("return #redis.call('KEYS', '{pattern}')"),
            "0",
        ])
    };
    let vectors = count("puzzlegen:vec:*");
    assert_ne!(vectors, ":0\r\n", "the first run shared no vector");
    assert_eq!(count("puzzlegen:lock:*"), ":0\r\n");
    // The same workload in another folder: nothing in its own cache, all in Redis.
    let second = common::gemini_dir(&server.base_url(), 8, 10, 2, "");
    let alone = plan_json(second.path());
    assert_eq!(alone["texts_cached"], 0, "{alone}");
    let url = redis.url();
    let p = json_of(second.path(), &["plan", "--redis", &url]);
    assert_eq!(p["texts_in_shared_tier"], p["texts_total"], "{p}");
    assert_eq!(p["texts_to_embed"], 0, "{p}");
    assert_eq!(count("puzzlegen:vec:*"), vectors, "plan changed Redis");
    assert_eq!(count("puzzlegen:lock:*"), ":0\r\n", "plan took locks");
    run(second.path());
    assert_eq!(
        server.stats().requests,
        paid,
        "the second run paid for texts"
    );
}
