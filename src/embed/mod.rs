//! Embedding providers: one small trait, one module per backend.
//!
//! A [`Provider`] turns a batch of texts into unit-length vectors of a fixed dimension and
//! names its embedding space ([`Space`]: model id, dimension, task type) so that cached vectors
//! of one model never answer for another. Cross-cutting behaviour (caching, batching, limits)
//! lives in [`crate::service`], around a provider, not inside it.

#[cfg(any(test, feature = "fake-provider"))]
pub mod fake;
pub mod folder;
pub mod gemini;
mod http;
pub(crate) use http::use_ring_for_tls;
pub mod local;
pub mod mpnet;
pub mod openai;
pub mod pooling;

use std::sync::Arc;

/// A vector as stored and shared: immutable, cheap to clone.
pub type Vector = Arc<[f32]>;

/// The embedding space a vector belongs to. Part of every cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Space {
    pub model_id: String,
    pub dimension: usize,
    pub task_type: String,
}

/// A small space for unit tests: model `m`, task type `t`.
#[cfg(test)]
pub(crate) fn test_space(dimension: usize) -> Space {
    Space {
        model_id: "m".into(),
        dimension,
        task_type: "t".into(),
    }
}

/// The longest delay a server's 429 is obeyed for (a longer one is cut to it): a shared
/// pause further ahead than this is stale (see `distributed::limiter`).
pub const MAX_SERVER_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

/// Why a batch could not be embedded. The variant decides what the service does next:
/// retry, wait for the server, or stop the run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The provider cannot start at all (missing model files, unset key, bad settings).
    #[error("{0}")]
    Setup(String),
    /// The server refused the request itself (any 4xx but 408 and 429: a bad key, a header
    /// too large, an unknown model): retrying cannot help.
    #[error("the embedding API refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// Too many requests (429); `retry_after` is the server's own delay when it gave one.
    #[error("rate limited by the embedding API (HTTP 429){}", retry_after.map(|d| format!(", retry in {:.2} s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        retry_after: Option<std::time::Duration>,
    },
    /// A per-day quota is used up: nothing more can be done today.
    #[error("the daily quota {quota} of the embedding API is used up; run again when it resets")]
    DailyQuota { quota: String },
    /// A failure that may pass: 5xx, 408, timeout, reset, a local backend error.
    #[error("embedding failed: {0}")]
    Transient(String),
    /// The server could not be reached (connection refused, no route): nothing was sent, so the
    /// request is not counted; retried like [`EmbedError::Transient`].
    #[error("embedding failed: {0}")]
    Unreachable(String),
    /// No request succeeded for `gemini.stall_timeout` while work was waiting: the run stops
    /// rather than wait forever.
    #[error(
        "no request to the embedding API succeeded for {seconds:.0} s (gemini.stall_timeout); \
         last error: {last_error}"
    )]
    Stalled { seconds: f64, last_error: String },
    /// The backend answered, but not with one finite vector of the right size per text.
    #[error("bad embedding answer: {0}")]
    BadAnswer(String),
}

impl EmbedError {
    /// The same error with `f` applied to every text it holds (for redaction).
    pub(crate) fn map_text(self, f: impl Fn(String) -> String) -> EmbedError {
        match self {
            EmbedError::Setup(t) => EmbedError::Setup(f(t)),
            EmbedError::Rejected { status, message } => EmbedError::Rejected {
                status,
                message: f(message),
            },
            EmbedError::RateLimited { retry_after } => EmbedError::RateLimited { retry_after },
            EmbedError::DailyQuota { quota } => EmbedError::DailyQuota { quota: f(quota) },
            EmbedError::Transient(t) => EmbedError::Transient(f(t)),
            EmbedError::Unreachable(t) => EmbedError::Unreachable(f(t)),
            EmbedError::Stalled {
                seconds,
                last_error,
            } => EmbedError::Stalled {
                seconds,
                last_error: f(last_error),
            },
            EmbedError::BadAnswer(t) => EmbedError::BadAnswer(f(t)),
        }
    }

    /// Errors after which no other request can succeed: the run stops.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            EmbedError::Setup(_)
                | EmbedError::Rejected { .. }
                | EmbedError::DailyQuota { .. }
                | EmbedError::Stalled { .. }
        )
    }

    /// A short name for the retry statistics.
    pub fn cause(&self) -> &'static str {
        match self {
            EmbedError::Setup(_) => "setup",
            EmbedError::Rejected { .. } => "rejected",
            EmbedError::RateLimited { .. } => "rate_limited",
            EmbedError::DailyQuota { .. } => "daily_quota",
            EmbedError::Transient(_) => "transient",
            EmbedError::Unreachable(_) => "unreachable",
            EmbedError::Stalled { .. } => "stalled",
            EmbedError::BadAnswer(_) => "bad_answer",
        }
    }
}

/// Something that embeds texts. Implementations must return one vector per input text, in
/// order, each of length `space().dimension` and unit L2 norm.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The space of the vectors this provider returns.
    fn space(&self) -> &Space;
    /// Largest batch one call accepts.
    fn max_batch(&self) -> usize;
    /// Embeds `texts` (at most `max_batch`).
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Scales `v` to unit length in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (dot product over the product of norms).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Checks a provider's answer: one finite vector of the right dimension per text.
pub fn check_answer(
    vectors: &[Vec<f32>],
    expected_count: usize,
    dimension: usize,
) -> Result<(), EmbedError> {
    if vectors.len() != expected_count {
        return Err(EmbedError::BadAnswer(format!(
            "{} vectors for {expected_count} texts",
            vectors.len()
        )));
    }
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dimension {
            return Err(EmbedError::BadAnswer(format!(
                "vector {i} has {} dimensions, expected {dimension}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(EmbedError::BadAnswer(format!(
                "vector {i} has non-finite values"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }

    #[test]
    fn check_answer_rejects_wrong_count_dimension_and_nan() {
        assert!(check_answer(&[vec![1.0]], 2, 1).is_err());
        assert!(check_answer(&[vec![1.0, 0.0]], 1, 1).is_err());
        assert!(check_answer(&[vec![f32::NAN]], 1, 1).is_err());
        assert!(check_answer(&[vec![1.0]], 1, 1).is_ok());
    }
}
