//! One run, start to finish: inputs -> plan -> engine -> assemble -> report.
//!
//! This is the only place that knows the order of the steps. Failed themes are replaced by
//! spare themes (themes the plan did not place) before a puzzle is given up; each spare is used
//! at most once.

mod assembly;
mod batch;
pub use batch::{JobInfo, cancel_jobs, list_jobs};
pub mod forecast;
pub mod health;
mod prefetch;
pub mod queue;
mod setup;
pub mod spares;
pub mod status;
mod steps;
mod summary;

pub use setup::{Backend, build_provider, make_plan, make_plan_until, open_cache, service_options};
pub use summary::{Stop, Summary};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::assemble::Puzzle;
use crate::cache::backup_csv::BackupCsvWriter;
use crate::cache::csv::CsvError;
use crate::cache::store::{Row, Store, StoreError};
use crate::cache::{Cache, CloseError};
use crate::config::Config;
use crate::embed::{EmbedError, Space, Vector};
use crate::engine::{Engine, ThemeOutcome};
use crate::fsx::WriteError;
use crate::input::{InputError, Inputs};
use crate::journal::{self, Journal, JournalError};
use crate::plan::{Plan, PlanError};
use crate::progress::ProgressMode;
use crate::report::shapes::{FailedPuzzle, FailedTheme, Replacement};
use crate::report::{self, CacheRecord, OutputPaths, RunRecord};
use crate::service::{EmbeddingService, ServiceStats};
use crate::theme::ThemeWorker;
use crate::words::{ThemeResult, ThemeScores};
use prefetch::Prefetch;
use steps::Assembled;

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
    Output(#[from] WriteError),
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
    /// `distributed.redis_url` / `--redis`: Redis cannot be used (nothing was run).
    #[error(transparent)]
    Distributed(#[from] crate::distributed::DistributedError),
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
            RunError::Distributed(_) => true,
            RunError::Cache(e) => e.is_user_error(),
            RunError::Csv(e) => e.is_user_error(),
            // A key the API refuses (401, 403) is exit 3 as when it is refused mid-run; any
            // other refusal before work (a model the server does not know, a bad URL path)
            // is the configuration's.
            RunError::Provider(e) => match e {
                EmbedError::Setup(_) => true,
                EmbedError::Rejected { status, .. } => !matches!(status, 401 | 403),
                _ => false,
            },
            _ => true,
        }
    }
}

/// What a run produced, before any output file is written ([`write_outputs`] writes them).
pub struct RunResult {
    pub plan: Plan,
    /// The puzzles assembled, in plan order.
    pub puzzles: Vec<Puzzle>,
    pub failed_puzzles: Vec<FailedPuzzle>,
    /// Every theme processed (planned themes, then spares), with its scored words or why it
    /// failed. The vectors are in the cache, not here: a run's memory does not grow with its
    /// number of themes.
    pub themes: Vec<(String, ThemeOutcome)>,
    pub replacements: Vec<Replacement>,
    /// Themes taken from the journal of an earlier, interrupted run.
    pub themes_resumed: usize,
    /// Theme slots of the plan filled with a usable theme.
    pub slots_filled: usize,
    pub space: Space,
    pub stats: ServiceStats,
    pub cache: CacheRecord,
    /// Why the run ended before doing all its work, if it did.
    pub stop: Option<Stop>,
    /// Time from the start of the run to the end of its work.
    pub elapsed: Duration,
    /// What the Batch API jobs did (batch mode only).
    pub batch: Option<report::shapes::BatchStats>,
    /// Embeddings the cache could neither store nor save: the outputs are still written, then
    /// the run fails.
    cache_error: Option<CloseError>,
    /// The cache CSV, written during the run: put in place with the other outputs.
    cache_csv: crate::fsx::Staged,
    journal: Arc<Journal>,
    started: Instant,
}

