//! Exit codes, in one place: what each outcome of a command maps to.

use std::process::ExitCode;

use puzzlegen::pipeline::RunError;

/// How a command ended, as the process exit code users and scripts read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done (a run wrote its outputs; failed puzzles are listed in puzzle_metadata.json).
    Success = 0,
    /// 1: done, but not all of it: `run --strict` with failed puzzles, `cache import` with
    /// rows skipped.
    Incomplete = 1,
    /// 2: a usage, configuration or input error; nothing was run.
    UserError = 2,
    /// 3: the work could not finish (the API refused to go on, an output not writable).
    Failed = 3,
    /// 130: stopped by SIGINT or SIGTERM.
    Interrupted = 130,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

impl ExitStatus {
    /// [`UserError`](Self::UserError) for the user's mistakes, [`Failed`](Self::Failed) else.
    pub fn of(user_error: bool) -> ExitStatus {
        if user_error {
            ExitStatus::UserError
        } else {
            ExitStatus::Failed
        }
    }
}

/// A command that could not be done: the one-line message printed and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub status: ExitStatus,
}

impl Failure {
    /// A mistake of the user's (exit 2).
    pub fn user(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: ExitStatus::UserError,
        }
    }

    /// An error whose `is_user_error` decides between exit 2 and 3.
    pub fn of(e: impl std::fmt::Display, user_error: bool) -> Failure {
        Failure {
            message: e.to_string(),
            status: ExitStatus::of(user_error),
        }
    }
}

/// The async runtime a command runs on (exit 3 if it cannot start).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            message: format!("cannot start the async runtime: {e}"),
            status: ExitStatus::Failed,
        })
}

/// Serves `/metrics` on `runtime` when the config asks (`--metrics-addr`,
/// `distributed.metrics_addr`); an address that cannot be bound is exit 2, before any work.
pub fn serve_metrics(
    runtime: &tokio::runtime::Runtime,
    config: &puzzlegen::Config,
) -> Result<(), Failure> {
    let Some(addr) = &config.distributed.metrics_addr else {
        return Ok(());
    };
    let exporter = runtime
        .block_on(puzzlegen::metrics::Exporter::bind(addr))
        .map_err(|e| Failure::user(e.to_string()))?;
    if let Ok(at) = exporter.local_addr() {
        tracing::info!("serving Prometheus metrics at http://{at}/metrics");
    }
    let _guard = runtime.enter();
    exporter.serve();
    Ok(())
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        let status = match e {
            RunError::Interrupted | RunError::StoppedWhileWriting { .. } => ExitStatus::Interrupted,
            _ => ExitStatus::of(e.is_user_error()),
        };
        Failure {
            message: e.to_string(),
            status,
        }
    }
}

impl From<puzzlegen::cache::store::StoreError> for Failure {
    fn from(e: puzzlegen::cache::store::StoreError) -> Failure {
        let user = e.is_user_error();
        Failure::of(e, user)
    }
}

impl From<puzzlegen::cache::csv::CsvError> for Failure {
    fn from(e: puzzlegen::cache::csv::CsvError) -> Failure {
        let user = e.is_user_error();
        Failure::of(e, user)
    }
}

/// Warns about the config's unknown keys (ignored) and deprecated ones (still accepted).
pub fn warn_about_keys(config: &puzzlegen::config::Config) {
    let file = config.source.display();
    for key in &config.unknown_keys {
        tracing::warn!("{file}: unknown key {key} (ignored)");
    }
    for notice in &config.deprecated {
        tracing::warn!("{file}: {notice}");
    }
}
