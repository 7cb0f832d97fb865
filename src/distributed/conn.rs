//! One connection type for a single Redis and for a Redis Cluster ([`Conn`]): every command of
//! the crate goes through it, so the limiter, the cache tier, the work queue and `status` work
//! on both without knowing which they talk to.
//!
//! On a cluster the client crate routes each command to the master of its key's slot and
//! follows redirections (MOVED, ASK) and failovers. A pipeline whose commands live in
//! different slots (the queue's run list beside a run's own keys, the cache tier's 64 buckets)
//! cannot go to one node: it is sent command by command, all at once, and its answers put back
//! in order. Such a pipeline is not atomic on a cluster (`status` reads are a snapshot per key).
//!
//! A failover (a master dies, its replica takes over after the cluster's node timeout) shows
//! as refused connections, `CLUSTERDOWN`, `TRYAGAIN` and redirections to the old master for a
//! few seconds. A cluster connection waits these out itself ([`Patience`]), for up to its
//! patience (the run's stall timeout), with one log line per 5 s, so that nothing above it
//! (limiter, cache tier, queue, heartbeats) mistakes a failover for a lost Redis.
//!
//! The client crate refreshes its map of the cluster on redirections and refused connections,
//! not on timeouts: once, after a failover, one process's connection timed out on every
//! command for a whole stall timeout while another process on the same cluster was served; a
//! master that hangs (no connection refused or closed) does the same to the commands of its
//! slots. So when commands have failed for [`RENEW_AFTER`], or timed out for that long (while
//! others succeed), a new connection is made from every node the cluster had at the start
//! ([`Renewal`]), and each clone takes it on its next command.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value};

/// A connection to a single Redis or to a cluster (cheap to clone; both reconnect by
/// themselves).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection, Patience),
}

/// How long a cluster connection waits out a failover before it gives its error to the
/// caller. Shared by its clones: once the cluster has failed every command for `limit`, each
/// command is tried once, until one succeeds (a run waits the stall timeout once, not once
/// per command).
pub struct Patience {
    limit: Duration,
    start: Instant,
    /// Milliseconds after `start` (plus one) since which commands fail; 0 while they succeed.
    failing_since: Arc<AtomicU64>,
    /// Milliseconds after `start` (plus one) when a wait was last logged; 0: never.
    logged: Arc<AtomicU64>,
    renewal: Option<Arc<Renewal>>,
    /// The generation of the connection this clone holds (see [`Renewal`]).
    seen: AtomicU64,
}

impl Clone for Patience {
    fn clone(&self) -> Patience {
        Patience {
            limit: self.limit,
            start: self.start,
            failing_since: Arc::clone(&self.failing_since),
            logged: Arc::clone(&self.logged),
            renewal: self.renewal.clone(),
            seen: AtomicU64::new(self.seen.load(Ordering::Relaxed)),
        }
    }
}

/// After how long of failing commands a cluster connection is made anew.
pub const RENEW_AFTER: Duration = Duration::from_secs(10);

/// A new cluster connection for the clones of one whose commands keep failing: a client that
/// knows every node the cluster had at the start (so the seed may be the node that died), and
/// the newest connection it made with its generation.
pub struct Renewal {
    client: redis::cluster::ClusterClient,
    newest: std::sync::Mutex<(u64, ClusterConnection)>,
    busy: std::sync::atomic::AtomicBool,
    made: Instant,
    /// Milliseconds after `made` (plus one) of the last try; 0: none.
    last: AtomicU64,
    /// Milliseconds after `made` (plus one) of the first and the last timeout of the current
    /// run of timeouts (one that has not gone [`RENEW_AFTER`] without a timeout); 0: none.
    first_timeout: AtomicU64,
    last_timeout: AtomicU64,
}

impl Renewal {
    /// Renewal of `conn` through `client` (built on every node of the cluster).
    pub fn new(client: redis::cluster::ClusterClient, conn: ClusterConnection) -> Renewal {
        Renewal {
            client,
            newest: std::sync::Mutex::new((0, conn)),
            busy: std::sync::atomic::AtomicBool::new(false),
            made: Instant::now(),
            last: AtomicU64::new(0),
            first_timeout: AtomicU64::new(0),
            last_timeout: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.made.elapsed().as_millis() as u64 + 1
    }

    /// Counts a timeout; whether timeouts have now gone on for [`RENEW_AFTER`] (commands to
    /// other masters may succeed meanwhile: a master that hangs times out only its own slots).
    fn timed_out(&self) -> bool {
        let now = self.now();
        let renew_after = RENEW_AFTER.as_millis() as u64;
        let last = self.last_timeout.swap(now, Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) > renew_after {
            self.first_timeout.store(now, Ordering::Relaxed);
        }
        now.saturating_sub(self.first_timeout.load(Ordering::Relaxed)) >= renew_after
    }
}

impl Patience {
    pub fn new(limit: Duration, renewal: Option<Arc<Renewal>>) -> Patience {
        Patience {
            limit,
            start: Instant::now(),
            failing_since: Arc::new(AtomicU64::new(0)),
            logged: Arc::new(AtomicU64::new(0)),
            renewal,
            seen: AtomicU64::new(0),
        }
    }

