//! Output files, with the Python pipeline's names and shapes, each written atomically.
//!
//! - `<paths.outputs>/final_puzzles.json`, `<paths.outputs>/puzzle_metadata.json`,
//!   `<paths.reports>/embedding_analysis.json`: built as the typed [`shapes`], the contract
//!   with the original's readers;
//! - `output.puzzle_embeddings_file` (a path as written, relative to the working directory):
//!   `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`, for each group of each
//!   finished puzzle a `theme` row (rank 0) then its words as `selected_word` (rank 1..), values
//!   rounded to `output.csv_precision`;
//! - `output.embedding_cache_file` (the cache CSV in the original's backup layout) is written
//!   by [`crate::cache`], not here;
//! - `output.review_page` (default `<paths.reports>/puzzles.html`): the review page
//!   ([`page`], charts in [`charts`]), built from the three JSON files' shapes.
//!
//! The outputs are replaced as a set ([`crate::fsx`]): every file is written complete and synced to
//! a temporary file next to its target first, then all are renamed into place; if any cannot
//! be written, none is replaced. A device, FIFO or descriptor as a target is written through,
//! a symlink's target is replaced (the link stays). A run that stopped early writes its set to
//! `<paths.outputs>/partial/` instead ([`OutputPaths::partial`]). New files get the usual mode
//! (0666 less the umask); a replaced file keeps its mode.

pub mod charts;
pub mod page;
mod quality;
pub mod shapes;
mod shown;
mod space;
mod targets;

pub use quality::{COHERENCE_BUCKETS, MARGIN_BUCKETS};
pub use space::{SpaceError, check_space, min_csv_bytes_per_puzzle};
pub use targets::{
    PARTIAL_DIR, TargetError, check_targets, database_files, outputs, remove_stale_temps,
};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::assemble::Puzzle;
use crate::config::Config;
use crate::design::{self, Design};
use crate::embed::Space;
use crate::fsx::{Abort, Staged, WriteError, stage_until};
use crate::plan::Plan;
use crate::service::ServiceStats;
use crate::words::ThemeScores;
use quality::round6;
use rayon::prelude::*;
use shapes::{
    CacheStats, Describe, DifficultyEntry, EmbeddingAnalysis, EmbeddingQuality, EmbeddingStats,
    FailedPuzzle, FailedTheme, FinalPuzzles, GeminiConfig, HerringEntry, HerringShortfall,
    MultiprocessingStats, OutputFiles, PerformanceMetrics, PipelineInfo, PuzzleEntry,
    PuzzleGeneration, PuzzleMetadata, RateLimiterStats, Replacement, RunDifficulty, RunHerrings,
    SimilarityStats, SolverEntry, yaml_number,
};

/// What the run did to the cache, for `cache_stats`.
#[derive(Debug, Clone, Default)]
pub struct CacheRecord {
    /// Embeddings of this run's space in the cache at the end.
    pub entries: u64,
    /// Embeddings newly stored by this run.
    pub written: u64,
    /// The database file (empty without one).
    pub database: PathBuf,
    /// When the cache CSV was last written (UNIX seconds; 0 if never).
    pub csv_written_at: f64,
}

/// Everything a run produced, as the reports need it.
pub struct RunRecord<'a> {
    pub config: &'a Config,
    pub plan: &'a Plan,
    pub space: &'a Space,
    pub puzzles: &'a [Puzzle],
    pub failed_puzzles: &'a [FailedPuzzle],
    /// Every theme processed successfully, in processing order.
    pub themes_ok: &'a [&'a ThemeScores],
    pub themes_failed: &'a [FailedTheme],
    pub replacements: &'a [Replacement],
    pub stats: &'a ServiceStats,
    pub cache: &'a CacheRecord,
    /// Theme slots of the plan filled with a usable theme (the original's completed tasks).
    pub slots_filled: usize,
    pub elapsed: Duration,
    /// What the Batch API jobs did (batch mode only).
    pub batch: Option<&'a shapes::BatchStats>,
}

