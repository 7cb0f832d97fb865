//! Reading the two input files in the Python pipeline's shapes.
//!
//! `selected_themes.json`: `{"themes": [..], ..}`; `candidate_words.json`:
//! `{"candidates": {"<theme>": {"words": [..], ..}}, ..}`. Other keys are ignored. Every error
//! names the file and, where the JSON parser knows it, the line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess, Visitor};

use crate::fsx::{LimitedReadError, read_limited};
use crate::text::{cut, human_bytes};
use crate::words::{identity, normalize_text};

/// Largest input file read (the original's candidate files are a few MB).
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// An input file that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: too large: an input file may hold at most {} (is this the right file?)",
        human_bytes(*limit)
    )]
    TooLarge { path: PathBuf, limit: u64 },
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
    /// Themes in file order, normalised (invisible characters removed, trimmed) and distinct
    /// ignoring case.
    pub themes: Vec<String>,
    /// Candidate words per theme [`identity`] (normalised, lowercased), in file order, each
    /// word normalised and none empty. A theme may be absent here.
    pub candidates: HashMap<String, Vec<String>>,
}

/// A JSON value that keeps every object entry in file order, duplicates included (serde's maps
/// keep one silently).
#[derive(Debug)]
enum Json {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "true or false",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::Number)
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The files' shapes, typed: parsed again only to find the line of a value of the wrong type.
#[derive(Deserialize)]
struct ThemesFile {
    #[allow(dead_code)]
    themes: Vec<String>,
}

#[derive(Deserialize)]
struct CandidatesFile {
    #[allow(dead_code)]
    candidates: HashMap<String, CandidateEntry>,
}

#[derive(Deserialize)]
struct CandidateEntry {
    #[allow(dead_code)]
    words: Vec<String>,
}

/// `what` is wrong in `path`: with the line and column where serde finds a value of the wrong
/// type in the file's shape `T`, when it does.
fn located<T: serde::de::DeserializeOwned>(path: &Path, body: &[u8], what: String) -> InputError {
    match serde_json::from_slice::<T>(body) {
        Err(e) if e.is_data() && e.line() > 0 => InputError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: what,
        },
        _ => InputError::Invalid {
            path: path.to_owned(),
            what,
        },
    }
}

/// Reports warnings about one file, the first few in full and then a count.
struct Warnings<'a> {
    path: &'a Path,
    shown: usize,
    hidden: usize,
}

impl<'a> Warnings<'a> {
    const SHOWN: usize = 20;

    fn new(path: &'a Path) -> Self {
        Warnings {
            path,
            shown: 0,
            hidden: 0,
        }
    }

    fn warn(&mut self, message: impl fmt::Display) {
        if self.shown < Self::SHOWN {
            self.shown += 1;
            tracing::warn!("{}: {message}", self.path.display());
        } else {
            self.hidden += 1;
        }
    }
}

impl Drop for Warnings<'_> {
    fn drop(&mut self) {
        if self.hidden > 0 {
            tracing::warn!(
                "{}: {} more warning(s) like the ones above",
                self.path.display(),
                self.hidden
            );
        }
    }
}

/// The entries of `object` in file order, keeping the first of keys given twice (warned).
fn first_of_each<'j>(
    object: &'j [(String, Json)],
    at: &str,
    warnings: &mut Warnings,
) -> Vec<(&'j str, &'j Json)> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(object.len());
    for (key, value) in object {
        if seen.insert(key.as_str()) {
            kept.push((key.as_str(), value));
        } else {
            warnings.warn(format_args!(
                "{at}key {key:?} appears more than once; the first is used, the others ignored"
            ));
        }
    }
    kept
}

/// The quoted form of `s` for a message, cut.
fn quoted(s: &str) -> String {
    cut(&format!("{s:?}"), 60)
}

impl Inputs {
    /// Reads both files.
    pub fn load(themes_file: &Path, candidates_file: &Path) -> Result<Inputs, InputError> {
        let themes = Self::load_themes(themes_file)?;
        let candidates = Self::load_candidates(candidates_file)?;
        Ok(Inputs { themes, candidates })
    }

