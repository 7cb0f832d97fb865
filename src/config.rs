//! Reading `params.yaml` into one validated [`Config`] the rest of the program trusts.
//!
//! Two steps, as in ripgrep: the YAML is first parsed into raw, all-optional structs
//! (`raw::Params`) that mirror the original Python pipeline's file section by section, then
//! `Config::resolve` checks every value and fills defaults, one resolver per section
//! (`PuzzleSettings::resolve`, `GeminiSettings::resolve`, `EngineSettings::resolve`,
//! `OutputSettings::resolve`, `ProviderSettings::resolve`, `input_files`), called in that order
//! so the first error reported stays the same. Unknown keys are collected as warnings (never
//! fatal) so an original `params.yaml` loads unchanged. Sections the Rust tool does not use
//! (`themes`, `vector_search`, `logging`) are accepted whole and ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsx::{LimitedReadError, read_limited};
use crate::text::{cut, human_bytes};

/// Which embedding provider a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// all-MiniLM-L6-v2 run in-process with candle (offline, no key).
    Local,
    /// Google's `gemini-embedding-001` REST API.
    Gemini,
    /// Any OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, vLLM, llama.cpp, TEI).
    Openai,
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProviderKind::Local => "local",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Openai => "openai",
        })
    }
}

/// A configuration problem: always names the file and the key (or line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid UTF-8 (line {line}): save the file as UTF-8")]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error(
        "{path}: too large: a configuration file may hold at most {} (is this the right file?)",
        human_bytes(*limit)
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: {key}: expected {expected}, got {got}")]
    Invalid {
        path: PathBuf,
        key: String,
        expected: String,
        got: String,
    },
}

/// Raw shapes of `params.yaml`: every key optional, so validation can name what is missing.
mod raw {
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
        #[serde(default)]
        pub local: Local,
        #[serde(default)]
        pub openai: OpenAi,
    }

    #[derive(Debug, Default, Deserialize)]
    pub(super) struct Cache {
        pub path: Option<String>,
    }

    /// `distributed` (not in the original): runs that share one Redis.
    #[derive(Default, Deserialize)]
    pub(super) struct Distributed {
        pub redis_url: Option<String>,
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
}

/// Values given on the command line; each overrides its `params.yaml` key.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub themes: Option<PathBuf>,
    pub candidates: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub provider: Option<ProviderKind>,
    pub model_dir: Option<PathBuf>,
    /// `--redis URL`: `distributed.redis_url`.
    pub redis_url: Option<String>,
}

/// Puzzle shape and seed (`puzzle_generation`).
#[derive(Debug, Clone)]
pub struct PuzzleSettings {
    pub total_puzzle_count: usize,
    pub words_per_theme: usize,
    pub themes_per_puzzle: usize,
    pub random_seed: i64,
    /// Weight of group coherence in the assembly objective (`crate::assemble::Weights`).
    pub coherence_weight: f64,
    /// Weight of the ambiguity penalty in the assembly objective.
    pub ambiguity_weight: f64,
    /// `puzzle_generation.ambiguity_margin`: a word whose margin (own-theme similarity minus
    /// its best similarity to another theme of the puzzle) is below this is flagged ambiguous
    /// in the review page (default [`DEFAULT_AMBIGUITY_MARGIN`]), and a red herring.
    pub ambiguity_margin: f64,
    /// `puzzle_generation.require_unique`: swap words until the blind solver finds each
    /// puzzle's intended groups; a puzzle where no swap does fails (default false).
    pub require_unique: bool,
    /// `puzzle_generation.red_herrings`: at least this many words per puzzle that pull toward
    /// another group while the puzzle keeps one solution (default 0: none planted).
    pub red_herrings: usize,
    /// `puzzle_generation.difficulty_mix`: how themes are grouped into puzzles
    /// (`DifficultyMix`; default `in_order`, the original's).
    pub difficulty_mix: DifficultyMix,
}

/// How the themes are grouped into puzzles (`puzzle_generation.difficulty_mix`; the grouping
/// itself is `crate::design::mix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DifficultyMix {
    /// The plan's grouping: input order, as the original.
    #[default]
    InOrder,
    /// Each puzzle spans the run's range of difficulty.
    Balanced,
}

impl DifficultyMix {
    /// The name in `params.yaml` and the metadata.
    pub fn name(self) -> &'static str {
        match self {
            DifficultyMix::InOrder => "in_order",
            DifficultyMix::Balanced => "balanced",
        }
    }

    /// Reads a `difficulty_mix` value.
    pub fn parse(s: &str) -> Option<DifficultyMix> {
        match s {
            "in_order" => Some(DifficultyMix::InOrder),
            "balanced" => Some(DifficultyMix::Balanced),
            _ => None,
        }
    }
}

/// Default `puzzle_generation.coherence_weight`, chosen on the evaluation set
/// (docs/QUALITY.md); `crate::assemble::Weights::DEFAULT` holds the same.
pub const DEFAULT_COHERENCE_WEIGHT: f64 = 4.0;
/// Default `puzzle_generation.ambiguity_weight` (docs/QUALITY.md).
pub const DEFAULT_AMBIGUITY_WEIGHT: f64 = 2.0;

/// The default `puzzle_generation.ambiguity_margin`.
pub const DEFAULT_AMBIGUITY_MARGIN: f64 = 0.05;

/// Gemini settings (`gemini`); the model id, dimension and task type also name the cache space.
#[derive(Debug, Clone)]
pub struct GeminiSettings {
    pub model_id: String,
    pub embedding_dimension: usize,
    pub api_key_env: String,
    pub task_type: String,
    pub requests_per_minute: f64,
    pub min_request_interval: Duration,
    pub retry_base_delay: Duration,
    pub max_retries: u32,
    pub base_url: String,
    /// Whether a batch of n texts costs n (`items`) or 1 (`requests`) against the RPM budget.
    pub rpm_counts: crate::limit::RpmCounts,
    pub tokens_per_minute: Option<f64>,
    /// Deadline of one HTTP request (Gemini and OpenAI-compatible providers).
    pub request_timeout: Duration,
    /// Most texts in one request (at most the provider's own limit, 100 for Gemini).
    pub batch_size: usize,
    /// The run stops when no request has succeeded for this long while work is waiting.
    pub stall_timeout: Duration,
}

/// Concurrency and deadlines (`multiprocessing`; now tasks, not processes).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub worker_count: usize,
    pub task_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// How long requests and themes in flight may take to finish once the run is told to
    /// stop (a signal). Not a params.yaml key: [`DEFAULT_STOP_GRACE`] for the CLI; a caller
    /// that must answer a signal at once (the Python package) sets it shorter.
    pub stop_grace: Duration,
}

/// Default of [`EngineSettings::stop_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Output files and their precision (`output` + `paths`), all resolved to paths.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub outputs_dir: PathBuf,
    pub reports_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub csv_precision: usize,
    /// The embedding cache database (`cache.path`, default `<paths.cache>/embeddings.sqlite3`).
    pub cache_db: PathBuf,
    pub embedding_cache_file: PathBuf,
    pub puzzle_embeddings_file: PathBuf,
    /// The review page (`output.review_page`, default `<paths.reports>/puzzles.html`).
    pub review_page: PathBuf,
}

