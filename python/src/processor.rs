//! `create_improved_task_processor(config_path)` and `process_themes(themes, candidates_dict)`:
//! the original `ImprovedGeminiTaskProcessor`, backed by [`puzzlegen::pipeline::run_with`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio_util::sync::CancellationToken;

use puzzlegen::config::{Config, Overrides};
use puzzlegen::embed::EmbedError;
use puzzlegen::input::Inputs;
use puzzlegen::pipeline::{self, RunError, RunResult, Stop};
use puzzlegen::plan::{Plan, PlanError};
use puzzlegen::progress::ProgressMode;
use puzzlegen::report::{self, RunRecord};

use crate::{ApiError, run_interruptible, runtime};

/// How a call failed, mapped to a Python exception class with the CLI's message.
enum Failure {
    /// Bad configuration or input: `ValueError`.
    Value(String),
    /// The API refused to go on (key, quota): `puzzlegen.ApiError`.
    Api(String),
    /// Anything else (disk, cache database, ...): `RuntimeError`.
    Runtime(String),
    /// Stopped by a signal: the caller raises `KeyboardInterrupt` itself.
    Interrupted,
}

impl Failure {
    fn of_embed(e: &EmbedError) -> Failure {
        match e {
            EmbedError::Rejected { .. } | EmbedError::DailyQuota { .. } => {
                Failure::Api(e.to_string())
            }
            EmbedError::Setup(_) => Failure::Value(e.to_string()),
            _ => Failure::Runtime(e.to_string()),
        }
    }

    fn into_py(self) -> PyErr {
        match self {
            Failure::Value(m) => PyValueError::new_err(m),
            Failure::Api(m) => ApiError::new_err(m),
            Failure::Runtime(m) => PyRuntimeError::new_err(m),
            Failure::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err(
                "stopped by a signal (finished themes are in the cache and the run journal)",
            ),
        }
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        match &e {
            RunError::Interrupted => Failure::Interrupted,
            RunError::Provider(p) => Failure::of_embed(p),
            _ if e.is_user_error() => Failure::Value(e.to_string()),
            _ => Failure::Runtime(e.to_string()),
        }
    }
}

/// What a finished run hands back to Python: `results_dict` and `all_embeddings` as JSON.
struct Answer {
    results: String,
    embeddings: String,
}

/// Runs of one cache database take turns within the process, so that texts several threads
/// ask for at once are requested once (the later run finds them in the cache) and runs do not
/// share a run journal.
fn turn_of(db: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let key = std::path::absolute(db).unwrap_or_else(|_| db.to_owned());
    let mut turns = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(turns.entry(key).or_default())
}

/// The original processor: `process_themes(themes, candidates_dict)` ->
/// `(results_dict, all_embeddings)`. Made by `create_improved_task_processor`.
#[pyclass(module = "puzzlegen", frozen)]
pub struct ImprovedGeminiTaskProcessor {
    config: Config,
}

/// Loads `config_path` (the original's params.yaml, unchanged, with the CLI's rules) and
/// returns a processor. Raises ValueError for a missing or invalid configuration.
#[pyfunction]
#[pyo3(signature = (config_path = "params.yaml".into()))]
pub fn create_improved_task_processor(
    config_path: PathBuf,
) -> PyResult<ImprovedGeminiTaskProcessor> {
    ImprovedGeminiTaskProcessor::new(config_path)
}

#[pymethods]
impl ImprovedGeminiTaskProcessor {
    #[new]
    #[pyo3(signature = (config_path = "params.yaml".into()))]
    fn new(config_path: PathBuf) -> PyResult<Self> {
        let config = Config::load(&config_path, &Overrides::default())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        for key in &config.unknown_keys {
            tracing::warn!("{}: unknown key {key} (ignored)", config.source.display());
        }
        for notice in &config.deprecated {
            tracing::warn!("{}: {notice}", config.source.display());
        }
        Ok(ImprovedGeminiTaskProcessor { config })
    }

    /// The configuration file this processor was made from.
    #[getter]
    fn config_path(&self) -> PathBuf {
        self.config.source.clone()
    }

