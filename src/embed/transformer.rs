//! The transformer layer the local encoders share (BERT, MPNet): self-attention with an
//! additive bias (padding mask, and MPNet's relative-position bias), then the feed-forward
//! block, each with its residual and layer norm, as in Hugging Face transformers. The weight
//! names differ per architecture ([`LayerNames`]); the feed-forward activation is the exact
//! (erf) GELU computed as PyTorch does on the CPU ([`GeluErf`]), or the tanh GELU or ReLU a
//! BERT config may name.

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear};

/// Where one layer's attention weights are, under the layer's prefix (the feed-forward ones are
/// `intermediate.dense`, `output.dense` and `output.LayerNorm` in both architectures).
pub(super) struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
}

/// A layer's sizes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub eps: f64,
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// `0.5 x (1 + erf(x / sqrt 2))` ([`GeluErf`]): `gelu` in a config.json.
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// One transformer layer: self-attention with an additive bias, then feed-forward.
pub(super) struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    activation: Activation,
}

impl Layer {
    pub(super) fn load(
        vb: VarBuilder,
        names: &LayerNames,
        s: Sizes,
        activation: Activation,
    ) -> Result<Layer> {
        let h = s.hidden;
        Ok(Layer {
            q: linear(h, h, vb.pp(names.query))?,
            k: linear(h, h, vb.pp(names.key))?,
            v: linear(h, h, vb.pp(names.value))?,
            o: linear(h, h, vb.pp(names.attention_out))?,
            attention_norm: layer_norm(h, s.eps, vb.pp(names.attention_norm))?,
            intermediate: linear(h, s.intermediate, vb.pp("intermediate.dense"))?,
            output: linear(s.intermediate, h, vb.pp("output.dense"))?,
            output_norm: layer_norm(h, s.eps, vb.pp("output.LayerNorm"))?,
            heads: s.heads,
            activation,
        })
    }

    /// `xs`: (batch, seq, hidden); `bias`: added to every head's attention scores, broadcast
    /// from (batch or 1, heads or 1, seq or 1, seq): the padding mask, plus any position bias.
    pub(super) fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
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
        let inner = self.intermediate.forward(&attended)?.contiguous()?;
        let inner = match self.activation {
            Activation::GeluErf => inner.apply_op1_no_bwd(&GeluErf)?,
            Activation::GeluTanh => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

/// The erf GELU as PyTorch computes it on the CPU (`GeluKernel` over `Vectorized<float>::erf`
/// in ATen): erf by Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7) with an
/// exponential accurate to about one ulp. candle's `gelu_erf` calls libm's scalar `erff` per
/// value, a fifth of an all-mpnet-base-v2 pass on short texts; this loop has no branch nor
/// call, so it compiles to SIMD, and it is at least as close to sentence-transformers.
pub(super) struct GeluErf;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
}
