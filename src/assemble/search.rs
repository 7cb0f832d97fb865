//! The quality-aware choice of a puzzle's words: the objective with group coherence and an
//! ambiguity penalty, and the deterministic local search that improves the Kuhn-Munkres
//! choice under it.
//!
//! Objective, over the chosen words `w` of each group `g` (theme `t_g`):
//!
//! ```text
//!   sum sim(w, t_g)
//! + coherence_weight x sum over groups of coherence(g)        (mean pairwise cosine)
//! - ambiguity_weight x sum max(0, AMBIGUITY_THRESHOLD - margin(w))
//! ```
//!
//! where `margin(w)` is `sim(w, t_g)` minus the best similarity of `w` to another theme of the
//! puzzle (the margin [`super::assemble`] reports). Coherence makes it no longer a linear
//! assignment, so the Kuhn-Munkres choice (the optimum of the first term alone) is improved by
//! first-improvement moves until none improves, at most [`MAX_PASSES`] passes: replace a chosen
//! word with an unused candidate of the same theme, or swap two words between groups. A word
//! (by [`dedupe_key`](crate::words::dedupe_key)) stays in at most one group.
//!
//! Only each theme's best `themes x words_per_theme` words are candidates for a move, so a
//! `ranked` list cut to that length gives the same choice. (For the similarity term alone a
//! theme never needs more: the other themes take fewer words than that. With coherence a word
//! further down could score higher; the objective does not look that deep, by design.)

use std::collections::HashMap;

use super::Assignment;
use crate::embed::cosine;
use crate::words::{ScoredWord, ThemeResult};

/// A word with a margin below this is penalised by the ambiguity term, in proportion to the
/// shortfall.
pub const AMBIGUITY_THRESHOLD: f32 = 0.05;

/// Most moves applied to one puzzle; a pass over all moves that finds no improvement ends the
/// search earlier (each applied move strictly improves the objective, so it cannot cycle).
pub(super) const MAX_MOVES: usize = 64;

/// An improvement smaller than this is rounding, not a better choice (and could cycle).
const EPSILON: f64 = 1e-7;

/// The weights of the assembly objective (`puzzle_generation.coherence_weight`,
/// `ambiguity_weight`). Both 0: the total own-theme similarity alone, as before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub coherence: f64,
    pub ambiguity: f64,
}

impl Weights {
    /// The objective of plain joint selection.
    pub const NONE: Weights = Weights {
        coherence: 0.0,
        ambiguity: 0.0,
    };

    /// The defaults of `params.yaml`, chosen on the evaluation set (docs/QUALITY.md).
    pub const DEFAULT: Weights = Weights {
        coherence: crate::config::DEFAULT_COHERENCE_WEIGHT,
        ambiguity: crate::config::DEFAULT_AMBIGUITY_WEIGHT,
    };

    pub fn is_zero(&self) -> bool {
        self.coherence == 0.0 && self.ambiguity == 0.0
    }
}

/// A word a theme may take.
struct Candidate<'a> {
    column: usize,
    word: &'a ScoredWord,
    /// Its linear part of the objective in this theme: similarity minus the ambiguity penalty.
    value: f64,
    /// Its vector's index in [`Search::vectors`].
    vector: usize,
}

/// The search state: per theme its candidates, the chosen ones, and which words are taken.
struct Search<'a> {
    coherence_per_pair: f64,
    pools: Vec<Vec<Candidate<'a>>>,
    /// Per theme: candidate index by column (`usize::MAX`: the theme cannot take the word).
    index: Vec<Vec<usize>>,
    chosen: Vec<Vec<usize>>,
    taken: Vec<bool>,
    /// The distinct vectors of the candidates (a word several themes may take is embedded
    /// once: one shared vector), each with 1 / its length (0 for a zero vector, whose cosines
    /// are 0 as in [`cosine`]), so a cosine is one dot product.
    vectors: Vec<(&'a [f32], f32)>,
    /// Cosines between `vectors`, computed on first use (NaN: not yet).
    memo: Vec<f32>,
}

/// Improves the Kuhn-Munkres choice `a` for `weights`; returns the chosen words per theme.
pub(super) fn improve<'a>(
    themes: &[&'a ThemeResult],
    per_theme: usize,
    weights: Weights,
    a: Assignment<'a>,
) -> Vec<Vec<(usize, &'a ScoredWord)>> {
    let mut s = Search::new(themes, per_theme, weights, a);
    for _ in 0..MAX_MOVES {
        if !s.step() {
            break;
        }
    }
    s.chosen
        .iter()
        .enumerate()
        .map(|(t, c)| {
            c.iter()
                .map(|&i| (s.pools[t][i].column, s.pools[t][i].word))
                .collect()
        })
        .collect()
}

