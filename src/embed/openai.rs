//! OpenAI-compatible embeddings: `POST {base_url}/embeddings` with `{"model", "input": [..]}`.
//!
//! The de facto standard served by OpenAI, Ollama, vLLM, llama.cpp and
//! text-embeddings-inference. The key, when `embedding.openai.api_key_env` names one, travels as
//! `Authorization: Bearer`. A 429's delay comes from the `Retry-After` header. The dimension is
//! learnt from a first one-text request when the provider starts (which also checks the URL,
//! model and key before any real work), and vectors are L2-normalised here.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::{ApiKey, bad_json, check_url, client, send_checked};
use super::{EmbedError, Provider, Space, check_answer, normalize};

/// The task name of an OpenAI-compatible space (its model decides everything else).
pub const OPENAI_TASK: &str = "openai";

/// Texts per request: a size every server named above accepts.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    pub base_url: String,
    pub model: String,
    pub api_key_env: Option<String>,
    pub request_timeout: Duration,
}

pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<ApiKey>,
    space: Space,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiProvider {
    /// Connects and learns the model's dimension from one short request.
    pub async fn connect(o: &OpenAiOptions) -> Result<OpenAiProvider, EmbedError> {
        check_url(&o.base_url, "embedding.openai.base_url")?;
        let key = match &o.api_key_env {
            Some(var) => Some(ApiKey::from_env(var, "embedding.openai.api_key_env")?),
            None => None,
        };
        let mut provider = OpenAiProvider {
            client: client(o.request_timeout)?,
            url: format!("{}/embeddings", o.base_url.trim_end_matches('/')),
            model: o.model.clone(),
            key,
            space: Space {
                model_id: o.model.clone(),
                dimension: 0,
                task_type: OPENAI_TASK.into(),
            },
        };
        let probe = provider.request(vec!["dimension probe".into()]).await?;
        provider.space.dimension = probe.first().map_or(0, Vec::len);
        if provider.space.dimension == 0 {
            return Err(EmbedError::BadAnswer("the probe returned no vector".into()));
        }
        Ok(provider)
    }

    /// One request; its errors have the key scrubbed from them (they may quote the answer).
    async fn request(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let answer = self.send(texts).await;
        match &self.key {
            Some(k) => answer.map_err(|e| k.scrub(e)),
            None => answer,
        }
    }

    async fn send(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut req = self
            .client
            .post(&self.url)
            .json(&json!({"model": self.model, "input": texts}));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k.expose());
        }
        let (_, body) = send_checked(req, self.key.as_ref()).await?;
        let mut answer: Answer = serde_json::from_str(&body).map_err(|e| bad_json(&e))?;
        answer.data.sort_by_key(|i| i.index);
        let mut vectors: Vec<Vec<f32>> = answer.data.into_iter().map(|i| i.embedding).collect();
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn space(&self) -> &Space {
        &self.space
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len();
        let vectors = self.request(texts).await?;
        check_answer(&vectors, n, self.space.dimension)?;
        Ok(vectors)
    }
}
