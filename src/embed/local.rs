//! The offline provider: all-MiniLM-L6-v2 run in-process with candle.
//!
//! Reproduces sentence-transformers' `encode`: WordPiece tokens truncated at 256 (the model's
//! `max_seq_length`, not the 128 baked into `tokenizer.json`), BERT forward pass in f32, mean
//! pooling over the attention mask, L2 normalisation. Texts are sorted by token count and cut
//! into micro-batches padded only to their own longest text, so little work is spent on padding.
//! Each core runs whole micro-batches on its own single-thread pool: for the small matrices of
//! short texts that scales far better than splitting every matrix product across cores
//! (docs/PERFORMANCE.md has the figures). candle's own element-wise pool must then be off
//! (`CANDLE_NUM_THREADS=1`, read once at its first use): [`prefer_per_core_batches`] sets it,
//! and the `puzzlegen` binary calls it before starting any thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::{EmbedError, Provider, Space};

/// sentence-transformers' `max_seq_length` for this model (sentence_bert_config.json).
pub const MAX_TOKENS: usize = 256;
/// Most texts per forward pass: the best of 16-256 measured in docs/PERFORMANCE.md. Smaller
/// calls are split so every core gets a share.
pub const MICRO_BATCH: usize = 32;
/// Model id recorded in the cache namespace and the reports.
pub const MODEL_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The task type the local model's cache entries are filed under.
pub const TASK_TYPE: &str = "sentence-similarity";

/// The vector size of all-MiniLM-L6-v2 (its config.json `hidden_size`).
pub const DIMENSION: usize = 384;

/// The loaded model and tokenizer; `embed_blocking` is synchronous and CPU-bound.
pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    space: Space,
    micro_batch: usize,
    /// One single-thread pool per core; candle's kernels run inside the pool of their caller.
    pools: Vec<rayon::ThreadPool>,
}

impl LocalModel {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    ///
    /// A damaged or foreign file is a one-line error naming it and the fetch script: candle's
    /// errors carry a backtrace in their `Display` when `RUST_BACKTRACE` is set, which is cut.
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
            let e = e.to_string();
            EmbedError::Setup(format!(
                "local model in {}: {what}: {}; fetch it again with scripts/fetch-model.sh",
                dir.display(),
                e.lines().next().unwrap_or_default()
            ))
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
        let damaged = |e: candle_core::Error| {
            EmbedError::Setup(format!(
                "{}: not a usable all-MiniLM-L6-v2 model ({}); fetch it again with \
                 scripts/fetch-model.sh",
                weights.display(),
                candle_message(&e)
            ))
        };
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&weights),
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(damaged)?;
        let model = BertModel::load(vb, &config).map_err(damaged)?;
        Ok(LocalModel {
            model,
            tokenizer,
            space: Space {
                model_id: MODEL_ID.to_owned(),
                dimension: config.hidden_size,
                task_type: TASK_TYPE.to_owned(),
            },
            micro_batch: MICRO_BATCH,
            pools: single_thread_pools().map_err(|e| setup("thread pools", &e))?,
        })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Sets the number of texts per forward pass (benchmarks compare sizes).
    pub fn with_micro_batch(mut self, texts: usize) -> LocalModel {
        self.micro_batch = texts.max(1);
        self
    }

    /// Sets how many micro-batches run at once, one per single-thread pool.
    pub fn with_threads(mut self, threads: usize) -> LocalModel {
        self.pools.truncate(threads.max(1));
        self
    }

    /// Embeds `texts` on the calling thread; one unit vector per text, in input order.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let backend =
            |e: &dyn std::fmt::Display| EmbedError::Transient(format!("local model: {e}"));
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| backend(&e))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let per_core = texts.len().div_ceil(self.pools.len());
        let chunks: Vec<&[usize]> = order.chunks(per_core.clamp(1, self.micro_batch)).collect();
        let next = AtomicUsize::new(0);
        let out = Mutex::new(vec![Vec::new(); texts.len()]);
        let failure = Mutex::new(None);
        // Each pool pulls the next micro-batch until none is left.
        let work = || loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(n) else { return };
            match self.forward_chunk(chunk, &encodings) {
                Ok(vectors) => {
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    for (&i, v) in chunk.iter().zip(vectors) {
                        out[i] = v;
                    }
                }
                Err(e) => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    next.store(chunks.len(), Ordering::Relaxed);
                    return;
                }
            }
        };
        std::thread::scope(|s| {
            for pool in &self.pools {
                s.spawn(|| pool.install(work));
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(backend(&e));
        }
        let out = out.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(out)
    }

    /// Pads the texts of `chunk` to their longest and runs one forward pass.
    fn forward_chunk(
        &self,
        chunk: &[usize],
        encodings: &[tokenizers::Encoding],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
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
        let rows = chunk.len();
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

/// Turns off candle's spinning element-wise thread pool, so that the per-core micro-batches do
/// not fight it for the cores (twice the throughput on 2 cores, docs/PERFORMANCE.md). Does
/// nothing if `CANDLE_NUM_THREADS` is already set.
///
/// # Safety
///
/// Changes the process environment: call it before any other thread exists (first thing in
/// `main`), as for [`std::env::set_var`].
pub unsafe fn prefer_per_core_batches() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread is running.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

/// One single-thread rayon pool per available core.
fn single_thread_pools() -> Result<Vec<rayon::ThreadPool>, rayon::ThreadPoolBuildError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cores)
        .map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("minilm-{i}"))
                .build()
        })
        .collect()
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
            .map_err(|e| EmbedError::Transient(e.to_string()))?;
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.embed_blocking(&texts))
            .await
            .map_err(|e| EmbedError::Transient(format!("local model thread: {e}")))?
    }
}

/// A candle error in one line: without the backtrace candle embeds (and prints) when
/// `RUST_BACKTRACE` is set.
fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        e => {
            let text = e.to_string();
            crate::text::cut(text.lines().next().unwrap_or_default().trim(), 200)
        }
    }
}
