//! HTTP routes: Gemini `batchEmbedContents` and its Batch API, OpenAI `/v1/embeddings` and its
//! Batch API, stats. Where both APIs share a path (`GET /v1/batches`, `GET /v1/batches/{id}`),
//! the request tells which it is: OpenAI's ids start with `batch_`, and its list sends no
//! Gemini key and no `pageSize`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{Fault, Outcome, QuotaVerdict, Shared};
use crate::vectors::{gemini_embedding, openai_embedding};
use crate::{MAX_BATCH, Stats};

const TASK_TYPES: &[&str] = &[
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
];

/// Largest `outputDimensionality` / `dimensions` accepted.
const MAX_DIMENSION: usize = 3072;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1beta/models/{spec}", post(gemini))
        .route("/v1/models/{spec}", post(gemini))
        .route("/v1beta/batches", get(batch_list))
        .route("/v1/batches", get(batch_list).post(openai_batch_create))
        .route("/v1/batches/{id}/cancel", post(openai_batch_cancel))
        .route("/v1/files", post(openai_file_upload))
        .route("/v1/files/{id}/content", get(openai_file_content))
        .route("/v1beta/batches/{spec}", get(batch_get).post(batch_cancel))
        .route("/v1/batches/{spec}", get(batch_get).post(batch_cancel))
        .route("/upload/v1beta/files", post(upload))
        .route("/upload/v1/files", post(upload))
        .route("/v1beta/files/{spec}", get(download))
        .route("/v1/files/{spec}", get(download))
        .route("/v1/embeddings", post(openai))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            batch_gate,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(shared)
}

/// What every Batch and Files API call goes through before its handler: the key check (a
/// bearer, `x-goog-api-key` or `key=`; refused the way the API the request speaks refuses it;
/// a resumable upload's chunks carry their session instead), then the hostile switches:
/// [`crate::batch::BatchMock::fail_every`] answers every n-th call 503 without doing it; with
/// [`crate::batch::BatchMock::echo_key`] an answer
/// quotes the key its request carried (bearer, `x-goog-api-key` or `key=`): in every error
/// message, in every per-item error, and in an `x-echo-key` header.
async fn batch_gate(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let batch = path.contains("/batches")
        || path.contains("/files")
        || path.ends_with(":asyncBatchEmbedContent");
    let cfg = &shared.config.batch;
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned());
    let key = bearer.clone().or_else(|| {
        req.headers()
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_key(req.uri().query()))
    });
    // The session URL of a resumable upload carries the session: no key with its chunks.
    let session =
        path.starts_with("/upload/") && req.uri().query().is_some_and(|q| q.contains("upload_id="));
    if batch
        && !session
        && let Some(want) = shared.config.api_key.as_deref()
        && key.as_deref() != Some(want)
    {
        // Refused as the API the request speaks refuses it (OpenAI's clients send a bearer).
        let api = match bearer {
            Some(_) => Api::OpenAi {
                model: String::new(),
            },
            None => Api::Gemini {
                model: String::new(),
            },
        };
        return api.bad_key();
    }
    if batch && shared.jobs.draw_fault(cfg) {
        return json_bytes(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error": {"code": 503, "message": "mock: the service is unavailable; try again", "status": "UNAVAILABLE"}}"#.to_vec(),
            "application/json",
        );
    }
    let resp = next.run(req).await;
    let Some(key) = key.filter(|_| batch && cfg.echo_key) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes)
        .replace("submit it again", &format!("submit it again (key {key})"))
        .replace(r#""message":""#, &format!(r#""message":"key {key}: "#));
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&key) {
        parts.headers.insert("x-echo-key", v);
    }
    Response::from_parts(parts, axum::body::Body::from(text))
}

async fn stats(State(shared): State<Arc<Shared>>) -> axum::Json<Stats> {
    axum::Json(shared.stats())
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> axum::Json<Stats> {
    shared.reset_stats();
    axum::Json(shared.stats())
}

async fn fallback() -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "Requested entity was not found.",
        Vec::new(),
    )
}

/// Which API a request came through: decides error shapes and body format.
enum Api {
    Gemini { model: String },
    OpenAi { model: String },
}

/// A parsed, validated embedding request.
struct Batch {
    texts: Vec<String>,
    /// Vector size per text.
    dims: Vec<usize>,
}

/// Why a request is refused before quotas and faults.
enum Reject {
    NotFound(String),
    Invalid(String),
}

