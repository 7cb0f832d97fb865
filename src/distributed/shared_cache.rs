//! The cache tier every process on one Redis shares, in front of the provider (each process
//! keeps its SQLite store as its local tier, in front of this one).
//!
//! - Values: the vector as little-endian `f32` bytes under
//!   `puzzlegen:vec:{model:dimension:task:sNN}:<cache key>`, `NN` one of [`SHARDS`] buckets
//!   chosen by a stable hash of the cache key: a text's value and lock share a slot, and a
//!   space's vectors spread over [`SHARDS`] slots, so Redis Cluster can shard them. A batch is
//!   one script call per bucket, all in one pipeline (one round trip).
//! - A text about to be fetched is locked first (`puzzlegen:lock:{space}:<key>`, set only if
//!   absent, with an expiry that the holder renews while its request is under way): another
//!   process that needs it waits for the value instead of paying for it again. A holder that
//!   dies leaves a lock that expires within [`LOCK_TTL`]; a waiter then takes it over.
//! - Looking up and locking is one script, so a value written and its lock released between a
//!   miss and a lock cannot be fetched twice.

use std::time::Duration;

use redis::Value;

use crate::distributed::{Redis, describe, limiter::unique};
use crate::embed::{Space, Vector, from_bytes, to_bytes};

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

/// Buckets a space's keys are spread over (each its own hash tag, so its own cluster slot).
pub const SHARDS: u64 = 64;

/// The bucket of cache key `key`: FNV-1a, the same in every build and on every machine.
fn shard(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % SHARDS
}

/// The positions of `keys` grouped by bucket, buckets in first-seen order.
fn by_shard(keys: &[String]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let s = shard(k);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, v)) => v.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    groups.into_iter().map(|(_, v)| v).collect()
}

/// What the shared tier says about one text.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Another process (or an earlier run) paid for it.
    Found(Vector),
    /// Locked for us: fetch it, then [`SharedCache::publish`] it.
    Mine,
    /// Another process is fetching it: wait and claim again.
    Theirs,
    /// What is stored there is not a usable vector of this space (the reason, see
    /// [`crate::embed::check_vector`]): fetch it and [`SharedCache::publish`] it over that.
    Unusable(String),
}

/// The shared tier of one embedding space (cheap to clone).
#[derive(Clone)]
pub struct SharedCache {
    redis: Redis,
    /// `model:dimension:task`, the hash tag's stem.
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
                "{}:{}:{}",
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
        format!("puzzlegen:vec:{{{}:s{:02}}}:{key}", self.tag, shard(key))
    }

    fn lock_key(&self, key: &str) -> String {
        format!("puzzlegen:lock:{{{}:s{:02}}}:{key}", self.tag, shard(key))
    }

    /// Runs `script` once per bucket of `keys` (in one pipeline), with the value keys then the
    /// lock keys of the bucket's texts (`values` false: lock keys only), then `args` and the
    /// bucket's `per_key` arguments. Answers in bucket order, with each bucket's positions.
    async fn per_shard<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[String],
        values: bool,
        args: &[String],
        per_key: &[Vec<u8>],
    ) -> Result<Vec<(Vec<usize>, T)>, String> {
        let groups = by_shard(keys);
        let mut pipe = redis::pipe();
        for g in &groups {
            let cmd = pipe.cmd("EVAL").arg(script);
            cmd.arg(if values { g.len() * 2 } else { g.len() });
            if values {
                for &i in g {
                    cmd.arg(self.value_key(&keys[i]));
                }
            }
            for &i in g {
                cmd.arg(self.lock_key(&keys[i]));
            }
            cmd.arg(args);
            for &i in g.iter().filter(|_| !per_key.is_empty()) {
                cmd.arg(&per_key[i]);
            }
        }
        let mut conn = self.redis.conn.clone();
        let answers: Vec<T> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| describe(&e))?;
        Ok(groups.into_iter().zip(answers).collect())
    }

    pub fn shown(&self) -> &str {
        self.redis.shown()
    }

    /// Which of `keys` the tier holds a value for, locking and changing nothing (`puzzlegen
    /// plan`).
    pub async fn peek(&self, keys: &[String]) -> Result<Vec<bool>, String> {
        let mut found = Vec::with_capacity(keys.len());
        let mut conn = self.redis.conn.clone();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("EXISTS").arg(self.value_key(k));
            }
            let answers: Vec<bool> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| describe(&e))?;
            found.extend(answers);
        }
        Ok(found)
    }

    /// Looks each key up and locks the missing ones that nobody else holds, in one step.
    pub async fn claim(&self, keys: &[String]) -> Result<Vec<Claim>, String> {
        let ttl = LOCK_TTL.as_millis().to_string();
        let answers: Vec<(Vec<usize>, Vec<Value>)> = self
            .per_shard(CLAIM, keys, true, &[self.token.clone(), ttl], &[])
            .await?;
        let mut claims = vec![Claim::Theirs; keys.len()];
        for (positions, values) in answers {
            if values.len() != positions.len() {
                return Err(format!(
                    "{} answers for {} texts from the claim script",
                    values.len(),
                    positions.len()
                ));
            }
            for (i, v) in positions.into_iter().zip(values) {
                claims[i] = match v {
                    Value::BulkString(bytes) => match from_bytes(&bytes, self.dimension) {
                        Ok(v) => Claim::Found(v),
                        Err(reason) => Claim::Unusable(reason),
                    },
                    Value::Int(1) => Claim::Mine,
                    _ => Claim::Theirs,
                };
            }
        }
        Ok(claims)
    }

    /// Stores the vectors of `keys` (fetched under our locks) and releases the locks.
    pub async fn publish(&self, keys: &[String], vectors: &[Vector]) -> Result<(), String> {
        let bytes: Vec<Vec<u8>> = vectors.iter().map(|v| to_bytes(v)).collect();
        self.per_shard::<i64>(
            PUBLISH,
            keys,
            true,
            std::slice::from_ref(&self.token),
            &bytes,
        )
        .await
        .map(|_| ())
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
        let args = [self.token.clone(), ttl_ms.to_string()];
        self.per_shard::<i64>(LOCKS, keys, false, &args, &[])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_buckets_and_a_text_keeps_its_bucket() {
        let keys: Vec<String> = (0..2000).map(|i| format!("word{i}")).collect();
        let used: std::collections::HashSet<u64> = keys.iter().map(|k| shard(k)).collect();
        assert_eq!(used.len() as u64, SHARDS, "every bucket used by 2,000 keys");
        // Fixed values: every build and machine must agree on a key's bucket.
        assert_eq!(shard(""), 0xcbf2_9ce4_8422_2325 % SHARDS);
        assert_eq!(shard("mercury"), shard("mercury"));
        let groups = by_shard(&keys[..10]);
        let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(
            groups
                .iter()
                .all(|g| g.iter().all(|&i| shard(&keys[i]) == shard(&keys[g[0]])))
        );
    }
}