impl RunRecord<'_> {
    pub fn texts_per_second(&self) -> f64 {
        per_second(self.stats.texts_embedded as f64, self.elapsed)
    }
}

fn per_second(n: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n / secs } else { 0.0 }
}

/// Where a run's output set goes: the configured places, or `<paths.outputs>/partial/` for a
/// run that stopped early (see [`OutputPaths::partial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPaths {
    pub final_puzzles: PathBuf,
    pub metadata: PathBuf,
    pub analysis: PathBuf,
    pub puzzle_csv: PathBuf,
    pub cache_csv: PathBuf,
    pub review_page: PathBuf,
}

impl OutputPaths {
    /// The places the config names.
    pub fn of(config: &Config) -> OutputPaths {
        let o = &config.output;
        OutputPaths {
            final_puzzles: o.outputs_dir.join("final_puzzles.json"),
            metadata: o.outputs_dir.join("puzzle_metadata.json"),
            analysis: o.reports_dir.join("embedding_analysis.json"),
            puzzle_csv: o.puzzle_embeddings_file.clone(),
            cache_csv: o.embedding_cache_file.clone(),
            review_page: o.review_page.clone(),
        }
    }

    /// `<paths.outputs>/partial/`, each file by its own name: where a run that stopped early
    /// writes, so that it never replaces a complete earlier set.
    pub fn partial(config: &Config) -> OutputPaths {
        let dir = partial_dir(config);
        let name = |p: &Path, default: &str| {
            dir.join(
                p.file_name()
                    .unwrap_or_else(|| std::ffi::OsStr::new(default)),
            )
        };
        let o = &config.output;
        let puzzle_csv = name(&o.puzzle_embeddings_file, "puzzle_embeddings.csv");
        let mut cache_csv = name(&o.embedding_cache_file, "all_embeddings.csv");
        if cache_csv == puzzle_csv {
            cache_csv = dir.join("cache-all_embeddings.csv");
        }
        OutputPaths {
            final_puzzles: dir.join("final_puzzles.json"),
            metadata: dir.join("puzzle_metadata.json"),
            analysis: dir.join("embedding_analysis.json"),
            review_page: name(&o.review_page, "puzzles.html"),
            puzzle_csv,
            cache_csv,
        }
    }

    /// The files in the order they are put in place: `final_puzzles.json` last, so that a
    /// reader that sees it new sees the rest new too.
    pub fn all(&self) -> [&Path; 6] {
        [
            &self.cache_csv,
            &self.puzzle_csv,
            &self.review_page,
            &self.analysis,
            &self.metadata,
            &self.final_puzzles,
        ]
    }
}

/// `<paths.outputs>/partial`.
pub fn partial_dir(config: &Config) -> PathBuf {
    config.output.outputs_dir.join(PARTIAL_DIR)
}

/// Removes what an earlier, stopped run left in `<paths.outputs>/partial/` (the file names it
/// writes there, then the folder if that left it empty).
pub fn remove_partial(config: &Config) {
    let dir = partial_dir(config);
    if !dir.is_dir() {
        return;
    }
    for f in OutputPaths::partial(config).all() {
        let _ = std::fs::remove_file(f);
    }
    if std::fs::remove_dir(&dir).is_ok() {
        tracing::info!(
            "removed {} (outputs of an earlier run that stopped early)",
            dir.display()
        );
    }
}

