//! `SharedRateLimiter(requests_per_minute, min_request_interval, max_concurrent_requests)`:
//! the engine's limiter ([`puzzlegen::limit::Limiter`], GCRA per minute and per interval, a
//! semaphore for concurrency), shared by every thread that holds the object.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use puzzlegen::limit::{LimitSettings, Limiter, RpmCounts};

use crate::{runtime, wait_interruptible};

/// Counters for `get_stats()`.
#[derive(Default)]
struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    /// When each slot of the last minute was granted.
    recent: Mutex<VecDeque<Instant>>,
}

impl Counters {
    fn granted(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now - *t > Duration::from_secs(60))
        {
            recent.pop_front();
        }
    }

    fn within(&self, window: Duration) -> usize {
        let now = Instant::now();
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().filter(|t| now - **t <= window).count()
    }
}

/// The original's process-wide rate limiter, backed by the engine's limiter: at most
/// `requests_per_minute` slots in any 60 s, at least `min_request_interval` seconds apart, at
/// most `max_concurrent_requests` held at once. Use `with limiter.acquire_request_slot(): ...`.
/// Safe to share between threads; waiting releases the GIL and Ctrl-C interrupts it.
#[pyclass(module = "puzzlegen", frozen)]
pub struct SharedRateLimiter {
    limiter: Arc<Limiter>,
    counters: Arc<Counters>,
    requests_per_minute: PyObject,
    #[pyo3(get)]
    min_request_interval: f64,
    #[pyo3(get)]
    max_concurrent_requests: usize,
}

#[pymethods]
impl SharedRateLimiter {
    #[new]
    #[pyo3(signature = (requests_per_minute = None, min_request_interval = 0.1, max_concurrent_requests = 10))]
    fn new(
        py: Python<'_>,
        requests_per_minute: Option<PyObject>,
        min_request_interval: f64,
        max_concurrent_requests: usize,
    ) -> PyResult<Self> {
        let requests_per_minute = match requests_per_minute {
            Some(v) => v,
            None => 2900i64.into_pyobject(py)?.into_any().unbind(),
        };
        let rpm: f64 = requests_per_minute
            .extract(py)
            .map_err(|_| PyValueError::new_err("requests_per_minute: expected a number"))?;
        if !(rpm.is_finite() && rpm > 0.0) {
            return Err(PyValueError::new_err(format!(
                "requests_per_minute: expected a number above 0, got {rpm}"
            )));
        }
        if !(min_request_interval.is_finite() && min_request_interval >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "min_request_interval: expected seconds (0 or more), got {min_request_interval}"
            )));
        }
        if max_concurrent_requests == 0 {
            return Err(PyValueError::new_err(
                "max_concurrent_requests: expected at least 1, got 0",
            ));
        }
        let settings = LimitSettings {
            requests_per_minute: rpm,
            rpm_counts: RpmCounts::Requests,
            min_request_interval: Duration::from_secs_f64(min_request_interval),
            tokens_per_minute: None,
            max_concurrent_requests,
            window: puzzlegen::limit::MINUTE,
        };
        // The governor schedules need a runtime's clock only when waited on; made here anyway
        // inside the runtime so that everything about them lives there.
        let limiter = {
            let _guard = runtime().enter();
            Limiter::new(&settings, 1)
        };
        Ok(SharedRateLimiter {
            limiter: Arc::new(limiter),
            counters: Arc::default(),
            requests_per_minute,
            min_request_interval,
            max_concurrent_requests,
        })
    }

    /// The per-minute limit, as given.
    #[getter]
    fn requests_per_minute(&self, py: Python<'_>) -> PyObject {
        self.requests_per_minute.clone_ref(py)
    }

    /// A context manager: entering waits for a slot (all three limits), leaving frees it.
    fn acquire_request_slot(&self) -> RequestSlot {
        RequestSlot {
            limiter: Arc::clone(&self.limiter),
            counters: Arc::clone(&self.counters),
            release: Mutex::new(None),
        }
    }

    /// The original's statistics: active_requests, total_requests, requests_this_minute (slots
    /// granted in the last 60 s), requests_per_second (in the last second),
    /// requests_per_minute_limit, max_concurrent_limit, min_request_interval.
    fn get_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.counters;
        let d = PyDict::new(py);
        d.set_item("active_requests", c.active.load(Ordering::SeqCst))?;
        d.set_item("total_requests", c.total.load(Ordering::SeqCst))?;
        d.set_item("requests_this_minute", c.within(Duration::from_secs(60)))?;
        d.set_item(
            "requests_per_second",
            c.within(Duration::from_secs(1)) as f64,
        )?;
        d.set_item(
            "requests_per_minute_limit",
            self.requests_per_minute.clone_ref(py),
        )?;
        d.set_item("max_concurrent_limit", self.max_concurrent_requests)?;
        d.set_item("min_request_interval", self.min_request_interval)?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "SharedRateLimiter(requests_per_minute={}, min_request_interval={}, \
             max_concurrent_requests={})",
            self.requests_per_minute
                .bind(py)
                .repr()
                .map_or_else(|_| "?".into(), |r| r.to_string()),
            self.min_request_interval,
            self.max_concurrent_requests
        )
    }
}

/// One request slot of a [`SharedRateLimiter`]: `with limiter.acquire_request_slot(): ...`.
#[pyclass(module = "puzzlegen", frozen)]
pub struct RequestSlot {
    limiter: Arc<Limiter>,
    counters: Arc<Counters>,
    /// Set while the slot is held: sending (or dropping) it frees the slot.
    release: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[pymethods]
impl RequestSlot {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        if this
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Err(PyRuntimeError::new_err("this request slot is already held"));
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let limiter = Arc::clone(&this.limiter);
        let counters = Arc::clone(&this.counters);
        // The permit borrows the limiter, so it lives in a task until released.
        runtime().spawn(async move {
            let permit = limiter.acquire(1, 0).await;
            counters.granted();
            // `__exit__` counts the slot free itself (so stats right after it are exact);
            // here only when it never comes: interrupted while waiting, or the slot dropped.
            let released = ready_tx.send(()).is_ok() && release_rx.await.is_ok();
            drop(permit);
            if !released {
                counters.active.fetch_sub(1, Ordering::SeqCst);
            }
        });
        // Interrupted: dropping `ready_rx` frees the slot as soon as it is granted.
        wait_interruptible(py, ready_rx, || {})?;
        *this.release.lock().unwrap_or_else(|e| e.into_inner()) = Some(release_tx);
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        let held = self
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if held.is_some_and(|tx| tx.send(()).is_ok()) {
            self.counters.active.fetch_sub(1, Ordering::SeqCst);
        }
        false
    }
}
