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
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::bert::BertEncoder;
use super::folder::{Architecture, ModelFolder};
use super::mpnet::MpnetModel;

/// The most texts of one call to the local model.
pub const MAX_BATCH: usize = 512;
use super::pooling::{Pooling, normalize};
use super::{EmbedError, Provider, Space};

/// Most texts per forward pass: the best of 16-256 measured in docs/PERFORMANCE.md. Smaller
/// calls are split so every core gets a share.
pub const MICRO_BATCH: usize = 32;

/// The encoder of a model folder: texts' token ids -> token vectors.
enum Encoder {
    Bert(BertEncoder),
    Mpnet(MpnetModel),
}

impl Encoder {
    /// `ids`, `mask`: (batch, seq) u32. Returns (batch, seq, hidden).
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoder::Bert(m) => m.forward(ids, mask),
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
            Architecture::Bert(c) => Encoder::Bert(BertEncoder::load(vb, c).map_err(damaged)?),
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
        // Micro-batches of at most `micro_batch` texts, as many as a multiple of the cores and
        // of even size, so that no core is left with a short last one while the other works.
        let cores = self.pools.len();
        let count = texts.len().div_ceil(self.micro_batch).div_ceil(cores) * cores;
        let size = texts.len().div_ceil(count.max(1)).max(1);
        // Longest texts first: the last micro-batches to be picked up are then the cheapest.
        let chunks: Vec<&[usize]> = order.chunks(size).rev().collect();
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

/// [`Provider`] over a [`LocalModel`]. Calls that arrive while the model is busy wait in a
/// queue, and the next pass embeds all of them at once (up to [`MOST_PER_PASS`] texts): the
/// service cuts its requests as texts come (every few milliseconds), and one large call keeps
/// both cores busy and sorts more texts by length than several small ones in a row.
pub struct LocalProvider {
    model: Arc<LocalModel>,
    queue: Arc<Mutex<Queue>>,
}

/// Where an answer goes.
type Reply = tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

/// Calls waiting for the model.
#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<String>, Reply)>,
    /// A blocking thread is embedding and will take `waiting` next.
    busy: bool,
}

/// Most texts one pass of the model takes from the queue (whole calls; a call larger than
/// this is taken alone).
pub const MOST_PER_PASS: usize = 2048;

impl LocalProvider {
    pub fn load(dir: &Path) -> Result<LocalProvider, EmbedError> {
        Ok(LocalProvider {
            model: Arc::new(LocalModel::load(dir)?),
            queue: Arc::default(),
        })
    }
}

/// Embeds what waits in `queue`, pass after pass, until nothing does.
fn drain(model: &LocalModel, queue: &Mutex<Queue>) {
    loop {
        let calls: Vec<(Vec<String>, Reply)> = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            let (mut take, mut texts) = (0, 0);
            for (t, _) in &q.waiting {
                if take > 0 && texts + t.len() > MOST_PER_PASS {
                    break;
                }
                take += 1;
                texts += t.len();
            }
            if take == 0 {
                q.busy = false;
                return;
            }
            q.waiting.drain(..take).collect()
        };
        let all: Vec<String> = calls.iter().flat_map(|(t, _)| t.iter().cloned()).collect();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed_blocking(&all)))
                .unwrap_or_else(|_| Err(EmbedError::Transient("local model: panicked".into())));
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (texts, reply) in calls {
                    // A caller that gave up (the run is stopping) no longer listens.
                    let _ = reply.send(Ok(vectors.by_ref().take(texts.len()).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in calls {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn space(&self) -> &Space {
        self.model.space()
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push((texts, reply));
            !std::mem::replace(&mut q.busy, true)
        };
        if start {
            let model = Arc::clone(&self.model);
            let queue = Arc::clone(&self.queue);
            tokio::task::spawn_blocking(move || drain(&model, &queue));
        }
        answer.await.map_err(|_| {
            EmbedError::Transient("local model thread ended without an answer".into())
        })?
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
