//! Assembly: turning a puzzle's processed themes into word groups.
//!
//! The original took each theme's top-k independently, so one word (or `spoon` and `Spoons`)
//! could land in two groups of the same puzzle. Here the words of a puzzle are chosen jointly:
//! every word (by [`dedupe_key`]) goes to at most one theme, and the total similarity of all
//! chosen words to their own themes is maximised. That is an assignment problem (slots =
//! themes x words_per_theme, columns = distinct words), solved exactly with the Kuhn-Munkres
//! algorithm. Without conflicts it gives the same groups as independent top-k.
//!
//! With `puzzle_generation.coherence_weight` or `ambiguity_weight` above 0 ([`Weights`]), the
//! objective also rewards groups whose words hold together and penalises words nearly as close
//! to another theme of the puzzle; a local search (`search.rs`) improves the Kuhn-Munkres
//! choice for it.

use std::collections::HashMap;

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

mod search;

pub use search::{AMBIGUITY_THRESHOLD, Weights};

use crate::embed::{Vector, cosine};
use crate::words::{ScoredWord, ThemeResult, dedupe_key};

/// One theme's group in a puzzle, words best first.
#[derive(Debug, Clone)]
pub struct Group {
    pub theme: String,
    /// The theme's vector.
    pub vector: Vector,
    pub words: Vec<ScoredWord>,
    /// Aligned with `words`: each word's similarity to its own theme minus its highest
    /// similarity to another theme of the puzzle. Below zero, the word sits closer to another
    /// group's theme than to its own; a small margin makes the word ambiguous for a player.
    /// Filled by [`assemble`] (empty for a group not yet placed in a puzzle).
    pub margins: Vec<f32>,
    /// Mean pairwise cosine similarity of the group's words: how well they hold together
    /// (1.0 for a group of one word). Filled by [`assemble`].
    pub coherence: f32,
}

/// A finished puzzle.
#[derive(Debug, Clone)]
pub struct Puzzle {
    pub id: usize,
    pub groups: Vec<Group>,
    /// Smallest margin over all words of the puzzle (see [`Group::margins`]). Higher is a
    /// cleaner puzzle.
    pub min_margin: f32,
}

/// Why a puzzle's groups could not be chosen.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AssembleError {
    #[error(
        "not enough distinct words: {themes} themes x {per_theme} words need {needed} different \
         words, each fitting its theme, but the candidates allow only {possible}"
    )]
    NotEnoughWords {
        themes: usize,
        per_theme: usize,
        needed: usize,
        possible: usize,
    },
}

/// Weight of a (slot, word) pair that is not allowed: far below any real total.
const FORBIDDEN: i64 = -1_000_000_000_000;
/// Similarities become integers for the solver at this scale (six decimals).
const SCALE: f32 = 1_000_000.0;

/// The Kuhn-Munkres choice of a puzzle's words: per theme, the chosen words (best first) and
/// every word the theme may take, by column (distinct word of the puzzle).
pub(crate) struct Assignment<'a> {
    pub chosen: Vec<Vec<(usize, &'a ScoredWord)>>,
    pub allowed: Vec<HashMap<usize, &'a ScoredWord>>,
    pub columns: usize,
}

/// Chooses `per_theme` words for each theme, each word in at most one group, maximising the
/// total similarity of words to their own theme.
pub fn select_jointly(
    themes: &[&ThemeResult],
    per_theme: usize,
) -> Result<Vec<Group>, AssembleError> {
    let a = assign(themes, per_theme)?;
    Ok(groups_of(themes, a.chosen))
}

/// Groups from chosen words, in theme order, each group's words best first.
fn groups_of(themes: &[&ThemeResult], chosen: Vec<Vec<(usize, &ScoredWord)>>) -> Vec<Group> {
    themes
        .iter()
        .zip(chosen)
        .map(|(theme, words)| {
            let mut words: Vec<ScoredWord> = words.into_iter().map(|(_, w)| w.clone()).collect();
            words.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
            Group {
                theme: theme.theme.clone(),
                vector: theme.vector.clone(),
                words,
                margins: Vec::new(),
                coherence: 0.0,
            }
        })
        .collect()
}

