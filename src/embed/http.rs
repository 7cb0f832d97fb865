//! What the HTTP providers share: the client, the API key type, and status classification.

use std::time::Duration;

use super::EmbedError;

/// An API key read from the environment. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub(super) struct ApiKey {
    value: String,
    /// The environment variable it came from (named in hints, never the value).
    var: String,
}

impl ApiKey {
    /// Reads the key from the environment variable `var` (named by the config key `key`).
    /// Refuses, before any request, a variable that is unset, empty, not UTF-8 or holds
    /// characters an HTTP header cannot carry (a line break, a control character, non-ASCII),
    /// naming the variable and never showing its value.
    pub(super) fn from_env(var: &str, key: &str) -> Result<ApiKey, EmbedError> {
        let refuse = |why: &str| {
            EmbedError::Setup(format!(
                "{key}: the environment variable {var} {why} (it must hold the API key: one \
                 line of printable ASCII, as the provider issued it)"
            ))
        };
        let value = match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => return Err(refuse("is not set")),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(refuse("is not valid UTF-8"));
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(refuse("is empty"));
        }
        if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
            let what = match c {
                '\r' | '\n' => "a line break".to_owned(),
                c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
                c => format!("a non-ASCII character (U+{:04X})", c as u32),
            };
            return Err(refuse(&format!(
                "holds {what}, which an HTTP header cannot carry"
            )));
        }
        Ok(ApiKey {
            value: value.to_owned(),
            var: var.to_owned(),
        })
    }

    pub(super) fn expose(&self) -> &str {
        &self.value
    }

    /// The environment variable the key came from.
    pub(super) fn var(&self) -> &str {
        &self.var
    }

    /// Replaces every occurrence of the key in `text`.
    pub(super) fn redact(&self, text: &str) -> String {
        text.replace(&self.value, "[redacted]")
    }

    /// `error` with the key redacted from every text it holds: a provider's errors pass
    /// through this on their way out, whatever part of an answer they quote.
    pub(super) fn scrub(&self, error: EmbedError) -> EmbedError {
        error.map_text(|t| self.redact(&t))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Makes ring the process's TLS crypto provider (the one rustls provider built in), for HTTPS
/// and for `rediss://`. Idempotent.
pub(crate) fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client with a per-request timeout. Uses rustls with the ring provider.
pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, EmbedError> {
    use_ring_for_tls();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("puzzlegen/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EmbedError::Setup(format!("cannot create the HTTP client: {e}")))
}

/// Checks an endpoint URL before any request: an `http` or `https` URL with a host.
pub(super) fn check_url(url: &str, key: &str) -> Result<reqwest::Url, EmbedError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) | Err(_) => Err(EmbedError::Setup(format!(
            "{key}: {url:?} is not an http:// or https:// URL (expected e.g. \
             https://generativelanguage.googleapis.com)"
        ))),
    }
}

/// A failure of `send()` as an [`EmbedError`]: a request that could not be built is a setup
/// error (fatal, never sent); a connection that could not be made was never sent either
/// ([`EmbedError::Unreachable`], retried); a timeout or a reset is [`EmbedError::Transient`].
pub(super) fn transport_error(e: &reqwest::Error, key: Option<&ApiKey>) -> EmbedError {
    // The URL never holds the key, but redact anyway.
    let text = |kind: &str| {
        let mut text = format!("{kind}: {}", one_line(&e.to_string(), 300));
        if let Some(k) = key {
            text = k.redact(&text);
        }
        text
    };
    if e.is_builder() {
        EmbedError::Setup(text("the request could not be built"))
    } else if e.is_connect() {
        EmbedError::Unreachable(text("cannot connect"))
    } else if e.is_timeout() {
        EmbedError::Transient(text("request timed out"))
    } else {
        EmbedError::Transient(text("transport error"))
    }
}

/// Classifies a non-success status that is not a 429: every 4xx but 408 (a timeout) is the
/// server refusing the request itself, which no retry can change.
pub(super) fn status_error(status: u16, message: String) -> EmbedError {
    match status {
        408 => EmbedError::Transient(format!("HTTP {status}: {message}")),
        400..=499 => EmbedError::Rejected { status, message },
        _ => EmbedError::Transient(format!("HTTP {status}: {message}")),
    }
}

/// The message of an error body in one line of at most `max` characters: the JSON error's
/// `message` when there is one; for HTML, its `<title>` or else its text without tags.
pub(super) fn error_message(body: &str, max: usize) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(m) = v["error"]["message"].as_str().or(v["message"].as_str()) {
        return one_line(m, max);
    }
    let lower = body.to_ascii_lowercase();
    if let (Some(a), Some(b)) = (lower.find("<title>"), lower.find("</title>"))
        && a + 7 <= b
    {
        let title = one_line(&body[a + 7..b], max);
        if !title.is_empty() {
            return title;
        }
    }
    let mut text = String::with_capacity(body.len().min(4096));
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
        if text.len() > max * 8 {
            break;
        }
    }
    let text = one_line(&text, max);
    if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

