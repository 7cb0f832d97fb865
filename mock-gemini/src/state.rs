//! Shared server state: statistics, quota windows, fault decisions.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::vectors::SplitMix64;
use crate::{MockConfig, QuotaUnit, Stats};

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) jobs: crate::batch::Jobs,
    stats: Mutex<StatsState>,
    quota: Mutex<QuotaState>,
    seq: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Successful answers allowed (since start or the last reset); `None`: no limit.
    gate: watch::Sender<Option<u64>>,
}

#[derive(Default)]
struct StatsState {
    requests: u64,
    texts: u64,
    texts_embedded: u64,
    responses_ok: u64,
    responses_429: u64,
    responses_5xx: u64,
    responses_4xx_other: u64,
    hangs: u64,
    faults_injected: u64,
    peak_concurrency: u64,
    in_flight: u64,
    /// Successful answers let through the gate.
    ok_admitted: u64,
    /// Requests waiting at the gate now.
    held: u64,
    distinct: HashSet<String>,
    /// (arrival, texts) of every request received, in arrival order.
    arrivals: Vec<(Instant, u64)>,
    first_request_unix_ms: Option<u64>,
    last_request_unix_ms: Option<u64>,
}

#[derive(Default)]
struct QuotaState {
    /// Admitted (time, units) inside the per-minute window.
    window: VecDeque<(Instant, u64)>,
    window_sum: u64,
    day_used: u64,
    day_exhausted: bool,
}

/// Outcome of the quota checks for one request.
#[derive(Debug)]
pub(crate) enum QuotaVerdict {
    Admitted,
    PerDay,
    /// Refused; the window has room again after this long.
    PerMinute(Duration),
}

/// The random fault chosen for one request, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Storm429,
    Internal500,
    Unavailable503,
    Hang,
    Truncated,
    WrongCount,
    WrongDimension,
    Nan,
}

/// How a request ended, for the counters.
pub(crate) enum Outcome<'a> {
    Ok(&'a [String]),
    Status(u16),
    Faulty,
}

/// Takes a request off the held count if its future is dropped (client gone) while waiting.
struct HeldGuard<'a> {
    shared: &'a Shared,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.shared.lock_stats();
        s.held = s.held.saturating_sub(1);
    }
}

/// Counts a request as in progress while alive (also when its future is
/// dropped because the client went away).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.shared.lock_stats();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Largest sum of `(time, weight)` entries (sorted by time) that fall within
/// any half-open window `[t, t + window)`; returns (max count, max weight).
pub(crate) fn max_in_window(entries: &[(Instant, u64)], window: Duration) -> (u64, u64) {
    let (mut best_n, mut best_w) = (0u64, 0u64);
    let (mut start, mut sum) = (0usize, 0u64);
    for (end, &(t, w)) in entries.iter().enumerate() {
        sum += w;
        while t.duration_since(entries[start].0) >= window {
            sum -= entries[start].1;
            start += 1;
        }
        best_n = best_n.max((end - start + 1) as u64);
        best_w = best_w.max(sum);
    }
    (best_n, best_w)
}

