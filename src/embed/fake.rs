//! A deterministic provider for tests and benchmarks: no model, no network.
//!
//! Each text maps to a fixed unit vector derived from its bytes, so runs are reproducible and
//! the cost of "embedding" is next to nothing; this measures the pipeline's own overhead. Every
//! call is recorded so tests can check what was sent.

use std::sync::Mutex;

use super::{EmbedError, Provider, Space, normalize};

pub struct FakeProvider {
    space: Space,
    max_batch: usize,
    /// The texts of every call, in call order.
    pub calls: Mutex<Vec<Vec<String>>>,
}

impl FakeProvider {
    pub fn new(dimension: usize, max_batch: usize) -> FakeProvider {
        FakeProvider {
            space: Space {
                model_id: "fake".into(),
                dimension,
                task_type: "test".into(),
            },
            max_batch,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The vector this provider gives `text`.
    pub fn vector_of(&self, text: &str) -> Vec<f32> {
        // FNV-1a over the text seeds a small xorshift generator.
        let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) | 1;
        let mut v: Vec<f32> = (0..self.space.dimension)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        normalize(&mut v);
        v
    }
}

#[async_trait::async_trait]
impl Provider for FakeProvider {
    fn space(&self) -> &Space {
        &self.space
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vectors = texts.iter().map(|t| self.vector_of(t)).collect();
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(texts);
        Ok(vectors)
    }
}
