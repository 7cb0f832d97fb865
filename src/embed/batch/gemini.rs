//! Gemini's Batch API ([`GeminiBatch`]), with the wire shapes of the google-genai SDK's
//! batches.py and files.py: `asyncBatchEmbedContent`, inline requests under 20 MB, else a
//! JSONL file through the Files API's resumable upload; results inline in the finished job,
//! or in a responses file downloaded with `alt=media`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BatchApi, ItemResult, JobState, TRANSFER_TIMEOUT, finished_vector};
use crate::embed::gemini::GeminiOptions;
use crate::embed::http::{ApiKey, bad_json, check_url, client, send_checked};
use crate::embed::{EmbedError, Space};

/// The largest inline create body: the API's 20 MB, with room for the envelope.
pub const INLINE_LIMIT_BYTES: usize = 20_000_000;

/// Gemini's Batch API (`v1beta`).
pub struct GeminiBatch {
    client: reqwest::Client,
    base: String,
    model: String,
    key: ApiKey,
    space: Space,
    inline_limit: usize,
    /// Finished jobs as `state` read them, until `results` takes them.
    finished: std::sync::Mutex<std::collections::HashMap<String, Operation>>,
    /// Input files uploaded for jobs not yet created, by display name.
    uploads: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl GeminiBatch {
    pub fn new(o: &GeminiOptions) -> Result<GeminiBatch, EmbedError> {
        check_url(&o.base_url, "gemini.base_url")?;
        Ok(GeminiBatch {
            client: client(o.request_timeout.max(std::time::Duration::from_secs(60)))?,
            base: o.base_url.trim_end_matches('/').to_owned(),
            model: o.model_id.trim_start_matches("models/").to_owned(),
            key: ApiKey::from_env(&o.api_key_env, "gemini.api_key_env")?,
            space: Space {
                model_id: o.model_id.clone(),
                dimension: o.dimension,
                task_type: o.task_type.clone(),
            },
            inline_limit: INLINE_LIMIT_BYTES,
            finished: Default::default(),
            uploads: Default::default(),
        })
    }

    /// The same client with a smaller inline limit (tests send a file with a few texts).
    #[doc(hidden)]
    pub fn with_inline_limit(mut self, bytes: usize) -> GeminiBatch {
        self.inline_limit = bytes;
        self
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request(&self, text: &str) -> Value {
        json!({
            "content": {"parts": [{"text": text}]},
            "taskType": self.space.task_type,
            "outputDimensionality": self.space.dimension,
        })
    }

    /// Sends `req` with the key; the headers and body of a 200, else the error (key
    /// redacted).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, String), EmbedError> {
        send_checked(
            req.header("x-goog-api-key", self.key.expose()),
            Some(&self.key),
        )
        .await
    }

    /// Uploads `bytes` as a JSONL file (the Files API's resumable upload); its name.
    async fn upload(&self, bytes: Vec<u8>, display_name: &str) -> Result<String, EmbedError> {
        let len = bytes.len().to_string();
        let (headers, _) = self
            .send(
                self.client
                    .post(format!("{}/upload/v1beta/files", self.base))
                    .header("X-Goog-Upload-Protocol", "resumable")
                    .header("X-Goog-Upload-Command", "start")
                    .header("X-Goog-Upload-Header-Content-Length", &len)
                    .header("X-Goog-Upload-Header-Content-Type", "application/jsonl")
                    .json(&json!({"file": {"displayName": display_name, "mimeType": "application/jsonl"}})),
            )
            .await?;
        let url = headers
            .get("x-goog-upload-url")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| EmbedError::BadAnswer("the Files API gave no X-Goog-Upload-URL".into()))?
            .to_owned();
        let (headers, body) = self
            .send(
                self.client
                    .post(url)
                    .timeout(TRANSFER_TIMEOUT)
                    .header("X-Goog-Upload-Command", "upload, finalize")
                    .header("X-Goog-Upload-Offset", "0")
                    .body(bytes),
            )
            .await?;
        let status = headers
            .get("x-goog-upload-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if status != "final" {
            return Err(EmbedError::Transient(format!(
                "the Files API did not finish the upload (X-Goog-Upload-Status {status:?})"
            )));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| bad_json(&e))?;
        v["file"]["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| EmbedError::BadAnswer("the Files API named no file".into()))
    }

    /// The job `name` as the API answers it (`None`: a 404). A finished job's inline results
    /// are read straight into vectors (a job of 10,000 texts at 3072 dimensions is ~300 MB of
    /// JSON).
    async fn get(&self, name: &str) -> Result<Option<Operation>, EmbedError> {
        match self
            .send(
                self.client
                    .get(format!("{}/v1beta/{name}", self.base))
                    .timeout(TRANSFER_TIMEOUT),
            )
            .await
        {
            Ok((_, body)) => Ok(Some(serde_json::from_str(&body).map_err(|e| bad_json(&e))?)),
            Err(EmbedError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A batch job as the API answers `get`: an Operation whose `metadata` is the batch.
#[derive(Deserialize)]
struct Operation {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    state: String,
    output: Option<Output>,
}

/// A finished job's output: inline responses (the SDK accepts both names) or a file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    inlined_responses: Option<Inlined>,
    inlined_embed_content_responses: Option<Inlined>,
    responses_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inlined {
    inlined_responses: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    response: Option<ItemResponse>,
    error: Option<ItemError>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct ItemResponse {
    embedding: Embedding,
}

#[derive(Deserialize)]
struct Embedding {
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(default)]
    message: String,
}

impl GeminiBatch {
    fn item(&self, item: Item) -> ItemResult {
        match (item.response, item.error) {
            (Some(r), _) => finished_vector(r.embedding.values, &self.space),
            (None, Some(e)) => Err(format!("the batch job answered an error: {}", e.message)),
            (None, None) => Err("the batch job answered neither a vector nor an error".into()),
        }
    }
}

#[async_trait::async_trait]
impl BatchApi for GeminiBatch {
    async fn create(&self, texts: &[String], display_name: &str) -> Result<String, EmbedError> {
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| json!({"request": self.request(t)}))
            .collect();
        let inline = json!({"batch": {
            "displayName": display_name,
            "inputConfig": {"requests": {"requests": requests}},
        }});
        let body = serde_json::to_vec(&inline).expect("json");
        let url = format!(
            "{}/v1beta/models/{}:asyncBatchEmbedContent",
            self.base, self.model
        );
        let body = if body.len() <= self.inline_limit {
            body
        } else {
            // Too large to send inline: one JSONL line per text, keyed by its position.
            let mut file = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                let line = json!({"key": i.to_string(), "request": self.request(t)});
                file.extend_from_slice(line.to_string().as_bytes());
                file.push(b'\n');
            }
            // A create tried again after its upload went through uses the same file.
            let kept = self.lock_uploads().get(display_name).cloned();
            let name = match kept {
                Some(name) => name,
                None => {
                    let name = self.upload(file, display_name).await?;
                    self.lock_uploads()
                        .insert(display_name.to_owned(), name.clone());
                    name
                }
            };
            serde_json::to_vec(&json!({"batch": {
                "displayName": display_name,
                "inputConfig": {"fileName": name},
            }}))
            .expect("json")
        };
        let (_, answer) = self
            .send(
                self.client
                    .post(url)
                    .timeout(TRANSFER_TIMEOUT)
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await
            .map_err(|e| self.key.scrub(e))?;
        let v: Value = serde_json::from_str(&answer).map_err(|e| bad_json(&e))?;
        let name = v["name"]
            .as_str()
            .or_else(|| v["metadata"]["name"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| EmbedError::BadAnswer("the Batch API named no job".into()))?;
        self.lock_uploads().remove(display_name);
        Ok(name)
    }

    async fn find(&self, display_name: &str) -> Result<Option<String>, EmbedError> {
        let mut token = String::new();
        loop {
            let mut url = format!("{}/v1beta/batches?pageSize=100", self.base);
            if !token.is_empty() {
                url.push_str(&format!("&pageToken={token}"));
            }
            let (_, body) = self
                .send(self.client.get(url))
                .await
                .map_err(|e| self.key.scrub(e))?;
            let v: Value = serde_json::from_str(&body).map_err(|e| bad_json(&e))?;
            let found = v["operations"].as_array().and_then(|ops| {
                ops.iter().find_map(|op| {
                    (op["metadata"]["displayName"].as_str() == Some(display_name))
                        .then(|| op["name"].as_str().map(str::to_owned))
                        .flatten()
                })
            });
            if found.is_some() {
                return Ok(found);
            }
            match v["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_owned(),
                _ => return Ok(None),
            }
        }
    }

    async fn state(&self, name: &str) -> Result<JobState, EmbedError> {
        let Some(op) = self.get(name).await.map_err(|e| self.key.scrub(e))? else {
            return Ok(JobState::Unknown);
        };
        let state = match op.metadata.state.as_str() {
            "BATCH_STATE_SUCCEEDED" | "JOB_STATE_SUCCEEDED" => JobState::Succeeded,
            "BATCH_STATE_FAILED" | "JOB_STATE_FAILED" => JobState::Failed,
            "BATCH_STATE_EXPIRED" | "JOB_STATE_EXPIRED" => JobState::Expired,
            "BATCH_STATE_CANCELLED" | "JOB_STATE_CANCELLED" => JobState::Cancelled,
            "BATCH_STATE_RUNNING" | "JOB_STATE_RUNNING" => JobState::Running,
            _ => JobState::Pending,
        };
        if state == JobState::Succeeded {
            // Kept for `results`, which would otherwise read the whole answer again.
            self.finished
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_owned(), op);
        }
        Ok(state)
    }

    async fn results(&self, name: &str, count: usize) -> Result<Vec<ItemResult>, EmbedError> {
        let kept = self
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let op = match kept {
            Some(op) => op,
            None => self
                .get(name)
                .await
                .map_err(|e| self.key.scrub(e))?
                .ok_or_else(|| EmbedError::Transient(format!("{name}: the job is gone")))?,
        };
        let output = op.metadata.output.ok_or_else(|| {
            EmbedError::BadAnswer(format!("{name}: the finished job holds no output"))
        })?;
        let items: Vec<Item> = if let Some(inline) = output
            .inlined_responses
            .or(output.inlined_embed_content_responses)
        {
            inline.inlined_responses
        } else if let Some(file) = output.responses_file {
            let (_, body) = self
                .send(
                    self.client
                        .get(format!("{}/v1beta/{file}:download?alt=media", self.base))
                        .timeout(TRANSFER_TIMEOUT),
                )
                .await
                .map_err(|e| self.key.scrub(e))?;
            let mut lines: Vec<Item> = body
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).map_err(|e| bad_json(&e)))
                .collect::<Result<_, _>>()?;
            lines.sort_by_key(|i| i.key.as_deref().and_then(|k| k.parse::<usize>().ok()));
            lines
        } else {
            return Err(EmbedError::BadAnswer(format!(
                "{name}: the finished job holds no output"
            )));
        };
        if items.len() != count {
            return Err(EmbedError::BadAnswer(format!(
                "{name}: {} result(s) for {count} text(s)",
                items.len()
            )));
        }
        Ok(items.into_iter().map(|i| self.item(i)).collect())
    }

    async fn cancel(&self, name: &str) -> Result<(), EmbedError> {
        self.send(
            self.client
                .post(format!("{}/v1beta/{name}:cancel", self.base))
                .header("Content-Type", "application/json")
                .body(""),
        )
        .await
        .map(|_| ())
        .map_err(|e| self.key.scrub(e))
    }
}
