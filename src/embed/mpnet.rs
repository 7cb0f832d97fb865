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
//!   with erf computed as PyTorch's CPU kernel does (see [`GeluErf`]); layer norms use
//!   `layer_norm_eps`.
//!
//! The weight names are those of a sentence-transformers folder's `model.safetensors`
//! (`embeddings.*`, `encoder.layer.N.attention.attn.{q,k,v,o}`, ...).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};

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

/// One transformer layer: self-attention with the shared position bias, then feed-forward.
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(vb: VarBuilder, c: &MpnetConfig) -> Result<Layer> {
        let h = c.hidden_size;
        let attn = vb.pp("attention.attn");
        Ok(Layer {
            q: linear(h, h, attn.pp("q"))?,
            k: linear(h, h, attn.pp("k"))?,
            v: linear(h, h, attn.pp("v"))?,
            o: linear(h, h, attn.pp("o"))?,
            attention_norm: layer_norm(h, c.layer_norm_eps, vb.pp("attention.LayerNorm"))?,
            intermediate: linear(h, c.intermediate_size, vb.pp("intermediate.dense"))?,
            output: linear(c.intermediate_size, h, vb.pp("output.dense"))?,
            output_norm: layer_norm(h, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            heads: c.num_attention_heads,
        })
    }

    /// `xs`: (batch, seq, hidden); `bias`: (1, heads, seq, seq) position bias plus the
    /// (batch, 1, 1, seq) padding mask, already added together.
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        let head = hidden / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, seq, self.heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(xs)?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (head as f64).sqrt())?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, seq, hidden))?;
        let attended = self
            .attention_norm
            .forward(&(self.o.forward(&context)? + xs)?)?;
        let inner = self
            .intermediate
            .forward(&attended)?
            .contiguous()?
            .apply_op1_no_bwd(&GeluErf)?;
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

/// The erf GELU as PyTorch computes it on the CPU (`GeluKernel` over `Vectorized<float>::erf`
/// in ATen): erf by Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7) with an
/// exponential accurate to about one ulp. candle's `gelu_erf` calls libm's scalar `erff` per
/// value, a fifth of an all-mpnet-base-v2 pass on short texts; this loop has no branch nor
/// call, so it compiles to SIMD, and it is at least as close to sentence-transformers.
struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-pytorch"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu: the input must be contiguous");
        };
        let out = data[start..end].iter().map(|&x| gelu_erf(x)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))`, erf as in ATen's `Vectorized<float>::erf`.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let erf_abs = 1.0 - r * exp_non_positive(-a * a);
    0.5 * x * (1.0 + erf_abs.copysign(z))
}

/// `exp(x)` for `x <= 0` (Cephes' `expf`: range reduction by ln 2, degree-6 polynomial, about
/// one ulp); below -87.3 the result is 0, as is `exp`'s in f32 up to subnormals.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    let x = x.max(-87.3);
    // n = floor(x log2 e + 0.5), for a negative argument, without a call to floor.
    let v = x * std::f32::consts::LOG2_E + 0.5;
    let truncated = v as i32;
    let n = truncated - i32::from((truncated as f32) > v);
    let nf = n as f32;
    let g = x - nf * 0.693_359_4 + nf * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * g + 1.398_2e-3) * g + 8.333_452e-3) * g + 4.166_579_6e-2) * g
        + 1.666_666_5e-1)
        * g
        + 0.5;
    let y = p * g * g + g + 1.0;
    y * f32::from_bits(((n + 127) as u32) << 23)
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
                .map(|i| Layer::load(encoder.pp(format!("layer.{i}")), c))
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
    fn gelu_is_the_erf_gelu_to_float_precision() {
        // Against candle's gelu_erf (libm's erff, correctly rounded or nearly).
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 / 1000.0).collect();
        let exact = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (&x, &e) in xs.iter().zip(&exact) {
            let d = (gelu_erf(x) - e).abs();
            assert!(d <= 3e-7 * (1.0 + e.abs()), "gelu({x}): off by {d}");
        }
        assert_eq!(gelu_erf(-200.0), 0.0);
        assert_eq!(gelu_erf(200.0), 200.0);
        assert_eq!(gelu_erf(0.0), 0.0);
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