/// The embedding provider chosen and its own settings.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Local {
        model_dir: PathBuf,
    },
    Gemini,
    Openai {
        base_url: String,
        model: String,
        api_key_env: Option<String>,
        /// `embedding.openai.request_timeout`, else `gemini.request_timeout` (which used to
        /// cover both providers).
        request_timeout: Duration,
    },
}

impl ProviderSettings {
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderSettings::Local { .. } => ProviderKind::Local,
            ProviderSettings::Gemini => ProviderKind::Gemini,
            ProviderSettings::Openai { .. } => ProviderKind::Openai,
        }
    }
}

/// A fully validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (named in later error messages).
    pub source: PathBuf,
    pub puzzle: PuzzleSettings,
    pub gemini: GeminiSettings,
    pub engine: EngineSettings,
    pub output: OutputSettings,
    pub provider: ProviderSettings,
    pub themes_file: PathBuf,
    pub candidates_file: PathBuf,
    /// Keys present in the file that this tool does not know (warned about, not fatal).
    pub unknown_keys: Vec<String>,
    /// Notices about keys still accepted but no longer used (warned about, not fatal).
    pub deprecated: Vec<String>,
    /// `distributed.*`: the Redis shared with other runs, if any (`--redis` overrides).
    pub distributed: DistributedSettings,
}

// --- distributed (Redis) settings -------------------------------------------------------

/// `distributed.redis_url` and `distributed.redis_password_env` (see `crate::distributed`).
#[derive(Debug, Clone, Default)]
pub struct DistributedSettings {
    pub redis_url: Option<RedisUrl>,
    /// The environment variable holding the Redis password (overrides one in the URL).
    pub redis_password_env: Option<String>,
}

/// A Redis URL, which may hold a password: `Debug` and [`RedisUrl::shown`] never show it.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    /// The URL of a setting or flag, surrounding blanks dropped; `None` when it is blank (no
    /// Redis).
    pub fn parse(url: &str) -> Option<RedisUrl> {
        let url = url.trim();
        (!url.is_empty()).then(|| RedisUrl::new(url))
    }

    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for messages, whatever the URL's shape:
    /// the user information ends at the *last* `@` (a password may hold `/`, `?`, `#`, `@`
    /// or `:`), and everything after the first `:` before it is hidden. A string that is not
    /// a URL but holds an `@` shows nothing before it.
    pub fn shown(&self) -> String {
        let url = &self.0;
        let Some(at) = url.rfind('@') else {
            return url.clone();
        };
        let Some(scheme_end) = url.find("://").map(|i| i + 3).filter(|&i| i <= at) else {
            return format!("***{}", &url[at..]);
        };
        let user = &url[scheme_end..at];
        let user = match user.find(':') {
            Some(colon) => format!("{}:***", &user[..colon]),
            None => user.to_owned(),
        };
        format!("{}{user}{}", &url[..scheme_end], &url[at..])
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.shown())
    }
}

impl DistributedSettings {
    /// The settings of a command given no `params.yaml`: only what `o` says (`--redis`).
    pub fn from_overrides(o: &Overrides) -> DistributedSettings {
        DistributedSettings {
            redis_url: o.redis_url.as_deref().and_then(RedisUrl::parse),
            redis_password_env: None,
        }
    }

    /// Resolves `distributed` (`o.redis_url` wins over the file's); a key kept for old files
    /// only adds its notice to `deprecated`.
    fn resolve(
        v: &Validator,
        d: &raw::Distributed,
        o: &Overrides,
        deprecated: &mut Vec<String>,
    ) -> Result<DistributedSettings, ConfigError> {
        if d.queue.is_some() {
            deprecated.push(
                "distributed.queue is deprecated and ignored: every run with a Redis URL now \
                 queues its themes for `puzzlegen worker` processes (remove the key)"
                    .to_owned(),
            );
        }
        let redis_url = o
            .redis_url
            .as_deref()
            .or(d.redis_url.as_deref())
            .and_then(RedisUrl::parse);
        let redis_password_env = match d.redis_password_env.as_deref() {
            None => None,
            Some(name) => Some(v.non_empty("distributed.redis_password_env", name)?),
        };
        Ok(DistributedSettings {
            redis_url,
            redis_password_env,
        })
    }
}

// --- end of distributed settings ----------------------------------------------------------

/// The themes file the original reads inside the `paths.themes` folder.
pub const THEMES_FILE_NAME: &str = "selected_themes.json";
/// The candidates file the original reads inside the `paths.candidates` folder.
pub const CANDIDATES_FILE_NAME: &str = "candidate_words.json";

/// Where Gemini is reached when neither `gemini.base_url` nor `GOOGLE_GEMINI_BASE_URL` says.
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The environment variable Google's own SDK reads to reach another Gemini endpoint; read here
/// too (after `gemini.base_url`) so a project that points the original at a proxy or a mock
/// points puzzlegen at it unchanged.
pub const GEMINI_BASE_URL_ENV: &str = "GOOGLE_GEMINI_BASE_URL";

fn gemini_base_url_from_env() -> Option<String> {
    std::env::var(GEMINI_BASE_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Default location of the local model, relative to the working directory.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

impl Config {
    /// Reads, parses and validates `path`, applying command-line overrides.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let bytes = read_limited(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            LimitedReadError::Io(source) => ConfigError::Read {
                path: path.to_owned(),
                source,
            },
            LimitedReadError::TooLarge => ConfigError::TooLarge {
                path: path.to_owned(),
                limit: MAX_CONFIG_BYTES,
            },
        })?;
        Self::from_yaml_bytes(path, &bytes, overrides)
    }

    /// Parses YAML already read from `path` (named in errors).
    pub fn from_yaml_bytes(
        path: &Path,
        bytes: &[u8],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
            path: path.to_owned(),
            line: line_of_offset(bytes, e.valid_up_to()),
        })?;
        let mut unknown_keys = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        // `no_schema`: a plain `12` or `true` where text is expected is refused, not taken as
        // the text "12" (the original's Python would have passed on a number there).
        let options = serde_saphyr::options! { no_schema: true };
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            let de = serde_path_to_error::Deserializer::new(de, &mut track);
            serde_ignored::deserialize(de, |p| unknown_keys.push(p.to_string()))
        });
        let params: raw::Params = parsed.map_err(|e| ConfigError::Yaml {
            path: path.to_owned(),
            message: yaml_message(text, &e, &track.path()),
        })?;
        Self::resolve(path, params, unknown_keys, overrides)
    }

    /// Checks every section in turn (so errors come in this order) and applies the overrides.
    fn resolve(
        path: &Path,
        p: raw::Params,
        unknown_keys: Vec<String>,
        o: &Overrides,
    ) -> Result<Config, ConfigError> {
        let v = Validator { path };
        let puzzle = PuzzleSettings::resolve(&v, &p.puzzle_generation)?;
        let gemini = GeminiSettings::resolve(&v, &p.gemini)?;
        let engine = EngineSettings::resolve(&v, &p.multiprocessing)?;
        let output = OutputSettings::resolve(&v, &p, o)?;
        let provider = ProviderSettings::resolve(&v, &p.embedding, o, gemini.request_timeout)?;
        let (themes_file, candidates_file) = input_files(&v, &p.paths, o)?;
        let mut deprecated = Vec::new();
        let distributed = DistributedSettings::resolve(&v, &p.distributed, o, &mut deprecated)?;
        Ok(Config {
            source: path.to_owned(),
            puzzle,
            gemini,
            engine,
            output,
            provider,
            themes_file,
            candidates_file,
            unknown_keys,
            deprecated,
            distributed,
        })
    }
}

