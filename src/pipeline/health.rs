//! Heartbeats of the processes working on the Redis work queue (`puzzlegen worker`, and a
//! coordinating `puzzlegen run`): one key per process, `puzzlegen:worker:<id>`, holding a
//! [`Beat`] (who, where, since when, the tasks in hand, texts embedded) and refreshed every
//! [`BEAT_EVERY`] with a time to live of [`BEAT_TTL`]: a process that died or hung drops out
//! of `puzzlegen status` within seconds, without anyone cleaning up after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::distributed::Redis;
use crate::service::EmbeddingService;

/// How often a heartbeat is refreshed.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat lasts unless refreshed.
pub const BEAT_TTL: Duration = Duration::from_secs(5);
/// Heartbeat keys: this, then the process's id.
pub(crate) const BEAT_PREFIX: &str = "puzzlegen:worker:";

/// A task a process is working on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskInHand {
    pub run: String,
    pub theme: String,
}

/// What a heartbeat key holds (JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Beat {
    pub id: String,
    /// `worker` or `coordinator`.
    pub role: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub tasks: Vec<TaskInHand>,
    /// Texts this process's provider embedded since it started.
    pub texts_embedded: u64,
}

/// A process's own heartbeat state: the tasks in hand change as it works.
pub(crate) struct Heart {
    pub(crate) id: String,
    role: &'static str,
    started_at: u64,
    tasks: Mutex<Vec<TaskInHand>>,
}

impl Heart {
    pub(crate) fn new(id: String, role: &'static str) -> Arc<Heart> {
        Arc::new(Heart {
            id,
            role,
            started_at: crate::clock::unix_secs(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn take(&self, run: &str, theme: &str) {
        crate::metrics::METRICS.tasks_in_hand.inc();
        self.tasks
            .lock()
            .expect("no panic holds it")
            .push(TaskInHand {
                run: run.to_owned(),
                theme: theme.to_owned(),
            });
    }

    pub(crate) fn put_down(&self, run: &str, theme: &str) {
        let mut tasks = self.tasks.lock().expect("no panic holds it");
        if let Some(i) = tasks.iter().position(|t| t.run == run && t.theme == theme) {
            tasks.remove(i);
            crate::metrics::METRICS.tasks_in_hand.dec();
        }
    }

    fn beat(&self, texts_embedded: u64) -> Beat {
        Beat {
            id: self.id.clone(),
            role: self.role.to_owned(),
            host: host_name(),
            pid: std::process::id(),
            started_at: self.started_at,
            tasks: self.tasks.lock().expect("no panic holds it").clone(),
            texts_embedded,
        }
    }
}

/// The heartbeat being sent; [`Heartbeat::stop`] ends it and removes the key.
pub(crate) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    redis: Redis,
    key: String,
}

/// Stores `heart`'s first beat, then refreshes it every [`BEAT_EVERY`] (Redis errors are
/// skipped: the next beat tries again).
pub(crate) async fn start(
    redis: Redis,
    heart: Arc<Heart>,
    service: Arc<EmbeddingService>,
) -> Heartbeat {
    let key = format!("{BEAT_PREFIX}{}", heart.id);
    let mut conn = redis.conn.clone();
    send(&mut conn, &key, &heart, &service).await;
    let task = tokio::spawn({
        let key = key.clone();
        async move {
            loop {
                tokio::time::sleep(BEAT_EVERY).await;
                send(&mut conn, &key, &heart, &service).await;
            }
        }
    });
    Heartbeat { task, redis, key }
}

/// Stores one beat of `heart` under `key`, to live [`BEAT_TTL`].
async fn send(
    conn: &mut crate::distributed::Conn,
    key: &str,
    heart: &Heart,
    service: &EmbeddingService,
) {
    let beat = heart.beat(service.stats().texts_embedded);
    let json = serde_json::to_string(&beat).expect("plain data");
    let _ = redis::cmd("SET")
        .arg(key)
        .arg(json)
        .arg("PX")
        .arg(BEAT_TTL.as_millis() as u64)
        .query_async::<()>(conn)
        .await;
}

/// Whether process `id` has a heartbeat: it beat within the last [`BEAT_TTL`].
pub(crate) async fn is_alive(
    conn: &mut crate::distributed::Conn,
    id: &str,
) -> redis::RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(format!("{BEAT_PREFIX}{id}"))
        .query_async(conn)
        .await
}

impl Heartbeat {
    pub(crate) async fn stop(self) {
        self.task.abort();
        let mut conn = self.redis.conn.clone();
        let _ = redis::cmd("DEL")
            .arg(&self.key)
            .query_async::<()>(&mut conn)
            .await;
    }
}

/// This machine's name (`unknown` where it cannot be read).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
