//! Embedding providers: one small trait, one module per backend.
//!
//! A [`Provider`] turns a batch of texts into unit-length vectors of a fixed dimension and
//! names its embedding space ([`Space`]: model id, dimension, task type) so that cached vectors
//! of one model never answer for another. Cross-cutting behaviour (caching, batching, limits)
//! lives in [`crate::service`], around a provider, not inside it.

pub mod batch;
pub mod bert;
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
mod transformer;

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
    /// Batch mode cannot go on (its jobs outlived `batch.max_wait`, a job could not be
    /// collected): the run stops, the jobs named in its journal.
    #[error("{0}")]
    Batch(String),
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
            EmbedError::Batch(t) => EmbedError::Batch(f(t)),
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
                | EmbedError::Batch(_)
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
            EmbedError::Batch(_) => "batch",
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

/// Checks one vector, wherever it comes from (a provider's answer, the SQLite cache, the
/// shared Redis tier, a cache CSV): `dimension` finite values whose norm f32 scoring can
/// compute. The squares are summed in f64, so an absurd value (1e30, whose square overflows
/// f32) is named rather than turned into an infinite norm; a norm whose square is outside
/// f32's range would make every cosine with it 0 or NaN, so it is refused too. The reason
/// names the value in the cache CSV's terms (`embedding_dim_N`, from 1).
pub fn check_vector(v: &[f32], dimension: usize) -> Result<(), String> {
    if v.len() != dimension {
        return Err(format!("{} values, expected {dimension}", v.len()));
    }
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(format!(
            "embedding_dim_{} is {x}, not a finite number",
            i + 1
        ));
    }
    let squares: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if squares == 0.0 {
        return Err("all-zero vector: it has no direction, so it cannot be compared".into());
    }
    if squares > f64::from(f32::MAX) || squares < f64::from(f32::MIN_POSITIVE) {
        return Err(format!(
            "its norm is {:e}, outside what f32 scoring can compute (absurd values)",
            squares.sqrt()
        ));
    }
    Ok(())
}

/// Little-endian f32 bytes: the form a vector is stored in (SQLite) and shared in (Redis).
pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The `dimension` values held in `bytes` (see [`to_bytes`]), as stored: `None` if there are
/// not that many; the values are not checked (see [`from_bytes`]).
pub fn values_of(bytes: &[u8], dimension: usize) -> Option<Vector> {
    (bytes.len() == dimension * 4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The vector held in `bytes` (see [`to_bytes`]), checked with [`check_vector`].
pub fn from_bytes(bytes: &[u8], dimension: usize) -> Result<Vector, String> {
    let v = values_of(bytes, dimension).ok_or_else(|| {
        format!(
            "{} bytes, expected {} ({dimension} f32 values)",
            bytes.len(),
            dimension * 4
        )
    })?;
    check_vector(&v, dimension)?;
    Ok(v)
}

/// Checks a provider's answer: one usable vector (see [`check_vector`]) per text.
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
        check_vector(v, dimension)
            .map_err(|reason| EmbedError::BadAnswer(format!("vector {i}: {reason}")))?;
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

    #[test]
    fn absurd_tiny_and_zero_vectors_are_refused_whatever_their_tier() {
        let absurd = vec![1e30f32; 768];
        let e = check_vector(&absurd, 768).unwrap_err();
        assert!(e.contains("norm is 2.77") && e.contains("absurd"), "{e}");
        assert!(
            check_vector(&[1e-30, 0.0], 2).is_err(),
            "its square underflows f32"
        );
        assert!(
            check_vector(&[0.0, 0.0], 2)
                .unwrap_err()
                .starts_with("all-zero")
        );
        assert_eq!(
            check_vector(&[0.5, f32::INFINITY], 2).unwrap_err(),
            "embedding_dim_2 is inf, not a finite number"
        );
        // Large but scorable: kept.
        assert!(check_vector(&[1e10, -3.0], 2).is_ok());
        assert!(
            check_answer(&[absurd], 1, 768).is_err(),
            "the API is held to it too"
        );
        let bytes = to_bytes(&[0.25, -1.5]);
        assert_eq!(&*from_bytes(&bytes, 2).unwrap(), &[0.25, -1.5]);
        assert!(
            from_bytes(&bytes, 3)
                .unwrap_err()
                .contains("8 bytes, expected 12")
        );
        assert!(from_bytes(&to_bytes(&[f32::NAN, 1.0]), 2).is_err());
    }
}
