//! `puzzlegen solve FILE`: the blind solver on puzzles read from a file: each puzzle's words,
//! without their theme names, split into the groups of highest within-group similarity, and
//! whether that split is the intended one.

use std::path::{Path, PathBuf};

use puzzlegen::config::{Config, Overrides, ProviderKind};
use puzzlegen::design::file::{self, PuzzleWords};
use puzzlegen::design::{self, Solution, SolveError, Verdict};
use puzzlegen::pipeline;
use serde_json::json;

use crate::exit::{ExitStatus, Failure};

#[derive(clap::Args)]
pub struct SolveArgs {
    /// A run's final_puzzles.json (groups in the order of "themes"), or a JSON list of puzzles:
    /// each a list of words, four per group one group after the other, or an object with
    /// "words" (and "themes", which says how many groups).
    pub file: PathBuf,
    /// The params.yaml whose embedding provider and cache to use (the words of a run's
    /// puzzles are in its cache: no request is made for them). Without it: the local model
    /// (--model-dir, default models/all-MiniLM-L6-v2) and no cache written.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Local model directory; overrides embedding.local.model_dir.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Print JSON (one object: puzzle key to its verdict and partitions) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Solves every puzzle of the file; exit 2 for a file or config that cannot be read.
pub fn solve(args: SolveArgs) -> Result<ExitStatus, Failure> {
    let puzzles = file::read(&args.file).map_err(|e| Failure::user(e.to_string()))?;
    let config = config(&args)?;
    let mut texts: Vec<String> = puzzles.iter().flat_map(|p| p.words.clone()).collect();
    texts.sort();
    texts.dedup();
    let runtime = crate::exit::runtime()?;
    let vectors = runtime.block_on(pipeline::embed_texts(
        &config,
        &texts,
        args.config.is_none(),
    ))?;
    let by_text: std::collections::HashMap<&str, &[f32]> = texts
        .iter()
        .map(String::as_str)
        .zip(vectors.iter().map(|v| &v[..]))
        .collect();
    let mut all = serde_json::Map::new();
    let mut out = String::new();
    for p in &puzzles {
        let v: Vec<&[f32]> = p.words.iter().map(|w| by_text[w.as_str()]).collect();
        let outcome = design::solve_listed(p, &v);
        if args.json {
            all.insert(p.key.clone(), as_json(p, &outcome));
        } else {
            out.push_str(&as_text(p, &outcome));
            out.push('\n');
        }
    }
    if args.json {
        out = serde_json::to_string_pretty(&serde_json::Value::Object(all)).expect("JSON");
        out.push('\n');
    }
    print_all(&out)
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error.
fn print_all(text: &str) -> Result<ExitStatus, Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure {
            message: format!("cannot write to standard output: {e}"),
            status: ExitStatus::Failed,
        }),
        _ => Ok(ExitStatus::Success),
    }
}

fn config(args: &SolveArgs) -> Result<Config, Failure> {
    let overrides = Overrides {
        model_dir: args.model_dir.clone(),
        provider: args.config.is_none().then_some(ProviderKind::Local),
        ..Overrides::default()
    };
    match &args.config {
        Some(file) => Config::load(file, &overrides),
        None => Config::from_yaml_bytes(
            Path::new("(solve's defaults)"),
            // Paths a run needs and solve does not read.
            b"embedding:\n  provider: local\npaths:\n  outputs: .\n  themes: .\n  candidates: .\n",
            &overrides,
        ),
    }
    .map_err(|e| Failure::user(e.to_string()))
}

/// The words of each group of `partition`.
fn groups(p: &PuzzleWords, partition: &[u16]) -> Vec<Vec<String>> {
    partition
        .iter()
        .map(|mask| {
            (0..p.words.len())
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| p.words[i].clone())
                .collect()
        })
        .collect()
}

fn as_json(
    p: &PuzzleWords,
    outcome: &Result<(Solution, Verdict), SolveError>,
) -> serde_json::Value {
    match outcome {
        Ok((s, v)) => json!({
            "groups_found": v.groups_found,
            "unique": v.unique,
            "gap": round6(v.gap),
            "best": groups(p, &s.best),
            "best_score": round6(s.best_score),
            "runner_up": s.runner_up.as_ref().map(|(r, _)| groups(p, r)),
            "runner_up_score": s.runner_up.as_ref().map(|(_, score)| round6(*score)),
        }),
        Err(e) => json!({ "not_computed": e.to_string() }),
    }
}

fn as_text(p: &PuzzleWords, outcome: &Result<(Solution, Verdict), SolveError>) -> String {
    match outcome {
        Ok((s, v)) => {
            let verdict = if v.unique {
                format!("one solution, gap {:.3}", v.gap)
            } else {
                format!(
                    "{} of {} groups found (gap to the runner-up {:.3})",
                    v.groups_found,
                    s.best.len(),
                    v.gap
                )
            };
            let best: Vec<String> = groups(p, &s.best).iter().map(|g| g.join(", ")).collect();
            format!("{}: {verdict}\n  best split: {}", p.key, best.join(" | "))
        }
        Err(e) => format!("{}: not solved: {e}", p.key),
    }
}

fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}