/// Each theme's candidates: its best `themes x per_theme` words, and any word already chosen.
fn pool<'a>(t: usize, limit: usize, a: &Assignment<'a>) -> Vec<Candidate<'a>> {
    let mut words: Vec<(usize, &ScoredWord)> = a.allowed[t].iter().map(|(c, w)| (*c, *w)).collect();
    words.sort_by(|x, y| {
        y.1.similarity
            .total_cmp(&x.1.similarity)
            .then(x.0.cmp(&y.0))
    });
    let is_chosen = |col: usize| a.chosen[t].iter().any(|(c, _)| *c == col);
    words
        .into_iter()
        .enumerate()
        .filter(|(rank, (col, _))| *rank < limit || is_chosen(*col))
        .map(|(_, (column, word))| Candidate {
            column,
            word,
            value: f64::from(word.similarity),
            vector: usize::MAX,
        })
        .collect()
}

/// Subtracts the ambiguity penalty from each candidate's value: its similarity to its theme
/// minus its best similarity to another theme, below [`AMBIGUITY_THRESHOLD`], times `weight`.
fn penalise_ambiguity(
    pools: &mut [Vec<Candidate>],
    vectors: &[(&[f32], f32)],
    themes: &[&ThemeResult],
    weight: f64,
) {
    if weight == 0.0 || themes.len() < 2 {
        return;
    }
    // Cosine of every distinct vector to every theme, computed once.
    let to_theme: Vec<Vec<f32>> = vectors
        .iter()
        .map(|(v, _)| themes.iter().map(|t| cosine(v, &t.vector)).collect())
        .collect();
    for (t, pool) in pools.iter_mut().enumerate() {
        for c in pool {
            let other = to_theme[c.vector]
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != t)
                .map(|(_, s)| *s)
                .fold(f32::NEG_INFINITY, f32::max);
            let margin = c.word.similarity - other;
            c.value -= weight * f64::from((AMBIGUITY_THRESHOLD - margin).max(0.0));
        }
    }
}

/// Numbers the distinct vectors of the candidates (by identity: the embedding service hands out
/// one shared vector per text) and sets each candidate's [`Candidate::vector`].
#[allow(clippy::type_complexity)]
fn distinct_vectors<'a>(
    mut pools: Vec<Vec<Candidate<'a>>>,
) -> (Vec<Vec<Candidate<'a>>>, Vec<(&'a [f32], f32)>) {
    let mut id_of: HashMap<*const f32, usize> = HashMap::new();
    let mut vectors = Vec::new();
    for c in pools.iter_mut().flatten() {
        let v: &'a [f32] = &c.word.vector;
        c.vector = *id_of.entry(v.as_ptr()).or_insert_with(|| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            vectors.push((v, if norm > 0.0 { 1.0 / norm } else { 0.0 }));
            vectors.len() - 1
        });
    }
    (pools, vectors)
}

impl<'a> Search<'a> {
    fn new(
        themes: &[&'a ThemeResult],
        per_theme: usize,
        weights: Weights,
        a: Assignment<'a>,
    ) -> Search<'a> {
        let limit = themes.len() * per_theme;
        let pools: Vec<Vec<Candidate>> = (0..themes.len()).map(|t| pool(t, limit, &a)).collect();
        let mut index = vec![vec![usize::MAX; a.columns]; themes.len()];
        for (t, p) in pools.iter().enumerate() {
            for (i, c) in p.iter().enumerate() {
                index[t][c.column] = i;
            }
        }
        let mut taken = vec![false; a.columns];
        let chosen: Vec<Vec<usize>> = a
            .chosen
            .iter()
            .enumerate()
            .map(|(t, ws)| {
                ws.iter()
                    .map(|(col, _)| {
                        taken[*col] = true;
                        index[t][*col]
                    })
                    .collect()
            })
            .collect();
        let (mut pools, vectors) = distinct_vectors(pools);
        penalise_ambiguity(&mut pools, &vectors, themes, weights.ambiguity);
        let pairs = per_theme * per_theme.saturating_sub(1) / 2;
        Search {
            coherence_per_pair: if pairs == 0 {
                0.0
            } else {
                weights.coherence / pairs as f64
            },
            pools,
            index,
            chosen,
            taken,
            memo: vec![f32::NAN; vectors.len() * vectors.len()],
            vectors,
        }
    }

