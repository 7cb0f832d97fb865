//! The embedding service between theme workers and a provider (the heart of a paid run).
//!
//! - Cache first: a text already embedded in this space is never sent again.
//! - One embedding per [`cache::key`] (the original's `text.lower().strip()`): `Mercury`,
//!   `mercury` and ` MERCURY ` are looked up, waited for and cached as one. The text sent is
//!   the first spelling asked for (trimmed, case as written): the first `embed`/`prefetch` call
//!   to queue the key decides, and within a call the first text; the cache row keeps it as
//!   its `word`.
//! - In-flight de-duplication: a text already queued or in flight is not queued again; every
//!   theme that needs it waits for the same answer.
//! - Coalescing: misses from all themes go to one queue; a batcher cuts it into requests of up
//!   to the provider's (and the limiter's) batch size, waiting at most `linger` for a batch to
//!   fill, so a lone request is not delayed long.
//! - Every request passes the global [`Limiter`]; 429s pause the whole limiter for the server's
//!   delay; other failures are retried with exponential back-off and jitter (`backon`) up to
//!   `max_retries`; errors no retry can fix (bad key, daily quota) stop the service at once and
//!   every waiting theme gets that error.
//! - Never silent: 429 pauses and retries are logged at the default level, at most one line per
//!   cause every few seconds (the rest at debug).
//! - Never endless: when no request has succeeded for `stall_timeout` while texts are waiting,
//!   the service stops with [`EmbedError::Stalled`] (fatal), naming the last error seen.
//! - Counters for the summary and the reports; a request counts once it was sent (one that
//!   could not be built or connect never left).

use crate::metrics::METRICS;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{self, Cache};
use crate::distributed::shared_cache::{Claim, LOCK_RENEWAL, POLL};
use crate::distributed::{Shared, SharedSetup};
use crate::embed::{EmbedError, Provider, Space, Vector, check_answer};
use crate::limit::{LimitSettings, Limiter, MINUTE, RpmCounts, estimate_tokens};

/// How the service talks to its provider.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub limits: LimitSettings,
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    /// Longest a batch waits to fill before it goes out.
    pub linger: Duration,
    /// Most texts per request (the provider's own limit applies too).
    pub batch_size: usize,
    /// The run stops when no request has succeeded for this long while texts are waiting
    /// (`gemini.stall_timeout`).
    pub stall_timeout: Duration,
}

/// Default of `gemini.stall_timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Shortest time between two default-level lines about the same kind of retry: the first of a
/// kind is logged at once, repeats at most this often, with the count of those in between.
const NOTICE_INTERVAL: Duration = Duration::from_secs(30);

