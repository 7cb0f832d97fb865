//! Puzzles from processed themes: the difficulty mix regroups the slots (opt-in), each
//! puzzle is assembled and refined toward the design goals (`crate::design`), and a puzzle
//! that only lacks a single solution gets spare themes in place of its own, one at a time,
//! until the blind solver finds the intended split (`puzzle_generation.require_unique`).
//!
//! Pure and synchronous: the pipeline processes the themes (and the spares) and calls these.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{ASSEMBLY_GRACE, MAX_LOGGED_FAILURES};
use crate::assemble::{Puzzle, Weights, assemble};
use crate::cache::Cache;
use crate::config::PuzzleSettings;
use crate::design::refine::RefineError;
use crate::design::{Goals, mix, refine};
use crate::engine::ThemeOutcome;
use crate::plan::Plan;
use crate::report::shapes::{FailedPuzzle, Replacement, puzzle_key};
use crate::words::{ThemeResult, ThemeScores};

/// The puzzles of a plan, and those that could not be built.
pub(super) struct Built {
    pub puzzles: Vec<Puzzle>,
    pub failed: Vec<FailedPuzzle>,
    /// Indices in the plan of the failed puzzles that only lack a single solution.
    pub not_unique: Vec<usize>,
}

/// Assembles each puzzle from its slots. A theme's vectors are read back from the cache when
/// its first puzzle is assembled (its best `pool` words only: more can never be chosen) and
/// dropped after its last, so memory holds the themes of the puzzles at hand, not all of
/// them. A signal stops assembly too: what is assembled within [`ASSEMBLY_GRACE`] of it is
/// kept, the rest skipped with a warning.
pub(super) fn assemble_all(
    plan: &Plan,
    slots: &[Vec<String>],
    outcome_of: &HashMap<&str, &ThemeOutcome>,
    cache: &Cache,
    settings: &PuzzleSettings,
    stop: &CancellationToken,
) -> Built {
    let sizes = Sizes {
        themes_per_puzzle: settings.themes_per_puzzle,
        words_per_theme: settings.words_per_theme,
    };
    let mut puzzles = Vec::new();
    let mut failed = Vec::new();
    let mut not_unique = Vec::new();
    let mut deadline = None;
    let mut open = OpenThemes::new(slots, sizes.pool());
    for (i, (planned, themes)) in plan.puzzles.iter().zip(slots).enumerate() {
        if i % 16 == 0 && stop.is_cancelled() {
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + ASSEMBLY_GRACE);
            if Instant::now() >= deadline {
                tracing::warn!(
                    "stopping: {} of {} puzzle(s) not assembled",
                    plan.puzzles.len() - i,
                    plan.puzzles.len()
                );
                break;
            }
        }
        let results: Result<Vec<Arc<ThemeResult>>, String> = themes
            .iter()
            .map(|t| match outcome_of[t.as_str()] {
                Ok(scores) => open.take(scores, cache),
                Err(e) => Err(format!("theme {t:?} failed: {e} (no spare theme left)")),
            })
            .collect();
        let assembled = results.map_err(Unbuilt::other).and_then(|results| {
            let refs: Vec<&ThemeResult> = results.iter().map(|r| &**r).collect();
            build(planned.id, &refs, settings)
        });
        open.release(themes);
        match assembled {
            Ok(p) => puzzles.push(p),
            Err(e) => {
                if e.not_unique {
                    not_unique.push(i);
                }
                failed.push(FailedPuzzle {
                    puzzle_id: planned.id,
                    themes: themes.clone(),
                    error: e.error,
                });
            }
        }
    }
    Built {
        puzzles,
        failed,
        not_unique,
    }
}

/// Why a puzzle was not built.
struct Unbuilt {
    error: String,
    /// Only `puzzle_generation.require_unique` stood in the way: other themes may do.
    not_unique: bool,
}

impl Unbuilt {
    fn other(error: String) -> Unbuilt {
        Unbuilt {
            error,
            not_unique: false,
        }
    }
}

