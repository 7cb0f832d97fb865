//! How hard each group of a puzzle is, from what a run has: the theme's name, and how close
//! the chosen words sit to the theme and to each other.
//!
//! A group's score (higher = harder) adds three things:
//!
//! - **wordplay cues in the theme's name** ([`Cue`]): a name with a blank (`___ BALL`), or one
//!   that speaks of the words' form rather than their meaning (homophones, anagrams, hidden
//!   words, letters, words plus or minus something), names a group that no meaning-based
//!   similarity can see and that players find hardest; a name that speaks of *words*, of
//!   *things that* do something, of quoted text, or of starts and ends, names a lateral group;
//! - **low similarity of the words to their theme**, against the puzzle's other groups (a
//!   z-score within the puzzle, so the figure does not depend on the model's scale);
//! - **low coherence** of the words (their mean pairwise similarity), the same way.
//!
//! The weights were fitted on the first 256 puzzles of the NYT Connections development set
//! (2023-06-12 to 2024-02-22) by least squares on the colour level, for both local models,
//! and rounded; `cargo bench --bench design` reports them on the later puzzles (docs/QUALITY.md).
//! The cues are English; a theme name in another language scores by its words alone.

/// Weight of a wordplay cue in the name.
const WORDPLAY: f64 = 1.4;
/// Weight of a lateral cue in the name.
const LATERAL: f64 = 0.6;
/// Weight of the words' similarity to the theme (z-score within the puzzle, lower = harder).
pub(super) const SIMILARITY: f64 = 0.25;
/// Weight of the group's coherence (z-score within the puzzle, lower = harder).
const COHERENCE: f64 = 0.15;

/// Colour names of the four levels, easiest first (the NYT palette's names).
pub const COLOURS: [&str; 4] = ["yellow", "green", "blue", "purple"];

/// What a theme's name says about the kind of group it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// About the words' form: a blank, homophones, anagrams, hidden words, letters...
    Wordplay,
    /// About words, things that..., quoted text, starts and ends.
    Lateral,
    None,
}

/// Whole words of a name (upper case) that mark wordplay.
const WORDPLAY_WORDS: &[&str] = &["PLUS", "MINUS", "WITHOUT", "MISSING", "LETTER", "LETTERS"];
/// Word beginnings that mark wordplay.
const WORDPLAY_STEMS: &[&str] = &[
    "HOMOPHONE",
    "ANAGRAM",
    "PALINDROM",
    "REVERS",
    "BACKWARD",
    "HIDDEN",
    "SPELL",
    "RHYM",
    "PREFIX",
    "SUFFIX",
];
/// Whole words that mark a lateral group.
const LATERAL_WORDS: &[&str] = &["WORD", "WORDS", "THAT", "WITH"];
/// Word beginnings that mark a lateral group.
const LATERAL_STEMS: &[&str] = &["START", "BEGIN", "END"];

impl Cue {
    /// Reads the cue of a theme name.
    pub fn of(name: &str) -> Cue {
        let upper = name.to_uppercase();
        let words: Vec<&str> = upper
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .collect();
        let has_word = |list: &[&str]| words.iter().any(|w| list.contains(w));
        let has_stem = |list: &[&str]| words.iter().any(|w| list.iter().any(|s| w.starts_with(s)));
        let follows = |a: &str, b: &[&str]| {
            words
                .windows(2)
                .any(|p| (p[0] == a || p[0] == format!("{a}S")) && b.contains(&p[1]))
        };
        if upper.contains('_')
            || upper.contains('+')
            || has_word(WORDPLAY_WORDS)
            || has_stem(WORDPLAY_STEMS)
            || follows("SOUND", &["LIKE"])
        {
            return Cue::Wordplay;
        }
        if has_word(LATERAL_WORDS)
            || has_stem(LATERAL_STEMS)
            || words
                .first()
                .is_some_and(|w| *w == "THINGS" || *w == "WHAT")
            || follows("MEMBER", &["OF"])
            || upper.contains(['"', '\u{201c}', '\u{201d}'])
        {
            return Cue::Lateral;
        }
        Cue::None
    }

    pub(super) fn weight(self) -> f64 {
        match self {
            Cue::Wordplay => WORDPLAY,
            Cue::Lateral => LATERAL,
            Cue::None => 0.0,
        }
    }
}

/// What the difficulty score reads of one group.
#[derive(Debug, Clone)]
pub struct GroupSignals<'a> {
    pub theme: &'a str,
    /// Mean similarity of the group's words to its theme.
    pub similarity: f64,
    /// Mean pairwise similarity of the group's words.
    pub coherence: f64,
}

