//! What an open run does, in order ([`Steps::make_puzzles`]): process the planned themes, put
//! spare themes in the slots of failed ones, group by difficulty when asked, assemble each
//! puzzle, and (with `require_unique`) try spare themes for puzzles without a single solution.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use super::batch::BatchStep;
use super::{OpenRun, assembly, cache_rows, spares};
use crate::assemble::Puzzle;
use crate::config::Config;
use crate::design::Mix;
use crate::engine::{Engine, ThemeOutcome};
use crate::input::Inputs;
use crate::plan::Plan;
use crate::progress::{Progress, ProgressMode};
use crate::report::shapes::{FailedPuzzle, Replacement};
use crate::theme::ThemeError;

/// Every theme processed so far, with its outcome, in processing order.
type Processed = Vec<(String, ThemeOutcome)>;

/// Each processed theme's outcome by name.
fn outcomes(processed: &[(String, ThemeOutcome)]) -> HashMap<&str, &ThemeOutcome> {
    processed.iter().map(|(t, o)| (t.as_str(), o)).collect()
}

/// What processing and assembly made of the plan.
pub(super) struct Assembled {
    pub(super) themes: Processed,
    pub(super) puzzles: Vec<Puzzle>,
    pub(super) failed_puzzles: Vec<FailedPuzzle>,
    pub(super) replacements: Vec<Replacement>,
    pub(super) slots_filled: usize,
}

/// The theme in each slot of each puzzle, and the spare themes not yet used (each at most
/// once).
struct Slots<'p> {
    themes: Vec<Vec<String>>,
    spares: std::slice::Iter<'p, String>,
}

/// An open run and what its steps share.
pub(super) struct Steps<'a> {
    pub(super) config: &'a Config,
    pub(super) plan: &'a Plan,
    pub(super) engine: Engine,
    pub(super) run: &'a OpenRun,
    pub(super) progress: ProgressMode,
    pub(super) stop: &'a CancellationToken,
    pub(super) inputs: &'a Inputs,
    /// Batch mode: the jobs that embed each round's texts before it is scored.
    pub(super) batch: Option<&'a BatchStep>,
}

