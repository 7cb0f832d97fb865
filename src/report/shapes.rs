//! The output files' JSON shapes: the compatibility contract with the Python pipeline's
//! readers, one typed struct per file.
//!
//! Every key the original writes (`ResultAggregator.aggregate_results`, the
//! `ImprovedGeminiTaskProcessor`'s `multiprocessing_*` keys, `gemini_enhancer.save_results`)
//! is here with the JSON type the original gives it; keys the original does not have are marked
//! "extra". Serialisation keeps field order, so the files read in the original's order.

use std::path::PathBuf;

use serde::Serialize;
use serde::ser::SerializeMap;

/// `final_puzzles.json`: `puzzle_<id>` to its puzzle, in puzzle order.
#[derive(Debug, Clone, Default)]
pub struct FinalPuzzles(pub Vec<(usize, PuzzleEntry)>);

impl Serialize for FinalPuzzles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, puzzle) in &self.0 {
            map.serialize_entry(&puzzle_key(*id), puzzle)?;
        }
        map.end()
    }
}

/// The key of puzzle `id` in `final_puzzles.json`.
pub fn puzzle_key(id: usize) -> String {
    format!("puzzle_{id}")
}

/// One puzzle: `words` holds the groups in the order of `themes`, `words_per_theme` each,
/// scores aligned with the words.
#[derive(Debug, Clone, Serialize)]
pub struct PuzzleEntry {
    pub words: Vec<String>,
    pub theme_similarity_scores: Vec<f64>,
    pub themes: Vec<String>,
    /// Always empty, as in the original's multiprocessing version.
    pub all_candidates: Vec<String>,
    /// The same as `theme_similarity_scores`, as in the original.
    pub all_similarities: Vec<f64>,
    /// Extra: how cleanly the groups separate.
    pub quality: PuzzleQuality,
    /// Extra: how hard each group is (aligned with `themes`).
    pub difficulty: DifficultyEntry,
    /// Extra: whether the words alone split back into the groups.
    pub solver: SolverEntry,
    /// Extra, when `puzzle_generation.red_herrings` asks for them: words that pull toward
    /// another group while the puzzle keeps one solution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub red_herrings: Option<Vec<HerringEntry>>,
}

/// A red herring: `word` of `group`'s theme, pulled toward `decoy_for`'s.
#[derive(Debug, Clone, Serialize)]
pub struct HerringEntry {
    pub word: String,
    pub group: String,
    pub decoy_for: String,
    /// Similarity of the word to `decoy_for`.
    pub pull: f64,
    /// Similarity to its own theme minus `pull`.
    pub margin: f64,
}

/// Extra: the run's red herrings, when asked for.
#[derive(Debug, Clone, Serialize)]
pub struct RunHerrings {
    /// Per puzzle, as `puzzle_generation.red_herrings`.
    pub asked: usize,
    /// Over all puzzles.
    pub planted: usize,
    /// Puzzles with fewer than asked, and why.
    pub puzzles_with_fewer: Vec<HerringShortfall>,
}

/// A puzzle with fewer red herrings than asked.
#[derive(Debug, Clone, Serialize)]
pub struct HerringShortfall {
    pub puzzle_id: usize,
    pub red_herrings: usize,
    pub reason: String,
}

/// Extra per-puzzle difficulty: aligned with `themes`.
#[derive(Debug, Clone, Serialize)]
pub struct DifficultyEntry {
    /// Higher = harder; comparable within the puzzle.
    pub scores: Vec<f64>,
    /// 0 (yellow) to 3 (purple): the ranks of `scores` within the puzzle.
    pub levels: Vec<u8>,
    /// The colour of each level: yellow, green, blue, purple.
    pub colours: Vec<&'static str>,
}

/// Extra: the blind solver's verdict (the puzzle's words without theme names, split into the
/// groups of highest within-group similarity), or why it was not computed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SolverEntry {
    Solved {
        /// Intended groups the best partition reproduces.
        groups_found: usize,
        /// The intended partition is the best one, strictly.
        unique: bool,
        /// Best partition's score minus the runner-up's.
        gap: f64,
    },
    NotComputed {
        not_computed: String,
    },
}

