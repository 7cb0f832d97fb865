//! Everything a run needs before its first theme: what embeds ([`Backend`]: the Redis shared
//! with other processes, if any, and the provider), the service's limits, the cache (importing
//! the original's CSV on a first run) and the plan. A run, a worker and the Python package's
//! `process_themes` open these the same way, through these functions.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RunError;
use crate::cache::Cache;
use crate::cache::store::Store;
use crate::config::{Config, ProviderSettings};
use crate::embed::Provider;
use crate::embed::gemini::GeminiProvider;
use crate::embed::local::LocalProvider;
use crate::embed::openai::OpenAiProvider;
use crate::input::Inputs;
use crate::plan::{Plan, PlanError};
use crate::service::{EmbeddingService, ServiceOptions};
use crate::words::usable_candidates;

/// What embeds for a config: the provider, and the Redis it shares limits and vectors through.
pub struct Backend {
    pub provider: Arc<dyn Provider>,
    /// `None` without `distributed.redis_url` (or `--redis`).
    pub shared: Option<crate::distributed::SharedSetup>,
}

impl Backend {
    /// Opens them in the order that pays nothing for a mistake: Redis first (a wrong URL or
    /// password ends here, before the OpenAI provider's dimension probe, a paid request, and
    /// before any cache database is created), then the provider.
    pub async fn open(config: &Config) -> Result<Backend, RunError> {
        let shared = shared_setup(config).await?;
        let provider = build_provider(config).await?;
        Ok(Backend { provider, shared })
    }

    /// A provider on its own, sharing nothing (tests and benches pass a fake one).
    pub fn alone(provider: Arc<dyn Provider>) -> Backend {
        Backend {
            provider,
            shared: None,
        }
    }

    /// The embedding service over `cache`, with the config's limits and retries (and the
    /// shared limiter and cache tier, with a Redis).
    pub fn service(self, config: &Config, cache: Cache) -> EmbeddingService {
        EmbeddingService::with_shared(self.provider, service_options(config), cache, self.shared)
    }
}

/// Creates the provider the configuration names.
pub async fn build_provider(config: &Config) -> Result<Arc<dyn Provider>, RunError> {
    let provider: Arc<dyn Provider> = match &config.provider {
        ProviderSettings::Local { model_dir } => {
            Arc::new(LocalProvider::load(model_dir).map_err(RunError::Provider)?)
        }
        ProviderSettings::Gemini(options) => {
            Arc::new(GeminiProvider::new(options).map_err(RunError::Provider)?)
        }
        ProviderSettings::Openai(options) => Arc::new(
            OpenAiProvider::connect(options)
                .await
                .map_err(RunError::Provider)?,
        ),
    };
    Ok(provider)
}

/// The embedding service's limits and retries, from the config. The local model has no rate
/// limit; remote providers get [`Config::requests`].
pub fn service_options(config: &Config) -> ServiceOptions {
    let r = &config.requests;
    match config.provider {
        ProviderSettings::Local { .. } => ServiceOptions {
            stall_timeout: r.stall_timeout,
            ..ServiceOptions::unlimited()
        },
        _ => ServiceOptions {
            limits: r.limits.clone(),
            max_retries: r.max_retries,
            retry_base_delay: r.retry_base_delay,
            linger: Duration::from_millis(20),
            batch_size: r.batch_size,
            stall_timeout: r.stall_timeout,
        },
    }
}

/// Opens the cache database the config names. On the first run (no database yet) an existing
/// CSV at `output.embedding_cache_file` (the Python pipeline's cache) is imported first.
pub fn open_cache(config: &Config, space: &crate::embed::Space) -> Result<Cache, RunError> {
    let db = &config.output.cache_db;
    let csv = &config.output.embedding_cache_file;
    if !db.exists() && csv.is_file() {
        // Checked before the database is created, so a refused file is tried again next run.
        crate::cache::csv::inspect(csv, space.dimension)?;
        let mut store = Store::open(db)?;
        let r = crate::cache::csv::import(csv, &mut store, space)?;
        tracing::info!(
            "first run with a cache database: imported {} embedding(s) from {} ({}) into {}",
            r.added,
            csv.display(),
            r.layout,
            db.display()
        );
        if !r.bad.is_empty() {
            // The run rewrites this file from the database: keep the rows it could not read.
            let mut kept = csv.clone().into_os_string();
            kept.push(".before-puzzlegen");
            let kept = std::path::PathBuf::from(kept);
            let copied = std::fs::copy(csv, &kept).map(|_| ());
            let lines: Vec<String> = r.bad.iter().take(5).map(|b| b.line.to_string()).collect();
            tracing::warn!(
                "{}: {} row(s) skipped (lines {}{}); `puzzlegen cache import` lists them all; \
                 the file as it was is kept {}",
                csv.display(),
                r.bad.len(),
                lines.join(", "),
                if r.bad.len() > 5 { ", ..." } else { "" },
                match copied {
                    Ok(()) => format!("as {}", kept.display()),
                    Err(e) => format!("nowhere ({}: {e})", kept.display()),
                }
            );
        }
    }
    Ok(Cache::open(db, space.clone())?)
}

