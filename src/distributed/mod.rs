//! Runs that share one Redis (`distributed.redis_url` or `--redis URL`): every process with the
//! same Redis, provider and API-key variable name shares one request budget
//! ([`limiter::GlobalLimiter`]) and one cache tier in front of the provider
//! ([`shared_cache::SharedCache`]). Redis is the only coordinator; its clock is the only clock.
//!
//! The password (from the variable `distributed.redis_password_env` names, else the URL, else
//! `REDIS_PASSWORD`) is never
//! logged or printed: messages show the URL with `***` in its place.

pub mod conn;
pub(crate) mod inspect;
pub mod limiter;
pub mod shared_cache;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ConnectionInfo, IntoConnectionInfo};

use crate::config::{DistributedSettings, RedisUrl};
use crate::embed::Space;
use crate::limit::LimitSettings;

pub use conn::Conn;
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
    #[error(
        "distributed.redis_nodes: {single} is a single Redis server but {cluster} is a node of \
         a Redis Cluster: give the nodes of one cluster, or one server alone"
    )]
    Mixed { single: String, cluster: String },
    #[error(
        "distributed.redis_nodes: {0} is a second server, but the first is not in cluster mode: \
         more nodes are for a Redis Cluster (remove redis_nodes for a single server)"
    )]
    NotACluster(String),
    #[error(
        "distributed.redis_nodes: {0} and {1} belong to two different Redis Clusters: give the \
         nodes of one cluster"
    )]
    TwoClusters(String, String),
}

/// A connection to Redis, a single server or a cluster, that reconnects by itself (cheap to
/// clone).
/// How long a cluster connection waits out a failover when nobody said
/// ([`Redis::wait_out_failovers_for`]): `puzzlegen status`.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Redis {
    pub(crate) conn: Conn,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({})", self.shown)
    }
}

/// What one seed node says about itself.
struct Seed {
    info: ConnectionInfo,
    shown: String,
    /// `Some(ids)` on a cluster node: the ids of the nodes it knows (itself first).
    cluster: Option<Vec<String>>,
}