/// One puzzle from its themes' results: assembled, then refined toward the design goals.
fn build(id: usize, themes: &[&ThemeResult], settings: &PuzzleSettings) -> Result<Puzzle, Unbuilt> {
    let weights = Weights {
        coherence: settings.coherence_weight,
        ambiguity: settings.ambiguity_weight,
    };
    let puzzle = assemble(id, themes, settings.words_per_theme, weights)
        .map_err(|e| Unbuilt::other(e.to_string()))?;
    let goals = Goals::of(settings);
    if !goals.any() {
        return Ok(puzzle);
    }
    refine(puzzle, themes, goals)
        .map(|r| r.puzzle)
        .map_err(|e| Unbuilt {
            not_unique: matches!(e, RefineError::NotUnique { .. }),
            error: e.to_string(),
        })
}

/// `difficulty_mix: balanced`: regroups the themes of the puzzles whose themes all succeeded
/// so that each spans the run's range of difficulty (`crate::design::mix`); the others keep
/// their themes (they fail or were never whole).
pub(super) fn mix_by_difficulty(
    slots: &mut [Vec<String>],
    outcome_of: &HashMap<&str, &ThemeOutcome>,
    per_theme: usize,
) {
    let whole: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].iter().all(|t| outcome_of[t.as_str()].is_ok()))
        .collect();
    // Each distinct theme's mean similarity of its best words, then its estimate.
    let mut names: Vec<&str> = whole
        .iter()
        .flat_map(|&i| slots[i].iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let sims: Vec<(&str, f64)> = names
        .iter()
        .map(|&t| {
            let ranked = match outcome_of[t] {
                Ok(scores) => &scores.ranked[..per_theme.min(scores.ranked.len())],
                Err(_) => &[][..],
            };
            let sum: f64 = ranked.iter().map(|(_, s)| f64::from(*s)).sum();
            (t, sum / ranked.len().max(1) as f64)
        })
        .collect();
    let estimate: HashMap<&str, f64> = names.iter().copied().zip(mix::estimates(&sims)).collect();
    let chosen: Vec<Vec<String>> = whole.iter().map(|&i| slots[i].clone()).collect();
    match mix::balance(&chosen, |t| estimate[t]) {
        Some(grouped) => {
            for (&i, themes) in whole.iter().zip(grouped) {
                slots[i] = themes;
            }
        }
        None => tracing::warn!(
            "difficulty_mix: balanced would put a theme twice in one puzzle; the plan's \
             grouping (input order) is kept"
        ),
    }
}

/// The puzzle shape assembly works to.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    themes_per_puzzle: usize,
    words_per_theme: usize,
}

impl Sizes {
    /// How many of a theme's best words assembly needs: with `k` words per group and `t`
    /// themes, the other groups take at most `(t - 1) x k` words, so a theme's chosen words
    /// are always among its best `t x k`.
    fn pool(self) -> usize {
        self.themes_per_puzzle.max(1) * self.words_per_theme
    }
}

/// The themes whose vectors are in memory for assembly, each with the number of slots still
/// to assemble that use it.
struct OpenThemes {
    uses: HashMap<String, usize>,
    open: HashMap<String, Arc<ThemeResult>>,
    pool: usize,
}

impl OpenThemes {
    fn new(slots: &[Vec<String>], pool: usize) -> OpenThemes {
        let mut uses = HashMap::new();
        for t in slots.iter().flatten() {
            *uses.entry(t.clone()).or_insert(0) += 1;
        }
        OpenThemes {
            uses,
            open: HashMap::new(),
            pool,
        }
    }

    /// The theme with the vectors of its best words, read from the cache on first use.
    fn take(&mut self, scores: &ThemeScores, cache: &Cache) -> Result<Arc<ThemeResult>, String> {
        if let Some(r) = self.open.get(&scores.theme) {
            return Ok(Arc::clone(r));
        }
        let best = &scores.ranked[..self.pool.min(scores.ranked.len())];
        let r = cache.theme_result(&scores.theme, best).ok_or_else(|| {
            format!(
                "the vectors of theme {:?} could not be read back from the cache",
                scores.theme
            )
        })?;
        let r = Arc::new(r);
        self.open.insert(scores.theme.clone(), Arc::clone(&r));
        Ok(r)
    }