// ---------------------------------------------------------------- Gemini ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeminiBatch {
    requests: Vec<GeminiRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GeminiRequest {
    model: Option<String>,
    content: Option<GeminiContent>,
    #[serde(alias = "task_type")]
    task_type: Option<String>,
    title: Option<String>,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeminiContent {
    #[serde(default)]
    parts: Vec<GeminiPart>,
    #[allow(dead_code)]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeminiPart {
    text: Option<String>,
}

fn parse_gemini(model: &str, body: &[u8], default_dim: usize) -> (usize, Result<Batch, Reject>) {
    let parsed: GeminiBatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return (
                0,
                Err(Reject::Invalid(format!(
                    "Invalid JSON payload received. {e}"
                ))),
            );
        }
    };
    let n = parsed.requests.len();
    (n, validate_gemini(model, parsed, default_dim))
}

fn validate_gemini(model: &str, parsed: GeminiBatch, default_dim: usize) -> Result<Batch, Reject> {
    let n = parsed.requests.len();
    if n == 0 {
        return Err(Reject::Invalid(
            "* BatchEmbedContentsRequest.requests: at least one request is required\n".into(),
        ));
    }
    if n > MAX_BATCH {
        return Err(Reject::Invalid(format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch\n"
        )));
    }
    let want_model = format!("models/{model}");
    let mut batch = Batch {
        texts: Vec::with_capacity(n),
        dims: Vec::with_capacity(n),
    };
    for (i, r) in parsed.requests.into_iter().enumerate() {
        match r.model.as_deref() {
            Some(m) if m == want_model => {}
            Some(m) => {
                return Err(Reject::Invalid(format!(
                    "* BatchEmbedContentsRequest.requests[{i}].model: model {m:?} does not match the model in the URL ({want_model:?})\n"
                )));
            }
            None => {
                return Err(Reject::Invalid(format!(
                    "* BatchEmbedContentsRequest.requests[{i}].model: model is required\n"
                )));
            }
        }
        if let Some(t) = r.task_type.as_deref()
            && !TASK_TYPES.contains(&t)
        {
            return Err(Reject::Invalid(format!(
                "Invalid value at 'requests[{i}].task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"{t}\""
            )));
        }
        let _ = r.title;
        let dim = match r.output_dimensionality {
            None => default_dim,
            Some(d) if d >= 1 && d as usize <= MAX_DIMENSION.max(default_dim) => d as usize,
            Some(d) => {
                return Err(Reject::Invalid(format!(
                    "* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: must be between 1 and {MAX_DIMENSION}, got {d}\n"
                )));
            }
        };
        let Some(content) = r.content else {
            return Err(Reject::Invalid(format!(
                "* BatchEmbedContentsRequest.requests[{i}].content: content is required\n"
            )));
        };
        if content.parts.is_empty() {
            return Err(Reject::Invalid(format!(
                "* BatchEmbedContentsRequest.requests[{i}].content.parts: contents.parts must not be empty.\n"
            )));
        }
        let mut text = String::new();
        for (j, p) in content.parts.into_iter().enumerate() {
            match p.text {
                Some(t) => text.push_str(&t),
                None => {
                    return Err(Reject::Invalid(format!(
                        "* BatchEmbedContentsRequest.requests[{i}].content.parts[{j}].data: required oneof field 'data' must have one initialized field\n"
                    )));
                }
            }
        }
        batch.texts.push(text);
        batch.dims.push(dim);
    }
    Ok(batch)
}

fn query_key(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .map(str::to_owned)
}

async fn gemini(
    State(shared): State<Arc<Shared>>,
    Path(spec): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (model, method) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
    if method == "asyncBatchEmbedContent" {
        let answer =
            shared
                .jobs
                .create(&shared.config.batch, shared.config.dimension, model, &body);
        return batch_answer(answer);
    }
    let (texts, parsed) = if method == "batchEmbedContents" {
        parse_gemini(model, &body, shared.config.dimension)
    } else {
        (
            0,
            Err(Reject::NotFound(format!(
                "models/{spec} is not found for API version v1beta, or is not supported for this method."
            ))),
        )
    };
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_key(query.as_deref()));
    let api = Api::Gemini {
        model: model.to_owned(),
    };
    process(shared, api, key, texts, parsed).await
}

// ------------------------------------------------------------- Batch API ---