    fn load_themes(path: &Path) -> Result<Vec<String>, InputError> {
        let invalid = |what: String| InputError::Invalid {
            path: path.to_owned(),
            what,
        };
        let mut warnings = Warnings::new(path);
        let (top, body) = read_json(path)?;
        let located = |what: String| located::<ThemesFile>(path, &body, what);
        let Json::Object(top) = top else {
            return Err(invalid(format!(
                "expected an object {{\"themes\": [...]}}, got {}",
                top.kind()
            )));
        };
        let top = first_of_each(&top, "", &mut warnings);
        let Some((_, themes)) = top.iter().find(|(k, _)| *k == "themes") else {
            return Err(invalid(
                "expected an object {\"themes\": [...]}, got an object without \"themes\"".into(),
            ));
        };
        let Json::Array(themes) = themes else {
            return Err(located(format!(
                "themes: expected a list of theme names, got {}",
                themes.kind()
            )));
        };
        // identity -> (index, spelling) of the first theme with it.
        let mut seen: HashMap<String, (usize, String)> = HashMap::new();
        let mut list = Vec::with_capacity(themes.len());
        for (i, theme) in themes.iter().enumerate() {
            let Json::String(given) = theme else {
                return Err(located(format!(
                    "themes[{i}]: expected a theme name (a string), got {}",
                    theme.kind()
                )));
            };
            let name = normalize_text(given);
            if name.is_empty() {
                return Err(invalid(format!(
                    "themes[{i}]: expected a theme name, got {}",
                    if given.is_empty() {
                        "an empty string".to_owned()
                    } else {
                        format!("{} (only spaces or invisible characters)", quoted(given))
                    }
                )));
            }
            match seen.get(&identity(&name)) {
                None => {
                    seen.insert(identity(&name), (i, given.clone()));
                    list.push(name);
                }
                Some((first, spelling)) if spelling == given => warnings.warn(format_args!(
                    "themes[{i}]: {} is listed twice (first as themes[{first}]); using it once",
                    quoted(given)
                )),
                Some((first, spelling)) => warnings.warn(format_args!(
                    "themes[{i}]: {} is the same theme as {} (themes[{first}]) once case, \
                     spaces and invisible characters are ignored; using {} once",
                    quoted(given),
                    quoted(spelling),
                    quoted(&normalize_text(spelling))
                )),
            }
        }
        if list.is_empty() {
            return Err(invalid(
                "themes: expected at least one theme, got an empty list".into(),
            ));
        }
        Ok(list)
    }

    /// Reads the candidates file: each theme's words, by theme [`identity`] (the first of
    /// keys naming the same theme is used).
    fn load_candidates(path: &Path) -> Result<HashMap<String, Vec<String>>, InputError> {
        let invalid = |what: String| InputError::Invalid {
            path: path.to_owned(),
            what,
        };
        let expected = "expected an object {\"candidates\": {\"<theme>\": {\"words\": [...]}}}";
        let mut warnings = Warnings::new(path);
        let (top, body) = read_json(path)?;
        let located = |what: String| located::<CandidatesFile>(path, &body, what);
        let Json::Object(top) = top else {
            return Err(invalid(format!("{expected}, got {}", top.kind())));
        };
        let top = first_of_each(&top, "", &mut warnings);
        let Some((_, candidates)) = top.iter().find(|(k, _)| *k == "candidates") else {
            return Err(invalid(format!(
                "{expected}, got an object without \"candidates\""
            )));
        };
        let Json::Object(candidates) = candidates else {
            return Err(located(format!(
                "candidates: expected an object {{\"<theme>\": {{\"words\": [...]}}}}, got {}",
                candidates.kind()
            )));
        };
        let entries = first_of_each(candidates, "candidates: ", &mut warnings);
        // identity -> the spelling of the first key with it.
        let mut spelling_of: HashMap<String, &str> = HashMap::new();
        let mut map = HashMap::with_capacity(entries.len());
        for (key, entry) in entries {
            let at = format!("candidates[{}]", quoted(key));
            let kept = entry_words(entry, &at, &located, &mut warnings)?;
            let id = identity(key);
            if id.is_empty() {
                warnings.warn(format_args!(
                    "{at}: a theme name of only spaces or invisible characters; entry ignored"
                ));
                continue;
            }
            match spelling_of.get(&id) {
                None => {
                    spelling_of.insert(id.clone(), key);
                    map.insert(id, kept);
                }
                Some(first) => warnings.warn(format_args!(
                    "candidates: keys {} and {} name the same theme once case, spaces and \
                     invisible characters are ignored; the first ({}) is used, the other ignored",
                    quoted(first),
                    quoted(key),
                    quoted(first)
                )),
            }
        }
        Ok(map)
    }

    /// The candidates of `theme`, if the candidates file has an entry for it (compared by
    /// [`identity`]: case, surrounding spaces and invisible characters ignored).
    pub fn candidates_of(&self, theme: &str) -> Option<&[String]> {
        self.candidates.get(&identity(theme)).map(Vec::as_slice)
    }

    /// The texts a run embeds for `theme` (the theme, then its usable candidates), or `None`
    /// when it has fewer than `words_per_theme` usable candidates (it fails without a request).
    pub fn texts_to_embed(&self, theme: &str, words_per_theme: usize) -> Option<Vec<String>> {
        let usable = crate::words::usable_candidates(self.candidates_of(theme)?);
        (usable.len() >= words_per_theme).then(|| crate::words::texts_of(theme, &usable))
    }
}

