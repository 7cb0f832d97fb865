//! The work queue (`run --redis URL`, `puzzlegen worker`): the embeddings of a run's themes
//! are paid for by any number of worker processes, on any machine, sharing one Redis.
//!
//! - The coordinator (`puzzlegen run --redis URL`) registers each batch of themes it needs
//!   (the planned themes, then each round of spares) as a queue run under its embedding space,
//!   queues one task per theme (the theme and its usable candidates) on a Redis stream with a
//!   consumer group, works on the queue itself like any worker, and waits until every task
//!   has a result. Then the run goes on as usual: every vector is in the shared cache tier, so
//!   scoring, assembly and outputs are local and cost no request. A task that failed or went
//!   to the dead-letter stream fails its theme (see [`Distributed::failed`]).
//! - A worker (`puzzlegen worker --redis URL --config params.yaml`) serves every registered
//!   run of its own embedding space with its own provider settings and API key (nothing of
//!   them goes through Redis): it embeds a task's texts through its service (shared limiter,
//!   shared cache tier), writes the result (idempotent) and acknowledges the task. Each
//!   process works on up to `multiprocessing.worker_count` tasks at once.
//! - At-least-once: a task whose worker stops touching it for [`CLAIM_AFTER`] (killed,
//!   hung) is claimed by another (XAUTOCLAIM); a task delivered [`MAX_DELIVERIES`] times goes
//!   to the run's dead-letter stream with its error, and its theme fails as any failed theme.
//!   A worker told to stop hands its task back (queued again) before it exits.
//! - Every process working on the queue keeps a heartbeat (see [`super::health`]). A run whose
//!   coordinator has had none for [`super::health::BEAT_TTL`] (killed) is orphaned: nobody
//!   will read its results, so no worker serves it; the first worker to see it takes it off
//!   the list, marks it `orphaned_at` and lets its keys expire as a finished run's.

use crate::metrics::METRICS;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::distributed::Conn;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::health::{self, Heart};
use crate::clock::unix_secs;
use crate::distributed::Redis;
use crate::embed::Space;
use crate::input::Inputs;
use crate::service::EmbeddingService;

/// A task not touched by its worker for this long is claimed by another.
pub const CLAIM_AFTER: Duration = Duration::from_secs(4);
/// Deliveries after which a task goes to the dead-letter stream.
pub const MAX_DELIVERIES: u64 = 3;
const GROUP: &str = "workers";
/// Every run being coordinated: run id -> embedding space.
pub(crate) const RUNS: &str = "puzzlegen:queue:runs";
/// Every run of the last day, finished or not: run id -> start (Unix seconds).
pub(crate) const ALL_RUNS: &str = "puzzlegen:queue:all";
/// How long a run's keys stay once it is finished (for `puzzlegen status` and `redis-cli`).
const KEEP_FINISHED: u64 = 86_400;

fn space_name(space: &Space) -> String {
    format!("{}:{}:{}", space.model_id, space.dimension, space.task_type)
}

pub(crate) fn tasks_key(run: &str) -> String {
    format!("puzzlegen:queue:{{{run}}}:tasks")
}

pub(crate) fn results_key(run: &str) -> String {
    format!("puzzlegen:queue:{{{run}}}:results")
}

pub(crate) fn dead_key(run: &str) -> String {
    format!("puzzlegen:queue:{{{run}}}:dead")
}

/// A run's description: space, tasks, started_at, finished_at, coordinator.
pub(crate) fn meta_key(run: &str) -> String {
    format!("puzzlegen:queue:{{{run}}}:meta")
}

/// What the queue did for a run.
#[derive(Debug, Default)]
pub struct Distributed {
    /// Theme -> error, for the tasks that failed or went to the dead-letter stream.
    pub failed: HashMap<String, String>,
}

