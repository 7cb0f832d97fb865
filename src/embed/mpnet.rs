//! MPNet (`model_type: mpnet`, e.g. all-mpnet-base-v2) in candle, which has none of its own.
//!
//! Written from Hugging Face transformers' `modeling_mpnet.py` (`MPNetModel` without its
//! pooler): BERT-like layers without token types, where
//! - position ids count the non-padding tokens (`cumsum(ids != 1) * (ids != 1) + 1`: the
//!   padding index is 1, whatever the config says, as in transformers);
//! - every layer adds one shared attention bias to its scores, looked up in
//!   `encoder.relative_attention_bias` by the bucket of each query-key distance (32 buckets,
//!   half per direction, exact up to 8, logarithmic up to 128);
//! - the feed-forward activation is the exact (erf) GELU, `0.5 x (1 + erf(x / sqrt 2))`,
//!   with erf computed as PyTorch's CPU kernel does (see `super::transformer`); layer norms
//!   use `layer_norm_eps`.
//!
//! The weight names are those of a sentence-transformers folder's `model.safetensors`
//! (`embeddings.*`, `encoder.layer.N.attention.attn.{q,k,v,o}`, ...).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder, embedding, layer_norm};

use super::transformer::{Activation, Layer, LayerNames, Sizes};

/// Where MPNet's layer weights are.
const MPNET_NAMES: LayerNames = LayerNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
};

/// The padding token id MPNet's position ids are counted from (transformers hard-codes it).
const PADDING_IDX: u32 = 1;
/// Buckets of relative distance: transformers always computes the bias with 32.
const NUM_BUCKETS: usize = 32;
/// Distances from this one on share the last bucket of their direction.
const MAX_DISTANCE: usize = 128;

/// The `config.json` fields MPNet needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MpnetConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    pub hidden_act: String,
}

fn default_buckets() -> usize {
    NUM_BUCKETS
}

/// MPNet's encoder: embeddings, layers, no pooler. Returns the last hidden state.
pub struct MpnetModel {
    words: Embedding,
    positions: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    relative_bias: Embedding,
}

impl MpnetModel {
    pub fn load(vb: VarBuilder, c: &MpnetConfig) -> Result<MpnetModel> {
        if c.hidden_act != "gelu" {
            candle_core::bail!(
                "hidden_act {:?} is not supported for mpnet (only \"gelu\")",
                c.hidden_act
            );
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let encoder = vb.pp("encoder");
        Ok(MpnetModel {
            words: embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
            positions: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embeddings"),
            )?,
            embedding_norm: layer_norm(c.hidden_size, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| {
                    Layer::load(
                        encoder.pp(format!("layer.{i}")),
                        &MPNET_NAMES,
                        Sizes {
                            hidden: c.hidden_size,
                            intermediate: c.intermediate_size,
                            heads: c.num_attention_heads,
                            eps: c.layer_norm_eps,
                        },
                        Activation::GeluErf,
                    )
                })
                .collect::<Result<_>>()?,
            relative_bias: embedding(
                c.relative_attention_num_buckets,
                c.num_attention_heads,
                encoder.pp("relative_attention_bias"),
            )?,
        })
    }

    /// `ids` and `mask`: (batch, seq) u32, padded on the right. Returns (batch, seq, hidden).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let dev = ids.device();
        let positions: Vec<Vec<u32>> = ids
            .to_vec2::<u32>()?
            .iter()
            .map(|row| {
                let mut count = 0;
                row.iter()
                    .map(|&id| {
                        if id == PADDING_IDX {
                            PADDING_IDX
                        } else {
                            count += 1;
                            count + PADDING_IDX
                        }
                    })
                    .collect()
            })
            .collect();
        let positions = Tensor::new(positions, dev)?;
        let embedded = (self.words.forward(ids)? + self.positions.forward(&positions)?)?;
        let mut xs = self.embedding_norm.forward(&embedded)?;
        let buckets = Tensor::from_vec(
            (0..seq)
                .flat_map(|query| (0..seq).map(move |key| bucket(key as i64 - query as i64)))
                .collect::<Vec<u32>>(),
            (seq, seq),
            dev,
        )?;
        // (seq, seq, heads) -> (1, heads, seq, seq)
        let position_bias = self
            .relative_bias
            .forward(&buckets)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        let padding = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let bias = position_bias.broadcast_add(&padding)?.contiguous()?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &bias)?;
        }
        Ok(xs)
    }
}

/// transformers' `relative_position_bucket` for `relative = key - query`, in its float32
/// arithmetic: the sign picks a half, distances under 8 have a bucket each, longer ones share
/// logarithmic buckets up to [`MAX_DISTANCE`].
fn bucket(relative: i64) -> u32 {
    let half = NUM_BUCKETS / 2;
    let n = -relative;
    let base = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    let within = if n < max_exact {
        n
    } else {
        let ratio = (n as f32 / max_exact as f32).ln()
            / ((MAX_DISTANCE as f64 / max_exact as f64).ln() as f32);
        let large = max_exact + (ratio * (half - max_exact) as f32) as usize;
        large.min(half - 1)
    };
    (base + within) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    /// tests/fixtures/tiny_mpnet_reference.json (made by bench/tiny_mpnet.py).
    pub(crate) fn tiny_reference() -> serde_json::Value {
        let text =
            std::fs::read_to_string(fixture("tests/fixtures/tiny_mpnet_reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// A JSON array of arrays of numbers as rows of `T`.
    pub(crate) fn rows<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Vec<Vec<T>> {
        serde_json::from_value(v.clone()).unwrap()
    }

    /// The largest absolute difference between two equally long slices.
    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn tiny_model() -> MpnetModel {
        let dir = fixture("tests/fixtures/tiny-mpnet");
        let config: MpnetConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).unwrap();
        MpnetModel::load(vb, &config).unwrap()
    }

    #[test]
    fn tiny_model_matches_transformers_on_every_real_token() {
        let reference = tiny_reference();
        let ids: Vec<Vec<u32>> = rows(&reference["ids"]);
        let mask: Vec<Vec<u32>> = rows(&reference["mask"]);
        let dev = &Device::Cpu;
        let hidden = tiny_model()
            .forward(
                &Tensor::new(ids.clone(), dev).unwrap(),
                &Tensor::new(mask, dev).unwrap(),
            )
            .unwrap();
        let expected = reference["hidden"].as_array().unwrap();
        assert_eq!(expected.len(), ids.len());
        for (row, want) in expected.iter().enumerate() {
            let want: Vec<Vec<f32>> = rows(want);
            let got = hidden.get(row).unwrap().to_vec2::<f32>().unwrap();
            for (token, w) in want.iter().enumerate() {
                let d = max_diff(&got[token], w);
                assert!(d < 1e-4, "row {row} token {token}: off by {d}");
            }
        }
    }

    #[test]
    fn an_activation_other_than_gelu_is_refused_by_name() {
        let dir = fixture("tests/fixtures/tiny-mpnet");
        let mut config: MpnetConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        config.hidden_act = "relu".into();
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let e = MpnetModel::load(vb, &config).err().unwrap().to_string();
        assert!(e.contains("hidden_act \"relu\""), "{e}");
    }
}