fn batch_answer(a: crate::batch::Answer) -> Response {
    let mut resp = json_bytes(
        StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        a.body,
        a.content_type,
    );
    for (name, value) in a.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

async fn batch_list(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = query.as_deref().unwrap_or("");
    if !headers.contains_key("x-goog-api-key") && !q.contains("pageSize") && !q.contains("key=") {
        return openai_batch_list(&shared, q);
    }
    batch_answer(shared.jobs.list(&shared.config.batch))
}

async fn batch_get(State(shared): State<Arc<Shared>>, Path(spec): Path<String>) -> Response {
    if spec.starts_with("batch_") {
        return batch_answer(shared.jobs.openai_get(&shared.config.batch, &spec));
    }
    batch_answer(shared.jobs.get(&shared.config.batch, &spec))
}

async fn batch_cancel(State(shared): State<Arc<Shared>>, Path(spec): Path<String>) -> Response {
    match spec.strip_suffix(":cancel") {
        Some(id) => batch_answer(shared.jobs.cancel(&shared.config.batch, id)),
        None => fallback().await,
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let command = headers
        .get("x-goog-upload-command")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    batch_answer(shared.jobs.upload(
        &format!("http://{host}"),
        uri.path(),
        query.as_deref(),
        &command,
        &body,
    ))
}

async fn download(State(shared): State<Arc<Shared>>, Path(spec): Path<String>) -> Response {
    match spec.strip_suffix(":download") {
        Some(id) => batch_answer(shared.jobs.download(&shared.config.batch, id)),
        None => fallback().await,
    }
}

// ------------------------------------------------------ OpenAI Batch API ---

fn openai_batch_list(shared: &Shared, query: &str) -> Response {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    batch_answer(
        shared
            .jobs
            .openai_list(&shared.config.batch, param("after"), limit),
    )
}

async fn openai_batch_create(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    batch_answer(
        shared
            .jobs
            .openai_create(&shared.config.batch, shared.config.dimension, &body),
    )
}

async fn openai_batch_cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    batch_answer(shared.jobs.openai_cancel(&shared.config.batch, &id))
}

/// `POST /v1/files`: a multipart form with `purpose` and `file`.
async fn openai_file_upload(State(shared): State<Arc<Shared>>, mut form: Multipart) -> Response {
    let invalid =
        |msg: String| openai_error(StatusCode::BAD_REQUEST, &msg, "invalid_request_error", None);
    let (mut purpose, mut file) = (None, None);
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                let bytes = match field.bytes().await {
                    Ok(b) => b,
                    Err(e) => return invalid(format!("cannot read the form field {name}: {e}")),
                };
                match name.as_str() {
                    "purpose" => purpose = Some(String::from_utf8_lossy(&bytes).into_owned()),
                    "file" => file = Some((filename, bytes.to_vec())),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return invalid(format!("not a multipart form: {e}")),
        }
    }
    match (purpose, file) {
        (Some(purpose), Some((filename, bytes))) => {
            batch_answer(shared.jobs.openai_upload(&purpose, &filename, bytes))
        }
        _ => invalid("the form needs the fields 'purpose' and 'file'".into()),
    }
}

async fn openai_file_content(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response {
    batch_answer(shared.jobs.openai_content(&shared.config.batch, &id))
}

// ---------------------------------------------------------------- OpenAI ---

#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct OpenAiRequest {
    model: String,
    input: OpenAiInput,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
}

fn parse_openai(body: &[u8], default_dim: usize) -> (String, usize, Result<Batch, Reject>) {
    let req: OpenAiRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                String::new(),
                0,
                Err(Reject::Invalid(format!(
                    "We could not parse the JSON body of your request. ({e})"
                ))),
            );
        }
    };
    let texts = match req.input {
        OpenAiInput::One(t) => vec![t],
        OpenAiInput::Many(v) => v,
    };
    let n = texts.len();
    let checked = (|| {
        if texts.is_empty() {
            return Err(Reject::Invalid(
                "'$.input' is invalid: expected a non-empty array".into(),
            ));
        }
        if texts.len() > 2048 {
            return Err(Reject::Invalid(
                "'$.input' is invalid: at most 2048 inputs per request".into(),
            ));
        }
        if let Some(f) = req.encoding_format.as_deref()
            && f != "float"
        {
            return Err(Reject::Invalid(format!(
                "encoding_format {f:?} is not supported by this mock (use \"float\")"
            )));
        }
        let dim = match req.dimensions {
            None => default_dim,
            Some(d) if d >= 1 && d as usize <= MAX_DIMENSION.max(default_dim) => d as usize,
            Some(d) => return Err(Reject::Invalid(format!("invalid dimensions: {d}"))),
        };
        Ok(Batch {
            dims: vec![dim; texts.len()],
            texts,
        })
    })();
    (req.model, n, checked)
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (model, texts, parsed) = parse_openai(&body, shared.config.dimension);
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned());
    process(shared, Api::OpenAi { model }, key, texts, parsed).await
}

// ---------------------------------------------------------- common flow ---

