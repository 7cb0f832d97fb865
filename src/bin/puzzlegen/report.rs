//! `puzzlegen report`: rebuild the review page from a run's output files (final_puzzles.json,
//! puzzle_metadata.json, embedding_analysis.json), without any embedding work.

use std::path::PathBuf;

use puzzlegen::config::{Config, Overrides};
use puzzlegen::report::page::{PageInput, PageSources, stage_page};
use puzzlegen::report::{self, OutputPaths};

use crate::exit::{ExitStatus, Failure};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The params.yaml of the run: where its outputs are (paths.outputs, paths.reports), where
    /// the page goes (output.review_page) and the threshold (puzzle_generation.
    /// ambiguity_margin). Without it, --out DIR names the outputs and the threshold recorded in
    /// DIR/puzzle_metadata.json is used.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The run's output directory, as given to `run --out DIR`: reads DIR/final_puzzles.json,
    /// DIR/puzzle_metadata.json and DIR/reports/embedding_analysis.json, writes the page to
    /// DIR/reports.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Where the files are read and the page written, and the threshold (if the config sets it).
struct Places {
    sources: PageSources,
    page: PathBuf,
    threshold: Option<f64>,
}

/// Rebuilds the page; a missing or malformed output file is a user error (exit 2).
pub fn report(args: ReportArgs, quiet: bool) -> Result<ExitStatus, Failure> {
    let places = places(args)?;
    let input = PageInput::from_files(&places.sources, places.threshold)
        .map_err(|e| Failure::user(e.to_string()))?;
    let never = || false;
    let staged = stage_page(&places.page, &input, &never).map_err(|e| Failure::of(e, false))?;
    let written = staged.commit().map_err(|e| Failure::of(e, false))?;
    if !quiet {
        println!("review page: {}", written.display());
    }
    Ok(ExitStatus::Success)
}

fn places(args: ReportArgs) -> Result<Places, Failure> {
    match (args.config, args.out) {
        (Some(file), out) => {
            let overrides = Overrides {
                out,
                ..Overrides::default()
            };
            let config =
                Config::load(&file, &overrides).map_err(|e| Failure::user(e.to_string()))?;
            report::check_targets(&config).map_err(|e| Failure::user(e.to_string()))?;
            let paths = OutputPaths::of(&config);
            Ok(Places {
                sources: PageSources {
                    final_puzzles: paths.final_puzzles,
                    metadata: paths.metadata,
                    analysis: paths.analysis,
                },
                page: paths.review_page,
                threshold: Some(config.puzzle.ambiguity_margin),
            })
        }
        (None, Some(dir)) => Ok(Places {
            sources: PageSources {
                final_puzzles: dir.join("final_puzzles.json"),
                metadata: dir.join("puzzle_metadata.json"),
                analysis: dir.join("reports").join("embedding_analysis.json"),
            },
            page: dir.join("reports").join("puzzles.html"),
            threshold: None,
        }),
        (None, None) => Err(Failure::user(
            "report: give --config FILE (the run's params.yaml) or --out DIR (its output folder)",
        )),
    }
}
