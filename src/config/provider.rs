//! Which provider embeds ([`ProviderSettings`], from `embedding` and `--provider`), each with
//! the options its constructor takes: the local model's folder, [`GeminiOptions`] (the
//! `gemini` section) or [`OpenAiOptions`] (`embedding.openai`).

use std::path::PathBuf;

use super::validate::Validator;
use super::{ConfigError, Overrides, ProviderKind, raw};
use crate::embed::gemini::GeminiOptions;
use crate::embed::openai::OpenAiOptions;

/// The embedding provider chosen and its own settings.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Local {
        model_dir: PathBuf,
    },
    Gemini(GeminiOptions),
    /// Its `request_timeout` is `embedding.openai.request_timeout`, else
    /// `gemini.request_timeout` (which used to cover both providers).
    Openai(OpenAiOptions),
}

impl ProviderSettings {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSettings::Local { .. } => ProviderKind::Local,
            ProviderSettings::Gemini(_) => ProviderKind::Gemini,
            ProviderSettings::Openai(_) => ProviderKind::Openai,
        }
    }

    /// Resolves `embedding` (`--provider` and `--model-dir` first; default Gemini, whose own
    /// settings are the `gemini` section, already resolved into `gemini`: its request timeout
    /// stands in for an unset `embedding.openai.request_timeout`).
    pub(super) fn resolve(
        v: &Validator,
        e: &raw::Embedding,
        o: &Overrides,
        gemini: GeminiOptions,
    ) -> Result<ProviderSettings, ConfigError> {
        let kind = o.provider.or(e.provider).unwrap_or(ProviderKind::Gemini);
        Ok(match kind {
            ProviderKind::Local => ProviderSettings::Local {
                model_dir: o.model_dir.clone().unwrap_or_else(|| {
                    PathBuf::from(e.local.model_dir.as_deref().unwrap_or(DEFAULT_MODEL_DIR))
                }),
            },
            ProviderKind::Gemini => ProviderSettings::Gemini(gemini),
            ProviderKind::Openai => ProviderSettings::Openai(OpenAiOptions {
                base_url: v.url(
                    "embedding.openai.base_url",
                    e.openai.base_url.as_deref().unwrap_or(""),
                )?,
                model: v.non_empty(
                    "embedding.openai.model",
                    e.openai.model.as_deref().unwrap_or(""),
                )?,
                api_key_env: e.openai.api_key_env.clone(),
                request_timeout: match e.openai.request_timeout {
                    None => gemini.request_timeout,
                    Some(t) => v.positive_seconds("embedding.openai.request_timeout", t)?,
                },
            }),
        })
    }
}

/// Resolves the provider keys of `gemini` (checked whichever provider runs, so a mistake there
/// shows before the file is used with Gemini).
pub(super) fn gemini_options(v: &Validator, g: &raw::Gemini) -> Result<GeminiOptions, ConfigError> {
    Ok(GeminiOptions {
        model_id: v.non_empty(
            "gemini.model_id",
            g.model_id.as_deref().unwrap_or("gemini-embedding-001"),
        )?,
        dimension: v.between(
            "gemini.embedding_dimension",
            g.embedding_dimension.unwrap_or(3072),
            1,
            65_536,
        )?,
        api_key_env: v.non_empty(
            "gemini.api_key_env",
            g.api_key_env.as_deref().unwrap_or("GEMINI_API_KEY"),
        )?,
        task_type: v.non_empty(
            "gemini.task_type",
            g.task_type.as_deref().unwrap_or("SEMANTIC_SIMILARITY"),
        )?,
        base_url: gemini_base_url(v, g)?,
        request_timeout: v
            .positive_seconds("gemini.request_timeout", g.request_timeout.unwrap_or(60.0))?,
    })
}

/// Where Gemini is reached when neither `gemini.base_url` nor `GOOGLE_GEMINI_BASE_URL` says.
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The environment variable Google's own SDK reads to reach another Gemini endpoint; read here
/// too (after `gemini.base_url`) so a project that points the original at a proxy or a mock
/// points puzzlegen at it unchanged.
pub const GEMINI_BASE_URL_ENV: &str = "GOOGLE_GEMINI_BASE_URL";

/// Default location of the local model, relative to the working directory.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// Where Gemini is reached: `gemini.base_url`, else [`GEMINI_BASE_URL_ENV`], else
/// [`DEFAULT_GEMINI_BASE_URL`].
fn gemini_base_url(v: &Validator, g: &raw::Gemini) -> Result<String, ConfigError> {
    let from_env = std::env::var(GEMINI_BASE_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    Ok(match (&g.base_url, from_env) {
        (Some(url), _) => v.url("gemini.base_url", url)?,
        (None, Some(url)) => v.url(GEMINI_BASE_URL_ENV, &url)?,
        (None, None) => DEFAULT_GEMINI_BASE_URL.to_owned(),
    })
}