/// Auth, validation, per-day quota, per-minute quota, random faults, latency,
/// answer.
async fn process(
    shared: Arc<Shared>,
    api: Api,
    key: Option<String>,
    texts: usize,
    parsed: Result<Batch, Reject>,
) -> Response {
    let (seq, _in_flight) = shared.arrive(texts);
    let latency = shared.config.latency;

    if let Some(fixed) = &shared.config.fixed_answer {
        shared.finish(Outcome::Status(fixed.status));
        let mut resp = (
            StatusCode::from_u16(fixed.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            fixed.body.clone(),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&fixed.content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        for (name, value) in &fixed.headers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                resp.headers_mut().insert(n, v);
            }
        }
        return resp;
    }

    let auth_ok = match &shared.config.api_key {
        None => true,
        Some(expected) => key.as_deref() == Some(expected.as_str()),
    };
    let decision = match parsed {
        Err(Reject::NotFound(msg)) => Err(api.not_found(&msg)),
        _ if !auth_ok => Err(api.bad_key()),
        Err(Reject::Invalid(msg)) => Err(api.invalid(&msg)),
        Ok(batch) => match shared.check_quota(batch.texts.len()) {
            QuotaVerdict::PerDay => Err(api.quota_day(&shared)),
            QuotaVerdict::PerMinute(delay) => Err(api.quota_minute(&shared, delay)),
            QuotaVerdict::Admitted => Ok((batch, shared.draw_fault(seq))),
        },
    };

    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (batch, fault) = match decision {
        Err(resp) => {
            shared.finish(Outcome::Status(resp.status().as_u16()));
            return resp;
        }
        Ok(ok) => ok,
    };
    let resp = match fault {
        Some(Fault::Storm429) => Some(api.storm_429(&shared)),
        Some(Fault::Internal500) => Some(api.internal()),
        Some(Fault::Unavailable503) => Some(api.unavailable()),
        _ => None,
    };
    if let Some(resp) = resp {
        shared.finish(Outcome::Status(resp.status().as_u16()));
        return resp;
    }
    if fault == Some(Fault::Hang) {
        shared.record_hang();
        shared.shutting_down().await;
        // Released by shutdown: answer so the connection can close.
        return api.unavailable();
    }

    if fault.is_none() && !shared.pass_gate().await {
        let resp = api.unavailable();
        shared.finish(Outcome::Status(resp.status().as_u16()));
        return resp;
    }
    let mut body = api.success_body(&batch, fault);
    if fault.is_some() {
        shared.finish(Outcome::Faulty);
    } else {
        shared.finish(Outcome::Ok(&batch.texts));
    }
    if fault == Some(Fault::Truncated) {
        body.truncate(body.len() / 2);
    }
    json_bytes(StatusCode::OK, body, api.content_type())
}

fn json_bytes(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn google_error(code: StatusCode, status: &str, message: &str, details: Vec<Value>) -> Response {
    let mut error = json!({ "code": code.as_u16(), "message": message, "status": status });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    let body = serde_json::to_vec_pretty(&json!({ "error": error })).unwrap_or_default();
    json_bytes(code, body, "application/json; charset=UTF-8")
}

fn openai_error(code: StatusCode, message: &str, kind: &str, err_code: Option<&str>) -> Response {
    let body =
        json!({ "error": { "message": message, "type": kind, "param": null, "code": err_code } });
    json_bytes(
        code,
        serde_json::to_vec(&body).unwrap_or_default(),
        "application/json",
    )
}

fn with_retry_after(mut resp: Response, delay: Duration) -> Response {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

fn format_delay(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn quota_details(model: &str, quota_id: &str, quota_value: u64, retry_delay: &str) -> Vec<Value> {
    vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/embed_content_requests",
                "quotaId": quota_id,
                "quotaDimensions": { "location": "global", "model": model },
                "quotaValue": quota_value.to_string()
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": retry_delay
        }),
    ]
}

fn quota_message(model: &str, limit: u64, retry_delay: &str) -> String {
    format!(
        "You exceeded your current quota, please check your plan and billing details. \
         For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n\
         * Quota exceeded for metric: generativelanguage.googleapis.com/embed_content_requests, \
         limit: {limit}, model: {model}\nPlease retry in {retry_delay}."
    )
}

const PER_MINUTE_ID: &str = "EmbedContentRequestsPerMinutePerProjectPerModel";
const PER_DAY_ID: &str = "EmbedContentRequestsPerDayPerProjectPerModel";
const PER_DAY_DELAY: Duration = Duration::from_secs(3600);