/// The difficulty of a puzzle's groups, aligned with its themes.
#[derive(Debug, Clone, PartialEq)]
pub struct Difficulty {
    /// Higher = harder; comparable within a puzzle.
    pub scores: Vec<f64>,
    /// 0 (yellow) to 3 (purple): the rank of each score within the puzzle; with other than four
    /// groups, the ranks spread evenly over 0..=3 (easiest 0, hardest 3). Equal scores keep the
    /// themes' order.
    pub levels: Vec<u8>,
}

impl Difficulty {
    /// The colour name of each level.
    pub fn colours(&self) -> Vec<&'static str> {
        self.levels.iter().map(|&l| COLOURS[l as usize]).collect()
    }
}

/// Scores and ranks a puzzle's groups.
pub fn difficulty(groups: &[GroupSignals<'_>]) -> Difficulty {
    let sim = z_scores(groups.iter().map(|g| g.similarity));
    let coh = z_scores(groups.iter().map(|g| g.coherence));
    let scores: Vec<f64> = groups
        .iter()
        .zip(sim.iter().zip(&coh))
        .map(|(g, (s, c))| Cue::of(g.theme).weight() - SIMILARITY * s - COHERENCE * c)
        .collect();
    Difficulty {
        levels: levels(&scores),
        scores,
    }
}

/// Each score's rank within `scores` (ties in order), spread evenly over 0..=3.
fn levels(scores: &[f64]) -> Vec<u8> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut levels = vec![0u8; n];
    for (rank, &i) in order.iter().enumerate() {
        // Easiest yellow, hardest purple, the rest evenly between (ranks when n = 4).
        levels[i] = if n <= 1 {
            0
        } else {
            (rank as f64 * 3.0 / (n - 1) as f64).round() as u8
        };
    }
    levels
}

/// Standard scores (population standard deviation); all 0 when the values do not vary.
pub(super) fn z_scores(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let v: Vec<f64> = values.collect();
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    v.iter()
        .map(|x| if sd > 1e-12 { (x - mean) / sd } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_are_read_from_the_name() {
        for name in [
            "___ BALL",
            "HOMOPHONES OF LETTERS",
            "ANAGRAMS",
            "SOUNDS LIKE A NUMBER",
            "FISH MINUS A LETTER",
            "PALINDROMES",
            "WORD + ING",
            "HIDDEN BODY PARTS",
        ] {
            assert_eq!(Cue::of(name), Cue::Wordplay, "{name}");
        }
        for name in [
            "THINGS THAT ARE CAST",
            "WHAT “GREEN” MIGHT MEAN",
            "WORDS BEFORE DAY",
            "MEMBERS OF A TRIO",
            "STARTING WITH A NOTE",
            "\"CAPTAINS\"",
        ] {
            assert_eq!(Cue::of(name), Cue::Lateral, "{name}");
        }
        for name in [
            "WET WEATHER",
            "NBA TEAMS",
            "Rivers of Europe",
            "BIRD SOUNDS",
            "TERMINUS",
        ] {
            assert_eq!(Cue::of(name), Cue::None, "{name}");
        }
    }

    fn group(theme: &str, similarity: f64, coherence: f64) -> GroupSignals<'_> {
        GroupSignals {
            theme,
            similarity,
            coherence,
        }
    }

    #[test]
    fn lower_similarity_and_coherence_are_harder_and_cues_dominate() {
        let d = difficulty(&[
            group("A", 0.6, 0.5),
            group("___ B", 0.7, 0.6),
            group("C", 0.3, 0.2),
            group("D", 0.5, 0.4),
        ]);
        assert_eq!(d.levels, vec![0, 3, 2, 1]);
        assert_eq!(d.colours(), vec!["yellow", "purple", "blue", "green"]);
        assert!(d.scores[1] > d.scores[2] && d.scores[2] > d.scores[3]);
    }

    #[test]
    fn levels_spread_over_other_sizes_and_ties_keep_order() {
        assert_eq!(levels(&[1.0, 1.0, 1.0, 1.0]), vec![0, 1, 2, 3]);
        assert_eq!(levels(&[5.0, 1.0]), vec![3, 0]);
        assert_eq!(levels(&[2.0, 1.0, 3.0]), vec![2, 0, 3]);
        assert_eq!(
            levels(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
        let one = difficulty(&[group("A", 0.5, 0.5)]);
        assert_eq!(one.levels, vec![0]);
        assert_eq!(one.scores, vec![0.0]);
    }
}
