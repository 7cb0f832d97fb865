//! Batch mode (`embedding.mode: batch`): before a round of themes is scored, the texts of
//! those themes the cache lacks are embedded by Batch API jobs ([`BatchStep::embed`]), at
//! half the interactive price; the themes are then scored from the cache as usual, with no
//! interactive request.
//!
//! Durable: each job is named in the run journal the moment it is created, with its texts,
//! and marked collected once its vectors are in the cache. A run started again re-attaches to
//! the jobs its journal names (a job that finished meanwhile is collected), and submits only
//! texts that are in no job. A job that ends failed, expired or cancelled is submitted once
//! more, then its texts fail their themes (spare themes replace them); texts a job answered
//! with an error go into one follow-up job (or, with `batch.fallback: interactive`, to the
//! interactive API). `batch.max_wait` ends the wait with the jobs left running and named in
//! the journal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, key};
use crate::config::{
    BatchFallback, BatchSettings, Config, EmbeddingMode, MAX_POLL_INTERVAL, ProviderSettings,
};
use crate::embed::batch::{BatchApi, GeminiBatch, ItemResult, JobState, OpenAiBatch};
use crate::embed::{EmbedError, Space, Vector};
use crate::journal::Journal;
use crate::limit::estimate_tokens;
use crate::progress::{Progress, ProgressMode};
use crate::report::shapes::BatchStats;

/// What batch mode needs: the API, its settings, and what it did so far.
pub(super) struct BatchStep {
    pub(super) api: Arc<dyn BatchApi>,
    pub(super) settings: BatchSettings,
    /// US dollars per million input tokens in batch, if the model has a price.
    pub(super) price: Option<f64>,
    pub(super) done: std::sync::Mutex<BatchStats>,
}

/// Why batch mode stopped a run.
#[derive(Debug, thiserror::Error)]
pub(super) enum BatchError {
    #[error("{0}")]
    Api(EmbedError),
    #[error(
        "batch jobs still running after {waited:.0} s (batch.max_wait): {jobs}; they are named \
         in {journal}: run the same command again to collect them, or `puzzlegen batch cancel` \
         to cancel them"
    )]
    MaxWait {
        waited: f64,
        jobs: String,
        journal: String,
    },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(
        "stopped while batch jobs run (they are named in the run journal: run again to collect them)"
    )]
    Interrupted,
}

/// A display name no other job has: `puzzlegen-<time>-<pid>-<n>`.
fn display_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "puzzlegen-{nanos:x}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A job this run waits for.
struct Active {
    /// The display name it was created with (its key in the journal).
    display_name: String,
    name: String,
    texts: Vec<String>,
    /// Its texts were in a job that ended without results (they are not submitted again).
    resubmitted: bool,
    /// Its texts were answered with an error by an earlier job (no further follow-up).
    follow_up: bool,
    next_poll: Instant,
    interval: Duration,
    state: JobState,
}

/// Texts waiting for a job.
struct Chunk {
    texts: Vec<String>,
    /// The display name of a job meant for them whose create may have reached the API (asked
    /// for before creating another).
    display_name: Option<String>,
    resubmitted: bool,
    follow_up: bool,
}

/// Finished jobs read at once: a finished job's results are large (10,000 texts at 3072
/// dimensions are ~120 MB of vectors), so no more than two are held at a time.
const READ_AT_ONCE: usize = 2;

/// What one call of [`BatchStep::embed`] works on.
struct Round<'a> {
    /// Jobs created and not ended, in creation order.
    active: Vec<Active>,
    /// Texts waiting for a job.
    waiting: VecDeque<Chunk>,
    /// Texts that could not be embedded, by cache key, with why.
    failed: HashMap<String, String>,
    bar: Progress,
    cache: &'a Cache,
    journal: &'a Journal,
}

impl Round<'_> {
    /// The jobs by state on the progress bar, e.g. `jobs: 2 running, 1 pending, 3 to create`.
    fn show_jobs(&self) {
        self.bar.set_note(&jobs_note(
            self.active.iter().map(|a| a.state),
            self.waiting.len(),
        ));
    }
}

/// `jobs: 2 running, 1 pending, 3 to create`: jobs by state (in the order states come),
/// then the chunks of texts still waiting for a job.
fn jobs_note(states: impl Iterator<Item = JobState>, to_create: usize) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for state in states {
        match counts.iter_mut().find(|(name, _)| *name == state.name()) {
            Some((_, n)) => *n += 1,
            None => counts.push((state.name(), 1)),
        }
    }
    if to_create > 0 {
        counts.push(("to create", to_create));
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!("jobs: {}", parts.join(", "))
}

