//! Gemini's Batch API for embeddings, as the google-genai SDK speaks it (its batches.py and
//! files.py): `POST /{v}/models/{m}:asyncBatchEmbedContent` (inline requests, or a JSONL file
//! uploaded through the Files API), `GET /{v}/batches/{id}`, `POST /{v}/batches/{id}:cancel`,
//! `GET /{v}/batches`, the resumable upload `POST /upload/{v}/files`, and
//! `GET /{v}/files/{id}:download?alt=media` for a file job's responses. `{v}` is `v1beta` or
//! `v1`.
//!
//! OpenAI's Batch API is in [`openai`]; both share the jobs, the switches and the counters.
//!
//! A job is PENDING for the first half of [`BatchMock::latency`], RUNNING for the second, then
//! ends as [`BatchMock::endings`] says (SUCCEEDED past its end). Jobs live in memory: a mock
//! started again knows none (404), as the API after a job's expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::vectors::{fnv1a64, gemini_embedding};

mod openai;

/// How a job ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEnding {
    Succeeded,
    Failed,
    Expired,
    Cancelled,
}

impl BatchEnding {
    fn state(self) -> &'static str {
        match self {
            BatchEnding::Succeeded => "BATCH_STATE_SUCCEEDED",
            BatchEnding::Failed => "BATCH_STATE_FAILED",
            BatchEnding::Expired => "BATCH_STATE_EXPIRED",
            BatchEnding::Cancelled => "BATCH_STATE_CANCELLED",
        }
    }
}

/// The Batch API's switches.
#[derive(Clone, Debug)]
pub struct BatchMock {
    /// From a job's creation to its end.
    pub latency: Duration,
    /// How the first jobs end, in creation order; later jobs succeed.
    pub endings: Vec<BatchEnding>,
    /// Every `n`-th distinct text (by a hash of it) is answered with a per-item error by
    /// every job that holds it until one such answer was read (0: never).
    pub item_error_every: u64,
    /// Most jobs not yet ended at once: a create beyond it is a 429 (0: no cap).
    pub max_active: usize,
    /// Largest inline create body (the API's 20 MB); a larger one is a 400.
    pub inline_limit_bytes: usize,
    /// Every Batch API answer quotes the key its request carried: in error messages, in
    /// per-item errors, and in an `x-echo-key` header (a hostile or careless server).
    pub echo_key: bool,
    /// Every `n`-th call of the Batch or Files API (create, get, list, cancel, upload,
    /// download) is answered 503 without being done (0: never).
    pub fail_every: u64,
}

impl Default for BatchMock {
    fn default() -> Self {
        BatchMock {
            latency: Duration::from_millis(300),
            endings: Vec::new(),
            item_error_every: 0,
            max_active: 0,
            inline_limit_bytes: 20 * 1024 * 1024,
            echo_key: false,
            fail_every: 0,
        }
    }
}

/// The Batch API's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchStats {
    /// Jobs created.
    pub jobs: u64,
    /// Texts in all jobs created.
    pub texts: u64,
    /// Texts answered with a vector by jobs collected (downloaded or read inline).
    pub texts_embedded: u64,
    /// Texts in more than one job.
    pub duplicate_texts: u64,
    /// Texts in each job, in creation order.
    pub texts_by_job: Vec<u64>,
    /// `batches.get` calls.
    pub polls: u64,
    pub cancels: u64,
    /// Files uploaded (finalized).
    pub uploads: u64,
    /// Response files downloaded.
    pub downloads: u64,
    /// Creates refused (the cap on active jobs, a body too large, a bad body).
    pub refused: u64,
    /// Calls answered 503 by [`BatchMock::fail_every`].
    pub faults: u64,
}

#[derive(Clone)]
struct Job {
    name: String,
    model: String,
    display_name: String,
    texts: Vec<String>,
    dims: Vec<usize>,
    created: Instant,
    created_at: String,
    ending: BatchEnding,
    cancelled: bool,
    /// Indices of texts answered with a per-item error.
    item_errors: HashSet<usize>,
    /// Input was a file: the output goes to a file too.
    from_file: bool,
    /// Its vectors were counted in `texts_embedded` (once, however often it is read).
    counted: bool,
    /// What an OpenAI job has besides (`None`: a Gemini job).
    openai: Option<openai::OpenAiJob>,
}

