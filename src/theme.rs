//! The theme worker: one theme and its candidates in, candidates ranked by similarity out.
//!
//! Rules kept from the original `ImprovedThemeWorker`: candidates are deduplicated
//! case-insensitively and by the naive plural rule (`x` and `xs` are one word, see
//! [`crate::words::usable_candidates`]); the theme text is embedded alongside its candidates; each candidate is
//! scored by cosine similarity to the theme; a theme with fewer usable words than a puzzle
//! group needs fails with a reason and the run goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::key;
use crate::cache::store::Annotation;
use crate::embed::EmbedError;
use crate::journal::Journal;
use crate::service::EmbeddingService;
use crate::words::{ThemeResult, texts_of, usable_candidates};

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
    /// Its task on the Redis work queue failed or went to the dead-letter stream.
    #[error("work queue: {0}")]
    Queue(String),
    /// A text of it could not be embedded by a Batch API job (`embedding.mode: batch`).
    #[error("{0}")]
    Batch(String),
}

impl From<EmbedError> for ThemeError {
    fn from(e: EmbedError) -> Self {
        ThemeError::Embedding(e.to_string())
    }
}

/// Scores themes against their candidates through a shared [`EmbeddingService`], recording
/// each result in the run [`Journal`] (if any) and taking results a killed run already finished
/// from it.
#[derive(Clone)]
pub(crate) struct ThemeWorker {
    service: Arc<EmbeddingService>,
    words_per_theme: usize,
    journal: Option<Arc<Journal>>,
    resumed: Arc<AtomicUsize>,
}

impl ThemeWorker {
    pub(crate) fn new(
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
    pub(crate) fn resumed(&self) -> usize {
        self.resumed.load(Ordering::Relaxed)
    }

    /// Ranks `candidates` (or fails if there are none or too few) by similarity to `theme`.
    pub(crate) async fn process(
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
        let result = ThemeResult::rank(theme, theme_vector, words.iter().cloned().zip(vectors));
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
        similarity: None,
    })
    .chain(r.ranked.iter().map(|w| Annotation {
        key: key(&w.word),
        theme: r.theme.clone(),
        word_type: "candidate",
        similarity: Some(w.similarity),
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

    #[tokio::test]
    async fn ranks_by_similarity_and_fails_on_too_few() {
        let service = Arc::new(EmbeddingService::new(
            Arc::new(FakeProvider::new(8, 100)),
            crate::service::ServiceOptions::unlimited(),
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
            assert!((w.similarity - crate::embed::cosine(&r.vector, &w.vector)).abs() < 1e-6);
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
