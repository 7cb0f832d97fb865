//! Reading `params.yaml` into one validated [`Config`] the rest of the program trusts.
//!
//! Two steps, as in ripgrep: the YAML is first parsed into raw, all-optional structs
//! ([`raw`], mirroring the original Python pipeline's file section by section), then
//! `Config::resolve` checks every value and fills defaults, one resolver per section, called
//! in file order so the first error reported stays the same. Each part has its module:
//!
//! - [`puzzle`]: `puzzle_generation` (shape, weights, difficulty options, the memory budget);
//! - [`requests`]: how a remote provider is called: limits, retries, batching (the `gemini`
//!   keys, which the OpenAI-compatible provider uses too) and the engine's concurrency;
//! - [`provider`]: which provider embeds, with its own options (`embedding`, `gemini`);
//! - [`output`]: every path a run reads or writes (`paths`, `output`, `cache`);
//! - [`distributed`]: the Redis shared with other runs;
//! - [`batch`]: interactive requests or Batch API jobs (`embedding.mode`, `batch`), and the
//!   price table (`pricing`);
//! - [`validate`] and [`yaml_error`]: the checks and messages that name the file and key.
//!
//! Unknown keys are collected as warnings (never fatal) so an original `params.yaml` loads
//! unchanged. Sections the Rust tool does not use (`themes`, `vector_search`, `logging`) are
//! accepted whole and ignored.

mod batch;
mod distributed;
mod output;
mod provider;
mod puzzle;
mod raw;
mod requests;
mod validate;
mod yaml_error;

use std::path::{Path, PathBuf};

use crate::fsx::{LimitedReadError, read_limited};
use crate::text::human_bytes;

pub use batch::{
    BatchFallback, BatchSettings, DEFAULT_PRICES, EmbeddingMode, MAX_POLL_INTERVAL, Price, Pricing,
};
pub use distributed::{DistributedSettings, RedisUrl};
pub use output::{CANDIDATES_FILE_NAME, OutputSettings, THEMES_FILE_NAME};
pub use provider::{
    DEFAULT_GEMINI_BASE_URL, DEFAULT_MODEL_DIR, GEMINI_BASE_URL_ENV, ProviderSettings,
};
pub use puzzle::{
    BYTES_PER_SLOT, DEFAULT_AMBIGUITY_MARGIN, DEFAULT_AMBIGUITY_WEIGHT, DEFAULT_COHERENCE_WEIGHT,
    DifficultyMix, MAX_SLOTS, PuzzleSettings,
};
pub use requests::{DEFAULT_STOP_GRACE, EngineSettings, MAX_CONCURRENCY, RequestSettings};
pub(crate) use yaml_error::line_of_offset;

use validate::Validator;
use yaml_error::yaml_message;

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
    /// `--metrics-addr HOST:PORT`: `distributed.metrics_addr`.
    pub metrics_addr: Option<String>,
}

/// A fully validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (named in later error messages).
    pub source: PathBuf,
    pub puzzle: PuzzleSettings,
    /// Limits, retries and batching of a remote provider's requests.
    pub requests: RequestSettings,
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
    /// `embedding.mode`: interactive requests or Batch API jobs.
    pub mode: EmbeddingMode,
    /// `batch.*`: how jobs are made and waited for (used in batch mode).
    pub batch: BatchSettings,
    /// `pricing`: USD per million input tokens by model, for estimates.
    pub pricing: Pricing,
}

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
        let gemini = provider::gemini_options(&v, &p.gemini)?;
        let requests = RequestSettings::resolve(&v, &p.gemini, &p.multiprocessing)?;
        let engine = EngineSettings::resolve(&v, &p.multiprocessing)?;
        let output = OutputSettings::resolve(&v, &p, o)?;
        let provider = ProviderSettings::resolve(&v, &p.embedding, o, gemini)?;
        let (themes_file, candidates_file) = output::input_files(&v, &p.paths, o)?;
        let mut deprecated = Vec::new();
        let distributed = DistributedSettings::resolve(&v, &p.distributed, o, &mut deprecated)?;
        let mode = p.embedding.mode.unwrap_or_default();
        let batch = BatchSettings::resolve(&v, &p.batch)?;
        batch::check_mode(&v, mode, provider.kind(), &batch)?;
        let pricing = Pricing::resolve(&v, &p.pricing)?;
        Ok(Config {
            source: path.to_owned(),
            puzzle,
            requests,
            engine,
            output,
            provider,
            themes_file,
            candidates_file,
            unknown_keys,
            deprecated,
            distributed,
            mode,
            batch,
            pricing,
        })
    }
}

impl Config {
    /// The embedding space a run with this config fills, as far as the config tells: the
    /// OpenAI-compatible provider's dimension is known only from its server; the local model's
    /// comes from its folder's `config.json`, read here (an unusable folder is an error).
    pub fn space(&self) -> Result<Option<crate::embed::Space>, crate::embed::EmbedError> {
        use crate::embed::{Space, folder::ModelFolder};
        Ok(match &self.provider {
            ProviderSettings::Local { model_dir } => Some(ModelFolder::read(model_dir)?.space()),
            ProviderSettings::Gemini(g) => Some(Space {
                model_id: g.model_id.clone(),
                dimension: g.dimension,
                task_type: g.task_type.clone(),
            }),
            ProviderSettings::Openai { .. } => None,
        })
    }
}

/// Largest `params.yaml` read (the original's is 3 KB): anything bigger is the wrong file.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[cfg(test)]
mod tests;