impl Steps<'_> {
    /// The run's puzzles from its plan.
    pub(super) async fn make_puzzles(&self) -> Assembled {
        let mut slots = Slots {
            themes: self.plan.puzzles.iter().map(|p| p.themes.clone()).collect(),
            spares: self.plan.spares.iter(),
        };
        let processed = self.process(self.plan.distinct_themes(), "themes").await;
        let (mut processed, mut replacements) =
            self.replace_failed_with_spares(&mut slots, processed).await;
        let words_per_theme = self.config.puzzle.words_per_theme;
        if self.config.puzzle.difficulty_mix == Mix::Balanced {
            let outcome_of = outcomes(&processed);
            assembly::mix_by_difficulty(&mut slots.themes, &outcome_of, words_per_theme);
        }
        let mut built = assembly::assemble_all(
            self.plan,
            &slots.themes,
            &outcomes(&processed),
            self.run.service.cache(),
            &self.config.puzzle,
            self.stop,
        );
        let more = self
            .spare_themes_for_unique(&mut slots, &mut built, &mut processed)
            .await;
        replacements.extend(more);
        assembly::log_failed_puzzles(
            &built.failed,
            self.stop.is_cancelled() || self.run.service.fatal_error().is_some(),
        );
        let outcome_of = outcomes(&processed);
        let slots_filled = slots
            .themes
            .iter()
            .flatten()
            .filter(|t| outcome_of[t.as_str()].is_ok())
            .count();
        Assembled {
            themes: processed,
            puzzles: built.puzzles,
            failed_puzzles: built.failed,
            replacements,
            slots_filled,
        }
    }

    /// Processes `themes` under a progress bar named `what`; each finished theme's texts go to
    /// the cache CSV.
    async fn process(&self, themes: Vec<String>, what: &str) -> Processed {
        let failed = self.embed_in_batches(&themes).await;
        if failed.is_empty() {
            return self.score(themes, what).await;
        }
        let kept: Vec<String> = themes
            .iter()
            .filter(|t| !failed.contains_key(*t))
            .cloned()
            .collect();
        let mut scored: HashMap<String, ThemeOutcome> =
            self.score(kept, what).await.into_iter().collect();
        themes
            .into_iter()
            .map(|t| {
                let outcome = match failed.get(&t) {
                    Some(why) => Err(ThemeError::Batch(why.clone())),
                    None => scored.remove(&t).expect("every kept theme is scored"),
                };
                (t, outcome)
            })
            .collect()
    }

    /// Batch mode: embeds the texts of `themes` the cache lacks through Batch API jobs.
    /// Returns the themes that lost a text (with the reason); a step that cannot go on stops
    /// the run with its error.
    async fn embed_in_batches(&self, themes: &[String]) -> HashMap<String, String> {
        let Some(batch) = self.batch else {
            return HashMap::new();
        };
        if self.must_stop() {
            return HashMap::new();
        }
        let cache = self.run.service.cache();
        let texts = super::forecast::texts_of_themes(
            self.inputs,
            themes,
            self.config.puzzle.words_per_theme,
        );
        let keys: Vec<String> = texts.iter().map(|t| crate::cache::key(t)).collect();
        let missing: Vec<String> = texts
            .into_iter()
            .zip(cache.get_many(&keys))
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| t)
            .collect();
        let failed_texts = match batch
            .embed(missing, cache, &self.run.journal, self.progress, self.stop)
            .await
        {
            Ok(failed) => failed,
            Err(super::batch::BatchError::Interrupted) => return HashMap::new(),
            Err(e) => {
                self.run
                    .service
                    .stop_with(crate::embed::EmbedError::Batch(e.to_string()));
                return HashMap::new();
            }
        };
        if failed_texts.is_empty() {
            return HashMap::new();
        }
        let mut failed = HashMap::new();
        for theme in themes {
            let texts = self.inputs.texts_to_embed(theme, 0).unwrap_or_default();
            let why = texts
                .iter()
                .find_map(|t| failed_texts.get(&crate::cache::key(t)));
            if let Some(why) = why {
                failed.insert(theme.clone(), why.clone());
            }
        }
        failed
    }

    /// Scores `themes` with the engine (embedding what the cache lacks, unless batch mode did).
    async fn score(&self, themes: Vec<String>, what: &str) -> Processed {
        let run = self.run;
        let bar = Progress::new(self.progress, what, themes.len() as u64);
        let cache = run.service.cache();
        let outcomes = self
            .engine
            .process(&themes, &bar, &mut |_, worked| {
                run.prefetch.one_more();
                worked.map(|t| {
                    let rows = cache_rows(&t);
                    cache.mark_exported(rows.iter().map(|r| r.key.as_str()));
                    run.cache_csv.add(rows);
                    t.scores()
                })
            })
            .await;
        bar.finish();
        themes.into_iter().zip(outcomes).collect()
    }

    /// Whether the run must not start more work (a signal, or a provider error that ends it).
    fn must_stop(&self) -> bool {
        self.stop.is_cancelled() || self.run.service.fatal_error().is_some()
    }

    /// Replaces failed slots with spare themes, processing them in rounds as needed; returns
    /// every theme processed and the replacements made.
    async fn replace_failed_with_spares(
        &self,
        slots: &mut Slots<'_>,
        mut processed: Processed,
    ) -> (Processed, Vec<Replacement>) {
        let mut replacements = Vec::new();
        loop {
            let reason_of: HashMap<&str, String> = processed
                .iter()
                .filter_map(|(t, o)| Some((t.as_str(), o.as_ref().err()?.to_string())))
                .collect();
            let failed = spares::failed_slots(&slots.themes, |t| reason_of.contains_key(t));
            if failed.is_empty() || self.must_stop() {
                break;
            }
            let batch: Vec<String> = slots.spares.by_ref().take(failed.len()).cloned().collect();
            if batch.is_empty() {
                break;
            }
            let done = self.process(batch, "spares").await;
            let good = done
                .iter()
                .filter(|(_, o)| o.is_ok())
                .map(|(t, _)| t.clone());
            replacements.extend(spares::fill_with_spares(
                &mut slots.themes,
                &failed,
                good,
                |p| self.plan.puzzles[p].id,
                |t| reason_of[t].clone(),
            ));
            drop(reason_of);
            processed.extend(done);
        }
        (processed, replacements)
    }

    /// `require_unique`'s last resort: spare themes in place of a puzzle's own, a round of
    /// spares at a time (as many as puzzles still without a single solution), until every
    /// puzzle has one or the spares run out. Returns the replacements made.
    async fn spare_themes_for_unique(
        &self,
        slots: &mut Slots<'_>,
        built: &mut assembly::Built,
        processed: &mut Processed,
    ) -> Vec<Replacement> {
        let mut replacements = Vec::new();
        let mut unplaced: Vec<String> = Vec::new();
        while !built.not_unique.is_empty() && !self.stop.is_cancelled() {
            let batch: Vec<String> = slots
                .spares
                .by_ref()
                .take(built.not_unique.len())
                .cloned()
                .collect();
            if batch.is_empty() || self.run.service.fatal_error().is_some() {
                break;
            }
            let done = self.process(batch, "spares").await;
            unplaced.extend(
                done.iter()
                    .filter(|(_, o)| o.is_ok())
                    .map(|(t, _)| t.clone()),
            );
            processed.extend(done);
            replacements.extend(assembly::unique_with_spares(
                built,
                self.plan,
                &mut slots.themes,
                &mut unplaced,
                &outcomes(processed),
                self.run.service.cache(),
                &self.config.puzzle,
            ));
        }
        for &p in &built.not_unique {
            let id = self.plan.puzzles[p].id;
            if let Some(f) = built.failed.iter_mut().find(|f| f.puzzle_id == id) {
                f.error
                    .push_str(", and no spare theme in place of one of its own gives it one");
            }
        }
        replacements
    }
}