/// What one poll of a job found.
enum Polled {
    /// Not ended yet.
    Waiting(JobState),
    /// Ended with its results.
    Succeeded(Vec<ItemResult>),
    /// Ended without succeeding (or unknown to the API), with what it kept of each text.
    Ended(JobState, Vec<Option<ItemResult>>),
    /// The API could not say or give it now (the state, if it said that): asked again later.
    Retry {
        state: Option<JobState>,
        why: String,
    },
}

impl BatchStep {
    /// The batch step of a run in batch mode (`None` in interactive mode), for vectors of
    /// `space`.
    pub(super) fn of(config: &Config, space: &Space) -> Result<Option<BatchStep>, EmbedError> {
        if config.mode != EmbeddingMode::Batch {
            return Ok(None);
        }
        Self::for_provider(config, space).map(Some)
    }

    /// The batch step of the config's provider, whatever the mode (`puzzlegen batch` reads the
    /// jobs a run in batch mode left, even after the config went back to interactive).
    fn for_provider(config: &Config, space: &Space) -> Result<BatchStep, EmbedError> {
        let (api, model): (Arc<dyn BatchApi>, &str) = match &config.provider {
            ProviderSettings::Gemini(g) => (Arc::new(GeminiBatch::new(g)?), &g.model_id),
            ProviderSettings::Openai(o) => {
                (Arc::new(OpenAiBatch::new(o, space.clone())?), &o.model)
            }
            ProviderSettings::Local { .. } => {
                return Err(EmbedError::Setup(format!(
                    "{}: embedding.provider: the local provider has no Batch API (batch jobs \
                     are for gemini and openai)",
                    config.source.display()
                )));
            }
        };
        Ok(BatchStep {
            api,
            settings: config.batch.clone(),
            price: config.pricing.of(model).map(|p| p.batch),
            done: Default::default(),
        })
    }