impl RunResult {
    /// The themes that were processed successfully, in processing order.
    pub fn themes_ok(&self) -> impl Iterator<Item = &ThemeScores> {
        themes_ok(&self.themes)
    }

    /// The themes that failed, with the reason.
    pub fn themes_failed(&self) -> Vec<FailedTheme> {
        self.themes
            .iter()
            .filter_map(|(t, o)| {
                o.as_ref().err().map(|e| FailedTheme {
                    theme: t.clone(),
                    error: e.to_string(),
                })
            })
            .collect()
    }
}

impl RunResult {
    /// Ends a run whose output files are not wanted (the Python package's `process_themes`,
    /// like the original's processor, writes none): the cache CSV is put in place, and a run
    /// that did all its work removes its journal. A run that stopped early keeps its journal
    /// and leaves the cache CSV as it was.
    pub fn finish_without_outputs(self) -> Result<(), RunError> {
        if self.stop.is_none() {
            crate::fsx::commit_all(vec![self.cache_csv])?;
        }
        if let Some(e) = self.cache_error {
            return Err(e.into());
        }
        if self.stop.is_none() {
            self.journal.remove();
        }
        Ok(())
    }
}

fn themes_ok(themes: &[(String, ThemeOutcome)]) -> impl Iterator<Item = &ThemeScores> {
    themes.iter().filter_map(|(_, o)| o.as_ref().ok())
}

/// Runs the whole job with the provider the configuration names. `stop` ends it early, with
/// the work finished so far in the result. Nothing but the cache, the journal and the cache
/// CSV's temporary file is written: [`write_outputs`] writes the output files.
pub async fn run(
    config: &Config,
    progress: ProgressMode,
    stop: CancellationToken,
) -> Result<RunResult, RunError> {
    report::check_targets(config)?;
    report::remove_stale_temps(config);
    let inputs = Inputs::load(&config.themes_file, &config.candidates_file)?;
    let backend = Backend::open(config).await?;
    report::check_space(config, backend.provider.space().dimension)?;
    // Planning millions of slots takes a while: it stops as soon as a signal says so (the
    // signal watcher runs on the runtime's worker threads meanwhile).
    let plan = make_plan_until(config, &inputs, &stop)?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }
    let cache = open_cache(config, backend.provider.space())?;
    if stop.is_cancelled() {
        return Err(RunError::Interrupted);
    }
    run_with(config, inputs, plan, backend, cache, progress, stop).await
}

/// A run under way: the service, the journal and the cache CSV being written.
struct OpenRun {
    service: Arc<EmbeddingService>,
    journal: Arc<Journal>,
    worker: ThemeWorker,
    cache_csv: BackupCsvWriter,
    prefetch: Prefetch,
    started: Instant,
}

/// Opens the journal, starts the service and the cache CSV, and (`prefetch`) queues the texts
/// of the plan's first themes so that requests go out full and as fast as the limiter allows.
fn open_run(
    config: &Config,
    inputs: &Arc<Inputs>,
    plan: &Plan,
    backend: Backend,
    cache: Cache,
    prefetch: bool,
) -> Result<OpenRun, RunError> {
    let started = Instant::now();
    let journal_path = config.output.outputs_dir.join(journal::FILE_NAME);
    let journal = Arc::new(Journal::open(&journal_path, backend.provider.space())?);
    if !journal.is_empty() {
        let usable = journal.usable(|theme| inputs.candidates_of(theme));
        if usable > 0 {
            tracing::info!("resuming: the run journal holds {usable} finished theme(s)");
        }
        if journal.len() > usable {
            tracing::info!(
                "{}: {} finished theme(s) from another embedding space or other candidates: \
                 not used",
                journal_path.display(),
                journal.len() - usable
            );
        }
    }
    let service = Arc::new(backend.service(config, cache));
    let worker = ThemeWorker::new(
        Arc::clone(&service),
        config.puzzle.words_per_theme,
        Some(Arc::clone(&journal)),
    );
    // The cache CSV: what the database holds now, then each theme's texts as it finishes.
    let cache_csv = BackupCsvWriter::start(
        service.cache().path().map(std::path::Path::to_owned),
        service.space().clone(),
        config.output.embedding_cache_file.clone(),
    )?;
    let prefetch = Prefetch::start(
        Arc::clone(&service),
        Arc::clone(inputs),
        if prefetch {
            plan.distinct_themes()
        } else {
            Vec::new()
        },
        config.puzzle.words_per_theme,
    );
    Ok(OpenRun {
        service,
        journal,
        worker,
        cache_csv,
        prefetch,
        started,
    })
}

