//! Puzzles changed on purpose after assembly: one solution (`puzzle_generation.require_unique`)
//! and red herrings (`puzzle_generation.red_herrings`).
//!
//! Both work by swapping a chosen word for another candidate of the same theme (from the
//! theme's best words, each word at most once per puzzle), and judge each swap with the blind
//! solver ([`super::solver`]):
//!
//! - **one solution**: while the solver's best split is not the intended one, one of the words
//!   it puts with another group is swapped: the swap that leaves the intended split least
//!   behind the best (or furthest ahead), at most [`MAX_SWAPS`] times;
//! - **red herrings**: a red herring is a word whose margin (its similarity to its own theme
//!   minus its best similarity to another theme of the puzzle) is below the ambiguity margin:
//!   it pulls toward that other group (its *decoy*), while the solver still splits the words
//!   as intended. Until the puzzle has the number asked, the candidate with the strongest pull
//!   whose swap (for the group's weakest word that is not a herring) keeps one solution is
//!   taken. When none can, the puzzle keeps fewer ([`super::design`] says why).

use std::collections::HashSet;

use crate::assemble::{Group, Puzzle, finish};
use crate::embed::cosine;
use crate::words::{ScoredWord, ThemeResult, dedupe_key};

use super::solver::{self, Verdict};

/// Most swaps made to reach one solution.
pub const MAX_SWAPS: usize = 8;

/// What to change in a puzzle.
#[derive(Debug, Clone, Copy)]
pub struct Goals {
    pub require_unique: bool,
    pub red_herrings: usize,
    /// A word with a margin below this is a red herring (`puzzle_generation.ambiguity_margin`).
    pub herring_margin: f32,
}

impl Goals {
    /// The goals `puzzle_generation` sets.
    pub fn of(p: &crate::config::PuzzleSettings) -> Goals {
        Goals {
            require_unique: p.require_unique,
            red_herrings: p.red_herrings,
            herring_margin: p.ambiguity_margin as f32,
        }
    }

    /// True when the puzzles are to be changed at all.
    pub fn any(&self) -> bool {
        self.require_unique || self.red_herrings > 0
    }
}

/// A word planted (or found) to tempt players toward another group.
#[derive(Debug, Clone, PartialEq)]
pub struct Herring {
    pub word: String,
    /// Its own group's theme.
    pub group: String,
    /// The theme it pulls toward.
    pub decoy_for: String,
    /// Its similarity to `decoy_for`.
    pub pull: f32,
    /// Its similarity to its own theme minus `pull`.
    pub margin: f32,
}

/// A refined puzzle.
#[derive(Debug, Clone)]
pub struct Refined {
    pub puzzle: Puzzle,
    /// Words swapped in (each for one chosen by the assembly).
    pub swaps: usize,
}

/// Why a puzzle could not be given one solution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefineError {
    #[error(
        "no single solution: after {swaps} word swap(s) the blind solver still finds \
         {found} of {groups} groups (puzzle_generation.require_unique)"
    )]
    NotUnique {
        swaps: usize,
        found: usize,
        groups: usize,
    },
    #[error(transparent)]
    Solver(#[from] solver::SolveError),
}

/// How the intended split fares with the blind solver.
struct Standing {
    verdict: Verdict,
    /// Above 0: the intended split is the best, by this much; below 0: the best split beats it
    /// by this much.
    lead: f32,
    best: solver::Partition,
}

/// Working state: each group's words, and every theme's candidates.
struct Draft<'a> {
    themes: &'a [&'a ThemeResult],
    words: Vec<Vec<ScoredWord>>,
}