impl PuzzleSettings {
    /// Resolves `puzzle_generation`, then refuses a plan too large for the memory available.
    fn resolve(v: &Validator, pg: &raw::PuzzleGeneration) -> Result<PuzzleSettings, ConfigError> {
        let puzzle = PuzzleSettings {
            total_puzzle_count: v.at_least(
                "puzzle_generation.total_puzzle_count",
                pg.total_puzzle_count.unwrap_or(10),
                1,
            )?,
            words_per_theme: match (pg.words_per_theme, pg.words_per_puzzle) {
                (None, Some(n)) => v.at_least("puzzle_generation.words_per_puzzle", n, 1)?,
                (n, _) => v.at_least("puzzle_generation.words_per_theme", n.unwrap_or(4), 1)?,
            },
            themes_per_puzzle: v.at_least(
                "puzzle_generation.themes_per_puzzle",
                pg.themes_per_puzzle.unwrap_or(4),
                1,
            )?,
            random_seed: pg.random_seed.unwrap_or(42),
            coherence_weight: v.non_negative(
                "puzzle_generation.coherence_weight",
                pg.coherence_weight.unwrap_or(DEFAULT_COHERENCE_WEIGHT),
            )?,
            ambiguity_weight: v.non_negative(
                "puzzle_generation.ambiguity_weight",
                pg.ambiguity_weight.unwrap_or(DEFAULT_AMBIGUITY_WEIGHT),
            )?,
            ambiguity_margin: ambiguity_margin(v, pg.ambiguity_margin)?,
            require_unique: pg.require_unique.unwrap_or(false),
            red_herrings: 0,
            difficulty_mix: match pg.difficulty_mix.as_deref() {
                None => DifficultyMix::default(),
                Some(name) => DifficultyMix::parse(name).ok_or_else(|| {
                    v.invalid(
                        "puzzle_generation.difficulty_mix",
                        "in_order or balanced",
                        name,
                    )
                })?,
            },
        };
        let words = (puzzle.themes_per_puzzle as i64).saturating_mul(puzzle.words_per_theme as i64);
        let red_herrings = pg.red_herrings.unwrap_or(0);
        if !(0..=words).contains(&red_herrings) {
            return Err(v.invalid(
                "puzzle_generation.red_herrings",
                &format!("an integer from 0 to {words} (the words of a puzzle)"),
                &red_herrings.to_string(),
            ));
        }
        let puzzle = PuzzleSettings {
            red_herrings: red_herrings as usize,
            ..puzzle
        };
        puzzle.check_fits(v)?;
        Ok(puzzle)
    }

    /// Checked before any work: a plan that cannot fit must not start (nor abort later).
    fn check_fits(&self, v: &Validator) -> Result<(), ConfigError> {
        let (budget, why) = slot_budget();
        if self.themes_per_puzzle > budget {
            return Err(v.invalid(
                "puzzle_generation.themes_per_puzzle",
                &format!("at most {budget} ({why})"),
                &self.themes_per_puzzle.to_string(),
            ));
        }
        let most_puzzles = budget / self.themes_per_puzzle;
        if self.total_puzzle_count > most_puzzles {
            return Err(v.invalid(
                "puzzle_generation.total_puzzle_count",
                &format!(
                    "at most {most_puzzles} with {} themes per puzzle ({why})",
                    self.themes_per_puzzle
                ),
                &self.total_puzzle_count.to_string(),
            ));
        }
        Ok(())
    }
}

impl GeminiSettings {
    /// Resolves `gemini`; the two timeouts must also be above zero.
    fn resolve(v: &Validator, g: &raw::Gemini) -> Result<GeminiSettings, ConfigError> {
        let gemini = GeminiSettings {
            model_id: v.non_empty(
                "gemini.model_id",
                g.model_id.as_deref().unwrap_or("gemini-embedding-001"),
            )?,
            embedding_dimension: v.between(
                "gemini.embedding_dimension",
                g.embedding_dimension.unwrap_or(3072),
                1,
                65_536,
            )?,
            api_key_env: v.non_empty(
                "gemini.api_key_env",
                g.api_key_env.as_deref().unwrap_or("GEMINI_API_KEY"),
            )?,
            task_type: v.non_empty(
                "gemini.task_type",
                g.task_type.as_deref().unwrap_or("SEMANTIC_SIMILARITY"),
            )?,
            requests_per_minute: v.positive(
                "gemini.requests_per_minute",
                g.requests_per_minute.unwrap_or(3000.0),
            )?,
            min_request_interval: v.seconds(
                "gemini.min_request_interval",
                g.min_request_interval.unwrap_or(0.0),
            )?,
            retry_base_delay: v
                .seconds("gemini.retry_base_delay", g.retry_base_delay.unwrap_or(1.0))?,
            max_retries: v.between("gemini.max_retries", g.max_retries.unwrap_or(5), 0, 1000)?
                as u32,
            base_url: gemini_base_url(v, g)?,
            rpm_counts: g.rpm_counts.unwrap_or(crate::limit::RpmCounts::Items),
            tokens_per_minute: match g.tokens_per_minute {
                Some(t) => Some(v.positive("gemini.tokens_per_minute", t)?),
                None => None,
            },
            request_timeout: v
                .seconds("gemini.request_timeout", g.request_timeout.unwrap_or(60.0))?,
            batch_size: v.at_least("gemini.batch_size", g.batch_size.unwrap_or(100), 1)?,
            stall_timeout: v.seconds("gemini.stall_timeout", g.stall_timeout.unwrap_or(600.0))?,
        };
        if gemini.stall_timeout.is_zero() {
            return Err(v.invalid("gemini.stall_timeout", "a number of seconds > 0", "0"));
        }
        if gemini.request_timeout.is_zero() {
            return Err(v.invalid("gemini.request_timeout", "a number of seconds > 0", "0"));
        }
        Ok(gemini)
    }
}

/// Where Gemini is reached: `gemini.base_url`, else [`GEMINI_BASE_URL_ENV`], else
/// [`DEFAULT_GEMINI_BASE_URL`].
fn gemini_base_url(v: &Validator, g: &raw::Gemini) -> Result<String, ConfigError> {
    Ok(match (&g.base_url, gemini_base_url_from_env()) {
        (Some(url), _) => v.url("gemini.base_url", url)?,
        (None, Some(url)) => v.url(GEMINI_BASE_URL_ENV, &url)?,
        (None, None) => DEFAULT_GEMINI_BASE_URL.to_owned(),
    })
}

impl EngineSettings {
    /// Resolves `multiprocessing` (`tasks_per_batch` is checked, then unused).
    fn resolve(v: &Validator, m: &raw::Multiprocessing) -> Result<EngineSettings, ConfigError> {
        let task_timeout = v.seconds(
            "multiprocessing.task_timeout_seconds",
            m.task_timeout_seconds.unwrap_or(300.0),
        )?;
        if task_timeout.is_zero() {
            return Err(v.invalid(
                "multiprocessing.task_timeout_seconds",
                "a number of seconds > 0",
                "0",
            ));
        }
        let engine = EngineSettings {
            worker_count: v.between(
                "multiprocessing.worker_count",
                m.worker_count.unwrap_or(4),
                1,
                MAX_CONCURRENCY,
            )?,
            task_timeout,
            max_concurrent_requests: v.between(
                "multiprocessing.max_concurrent_requests",
                m.max_concurrent_requests.unwrap_or(6),
                1,
                MAX_CONCURRENCY,
            )?,
            stop_grace: DEFAULT_STOP_GRACE,
        };
        if let Some(n) = m.tasks_per_batch {
            v.at_least("multiprocessing.tasks_per_batch", n, 1)?;
        }
        Ok(engine)
    }
}

