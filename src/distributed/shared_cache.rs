//! The cache tier every process on one Redis shares, in front of the provider (each process
//! keeps its SQLite store as its local tier, in front of this one).
//!
//! - Values: the vector as little-endian `f32` bytes under
//!   `puzzlegen:vec:{model:dimension:task}:<cache key>`; keys are hash-tagged by space, so a
//!   batch's keys share one slot (one script serves them on Redis Cluster too).
//! - A text about to be fetched is locked first (`puzzlegen:lock:{space}:<key>`, set only if
//!   absent, with an expiry that the holder renews while its request is under way): another
//!   process that needs it waits for the value instead of paying for it again. A holder that
//!   dies leaves a lock that expires within [`LOCK_TTL`]; a waiter then takes it over.
//! - Looking up and locking is one script, so a value written and its lock released between a
//!   miss and a lock cannot be fetched twice.

use std::time::Duration;

use redis::Value;

use crate::distributed::{Redis, describe, limiter::unique};
use crate::embed::{Space, Vector};

/// How long a lock lives unless its holder renews it.
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often a holder renews its locks.
pub const LOCK_RENEWAL: Duration = Duration::from_secs(3);
/// How soon a process waiting for another's text looks again (then 1.5 times later each
/// time, up to ten times this).
pub const POLL: Duration = Duration::from_millis(50);

/// KEYS: n value keys, then n lock keys. ARGV: token, lock TTL (ms). For each text: its value,
/// 1 (locked for the caller) or 0 (locked by another process).
const CLAIM: &str = r#"
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if v then
    out[i] = v
  elseif redis.call('SET', KEYS[n + i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// KEYS: n value keys, then n lock keys. ARGV: token, then n values. Stores the values, then
/// removes the caller's locks.
const PUBLISH: &str = r#"
local n = #KEYS / 2
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1 + i])
  if redis.call('GET', KEYS[n + i]) == ARGV[1] then redis.call('DEL', KEYS[n + i]) end
end
return n
"#;

/// KEYS: lock keys. ARGV: token, TTL in ms (0: release). Renews or releases the caller's locks.
const LOCKS: &str = r#"
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if ARGV[2] == '0' then redis.call('DEL', KEYS[i])
    else redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
end
return #KEYS
"#;

/// What the shared tier says about one text.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Another process (or an earlier run) paid for it.
    Found(Vector),
    /// Locked for us: fetch it, then [`SharedCache::publish`] it.
    Mine,
    /// Another process is fetching it: wait and claim again.
    Theirs,
}

/// The shared tier of one embedding space (cheap to clone).
#[derive(Clone)]
pub struct SharedCache {
    redis: Redis,
    /// `{model:dimension:task}`.
    tag: String,
    dimension: usize,
    /// This process's lock value.
    token: String,
}

impl SharedCache {
    pub fn new(redis: Redis, space: &Space) -> SharedCache {
        let clean = |s: &str| s.replace(['{', '}', ':'], "_");
        SharedCache {
            redis,
            tag: format!(
                "{{{}:{}:{}}}",
                clean(&space.model_id),
                space.dimension,
                clean(&space.task_type)
            ),
            dimension: space.dimension,
            token: format!("{}-{:x}", std::process::id(), unique()),
        }
    }

    /// The Redis key of the vector of cache key `key`.
    pub fn value_key(&self, key: &str) -> String {
        format!("puzzlegen:vec:{}:{key}", self.tag)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("puzzlegen:lock:{}:{key}", self.tag)
    }

    pub fn shown(&self) -> &str {
        self.redis.shown()
    }

    /// Looks each key up and locks the missing ones that nobody else holds, in one step.
    pub async fn claim(&self, keys: &[String]) -> Result<Vec<Claim>, String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM).arg(keys.len() * 2);
        for k in keys {
            cmd.arg(self.value_key(k));
        }
        for k in keys {
            cmd.arg(self.lock_key(k));
        }
        cmd.arg(&self.token).arg(LOCK_TTL.as_millis() as u64);
        let mut conn = self.redis.conn.clone();
        let values: Vec<Value> = cmd.query_async(&mut conn).await.map_err(|e| describe(&e))?;
        if values.len() != keys.len() {
            return Err(format!(
                "{} answers for {} texts from the claim script",
                values.len(),
                keys.len()
            ));
        }
        Ok(values
            .into_iter()
            .map(|v| match v {
                Value::BulkString(bytes) => match decode(&bytes, self.dimension) {
                    Some(v) => Claim::Found(v),
                    // Not a vector of this space: fetched again and overwritten.
                    None => Claim::Mine,
                },
                Value::Int(1) => Claim::Mine,
                _ => Claim::Theirs,
            })
            .collect())
    }

    /// Stores the vectors of `keys` (fetched under our locks) and releases the locks.
    pub async fn publish(&self, keys: &[String], vectors: &[Vector]) -> Result<(), String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUBLISH).arg(keys.len() * 2);
        for k in keys {
            cmd.arg(self.value_key(k));
        }
        for k in keys {
            cmd.arg(self.lock_key(k));
        }
        cmd.arg(&self.token);
        for v in vectors {
            cmd.arg(encode(v));
        }
        let mut conn = self.redis.conn.clone();
        cmd.query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Extends our locks on `keys` by [`LOCK_TTL`].
    pub async fn renew(&self, keys: &[String]) -> Result<(), String> {
        self.locks(keys, LOCK_TTL.as_millis() as u64).await
    }

    /// Gives up our locks on `keys` (nothing was fetched): waiters take them over at once.
    pub async fn release(&self, keys: &[String]) -> Result<(), String> {
        self.locks(keys, 0).await
    }

    async fn locks(&self, keys: &[String], ttl_ms: u64) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LOCKS).arg(keys.len());
        for k in keys {
            cmd.arg(self.lock_key(k));
        }
        cmd.arg(&self.token).arg(ttl_ms);
        let mut conn = self.redis.conn.clone();
        cmd.query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// A vector as little-endian `f32` bytes.
pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector of `bytes` if it has `dimension` finite values.
pub fn decode(bytes: &[u8], dimension: usize) -> Option<Vector> {
    if bytes.len() != dimension * 4 {
        return None;
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.iter().all(|x| x.is_finite()).then(|| Vector::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_as_f32_bytes_and_wrong_sizes_are_refused() {
        let v = [0.25f32, -1.5, 3.0];
        let bytes = encode(&v);
        assert_eq!(bytes.len(), 12);
        assert_eq!(&*decode(&bytes, 3).unwrap(), &v[..]);
        assert!(decode(&bytes, 4).is_none());
        assert!(decode(&encode(&[f32::NAN, 0.0, 0.0]), 3).is_none());
    }
}
