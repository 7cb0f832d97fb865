//! The offline provider: all-MiniLM-L6-v2 run in-process with candle.
//!
//! Reproduces sentence-transformers' `encode`: WordPiece tokens truncated at 256 (the model's
//! `max_seq_length`, not the 128 baked into `tokenizer.json`), BERT forward pass in f32, mean
//! pooling over the attention mask, L2 normalisation. Texts are sorted by token count and cut
//! into micro-batches padded only to their own longest text, so little work is spent on padding.
//! Inference runs on a blocking thread, one batch at a time; candle's matrix kernels use every
//! core for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::{EmbedError, Provider, Space};

/// sentence-transformers' `max_seq_length` for this model (sentence_bert_config.json).
pub const MAX_TOKENS: usize = 256;
/// Texts per forward pass: large enough to keep both cores busy, small enough that sorting by
/// length leaves little padding (see docs/PERFORMANCE.md).
pub const MICRO_BATCH: usize = 64;
/// Model id recorded in the cache namespace and the reports.
pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The loaded model and tokenizer; `embed_blocking` is synchronous and CPU-bound.
pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    space: Space,
}

impl LocalModel {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<LocalModel, EmbedError> {
        let file = |name: &str| -> Result<PathBuf, EmbedError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EmbedError::Setup(format!(
                    "local model: {} not found (embedding.local.model_dir = {}); \
                     fetch the model with: scripts/fetch-model.sh",
                    p.display(),
                    dir.display()
                )))
            }
        };
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            EmbedError::Setup(format!("local model in {}: {what}: {e}", dir.display()))
        };
        let weights = file("model.safetensors")?;
        let config_text = std::fs::read_to_string(file("config.json")?)
            .map_err(|e| setup("reading config.json", &e))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| setup("config.json", &e))?;
        let mut tokenizer = Tokenizer::from_file(file("tokenizer.json")?)
            .map_err(|e| setup("tokenizer.json", &e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| setup("tokenizer truncation", &e))?;
        // SAFETY: the weights file is opened read-only and not modified while mapped; this is
        // candle's documented way to load safetensors without copying them.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
                .map_err(|e| setup("model.safetensors", &e))?;
        let model = BertModel::load(vb, &config).map_err(|e| setup("model.safetensors", &e))?;
        Ok(LocalModel {
            model,
            tokenizer,
            space: Space {
                model_id: MODEL_ID.to_owned(),
                dimension: config.hidden_size,
                task_type: "sentence-similarity".to_owned(),
            },
        })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Embeds `texts` on the calling thread; one unit vector per text, in input order.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let backend = |e: &dyn std::fmt::Display| EmbedError::Backend(format!("local model: {e}"));
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| backend(&e))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(MICRO_BATCH) {
            let width = chunk
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * width);
            let mut mask = Vec::with_capacity(chunk.len() * width);
            for &i in chunk {
                let e = &encodings[i];
                ids.extend_from_slice(e.get_ids());
                mask.extend_from_slice(e.get_attention_mask());
                let pad = width - e.get_ids().len();
                ids.extend(std::iter::repeat_n(0u32, pad));
                mask.extend(std::iter::repeat_n(0u32, pad));
            }
            let vectors = self
                .forward(chunk.len(), width, ids, mask)
                .map_err(|e| backend(&e))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn forward(
        &self,
        rows: usize,
        width: usize,
        ids: Vec<u32>,
        mask: Vec<u32>,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, width), dev)?;
        let mask = Tensor::from_vec(mask, (rows, width), dev)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// [`Provider`] over a [`LocalModel`]: one batch at a time on a blocking thread.
pub struct LocalProvider {
    model: Arc<LocalModel>,
    gate: tokio::sync::Semaphore,
}

impl LocalProvider {
    pub fn load(dir: &Path) -> Result<LocalProvider, EmbedError> {
        Ok(LocalProvider {
            model: Arc::new(LocalModel::load(dir)?),
            gate: tokio::sync::Semaphore::new(1),
        })
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn space(&self) -> &Space {
        self.model.space()
    }

    fn max_batch(&self) -> usize {
        512
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let _turn = self
            .gate
            .acquire()
            .await
            .map_err(|e| EmbedError::Backend(e.to_string()))?;
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.embed_blocking(&texts))
            .await
            .map_err(|e| EmbedError::Backend(format!("local model thread: {e}")))?
    }
}
