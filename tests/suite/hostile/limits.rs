//! Hostile cases: limits. Sizes that cannot fit are refused before any work, naming the key
//! and the largest value that fits; an endless config file is not read whole; a signal during
//! a plan of millions of slots is honoured at once.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::inputs::assert_user_error;
use crate::common::{self, puzzlegen};

#[test]
fn a_huge_puzzle_count_exits_2_at_once_naming_the_largest_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    common::write_params(dir.path(), 1_000_000_000_000, "");
    common::write_workload(dir.path(), 8, 10);
    let started = Instant::now();
    let stderr = assert_user_error(
        dir.path(),
        "params.yaml: puzzle_generation.total_puzzle_count: expected at most ",
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // 2500000 on a machine with 10 GB free, fewer (and said so) on a smaller one.
    assert!(
        stderr.contains(
            "expected at most 2500000 with 4 themes per puzzle (a run plans at most 10000000 \
             theme slots)"
        ) || stderr.contains("of memory available, at about 1 KB per theme slot"),
        "{stderr}"
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
}

#[test]
fn a_huge_worker_count_names_the_key_and_the_largest_value() {
    let dir = tempfile::tempdir().unwrap();
    common::write_params(
        dir.path(),
        1,
        "multiprocessing:\n  worker_count: 1000000000000\n",
    );
    common::write_workload(dir.path(), 8, 10);
    assert_user_error(
        dir.path(),
        "params.yaml: multiprocessing.worker_count: expected an integer from 1 to 10000, got \
         1000000000000",
    );
}

#[test]
fn an_endless_config_file_is_refused_without_filling_memory() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = puzzlegen(dir.path())
        .args(["run", "--config", "/dev/zero"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/dev/zero: too large: a configuration file may hold at most 1 MB"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigterm_during_a_ten_million_slot_plan_ends_the_run_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // 2 500 000 puzzles x 4 themes: the largest plan the cap allows, 10 million slots.
    // The puzzle CSV goes to a FIFO (never opened: the run stops while planning), so the
    // run is not refused for disk space first.
    common::write_params(
        dir.path(),
        2_500_000,
        "output:\n  puzzle_embeddings_file: fifo\n",
    );
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    common::write_workload(dir.path(), 6, 10);
    let mut child = common::command(dir.path())
        .args(["run", "--config", "params.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended before planning: {seen}"
        );
        seen.push_str(&line);
        if line.contains("planning 10000000 theme slots") {
            break;
        }
    }
    let signalled = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Drain stderr in the background so the child never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM: {seen}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    let rest = rest.join().unwrap();
    assert!(took < Duration::from_secs(1), "took {took:?}: {seen}{rest}");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("stopped by a signal while planning"),
        "{seen}{rest}"
    );
    assert!(!rest.contains("panicked"), "{rest}");
}

#[test]
fn outputs_that_cannot_fit_on_the_disk_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    common::write_workload(dir.path(), 6, 10);
    // 2 500 000 puzzles of 3072 numbers at 17 decimals: nearly 3 TiB of puzzle CSV. The
    // server address is never contacted: the run is refused first.
    std::fs::write(
        dir.path().join("params.yaml"),
        "puzzle_generation:\n  total_puzzle_count: 2500000\n\
         embedding:\n  provider: gemini\n\
         gemini:\n  base_url: http://127.0.0.1:9\n  api_key_env: PUZZLEGEN_TEST_KEY\n  \
         embedding_dimension: 3072\n\
         output:\n  csv_precision: 17\n\
         paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n  cache: cache\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = puzzlegen(dir.path())
        .env("PUZZLEGEN_TEST_KEY", common::KEY)
        .args(["run", "--config", "params.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error: params.yaml: puzzle_generation.total_puzzle_count is 2500000, whose puzzle \
             CSV (out/puzzle_embeddings.csv) needs at least 2.8 TiB"
        ) && stderr.contains("puzzle(s) fit there"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dir.path().join("out").exists(), "outputs begun");
    assert!(!dir.path().join("cache").exists(), "cache begun");
}