/// Solves the assignment of words to theme slots (see the module documentation).
pub(crate) fn assign<'a>(
    themes: &[&'a ThemeResult],
    per_theme: usize,
) -> Result<Assignment<'a>, AssembleError> {
    // Columns: distinct words across the puzzle's themes.
    let mut column_of: HashMap<String, usize> = HashMap::new();
    for t in themes {
        for w in &t.ranked {
            let next = column_of.len();
            column_of.entry(dedupe_key(&w.word)).or_insert(next);
        }
    }
    let rows = themes.len() * per_theme;
    let columns = column_of.len();
    let not_enough = |possible| AssembleError::NotEnoughWords {
        themes: themes.len(),
        per_theme,
        needed: rows,
        possible,
    };
    if columns < rows {
        return Err(not_enough(columns));
    }
    let mut weights = Matrix::new(rows, columns, FORBIDDEN);
    // Which of a theme's words sits in each column.
    let mut allowed: Vec<HashMap<usize, &ScoredWord>> = Vec::with_capacity(themes.len());
    for (t, theme) in themes.iter().enumerate() {
        let mut words = HashMap::new();
        for w in &theme.ranked {
            let col = column_of[&dedupe_key(&w.word)];
            words.insert(col, w);
            let weight = (w.similarity * SCALE).round() as i64;
            for slot in 0..per_theme {
                weights[(t * per_theme + slot, col)] = weight;
            }
        }
        allowed.push(words);
    }
    let (_, assignment) = kuhn_munkres(&weights);
    let chosen: Vec<Vec<(usize, &ScoredWord)>> = (0..themes.len())
        .map(|t| {
            assignment[t * per_theme..(t + 1) * per_theme]
                .iter()
                .filter_map(|col| allowed[t].get(col).map(|w| (*col, *w)))
                .collect()
        })
        .collect();
    let placed = chosen.iter().map(Vec::len).sum();
    if placed < rows {
        return Err(not_enough(placed));
    }
    Ok(Assignment {
        chosen,
        allowed,
        columns,
    })
}

/// Chooses each theme's words for the objective of `weights`: the Kuhn-Munkres choice
/// (exactly [`select_jointly`] when both weights are 0), then improved by a local search
/// (`search.rs`).
pub fn select(
    themes: &[&ThemeResult],
    per_theme: usize,
    weights: Weights,
) -> Result<Vec<Group>, AssembleError> {
    let a = assign(themes, per_theme)?;
    if weights.is_zero() {
        return Ok(groups_of(themes, a.chosen));
    }
    let chosen = search::improve(themes, per_theme, weights, a);
    Ok(groups_of(themes, chosen))
}

/// Each word's own-theme similarity minus its best similarity to another theme of the
/// puzzle; `themes` in the order of `groups`.
fn margins(group: usize, words: &[ScoredWord], themes: &[&ThemeResult]) -> Vec<f32> {
    words
        .iter()
        .map(|w| {
            let closest_other = themes
                .iter()
                .enumerate()
                .filter(|(t, _)| *t != group)
                .map(|(_, t)| cosine(&w.vector, &t.vector))
                .fold(f32::NEG_INFINITY, f32::max);
            if closest_other.is_finite() {
                w.similarity - closest_other
            } else {
                0.0
            }
        })
        .collect()
}

/// Mean pairwise cosine similarity of `words` (1.0 for fewer than two words).
pub fn coherence(words: &[ScoredWord]) -> f32 {
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for (i, a) in words.iter().enumerate() {
        for b in &words[i + 1..] {
            sum += cosine(&a.vector, &b.vector);
            pairs += 1;
        }
    }
    if pairs == 0 { 1.0 } else { sum / pairs as f32 }
}

