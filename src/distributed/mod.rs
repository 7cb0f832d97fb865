//! Runs that share one Redis (`distributed.redis_url` or `--redis URL`): every process with the
//! same Redis, provider and API-key variable name shares one request budget
//! ([`limiter::GlobalLimiter`]) and one cache tier in front of the provider
//! ([`shared_cache::SharedCache`]). Redis is the only coordinator; its clock is the only clock.
//!
//! The password (from the variable `distributed.redis_password_env` names, else the URL, else
//! `REDIS_PASSWORD`) is never
//! logged or printed: messages show the URL with `***` in its place.

pub(crate) mod inspect;
pub mod limiter;
pub mod shared_cache;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};

use crate::config::DistributedSettings;
use crate::embed::Space;
use crate::limit::LimitSettings;

pub use inspect::Unreadable;
pub use limiter::GlobalLimiter;
pub use shared_cache::SharedCache;

/// Longest a process waits for Redis to answer at start before giving up (exit 2).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The variable the Redis password is read from when `distributed.redis_password_env` names
/// none and the URL carries none, for every command alike (as redis-cli users expect).
pub const DEFAULT_PASSWORD_ENV: &str = "REDIS_PASSWORD";

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error(
        "distributed.redis_password_env names {0}, which is not set: set it to the Redis \
         password or remove the key"
    )]
    PasswordUnset(String),
    #[error("Redis URL {url}: {message}")]
    BadUrl { url: String, message: String },
    #[error("no Redis named: give --redis URL or set distributed.redis_url")]
    NoUrl,
    #[error("cannot use Redis at {url}: {message}")]
    Connect { url: String, message: String },
}

/// A connection to Redis that reconnects by itself (cheap to clone).
#[derive(Clone)]
pub struct Redis {
    pub(crate) conn: ConnectionManager,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({})", self.shown)
    }
}

impl Redis {
    /// The URL, password replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Connects (password from the variable the settings name, else from the URL, else from
    /// [`DEFAULT_PASSWORD_ENV`] if set) and checks that Redis answers PING, within [`CONNECT_TIMEOUT`]. `None` when no URL is configured.
    pub async fn connect(s: &DistributedSettings) -> Result<Option<Redis>, DistributedError> {
        let Some(url) = &s.redis_url else {
            return Ok(None);
        };
        let shown = url.shown();
        let password = match &s.redis_password_env {
            None => std::env::var(DEFAULT_PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty()),
            Some(var) => match std::env::var(var) {
                Ok(p) if !p.is_empty() => Some(p),
                _ => return Err(DistributedError::PasswordUnset(var.clone())),
            },
        };
        let bad_url = |message: String| DistributedError::BadUrl {
            url: shown.clone(),
            message,
        };
        // rediss://: TLS with rustls, trusting the system's certificates (or the PEM file
        // SSL_CERT_FILE names).
        crate::embed::use_ring_for_tls();
        let mut info = url.expose().into_connection_info().map_err(|e| {
            bad_url(format!(
                "{} (expected redis://[user:password@]host:port[/db], or rediss:// for TLS)",
                e.category()
            ))
        })?;
        let url_has_password = info.redis_settings().password().is_some();
        let password = password.filter(|_| s.redis_password_env.is_some() || !url_has_password);
        if let Some(p) = password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|e| bad_url(e.category().to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(DistributedError::Connect {
                    url: shown,
                    message: describe(&e),
                });
            }
            Err(_) => {
                return Err(DistributedError::Connect {
                    url: shown,
                    message: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                });
            }
        };
        Ok(Some(Redis { conn, shown }))
    }
}

/// A Redis error in one line, without anything the connection was given.
pub(crate) fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("").trim();
    if line.to_ascii_lowercase().contains("wrongpass")
        || line.to_ascii_lowercase().contains("auth")
        || line.to_ascii_lowercase().contains("password")
    {
        format!("authentication failed (wrong user or password?): {line}")
    } else if line.to_ascii_lowercase().contains("certificate") {
        format!(
            "{line} (TLS: the server's certificate must be trusted by the system, or by the \
             PEM file SSL_CERT_FILE names)"
        )
    } else if line.is_empty() {
        e.category().to_owned()
    } else {
        line.to_owned()
    }
}

/// What names a global limiter: every run with the same Redis and these shares it.
#[derive(Debug, Clone)]
pub struct LimiterName {
    pub provider: String,
    /// The name of the environment variable holding the API key (never the key).
    pub key_variable: String,
    pub model: String,
}

/// What a service needs to share through Redis, before it knows its batch size.
#[derive(Debug, Clone)]
pub struct SharedSetup {
    pub redis: Redis,
    /// `None` for providers without a rate limit (the local model): only the cache is shared.
    pub limiter: Option<LimiterName>,
    /// How long a concurrency lease outlives a holder that stopped renewing it (died).
    pub lease_ttl: Duration,
}

/// What a run shares through Redis: the global limiter (remote providers only) and the cache
/// tier.
pub struct Shared {
    pub limiter: Option<Arc<GlobalLimiter>>,
    pub cache: SharedCache,
}

impl SharedSetup {
    /// The limiter for `limits` (requests of up to `max_batch` texts) and the cache tier of
    /// `space`.
    pub fn build(self, limits: &LimitSettings, max_batch: usize, space: &Space) -> Shared {
        let limiter = self.limiter.map(|n| {
            Arc::new(GlobalLimiter::new(
                self.redis.clone(),
                &n.provider,
                &n.key_variable,
                &n.model,
                limits,
                max_batch,
                self.lease_ttl,
            ))
        });
        Shared {
            limiter,
            cache: SharedCache::new(self.redis, space),
        }
    }
}
