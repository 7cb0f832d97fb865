//! OpenAI's Batch API for embeddings, as the openai SDK (3.63) speaks it: `POST /v1/files`
//! (multipart, purpose `batch`, a JSONL file of `/v1/embeddings` requests), `POST /v1/batches`,
//! `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/batches` (newest first,
//! `after` and `limit`), and `GET /v1/files/{id}/content` for the output and error files.
//!
//! A job is `validating` for the first half of [`BatchMock::latency`], `in_progress` for the
//! second, then ends as [`BatchMock::endings`] says: `completed`; `failed` (no output);
//! `expired` or `cancelled` with the first half of its lines done (their results in the output
//! file, as the API keeps what finished); so does a job cancelled through the API. An input file with a line
//! that is not a valid request makes a job that fails validation, with the line's error.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, BatchEnding, BatchMock, Job, Jobs};
use crate::api::write_values;
use crate::vectors::openai_embedding;

/// What an OpenAI job holds besides a Gemini job's fields.
#[derive(Clone)]
pub(super) struct OpenAiJob {
    input_file_id: String,
    /// Each input line: its `custom_id` and the range of its texts in [`Job::texts`].
    lines: Vec<(String, std::ops::Range<usize>)>,
    created_at: u64,
    metadata: Value,
    /// Validation errors: the job fails with them.
    errors: Vec<Value>,
    /// Lines done when the job was cancelled through the API.
    done_at_cancel: usize,
}

/// One line of the input file (`BatchRequestInput`).
#[derive(Deserialize)]
struct InputLine {
    custom_id: String,
    method: String,
    url: String,
    body: EmbeddingBody,
}

#[derive(Deserialize)]
struct EmbeddingBody {
    model: String,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct CreateBody {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Value,
}

/// The most embedding inputs one batch may hold, over all its requests.
const MAX_INPUTS: usize = 50_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Answer {
    Answer::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn not_found(what: &str, id: &str) -> Answer {
    error(
        404,
        &format!("No such {what}: {id}"),
        "invalid_request_error",
        None,
    )
}

/// The job's `status`.
fn status(job: &Job, latency: Duration) -> &'static str {
    if job.cancelled {
        "cancelled"
    } else if job.created.elapsed() >= latency {
        match job.ending {
            BatchEnding::Succeeded => "completed",
            BatchEnding::Failed => "failed",
            BatchEnding::Expired => "expired",
            BatchEnding::Cancelled => "cancelled",
        }
    } else if job.created.elapsed() >= latency / 2 {
        "in_progress"
    } else {
        "validating"
    }
}

/// How many of the job's lines (from the first) have run.
fn lines_done(job: &Job, o: &OpenAiJob, latency: Duration) -> usize {
    if job.cancelled {
        return o.done_at_cancel;
    }
    match status(job, latency) {
        "completed" => o.lines.len(),
        "expired" | "cancelled" => o.lines.len() / 2,
        _ => 0,
    }
}

/// Whether line `i` of the job is answered with an error.
fn line_failed(job: &Job, o: &OpenAiJob, i: usize) -> bool {
    o.lines[i].1.clone().any(|t| job.item_errors.contains(&t))
}

/// The Batch object as create, retrieve, cancel and list answer it.
fn batch_object(job: &Job, o: &OpenAiJob, latency: Duration) -> Value {
    let status = status(job, latency);
    let done = lines_done(job, o, latency);
    let failed = (0..done).filter(|&i| line_failed(job, o, i)).count();
    let ended = !matches!(status, "validating" | "in_progress");
    let id = &job.name;
    let at = |reached: bool| {
        if reached {
            json!(o.created_at)
        } else {
            Value::Null
        }
    };
    json!({
        "id": id,
        "object": "batch",
        "endpoint": "/v1/embeddings",
        "model": job.model,
        "errors": if o.errors.is_empty() { Value::Null } else { json!({"object": "list", "data": o.errors}) },
        "input_file_id": o.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": (done > failed).then(|| format!("file-{id}-output")),
        "error_file_id": (failed > 0).then(|| format!("file-{id}-errors")),
        "created_at": o.created_at,
        "in_progress_at": at(status != "validating" && status != "failed"),
        "expires_at": o.created_at + 86_400,
        "finalizing_at": at(status == "completed"),
        "completed_at": at(status == "completed"),
        "failed_at": at(status == "failed"),
        "expired_at": at(status == "expired"),
        "cancelling_at": at(status == "cancelled"),
        "cancelled_at": at(status == "cancelled"),
        "request_counts": {"total": o.lines.len(), "completed": if ended { done - failed } else { 0 }, "failed": if ended { failed } else { 0 }},
        "metadata": o.metadata,
    })
}

impl Jobs {
    /// `POST /v1/files` (the multipart form already read): keeps a `batch` file.
    pub(crate) fn openai_upload(&self, purpose: &str, filename: &str, bytes: Vec<u8>) -> Answer {
        let mut s = self.lock();
        if purpose != "batch" {
            return error(
                400,
                &format!("this mock keeps files of purpose 'batch' only, not {purpose:?}"),
                "invalid_request_error",
                None,
            );
        }
        let id = format!("file-mock{:06}", s.next_file);
        s.next_file += 1;
        let size = bytes.len();
        s.files.insert(id.clone(), bytes);
        s.stats.uploads += 1;
        Answer::json(
            200,
            json!({"id": id, "object": "file", "bytes": size, "created_at": unix_now(),
                   "filename": filename, "purpose": "batch", "status": "processed",
                   "expires_at": unix_now() + 30 * 86_400}),
        )
    }