/// Themes scored at once by a run whose themes a work queue embedded
/// (`bench/distributed.sh`: at 2, 480 themes took 4.4 s to score after 7.5 s of embedding on 8
/// processes; at 16, 0.4 s).
const QUEUE_SCORING_CONCURRENCY: usize = 16;

/// Runs the job on an opened backend and cache (tests pass a fake provider here): open, make
/// the puzzles ([`steps::Steps`]), close.
pub async fn run_with(
    config: &Config,
    inputs: Inputs,
    plan: Plan,
    backend: Backend,
    cache: Cache,
    progress: ProgressMode,
    stop: CancellationToken,
) -> Result<RunResult, RunError> {
    let inputs = Arc::new(inputs);
    let queue = backend.shared.as_ref().map(|s| s.redis.clone());
    let batch =
        batch::BatchStep::of(config, backend.provider.space()).map_err(RunError::Provider)?;
    // Batch mode fills the cache before each round: nothing to prefetch.
    let prefetch = queue.is_none() && batch.is_none();
    let run = open_run(config, &inputs, &plan, backend, cache, prefetch)?;
    // A signal stops the sending at once: requests in flight finish, nothing new is paid for.
    let stop_sending = tokio::spawn({
        let (service, stop) = (Arc::clone(&run.service), stop.clone());
        async move {
            stop.cancelled().await;
            service.stop_sending();
        }
    });
    // With a queue, the engine only scores what the queue embedded (vectors read back from
    // Redis, bound by round trips, not by the API): more at once than the queue's slots.
    let scoring = match queue {
        Some(_) => config.engine.worker_count.max(QUEUE_SCORING_CONCURRENCY),
        None => config.engine.worker_count,
    };
    let mut engine = Engine::new(
        run.worker.clone(),
        Arc::clone(&inputs),
        scoring,
        config.engine.task_timeout,
        stop.clone(),
        config.engine.stop_grace,
    );
    if let Some(redis) = queue {
        engine = engine.with_before(distribute(config, redis, &run, Arc::clone(&inputs), &stop));
    }
    let steps = steps::Steps {
        config,
        plan: &plan,
        engine,
        run: &run,
        progress,
        stop: &stop,
        inputs: &inputs,
        batch: batch.as_ref(),
    };
    let assembled = steps.make_puzzles().await;
    stop_sending.abort();
    let batch = batch.map(|b| b.counts());
    close_run(run, plan, assembled, batch, &stop, config.engine.stop_grace).await
}

/// The work queue (any run with a Redis): each batch of themes the engine is given (the
/// planned themes, then each round of spares) is embedded by every worker on the run's Redis
/// (this process included) before the engine scores it from the shared cache tier. A theme
/// whose task failed or went to the dead-letter stream fails with that error. On a Redis error
/// the batch goes on locally.
fn distribute(
    config: &Config,
    redis: crate::distributed::Redis,
    run: &OpenRun,
    inputs: Arc<Inputs>,
    stop: &CancellationToken,
) -> crate::engine::Before {
    let service = Arc::clone(&run.service);
    let (wpt, slots) = (config.puzzle.words_per_theme, config.engine.worker_count);
    let stop = stop.clone();
    Arc::new(move |themes: Vec<String>| {
        let (redis, service, inputs, stop) = (
            redis.clone(),
            Arc::clone(&service),
            Arc::clone(&inputs),
            stop.clone(),
        );
        Box::pin(async move {
            let queued =
                queue::coordinate(&redis, service, wpt, slots, &inputs, &themes, &stop).await;
            queued.map(|d| d.failed).unwrap_or_else(|e| {
                tracing::warn!("work queue on {}: {e}; going on locally", redis.shown());
                HashMap::new()
            })
        })
    })
}

