//! Quality figures of puzzles and of a run: per puzzle (`final_puzzles.json`'s `quality`),
//! the run's summary (`puzzle_metadata.json`'s `quality`) and the distributions
//! (`embedding_analysis.json`'s `similarity_stats`).
//!
//! A word's margin is its similarity to its own theme minus its best similarity to another
//! theme of the puzzle; a group's coherence is the mean pairwise cosine of its words
//! (see [`crate::assemble`]).

use crate::assemble::Puzzle;

use super::shapes::{Describe, Histogram, PuzzleQuality, RunQuality};

/// Rounds to six decimals so JSON shows `0.8123` rather than an f32's binary tail.
pub(super) fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// Every word margin of `puzzles`, in puzzle and word order.
pub(super) fn word_margins(puzzles: &[Puzzle]) -> Vec<f64> {
    puzzles
        .iter()
        .flat_map(|p| p.groups.iter().flat_map(|g| &g.margins))
        .map(|m| f64::from(*m))
        .collect()
}

/// Every group coherence of `puzzles`.
pub(super) fn group_coherences(puzzles: &[Puzzle]) -> Vec<f64> {
    puzzles
        .iter()
        .flat_map(|p| &p.groups)
        .map(|g| f64::from(g.coherence))
        .collect()
}

/// The `quality` of one puzzle in `final_puzzles.json`, with each word's similarity to every
/// theme of the puzzle (`theme_similarities`, for the review page's heat map).
pub(super) fn puzzle(p: &Puzzle, theme_similarities: Vec<Vec<f64>>) -> PuzzleQuality {
    let margins: Vec<f64> = p
        .groups
        .iter()
        .flat_map(|g| g.margins.iter().map(|m| round6(*m)))
        .collect();
    let coherence: Vec<f64> = p.groups.iter().map(|g| round6(g.coherence)).collect();
    let weakest = p
        .groups
        .iter()
        .flat_map(|g| g.words.iter().zip(&g.margins))
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(w, _)| w.word.clone())
        .unwrap_or_default();
    let mean = |xs: &[f64]| round(xs.iter().sum::<f64>() / xs.len().max(1) as f64);
    PuzzleQuality {
        min_margin: round6(p.min_margin),
        mean_margin: mean(&margins),
        weakest_word: weakest,
        negative_margin_words: margins.iter().filter(|m| **m < 0.0).count(),
        mean_coherence: mean(&coherence),
        min_coherence: coherence.iter().copied().reduce(f64::min).unwrap_or(0.0),
        word_margins: margins,
        group_coherence: coherence,
        theme_similarities,
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The run's summary in `puzzle_metadata.json`.
pub(super) fn run(puzzles: &[Puzzle]) -> RunQuality {
    let margins = word_margins(puzzles);
    let mins: Vec<f64> = puzzles.iter().map(|p| f64::from(p.min_margin)).collect();
    let coherence = group_coherences(puzzles);
    let means: Vec<f64> = puzzles
        .iter()
        .map(|p| {
            p.groups.iter().map(|g| f64::from(g.coherence)).sum::<f64>()
                / p.groups.len().max(1) as f64
        })
        .collect();
    RunQuality {
        puzzles: puzzles.len(),
        word_margin: Describe::of(&margins),
        puzzle_min_margin: Describe::of(&mins),
        group_coherence: Describe::of(&coherence),
        puzzle_mean_coherence: Describe::of(&means),
        negative_margin_words: margins.iter().filter(|m| **m < 0.0).count(),
        puzzles_with_negative_margin: mins.iter().filter(|m| **m < 0.0).count(),
    }
}

/// Lowest edge, bucket width and bucket count of the word-margin histogram: 0.05 wide from
/// -0.5 to 0.5.
pub const MARGIN_BUCKETS: (f64, f64, usize) = (-0.5, 0.05, 20);

/// The same for group coherence: 0.05 wide from 0 to 1.
pub const COHERENCE_BUCKETS: (f64, f64, usize) = (0.0, 0.05, 20);

/// Counts `xs` in fixed buckets; a value outside the range counts in the first or last bucket.
pub(super) fn histogram(xs: &[f64], (low, width, n): (f64, f64, usize)) -> Histogram {
    let mut counts = vec![0usize; n];
    for x in xs.iter().filter(|x| x.is_finite()) {
        let i = ((x - low) / width).floor().clamp(0.0, (n - 1) as f64) as usize;
        counts[i] += 1;
    }
    Histogram {
        edges: (0..=n).map(|i| round(low + width * i as f64)).collect(),
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::Group;
    use crate::embed::Vector;
    use crate::words::ScoredWord;

    fn group(theme: &str, words: &[(&str, f32)], coherence: f32) -> Group {
        Group {
            theme: theme.into(),
            vector: Vector::from(vec![1.0]),
            words: words
                .iter()
                .map(|(w, _)| ScoredWord {
                    word: w.to_string(),
                    similarity: 0.5,
                    vector: Vector::from(vec![1.0]),
                })
                .collect(),
            margins: words.iter().map(|(_, m)| *m).collect(),
            coherence,
        }
    }

    fn puzzles() -> Vec<Puzzle> {
        vec![
            Puzzle {
                id: 1,
                groups: vec![
                    group("A", &[("a1", 0.3), ("a2", -0.1)], 0.5),
                    group("B", &[("b1", 0.2), ("b2", 0.4)], 0.25),
                ],
                min_margin: -0.1,
            },
            Puzzle {
                id: 2,
                groups: vec![
                    group("C", &[("c1", 0.1), ("c2", 0.1)], 0.75),
                    group("D", &[("d1", 0.3), ("d2", 0.5)], 0.75),
                ],
                min_margin: 0.1,
            },
        ]
    }

    #[test]
    fn puzzle_quality_names_the_weakest_word_and_summarises_groups() {
        let q = puzzle(&puzzles()[0], Vec::new());
        assert_eq!(q.weakest_word, "a2");
        assert_eq!(q.negative_margin_words, 1);
        assert!((q.mean_margin - 0.2).abs() < 1e-6, "{}", q.mean_margin);
        assert_eq!((q.mean_coherence, q.min_coherence), (0.375, 0.25));
        assert_eq!(q.word_margins.len(), 4);
        assert_eq!(q.group_coherence, vec![0.5, 0.25]);
    }

    #[test]
    fn run_quality_describes_words_groups_and_puzzles() {
        let q = run(&puzzles());
        assert_eq!(q.puzzles, 2);
        assert_eq!(q.word_margin.count, 8);
        assert!((q.word_margin.min + 0.1).abs() < 1e-6);
        assert_eq!(q.group_coherence.count, 4);
        assert_eq!(q.group_coherence.min, 0.25);
        assert_eq!(q.puzzle_mean_coherence.max, 0.75);
        assert_eq!(
            (q.negative_margin_words, q.puzzles_with_negative_margin),
            (1, 1)
        );
    }

    #[test]
    fn histogram_counts_in_fixed_buckets_and_clamps_outliers() {
        let h = histogram(
            &[-2.0, -0.5, -0.49, 0.0, 0.04, 0.05, 0.499, 3.0],
            MARGIN_BUCKETS,
        );
        assert_eq!(h.edges.len(), 21);
        assert_eq!((h.edges[0], h.edges[10], h.edges[20]), (-0.5, 0.0, 0.5));
        assert_eq!(h.counts.iter().sum::<usize>(), 8);
        assert_eq!(h.counts[0], 3, "{:?}", h.counts);
        assert_eq!(h.counts[10], 2, "{:?}", h.counts);
        assert_eq!(h.counts[11], 1, "{:?}", h.counts);
        assert_eq!(h.counts[19], 2, "{:?}", h.counts);
    }
}