/// Queues `themes` (those with enough usable candidates: the others fail in the engine as
/// they would alone), works on them with `service` too (`slots` tasks at once), and waits
/// for every result (or `stop`). A Redis error ends the waiting: the caller goes on locally.
pub async fn coordinate(
    redis: &Redis,
    service: Arc<EmbeddingService>,
    words_per_theme: usize,
    slots: usize,
    inputs: &Inputs,
    themes: &[String],
    stop: &CancellationToken,
) -> Result<Distributed, String> {
    let run = format!("{:x}", crate::distributed::limiter::unique());
    let mut conn = redis.conn.clone();
    let themes_queued = queue_tasks(&mut conn, &run, words_per_theme, inputs, themes).await?;
    let queued = themes_queued.len();
    let heart = Heart::new(
        format!("coordinator-{}-{run}", std::process::id()),
        "coordinator",
    );
    // A registered run whose coordinator has no heartbeat is orphaned: the heartbeat comes
    // first, so a live run is never taken for one.
    let beat = health::start(redis.clone(), Arc::clone(&heart), Arc::clone(&service)).await;
    let registered = match health::is_alive(&mut conn, &heart.id).await {
        Ok(true) => register(&mut conn, &run, service.space(), queued, &heart.id)
            .await
            .map_err(|e| crate::distributed::describe(&e)),
        Ok(false) => Err("cannot store this process's heartbeat".to_owned()),
        Err(e) => Err(crate::distributed::describe(&e)),
    };
    if let Err(e) = registered {
        beat.stop().await;
        return Err(e);
    }
    tracing::info!(
        "queued {queued} theme task(s) as run {run} on {}",
        redis.shown()
    );
    let own = CancellationToken::new();
    let local = tokio::spawn(work_on(
        redis.clone(),
        Arc::clone(&service),
        run.clone(),
        heart,
        slots,
        own.clone(),
    ));
    let tasks = Queued {
        themes: &themes_queued,
        inputs,
        words_per_theme,
    };
    let waited = wait_for_results(&mut conn, &run, &tasks, &service, stop).await;
    own.cancel();
    let _ = local.await;
    // Off the list before the heartbeat goes: a finished run is never taken for orphaned.
    finish(&mut conn, &run).await;
    beat.stop().await;
    let results = waited?;
    let failed = results
        .into_iter()
        .filter_map(|(theme, r)| r.strip_prefix("error: ").map(|e| (theme, e.to_owned())))
        .collect();
    Ok(Distributed { failed })
}

/// Creates the run's stream and group and queues one task per usable theme (pipelined);
/// returns the themes queued.
async fn queue_tasks(
    conn: &mut Conn,
    run: &str,
    words_per_theme: usize,
    inputs: &Inputs,
    themes: &[String],
) -> Result<Vec<String>, String> {
    let err = |e: redis::RedisError| crate::distributed::describe(&e);
    let tasks = tasks_key(run);
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&tasks)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await
        .map_err(err)?;
    let mut queued = Vec::new();
    let mut pipe = redis::pipe();
    for theme in themes {
        let Some(texts) = inputs.texts_to_embed(theme, words_per_theme) else {
            continue;
        };
        add_task(&mut pipe, &tasks, theme, &texts);
        queued.push(theme.clone());
        if queued.len().is_multiple_of(500) {
            pipe.query_async::<()>(conn).await.map_err(err)?;
            pipe = redis::pipe();
        }
    }
    pipe.query_async::<()>(conn).await.map_err(err)?;
    Ok(queued)
}

/// Adds the task of `theme` (its `texts`) to the stream `tasks` in `pipe`.
fn add_task(pipe: &mut redis::Pipeline, tasks: &str, theme: &str, texts: &[String]) {
    pipe.cmd("XADD")
        .arg(tasks)
        .arg("*")
        .arg("theme")
        .arg(theme)
        .arg("texts")
        .arg(serde_json::to_string(texts).expect("strings"))
        .ignore();
}

/// What the coordinator needs to queue a theme's task again: the themes it queued and where
/// their texts come from.
struct Queued<'a> {
    themes: &'a [String],
    inputs: &'a Inputs,
    words_per_theme: usize,
}