/// A worker (`puzzlegen worker`): embeds the themes of every queued run of its embedding
/// space on the Redis of `config`, with its own provider, key and cache, until `stop`.
pub async fn worker(config: &Config, stop: CancellationToken) -> Result<(), RunError> {
    let backend = Backend::open(config).await?;
    let Some(redis) = backend.shared.as_ref().map(|s| s.redis.clone()) else {
        return Err(RunError::Distributed(
            crate::distributed::DistributedError::NoUrl,
        ));
    };
    let cache = open_cache(config, backend.provider.space())?;
    let service = Arc::new(backend.service(config, cache));
    queue::serve(
        redis,
        Arc::clone(&service),
        config.engine.worker_count,
        stop,
    )
    .await;
    service.shutdown(config.engine.stop_grace).await;
    service.cache().close()?;
    match service.fatal_error() {
        Some(e) => Err(RunError::Provider(e)),
        None => Ok(()),
    }
}

/// Embeds `texts` as a run does (cache first, then the config's provider under its limits and
/// retries; new vectors are kept in the cache), for commands that need vectors outside a run
/// (`puzzlegen solve`). With `in_memory`, no cache database is opened or written.
pub async fn embed_texts(
    config: &Config,
    texts: &[String],
    in_memory: bool,
) -> Result<Vec<Vector>, RunError> {
    let provider = build_provider(config).await?;
    let service = if in_memory {
        EmbeddingService::new(provider, service_options(config))
    } else {
        let cache = open_cache(config, provider.space())?;
        EmbeddingService::with_cache(provider, service_options(config), cache)
    };
    let vectors = service.embed(texts).await;
    service.shutdown(config.engine.stop_grace).await;
    service.cache().close()?;
    vectors.map_err(RunError::Provider)
}