    /// Processes `themes` (a list of theme names) with `candidates_dict` (`{theme: {"words":
    /// [...]}}`, the candidates file's `candidates` object) as `puzzlegen run` does: the same
    /// plan, provider, cache, limiter, retries and journal. Writes no output file but keeps
    /// the cache (database and cache CSV).
    ///
    /// Returns `(results_dict, all_embeddings)`: `{"puzzles": {"puzzle_<id>": {...}},
    /// "metadata": {...}}` as `final_puzzles.json` and `puzzle_metadata.json`, and for each
    /// group of each puzzle a theme row then its words (`theme`, `word`, `word_type`,
    /// `embedding`, `similarity_to_theme`, `rank`, `dataset`), as the puzzle CSV.
    ///
    /// Raises ValueError for bad input or configuration, puzzlegen.ApiError when the API
    /// refuses the key or the quota is used up, KeyboardInterrupt on Ctrl-C (within about a
    /// second: requests in flight are given up; the cache keeps everything received, and is
    /// closed when the exception is raised).
    fn process_themes<'py>(
        &self,
        py: Python<'py>,
        themes: &Bound<'py, PyAny>,
        candidates_dict: &Bound<'py, PyAny>,
    ) -> PyResult<(PyObject, PyObject)> {
        let inputs = inputs_of(py, themes, candidates_dict)?;
        let config = self.config.clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let answer = run_interruptible(
            py,
            move || runtime().block_on(process(config, inputs, token)),
            || stop.cancel(),
        )?;
        let answer = answer.map_err(Failure::into_py)?;
        let json = py.import("json")?;
        let results = json.call_method1("loads", (answer.results,))?;
        let embeddings = json.call_method1("loads", (answer.embeddings,))?;
        Ok((results.unbind(), embeddings.unbind()))
    }

    fn __repr__(&self) -> String {
        format!(
            "ImprovedGeminiTaskProcessor(config_path={:?})",
            self.config.source.display().to_string()
        )
    }
}

/// How long requests and themes in flight may go on once the call is interrupted.
const STOP_GRACE: Duration = Duration::from_millis(250);

/// The run, on a runtime thread: opened as `pipeline::run` opens one (`Backend::open`, the
/// plan, `open_cache`), then `run_with`.
async fn process(
    mut config: Config,
    inputs: Inputs,
    stop: CancellationToken,
) -> Result<Answer, Failure> {
    let turn = turn_of(&config.output.cache_db);
    let _turn = tokio::select! {
        t = turn.lock() => t,
        _ = stop.cancelled() => return Err(Failure::Interrupted),
    };
    report::check_targets(&config).map_err(|e| Failure::Value(e.to_string()))?;
    report::remove_stale_temps(&config);
    // Ctrl-C answers at once: requests in flight are given up rather than waited for (their
    // texts are embedded again by the next call), so the call raises within about a second.
    config.engine.stop_grace = STOP_GRACE;
    // Messages about the inputs name the arguments, not the config's input files.
    config.themes_file = PathBuf::from("themes");
    config.candidates_file = PathBuf::from("candidates_dict");
    let backend = pipeline::Backend::open(&config).await?;
    // Fewer themes than a puzzle needs: the original's processor still processes them (its
    // puzzles repeat themes and fail at assembly, each with its reason); so does this one.
    let plan = match pipeline::make_plan_until(&config, &inputs, &stop) {
        Err(RunError::Plan {
            source: PlanError::TooFewThemes { .. },
            ..
        }) => {
            let p = &config.puzzle;
            tracing::warn!(
                "{} distinct theme(s) given, {} per puzzle: themes repeat within puzzles",
                inputs.themes.len(),
                p.themes_per_puzzle
            );
            Plan::repeating(&inputs.themes, p.total_puzzle_count, p.themes_per_puzzle)
        }
        plan => plan?,
    };
    if stop.is_cancelled() {
        return Err(Failure::Interrupted);
    }
    let cache = pipeline::open_cache(&config, backend.provider.space())?;
    let result = pipeline::run_with(
        &config,
        inputs,
        plan,
        backend,
        cache,
        ProgressMode::Hidden,
        stop,
    )
    .await?;
    let answer = answer_of(&config, &result);
    let stopped = result.stop.clone();
    result.finish_without_outputs()?;
    match stopped {
        None => answer,
        Some(Stop::Interrupted) => Err(Failure::Interrupted),
        Some(Stop::Fatal(e)) => Err(Failure::of_embed(&e)),
    }
}

