//! `puzzle_generation`: the shape of the puzzles, the assembly's weights, the difficulty
//! options ([`PuzzleSettings`]), and the largest plan the memory available holds.

use super::validate::{Validator, fmt_number};
use super::{ConfigError, raw};

/// Puzzle shape and seed (`puzzle_generation`).
#[derive(Debug, Clone)]
pub struct PuzzleSettings {
    pub total_puzzle_count: usize,
    pub words_per_theme: usize,
    pub themes_per_puzzle: usize,
    pub random_seed: i64,
    /// Weight of group coherence in the assembly objective (`crate::assemble::Weights`).
    pub coherence_weight: f64,
    /// Weight of the ambiguity penalty in the assembly objective.
    pub ambiguity_weight: f64,
    /// `puzzle_generation.ambiguity_margin`: a word whose margin (own-theme similarity minus
    /// its best similarity to another theme of the puzzle) is below this is flagged ambiguous
    /// in the review page (default [`DEFAULT_AMBIGUITY_MARGIN`]), and a red herring.
    pub ambiguity_margin: f64,
    /// `puzzle_generation.require_unique`: swap words until the blind solver finds each
    /// puzzle's intended groups; a puzzle where no swap does fails (default false).
    pub require_unique: bool,
    /// `puzzle_generation.red_herrings`: at least this many words per puzzle that pull toward
    /// another group while the puzzle keeps one solution (default 0: none planted).
    pub red_herrings: usize,
    /// `puzzle_generation.difficulty_mix`: how themes are grouped into puzzles
    /// (`DifficultyMix`; default `in_order`, the original's).
    pub difficulty_mix: DifficultyMix,
}

/// How the themes are grouped into puzzles (`puzzle_generation.difficulty_mix`; the grouping
/// itself is `crate::design::mix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DifficultyMix {
    /// The plan's grouping: input order, as the original.
    #[default]
    InOrder,
    /// Each puzzle spans the run's range of difficulty.
    Balanced,
}

impl DifficultyMix {
    /// The name in `params.yaml` and the metadata.
    pub fn name(self) -> &'static str {
        match self {
            DifficultyMix::InOrder => "in_order",
            DifficultyMix::Balanced => "balanced",
        }
    }

    /// Reads a `difficulty_mix` value.
    pub fn parse(s: &str) -> Option<DifficultyMix> {
        match s {
            "in_order" => Some(DifficultyMix::InOrder),
            "balanced" => Some(DifficultyMix::Balanced),
            _ => None,
        }
    }
}

/// Default `puzzle_generation.coherence_weight`, chosen on the evaluation set
/// (docs/QUALITY.md); `crate::assemble::Weights::DEFAULT` holds the same.
pub const DEFAULT_COHERENCE_WEIGHT: f64 = 4.0;
/// Default `puzzle_generation.ambiguity_weight` (docs/QUALITY.md).
pub const DEFAULT_AMBIGUITY_WEIGHT: f64 = 2.0;

/// The default `puzzle_generation.ambiguity_margin`.
pub const DEFAULT_AMBIGUITY_MARGIN: f64 = 0.05;