    /// Embeds `texts` (distinct, none in the cache, as the caller found) through batch jobs,
    /// after re-attaching to the jobs the journal names. Returns the texts that could not be
    /// embedded, by cache key, with the reason (their themes fail). With
    /// `batch.fallback: interactive` texts a job answered with an error are left to the
    /// interactive API instead.
    pub(super) async fn embed(
        &self,
        texts: Vec<String>,
        cache: &Cache,
        journal: &Journal,
        progress: ProgressMode,
        stop: &CancellationToken,
    ) -> Result<HashMap<String, String>, BatchError> {
        let s = &self.settings;
        let started = Instant::now();
        let wanted: HashSet<String> = texts.iter().map(|t| key(t)).collect();
        let (active, in_a_job, unsent) = self.attach(cache, journal).await?;
        let fresh: Vec<String> = texts
            .into_iter()
            .filter(|t| !in_a_job.contains(&key(t)))
            .collect();
        let mut round = Round {
            active,
            waiting: unsent
                .into_iter()
                .chain(fresh.chunks(s.max_texts_per_job).map(|c| Chunk {
                    texts: c.to_vec(),
                    display_name: None,
                    resubmitted: false,
                    follow_up: false,
                }))
                .collect(),
            failed: HashMap::new(),
            bar: Progress::new(progress, "batch texts", wanted.len() as u64),
            cache,
            journal,
        };
        let mut create_pause = Duration::ZERO;
        loop {
            if create_pause.is_zero() {
                create_pause = self.create_jobs(&mut round).await?;
                round.show_jobs();
            }
            if round.active.is_empty() && round.waiting.is_empty() {
                break;
            }
            if started.elapsed() >= s.max_wait {
                round.bar.finish();
                return Err(BatchError::MaxWait {
                    waited: started.elapsed().as_secs_f64(),
                    jobs: round
                        .active
                        .iter()
                        .map(|a| format!("{} ({})", a.name, a.state.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    journal: journal.path().display().to_string(),
                });
            }
            let next_poll = round.active.iter().map(|a| a.next_poll).min();
            let wait = match next_poll {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => create_pause,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    round.bar.finish();
                    return Err(BatchError::Interrupted);
                }
            }
            create_pause = Duration::ZERO;
            self.poll_due(&mut round).await?;
            round.show_jobs();
        }
        round.bar.finish();
        // Only this round's texts decide its themes.
        let mut failed = round.failed;
        failed.retain(|k, _| wanted.contains(k));
        Ok(failed)
    }

    /// Re-attaches to the jobs the journal names and has not collected: the jobs to wait for
    /// (a job whose texts are all in the cache is marked collected), the keys of their texts,
    /// and the texts of jobs whose create never reached the API (to create, by the same
    /// display name). A job whose API name the journal lacks is looked for by display name.
    async fn attach(
        &self,
        cache: &Cache,
        journal: &Journal,
    ) -> Result<(Vec<Active>, HashSet<String>, Vec<Chunk>), BatchError> {
        let mut active = Vec::new();
        let mut in_a_job = HashSet::new();
        let mut unsent = Vec::new();
        for job in journal.pending_jobs() {
            let keys: Vec<String> = job.texts.iter().map(|t| key(t)).collect();
            if cache.get_many(&keys).iter().all(Option::is_some) {
                journal.record_collected(&job.display_name)?;
                continue;
            }
            let name = match &job.name {
                Some(name) => Some(name.clone()),
                // Killed between the create and writing its name down: ask the API.
                None => self
                    .api
                    .find(&job.display_name)
                    .await
                    .map_err(BatchError::Api)?,
            };
            // Jobs of an earlier run of the same journal: waited for even when this round
            // does not need their texts, so nothing paid for is lost.
            in_a_job.extend(keys);
            let Some(name) = name else {
                unsent.push(Chunk {
                    texts: job.texts.clone(),
                    display_name: Some(job.display_name.clone()),
                    resubmitted: false,
                    follow_up: false,
                });
                continue;
            };
            if job.name.is_none() {
                journal.record_job(&job.display_name, &name)?;
            }
            tracing::info!(
                "batch: re-attaching to job {name} ({} text(s)) named in the run journal",
                job.texts.len()
            );
            self.count(|c| c.jobs_resumed += 1);
            active.push(Active {
                display_name: job.display_name.clone(),
                name,
                texts: job.texts.clone(),
                resubmitted: false,
                follow_up: false,
                next_poll: Instant::now(),
                interval: self.settings.poll_interval,
                state: JobState::Pending,
            });
        }
        Ok((active, in_a_job, unsent))
    }

    /// Creates jobs for the waiting texts up to the cap on jobs at once, each named in the
    /// journal before its create. Returns the pause before the next try when the API refused
    /// one for now (a 429, a 5xx), else zero.
    async fn create_jobs(&self, round: &mut Round<'_>) -> Result<Duration, BatchError> {
        let s = &self.settings;
        while round.active.len() < s.max_active_jobs {
            let Some(mut chunk) = round.waiting.pop_front() else {
                break;
            };
            let created = match chunk.display_name.clone() {
                // A create that may have reached the API: the job is looked for first.
                Some(display) => match self.api.find(&display).await {
                    Ok(Some(name)) => Ok((display, name)),
                    Ok(None) => self
                        .create(&chunk.texts, &display)
                        .await
                        .map(|n| (display, n)),
                    Err(e) => Err(e),
                },
                None => {
                    let display = display_name();
                    round.journal.record_job_intent(&display, &chunk.texts)?;
                    chunk.display_name = Some(display.clone());
                    self.create(&chunk.texts, &display)
                        .await
                        .map(|n| (display, n))
                }
            };
            let (display, name) = match created {
                Ok(created) => created,
                Err(e) if e.is_fatal() => return Err(BatchError::Api(e)),
                Err(e) => {
                    tracing::warn!("batch: cannot create a job now ({e}); trying again");
                    round.waiting.push_front(chunk);
                    return Ok(s.poll_interval);
                }
            };
            round.journal.record_job(&display, &name)?;
            tracing::info!(
                "batch: created job {name} ({} text(s){})",
                chunk.texts.len(),
                match (chunk.resubmitted, chunk.follow_up) {
                    (true, _) => ", submitted again",
                    (false, true) => ", a follow-up for items answered with an error",
                    (false, false) => "",
                }
            );
            let n = chunk.texts.len();
            let tokens: u64 = chunk.texts.iter().map(|t| estimate_tokens(t) as u64).sum();
            self.count(|c| {
                c.jobs += 1;
                c.texts_by_job.push(n);
                c.tokens_estimate += tokens;
            });
            round.active.push(Active {
                display_name: display,
                name,
                texts: chunk.texts,
                resubmitted: chunk.resubmitted,
                follow_up: chunk.follow_up,
                next_poll: Instant::now() + s.poll_interval,
                interval: s.poll_interval,
                state: JobState::Pending,
            });
        }
        Ok(Duration::ZERO)
    }

    /// Asks every job whose time has come how it stands, [`READ_AT_ONCE`] at a time (a
    /// finished job's results are read in the same go), then settles each in creation order.
    async fn poll_due(&self, round: &mut Round<'_>) -> Result<(), BatchError> {
        let now = Instant::now();
        let (due, later): (Vec<Active>, Vec<Active>) = std::mem::take(&mut round.active)
            .into_iter()
            .partition(|j| j.next_poll <= now);
        round.active = later;
        let polled: Vec<Result<Polled, EmbedError>> =
            futures_util::stream::iter(due.iter().map(|job| self.poll(job)))
                .buffered(READ_AT_ONCE)
                .collect()
                .await;
        for (mut job, polled) in due.into_iter().zip(polled) {
            let polled = polled.map_err(BatchError::Api)?;
            let state = match &polled {
                Polled::Retry { state, .. } => state.unwrap_or(job.state),
                Polled::Waiting(state) | Polled::Ended(state, _) => *state,
                Polled::Succeeded(_) => JobState::Succeeded,
            };
            if state != job.state {
                tracing::info!("batch: job {} is {}", job.name, state.name());
                job.state = state;
            }
            match polled {
                Polled::Retry { why, .. } => {
                    tracing::warn!("batch: {why}");
                    job.next_poll = Instant::now() + job.interval;
                    round.active.push(job);
                }
                Polled::Waiting(_) => {
                    job.next_poll = Instant::now() + job.interval;
                    job.interval = (job.interval.mul_f64(1.5)).min(MAX_POLL_INTERVAL);
                    round.active.push(job);
                }
                Polled::Succeeded(results) => self.collect(job, results, round)?,
                Polled::Ended(state, kept) => self.settle_ended(job, state, kept, round)?,
            }
        }
        Ok(())
    }

    /// Asks how `job` stands and, if it has ended, reads what it holds. A transient failure
    /// is a [`Polled::Retry`]; only a fatal one is an error.
    async fn poll(&self, job: &Active) -> Result<Polled, EmbedError> {
        let retry = |state: Option<JobState>, e: EmbedError, what: String| {
            if e.is_fatal() {
                Err(e)
            } else {
                Ok(Polled::Retry {
                    state,
                    why: format!("{what} ({e})"),
                })
            }
        };
        let name = &job.name;
        let state = match self.api.state(name).await {
            Ok(state) => state,
            Err(e) => return retry(None, e, format!("cannot ask how job {name} stands")),
        };
        match state {
            JobState::Pending | JobState::Running => Ok(Polled::Waiting(state)),
            JobState::Succeeded => match self.api.results(name, job.texts.len()).await {
                Ok(results) => Ok(Polled::Succeeded(results)),
                Err(e) => retry(Some(state), e, format!("cannot read job {name}'s results")),
            },
            JobState::Unknown => Ok(Polled::Ended(state, vec![None; job.texts.len()])),
            JobState::Failed | JobState::Expired | JobState::Cancelled => {
                match self.api.kept(name, job.texts.len()).await {
                    Ok(kept) => Ok(Polled::Ended(state, kept)),
                    Err(e) => retry(Some(state), e, format!("cannot read what job {name} kept")),
                }
            }
        }
    }

    /// A job that succeeded: its vectors into the cache; texts it answered with an error to
    /// one follow-up job (or the interactive API with `batch.fallback: interactive`), and if
    /// a follow-up answers with an error again, their themes fail.
    fn collect(
        &self,
        job: Active,
        results: Vec<ItemResult>,
        round: &mut Round<'_>,
    ) -> Result<(), BatchError> {
        let (stored, errors) = self.store(&job.texts, results, round);
        round.journal.record_collected(&job.display_name)?;
        tracing::info!(
            "batch: job {}: {stored} vector(s) into the cache{}",
            job.name,
            match errors.first() {
                None => String::new(),
                Some((_, why)) => format!(
                    ", {} text(s) answered with an error (the first: {why})",
                    errors.len()
                ),
            }
        );
        if errors.is_empty() {
            return Ok(());
        }
        match (self.settings.fallback, job.follow_up) {
            (BatchFallback::Interactive, _) => tracing::info!(
                "batch: {} text(s) go to the interactive API (batch.fallback)",
                errors.len()
            ),
            (BatchFallback::Job, false) => round.waiting.push_back(Chunk {
                texts: errors.into_iter().map(|(t, _)| t).collect(),
                display_name: None,
                resubmitted: false,
                follow_up: true,
            }),
            (BatchFallback::Job, true) => {
                for (t, why) in errors {
                    round
                        .failed
                        .insert(key(&t), format!("batch job {}: {why}", job.name));
                }
            }
        }
        Ok(())
    }

    /// A job that ended without succeeding (failed, expired, cancelled, or unknown to the
    /// API): what it kept into the cache, the rest submitted once more; if that job ends so
    /// too, their themes fail.
    fn settle_ended(
        &self,
        mut job: Active,
        state: JobState,
        kept: Vec<Option<ItemResult>>,
        round: &mut Round<'_>,
    ) -> Result<(), BatchError> {
        if kept.iter().any(|r| matches!(r, Some(Ok(_)))) {
            let (texts, results): (Vec<String>, Vec<ItemResult>) = job
                .texts
                .iter()
                .zip(kept)
                .filter_map(|(t, r)| Some((t.clone(), r.filter(Result::is_ok)?)))
                .unzip();
            let (stored, _) = self.store(&texts, results, round);
            let done: HashSet<&String> = texts.iter().collect();
            job.texts.retain(|t| !done.contains(t));
            tracing::info!(
                "batch: job {} ended {} with {stored} vector(s) done: into the cache",
                job.name,
                state.name()
            );
        }
        round.journal.record_collected(&job.display_name)?;
        if job.texts.is_empty() {
            return Ok(());
        }
        if state == JobState::Unknown {
            tracing::warn!(
                "batch: the API no longer knows job {} (named in the run journal): its {} \
                 text(s) are submitted again",
                job.name,
                job.texts.len()
            );
        }
        if !job.resubmitted {
            if state != JobState::Unknown {
                tracing::warn!(
                    "batch: job {} ended {}: its {} text(s) are submitted once more",
                    job.name,
                    state.name(),
                    job.texts.len()
                );
            }
            round.waiting.push_back(Chunk {
                texts: job.texts,
                display_name: None,
                resubmitted: true,
                follow_up: job.follow_up,
            });
            return Ok(());
        }
        let why = format!(
            "batch job {} ended {} (after one resubmission)",
            job.name,
            state.name()
        );
        tracing::warn!(
            "batch: {why}: the themes of its {} text(s) fail",
            job.texts.len()
        );
        for t in job.texts {
            round.failed.insert(key(&t), why.clone());
        }
        Ok(())
    }

    async fn create(&self, texts: &[String], display_name: &str) -> Result<String, EmbedError> {
        self.api.create(texts, display_name).await
    }

    /// Puts a job's vectors into the cache (flushed: nothing paid for is lost to a crash);
    /// returns how many, and the texts answered with an error, with why.
    fn store(
        &self,
        texts: &[String],
        results: Vec<ItemResult>,
        round: &Round<'_>,
    ) -> (usize, Vec<(String, String)>) {
        let mut done = Vec::new();
        let mut vectors: Vec<Vector> = Vec::new();
        let mut errors = Vec::new();
        for (text, result) in texts.iter().zip(results) {
            match result {
                Ok(v) => {
                    done.push(text.clone());
                    vectors.push(Arc::from(v));
                }
                Err(why) => errors.push((text.clone(), why)),
            }
        }
        round.cache.insert_many(&done, &vectors);
        round.cache.flush();
        round.bar.add(done.len() as u64);
        self.count(|c| c.texts_embedded += done.len());
        (done.len(), errors)
    }

    fn count(&self, f: impl FnOnce(&mut BatchStats)) {
        f(&mut self.done.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What the jobs did so far, with the estimated cost of the texts submitted.
    pub(super) fn counts(&self) -> BatchStats {
        let mut c = self.done.lock().unwrap_or_else(|e| e.into_inner()).clone();
        c.cost_usd_estimate = self.price.map(|p| c.tokens_estimate as f64 / 1e6 * p);
        c
    }
}

/// A job a config's run journal names and has not collected, as `puzzlegen batch` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInfo {
    /// The API's name (`batches/...`), or the display name when the API knows no such job.
    pub name: String,
    /// `pending`, `running`, `succeeded`, ... or `unknown to the API`.
    pub state: &'static str,
    pub texts: usize,
    /// Seconds since it was created (from its display name).
    pub age_seconds: Option<u64>,
}

/// The seconds since a job named `puzzlegen-<nanos, hex>-...` was created.
fn age_of(display_name: &str) -> Option<u64> {
    let nanos = u128::from_str_radix(
        display_name.strip_prefix("puzzlegen-")?.split('-').next()?,
        16,
    )
    .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((now.saturating_sub(nanos) / 1_000_000_000) as u64)
}

/// The Batch API of `config` and the jobs its run journal names (an error when the config is
/// not in batch mode's reach: the local provider).
async fn journal_jobs(
    config: &Config,
) -> Result<
    (
        Arc<dyn BatchApi>,
        Vec<(crate::journal::PendingJob, Option<String>)>,
    ),
    super::RunError,
> {
    let space = match (
        config.space().map_err(super::RunError::Provider)?,
        &config.provider,
    ) {
        (Some(space), _) => space,
        // The model's dimension only its server knows: asked as a run asks it (one text).
        (None, ProviderSettings::Openai(o)) => {
            use crate::embed::Provider as _;
            crate::embed::openai::OpenAiProvider::connect(o)
                .await
                .map_err(super::RunError::Provider)?
                .space()
                .clone()
        }
        (None, _) => {
            return Err(super::RunError::Provider(EmbedError::Setup(
                "the provider names no embedding space".into(),
            )));
        }
    };
    let step = BatchStep::for_provider(config, &space).map_err(super::RunError::Provider)?;
    let path = config.output.outputs_dir.join(crate::journal::FILE_NAME);
    let pending = crate::journal::pending_jobs_in(&path, &space).map_err(|why| {
        super::RunError::Provider(EmbedError::Setup(format!("{}: {why}", path.display())))
    })?;
    let mut jobs = Vec::new();
    for job in pending {
        let name = match &job.name {
            Some(n) => Some(n.clone()),
            None => step
                .api
                .find(&job.display_name)
                .await
                .map_err(super::RunError::Provider)?,
        };
        jobs.push((job, name));
    }
    Ok((step.api, jobs))
}

/// The jobs the run journal of `config` names and has not collected, with their state.
pub async fn list_jobs(config: &Config) -> Result<Vec<JobInfo>, super::RunError> {
    let (api, jobs) = journal_jobs(config).await?;
    let mut out = Vec::new();
    for (job, name) in jobs {
        let state = match &name {
            Some(n) => api.state(n).await.map_err(super::RunError::Provider)?,
            None => JobState::Unknown,
        };
        out.push(JobInfo {
            name: name.unwrap_or_else(|| job.display_name.clone()),
            state: state.name(),
            texts: job.texts.len(),
            age_seconds: age_of(&job.display_name),
        });
    }
    Ok(out)
}

/// Asks the API to cancel `only` (a job the journal names), or every job the journal names
/// that has not ended; returns the jobs asked. Their texts are submitted again by the next
/// run.
pub async fn cancel_jobs(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<JobInfo>, super::RunError> {
    let (api, jobs) = journal_jobs(config).await?;
    if let Some(only) = only
        && !jobs
            .iter()
            .any(|(j, n)| n.as_deref() == Some(only) || j.display_name == only)
    {
        return Err(super::RunError::Provider(EmbedError::Setup(format!(
            "batch cancel: {only} is not a job the run journal of {} names (see `puzzlegen batch list`)",
            config.source.display()
        ))));
    }
    let mut out = Vec::new();
    for (job, name) in jobs {
        let Some(name) = name else { continue };
        if only.is_some_and(|o| o != name && o != job.display_name) {
            continue;
        }
        let state = api.state(&name).await.map_err(super::RunError::Provider)?;
        if !state.is_final() {
            api.cancel(&name).await.map_err(super::RunError::Provider)?;
        }
        out.push(JobInfo {
            name,
            state: if state.is_final() {
                state.name()
            } else {
                "cancelling"
            },
            texts: job.texts.len(),
            age_seconds: age_of(&job.display_name),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_jobs_by_state_then_those_to_create() {
        use JobState::*;
        assert_eq!(
            jobs_note([Running, Pending, Running].into_iter(), 3),
            "jobs: 2 running, 1 pending, 3 to create"
        );
        assert_eq!(jobs_note([Succeeded].into_iter(), 0), "jobs: 1 succeeded");
        assert_eq!(jobs_note(std::iter::empty(), 2), "jobs: 2 to create");
    }

    #[test]
    fn a_job_name_tells_its_age() {
        let name = display_name();
        assert!(age_of(&name).is_some_and(|age| age < 5), "{name}");
        assert_eq!(age_of("someone-elses-job"), None);
    }
}
