//! The global request limiter shared by every batch of a run (the original `SharedRateLimiter`).
//!
//! A request goes out only when all of these allow it:
//! - `max_concurrent_requests`: a semaphore permit, held until the answer is in;
//! - `requests_per_minute`: a GCRA schedule (`governor`) in cells, one cell per text or per
//!   request (`gemini.rpm_counts`). The schedule is set so that no sliding 60 s window can hold
//!   more than the configured number, burst included: rate `(rpm - burst) / 60 s`. (The "minute"
//!   is [`LimitSettings::window`], 60 s; tests shorten it to check a budget in seconds.)
//! - `min_request_interval`: a second schedule, one cell per request, no burst;
//! - `tokens_per_minute` (optional): like the first, in estimated tokens;
//! - the server's own back-off: after a 429 every request waits until the server's delay has
//!   passed, for the whole run, not per worker.
//!
//! It also keeps account of how long it held the run back: the wall-clock time during which at
//! least one request waited on a rate limit (never more than the run lasted), and which limit
//! held it longest, so that the summary can name the setting to look at.

use crate::metrics::METRICS;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// What a request costs against the per-minute budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RpmCounts {
    /// Each text of a batch counts as one request (what Gemini appears to do; the default).
    Items,
    /// Each HTTP request counts once, whatever its size (what the original assumed).
    Requests,
}

/// Limits, as configured.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub requests_per_minute: f64,
    pub rpm_counts: RpmCounts,
    pub min_request_interval: Duration,
    pub tokens_per_minute: Option<f64>,
    pub max_concurrent_requests: usize,
    /// The "minute" of the per-minute budgets: [`MINUTE`]. Not a config key: tests shorten it
    /// so that a budget can be checked over a few seconds instead of a minute.
    #[doc(hidden)]
    pub window: Duration,
}

impl LimitSettings {
    /// Largest batch the per-minute budget allows without eating its own headroom: at most a
    /// tenth of the budget when texts are counted, so the burst costs at most 10% of the rate.
    pub fn max_batch(&self, provider_max: usize) -> usize {
        match self.rpm_counts {
            RpmCounts::Items => provider_max.min((self.requests_per_minute / 10.0) as usize),
            RpmCounts::Requests => provider_max,
        }
        .max(1)
    }
}

/// One schedule of the limiter: a cell every `period`, bursts of up to `burst` cells (GCRA).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub period: Duration,
    pub burst: u32,
}

impl Schedule {
    /// `per_minute` cells with bursts of up to `burst`, never more than `per_minute` in any
    /// `window` (a minute outside tests): the steady rate is what the burst leaves.
    fn per_minute(per_minute: f64, burst: u32, window: Duration) -> Schedule {
        let burst = burst.max(1);
        let steady = (per_minute - f64::from(burst))
            .max(per_minute / 10.0)
            .max(1e-3);
        Schedule {
            period: Duration::from_secs_f64(window.as_secs_f64() / steady),
            burst,
        }
    }

    fn governor(self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(
            Quota::with_period(self.period)
                .expect("period is positive")
                .allow_burst(NonZeroU32::new(self.burst).expect("burst >= 1")),
        )
    }
}

/// The schedules limits make, for the local limiter and the one shared through Redis alike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedules {
    /// `requests_per_minute`, in cells of `rpm_counts` (burst: the largest batch when texts
    /// are counted, else 1).
    pub rpm: Schedule,
    /// `min_request_interval`, one cell per request, no burst (`None`: 0, off).
    pub interval: Option<Schedule>,
    /// `tokens_per_minute`, bursts of a tenth of it.
    pub tpm: Option<Schedule>,
}

impl LimitSettings {
    /// The schedules of these limits for requests of at most `max_batch` texts.
    pub fn schedules(&self, max_batch: usize) -> Schedules {
        let rpm_burst = match self.rpm_counts {
            RpmCounts::Items => max_batch as u32,
            RpmCounts::Requests => 1,
        };
        Schedules {
            rpm: Schedule::per_minute(self.requests_per_minute, rpm_burst, self.window),
            interval: (!self.min_request_interval.is_zero()).then_some(Schedule {
                period: self.min_request_interval,
                burst: 1,
            }),
            tpm: self
                .tokens_per_minute
                .map(|tpm| Schedule::per_minute(tpm, ((tpm / 10.0) as u32).max(1), self.window)),
        }
    }
}

