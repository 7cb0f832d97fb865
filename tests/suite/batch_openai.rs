//! Batch mode with the OpenAI-compatible provider (issue 25): texts embedded by the mock's
//! OpenAI Batch API (a JSONL file through `POST /v1/files`, `POST /v1/batches`, the output
//! and error files read back), the same puzzles as an interactive run, jobs re-attached to
//! after a kill, what an expired or cancelled job did kept, `batch list` and `cancel`.

use std::path::Path;
use std::time::Duration;

use mock_gemini::batch::{BatchEnding, BatchMock};
use mock_gemini::start_blocking;

use crate::batch::kill_while_jobs_run_and_cut_their_names;
use crate::common::{self, output_within};
use crate::plan::{json_of, plan_json};
use crate::redis::{spawn, strip_times, text};

/// A folder of `themes` x 14 words for `puzzles` puzzles with the openai provider at the mock
/// `base_url`, `mode` interactive or batch, with `batch` lines in its `batch:` section.
pub(crate) fn openai_dir(
    base_url: &str,
    mode: &str,
    themes: usize,
    puzzles: usize,
    batch: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_workload(dir.path(), themes, 14);
    std::fs::write(
        dir.path().join("params.yaml"),
        format!(
            "puzzle_generation:\n  total_puzzle_count: {puzzles}\n\
             embedding:\n  provider: openai\n  mode: {mode}\n  openai:\n    base_url: {base_url}/v1\n    \
             model: text-embedding-3-small\n    api_key_env: PUZZLEGEN_TEST_KEY\n\
             batch:\n  poll_interval: 0.1\n{batch}\
             paths:\n  themes: themes.json\n  candidates: candidates.json\n  outputs: out\n  cache: cache\n"
        ),
    )
    .unwrap();
    dir
}

fn mock(batch: BatchMock) -> mock_gemini::BlockingMockServer {
    start_blocking(common::mock_config(41, |m| {
        m.dimension = 256;
        m.batch = batch;
    }))
    .unwrap()
}

