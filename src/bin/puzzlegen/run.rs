//! `puzzlegen run`: load the config, run the pipeline under a signal watcher, write the
//! outputs, print the summary.
//!
//! Signals: the first SIGINT or SIGTERM stops new work, lets requests in flight finish within
//! a short grace period, writes everything finished so far (to `<paths.outputs>/partial/`,
//! leaving a complete earlier output set as it was) and prints the summary; a second one exits
//! at once.

use std::path::PathBuf;

use puzzlegen::config::{Config, Overrides, ProviderKind};
use puzzlegen::pipeline::{self, Stop, Summary};
use puzzlegen::progress::ProgressMode;
use puzzlegen::report::OutputPaths;
use tokio_util::sync::CancellationToken;

use crate::exit::{ExitStatus, Failure};

/// What `run` and `plan` read: the config and the inputs and provider that override it.
#[derive(clap::Args)]
pub struct InputArgs {
    /// The params.yaml to use (the Python pipeline's file is accepted unchanged).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Themes file ({"themes": [...]}), or a folder holding selected_themes.json; overrides
    /// paths.themes.
    #[arg(long, value_name = "PATH")]
    pub themes: Option<PathBuf>,
    /// Candidates file ({"candidates": {"<theme>": {"words": [...]}}}), or a folder holding
    /// candidate_words.json; overrides paths.candidates.
    #[arg(long, value_name = "PATH")]
    pub candidates: Option<PathBuf>,
    /// Embedding provider; overrides embedding.provider (default gemini, as the original).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// Local model directory (model.safetensors, tokenizer.json, config.json); overrides
    /// embedding.local.model_dir (default models/all-MiniLM-L6-v2).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

impl InputArgs {
    /// The config these name, with their overrides and `more` (exit 2 if it cannot be used).
    pub fn load(self, more: Overrides) -> Result<Config, Failure> {
        let overrides = Overrides {
            themes: self.themes,
            candidates: self.candidates,
            provider: self.provider,
            model_dir: self.model_dir,
            ..more
        };
        Config::load(&self.config, &overrides).map_err(|e| Failure::user(e.to_string()))
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output directory; overrides paths.outputs, reports go to DIR/reports and the puzzle
    /// CSV to DIR (the cache CSV and database stay where the config puts them).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Exit with code 1 when any puzzle failed (by default a run that wrote its outputs exits
    /// 0, as the original, and lists failed puzzles in puzzle_metadata.json).
    #[arg(long)]
    pub strict: bool,
    /// Share the request limits and the embeddings with every run on this Redis
    /// (redis://[user:password@]host:port[/db]), and queue the themes there for `puzzlegen
    /// worker` processes to embed (this run works on them too; scoring, assembly and outputs
    /// stay here); overrides distributed.redis_url. Prefer REDIS_PASSWORD (or the variable
    /// distributed.redis_password_env names) for the password: command lines are visible to
    /// others.
    #[arg(long, value_name = "URL", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub redis: Option<String>,
    /// Serve /metrics for Prometheus at HOST:PORT while the run lasts (texts, requests by
    /// outcome, 429s, retries, cache hits by tier, tasks, limiter wait, request latency);
    /// overrides distributed.metrics_addr.
    #[arg(long, value_name = "HOST:PORT", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub metrics_addr: Option<String>,
}

/// Runs the job the config describes; the exit status says how it ended.
pub fn run(args: RunArgs, quiet: bool) -> Result<ExitStatus, Failure> {
    let config = args.input.load(Overrides {
        out: args.out,
        redis_url: args.redis,
        metrics_addr: args.metrics_addr,
        ..Overrides::default()
    })?;
    crate::exit::warn_about_keys(&config);
    let progress = if quiet {
        ProgressMode::Hidden
    } else {
        ProgressMode::Auto
    };
    let runtime = crate::exit::runtime()?;
    crate::exit::serve_metrics(&runtime, &config)?;
    let summary = runtime.block_on(async {
        let stop = CancellationToken::new();
        // A file size limit (`ulimit -f`) makes a write fail ("cannot write: File too
        // large") instead of killing the run without a word: tokio's handler, once
        // installed, replaces SIGXFSZ's default action for the life of the process.
        #[cfg(all(
            target_os = "linux",
            not(any(target_arch = "mips", target_arch = "mips64"))
        ))]
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
        tokio::spawn(watch_signals(stop.clone()));
        let result = pipeline::run(&config, progress, stop.clone()).await?;
        pipeline::write_outputs(&config, result, &stop)
    });
    // Nothing of the run may outlive it: background tasks end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let summary = summary?;
    if !quiet {
        print_summary(&summary, &config);
    }
    match summary.stop {
        Some(Stop::Fatal(e)) => Err(Failure {
            message: format!(
                "{e} (finished work written to {})",
                puzzlegen::report::partial_dir(&config).display()
            ),
            status: ExitStatus::Failed,
        }),
        Some(Stop::Interrupted) => Ok(ExitStatus::Interrupted),
        None if args.strict && summary.puzzles_failed > 0 => Ok(ExitStatus::Incomplete),
        None => Ok(ExitStatus::Success),
    }
}

fn print_summary(summary: &Summary, config: &Config) {
    println!("{summary}");
    let (outputs, paths) = match &summary.partial {
        Some(dir) => (dir, OutputPaths::partial(config)),
        None => (&config.output.outputs_dir, OutputPaths::of(config)),
    };
    println!("outputs: {}", outputs.display());
    if paths.review_page.is_file() {
        println!("review page: {}", paths.review_page.display());
    }
}

/// First SIGINT/SIGTERM: cancel `stop` (graceful). Second: exit at once.
async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(
            "cannot listen for signals; Ctrl-C will end the run without writing outputs"
        );
        return;
    };
    either(&mut int, &mut term).await;
    tracing::warn!(
        "stopping: finishing requests in flight, then writing outputs (signal again to quit now)"
    );
    stop.cancel();
    either(&mut int, &mut term).await;
    eprintln!("error: stopped at once by a second signal; outputs not written");
    std::process::exit(ExitStatus::Interrupted as i32);
}

async fn either(a: &mut tokio::signal::unix::Signal, b: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = a.recv() => {}
        _ = b.recv() => {}
    }
}
