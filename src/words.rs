//! Words as the tool compares them: normalised text, identities, the original's plural rule,
//! and the scored results a theme yields.

use std::collections::HashSet;

use crate::embed::{Vector, cosine};

/// The identity of a word when a puzzle's groups are chosen (a word may sit in one group
/// only): trimmed, lowercased, one trailing `s` removed, so `Spoon`, `spoon` and `spoons` are
/// one word while `glass` and `glasses` are two.
pub fn dedupe_key(word: &str) -> String {
    let lower = word.trim().to_lowercase();
    match lower.strip_suffix('s') {
        Some(stem) if !stem.is_empty() => stem.to_owned(),
        _ => lower,
    }
}

/// A candidate with its similarity to the theme and its vector.
#[derive(Debug, Clone)]
pub struct ScoredWord {
    pub word: String,
    pub similarity: f32,
    pub vector: Vector,
}

/// A processed theme: every usable candidate, best first.
#[derive(Debug, Clone)]
pub struct ThemeResult {
    pub theme: String,
    pub vector: Vector,
    pub ranked: Vec<ScoredWord>,
}

impl ThemeResult {
    /// `words` (each with its vector) ranked by cosine similarity to the theme's `vector`,
    /// best first; equal scores keep the input order.
    pub fn rank(
        theme: &str,
        vector: Vector,
        words: impl IntoIterator<Item = (String, Vector)>,
    ) -> ThemeResult {
        let mut ranked: Vec<ScoredWord> = words
            .into_iter()
            .map(|(word, v)| ScoredWord {
                similarity: cosine(&vector, &v),
                word,
                vector: v,
            })
            .collect();
        // Stable: equal scores keep the input order.
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        ThemeResult {
            theme: theme.to_owned(),
            vector,
            ranked,
        }
    }

    /// The result as a run keeps it: words and similarities, without the vectors.
    pub fn scores(&self) -> ThemeScores {
        ThemeScores {
            theme: self.theme.clone(),
            ranked: self
                .ranked
                .iter()
                .map(|w| (w.word.clone(), w.similarity))
                .collect(),
        }
    }
}

/// A processed theme as a run keeps it: every usable candidate with its similarity to the
/// theme, best first, and no vector. The vectors are in the cache; assembly reads back the few
/// it needs, so a run's memory does not grow with its number of themes.
#[derive(Debug, Clone, PartialEq)]
pub struct ThemeScores {
    pub theme: String,
    /// `(word, similarity to the theme)`, best first.
    pub ranked: Vec<(String, f32)>,
}

/// Characters that show as nothing: zero-width space, non-joiner and joiner, word joiner, byte
/// order mark, soft hyphen. A word made of them is no word; inside a word they only hide that
/// two spellings are the same.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// A theme name or word as the tool uses it: invisible characters removed, Unicode whitespace
/// trimmed. Identity (which spellings are one theme) also ignores case: [`identity`].
pub fn normalize_text(text: &str) -> String {
    let visible: String = text.chars().filter(|&c| !is_invisible(c)).collect();
    match visible.trim() {
        t if t.len() == visible.len() => visible,
        t => t.to_owned(),
    }
}

/// The identity of a theme name or candidates key: normalised and lowercased, so `" Planets "`,
/// `"planets"` and `"PLANETS"` are one theme.
pub fn identity(text: &str) -> String {
    normalize_text(text).to_lowercase()
}

/// Candidates with empty strings and duplicates removed, first form kept, by the original
/// `ImprovedThemeWorker`'s rule: a word is dropped when its lowercase form, that form minus
/// one trailing `s`, or that form plus one `s` is a word already kept. The rule compares with
/// kept words only, so `zorpa` and `zorpass` both stay (`zorpas` would not).
pub fn usable_candidates(candidates: &[String]) -> Vec<String> {
    let mut kept: HashSet<String> = HashSet::new();
    let mut usable = Vec::new();
    for word in candidates
        .iter()
        .map(|w| normalize_text(w))
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_lowercase();
        let singular = lower.strip_suffix('s').filter(|s| !s.is_empty());
        let duplicate = kept.contains(&lower)
            || singular.is_some_and(|s| kept.contains(s))
            || kept.contains(&format!("{lower}s"));
        if !duplicate {
            kept.insert(lower);
            usable.push(word);
        }
    }
    usable
}

/// The texts a theme needs embedded: the theme itself, then its usable candidates.
pub fn texts_of(theme: &str, usable: &[String]) -> Vec<String> {
    std::iter::once(theme.to_owned())
        .chain(usable.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plural_rule_is_the_originals() {
        // One `s` either way, compared with kept words only.
        assert_eq!(
            usable_candidates(&strings(&["zorpa", "zorpass", "Zorpas", "ZORPA"])),
            strings(&["zorpa", "zorpass"])
        );
        assert_eq!(
            usable_candidates(&strings(&["cats", "cat", "catss"])),
            strings(&["cats"])
        );
        assert_eq!(usable_candidates(&strings(&["s", "ss"])), strings(&["s"]));
    }

    #[test]
    fn dedupe_is_case_insensitive_and_plural_naive() {
        assert_eq!(dedupe_key("Spoons"), dedupe_key("spoon"));
        assert_eq!(dedupe_key(" Glass "), "glas");
        assert_ne!(dedupe_key("glass"), dedupe_key("glasss"));
        assert_ne!(dedupe_key("glasses"), dedupe_key("glass"));
        assert_eq!(dedupe_key("s"), "s");
        assert_eq!(
            usable_candidates(&strings(&[
                "Spoon", "spoons", "", " Fork ", "fork", "Knife"
            ])),
            strings(&["Spoon", "Fork", "Knife"])
        );
    }
}