/// Queues again the tasks of `run` that Redis lost: after a failover, the new master has only
/// what async replication had sent it, so a task may have neither an entry in the stream nor
/// a result (an entry whose delivery or result was lost is still in the stream: it is
/// delivered again, or claimed once stale). A stream or group that is gone is made again (from
/// the start, so entries left are delivered), and the run put back on the list workers read.
/// `added`: how many entries this run added to its stream so far (nothing is done when the
/// stream is that long). Returns how many tasks were queued again.
async fn requeue_lost(
    conn: &mut Conn,
    run: &str,
    space: &str,
    queued: &Queued<'_>,
    added: usize,
) -> redis::RedisResult<usize> {
    let stream = tasks_key(run);
    // Entries are never deleted: a stream as long as what was added lost none of them.
    let length: usize = redis::cmd("XLEN").arg(&stream).query_async(conn).await?;
    if length >= added {
        return Ok(0);
    }
    let with_result: HashSet<String> = redis::cmd("HKEYS")
        .arg(results_key(run))
        .query_async(conn)
        .await?;
    let entries_left: Value = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    let in_stream: HashSet<String> = entries(&entries_left)
        .into_iter()
        .filter_map(|(_, mut f)| f.remove("theme"))
        .collect();
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    if created.is_ok() {
        tracing::warn!(
            "run {run}: its consumer group was gone from Redis (a failover?): made again"
        );
    }
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg(RUNS).arg(run).arg(space).ignore();
    let lost: Vec<&String> = queued
        .themes
        .iter()
        .filter(|t| !with_result.contains(*t) && !in_stream.contains(*t))
        .collect();
    for theme in &lost {
        let texts = queued
            .inputs
            .texts_to_embed(theme, queued.words_per_theme)
            .unwrap_or_default();
        add_task(&mut pipe, &stream, theme, &texts);
    }
    pipe.query_async::<()>(conn).await?;
    if !lost.is_empty() {
        tracing::warn!(
            "run {run}: {} task(s) lost by Redis (a failover?): queued again",
            lost.len()
        );
    }
    Ok(lost.len())
}

/// Registers `run` for the workers of `space` and for `puzzlegen status`.
async fn register(
    conn: &mut Conn,
    run: &str,
    space: &Space,
    queued: usize,
    coordinator: &str,
) -> redis::RedisResult<()> {
    let now = unix_secs();
    redis::pipe()
        .cmd("HSET")
        .arg(meta_key(run))
        .arg("space")
        .arg(space_name(space))
        .arg("tasks")
        .arg(queued)
        .arg("started_at")
        .arg(now)
        .arg("coordinator")
        .arg(coordinator)
        .ignore()
        .cmd("ZADD")
        .arg(ALL_RUNS)
        .arg(now)
        .arg(run)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(ALL_RUNS)
        .arg("-inf")
        .arg(now.saturating_sub(KEEP_FINISHED))
        .ignore()
        .cmd("HSET")
        .arg(RUNS)
        .arg(run)
        .arg(space_name(space))
        .ignore()
        .query_async(conn)
        .await
}

/// Takes `run` off the list workers serve; its keys stay [`KEEP_FINISHED`], then go.
async fn finish(conn: &mut Conn, run: &str) {
    let mut pipe = redis::pipe();
    pipe.cmd("HDEL").arg(RUNS).arg(run).ignore();
    keep_for_a_day(&mut pipe, run, "finished_at");
    let _ = pipe.query_async::<()>(conn).await;
}

/// Adds to `pipe`: `field` of `run`'s meta set to now, and every key of `run` set to expire
/// after [`KEEP_FINISHED`].
fn keep_for_a_day(pipe: &mut redis::Pipeline, run: &str, field: &str) {
    pipe.cmd("HSET")
        .arg(meta_key(run))
        .arg(field)
        .arg(unix_secs())
        .ignore();
    for key in [
        tasks_key(run),
        results_key(run),
        dead_key(run),
        meta_key(run),
    ] {
        pipe.cmd("EXPIRE").arg(key).arg(KEEP_FINISHED).ignore();
    }
}

