//! Raw shapes of `params.yaml`: every key optional, so validation can name what is missing.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(super) struct Params {
    #[serde(default)]
    pub puzzle_generation: PuzzleGeneration,
    #[serde(default)]
    pub gemini: Gemini,
    #[serde(default)]
    pub multiprocessing: Multiprocessing,
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub embedding: Embedding,
    #[serde(default)]
    pub cache: Cache,
    #[serde(default)]
    pub distributed: Distributed,
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub pricing: std::collections::BTreeMap<String, Price>,
    // Sections of the original that this tool accepts whole but does not use.
    #[allow(dead_code)]
    pub themes: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub vector_search: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub logging: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PuzzleGeneration {
    pub total_puzzle_count: Option<i64>,
    pub words_per_theme: Option<i64>,
    pub themes_per_puzzle: Option<i64>,
    pub random_seed: Option<i64>,
    pub coherence_weight: Option<f64>,
    pub ambiguity_weight: Option<f64>,
    pub ambiguity_margin: Option<f64>,
    pub require_unique: Option<bool>,
    pub red_herrings: Option<i64>,
    pub difficulty_mix: Option<String>,
    /// The original's older name for `words_per_theme` (used when that is absent).
    pub words_per_puzzle: Option<i64>,
    // Keys of the original's file used by its earlier stages, not by this one.
    #[allow(dead_code)]
    pub candidate_words_per_theme: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub min_similarity_threshold: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub theme_selection_method: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Gemini {
    pub model_id: Option<String>,
    pub embedding_dimension: Option<i64>,
    pub api_key_env: Option<String>,
    pub task_type: Option<String>,
    pub requests_per_minute: Option<f64>,
    pub min_request_interval: Option<f64>,
    pub retry_base_delay: Option<f64>,
    pub max_retries: Option<i64>,
    pub base_url: Option<String>,
    pub rpm_counts: Option<crate::limit::RpmCounts>,
    pub tokens_per_minute: Option<f64>,
    pub request_timeout: Option<f64>,
    pub batch_size: Option<i64>,
    pub stall_timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Multiprocessing {
    /// Accepted for compatibility: concurrency here is tasks, always on.
    #[allow(dead_code)]
    pub enabled: Option<bool>,
    pub worker_count: Option<i64>,
    pub tasks_per_batch: Option<i64>,
    pub task_timeout_seconds: Option<f64>,
    /// The original's CSV backup period: the cache database commits continuously.
    #[allow(dead_code)]
    pub cache_backup_interval: Option<serde_json::Value>,
    pub max_concurrent_requests: Option<i64>,
    // Queue sizes and sync interval of the original's process pool: nothing to size here.
    #[allow(dead_code)]
    pub task_queue_size: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub result_queue_size: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub cache_sync_interval: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Output {
    pub csv_precision: Option<i64>,
    pub embedding_cache_file: Option<String>,
    pub puzzle_embeddings_file: Option<String>,
    pub review_page: Option<String>,
    // The original's output switches: its outputs are always JSON with metadata and scores.
    #[allow(dead_code)]
    pub format: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub include_metadata: Option<serde_json::Value>,
    #[allow(dead_code)]
    pub include_similarity_scores: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Paths {
    pub outputs: Option<String>,
    pub reports: Option<String>,
    pub cache: Option<String>,
    pub themes: Option<String>,
    pub candidates: Option<String>,
    /// The folder of the original's puzzle CSV (default home of
    /// `output.puzzle_embeddings_file` when that is not set).
    pub embeddings: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Embedding {
    pub provider: Option<super::ProviderKind>,
    pub mode: Option<super::EmbeddingMode>,
    #[serde(default)]
    pub local: Local,
    #[serde(default)]
    pub openai: OpenAi,
}

/// `batch` (not in the original): the Batch API jobs of `embedding.mode: batch`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Batch {
    pub max_texts_per_job: Option<i64>,
    pub max_active_jobs: Option<i64>,
    pub poll_interval: Option<f64>,
    pub max_wait: Option<f64>,
    pub fallback: Option<super::BatchFallback>,
}

/// One model's entry of `pricing` (not in the original): US dollars per million input tokens.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Price {
    pub interactive: Option<f64>,
    pub batch: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Cache {
    pub path: Option<String>,
}

/// `distributed` (not in the original): runs that share one Redis.
#[derive(Default, Deserialize)]
pub(super) struct Distributed {
    pub redis_url: Option<String>,
    pub redis_nodes: Option<Vec<String>>,
    pub metrics_addr: Option<String>,
    pub redis_password_env: Option<String>,
    /// Deprecated (every run with a Redis queues its themes): any value only warns.
    pub queue: Option<serde_json::Value>,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Distributed { .. }")
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Local {
    pub model_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct OpenAi {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub request_timeout: Option<f64>,
}
