//! The offline provider: a sentence-transformers model (all-MiniLM-L6-v2 by default, or any
//! folder [`super::folder`] can read: BERT or MPNet) run in-process with candle.
//!
//! Reproduces sentence-transformers' `encode`: tokens truncated at the folder's
//! `max_seq_length` (not the length baked into `tokenizer.json`), the encoder's forward pass in
//! f32, the folder's pooling over the attention mask, L2 normalisation when the folder has it.
//! Texts are sorted by token count and cut into micro-batches padded only to their own longest
//! text, so little work is spent on padding. Each core runs whole micro-batches on its own
//! single-thread pool: for the small matrices of short texts that scales far better than
//! splitting every matrix product across cores (docs/PERFORMANCE.md has the figures). candle's
//! own element-wise pool must then be off (`CANDLE_NUM_THREADS=1`, read once at its first use):
//! [`prefer_per_core_batches`] sets it, and the `puzzlegen` binary calls it before starting any
//! thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::folder::{Architecture, ModelFolder};
use super::mpnet::MpnetModel;
use super::pooling::{Pooling, normalize};
use super::{EmbedError, Provider, Space};

/// Most texts per forward pass: the best of 16-256 measured in docs/PERFORMANCE.md. Smaller
/// calls are split so every core gets a share.
pub const MICRO_BATCH: usize = 32;

/// The encoder of a model folder: texts' token ids -> token vectors.
enum Encoder {
    Bert(BertModel),
    Mpnet(MpnetModel),
}

impl Encoder {
    /// `ids`, `mask`: (batch, seq) u32. Returns (batch, seq, hidden).
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoder::Bert(m) => m.forward(ids, &ids.zeros_like()?, Some(mask)),
            Encoder::Mpnet(m) => m.forward(ids, mask),
        }
    }
}

/// The loaded model and tokenizer; `embed_blocking` is synchronous and CPU-bound.
pub struct LocalModel {
    encoder: Encoder,
    tokenizer: Tokenizer,
    space: Space,
    pad_id: u32,
    pooling: Pooling,
    normalize: bool,
    lowercase: bool,
    micro_batch: usize,
    /// One single-thread pool per core; candle's kernels run inside the pool of their caller.
    pools: Vec<rayon::ThreadPool>,
}

impl LocalModel {
    /// Loads the model folder `dir` (see [`ModelFolder`]).
    ///
    /// A damaged or foreign file is a one-line error naming it and the fetch script: candle's
    /// errors carry a backtrace in their `Display` when `RUST_BACKTRACE` is set, which is cut.
    pub fn load(dir: &Path) -> Result<LocalModel, EmbedError> {
        let folder = ModelFolder::read(dir)?;
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            let e = e.to_string();
            EmbedError::Setup(format!(
                "local model in {}: {what}: {}; fetch it again with scripts/fetch-model.sh",
                dir.display(),
                e.lines().next().unwrap_or_default()
            ))
        };
        let mut tokenizer =
            Tokenizer::from_file(&folder.tokenizer).map_err(|e| setup("tokenizer.json", &e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: folder.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| setup("tokenizer truncation", &e))?;
        let damaged = |e: candle_core::Error| {
            EmbedError::Setup(format!(
                "{}: not a usable model for its config.json ({}); fetch it again with \
                 scripts/fetch-model.sh",
                folder.weights.display(),
                candle_message(&e)
            ))
        };
        // SAFETY: the weights file is opened read-only and not modified while mapped; this is
        // candle's documented way to load safetensors without copying them.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&folder.weights),
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(damaged)?;
        let encoder = match &folder.architecture {
            Architecture::Bert(c) => Encoder::Bert(BertModel::load(vb, c).map_err(damaged)?),
            Architecture::Mpnet(c) => Encoder::Mpnet(MpnetModel::load(vb, c).map_err(damaged)?),
        };
        Ok(LocalModel {
            encoder,
            tokenizer,
            space: folder.space(),
            pad_id: folder.pad_id,
            pooling: folder.pooling,
            normalize: folder.normalize,
            lowercase: folder.lowercase,
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
        // sentence-transformers lowercases before tokenizing when the folder says so.
        let prepared: Vec<String> = texts
            .iter()
            .map(|t| {
                if self.lowercase {
                    t.to_lowercase()
                } else {
                    t.clone()
                }
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(prepared, true)
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
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let rows = chunk.len();
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, width), dev)?;
        let mask = Tensor::from_vec(mask, (rows, width), dev)?;
        let hidden = self.encoder.forward(&ids, &mask)?;
        let pooled = self.pooling.pool(&hidden, &mask)?;
        if self.normalize {
            normalize(&pooled)?.to_vec2::<f32>()
        } else {
            pooled.to_vec2::<f32>()
        }
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
                .thread_name(move |_| format!("local-model-{i}"))
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