impl ServiceOptions {
    /// No rate limit, generous concurrency: for the local model and tests.
    pub fn unlimited() -> ServiceOptions {
        ServiceOptions {
            limits: LimitSettings {
                requests_per_minute: 1e9,
                rpm_counts: RpmCounts::Requests,
                min_request_interval: Duration::ZERO,
                tokens_per_minute: None,
                max_concurrent_requests: 4,
                window: MINUTE,
            },
            max_retries: 3,
            retry_base_delay: Duration::from_millis(100),
            linger: Duration::from_millis(5),
            batch_size: usize::MAX,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Counters of one run, read with [`EmbeddingService::stats`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ServiceStats {
    /// Distinct texts the run needed.
    pub lookups: u64,
    /// Of those, already in the cache when first needed (not paid for in this run).
    pub cache_hits: u64,
    /// Of those, already queued or in flight for another theme (not sent again).
    pub in_flight_hits: u64,
    /// Texts taken from the shared Redis tier: paid for by another process (a worker, another
    /// run), not by this one.
    pub shared_hits: u64,
    /// Vectors read from a cache tier (SQLite, Redis) that could not be used (not finite, a
    /// wrong size, an absurd norm): their texts were embedded again.
    pub bad_cached_vectors: u64,
    /// Texts the provider answered correctly.
    pub texts_embedded: u64,
    /// Texts sent to the provider, retries included.
    pub texts_sent: u64,
    /// Requests made to the provider, retries included.
    pub requests: u64,
    /// Retries by cause (`rate_limited`, `transient`, `bad_answer`).
    pub retries: BTreeMap<String, u64>,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Wall-clock seconds during which at least one request waited on a rate limit (or a 429
    /// pause): never more than the run lasted.
    pub limiter_wait_seconds: f64,
    /// The setting whose limit held requests back longest, if any did, and what to do.
    pub limiter_held_most_by: Option<&'static str>,
    /// Most requests in flight at once.
    pub peak_concurrency: usize,
    /// Requests let through in the last 60 s (the original's `requests_this_minute`).
    pub requests_last_minute: u64,
}

impl ServiceStats {
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.cache_hits as f64 / self.lookups as f64
        }
    }
}

type Reply = oneshot::Sender<Result<Vector, EmbedError>>;

/// A text to embed: its cache key and the spelling sent to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text {
    key: String,
    spelling: String,
}

struct Inner {
    provider: Arc<dyn Provider>,
    cache: Cache,
    /// Keys queued or in flight, with everyone waiting for them.
    waiting: Mutex<HashMap<String, Vec<Reply>>>,
    limiter: Limiter,
    options: ServiceOptions,
    max_batch: usize,
    /// Cancelled when an error no retry can fix was seen, or when a shutdown's grace is over:
    /// requests in flight are abandoned.
    stopped: CancellationToken,
    /// Cancelled when a shutdown begins (and whenever `stopped` is): nothing new is sent.
    draining: CancellationToken,
    fatal: Mutex<Option<EmbedError>>,
    /// Every text needed so far in this run (for `lookups` and `cache_hits`).
    seen: Mutex<std::collections::HashSet<String>>,
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    in_flight_hits: AtomicU64,
    shared_hits: AtomicU64,
    texts_embedded: AtomicU64,
    texts_sent: AtomicU64,
    requests: AtomicU64,
    rate_limited: AtomicU64,
    retries: Mutex<BTreeMap<String, u64>>,
    /// Requests answered correctly (the stall watchdog watches it move).
    successes: AtomicU64,
    /// The last error a request met, for the stall message.
    last_error: Mutex<Option<String>>,
    /// When each kind of retry was last logged at the default level.
    /// Per kind of notice: when one was last logged at warn level, and how many went to debug
    /// since.
    notices: Mutex<HashMap<&'static str, (Instant, u64)>>,
    /// The limiter and cache tier shared through Redis, if the run has one
    /// (`crate::distributed`).
    shared: Option<Shared>,
}

impl Inner {
    /// Logs `line` at warn level unless a line of this `kind` was logged in the last
    /// [`NOTICE_INTERVAL`] (then at debug, and counted in the next warn line).
    fn notice(&self, kind: &'static str, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let due = {
            let mut notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
            match notices.get_mut(kind) {
                Some((t, held)) if now.duration_since(*t) < NOTICE_INTERVAL => {
                    *held += 1;
                    None
                }
                _ => notices
                    .insert(kind, (now, 0))
                    .map_or(Some(0), |(_, held)| Some(held)),
            }
        };
        match due {
            Some(0) => tracing::warn!("{}", line()),
            Some(held) => {
                tracing::warn!("{} ({held} more like it since the last such line)", line())
            }
            None => tracing::debug!("{}", line()),
        }
    }

    /// Stops the service with `error`: every waiting theme gets it, nothing more is sent.
    fn stop_fatal(&self, error: &EmbedError) {
        tracing::error!("{error}");
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error.clone());
        self.stopped.cancel();
    }
}

/// Cache, coalescing batcher and limiter in front of a provider.
pub struct EmbeddingService {
    inner: Arc<Inner>,
    queue: mpsc::UnboundedSender<Text>,
    tasks: TaskTracker,
}

impl EmbeddingService {
    /// Starts the service with a cache that lives only as long as it does.
    pub fn new(provider: Arc<dyn Provider>, options: ServiceOptions) -> EmbeddingService {
        let cache = Cache::in_memory(provider.space().clone());
        Self::with_cache(provider, options, cache)
    }

    /// Starts the service in front of `cache` (its batcher runs on the current tokio
    /// runtime). The cache must be of the provider's space.
    pub fn with_cache(
        provider: Arc<dyn Provider>,
        options: ServiceOptions,
        cache: Cache,
    ) -> EmbeddingService {
        Self::with_shared(provider, options, cache, None)
    }