impl Draft<'_> {
    /// The solver's verdict, its best split, and the intended split's lead over the best other
    /// split (below 0: how far it is behind the best).
    fn standing(&self) -> Result<Standing, solver::SolveError> {
        let size = self.words[0].len();
        let vectors: Vec<&[f32]> = self.words.iter().flatten().map(|w| &w.vector[..]).collect();
        let s = solver::solve(&vectors, size)?;
        let verdict = solver::verdict(&s, &solver::consecutive(self.words.len(), size));
        let lead = if verdict.groups_found == self.words.len() {
            verdict.gap
        } else {
            let intended: f32 = self
                .words
                .iter()
                .map(|g| {
                    let mut sum = 0.0;
                    for (i, a) in g.iter().enumerate() {
                        for b in &g[i + 1..] {
                            sum += cosine(&a.vector, &b.vector);
                        }
                    }
                    sum
                })
                .sum();
            intended - s.best_score
        };
        Ok(Standing {
            verdict,
            lead,
            best: s.best,
        })
    }

    fn used(&self) -> HashSet<String> {
        self.words
            .iter()
            .flatten()
            .map(|w| dedupe_key(&w.word))
            .collect()
    }

    /// Candidates of group `g` not in the puzzle.
    fn unused(&self, g: usize) -> Vec<ScoredWord> {
        let used = self.used();
        self.themes[g]
            .ranked
            .iter()
            .filter(|w| !used.contains(&dedupe_key(&w.word)))
            .cloned()
            .collect()
    }

    /// The word's best similarity to another theme, and that theme.
    fn pull(&self, g: usize, w: &ScoredWord) -> (f32, usize) {
        (0..self.themes.len())
            .filter(|&h| h != g)
            .map(|h| (cosine(&w.vector, &self.themes[h].vector), h))
            .fold((f32::NEG_INFINITY, g), |a, b| if b.0 > a.0 { b } else { a })
    }

    fn herrings(&self, margin: f32) -> Vec<Herring> {
        herrings(&self.puzzle(0), margin)
    }

    fn puzzle(&self, id: usize) -> Puzzle {
        let groups = self
            .words
            .iter()
            .zip(self.themes)
            .map(|(words, t)| Group {
                theme: t.theme.clone(),
                vector: t.vector.clone(),
                words: words.clone(),
                margins: Vec::new(),
                coherence: 0.0,
            })
            .collect();
        finish(id, groups, self.themes)
    }

    /// The solver's verdict with `w` in place of word `i` of group `g` (the puzzle is left as
    /// it was).
    fn trial(
        &mut self,
        g: usize,
        i: usize,
        w: &ScoredWord,
    ) -> Result<Standing, solver::SolveError> {
        let old = std::mem::replace(&mut self.words[g][i], w.clone());
        let v = self.standing();
        self.words[g][i] = old;
        v
    }
}

/// Changes `puzzle` (assembled from `themes`, in its groups' order) toward `goals`.
pub fn refine(
    puzzle: Puzzle,
    themes: &[&ThemeResult],
    goals: Goals,
) -> Result<Refined, RefineError> {
    let id = puzzle.id;
    let mut d = Draft {
        themes,
        words: puzzle.groups.into_iter().map(|g: Group| g.words).collect(),
    };
    let groups = d.words.len();
    let mut now = d.standing()?;
    let mut swaps = 0;
    let need_unique = goals.require_unique || goals.red_herrings > 0;
    while need_unique && !now.verdict.unique && swaps < MAX_SWAPS {
        match best_fix(&mut d, &now)? {
            Some(better) => {
                now = better;
                swaps += 1;
            }
            None => break,
        }
    }
    let verdict = now.verdict;
    if goals.require_unique && !verdict.unique {
        return Err(RefineError::NotUnique {
            swaps,
            found: verdict.groups_found,
            groups,
        });
    }
    // Red herrings need the single solution: a puzzle without one keeps its words.
    if goals.red_herrings > 0 && verdict.unique {
        while d.herrings(goals.herring_margin).len() < goals.red_herrings
            && plant(&mut d, goals.herring_margin)?
        {
            swaps += 1;
        }
    }
    Ok(Refined {
        puzzle: d.puzzle(id),
        swaps,
    })
}

/// The red herrings of a finished puzzle: its words whose margin is below `margin` (each with
/// the other theme it is closest to). Meaningful when the blind solver finds the intended
/// split: otherwise the puzzle is ambiguous, not tempting.
pub fn herrings(puzzle: &Puzzle, margin: f32) -> Vec<Herring> {
    let mut all = Vec::new();
    for (g, group) in puzzle.groups.iter().enumerate() {
        for (w, &m) in group.words.iter().zip(&group.margins) {
            if m >= margin {
                continue;
            }
            let decoy = puzzle
                .groups
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != g)
                .map(|(_, other)| (cosine(&w.vector, &other.vector), other))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((pull, other)) = decoy {
                all.push(Herring {
                    word: w.word.clone(),
                    group: group.theme.clone(),
                    decoy_for: other.theme.clone(),
                    pull,
                    margin: m,
                });
            }
        }
    }
    all
}