/// The rate limits a request can wait on (concurrency is not one: waiting for a slot is waiting
/// for answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    ServerPause,
    RequestsPerMinute,
    RequestInterval,
    TokensPerMinute,
}

const GATES: [Gate; 4] = [
    Gate::ServerPause,
    Gate::RequestsPerMinute,
    Gate::RequestInterval,
    Gate::TokensPerMinute,
];

/// Wall-clock time during which at least one request waited somewhere.
#[derive(Debug, Default, Clone, Copy)]
struct Span {
    waiting: usize,
    since: Option<Instant>,
    total: Duration,
}

impl Span {
    fn enter(&mut self, now: Instant) {
        if self.waiting == 0 {
            self.since = Some(now);
        }
        self.waiting += 1;
    }

    fn leave(&mut self, now: Instant) {
        self.waiting -= 1;
        if self.waiting == 0
            && let Some(since) = self.since.take()
        {
            self.total += now - since;
        }
    }

    fn total(&self, now: Instant) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |s| now - s)
    }
}

/// The wait spans: on any rate limit, and on each.
#[derive(Debug, Default)]
struct WaitClock {
    any: Span,
    gates: [Span; GATES.len()],
}

/// A request waiting at one gate; leaves it when dropped (also when the wait is cancelled).
struct Waiting<'a> {
    clock: &'a Mutex<WaitClock>,
    gate: Gate,
}