impl OutputSettings {
    /// Resolves `paths` (all but the input files), `output` and `cache`; `--out DIR` takes the
    /// place of `paths.outputs` and `paths.reports` and holds the puzzle embeddings CSV.
    fn resolve(
        v: &Validator,
        p: &raw::Params,
        o: &Overrides,
    ) -> Result<OutputSettings, ConfigError> {
        let outputs_dir = outputs_dir(v, &p.paths, o)?;
        let reports_dir = match (&o.out, &p.paths.reports) {
            (Some(out), _) => out.join("reports"),
            (None, Some(dir)) => PathBuf::from(v.non_empty("paths.reports", dir)?),
            (None, None) => outputs_dir.join("reports"),
        };
        let cache_dir = match &p.paths.cache {
            Some(dir) => PathBuf::from(v.non_empty("paths.cache", dir)?),
            None => PathBuf::from("cache"),
        };
        let out = &p.output;
        let csv_precision = csv_precision(v, out)?;
        // As in the original, both CSV paths are used as written (relative to the working
        // directory), not joined with `paths.*`; only their defaults live under `paths.*`.
        let embedding_cache_file = match &out.embedding_cache_file {
            Some(file) => PathBuf::from(v.non_empty("output.embedding_cache_file", file)?),
            None => cache_dir.join("all_embeddings.csv"),
        };
        let puzzle_embeddings_file = puzzle_embeddings_file(v, p, o, &outputs_dir)?;
        let cache_db = cache_db(v, &p.cache, &cache_dir)?;
        let review_page = review_page(v, o, &out.review_page, &reports_dir)?;
        Ok(OutputSettings {
            outputs_dir,
            reports_dir,
            cache_dir,
            csv_precision,
            cache_db,
            embedding_cache_file,
            puzzle_embeddings_file,
            review_page,
        })
    }
}

/// `puzzle_generation.ambiguity_margin`: a finite number from 0 to 2 (a margin is a difference
/// of two cosines), default [`DEFAULT_AMBIGUITY_MARGIN`].
fn ambiguity_margin(v: &Validator, value: Option<f64>) -> Result<f64, ConfigError> {
    let value = value.unwrap_or(DEFAULT_AMBIGUITY_MARGIN);
    if !(value.is_finite() && (0.0..=2.0).contains(&value)) {
        return Err(v.invalid(
            "puzzle_generation.ambiguity_margin",
            "a number from 0 to 2 (a difference of two cosine similarities)",
            &fmt_number(value),
        ));
    }
    Ok(value)
}

/// `output.review_page` (as written, relative to the working directory; only its file name
/// kept under `--out DIR`, in `DIR/reports`), else `puzzles.html` in the reports folder.
fn review_page(
    v: &Validator,
    o: &Overrides,
    value: &Option<String>,
    reports_dir: &Path,
) -> Result<PathBuf, ConfigError> {
    const NAME: &str = "puzzles.html";
    Ok(match (&o.out, value) {
        (Some(_), Some(file)) => reports_dir.join(
            Path::new(&v.non_empty("output.review_page", file)?)
                .file_name()
                .unwrap_or(std::ffi::OsStr::new(NAME)),
        ),
        (None, Some(file)) => PathBuf::from(v.non_empty("output.review_page", file)?),
        (_, None) => reports_dir.join(NAME),
    })
}

/// The folder of `final_puzzles.json`: `--out`, else `paths.outputs` (required).
fn outputs_dir(v: &Validator, paths: &raw::Paths, o: &Overrides) -> Result<PathBuf, ConfigError> {
    match (&o.out, &paths.outputs) {
        (Some(out), _) => Ok(out.clone()),
        (None, Some(dir)) => Ok(PathBuf::from(v.non_empty("paths.outputs", dir)?)),
        (None, None) => Err(v.invalid(
            "paths.outputs",
            "a directory for final_puzzles.json (or --out DIR)",
            "nothing",
        )),
    }
}

/// `output.csv_precision`: decimals written in the CSVs, 0 to 17 (default 6).
fn csv_precision(v: &Validator, out: &raw::Output) -> Result<usize, ConfigError> {
    let csv_precision = v.at_least("output.csv_precision", out.csv_precision.unwrap_or(6), 0)?;
    if csv_precision > 17 {
        return Err(v.invalid(
            "output.csv_precision",
            "a number of decimals from 0 to 17",
            &csv_precision.to_string(),
        ));
    }
    Ok(csv_precision)
}

/// `output.puzzle_embeddings_file` (only its file name kept under `--out DIR`), else
/// `puzzle_embeddings.csv` in `--out`, `paths.embeddings` or the outputs folder.
fn puzzle_embeddings_file(
    v: &Validator,
    p: &raw::Params,
    o: &Overrides,
    outputs_dir: &Path,
) -> Result<PathBuf, ConfigError> {
    Ok(match (&o.out, &p.output.puzzle_embeddings_file) {
        (Some(dir), Some(file)) => dir.join(
            Path::new(&v.non_empty("output.puzzle_embeddings_file", file)?)
                .file_name()
                .unwrap_or(std::ffi::OsStr::new("puzzle_embeddings.csv")),
        ),
        (None, Some(file)) => PathBuf::from(v.non_empty("output.puzzle_embeddings_file", file)?),
        (Some(dir), None) => dir.join("puzzle_embeddings.csv"),
        (None, None) => match &p.paths.embeddings {
            Some(dir) => PathBuf::from(v.non_empty("paths.embeddings", dir)?),
            None => outputs_dir.to_owned(),
        }
        .join("puzzle_embeddings.csv"),
    })
}

/// The embedding cache database (`cache.path`, default `<paths.cache>/embeddings.sqlite3`).
fn cache_db(v: &Validator, c: &raw::Cache, cache_dir: &Path) -> Result<PathBuf, ConfigError> {
    Ok(match &c.path {
        Some(file) => PathBuf::from(v.non_empty("cache.path", file)?),
        None => cache_dir.join("embeddings.sqlite3"),
    })
}