    /// As [`EmbeddingService::with_cache`], sharing a limiter and a cache tier with other
    /// processes through Redis when `shared` is given: every request then passes the local
    /// limiter and the global one, and every text is looked up in (and written to) the
    /// shared tier before the provider is asked.
    pub fn with_shared(
        provider: Arc<dyn Provider>,
        options: ServiceOptions,
        cache: Cache,
        shared: Option<SharedSetup>,
    ) -> EmbeddingService {
        assert_eq!(cache.space(), provider.space(), "cache of another space");
        let max_batch = options
            .limits
            .max_batch(provider.max_batch().min(options.batch_size));
        let stopped = CancellationToken::new();
        let shared = shared.map(|s| s.build(&options.limits, max_batch, provider.space()));
        let inner = Arc::new(Inner {
            cache,
            limiter: Limiter::new(&options.limits, max_batch),
            provider,
            waiting: Mutex::new(HashMap::new()),
            options,
            max_batch,
            draining: stopped.child_token(),
            stopped,
            fatal: Mutex::new(None),
            seen: Mutex::new(std::collections::HashSet::new()),
            lookups: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            in_flight_hits: AtomicU64::new(0),
            shared_hits: AtomicU64::new(0),
            texts_embedded: AtomicU64::new(0),
            texts_sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            retries: Mutex::new(BTreeMap::new()),
            successes: AtomicU64::new(0),
            last_error: Mutex::new(None),
            notices: Mutex::new(HashMap::new()),
            shared,
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let tasks = TaskTracker::new();
        tasks.spawn(batcher(Arc::clone(&inner), rx, tasks.clone()));
        tasks.spawn(watchdog(Arc::clone(&inner)));
        EmbeddingService {
            inner,
            queue,
            tasks,
        }
    }

    pub fn space(&self) -> &Space {
        self.inner.cache.space()
    }

    /// The cache in front of the provider.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The error that stopped the service, if one did.
    /// Stops the service with `error` (a step beside it that cannot go on): every waiting
    /// theme gets it, nothing more is sent, and the run ends with it.
    pub fn stop_with(&self, error: EmbedError) {
        self.inner.stop_fatal(&error);
    }

    pub fn fatal_error(&self) -> Option<EmbedError> {
        self.inner
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues every missing text of `texts` without waiting for the answers, so that batches
    /// fill up ahead of the themes that will need them.
    pub fn prefetch(&self, texts: &[String]) {
        // An error here is the fatal one, which `embed` reports to every theme.
        let _ = self.enqueue(texts);
    }

    /// One vector per text, in order. Texts with the same [`cache::key`] (differing only in
    /// case or surrounding whitespace) get the same vector, embedded once.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vector>, EmbedError> {
        let (mut found, receivers) = self.enqueue(texts)?;
        for (i, rx) in receivers {
            let v = rx.await.unwrap_or_else(|_| {
                Err(EmbedError::Transient(
                    "the embedding service stopped".into(),
                ))
            })?;
            for slot in i {
                found[slot] = Some(v.clone());
            }
        }
        Ok(found
            .into_iter()
            .map(|v| v.expect("every missing text was answered above"))
            .collect())
    }

    /// Looks `texts` up; registers a reply for each missing one (queueing it if nobody did).
    /// Returns the cached vectors and the receivers with the positions they fill. Counts each
    /// distinct text of the run once in `lookups`, and in `cache_hits` if it was cached then.
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        texts: &[String],
    ) -> Result<
        (
            Vec<Option<Vector>>,
            Vec<(Vec<usize>, oneshot::Receiver<Result<Vector, EmbedError>>)>,
        ),
        EmbedError,
    > {
        let inner = &self.inner;
        if let Some(e) = self.fatal_error() {
            return Err(e);
        }
        let keys: Vec<String> = texts.iter().map(|t| cache::key(t)).collect();
        let mut found = inner.cache.get_many(&keys);
        // Each missing key with the positions it fills, in order of first appearance (the
        // first position's text is the spelling sent).
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut positions: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if found[i].is_none() {
                match index.get(key.as_str()) {
                    Some(&at) => positions[at].1.push(i),
                    None => {
                        index.insert(key, positions.len());
                        positions.push((key, vec![i]));
                    }
                }
            }
        }
        {
            let mut seen = inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            for (text, v) in keys.iter().zip(&found) {
                if !seen.contains(text.as_str()) {
                    seen.insert(text.clone());
                    inner.lookups.fetch_add(1, Ordering::Relaxed);
                    if v.is_some() {
                        inner.cache_hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut receivers = Vec::with_capacity(positions.len());
        let mut waiting = inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (key, slots) in positions {
            // Answered since the first look (dispatch fills the cache before replying).
            if let Some(v) = inner.cache.get(key) {
                for &s in &slots {
                    found[s] = Some(v.clone());
                }
                continue;
            }
            let (tx, rx) = oneshot::channel();
            match waiting.get_mut(key) {
                Some(replies) => {
                    replies.push(tx);
                    inner.in_flight_hits.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    waiting.insert(key.to_owned(), vec![tx]);
                    let _ = self.queue.send(Text {
                        key: key.to_owned(),
                        spelling: texts[slots[0]].trim().to_owned(),
                    });
                }
            }
            receivers.push((slots, rx));
        }
        Ok((found, receivers))
    }

    /// How long the service may go without a successful request while work waits
    /// (`gemini.stall_timeout`): how long a caller may wait on anything the run needs.
    pub fn stall_timeout(&self) -> Duration {
        self.inner.options.stall_timeout
    }

    pub fn stats(&self) -> ServiceStats {
        let i = &self.inner;
        ServiceStats {
            lookups: i.lookups.load(Ordering::Relaxed),
            cache_hits: i.cache_hits.load(Ordering::Relaxed),
            in_flight_hits: i.in_flight_hits.load(Ordering::Relaxed),
            shared_hits: i.shared_hits.load(Ordering::Relaxed),
            bad_cached_vectors: i.cache.rejected(),
            texts_embedded: i.texts_embedded.load(Ordering::Relaxed),
            texts_sent: i.texts_sent.load(Ordering::Relaxed),
            requests: i.requests.load(Ordering::Relaxed),
            retries: i.retries.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            rate_limited: i.rate_limited.load(Ordering::Relaxed),
            limiter_wait_seconds: i.limiter.waited().as_secs_f64(),
            limiter_held_most_by: i.limiter.held_most_by(),
            peak_concurrency: i.limiter.peak_concurrency(),
            requests_last_minute: i.limiter.requests_last_minute() as u64,
        }
    }

    /// Stops sending at once: queued texts and texts waiting on the limiter or a retry are
    /// dropped (never paid for; their callers get an error), requests in flight go on. The
    /// run calls this when told to stop, so a signal never buys another request.
    pub fn stop_sending(&self) {
        self.inner.draining.cancel();
    }

    /// Stops sending: queued texts are dropped (never paid for), requests in flight may
    /// finish within `grace`, then they are abandoned. No task of the service outlives this.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.draining.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still in flight after {:.1} s: abandoned",
                grace.as_secs_f64()
            );
            self.inner.stopped.cancel();
            self.tasks.wait().await;
        }
    }
}

impl Drop for EmbeddingService {
    fn drop(&mut self) {
        self.inner.stopped.cancel();
    }
}

/// Cuts the queue into batches and starts a request for each.
async fn batcher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Text>, tasks: TaskTracker) {
    loop {
        let first = tokio::select! {
            t = rx.recv() => match t { Some(t) => t, None => return },
            _ = inner.draining.cancelled() => break,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + inner.options.linger;
        while batch.len() < inner.max_batch {
            tokio::select! {
                biased;
                t = rx.recv() => match t { Some(t) => batch.push(t), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        tasks.spawn(dispatch(Arc::clone(&inner), batch));
    }
    // Stopped: answer everything still queued.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(t) = rx.try_recv() {
        rest.push(t);
    }
    let e = stop_reason(&inner);
    fail(&inner, &rest, &e);
}

/// Stops the service when no request has succeeded for `stall_timeout` while texts were
/// waiting (queued, paused or in flight). The clock starts when texts start waiting.
async fn watchdog(inner: Arc<Inner>) {
    let limit = inner.options.stall_timeout;
    let tick = (limit / 20).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut since = Instant::now();
    let mut seen = inner.successes.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = inner.draining.cancelled() => return,
        }
        let now = Instant::now();
        let successes = inner.successes.load(Ordering::Relaxed);
        let idle = inner
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if idle || successes != seen {
            seen = successes;
            since = now;
            continue;
        }
        if now.duration_since(since) >= limit {
            let own = inner
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            // A shared limiter that cannot reach Redis holds every request back: name it.
            let redis = inner
                .shared
                .as_ref()
                .and_then(|s| s.limiter.as_ref()?.last_error())
                .map(|e| format!("{e} (the shared limiter cannot reach Redis)"));
            let last_error = match (own, redis) {
                (Some(own), Some(redis)) => format!("{own}; {redis}"),
                (own, redis) => own
                    .or(redis)
                    .unwrap_or_else(|| "none (requests were still waiting for an answer)".into()),
            };
            inner.stop_fatal(&EmbedError::Stalled {
                seconds: limit.as_secs_f64(),
                last_error,
            });
            return;
        }
    }
}

fn stop_reason(inner: &Inner) -> EmbedError {
    inner
        .fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| EmbedError::Transient("the run is stopping".into()))
}

