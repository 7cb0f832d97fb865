//! `puzzlegen report`: rebuild the review page from a run's output files (final_puzzles.json,
//! puzzle_metadata.json, embedding_analysis.json), without any embedding work.

use std::path::{Path, PathBuf};

/// The config `report` reads when given neither flag, as the original's scripts did.
const DEFAULT_CONFIG: &str = "params.yaml";

use puzzlegen::config::{Config, Overrides};
use puzzlegen::report::page::{PageInput, PageSources, stage_page};
use puzzlegen::report::{self, OutputPaths};

use crate::exit::{ExitStatus, Failure};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The params.yaml of the run: where its outputs are (paths.outputs, paths.reports), where
    /// the page goes (output.review_page) and the threshold (puzzle_generation.
    /// ambiguity_margin). Without it, --out DIR names the outputs and the threshold recorded in
    /// DIR/puzzle_metadata.json is used; with neither, ./params.yaml.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The run's outputs folder (paths.outputs, or `run --out DIR`): the run recorded there,
    /// in puzzle_metadata.json, where it wrote the other files and the page, and the page is
    /// rebuilt there. With neither flag, ./params.yaml is read.
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
        (None, Some(dir)) => {
            let (sources, page) = PageSources::in_outputs(&dir);
            Ok(Places {
                sources,
                page,
                threshold: None,
            })
        }
        (None, None) if Path::new(DEFAULT_CONFIG).is_file() => places(ReportArgs {
            config: Some(PathBuf::from(DEFAULT_CONFIG)),
            out: None,
        }),
        (None, None) => Err(Failure::user(format!(
            "report: no {DEFAULT_CONFIG} here: give --config FILE (the run's params.yaml) or \
             --out DIR (its outputs folder)"
        ))),
    }
}
