//! One run, start to finish: inputs -> plan -> engine -> assemble -> report.
//!
//! This is the only place that knows the order of the steps. Failed themes are replaced by
//! spare themes (themes the plan did not place) before a puzzle is given up; each spare is used
//! at most once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assemble::{Puzzle, assemble};
use crate::config::{Config, ProviderSettings};
use crate::embed::local::LocalProvider;
use crate::embed::service::{EmbeddingService, ServiceStats};
use crate::embed::{EmbedError, Provider};
use crate::engine::{Engine, ThemeOutcome};
use crate::input::{InputError, Inputs};
use crate::plan::{Plan, PlanError};
use crate::progress::{Progress, ProgressMode};
use crate::report::{self, FailedPuzzle, FailedTheme, OutputError, Replacement, RunRecord};
use crate::theme::{ThemeResult, ThemeWorker, usable_candidates};

/// Why a run could not produce its outputs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: {source}")]
    Plan { path: String, source: PlanError },
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
    #[error("{path}: embedding.provider: {provider} is not available in this build yet")]
    ProviderUnavailable { path: String, provider: String },
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl RunError {
    /// True for mistakes in the user's configuration or inputs (exit code 2).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            RunError::Output(_) | RunError::Provider(EmbedError::Backend(_))
        )
    }
}

/// What a finished run reports back (the closing summary).
#[derive(Debug, Clone)]
pub struct Summary {
    pub themes_ok: usize,
    pub themes_failed: usize,
    pub puzzles_ok: usize,
    pub puzzles_failed: usize,
    pub spares_used: usize,
    pub stats: ServiceStats,
    pub elapsed: Duration,
    pub files: Vec<std::path::PathBuf>,
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
            "themes:  {} ok, {} failed ({} spare theme(s) used)",
            self.themes_ok, self.themes_failed, self.spares_used
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
        write!(
            f,
            "time:    {:.2} s wall, {:.0} texts/s",
            self.elapsed.as_secs_f64(),
            self.texts_per_second()
        )
    }
}

/// Creates the provider the configuration names.
pub fn build_provider(config: &Config) -> Result<Arc<dyn Provider>, RunError> {
    match &config.provider {
        ProviderSettings::Local { model_dir } => Ok(Arc::new(
            LocalProvider::load(model_dir).map_err(RunError::Provider)?,
        )),
        other => Err(RunError::ProviderUnavailable {
            path: config.source.display().to_string(),
            provider: other.kind().to_string(),
        }),
    }
}

/// Runs the whole job with the provider the configuration names.
pub async fn run(config: &Config, progress: ProgressMode) -> Result<Summary, RunError> {
    let inputs = Inputs::load(&config.themes_file, &config.candidates_file)?;
    let plan = make_plan(config, &inputs)?;
    let provider = build_provider(config)?;
    run_with(config, inputs, plan, provider, progress).await
}

/// Checks the inputs against the config and plans the slots.
pub fn make_plan(config: &Config, inputs: &Inputs) -> Result<Plan, RunError> {
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
    let plan = Plan::new(
        &inputs.themes,
        config.puzzle.total_puzzle_count,
        config.puzzle.themes_per_puzzle,
    )
    .map_err(|source| RunError::Plan {
        path: config.themes_file.display().to_string(),
        source,
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

/// Runs the job on an already built provider (tests pass a fake one here).
pub async fn run_with(
    config: &Config,
    inputs: Inputs,
    plan: Plan,
    provider: Arc<dyn Provider>,
    progress: ProgressMode,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let service = Arc::new(EmbeddingService::new(provider));
    let worker = ThemeWorker::new(Arc::clone(&service), config.puzzle.words_per_theme);
    let engine = Engine::new(
        worker,
        Arc::new(inputs),
        config.engine.worker_count,
        config.engine.task_timeout,
    );

    // Every distinct planned theme, once.
    let order = plan.distinct_themes();
    let bar = Progress::new(progress, "themes", order.len() as u64);
    let outcomes = engine.process(&order, &bar).await;
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
        let batch: Vec<String> = spares.by_ref().take(failed_slots.len()).cloned().collect();
        if failed_slots.is_empty() || batch.is_empty() {
            break;
        }
        let bar = Progress::new(progress, "spares", batch.len() as u64);
        let outcomes = engine.process(&batch, &bar).await;
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
                "puzzle_{}: theme {failed:?} failed ({reason}); using spare theme {spare:?}",
                plan.puzzles[p].id
            );
            replacements.push(Replacement {
                puzzle_id: format!("puzzle_{}", plan.puzzles[p].id),
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
    for (planned, themes) in plan.puzzles.iter().zip(&slots) {
        let fail = |error: String| FailedPuzzle {
            puzzle_id: format!("puzzle_{}", planned.id),
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
    for f in &failed_puzzles {
        tracing::warn!("{} failed: {}", f.puzzle_id, f.error);
    }

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
    let stats = service.stats();
    let elapsed = started.elapsed();
    let record = RunRecord {
        config,
        plan: &plan,
        space: service.space(),
        puzzles: &puzzles,
        failed_puzzles: &failed_puzzles,
        themes_ok: &themes_ok,
        themes_failed: &themes_failed,
        replacements: &replacements,
        stats,
        elapsed,
    };
    let files = report::write_all(&record)?;
    Ok(Summary {
        themes_ok: themes_ok.len(),
        themes_failed: themes_failed.len(),
        puzzles_ok: puzzles.len(),
        puzzles_failed: failed_puzzles.len(),
        spares_used: replacements.len(),
        stats,
        elapsed,
        files,
    })
}
