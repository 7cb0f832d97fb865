//! `distributed`: the Redis a run shares its limits, vectors and work with
//! ([`DistributedSettings`]), and its URL, whose password no message shows ([`RedisUrl`]).

use super::validate::Validator;
use super::{ConfigError, Overrides, raw};

/// `distributed.redis_url`, `redis_nodes` and `redis_password_env` (see `crate::distributed`).
#[derive(Debug, Clone, Default)]
pub struct DistributedSettings {
    pub redis_url: Option<RedisUrl>,
    /// More seed nodes of the same Redis Cluster (`distributed.redis_nodes`), tried with
    /// `redis_url` when connecting; empty for a single server.
    pub redis_nodes: Vec<RedisUrl>,
    /// The environment variable holding the Redis password (overrides one in the URL).
    pub redis_password_env: Option<String>,
    /// Where `run` and `worker` serve `/metrics` for Prometheus (`distributed.metrics_addr`,
    /// `--metrics-addr`), `HOST:PORT`; `None`: not served.
    pub metrics_addr: Option<String>,
}

/// A Redis URL, which may hold a password: `Debug` and [`RedisUrl::shown`] never show it.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    /// The URL of a setting or flag, surrounding blanks dropped; `None` when it is blank (no
    /// Redis).
    pub fn parse(url: &str) -> Option<RedisUrl> {
        let url = url.trim();
        (!url.is_empty()).then(|| RedisUrl::new(url))
    }

    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for messages, whatever the URL's shape:
    /// the user information ends at the *last* `@` (a password may hold `/`, `?`, `#`, `@`
    /// or `:`), and everything after the first `:` before it is hidden. A string that is not
    /// a URL but holds an `@` shows nothing before it.
    pub fn shown(&self) -> String {
        let url = &self.0;
        let Some(at) = url.rfind('@') else {
            return url.clone();
        };
        let Some(scheme_end) = url.find("://").map(|i| i + 3).filter(|&i| i <= at) else {
            return format!("***{}", &url[at..]);
        };
        let user = &url[scheme_end..at];
        let user = match user.find(':') {
            Some(colon) => format!("{}:***", &user[..colon]),
            None => user.to_owned(),
        };
        format!("{}{user}{}", &url[..scheme_end], &url[at..])
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.shown())
    }
}

impl DistributedSettings {
    /// The settings of a command given no `params.yaml`: only what `o` says (`--redis`).
    pub fn from_overrides(o: &Overrides) -> DistributedSettings {
        DistributedSettings {
            redis_url: o.redis_url.as_deref().and_then(RedisUrl::parse),
            redis_nodes: Vec::new(),
            redis_password_env: None,
            metrics_addr: o.metrics_addr.clone(),
        }
    }

    /// Resolves `distributed` (`o.redis_url` wins over the file's); a key kept for old files
    /// only adds its notice to `deprecated`.
    pub(super) fn resolve(
        v: &Validator,
        d: &raw::Distributed,
        o: &Overrides,
        deprecated: &mut Vec<String>,
    ) -> Result<DistributedSettings, ConfigError> {
        if d.queue.is_some() {
            deprecated.push(
                "distributed.queue is deprecated and ignored: every run with a Redis URL now \
                 queues its themes for `puzzlegen worker` processes (remove the key)"
                    .to_owned(),
            );
        }
        let mut redis_nodes = Vec::new();
        for (i, node) in d.redis_nodes.iter().flatten().enumerate() {
            let key = format!("distributed.redis_nodes[{i}]");
            match RedisUrl::parse(node) {
                Some(url) => redis_nodes.push(url),
                None => {
                    return Err(v.invalid(
                        &key,
                        "a Redis URL (redis://host:port)",
                        "an empty value",
                    ));
                }
            }
        }
        // Seed nodes alone name the cluster: the first stands for `redis_url`.
        let redis_url = o
            .redis_url
            .as_deref()
            .or(d.redis_url.as_deref())
            .and_then(RedisUrl::parse)
            .or_else(|| (!redis_nodes.is_empty()).then(|| redis_nodes.remove(0)));
        let redis_password_env = match d.redis_password_env.as_deref() {
            None => None,
            Some(name) => Some(v.non_empty("distributed.redis_password_env", name)?),
        };
        let metrics_addr = match (&o.metrics_addr, d.metrics_addr.as_deref()) {
            (Some(flag), _) => Some(flag.clone()),
            (None, Some(addr)) => Some(v.non_empty("distributed.metrics_addr", addr)?),
            (None, None) => None,
        };
        Ok(DistributedSettings {
            redis_url,
            redis_nodes,
            redis_password_env,
            metrics_addr,
        })
    }
}
