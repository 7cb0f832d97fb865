//! The `puzzlegen` command: parses arguments, runs the library, maps outcomes to exit codes.
//!
//! Exit codes: 0 every puzzle was made; 1 the run finished but some puzzles failed; 2 a usage,
//! configuration or input error (nothing was run); 3 the run could not finish (the embedding
//! API refused to go on, an output could not be written); 130 stopped by SIGINT/SIGTERM.
//!
//! Signals: the first SIGINT or SIGTERM stops new work, lets requests in flight finish within
//! a short grace period, writes everything finished so far and prints the summary; a second
//! one exits at once.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use puzzlegen::config::{Config, Overrides, ProviderKind};
use puzzlegen::pipeline::{self, Stop};
use puzzlegen::progress::ProgressMode;
use tokio_util::sync::CancellationToken;

/// Turn themes and candidate words into word-grouping puzzles using text embeddings.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors; no progress bar, no warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Generate puzzles: embed every planned theme and its candidates, choose each puzzle's
    /// words, and write final_puzzles.json, puzzle_metadata.json, embedding_analysis.json and
    /// the embedding CSVs.
    ///
    /// Exit code 0: all puzzles made; 1: some puzzles failed (see puzzle_metadata.json);
    /// 2: usage, configuration or input error; 3: the run could not finish (API refused to go
    /// on, output not writable); 130: stopped by a signal (outputs hold the finished work).
    ///
    /// The API key is read from the environment variable named by gemini.api_key_env (or
    /// embedding.openai.api_key_env); it is never written anywhere.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The params.yaml to use (the Python pipeline's file is accepted unchanged).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Themes file ({"themes": [...]}); overrides paths.themes.
    #[arg(long, value_name = "FILE")]
    themes: Option<PathBuf>,
    /// Candidates file ({"candidates": {"<theme>": {"words": [...]}}}); overrides
    /// paths.candidates.
    #[arg(long, value_name = "FILE")]
    candidates: Option<PathBuf>,
    /// Output directory; overrides paths.outputs, and reports go to DIR/reports.
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Embedding provider; overrides embedding.provider (default gemini, as the original).
    #[arg(long, value_enum)]
    provider: Option<ProviderKind>,
    /// Local model directory (model.safetensors, tokenizer.json, config.json); overrides
    /// embedding.local.model_dir (default models/all-MiniLM-L6-v2).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    // SAFETY: first statement of main, before any thread is started.
    unsafe { puzzlegen::embed::local::prefer_per_core_batches() };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A fatal error: its message and the exit code it maps to.
struct Failure {
    message: String,
    code: u8,
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let Command::Run(args) = cli.command;
    let overrides = Overrides {
        themes: args.themes,
        candidates: args.candidates,
        out: args.out,
        provider: args.provider,
        model_dir: args.model_dir,
    };
    let config = Config::load(&args.config, &overrides).map_err(|e| Failure {
        message: e.to_string(),
        code: 2,
    })?;
    for key in &config.unknown_keys {
        tracing::warn!("{}: unknown key {key} (ignored)", config.source.display());
    }
    let progress = if cli.quiet {
        ProgressMode::Hidden
    } else {
        ProgressMode::Auto
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            message: format!("cannot start the async runtime: {e}"),
            code: 3,
        })?;
    let summary = runtime
        .block_on(async {
            let stop = CancellationToken::new();
            tokio::spawn(watch_signals(stop.clone()));
            pipeline::run(&config, progress, stop).await
        })
        .map_err(|e| Failure {
            code: if e.is_user_error() { 2 } else { 3 },
            message: e.to_string(),
        })?;
    // Nothing of the run may outlive it: background tasks end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if !cli.quiet {
        println!("{summary}");
        println!("outputs: {}", config.output.outputs_dir.display());
    }
    match summary.stop {
        Some(Stop::Fatal(e)) => Err(Failure {
            message: format!("{e} (finished work was written)"),
            code: 3,
        }),
        Some(Stop::Interrupted) => Ok(ExitCode::from(130)),
        None if summary.puzzles_failed > 0 => Ok(ExitCode::from(1)),
        None => Ok(ExitCode::SUCCESS),
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
    std::process::exit(130);
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

async fn either(a: &mut tokio::signal::unix::Signal, b: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = a.recv() => {}
        _ = b.recv() => {}
    }
}
