//! Puzzle design: what a player will meet in an assembled puzzle.
//!
//! A layer between [`crate::assemble`] and [`crate::report`]: it reads a puzzle's groups (theme
//! names, chosen words and their vectors) and says how hard each group is
//! ([`difficulty`]: a score and a colour level) and whether the words, without their theme
//! names, split back into the intended groups ([`solver`]: the best partition by similarity,
//! and how far ahead of the runner-up it is). It changes nothing in the puzzle: the outputs
//! gain keys, the original's keys stay as they were.

pub mod difficulty;
pub mod file;
pub mod mix;
pub mod refine;
pub mod solver;

use crate::assemble::Puzzle;
pub use difficulty::{COLOURS, Cue, Difficulty};
pub use mix::Mix;
pub use refine::{Goals, Herring, RefineError, Refined, refine};
pub use solver::{Solution, SolveError, Verdict};

/// The design figures of one puzzle.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub difficulty: Difficulty,
    /// The blind solver's verdict, or why it was not computed (puzzle size).
    pub solver: Result<Verdict, SolveError>,
    /// The puzzle's red herrings, when the run asks for them.
    pub herrings: Option<Herrings>,
}

/// A puzzle's red herrings, and why there are fewer than asked, if there are.
#[derive(Debug, Clone, PartialEq)]
pub struct Herrings {
    pub list: Vec<Herring>,
    pub short: Option<String>,
}

/// Reads the design figures of `puzzle`; `goals` says whether red herrings are asked for and
/// what counts as one.
pub fn design(puzzle: &Puzzle, goals: &Goals) -> Design {
    let signals: Vec<difficulty::GroupSignals<'_>> = puzzle
        .groups
        .iter()
        .map(|g| difficulty::GroupSignals {
            theme: &g.theme,
            similarity: mean(g.words.iter().map(|w| f64::from(w.similarity))),
            coherence: f64::from(g.coherence),
        })
        .collect();
    let solver = blind(puzzle);
    let herrings = (goals.red_herrings > 0).then(|| {
        let unique = solver.as_ref().is_ok_and(|v| v.unique);
        let list = if unique {
            refine::herrings(puzzle, goals.herring_margin)
        } else {
            Vec::new()
        };
        let short = (list.len() < goals.red_herrings).then(|| match &solver {
            Ok(v) if !v.unique => format!(
                "no red herring: the puzzle has no single solution (the blind solver finds {} \
                 of {} groups)",
                v.groups_found,
                puzzle.groups.len()
            ),
            Ok(_) => format!(
                "{} of {} red herrings: no other candidate pulls toward another group without \
                 breaking the single solution",
                list.len(),
                goals.red_herrings
            ),
            Err(e) => format!("no red herring: {e}"),
        });
        Herrings { list, short }
    });
    Design {
        difficulty: difficulty::difficulty(&signals),
        solver,
        herrings,
    }
}

/// The blind solver on a puzzle's words, judged against its groups.
fn blind(puzzle: &Puzzle) -> Result<Verdict, SolveError> {
    let size = puzzle.groups.first().map_or(0, |g| g.words.len());
    if puzzle.groups.iter().any(|g| g.words.len() != size) {
        return Err(SolveError::Uneven {
            words: puzzle.groups.iter().map(|g| g.words.len()).sum(),
            size,
        });
    }
    let vectors: Vec<&[f32]> = puzzle
        .groups
        .iter()
        .flat_map(|g| &g.words)
        .map(|w| &w.vector[..])
        .collect();
    let solution = solver::solve(&vectors, size)?;
    Ok(solver::verdict(
        &solution,
        &solver::consecutive(puzzle.groups.len(), size),
    ))
}

/// The blind solver on a puzzle read from a file (`vectors` aligned with its words), judged
/// against its groups as listed.
pub fn solve_listed(
    puzzle: &file::PuzzleWords,
    vectors: &[&[f32]],
) -> Result<(Solution, Verdict), SolveError> {
    let solution = solver::solve(vectors, puzzle.group_size)?;
    let groups = puzzle.words.len() / puzzle.group_size;
    let verdict = solver::verdict(&solution, &solver::consecutive(groups, puzzle.group_size));
    Ok((solution, verdict))
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}
