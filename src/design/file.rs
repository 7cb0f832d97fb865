//! Puzzles to solve, read from a file: a run's `final_puzzles.json` (`{"puzzle_1": {"words":
//! [...], "themes": [...]}, ...}`: `words` holds the groups in the order of `themes`), or a
//! plain JSON list of puzzles, each a list of words (groups of four, one after the other) or
//! an object with `words` (and optionally `themes`, which says how many groups).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fsx::{LimitedReadError, read_limited};

/// Largest file read.
const MAX_BYTES: u64 = 1 << 30;

/// Group size of a puzzle given as a bare list of words.
pub const DEFAULT_GROUP_SIZE: usize = 4;

/// One puzzle to solve: its name, its words group by group, and its group size.
#[derive(Debug, Clone, PartialEq)]
pub struct PuzzleWords {
    pub key: String,
    pub words: Vec<String>,
    pub group_size: usize,
}

/// Why a puzzles file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PuzzlesFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_BYTES} bytes; not a puzzles file")]
    TooLarge { path: PathBuf },
    #[error(
        "{path}: line {line}: {message} (expected a final_puzzles.json, or a JSON list of \
         puzzles, each a list of words or an object with \"words\")"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Shape {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Reads the puzzles of `path`, in file order.
pub fn read(path: &Path) -> Result<Vec<PuzzleWords>, PuzzlesFileError> {
    let bytes = read_limited(path, MAX_BYTES).map_err(|e| match e {
        LimitedReadError::Io(source) => PuzzlesFileError::Read {
            path: path.to_owned(),
            source,
        },
        LimitedReadError::TooLarge => PuzzlesFileError::TooLarge {
            path: path.to_owned(),
        },
    })?;
    // serde_json keeps an object's keys in file order (`preserve_order`).
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| PuzzlesFileError::Malformed {
        path: path.to_owned(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let shape = |key: &str, message: String| PuzzlesFileError::Shape {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let entries: Vec<(String, &Value)> = match &value {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("puzzle {}", i + 1), v))
            .collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        other => {
            return Err(shape(
                "(top level)",
                format!(
                    "{} where an object of puzzles or a list of puzzles was expected",
                    kind(other)
                ),
            ));
        }
    };
    entries
        .into_iter()
        .map(|(key, v)| {
            let (words, themes) = match v {
                Value::Array(_) => (v, None),
                Value::Object(o) => match o.get("words") {
                    Some(w) => (w, o.get("themes")),
                    None => return Err(shape(&key, "no \"words\"".into())),
                },
                other => {
                    return Err(shape(
                        &key,
                        format!(
                            "{} where a list of words or an object with \"words\" was expected",
                            kind(other)
                        ),
                    ));
                }
            };
            let words = strings(words).map_err(|m| shape(&format!("{key}.words"), m))?;
            let groups = match themes {
                Some(t) => strings(t)
                    .map_err(|m| shape(&format!("{key}.themes"), m))?
                    .len(),
                None => words.len() / DEFAULT_GROUP_SIZE,
            };
            if words.is_empty() || groups == 0 || words.len() % groups != 0 {
                return Err(shape(
                    &key,
                    format!(
                        "{} word(s) do not split into {} group(s) of equal size",
                        words.len(),
                        groups.max(1)
                    ),
                ));
            }
            Ok(PuzzleWords {
                group_size: words.len() / groups,
                key,
                words,
            })
        })
        .collect()
}

/// A JSON list of strings.
fn strings(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(list) = v else {
        return Err(format!("{} where a list of strings was expected", kind(v)));
    };
    list.iter()
        .enumerate()
        .map(|(i, x)| match x {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "item {}: {} where a string was expected",
                i + 1,
                kind(other)
            )),
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Vec<PuzzleWords>, PuzzlesFileError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, text).unwrap();
        read(&p)
    }

    #[test]
    fn reads_final_puzzles_and_plain_lists() {
        let finals = r#"{"puzzle_2": {"words": ["a","b","c","d","e","f"], "themes": ["x","y"], "quality": {}},
                         "puzzle_1": {"words": ["a","b","c","d"], "themes": ["x","y"]}}"#;
        let p = read_text(finals).unwrap();
        assert_eq!(p[0].key, "puzzle_2");
        assert_eq!(p[0].group_size, 3);
        assert_eq!(p[1].group_size, 2);
        let list = r#"[["a","b","c","d","e","f","g","h"], {"words": ["a","b","c","d"]}]"#;
        let p = read_text(list).unwrap();
        assert_eq!(p[0].key, "puzzle 1");
        assert_eq!(p[0].group_size, 4);
        assert_eq!(p[1].words.len(), 4);
    }

    #[test]
    fn bad_files_name_the_line_or_the_puzzle() {
        let e = read_text("[\n[\"a\",\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = read_text("{\"puzzle_1\": 5}").unwrap_err().to_string();
        assert!(
            e.contains("puzzle_1: a number where a list of words"),
            "{e}"
        );
        let e = read_text("[[\"a\", 3, \"c\", \"d\"]]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("puzzle 1.words: item 2: a number"), "{e}");
        let e = read_text("7").unwrap_err().to_string();
        assert!(e.contains("(top level): a number"), "{e}");
        let e = read_text("[[\"a\",\"b\",\"c\"]]").unwrap_err().to_string();
        assert!(e.contains("puzzle 1") && e.contains("3 word(s)"), "{e}");
        let e = read_text(r#"{"p": {"words": ["a","b","c"], "themes": ["x","y"]}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(": p: 3 word(s) do not split into 2 group(s)"),
            "{e}"
        );
    }
}