/// Stages the JSON files, the review page and the puzzle CSV of a run at `to` (the cache CSV is staged by
/// [`crate::cache::backup_csv`]); in the order of [`OutputPaths::all`] less the cache CSV.
/// `abort` gives the set up part way (nothing is left behind; see [`stage_until`]).
pub fn stage_all(r: &RunRecord, to: &OutputPaths, abort: Abort) -> Result<Vec<Staged>, WriteError> {
    let puzzle_csv = stage_csv(
        &to.puzzle_csv,
        r.space.dimension,
        r.config.output.csv_precision,
        &puzzle_blocks(r),
        abort,
    )?;
    let designs = designs(r);
    let finals = final_puzzles(r.puzzles, &designs);
    let mut metadata_shape = metadata(r, &designs);
    metadata_shape.output_files = Some(output_files(to));
    let analysis_shape = analysis(r);
    let page =
        page::PageInput::from_shapes(&finals, &metadata_shape, &analysis_shape).map_err(|e| {
            WriteError {
                path: to.review_page.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
    let page = page::stage_page(&to.review_page, &page, abort)?;
    let analysis = stage_json(&to.analysis, &analysis_shape, abort)?;
    let metadata = stage_json(&to.metadata, &metadata_shape, abort)?;
    let final_puzzles = stage_json(&to.final_puzzles, &finals, abort)?;
    Ok(vec![puzzle_csv, page, analysis, metadata, final_puzzles])
}

/// Where `to` puts the files, relative to the folder of its `puzzle_metadata.json`.
fn output_files(to: &OutputPaths) -> OutputFiles {
    let base = to.metadata.parent().unwrap_or(Path::new(""));
    OutputFiles {
        final_puzzles: relative_to(base, &to.final_puzzles),
        analysis: relative_to(base, &to.analysis),
        review_page: relative_to(base, &to.review_page),
    }
}

/// `target` as seen from the folder `base` (both as given, or relative to the working
/// directory): `../reports/x.json` for `reports/x.json` from `outputs`. Falls back to `target`
/// made absolute where no relative path exists (another drive, an unreadable working
/// directory).
pub fn relative_to(base: &Path, target: &Path) -> PathBuf {
    fn clean(p: &Path) -> Vec<std::path::Component<'_>> {
        use std::path::Component;
        let mut out: Vec<Component> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    }
    let (Ok(base), Ok(target)) = (std::path::absolute(base), std::path::absolute(target)) else {
        return target.to_owned();
    };
    // `absolute` keeps `..`: take it away lexically, as the paths were written.
    let (base, target) = (clean(&base), clean(&target));
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return target.iter().collect();
    }
    let mut rel = PathBuf::new();
    for _ in common..base.len() {
        rel.push("..");
    }
    rel.extend(&target[common..]);
    rel
}

/// The design (difficulty, solver verdict, red herrings) of each of a run's puzzles, in order:
/// the second argument of [`final_puzzles`] and [`metadata`].
pub fn designs(r: &RunRecord) -> Vec<Design> {
    let goals = design::Goals::of(&r.config.puzzle);
    r.puzzles
        .par_iter()
        .map(|p| design::design(p, &goals))
        .collect()
}

/// `final_puzzles.json`; `designs` aligned with `puzzles`.
pub fn final_puzzles(puzzles: &[Puzzle], designs: &[Design]) -> FinalPuzzles {
    FinalPuzzles(
        puzzles
            .iter()
            .zip(designs)
            .map(|(p, d)| {
                let words = p.groups.iter().flat_map(|g| &g.words);
                let scores: Vec<f64> = words.clone().map(|w| round6(w.similarity)).collect();
                let entry = PuzzleEntry {
                    words: words.map(|w| w.word.clone()).collect(),
                    theme_similarity_scores: scores.clone(),
                    themes: p.groups.iter().map(|g| g.theme.clone()).collect(),
                    all_candidates: Vec::new(),
                    all_similarities: scores,
                    quality: quality::puzzle(p, theme_similarities(p)),
                    difficulty: DifficultyEntry {
                        scores: d
                            .difficulty
                            .scores
                            .iter()
                            .map(|&x| (x * 1e6).round() / 1e6)
                            .collect(),
                        levels: d.difficulty.levels.clone(),
                        colours: d.difficulty.colours(),
                    },
                    solver: match &d.solver {
                        Ok(v) => SolverEntry::Solved {
                            groups_found: v.groups_found,
                            unique: v.unique,
                            gap: round6(v.gap),
                        },
                        Err(e) => SolverEntry::NotComputed {
                            not_computed: e.to_string(),
                        },
                    },
                    red_herrings: d.herrings.as_ref().map(|h| {
                        h.list
                            .iter()
                            .map(|x| HerringEntry {
                                word: x.word.clone(),
                                group: x.group.clone(),
                                decoy_for: x.decoy_for.clone(),
                                pull: round6(x.pull),
                                margin: round6(x.margin),
                            })
                            .collect()
                    }),
                };
                (p.id, entry)
            })
            .collect(),
    )
}

/// Each theme of `p` (rows) against each of its words (columns): the words' similarity to it.
fn theme_similarities(p: &Puzzle) -> Vec<Vec<f64>> {
    p.groups
        .iter()
        .map(|g| {
            p.groups
                .iter()
                .flat_map(|h| &h.words)
                .map(|w| round6(crate::embed::cosine(&w.vector, &g.vector)))
                .collect()
        })
        .collect()
}

/// `puzzle_metadata.json`; `designs` aligned with the run's puzzles.
pub fn metadata(r: &RunRecord, designs: &[Design]) -> PuzzleMetadata {
    let c = r.config;
    let s = r.stats;
    PuzzleMetadata {
        total_themes_needed: r.plan.themes_needed,
        total_themes_available: r.plan.themes_available,
        themes_reused: r.plan.themes_reused(),
        successful_puzzles: r.puzzles.len(),
        failed_puzzles: r.failed_puzzles.to_vec(),
        processing_time: r.elapsed.as_secs_f64(),
        gemini_config: gemini_config(r),
        multiprocessing_enabled: true,
        multiprocessing_implementation: concat!("puzzlegen ", env!("CARGO_PKG_VERSION")).into(),
        multiprocessing_stats: multiprocessing_stats(r),
        failed_themes: r.themes_failed.to_vec(),
        spare_themes_used: r.replacements.to_vec(),
        embedding_stats: EmbeddingStats {
            lookups: s.lookups,
            cache_hits: s.cache_hits,
            cache_hit_rate: s.hit_rate(),
            in_flight_hits: s.in_flight_hits,
            shared_hits: s.shared_hits,
            bad_cached_vectors: s.bad_cached_vectors,
            texts_embedded: s.texts_embedded,
            texts_sent: s.texts_sent,
            requests: s.requests,
            retries: s.retries.clone(),
            rate_limited_429: s.rate_limited,
            limiter_wait_seconds: s.limiter_wait_seconds,
            peak_concurrency: s.peak_concurrency,
            texts_per_second: r.texts_per_second(),
            mode: match c.mode {
                crate::config::EmbeddingMode::Interactive => "interactive",
                crate::config::EmbeddingMode::Batch => "batch",
            },
            batch: r.batch.cloned(),
        },
        puzzle_generation: PuzzleGeneration {
            total_puzzle_count: c.puzzle.total_puzzle_count,
            words_per_theme: c.puzzle.words_per_theme,
            themes_per_puzzle: c.puzzle.themes_per_puzzle,
            random_seed: c.puzzle.random_seed,
            coherence_weight: c.puzzle.coherence_weight,
            ambiguity_weight: c.puzzle.ambiguity_weight,
            ambiguity_margin: c.puzzle.ambiguity_margin,
            require_unique: c.puzzle.require_unique,
            red_herrings: c.puzzle.red_herrings,
            difficulty_mix: c.puzzle.difficulty_mix.name(),
        },
        quality: quality::run(r.puzzles),
        difficulty: run_difficulty(r.puzzles, designs),
        red_herrings: (c.puzzle.red_herrings > 0).then(|| run_herrings(r.puzzles, designs, c)),
        output_files: None,
    }
}

/// Mean within-puzzle range of the themes' run-wide difficulty estimates (from each group's
/// chosen words).
fn theme_spread(puzzles: &[Puzzle]) -> f64 {
    let groups: Vec<(&str, f64)> = puzzles
        .iter()
        .flat_map(|p| &p.groups)
        .map(|g| {
            let sum: f64 = g.words.iter().map(|w| f64::from(w.similarity)).sum();
            (g.theme.as_str(), sum / g.words.len().max(1) as f64)
        })
        .collect();
    let mut estimates = design::mix::estimates(&groups).into_iter();
    let per_puzzle: Vec<Vec<f64>> = puzzles
        .iter()
        .map(|p| estimates.by_ref().take(p.groups.len()).collect())
        .collect();
    design::mix::spread(&per_puzzle)
}

/// The run's red herrings (`red_herrings` of the metadata).
fn run_herrings(puzzles: &[Puzzle], designs: &[Design], c: &Config) -> RunHerrings {
    let mut planted = 0;
    let mut puzzles_with_fewer = Vec::new();
    for (p, d) in puzzles.iter().zip(designs) {
        let Some(h) = &d.herrings else { continue };
        planted += h.list.len();
        if let Some(reason) = &h.short {
            puzzles_with_fewer.push(HerringShortfall {
                puzzle_id: p.id,
                red_herrings: h.list.len(),
                reason: reason.clone(),
            });
        }
    }
    RunHerrings {
        asked: c.puzzle.red_herrings,
        planted,
        puzzles_with_fewer,
    }
}

/// The run's difficulty figures (`difficulty` of the metadata).
fn run_difficulty(puzzles: &[Puzzle], designs: &[Design]) -> RunDifficulty {
    let mut groups_per_level = [0usize; 4];
    let mut scores = Vec::new();
    for d in designs {
        for (&level, &score) in d.difficulty.levels.iter().zip(&d.difficulty.scores) {
            groups_per_level[usize::from(level)] += 1;
            scores.push(score);
        }
    }
    let verdicts: Vec<_> = designs
        .iter()
        .filter_map(|d| d.solver.as_ref().ok())
        .collect();
    let found: usize = verdicts.iter().map(|v| v.groups_found).sum();
    RunDifficulty {
        groups_per_level,
        score: Describe::of(&scores),
        solver_unique: verdicts.iter().filter(|v| v.unique).count(),
        solver_puzzles: verdicts.len(),
        solver_groups_found_mean: if verdicts.is_empty() {
            0.0
        } else {
            found as f64 / verdicts.len() as f64
        },
        theme_spread: theme_spread(puzzles),
    }
}

/// `gemini_config` of the metadata: the space and the settings that shaped the requests.
fn gemini_config(r: &RunRecord) -> GeminiConfig {
    let c = r.config;
    let limits = &c.requests.limits;
    GeminiConfig {
        model_id: r.space.model_id.clone(),
        embedding_dimension: r.space.dimension,
        words_per_theme: c.puzzle.words_per_theme,
        themes_per_puzzle: c.puzzle.themes_per_puzzle,
        provider: c.provider.kind().to_string(),
        task_type: r.space.task_type.clone(),
        requests_per_minute: yaml_number(limits.requests_per_minute),
        min_request_interval: limits.min_request_interval.as_secs_f64(),
        max_retries: c.requests.max_retries,
        rpm_counts: limits.rpm_counts,
        max_concurrent_requests: limits.max_concurrent_requests,
    }
}

/// `multiprocessing_stats` of the metadata: theme slots as the original's tasks, with the
/// cache and rate limiter figures.
fn multiprocessing_stats(r: &RunRecord) -> MultiprocessingStats {
    let c = r.config;
    let secs = r.elapsed.as_secs_f64();
    let total_tasks = r.plan.themes_needed;
    let completed_tasks = r.slots_filled.min(total_tasks);
    let failed_tasks = total_tasks - completed_tasks;
    MultiprocessingStats {
        total_tasks,
        completed_tasks,
        failed_tasks,
        success_rate: if total_tasks > 0 {
            completed_tasks as f64 / total_tasks as f64
        } else {
            0.0
        },
        processing_time: secs,
        tasks_per_second: per_second(total_tasks as f64, r.elapsed),
        worker_count: c.engine.worker_count,
        cache_stats: cache_stats(r),
        rate_limiter_stats: rate_limiter_stats(r),
        task_timeout_seconds: c.engine.task_timeout.as_secs_f64(),
        themes_processed: r.themes_ok.len() + r.themes_failed.len(),
        themes_succeeded: r.themes_ok.len(),
        themes_failed: r.themes_failed.len(),
    }
}

/// `cache_stats` of the metadata: this run's lookups and what it did to the cache.
fn cache_stats(r: &RunRecord) -> CacheStats {
    let s = r.stats;
    CacheStats {
        cache_size: r.cache.entries,
        hit_rate: s.hit_rate(),
        total_requests: s.lookups,
        cache_file: r.config.output.embedding_cache_file.display().to_string(),
        hits: s.cache_hits,
        misses: s.lookups - s.cache_hits,
        writes: r.cache.written,
        backups: u64::from(r.cache.csv_written_at > 0.0),
        last_backup: r.cache.csv_written_at as u64,
        database: r.cache.database.display().to_string(),
    }
}

/// `rate_limiter_stats` of the metadata: the requests made and the limits they ran under.
fn rate_limiter_stats(r: &RunRecord) -> RateLimiterStats {
    let limits = &r.config.requests.limits;
    let s = r.stats;
    RateLimiterStats {
        active_requests: 0,
        total_requests: s.requests,
        requests_this_minute: s.requests_last_minute,
        requests_per_second: per_second(s.requests as f64, r.elapsed),
        requests_per_minute_limit: yaml_number(limits.requests_per_minute),
        max_concurrent_limit: limits.max_concurrent_requests,
        min_request_interval: limits.min_request_interval.as_secs_f64(),
    }
}

/// Sample variance (n - 1) of each dimension over `vectors` (zeros for fewer than two).
fn dimension_variances(vectors: &[&[f32]], dimension: usize) -> Vec<f64> {
    let n = vectors.len();
    if n < 2 {
        return vec![0.0; dimension];
    }
    let mut mean = vec![0.0f64; dimension];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v.iter()) {
            *m += f64::from(*x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; dimension];
    for v in vectors {
        for ((s, m), x) in var.iter_mut().zip(&mean).zip(v.iter()) {
            *s += (f64::from(*x) - m).powi(2);
        }
    }
    var.iter_mut().for_each(|s| *s /= (n - 1) as f64);
    var
}

/// Sample standard deviation (n - 1), 0 for fewer than two values, as the original.
fn sample_std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

fn analysis(r: &RunRecord) -> EmbeddingAnalysis {
    let blocks = puzzle_blocks(r);
    let vectors: Vec<&[f32]> = blocks
        .iter()
        .flat_map(|b| std::iter::once(&b.vector[..]).chain(b.words.iter().map(|w| &w.vector[..])))
        .collect();
    let themes: std::collections::HashSet<&str> = blocks.iter().map(|b| b.theme).collect();
    let variances = dimension_variances(&vectors, r.space.dimension);
    let selected: Vec<f64> = blocks
        .iter()
        .flat_map(|b| b.words.iter().map(|w| f64::from(w.similarity)))
        .collect();
    let candidates: Vec<f64> = r
        .themes_ok
        .iter()
        .flat_map(|t| t.ranked.iter().map(|(_, s)| f64::from(*s)))
        .collect();
    let margins: Vec<f64> = r.puzzles.iter().map(|p| f64::from(p.min_margin)).collect();
    let word_margins = quality::word_margins(r.puzzles);
    let coherence = quality::group_coherences(r.puzzles);
    let all = Describe::of(&candidates);
    let secs = r.elapsed.as_secs_f64();
    EmbeddingAnalysis {
        pipeline_info: PipelineInfo {
            gemini_model: r.space.model_id.clone(),
            embedding_dimension: r.space.dimension,
            total_embeddings: vectors.len(),
            themes_processed: themes.len(),
            successful_puzzles: r.puzzles.len(),
            processing_time: secs,
            provider: r.config.provider.kind().to_string(),
            task_type: r.space.task_type.clone(),
            puzzles_requested: r.config.puzzle.total_puzzle_count,
            tool: concat!("puzzlegen ", env!("CARGO_PKG_VERSION")).into(),
        },
        similarity_stats: SimilarityStats {
            min_similarity: all.min,
            max_similarity: all.max,
            mean_similarity: all.mean,
            std_similarity: sample_std(&candidates),
            candidate_count: candidates.len(),
            selected_words: Describe::of(&selected),
            word_margins: Describe::of(&word_margins),
            group_coherence: Describe::of(&coherence),
            word_margin_histogram: quality::histogram(&word_margins, MARGIN_BUCKETS),
            group_coherence_histogram: quality::histogram(&coherence, COHERENCE_BUCKETS),
        },
        embedding_quality: EmbeddingQuality {
            embedding_dimension: r.space.dimension,
            mean_dimension_variance: variances.iter().sum::<f64>() / variances.len().max(1) as f64,
            min_dimension_variance: variances.iter().copied().fold(f64::INFINITY, f64::min),
            max_dimension_variance: variances.iter().copied().fold(0.0, f64::max),
            total_vectors: vectors.len(),
            puzzle_min_margin: Describe::of(&margins),
            puzzles_with_negative_margin: margins.iter().filter(|m| **m < 0.0).count(),
        },
        performance_metrics: PerformanceMetrics {
            avg_time_per_puzzle: secs / r.puzzles.len().max(1) as f64,
            memory_estimate_mb: (vectors.len() * r.space.dimension * 8) as f64 / (1024.0 * 1024.0),
            wall_time_seconds: secs,
            texts_embedded: r.stats.texts_embedded,
            texts_per_second: r.texts_per_second(),
            cache_hits: r.stats.cache_hits,
            cache_hit_rate: r.stats.hit_rate(),
            requests: r.stats.requests,
        },
    }
}

/// The puzzle CSV's blocks: each group of each finished puzzle, in puzzle order.
fn puzzle_blocks<'a>(r: &'a RunRecord) -> Vec<Block<'a>> {
    r.puzzles
        .iter()
        .flat_map(|p| {
            p.groups.iter().map(|g| Block {
                theme: &g.theme,
                vector: &g.vector,
                words: &g.words,
            })
        })
        .collect()
}