/// Extra: the run's difficulty figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunDifficulty {
    /// Groups at each level, yellow to purple.
    pub groups_per_level: [usize; 4],
    /// Over every group of every puzzle.
    pub score: Describe,
    /// Puzzles the blind solver split exactly as intended, strictly ahead of any other split.
    pub solver_unique: usize,
    /// Puzzles the solver ran on (4 x 4 and other sizes up to 16 words).
    pub solver_puzzles: usize,
    /// Mean of `groups_found` over those puzzles.
    pub solver_groups_found_mean: f64,
    /// Mean, over puzzles, of the range (hardest minus easiest) of their themes' difficulty
    /// estimates, comparable across the run (`crate::design::mix::estimates`): higher when
    /// each puzzle spans more of the run's range (`difficulty_mix: balanced`).
    pub theme_spread: f64,
}

/// Extra per-puzzle quality figures.
#[derive(Debug, Clone, Serialize)]
pub struct PuzzleQuality {
    /// Smallest (own-theme minus best-other-theme similarity) over the puzzle's words.
    pub min_margin: f64,
    /// Aligned with `words`: each word's own-theme similarity minus its highest similarity to
    /// another theme of the puzzle.
    pub word_margins: Vec<f64>,
    /// Aligned with `themes`: mean pairwise similarity of each group's words.
    pub group_coherence: Vec<f64>,
    /// Extra: aligned with `themes`, each aligned with `words`: every word's similarity to
    /// every theme of the puzzle (the review page's heat map).
    pub theme_similarities: Vec<Vec<f64>>,
    /// Mean of `word_margins`.
    pub mean_margin: f64,
    /// The word with the smallest margin: the first a player may put in the wrong group.
    pub weakest_word: String,
    /// Words closer to another theme of the puzzle than to their own (margin below 0).
    pub negative_margin_words: usize,
    /// Mean and smallest of `group_coherence`.
    pub mean_coherence: f64,
    pub min_coherence: f64,
}

/// Extra: the quality of the run's puzzles (margins and coherence as in [`PuzzleQuality`]).
#[derive(Debug, Clone, Serialize)]
pub struct RunQuality {
    pub puzzles: usize,
    /// Over every word of every puzzle.
    pub word_margin: Describe,
    /// Over puzzles: each puzzle's `min_margin`.
    pub puzzle_min_margin: Describe,
    /// Over every group of every puzzle.
    pub group_coherence: Describe,
    /// Over puzzles: each puzzle's `mean_coherence`.
    pub puzzle_mean_coherence: Describe,
    pub negative_margin_words: usize,
    pub puzzles_with_negative_margin: usize,
}

/// Counts in fixed buckets: bucket `i` holds values from `edges[i]` up to `edges[i + 1]`;
/// values below the first edge count in the first bucket, above the last in the last.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

/// `puzzle_metadata.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PuzzleMetadata {
    pub total_themes_needed: usize,
    pub total_themes_available: usize,
    pub themes_reused: bool,
    pub successful_puzzles: usize,
    pub failed_puzzles: Vec<FailedPuzzle>,
    /// Wall-clock seconds of the run (the original summed its workers' seconds).
    pub processing_time: f64,
    pub gemini_config: GeminiConfig,
    pub multiprocessing_enabled: bool,
    pub multiprocessing_implementation: String,
    pub multiprocessing_stats: MultiprocessingStats,
    /// Extra: themes that could not be used, with the reason.
    pub failed_themes: Vec<FailedTheme>,
    /// Extra: failed themes replaced by spare ones.
    pub spare_themes_used: Vec<Replacement>,
    /// Extra: the embedding service's counters.
    pub embedding_stats: EmbeddingStats,
    /// Extra: the puzzle settings of the run.
    pub puzzle_generation: PuzzleGeneration,
    /// Extra: margins and coherence of the run's puzzles.
    pub quality: RunQuality,
    /// Extra: how hard the run's groups are, and how the blind solver fared.
    pub difficulty: RunDifficulty,
    /// Extra, when `puzzle_generation.red_herrings` asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub red_herrings: Option<RunHerrings>,
    /// Extra: where the run wrote its files, relative to this file's folder (what `puzzlegen
    /// report --out DIR` reads); absent where no files are written (the Python package).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_files: Option<OutputFiles>,
}

/// A puzzle that could not be made.
/// The files of a run, each relative to the folder of `puzzle_metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct OutputFiles {
    pub final_puzzles: PathBuf,
    pub analysis: PathBuf,
    pub review_page: PathBuf,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FailedPuzzle {
    /// An integer, as in the original.
    pub puzzle_id: usize,
    pub themes: Vec<String>,
    pub error: String,
}

