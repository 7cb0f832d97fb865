//! The difficulty mix of a run: which themes go together in a puzzle
//! (`puzzle_generation.difficulty_mix`).
//!
//! `in_order` (the default) keeps the plan's grouping, the original's: themes in input order,
//! `themes_per_puzzle` at a time. `balanced` regroups the themes of the puzzles whose themes all
//! succeeded so that each puzzle spans the run's range from easy to hard: every theme gets an
//! estimate ([`estimates`]: the name's cue, and the similarity of its best words to it against
//! the run's other themes), the theme slots are sorted by it and cut into `themes_per_puzzle`
//! bands, and puzzle `i` takes the `i`-th slot of each band, easiest first. Deterministic (ties
//! by name, then by slot); spares are chosen before, as in `in_order`. A grouping that would
//! put one theme twice in a puzzle is not used (the plan's is kept, and said).

use super::difficulty::Cue;

pub use crate::config::DifficultyMix as Mix;

/// Difficulty estimates of themes before they are grouped (higher = harder), comparable across
/// the run: each theme's name cue plus its words' similarity to it (mean over its best words),
/// as a z-score over `themes`, with the weights of [`super::difficulty`].
pub fn estimates(themes: &[(&str, f64)]) -> Vec<f64> {
    let sims: Vec<f64> = themes.iter().map(|(_, s)| *s).collect();
    let z = super::difficulty::z_scores(sims.into_iter());
    themes
        .iter()
        .zip(z)
        .map(|((name, _), z)| Cue::of(name).weight() - super::difficulty::SIMILARITY * z)
        .collect()
}

/// The balanced grouping of `slots` (each puzzle's themes), by `estimate` of each theme; `None`
/// when it would put a theme twice in one puzzle, or when the puzzles are not all of one size.
pub fn balance(slots: &[Vec<String>], estimate: impl Fn(&str) -> f64) -> Option<Vec<Vec<String>>> {
    let per = slots.first()?.len();
    if per == 0 || slots.iter().any(|s| s.len() != per) {
        return None;
    }
    let puzzles = slots.len();
    let mut all: Vec<(f64, &str, usize)> = slots
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| (estimate(t), t.as_str(), i))
        .collect();
    all.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| a.1.cmp(b.1))
            .then(a.2.cmp(&b.2))
    });
    let grouped: Vec<Vec<String>> = (0..puzzles)
        .map(|i| {
            (0..per)
                .map(|b| all[b * puzzles + i].1.to_owned())
                .collect()
        })
        .collect();
    let distinct = grouped.iter().all(|p| {
        let mut names: Vec<&String> = p.iter().collect();
        names.sort();
        names.windows(2).all(|w| w[0] != w[1])
    });
    distinct.then_some(grouped)
}

/// Mean, over puzzles, of the range (hardest minus easiest) of their themes' estimates.
pub fn spread(puzzles: &[Vec<f64>]) -> f64 {
    let ranges: Vec<f64> = puzzles
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = p.iter().copied().fold(f64::INFINITY, f64::min);
            max - min
        })
        .collect();
    if ranges.is_empty() {
        0.0
    } else {
        ranges.iter().sum::<f64>() / ranges.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(names: &[&[&str]]) -> Vec<Vec<String>> {
        names
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn balanced_puzzles_span_easy_to_hard() {
        // In order, puzzle 1 has the four easiest themes and puzzle 2 the four hardest.
        let s = slots(&[&["a1", "a2", "a3", "a4"], &["b1", "b2", "b3", "b4"]]);
        let score = |t: &str| match t {
            "a1" => 0.0,
            "a2" => 1.0,
            "a3" => 2.0,
            "a4" => 3.0,
            "b1" => 4.0,
            "b2" => 5.0,
            "b3" => 6.0,
            _ => 7.0,
        };
        let b = balance(&s, score).unwrap();
        assert_eq!(
            b,
            slots(&[&["a1", "a3", "b1", "b3"], &["a2", "a4", "b2", "b4"]])
        );
        let range = |g: &[Vec<String>]| {
            spread(
                &g.iter()
                    .map(|p| p.iter().map(|t| score(t)).collect())
                    .collect::<Vec<_>>(),
            )
        };
        assert!(range(&b) > range(&s), "{} vs {}", range(&b), range(&s));
        // Deterministic.
        assert_eq!(balance(&s, score), Some(b));
    }

    #[test]
    fn a_theme_twice_in_a_puzzle_keeps_the_plan() {
        // Three themes cycled over three puzzles of two: one theme would meet itself.
        let s = slots(&[&["x", "y"], &["z", "x"], &["y", "z"]]);
        let one = |t: &str| if t == "x" { 0.0 } else { 1.0 };
        let b = balance(&s, one).unwrap();
        for p in &b {
            assert_ne!(p[0], p[1]);
        }
        let s = slots(&[&["x", "y"], &["x", "y"]]);
        assert_eq!(
            balance(&s, |t| if t == "x" { 0.0 } else { 1.0 }),
            Some(s.clone())
        );
        assert_eq!(balance(&slots(&[&["x", "x"]]), |_| 0.0), None);
    }

    #[test]
    fn estimates_put_wordplay_and_far_words_higher() {
        let e = estimates(&[("Planets", 0.6), ("___ BALL", 0.6), ("Cheeses", 0.3)]);
        assert!(e[1] > e[0] && e[2] > e[0], "{e:?}");
        assert_eq!(Mix::parse("balanced"), Some(Mix::Balanced));
        assert_eq!(Mix::parse("random"), None);
        assert_eq!(Mix::default().name(), "in_order");
    }
}
