//! One run, start to finish: inputs -> plan -> engine -> assemble -> report.
//!
//! This is the only place that knows the order of the steps. Failed themes are replaced by
//! spare themes (themes the plan did not place) before a puzzle is given up; each spare is used
//! at most once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::assemble::{Puzzle, assemble};
use crate::cache::backup_csv::BackupCsvWriter;
use crate::cache::csv::CsvError;
use crate::cache::store::Row;
use crate::cache::store::{Store, StoreError};
use crate::cache::{Cache, CloseError};
use crate::config::{Config, ProviderSettings};
use crate::embed::gemini::{GeminiOptions, GeminiProvider};
use crate::embed::local::LocalProvider;
use crate::embed::openai::{OpenAiOptions, OpenAiProvider};
use crate::embed::service::{EmbeddingService, ServiceOptions, ServiceStats};
use crate::embed::{EmbedError, Provider};
use crate::engine::{Engine, ThemeOutcome};
use crate::input::{InputError, Inputs};
use crate::journal::{self, Journal, JournalError};
use crate::limit::LimitSettings;
use crate::plan::{Plan, PlanError};
use crate::progress::{Progress, ProgressMode};
use crate::report::shapes::{FailedPuzzle, FailedTheme, Replacement, puzzle_key};
use crate::report::{self, CacheRecord, OutputError, OutputPaths, RunRecord};
use crate::theme::{ThemeResult, ThemeWorker, texts_of, usable_candidates};

/// How long requests and themes in flight may take to finish once the run is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long assembly goes on once the run is told to stop (then the puzzles left are skipped).
pub const ASSEMBLY_GRACE: Duration = Duration::from_millis(300);

/// How long a run stopped by a signal may spend writing its partial outputs; past that they are
/// given up (the journal and the cache hold the finished work for the next run).
pub const PARTIAL_WRITE_BUDGET: Duration = Duration::from_millis(500);

/// Failed puzzles logged one by one; the rest are counted (all are in the metadata file).
const MAX_LOGGED_FAILURES: usize = 50;

