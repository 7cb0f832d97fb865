//! `puzzlegen plan`: what a run with this config would embed, send and cost, found without
//! sending a request or writing a file ([`forecast`]).
//!
//! It reads the inputs and plans as a run does, takes the texts of every planned theme the
//! run would embed (the theme and its usable candidates, deduplicated by cache key, in plan
//! order), looks each up in the cache database (read only; a first run's cache CSV is read
//! into a throwaway database in the temporary folder instead), then the rest in the shared
//! Redis tier when the config names a Redis (read only), and counts what is left. Spare
//! themes are not counted: a run embeds them only when a planned theme fails (or, with
//! `require_unique`, for puzzles without a single solution).

use std::collections::HashSet;

use serde::Serialize;

use super::RunError;
use super::setup::make_plan;
use crate::cache::key;
use crate::cache::store::Store;
use crate::config::{Config, EmbeddingMode, ProviderSettings};
use crate::embed::Space;
use crate::input::Inputs;
use crate::limit::{RpmCounts, estimate_tokens};

/// How long one round of batch jobs is assumed to take: the providers say most jobs finish
/// within minutes, every job within 24 hours.
pub const ASSUMED_JOB_SECONDS: f64 = 600.0;

/// The estimated cost of the texts to embed, in US dollars, in each mode (`None`: the model
/// has no price in `pricing`; 0 for the local model).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Costs {
    pub interactive: Option<f64>,
    pub batch: Option<f64>,
}

/// What a run would do (the `--json` keys of `puzzlegen plan`).
#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub provider: String,
    pub model: String,
    pub mode: String,
    pub puzzles: usize,
    /// Distinct themes planned into the puzzles.
    pub themes: usize,
    /// Themes kept as spares (embedded only to replace failed ones).
    pub spare_themes: usize,
    /// Distinct texts (by cache key) of the planned themes.
    pub texts_total: usize,
    /// In the cache database, or in the shared Redis tier.
    pub texts_cached: usize,
    /// Of those, found in the shared Redis tier (0 without a Redis).
    pub texts_in_shared_tier: usize,
    pub texts_to_embed: usize,
    /// Interactive requests for the texts to embed, each of up to `texts_per_request`.
    pub requests: usize,
    pub texts_per_request: usize,
    /// Batch jobs for the texts to embed, each of up to `batch.max_texts_per_job`.
    pub batch_jobs: usize,
    /// About four characters a token ([`estimate_tokens`]).
    pub tokens_estimate: u64,
    pub cost_usd: Costs,
    /// Wall time of the embedding under the configured limits, in the configured mode (`None`
    /// for the local model, whose speed is the machine's).
    pub seconds_estimate: Option<f64>,
}

/// Plans the run `config` describes and counts what it would send. Sends nothing and writes
/// nothing outside the temporary folder.
pub async fn forecast(config: &Config) -> Result<Forecast, RunError> {
    let inputs = Inputs::load(&config.themes_file, &config.candidates_file)?;
    let plan = make_plan(config, &inputs)?;
    let themes = plan.distinct_themes();
    let texts = texts_of_themes(&inputs, &themes, config.puzzle.words_per_theme);
    let mut cached = cached(config, &texts)?;
    let in_shared = shared_hits(config, &texts, &mut cached).await?;
    let to_embed: Vec<&String> = texts
        .iter()
        .zip(&cached)
        .filter(|(_, c)| !**c)
        .map(|(t, _)| t)
        .collect();
    let tokens: u64 = to_embed.iter().map(|t| estimate_tokens(t) as u64).sum();
    let per_request = texts_per_request(config);
    let requests = to_embed.len().div_ceil(per_request);
    let batch_jobs = to_embed.len().div_ceil(config.batch.max_texts_per_job);
    let (provider, model, price) = match &config.provider {
        ProviderSettings::Local { model_dir } => (
            "local",
            model_dir.display().to_string(),
            Some(crate::config::Price {
                interactive: 0.0,
                batch: 0.0,
            }),
        ),
        ProviderSettings::Gemini(g) => {
            ("gemini", g.model_id.clone(), config.pricing.of(&g.model_id))
        }
        ProviderSettings::Openai(o) => ("openai", o.model.clone(), config.pricing.of(&o.model)),
    };
    let cost = |per_million: f64| tokens as f64 / 1e6 * per_million;
    let seconds_estimate = match (&config.provider, config.mode) {
        (ProviderSettings::Local { .. }, _) => None,
        (_, EmbeddingMode::Interactive) => Some(interactive_seconds(
            config,
            requests,
            to_embed.len(),
            tokens,
        )),
        (_, EmbeddingMode::Batch) => {
            Some(batch_jobs.div_ceil(config.batch.max_active_jobs) as f64 * ASSUMED_JOB_SECONDS)
        }
    };
    Ok(Forecast {
        provider: provider.into(),
        model,
        mode: config.mode.to_string(),
        puzzles: plan.puzzles.len(),
        themes: themes.len(),
        spare_themes: plan.spares.len(),
        texts_total: texts.len(),
        texts_cached: texts.len() - to_embed.len(),
        texts_in_shared_tier: in_shared,
        texts_to_embed: to_embed.len(),
        requests,
        texts_per_request: per_request,
        batch_jobs,
        tokens_estimate: tokens,
        cost_usd: Costs {
            interactive: price.map(|p| cost(p.interactive)),
            batch: price.map(|p| cost(p.batch)),
        },
        seconds_estimate,
    })
}

