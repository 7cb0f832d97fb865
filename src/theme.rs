//! The theme worker: one theme and its candidates in, candidates ranked by similarity out.
//!
//! Rules kept from the original `ImprovedThemeWorker`: candidates are deduplicated
//! case-insensitively and by the naive plural rule (`x` and `xs` are one word, see
//! [`usable_candidates`]); the theme text is embedded alongside its candidates; each candidate is
//! scored by cosine similarity to the theme; a theme with fewer usable words than a puzzle
//! group needs fails with a reason and the run goes on.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::key;
use crate::cache::store::Annotation;
use crate::embed::service::EmbeddingService;
use crate::embed::{EmbedError, Vector, cosine};
use crate::journal::Journal;

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

/// Why a theme could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ThemeError {
    #[error("no entry for this theme in the candidates file")]
    NoCandidates,
    #[error("only {usable} usable candidate(s) after removing duplicates, need {needed}")]
    TooFewWords { usable: usize, needed: usize },
    #[error("{0}")]
    Embedding(String),
    #[error("timeout after {0:.1} s (multiprocessing.task_timeout_seconds)")]
    Timeout(f64),
    #[error("not finished: the run was stopped")]
    Cancelled,
}

impl From<EmbedError> for ThemeError {
    fn from(e: EmbedError) -> Self {
        ThemeError::Embedding(e.to_string())
    }
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

/// Scores themes against their candidates through a shared [`EmbeddingService`], recording
/// each result in the run [`Journal`] (if any) and taking results a killed run already finished
/// from it.
#[derive(Clone)]
pub struct ThemeWorker {
    service: Arc<EmbeddingService>,
    words_per_theme: usize,
    journal: Option<Arc<Journal>>,
    resumed: Arc<AtomicUsize>,
}

impl ThemeWorker {
    pub fn new(
        service: Arc<EmbeddingService>,
        words_per_theme: usize,
        journal: Option<Arc<Journal>>,
    ) -> ThemeWorker {
        ThemeWorker {
            service,
            words_per_theme,
            journal,
            resumed: Arc::default(),
        }
    }

    /// Themes taken from the journal rather than computed.
    pub fn resumed(&self) -> usize {
        self.resumed.load(Ordering::Relaxed)
    }

    /// Ranks `candidates` (or fails if there are none or too few) by similarity to `theme`.
    pub async fn process(
        &self,
        theme: &str,
        candidates: Option<&[String]>,
    ) -> Result<ThemeResult, ThemeError> {
        let words = usable_candidates(candidates.ok_or(ThemeError::NoCandidates)?);
        if words.len() < self.words_per_theme {
            return Err(ThemeError::TooFewWords {
                usable: words.len(),
                needed: self.words_per_theme,
            });
        }
        if let Some(result) = self
            .journal
            .as_ref()
            .and_then(|j| j.restore(theme, &words, self.service.cache()))
        {
            self.resumed.fetch_add(1, Ordering::Relaxed);
            return Ok(result);
        }
        let texts = texts_of(theme, &words);
        let mut vectors = self.service.embed(&texts).await?.into_iter();
        let theme_vector = vectors.next().expect("one vector per text");
        let mut ranked: Vec<ScoredWord> = words
            .iter()
            .cloned()
            .zip(vectors)
            .map(|(word, vector)| ScoredWord {
                similarity: cosine(&theme_vector, &vector),
                word,
                vector,
            })
            .collect();
        // Stable: equal scores keep the input order.
        ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        let result = ThemeResult {
            theme: theme.to_owned(),
            vector: theme_vector,
            ranked,
        };
        self.service.cache().annotate(annotations(&result));
        if let Some(journal) = &self.journal
            && let Err(e) = journal.record(&result, &words)
        {
            tracing::warn!("{e} (a restart will recompute this theme from the cache)");
        }
        Ok(result)
    }
}

/// The cache metadata of a result's texts, as the Python cache CSV had it.
fn annotations(r: &ThemeResult) -> Vec<Annotation> {
    std::iter::once(Annotation {
        key: key(&r.theme),
        theme: r.theme.clone(),
        word_type: "theme",
        similarity: 1.0,
    })
    .chain(r.ranked.iter().map(|w| Annotation {
        key: key(&w.word),
        theme: r.theme.clone(),
        word_type: "candidate",
        similarity: w.similarity,
    }))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::fake::FakeProvider;

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

    #[tokio::test]
    async fn ranks_by_similarity_and_fails_on_too_few() {
        let service = Arc::new(EmbeddingService::new(
            Arc::new(FakeProvider::new(8, 100)),
            crate::embed::service::ServiceOptions::unlimited(),
        ));
        let worker = ThemeWorker::new(service, 2, None);
        let r = worker
            .process(
                "Cutlery",
                Some(&strings(&["spoon", "Spoons", "fork", "knife"])),
            )
            .await
            .unwrap();
        assert_eq!(r.ranked.len(), 3);
        assert!(
            r.ranked
                .windows(2)
                .all(|w| w[0].similarity >= w[1].similarity)
        );
        for w in &r.ranked {
            assert!((w.similarity - cosine(&r.vector, &w.vector)).abs() < 1e-6);
        }
        let e = worker
            .process("Cutlery", Some(&strings(&["spoon", "spoons"])))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "only 1 usable candidate(s) after removing duplicates, need 2"
        );
        assert!(matches!(
            worker.process("X", None).await,
            Err(ThemeError::NoCandidates)
        ));
    }
}
