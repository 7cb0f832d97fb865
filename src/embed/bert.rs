//! BERT (`model_type: bert`: all-MiniLM-L6-v2, bge, e5, gte) for sentence embeddings: the
//! encoder of Hugging Face transformers' `BertModel` without its pooler, on the shared
//! [`super::transformer::Layer`] (so its GELU is the vectorised one; candle-transformers'
//! `BertModel` computes erf per value, about a sixth of a MiniLM pass).
//!
//! Embeddings: word + token type 0 + absolute position (0, 1, ...), then a layer norm; every
//! layer's attention scores get the padding mask (`f32::MIN` on padding keys). The weights are
//! those of a sentence-transformers folder (`embeddings.*`, `encoder.layer.N.attention.self.
//! {query,key,value}`, ...), also under a `bert.` prefix.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder, embedding, layer_norm};
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

use super::transformer::{Activation, Layer, LayerNames, Sizes};

/// Where BERT's layer weights are.
const BERT_NAMES: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
};

/// BERT's encoder: embeddings and layers. Returns the last hidden state.
pub struct BertEncoder {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl BertEncoder {
    pub fn load(vb: VarBuilder, c: &Config) -> Result<BertEncoder> {
        if c.position_embedding_type != PositionEmbeddingType::Absolute {
            candle_core::bail!("position_embedding_type other than \"absolute\" is not supported");
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let activation = match c.hidden_act {
            HiddenAct::Gelu => Activation::GeluErf,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        };
        let sizes = Sizes {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
        };
        let e = vb.pp("embeddings");
        Ok(BertEncoder {
            words: embedding(c.vocab_size, c.hidden_size, e.pp("word_embeddings"))?,
            positions: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embeddings"),
            )?,
            token_types: embedding(
                c.type_vocab_size,
                c.hidden_size,
                e.pp("token_type_embeddings"),
            )?,
            embedding_norm: layer_norm(c.hidden_size, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| {
                    Layer::load(
                        vb.pp(format!("encoder.layer.{i}")),
                        &BERT_NAMES,
                        sizes,
                        activation,
                    )
                })
                .collect::<Result<_>>()?,
        })
    }

    /// `ids` and `mask`: (batch, seq) u32, padded on the right. Returns (batch, seq, hidden).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let dev = ids.device();
        let positions = Tensor::arange(0u32, seq as u32, dev)?;
        let embedded = (self.words.forward(ids)?
            + self.token_types.forward(&ids.zeros_like()?)?)?
        .broadcast_add(&self.positions.forward(&positions)?)?;
        let mut xs = self.embedding_norm.forward(&embedded)?;
        // (batch, 1, 1, seq): 0 on real tokens, the most negative float on padding.
        let padding = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?
            .unsqueeze(1)?
            .unsqueeze(1)?
            .contiguous()?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &padding)?;
        }
        Ok(xs)
    }
}