/// The texts a run embeds for `themes`: each theme that has enough usable candidates, with
/// them, distinct by cache key, in order (as the prefetch and the theme worker take them).
pub(super) fn texts_of_themes(
    inputs: &Inputs,
    themes: &[String],
    words_per_theme: usize,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut texts = Vec::new();
    for theme in themes {
        for text in inputs
            .texts_to_embed(theme, words_per_theme)
            .unwrap_or_default()
        {
            if seen.insert(key(&text)) {
                texts.push(text);
            }
        }
    }
    texts
}

/// The most texts the service puts in one request with this config (as
/// [`crate::service::EmbeddingService`] computes it).
fn texts_per_request(config: &Config) -> usize {
    let provider_max = match &config.provider {
        ProviderSettings::Local { .. } => crate::embed::local::MAX_BATCH,
        ProviderSettings::Gemini(_) => crate::embed::gemini::MAX_BATCH,
        ProviderSettings::Openai(_) => crate::embed::openai::MAX_BATCH,
    };
    config
        .requests
        .limits
        .max_batch(provider_max.min(config.requests.batch_size))
}

/// Seconds the limiter needs to let `requests` requests of `texts` texts and `tokens` tokens
/// through: the tightest of the per-minute budget, the interval between requests and the
/// tokens budget (the API's own latency, overlapped by concurrent requests, is not counted).
fn interactive_seconds(config: &Config, requests: usize, texts: usize, tokens: u64) -> f64 {
    let l = &config.requests.limits;
    let per_minute = match l.rpm_counts {
        RpmCounts::Requests => requests as f64,
        RpmCounts::Items => texts as f64,
    } / l.requests_per_minute
        * 60.0;
    let interval = l.min_request_interval.as_secs_f64() * requests.saturating_sub(1) as f64;
    let by_tokens = l
        .tokens_per_minute
        .map_or(0.0, |tpm| tokens as f64 / tpm * 60.0);
    per_minute.max(interval).max(by_tokens)
}

/// Marks in `cached` the texts the shared Redis tier holds (when the config names a Redis and
/// the space is known); how many it found.
async fn shared_hits(
    config: &Config,
    texts: &[String],
    cached: &mut [bool],
) -> Result<usize, RunError> {
    let Some(redis) = crate::distributed::Redis::connect(&config.distributed).await? else {
        return Ok(0);
    };
    let Some(space) = config.space().map_err(RunError::Provider)? else {
        return Ok(0);
    };
    let tier = crate::distributed::SharedCache::new(redis, &space);
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| !cached[i]).collect();
    let keys: Vec<String> = missing.iter().map(|&i| key(&texts[i])).collect();
    let found = tier.peek(&keys).await.map_err(|e| {
        RunError::Provider(crate::embed::EmbedError::Setup(format!(
            "Redis at {}: {e}",
            tier.shown()
        )))
    })?;
    let mut n = 0;
    for (&i, hit) in missing.iter().zip(found) {
        if hit {
            cached[i] = true;
            n += 1;
        }
    }
    Ok(n)
}

/// Which of `texts` the cache holds a usable vector for, in the space the run would use.
fn cached(config: &Config, texts: &[String]) -> Result<Vec<bool>, RunError> {
    let db = &config.output.cache_db;
    let csv = &config.output.embedding_cache_file;
    let throwaway;
    let store = if db.is_file() {
        Store::open_existing(db)?
    } else if csv.is_file() {
        // A first run imports the cache CSV: read it into a database of its own.
        throwaway = tempfile::tempdir().map_err(|source| {
            RunError::Cache(crate::cache::store::StoreError::Io {
                path: std::env::temp_dir(),
                source,
            })
        })?;
        let mut store = Store::open(&throwaway.path().join("plan.sqlite3"))?;
        let Some(space) = space_of(config, &store)? else {
            return Ok(vec![false; texts.len()]);
        };
        crate::cache::csv::import(csv, &mut store, &space)?;
        store
    } else {
        return Ok(vec![false; texts.len()]);
    };
    let Some(space) = space_of(config, &store)? else {
        return Ok(vec![false; texts.len()]);
    };
    let keys: Vec<String> = texts.iter().map(|t| key(t)).collect();
    Ok(store
        .lookup_many(&space, &keys)?
        .into_iter()
        .map(|found| matches!(found, Some(Ok(v)) if v.iter().all(|x| x.is_finite())))
        .collect())
}

/// The embedding space the run would use: the config's, or for the OpenAI-compatible
/// provider (whose dimension only its server knows) the one space of that model in `store`.
fn space_of(config: &Config, store: &Store) -> Result<Option<Space>, RunError> {
    if let Some(space) = config.space().map_err(RunError::Provider)? {
        return Ok(Some(space));
    }
    let ProviderSettings::Openai(o) = &config.provider else {
        return Ok(None);
    };
    let mut of_model = store
        .spaces()?
        .into_iter()
        .filter(|s| s.space.model_id == o.model);
    Ok(match (of_model.next(), of_model.next()) {
        (Some(one), None) => Some(one.space),
        _ => None,
    })
}
