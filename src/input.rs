//! Reading the two input files in the Python pipeline's shapes.
//!
//! `selected_themes.json`: `{"themes": [..], ..}`; `candidate_words.json`:
//! `{"candidates": {"<theme>": {"words": [..], ..}}, ..}`. Other keys are ignored. Every error
//! names the file and, where the JSON parser knows it, the line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An input file that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid UTF-8 (line {line}): save the file as UTF-8")]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{path}: line {line}, column {column}: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// The themes and each theme's candidate words, as read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Themes in file order (non-empty, distinct after trimming).
    pub themes: Vec<String>,
    /// Candidate words per theme, in file order. A theme may be absent here.
    pub candidates: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct ThemesFile {
    themes: Vec<String>,
}

#[derive(Deserialize)]
struct CandidatesFile {
    candidates: HashMap<String, CandidateEntry>,
}

#[derive(Deserialize)]
struct CandidateEntry {
    words: Vec<String>,
}

impl Inputs {
    /// Reads both files.
    pub fn load(themes_file: &Path, candidates_file: &Path) -> Result<Inputs, InputError> {
        let themes: ThemesFile = read_json(themes_file)?;
        let candidates: CandidatesFile = read_json(candidates_file)?;
        let mut seen = std::collections::HashSet::new();
        let mut list = Vec::with_capacity(themes.themes.len());
        for (i, theme) in themes.themes.into_iter().enumerate() {
            let theme = theme.trim().to_owned();
            if theme.is_empty() {
                return Err(InputError::Invalid {
                    path: themes_file.to_owned(),
                    what: format!("themes[{i}]: expected a theme name, got an empty string"),
                });
            }
            if seen.insert(theme.clone()) {
                list.push(theme);
            } else {
                tracing::warn!(
                    "{}: themes[{i}]: {theme:?} is listed twice; using it once",
                    themes_file.display()
                );
            }
        }
        if list.is_empty() {
            return Err(InputError::Invalid {
                path: themes_file.to_owned(),
                what: "themes: expected at least one theme, got an empty list".into(),
            });
        }
        let candidates = candidates
            .candidates
            .into_iter()
            .map(|(theme, entry)| (theme.trim().to_owned(), entry.words))
            .collect();
        Ok(Inputs {
            themes: list,
            candidates,
        })
    }

    /// The candidates of `theme`, if the candidates file has an entry for it.
    pub fn candidates_of(&self, theme: &str) -> Option<&[String]> {
        self.candidates.get(theme).map(Vec::as_slice)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(InputError::NotUtf8 {
            path: path.to_owned(),
            line: crate::config::line_of_offset(&bytes, e.valid_up_to()),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; we print those separately.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        InputError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    const CANDS: &[u8] = br#"{"candidates": {"Fruit": {"words": ["apple"], "similarity_scores": [0.5], "word_count": 1}}, "metadata": {}}"#;

    #[test]
    fn reads_original_shapes_and_ignores_other_keys() {
        let d = tempfile::tempdir().unwrap();
        let t = write(
            d.path(),
            "t.json",
            br#"{"themes": [" Fruit "], "count": 1}"#,
        );
        let c = write(d.path(), "c.json", CANDS);
        let i = Inputs::load(&t, &c).unwrap();
        assert_eq!(i.themes, vec!["Fruit"]);
        assert_eq!(i.candidates_of("Fruit").unwrap(), ["apple"]);
    }

    #[test]
    fn malformed_json_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let t = write(d.path(), "t.json", b"{\n  \"themes\": [\"a\",\n}");
        let c = write(d.path(), "c.json", CANDS);
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(e.contains("t.json: line 3, column 1:"), "{e}");
    }

    #[test]
    fn empty_theme_is_rejected_with_its_index() {
        let d = tempfile::tempdir().unwrap();
        let t = write(d.path(), "t.json", br#"{"themes": ["Fruit", "  "]}"#);
        let c = write(d.path(), "c.json", CANDS);
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(
            e.ends_with("themes[1]: expected a theme name, got an empty string"),
            "{e}"
        );
    }

    #[test]
    fn non_utf8_is_reported_with_line() {
        let d = tempfile::tempdir().unwrap();
        let t = write(d.path(), "t.json", b"{\"themes\":\n [\"caf\xe9\"]}");
        let c = write(d.path(), "c.json", CANDS);
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8 (line 2)"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let d = tempfile::tempdir().unwrap();
        let t = write(d.path(), "t.json", br#"{"themes": ["Fruit"]}"#);
        let c = write(
            d.path(),
            "c.json",
            br#"{"candidates": {"Fruit": {"word": []}}}"#,
        );
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(e.contains("missing field `words`"), "{e}");
    }
}