impl Job {
    fn ended(&self, latency: Duration) -> bool {
        self.cancelled || self.created.elapsed() >= latency
    }

    fn state(&self, latency: Duration) -> &'static str {
        if self.cancelled {
            "BATCH_STATE_CANCELLED"
        } else if self.created.elapsed() >= latency {
            self.ending.state()
        } else if self.created.elapsed() >= latency / 2 {
            "BATCH_STATE_RUNNING"
        } else {
            "BATCH_STATE_PENDING"
        }
    }
}

/// The Batch API's state.
#[derive(Default)]
pub(crate) struct Jobs {
    inner: Mutex<JobsState>,
}

#[derive(Default)]
struct JobsState {
    jobs: BTreeMap<String, Job>,
    /// Uploaded files by name (`files/...`), and upload sessions by id.
    files: HashMap<String, Vec<u8>>,
    sessions: HashMap<String, Vec<u8>>,
    seen: HashSet<String>,
    errored_once: HashSet<String>,
    /// Jobs created so far (a job's number: its place in `endings`).
    next: u64,
    /// Files and upload sessions made so far (their names' numbers).
    next_file: u64,
    /// Batch and Files API calls so far (for `fail_every`).
    calls: u64,
    stats: BatchStats,
}

/// What a handler answers: status and JSON body (or raw bytes), plus headers.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, v: Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&v).expect("json"),
            content_type: "application/json; charset=UTF-8",
            headers: Vec::new(),
        }
    }

    fn error(status: u16, kind: &str, message: &str) -> Answer {
        Answer::json(
            status,
            json!({"error": {"code": status, "message": message, "status": kind}}),
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    batch: BatchBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchBody {
    #[serde(alias = "display_name")]
    display_name: Option<String>,
    #[serde(alias = "input_config")]
    input_config: InputConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputConfig {
    requests: Option<InlineRequests>,
    /// The SDK writes `file_name` (snake case) for embeddings; the API's JSON is `fileName`.
    #[serde(alias = "file_name")]
    file_name: Option<String>,
}

#[derive(Deserialize)]
struct InlineRequests {
    requests: Vec<InlineRequest>,
}

#[derive(Deserialize)]
struct InlineRequest {
    request: EmbedRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest {
    content: Content,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<usize>,
}

#[derive(Deserialize)]
struct Content {
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    text: String,
}

/// One line of a JSONL input file: `{"key": ..., "request": {...}}`.
#[derive(Deserialize)]
struct FileLine {
    key: String,
    request: EmbedRequest,
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl JobsState {
    /// Jobs not yet ended.
    fn active(&self, cfg: &BatchMock) -> usize {
        self.jobs.values().filter(|j| !j.ended(cfg.latency)).count()
    }

    /// Takes in a new job's texts: counts them (and those some job held before), picks the
    /// ones answered with a per-item error, and draws the job's number and ending.
    fn enrol(&mut self, cfg: &BatchMock, texts: &[String]) -> (u64, BatchEnding, HashSet<usize>) {
        let mut item_errors = HashSet::new();
        for (i, t) in texts.iter().enumerate() {
            if self.seen.contains(t) {
                self.stats.duplicate_texts += 1;
            }
            if cfg.item_error_every > 0
                && fnv1a64(t.as_bytes()).is_multiple_of(cfg.item_error_every)
                && !self.errored_once.contains(t)
            {
                item_errors.insert(i);
            }
        }
        for t in texts {
            self.seen.insert(t.clone());
        }
        let n = self.next;
        self.next += 1;
        let ending = cfg
            .endings
            .get(n as usize)
            .copied()
            .unwrap_or(BatchEnding::Succeeded);
        self.stats.jobs += 1;
        self.stats.texts += texts.len() as u64;
        self.stats.texts_by_job.push(texts.len() as u64);
        (n, ending, item_errors)
    }
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobsState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> BatchStats {
        self.lock().stats.clone()
    }

    /// Whether this Batch or Files API call is one [`BatchMock::fail_every`] fails (counted).
    pub(crate) fn draw_fault(&self, cfg: &BatchMock) -> bool {
        let mut s = self.lock();
        s.calls += 1;
        let fail = cfg.fail_every > 0 && s.calls.is_multiple_of(cfg.fail_every);
        if fail {
            s.stats.faults += 1;
        }
        fail
    }

    /// Counters to zero, and texts seen forgotten (`duplicate_texts` counts from here).
    pub(crate) fn reset_stats(&self) {
        let mut s = self.lock();
        s.stats = BatchStats::default();
        s.seen.clear();
    }

    /// `POST models/{model}:asyncBatchEmbedContent`.
    pub(crate) fn create(
        &self,
        cfg: &BatchMock,
        default_dim: usize,
        model: &str,
        body: &[u8],
    ) -> Answer {
        let mut s = self.lock();
        if body.len() > cfg.inline_limit_bytes {
            s.stats.refused += 1;
            return Answer::error(
                400,
                "INVALID_ARGUMENT",
                &format!(
                    "Request payload size exceeds the limit: {} bytes.",
                    cfg.inline_limit_bytes
                ),
            );
        }
        let parsed: CreateBody = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                s.stats.refused += 1;
                return Answer::error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. {e}"),
                );
            }
        };
        if cfg.max_active > 0 && s.active(cfg) >= cfg.max_active {
            s.stats.refused += 1;
            return Answer::error(
                429,
                "RESOURCE_EXHAUSTED",
                &format!(
                    "Too many active batch jobs: at most {} at once.",
                    cfg.max_active
                ),
            );
        }
        let input = parsed.batch.input_config;
        let (requests, from_file): (Vec<EmbedRequest>, bool) =
            match (input.requests, input.file_name) {
                (Some(r), None) => (r.requests.into_iter().map(|r| r.request).collect(), false),
                (None, Some(file)) => {
                    let Some(bytes) = s.files.get(&file) else {
                        s.stats.refused += 1;
                        return Answer::error(404, "NOT_FOUND", &format!("{file} not found."));
                    };
                    let mut lines: Vec<FileLine> = Vec::new();
                    for (i, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
                        if line.trim().is_empty() {
                            continue;
                        }
                        match serde_json::from_str(line) {
                            Ok(l) => lines.push(l),
                            Err(e) => {
                                s.stats.refused += 1;
                                return Answer::error(
                                    400,
                                    "INVALID_ARGUMENT",
                                    &format!("{file}: line {}: {e}", i + 1),
                                );
                            }
                        }
                    }
                    // Keys are the input order ("0", "1", ...) as puzzlegen writes them.
                    lines.sort_by_key(|l| l.key.parse::<u64>().unwrap_or(u64::MAX));
                    (lines.into_iter().map(|l| l.request).collect(), true)
                }
                _ => {
                    s.stats.refused += 1;
                    return Answer::error(
                        400,
                        "INVALID_ARGUMENT",
                        "batch.inputConfig: exactly one of requests and fileName is required",
                    );
                }
            };
        if requests.is_empty() {
            s.stats.refused += 1;
            return Answer::error(400, "INVALID_ARGUMENT", "batch.inputConfig: no request");
        }
        let mut texts = Vec::with_capacity(requests.len());
        let mut dims = Vec::with_capacity(requests.len());
        for r in requests {
            let text: String = r.content.parts.into_iter().map(|p| p.text).collect();
            texts.push(text);
            dims.push(r.output_dimensionality.unwrap_or(default_dim));
        }
        let (n, ending, item_errors) = s.enrol(cfg, &texts);
        let name = format!("batches/mock{n:06}");
        let job = Job {
            name: name.clone(),
            model: format!("models/{model}"),
            display_name: parsed.batch.display_name.unwrap_or_default(),
            texts,
            dims,
            created: Instant::now(),
            created_at: now_rfc3339(),
            ending,
            cancelled: false,
            item_errors,
            from_file,
            counted: false,
            openai: None,
        };
        let answer = operation(&job, cfg.latency, false);
        s.jobs.insert(name, job);
        Answer::json(200, answer)
    }

    /// `GET batches/{id}`.
    pub(crate) fn get(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        s.stats.polls += 1;
        let name = format!("batches/{id}");
        let Some(job) = s.jobs.get_mut(&name) else {
            return Answer::error(404, "NOT_FOUND", &format!("Batch {name} not found."));
        };
        let succeeded = job.state(cfg.latency) == "BATCH_STATE_SUCCEEDED";
        let embedded = if succeeded && !job.from_file && !job.counted {
            job.counted = true;
            (job.texts.len() - job.item_errors.len()) as u64
        } else {
            0
        };
        if succeeded && !job.from_file {
            let errored: Vec<String> = job
                .item_errors
                .iter()
                .map(|&i| job.texts[i].clone())
                .collect();
            s.errored_once.extend(errored);
        }
        s.stats.texts_embedded += embedded;
        // The answer (hundreds of MB for a large job at 3072 dimensions) is written without
        // the lock, so other calls are not held behind it.
        let job = s.jobs[&name].clone();
        drop(s);
        let mut a = Answer::json(200, Value::Null);
        a.body = operation_text(&job, cfg.latency).into_bytes();
        a
    }

    /// `POST batches/{id}:cancel`.
    pub(crate) fn cancel(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        s.stats.cancels += 1;
        let name = format!("batches/{id}");
        match s.jobs.get_mut(&name) {
            None => Answer::error(404, "NOT_FOUND", &format!("Batch {name} not found.")),
            Some(job) => {
                if !job.ended(cfg.latency) {
                    job.cancelled = true;
                }
                Answer::json(200, json!({}))
            }
        }
    }

    /// `GET batches`.
    pub(crate) fn list(&self, cfg: &BatchMock) -> Answer {
        let s = self.lock();
        let operations: Vec<Value> = s
            .jobs
            .values()
            .filter(|j| j.openai.is_none())
            .map(|j| operation(j, cfg.latency, false))
            .collect();
        Answer::json(200, json!({ "operations": operations }))
    }

    /// `POST upload/{v}/files`: the start of a resumable upload (the session's URL in
    /// `X-Goog-Upload-URL`, on `base`), or a chunk of one (`upload_id` in the query).
    pub(crate) fn upload(
        &self,
        base: &str,
        path: &str,
        query: Option<&str>,
        command: &str,
        body: &[u8],
    ) -> Answer {
        let mut s = self.lock();
        let upload_id = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("upload_id="))
                .map(str::to_owned)
        });
        match upload_id {
            None => {
                if !command.contains("start") {
                    return Answer::error(
                        400,
                        "INVALID_ARGUMENT",
                        "X-Goog-Upload-Command: start expected",
                    );
                }
                let id = format!("up{:06}", s.next_file);
                s.next_file += 1;
                s.sessions.insert(id.clone(), Vec::new());
                let mut a = Answer::json(200, json!({}));
                a.headers.push((
                    "x-goog-upload-url",
                    format!("{base}{path}?upload_id={id}&upload_protocol=resumable"),
                ));
                a.headers.push(("x-goog-upload-status", "active".into()));
                a
            }
            Some(id) => {
                let Some(buffer) = s.sessions.get_mut(&id) else {
                    return Answer::error(404, "NOT_FOUND", "upload session not found");
                };
                buffer.extend_from_slice(body);
                if !command.contains("finalize") {
                    let mut a = Answer::json(200, json!({}));
                    a.headers.push(("x-goog-upload-status", "active".into()));
                    return a;
                }
                let bytes = s.sessions.remove(&id).unwrap_or_default();
                let name = format!("files/{id}");
                let size = bytes.len();
                s.files.insert(name.clone(), bytes);
                s.stats.uploads += 1;
                let mut a = Answer::json(
                    200,
                    json!({"file": {
                        "name": name,
                        "mimeType": "application/jsonl",
                        "sizeBytes": size.to_string(),
                        "createTime": now_rfc3339(),
                        "state": "ACTIVE",
                        "source": "UPLOADED",
                    }}),
                );
                a.headers.push(("x-goog-upload-status", "final".into()));
                a
            }
        }
    }

    /// `GET files/{id}:download?alt=media`: a file job's responses, one JSON line per input
    /// line (`{"key", "response": {"embedding": {"values"}}}` or `{"key", "error"}`).
    pub(crate) fn download(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        let Some(job_name) = id
            .strip_suffix("-responses")
            .map(|j| format!("batches/{j}"))
        else {
            return Answer::error(404, "NOT_FOUND", &format!("files/{id} not found."));
        };
        let Some(job) = s.jobs.get_mut(&job_name) else {
            return Answer::error(404, "NOT_FOUND", &format!("files/{id} not found."));
        };
        if job.state(cfg.latency) != "BATCH_STATE_SUCCEEDED" || !job.from_file {
            return Answer::error(404, "NOT_FOUND", &format!("files/{id} not found."));
        }
        let mut out = Vec::new();
        for (i, t) in job.texts.iter().enumerate() {
            let line = if job.item_errors.contains(&i) {
                json!({"key": i.to_string(), "error": {"code": 3, "message": "mock: this item failed; submit it again"}})
            } else {
                json!({"key": i.to_string(), "response": {"embedding": {"values": gemini_embedding(t, job.dims[i])}}})
            };
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        let embedded = if job.counted {
            0
        } else {
            job.counted = true;
            (job.texts.len() - job.item_errors.len()) as u64
        };
        let errored: Vec<String> = job
            .item_errors
            .iter()
            .map(|&i| job.texts[i].clone())
            .collect();
        s.errored_once.extend(errored);
        s.stats.downloads += 1;
        s.stats.texts_embedded += embedded;
        Answer {
            status: 200,
            body: out,
            content_type: "application/octet-stream",
            headers: Vec::new(),
        }
    }
}

