//! A YAML parser's error as a user reads it: one line, the line number and dotted key at
//! fault, and what that key takes.

use crate::text::cut;

/// A YAML parser error as a user reads it: the line and the dotted key at fault (`key_path`,
/// where deserialisation stopped), what that key takes, and never the parser's own advice ("set
/// DuplicateKeyPolicy in Options").
pub(super) fn yaml_message(
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
    match serde_json::from_value::<super::raw::Params>(probe) {
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
