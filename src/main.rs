//! The `puzzlegen` command: parses arguments, runs the library, maps outcomes to exit codes.
//!
//! Exit codes: 0 the outputs were written (failed puzzles, if any, are listed in
//! puzzle_metadata.json, as the original); 1 with `--strict` only, some puzzles failed; 2 a
//! usage, configuration or input error (nothing was run); 3 the run could not finish (the
//! embedding API refused to go on, an output could not be written); 130 stopped by
//! SIGINT/SIGTERM.
//!
//! Signals: the first SIGINT or SIGTERM stops new work, lets requests in flight finish within
//! a short grace period, writes everything finished so far (to `<paths.outputs>/partial/`,
//! leaving a complete earlier output set as it was) and prints the summary; a second
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
    Run(RunArgs),
    /// Import, export or inspect the embedding cache.
    ///
    /// The cache is the SQLite database every run reads first and adds to (default
    /// <paths.cache>/embeddings.sqlite3; the `cache.path` setting overrides it). Its schema is
    /// in the README.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Bring a cache CSV of the Python pipeline (either layout) into the database.
    ///
    /// Both layouts are read, told apart by their header:
    /// word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N (the cache
    /// backup) and theme,word,word_type,similarity_to_theme,rank,embedding_dim_1..N
    /// (output.embedding_cache_file). Columns are found by name; only `word` and the
    /// embedding_dim_* columns are required. Rows that cannot be read are listed with their
    /// line numbers and skipped; the good rows are kept (exit code 1 if any row was skipped).
    /// Texts already in the database keep their vector.
    Import {
        /// The CSV file to read.
        file: PathBuf,
        #[command(flatten)]
        target: CacheTarget,
    },
    /// Write the vectors of one embedding space to a CSV in the Python cache backup layout.
    ///
    /// Header: word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1..N; values
    /// at full precision (the shortest text that reads back as the same float32).
    Export {
        /// The CSV file to write (replaced atomically; a symlink's target is replaced, a device,
        /// FIFO or /dev/fd/N written through). Never the cache database itself.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        target: CacheTarget,
    },
    /// Entries per embedding space, size on disk, and the hit rate of the last run.
    Stats {
        #[command(flatten)]
        target: CacheTarget,
    },
}

