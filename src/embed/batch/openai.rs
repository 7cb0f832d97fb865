//! OpenAI's Batch API ([`OpenAiBatch`]), with the wire shapes of the openai SDK (3.63): a
//! job's texts go as a JSONL file of `/v1/embeddings` requests, one text per line keyed by its
//! position (`custom_id`), uploaded with `POST /files` (multipart, purpose `batch`); the job is
//! `POST /batches` (endpoint `/v1/embeddings`, window `24h`, its display name in `metadata`);
//! `GET /batches/{id}` polls it; its output and error files are read line by line as they
//! arrive from `GET /files/{id}/content` (a job of 10,000 texts at 1536 dimensions is ~200 MB
//! of JSON) and joined on `custom_id`. A job that expired or was cancelled keeps the results
//! of the lines it ran, and [`BatchApi::kept`] reads them, so no text it paid for is sent
//! again.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BatchApi, ItemResult, JobState, TRANSFER_TIMEOUT, finished_vector};
use crate::embed::http::{
    ApiKey, bad_json, check_url, client, send_checked, send_ok, transport_error,
};
use crate::embed::openai::OpenAiOptions;
use crate::embed::{EmbedError, Space};

/// The `metadata` key that holds a job's display name (how [`BatchApi::find`] knows it).
const DISPLAY_NAME_KEY: &str = "puzzlegen_job";

/// OpenAI's Batch API (or a server that speaks it) for one model.
pub struct OpenAiBatch {
    client: reqwest::Client,
    base: String,
    model: String,
    key: Option<ApiKey>,
    space: Space,
    /// The output and error files of ended jobs, as `state` read them.
    files: Mutex<HashMap<String, Files>>,
    /// Input files uploaded for jobs not yet created, by display name.
    uploads: Mutex<HashMap<String, String>>,
}

#[derive(Clone, Default)]
struct Files {
    output: Option<String>,
    errors: Option<String>,
}

/// A batch as the API answers it (the fields read here).
#[derive(Deserialize)]
struct Batch {
    id: String,
    status: String,
    #[serde(default)]
    created_at: u64,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// A page of `GET /batches`.
#[derive(Deserialize)]
struct Page {
    data: Vec<Batch>,
    #[serde(default)]
    has_more: bool,
}

/// A line of an output or error file (`BatchRequestOutput`).
#[derive(Deserialize)]
struct OutLine {
    custom_id: String,
    response: Option<OutResponse>,
    error: Option<LineError>,
}

#[derive(Deserialize)]
struct OutResponse {
    status_code: u16,
    body: OutBody,
}

#[derive(Deserialize)]
struct OutBody {
    #[serde(default)]
    data: Vec<OutItem>,
    error: Option<LineError>,
}

#[derive(Deserialize)]
struct OutItem {
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct LineError {
    #[serde(default)]
    message: String,
}

impl OpenAiBatch {
    /// The Batch API of `o`'s server for vectors of `space` (the one the interactive provider
    /// learnt: the model's own dimension).
    pub fn new(o: &OpenAiOptions, space: Space) -> Result<OpenAiBatch, EmbedError> {
        check_url(&o.base_url, "embedding.openai.base_url")?;
        let key = match &o.api_key_env {
            Some(var) => Some(ApiKey::from_env(var, "embedding.openai.api_key_env")?),
            None => None,
        };
        Ok(OpenAiBatch {
            client: client(o.request_timeout.max(std::time::Duration::from_secs(60)))?,
            base: o.base_url.trim_end_matches('/').to_owned(),
            model: o.model.clone(),
            key,
            space,
            files: Mutex::default(),
            uploads: Mutex::default(),
        })
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k.expose()),
            None => req,
        }
    }

    fn scrub(&self, e: EmbedError) -> EmbedError {
        match &self.key {
            Some(k) => k.scrub(e),
            None => e,
        }
    }