    /// The same, waiting up to `limit` (and counting from now).
    pub fn with_limit(&self, limit: Duration) -> Patience {
        let mut p = Patience::new(limit, self.renewal.clone());
        p.seen = AtomicU64::new(self.seen.load(Ordering::Relaxed));
        p
    }

    /// Takes the newest connection into `c` if one was made since this clone's.
    fn catch_up(&self, c: &mut ClusterConnection) {
        let Some(r) = &self.renewal else { return };
        let newest = r.newest.lock().unwrap_or_else(|e| e.into_inner());
        if newest.0 > self.seen.load(Ordering::Relaxed) {
            *c = newest.1.clone();
            self.seen.store(newest.0, Ordering::Relaxed);
        }
    }

    /// Starts making a new connection from every node the cluster had, in the background (one
    /// at a time, at most one try per [`RENEW_AFTER`]); the clones take it on their next
    /// command once it is made. The command that asked goes on waiting as before.
    fn renew(&self) {
        let Some(r) = &self.renewal else { return };
        let now = r.now();
        let last = r.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < RENEW_AFTER.as_millis() as u64 {
            return;
        }
        if r.busy
            .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        r.last.store(now, Ordering::Relaxed);
        let r = Arc::clone(r);
        tokio::spawn(async move {
            match tokio::time::timeout(RENEW_AFTER, r.client.get_async_connection()).await {
                Ok(Ok(conn)) => {
                    let mut newest = r.newest.lock().unwrap_or_else(|e| e.into_inner());
                    *newest = (newest.0 + 1, conn);
                    tracing::info!("Redis Cluster: connected anew from its nodes");
                }
                Ok(Err(e)) => tracing::warn!(
                    "Redis Cluster: cannot connect anew yet: {}",
                    crate::distributed::describe(&e)
                ),
                Err(_) => tracing::warn!("Redis Cluster: cannot connect anew yet: timed out"),
            }
            r.busy.store(false, Ordering::Relaxed);
        });
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// A command succeeded (or failed in a way no wait mends): the cluster serves again.
    fn served(&self) {
        if self.failing_since.load(Ordering::Relaxed) != 0 {
            self.failing_since.store(0, Ordering::Relaxed);
            tracing::info!("Redis Cluster answers again");
        }
    }

    /// How long commands have been failing, this one's error counted.
    fn failing_for(&self) -> Duration {
        let now = self.now();
        let since =
            match self
                .failing_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        Duration::from_millis(now.saturating_sub(since))
    }

    /// Logs `e` and the wait ahead, unless a wait was logged in the last 5 s.
    fn say_waiting(&self, e: &redis::RedisError) {
        let now = self.now();
        let last = self.logged.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 5_000)
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "Redis Cluster: {}; waiting for it (a failover?) for up to {} s",
                crate::distributed::describe(e),
                self.limit.as_secs()
            );
        }
    }
}

/// Whether `e` is what a cluster says while a slot has no master or moves: worth waiting for.
fn passing(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::MasterDown
            ) | ErrorKind::ClusterConnectionNotFound
        )
}

/// The waits of one command through a failover: [`Waits::again`] after each error,
/// [`Waits::done`] with its answer.
struct Waits<'a> {
    patience: &'a Patience,
    pause: Duration,
}

impl Waits<'_> {
    fn of(patience: &Patience) -> Waits<'_> {
        Waits {
            patience,
            pause: Duration::from_millis(100),
        }
    }

    /// After error `e`: whether to try again (after waiting 100 ms, then up to 1 s), which is
    /// when `e` is [`passing`] and the cluster has not been failing for the whole patience.
    async fn again(&mut self, e: &redis::RedisError) -> bool {
        if !passing(e) {
            return false;
        }
        let failing = self.patience.failing_for();
        if failing + self.pause >= self.patience.limit {
            return false;
        }
        self.patience.say_waiting(e);
        let timeouts_go_on = e.is_timeout()
            && self
                .patience
                .renewal
                .as_ref()
                .is_some_and(|r| r.timed_out());
        if failing >= RENEW_AFTER || timeouts_go_on {
            self.patience.renew();
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(1));
        true
    }

    /// The command's final answer: an error other than [`passing`] ones came from a serving
    /// cluster.
    fn done<T>(&self, answer: RedisResult<T>) -> RedisResult<T> {
        match &answer {
            Err(e) if passing(e) => {}
            _ => self.patience.served(),
        }
        answer
    }
}

/// A master of a cluster, as `CLUSTER SHARDS` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