    /// One more use of each of `themes` is done; themes used no more leave memory.
    fn release(&mut self, themes: &[String]) {
        for t in themes {
            if let Some(n) = self.uses.get_mut(t) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.uses.remove(t);
                    self.open.remove(t);
                }
            }
        }
    }
}

/// Logs the failed puzzles, one line each; when the run stopped early (a signal, a refused
/// key), one line for them all: the run's last line says why it stopped.
pub(super) fn log_failed_puzzles(failed: &[FailedPuzzle], run_stopped: bool) {
    if run_stopped && failed.len() > 1 {
        tracing::warn!(
            "{} puzzle(s) not made because the run stopped (each listed in puzzle_metadata.json)",
            failed.len()
        );
        return;
    }
    for f in failed.iter().take(MAX_LOGGED_FAILURES) {
        tracing::warn!("{} failed: {}", puzzle_key(f.puzzle_id), f.error);
    }
    if failed.len() > MAX_LOGGED_FAILURES {
        tracing::warn!(
            "... and {} more failed puzzle(s) (all listed in puzzle_metadata.json)",
            failed.len() - MAX_LOGGED_FAILURES
        );
    }
}

/// `require_unique`'s last resort for the puzzles in `built.not_unique`: each tries the
/// processed spare themes in `spares` (in order) in place of each of its themes (in order), and
/// takes the first combination the blind solver finds as intended. A spare that serves leaves
/// `spares`; those that serve nowhere stay for later puzzles. Returns the replacements made;
/// the puzzles built move from `built.failed` to `built.puzzles` (kept in plan order) and
/// their slots change.
pub(super) fn unique_with_spares(
    built: &mut Built,
    plan: &Plan,
    slots: &mut [Vec<String>],
    spares: &mut Vec<String>,
    outcome_of: &HashMap<&str, &ThemeOutcome>,
    cache: &Cache,
    settings: &PuzzleSettings,
) -> Vec<Replacement> {
    let pool = Sizes {
        themes_per_puzzle: settings.themes_per_puzzle,
        words_per_theme: settings.words_per_theme,
    }
    .pool();
    let result_of = |t: &str| -> Option<ThemeResult> {
        let scores = outcome_of.get(t)?.as_ref().ok()?;
        cache.theme_result(t, &scores.ranked[..pool.min(scores.ranked.len())])
    };
    let mut replacements = Vec::new();
    let mut still = Vec::new();
    for &p in &built.not_unique {
        let id = plan.puzzles[p].id;
        let own: Option<Vec<ThemeResult>> = slots[p].iter().map(|t| result_of(t)).collect();
        let Some(own) = own else {
            still.push(p);
            continue;
        };
        let found = spares.iter().enumerate().find_map(|(k, spare)| {
            if slots[p].contains(spare) {
                return None;
            }
            let spare_result = result_of(spare)?;
            (0..own.len()).find_map(|at| {
                let mut refs: Vec<&ThemeResult> = own.iter().collect();
                refs[at] = &spare_result;
                build(id, &refs, settings)
                    .ok()
                    .map(|puzzle| (k, at, puzzle))
            })
        });
        let Some((k, at, puzzle)) = found else {
            still.push(p);
            continue;
        };
        let spare = spares.remove(k);
        let replaced = std::mem::replace(&mut slots[p][at], spare.clone());
        tracing::info!(
            "{}: no single solution with theme {replaced:?}; using spare theme {spare:?}",
            puzzle_key(id)
        );
        replacements.push(Replacement {
            puzzle_id: id,
            failed_theme: replaced,
            reason: "no single solution (puzzle_generation.require_unique)".to_string(),
            spare_theme: spare,
        });
        built.failed.retain(|f| f.puzzle_id != id);
        built.puzzles.push(puzzle);
    }
    built.puzzles.sort_by_key(|p| p.id);
    built.not_unique = still;
    replacements
}
