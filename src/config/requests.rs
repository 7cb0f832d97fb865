//! How a remote provider is called ([`RequestSettings`]: its limits, retries, batching and
//! stall deadline) and how much runs at once ([`EngineSettings`]).
//!
//! The keys are the original's: the `gemini` section (whose limits the OpenAI-compatible
//! provider obeys too) and `multiprocessing`. What comes out is named for its consumers: the
//! limiter's [`LimitSettings`], the service's retries, the engine's workers.

use std::time::Duration;

use super::ConfigError;
use super::raw;
use super::validate::Validator;
use crate::limit::{LimitSettings, MINUTE, RpmCounts};

/// Limits, retries and batching of a remote provider's requests (`gemini.*` and
/// `multiprocessing.max_concurrent_requests`). The local model is not limited.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    /// Per minute, per interval, tokens and concurrency (`gemini.requests_per_minute`,
    /// `rpm_counts`, `min_request_interval`, `tokens_per_minute`,
    /// `multiprocessing.max_concurrent_requests`).
    pub limits: LimitSettings,
    /// Retries of one request after a 429, a 5xx or a network error (`gemini.max_retries`).
    pub max_retries: u32,
    /// First delay between retries, doubled each time (`gemini.retry_base_delay`).
    pub retry_base_delay: Duration,
    /// Most texts in one request (`gemini.batch_size`; at most the provider's own limit).
    pub batch_size: usize,
    /// The run stops when no request has succeeded for this long while work is waiting
    /// (`gemini.stall_timeout`).
    pub stall_timeout: Duration,
}

/// Concurrency and deadlines of the engine (`multiprocessing`; now tasks, not processes).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub worker_count: usize,
    pub task_timeout: Duration,
    /// How long requests and themes in flight may take to finish once the run is told to
    /// stop (a signal). Not a params.yaml key: [`DEFAULT_STOP_GRACE`] for the CLI; a caller
    /// that must answer a signal at once (the Python package) sets it shorter.
    pub stop_grace: Duration,
}

/// Default of [`EngineSettings::stop_grace`].
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Most concurrent theme workers or API requests: tasks beyond this only wait on each other.
pub const MAX_CONCURRENCY: i64 = 10_000;

impl RequestSettings {
    /// Resolves the request keys of `gemini`, then `multiprocessing.max_concurrent_requests`;
    /// the stall timeout must be above zero.
    pub(super) fn resolve(
        v: &Validator,
        g: &raw::Gemini,
        m: &raw::Multiprocessing,
    ) -> Result<RequestSettings, ConfigError> {
        let requests_per_minute = v.positive(
            "gemini.requests_per_minute",
            g.requests_per_minute.unwrap_or(3000.0),
        )?;
        let min_request_interval = v.seconds(
            "gemini.min_request_interval",
            g.min_request_interval.unwrap_or(0.0),
        )?;
        let retry_base_delay =
            v.seconds("gemini.retry_base_delay", g.retry_base_delay.unwrap_or(1.0))?;
        let max_retries =
            v.between("gemini.max_retries", g.max_retries.unwrap_or(5), 0, 1000)? as u32;
        let tokens_per_minute = match g.tokens_per_minute {
            Some(t) => Some(v.positive("gemini.tokens_per_minute", t)?),
            None => None,
        };
        let batch_size = v.at_least("gemini.batch_size", g.batch_size.unwrap_or(100), 1)?;
        let stall_timeout =
            v.positive_seconds("gemini.stall_timeout", g.stall_timeout.unwrap_or(600.0))?;
        let max_concurrent_requests = v.between(
            "multiprocessing.max_concurrent_requests",
            m.max_concurrent_requests.unwrap_or(6),
            1,
            MAX_CONCURRENCY,
        )?;
        Ok(RequestSettings {
            limits: LimitSettings {
                requests_per_minute,
                rpm_counts: g.rpm_counts.unwrap_or(RpmCounts::Items),
                min_request_interval,
                tokens_per_minute,
                max_concurrent_requests,
                window: MINUTE,
            },
            max_retries,
            retry_base_delay,
            batch_size,
            stall_timeout,
        })
    }
}

impl EngineSettings {
    /// Resolves `multiprocessing` (`tasks_per_batch` is checked, then unused).
    pub(super) fn resolve(
        v: &Validator,
        m: &raw::Multiprocessing,
    ) -> Result<EngineSettings, ConfigError> {
        let task_timeout = v.positive_seconds(
            "multiprocessing.task_timeout_seconds",
            m.task_timeout_seconds.unwrap_or(300.0),
        )?;
        let engine = EngineSettings {
            worker_count: v.between(
                "multiprocessing.worker_count",
                m.worker_count.unwrap_or(4),
                1,
                MAX_CONCURRENCY,
            )?,
            task_timeout,
            stop_grace: DEFAULT_STOP_GRACE,
        };
        if let Some(n) = m.tasks_per_batch {
            v.at_least("multiprocessing.tasks_per_batch", n, 1)?;
        }
        Ok(engine)
    }
}
