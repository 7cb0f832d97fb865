//! What the HTTP providers share: the client, the API key type, and status classification.

use std::time::Duration;

use super::EmbedError;

/// An API key read from the environment. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Reads the key from the environment variable `var` (named by the config key `key`).
    pub fn from_env(var: &str, key: &str) -> Result<ApiKey, EmbedError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(ApiKey(v.trim().to_owned())),
            _ => Err(EmbedError::Setup(format!(
                "{key}: the environment variable {var} is not set (it must hold the API key)"
            ))),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` (belt and braces for error messages).
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// An HTTP client with a per-request timeout. Uses rustls with the ring provider.
pub fn client(timeout: Duration) -> Result<reqwest::Client, EmbedError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("puzzlegen/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EmbedError::Setup(format!("cannot create the HTTP client: {e}")))
}

/// A transport failure (timeout, connection refused, reset) as a retryable error.
pub fn transport_error(e: &reqwest::Error, key: Option<&ApiKey>) -> EmbedError {
    let kind = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // The URL never holds the key, but redact anyway.
    let mut text = format!("{kind}: {e}");
    if let Some(k) = key {
        text = k.redact(&text);
    }
    EmbedError::Transient(text)
}

/// Classifies a non-success status that is not a 429.
pub fn status_error(status: u16, message: String) -> EmbedError {
    match status {
        400 | 401 | 403 | 404 | 405 | 422 => EmbedError::Rejected { status, message },
        _ => EmbedError::Transient(format!("HTTP {status}: {message}")),
    }
}

/// Parses a duration such as Google's `"15.97s"` or a `Retry-After` number of seconds.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().trim_end_matches('s').parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_shows_in_debug() {
        let k = ApiKey("sekrit-123".into());
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
    }

    #[test]
    fn auth_errors_are_fatal_5xx_are_not() {
        assert!(status_error(403, "no".into()).is_fatal());
        assert!(!status_error(503, "busy".into()).is_fatal());
    }
}