/// The back-off schedules of one batch's retries.
struct Backoffs {
    /// Failures other than 429s.
    delays: backon::ExponentialBackoff,
    /// 429s.
    pacing: backon::ExponentialBackoff,
}

impl Backoffs {
    /// Fresh schedules for a batch, from the service's retry options.
    fn new(o: &ServiceOptions) -> Backoffs {
        let backoff = || {
            backon::ExponentialBuilder::default()
                .with_min_delay(o.retry_base_delay.max(Duration::from_millis(1)))
                .with_max_delay(Duration::from_secs(60))
                .with_jitter()
        };
        let delays = backoff().with_max_times(o.max_retries as usize).build();
        // 429s are the server pacing us, not failures: they have their own, larger allowance.
        let pacing = backoff()
            .with_max_times(o.max_retries as usize * 4 + 10)
            .build();
        Backoffs { delays, pacing }
    }

    /// The pause before retrying after `error` (a 429 pauses the whole limiter for it and is
    /// logged here); `None` when the allowance for the error is used up.
    fn next(&mut self, inner: &Inner, error: &EmbedError) -> Option<Duration> {
        match error {
            EmbedError::RateLimited { retry_after } => {
                let n = inner.rate_limited.fetch_add(1, Ordering::Relaxed) + 1;
                METRICS.rate_limited.inc();
                let d = self.pacing.next();
                match (retry_after, d) {
                    (_, None) => None,
                    (Some(server), Some(_)) => Some(*server),
                    (None, Some(d)) => Some(d),
                }
                .inspect(|d| {
                    inner.limiter.back_off(*d);
                    if let Some(global) = inner.shared.as_ref().and_then(|s| s.limiter.clone()) {
                        let d = *d;
                        tokio::spawn(async move { global.back_off(d).await });
                    }
                    inner.notice("rate_limited", || {
                        format!(
                            "rate limited by the API (HTTP 429): pausing all requests for \
                             {:.1} s ({n} so far)",
                            d.as_secs_f64()
                        )
                    });
                })
            }
            _ => self.delays.next(),
        }
    }
}