impl Redis {
    /// The URL, password replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Makes a cluster connection wait out a failover for up to `limit` (the run's stall
    /// timeout) before it gives up; [`DEFAULT_PATIENCE`] until then. Call it before cloning.
    pub fn wait_out_failovers_for(&mut self, limit: Duration) {
        if let Conn::Cluster(_, patience) = &mut self.conn {
            *patience = patience.with_limit(limit);
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// Connects (password from the variable the settings name, else from the URL, else from
    /// [`DEFAULT_PASSWORD_ENV`] if set) and checks that Redis answers PING, within
    /// [`CONNECT_TIMEOUT`]. A server in cluster mode is used as a cluster, with the other seed
    /// nodes of `distributed.redis_nodes`: every seed must belong to the same cluster. `None`
    /// when no URL is configured.
    pub async fn connect(s: &DistributedSettings) -> Result<Option<Redis>, DistributedError> {
        let Some(url) = &s.redis_url else {
            return Ok(None);
        };
        let password = match &s.redis_password_env {
            None => std::env::var(DEFAULT_PASSWORD_ENV)
                .ok()
                .filter(|p| !p.is_empty()),
            Some(var) => match std::env::var(var) {
                Ok(p) if !p.is_empty() => Some(p),
                _ => return Err(DistributedError::PasswordUnset(var.clone())),
            },
        };
        // rediss://: TLS with rustls, trusting the system's certificates (or the PEM file
        // SSL_CERT_FILE names).
        crate::embed::use_ring_for_tls();
        let mut seeds = Vec::new();
        for url in std::iter::once(url).chain(&s.redis_nodes) {
            let info = connection_info(url, password.as_deref(), s.redis_password_env.is_some())?;
            seeds.push(within_timeout(&url.shown(), probe(info, url.shown())).await?);
        }
        let first = &seeds[0];
        let Some(known) = &first.cluster else {
            if let Some(other) = seeds.iter().find(|s| s.cluster.is_some()) {
                return Err(DistributedError::Mixed {
                    single: first.shown.clone(),
                    cluster: other.shown.clone(),
                });
            }
            if let Some(other) = seeds.get(1) {
                return Err(DistributedError::NotACluster(other.shown.clone()));
            }
            let conn = within_timeout(&first.shown, single(first.info.clone())).await?;
            return Ok(Some(Redis {
                conn,
                shown: first.shown.clone(),
            }));
        };
        for seed in &seeds[1..] {
            match &seed.cluster {
                None => {
                    return Err(DistributedError::Mixed {
                        single: seed.shown.clone(),
                        cluster: first.shown.clone(),
                    });
                }
                Some(ids) if !known.contains(&ids[0]) => {
                    return Err(DistributedError::TwoClusters(
                        first.shown.clone(),
                        seed.shown.clone(),
                    ));
                }
                Some(_) => {}
            }
        }
        let infos: Vec<ConnectionInfo> = seeds.iter().map(|s| s.info.clone()).collect();
        let conn = within_timeout(&first.shown, cluster(infos)).await?;
        Ok(Some(Redis {
            conn,
            shown: first.shown.clone(),
        }))
    }
}

/// The connection details of `url`, with `password` (from a variable) in place of the URL's
/// own when `explicit` (a variable the config names) or when the URL has none.
fn connection_info(
    url: &RedisUrl,
    password: Option<&str>,
    explicit: bool,
) -> Result<ConnectionInfo, DistributedError> {
    let bad_url = |message: String| DistributedError::BadUrl {
        url: url.shown(),
        message,
    };
    let mut info = url.expose().into_connection_info().map_err(|e| {
        bad_url(format!(
            "{} (expected redis://[user:password@]host:port[/db], or rediss:// for TLS)",
            e.category()
        ))
    })?;
    let url_has_password = info.redis_settings().password().is_some();
    if let Some(p) = password.filter(|_| explicit || !url_has_password) {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    Client::open(info.clone()).map_err(|e| bad_url(e.category().to_owned()))?;
    Ok(info)
}

/// Runs `connect` within [`CONNECT_TIMEOUT`], its error in one line naming `shown`.
async fn within_timeout<T>(
    shown: &str,
    connect: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, DistributedError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(DistributedError::Connect {
            url: shown.to_owned(),
            message: describe(&e),
        }),
        Err(_) => Err(DistributedError::Connect {
            url: shown.to_owned(),
            message: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// Connects to one node once and asks whether it is in cluster mode (`INFO cluster`) and, if
/// so, its id and the ids of the nodes it knows (`CLUSTER MYID`, `CLUSTER NODES`).
async fn probe(info: ConnectionInfo, shown: String) -> Result<Seed, redis::RedisError> {
    let client = Client::open(info.clone())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    let about: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    let cluster = if about.lines().any(|l| l.trim() == "cluster_enabled:1") {
        let me: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut conn)
            .await?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await?;
        let mut ids = vec![me];
        ids.extend(
            nodes
                .lines()
                .filter_map(|l| l.split(' ').next().map(str::to_owned)),
        );
        Some(ids)
    } else {
        None
    };
    Ok(Seed {
        info,
        shown,
        cluster,
    })
}

/// A single server's connection, checked with PING.
async fn single(info: ConnectionInfo) -> Result<Conn, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(1));
    let mut conn = ConnectionManager::new_with_config(Client::open(info)?, config).await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(Conn::Single(conn))
}

/// A cluster's connection from its seed nodes (the client finds the rest and follows the
/// slots as they move), checked with PING.
async fn cluster(seeds: Vec<ConnectionInfo>) -> Result<Conn, redis::RedisError> {
    let client = cluster_client(seeds.clone())?;
    let mut conn = client.get_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    // Every node the cluster has now, to connect anew from if the connection stops
    // answering (the seed given may be the node that dies).
    let mut everyone = seeds.clone();
    for node in conn::all_nodes(&mut conn).await.unwrap_or_default() {
        let addr = match seeds[0].addr() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: node.host,
                port: node.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(node.host, node.port),
        };
        everyone.push(seeds[0].clone().set_addr(addr));
    }
    let renewal = conn::Renewal::new(cluster_client(everyone)?, conn.clone());
    Ok(Conn::Cluster(
        conn,
        conn::Patience::new(DEFAULT_PATIENCE, Some(Arc::new(renewal))),
    ))
}

fn cluster_client(
    seeds: Vec<ConnectionInfo>,
) -> Result<redis::cluster::ClusterClient, redis::RedisError> {
    redis::cluster::ClusterClient::builder(seeds)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .retries(6)
        .min_retry_wait(100)
        .max_retry_wait(2000)
        .build()
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