    /// `POST /v1/batches`.
    pub(crate) fn openai_create(&self, cfg: &BatchMock, default_dim: usize, body: &[u8]) -> Answer {
        let mut s = self.lock();
        let parsed: CreateBody = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                s.stats.refused += 1;
                return error(
                    400,
                    &format!("We could not parse the JSON body of your request. ({e})"),
                    "invalid_request_error",
                    None,
                );
            }
        };
        if parsed.endpoint != "/v1/embeddings" || parsed.completion_window != "24h" {
            s.stats.refused += 1;
            return error(
                400,
                "this mock batches endpoint '/v1/embeddings' with completion_window '24h' only",
                "invalid_request_error",
                None,
            );
        }
        let Some(bytes) = s.files.get(&parsed.input_file_id).cloned() else {
            s.stats.refused += 1;
            return not_found("File object", &parsed.input_file_id);
        };
        if cfg.max_active > 0 && s.active(cfg) >= cfg.max_active {
            s.stats.refused += 1;
            return error(
                429,
                &format!(
                    "Too many active batches: at most {} at once.",
                    cfg.max_active
                ),
                "rate_limit_exceeded",
                Some("rate_limit_exceeded"),
            );
        }
        let mut texts = Vec::new();
        let mut dims = Vec::new();
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        let mut model = String::new();
        let mut ids = HashSet::new();
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut refuse = |message: String| {
                errors.push(json!({"code": "invalid_request", "line": i + 1, "message": message, "param": null}));
            };
            let l: InputLine = match serde_json::from_str(line) {
                Ok(l) => l,
                Err(e) => {
                    refuse(format!("not a valid request line: {e}"));
                    continue;
                }
            };
            if l.method != "POST" || l.url != "/v1/embeddings" {
                refuse("method must be POST and url /v1/embeddings (the batch's endpoint)".into());
                continue;
            }
            if !ids.insert(l.custom_id.clone()) {
                refuse(format!("custom_id {:?} is not unique", l.custom_id));
                continue;
            }
            if l.body
                .encoding_format
                .as_deref()
                .is_some_and(|f| f != "float")
            {
                refuse("this mock answers encoding_format 'float' only".into());
                continue;
            }
            let inputs = match l.body.input {
                Input::One(t) => vec![t],
                Input::Many(v) => v,
            };
            if inputs.is_empty() || inputs.len() > 2048 {
                refuse("input must hold 1 to 2048 texts".into());
                continue;
            }
            model = l.body.model;
            let start = texts.len();
            dims.extend(std::iter::repeat_n(
                l.body.dimensions.unwrap_or(default_dim),
                inputs.len(),
            ));
            texts.extend(inputs);
            lines.push((l.custom_id, start..texts.len()));
        }
        if lines.is_empty() && errors.is_empty() {
            errors.push(json!({"code": "empty_file", "line": null, "message": "the input file holds no request", "param": null}));
        }
        if texts.len() > MAX_INPUTS {
            errors.push(json!({"code": "too_many_inputs", "line": null, "message": format!("at most {MAX_INPUTS} embedding inputs per batch"), "param": null}));
        }
        if !errors.is_empty() {
            texts.clear();
            dims.clear();
            lines.clear();
        }
        let (n, mut ending, item_errors) = s.enrol(cfg, &texts);
        if !errors.is_empty() {
            ending = BatchEnding::Failed;
        }
        let job = Job {
            name: format!("batch_mock{n:06}"),
            model,
            display_name: String::new(),
            texts,
            dims,
            created: Instant::now(),
            created_at: String::new(),
            ending,
            cancelled: false,
            item_errors,
            from_file: true,
            counted: false,
            openai: Some(OpenAiJob {
                input_file_id: parsed.input_file_id,
                lines,
                created_at: unix_now(),
                metadata: parsed.metadata,
                errors,
                done_at_cancel: 0,
            }),
        };
        let answer = batch_object(&job, job.openai.as_ref().expect("openai"), cfg.latency);
        s.jobs.insert(job.name.clone(), job);
        Answer::json(200, answer)
    }

    /// `GET /v1/batches/{id}`.
    pub(crate) fn openai_get(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        s.stats.polls += 1;
        match s.jobs.get(id) {
            Some(
                job @ Job {
                    openai: Some(o), ..
                },
            ) => Answer::json(200, batch_object(job, o, cfg.latency)),
            _ => not_found("batch", id),
        }
    }

    /// `POST /v1/batches/{id}/cancel`: the job as `cancelling` (`cancelled` from then on).
    pub(crate) fn openai_cancel(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        s.stats.cancels += 1;
        let Some(job) = s.jobs.get_mut(id).filter(|j| j.openai.is_some()) else {
            return not_found("batch", id);
        };
        if !job.ended(cfg.latency) {
            let o = job.openai.as_mut().expect("openai");
            o.done_at_cancel = o.lines.len() / 2;
            job.cancelled = true;
        }
        let o = job.openai.as_ref().expect("openai");
        let mut v = batch_object(job, o, cfg.latency);
        if v["status"] == "cancelled" && job.cancelled {
            v["status"] = json!("cancelling");
        }
        Answer::json(200, v)
    }

    /// `GET /v1/batches?after=&limit=`: newest first.
    pub(crate) fn openai_list(&self, cfg: &BatchMock, after: Option<&str>, limit: usize) -> Answer {
        let s = self.lock();
        let all: Vec<&Job> = s
            .jobs
            .values()
            .rev()
            .filter(|j| j.openai.is_some())
            .collect();
        let start = after
            .and_then(|a| all.iter().position(|j| j.name == a).map(|p| p + 1))
            .unwrap_or(0);
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(limit.clamp(1, 100))
            .map(|j| batch_object(j, j.openai.as_ref().expect("openai"), cfg.latency))
            .collect();
        let has_more = start + page.len() < all.len();
        Answer::json(
            200,
            json!({"object": "list", "first_id": page.first().map(|b| b["id"].clone()),
                   "last_id": page.last().map(|b| b["id"].clone()), "data": page,
                   "has_more": has_more}),
        )
    }

    /// `GET /v1/files/{id}/content`: an uploaded file, or a job's output or error file.
    pub(crate) fn openai_content(&self, cfg: &BatchMock, id: &str) -> Answer {
        let mut s = self.lock();
        if let Some(bytes) = s.files.get(id) {
            return raw(bytes.clone());
        }
        let (job_id, errors) = match (id.strip_suffix("-output"), id.strip_suffix("-errors")) {
            (Some(j), _) => (j, false),
            (_, Some(j)) => (j, true),
            _ => return not_found("File object", id),
        };
        let Some(job) = job_id
            .strip_prefix("file-")
            .and_then(|j| s.jobs.get_mut(j))
            .filter(|j| j.openai.is_some())
        else {
            return not_found("File object", id);
        };
        let o = job.openai.clone().expect("openai");
        let done = lines_done(job, &o, cfg.latency);
        let mut out = String::new();
        let mut embedded = 0u64;
        let mut errored = Vec::new();
        for (i, (custom_id, range)) in o.lines.iter().enumerate().take(done) {
            if line_failed(job, &o, i) != errors {
                continue;
            }
            out.push_str(&format!(
                r#"{{"id":"batch_req_{i}","custom_id":{},"response":{{"status_code":"#,
                json!(custom_id)
            ));
            if errors {
                out.push_str(&format!(
                    r#"500,"request_id":"req_{i}","body":{{"error":{{"message":"mock: this request failed; submit it again","type":"server_error","param":null,"code":null}}}}}},"error":null}}"#
                ));
                errored.extend(range.clone().map(|t| job.texts[t].clone()));
            } else {
                out.push_str(&format!(
                    r#"200,"request_id":"req_{i}","body":{{"object":"list","data":["#
                ));
                let mut tokens = 0;
                for (k, t) in range.clone().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!(
                        r#"{{"object":"embedding","index":{k},"embedding":"#
                    ));
                    write_values(
                        &mut out,
                        &openai_embedding(&job.texts[t], job.dims[t]),
                        false,
                    );
                    out.push('}');
                    tokens += job.texts[t].len().div_ceil(4);
                }
                out.push_str(&format!(
                    r#"],"model":{},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}}},"error":null}}"#,
                    json!(job.model)
                ));
                embedded += range.len() as u64;
            }
            out.push('\n');
        }
        if !errors && !job.counted {
            job.counted = true;
            s.stats.texts_embedded += embedded;
        }
        s.errored_once.extend(errored);
        s.stats.downloads += 1;
        raw(out.into_bytes())
    }
}

fn raw(body: Vec<u8>) -> Answer {
    Answer {
        status: 200,
        body,
        content_type: "application/octet-stream",
        headers: Vec::new(),
    }
}
