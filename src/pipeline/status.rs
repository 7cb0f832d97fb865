//! `puzzlegen status`: what a Redis shared by runs and workers says about them, read in one
//! go: the processes alive (their heartbeats, see [`super::health`]), each queue run of the
//! last day (backlog, in flight, done, dead letters) and each global limiter (the rate
//! achieved in the last minute against its limit, a 429 pause, the 429s seen).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::distributed::Conn;
use redis::Value;

use super::health::{BEAT_PREFIX, Beat};
use super::queue::{ALL_RUNS, RUNS, dead_key, meta_key, results_key, tasks_key};
use crate::clock::unix_secs;
use crate::distributed::inspect::{Inspector, Read, fields, text};
use crate::distributed::limiter::{LimiterStatus, scan, status_of_all};
use crate::distributed::{Redis, Unreadable, describe};

/// One queue run (a batch of a coordinator's themes); a figure whose key cannot be read is
/// `None` (the key is in [`Status::unreadable`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    pub run: String,
    /// `model:dimension:task type`.
    pub space: String,
    pub coordinator: String,
    /// `running`, `finished`, `orphaned` (its coordinator died: no worker serves it) or
    /// `unknown` (its description cannot be read).
    pub state: String,
    /// Unix seconds.
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// When a worker found the coordinator gone and took the run off the list.
    pub orphaned_at: Option<u64>,
    /// Tasks queued (one per theme).
    pub tasks: Option<u64>,
    /// Queued, not yet delivered to any worker.
    pub backlog: Option<u64>,
    /// Delivered, not yet acknowledged (pending entries).
    pub in_flight: Option<u64>,
    /// Tasks with a result (failed ones included).
    pub done: Option<u64>,
    /// Of `done`, results that are errors (dead letters included).
    pub failed: Option<u64>,
    pub dead_letters: Option<u64>,
}

/// Everything `puzzlegen status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The Redis URL, password hidden.
    pub redis: String,
    /// The masters of a Redis Cluster, every one of them read (`None`: a single server).
    pub cluster_masters: Option<usize>,
    pub workers: Vec<Beat>,
    pub runs: Vec<RunStatus>,
    pub limiters: Vec<LimiterStatus>,
    /// Keys that could not be read (a wrong type, a value that is not a number), each with
    /// what is wrong; everything else is shown.
    pub unreadable: Vec<Unreadable>,
}

/// Reads the status of everything on `redis`; one line when Redis does not answer. Keys that
/// cannot be read are named in [`Status::unreadable`], not errors.
pub async fn read(redis: &Redis) -> Result<Status, String> {
    let mut conn = redis.conn.clone();
    let mut inspector = Inspector::default();
    let err = |e: redis::RedisError| describe(&e);
    let (workers, alive) = workers(&mut conn, &mut inspector).await.map_err(err)?;
    let runs = runs(&mut conn, &mut inspector, &alive).await.map_err(err)?;
    let limiters = status_of_all(redis, &mut inspector).await.map_err(err)?;
    let cluster_masters = match redis.is_cluster() {
        true => Some(conn.holders().await.map_err(err)?.len()),
        false => None,
    };
    Ok(Status {
        redis: redis.shown().to_owned(),
        cluster_masters,
        workers,
        runs,
        limiters,
        unreadable: inspector.into_unreadable(),
    })
}

/// The heartbeats that can be read, and the ids of every process with a heartbeat key
/// (readable or not: the key lives only while its process refreshes it).
async fn workers(
    conn: &mut Conn,
    inspector: &mut Inspector,
) -> redis::RedisResult<(Vec<Beat>, HashSet<String>)> {
    let mut beats = Vec::new();
    let mut alive = HashSet::new();
    for key in scan(conn, &format!("{BEAT_PREFIX}*")).await? {
        alive.insert(key.trim_start_matches(BEAT_PREFIX).to_owned());
        let read = Read::new(&key, "string", &["GET", &key]);
        let Some(json) = inspector
            .read_one(conn, read)
            .await?
            .as_ref()
            .and_then(text)
        else {
            continue;
        };
        match serde_json::from_str::<Beat>(&json) {
            Ok(beat) => beats.push(beat),
            Err(e) => inspector.name(&key, format!("not a heartbeat (JSON): {e}")),
        }
    }
    beats.sort_by(|a, b| (&a.role, &a.id).cmp(&(&b.role, &b.id)));
    Ok((beats, alive))
}