/// Whether `run` is not to be served: its coordinator (named in its meta) has had no
/// heartbeat for longer than [`health::BEAT_TTL`] (it died: nobody will read the results), or
/// cannot be read. The first worker to find it orphaned takes it off the list, marks its
/// meta `orphaned_at`, lets its keys expire as [`finish`] does, and says so.
async fn orphaned(conn: &mut Conn, run: &str) -> bool {
    let coordinator = redis::cmd("HGET")
        .arg(meta_key(run))
        .arg("coordinator")
        .query_async::<Option<String>>(conn)
        .await;
    let coordinator = match coordinator {
        Ok(Some(c)) => c,
        Ok(None) => return false, // a run of an older version: served as before
        Err(_) => return true,
    };
    match health::is_alive(conn, &coordinator).await {
        Ok(true) => return false,
        Ok(false) => {}
        Err(_) => return true,
    }
    let taken = redis::cmd("HDEL")
        .arg(RUNS)
        .arg(run)
        .query_async::<i64>(conn)
        .await;
    if taken.is_ok_and(|n| n == 1) {
        let mut pipe = redis::pipe();
        keep_for_a_day(&mut pipe, run, "orphaned_at");
        let _ = pipe.query_async::<()>(conn).await;
        tracing::warn!(
            "run {run} orphaned: its coordinator {coordinator} has had no heartbeat for over \
             {} s; taken off the list, its tasks are not served",
            health::BEAT_TTL.as_secs()
        );
    }
    true
}

/// How long the results of a run may stand still before its coordinator checks that Redis
/// still holds its tasks ([`requeue_lost`]).
const AUDIT_AFTER: Duration = Duration::from_secs(5);