/// The words of the candidates entry at `at` (`{"words": [...]}`), normalised, without the
/// empty ones (warned unless given empty). `located` makes the error for a value of the
/// wrong type.
fn entry_words(
    entry: &Json,
    at: &str,
    located: &dyn Fn(String) -> InputError,
    warnings: &mut Warnings,
) -> Result<Vec<String>, InputError> {
    let Json::Object(entry) = entry else {
        return Err(located(format!(
            "{at}: expected an object {{\"words\": [...]}}, got {}",
            entry.kind()
        )));
    };
    let entry = first_of_each(entry, &format!("{at}: "), warnings);
    let Some((_, words)) = entry.iter().find(|(k, _)| *k == "words") else {
        return Err(located(format!("{at}: missing field `words`")));
    };
    let Json::Array(words) = words else {
        return Err(located(format!(
            "{at}.words: expected a list of words, got {}",
            words.kind()
        )));
    };
    let mut kept = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let Json::String(given) = word else {
            return Err(located(format!(
                "{at}.words[{i}]: expected a word (a string), got {}",
                word.kind()
            )));
        };
        let w = normalize_text(given);
        if w.is_empty() {
            if !given.is_empty() {
                warnings.warn(format_args!(
                    "{at}.words[{i}]: {} is only spaces or invisible characters; dropped",
                    quoted(given)
                ));
            }
        } else {
            kept.push(w);
        }
    }
    Ok(kept)
}

/// The file's JSON tree and its text (without a BOM).
fn read_json(path: &Path) -> Result<(Json, Vec<u8>), InputError> {
    let bytes = read_limited(path, MAX_INPUT_BYTES).map_err(|e| match e {
        LimitedReadError::Io(source) => InputError::Read {
            path: path.to_owned(),
            source,
        },
        LimitedReadError::TooLarge => InputError::TooLarge {
            path: path.to_owned(),
            limit: MAX_INPUT_BYTES,
        },
    })?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(InputError::NotUtf8 {
            path: path.to_owned(),
            line: crate::config::line_of_offset(&bytes, e.valid_up_to()),
        });
    }
    // A UTF-8 byte order mark (Windows editors write one) is not part of the JSON.
    let mut bytes = bytes;
    if bytes.starts_with("\u{FEFF}".as_bytes()) {
        bytes.drain(..3);
    }
    let json = serde_json::from_slice(&bytes).map_err(|e| {
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
    })?;
    Ok((json, bytes))
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
            e.ends_with(
                "themes[1]: expected a theme name, got \"  \" (only spaces or invisible characters)"
            ),
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

    #[test]
    fn bom_is_accepted_and_a_bare_list_is_explained() {
        let d = tempfile::tempdir().unwrap();
        let t = write(
            d.path(),
            "t.json",
            "\u{FEFF}{\"themes\": [\"Fruit\"]}".as_bytes(),
        );
        let c = write(d.path(), "c.json", &[b"\xEF\xBB\xBF", CANDS].concat());
        let i = Inputs::load(&t, &c).unwrap();
        assert_eq!(i.themes, ["Fruit"]);
        let t = write(d.path(), "t.json", br#"["Fruit"]"#);
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(
            e.ends_with(r#"t.json: expected an object {"themes": [...]}, got a list"#),
            "{e}"
        );
    }

    #[test]
    fn keys_and_names_are_normalised_first_spelling_kept() {
        let d = tempfile::tempdir().unwrap();
        let t = write(
            d.path(),
            "t.json",
            "{\"themes\": [\"Planets\", \"planets\", \" PLANETS\u{200B}\", \"Trees\"]}".as_bytes(),
        );
        let c = write(
            d.path(),
            "c.json",
            "{\"candidates\": {\" Planets \": {\"words\": [\"Mars\", \"\u{200B}\", \" Venus\u{00AD}\"]}, \
             \"Planets\": {\"words\": [\"Oak\"]}, \"Trees\": {\"words\": [\"Oak\"]}, \
             \"Trees\": {\"words\": [\"Pine\"]}}}"
                .as_bytes(),
        );
        let i = Inputs::load(&t, &c).unwrap();
        assert_eq!(i.themes, ["Planets", "Trees"]);
        assert_eq!(i.candidates_of("Planets").unwrap(), ["Mars", "Venus"]);
        assert_eq!(i.candidates_of("planets").unwrap(), ["Mars", "Venus"]);
        assert_eq!(i.candidates_of("Trees").unwrap(), ["Oak"]);
    }

    #[test]
    fn an_invisible_theme_name_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let t = write(
            d.path(),
            "t.json",
            "{\"themes\": [\"Fruit\", \"\u{200B}\"]}".as_bytes(),
        );
        let c = write(d.path(), "c.json", CANDS);
        let e = Inputs::load(&t, &c).unwrap_err().to_string();
        assert!(
            e.contains("themes[1]: expected a theme name, got \"\\u{200b}\""),
            "{e}"
        );
    }
}