/// The puzzles in `dir` are those of an interactive run of the same workload against
/// `base_url`.
fn assert_same_as_interactive(dir: &Path, base_url: &str, themes: usize, puzzles: usize) {
    let interactive = openai_dir(base_url, "interactive", themes, puzzles, "");
    let out = output_within(spawn(interactive.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let read = |d: &Path| std::fs::read_to_string(d.join("out/final_puzzles.json")).unwrap();
    assert_eq!(
        strip_times(&read(dir)),
        strip_times(&read(interactive.path()))
    );
}

/// Jobs of at most 40 texts, 2 at once: each a file uploaded and a batch, every text in
/// exactly one job, the output files read, only the one-text request that learns the model's
/// dimension sent to the interactive API, `plan` equal to the run, and the puzzles of an
/// interactive run.
#[test]
fn an_openai_batch_run_makes_the_puzzles_of_an_interactive_run() {
    let server = mock(BatchMock::default());
    let dir = openai_dir(
        &server.base_url(),
        "batch",
        12,
        3,
        "  max_texts_per_job: 40\n  max_active_jobs: 2\n",
    );
    let plan = plan_json(dir.path());
    let texts = plan["texts_to_embed"].as_u64().unwrap();
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = server.stats();
    assert_eq!(s.requests, 1, "only the dimension probe: {s:?}");
    assert_eq!(s.batch.jobs, texts.div_ceil(40), "{s:?}");
    assert_eq!(plan["batch_jobs"], s.batch.jobs, "{plan}");
    assert_eq!(s.batch.uploads, s.batch.jobs, "{s:?}");
    assert_eq!(s.batch.downloads, s.batch.jobs, "{s:?}");
    assert_eq!(s.batch.texts, texts, "{s:?}");
    assert_eq!(s.batch.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.batch.texts_embedded, texts, "{s:?}");
    let stats = &common::read_json(&dir.path().join("out/puzzle_metadata.json"))["embedding_stats"];
    assert_eq!(stats["mode"], "batch", "{stats}");
    assert_eq!(stats["batch"]["texts_embedded"], texts, "{stats}");
    let cost = stats["batch"]["cost_usd_estimate"].as_f64().unwrap();
    assert!(
        (cost - plan["cost_usd"]["batch"].as_f64().unwrap()).abs() < 1e-12,
        "{stats} {plan}"
    );
    assert!(!dir.path().join("out/run_journal.jsonl").exists());
    assert_same_as_interactive(dir.path(), &server.base_url(), 12, 3);
}

/// Killed (SIGKILL) while its jobs run, the journal's API names removed as if killed right
/// after each create: the run started again finds its jobs by the display name in their
/// metadata, creates none for their texts, and makes the same puzzles.
#[test]
fn an_openai_batch_run_killed_while_its_jobs_run_re_attaches_to_them() {
    let server = mock(BatchMock {
        latency: Duration::from_secs(4),
        ..BatchMock::default()
    });
    let dir = openai_dir(
        &server.base_url(),
        "batch",
        12,
        3,
        "  max_texts_per_job: 100\n",
    );
    let texts = plan_json(dir.path())["texts_to_embed"].as_u64().unwrap();
    let jobs = kill_while_jobs_run_and_cut_their_names(
        dir.path(),
        &server,
        texts.div_ceil(100),
        "batch_mock",
    );
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("re-attaching to job batch_mock"), "{all}");
    let s = server.stats();
    assert_eq!(s.batch.jobs, jobs, "new jobs after the restart: {s:?}");
    assert_eq!(s.batch.texts, texts, "{s:?}");
    assert_eq!(s.batch.duplicate_texts, 0, "{s:?}");
    assert_same_as_interactive(dir.path(), &server.base_url(), 12, 3);
}

/// A job that expires keeps what it ran (the first half of its lines, in the mock): those
/// vectors go into the cache and only the rest is submitted again; texts answered in the
/// error file go into a follow-up job.
#[test]
fn an_expired_openai_job_keeps_what_it_ran_and_only_the_rest_is_sent_again() {
    let server = mock(BatchMock {
        endings: vec![BatchEnding::Expired],
        item_error_every: 5,
        ..BatchMock::default()
    });
    // 4 themes (1 puzzle, no spares) in one job.
    let dir = openai_dir(
        &server.base_url(),
        "batch",
        4,
        1,
        "  max_texts_per_job: 1000
",
    );
    let texts = plan_json(dir.path())["texts_to_embed"].as_u64().unwrap();
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let kept = vectors_kept(&all, "expired");
    assert!(0 < kept && kept <= texts / 2, "{kept} of {texts}: {all}");
    let s = server.stats();
    let by_job = &s.batch.texts_by_job;
    assert_eq!(by_job[..2], [texts, texts - kept], "{s:?} {all}");
    // Texts the second job answered with an error: one follow-up job.
    assert!(by_job.len() <= 3, "{s:?}");
    assert_eq!(
        s.batch.duplicate_texts,
        by_job[1..].iter().sum::<u64>(),
        "{s:?}"
    );
    let meta = common::read_json(&dir.path().join("out/puzzle_metadata.json"));
    assert_eq!(meta["successful_puzzles"], 1, "{meta}");
}

/// The vectors a job that ended `how` kept, as the run said.
fn vectors_kept(log: &str, how: &str) -> u64 {
    let said = format!("ended {how} with ");
    let at = log
        .find(&said)
        .unwrap_or_else(|| panic!("no {said:?} in {log}"));
    log[at + said.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {said:?} in {log}"))
}

/// `batch list` and `batch cancel` with the openai provider (which first asks the server
/// the model's dimension); a cancelled job keeps what it ran (half its lines, in the mock),
/// and the next run submits only the rest.
#[test]
fn openai_batch_list_and_cancel() {
    let server = mock(BatchMock {
        latency: Duration::from_secs(60),
        ..BatchMock::default()
    });
    let dir = openai_dir(
        &server.base_url(),
        "batch",
        4,
        1,
        "  max_wait: 0.5
",
    );
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let jobs = json_of(dir.path(), &["batch", "list"]);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["name"], "batch_mock000000", "{jobs}");
    assert!(
        matches!(jobs[0]["state"].as_str(), Some("pending" | "running")),
        "{jobs}"
    );
    let texts = server.stats().batch.texts;
    assert_eq!(jobs[0]["texts"], texts, "{jobs}");
    let out = common::puzzlegen(dir.path())
        .args(["batch", "cancel", "--config", "params.yaml"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("batch_mock000000  cancelling"),
        "{printed}"
    );
    assert_eq!(
        json_of(dir.path(), &["batch", "list"])[0]["state"],
        "cancelled"
    );
    // The next run collects the half the cancelled job ran and submits only the rest (which
    // then outlives max_wait in its turn).
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert_eq!(vectors_kept(&all, "cancelled"), texts / 2, "{all}");
    let s = server.stats();
    assert_eq!(
        s.batch.texts_by_job,
        vec![texts, texts - texts / 2],
        "{s:?}"
    );
    assert_eq!(s.batch.texts_embedded, texts / 2, "{s:?}");
    assert_eq!(s.batch.duplicate_texts, texts - texts / 2, "{s:?}");
}

/// A key the server refuses stops the run before any job: the openai provider's first
/// request (the one that learns the model's dimension) is refused, exit 3 as a key refused
/// mid-run, the key nowhere in the output.
#[test]
fn a_refused_key_stops_an_openai_batch_run_before_any_job() {
    let server = start_blocking(common::mock_config(42, |m| {
        m.api_key = Some("the-right-key".into());
    }))
    .unwrap();
    let dir = openai_dir(&server.base_url(), "batch", 4, 1, "");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("Incorrect API key"), "{all}");
    assert!(!all.contains(common::KEY), "{all}");
    assert_eq!(server.stats().batch.jobs, 0);
}