impl ProviderSettings {
    /// Resolves `embedding` (`--provider` and `--model-dir` first; default Gemini, whose own
    /// settings are the `gemini` section). `gemini_timeout` stands in for an unset
    /// `embedding.openai.request_timeout`.
    fn resolve(
        v: &Validator,
        e: &raw::Embedding,
        o: &Overrides,
        gemini_timeout: Duration,
    ) -> Result<ProviderSettings, ConfigError> {
        let kind = o.provider.or(e.provider).unwrap_or(ProviderKind::Gemini);
        Ok(match kind {
            ProviderKind::Local => ProviderSettings::Local {
                model_dir: o.model_dir.clone().unwrap_or_else(|| {
                    PathBuf::from(e.local.model_dir.as_deref().unwrap_or(DEFAULT_MODEL_DIR))
                }),
            },
            ProviderKind::Gemini => ProviderSettings::Gemini,
            ProviderKind::Openai => ProviderSettings::Openai {
                base_url: v.url(
                    "embedding.openai.base_url",
                    e.openai.base_url.as_deref().unwrap_or(""),
                )?,
                model: v.non_empty(
                    "embedding.openai.model",
                    e.openai.model.as_deref().unwrap_or(""),
                )?,
                api_key_env: e.openai.api_key_env.clone(),
                request_timeout: match e.openai.request_timeout {
                    None => gemini_timeout,
                    Some(t) => match v.seconds("embedding.openai.request_timeout", t)? {
                        d if d.is_zero() => {
                            return Err(v.invalid(
                                "embedding.openai.request_timeout",
                                "a number of seconds > 0",
                                "0",
                            ));
                        }
                        d => d,
                    },
                },
            },
        })
    }
}

/// The themes and candidates files (`paths.themes`, `paths.candidates`; `--themes` and
/// `--candidates` first), a folder standing for the original's file inside it.
fn input_files(
    v: &Validator,
    paths: &raw::Paths,
    o: &Overrides,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let themes_file = v.input_path(
        "paths.themes",
        "--themes",
        THEMES_FILE_NAME,
        &o.themes,
        &paths.themes,
    )?;
    let candidates_file = v.input_path(
        "paths.candidates",
        "--candidates",
        CANDIDATES_FILE_NAME,
        &o.candidates,
        &paths.candidates,
    )?;
    Ok((themes_file, candidates_file))
}

impl Config {
    /// The embedding space a run with this config fills, as far as the config tells: the
    /// OpenAI-compatible provider's dimension is known only from its server; the local model's
    /// comes from its folder's `config.json`, read here (an unusable folder is an error).
    pub fn space(&self) -> Result<Option<crate::embed::Space>, crate::embed::EmbedError> {
        use crate::embed::{Space, folder::ModelFolder};
        Ok(match &self.provider {
            ProviderSettings::Local { model_dir } => Some(ModelFolder::read(model_dir)?.space()),
            ProviderSettings::Gemini => Some(Space {
                model_id: self.gemini.model_id.clone(),
                dimension: self.gemini.embedding_dimension,
                task_type: self.gemini.task_type.clone(),
            }),
            ProviderSettings::Openai { .. } => None,
        })
    }
}

/// Builds [`ConfigError::Invalid`] values that name the file and key.
struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, expected: &str, got: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            got: got.to_owned(),
        }
    }

    fn at_least(&self, key: &str, value: i64, min: i64) -> Result<usize, ConfigError> {
        if value < min {
            return Err(self.invalid(key, &format!("an integer >= {min}"), &value.to_string()));
        }
        Ok(value as usize)
    }

    fn between(&self, key: &str, value: i64, min: i64, max: i64) -> Result<usize, ConfigError> {
        if !(min..=max).contains(&value) {
            return Err(self.invalid(
                key,
                &format!("an integer from {min} to {max}"),
                &value.to_string(),
            ));
        }
        Ok(value as usize)
    }

    fn positive(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !(value.is_finite() && value > 0.0) {
            return Err(self.invalid(key, "a number > 0", &fmt_number(value)));
        }
        Ok(value)
    }

    fn non_negative(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(self.invalid(key, "a number >= 0", &fmt_number(value)));
        }
        Ok(value)
    }

    fn seconds(&self, key: &str, value: f64) -> Result<Duration, ConfigError> {
        if !(0.0..1e9).contains(&value) {
            return Err(self.invalid(key, "a number of seconds from 0 to 1e9", &fmt_number(value)));
        }
        Ok(Duration::from_secs_f64(value))
    }

    fn non_empty(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(key, "a non-empty string", "an empty value"));
        }
        Ok(value.to_owned())
    }

    /// An `http://` or `https://` URL with a host.
    fn url(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        let value = self.non_empty(key, value)?;
        match reqwest::Url::parse(value.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(value),
            _ => Err(self.invalid(
                key,
                "an http:// or https:// URL such as https://generativelanguage.googleapis.com",
                &format!("{value:?}"),
            )),
        }
    }

    fn input_path(
        &self,
        key: &str,
        flag: &str,
        file_name: &str,
        flag_value: &Option<PathBuf>,
        value: &Option<String>,
    ) -> Result<PathBuf, ConfigError> {
        let given = match (flag_value, value) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) => PathBuf::from(self.non_empty(key, v)?),
            (None, None) => {
                return Err(self.invalid(
                    key,
                    &format!("a folder holding {file_name}, or a file (or {flag} PATH)"),
                    "nothing",
                ));
            }
        };
        // The original names folders (`data/themes/`) and reads its file inside them.
        let is_folder = given.is_dir() || given.as_os_str().to_string_lossy().ends_with('/');
        Ok(if is_folder {
            given.join(file_name)
        } else {
            given
        })
    }
}

/// Largest `params.yaml` read (the original's is 3 KB): anything bigger is the wrong file.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Most theme slots (`total_puzzle_count x themes_per_puzzle`) one run plans, however much
/// memory the machine has.
pub const MAX_SLOTS: usize = 10_000_000;

/// Memory a run holds per theme slot at its peak (the plan, the assembled puzzles and the
/// output structures): measured 0.93 KB (`/usr/bin/time -f %M`, 20,000 and 100,000 puzzles of
/// 4 themes, local model), rounded up.
pub const BYTES_PER_SLOT: u64 = 1024;

/// How many theme slots this run may plan, and why: [`MAX_SLOTS`], or fewer when the memory
/// available now (`MemAvailable` in `/proc/meminfo`) holds fewer at [`BYTES_PER_SLOT`].
fn slot_budget() -> (usize, String) {
    budget_for(available_memory())
}