/// Every run of the last day (and every registered one: either list may be unreadable).
async fn runs(
    conn: &mut Conn,
    inspector: &mut Inspector,
    alive: &HashSet<String>,
) -> redis::RedisResult<Vec<RunStatus>> {
    let reads = [
        Read::new(ALL_RUNS, "zset", &["ZRANGE", ALL_RUNS, "0", "-1"]),
        Read::new(RUNS, "hash", &["HGETALL", RUNS]),
    ];
    let answers = inspector.read(conn, &reads).await?;
    let mut ids: Vec<String> = match &answers[0] {
        Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let registered = answers[1].as_ref().map(fields);
    let mut more: Vec<&String> = registered
        .iter()
        .flat_map(|r| r.keys())
        .filter(|r| !ids.contains(r))
        .collect();
    more.sort();
    ids.extend(more.into_iter().cloned());
    let mut all = Vec::new();
    for run in ids {
        let key = meta_key(&run);
        let meta = match inspector
            .read_one(conn, Read::new(&key, "hash", &["HGETALL", &key]))
            .await?
        {
            Some(Value::Nil) => continue, // expired
            Some(v) => Some(fields(&v)),
            None => None,
        };
        let is_registered = registered.as_ref().map(|r| r.contains_key(&run));
        all.push(run_status(conn, inspector, run, meta, is_registered, alive).await?);
    }
    Ok(all)
}

/// `running` while its coordinator's heartbeat lives, `orphaned` once it is gone (or a worker
/// said so), `finished` once the coordinator said so; `unknown` without a readable `meta`.
fn state(
    meta: Option<&HashMap<String, Value>>,
    registered: Option<bool>,
    alive: &HashSet<String>,
) -> &'static str {
    let Some(meta) = meta else {
        return "unknown";
    };
    let coordinator = meta.get("coordinator").and_then(text);
    if meta.contains_key("finished_at") {
        "finished"
    } else if meta.contains_key("orphaned_at") {
        "orphaned"
    } else if let Some(c) = coordinator {
        if alive.contains(&c) {
            "running"
        } else {
            "orphaned"
        }
    } else if registered == Some(true) {
        "running"
    } else {
        "unknown"
    }
}