/// A server that holds keys: the one server, or one master of a cluster.
pub type Holder = Option<Node>;

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(..))
    }

    /// The servers that hold keys: the one server (`None`), or each master of the cluster.
    pub async fn holders(&mut self) -> RedisResult<Vec<Holder>> {
        match self {
            Conn::Single(_) => Ok(vec![None]),
            Conn::Cluster(c, patience) => {
                let mut waits = Waits::of(patience);
                loop {
                    patience.catch_up(c);
                    match masters(c).await {
                        Err(e) if waits.again(&e).await => {}
                        other => return Ok(waits.done(other)?.into_iter().map(Some).collect()),
                    }
                }
            }
        }
    }

    /// Sends `cmd` to `holder` (for commands about the server itself: SCAN, INFO).
    pub async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        holder: &Holder,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let answer = match (self, holder) {
            (Conn::Cluster(c, patience), Some(node)) => {
                patience.catch_up(c);
                // A master that went away is not waited for: the caller asks the new ones.
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                c.route_command(cmd.clone(), route).await?
            }
            (conn, _) => conn.req_packed_command(cmd).await?,
        };
        Ok(redis::from_redis_value(answer)?)
    }
}

/// The masters of the cluster, from `CLUSTER SHARDS` (Redis 7): each shard's node whose role
/// is master and whose health is online.
async fn masters(c: &mut ClusterConnection) -> RedisResult<Vec<Node>> {
    nodes(c, true).await
}

/// Every node of the cluster that is online (masters and replicas), from `CLUSTER SHARDS`.
pub async fn all_nodes(c: &mut ClusterConnection) -> RedisResult<Vec<Node>> {
    nodes(c, false).await
}

async fn nodes(c: &mut ClusterConnection, masters_only: bool) -> RedisResult<Vec<Node>> {
    let shards: Value = c
        .route_command(
            redis::cmd("CLUSTER").arg("SHARDS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let mut found = Vec::new();
    for shard in items(&shards) {
        for node in items(&field(shard, "nodes")) {
            let text = |k: &str| match field(node, k) {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::SimpleString(s) => s,
                _ => String::new(),
            };
            let port = match field(node, "port") {
                Value::Int(p) => p,
                _ => match field(node, "tls-port") {
                    Value::Int(p) => p,
                    _ => 0,
                },
            };
            let host = match text("ip") {
                ip if !ip.is_empty() => ip,
                _ => text("endpoint"),
            };
            if (!masters_only || text("role") == "master") && text("health") == "online" && port > 0
            {
                found.push(Node {
                    host,
                    port: port as u16,
                });
            }
        }
    }
    if found.is_empty() {
        return Err((
            ErrorKind::Server(ServerErrorKind::ClusterDown),
            "CLUSTER SHARDS names no master that is online",
        )
            .into());
    }
    Ok(found)
}

/// The elements of an array (or the pairs of a map, flattened), nothing for anything else.
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// The value under `name` in a RESP2 flat list of name, value pairs (or a RESP3 map).
fn field(v: &Value, name: &str) -> Value {
    let all = items(v);
    all.chunks(2)
        .find(|pair| match pair[0] {
            Value::BulkString(b) => b == name.as_bytes(),
            Value::SimpleString(s) => s == name,
            _ => false,
        })
        .and_then(|pair| pair.get(1).map(|v| (*v).clone()))
        .unwrap_or(Value::Nil)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, patience) => async move {
                let mut waits = Waits::of(patience);
                loop {
                    patience.catch_up(c);
                    match c.req_packed_command(cmd).await {
                        Err(e) if waits.again(&e).await => {}
                        other => return waits.done(other),
                    }
                }
            }
            .boxed(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, patience) => async move {
                let mut waits = Waits::of(patience);
                loop {
                    patience.catch_up(c);
                    match cluster_pipeline(c, pipeline, offset, count).await {
                        Err(e) if waits.again(&e).await => {}
                        other => return waits.done(other),
                    }
                }
            }
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
    }
}

/// Sends `pipeline` to the cluster: in one piece when its keys share a slot and that slot's
/// master is where the client thinks; else command by command, each routed and redirected by
/// the client on its own, all at once, the answers in order.
async fn cluster_pipeline(
    c: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    match c.req_packed_commands(pipeline, offset, count).await {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Server(
                    ServerErrorKind::CrossSlot | ServerErrorKind::Moved | ServerErrorKind::Ask
                )
            ) =>
        {
            let answers = try_join_all(pipeline.cmd_iter().map(|cmd| {
                let mut c = c.clone();
                async move { c.req_packed_command(cmd).await }
            }))
            .await?;
            // A transaction's answer is the one reply of its EXEC.
            Ok(if pipeline.is_transaction() {
                vec![Value::Array(answers)]
            } else {
                answers
            })
        }
        other => other,
    }
}
