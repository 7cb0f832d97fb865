//! Batch mode (issue 25): texts embedded by Batch API jobs of the mock (Gemini's
//! `asyncBatchEmbedContent`), the same puzzles as an interactive run, no interactive request,
//! jobs named in the run journal and re-attached to after a kill, and the ways jobs end.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use mock_gemini::batch::{BatchEnding, BatchMock};
use mock_gemini::start_blocking;

use crate::common::{self, output_within};
use crate::plan::{json_of, plan_json};
use crate::redis::{assert_same_as_a_run_alone, spawn, text};

/// A folder of `themes` x 14 words for `puzzles` puzzles in batch mode against `base_url`,
/// with `batch` lines in its `batch:` section.
fn batch_dir(base_url: &str, themes: usize, puzzles: usize, batch: &str) -> tempfile::TempDir {
    let dir = common::gemini_dir(base_url, themes, 14, puzzles, "");
    let p = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(&p).unwrap().replace(
        "  provider: gemini\n",
        "  provider: gemini\n  mode: batch\n",
    );
    std::fs::write(&p, format!("{yaml}batch:\n  poll_interval: 0.1\n{batch}")).unwrap();
    dir
}

fn mock(batch: BatchMock) -> mock_gemini::BlockingMockServer {
    start_blocking(common::mock_config(31, |m| m.batch = batch)).unwrap()
}

fn journal(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out/run_journal.jsonl")).unwrap_or_default()
}

/// `plan --json`'s texts to embed in `dir`.
fn to_embed(dir: &Path) -> u64 {
    plan_json(dir)["texts_to_embed"].as_u64().unwrap()
}

