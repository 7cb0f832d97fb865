//! Python bindings of puzzlegen (`import puzzlegen`): the Python pipeline's three entry points,
//! with the same calls and shapes, backed by the Rust engine.
//!
//! - [`processor`]: `create_improved_task_processor(config_path)` and its `process_themes`;
//! - [`cache`]: `SharedEmbeddingCache`, kept in the SQLite cache;
//! - [`limiter`]: `SharedRateLimiter`, the engine's limiter as a context manager.
//!
//! Rust work runs with the GIL released, on threads of one process-wide tokio runtime; the
//! calling thread waits for it in short steps, checking for signals (Ctrl-C) in between. Panics
//! on those threads are caught and come back as `RuntimeError`.

mod cache;
mod limiter;
mod processor;

use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    ApiError,
    PyRuntimeError,
    "The embedding API refused to go on: a refused API key, an exhausted quota. The message is \
     the CLI's; it never contains the key."
);

/// How often a waiting call checks for signals.
const POLL: Duration = Duration::from_millis(50);

/// Longest a call interrupted by a signal waits for the Rust work to wind down before it
/// raises anyway (a second signal raises at once). The work is told to stop first and gives up
/// requests in flight (see `processor`), so it normally ends well within a second: the call
/// raises only once nothing of it touches the cache any more. That matters: this module has
/// its own SQLite, and a second copy in the process (Python's `sqlite3`) opening the database
/// while the first still has it open can lose the first one's locks.
const INTERRUPT_WAIT: Duration = Duration::from_secs(10);

/// The process-wide runtime every call runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("puzzlegen")
            .build()
            .expect("cannot start the async runtime")
    })
}

/// Log lines of the engine (warnings by default; `PUZZLEGEN_LOG=info` for more) go to stderr,
/// as the CLI's do.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PUZZLEGEN_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The text of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Runs `work` on a new thread (with the process runtime at hand), panics caught, and waits for
/// it with the GIL released. A signal handler that raises (Ctrl-C: `KeyboardInterrupt`) ends
/// the wait: `on_interrupt` is called (it should make the work stop), the work is waited for
/// (up to [`INTERRUPT_WAIT`], or until another signal), then the exception is raised.
fn run_interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> T + Send + 'static,
    on_interrupt: impl FnOnce(),
) -> PyResult<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("puzzlegen-call".into())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(out.map_err(|p| panic_message(&*p)));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?;
    let out = wait_interruptible(py, rx, on_interrupt)?;
    out.map_err(|m| PyRuntimeError::new_err(format!("internal error in puzzlegen: {m}")))
}

/// Waits for one message on `rx`, GIL released, checking for signals every [`POLL`]. A signal
/// wins whenever it comes, even while the work is handing over its answer: the call then
/// raises, once the work has ended (see [`wait_for_the_end`]).
fn wait_interruptible<T: Send>(
    py: Python<'_>,
    mut rx: Receiver<T>,
    on_interrupt: impl FnOnce(),
) -> PyResult<T> {
    loop {
        // The receiver goes in and out by value: it is Send but not Sync.
        let (got, back) = py.allow_threads(move || (rx.recv_timeout(POLL), rx));
        rx = back;
        if let Err(e) = py.check_signals() {
            on_interrupt();
            if matches!(got, Err(RecvTimeoutError::Timeout)) {
                wait_for_the_end(py, rx);
            }
            return Err(e);
        }
        match got {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err(
                    "internal error in puzzlegen: the work ended without an answer",
                ));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// After a signal: waits, GIL released in short steps, until the work has answered (or
/// dropped its sender), for at most [`INTERRUPT_WAIT`]; another signal ends the wait at once
/// (that exception is dropped: the first one is raised).
fn wait_for_the_end<T: Send>(py: Python<'_>, mut rx: Receiver<T>) {
    let until = Instant::now() + INTERRUPT_WAIT;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let (got, back) = py.allow_threads(move || (rx.recv_timeout(left.min(POLL)), rx));
        rx = back;
        if !matches!(got, Err(RecvTimeoutError::Timeout)) || py.check_signals().is_err() {
            return;
        }
    }
}

/// The native part of the `puzzlegen` package (re-exported by `puzzlegen/__init__.py`).
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add("ApiError", m.py().get_type::<ApiError>())?;
    m.add_class::<processor::ImprovedGeminiTaskProcessor>()?;
    m.add_function(wrap_pyfunction!(
        processor::create_improved_task_processor,
        m
    )?)?;
    m.add_class::<cache::SharedEmbeddingCache>()?;
    m.add_class::<limiter::SharedRateLimiter>()?;
    m.add_class::<limiter::RequestSlot>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
