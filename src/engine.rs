//! The engine: processes themes concurrently, each under a deadline, reporting progress.
//!
//! Replaces the original's worker processes with tasks: at most `worker_count` themes are in
//! flight at once, each bounded by `task_timeout_seconds` (a late theme fails with "timeout",
//! the run goes on). Results come back in input order whatever order they finish in. When the
//! run is told to stop (a signal), themes not started yet are not started, and themes in flight
//! get `grace` to finish; both end as [`ThemeError::Cancelled`]. With a [`Before`] step (the
//! Redis work queue), each batch of themes goes through it first: the themes it failed come
//! out failed with its reason ([`ThemeError::Queue`]) without being tried here.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::input::Inputs;
use crate::progress::Progress;
use crate::theme::{ThemeError, ThemeWorker};
use crate::words::{ThemeResult, ThemeScores};

/// What a run keeps of one theme: its scores, or why it failed.
pub type ThemeOutcome = Result<ThemeScores, ThemeError>;

/// One theme as its worker left it, vectors included.
pub(crate) type Worked = Result<ThemeResult, ThemeError>;

/// Work done elsewhere on a batch of themes before the engine scores them: answers the
/// themes that failed there, with why.
pub(crate) type Before = Arc<
    dyn Fn(Vec<String>) -> Pin<Box<dyn Future<Output = HashMap<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Runs theme workers with bounded concurrency and a per-theme deadline.
pub(crate) struct Engine {
    before: Option<Before>,
    worker: ThemeWorker,
    inputs: Arc<Inputs>,
    worker_count: usize,
    task_timeout: Duration,
    stop: CancellationToken,
    grace: Duration,
}

impl Engine {
    pub(crate) fn new(
        worker: ThemeWorker,
        inputs: Arc<Inputs>,
        worker_count: usize,
        task_timeout: Duration,
        stop: CancellationToken,
        grace: Duration,
    ) -> Engine {
        Engine {
            before: None,
            worker,
            inputs,
            worker_count: worker_count.max(1),
            task_timeout,
            stop,
            grace,
        }
    }

    /// Sends every batch of themes through `before` first (see [`Before`]).
    pub(crate) fn with_before(mut self, before: Before) -> Engine {
        self.before = Some(before);
        self
    }

    /// Processes `themes`, returning one outcome per theme in the same order. `done` takes each
    /// worker's result (with its index) as soon as it is in, so its vectors can be written
    /// while the run goes on, and returns what the run keeps of it.
    pub(crate) async fn process(
        &self,
        themes: &[String],
        progress: &Progress,
        done: &mut dyn FnMut(usize, Worked) -> ThemeOutcome,
    ) -> Vec<ThemeOutcome> {
        let mut failed_before = match &self.before {
            Some(before) => before(themes.to_vec()).await,
            None => HashMap::new(),
        };
        let permits = Arc::new(Semaphore::new(self.worker_count));
        let mut set = JoinSet::new();
        for (index, theme) in themes.iter().enumerate() {
            if let Some(e) = failed_before.remove(theme) {
                set.spawn(async move { (index, Err(ThemeError::Queue(e))) });
                continue;
            }
            let permits = Arc::clone(&permits);
            let worker = self.worker.clone();
            let inputs = Arc::clone(&self.inputs);
            let theme = theme.clone();
            let deadline = self.task_timeout;
            let stop = self.stop.clone();
            let grace = self.grace;
            set.spawn(async move {
                let _permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return (index, Err(ThemeError::Cancelled)),
                    p = permits.acquire_owned() => p.expect("semaphore never closed"),
                };
                let work = tokio::time::timeout(
                    deadline,
                    worker.process(&theme, inputs.candidates_of(&theme)),
                );
                let stopped_then_grace = async {
                    stop.cancelled().await;
                    tokio::time::sleep(grace).await;
                };
                let outcome = tokio::select! {
                    r = work => r.unwrap_or(Err(ThemeError::Timeout(deadline.as_secs_f64()))),
                    _ = stopped_then_grace => Err(ThemeError::Cancelled),
                };
                (index, outcome)
            });
        }
        let mut outcomes: Vec<Option<ThemeOutcome>> = themes.iter().map(|_| None).collect();
        let mut failures = FailureLog::default();
        while let Some(joined) = set.join_next().await {
            let (index, outcome) = match joined {
                Ok(done) => done,
                // A theme task can only end this way if it panicked: a bug, not user input.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            if let Err(e) = &outcome {
                failures.record(&themes[index], e);
            }
            outcomes[index] = Some(done(index, outcome));
            progress.inc();
        }
        failures.finish();
        outcomes
            .into_iter()
            .map(|o| o.expect("every spawned theme reports once"))
            .collect()
    }
}

/// Logs failed themes one line per cause: the first theme a cause fails in full, the others
/// counted in one line at the end (a refused key fails every theme the same way).
#[derive(Default)]
struct FailureLog {
    /// Each distinct message, in order of first appearance, with the themes that got it after
    /// the first.
    causes: Vec<(String, usize)>,
}

impl FailureLog {
    fn record(&mut self, theme: &str, error: &ThemeError) {
        let message = error.to_string();
        match self.causes.iter_mut().find(|(m, _)| *m == message) {
            Some((_, more)) => {
                *more += 1;
                tracing::debug!("theme {theme:?} failed: {message}");
            }
            None => {
                tracing::warn!("theme {theme:?} failed: {message}");
                self.causes.push((message, 0));
            }
        }
    }

    fn finish(self) {
        for (message, more) in self.causes.into_iter().filter(|(_, n)| *n > 0) {
            tracing::warn!("{more} more theme(s) failed the same way: {message}");
        }
    }
}
