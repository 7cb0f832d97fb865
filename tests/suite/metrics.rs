//! Prometheus (issue 24, item 3): a worker's live `/metrics` and `puzzlegen status
//! --prometheus`, each checked by `promtool check metrics` (Debian package `prometheus`), and
//! the addresses `--metrics-addr` cannot use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_gemini::start_blocking;

use crate::common::{self, RedisServer, free_port};
use crate::redis::{stop_worker, text};

/// The body of `GET /metrics` at `addr`, once it answers (within 10 s).
fn scrape(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
            return answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        }
        assert!(Instant::now() < deadline, "nothing listens at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `promtool check metrics` on `text`; the test fails, saying how to install it, without it.
fn assert_promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it: apt-get install -y prometheus")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// A worker with `--metrics-addr` serves a coordinator's run: its `/metrics` counts the texts,
/// requests, tasks and latencies it saw, the coordinator's the rest; both pass promtool, and so
/// does `status --prometheus` with the run's figures.
#[test]
fn live_metrics_and_the_deployments_pass_promtool() {
    let redis = RedisServer::start();
    let server = start_blocking(common::mock_config(24, |m| {
        m.latency = Duration::from_millis(150);
    }))
    .unwrap();
    let extra = "  batch_size: 5\n";
    let worker_dir = common::gemini_dir(&server.base_url(), 1, 6, 1, extra);
    let worker_addr = format!("127.0.0.1:{}", free_port());
    let worker = common::command(worker_dir.path())
        .args(["worker", "--config", "params.yaml", "--redis", &redis.url()])
        .args(["--metrics-addr", &worker_addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let idle = scrape(&worker_addr);
    assert_promtool_accepts(&idle);
    assert_eq!(sample(&idle, "puzzlegen_texts_embedded_total"), 0.0);
    let coordinator = common::gemini_dir(&server.base_url(), 16, 14, 4, extra);
    let coordinator_addr = format!("127.0.0.1:{}", free_port());
    let out = common::puzzlegen(coordinator.path())
        .args(["run", "--config", "params.yaml", "--redis", &redis.url()])
        .args(["--metrics-addr", &coordinator_addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let busy = scrape(&worker_addr);
    let deployment = common::command(worker_dir.path())
        .args(["status", "--prometheus", "--redis", &redis.url()])
        .output()
        .unwrap();
    let log = stop_worker(worker);
    assert_promtool_accepts(&busy);
    let done = sample(&busy, "puzzlegen_tasks_total{outcome=\"done\"}");
    assert!(done >= 1.0, "the worker took no task: {log}\n{busy}");
    assert_eq!(done as usize, log.matches(": ok").count(), "{log}");
    let embedded = sample(&busy, "puzzlegen_texts_embedded_total");
    assert!(embedded >= 15.0, "{busy}");
    let ok = sample(&busy, "puzzlegen_requests_total{outcome=\"ok\"}");
    assert_eq!(
        sample(&busy, "puzzlegen_request_duration_seconds_count"),
        ok,
        "one latency per request: {busy}"
    );
    assert!(
        sample(&busy, "puzzlegen_request_duration_seconds_sum") >= ok * 0.15,
        "the mock takes 150 ms a request: {busy}"
    );
    assert_eq!(sample(&busy, "puzzlegen_tasks_in_hand"), 0.0, "{busy}");
    assert_eq!(deployment.status.code(), Some(0), "{}", text(&deployment));
    let deployment = String::from_utf8(deployment.stdout).unwrap();
    assert_promtool_accepts(&deployment);
    let run_done = deployment
        .lines()
        .find(|l| l.starts_with("puzzlegen_deployment_run_done{"))
        .unwrap_or_else(|| panic!("{deployment}"));
    assert!(run_done.ends_with(" 16"), "{deployment}");
    assert!(
        deployment.contains("puzzlegen_deployment_process_up{"),
        "{deployment}"
    );
}

/// An address `--metrics-addr` cannot listen on is exit 2 with one line naming it, before any
/// work (nothing is paid for, no output written).
#[test]
fn a_metrics_address_that_cannot_be_bound_is_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let server = start_blocking(common::mock_config(25, |_| {})).unwrap();
    let dir = common::gemini_dir(&server.base_url(), 4, 6, 1, "");
    for addr in [taken.as_str(), "not-an-address", "127.0.0.1:99999"] {
        let stderr = common::assert_user_error(
            common::puzzlegen(dir.path()).args([
                "run",
                "--config",
                "params.yaml",
                "--metrics-addr",
                addr,
            ]),
            &format!(
                "metrics address {addr} (--metrics-addr, distributed.metrics_addr): cannot listen"
            ),
        );
        assert!(!dir.path().join("out").exists(), "{stderr}");
    }
    assert_eq!(server.stats().requests, 0);
}