/// Ends the run's work: requests in flight finish (or are given up), the cache is closed, the
/// cache CSV completed (staged, not yet in place).
async fn close_run(
    run: OpenRun,
    plan: Plan,
    done: Assembled,
    batch: Option<report::shapes::BatchStats>,
    stop: &CancellationToken,
    grace: Duration,
) -> Result<RunResult, RunError> {
    let service = run.service;
    service.shutdown(grace).await;
    let stats = service.stats();
    service
        .cache()
        .record_run(stats.lookups, stats.cache_hits, stats.texts_embedded);
    // Rows the cache could neither store nor save: the outputs are still written, then the
    // run fails (exit 3) and the journal is kept.
    let (closed, cache_error) = match service.cache().close() {
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
    let (csv_rows, cache_csv) = run.cache_csv.finish(service.cache().unexported_rows())?;
    let cache = CacheRecord {
        entries: match &database {
            Some(db) => cache_entries(db, service.space()).unwrap_or(csv_rows),
            None => csv_rows,
        },
        written: closed.written,
        database: database.unwrap_or_default(),
        csv_written_at: crate::clock::unix_seconds(),
    };
    let stop = match service.fatal_error() {
        Some(e) => Some(Stop::Fatal(e)),
        None => stop.is_cancelled().then_some(Stop::Interrupted),
    };
    Ok(RunResult {
        plan,
        puzzles: done.puzzles,
        failed_puzzles: done.failed_puzzles,
        themes: done.themes,
        replacements: done.replacements,
        themes_resumed: run.worker.resumed(),
        slots_filled: done.slots_filled,
        space: service.space().clone(),
        stats,
        cache,
        stop,
        elapsed: run.started.elapsed(),
        batch,
        cache_error,
        cache_csv,
        journal: run.journal,
        started: run.started,
    })
}

/// Writes a run's output files as a set: to the configured places, or to
/// `<paths.outputs>/partial/` for a run that stopped early (never over a complete earlier set).
/// A signal (`stop`) while writing a complete set gives it up at once; a partial set is given
/// up once it has taken [`PARTIAL_WRITE_BUDGET`]. Either way nothing is replaced and the
/// journal keeps the work. A complete run's journal is removed once its outputs are in place.
pub fn write_outputs(
    config: &Config,
    result: RunResult,
    stop: &CancellationToken,
) -> Result<Summary, RunError> {
    let themes_failed = result.themes_failed();
    let themes_ok: Vec<&ThemeScores> = themes_ok(&result.themes).collect();
    let record = RunRecord {
        config,
        plan: &result.plan,
        space: &result.space,
        puzzles: &result.puzzles,
        failed_puzzles: &result.failed_puzzles,
        themes_ok: &themes_ok,
        themes_failed: &themes_failed,
        replacements: &result.replacements,
        stats: &result.stats,
        cache: &result.cache,
        slots_filled: result.slots_filled,
        elapsed: result.elapsed,
        batch: result.batch.as_ref(),
    };
    let to = match result.stop {
        None => OutputPaths::of(config),
        Some(_) => OutputPaths::partial(config),
    };
    let set = stage_outputs(&record, &to, result.cache_csv, result.stop.as_ref(), stop)?;
    let files = crate::fsx::commit_all(set)?;
    let partial = result.stop.as_ref().map(|_| report::partial_dir(config));
    if let Some(e) = result.cache_error {
        return Err(e.into());
    }
    if result.stop.is_none() {
        // Every theme was tried and the outputs are written: nothing left to resume.
        result.journal.remove();
        report::remove_partial(config);
    }
    Ok(Summary {
        themes_ok: themes_ok.len(),
        themes_failed: themes_failed.len(),
        themes_resumed: result.themes_resumed,
        puzzles_ok: result.puzzles.len(),
        puzzles_failed: result.failed_puzzles.len(),
        spares_used: result.replacements.len(),
        stats: result.stats,
        cache: (!result.cache.database.as_os_str().is_empty())
            .then(|| (result.cache.written, result.cache.database.clone())),
        // The summary's wall time includes writing the outputs.
        elapsed: result.started.elapsed(),
        files,
        stop: result.stop,
        partial,
        batch: result.batch,
    })
}

/// Stages a run's output set at `to` (nothing is replaced yet), the cache CSV first. See
/// [`write_outputs`] for how a signal (`signal`) gives it up.
fn stage_outputs(
    record: &RunRecord,
    to: &OutputPaths,
    cache_csv: crate::fsx::Staged,
    stopped: Option<&Stop>,
    signal: &CancellationToken,
) -> Result<Vec<crate::fsx::Staged>, RunError> {
    let config = record.config;
    let cache_csv = match stopped {
        None => cache_csv,
        Some(_) => cache_csv.retarget(&to.cache_csv)?,
    };
    let csv_size = report::min_csv_bytes_per_puzzle(config, record.space.dimension)
        .saturating_mul(record.puzzles.len() as u64);
    if csv_size > 100 << 20 {
        tracing::info!(
            "writing the outputs: the puzzle CSV alone is at least {} (a signal gives this up, \
             leaving earlier outputs as they were)",
            crate::text::Bytes(csv_size)
        );
    }
    let write_deadline = Instant::now() + PARTIAL_WRITE_BUDGET;
    let abort = || match stopped {
        Some(Stop::Interrupted) => Instant::now() >= write_deadline,
        _ => signal.is_cancelled(),
    };
    let staged = match report::stage_all(record, to, &abort) {
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
                themes: record.themes_ok.len(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut set = vec![cache_csv];
    set.extend(staged);
    Ok(set)
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
