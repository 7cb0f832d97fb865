//! Deterministic hashing, random numbers and embedding vectors.
//!
//! Nothing here depends on time or global state: the same text always gives
//! the same vector, on every machine and in every run.

/// Dimension of a full (un-truncated) `gemini-embedding-001` vector. Gemini
/// L2-normalises vectors of exactly this size and leaves smaller ones as is.
pub const GEMINI_NATIVE_DIMENSION: usize = 3072;

/// 64-bit FNV-1a hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The splitmix64 generator (Steele, Lea & Flood), used both for vectors and
/// for the per-request fault decisions.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The raw, un-normalised vector for `text`: `dim` values uniform in
/// `[-1, 1)`, drawn from splitmix64 seeded with the FNV-1a hash of the text.
/// A shorter vector is a prefix of a longer one (as with Matryoshka
/// truncation).
pub fn raw_embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(fnv1a64(text.as_bytes()));
    (0..dim)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

/// `raw_embedding` scaled to unit L2 norm.
pub fn normalised_embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(fnv1a64(text.as_bytes()));
    let raw: Vec<f64> = (0..dim).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        return raw.iter().map(|&v| v as f32).collect();
    }
    raw.iter().map(|&v| (v / norm) as f32).collect()
}

/// What the mock's Gemini endpoint returns for `text` at `dim` dimensions:
/// normalised when `dim == 3072`, raw otherwise.
pub fn gemini_embedding(text: &str, dim: usize) -> Vec<f32> {
    if dim == GEMINI_NATIVE_DIMENSION {
        normalised_embedding(text, dim)
    } else {
        raw_embedding(text, dim)
    }
}

/// What the mock's OpenAI-compatible endpoint returns: always normalised.
pub fn openai_embedding(text: &str, dim: usize) -> Vec<f32> {
    normalised_embedding(text, dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[f32]) -> f64 {
        v.iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn splitmix_known_value() {
        // First output of splitmix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn vectors_are_deterministic_ranged_and_prefixes() {
        let a = raw_embedding("apple", 64);
        assert_eq!(a, raw_embedding("apple", 64));
        assert_ne!(a, raw_embedding("apples", 64));
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(a.iter().any(|&v| v < -0.5) && a.iter().any(|&v| v > 0.5));
        assert_eq!(&raw_embedding("apple", 16)[..], &a[..16]);
    }

    #[test]
    fn gemini_normalises_only_native_dimension() {
        assert!((norm(&gemini_embedding("x", 3072)) - 1.0).abs() < 1e-4);
        assert!(norm(&gemini_embedding("x", 768)) > 5.0);
        assert!((norm(&openai_embedding("x", 8)) - 1.0).abs() < 1e-5);
    }
}