/// Waits until every task of `run` has a result, the run is stopped, or this process's
/// service met an error after which no request can succeed (a stall, a refused key): the run
/// then ends as it would alone, with that error, instead of waiting for workers. Once the
/// results stand still for [`AUDIT_AFTER`], tasks Redis lost (a failover) are queued again.
async fn wait_for_results(
    conn: &mut Conn,
    run: &str,
    tasks: &Queued<'_>,
    service: &EmbeddingService,
    stop: &CancellationToken,
) -> Result<HashMap<String, String>, String> {
    let queued = tasks.themes.len();
    let space = space_name(service.space());
    let mut progress = (0usize, Instant::now());
    let mut added = queued;
    loop {
        // A cluster's connection waits out a failover itself, for up to the stall timeout.
        let done: usize = redis::cmd("HLEN")
            .arg(results_key(run))
            .query_async(conn)
            .await
            .map_err(|e| crate::distributed::describe(&e))?;
        METRICS
            .queue_backlog
            .set(queued.saturating_sub(done) as i64);
        if done >= queued || stop.is_cancelled() || service.fatal_error().is_some() {
            return redis::cmd("HGETALL")
                .arg(results_key(run))
                .query_async(conn)
                .await
                .map_err(|e| crate::distributed::describe(&e));
        }
        if done > progress.0 {
            progress = (done, Instant::now());
        } else if progress.1.elapsed() >= AUDIT_AFTER {
            // An error here is met again by the next HLEN.
            if let Ok(again) = requeue_lost(conn, run, &space, tasks, added).await {
                added += again;
            }
            progress.1 = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// A worker: serves every registered run of `service`'s space, `slots` tasks at once, until
/// `stop`; its heartbeat says so meanwhile.
pub async fn serve(
    redis: Redis,
    service: Arc<EmbeddingService>,
    slots: usize,
    stop: CancellationToken,
) {
    let id = format!(
        "worker-{}-{:x}",
        std::process::id(),
        crate::distributed::limiter::unique()
    );
    tracing::info!(
        "worker {id} serving runs of {} on {}",
        space_name(service.space()),
        redis.shown()
    );
    let heart = Heart::new(id, "worker");
    let beat = health::start(redis.clone(), Arc::clone(&heart), Arc::clone(&service)).await;
    let mut set = tokio::task::JoinSet::new();
    for slot in 0..slots.max(1) {
        set.spawn(serve_slot(
            redis.clone(),
            Arc::clone(&service),
            Arc::clone(&heart),
            format!("{}-{slot}", heart.id),
            stop.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
    beat.stop().await;
}

/// One of a worker's slots: a task of any run of its space at a time.
async fn serve_slot(
    redis: Redis,
    service: Arc<EmbeddingService>,
    heart: Arc<Heart>,
    consumer: String,
    stop: CancellationToken,
) {
    let space = space_name(service.space());
    let mut conn = redis.conn.clone();
    while !stop.is_cancelled() {
        if let Some(e) = service.fatal_error() {
            tracing::error!("worker {consumer}: stopping: {e}");
            return;
        }
        let runs: HashMap<String, String> =
            match redis::cmd("HGETALL").arg(RUNS).query_async(&mut conn).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("Redis: {}", crate::distributed::describe(&e));
                    HashMap::new()
                }
            };
        let mine: Vec<String> = runs
            .into_iter()
            .filter(|(_, s)| *s == space)
            .map(|(r, _)| r)
            .collect();
        let mut worked = false;
        for run in mine {
            if stop.is_cancelled() {
                break;
            }
            if orphaned(&mut conn, &run).await {
                continue;
            }
            worked |= one_task(&redis, &service, &heart, &run, &consumer, &stop).await;
        }
        if !worked {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// Works on run `run`, `slots` tasks at once, until `stop`.
async fn work_on(
    redis: Redis,
    service: Arc<EmbeddingService>,
    run: String,
    heart: Arc<Heart>,
    slots: usize,
    stop: CancellationToken,
) {
    let mut set = tokio::task::JoinSet::new();
    for slot in 0..slots.max(1) {
        let (redis, service, heart, run, stop) = (
            redis.clone(),
            Arc::clone(&service),
            Arc::clone(&heart),
            run.clone(),
            stop.clone(),
        );
        set.spawn(async move {
            let consumer = format!("{}-{slot}", heart.id);
            // After a fatal error each slot hands its task back once and stops (the run ends
            // with the error); it never takes a task it cannot serve.
            while !stop.is_cancelled() && service.fatal_error().is_none() {
                if !one_task(&redis, &service, &heart, &run, &consumer, &stop).await {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// One task of `run`: a stale one of a dead worker first, else a new one. False when there
/// was none.
async fn one_task(
    redis: &Redis,
    service: &Arc<EmbeddingService>,
    heart: &Heart,
    run: &str,
    consumer: &str,
    stop: &CancellationToken,
) -> bool {
    let mut conn = redis.conn.clone();
    let tasks = tasks_key(run);
    let mut entry = claim_stale(&mut conn, &tasks, consumer).await;
    let reclaimed = entry.is_some();
    if entry.is_none() {
        entry = read_new(&mut conn, &tasks, consumer).await;
    }
    let Some((id, fields)) = entry else {
        return false;
    };
    let theme = fields.get("theme").cloned().unwrap_or_default();
    if reclaimed {
        METRICS.tasks.with_label_values(&["reclaimed"]).inc();
        tracing::info!(
            "{consumer}: claimed task {theme:?} of run {run} from a worker that stopped touching it"
        );
    }
    heart.take(run, &theme);
    let deliveries = deliveries(&mut conn, &tasks, &id).await;
    let result = if deliveries > MAX_DELIVERIES {
        let error = format!("dead letter: delivered {deliveries} times without a result");
        let _ = redis::cmd("XADD")
            .arg(dead_key(run))
            .arg("*")
            .arg("theme")
            .arg(&theme)
            .arg("error")
            .arg(&error)
            .query_async::<String>(&mut conn)
            .await;
        Some(format!("error: {error}"))
    } else {
        let texts: Vec<String> = fields
            .get("texts")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        embed_touching(redis, service, &tasks, consumer, &id, &texts, stop).await
    };
    // The delivery is acknowledged either way, after its result (or its copy) is written.
    match result {
        Some(r) => {
            let outcome = if r.starts_with("error") {
                "failed"
            } else {
                "done"
            };
            METRICS.tasks.with_label_values(&[outcome]).inc();
            tracing::info!("{consumer}: task {theme:?} of run {run}: {r}");
            // The first result of a task stands (a dead letter is not undone by a late "ok").
            let _ = redis::cmd("HSETNX")
                .arg(results_key(run))
                .arg(&theme)
                .arg(r)
                .query_async::<()>(&mut conn)
                .await;
        }
        None => {
            // Stopped: hand the task back (queued again, this delivery acknowledged).
            tracing::info!("{consumer}: stopping: task {theme:?} of run {run} queued again");
            let mut add = redis::cmd("XADD");
            add.arg(&tasks).arg("*");
            for (k, v) in &fields {
                add.arg(k).arg(v);
            }
            let _ = add.query_async::<String>(&mut conn).await;
        }
    }
    let _ = redis::cmd("XACK")
        .arg(&tasks)
        .arg(GROUP)
        .arg(&id)
        .query_async::<()>(&mut conn)
        .await;
    heart.put_down(run, &theme);
    true
}

/// A task of `tasks` never delivered yet, for `consumer`.
async fn read_new(
    conn: &mut Conn,
    tasks: &str,
    consumer: &str,
) -> Option<(String, HashMap<String, String>)> {
    let read = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(tasks)
        .arg(">")
        .query_async::<Value>(conn)
        .await;
    match read {
        Ok(Value::Array(streams)) => streams.first().and_then(|s| match s {
            Value::Array(pair) if pair.len() == 2 => entries(&pair[1]).into_iter().next(),
            _ => None,
        }),
        _ => None,
    }
}

/// A task of `tasks` nobody touched for [`CLAIM_AFTER`], claimed for `consumer`: the whole
/// list of pending tasks is scanned (XAUTOCLAIM looks at a few per call), so a dead worker's
/// task is found behind any number of tasks in hand.
async fn claim_stale(
    conn: &mut Conn,
    tasks: &str,
    consumer: &str,
) -> Option<(String, HashMap<String, String>)> {
    let mut cursor = "0-0".to_owned();
    loop {
        let claimed = redis::cmd("XAUTOCLAIM")
            .arg(tasks)
            .arg(GROUP)
            .arg(consumer)
            .arg(CLAIM_AFTER.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(1)
            .query_async::<Value>(conn)
            .await;
        let Ok(Value::Array(parts)) = claimed else {
            return None;
        };
        if let Some(entry) = parts.get(1).and_then(|e| entries(e).into_iter().next()) {
            return Some(entry);
        }
        cursor = parts.first().and_then(string)?;
        if cursor == "0-0" {
            return None;
        }
    }
}

/// Embeds `texts`, touching the task (resetting its idle time) meanwhile so no other worker
/// claims it. `None` when stopped first, or when the service met an error no retry can fix.
async fn embed_touching(
    redis: &Redis,
    service: &Arc<EmbeddingService>,
    tasks: &str,
    consumer: &str,
    id: &str,
    texts: &[String],
    stop: &CancellationToken,
) -> Option<String> {
    let touch = tokio::spawn({
        let (mut conn, tasks, consumer, id) = (
            redis.conn.clone(),
            tasks.to_owned(),
            consumer.to_owned(),
            id.to_owned(),
        );
        async move {
            loop {
                tokio::time::sleep(CLAIM_AFTER / 4).await;
                let _ = redis::cmd("XCLAIM")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg(0)
                    .arg(&id)
                    .arg("JUSTID")
                    .query_async::<Value>(&mut conn)
                    .await;
            }
        }
    });
    let result = tokio::select! {
        r = service.embed(texts) => match r {
            Ok(_) => Some("ok".to_owned()),
            // This worker cannot go on (bad key, daily quota...): the task is handed back
            // for a worker that can, and this one stops (see `serve`).
            Err(e) if e.is_fatal() => None,
            Err(e) => Some(format!("error: {e}")),
        },
        _ = stop.cancelled() => None,
    };
    touch.abort();
    result
}

/// How many times entry `id` was delivered.
async fn deliveries(conn: &mut Conn, tasks: &str, id: &str) -> u64 {
    let pending = redis::cmd("XPENDING")
        .arg(tasks)
        .arg(GROUP)
        .arg(id)
        .arg(id)
        .arg(1)
        .query_async::<Value>(conn)
        .await;
    match pending {
        Ok(Value::Array(rows)) => match rows.first() {
            Some(Value::Array(row)) if row.len() == 4 => match row[3] {
                Value::Int(n) => n as u64,
                _ => 1,
            },
            _ => 1,
        },
        _ => 1,
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]`.
fn entries(v: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = string(pair.first()?)?;
            let Value::Array(kv) = pair.get(1)? else {
                return None;
            };
            let fields = kv
                .chunks_exact(2)
                .filter_map(|c| Some((string(&c[0])?, string(&c[1])?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