impl Shared {
    pub(crate) fn new(config: MockConfig, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            config,
            jobs: crate::batch::Jobs::default(),
            stats: Mutex::default(),
            quota: Mutex::default(),
            seq: AtomicU64::new(0),
            shutdown,
            gate: watch::Sender::new(None),
        }
    }

    /// Lets at most `limit` successful answers through (counted since start or the last
    /// reset); later ones wait until the limit is raised, the server shuts down or the client
    /// goes away. `None` lifts the limit.
    pub(crate) fn hold_after(&self, limit: Option<u64>) {
        self.gate.send_replace(limit);
    }

    /// Waits at the gate for the right to answer successfully: `true` when let through,
    /// `false` when the request was held and the limit then changed (its client may be gone,
    /// killed by a test: the request is refused with a 503 rather than answered into the void
    /// and counted as embedded).
    pub(crate) async fn pass_gate(&self) -> bool {
        let mut rx = self.gate.subscribe();
        {
            let limit = *rx.borrow_and_update();
            let mut s = self.lock_stats();
            if limit.is_none_or(|n| s.ok_admitted < n) {
                s.ok_admitted += 1;
                return true;
            }
            s.held += 1;
        }
        // Takes the request off the held count however the wait ends (also when its future
        // is dropped because the client went away).
        let _held = HeldGuard { shared: self };
        tokio::select! {
            _ = rx.changed() => {}
            _ = self.shutting_down() => {}
        }
        false
    }

    fn lock_stats(&self) -> MutexGuard<'_, StatsState> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_quota(&self) -> MutexGuard<'_, QuotaState> {
        self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an arriving embedding request; returns its sequence number and
    /// the in-flight guard.
    pub(crate) fn arrive(self: &Arc<Self>, texts: usize) -> (u64, InFlight) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut s = self.lock_stats();
        let ms = unix_ms();
        s.requests += 1;
        s.texts += texts as u64;
        s.arrivals.push((Instant::now(), texts as u64));
        s.first_request_unix_ms.get_or_insert(ms);
        s.last_request_unix_ms = Some(ms);
        s.in_flight += 1;
        s.peak_concurrency = s.peak_concurrency.max(s.in_flight);
        drop(s);
        (
            seq,
            InFlight {
                shared: self.clone(),
            },
        )
    }

    pub(crate) fn finish(&self, outcome: Outcome<'_>) {
        let mut s = self.lock_stats();
        match outcome {
            Outcome::Ok(texts) => {
                s.responses_ok += 1;
                s.texts_embedded += texts.len() as u64;
                for t in texts {
                    if !s.distinct.contains(t) {
                        s.distinct.insert(t.clone());
                    }
                }
            }
            Outcome::Faulty => s.faults_injected += 1,
            Outcome::Status(429) => s.responses_429 += 1,
            Outcome::Status(c) if c >= 500 => s.responses_5xx += 1,
            Outcome::Status(_) => s.responses_4xx_other += 1,
        }
    }

    pub(crate) fn record_hang(&self) {
        self.lock_stats().hangs += 1;
    }

    pub(crate) fn stats(&self) -> Stats {
        let s = self.lock_stats();
        let (max_requests, max_texts) = max_in_window(&s.arrivals, self.config.quota_window);
        let distinct = s.distinct.len() as u64;
        Stats {
            requests: s.requests,
            texts: s.texts,
            texts_embedded: s.texts_embedded,
            distinct_texts_embedded: distinct,
            duplicate_texts: s.texts_embedded.saturating_sub(distinct),
            responses_ok: s.responses_ok,
            responses_429: s.responses_429,
            responses_5xx: s.responses_5xx,
            responses_4xx_other: s.responses_4xx_other,
            hangs: s.hangs,
            faults_injected: s.faults_injected,
            peak_concurrency: s.peak_concurrency,
            in_flight: s.in_flight,
            max_requests_in_any_60s: max_requests,
            max_texts_in_any_60s: max_texts,
            first_request_unix_ms: s.first_request_unix_ms,
            last_request_unix_ms: s.last_request_unix_ms,
            batch: self.jobs.stats(),
        }
    }

    pub(crate) fn reset_stats(&self) {
        self.jobs.reset_stats();
        let mut s = self.lock_stats();
        let in_flight = s.in_flight;
        let held = s.held;
        *s = StatsState {
            in_flight,
            held,
            ..StatsState::default()
        };
    }

    /// Applies the per-day then the per-minute quota to a request of
    /// `texts` texts; an admitted request is counted in both.
    pub(crate) fn check_quota(&self, texts: usize) -> QuotaVerdict {
        let cfg = &self.config;
        if cfg.quota_per_day.is_none() && cfg.quota_per_minute.is_none() {
            return QuotaVerdict::Admitted;
        }
        let units = match cfg.quota_unit {
            QuotaUnit::Requests => 1,
            QuotaUnit::Texts => texts as u64,
        };
        let mut q = self.lock_quota();
        let now = Instant::now();
        if let Some(limit) = cfg.quota_per_day
            && (q.day_exhausted || q.day_used + units > limit)
        {
            q.day_exhausted = true;
            return QuotaVerdict::PerDay;
        }
        if let Some(limit) = cfg.quota_per_minute {
            let window = cfg.quota_window;
            while let Some(&(t, u)) = q.window.front() {
                if now.duration_since(t) >= window {
                    q.window.pop_front();
                    q.window_sum -= u;
                } else {
                    break;
                }
            }
            if q.window_sum + units > limit {
                // Time until enough of the oldest entries leave the window.
                let mut remaining = q.window_sum;
                let mut delay = window;
                for &(t, u) in &q.window {
                    remaining -= u;
                    if remaining + units <= limit {
                        delay = (t + window).saturating_duration_since(now);
                        break;
                    }
                }
                return QuotaVerdict::PerMinute(delay.max(Duration::from_millis(10)));
            }
            q.window.push_back((now, units));
            q.window_sum += units;
        }
        q.day_used += units;
        QuotaVerdict::Admitted
    }

    /// Draws the random fault for request `seq`: one uniform number per
    /// fault kind, checked in the documented order.
    pub(crate) fn draw_fault(&self, seq: u64) -> Option<Fault> {
        let cfg = &self.config;
        let mut mix = SplitMix64::new(seq ^ 0xA076_1D64_78BD_642F);
        let mut rng = SplitMix64::new(cfg.seed ^ mix.next_u64());
        let table = [
            (cfg.rate_429, Fault::Storm429),
            (cfg.rate_500, Fault::Internal500),
            (cfg.rate_503, Fault::Unavailable503),
            (cfg.rate_hang, Fault::Hang),
            (cfg.rate_truncated, Fault::Truncated),
            (cfg.rate_wrong_count, Fault::WrongCount),
            (cfg.rate_wrong_dimension, Fault::WrongDimension),
            (cfg.rate_nan, Fault::Nan),
        ];
        let draws: Vec<f64> = table.iter().map(|_| rng.next_f64()).collect();
        table
            .iter()
            .zip(draws)
            .find(|((rate, _), draw)| *draw < *rate)
            .map(|((_, fault), _)| *fault)
    }

    /// Resolves when the server is shutting down (or was dropped).
    pub(crate) fn held(&self) -> u64 {
        self.lock_stats().held
    }

    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_maximum() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let entries = [
            (s(0), 2),
            (s(500), 3),
            (s(999), 1),
            (s(1000), 4),
            (s(2500), 1),
        ];
        // [0,1000): 3 requests, 6 texts; [500,1500): 3 requests, 8 texts.
        assert_eq!(max_in_window(&entries, Duration::from_millis(1000)), (3, 8));
        assert_eq!(max_in_window(&[], Duration::from_secs(60)), (0, 0));
    }

    #[test]
    fn faults_follow_rates_and_seed() {
        let (_tx, rx) = watch::channel(false);
        let mut cfg = MockConfig {
            rate_500: 0.5,
            seed: 7,
            ..MockConfig::default()
        };
        let a = Shared::new(cfg.clone(), rx.clone());
        let pattern: Vec<_> = (0..200).map(|i| a.draw_fault(i)).collect();
        let hits = pattern.iter().filter(|f| f.is_some()).count();
        assert!((60..140).contains(&hits), "{hits}");
        assert!(pattern.iter().flatten().all(|f| *f == Fault::Internal500));
        let b = Shared::new(cfg.clone(), rx.clone());
        assert_eq!(
            pattern,
            (0..200).map(|i| b.draw_fault(i)).collect::<Vec<_>>()
        );
        cfg.seed = 8;
        let c = Shared::new(cfg, rx);
        assert_ne!(
            pattern,
            (0..200).map(|i| c.draw_fault(i)).collect::<Vec<_>>()
        );
    }
}
