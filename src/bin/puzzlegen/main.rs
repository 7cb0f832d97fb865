//! The `puzzlegen` command: a thin shell over the library. This file parses the arguments
//! and sets up logging; `run` and `cache` hold the subcommands, `exit` maps every outcome to
//! its exit code (0 done, 1 done in part, 2 user error, 3 could not finish, 130 signal).

mod batch;
mod cache;
mod exit;
mod plan;
mod report;
mod run;
mod solve;
mod status;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// words, and write final_puzzles.json, puzzle_metadata.json, embedding_analysis.json, the
    /// review page (reports/puzzles.html) and the embedding CSVs.
    ///
    /// Exit code 0: the outputs were written (puzzles that failed, if any, are listed in
    /// puzzle_metadata.json, as the original does); 1: with --strict, some puzzles failed;
    /// 2: usage, configuration or input error; 3: the run could not finish (API refused to go
    /// on, output not writable); 130: stopped by a signal. A run that stops early writes the
    /// finished work to <paths.outputs>/partial/, never over a complete earlier output set.
    ///
    /// Every embedding is committed to the cache database as it arrives (see `puzzlegen
    /// cache`) and each finished theme to <paths.outputs>/run_journal.jsonl: a run that was
    /// killed, run again with the same command, finishes only the remaining work.
    ///
    /// The API key is read from the environment variable named by gemini.api_key_env (or
    /// embedding.openai.api_key_env); it is never written anywhere.
    Run(run::RunArgs),
    /// Say what `run` would do with this config, without doing it: puzzles and themes,
    /// distinct texts, texts already in the cache, texts to embed, requests (interactive) or
    /// jobs (batch), estimated input tokens, estimated cost in both modes (prices from the
    /// `pricing` table), and estimated time under the configured limits. Sends no request and
    /// writes no file. Exit 2 for a configuration or input error, as `run`.
    Plan(plan::PlanArgs),
    /// The Batch API jobs of a run in batch mode (embedding.mode: batch) that its journal
    /// names: list them, or cancel them.
    Batch {
        #[command(subcommand)]
        command: batch::BatchCommand,
    },
    /// Import, export or inspect the embedding cache.
    ///
    /// The cache is the SQLite database every run reads first and adds to (default
    /// <paths.cache>/embeddings.sqlite3; the `cache.path` setting overrides it). Its schema is
    /// in the README.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Rebuild the review page (<paths.reports>/puzzles.html, or output.review_page) from a
    /// run's output files, without any embedding work. Exit code 2 when an output file is
    /// missing or malformed.
    Report(report::ReportArgs),
    /// Split each puzzle's words, without their theme names, into the groups of highest
    /// within-group similarity (exactly: every partition is considered), and say whether that
    /// is the intended split and by how much it beats the next best. Reads a run's
    /// final_puzzles.json or a JSON list of puzzles. Exit 2 for a file that cannot be read.
    Solve(solve::SolveArgs),
    /// Embed the themes of runs started with `run --redis URL` on the same Redis
    /// (any number of workers, on any machine, joining and leaving at will), with this
    /// config's provider settings and API key. SIGINT/SIGTERM: the task at hand is handed
    /// back and the worker exits.
    Worker(worker::WorkerArgs),
    /// Show what a Redis shared by runs and workers holds: the workers alive (their
    /// heartbeats: host, pid, tasks in hand, texts embedded), each queue run of the last day
    /// (backlog, in flight, done, dead letters) and each global limiter (requests and texts
    /// in the last 60 s against the limit, a 429 pause, the 429s seen). Exit 2 if Redis
    /// cannot be used (wrong URL or password).
    Status(status::StatusArgs),
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
    let done = match cli.command {
        Command::Run(args) => run::run(args, cli.quiet),
        Command::Plan(args) => plan::plan(args),
        Command::Cache { command } => cache::command(command),
        Command::Batch { command } => batch::command(command),
        Command::Worker(args) => worker::worker(args),
        Command::Report(args) => report::report(args, cli.quiet),
        Command::Solve(args) => solve::solve(args),
        Command::Status(args) => status::status(args),
    };
    match done {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.status.into()
        }
    }
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