/// Sends one batch, retrying as the error allows, and answers everyone waiting for it.
async fn dispatch(inner: Arc<Inner>, batch: Vec<Text>) {
    if inner.shared.is_some() {
        dispatch_shared(inner, batch).await
    } else {
        send_batch(inner, batch).await
    }
}

// --- the shared (Redis) tier ---------------------------------------------------------------

/// [`send_batch`] behind the shared tier: texts another process already paid for are taken
/// from it; texts locked for us are sent, then published (their locks renewed meanwhile);
/// texts another process is fetching are waited for, and taken over if its lock expires.
/// If Redis cannot be reached, the texts are sent as if there were no shared tier.
async fn dispatch_shared(inner: Arc<Inner>, mut pending: Vec<Text>) {
    let cache = inner.shared.as_ref().expect("shared").cache.clone();
    // Waiting for another process: look again soon, then less and less often.
    let mut poll = POLL;
    loop {
        let keys: Vec<String> = pending.iter().map(|t| t.key.clone()).collect();
        let claims = match cache.claim(&keys).await {
            Ok(c) => c,
            Err(e) => {
                inner.notice("redis", || {
                    format!(
                        "Redis at {}: {e}; embedding {} text(s) without the shared cache",
                        cache.shown(),
                        pending.len()
                    )
                });
                return send_batch(inner, pending).await;
            }
        };
        let (mut mine, mut theirs, mut found, mut vectors) = (vec![], vec![], vec![], vec![]);
        for (text, claim) in pending.into_iter().zip(claims) {
            match claim {
                Claim::Found(v) => {
                    found.push(text);
                    vectors.push(v);
                }
                Claim::Mine => mine.push(text),
                Claim::Unusable(reason) => {
                    let source = format!("the shared Redis tier at {}", cache.shown());
                    inner.cache.reject(&text.key, &source, &reason);
                    mine.push(text)
                }
                Claim::Theirs => theirs.push(text),
            }
        }
        answer(&inner, &found, vectors);
        if !mine.is_empty() {
            send_and_publish(&inner, &cache, mine).await;
        }
        if theirs.is_empty() {
            return;
        }
        pending = std::mem::take(&mut theirs);
        tokio::select! {
            _ = tokio::time::sleep(poll) => poll = (poll * 3 / 2).min(POLL * 10),
            _ = inner.draining.cancelled() => return fail(&inner, &pending, &stop_reason(&inner)),
        }
    }
}

