//! Reading keys anyone may have written, for `puzzlegen status`: a key is read only if it
//! holds the type expected (the type check and the read are one script, so no `WRONGTYPE`
//! can fail the whole status), numbers are parsed here, and whatever cannot be read is named
//! as an [`Unreadable`] (the key and what is wrong with it) while the rest is still shown.

use crate::distributed::Conn;
use redis::Value;

/// A key `puzzlegen status` could not read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    pub key: String,
    /// What is wrong: `wrong type: ...`, `not a number: ...`.
    pub problem: String,
}

/// KEYS[1]: the key. ARGV[1]: the type it should hold, then a read command and its arguments.
/// Answers `{type}` when the key holds another type (`none`: absent), `{type, answer}` after
/// the read, or `{type, false, error}` when the read was refused.
const READ: &str = r#"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= ARGV[1] then return {kind} end
local r = redis.pcall(unpack(ARGV, 2))
if type(r) == 'table' and r.err then return {kind, false, r.err} end
return {kind, r}
"#;

/// One read of one key: `command` (its arguments included) if the key holds a `kind` (a
/// Redis type name: `string`, `hash`, `zset`, `stream`).
pub(crate) struct Read {
    pub(crate) key: String,
    pub(crate) kind: &'static str,
    pub(crate) command: Vec<String>,
}

impl Read {
    pub(crate) fn new(key: impl Into<String>, kind: &'static str, command: &[&str]) -> Read {
        Read {
            key: key.into(),
            kind,
            command: command.iter().map(|&a| a.to_owned()).collect(),
        }
    }
}

/// The unreadable keys met so far, and the reads that find them.
#[derive(Debug, Default)]
pub(crate) struct Inspector {
    unreadable: Vec<Unreadable>,
}

impl Inspector {
    /// Runs `reads` in one transaction (their answers are of one moment). Each answer is
    /// `Some(Nil)` when its key is absent, `None` when it is unreadable (then named); a Redis
    /// error (Redis did not answer) is returned as such.
    pub(crate) async fn read(
        &mut self,
        conn: &mut Conn,
        reads: &[Read],
    ) -> redis::RedisResult<Vec<Option<Value>>> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in reads {
            pipe.cmd("EVAL")
                .arg(READ)
                .arg(1)
                .arg(&r.key)
                .arg(r.kind)
                .arg(&r.command);
        }
        let answers: Vec<Value> = pipe.query_async(conn).await?;
        Ok(reads
            .iter()
            .zip(answers)
            .map(|(r, a)| self.answer(r, a))
            .collect())
    }

    /// Reads one key (see [`Inspector::read`]).
    pub(crate) async fn read_one(
        &mut self,
        conn: &mut Conn,
        read: Read,
    ) -> redis::RedisResult<Option<Value>> {
        let mut answers = self.read(conn, std::slice::from_ref(&read)).await?;
        Ok(answers.pop().flatten())
    }

    fn answer(&mut self, read: &Read, answer: Value) -> Option<Value> {
        let mut parts = match answer {
            Value::Array(parts) => parts.into_iter(),
            other => {
                self.name(&read.key, format!("unexpected answer {other:?}"));
                return None;
            }
        };
        let kind = parts.next().as_ref().and_then(text).unwrap_or_default();
        if kind == "none" {
            return Some(Value::Nil);
        }
        if kind != read.kind {
            self.name(
                &read.key,
                format!("wrong type: holds a {kind}, not a {}", read.kind),
            );
            return None;
        }
        let value = parts.next().unwrap_or(Value::Nil);
        if let Some(error) = parts.next().as_ref().and_then(text) {
            self.name(&read.key, format!("refused: {error}"));
            return None;
        }
        Some(value)
    }

    /// The keys named, each problem once, in key order.
    pub(crate) fn into_unreadable(mut self) -> Vec<Unreadable> {
        self.unreadable
            .sort_by(|a, b| (&a.key, &a.problem).cmp(&(&b.key, &b.problem)));
        self.unreadable.dedup();
        self.unreadable
    }

    /// Names `key` as unreadable for `problem`.
    pub(crate) fn name(&mut self, key: &str, problem: String) {
        self.unreadable.push(Unreadable {
            key: key.to_owned(),
            problem,
        });
    }

    /// The answer to `read` (a string key's) as a number (see [`Inspector::number`]); `None`
    /// when the key was unreadable.
    pub(crate) fn value_of<T: std::str::FromStr>(
        &mut self,
        read: &Read,
        answer: &Option<Value>,
        absent: T,
    ) -> Option<T> {
        let answer = answer.as_ref()?;
        self.number(&read.key, None, Some(answer), absent)
    }

    /// `raw` (field `field` of `key`, if a hash's) as a number; `absent` when there is none;
    /// `None` when it is not a number (then named).
    pub(crate) fn number<T: std::str::FromStr>(
        &mut self,
        key: &str,
        field: Option<&str>,
        raw: Option<&Value>,
        absent: T,
    ) -> Option<T> {
        let raw = match raw {
            None | Some(Value::Nil) => return Some(absent),
            Some(Value::Int(n)) => n.to_string(),
            Some(v) => text(v).unwrap_or_default(),
        };
        let parsed = raw.trim().parse::<T>().ok();
        if parsed.is_none() {
            let field = field.map(|f| format!("field {f}: ")).unwrap_or_default();
            let shown = crate::text::cut(&raw, 40);
            self.name(key, format!("{field}not a number: {shown:?}"));
        }
        parsed
    }
}

/// A string answer's text.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A flat `[field, value, ...]` answer (HGETALL, HMGET with its fields) as pairs.
pub(crate) fn fields(v: &Value) -> std::collections::HashMap<String, Value> {
    match v {
        Value::Array(kv) => kv
            .chunks_exact(2)
            .filter_map(|c| Some((text(&c[0])?, c[1].clone())))
            .collect(),
        Value::Map(kv) => kv
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.clone())))
            .collect(),
        _ => Default::default(),
    }
}