    /// Cosine of candidate `i` of theme `t` and candidate `j` of theme `u`, computed once.
    fn cos(&mut self, (t, i): (usize, usize), (u, j): (usize, usize)) -> f64 {
        let (x, y) = (self.pools[t][i].vector, self.pools[u][j].vector);
        let n = self.vectors.len();
        if self.memo[x * n + y].is_nan() {
            let ((a, inverse_a), (b, inverse_b)) = (self.vectors[x], self.vectors[y]);
            let dot: f32 = a.iter().zip(b).map(|(p, q)| p * q).sum();
            let c = dot * inverse_a * inverse_b;
            self.memo[x * n + y] = c;
            self.memo[y * n + x] = c;
        }
        f64::from(self.memo[x * n + y])
    }

    /// Weighted coherence of candidate `i` with theme `t`'s chosen words other than slot `skip`.
    fn pull(&mut self, t: usize, i: usize, skip: usize) -> f64 {
        if self.coherence_per_pair == 0.0 {
            return 0.0;
        }
        let mut sum = 0.0;
        for slot in 0..self.chosen[t].len() {
            if slot != skip {
                let m = self.chosen[t][slot];
                sum += self.cos((t, i), (t, m));
            }
        }
        self.coherence_per_pair * sum
    }

    /// Change of the objective if slot `s` of theme `t` took candidate `i` instead.
    fn gain(&mut self, t: usize, s: usize, i: usize) -> f64 {
        let old = self.chosen[t][s];
        self.pools[t][i].value - self.pools[t][old].value + self.pull(t, i, s)
            - self.pull(t, old, s)
    }

    /// The best replacement of a chosen word by an unused candidate of its theme.
    fn best_replacement(&mut self, best: &mut (f64, Move)) {
        for t in 0..self.pools.len() {
            for s in 0..self.chosen[t].len() {
                for i in 0..self.pools[t].len() {
                    if self.taken[self.pools[t][i].column] {
                        continue;
                    }
                    let gain = self.gain(t, s, i);
                    if gain > best.0 {
                        *best = (gain, Move::Replace { t, s, i });
                    }
                }
            }
        }
    }

    /// The best swap of two words of two groups, where each theme may take the other's word.
    fn best_swap(&mut self, best: &mut (f64, Move)) {
        let themes = self.pools.len();
        for t in 0..themes {
            for u in t + 1..themes {
                for s in 0..self.chosen[t].len() {
                    for r in 0..self.chosen[u].len() {
                        let (a, b) = (self.chosen[t][s], self.chosen[u][r]);
                        let in_u = self.index[u][self.pools[t][a].column];
                        let in_t = self.index[t][self.pools[u][b].column];
                        if in_u == usize::MAX || in_t == usize::MAX {
                            continue;
                        }
                        let gain = self.gain(t, s, in_t) + self.gain(u, r, in_u);
                        if gain > best.0 {
                            *best = (gain, Move::Swap([(t, s, in_t), (u, r, in_u)]));
                        }
                    }
                }
            }
        }
    }

    /// Applies the best improving move; false when none improves by more than [`EPSILON`].
    fn step(&mut self) -> bool {
        let mut best = (EPSILON, Move::None);
        self.best_replacement(&mut best);
        self.best_swap(&mut best);
        match best.1 {
            Move::None => return false,
            Move::Replace { t, s, i } => {
                let old = self.chosen[t][s];
                self.taken[self.pools[t][old].column] = false;
                self.taken[self.pools[t][i].column] = true;
                self.chosen[t][s] = i;
            }
            Move::Swap(places) => {
                for (t, s, i) in places {
                    self.chosen[t][s] = i;
                }
            }
        }
        true
    }
}

/// A change of the chosen words.
#[derive(Debug, Clone, Copy)]
enum Move {
    None,
    /// Slot `s` of theme `t` takes candidate `i` (an unused word).
    Replace {
        t: usize,
        s: usize,
        i: usize,
    },
    /// Each (theme, slot) takes the candidate given: the other group's word.
    Swap([(usize, usize, usize); 2]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{select, select_jointly};
    use crate::embed::Vector;

    fn word(w: &str, similarity: f32, v: &[f32]) -> ScoredWord {
        ScoredWord {
            word: w.into(),
            similarity,
            vector: Vector::from(v.to_vec()),
        }
    }

    fn theme(name: &str, v: &[f32], mut ranked: Vec<ScoredWord>) -> ThemeResult {
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        ThemeResult {
            theme: name.into(),
            vector: Vector::from(v.to_vec()),
            ranked,
        }
    }

    fn names(groups: &[crate::assemble::Group]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| {
                let mut w: Vec<String> = g.words.iter().map(|w| w.word.clone()).collect();
                w.sort();
                w
            })
            .collect()
    }

