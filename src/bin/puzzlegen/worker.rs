//! `puzzlegen worker`: embeds the themes of queued runs (see `puzzlegen::pipeline::queue`)
//! until SIGINT or SIGTERM.

use std::path::PathBuf;

use puzzlegen::config::{Config, Overrides};
use tokio_util::sync::CancellationToken;

use crate::exit::{ExitStatus, Failure};

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The params.yaml with this worker's provider settings (its key variable, limits, cache).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The Redis of the runs to serve; overrides distributed.redis_url.
    #[arg(long, value_name = "URL", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub redis: Option<String>,
    /// Serve /metrics for Prometheus at HOST:PORT while the worker runs; overrides
    /// distributed.metrics_addr.
    #[arg(long, value_name = "HOST:PORT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub metrics_addr: Option<String>,
}

pub fn worker(args: WorkerArgs) -> Result<ExitStatus, Failure> {
    let overrides = Overrides {
        redis_url: args.redis,
        metrics_addr: args.metrics_addr,
        ..Overrides::default()
    };
    let config =
        Config::load(&args.config, &overrides).map_err(|e| Failure::user(e.to_string()))?;
    crate::exit::warn_about_keys(&config);
    let runtime = crate::exit::runtime()?;
    crate::exit::serve_metrics(&runtime, &config)?;
    let done = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    tracing::info!("stopping: handing the task at hand back");
                    stop.cancel();
                }
            }
        });
        puzzlegen::pipeline::worker(&config, stop).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match done {
        Ok(()) => Ok(ExitStatus::Success),
        Err(e) => {
            let user = e.is_user_error();
            Err(Failure::of(e, user))
        }
    }
}