/// A failed theme replaced by a spare one.
#[derive(Debug, Clone, Serialize)]
pub struct Replacement {
    pub puzzle_id: usize,
    pub failed_theme: String,
    pub reason: String,
    pub spare_theme: String,
}

/// A theme that could not be used, with the reason.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FailedTheme {
    pub theme: String,
    pub error: String,
}

/// `gemini_config`: the original's four keys, then extras.
#[derive(Debug, Clone, Serialize)]
pub struct GeminiConfig {
    pub model_id: String,
    pub embedding_dimension: usize,
    pub words_per_theme: usize,
    pub themes_per_puzzle: usize,
    pub provider: String,
    pub task_type: String,
    /// As written in params.yaml: an integer stays an integer.
    pub requests_per_minute: serde_json::Number,
    pub min_request_interval: f64,
    pub max_retries: u32,
    pub rpm_counts: crate::limit::RpmCounts,
    pub max_concurrent_requests: usize,
}

/// `multiprocessing_stats`, as the original's processor reports them. A task is one theme
/// slot of one puzzle.
#[derive(Debug, Clone, Serialize)]
pub struct MultiprocessingStats {
    pub total_tasks: usize,
    pub completed_tasks: usize,
    pub failed_tasks: usize,
    pub success_rate: f64,
    pub processing_time: f64,
    pub tasks_per_second: f64,
    pub worker_count: usize,
    pub cache_stats: CacheStats,
    pub rate_limiter_stats: RateLimiterStats,
    /// Extra.
    pub task_timeout_seconds: f64,
    /// Extra: distinct themes processed (spares included), succeeded, failed.
    pub themes_processed: usize,
    pub themes_succeeded: usize,
    pub themes_failed: usize,
}

/// `cache_stats`, with the original `SharedEmbeddingCache.get_stats()` keys.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    /// Embeddings in the cache for this run's model, dimension and task type.
    pub cache_size: u64,
    pub hit_rate: f64,
    /// Distinct texts looked up.
    pub total_requests: u64,
    /// The cache CSV (`output.embedding_cache_file`).
    pub cache_file: String,
    pub hits: u64,
    pub misses: u64,
    /// Embeddings newly stored by this run.
    pub writes: u64,
    /// Times the cache CSV was written (once per run).
    pub backups: u64,
    /// When it was last written (whole UNIX seconds, an integer as in the original's
    /// metadata; 0 if never).
    pub last_backup: u64,
    /// Extra: the cache database.
    pub database: String,
}

/// `rate_limiter_stats`, with the original `SharedRateLimiter.get_stats()` keys.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimiterStats {
    /// In flight when the stats were taken (always 0 at the end of a run).
    pub active_requests: u64,
    pub total_requests: u64,
    /// Requests in the last 60 s of the run.
    pub requests_this_minute: u64,
    /// Mean requests per second over the run.
    pub requests_per_second: f64,
    /// As written in params.yaml: an integer stays an integer.
    pub requests_per_minute_limit: serde_json::Number,
    pub max_concurrent_limit: usize,
    pub min_request_interval: f64,
}

/// Extra: the embedding service's counters.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingStats {
    pub lookups: u64,
    pub cache_hits: u64,
    pub cache_hit_rate: f64,
    pub in_flight_hits: u64,
    /// Texts taken from the shared Redis tier (paid for by another process).
    pub shared_hits: u64,
    /// Vectors read from a cache tier that could not be used (embedded again).
    pub bad_cached_vectors: u64,
    pub texts_embedded: u64,
    pub texts_sent: u64,
    pub requests: u64,
    pub retries: std::collections::BTreeMap<String, u64>,
    pub rate_limited_429: u64,
    pub limiter_wait_seconds: f64,
    pub peak_concurrency: usize,
    pub texts_per_second: f64,
    /// `interactive` or `batch` (`embedding.mode`).
    pub mode: &'static str,
    /// What the Batch API jobs did (batch mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchStats>,
}

