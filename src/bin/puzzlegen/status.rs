//! `puzzlegen status`: the workers, queue runs and global limiters on a Redis (see
//! `puzzlegen::pipeline::status`), as text or JSON.

use std::path::PathBuf;

use puzzlegen::config::{Config, DistributedSettings, Overrides};
use puzzlegen::distributed::{DistributedError, Redis};

use crate::exit::{ExitStatus, Failure};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The Redis to look at; overrides distributed.redis_url of --config. Its password comes
    /// from the URL, else from REDIS_PASSWORD.
    #[arg(long, value_name = "URL", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub redis: Option<String>,
    /// A params.yaml whose distributed.redis_url (and redis_password_env) name the Redis.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON (one object: redis, workers, runs, limiters) instead of text.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the whole deployment (processes, queue runs, limiters) in the Prometheus text
    /// format instead of text, for node_exporter's textfile collector.
    #[arg(long)]
    pub prometheus: bool,
}

pub fn status(args: StatusArgs) -> Result<ExitStatus, Failure> {
    let overrides = Overrides {
        redis_url: args.redis,
        ..Overrides::default()
    };
    let settings = match &args.config {
        Some(path) => {
            Config::load(path, &overrides)
                .map_err(|e| Failure::user(e.to_string()))?
                .distributed
        }
        None => DistributedSettings::from_overrides(&overrides),
    };
    let runtime = crate::exit::runtime()?;
    let read = runtime.block_on(async {
        let redis = Redis::connect(&settings)
            .await
            .map_err(|e| Failure::user(e.to_string()))?
            .ok_or_else(|| Failure::user(DistributedError::NoUrl.to_string()))?;
        puzzlegen::pipeline::status::read(&redis)
            .await
            .map_err(|e| Failure {
                message: format!("Redis at {}: {e}", redis.shown()),
                status: ExitStatus::Failed,
            })
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let status = read?;
    if args.prometheus {
        print!("{}", status.prometheus());
    } else if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("plain data")
        );
    } else {
        print!("{status}");
    }
    Ok(ExitStatus::Success)
}