fn stage_json(
    path: &Path,
    value: &impl serde::Serialize,
    abort: Abort,
) -> Result<Staged, WriteError> {
    stage_until(path, abort, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        writeln!(w)
    })
}

/// A theme's rows in a CSV: the theme row (rank 0) then its words (rank 1..).
struct Block<'a> {
    theme: &'a str,
    vector: &'a crate::embed::Vector,
    words: &'a [crate::words::ScoredWord],
}

/// The CSV header: `theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N`.
fn write_header(w: &mut dyn Write, dimension: usize) -> std::io::Result<()> {
    use crate::cache::csv::{OUTPUT_COLUMNS, header};
    let mut out = csv::Writer::from_writer(w);
    out.write_record(header(&OUTPUT_COLUMNS, dimension))?;
    out.flush()
}

/// Formats one block. Blocks are formatted in parallel: a 3072-dim run writes ~40 million
/// numbers (docs/PERFORMANCE.md).
fn format_block(b: &Block, precision: usize) -> std::io::Result<Vec<u8>> {
    let mut csv = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(
            (b.words.len() + 1) * b.vector.len() * (precision + 4),
        ));
    let mut number = String::new();
    let mut row = |theme: &str, word: &str, kind: &str, sim: f32, rank: usize, v: &[f32]| {
        csv.write_field(theme)?;
        csv.write_field(word)?;
        csv.write_field(kind)?;
        fixed(&mut number, sim, precision);
        csv.write_field(&number)?;
        csv.write_field(rank.to_string())?;
        for &x in v {
            fixed(&mut number, x, precision);
            csv.write_field(&number)?;
        }
        csv.write_record(None::<&[u8]>)
    };
    row(b.theme, b.theme, "theme", 1.0, 0, b.vector).map_err(std::io::Error::other)?;
    for (rank, w) in b.words.iter().enumerate() {
        row(
            b.theme,
            &w.word,
            "selected_word",
            w.similarity,
            rank + 1,
            &w.vector,
        )
        .map_err(std::io::Error::other)?;
    }
    csv.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn stage_csv(
    path: &Path,
    dimension: usize,
    precision: usize,
    blocks: &[Block],
    abort: Abort,
) -> Result<Staged, WriteError> {
    use rayon::prelude::*;
    stage_until(path, abort, |w| {
        write_header(&mut *w, dimension)?;
        // Bounded memory: a few dozen blocks formatted at a time.
        for chunk in blocks.chunks(32) {
            let parts: Vec<Vec<u8>> = chunk
                .par_iter()
                .map(|b| format_block(b, precision))
                .collect::<std::io::Result<_>>()?;
            for part in parts {
                w.write_all(&part)?;
            }
        }
        Ok(())
    })
}