impl Api {
    fn content_type(&self) -> &'static str {
        match self {
            Api::Gemini { .. } => "application/json; charset=UTF-8",
            Api::OpenAi { .. } => "application/json",
        }
    }

    fn not_found(&self, msg: &str) -> Response {
        match self {
            Api::Gemini { .. } => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", msg, Vec::new()),
            Api::OpenAi { .. } => {
                openai_error(StatusCode::NOT_FOUND, msg, "invalid_request_error", None)
            }
        }
    }

    fn bad_key(&self) -> Response {
        match self {
            Api::Gemini { .. } => google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                vec![json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": { "service": "generativelanguage.googleapis.com" }
                })],
            ),
            Api::OpenAi { .. } => openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
        }
    }

    fn invalid(&self, msg: &str) -> Response {
        match self {
            Api::Gemini { .. } => {
                google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", msg, Vec::new())
            }
            Api::OpenAi { .. } => {
                openai_error(StatusCode::BAD_REQUEST, msg, "invalid_request_error", None)
            }
        }
    }

    fn quota_day(&self, shared: &Shared) -> Response {
        let limit = shared.config.quota_per_day.unwrap_or(0);
        self.quota_429(PER_DAY_ID, limit, PER_DAY_DELAY)
    }

    fn quota_minute(&self, shared: &Shared, delay: Duration) -> Response {
        let limit = shared.config.quota_per_minute.unwrap_or(0);
        self.quota_429(PER_MINUTE_ID, limit, delay)
    }

    fn storm_429(&self, shared: &Shared) -> Response {
        let limit = shared.config.quota_per_minute.unwrap_or(3000);
        self.quota_429(PER_MINUTE_ID, limit, shared.config.storm_retry_delay)
    }

    fn quota_429(&self, quota_id: &str, limit: u64, delay: Duration) -> Response {
        match self {
            Api::Gemini { model } => {
                let retry = format_delay(delay);
                google_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    &quota_message(model, limit, &retry),
                    quota_details(model, quota_id, limit, &retry),
                )
            }
            Api::OpenAi { .. } => with_retry_after(
                openai_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit reached",
                    "rate_limit_error",
                    Some("rate_limit_exceeded"),
                ),
                delay,
            ),
        }
    }

    fn internal(&self) -> Response {
        match self {
            Api::Gemini { .. } => google_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                Vec::new(),
            ),
            Api::OpenAi { .. } => openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
        }
    }

    fn unavailable(&self) -> Response {
        match self {
            Api::Gemini { .. } => google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                Vec::new(),
            ),
            Api::OpenAi { .. } => openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ),
        }
    }

    /// The 200 body, with the count / dimension / NaN faults applied
    /// (truncation is done by the caller).
    fn success_body(&self, batch: &Batch, fault: Option<Fault>) -> Vec<u8> {
        let count = if fault == Some(Fault::WrongCount) {
            batch.texts.len().saturating_sub(1)
        } else {
            batch.texts.len()
        };
        let mut out = String::with_capacity(count * batch.dims.first().copied().unwrap_or(0) * 12);
        match self {
            Api::Gemini { .. } => out.push_str("{\"embeddings\":["),
            Api::OpenAi { .. } => out.push_str("{\"object\":\"list\",\"data\":["),
        }
        for i in 0..count {
            let (text, dim) = (&batch.texts[i], batch.dims[i]);
            let mut values = match self {
                Api::Gemini { .. } => gemini_embedding(text, dim),
                Api::OpenAi { .. } => openai_embedding(text, dim),
            };
            if i == 0 && fault == Some(Fault::WrongDimension) {
                values.pop();
            }
            if i > 0 {
                out.push(',');
            }
            match self {
                Api::Gemini { .. } => out.push_str("{\"values\":"),
                Api::OpenAi { .. } => {
                    let _ = write!(
                        out,
                        "{{\"object\":\"embedding\",\"index\":{i},\"embedding\":"
                    );
                }
            }
            write_values(&mut out, &values, i == 0 && fault == Some(Fault::Nan));
            out.push('}');
        }
        out.push(']');
        if let Api::OpenAi { model } = self {
            let tokens: usize = batch.texts.iter().map(|t| approx_tokens(t)).sum();
            let _ = write!(
                out,
                ",\"model\":{},\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}",
                Value::String(model.clone())
            );
        }
        out.push('}');
        out.into_bytes()
    }
}

/// A rough token count (about four characters a token, at least one).
fn approx_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

pub(crate) fn write_values(out: &mut String, values: &[f32], nan_first: bool) {
    out.push('[');
    for (j, v) in values.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        if j == 0 && nan_first {
            out.push_str("NaN");
        } else {
            let _ = write!(out, "{v}");
        }
    }
    out.push(']');
}