impl<'a> Waiting<'a> {
    fn enter(clock: &'a Mutex<WaitClock>, gate: Gate) -> Waiting<'a> {
        let now = Instant::now();
        let mut c = clock.lock().unwrap_or_else(|e| e.into_inner());
        c.any.enter(now);
        c.gates[gate as usize].enter(now);
        METRICS.limiter_waiting.inc();
        Waiting { clock, gate }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        c.gates[self.gate as usize].leave(now);
        c.any.leave(now);
        METRICS.limiter_waiting.dec();
    }
}

/// The limiter: wait with [`Limiter::acquire`], report 429s with [`Limiter::back_off`].
pub struct Limiter {
    counts: RpmCounts,
    rpm: DefaultDirectRateLimiter,
    rpm_burst: u32,
    interval: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    concurrency: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    waited: Mutex<WaitClock>,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    window: Duration,
    /// When each request of the last minute was let through (the original's
    /// `requests_this_minute`).
    recent: Mutex<VecDeque<Instant>>,
}

/// Held while a request is in flight; counts concurrency.
pub struct Permit<'a> {
    _slot: SemaphorePermit<'a>,
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    /// `max_batch` is the largest number of texts one request will carry.
    pub fn new(s: &LimitSettings, max_batch: usize) -> Limiter {
        let plan = s.schedules(max_batch);
        Limiter {
            counts: s.rpm_counts,
            rpm: plan.rpm.governor(),
            rpm_burst: plan.rpm.burst,
            interval: plan.interval.map(Schedule::governor),
            tpm: plan.tpm.map(|t| (t.governor(), t.burst)),
            concurrency: Semaphore::new(s.max_concurrent_requests.max(1)),
            paused_until: Mutex::new(None),
            waited: Mutex::new(WaitClock::default()),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            window: s.window,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until a request of `texts` texts and about `tokens` tokens may go out.
    pub async fn acquire(&self, texts: usize, tokens: usize) -> Permit<'_> {
        let slot = self.concurrency.acquire().await.expect("never closed");
        let cells = match self.counts {
            RpmCounts::Items => (texts as u32).clamp(1, self.rpm_burst),
            RpmCounts::Requests => 1,
        };
        let cells = NonZeroU32::new(cells).expect(">= 1");
        let at = |gate| Waiting::enter(&self.waited, gate);
        loop {
            if self.paused() {
                let _w = at(Gate::ServerPause);
                self.wait_for_server().await;
            }
            if !matches!(self.rpm.check_n(cells), Ok(Ok(()))) {
                let _w = at(Gate::RequestsPerMinute);
                self.rpm.until_n_ready(cells).await.expect("cells <= burst");
            }
            if let Some(interval) = &self.interval
                && interval.check().is_err()
            {
                let _w = at(Gate::RequestInterval);
                interval.until_ready().await;
            }
            if let Some((tpm, burst)) = &self.tpm {
                let n = NonZeroU32::new((tokens as u32).clamp(1, *burst)).expect(">= 1");
                if !matches!(tpm.check_n(n), Ok(Ok(()))) {
                    let _w = at(Gate::TokensPerMinute);
                    tpm.until_n_ready(n).await.expect("cells <= burst");
                }
            }
            // A 429 seen while we waited pauses us too.
            if !self.paused() {
                break;
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recent.push_back(now);
            while recent.front().is_some_and(|t| now - *t > self.window) {
                recent.pop_front();
            }
        }
        Permit {
            _slot: slot,
            limiter: self,
        }
    }

    /// The server asked everyone to wait `delay`: no request starts before it has passed.
    pub fn back_off(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    fn paused(&self) -> bool {
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        paused.is_some_and(|p| p > Instant::now())
    }

    async fn wait_for_server(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Wall-clock time during which at least one request waited on a rate limit (or a 429
    /// pause): at most the time the limiter has existed.
    pub fn waited(&self) -> Duration {
        let c = self.waited.lock().unwrap_or_else(|e| e.into_inner());
        c.any.total(Instant::now())
    }

    /// The setting whose limit held requests back longest (wall-clock time), if any did, and
    /// what to do about it.
    pub fn held_most_by(&self) -> Option<&'static str> {
        let now = Instant::now();
        let c = self.waited.lock().unwrap_or_else(|e| e.into_inner());
        let (gate, longest) = GATES
            .iter()
            .map(|&g| (g, c.gates[g as usize].total(now)))
            .max_by_key(|&(_, d)| d)?;
        (!longest.is_zero()).then_some(match gate {
            Gate::ServerPause => {
                "the server's 429 pauses: its quota is below gemini.requests_per_minute; lower \
                 that to match it"
            }
            Gate::RequestsPerMinute => match self.counts {
                RpmCounts::Items => {
                    "gemini.requests_per_minute, which counts texts (gemini.rpm_counts: items): \
                     raise it if your quota allows, or set rpm_counts: requests if your quota \
                     counts HTTP requests, as the original assumed"
                }
                RpmCounts::Requests => "gemini.requests_per_minute: raise it if your quota allows",
            },
            Gate::RequestInterval => "gemini.min_request_interval: lower it if your quota allows",
            Gate::TokensPerMinute => "gemini.tokens_per_minute: raise it if your quota allows",
        })
    }

    /// Requests let through in the last minute (the last [`LimitSettings::window`]).
    pub fn requests_last_minute(&self) -> usize {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        recent.iter().filter(|t| now - **t <= self.window).count()
    }

    /// Most requests in flight at once so far.
    pub fn peak_concurrency(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }
}

/// The window of the per-minute budgets outside tests.
pub const MINUTE: Duration = Duration::from_secs(60);

/// A rough token count for the tokens-per-minute budget: about four characters a token.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rpm: f64, counts: RpmCounts) -> LimitSettings {
        LimitSettings {
            requests_per_minute: rpm,
            rpm_counts: counts,
            min_request_interval: Duration::ZERO,
            tokens_per_minute: None,
            max_concurrent_requests: 4,
            window: MINUTE,
        }
    }

    #[test]
    fn batches_are_capped_at_a_tenth_of_an_item_budget() {
        assert_eq!(settings(3000.0, RpmCounts::Items).max_batch(100), 100);
        assert_eq!(settings(300.0, RpmCounts::Items).max_batch(100), 30);
        assert_eq!(settings(5.0, RpmCounts::Items).max_batch(100), 1);
        assert_eq!(settings(5.0, RpmCounts::Requests).max_batch(100), 100);
    }

    /// Counts what goes through in a window of `secs` seconds of (real) time.
    async fn admitted_within(limiter: &Limiter, texts: usize, secs: f64) -> usize {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut n = 0;
        while Instant::now() < end {
            tokio::select! {
                _ = limiter.acquire(texts, 1) => n += texts,
                _ = tokio::time::sleep_until(end) => break,
            }
        }
        n
    }

    #[tokio::test]
    async fn never_more_than_the_budget_in_a_window_burst_included() {
        // 1200 texts a "minute" in batches of 20 (burst 20), the minute shortened to 12 s: in
        // any 0.6 s (a 20th of the window, as 3 s is of a real minute) at most 60 texts of
        // budget; GCRA gives burst + rate * t.
        let mut s = settings(1200.0, RpmCounts::Items);
        s.window = Duration::from_secs(12);
        let limiter = Limiter::new(&s, 20);
        let n = admitted_within(&limiter, 20, 0.6).await;
        // Burst 20 + (1200 - 20) / 12 * 0.6 = 79 at most; a plain rate would allow 20 + 60 = 80.
        assert!(n <= 79, "{n} texts in 0.6 s");
        assert!(
            n >= 60,
            "{n} texts in 0.6 s: the limiter should fill the budget"
        );
    }

    #[tokio::test]
    async fn min_interval_spaces_requests() {
        let mut s = settings(1e6, RpmCounts::Requests);
        s.min_request_interval = Duration::from_millis(50);
        let limiter = Limiter::new(&s, 100);
        let n = admitted_within(&limiter, 1, 0.525).await;
        assert!(
            (10..=11).contains(&n),
            "{n} requests in 0.525 s at 50 ms spacing"
        );
    }

    #[tokio::test]
    async fn back_off_pauses_everyone() {
        let limiter = Limiter::new(&settings(1e6, RpmCounts::Requests), 100);
        limiter.back_off(Duration::from_millis(300));
        let t = Instant::now();
        drop(limiter.acquire(1, 1).await);
        assert!(
            t.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_peak_recorded() {
        let mut s = settings(1e6, RpmCounts::Requests);
        s.max_concurrent_requests = 2;
        let limiter = Limiter::new(&s, 100);
        let a = limiter.acquire(1, 1).await;
        let _b = limiter.acquire(1, 1).await;
        let third = tokio::time::timeout(Duration::from_millis(100), limiter.acquire(1, 1)).await;
        assert!(third.is_err(), "a third request must wait");
        drop(a);
        let _c = limiter.acquire(1, 1).await;
        assert_eq!(limiter.peak_concurrency(), 2);
    }

    #[tokio::test]
    async fn time_held_is_wall_clock_time_and_names_the_limit() {
        // 60 one-text requests a 1.2 s "minute", one request at a time through the burst: 20
        // requests at once all wait, so a sum over requests would be about 20 times the wall.
        let mut s = settings(60.0, RpmCounts::Requests);
        s.window = Duration::from_millis(1200);
        s.max_concurrent_requests = 100;
        let limiter = std::sync::Arc::new(Limiter::new(&s, 1));
        assert_eq!(limiter.held_most_by(), None);
        let t = Instant::now();
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let limiter = limiter.clone();
            all.spawn(async move { drop(limiter.acquire(1, 1).await) });
        }
        all.join_all().await;
        let wall = t.elapsed();
        let held = limiter.waited();
        assert!(held <= wall, "held {held:?} in a run of {wall:?}");
        assert!(held >= wall / 2, "held {held:?} in a run of {wall:?}");
        let by = limiter.held_most_by().unwrap();
        assert!(by.starts_with("gemini.requests_per_minute"), "{by}");
    }

    #[tokio::test]
    async fn a_server_pause_is_named_as_such() {
        let limiter = Limiter::new(&settings(1e6, RpmCounts::Items), 100);
        limiter.back_off(Duration::from_millis(200));
        drop(limiter.acquire(1, 1).await);
        assert!(limiter.waited() >= Duration::from_millis(150));
        let by = limiter.held_most_by().unwrap();
        assert!(by.contains("429"), "{by}");
    }
}