    /// Sends `req` with the key; the body of a 200, else the error (key redacted).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, EmbedError> {
        send_checked(self.authed(req), self.key.as_ref())
            .await
            .map(|(_, body)| body)
            .map_err(|e| self.scrub(e))
    }

    /// The batch `id` (`None`: the API does not know it).
    async fn batch(&self, id: &str) -> Result<Option<Batch>, EmbedError> {
        match self
            .send(self.client.get(format!("{}/batches/{id}", self.base)))
            .await
        {
            Ok(body) => Ok(Some(serde_json::from_str(&body).map_err(|e| bad_json(&e))?)),
            Err(EmbedError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads file `id` line by line as it arrives, putting each line's result at its text's
    /// place in `into`.
    async fn read_file(&self, id: &str, into: &mut [Option<ItemResult>]) -> Result<(), EmbedError> {
        let key = self.key.as_ref();
        let mut response = send_ok(
            self.authed(
                self.client
                    .get(format!("{}/files/{id}/content", self.base))
                    .timeout(TRANSFER_TIMEOUT)
                    .header("Accept", "application/binary"),
            ),
            key,
        )
        .await
        .map_err(|e| self.scrub(e))?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.scrub(transport_error(&e, key)))?
        {
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                self.take_line(&pending[start..start + end], into)?;
                start += end + 1;
            }
            pending.drain(..start);
        }
        self.take_line(&pending, into)
    }

    fn take_line(&self, line: &[u8], into: &mut [Option<ItemResult>]) -> Result<(), EmbedError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let line: OutLine = serde_json::from_slice(line).map_err(|e| bad_json(&e))?;
        let slot = line
            .custom_id
            .parse::<usize>()
            .ok()
            .and_then(|i| into.get_mut(i))
            .ok_or_else(|| {
                EmbedError::BadAnswer(format!(
                    "the batch answered for custom_id {:?}, which names no text of the job",
                    line.custom_id
                ))
            })?;
        let redact = |m: String| match &self.key {
            Some(k) => k.redact(&m),
            None => m,
        };
        *slot = Some(match (line.response, line.error) {
            (Some(r), _) if r.status_code == 200 => match <[OutItem; 1]>::try_from(r.body.data) {
                Ok([item]) => finished_vector(item.embedding, &self.space),
                Err(items) => Err(format!(
                    "the batch answered {} vectors for one text",
                    items.len()
                )),
            },
            (Some(r), _) => Err(redact(format!(
                "the batch answered {}: {}",
                r.status_code,
                r.body.error.map(|e| e.message).unwrap_or_default()
            ))),
            (None, Some(e)) => Err(redact(format!(
                "the batch answered an error: {}",
                e.message
            ))),
            (None, None) => Err("the batch answered neither a vector nor an error".into()),
        });
        Ok(())
    }

    /// Uploads `texts` as a batch input file: one `/v1/embeddings` request per text, keyed by
    /// its place (`custom_id`). The file's id.
    async fn upload(&self, texts: &[String], display_name: &str) -> Result<String, EmbedError> {
        let mut file = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let line = json!({
                "custom_id": i.to_string(),
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": self.model, "input": t, "encoding_format": "float"},
            });
            file.extend_from_slice(line.to_string().as_bytes());
            file.push(b'\n');
        }
        let part = reqwest::multipart::Part::bytes(file)
            .file_name(format!("{display_name}.jsonl"))
            .mime_str("application/jsonl")
            .map_err(|e| EmbedError::Setup(format!("cannot build the upload: {e}")))?;
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        let uploaded = self
            .send(
                self.client
                    .post(format!("{}/files", self.base))
                    .timeout(TRANSFER_TIMEOUT)
                    .multipart(form),
            )
            .await?;
        let v: Value = serde_json::from_str(&uploaded).map_err(|e| bad_json(&e))?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| EmbedError::BadAnswer("the Files API named no file".into()))
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the ended job `name`'s output and error files hold for its `count` texts.
    async fn read_results(
        &self,
        name: &str,
        count: usize,
    ) -> Result<Vec<Option<ItemResult>>, EmbedError> {
        let kept = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let files = match kept {
            Some(f) => f,
            None => {
                let batch = self
                    .batch(name)
                    .await?
                    .ok_or_else(|| EmbedError::Transient(format!("{name}: the job is gone")))?;
                Files {
                    output: batch.output_file_id,
                    errors: batch.error_file_id,
                }
            }
        };
        let mut results = vec![None; count];
        for id in files.output.iter().chain(&files.errors) {
            self.read_file(id, &mut results).await?;
        }
        Ok(results)
    }
}