/// Checks the inputs against the config and plans the slots.
pub fn make_plan(config: &Config, inputs: &Inputs) -> Result<Plan, RunError> {
    make_plan_until(config, inputs, &CancellationToken::new())
}

/// As [`make_plan`], ending with [`RunError::Interrupted`] as soon as `stop` is cancelled.
pub fn make_plan_until(
    config: &Config,
    inputs: &Inputs,
    stop: &CancellationToken,
) -> Result<Plan, RunError> {
    let needed = config.puzzle.words_per_theme;
    let largest = inputs
        .themes
        .iter()
        .filter_map(|t| inputs.candidates_of(t))
        .map(|words| usable_candidates(words).len())
        .max()
        .unwrap_or(0);
    if largest < needed {
        return Err(RunError::WordsPerThemeTooLarge {
            config: config.source.display().to_string(),
            candidates: config.candidates_file.display().to_string(),
            needed,
            largest,
        });
    }
    for theme in &inputs.themes {
        if inputs.candidates_of(theme).is_none() {
            tracing::warn!(
                "{}: no candidates for theme {theme:?}; it will fail and a spare theme will be \
                 used if there is one",
                config.candidates_file.display()
            );
        }
    }
    let (puzzles, per_puzzle) = (
        config.puzzle.total_puzzle_count,
        config.puzzle.themes_per_puzzle,
    );
    // The config refuses more than MAX_SLOTS; checked again here for plans made in code.
    match puzzles.checked_mul(per_puzzle) {
        Some(slots) if slots <= crate::config::MAX_SLOTS => {
            tracing::info!("planning {slots} theme slots ({puzzles} puzzle(s) x {per_puzzle})")
        }
        _ => {
            return Err(RunError::Plan {
                path: config.source.display().to_string(),
                source: PlanError::TooManySlots {
                    puzzles,
                    per_puzzle,
                    largest: crate::config::MAX_SLOTS / per_puzzle.max(1),
                },
            });
        }
    }
    let plan = Plan::new_until(&inputs.themes, puzzles, per_puzzle, || stop.is_cancelled())
        .map_err(|source| match source {
            PlanError::Cancelled => RunError::Interrupted,
            source => RunError::Plan {
                path: config.themes_file.display().to_string(),
                source,
            },
        })?;
    if plan.themes_reused() {
        let distinct = plan.distinct_puzzles();
        let repeats = if distinct < plan.puzzles.len() {
            format!(
                ": only {distinct} of the {} puzzles differ, the rest are copies of them (give \
                 more themes, or lower puzzle_generation.total_puzzle_count to {distinct})",
                plan.puzzles.len()
            )
        } else {
            String::new()
        };
        tracing::warn!(
            "{} theme slots to fill but only {} themes given: cycling through the list, so \
             themes repeat across puzzles{repeats}",
            plan.themes_needed,
            plan.themes_available
        );
    }
    Ok(plan)
}

// --- distributed (Redis) ---------------------------------------------------------------------

/// How long a concurrency lease outlives a process that stopped renewing it (died).
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Connects to the Redis the config names, if any, and names the global limiter by provider,
/// API-key variable and model (the local model has no limiter: only the cache is shared).
async fn shared_setup(
    config: &Config,
) -> Result<Option<crate::distributed::SharedSetup>, RunError> {
    let Some(mut redis) = crate::distributed::Redis::connect(&config.distributed).await? else {
        return Ok(None);
    };
    redis.wait_out_failovers_for(config.requests.stall_timeout);
    tracing::info!(
        "sharing limits and embeddings through Redis at {}",
        redis.shown()
    );
    let limiter = match &config.provider {
        ProviderSettings::Local { .. } => None,
        ProviderSettings::Gemini(g) => Some(crate::distributed::LimiterName {
            provider: "gemini".into(),
            key_variable: g.api_key_env.clone(),
            model: g.model_id.clone(),
        }),
        ProviderSettings::Openai(o) => Some(crate::distributed::LimiterName {
            provider: "openai".into(),
            key_variable: o.api_key_env.clone().unwrap_or_default(),
            model: o.model.clone(),
        }),
    };
    Ok(Some(crate::distributed::SharedSetup {
        redis,
        limiter,
        // Renewed while its request runs: a dead process's leases free within this.
        lease_ttl: LEASE_TTL,
    }))
}