/// Sends `batch` (locked for us in the shared tier), renewing the locks meanwhile, then
/// publishes what was answered and releases the rest.
async fn send_and_publish(
    inner: &Arc<Inner>,
    cache: &crate::distributed::SharedCache,
    batch: Vec<Text>,
) {
    let keys: Vec<String> = batch.iter().map(|t| t.key.clone()).collect();
    let renewal = tokio::spawn({
        let (cache, keys) = (cache.clone(), keys.clone());
        async move {
            loop {
                tokio::time::sleep(LOCK_RENEWAL).await;
                let _ = cache.renew(&keys).await;
            }
        }
    });
    send_batch(Arc::clone(inner), batch).await;
    renewal.abort();
    let (mut done, mut vectors, mut undone) = (vec![], vec![], vec![]);
    for k in keys {
        match inner.cache.get(&k) {
            Some(v) => {
                done.push(k);
                vectors.push(v);
            }
            None => undone.push(k),
        }
    }
    let published = if done.is_empty() {
        Ok(())
    } else {
        cache.publish(&done, &vectors).await
    };
    let released = cache.release(&undone).await;
    if let Err(e) = published.and(released) {
        inner.notice("redis", || {
            format!("Redis at {}: cannot share embeddings: {e}", cache.shown())
        });
    }
}

/// Answers everyone waiting for `texts` with `vectors` found in the shared tier (kept in the
/// local cache too; not counted as embedded by this run).
fn answer(inner: &Inner, texts: &[Text], vectors: Vec<Vector>) {
    if texts.is_empty() {
        return;
    }
    inner
        .shared_hits
        .fetch_add(texts.len() as u64, Ordering::Relaxed);
    METRICS
        .cache_hits
        .with_label_values(&["redis"])
        .inc_by(texts.len() as u64);
    let words: Vec<(String, String)> = texts
        .iter()
        .map(|t| (t.key.clone(), t.spelling.clone()))
        .collect();
    inner.cache.insert_words(&words, &vectors);
    let mut waiting = inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
    for (text, v) in texts.iter().zip(vectors) {
        for reply in waiting.remove(&text.key).unwrap_or_default() {
            let _ = reply.send(Ok(v.clone()));
        }
    }
}

// --- end of the shared tier ----------------------------------------------------------------

/// Sends one batch, retrying as the error allows, and answers everyone waiting for it.
async fn send_batch(inner: Arc<Inner>, batch: Vec<Text>) {
    let mut backoffs = Backoffs::new(&inner.options);
    let tokens: usize = batch.iter().map(|t| estimate_tokens(&t.spelling)).sum();
    let spellings: Vec<String> = batch.iter().map(|t| t.spelling.clone()).collect();
    loop {
        let Some(result) = send_once(&inner, &batch, &spellings, tokens).await else {
            return;
        };
        let error = match result {
            Ok(vectors) => {
                inner.successes.fetch_add(1, Ordering::Relaxed);
                return deliver(&inner, &batch, vectors);
            }
            Err(e) => e,
        };
        *inner.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        if error.is_fatal() {
            inner.stop_fatal(&error);
            return fail(&inner, &batch, &error);
        }
        match backoffs.next(&inner, &error) {
            Some(d) => {
                if !wait_to_retry(&inner, &batch, &error, d).await {
                    return;
                }
            }
            None => {
                tracing::warn!("{} texts: giving up after retries: {error}", batch.len());
                return fail(&inner, &batch, &error);
            }
        }
    }
}