/// Writes `x` rounded to `precision` decimals into `out`, as `format!("{:.p$}")` would, but
/// with integer arithmetic: the CSVs hold millions of numbers (docs/PERFORMANCE.md).
fn fixed(out: &mut String, x: f32, precision: usize) {
    use std::fmt::Write as _;
    out.clear();
    let x = f64::from(x);
    if precision > 9 || !x.is_finite() || x.abs() >= 1e9 {
        let _ = write!(out, "{x:.precision$}");
        return;
    }
    let scale = 10u64.pow(precision as u32);
    let scaled = (x.abs() * scale as f64).round_ties_even() as u64;
    if x < 0.0 && scaled != 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", scaled / scale);
    if precision > 0 {
        let _ = write!(out, ".{:0width$}", scaled % scale, width = precision);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_to_walks_up_and_down_from_the_base() {
        let rel = |a: &str, b: &str| super::relative_to(Path::new(a), Path::new(b));
        assert_eq!(
            rel("outputs", "reports/x.json"),
            Path::new("../reports/x.json")
        );
        assert_eq!(
            rel("out", "out/reports/p.html"),
            Path::new("reports/p.html")
        );
        assert_eq!(
            rel("data/outputs", "./reports/a"),
            Path::new("../../reports/a")
        );
        assert_eq!(rel("a/../b", "b/c"), Path::new("c"));
        assert_eq!(rel("/x/y", "/x/z/w"), Path::new("../z/w"));
        assert_eq!(rel("", "f.json"), Path::new("f.json"));
    }

    use super::*;

    #[test]
    fn fixed_matches_format_rounding() {
        let mut s = String::new();
        for &(x, p) in &[
            (0.1234567f32, 6usize),
            (-0.0000004, 6),
            (-0.5, 0),
            (2.5, 0),
            (1.0, 3),
            (-12.25, 1),
            (0.999_999_7, 6),
            (3.0e-7, 6),
        ] {
            fixed(&mut s, x, p);
            let expected = format!("{:.*}", p, f64::from(x));
            // Both round to nearest; they may differ only on exact binary ties.
            let a: f64 = s.parse().unwrap();
            let b: f64 = expected.parse().unwrap();
            assert!(
                (a - b).abs() <= 0.5 * 10f64.powi(-(p as i32)) + 1e-12,
                "{x} {p}: {s} vs {expected}"
            );
            assert_eq!(s.split('.').nth(1).map_or(0, str::len), p, "{s}");
        }
        fixed(&mut s, -0.0000004, 6);
        assert_eq!(s, "0.000000");
    }
}