/// The swap of a word the solver misplaces that brings the intended split furthest ahead (or
/// least behind), made; `None` when no swap improves on `now`.
fn best_fix(d: &mut Draft<'_>, now: &Standing) -> Result<Option<Standing>, solver::SolveError> {
    let size = d.words[0].len();
    let intended = solver::consecutive(d.words.len(), size);
    // Words whose group in the solver's split is not their intended group.
    let misplaced: Vec<(usize, usize)> = (0..d.words.len())
        .flat_map(|g| (0..size).map(move |i| (g, i)))
        .filter(|&(g, i)| {
            let bit = 1u16 << (g * size + i);
            now.best
                .iter()
                .find(|m| *m & bit != 0)
                .is_some_and(|m| *m != intended[g])
        })
        .collect();
    let mut best: Option<(usize, usize, ScoredWord, Standing)> = None;
    for (g, i) in misplaced {
        for w in d.unused(g) {
            let s = d.trial(g, i, &w)?;
            let to_beat = best.as_ref().map_or(now.lead, |(.., b)| b.lead);
            if s.lead > to_beat {
                best = Some((g, i, w, s));
            }
        }
    }
    Ok(best.map(|(g, i, w, s)| {
        d.words[g][i] = w;
        s
    }))
}

/// Plants one red herring: the strongest pull among the unused candidates whose swap keeps one
/// solution. False when none does.
fn plant(d: &mut Draft<'_>, margin: f32) -> Result<bool, solver::SolveError> {
    let current: HashSet<String> = d.herrings(margin).into_iter().map(|h| h.word).collect();
    let mut options: Vec<(f32, usize, ScoredWord)> = Vec::new();
    for g in 0..d.words.len() {
        for w in d.unused(g) {
            let (pull, h) = d.pull(g, &w);
            if h != g && w.similarity - pull < margin {
                options.push((pull, g, w));
            }
        }
    }
    options.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, g, w) in options {
        // The group's weakest word that is not already a herring makes room.
        let Some(i) = (0..d.words[g].len())
            .filter(|&i| !current.contains(&d.words[g][i].word))
            .min_by(|&a, &b| {
                d.words[g][a]
                    .similarity
                    .total_cmp(&d.words[g][b].similarity)
            })
        else {
            continue;
        };
        if d.trial(g, i, &w)?.verdict.unique {
            d.words[g][i] = w;
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{Weights, assemble};
    use crate::embed::Vector;

    /// A theme on axis `t` of 8 dimensions, with candidates `(name, vector)` scored against it.
    fn theme(t: usize, words: &[(&str, Vec<f32>)]) -> ThemeResult {
        let mut axis = vec![0.0; 8];
        axis[t] = 1.0;
        let vector = Vector::from(axis);
        let mut ranked: Vec<ScoredWord> = words
            .iter()
            .map(|(w, v)| ScoredWord {
                word: w.to_string(),
                similarity: cosine(v, &vector),
                vector: Vector::from(v.clone()),
            })
            .collect();
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        ThemeResult {
            theme: format!("theme {t}"),
            vector,
            ranked,
        }
    }

    /// `lean` on axis `t`, `pull` on axis `other`, and a private axis `4 + k % 4` of `noise`.
    fn word(t: usize, lean: f32, other: usize, pull: f32, k: usize, noise: f32) -> Vec<f32> {
        let mut v = vec![0.0; 8];
        v[t] += lean;
        v[other] += pull;
        v[4 + k % 4] += noise;
        v
    }

    /// Four themes of five candidates: four clear words each; theme 0's fifth pulls toward
    /// theme 1 (a red herring candidate), the others' fifth are plain.
    fn puzzle_themes(herring_pull: f32) -> Vec<ThemeResult> {
        (0..4)
            .map(|t| {
                let mut words: Vec<(String, Vec<f32>)> = (0..4)
                    .map(|k| (format!("w{t}{k}"), word(t, 1.0, (t + 1) % 4, 0.0, k, 0.3)))
                    .collect();
                let fifth = if t == 0 {
                    word(0, 0.7, 1, herring_pull, 0, 0.1)
                } else {
                    word(t, 0.6, (t + 1) % 4, 0.0, 1, 0.5)
                };
                words.push((format!("x{t}"), fifth));
                let refs: Vec<(&str, Vec<f32>)> =
                    words.iter().map(|(w, v)| (w.as_str(), v.clone())).collect();
                theme(t, &refs)
            })
            .collect()
    }

    fn goals(require_unique: bool, red_herrings: usize) -> Goals {
        Goals {
            require_unique,
            red_herrings,
            herring_margin: 0.05,
        }
    }

    fn verdict_of(p: &Puzzle) -> Verdict {
        let v: Vec<&[f32]> = p
            .groups
            .iter()
            .flat_map(|g| &g.words)
            .map(|w| &w.vector[..])
            .collect();
        let s = solver::solve(&v, 4).unwrap();
        solver::verdict(&s, &solver::consecutive(4, 4))
    }

    #[test]
    fn a_red_herring_is_planted_and_the_solution_stays_single() {
        let themes = puzzle_themes(0.68);
        let refs: Vec<&ThemeResult> = themes.iter().collect();
        let p = assemble(1, &refs, 4, Weights::NONE).unwrap();
        assert!(
            herrings(&p, 0.05).is_empty(),
            "the assembly takes the clear words"
        );
        let r = refine(p, &refs, goals(false, 1)).unwrap();
        let h = herrings(&r.puzzle, 0.05);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            (h[0].word.as_str(), h[0].decoy_for.as_str()),
            ("x0", "theme 1")
        );
        assert!(h[0].margin < 0.05);
        assert!(verdict_of(&r.puzzle).unique);
        assert_eq!(r.swaps, 1);
    }

    #[test]
    fn planting_never_breaks_a_single_solution() {
        // Random puzzles: whatever is planted, a puzzle with one solution keeps it, and every
        // listed herring is below the margin.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0
        };
        let mut planted = 0;
        for _ in 0..12 {
            let themes: Vec<ThemeResult> = (0..4)
                .map(|t| {
                    let words: Vec<(String, Vec<f32>)> = (0..8)
                        .map(|k| {
                            let other = (t + 1 + k % 3) % 4;
                            let v = word(t, 0.5 + next(), other, next() * 0.9, k, next());
                            (format!("w{t}{k}"), v)
                        })
                        .collect();
                    let refs: Vec<(&str, Vec<f32>)> =
                        words.iter().map(|(w, v)| (w.as_str(), v.clone())).collect();
                    theme(t, &refs)
                })
                .collect();
            let refs: Vec<&ThemeResult> = themes.iter().collect();
            let p = assemble(1, &refs, 4, Weights::NONE).unwrap();
            let before = herrings(&p, 0.05).len();
            let was_unique = verdict_of(&p).unique;
            let r = refine(p, &refs, goals(false, 3)).unwrap();
            let after = herrings(&r.puzzle, 0.05);
            if was_unique {
                assert!(verdict_of(&r.puzzle).unique);
                assert!(after.len() >= before.min(3));
                planted += after.len() - before;
            }
            assert!(after.iter().all(|h| h.margin < 0.05));
        }
        assert!(planted > 0, "the cases must plant some herrings");
    }

    #[test]
    fn require_unique_swaps_a_misplaced_word_or_fails_saying_so() {
        // Theme 0's best word looks like theme 1's words and theme 1's best like theme 0's:
        // the solver swaps them. Each theme's fifth candidate is plain.
        let mut themes = puzzle_themes(0.0);
        for (t, axis) in [(0, 1), (1, 0)] {
            themes[t].ranked.insert(
                0,
                ScoredWord {
                    word: format!("stray{t}"),
                    similarity: 0.99,
                    vector: Vector::from(word(axis, 1.0, axis, 0.0, 0, 0.0)),
                },
            );
        }
        let refs: Vec<&ThemeResult> = themes.iter().collect();
        let p = assemble(1, &refs, 4, Weights::NONE).unwrap();
        assert!(!verdict_of(&p).unique);
        let r = refine(p.clone(), &refs, goals(true, 0)).unwrap();
        assert!(verdict_of(&r.puzzle).unique);
        assert!(r.swaps >= 1);
        let left = r.puzzle.groups.iter().flat_map(|g| &g.words);
        assert!(left.filter(|w| w.word.starts_with("stray")).count() < 2);

        // Without a candidate to swap in, the puzzle fails with the reason.
        let only: Vec<ThemeResult> = themes
            .iter()
            .map(|t| ThemeResult {
                ranked: t.ranked[..4].to_vec(),
                ..t.clone()
            })
            .collect();
        let refs: Vec<&ThemeResult> = only.iter().collect();
        let p = assemble(1, &refs, 4, Weights::NONE).unwrap();
        let e = refine(p, &refs, goals(true, 0)).unwrap_err();
        assert!(e.to_string().contains("no single solution"), "{e}");
    }
}
