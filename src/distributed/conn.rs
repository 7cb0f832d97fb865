//! One connection type for a single Redis and for a Redis Cluster ([`Conn`]): every command of
//! the crate goes through it, so the limiter, the cache tier, the work queue and `status` work
//! on both without knowing which they talk to.
//!
//! On a cluster the client crate routes each command to the master of its key's slot and
//! follows redirections (MOVED, ASK) and failovers. A pipeline whose commands live in
//! different slots (the queue's run list beside a run's own keys, the cache tier's 64 buckets)
//! cannot go to one node: it is sent command by command, all at once, and its answers put back
//! in order. Such a pipeline is not atomic on a cluster (`status` reads are a snapshot per key).

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
    Cluster(ClusterConnection),
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
        matches!(self, Conn::Cluster(_))
    }

    /// The servers that hold keys: the one server (`None`), or each master of the cluster.
    pub async fn holders(&mut self) -> RedisResult<Vec<Holder>> {
        match self {
            Conn::Single(_) => Ok(vec![None]),
            Conn::Cluster(c) => Ok(masters(c).await?.into_iter().map(Some).collect()),
        }
    }

    /// Sends `cmd` to `holder` (for commands about the server itself: SCAN, INFO).
    pub async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        holder: &Holder,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        let answer = match (self, holder) {
            (Conn::Cluster(c), Some(node)) => {
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
            if text("role") == "master" && text("health") == "online" && port > 0 {
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
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
            Conn::Cluster(c) => async move {
                match c.req_packed_commands(pipeline, offset, count).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) => {
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
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