/// Why a run could not produce its outputs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: {source}")]
    Plan { path: String, source: PlanError },
    /// A signal stopped the run before any theme was processed: nothing was written.
    #[error("stopped by a signal while planning, before any work: nothing written")]
    Interrupted,
    #[error(
        "{config}: puzzle_generation.words_per_theme is {needed} but the largest candidate list \
         in {candidates} has {largest} usable word(s): no theme could fill a group"
    )]
    WordsPerThemeTooLarge {
        config: String,
        candidates: String,
        needed: usize,
        largest: usize,
    },
    #[error("{0}")]
    Provider(EmbedError),
    #[error(transparent)]
    Cache(#[from] StoreError),
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    CacheClose(#[from] CloseError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A signal stopped the run while it wrote its outputs: none was replaced.
    #[error(
        "stopped by a signal before the outputs were written (earlier outputs left as they \
         were); the journal {journal} holds the {themes} finished theme(s), so running again \
         writes the outputs without a request for them"
    )]
    StoppedWhileWriting { journal: String, themes: usize },
    /// An output would replace the cache database, the journal or an input (nothing written).
    #[error(transparent)]
    Target(#[from] report::TargetError),
    /// The outputs cannot fit on their disk (checked before any work).
    #[error(transparent)]
    Space(#[from] report::SpaceError),
}

impl RunError {
    /// True for mistakes in the user's configuration or inputs (exit code 2).
    pub fn is_user_error(&self) -> bool {
        match self {
            RunError::Output(_)
            | RunError::CacheClose(_)
            | RunError::Journal(_)
            | RunError::Interrupted
            | RunError::StoppedWhileWriting { .. } => false,
            RunError::Cache(e) => e.is_user_error(),
            RunError::Csv(e) => e.is_user_error(),
            RunError::Provider(e) => {
                matches!(e, EmbedError::Setup(_) | EmbedError::Rejected { .. })
            }
            _ => true,
        }
    }
}

/// Why a run ended before doing all its work (its outputs, in `<paths.outputs>/partial/`, hold
/// what was finished).
#[derive(Debug, Clone)]
pub enum Stop {
    /// A signal asked the run to stop.
    Interrupted,
    /// The embedding API refused to go on (bad key, daily quota).
    Fatal(EmbedError),
}

/// What a finished run reports back (the closing summary).
#[derive(Debug, Clone)]
pub struct Summary {
    pub themes_ok: usize,
    pub themes_failed: usize,
    /// Themes taken from the journal of an earlier, interrupted run.
    pub themes_resumed: usize,
    pub puzzles_ok: usize,
    pub puzzles_failed: usize,
    pub spares_used: usize,
    pub stats: ServiceStats,
    /// Embeddings this run added to the cache database, and where it is.
    pub cache: Option<(u64, std::path::PathBuf)>,
    pub elapsed: Duration,
    pub files: Vec<std::path::PathBuf>,
    pub stop: Option<Stop>,
    /// Where a run that stopped early wrote its outputs (`<paths.outputs>/partial`); the
    /// complete outputs of an earlier run were left as they were.
    pub partial: Option<std::path::PathBuf>,
}

impl Summary {
    pub fn texts_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.stats.texts_embedded as f64 / s
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "themes:  {} ok, {} failed ({} spare theme(s) used{})",
            self.themes_ok,
            self.themes_failed,
            self.spares_used,
            if self.themes_resumed > 0 {
                format!(", {} resumed from the journal", self.themes_resumed)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "puzzles: {} ok, {} failed",
            self.puzzles_ok, self.puzzles_failed
        )?;
        writeln!(
            f,
            "texts:   {} embedded, {} cache hits ({:.1}% hit rate)",
            self.stats.texts_embedded,
            self.stats.cache_hits,
            self.stats.hit_rate() * 100.0
        )?;
        let retries: Vec<String> = self
            .stats
            .retries
            .iter()
            .map(|(cause, n)| format!("{cause} {n}"))
            .collect();
        writeln!(
            f,
            "api:     {} requests, {} texts sent, retries: {}, {} x 429, {:.2} s waited on the limiter (summed over requests), peak {} in flight",
            self.stats.requests,
            self.stats.texts_sent,
            if retries.is_empty() {
                "none".into()
            } else {
                retries.join(", ")
            },
            self.stats.rate_limited,
            self.stats.limiter_wait_seconds,
            self.stats.peak_concurrency
        )?;
        if let Some((written, path)) = &self.cache {
            writeln!(
                f,
                "cache:   {written} new embedding(s) stored in {}",
                path.display()
            )?;
        }
        write!(
            f,
            "time:    {:.2} s wall, {:.0} texts/s",
            self.elapsed.as_secs_f64(),
            self.texts_per_second()
        )?;
        let why = match &self.stop {
            None => return Ok(()),
            Some(Stop::Interrupted) => "interrupted".to_owned(),
            Some(Stop::Fatal(e)) => e.to_string(),
        };
        write!(f, "\nstopped: {why}")?;
        if let Some(dir) = &self.partial {
            write!(
                f,
                "; partial outputs in {} (any complete outputs of an earlier run are left as \
                 they were; run again to finish the work)",
                dir.display()
            )?;
        }
        Ok(())
    }
}

/// Creates the provider the configuration names.
pub async fn build_provider(config: &Config) -> Result<Arc<dyn Provider>, RunError> {
    let g = &config.gemini;
    let provider: Arc<dyn Provider> = match &config.provider {
        ProviderSettings::Local { model_dir } => {
            Arc::new(LocalProvider::load(model_dir).map_err(RunError::Provider)?)
        }
        ProviderSettings::Gemini => Arc::new(
            GeminiProvider::new(&GeminiOptions {
                base_url: g.base_url.clone(),
                model_id: g.model_id.clone(),
                dimension: g.embedding_dimension,
                task_type: g.task_type.clone(),
                api_key_env: g.api_key_env.clone(),
                request_timeout: g.request_timeout,
            })
            .map_err(RunError::Provider)?,
        ),
        ProviderSettings::Openai {
            base_url,
            model,
            api_key_env,
        } => Arc::new(
            OpenAiProvider::connect(&OpenAiOptions {
                base_url: base_url.clone(),
                model: model.clone(),
                api_key_env: api_key_env.clone(),
                request_timeout: g.request_timeout,
            })
            .await
            .map_err(RunError::Provider)?,
        ),
    };
    Ok(provider)
}

/// The embedding service's limits and retries, from the config. The local model has no rate
/// limit; remote providers get the `gemini.*` and `multiprocessing.*` limits.
pub fn service_options(config: &Config) -> ServiceOptions {
    let g = &config.gemini;
    match config.provider {
        ProviderSettings::Local { .. } => ServiceOptions {
            stall_timeout: g.stall_timeout,
            ..ServiceOptions::unlimited()
        },
        _ => ServiceOptions {
            limits: LimitSettings {
                requests_per_minute: g.requests_per_minute,
                rpm_counts: g.rpm_counts,
                min_request_interval: g.min_request_interval,
                tokens_per_minute: g.tokens_per_minute,
                max_concurrent_requests: config.engine.max_concurrent_requests,
                window: crate::limit::MINUTE,
            },
            max_retries: g.max_retries,
            retry_base_delay: g.retry_base_delay,
            linger: Duration::from_millis(20),
            batch_size: g.batch_size,
            stall_timeout: g.stall_timeout,
        },
    }
}