/// Starts a run in `dir` and kills it (SIGKILL) once the mock holds `jobs` jobs and the
/// journal names each by the API's name (starting with `prefix`); then cuts those names from
/// the journal, as if the run had been killed between each create and writing its name down
/// (the next run must find its jobs by display name). The jobs the mock holds.
pub(crate) fn kill_while_jobs_run_and_cut_their_names(
    dir: &Path,
    server: &mock_gemini::BlockingMockServer,
    jobs: u64,
    prefix: &str,
) -> u64 {
    let named = format!("\"name\":\"{prefix}");
    let mut run: Child = spawn(dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stats().batch.jobs < jobs || (journal(dir).matches(&named).count() as u64) < jobs {
        assert!(
            Instant::now() < deadline,
            "no job created: {}",
            journal(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let before = journal(dir);
    assert!(before.contains("\"batch_job\""), "{before}");
    let kept: String = before
        .lines()
        .filter(|l| !l.contains(&named))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(kept.len() < before.len(), "{before}");
    std::fs::write(dir.join("out/run_journal.jsonl"), kept).unwrap();
    server.stats().batch.jobs
}

/// Jobs of at most 40 texts, at most 2 at once: every text in exactly one job, no
/// interactive request, the puzzles of an interactive run, the journal gone at the end.
#[test]
fn a_batch_run_makes_the_puzzles_of_an_interactive_run_without_an_interactive_request() {
    let server = mock(BatchMock::default());
    let dir = batch_dir(
        &server.base_url(),
        12,
        3,
        "  max_texts_per_job: 40\n  max_active_jobs: 2\n",
    );
    let plan = plan_json(dir.path());
    let texts = plan["texts_to_embed"].as_u64().unwrap();
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = server.stats();
    let stats = &common::read_json(&dir.path().join("out/puzzle_metadata.json"))["embedding_stats"];
    assert_eq!(stats["mode"], "batch", "{stats}");
    assert_eq!(stats["batch"]["jobs"], s.batch.jobs, "{stats}");
    assert_eq!(
        stats["batch"]["texts_by_job"],
        serde_json::json!(s.batch.texts_by_job)
    );
    assert_eq!(stats["batch"]["texts_embedded"], texts, "{stats}");
    assert_eq!(plan["batch_jobs"], s.batch.jobs, "{plan}");
    let cost = stats["batch"]["cost_usd_estimate"].as_f64().unwrap();
    assert!(
        (cost - plan["cost_usd"]["batch"].as_f64().unwrap()).abs() < 1e-12,
        "{stats} {plan}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("batch:   "),
        "{}",
        text(&out)
    );
    assert_eq!(s.requests, 0, "interactive requests: {s:?}");
    assert_eq!(s.batch.texts, texts, "{s:?}");
    assert_eq!(s.batch.jobs, texts.div_ceil(40), "{s:?}");
    assert_eq!(s.batch.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.batch.texts_embedded, texts, "{s:?}");
    assert!(!dir.path().join("out/run_journal.jsonl").exists());
    server.reset_stats();
    assert_same_as_a_run_alone(dir.path(), &server.base_url(), 12, 3, "");
}

/// Killed (SIGKILL) while its jobs run, started again: it re-attaches to the jobs its
/// journal names (found by display name where the journal lacks the API's name), creates
/// none for their texts, and makes the same puzzles.
#[test]
fn a_run_killed_while_its_jobs_run_re_attaches_to_them() {
    let server = mock(BatchMock {
        latency: Duration::from_secs(4),
        ..BatchMock::default()
    });
    let dir = batch_dir(&server.base_url(), 12, 3, "  max_texts_per_job: 100\n");
    let texts = to_embed(dir.path());
    let jobs = kill_while_jobs_run_and_cut_their_names(
        dir.path(),
        &server,
        texts.div_ceil(100),
        "batches/",
    );
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("re-attaching to job batches/"), "{all}");
    let s = server.stats();
    assert_eq!(s.batch.jobs, jobs, "new jobs after the restart: {s:?}");
    assert_eq!(s.batch.texts, texts, "{s:?}");
    assert_eq!(s.batch.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.requests, 0, "{s:?}");
    server.reset_stats();
    assert_same_as_a_run_alone(dir.path(), &server.base_url(), 12, 3, "");
}

/// A job that ends failed is submitted once more; one that then ends expired fails its
/// themes (named with the reason), spare themes take their place through jobs of their own
/// (a cancelled one submitted again), and texts a job answered with an error go into a
/// follow-up job.
#[test]
fn failed_expired_and_cancelled_jobs_and_item_errors() {
    let server = mock(BatchMock {
        endings: vec![
            BatchEnding::Failed,
            BatchEnding::Expired,
            BatchEnding::Cancelled,
        ],
        item_error_every: 9,
        ..BatchMock::default()
    });
    // 4 planned themes (1 puzzle) and 4 spares, one job per round.
    let dir = batch_dir(&server.base_url(), 8, 1, "  max_texts_per_job: 1000\n");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("ended failed: its 60 text(s) are submitted once more"),
        "{all}"
    );
    assert!(
        all.contains("ended expired (after one resubmission)"),
        "{all}"
    );
    assert!(
        all.contains("ended cancelled: its 60 text(s) are submitted once more"),
        "{all}"
    );
    let meta = common::read_json(&dir.path().join("out/puzzle_metadata.json"));
    let failed = meta["failed_themes"].to_string();
    assert!(failed.contains("ended expired"), "{failed}");
    assert_eq!(meta["successful_puzzles"], 1, "{meta}");
    let s = server.stats();
    assert_eq!(s.requests, 0, "{s:?}");
    // failed, expired; spares: cancelled, again (with item errors), the follow-up.
    assert_eq!(s.batch.jobs, 5, "{s:?}");
    let follow_up = *s.batch.texts_by_job.last().unwrap();
    assert!((1..60).contains(&follow_up), "{s:?}");
}

/// A refused key stops the run at once (exit 3) without showing the key.
#[test]
fn a_refused_key_stops_a_batch_run_at_once() {
    let server = start_blocking(common::mock_config(32, |m| {
        m.api_key = Some("the-right-key".into());
    }))
    .unwrap();
    let dir = batch_dir(&server.base_url(), 6, 1, "");
    let t = Instant::now();
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("API key not valid"), "{all}");
    assert!(t.elapsed() < Duration::from_secs(20), "{all}");
    assert!(!all.contains(common::KEY), "{all}");
}

/// Jobs that outlive `batch.max_wait`: exit 3 saying how to resume or cancel, the jobs left
/// named in the journal; after the jobs finish, the same command collects them with no new
/// job.
#[test]
fn max_wait_ends_the_wait_and_the_next_run_collects_the_jobs() {
    let server = mock(BatchMock {
        latency: Duration::from_secs(4),
        ..BatchMock::default()
    });
    let dir = batch_dir(&server.base_url(), 6, 1, "  max_wait: 1\n");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("batch.max_wait"), "{all}");
    assert!(all.contains("run the same command again"), "{all}");
    assert!(
        journal(dir.path()).contains("batches/"),
        "{}",
        journal(dir.path())
    );
    let jobs = server.stats().batch.jobs;
    std::thread::sleep(Duration::from_secs(4));
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.stats().batch.jobs, jobs);
    assert_eq!(server.stats().batch.duplicate_texts, 0);
}

