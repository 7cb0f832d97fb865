//! The request limiter shared by every process on one Redis: the schedule of
//! [`crate::limit`] (per-minute items or requests with the same burst rule, the minimum
//! interval between requests, tokens per minute) as one Lua script evaluated on the Redis
//! server's clock (`TIME`), so the limits hold for the sum of all processes and survive
//! restarts.
//!
//! - Keys are named by provider, API-key variable name (never the key) and model, all under
//!   one hash tag: any run with the same Redis, provider and key name shares them.
//! - Concurrency: leases in a sorted set (lease id -> expiry); a lease is removed when its
//!   request ends and expires on its own if its holder died.
//! - A 429's delay sets a shared pause-until key: no process starts a request before it.
//! - A request is admitted atomically: every schedule must allow it at once, or none is
//!   charged and the script answers how long to wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;

use crate::distributed::inspect::{Inspector, Read, fields, text};
use crate::distributed::{Redis, describe};
use crate::limit::{LimitSettings, RpmCounts, Schedule};

/// The admission script. KEYS: rpm, interval, tpm, leases, pause, the per-second counters'
/// prefix, the settings. ARGV: lease id, lease TTL (us), most leases, then (period us, burst,
/// cells) for rpm, interval and tpm (period 0: that schedule is off), then the request's texts,
/// the per-minute limit and its unit (for `puzzlegen status`), then the longest pause a server
/// can ask for (us). Answers 0 (admitted, lease taken: the second's counters bumped), the
/// microseconds to wait, or minus how far ahead a stale pause was (one further ahead than any
/// server delay, or not a number: it is deleted, and the caller says so).
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- A key of another type or a value that is not a number (written by anyone but this script)
-- never stops admission: it reads as stale (the pause), as absent (the schedules, the leases)
-- or is skipped (the counters for `puzzlegen status`).
local function number(key)
  local v = redis.pcall('GET', key)
  if v == false then return 0 end
  if type(v) ~= 'string' then return nil end
  return tonumber(v)
end
local pause = number(KEYS[5])
if pause == nil or pause - now > tonumber(ARGV[16]) then
  redis.call('DEL', KEYS[5])
  if pause == nil then return -1 end
  return -(pause - now)
end
if pause > now then return pause - now end
local leases_type = redis.call('TYPE', KEYS[4]).ok
if leases_type ~= 'zset' and leases_type ~= 'none' then redis.call('DEL', KEYS[4]) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[3]) then
  return 5000
end
local wait = 0
local new = {}
for i = 0, 2 do
  local period = tonumber(ARGV[4 + i * 3])
  if period > 0 then
    local burst = tonumber(ARGV[5 + i * 3])
    local cells = tonumber(ARGV[6 + i * 3])
    local tat = number(KEYS[1 + i]) or 0
    if tat < now then tat = now end
    local next_tat = tat + cells * period
    local allow_at = next_tat - burst * period
    if allow_at > now then
      if allow_at - now > wait then wait = allow_at - now end
    else
      new[1 + i] = next_tat
    end
  end
