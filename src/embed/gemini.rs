//! Google's Gemini embedding API (`gemini-embedding-001`), REST v1beta.
//!
//! `POST {base}/v1beta/models/{model}:batchEmbedContents`, at most 100 texts per request, the
//! key in the `x-goog-api-key` header (never in the URL). Vectors shorter than 3072 dimensions
//! are L2-normalised here: the API normalises only the full size. Errors are read from Google's
//! JSON shape: a 429's delay from the `google.rpc.RetryInfo` detail, a per-day quota from the
//! `google.rpc.QuotaFailure` detail's `quotaId`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{
    ApiKey, bad_json, check_url, client, error_message, parse_seconds, status_error,
    transport_error,
};
use super::{EmbedError, Provider, Space, check_answer, normalize};

/// Most texts one `batchEmbedContents` request accepts.
pub const MAX_BATCH: usize = 100;
/// The dimension the API returns already normalised.
const FULL_DIMENSION: usize = 3072;

/// Settings of the Gemini provider.
#[derive(Debug, Clone)]
pub struct GeminiOptions {
    pub base_url: String,
    pub model_id: String,
    pub dimension: usize,
    pub task_type: String,
    pub api_key_env: String,
    pub request_timeout: Duration,
}

pub struct GeminiProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    key: ApiKey,
    space: Space,
}

impl GeminiProvider {
    pub fn new(o: &GeminiOptions) -> Result<GeminiProvider, EmbedError> {
        check_url(&o.base_url, "gemini.base_url")?;
        let key = ApiKey::from_env(&o.api_key_env, "gemini.api_key_env")?;
        let model = o.model_id.trim_start_matches("models/").to_owned();
        Ok(GeminiProvider {
            client: client(o.request_timeout)?,
            url: format!(
                "{}/v1beta/models/{model}:batchEmbedContents",
                o.base_url.trim_end_matches('/')
            ),
            model,
            key,
            space: Space {
                model_id: o.model_id.clone(),
                dimension: o.dimension,
                task_type: o.task_type.clone(),
            },
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    embeddings: Vec<Values>,
}

#[derive(Deserialize)]
struct Values {
    values: Vec<f32>,
}

/// Turns a Google error body into the matching [`EmbedError`].
fn google_error(status: u16, body: &str) -> EmbedError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &v["error"];
    let message = error_message(body, 200);
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let detail = |suffix: &str| {
        details
            .iter()
            .find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
    };
    if status == 429 {
        let per_day = detail("google.rpc.QuotaFailure").and_then(|q| {
            q["violations"].as_array()?.iter().find_map(|v| {
                let id = v["quotaId"].as_str()?;
                id.contains("PerDay").then(|| id.to_owned())
            })
        });
        if let Some(quota) = per_day {
            return EmbedError::DailyQuota { quota };
        }
        let retry_after = detail("google.rpc.RetryInfo")
            .and_then(|r| r["retryDelay"].as_str())
            .and_then(parse_seconds);
        return EmbedError::RateLimited { retry_after };
    }
    status_error(status, message)
}

/// What to check after a refusal that is most likely the key's fault.
pub(super) fn hint(status: u16, key: &ApiKey) -> String {
    match status {
        401 | 403 => format!(
            " (check the API key in the environment variable {})",
            key.var()
        ),
        431 => format!(
            " (the request headers are too large: check the API key in the environment \
             variable {})",
            key.var()
        ),
        _ => String::new(),
    }
}

#[async_trait::async_trait]
impl Provider for GeminiProvider {
    fn space(&self) -> &Space {
        &self.space
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.request(texts).await.map_err(|e| self.key.scrub(e))
    }
}

impl GeminiProvider {
    /// One `batchEmbedContents` request. Its errors may quote the answer: [`Provider::embed`]
    /// scrubs the key from them.
    async fn request(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = format!("models/{}", self.model);
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                json!({
                    "model": model,
                    "content": {"parts": [{"text": t}]},
                    "taskType": self.space.task_type,
                    "outputDimensionality": self.space.dimension,
                })
            })
            .collect();
        let response = self
            .client
            .post(&self.url)
            .header("x-goog-api-key", self.key.expose())
            .json(&json!({ "requests": requests }))
            .send()
            .await
            .map_err(|e| transport_error(&e, Some(&self.key)))?;
        let status = response.status().as_u16();
        // The key is taken out of the answer before anything reads it, so no message cut
        // from it can hold part of the key.
        let body = response
            .text()
            .await
            .map(|b| self.key.redact(&b))
            .map_err(|e| transport_error(&e, Some(&self.key)))?;
        if status != 200 {
            return Err(match google_error(status, &body) {
                EmbedError::Rejected { status, message } => EmbedError::Rejected {
                    status,
                    message: format!("{message}{}", hint(status, &self.key)),
                },
                other => other,
            });
        }
        let answer: Answer = serde_json::from_str(&body).map_err(|e| bad_json(&e))?;
        let mut vectors: Vec<Vec<f32>> = answer.embeddings.into_iter().map(|e| e.values).collect();
        check_answer(&vectors, texts.len(), self.space.dimension)?;
        if self.space.dimension < FULL_DIMENSION {
            vectors.iter_mut().for_each(|v| normalize(v));
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_delay_and_daily_quota_from_google_errors() {
        let minute = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Quota exceeded","details":[
            {"@type":"type.googleapis.com/google.rpc.Help","links":[]},
            {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"EmbedContentRequestsPerMinutePerProjectPerModel"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"15.97s"}]}}"#;
        match google_error(429, minute) {
            EmbedError::RateLimited { retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs_f64(15.97)))
            }
            other => panic!("{other:?}"),
        }
        let day = minute.replace("PerMinute", "PerDay");
        match google_error(429, &day) {
            EmbedError::DailyQuota { quota } => {
                assert_eq!(quota, "EmbedContentRequestsPerDayPerProjectPerModel")
            }
            other => panic!("{other:?}"),
        }
        assert!(google_error(400, r#"{"error":{"message":"API key not valid."}}"#).is_fatal());
        assert!(!google_error(503, "<html>").is_fatal());
        match google_error(
            431,
            "<html><title>431 Too Large</title>\n<body>\n</body></html>",
        ) {
            EmbedError::Rejected { status, message } => {
                assert_eq!((status, message.as_str()), (431, "431 Too Large"))
            }
            other => panic!("{other:?}"),
        }
    }
}