/// Makes one request for `batch` once the limiter lets it through, counts it if it was sent
/// and checks the answer. `None` when the service stopped first: everyone waiting for the
/// batch has then been answered with the reason.
async fn send_once(
    inner: &Inner,
    batch: &[Text],
    spellings: &[String],
    tokens: usize,
) -> Option<Result<Vec<Vec<f32>>, EmbedError>> {
    let permit = tokio::select! {
        p = inner.limiter.acquire(batch.len(), tokens) => p,
        _ = inner.draining.cancelled() => {
            fail(inner, batch, &stop_reason(inner));
            return None;
        }
    };
    // With a Redis, the limits of every process sharing it too.
    let global = match inner.shared.as_ref().and_then(|s| s.limiter.as_ref()) {
        None => None,
        Some(g) => tokio::select! {
            p = g.acquire(batch.len(), tokens) => Some(p),
            _ = inner.draining.cancelled() => {
                fail(inner, batch, &stop_reason(inner));
                return None;
            }
        },
    };
    let sent = Instant::now();
    let result = tokio::select! {
        r = inner.provider.embed(spellings.to_vec()) => r,
        _ = inner.stopped.cancelled() => {
            // Abandoned in flight: it was sent.
            inner.requests.fetch_add(1, Ordering::Relaxed);
            inner.texts_sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            fail(inner, batch, &stop_reason(inner));
            return None;
        }
    };
    drop(permit);
    drop(global);
    // A request that could not be built or connect never left: it is not counted.
    if !matches!(
        result,
        Err(EmbedError::Setup(_) | EmbedError::Unreachable(_))
    ) {
        inner.requests.fetch_add(1, Ordering::Relaxed);
        inner
            .texts_sent
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        METRICS
            .request_seconds
            .observe(sent.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.cause(),
        };
        METRICS.requests.with_label_values(&[outcome]).inc();
    }
    Some(result.and_then(|v| {
        check_answer(&v, batch.len(), inner.cache.space().dimension)?;
        Ok(v)
    }))
}

/// Counts a retry of `batch` after `error`, logs it (429s were logged as the limiter paused)
/// and waits `d`. `false` when a shutdown began meanwhile: everyone waiting for the batch has
/// then been answered with the reason.
async fn wait_to_retry(inner: &Inner, batch: &[Text], error: &EmbedError, d: Duration) -> bool {
    // Counted when it is retried (a last failure given up on is no retry).
    *inner
        .retries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(error.cause().to_owned())
        .or_default() += 1;
    METRICS.retries.with_label_values(&[error.cause()]).inc();
    if !matches!(error, EmbedError::RateLimited { .. }) {
        inner.notice(error.cause(), || {
            format!(
                "{}; retrying {} text(s) in {:.1} s",
                error.to_string().trim_end_matches('.'),
                batch.len(),
                d.as_secs_f64()
            )
        });
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = inner.draining.cancelled() => {
            fail(inner, batch, &stop_reason(inner));
            false
        }
    }
}

fn deliver(inner: &Inner, batch: &[Text], vectors: Vec<Vec<f32>>) {
    let vectors: Vec<Vector> = vectors.into_iter().map(Vector::from).collect();
    let texts: Vec<(String, String)> = batch
        .iter()
        .map(|t| (t.key.clone(), t.spelling.clone()))
        .collect();
    inner.cache.insert_words(&texts, &vectors);
    inner
        .texts_embedded
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    METRICS.texts_embedded.inc_by(batch.len() as u64);
    let mut waiting = inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
    for (text, v) in batch.iter().zip(vectors) {
        for reply in waiting.remove(&text.key).unwrap_or_default() {
            let _ = reply.send(Ok(v.clone()));
        }
    }
}