/// Builds puzzle `id` from its processed themes (in slot order).
pub fn assemble(
    id: usize,
    themes: &[&ThemeResult],
    per_theme: usize,
    weights: Weights,
) -> Result<Puzzle, AssembleError> {
    Ok(finish(id, select(themes, per_theme, weights)?, themes))
}

/// Puzzle `id` from its groups (in the order of `themes`): margins, coherence, the smallest
/// margin. For groups whose words were changed after [`select`] (the design layer's swaps).
pub fn finish(id: usize, mut groups: Vec<Group>, themes: &[&ThemeResult]) -> Puzzle {
    for group in groups.iter_mut() {
        group
            .words
            .sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    }
    for (g, group) in groups.iter_mut().enumerate() {
        group.margins = margins(g, &group.words, themes);
        group.coherence = coherence(&group.words);
    }
    let min_margin = groups
        .iter()
        .flat_map(|g| g.margins.iter().copied())
        .fold(f32::INFINITY, f32::min);
    Puzzle {
        id,
        groups,
        min_margin: if min_margin.is_finite() {
            min_margin
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(v: &[f32]) -> Vector {
        Vector::from(v.to_vec())
    }

    fn theme(name: &str, v: &[f32], words: &[(&str, f32)]) -> ThemeResult {
        let mut ranked: Vec<ScoredWord> = words
            .iter()
            .map(|(w, s)| ScoredWord {
                word: w.to_string(),
                similarity: *s,
                vector: vector(&[*s, 1.0 - *s]),
            })
            .collect();
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        ThemeResult {
            theme: name.into(),
            vector: vector(v),
            ranked,
        }
    }

    /// What the original did: each theme's top-k on its own.
    fn independent_top_k(themes: &[&ThemeResult], k: usize) -> Vec<Vec<String>> {
        themes
            .iter()
            .map(|t| t.ranked.iter().take(k).map(|w| w.word.clone()).collect())
            .collect()
    }

    fn total(groups: &[Group]) -> f32 {
        groups
            .iter()
            .flat_map(|g| &g.words)
            .map(|w| w.similarity)
            .sum()
    }

    fn keys(groups: &[Group]) -> Vec<String> {
        groups
            .iter()
            .flat_map(|g| g.words.iter().map(|w| dedupe_key(&w.word)))
            .collect()
    }

    #[test]
    fn joint_selection_beats_top_k_that_would_reuse_a_word() {
        // "Mercury" is the best word of both themes; "spoons" and "Spoon" are one word.
        let planets = theme(
            "Planets",
            &[1.0, 0.0],
            &[
                ("Mercury", 0.90),
                ("Venus", 0.85),
                ("Mars", 0.80),
                ("Pluto", 0.30),
            ],
        );
        let gods = theme(
            "Roman gods",
            &[0.0, 1.0],
            &[
                ("Mercury", 0.95),
                ("Jupiter", 0.70),
                ("Juno", 0.65),
                ("Vulcan", 0.60),
            ],
        );
        let kitchen = theme(
            "Kitchen",
            &[0.5, 0.5],
            &[("spoons", 0.9), ("Whisk", 0.8), ("Ladle", 0.7)],
        );
        let cutlery = theme(
            "Cutlery",
            &[0.3, 0.7],
            &[("Spoon", 0.95), ("Fork", 0.85), ("Knife", 0.70)],
        );
        let themes = [&planets, &gods, &kitchen, &cutlery];

        let naive = independent_top_k(&themes, 2);
        let naive_keys: Vec<String> = naive.iter().flatten().map(|w| dedupe_key(w)).collect();
        let distinct: std::collections::HashSet<_> = naive_keys.iter().collect();
        assert!(
            distinct.len() < naive_keys.len(),
            "top-k reuses a word: {naive:?}"
        );

        let groups = select_jointly(&themes, 2).unwrap();
        let chosen = keys(&groups);
        let distinct: std::collections::HashSet<_> = chosen.iter().collect();
        assert_eq!(distinct.len(), 8, "{chosen:?}");
        // Mercury goes where the total is highest: to the gods (0.95 + 0.70 + 0.85 + 0.80 =
        // 3.30 against 0.90 + 0.85 + 0.70 + 0.65 = 3.10); Spoon to Cutlery (3.30 against 3.25).
        let words: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.words.iter().map(|w| w.word.as_str()).collect())
            .collect();
        assert_eq!(
            words,
            vec![
                vec!["Venus", "Mars"],
                vec!["Mercury", "Jupiter"],
                vec!["Whisk", "Ladle"],
                vec!["Spoon", "Fork"]
            ]
        );
        let joint_total = total(&groups);
        assert!((joint_total - (0.85 + 0.80 + 0.95 + 0.70 + 0.8 + 0.7 + 0.95 + 0.85)).abs() < 1e-5);
    }

    /// Words per group, by name, in group order.
    fn names(groups: &[Group]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.words.iter().map(|w| w.word.clone()).collect())
            .collect()
    }

    /// Four themes over 12 shared words with conflicts (each word wanted by two themes) and
    /// vectors that make coherence and ambiguity matter.
    fn conflicted() -> Vec<ThemeResult> {
        let words = |t: usize| -> Vec<(String, f32, Vec<f32>)> {
            (0..12)
                .map(|w| {
                    let near = w % 4 == t || (w + 1) % 4 == t;
                    let sim = if near { 0.5 + 0.03 * w as f32 } else { 0.1 };
                    let v = vec![
                        (w % 4) as f32,
                        1.0,
                        (w % 3) as f32,
                        (t == w % 4) as u8 as f32,
                    ];
                    (format!("w{w}"), sim, v)
                })
                .collect()
        };
        (0..4)
            .map(|t| {
                let mut ranked: Vec<ScoredWord> = words(t)
                    .into_iter()
                    .map(|(word, similarity, v)| ScoredWord {
                        word,
                        similarity,
                        vector: vector(&v),
                    })
                    .collect();
                ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
                let mut v = vec![0.0; 4];
                v[t] = 1.0;
                ThemeResult {
                    theme: format!("T{t}"),
                    vector: vector(&v),
                    ranked,
                }
            })
            .collect()
    }

    #[test]
    fn zero_weights_give_the_joint_selection() {
        let themes = conflicted();
        let refs: Vec<&ThemeResult> = themes.iter().collect();
        let joint = select_jointly(&refs, 3).unwrap();
        assert_eq!(
            names(&select(&refs, 3, Weights::NONE).unwrap()),
            names(&joint)
        );
        // The case has conflicts: some word is among the top 3 of two themes.
        let tops: Vec<String> = refs
            .iter()
            .flat_map(|t| t.ranked[..3].iter().map(|w| w.word.clone()))
            .collect();
        let distinct: std::collections::HashSet<&String> = tops.iter().collect();
        assert!(distinct.len() < tops.len(), "{tops:?}");
        // And the weights matter on it: the defaults choose differently.
        assert_ne!(
            names(&select(&refs, 3, Weights::DEFAULT).unwrap()),
            names(&joint)
        );
    }

    /// Two themes where A's sixth word (beyond the 2 x 2 = 4 a cut list keeps) is the one most
    /// like A's best word.
    fn deep_coherent_word() -> Vec<ThemeResult> {
        let a = theme(
            "A",
            &[1.0, 0.0],
            &[
                ("a1", 0.9),
                ("a2", 0.5),
                ("a3", 0.49),
                ("a4", 0.48),
                ("a5", 0.47),
                ("a6", 0.46),
            ],
        );
        let mut a = a;
        for w in &mut a.ranked {
            w.vector = vector(if w.word == "a1" || w.word == "a6" {
                &[1.0, 0.0]
            } else {
                &[0.0, 1.0]
            });
        }
        let b = theme("B", &[0.0, 1.0], &[("b1", 0.9), ("b2", 0.8), ("b3", 0.7)]);
        vec![a, b]
    }

    #[test]
    fn ranked_lists_cut_to_themes_times_words_give_the_same_choice() {
        let deep = deep_coherent_word();
        let cut: Vec<ThemeResult> = deep
            .iter()
            .map(|t| ThemeResult {
                ranked: t.ranked[..4.min(t.ranked.len())].to_vec(),
                ..t.clone()
            })
            .collect();
        let full_choice = select(&deep.iter().collect::<Vec<_>>(), 2, Weights::DEFAULT).unwrap();
        let cut_choice = select(&cut.iter().collect::<Vec<_>>(), 2, Weights::DEFAULT).unwrap();
        assert_eq!(names(&full_choice), names(&cut_choice));

        let themes = conflicted();
        let refs: Vec<&ThemeResult> = themes.iter().collect();
        let per_theme = 2;
        let cut: Vec<ThemeResult> = themes
            .iter()
            .map(|t| ThemeResult {
                ranked: t.ranked[..themes.len() * per_theme].to_vec(),
                ..t.clone()
            })
            .collect();
        let cut_refs: Vec<&ThemeResult> = cut.iter().collect();
        for w in [
            Weights::DEFAULT,
            Weights {
                coherence: 2.0,
                ambiguity: 0.5,
            },
        ] {
            assert_eq!(
                names(&select(&refs, per_theme, w).unwrap()),
                names(&select(&cut_refs, per_theme, w).unwrap()),
                "{w:?}"
            );
        }
    }

    #[test]
    fn without_conflicts_it_equals_top_k() {
        let a = theme("A", &[1.0, 0.0], &[("a1", 0.9), ("a2", 0.8), ("a3", 0.1)]);
        let b = theme("B", &[0.0, 1.0], &[("b1", 0.7), ("b2", 0.6), ("b3", 0.5)]);
        let groups = select_jointly(&[&a, &b], 2).unwrap();
        let words: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.words.iter().map(|w| w.word.clone()).collect())
            .collect();
        assert_eq!(words, independent_top_k(&[&a, &b], 2));
    }

    #[test]
    fn too_few_distinct_words_is_an_error_not_a_duplicate() {
        let a = theme("A", &[1.0, 0.0], &[("x", 0.9), ("y", 0.8)]);
        let b = theme("B", &[0.0, 1.0], &[("X", 0.7), ("ys", 0.6), ("z", 0.5)]);
        let e = select_jointly(&[&a, &b], 2).unwrap_err();
        assert_eq!(
            e,
            AssembleError::NotEnoughWords {
                themes: 2,
                per_theme: 2,
                needed: 4,
                possible: 3
            }
        );
    }

    #[test]
    fn margin_is_own_minus_closest_other_theme() {
        let a = theme("A", &[1.0, 0.0], &[("a1", 0.9)]);
        let b = theme("B", &[0.0, 1.0], &[("b1", 0.2)]);
        let p = assemble(1, &[&a, &b], 1, Weights::NONE).unwrap();
        // a1's vector is (0.9, 0.1): own 0.9, cosine to B = 0.1/|v|.
        let v = [0.9f32, 0.1];
        let to_b = 0.1 / (v[0] * v[0] + v[1] * v[1]).sqrt();
        let w = [0.2f32, 0.8];
        let to_a = 0.2 / (w[0] * w[0] + w[1] * w[1]).sqrt();
        let expected = (0.9 - to_b).min(0.2 - to_a);
        assert!((p.min_margin - expected).abs() < 1e-6, "{}", p.min_margin);
        assert!((p.groups[0].margins[0] - (0.9 - to_b)).abs() < 1e-6);
        assert!((p.groups[1].margins[0] - (0.2 - to_a)).abs() < 1e-6);
    }

    #[test]
    fn coherence_is_the_mean_pairwise_cosine() {
        let a = theme("A", &[1.0, 0.0], &[("a1", 1.0), ("a2", 0.0), ("a3", 1.0)]);
        // Vectors (1,0), (0,1), (1,0): cosines 0, 1, 0.
        let c = coherence(&a.ranked);
        assert!((c - 1.0 / 3.0).abs() < 1e-6, "{c}");
        assert_eq!(coherence(&a.ranked[..1]), 1.0);
    }
}