/// [`operation`] with its output, as text: a finished inline job's vectors are written
/// straight into the text (a `serde_json::Value` per number would take seconds per job).
fn operation_text(job: &Job, latency: Duration) -> String {
    if job.from_file || job.state(latency) != "BATCH_STATE_SUCCEEDED" {
        return operation(job, latency, true).to_string();
    }
    let mut v = operation(job, latency, false);
    v["metadata"]["output"] = json!("@@OUTPUT@@");
    let mut items = String::from(r#"{"inlinedResponses":{"inlinedResponses":["#);
    for (i, t) in job.texts.iter().enumerate() {
        if i > 0 {
            items.push(',');
        }
        if job.item_errors.contains(&i) {
            items.push_str(r#"{"error":{"code":3,"message":"mock: this item failed; submit it again","details":[]}}"#);
        } else {
            items.push_str(r#"{"response":{"embedding":{"values":"#);
            crate::api::write_values(&mut items, &gemini_embedding(t, job.dims[i]), false);
            items.push_str(&format!(r#"}},"tokenCount":"{}"}}}}"#, t.len().div_ceil(4)));
        }
    }
    items.push_str("]}}");
    v.to_string().replace("\"@@OUTPUT@@\"", &items)
}

/// A job as the API answers create, get and list: an Operation whose `metadata` is the batch.
fn operation(job: &Job, latency: Duration, with_output: bool) -> Value {
    let state = job.state(latency);
    let mut metadata = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch",
        "model": job.model,
        "name": job.name,
        "displayName": job.display_name,
        "createTime": job.created_at,
        "updateTime": now_rfc3339(),
        "state": state,
        "batchStats": {"requestCount": job.texts.len().to_string()},
    });
    if with_output && state == "BATCH_STATE_SUCCEEDED" {
        let id = job.name.trim_start_matches("batches/");
        metadata["output"] = if job.from_file {
            json!({"responsesFile": format!("files/{id}-responses")})
        } else {
            let items: Vec<Value> = job
                .texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if job.item_errors.contains(&i) {
                        json!({"error": {"code": 3, "message": "mock: this item failed; submit it again", "details": []}})
                    } else {
                        json!({"response": {"embedding": {"values": gemini_embedding(t, job.dims[i])}, "tokenCount": t.len().div_ceil(4).to_string()}})
                    }
                })
                .collect();
            json!({"inlinedResponses": {"inlinedResponses": items}})
        };
    }
    let done = state != "BATCH_STATE_PENDING" && state != "BATCH_STATE_RUNNING";
    json!({"name": job.name, "metadata": metadata, "done": done})
}