fn fail(inner: &Inner, batch: &[Text], error: &EmbedError) {
    let mut waiting = inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
    for text in batch {
        for reply in waiting.remove(&text.key).unwrap_or_default() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::fake::FakeProvider;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn duplicates_and_cached_texts_are_not_sent_again() {
        let fake = Arc::new(FakeProvider::new(4, 2));
        let service = EmbeddingService::new(fake.clone(), ServiceOptions::unlimited());
        let texts = strings(&["a", "b", "a", "c"]);
        let v = service.embed(&texts).await.unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], v[2]);
        let sent: Vec<String> = fake.calls.lock().unwrap().concat();
        let mut sorted = sent.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            strings(&["a", "b", "c"]),
            "each text once: {sent:?}"
        );
        assert!(fake.calls.lock().unwrap().iter().all(|c| c.len() <= 2));
        service.embed(&texts[1..2]).await.unwrap();
        assert_eq!(
            fake.calls.lock().unwrap().concat().len(),
            3,
            "b came from the cache"
        );
        let s = service.stats();
        assert_eq!((s.lookups, s.cache_hits, s.texts_embedded), (3, 0, 3));
    }

    #[tokio::test]
    async fn concurrent_themes_share_one_request_per_text() {
        let fake = Arc::new(FakeProvider::new(4, 100));
        let service = Arc::new(EmbeddingService::new(
            fake.clone(),
            ServiceOptions::unlimited(),
        ));
        let mut handles = Vec::new();
        for i in 0..8 {
            let service = Arc::clone(&service);
            handles.push(tokio::spawn(async move {
                let texts: Vec<String> =
                    (0..20).map(|j| format!("w{}", (i * 5 + j) % 40)).collect();
                service.embed(&texts).await.unwrap()
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().len(), 20);
        }
        let sent = fake.calls.lock().unwrap().concat();
        let distinct: std::collections::HashSet<_> = sent.iter().collect();
        assert_eq!(sent.len(), distinct.len(), "a text was sent twice");
        assert_eq!(distinct.len(), 40);
        assert!(
            fake.calls.lock().unwrap().len() < 8,
            "misses were coalesced into batches"
        );
    }

    #[tokio::test]
    async fn texts_differing_in_case_or_spaces_are_one_text_sent_as_first_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeProvider::new(4, 100));
        let cache = Cache::open(&dir.path().join("c.sqlite3"), fake.space().clone()).unwrap();
        let service =
            EmbeddingService::with_cache(fake.clone(), ServiceOptions::unlimited(), cache);
        let v = service
            .embed(&strings(&["Mercury", "mercury", " MERCURY "]))
            .await
            .unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), vec![strings(&["Mercury"])]);
        assert_eq!(v.len(), 3);
        assert!(v[0] == v[1] && v[1] == v[2]);
        assert_eq!(&*v[0], &fake.vector_of("Mercury")[..]);

        // Across calls: the first call to queue a key decides its spelling.
        service.prefetch(&strings(&["  Venus\t"]));
        let v = service.embed(&strings(&["VENUS", "venus"])).await.unwrap();
        assert_eq!(&*v[0], &fake.vector_of("Venus")[..]);
        assert_eq!(
            fake.calls.lock().unwrap().concat(),
            strings(&["Mercury", "Venus"])
        );
        let s = service.stats();
        assert_eq!((s.lookups, s.texts_embedded), (2, 2));

        // The cache row is keyed by the key and keeps the spelling sent.
        service.cache().close().unwrap();
        let store =
            crate::cache::store::Store::open_existing(&dir.path().join("c.sqlite3")).unwrap();
        let mut rows = Vec::new();
        store
            .for_each_row(fake.space(), |r| {
                rows.push((r.key, r.word));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("mercury".to_owned(), "Mercury".to_owned()),
                ("venus".to_owned(), "Venus".to_owned())
            ]
        );
    }

    /// A provider whose every answer is `error`.
    struct Failing {
        space: Space,
        error: EmbedError,
    }

    #[async_trait::async_trait]
    impl Provider for Failing {
        fn space(&self) -> &Space {
            &self.space
        }
        fn max_batch(&self) -> usize {
            10
        }
        async fn embed(&self, _: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
            Err(self.error.clone())
        }
    }

    #[tokio::test]
    async fn no_success_for_the_stall_timeout_stops_the_service_naming_the_last_error() {
        let provider = Arc::new(Failing {
            space: crate::embed::test_space(2),
            error: EmbedError::RateLimited {
                retry_after: Some(Duration::from_millis(20)),
            },
        });
        let options = ServiceOptions {
            stall_timeout: Duration::from_millis(300),
            max_retries: 100,
            ..ServiceOptions::unlimited()
        };
        let service = EmbeddingService::new(provider, options);
        let t = Instant::now();
        let e = service.embed(&strings(&["a", "b"])).await.unwrap_err();
        let waited = t.elapsed();
        match &e {
            EmbedError::Stalled { last_error, .. } => {
                assert!(last_error.contains("HTTP 429"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_fatal());
        assert!(
            (Duration::from_millis(280)..Duration::from_secs(3)).contains(&waited),
            "{waited:?}"
        );
        assert!(matches!(
            service.fatal_error(),
            Some(EmbedError::Stalled { .. })
        ));
        assert!(service.stats().rate_limited > 3);
    }

    #[tokio::test]
    async fn requests_that_could_not_connect_are_not_counted_as_sent() {
        let provider = Arc::new(Failing {
            space: crate::embed::test_space(2),
            error: EmbedError::Unreachable("cannot connect: refused".into()),
        });
        let options = ServiceOptions {
            max_retries: 2,
            retry_base_delay: Duration::from_millis(1),
            ..ServiceOptions::unlimited()
        };
        let service = EmbeddingService::new(provider, options);
        assert!(service.embed(&strings(&["a"])).await.is_err());
        let s = service.stats();
        assert_eq!((s.requests, s.texts_sent), (0, 0));
        assert_eq!(s.retries.get("unreachable"), Some(&2));
    }
}