/// A journal naming a job the API no longer knows (another server: jobs expire after 48 h):
/// said plainly, its texts submitted again, the run completes.
#[test]
fn a_job_the_api_no_longer_knows_is_said_and_submitted_again() {
    let first = mock(BatchMock {
        latency: Duration::from_secs(60),
        ..BatchMock::default()
    });
    let dir = batch_dir(&first.base_url(), 6, 1, "  max_wait: 0.5\n");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let second = mock(BatchMock::default());
    let p = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, yaml.replace(&first.base_url(), &second.base_url())).unwrap();
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("the API no longer knows job batches/mock000000"),
        "{all}"
    );
    let s = second.stats();
    assert_eq!(s.batch.texts, first.stats().batch.texts, "{s:?}");
    assert_eq!(s.requests, 0, "{s:?}");
}

/// A create body over the inline limit goes as a JSONL file through the Files API, and the
/// results come back from the responses file (the limit lowered from the API's 20 MB).
#[test]
fn a_body_over_the_inline_limit_goes_through_a_file() {
    use puzzlegen::embed::batch::{BatchApi, GeminiBatch, JobState};
    let server = mock(BatchMock::default());
    let options = puzzlegen::embed::gemini::GeminiOptions {
        base_url: server.base_url(),
        model_id: "gemini-embedding-001".into(),
        dimension: 768,
        task_type: "SEMANTIC_SIMILARITY".into(),
        api_key_env: common::any_key_variable(),
        request_timeout: Duration::from_secs(5),
    };
    let api = GeminiBatch::new(&options).unwrap().with_inline_limit(1000);
    let texts: Vec<String> = (0..40).map(|i| format!("text number {i}")).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let results = runtime.block_on(async {
        let name = api.create(&texts, "file-job").await.unwrap();
        assert_eq!(api.find("file-job").await.unwrap(), Some(name.clone()));
        while api.state(&name).await.unwrap() != JobState::Succeeded {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.results(&name, texts.len()).await.unwrap()
    });
    let s = server.stats().batch;
    assert_eq!(
        (s.uploads, s.downloads, s.jobs, s.texts),
        (1, 1, 1, 40),
        "{s:?}"
    );
    for (text, r) in texts.iter().zip(results) {
        let v = r.unwrap();
        let mut want = mock_gemini::gemini_embedding(text, 768);
        puzzlegen::embed::normalize(&mut want);
        let dot: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!((dot - 1.0).abs() < 1e-4, "{text}: {dot}");
    }
}

/// A create whose file went up but whose create call failed (a 503: the mock fails every
/// third Batch API call, here the create after the upload's two) is tried again with the same
/// file: one upload, one job.
#[test]
fn a_create_tried_again_uses_the_file_already_uploaded() {
    use puzzlegen::embed::batch::{BatchApi, GeminiBatch};
    let server = mock(BatchMock {
        fail_every: 3,
        ..BatchMock::default()
    });
    let options = puzzlegen::embed::gemini::GeminiOptions {
        base_url: server.base_url(),
        model_id: "gemini-embedding-001".into(),
        dimension: 768,
        task_type: "SEMANTIC_SIMILARITY".into(),
        api_key_env: common::any_key_variable(),
        request_timeout: Duration::from_secs(5),
    };
    let api = GeminiBatch::new(&options).unwrap().with_inline_limit(1000);
    let texts: Vec<String> = (0..40).map(|i| format!("text number {i}")).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let first = api.create(&texts, "retried-job").await;
        assert!(first.is_err(), "{first:?}");
        api.create(&texts, "retried-job").await.unwrap();
    });
    let s = server.stats().batch;
    assert_eq!((s.uploads, s.jobs, s.faults), (1, 1, 1), "{s:?}");
}

