//! How the texts a run must embed are sent (`embedding.mode`, the `batch` section) and what
//! they cost (`pricing`): interactive requests, or the providers' Batch APIs at half the
//! price, and the price table `puzzlegen plan` and the run summary estimate costs with.

use std::collections::BTreeMap;
use std::time::Duration;

use super::validate::Validator;
use super::{ConfigError, ProviderKind, raw};

/// `embedding.mode`: how texts not in the cache reach the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingMode {
    /// One request per `gemini.batch_size` texts, under the limiter (the original's way).
    #[default]
    Interactive,
    /// Batch jobs through the provider's Batch API: half the price, done within 24 hours.
    Batch,
}

impl std::fmt::Display for EmbeddingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EmbeddingMode::Interactive => "interactive",
            EmbeddingMode::Batch => "batch",
        })
    }
}

/// `batch.fallback`: where texts go that a batch job answered with an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchFallback {
    /// Into one follow-up batch job.
    #[default]
    Job,
    /// To the interactive API, under the limiter.
    Interactive,
}

/// The `batch` section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    /// Texts in one job (`batch.max_texts_per_job`).
    pub max_texts_per_job: usize,
    /// Jobs running at once (`batch.max_active_jobs`).
    pub max_active_jobs: usize,
    /// First wait between two polls of a job (`batch.poll_interval`); it grows to
    /// [`MAX_POLL_INTERVAL`].
    pub poll_interval: Duration,
    /// How long a run waits for its jobs before it stops with exit 3, leaving them running
    /// (`batch.max_wait`).
    pub max_wait: Duration,
    pub fallback: BatchFallback,
}

/// The longest wait between two polls of a job.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// Default `batch.max_texts_per_job`: well under every provider's limit (Gemini: a 20 MB
/// inline body, else a 2 GB file; OpenAI: 50,000 requests and 200 MB per file).
pub(super) const DEFAULT_TEXTS_PER_JOB: usize = 10_000;

/// The most texts one job may hold.
pub(super) const MAX_TEXTS_PER_JOB: usize = 1_000_000;

impl Default for BatchSettings {
    fn default() -> BatchSettings {
        BatchSettings {
            max_texts_per_job: DEFAULT_TEXTS_PER_JOB,
            max_active_jobs: 4,
            poll_interval: Duration::from_secs(10),
            max_wait: Duration::from_secs(24 * 3600),
            fallback: BatchFallback::Job,
        }
    }
}

impl BatchSettings {
    pub(super) fn resolve(v: &Validator, b: &raw::Batch) -> Result<BatchSettings, ConfigError> {
        let d = BatchSettings::default();
        Ok(BatchSettings {
            max_texts_per_job: match b.max_texts_per_job {
                None => d.max_texts_per_job,
                Some(n) => v.between("batch.max_texts_per_job", n, 1, MAX_TEXTS_PER_JOB as i64)?,
            },
            max_active_jobs: match b.max_active_jobs {
                None => d.max_active_jobs,
                Some(n) => v.between("batch.max_active_jobs", n, 1, 1000)?,
            },
            poll_interval: match b.poll_interval {
                None => d.poll_interval,
                Some(s) => v.positive_seconds("batch.poll_interval", s)?,
            },
            max_wait: match b.max_wait {
                None => d.max_wait,
                Some(s) => v.positive_seconds("batch.max_wait", s)?,
            },
            fallback: b.fallback.unwrap_or_default(),
        })
    }
}

/// The most embedding inputs OpenAI's Batch API takes in one batch (over all its requests).
pub(super) const OPENAI_MAX_TEXTS_PER_JOB: usize = 50_000;

/// Checks that `mode` can be used with `provider`, and jobs of the size `batch` asks for.
pub(super) fn check_mode(
    v: &Validator,
    mode: EmbeddingMode,
    provider: ProviderKind,
    batch: &BatchSettings,
) -> Result<(), ConfigError> {
    match (mode, provider) {
        (EmbeddingMode::Batch, ProviderKind::Local) => Err(v.invalid(
            "embedding.mode",
            "interactive with the local provider (it has no batch mode; batch is for gemini and \
             openai)",
            "batch",
        )),
        (EmbeddingMode::Batch, ProviderKind::Openai)
            if batch.max_texts_per_job > OPENAI_MAX_TEXTS_PER_JOB =>
        {
            Err(v.invalid(
                "batch.max_texts_per_job",
                "at most 50000 with the openai provider (its Batch API takes at most 50,000 \
                 embedding inputs per batch)",
                &batch.max_texts_per_job.to_string(),
            ))
        }
        _ => Ok(()),
    }
}

/// US dollars per million input tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub interactive: f64,
    pub batch: f64,
}

/// `pricing`: the price of each model, the documented defaults overridden per model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    pub models: BTreeMap<String, Price>,
}

/// The default prices (USD per million input tokens, the providers' price pages of 2026):
/// gemini-embedding-001 $0.15 ($0.075 in batch); OpenAI text-embedding-3-small $0.02
/// ($0.01), text-embedding-3-large $0.13 ($0.065).
pub const DEFAULT_PRICES: [(&str, Price); 3] = [
    (
        "gemini-embedding-001",
        Price {
            interactive: 0.15,
            batch: 0.075,
        },
    ),
    (
        "text-embedding-3-small",
        Price {
            interactive: 0.02,
            batch: 0.01,
        },
    ),
    (
        "text-embedding-3-large",
        Price {
            interactive: 0.13,
            batch: 0.065,
        },
    ),
];

impl Pricing {
    pub(super) fn resolve(
        v: &Validator,
        p: &BTreeMap<String, raw::Price>,
    ) -> Result<Pricing, ConfigError> {
        let mut models: BTreeMap<String, Price> = DEFAULT_PRICES
            .iter()
            .map(|(m, p)| (m.to_string(), *p))
            .collect();
        for (model, given) in p {
            let default = models.get(model).copied();
            let price = |mode: &str, value: Option<f64>, default: Option<f64>| {
                let key = format!("pricing.{model}.{mode}");
                match (value, default) {
                    (Some(x), _) => v.non_negative(&key, x),
                    (None, Some(d)) => Ok(d),
                    (None, None) => Err(v.invalid(
                        &key,
                        "a price in US dollars per million input tokens (the model has no \
                         default price)",
                        "nothing",
                    )),
                }
            };
            let interactive = price(
                "interactive",
                given.interactive,
                default.map(|d| d.interactive),
            )?;
            // A batch price not given is half the interactive one, as both providers charge.
            let batch = price(
                "batch",
                given.batch,
                Some(default.map_or(interactive / 2.0, |d| d.batch)),
            )?;
            models.insert(model.clone(), Price { interactive, batch });
        }
        Ok(Pricing { models })
    }

    /// The price of `model`, if known.
    pub fn of(&self, model: &str) -> Option<Price> {
        let bare = model.strip_prefix("models/").unwrap_or(model);
        self.models.get(bare).copied()
    }
}