/// `results_dict` and `all_embeddings` of a run, as JSON.
fn answer_of(config: &Config, r: &RunResult) -> Result<Answer, Failure> {
    let themes_failed = r.themes_failed();
    let themes_ok: Vec<_> = r.themes_ok().collect();
    let record = RunRecord {
        config,
        plan: &r.plan,
        space: &r.space,
        puzzles: &r.puzzles,
        failed_puzzles: &r.failed_puzzles,
        themes_ok: &themes_ok,
        themes_failed: &themes_failed,
        replacements: &r.replacements,
        stats: &r.stats,
        cache: &r.cache,
        slots_filled: r.slots_filled,
        elapsed: r.elapsed,
        batch: r.batch.as_ref(),
    };
    let designs = report::designs(&record);
    let results = serde_json::json!({
        "puzzles": report::final_puzzles(&r.puzzles, &designs),
        "metadata": report::metadata(&record, &designs),
    });
    let vector = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<f64>>();
    let mut rows = Vec::new();
    for p in &r.puzzles {
        for g in &p.groups {
            rows.push(serde_json::json!({
                "theme": g.theme,
                "word": g.theme,
                "word_type": "theme",
                "embedding": vector(&g.vector),
                "similarity_to_theme": 1.0,
                "rank": 0,
                "dataset": "puzzle",
            }));
            for (rank, w) in g.words.iter().enumerate() {
                rows.push(serde_json::json!({
                    "theme": g.theme,
                    "word": w.word,
                    "word_type": "selected_word",
                    "embedding": vector(&w.vector),
                    "similarity_to_theme": f64::from(w.similarity),
                    "rank": rank + 1,
                    "dataset": "puzzle",
                }));
            }
        }
    }
    let json = |v: &serde_json::Value| {
        serde_json::to_string(v).map_err(|e| Failure::Runtime(format!("cannot encode: {e}")))
    };
    Ok(Answer {
        results: json(&results)?,
        embeddings: json(&serde_json::Value::Array(rows))?,
    })
}

/// The arguments as the CLI's input files, read by [`Inputs::load`] so that every rule and
/// message is the CLI's (the files named `themes` and `candidates_dict` in messages).
fn inputs_of(
    py: Python<'_>,
    themes: &Bound<'_, PyAny>,
    candidates_dict: &Bound<'_, PyAny>,
) -> PyResult<Inputs> {
    if themes.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err(
            "themes: expected a list of theme names, got a string",
        ));
    }
    let json = py.import("json")?;
    let dumps = |name: &str, key: &str, value: &Bound<'_, PyAny>| -> PyResult<String> {
        let top = PyDict::new(py);
        top.set_item(key, value)?;
        json.call_method1("dumps", (top,))
            .map_err(|e| {
                if e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<PyValueError>(py) {
                    PyValueError::new_err(format!("{name}: {}", e.value(py)))
                } else {
                    e
                }
            })?
            .extract()
    };
    let themes_list = py
        .import("builtins")?
        .getattr("list")?
        .call1((themes,))
        .map_err(|e| PyValueError::new_err(format!("themes: expected a list: {}", e.value(py))))?;
    let themes_json = dumps("themes", "themes", &themes_list)?;
    let candidates_json = dumps("candidates_dict", "candidates", candidates_dict)?;
    py.allow_threads(|| {
        let dir = tempfile::tempdir()
            .map_err(|e| format!("cannot make a temporary folder for the inputs: {e}"))?;
        let themes_file = dir.path().join("themes");
        let candidates_file = dir.path().join("candidates_dict");
        std::fs::write(&themes_file, themes_json)
            .and_then(|()| std::fs::write(&candidates_file, candidates_json))
            .map_err(|e| format!("cannot write the inputs to a temporary folder: {e}"))?;
        Inputs::load(&themes_file, &candidates_file).map_err(|e| {
            e.to_string()
                .replace(&themes_file.display().to_string(), "themes")
                .replace(&candidates_file.display().to_string(), "candidates_dict")
        })
    })
    .map_err(PyValueError::new_err)
}