    /// Two themes whose Kuhn-Munkres choice takes a word slightly closer to the theme name
    /// but unlike the rest of the group ("x" for A), where a slightly less similar word that
    /// is like the others ("a3") makes a coherent group.
    fn coherence_case() -> (ThemeResult, ThemeResult) {
        let a = theme(
            "A",
            &[1.0, 0.0, 0.0],
            vec![
                word("a1", 0.60, &[1.0, 0.0, 0.0]),
                word("a2", 0.59, &[1.0, 0.1, 0.0]),
                word("x", 0.58, &[0.0, 0.0, 1.0]),
                word("a3", 0.55, &[1.0, 0.0, 0.1]),
            ],
        );
        let b = theme(
            "B",
            &[0.0, 1.0, 0.0],
            vec![
                word("b1", 0.7, &[0.0, 1.0, 0.0]),
                word("b2", 0.6, &[0.1, 1.0, 0.0]),
                word("b3", 0.5, &[0.0, 1.0, 0.1]),
            ],
        );
        (a, b)
    }

    #[test]
    fn coherence_weight_prefers_words_that_belong_together() {
        let (a, b) = coherence_case();
        let plain = select(&[&a, &b], 3, Weights::NONE).unwrap();
        assert_eq!(names(&plain)[0], vec!["a1", "a2", "x"]);
        let w = Weights {
            coherence: 1.0,
            ambiguity: 0.0,
        };
        let coherent = select(&[&a, &b], 3, w).unwrap();
        assert_eq!(names(&coherent)[0], vec!["a1", "a2", "a3"]);
        assert_eq!(names(&coherent)[1], vec!["b1", "b2", "b3"]);
        let c = |g: &[crate::assemble::Group]| super::super::coherence(&g[0].words);
        assert!(c(&coherent) > c(&plain));
    }

    #[test]
    fn ambiguity_weight_avoids_a_word_close_to_another_theme() {
        // "m" is A's second-best word but sits nearly as close to theme B (margin ~0.01);
        // "a2" is a little less similar to A and far from B.
        let a = theme(
            "A",
            &[1.0, 0.0],
            vec![
                word("a1", 0.8, &[1.0, 0.0]),
                word("m", 0.71, &[0.71, 0.70]),
                word("a2", 0.69, &[0.95, 0.05]),
            ],
        );
        let b = theme(
            "B",
            &[0.0, 1.0],
            vec![word("b1", 0.9, &[0.0, 1.0]), word("b2", 0.8, &[0.1, 1.0])],
        );
        let plain = select(&[&a, &b], 2, Weights::NONE).unwrap();
        assert_eq!(names(&plain)[0], vec!["a1", "m"]);
        let w = Weights {
            coherence: 0.0,
            ambiguity: 1.0,
        };
        let clear = select(&[&a, &b], 2, w).unwrap();
        assert_eq!(names(&clear)[0], vec!["a1", "a2"]);
        assert_eq!(names(&clear)[1], vec!["b1", "b2"]);
    }

    #[test]
    fn swaps_fix_two_words_in_each_others_group() {
        // All four words are candidates of both themes; by theme similarity "p" goes to A and
        // "q" to B, but "p" is like B's other word and "q" like A's.
        let words = |sp: f32, sq: f32| {
            vec![
                word("a", 0.9, &[1.0, 0.0]),
                word("b", 0.1, &[0.0, 1.0]),
                word("p", sp, &[0.0, 1.0]),
                word("q", sq, &[1.0, 0.0]),
            ]
        };
        let a = theme("A", &[1.0, 0.0], words(0.55, 0.5));
        let mut b_words = words(0.5, 0.55);
        b_words[0].similarity = 0.1;
        b_words[1].similarity = 0.9;
        let b = theme("B", &[0.0, 1.0], b_words);
        let plain = select_jointly(&[&a, &b], 2).unwrap();
        assert_eq!(names(&plain), vec![vec!["a", "p"], vec!["b", "q"]]);
        let w = Weights {
            coherence: 1.0,
            ambiguity: 0.0,
        };
        let coherent = select(&[&a, &b], 2, w).unwrap();
        assert_eq!(names(&coherent), vec![vec!["a", "q"], vec!["b", "p"]]);
    }
}