/// At the API's real limit: 200,000 texts make a create body over 20 MB (~23 MB inline), so
/// they go as a JSONL file through the Files API (the mock refuses an inline body over
/// 20 MiB), and all 200,000 results come back from the responses file, in order.
#[test]
fn a_job_over_20_mb_goes_through_a_file_at_the_real_limit() {
    use puzzlegen::embed::batch::{BatchApi, GeminiBatch, INLINE_LIMIT_BYTES, JobState};
    let server = mock(BatchMock::default());
    let options = puzzlegen::embed::gemini::GeminiOptions {
        base_url: server.base_url(),
        model_id: "gemini-embedding-001".into(),
        dimension: 8,
        task_type: "SEMANTIC_SIMILARITY".into(),
        api_key_env: common::any_key_variable(),
        request_timeout: Duration::from_secs(30),
    };
    assert_eq!(INLINE_LIMIT_BYTES, 20_000_000);
    let api = GeminiBatch::new(&options).unwrap();
    let texts: Vec<String> = (0..200_000)
        .map(|i| format!("text number {i:06}"))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let results = runtime.block_on(async {
        let name = api.create(&texts, "big-job").await.unwrap();
        while api.state(&name).await.unwrap() != JobState::Succeeded {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.results(&name, texts.len()).await.unwrap()
    });
    let s = server.stats().batch;
    assert_eq!(
        (s.uploads, s.downloads, s.jobs, s.texts, s.refused),
        (1, 1, 1, 200_000, 0),
        "{s:?}"
    );
    assert_eq!(results.len(), texts.len());
    for i in [0, 1, 99_999, 199_999] {
        let v = results[i].as_ref().unwrap();
        let mut want = mock_gemini::gemini_embedding(&texts[i], 8);
        puzzlegen::embed::normalize(&mut want);
        let dot: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!((dot - 1.0).abs() < 1e-4, "{}: {dot}", texts[i]);
    }
    assert!(results.iter().all(Result::is_ok));
}

/// `batch list` shows the jobs a stopped run left (name, state, texts, age); `batch cancel`
/// cancels them (a job the journal does not name is exit 2); the next run submits their texts
/// again.
#[test]
fn batch_list_and_cancel_show_and_stop_the_journals_jobs() {
    let server = mock(BatchMock {
        latency: Duration::from_secs(60),
        ..BatchMock::default()
    });
    let dir = batch_dir(&server.base_url(), 6, 1, "  max_wait: 0.5\n");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let list = |dir: &Path| json_of(dir, &["batch", "list"]);
    let jobs = list(dir.path());
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["name"], "batches/mock000000", "{jobs}");
    assert!(
        matches!(jobs[0]["state"].as_str(), Some("pending" | "running")),
        "{jobs}"
    );
    assert_eq!(jobs[0]["texts"], server.stats().batch.texts, "{jobs}");
    assert!(jobs[0]["age_seconds"].as_u64().unwrap() < 60, "{jobs}");
    common::assert_user_error(
        common::puzzlegen(dir.path()).args([
            "batch",
            "cancel",
            "--config",
            "params.yaml",
            "batches/other",
        ]),
        "batches/other is not a job the run journal",
    );
    let out = common::puzzlegen(dir.path())
        .args(["batch", "cancel", "--config", "params.yaml"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("batches/mock000000  cancelling"),
        "{printed}"
    );
    assert_eq!(server.stats().batch.cancels, 1);
    assert_eq!(list(dir.path())[0]["state"], "cancelled");
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(90));
    let all = text(&out);
    assert!(all.contains("ended cancelled: its"), "{all}");
    assert_eq!(server.stats().batch.jobs, 2, "{all}");
}