/// Which database and which embedding space a cache command works on.
#[derive(clap::Args)]
struct CacheTarget {
    /// The params.yaml whose cache database (cache.path or <paths.cache>/embeddings.sqlite3)
    /// and embedding space (gemini.model_id, embedding_dimension, task_type; or the local
    /// model's) to use.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The cache database; overrides the config's (default cache/embeddings.sqlite3).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Model id of the vectors; overrides the config's.
    #[arg(long, value_name = "ID")]
    model: Option<String>,
    /// Vector size; overrides the config's.
    #[arg(long, value_name = "N")]
    dimension: Option<usize>,
    /// Task type of the vectors; overrides the config's (default SEMANTIC_SIMILARITY).
    #[arg(long, value_name = "NAME")]
    task_type: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The params.yaml to use (the Python pipeline's file is accepted unchanged).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Themes file ({"themes": [...]}), or a folder holding selected_themes.json; overrides
    /// paths.themes.
    #[arg(long, value_name = "PATH")]
    themes: Option<PathBuf>,
    /// Candidates file ({"candidates": {"<theme>": {"words": [...]}}}), or a folder holding
    /// candidate_words.json; overrides paths.candidates.
    #[arg(long, value_name = "PATH")]
    candidates: Option<PathBuf>,
    /// Output directory; overrides paths.outputs, reports go to DIR/reports and the puzzle
    /// CSV to DIR (the cache CSV and database stay where the config puts them).
    #[arg(short, long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Embedding provider; overrides embedding.provider (default gemini, as the original).
    #[arg(long, value_enum)]
    provider: Option<ProviderKind>,
    /// Local model directory (model.safetensors, tokenizer.json, config.json); overrides
    /// embedding.local.model_dir (default models/all-MiniLM-L6-v2).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Exit with code 1 when any puzzle failed (by default a run that wrote its outputs exits
    /// 0, as the original, and lists failed puzzles in puzzle_metadata.json).
    #[arg(long)]
    strict: bool,
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
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Cache { command } => return cache_command(command),
    };
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
            // A file size limit (`ulimit -f`) makes a write fail ("cannot write: File too
            // large") instead of killing the run without a word: tokio's handler, once
            // installed, replaces SIGXFSZ's default action for the life of the process.
            #[cfg(all(
                target_os = "linux",
                not(any(target_arch = "mips", target_arch = "mips64"))
            ))]
            let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
            tokio::spawn(watch_signals(stop.clone()));
            pipeline::run(&config, progress, stop).await
        })
        .map_err(|e| Failure {
            code: match e {
                pipeline::RunError::Interrupted
                | pipeline::RunError::StoppedWhileWriting { .. } => 130,
                _ if e.is_user_error() => 2,
                _ => 3,
            },
            message: e.to_string(),
        })?;
    // Nothing of the run may outlive it: background tasks end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if !cli.quiet {
        println!("{summary}");
        let outputs = summary
            .partial
            .as_ref()
            .unwrap_or(&config.output.outputs_dir);
        println!("outputs: {}", outputs.display());
    }
    match summary.stop {
        Some(Stop::Fatal(e)) => Err(Failure {
            message: format!(
                "{e} (finished work written to {})",
                puzzlegen::report::partial_dir(&config).display()
            ),
            code: 3,
        }),
        Some(Stop::Interrupted) => Ok(ExitCode::from(130)),
        None if args.strict && summary.puzzles_failed > 0 => Ok(ExitCode::from(1)),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn cache_command(command: CacheCommand) -> Result<ExitCode, Failure> {
    use puzzlegen::cache::csv;
    use puzzlegen::cache::store::Store;
    let store_failed = |e: puzzlegen::cache::store::StoreError| Failure {
        code: if e.is_user_error() { 2 } else { 3 },
        message: e.to_string(),
    };
    let csv_failed = |e: csv::CsvError| Failure {
        code: if e.is_user_error() { 2 } else { 3 },
        message: e.to_string(),
    };
    match command {
        CacheCommand::Import { file, target } => {
            let (db, space) = target.resolve(true)?;
            let space = space.expect("resolve(true) gives a space");
            // Check the file before the database is created or touched.
            csv::inspect(&file, space.dimension).map_err(csv_failed)?;
            let mut store = Store::open(&db).map_err(store_failed)?;
            let r = csv::import(&file, &mut store, &space).map_err(csv_failed)?;
            for bad in &r.bad {
                eprintln!(
                    "{}: line {}: {} (skipped)",
                    file.display(),
                    bad.line,
                    bad.reason
                );
            }
            println!(
                "{}: {} row(s) read ({}): {} added, {} already in the cache, {} skipped",
                file.display(),
                r.rows,
                r.layout,
                r.added,
                r.already_present,
                r.bad.len()
            );
            println!(
                "cache: {} ({} / {} / {})",
                db.display(),
                space.model_id,
                space.dimension,
                space.task_type
            );
            Ok(if r.bad.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        CacheCommand::Export { out, target } => {
            let (db, space) = target.resolve(true)?;
            let space = space.expect("resolve(true) gives a space");
            // Checked before the database is opened: never write the CSV over it.
            if let Some(file) = puzzlegen::report::database_files(&db)
                .iter()
                .find(|f| puzzlegen::report::same_file(&out, f))
            {
                return Err(Failure {
                    message: format!(
                        "--out: {} is the cache database {} (--db or the config's cache.path); \
                         refusing to write the CSV over it, nothing was written",
                        out.display(),
                        file.display()
                    ),
                    code: 2,
                });
            }
            let store = existing_store(&db)?;
            let n = csv::export(&store, &space, &out).map_err(csv_failed)?;
            println!(
                "{}: {n} embedding(s) of {} / {} / {}",
                out.display(),
                space.model_id,
                space.dimension,
                space.task_type
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Stats { target } => {
            let (db, _) = target.resolve(false)?;
            let store = existing_store(&db)?;
            let spaces = store.spaces().map_err(store_failed)?;
            println!("cache:   {}", db.display());
            println!(
                "size:    {:.1} MiB on disk",
                store.size_on_disk() as f64 / (1024.0 * 1024.0)
            );
            if spaces.is_empty() {
                println!("entries: none");
            }
            for s in &spaces {
                println!(
                    "entries: {:>9}  {} / {} / {}",
                    s.entries, s.space.model_id, s.space.dimension, s.space.task_type
                );
            }
            match store.last_run().map_err(store_failed)? {
                None => println!("last run: none recorded"),
                Some(r) => println!(
                    "last run: {} ({} / {}): {} of {} texts from the cache ({:.1}% hit rate), \
                     {} embedded",
                    r.finished_at,
                    r.space.model_id,
                    r.space.dimension,
                    r.cache_hits,
                    r.lookups,
                    if r.lookups == 0 {
                        0.0
                    } else {
                        r.cache_hits as f64 * 100.0 / r.lookups as f64
                    },
                    r.texts_embedded
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a cache database that must already exist.
fn existing_store(db: &std::path::Path) -> Result<puzzlegen::cache::store::Store, Failure> {
    if !db.is_file() {
        return Err(Failure {
            message: format!(
                "{}: no cache database here (give --db FILE or --config params.yaml)",
                db.display()
            ),
            code: 2,
        });
    }
    puzzlegen::cache::store::Store::open_existing(db).map_err(|e| Failure {
        code: if e.is_user_error() { 2 } else { 3 },
        message: e.to_string(),
    })
}

impl CacheTarget {
    /// The database and (if `need_space`, or if the flags and config tell) the space.
    fn resolve(
        self,
        need_space: bool,
    ) -> Result<(PathBuf, Option<puzzlegen::embed::Space>), Failure> {
        let user = |message: String| Failure { message, code: 2 };
        let config = match &self.config {
            Some(path) => {
                Some(Config::load(path, &Overrides::default()).map_err(|e| user(e.to_string()))?)
            }
            None => None,
        };
        let db = self
            .db
            .or_else(|| config.as_ref().map(|c| c.output.cache_db.clone()))
            .unwrap_or_else(|| PathBuf::from("cache/embeddings.sqlite3"));
        let from_config = config.as_ref().and_then(Config::space);
        let model = self
            .model
            .or_else(|| from_config.as_ref().map(|s| s.model_id.clone()));
        let dimension = self
            .dimension
            .or_else(|| from_config.as_ref().map(|s| s.dimension));
        let task_type = self
            .task_type
            .or_else(|| from_config.as_ref().map(|s| s.task_type.clone()))
            .unwrap_or_else(|| "SEMANTIC_SIMILARITY".into());
        let space = match (model, dimension) {
            (Some(model_id), Some(dimension)) if dimension > 0 => Some(puzzlegen::embed::Space {
                model_id,
                dimension,
                task_type,
            }),
            (_, Some(0)) => return Err(user("--dimension: expected a number > 0, got 0".into())),
            _ if need_space => {
                return Err(user(
                    "which vectors? give --model ID and --dimension N, or --config params.yaml"
                        .into(),
                ));
            }
            _ => None,
        };
        Ok((db, space))
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
