//! `puzzlegen cache import|export|stats`: the embedding cache database from the command line.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use puzzlegen::cache::csv;
use puzzlegen::cache::store::Store;
use puzzlegen::config::{Config, Overrides};
use puzzlegen::embed::Space;

use crate::exit::{ExitStatus, Failure};

#[derive(Subcommand)]
pub enum CacheCommand {
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
pub struct CacheTarget {
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

/// Runs a cache subcommand.
pub fn command(command: CacheCommand) -> Result<ExitStatus, Failure> {
    match command {
        CacheCommand::Import { file, target } => import(&file, target),
        CacheCommand::Export { out, target } => export(&out, target),
        CacheCommand::Stats { target } => stats(target),
    }
}

/// `cache import FILE`: exit 1 if rows were skipped.
fn import(file: &Path, target: CacheTarget) -> Result<ExitStatus, Failure> {
    let (db, space) = target.resolve(true)?;
    let space = space.expect("resolve(true) gives a space");
    // Check the file before the database is created or touched.
    csv::inspect(file, space.dimension)?;
    let mut store = Store::open(&db)?;
    let r = csv::import(file, &mut store, &space)?;
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
        ExitStatus::Success
    } else {
        ExitStatus::Incomplete
    })
}

/// `cache export --out FILE`: never onto the database itself.
fn export(out: &Path, target: CacheTarget) -> Result<ExitStatus, Failure> {
    let (db, space) = target.resolve(true)?;
    let space = space.expect("resolve(true) gives a space");
    // Checked before the database is opened: never write the CSV over it.
    if let Some(file) = puzzlegen::report::database_files(&db)
        .iter()
        .find(|f| puzzlegen::fsx::same_file(out, f))
    {
        return Err(Failure::user(format!(
            "--out: {} is the cache database {} (--db or the config's cache.path); refusing to \
             write the CSV over it, nothing was written",
            out.display(),
            file.display()
        )));
    }
    let store = existing_store(&db)?;
    let n = csv::export(&store, &space, out)?;
    println!(
        "{}: {n} embedding(s) of {} / {} / {}",
        out.display(),
        space.model_id,
        space.dimension,
        space.task_type
    );
    Ok(ExitStatus::Success)
}

/// `cache stats`: entries per space, size on disk, the last run's hit rate.
fn stats(target: CacheTarget) -> Result<ExitStatus, Failure> {
    let (db, _) = target.resolve(false)?;
    let store = existing_store(&db)?;
    let spaces = store.spaces()?;
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
    match store.last_run()? {
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
    Ok(ExitStatus::Success)
}

/// Opens a cache database that must already exist.
fn existing_store(db: &Path) -> Result<Store, Failure> {
    if !db.is_file() {
        return Err(Failure::user(format!(
            "{}: no cache database here (give --db FILE or --config params.yaml)",
            db.display()
        )));
    }
    Ok(Store::open_existing(db)?)
}

impl CacheTarget {
    /// The database and (if `need_space`, or if the flags and config tell) the space.
    fn resolve(self, need_space: bool) -> Result<(PathBuf, Option<Space>), Failure> {
        let user = Failure::user;
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
        let from_config = match &config {
            Some(c) => c.space().map_err(|e| user(e.to_string()))?,
            None => None,
        };
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
            (Some(model_id), Some(dimension)) if dimension > 0 => Some(Space {
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