/// [`slot_budget`] with `available` bytes of memory (None: not known).
fn budget_for(available: Option<u64>) -> (usize, String) {
    let fixed = || {
        (
            MAX_SLOTS,
            format!("a run plans at most {MAX_SLOTS} theme slots"),
        )
    };
    let Some(available) = available else {
        return fixed();
    };
    let fits = usize::try_from(available / BYTES_PER_SLOT).unwrap_or(usize::MAX);
    if fits >= MAX_SLOTS {
        return fixed();
    }
    (
        fits,
        format!(
            "the largest plan that fits in the {} MB of memory available, at about 1 KB per \
             theme slot",
            available >> 20
        ),
    )
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (None where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Most concurrent theme workers or API requests: tasks beyond this only wait on each other.
pub const MAX_CONCURRENCY: i64 = 10_000;

/// A number for a message: `1e308`, never its 309 digits.
pub(crate) fn fmt_number(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-4..1e9).contains(&a) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// A YAML parser error as a user reads it: the line and the dotted key at fault (`key_path`,
/// where deserialisation stopped), what that key takes, and never the parser's own advice ("set
/// DuplicateKeyPolicy in Options").
fn yaml_message(
    text: &str,
    e: &serde_saphyr::Error,
    key_path: &serde_path_to_error::Path,
) -> String {
    use serde_saphyr::Error as E;
    let mut err = e;
    while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = err {
        err = error;
    }
    let line = err.location().map(|l| l.line() as usize).filter(|&l| l > 0);
    let column = err.location().map(|l| l.column() as usize).unwrap_or(0);
    let key_on_line = line.and_then(|l| key_at_line(text, l));
    let key = match key_path.iter().len() {
        0 => key_on_line.clone(),
        _ => Some(cut(&key_path.to_string(), 120)),
    };
    let at = |rest: String| match (line, &key) {
        (Some(l), Some(k)) => format!("line {l}: {k}: {rest}"),
        (Some(l), None) => format!("line {l}: {rest}"),
        (None, Some(k)) => format!("{k}: {rest}"),
        (None, None) => rest,
    };
    let got = || match line {
        Some(l) => scalar_at(text, l, column),
        None => "something else".into(),
    };
    let wanted =
        |parser_says: &str| expected_at(key_path).unwrap_or_else(|| type_words(parser_says));
    match err {
        E::Budget { .. } => "too large or too deeply nested (alias expansion)".into(),
        E::InvalidScalar { ty, .. } => at(format!("expected {}, got {}", wanted(ty), got())),
        E::QuotingRequired { .. } => match wanted("string") {
            w if w == type_words("string") => at(format!(
                "expected {w}, got {} (put it in quotes if it is meant as text)",
                got()
            )),
            w => at(format!("expected {w}, got {}", got())),
        },
        E::Unexpected { .. }
        | E::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | E::ExpectedStringKeyForExternallyTaggedEnum { .. }
        | E::UnexpectedValueForUnitEnumVariant { .. } => {
            let parser_says = match err {
                E::Unexpected { expected, .. } => expected,
                _ => "a single value",
            };
            at(format!(
                "expected {}, got {}",
                wanted(parser_says),
                line.map_or_else(|| "something else".into(), |l| node_at(text, l, column))
            ))
        }
        E::NonFiniteFloat { value, .. } => {
            at(format!("expected a finite number, got {}", cut(value, 30)))
        }
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => at(format!(
            "expected {}, got {}",
            cut(&wanted(expected), 80),
            cut(unexpected, 40)
        )),
        E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => at(format!(
            "expected {}, got {}",
            cut(expected, 80),
            cut(unexpected, 40)
        )),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => at(format!(
            "expected one of {}, got {}",
            expected.join(", "),
            cut(variant, 40)
        )),
        E::DuplicateMappingKey { key: k, .. } => {
            let name = key_on_line
                .or_else(|| k.clone())
                .unwrap_or_else(|| "a key".into());
            match line {
                Some(l) => format!(
                    "line {l}: duplicate key {name}: a key may appear only once in its section; \
                     remove one of them"
                ),
                None => {
                    format!("duplicate key {name}: a key may appear only once in its section")
                }
            }
        }
        other => cut(&one_line(&other.to_string()), 300),
    }
}

/// What `params.yaml` takes at `key_path`, in words. The raw structs are the one list of types:
/// they are offered a value no key takes but text, and serde's refusal names the type.
fn expected_at(key_path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut probe = serde_json::Value::String("\u{1}".into());
    for segment in key_path.iter().rev() {
        let Segment::Map { key } = segment else {
            return None;
        };
        probe = serde_json::json!({ key: probe });
    }
    match serde_json::from_value::<raw::Params>(probe) {
        Ok(_) => Some(type_words("string")),
        Err(e) => Some(type_words(e.to_string().rsplit_once("expected ")?.1)),
    }
}

/// A type as serde or the YAML parser names it, as a user reads it.
fn type_words(ty: &str) -> String {
    let integer = ["i", "u"].iter().any(|p| {
        ty.strip_prefix(p)
            .is_some_and(|bits| bits == "size" || bits.parse::<u8>().is_ok())
    });
    match ty {
        _ if integer => "an integer".into(),
        "f64" | "f32" | "floating point" => "a number".into(),
        "bool" | "boolean" | "a boolean" => "true or false".into(),
        "string" | "a string" | "string scalar" => "a string".into(),
        "mapping start" => "a mapping (keys indented under it)".into(),
        t if t.starts_with("struct ") => "a mapping (keys indented under it)".into(),
        t if t.starts_with("one of ") || t.starts_with('`') => t.replace('`', ""),
        t if t.starts_with("a ") => t.to_owned(),
        t => format!("a value of type {t}"),
    }
}

/// What starts at `line`, `column` (1-based) of `text`: a list, a mapping, or the value written.
fn node_at(text: &str, line: usize, column: usize) -> String {
    let written = scalar_at(text, line, column);
    if written.starts_with('[') || written == "-" || written.starts_with("- ") {
        "a list".into()
    } else if written.starts_with('{') || written.ends_with(':') || written.contains(": ") {
        "a mapping".into()
    } else {
        written
    }
}

/// The value written at `line`, `column` (1-based) of `text`, cut for a message; inside a flow
/// collection (`{a: 1, b: x}`) it ends at the next `,`, `}` or `]`.
fn scalar_at(text: &str, line: usize, column: usize) -> String {
    let Some(l) = text.lines().nth(line - 1) else {
        return "nothing".into();
    };
    let before: String = l.chars().take(column.saturating_sub(1)).collect();
    let rest: String = l.chars().skip(column.saturating_sub(1)).collect();
    let rest = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => &rest,
    };
    let rest = match before.contains(['{', '[']) {
        true => rest.split([',', '}', ']']).next().unwrap_or(rest),
        false => rest,
    };
    let rest = rest.trim();
    if rest.is_empty() {
        "nothing".into()
    } else {
        cut(rest, 30)
    }
}

/// The dotted path of the block-style key written on `line` (1-based) of `text`, found from
/// the indentation of the lines above it: `puzzle_generation.total_puzzle_count`.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    fn key_of(l: &str) -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start_matches(' ').len();
        let body = l.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            return None;
        }
        let (indent, body) = match body.strip_prefix("- ") {
            Some(b) => (indent + 2, b.trim_start()),
            None => (indent, body),
        };
        let end = body
            .find(": ")
            .or_else(|| body.strip_suffix(':').map(str::len))?;
        let key = body[..end].trim().trim_matches(|c| c == '"' || c == '\'');
        (!key.is_empty() && !key.starts_with(['{', '['])).then(|| (indent, key.to_owned()))
    }
    let lines: Vec<&str> = text.lines().collect();
    let (mut indent, first) = key_of(lines.get(line.checked_sub(1)?)?)?;
    let mut path = vec![first];
    for l in lines[..line - 1].iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((i, k)) = key_of(l)
            && i < indent
        {
            path.push(k);
            indent = i;
        }
    }
    path.reverse();
    Some(cut(&path.join("."), 120))
}