end
if wait > 0 then return math.ceil(wait) end
for i = 1, 3 do
  if new[i] then
    local ttl = math.ceil((new[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', new[i]), 'PX', ttl)
  end
end
local lease_ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[4], string.format('%.0f', now + lease_ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[4], math.ceil(lease_ttl / 1000) + 1000)
local second = KEYS[6] .. ':' .. math.floor(now / 1000000)
redis.pcall('HINCRBY', second, 'requests', 1)
redis.pcall('HINCRBY', second, 'texts', tonumber(ARGV[13]))
redis.pcall('EXPIRE', second, 65)
redis.pcall('HSET', KEYS[7], 'per_minute', ARGV[14], 'unit', ARGV[15], 'concurrency', ARGV[3])
redis.pcall('EXPIRE', KEYS[7], 86400)
return 0
"#;

/// KEYS[1]: the leases. ARGV: the lease id, its TTL (us). Moves an existing lease's expiry to
/// now + TTL (on the Redis clock); a lease already gone stays gone.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
"#;

/// KEYS[1]: the pause key, KEYS[2]: the 429 counter. ARGV[1]: the delay in microseconds.
/// Counts the 429 and moves the pause later, never earlier.
const PAUSE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause_at = now + tonumber(ARGV[1])
redis.pcall('INCR', KEYS[2])
redis.pcall('EXPIRE', KEYS[2], 86400)
local cur = redis.pcall('GET', KEYS[1])
cur = (type(cur) == 'string' and tonumber(cur)) or 0
if cur < pause_at then
  redis.call('SET', KEYS[1], string.format('%.0f', pause_at), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
"#;

/// The limiter every process on one Redis shares (see the module doc).
pub struct GlobalLimiter {
    redis: Redis,
    /// `puzzlegen:limit:{provider:key variable:model}`.
    prefix: String,
    counts: RpmCounts,
    rpm: Schedule,
    /// `requests_per_minute` over a minute (the window may be shorter in tests).
    per_minute: f64,
    interval: Option<Schedule>,
    tpm: Option<Schedule>,
    max_concurrent: usize,
    lease_ttl: Duration,
    next_lease: AtomicU64,
    /// This process's lease ids start with it.
    process: String,
    /// Redis errors met while acquiring (the limiter then waits and tries again).
    errors: Arc<AtomicU64>,
    last_error: std::sync::Mutex<Option<String>>,
}

/// A lease on one of the global concurrency slots: renewed while held, released when
/// dropped; if its process dies, it expires one lease TTL after the last renewal.
pub struct GlobalPermit {
    redis: Redis,
    leases: String,
    id: String,
    renew: tokio::task::AbortHandle,
}

impl Drop for GlobalPermit {
    fn drop(&mut self) {
        self.renew.abort();
        let mut conn = self.redis.conn.clone();
        let (leases, id) = (self.leases.clone(), self.id.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = redis::cmd("ZREM")
                    .arg(&leases)
                    .arg(&id)
                    .query_async::<i64>(&mut conn)
                    .await;
            });
        }
    }
}

impl GlobalLimiter {
    /// The limiter of `provider` reached with the key in variable `key_variable` for `model`,
    /// with the limits of `s` (`max_batch` as for [`crate::limit::Limiter::new`]). A lease
    /// is renewed while its request runs and expires `lease_ttl` after its holder stopped
    /// renewing it (died).
    pub fn new(
        redis: Redis,
        provider: &str,
        key_variable: &str,
        model: &str,
        s: &LimitSettings,
        max_batch: usize,
        lease_ttl: Duration,
    ) -> GlobalLimiter {
        let plan = s.schedules(max_batch);
        let clean = |s: &str| s.replace(['{', '}', ':'], "_");
        GlobalLimiter {
            redis,
            prefix: format!(
                "puzzlegen:limit:{{{}:{}:{}}}",
                clean(provider),
                clean(key_variable),
                clean(model)
            ),
            counts: s.rpm_counts,
            rpm: plan.rpm,
            per_minute: s.requests_per_minute * 60.0 / s.window.as_secs_f64().max(1e-3),
            interval: plan.interval,
            tpm: plan.tpm,
            max_concurrent: s.max_concurrent_requests.max(1),
            lease_ttl,
            next_lease: AtomicU64::new(0),
            process: format!("{}-{:x}", std::process::id(), unique()),
            errors: Arc::new(AtomicU64::new(0)),
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// The key prefix (tests and `redis-cli` users look at the keys under it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Waits until the global limits let a request of `texts` texts and about `tokens` tokens
    /// go out. While Redis cannot be reached it waits and tries again (the service's stall
    /// timeout ends a run that waits too long), logging the error.
    pub async fn acquire(&self, texts: usize, tokens: usize) -> GlobalPermit {
        let id = format!(
            "{}-{}",
            self.process,
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        );
        let cells = match self.counts {
            RpmCounts::Items => (texts as u32).clamp(1, self.rpm.burst),
            RpmCounts::Requests => 1,
        };
        let off = Schedule {
            period: Duration::ZERO,
            burst: 1,
        };
        let interval = self.interval.unwrap_or(off);
        let tpm = self.tpm.unwrap_or(off);
        let tokens = (tokens as u32).clamp(1, tpm.burst.max(1));
        loop {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(ACQUIRE)
                .arg(7)
                .arg(self.key("rpm"))
                .arg(self.key("interval"))
                .arg(self.key("tpm"))
                .arg(self.key("leases"))
                .arg(self.key("pause"))
                .arg(self.key("second"))
                .arg(self.key("settings"))
                .arg(&id)
                .arg(self.lease_ttl.as_micros() as u64)
                .arg(self.max_concurrent)
                .arg(micros(self.rpm))
                .arg(self.rpm.burst)
                .arg(cells)
                .arg(micros(interval))
                .arg(interval.burst)
                .arg(1)
                .arg(micros(tpm))
                .arg(tpm.burst)
                .arg(tokens)
                .arg(texts)
                .arg(self.per_minute)
                .arg(match self.counts {
                    RpmCounts::Items => "items",
                    RpmCounts::Requests => "requests",
                })
                .arg(crate::embed::MAX_SERVER_DELAY.as_micros() as u64);
            let mut conn = self.redis.conn.clone();
            match cmd.query_async::<i64>(&mut conn).await {
                Ok(0) => {
                    // Redis answers again: an earlier error no longer explains a stall.
                    self.last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    return self.permit(id);
                }
                Ok(stale) if stale < 0 => {
                    tracing::warn!(
                        "Redis limiter at {}: the shared 429 pause {} was {}, longer than any \
                         delay a server can ask for ({} s): treated as stale and removed",
                        self.redis.shown(),
                        self.key("pause"),
                        if stale == -1 {
                            "not a number".to_owned()
                        } else {
                            format!("{:.0} s ahead", -stale as f64 / 1e6)
                        },
                        crate::embed::MAX_SERVER_DELAY.as_secs()
                    );
                }
                Ok(wait) => {
                    tokio::time::sleep(Duration::from_micros(wait.max(500) as u64)).await;
                }
                Err(e) => {
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("Redis at {}: {}", self.redis.shown(), describe(&e)));
                    let n = self.errors.fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(20) {
                        tracing::warn!(
                            "Redis limiter at {}: {} (waiting, then trying again)",
                            self.redis.shown(),
                            describe(&e)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// The server asked for `delay`: no process sharing this limiter starts a request before
    /// it has passed (on the Redis clock).
    pub async fn back_off(&self, delay: Duration) {
        let mut conn = self.redis.conn.clone();
        let r = redis::cmd("EVAL")
            .arg(PAUSE)
            .arg(2)
            .arg(self.key("pause"))
            .arg(self.key("429s"))
            .arg(delay.as_micros() as u64)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(
                "Redis limiter at {}: cannot share a 429 pause: {}",
                self.redis.shown(),
                describe(&e)
            );
        }
    }

    /// Redis errors met while acquiring.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last Redis error met while acquiring (for the stall message: a run that waits on
    /// an unreachable Redis names it as the cause).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lease `id`, just taken, renewed every third of the lease TTL until dropped.
    fn permit(&self, id: String) -> GlobalPermit {
        let (mut conn, leases) = (self.redis.conn.clone(), self.key("leases"));
        let (lease, ttl) = (id.clone(), self.lease_ttl);
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let _ = redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(&leases)
                    .arg(&lease)
                    .arg(ttl.as_micros() as u64)
                    .query_async::<i64>(&mut conn)
                    .await;
            }
        })
        .abort_handle();
        GlobalPermit {
            redis: self.redis.clone(),
            leases: self.key("leases"),
            id,
            renew,
        }
    }
}

/// A global limiter as `puzzlegen status` shows it; a figure whose key cannot be read (see
/// [`Inspector`]) is `None`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimiterStatus {
    /// `provider:key variable:model`.
    pub name: String,
    /// The configured limit per minute, in `unit`.
    pub limit_per_minute: Option<f64>,
    /// `items` (texts) or `requests`.
    pub unit: Option<String>,
    /// Requests let through in the last 60 s, by every process.
    pub requests_last_minute: Option<u64>,
    /// Texts in them.
    pub texts_last_minute: Option<u64>,
    /// Of `limit_per_minute`, what the last 60 s achieved (in `unit`).
    pub share_of_limit: Option<f64>,
    /// Seconds left of a pause a 429 set (0: none).
    pub pause_seconds: Option<f64>,
    /// 429s reported by any process (the last day).
    pub rate_limited: Option<u64>,
    pub leases_in_use: Option<u64>,
    pub max_concurrent: Option<u64>,
}

/// Every limiter used on `redis` in the last day (found by its settings key); what cannot be
/// read is named in `inspector`.
pub(crate) async fn status_of_all(
    redis: &Redis,
    inspector: &mut Inspector,
) -> redis::RedisResult<Vec<LimiterStatus>> {
    let mut conn = redis.conn.clone();
    let mut all = Vec::new();
    for settings in scan(&mut conn, "puzzlegen:limit:*:settings").await? {
        let prefix = settings.trim_end_matches(":settings");
        all.push(status_of(&mut conn, inspector, prefix).await?);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// The limiter whose keys start with `prefix`, read in one transaction on the Redis clock.
async fn status_of(
    conn: &mut crate::distributed::Conn,
    inspector: &mut Inspector,
    prefix: &str,
) -> redis::RedisResult<LimiterStatus> {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    let now_us = seconds * 1_000_000 + micros;
    let now = now_us.to_string();
    let key = |name: &str| format!("{prefix}:{name}");
    let mut reads = vec![
        Read::new(key("settings"), "hash", &["HGETALL", &key("settings")]),
        Read::new(key("pause"), "string", &["GET", &key("pause")]),
        Read::new(key("429s"), "string", &["GET", &key("429s")]),
        Read::new(
            key("leases"),
            "zset",
            &["ZCOUNT", &key("leases"), &now, "+inf"],
        ),
    ];
    for s in seconds - 59..=seconds {
        let second = key(&format!("second:{s}"));
        reads.push(Read::new(
            &second,
            "hash",
            &["HMGET", &second, "requests", "texts"],
        ));
    }
    let answers = inspector.read(conn, &reads).await?;
    let conf = answers[0].as_ref().map(fields);
    let limit = conf.as_ref().and_then(|c| {
        inspector.number::<f64>(&reads[0].key, Some("per_minute"), c.get("per_minute"), 0.0)
    });
    let concurrency = conf.as_ref().and_then(|c| {
        inspector.number::<u64>(&reads[0].key, Some("concurrency"), c.get("concurrency"), 0)
    });
    let unit = conf.as_ref().map(|c| {
        c.get("unit")
            .and_then(text)
            .unwrap_or_else(|| "items".into())
    });
    let pause = inspector.value_of::<f64>(&reads[1], &answers[1], 0.0);
    let rate_limited = inspector.value_of::<u64>(&reads[2], &answers[2], 0);
    let leases = inspector.value_of::<u64>(&reads[3], &answers[3], 0);
    // A counter that cannot be read leaves its sum unknown.
    let (mut requests, mut texts) = (Some(0u64), Some(0u64));
    for (read, answer) in reads[4..].iter().zip(&answers[4..]) {
        let mut count = |i: usize, field: &str| {
            let Some(Value::Array(v)) = answer else {
                return answer.as_ref().map(|_| 0);
            };
            inspector.number::<u64>(&read.key, Some(field), v.get(i), 0)
        };
        let (r, t) = (count(0, "requests"), count(1, "texts"));
        requests = requests.zip(r).map(|(a, b)| a + b);
        texts = texts.zip(t).map(|(a, b)| a + b);
    }
    let achieved = match unit.as_deref() {
        Some("requests") => requests,
        Some(_) => texts,
        None => None,
    };
    Ok(LimiterStatus {
        name: prefix
            .trim_start_matches("puzzlegen:limit:")
            .trim_matches(['{', '}'])
            .to_owned(),
        limit_per_minute: limit,
        unit,
        requests_last_minute: requests,
        texts_last_minute: texts,
        share_of_limit: achieved
            .zip(limit)
            .map(|(a, l)| if l > 0.0 { a as f64 / l } else { 0.0 }),
        pause_seconds: pause.map(|p| ((p - now_us as f64) / 1e6).max(0.0)),
        rate_limited,
        leases_in_use: leases,
        max_concurrent: concurrency,
    })
}

/// Every key matching `pattern` (SCAN: Redis is not blocked however many keys it holds), on
/// every master of a cluster.
pub(crate) async fn scan(
    conn: &mut crate::distributed::Conn,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    for holder in conn.holders().await? {
        let mut cursor = 0u64;
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, batch): (u64, Vec<String>) = conn.query_on(&holder, &cmd).await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// A schedule's period as the script reads it: microseconds (0: the schedule is off).
fn micros(s: Schedule) -> f64 {
    s.period.as_secs_f64() * 1e6
}

/// A value unlikely to repeat between processes started at the same moment.
pub(crate) fn unique() -> u64 {
    crate::clock::unix_nanos() ^ (u64::from(std::process::id()) << 32)
}