/// Whether a batch created at `created_at` (UNIX seconds) is more than an hour older than
/// the job named `display_name` (`puzzlegen-<nanoseconds, hex>-...`, written before its
/// create): it cannot be that job, and neither can any batch listed after it. A name of
/// another form is never older.
fn older(created_at: u64, display_name: &str) -> bool {
    let meant = display_name
        .strip_prefix("puzzlegen-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|nanos| (nanos / 1_000_000_000) as u64);
    meant.is_some_and(|meant| created_at.saturating_add(3600) < meant)
}

#[async_trait::async_trait]
impl BatchApi for OpenAiBatch {
    async fn create(&self, texts: &[String], display_name: &str) -> Result<String, EmbedError> {
        // A create tried again after its upload went through uses the same file.
        let kept = self.lock_uploads().get(display_name).cloned();
        let file_id = match kept {
            Some(id) => id,
            None => {
                let id = self.upload(texts, display_name).await?;
                self.lock_uploads()
                    .insert(display_name.to_owned(), id.clone());
                id
            }
        };
        let created = self
            .send(
                self.client
                    .post(format!("{}/batches", self.base))
                    .json(&json!({
                        "input_file_id": file_id,
                        "endpoint": "/v1/embeddings",
                        "completion_window": "24h",
                        "metadata": {DISPLAY_NAME_KEY: display_name},
                    })),
            )
            .await?;
        let batch: Batch = serde_json::from_str(&created).map_err(|e| bad_json(&e))?;
        self.lock_uploads().remove(display_name);
        Ok(batch.id)
    }

    async fn find(&self, display_name: &str) -> Result<Option<String>, EmbedError> {
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/batches?limit=100", self.base);
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let body = self.send(self.client.get(url)).await?;
            let page: Page = serde_json::from_str(&body).map_err(|e| bad_json(&e))?;
            let found = page.data.iter().find(|b| {
                b.metadata
                    .as_ref()
                    .and_then(|m| m[DISPLAY_NAME_KEY].as_str())
                    == Some(display_name)
            });
            if let Some(b) = found {
                return Ok(Some(b.id.clone()));
            }
            match page.data.last() {
                // Newest first: batches made well before the job was meant cannot be it.
                Some(last) if page.has_more && !older(last.created_at, display_name) => {
                    after = Some(last.id.clone())
                }
                _ => return Ok(None),
            }
        }
    }

    async fn state(&self, name: &str) -> Result<JobState, EmbedError> {
        let Some(batch) = self.batch(name).await? else {
            return Ok(JobState::Unknown);
        };
        let state = match batch.status.as_str() {
            "completed" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            "cancelled" => JobState::Cancelled,
            "validating" => JobState::Pending,
            // in_progress, finalizing, cancelling
            _ => JobState::Running,
        };
        if state.is_final() {
            // Kept for `results` and `kept`, which would otherwise ask again.
            self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(
                name.to_owned(),
                Files {
                    output: batch.output_file_id,
                    errors: batch.error_file_id,
                },
            );
        }
        Ok(state)
    }

    async fn results(&self, name: &str, count: usize) -> Result<Vec<ItemResult>, EmbedError> {
        Ok(self
            .read_results(name, count)
            .await?
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("the batch answered nothing for this text".into())))
            .collect())
    }

    async fn kept(&self, name: &str, count: usize) -> Result<Vec<Option<ItemResult>>, EmbedError> {
        self.read_results(name, count).await
    }

    async fn cancel(&self, name: &str) -> Result<(), EmbedError> {
        self.send(
            self.client
                .post(format!("{}/batches/{name}/cancel", self.base)),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_an_hour_older_than_the_job_is_not_it() {
        // 0x6000_0000 seconds after the epoch, in nanoseconds, as a job's display name says.
        let meant: u64 = 0x6000_0000;
        let name = format!("puzzlegen-{:x}-42-0", u128::from(meant) * 1_000_000_000);
        assert!(super::older(meant - 3601, &name));
        assert!(!super::older(meant - 3599, &name));
        assert!(!super::older(meant + 10, &name));
        assert!(!super::older(0, "a-name-of-another-form"));
    }
}