/// `embedding_stats.batch`: the Batch API jobs of a run in batch mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchStats {
    /// Jobs this run created (resubmissions and follow-ups included).
    pub jobs: usize,
    /// Jobs of an earlier, interrupted run re-attached to and collected.
    pub jobs_resumed: usize,
    /// Texts in each job created, in creation order.
    pub texts_by_job: Vec<usize>,
    /// Texts whose vectors came from jobs.
    pub texts_embedded: usize,
    /// Input tokens of the texts submitted (about four characters a token).
    pub tokens_estimate: u64,
    /// Those tokens at the model's batch price (`pricing`); `None` without a price.
    pub cost_usd_estimate: Option<f64>,
}

/// Extra: the puzzle settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct PuzzleGeneration {
    pub total_puzzle_count: usize,
    pub words_per_theme: usize,
    pub themes_per_puzzle: usize,
    pub random_seed: i64,
    /// The assembly objective's weights (`crate::assemble::Weights`).
    pub coherence_weight: f64,
    pub ambiguity_weight: f64,
    /// Words whose margin is below this are flagged ambiguous in the review page.
    pub ambiguity_margin: f64,
    /// Words swapped until the blind solver finds each puzzle's groups.
    pub require_unique: bool,
    /// Red herrings asked for per puzzle.
    pub red_herrings: usize,
    /// How themes were grouped into puzzles: `in_order` or `balanced`.
    pub difficulty_mix: &'static str,
}

/// `<paths.reports>/embedding_analysis.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingAnalysis {
    pub pipeline_info: PipelineInfo,
    pub similarity_stats: SimilarityStats,
    pub embedding_quality: EmbeddingQuality,
    pub performance_metrics: PerformanceMetrics,
}

/// "The embeddings" of the analysis are the puzzle CSV's rows: each successful puzzle's themes
/// and chosen words.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineInfo {
    pub gemini_model: String,
    pub embedding_dimension: usize,
    pub total_embeddings: usize,
    pub themes_processed: usize,
    pub successful_puzzles: usize,
    pub processing_time: f64,
    /// Extras.
    pub provider: String,
    pub task_type: String,
    pub puzzles_requested: usize,
    pub tool: String,
}

/// Similarity of every usable candidate of every processed theme to its theme (the original
/// leaves this `{}` when it has no candidates; here it always has the keys).
#[derive(Debug, Clone, Serialize)]
pub struct SimilarityStats {
    pub min_similarity: f64,
    pub max_similarity: f64,
    pub mean_similarity: f64,
    /// Sample standard deviation (n - 1), as the original.
    pub std_similarity: f64,
    pub candidate_count: usize,
    /// Extra: the words chosen for the puzzles.
    pub selected_words: Describe,
    /// Extra: every chosen word's margin (own-theme minus best other-theme similarity).
    pub word_margins: Describe,
    /// Extra: every group's coherence (mean pairwise similarity of its words).
    pub group_coherence: Describe,
    /// Extra: `word_margins` in 0.05-wide buckets from -0.5 to 0.5.
    pub word_margin_histogram: Histogram,
    /// Extra: `group_coherence` in 0.05-wide buckets from 0 to 1.
    pub group_coherence_histogram: Histogram,
}

/// Per-dimension sample variance over the analysed vectors.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingQuality {
    pub embedding_dimension: usize,
    pub mean_dimension_variance: f64,
    pub min_dimension_variance: f64,
    pub max_dimension_variance: f64,
    pub total_vectors: usize,
    /// Extras.
    pub puzzle_min_margin: Describe,
    pub puzzles_with_negative_margin: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerformanceMetrics {
    /// Wall seconds per successful puzzle.
    pub avg_time_per_puzzle: f64,
    /// The original's estimate: vectors x dimension x 8 bytes, in MiB.
    pub memory_estimate_mb: f64,
    /// Extras.
    pub wall_time_seconds: f64,
    pub texts_embedded: u64,
    pub texts_per_second: f64,
    pub cache_hits: u64,
    pub cache_hit_rate: f64,
    pub requests: u64,
}

/// Count, mean, population standard deviation, min and max (all zero when empty).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Describe {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Describe {
    pub fn of(xs: &[f64]) -> Describe {
        if xs.is_empty() {
            return Describe::default();
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Describe {
            count: xs.len(),
            mean,
            std: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// A number as YAML gave it: integral values are written as integers (`2900`, not `2900.0`).
pub fn yaml_number(x: f64) -> serde_json::Number {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        serde_json::Number::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).unwrap_or_else(|| serde_json::Number::from(0))
    }
}
