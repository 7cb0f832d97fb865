//! The embedding service between theme workers and a provider.
//!
//! Answers what it can from the cache, sends each missing text to the provider once per call
//! (duplicates within a request collapse), in batches no larger than the provider accepts, and
//! counts what it did for the closing summary and the reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{EmbedError, Provider, Space, Vector, check_answer};
use crate::cache::MemoryCache;

/// Counters of one run, read with [`EmbeddingService::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStats {
    /// Texts asked for by theme workers.
    pub lookups: u64,
    /// Of those, answered from the cache.
    pub cache_hits: u64,
    /// Texts sent to the provider.
    pub texts_embedded: u64,
    /// Calls made to the provider.
    pub provider_calls: u64,
}

impl ServiceStats {
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.cache_hits as f64 / self.lookups as f64
        }
    }
}

/// Cache in front of a provider.
pub struct EmbeddingService {
    provider: Arc<dyn Provider>,
    cache: MemoryCache,
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    texts_embedded: AtomicU64,
    provider_calls: AtomicU64,
}

impl EmbeddingService {
    pub fn new(provider: Arc<dyn Provider>) -> EmbeddingService {
        let cache = MemoryCache::new(provider.space().clone());
        EmbeddingService {
            provider,
            cache,
            lookups: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            texts_embedded: AtomicU64::new(0),
            provider_calls: AtomicU64::new(0),
        }
    }

    pub fn space(&self) -> &Space {
        self.cache.space()
    }

    /// One vector per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vector>, EmbedError> {
        self.lookups
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        let mut found = self.cache.get_many(texts);
        let mut missing: Vec<String> = Vec::new();
        let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (text, hit)) in texts.iter().zip(&found).enumerate() {
            if hit.is_none() {
                let slots = positions.entry(text.as_str()).or_default();
                if slots.is_empty() {
                    missing.push(text.clone());
                }
                slots.push(i);
            }
        }
        let hits = texts.len() - positions.values().map(Vec::len).sum::<usize>();
        self.cache_hits.fetch_add(hits as u64, Ordering::Relaxed);

        let dimension = self.space().dimension;
        for batch in missing.chunks(self.provider.max_batch().max(1)) {
            self.provider_calls.fetch_add(1, Ordering::Relaxed);
            let vectors = self.provider.embed(batch.to_vec()).await?;
            check_answer(&vectors, batch.len(), dimension)?;
            self.texts_embedded
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let vectors: Vec<Vector> = vectors.into_iter().map(Vector::from).collect();
            self.cache.insert_many(batch, &vectors);
            for (text, v) in batch.iter().zip(&vectors) {
                for &i in &positions[text.as_str()] {
                    found[i] = Some(v.clone());
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|v| v.expect("every missing text was embedded above"))
            .collect())
    }

    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            lookups: self.lookups.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            texts_embedded: self.texts_embedded.load(Ordering::Relaxed),
            provider_calls: self.provider_calls.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::fake::FakeProvider;

    #[tokio::test]
    async fn duplicates_and_cached_texts_are_not_sent_again() {
        let fake = Arc::new(FakeProvider::new(4, 2));
        let service = EmbeddingService::new(fake.clone());
        let texts: Vec<String> = ["a", "b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let v = service.embed(&texts).await.unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], v[2]);
        assert_eq!(
            *fake.calls.lock().unwrap(),
            vec![vec!["a".to_string(), "b".into()], vec!["c".into()]]
        );
        service.embed(&texts[1..2]).await.unwrap();
        assert_eq!(fake.calls.lock().unwrap().len(), 2, "b came from the cache");
        let s = service.stats();
        assert_eq!(
            (s.lookups, s.cache_hits, s.texts_embedded, s.provider_calls),
            (5, 1, 3, 2)
        );
    }
}