/// 1-based line number of byte `offset` in `bytes`.
pub(crate) fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Collapses a multi-line parser message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_budget_shrinks_with_the_memory_available() {
        let (slots, why) = budget_for(Some(1 << 30));
        assert_eq!(slots, (1 << 30) / BYTES_PER_SLOT as usize);
        assert!(why.contains("the 1024 MB of memory available"), "{why}");
        assert_eq!(budget_for(Some(1 << 40)).0, MAX_SLOTS);
        assert_eq!(budget_for(None).0, MAX_SLOTS);
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        let o = Overrides::default();
        Config::from_yaml_bytes(Path::new("params.yaml"), yaml.as_bytes(), &o)
    }

    const MINIMAL: &str = "paths:\n  outputs: out\n  themes: t.json\n  candidates: c.json\n";

    #[test]
    fn minimal_file_gets_original_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.puzzle.words_per_theme, 4);
        assert_eq!(c.puzzle.themes_per_puzzle, 4);
        assert_eq!(c.gemini.model_id, "gemini-embedding-001");
        assert_eq!(c.gemini.embedding_dimension, 3072);
        assert_eq!(c.provider.kind(), ProviderKind::Gemini);
        assert!(c.unknown_keys.is_empty());
    }

    #[test]
    fn the_openai_timeout_is_its_own_key_with_the_gemini_one_as_fallback() {
        let openai = |extra: &str| {
            load(&format!(
                "{MINIMAL}gemini:\n  request_timeout: 7\nembedding:\n  provider: openai\n  \
                 openai:\n    base_url: http://127.0.0.1:1\n    model: m\n{extra}"
            ))
        };
        let timeout = |c: Config| match c.provider {
            ProviderSettings::Openai {
                request_timeout, ..
            } => request_timeout,
            other => panic!("{other:?}"),
        };
        assert_eq!(timeout(openai("").unwrap()), Duration::from_secs(7));
        let own = openai("    request_timeout: 2.5\n").unwrap();
        assert_eq!(timeout(own), Duration::from_millis(2500));
        let zero = openai("    request_timeout: 0\n").unwrap_err().to_string();
        assert!(
            zero.contains("embedding.openai.request_timeout: expected a number of seconds > 0"),
            "{zero}"
        );
    }

    #[test]
    fn distributed_keys_are_known_and_the_password_is_never_shown() {
        let c = load(&format!(
            "{MINIMAL}distributed:\n  redis_url: redis://u:pw-secret@h:6379/1\n  \
             redis_password_env: REDIS_PW\n"
        ))
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let url = c.distributed.redis_url.as_ref().unwrap();
        assert_eq!(url.expose(), "redis://u:pw-secret@h:6379/1");
        assert_eq!(url.shown(), "redis://u:***@h:6379/1");
        assert!(!format!("{c:?}").contains("pw-secret"));
        assert_eq!(
            c.distributed.redis_password_env.as_deref(),
            Some("REDIS_PW")
        );
        assert!(load(MINIMAL).unwrap().distributed.redis_url.is_none());
        for (url, shown) in [
            ("redis://:p@h:1", "redis://:***@h:1"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("redis://user@h", "redis://user@h"),
            ("redis://u:p@ss:w@h/", "redis://u:***@h/"),
            (
                "redis://user:Top/Secret@127.0.0.1:6391/",
                "redis://user:***@127.0.0.1:6391/",
            ),
            ("redis://u:a?b#c/d@h:1/2", "redis://u:***@h:1/2"),
            ("rediss://:p/w@h", "rediss://:***@h"),
            ("redis:u:pw@h", "***@h"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(RedisUrl::new(url).shown(), shown, "{url}");
        }
        assert!(
            load(&format!(
                "{MINIMAL}distributed:\n  redis_password_env: ''\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn the_old_queue_key_is_deprecated_not_fatal() {
        for value in ["true", "false", "'yes please'"] {
            let c = load(&format!("{MINIMAL}distributed:\n  queue: {value}\n")).unwrap();
            assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
            assert_eq!(c.deprecated.len(), 1, "{value}");
            assert!(c.deprecated[0].contains("distributed.queue is deprecated"));
        }
        assert!(load(MINIMAL).unwrap().deprecated.is_empty());
    }

    #[test]
    fn unknown_keys_are_collected_not_fatal() {
        let c = load(&format!(
            "{MINIMAL}gemini:\n  colour: blue\nextra_section: 1\n"
        ))
        .unwrap();
        assert_eq!(c.unknown_keys, vec!["gemini.colour", "extra_section"]);
    }

    #[test]
    fn zero_words_per_theme_names_the_key() {
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  words_per_theme: 0\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "params.yaml: puzzle_generation.words_per_theme: expected an integer >= 1, got 0"
        );
    }

    #[test]
    fn assembly_weights_default_and_must_be_finite_and_not_negative() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.puzzle.coherence_weight, DEFAULT_COHERENCE_WEIGHT);
        assert_eq!(c.puzzle.ambiguity_weight, DEFAULT_AMBIGUITY_WEIGHT);
        let c = load(&format!(
            "{MINIMAL}puzzle_generation:\n  coherence_weight: 0\n  ambiguity_weight: 2.5\n"
        ))
        .unwrap();
        assert_eq!(
            (c.puzzle.coherence_weight, c.puzzle.ambiguity_weight),
            (0.0, 2.5)
        );
        for (key, value, got) in [
            ("coherence_weight", "-0.5", "-0.5"),
            ("ambiguity_weight", ".inf", "inf"),
            ("coherence_weight", ".nan", "NaN"),
        ] {
            let e = load(&format!("{MINIMAL}puzzle_generation:\n  {key}: {value}\n"))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("params.yaml: puzzle_generation.{key}: expected a number >= 0, got {got}")
            );
        }
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  ambiguity_weight: high\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 6") && e.contains("puzzle_generation.ambiguity_weight"),
            "{e}"
        );
    }

    #[test]
    fn negative_interval_is_rejected() {
        let e = load(&format!("{MINIMAL}gemini:\n  min_request_interval: -0.5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemini.min_request_interval"), "{e}");
        assert!(e.contains("-0.5"), "{e}");
    }

    #[test]
    fn missing_outputs_is_rejected_unless_out_given() {
        let yaml = "paths:\n  themes: t.json\n  candidates: c.json\n";
        let e = load(yaml).unwrap_err().to_string();
        assert!(e.contains("paths.outputs"), "{e}");
        let o = Overrides {
            out: Some(PathBuf::from("x")),
            ..Overrides::default()
        };
        let c = Config::from_yaml_bytes(Path::new("p.yaml"), yaml.as_bytes(), &o).unwrap();
        assert_eq!(c.output.outputs_dir, PathBuf::from("x"));
        assert_eq!(c.output.reports_dir, PathBuf::from("x/reports"));
    }

    #[test]
    fn ambiguity_margin_defaults_and_is_checked() {
        assert_eq!(
            load(MINIMAL).unwrap().puzzle.ambiguity_margin,
            DEFAULT_AMBIGUITY_MARGIN
        );
        let ok = load(&format!(
            "{MINIMAL}puzzle_generation:\n  ambiguity_margin: 0.1\n"
        ))
        .unwrap();
        assert_eq!(ok.puzzle.ambiguity_margin, 0.1);
        for bad in ["-0.01", "2.5", ".nan", ".inf"] {
            let e = load(&format!(
                "{MINIMAL}puzzle_generation:\n  ambiguity_margin: {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("puzzle_generation.ambiguity_margin: expected a number from 0 to 2"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn review_page_follows_reports_and_out() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(
            c.output.review_page,
            PathBuf::from("out/reports/puzzles.html")
        );
        let own = load(&format!("{MINIMAL}output:\n  review_page: pages/r.html\n")).unwrap();
        assert_eq!(own.output.review_page, PathBuf::from("pages/r.html"));
        let o = Overrides {
            out: Some(PathBuf::from("x")),
            ..Overrides::default()
        };
        let yaml = format!("{MINIMAL}output:\n  review_page: pages/r.html\n");
        let moved = Config::from_yaml_bytes(Path::new("p.yaml"), yaml.as_bytes(), &o).unwrap();
        assert_eq!(moved.output.review_page, PathBuf::from("x/reports/r.html"));
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let e = load("paths:\n  outputs: out\n  themes: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("params.yaml: "), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  words_per_theme: lots\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn a_wrong_type_anywhere_names_the_dotted_key_and_the_type_expected() {
        let cases = [
            (
                "puzzle_generation:\n  words_per_theme: [1,2]\n",
                "line 2: puzzle_generation.words_per_theme: expected an integer, got a list",
            ),
            (
                "puzzle_generation:\n  words_per_theme:\n    - 1\n",
                "line 3: puzzle_generation.words_per_theme: expected an integer, got a list",
            ),
            (
                "gemini:\n  model_id:\n    a: b\n",
                "line 3: gemini.model_id: expected a string, got a mapping",
            ),
            (
                "paths: {outputs: out}\ngemini: {requests_per_minute: fast}\n",
                "line 2: gemini.requests_per_minute: expected a number, got fast",
            ),
            (
                "paths:\n  outputs: 12\n",
                "line 2: paths.outputs: expected a string, got 12 (put it in quotes if it is \
                 meant as text)",
            ),
            (
                "embedding:\n  local:\n    model_dir: {a: 1}\n",
                "line 3: embedding.local.model_dir: expected a string, got a mapping",
            ),
            (
                "embedding:\n  provider: [a]\n",
                "line 2: embedding.provider: expected one of local, gemini, openai, got a list",
            ),
            (
                "gemini:\n  rpm_counts: 5\n",
                "line 2: gemini.rpm_counts: expected items or requests, got 5",
            ),
            (
                "multiprocessing:\n  enabled: maybe\n",
                "line 2: multiprocessing.enabled: expected true or false, got maybe",
            ),
            (
                "paths: [1]\n",
                "line 1: paths: expected a mapping (keys indented under it), got a list",
            ),
        ];
        for (yaml, message) in cases {
            let e = load(yaml).unwrap_err().to_string();
            assert_eq!(e, format!("params.yaml: {message}"), "{yaml}");
        }
    }

    #[test]
    fn non_utf8_names_line() {
        let mut bytes = MINIMAL.as_bytes().to_vec();
        bytes.extend_from_slice(b"# caf\xe9\n");
        let e = Config::from_yaml_bytes(Path::new("p.yaml"), &bytes, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "p.yaml: not valid UTF-8 (line 5): save the file as UTF-8"
        );
    }

    #[test]
    fn local_provider_from_embedding_section_or_flag() {
        let c = load(&format!(
            "{MINIMAL}embedding:\n  provider: local\n  local:\n    model_dir: m\n"
        ))
        .unwrap();
        assert!(
            matches!(c.provider, ProviderSettings::Local { ref model_dir } if model_dir == Path::new("m"))
        );
        let o = Overrides {
            provider: Some(ProviderKind::Local),
            ..Overrides::default()
        };
        let c = Config::from_yaml_bytes(Path::new("p"), MINIMAL.as_bytes(), &o).unwrap();
        assert!(
            matches!(c.provider, ProviderSettings::Local { ref model_dir } if model_dir == Path::new(DEFAULT_MODEL_DIR))
        );
    }

    #[test]
    fn the_originals_file_has_no_unknown_key_and_its_paths_mean_what_they_meant() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dvc/params.yaml");
        let c = Config::load(&path, &Overrides::default()).unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        // Folders, as the original names them: its file names inside.
        assert_eq!(c.themes_file, Path::new("data/themes/selected_themes.json"));
        assert_eq!(
            c.candidates_file,
            Path::new("data/candidates/candidate_words.json")
        );
        // Output CSV paths as written, not joined under paths.*.
        assert_eq!(
            c.output.embedding_cache_file,
            Path::new("data/cache/all_embeddings.csv")
        );
        assert_eq!(
            c.output.puzzle_embeddings_file,
            Path::new("data/embeddings/puzzle_embeddings.csv")
        );
        assert_eq!(
            c.output.cache_db,
            Path::new("data/cache/embeddings.sqlite3")
        );
        assert_eq!(c.engine.worker_count, 8);
        assert_eq!(c.gemini.requests_per_minute, 2880.0);
    }

    #[test]
    fn an_existing_folder_gets_the_originals_file_name_a_file_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let folder = d.path().join("themes");
        std::fs::create_dir(&folder).unwrap();
        let yaml = format!(
            "paths:\n  outputs: out\n  themes: {}\n  candidates: c.json\n",
            folder.display()
        );
        let c = load(&yaml).unwrap();
        assert_eq!(c.themes_file, folder.join(THEMES_FILE_NAME));
        assert_eq!(c.candidates_file, Path::new("c.json"));
    }

    #[test]
    fn words_per_puzzle_is_the_older_name_of_words_per_theme() {
        let c = load(&format!(
            "{MINIMAL}puzzle_generation:\n  words_per_puzzle: 3\n"
        ))
        .unwrap();
        assert_eq!(c.puzzle.words_per_theme, 3);
        assert!(c.unknown_keys.is_empty());
    }
    #[test]
    fn wrong_integer_names_key_and_line() {
        let e = load("puzzle_generation:\n  total_puzzle_count: 12x\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "params.yaml: line 2: puzzle_generation.total_puzzle_count: expected an integer, got 12x"
        );
    }

    #[test]
    fn duplicate_key_is_named_plainly() {
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  words_per_theme: 3\n  words_per_theme: 4\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 7: duplicate key puzzle_generation.words_per_theme"),
            "{e}"
        );
        assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
    }

    #[test]
    fn yaml_bomb_is_refused_plainly() {
        // The classic "billion laughs": 10^9 nodes from a few lines, under a section the tool
        // reads whole (`themes`).
        // Each of the anchors b1..b8 refers ten times to the one before it.
        let mut y = String::from("themes:\n  b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*b{}", i - 1); 10].join(", ");
            y.push_str(&format!("  b{i}: &b{i} [{refs}]\n"));
        }
        let e = load(&format!("{MINIMAL}{y}")).unwrap_err().to_string();
        assert_eq!(
            e,
            "params.yaml: too large or too deeply nested (alias expansion)"
        );
    }

    #[test]
    fn huge_numbers_are_not_echoed_in_full() {
        let e = load(&format!("{MINIMAL}gemini:\n  retry_base_delay: 1e308\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("got 1e308"), "{e}");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn a_plan_that_cannot_fit_names_the_key_and_the_largest_value() {
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  total_puzzle_count: 1000000000000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("puzzle_generation.total_puzzle_count: expected at most 2500000 with 4"),
            "{e}"
        );
        let e = load(&format!(
            "{MINIMAL}multiprocessing:\n  worker_count: 1000000000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("multiprocessing.worker_count: expected an integer from 1 to 10000"),
            "{e}"
        );
        let c = load(&format!(
            "{MINIMAL}puzzle_generation:\n  total_puzzle_count: 2500000\n"
        ))
        .unwrap();
        assert_eq!(c.puzzle.total_puzzle_count, 2_500_000);
    }

    #[test]
    fn an_endless_config_file_is_refused_without_reading_it_all() {
        let e = Config::load(Path::new("/dev/zero"), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/zero: too large: a configuration file may hold at most 1 MB (is this the right file?)"
        );
    }
}