async fn run_status(
    conn: &mut Conn,
    inspector: &mut Inspector,
    run: String,
    meta: Option<HashMap<String, Value>>,
    registered: Option<bool>,
    alive: &HashSet<String>,
) -> redis::RedisResult<RunStatus> {
    let key = meta_key(&run);
    let mut num = |field: &str, absent: Option<u64>| {
        let raw = meta.as_ref()?.get(field);
        if raw.is_none() {
            return absent;
        }
        inspector.number::<u64>(&key, Some(field), raw, 0)
    };
    let (tasks, started_at) = (num("tasks", Some(0)), num("started_at", Some(0)));
    let (finished_at, orphaned_at) = (num("finished_at", None), num("orphaned_at", None));
    let meta_text = |field: &str| {
        meta.as_ref()
            .and_then(|m| m.get(field))
            .and_then(text)
            .unwrap_or_default()
    };
    let (tasks_key, results, dead) = (tasks_key(&run), results_key(&run), dead_key(&run));
    // One transaction: the figures are of one moment.
    let reads = [
        Read::new(&tasks_key, "stream", &["XLEN", &tasks_key]),
        Read::new(&tasks_key, "stream", &["XINFO", "GROUPS", &tasks_key]),
        Read::new(&results, "hash", &["HVALS", &results]),
        Read::new(&dead, "stream", &["XLEN", &dead]),
    ];
    let answers = inspector.read(conn, &reads).await?;
    let length = inspector.value_of::<u64>(&reads[0], &answers[0], 0);
    let group = answers[1].as_ref().map(first_group);
    let field = |k: &str| group.as_ref().and_then(|g| g.get(k).copied().flatten());
    let backlog = length.filter(|_| group.is_some()).map(|length| {
        field("lag").unwrap_or_else(|| length.saturating_sub(field("entries-read").unwrap_or(0)))
    });
    let results: Option<Vec<String>> = answers[2].as_ref().map(|v| match v {
        Value::Array(r) => r.iter().filter_map(text).collect(),
        _ => Vec::new(),
    });
    Ok(RunStatus {
        state: state(meta.as_ref(), registered, alive).to_owned(),
        space: meta_text("space"),
        coordinator: meta_text("coordinator"),
        started_at,
        finished_at,
        orphaned_at,
        tasks,
        backlog,
        in_flight: group.as_ref().map(|_| field("pending").unwrap_or(0)),
        done: results.as_ref().map(|r| r.len() as u64),
        failed: results
            .as_ref()
            .map(|r| r.iter().filter(|r| r.starts_with("error: ")).count() as u64),
        dead_letters: inspector.value_of::<u64>(&reads[3], &answers[3], 0),
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

impl Status {
    /// The whole deployment in the Prometheus text format (`puzzlegen status --prometheus`,
    /// for a textfile collector): one gauge family per figure, labelled by worker, run or
    /// limiter; a figure that could not be read is left out.
    pub fn prometheus(&self) -> String {
        let registry = prometheus::Registry::new();
        let family = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)
                .expect("a valid name");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let set = |g: &prometheus::GaugeVec, labels: &[&str], v: Option<f64>| {
            if let Some(v) = v {
                g.with_label_values(labels).set(v);
            }
        };
        let up = family(
            "puzzlegen_deployment_process_up",
            "Processes with a live heartbeat (1 each), by id, role and host.",
            &["id", "role", "host"],
        );
        let in_hand = family(
            "puzzlegen_deployment_process_tasks_in_hand",
            "Queue tasks each process is working on.",
            &["id", "role"],
        );
        let embedded = family(
            "puzzlegen_deployment_process_texts_embedded",
            "Texts each process's provider embedded since it started.",
            &["id", "role"],
        );
        for w in &self.workers {
            up.with_label_values(&[&w.id, &w.role, &w.host]).set(1.0);
            set(&in_hand, &[&w.id, &w.role], Some(w.tasks.len() as f64));
            set(&embedded, &[&w.id, &w.role], Some(w.texts_embedded as f64));
        }
        let run_info = family(
            "puzzlegen_deployment_run_info",
            "Queue runs of the last day (1 each), by state.",
            &["run", "space", "state"],
        );
        let figures = [
            ("tasks", "Tasks queued (one per theme).", 0),
            ("backlog", "Tasks not yet delivered to any worker.", 1),
            ("in_flight", "Tasks delivered, not yet acknowledged.", 2),
            ("done", "Tasks with a result, failed ones included.", 3),
            ("failed", "Tasks whose result is an error.", 4),
            ("dead_letters", "Tasks delivered too often, given up.", 5),
        ]
        .map(|(name, help, i)| {
            let g = family(&format!("puzzlegen_deployment_run_{name}"), help, &["run"]);
            (g, i)
        });
        for r in &self.runs {
            run_info
                .with_label_values(&[&r.run, &r.space, &r.state])
                .set(1.0);
            let values = [
                r.tasks,
                r.backlog,
                r.in_flight,
                r.done,
                r.failed,
                r.dead_letters,
            ];
            for (g, i) in &figures {
                set(g, &[&r.run], values[*i].map(|v| v as f64));
            }
        }
        let limiter = |name: &str, help: &str| {
            family(
                &format!("puzzlegen_deployment_limiter_{name}"),
                help,
                &["limiter"],
            )
        };
        let limit = limiter("limit_per_minute", "The limit per minute, in its unit.");
        let requests = limiter(
            "requests_last_minute",
            "Requests let through in the last 60 s.",
        );
        let texts = limiter(
            "texts_last_minute",
            "Texts in the requests of the last 60 s.",
        );
        let share = limiter(
            "share_of_limit",
            "What the last 60 s achieved of the limit (0-1).",
        );
        let pause = limiter("pause_seconds", "Seconds left of a pause a 429 set.");
        let throttled = limiter(
            "rate_limited",
            "429s reported by any process (the last day).",
        );
        let leases = limiter("leases_in_use", "Concurrency slots held now.");
        let most = limiter("max_concurrent", "Concurrency slots in all.");
        for l in &self.limiters {
            let n: &[&str] = &[&l.name];
            set(&limit, n, l.limit_per_minute);
            set(&requests, n, l.requests_last_minute.map(|v| v as f64));
            set(&texts, n, l.texts_last_minute.map(|v| v as f64));
            set(&share, n, l.share_of_limit);
            set(&pause, n, l.pause_seconds);
            set(&throttled, n, l.rate_limited.map(|v| v as f64));
            set(&leases, n, l.leases_in_use.map(|v| v as f64));
            set(&most, n, l.max_concurrent.map(|v| v as f64));
        }
        let unreadable = prometheus::Gauge::new(
            "puzzlegen_deployment_unreadable_keys",
            "Keys status could not read (named in puzzlegen status).",
        )
        .expect("a valid name");
        unreadable.set(self.unreadable.len() as f64);
        registry
            .register(Box::new(unreadable))
            .expect("registered once");
        crate::metrics::encode(&registry)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = unix_secs();
        match self.cluster_masters {
            Some(n) => writeln!(f, "Redis Cluster {} ({n} masters, all read)", self.redis)?,
            None => writeln!(f, "Redis {}", self.redis)?,
        }
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
                shown(r.tasks),
                shown(r.backlog),
                shown(r.in_flight),
                shown(r.done),
                shown(r.failed),
                shown(r.dead_letters)
            )?;
        }
        writeln!(f, "global limiters: {}", self.limiters.len())?;
        for l in &self.limiters {
            writeln!(
                f,
                "  {}: last 60 s {} request(s), {} text(s): {}% of {} {}/min; pause {}; 429s {}; leases {}/{}",
                l.name,
                shown(l.requests_last_minute),
                shown(l.texts_last_minute),
                shown(l.share_of_limit.map(|s| format!("{:.0}", s * 100.0))),
                shown(l.limit_per_minute.map(|n| format!("{n:.0}"))),
                shown(l.unit.as_deref()),
                match l.pause_seconds {
                    Some(p) if p > 0.0 => format!("{p:.1} s left"),
                    Some(_) => "none".to_owned(),
                    None => "?".to_owned(),
                },
                shown(l.rate_limited),
                shown(l.leases_in_use),
                shown(l.max_concurrent)
            )?;
        }
        if !self.unreadable.is_empty() {
            writeln!(f, "unreadable keys (shown as ?): {}", self.unreadable.len())?;
            for u in &self.unreadable {
                writeln!(f, "  {}: {}", u.key, u.problem)?;
            }
        }
        Ok(())
    }
}

/// A figure, or `?` where its key could not be read.
fn shown(v: Option<impl fmt::Display>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}
