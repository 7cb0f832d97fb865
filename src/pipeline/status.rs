//! `puzzlegen status`: what a Redis shared by runs and workers says about them, read in one
//! go: the processes alive (their heartbeats, see [`super::health`]), each queue run of the
//! last day (backlog, in flight, done, dead letters) and each global limiter (the rate
//! achieved in the last minute against its limit, a 429 pause, the 429s seen).

use std::collections::HashMap;
use std::fmt;

use redis::Value;
use redis::aio::ConnectionManager;

use super::health::{BEAT_PREFIX, Beat};
use super::queue::{ALL_RUNS, RUNS, dead_key, meta_key, results_key, tasks_key, unix_now};
use crate::distributed::limiter::{LimiterStatus, scan, status_of_all};
use crate::distributed::{Redis, describe};

/// One queue run (a batch of a coordinator's themes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    pub run: String,
    /// `model:dimension:task type`.
    pub space: String,
    pub coordinator: String,
    /// `running` or `finished`.
    pub state: String,
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: Option<u64>,
    /// Tasks queued (one per theme).
    pub tasks: u64,
    /// Queued, not yet delivered to any worker.
    pub backlog: u64,
    /// Delivered, not yet acknowledged (pending entries).
    pub in_flight: u64,
    /// Tasks with a result (failed ones included).
    pub done: u64,
    /// Of `done`, results that are errors (dead letters included).
    pub failed: u64,
    pub dead_letters: u64,
}

/// Everything `puzzlegen status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The Redis URL, password hidden.
    pub redis: String,
    pub workers: Vec<Beat>,
    pub runs: Vec<RunStatus>,
    pub limiters: Vec<LimiterStatus>,
}

/// Reads the status of everything on `redis`; one line on a Redis error.
pub async fn read(redis: &Redis) -> Result<Status, String> {
    let mut conn = redis.conn.clone();
    let err = |e: redis::RedisError| describe(&e);
    Ok(Status {
        redis: redis.shown().to_owned(),
        workers: workers(&mut conn).await.map_err(err)?,
        runs: runs(&mut conn).await.map_err(err)?,
        limiters: status_of_all(redis).await.map_err(err)?,
    })
}

async fn workers(conn: &mut ConnectionManager) -> redis::RedisResult<Vec<Beat>> {
    let mut beats = Vec::new();
    for key in scan(conn, &format!("{BEAT_PREFIX}*")).await? {
        let json: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        if let Some(beat) = json.and_then(|j| serde_json::from_str::<Beat>(&j).ok()) {
            beats.push(beat);
        }
    }
    beats.sort_by(|a, b| (&a.role, &a.id).cmp(&(&b.role, &b.id)));
    Ok(beats)
}

async fn runs(conn: &mut ConnectionManager) -> redis::RedisResult<Vec<RunStatus>> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(ALL_RUNS)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    let running: HashMap<String, String> =
        redis::cmd("HGETALL").arg(RUNS).query_async(conn).await?;
    let mut all = Vec::new();
    for run in ids {
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(meta_key(&run))
            .query_async(conn)
            .await?;
        if meta.is_empty() {
            continue; // expired
        }
        all.push(run_status(conn, run, meta, &running).await?);
    }
    Ok(all)
}

async fn run_status(
    conn: &mut ConnectionManager,
    run: String,
    meta: HashMap<String, String>,
    running: &HashMap<String, String>,
) -> redis::RedisResult<RunStatus> {
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok());
    let tasks = tasks_key(&run);
    // One transaction: the figures are of one moment.
    let (length, groups, results, dead): (u64, Value, Vec<String>, u64) = redis::pipe()
        .atomic()
        .cmd("XLEN")
        .arg(&tasks)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(&tasks)
        .cmd("HVALS")
        .arg(results_key(&run))
        .cmd("XLEN")
        .arg(dead_key(&run))
        .query_async(conn)
        .await?;
    let group = first_group(&groups);
    let field = |k: &str| group.get(k).copied().flatten();
    let backlog =
        field("lag").unwrap_or_else(|| length.saturating_sub(field("entries-read").unwrap_or(0)));
    Ok(RunStatus {
        state: if running.contains_key(&run) {
            "running"
        } else {
            "finished"
        }
        .to_owned(),
        space: meta.get("space").cloned().unwrap_or_default(),
        coordinator: meta.get("coordinator").cloned().unwrap_or_default(),
        started_at: num("started_at").unwrap_or(0),
        finished_at: num("finished_at"),
        tasks: num("tasks").unwrap_or(0),
        backlog,
        in_flight: field("pending").unwrap_or(0),
        done: results.len() as u64,
        failed: results.iter().filter(|r| r.starts_with("error: ")).count() as u64,
        dead_letters: dead,
        run,
    })
}

/// The numeric fields of the first group of an `XINFO GROUPS` answer (`None`: nil).
fn first_group(v: &Value) -> HashMap<String, Option<u64>> {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(groups) => match groups.first() {
            Some(Value::Array(kv)) => kv.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
            Some(Value::Map(kv)) => kv.iter().map(|(k, v)| (k, v)).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let key = match k {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let n = match v {
                Value::Int(n) => Some((*n).max(0) as u64),
                _ => None,
            };
            Some((key, n))
        })
        .collect()
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = unix_now();
        writeln!(f, "Redis {}", self.redis)?;
        writeln!(f, "workers alive: {}", self.workers.len())?;
        for w in &self.workers {
            let tasks: Vec<String> = w
                .tasks
                .iter()
                .map(|t| format!("{:?} (run {})", t.theme, t.run))
                .collect();
            writeln!(
                f,
                "  {} ({} on {}, pid {}, up {} s): {} text(s) embedded; {}",
                w.id,
                w.role,
                w.host,
                w.pid,
                now.saturating_sub(w.started_at),
                w.texts_embedded,
                if tasks.is_empty() {
                    "idle".to_owned()
                } else {
                    format!("working on {}", tasks.join(", "))
                }
            )?;
        }
        writeln!(f, "queue runs (last day): {}", self.runs.len())?;
        for r in &self.runs {
            writeln!(
                f,
                "  {} {} ({}): {} task(s): backlog {}, in flight {}, done {} ({} failed), dead letters {}",
                r.run,
                r.state,
                r.space,
                r.tasks,
                r.backlog,
                r.in_flight,
                r.done,
                r.failed,
                r.dead_letters
            )?;
        }
        writeln!(f, "global limiters: {}", self.limiters.len())?;
        for l in &self.limiters {
            writeln!(
                f,
                "  {}: last 60 s {} request(s), {} text(s): {:.0}% of {:.0} {}/min; pause {}; 429s {}; leases {}/{}",
                l.name,
                l.requests_last_minute,
                l.texts_last_minute,
                l.share_of_limit * 100.0,
                l.limit_per_minute,
                l.unit,
                if l.pause_seconds > 0.0 {
                    format!("{:.1} s left", l.pause_seconds)
                } else {
                    "none".to_owned()
                },
                l.rate_limited,
                l.leases_in_use,
                l.max_concurrent
            )?;
        }
        Ok(())
    }
}