impl PuzzleSettings {
    /// Resolves `puzzle_generation`, then refuses a plan too large for the memory available.
    pub(super) fn resolve(
        v: &Validator,
        pg: &raw::PuzzleGeneration,
    ) -> Result<PuzzleSettings, ConfigError> {
        let puzzle = PuzzleSettings {
            total_puzzle_count: v.at_least(
                "puzzle_generation.total_puzzle_count",
                pg.total_puzzle_count.unwrap_or(10),
                1,
            )?,
            words_per_theme: match (pg.words_per_theme, pg.words_per_puzzle) {
                (None, Some(n)) => v.at_least("puzzle_generation.words_per_puzzle", n, 1)?,
                (n, _) => v.at_least("puzzle_generation.words_per_theme", n.unwrap_or(4), 1)?,
            },
            themes_per_puzzle: v.at_least(
                "puzzle_generation.themes_per_puzzle",
                pg.themes_per_puzzle.unwrap_or(4),
                1,
            )?,
            random_seed: pg.random_seed.unwrap_or(42),
            coherence_weight: v.non_negative(
                "puzzle_generation.coherence_weight",
                pg.coherence_weight.unwrap_or(DEFAULT_COHERENCE_WEIGHT),
            )?,
            ambiguity_weight: v.non_negative(
                "puzzle_generation.ambiguity_weight",
                pg.ambiguity_weight.unwrap_or(DEFAULT_AMBIGUITY_WEIGHT),
            )?,
            ambiguity_margin: ambiguity_margin(v, pg.ambiguity_margin)?,
            require_unique: pg.require_unique.unwrap_or(false),
            red_herrings: 0,
            difficulty_mix: match pg.difficulty_mix.as_deref() {
                None => DifficultyMix::default(),
                Some(name) => DifficultyMix::parse(name).ok_or_else(|| {
                    v.invalid(
                        "puzzle_generation.difficulty_mix",
                        "in_order or balanced",
                        name,
                    )
                })?,
            },
        };
        let words = (puzzle.themes_per_puzzle as i64).saturating_mul(puzzle.words_per_theme as i64);
        let red_herrings = pg.red_herrings.unwrap_or(0);
        if !(0..=words).contains(&red_herrings) {
            return Err(v.invalid(
                "puzzle_generation.red_herrings",
                &format!("an integer from 0 to {words} (the words of a puzzle)"),
                &red_herrings.to_string(),
            ));
        }
        let puzzle = PuzzleSettings {
            red_herrings: red_herrings as usize,
            ..puzzle
        };
        puzzle.check_fits(v)?;
        Ok(puzzle)
    }

    /// Checked before any work: a plan that cannot fit must not start (nor abort later).
    fn check_fits(&self, v: &Validator) -> Result<(), ConfigError> {
        let (budget, why) = slot_budget();
        if self.themes_per_puzzle > budget {
            return Err(v.invalid(
                "puzzle_generation.themes_per_puzzle",
                &format!("at most {budget} ({why})"),
                &self.themes_per_puzzle.to_string(),
            ));
        }
        let most_puzzles = budget / self.themes_per_puzzle;
        if self.total_puzzle_count > most_puzzles {
            return Err(v.invalid(
                "puzzle_generation.total_puzzle_count",
                &format!(
                    "at most {most_puzzles} with {} themes per puzzle ({why})",
                    self.themes_per_puzzle
                ),
                &self.total_puzzle_count.to_string(),
            ));
        }
        Ok(())
    }
}

/// `puzzle_generation.ambiguity_margin`: a finite number from 0 to 2 (a margin is a difference
/// of two cosines), default [`DEFAULT_AMBIGUITY_MARGIN`].
fn ambiguity_margin(v: &Validator, value: Option<f64>) -> Result<f64, ConfigError> {
    let value = value.unwrap_or(DEFAULT_AMBIGUITY_MARGIN);
    if !(value.is_finite() && (0.0..=2.0).contains(&value)) {
        return Err(v.invalid(
            "puzzle_generation.ambiguity_margin",
            "a number from 0 to 2 (a difference of two cosine similarities)",
            &fmt_number(value),
        ));
    }
    Ok(value)
}

/// Most theme slots (`total_puzzle_count x themes_per_puzzle`) one run plans, however much
/// memory the machine has.
pub const MAX_SLOTS: usize = 10_000_000;

/// Memory a run holds per theme slot at its peak (the plan, the assembled puzzles and the
/// output structures): measured 0.93 KB (`/usr/bin/time -f %M`, 20,000 and 100,000 puzzles of
/// 4 themes, local model), rounded up.
pub const BYTES_PER_SLOT: u64 = 1024;

/// How many theme slots this run may plan, and why: [`MAX_SLOTS`], or fewer when the memory
/// available now (`MemAvailable` in `/proc/meminfo`) holds fewer at [`BYTES_PER_SLOT`].
fn slot_budget() -> (usize, String) {
    budget_for(available_memory())
}

/// [`slot_budget`] with `available` bytes of memory (None: not known).
pub(super) fn budget_for(available: Option<u64>) -> (usize, String) {
    let fixed = || {
        (
            MAX_SLOTS,
            format!("a run plans at most {MAX_SLOTS} theme slots"),
        )
    };
    let Some(available) = available else {
        return fixed();
    };
    let fits = usize::try_from(available / BYTES_PER_SLOT).unwrap_or(usize::MAX);
    if fits >= MAX_SLOTS {
        return fixed();
    }
    (
        fits,
        format!(
            "the largest plan that fits in the {} MB of memory available, at about 1 KB per \
             theme slot",
            available >> 20
        ),
    )
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (None where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}