/// Runs the whole job with the provider the configuration names. `stop` ends it early, with
/// the work finished so far written out.
pub async fn run(
    config: &Config,
    progress: ProgressMode,
    stop: CancellationToken,
) -> Result<Summary, RunError> {
    report::check_targets(config)?;
    report::remove_stale_temps(config);
    let inputs = Inputs::load(&config.themes_file, &config.candidates_file)?;
    let provider = build_provider(config).await?;
    report::check_space(config, provider.space().dimension)?;
    // Planning millions of slots takes a while: it stops as soon as a signal says so (the
    // signal watcher runs on the runtime's worker threads meanwhile).
    let plan = make_plan_until(config, &inputs, &stop)?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }
    let cache = open_cache(config, provider.space())?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }
    run_with(config, inputs, plan, provider, cache, progress, stop).await
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
        tracing::warn!(
            "{} theme slots to fill but only {} themes given: cycling through the list, so \
             themes repeat across puzzles",
            plan.themes_needed,
            plan.themes_available
        );
    }
    Ok(plan)
}

/// Runs the job on an already built provider and cache (tests pass a fake provider here).
pub async fn run_with(
    config: &Config,
    inputs: Inputs,
    plan: Plan,
    provider: Arc<dyn Provider>,
    cache: Cache,
    progress: ProgressMode,
    stop: CancellationToken,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let journal = Arc::new(Journal::open(
        &config.output.outputs_dir.join(journal::FILE_NAME),
        provider.space(),
    )?);
    if !journal.is_empty() {
        tracing::info!(
            "resuming: the run journal holds {} finished theme(s)",
            journal.len()
        );
    }
    let service = Arc::new(EmbeddingService::with_cache(
        provider,
        service_options(config),
        cache,
    ));
    let worker = ThemeWorker::new(
        Arc::clone(&service),
        config.puzzle.words_per_theme,
        Some(Arc::clone(&journal)),
    );
    let resumed = worker.clone();
    // The cache CSV: what the database holds now, then each theme's texts as it finishes.
    let cache_csv = BackupCsvWriter::start(
        service.cache().path().map(std::path::Path::to_owned),
        service.space().clone(),
        config.output.embedding_cache_file.clone(),
    )?;

    // Every distinct planned theme, once; all their texts queued up front so that requests
    // go out full and as fast as the limiter allows.
    let order = plan.distinct_themes();
    for theme in &order {
        if let Some(words) = inputs.candidates_of(theme) {
            let usable = usable_candidates(words);
            if usable.len() >= config.puzzle.words_per_theme {
                service.prefetch(&texts_of(theme, &usable));
            }
        }
    }
    let engine = Engine::new(
        worker,
        Arc::new(inputs),
        config.engine.worker_count,
        config.engine.task_timeout,
        stop.clone(),
        SHUTDOWN_GRACE,
    );
    let bar = Progress::new(progress, "themes", order.len() as u64);
    let outcomes = engine
        .process(&order, &bar, &mut |_, o| {
            if let Ok(t) = o {
                cache_csv.add(cache_rows(t));
            }
        })
        .await;
    bar.finish();
    let mut processed: Vec<(String, ThemeOutcome)> = order.into_iter().zip(outcomes).collect();

    // Replace failed slots with spare themes, processing spares in rounds as needed.
    let mut slots: Vec<Vec<String>> = plan.puzzles.iter().map(|p| p.themes.clone()).collect();
    let mut replacements = Vec::new();
    let mut spares = plan.spares.iter();
    loop {
        let outcome_of: HashMap<&str, &ThemeOutcome> =
            processed.iter().map(|(t, o)| (t.as_str(), o)).collect();
        let failed_slots: Vec<(usize, usize)> = slots
            .iter()
            .enumerate()
            .flat_map(|(p, themes)| {
                let outcome_of = &outcome_of;
                themes
                    .iter()
                    .enumerate()
                    .filter(move |(_, t)| outcome_of[t.as_str()].is_err())
                    .map(move |(s, _)| (p, s))
            })
            .collect();
        if failed_slots.is_empty() || stop.is_cancelled() || service.fatal_error().is_some() {
            break;
        }
        let batch: Vec<String> = spares.by_ref().take(failed_slots.len()).cloned().collect();
        if batch.is_empty() {
            break;
        }
        let bar = Progress::new(progress, "spares", batch.len() as u64);
        let outcomes = engine
            .process(&batch, &bar, &mut |_, o| {
                if let Ok(t) = o {
                    cache_csv.add(cache_rows(t));
                }
            })
            .await;
        bar.finish();
        let mut good = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_ok())
            .map(|(t, _)| t.clone());
        for &(p, s) in &failed_slots {
            let Some(spare) = good.next() else { break };
            let failed = std::mem::replace(&mut slots[p][s], spare.clone());
            let reason = match outcome_of[failed.as_str()] {
                Err(e) => e.to_string(),
                Ok(_) => unreachable!("only failed slots are replaced"),
            };
            tracing::info!(
                "{}: theme {failed:?} failed ({reason}); using spare theme {spare:?}",
                puzzle_key(plan.puzzles[p].id)
            );
            replacements.push(Replacement {
                puzzle_id: plan.puzzles[p].id,
                failed_theme: failed,
                reason,
                spare_theme: spare,
            });
        }
        processed.extend(batch.into_iter().zip(outcomes));
    }

    // Assemble each puzzle from its slots.
    let outcome_of: HashMap<&str, &ThemeOutcome> =
        processed.iter().map(|(t, o)| (t.as_str(), o)).collect();
    let mut puzzles: Vec<Puzzle> = Vec::new();
    let mut failed_puzzles = Vec::new();
    // A signal stops assembly too: what is assembled within ASSEMBLY_GRACE of it is kept.
    let mut assembly_deadline = None;
    for (i, (planned, themes)) in plan.puzzles.iter().zip(&slots).enumerate() {
        if i % 16 == 0 && stop.is_cancelled() {
            let deadline =
                *assembly_deadline.get_or_insert_with(|| Instant::now() + ASSEMBLY_GRACE);
            if Instant::now() >= deadline {
                tracing::warn!(
                    "stopping: {} of {} puzzle(s) not assembled",
                    plan.puzzles.len() - i,
                    plan.puzzles.len()
                );
                break;
            }
        }
        let fail = |error: String| FailedPuzzle {
            puzzle_id: planned.id,
            themes: themes.clone(),
            error,
        };
        let results: Result<Vec<&ThemeResult>, String> = themes
            .iter()
            .map(|t| match outcome_of[t.as_str()] {
                Ok(r) => Ok(r),
                Err(e) => Err(format!("theme {t:?} failed: {e} (no spare theme left)")),
            })
            .collect();
        match results {
            Err(e) => failed_puzzles.push(fail(e)),
            Ok(results) => match assemble(planned.id, &results, config.puzzle.words_per_theme) {
                Ok(p) => puzzles.push(p),
                Err(e) => failed_puzzles.push(fail(e.to_string())),
            },
        }
    }
    for f in failed_puzzles.iter().take(MAX_LOGGED_FAILURES) {
        tracing::warn!("{} failed: {}", puzzle_key(f.puzzle_id), f.error);
    }
    if failed_puzzles.len() > MAX_LOGGED_FAILURES {
        tracing::warn!(
            "... and {} more failed puzzle(s) (all listed in puzzle_metadata.json)",
            failed_puzzles.len() - MAX_LOGGED_FAILURES
        );
    }
    let slots_filled = slots
        .iter()
        .flatten()
        .filter(|t| outcome_of[t.as_str()].is_ok())
        .count();

    let themes_ok: Vec<&ThemeResult> = processed
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .collect();
    let themes_failed: Vec<FailedTheme> = processed
        .iter()
        .filter_map(|(t, o)| {
            o.as_ref().err().map(|e| FailedTheme {
                theme: t.clone(),
                error: e.to_string(),
            })
        })
        .collect();
    // Requests still in flight (a late theme's) may finish and be kept; nothing outlives this.
    service.shutdown(SHUTDOWN_GRACE).await;
    let stats = service.stats();
    service
        .cache()
        .record_run(stats.lookups, stats.cache_hits, stats.texts_embedded);
    // Rows the cache could neither store nor save: the outputs are still written, then the
    // run fails (exit 3) and the journal is kept.
    let (closed, close_error) = match service.cache().close() {
        Ok(c) => (c, None),
        Err(e) => (
            crate::cache::Closed {
                written: e.written(),
                ..Default::default()
            },
            Some(e),
        ),
    };
    let database = service.cache().path().map(std::path::Path::to_owned);
    let rest = service.cache().memory_rows();
    let (csv_rows, cache_csv) = cache_csv.finish(rest)?;
    let cache_record = CacheRecord {
        entries: match &database {
            Some(db) => cache_entries(db, service.space()).unwrap_or(csv_rows),
            None => csv_rows,
        },
        written: closed.written,
        database: database.clone().unwrap_or_default(),
        csv_written_at: unix_now(),
    };
    let cache = database.map(|p| (closed.written, p));
    let elapsed = started.elapsed();
    let signal = stop.clone();
    let stop = match service.fatal_error() {
        Some(e) => Some(Stop::Fatal(e)),
        None => stop.is_cancelled().then_some(Stop::Interrupted),
    };
    let record = RunRecord {
        config,
        plan: &plan,
        space: service.space(),
        puzzles: &puzzles,
        failed_puzzles: &failed_puzzles,
        themes_ok: &themes_ok,
        themes_failed: &themes_failed,
        replacements: &replacements,
        stats: &stats,
        cache: &cache_record,
        slots_filled,
        elapsed,
    };
    // A run that stopped early never replaces a complete set: its outputs go to partial/.
    let to = match stop {
        None => OutputPaths::of(config),
        Some(_) => OutputPaths::partial(config),
    };
    let cache_csv = match stop {
        None => cache_csv,
        Some(_) => cache_csv.retarget(&to.cache_csv)?,
    };
    // Writing honours a signal too: a complete set is given up at once (the journal keeps the
    // work), a partial one once it has taken PARTIAL_WRITE_BUDGET.
    let write_deadline = Instant::now() + PARTIAL_WRITE_BUDGET;
    let abort = || match stop {
        Some(Stop::Interrupted) => Instant::now() >= write_deadline,
        _ => signal.is_cancelled(),
    };
    let csv_size = report::min_csv_bytes_per_puzzle(config, service.space().dimension)
        .saturating_mul(puzzles.len() as u64);
    if csv_size > 100 << 20 {
        tracing::info!(
            "writing the outputs: the puzzle CSV alone is at least {} (a signal gives this up, \
             leaving earlier outputs as they were)",
            report::Bytes(csv_size)
        );
    }
    let staged = match report::stage_all(&record, &to, &abort) {
        Ok(staged) => staged,
        Err(e) if e.is_abandoned() => {
            drop(cache_csv);
            // Only removed if empty (a partial set given up).
            let _ = std::fs::remove_dir(report::partial_dir(config));
            return Err(RunError::StoppedWhileWriting {
                journal: config
                    .output
                    .outputs_dir
                    .join(journal::FILE_NAME)
                    .display()
                    .to_string(),
                themes: themes_ok.len(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut set = vec![cache_csv];
    set.extend(staged);
    let files = report::commit_all(set)?;
    let partial = stop.as_ref().map(|_| report::partial_dir(config));
    if let Some(e) = close_error {
        return Err(e.into());
    }
    if stop.is_none() {
        // Every theme was tried and the outputs are written: nothing left to resume.
        journal.remove();
        report::remove_partial(config);
    }
    Ok(Summary {
        themes_ok: themes_ok.len(),
        themes_failed: themes_failed.len(),
        themes_resumed: resumed.resumed(),
        puzzles_ok: puzzles.len(),
        puzzles_failed: failed_puzzles.len(),
        spares_used: replacements.len(),
        stats,
        cache,
        // The summary's wall time includes writing the outputs.
        elapsed: started.elapsed(),
        files,
        stop,
        partial,
    })
}

/// A finished theme's texts as cache CSV rows: the theme, then its candidates with their
/// similarity (the original's `word_type` values `theme` and `candidate`).
fn cache_rows(t: &ThemeResult) -> Vec<Row> {
    let row = |word: &str, word_type: &str, similarity, vector: &crate::embed::Vector| Row {
        key: crate::cache::key(word),
        word: word.to_owned(),
        theme: Some(t.theme.clone()),
        word_type: Some(word_type.to_owned()),
        similarity,
        timestamp: None,
        vector: vector.clone(),
    };
    std::iter::once(row(&t.theme, "theme", None, &t.vector))
        .chain(
            t.ranked
                .iter()
                .map(|w| row(&w.word, "candidate", Some(w.similarity), &w.vector)),
        )
        .collect()
}

/// Embeddings of `space` in the database at `db` (for `cache_stats.cache_size`).
fn cache_entries(db: &std::path::Path, space: &crate::embed::Space) -> Option<u64> {
    let store = Store::open_existing(db).ok()?;
    let spaces = store.spaces().ok()?;
    Some(
        spaces
            .iter()
            .find(|s| &s.space == space)
            .map_or(0, |s| s.entries),
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