/// `text` with every run of whitespace (line breaks included) as one space, cut to `max`
/// characters (an ellipsis marks the cut).
pub(super) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        joined
    } else {
        let mut cut: String = joined.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// A 200 answer that is not the expected JSON. serde's message quotes the values it met (a
/// server may put anything there), so only its kind of error and position are kept.
pub(super) fn bad_json(e: &serde_json::Error) -> EmbedError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "is not JSON",
        serde_json::error::Category::Data => "is JSON of another shape than embeddings",
        serde_json::error::Category::Eof => "is cut short",
    };
    EmbedError::BadAnswer(format!(
        "the response {what} (line {}, column {})",
        e.line(),
        e.column()
    ))
}

/// Parses a duration such as Google's `"15.97s"` or a `Retry-After` number of seconds.
pub(super) fn parse_seconds(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().trim_end_matches('s').parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs).min(super::MAX_SERVER_DELAY))
}

/// Sends `req` (its key already on it) and returns the response of a 200. Any other status
/// is read and turned into an error (a 429 with its `Retry-After`; a 401 or 403 with a hint
/// naming the key's variable), the key redacted from whatever the answer quotes.
pub(super) async fn send_ok(
    req: reqwest::RequestBuilder,
    key: Option<&ApiKey>,
) -> Result<reqwest::Response, EmbedError> {
    let response = req.send().await.map_err(|e| transport_error(&e, key))?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_seconds);
    // The key is taken out of the answer before anything reads it, so no message cut from it
    // can hold part of the key.
    let body = read_text(response, key).await?;
    if status == 429 {
        return Err(EmbedError::RateLimited { retry_after });
    }
    let message = error_message(&body, 200);
    Err(match status_error(status, message) {
        EmbedError::Rejected { status, message } => EmbedError::Rejected {
            status,
            message: format!(
                "{message}{}",
                key.map_or(String::new(), |k| super::gemini::hint(status, k))
            ),
        },
        other => other,
    })
}

/// [`send_ok`], then the answer's headers and its body as text (the key redacted).
pub(super) async fn send_checked(
    req: reqwest::RequestBuilder,
    key: Option<&ApiKey>,
) -> Result<(reqwest::header::HeaderMap, String), EmbedError> {
    let response = send_ok(req, key).await?;
    let headers = response.headers().clone();
    Ok((headers, read_text(response, key).await?))
}

async fn read_text(
    response: reqwest::Response,
    key: Option<&ApiKey>,
) -> Result<String, EmbedError> {
    response
        .text()
        .await
        .map(|b| match key {
            Some(k) => k.redact(&b),
            None => b,
        })
        .map_err(|e| transport_error(&e, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_shows_in_debug() {
        let k = ApiKey {
            value: "sekrit-123".into(),
            var: "V".into(),
        };
        assert_eq!(format!("{k:?}"), "ApiKey([redacted])");
        assert_eq!(k.redact("x sekrit-123 y"), "x [redacted] y");
    }

    #[test]
    fn parses_google_and_retry_after_delays() {
        assert_eq!(
            parse_seconds("15.97s"),
            Some(Duration::from_secs_f64(15.97))
        );
        assert_eq!(parse_seconds("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_seconds("soon"), None);
        assert_eq!(parse_seconds("86400"), Some(crate::embed::MAX_SERVER_DELAY));
    }

    #[test]
    fn auth_errors_are_fatal_5xx_are_not() {
        assert!(status_error(403, "no".into()).is_fatal());
        assert!(!status_error(503, "busy".into()).is_fatal());
        assert!(status_error(431, "too large".into()).is_fatal());
        assert!(status_error(413, "too large".into()).is_fatal());
        assert!(!status_error(408, "slow".into()).is_fatal());
    }

    #[test]
    fn html_bodies_become_one_short_line() {
        let page = format!(
            "<!DOCTYPE html>\n<html><head>\n<title>431 Request Header\n Fields Too Large</title></head>\n<body>{}</body></html>",
            "<p>x</p>\n".repeat(500)
        );
        assert_eq!(
            error_message(&page, 200),
            "431 Request Header Fields Too Large"
        );
        let bare = format!(
            "<html><body><h1>Bad\ngateway</h1>{}</body></html>",
            "y ".repeat(900)
        );
        let m = error_message(&bare, 200);
        assert!(m.starts_with("Bad gateway y y") && !m.contains('\n'), "{m}");
        assert_eq!(m.chars().count(), 201, "{m}");
        assert_eq!(
            error_message(r#"{"error":{"message":"line one\n* line two"}}"#, 200),
            "line one * line two"
        );
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(check_url("not a url", "gemini.base_url").is_err());
        assert!(check_url("ftp://x", "k").is_err());
        assert!(check_url("http://127.0.0.1:9/v1", "k").is_ok());
    }
}