/// A create refused with a 429 (the API's cap on jobs at once, here 1 against the config's
/// 4) is tried again after a pause: every text still goes in exactly one job.
#[test]
fn a_create_refused_with_429_is_tried_again() {
    let server = mock(BatchMock {
        max_active: 1,
        ..BatchMock::default()
    });
    let dir = batch_dir(
        &server.base_url(),
        12,
        3,
        "  max_texts_per_job: 40\n  max_active_jobs: 4\n",
    );
    let texts = to_embed(dir.path());
    let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("cannot create a job now"), "{all}");
    let s = server.stats();
    assert!(s.batch.refused > 0, "{s:?}");
    assert_eq!(s.batch.jobs, texts.div_ceil(40), "{s:?}");
    assert_eq!(s.batch.duplicate_texts, 0, "{s:?}");
    assert_eq!(s.requests, 0, "{s:?}");
}

/// For each provider with a Batch API: a mock of 256-dimension vectors whose Batch API does
/// as `batch` says, and a folder of 8 themes for 2 puzzles in batch mode against it (jobs of
/// at most 40 texts, 2 at once).
fn each_provider(
    seed: u64,
    batch: BatchMock,
) -> Vec<(
    &'static str,
    mock_gemini::BlockingMockServer,
    tempfile::TempDir,
)> {
    ["gemini", "openai"]
        .into_iter()
        .map(|provider| {
            let server = start_blocking(common::mock_config(seed, |m| {
                m.dimension = 256;
                m.batch = batch.clone();
            }))
            .unwrap();
            let jobs = "  max_texts_per_job: 40\n  max_active_jobs: 2\n";
            let dir = match provider {
                "gemini" => {
                    let dir = batch_dir(&server.base_url(), 8, 2, jobs);
                    let p = dir.path().join("params.yaml");
                    let yaml = std::fs::read_to_string(&p).unwrap();
                    let yaml = yaml.replace("embedding_dimension: 768", "embedding_dimension: 256");
                    std::fs::write(&p, yaml).unwrap();
                    dir
                }
                _ => crate::batch_openai::openai_dir(&server.base_url(), "batch", 8, 2, jobs),
            };
            (provider, server, dir)
        })
        .collect()
}

/// A Batch API that quotes the key in everything it answers (error messages, per-item
/// errors, a header), for both providers, through refused creates (429), an expired job and
/// item errors: the key shows in no output, log line, journal, cache or output file.
#[test]
fn the_key_a_batch_api_echoes_is_never_shown() {
    let echoing = BatchMock {
        echo_key: true,
        max_active: 1,
        item_error_every: 3,
        endings: vec![BatchEnding::Expired],
        ..BatchMock::default()
    };
    for (provider, _server, dir) in each_provider(33, echoing) {
        let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{provider}: {all}");
        // Answers that quote it were read (refused creates, item errors), and the first item
        // error is logged with the key taken out.
        assert!(all.contains("cannot create a job now"), "{provider}: {all}");
        assert!(
            all.contains("answered with an error (the first:"),
            "{provider}: {all}"
        );
        assert!(all.contains("(key [redacted])"), "{provider}: {all}");
        assert!(!all.contains(common::KEY), "{provider}: {all}");
        let holding = common::files_holding(dir.path(), common::KEY);
        assert!(holding.is_empty(), "{provider}: {holding:?}");
    }
}

/// A Batch API that answers every third call (creates, polls, lists, uploads, downloads) with
/// a 503, for both providers: each call is tried again, the run ends with every text
/// embedded once, in one job each.
#[test]
fn batch_calls_answered_503_are_tried_again() {
    let failing = BatchMock {
        fail_every: 3,
        ..BatchMock::default()
    };
    for (provider, server, dir) in each_provider(34, failing) {
        let texts = to_embed(dir.path());
        let out = output_within(spawn(dir.path(), &[]), Duration::from_secs(60));
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{provider}: {all}");
        let s = server.stats().batch;
        assert!(s.faults >= 3, "{provider}: {s:?}");
        assert_eq!(s.jobs, texts.div_ceil(40), "{provider}: {s:?} {all}");
        assert_eq!(
            (s.texts, s.texts_embedded, s.duplicate_texts),
            (texts, texts, 0),
            "{provider}: {s:?}"
        );
        let meta = common::read_json(&dir.path().join("out/puzzle_metadata.json"));
        assert_eq!(meta["successful_puzzles"], 2, "{provider}: {meta}");
    }
}
