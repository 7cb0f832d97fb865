//! `puzzlegen batch list` and `puzzlegen batch cancel [JOB]`: the Batch API jobs a config's
//! run journal names and has not collected.

use clap::Subcommand;
use puzzlegen::config::Overrides;
use puzzlegen::pipeline::{JobInfo, cancel_jobs, list_jobs};

use crate::exit::{ExitStatus, Failure};
use crate::run::InputArgs;

#[derive(Subcommand)]
pub enum BatchCommand {
    /// The jobs this config's run journal names and has not collected: name, state, texts,
    /// age. A run in batch mode collects them when started again. With the openai provider,
    /// one one-text request first learns the model's dimension (as a run does).
    List {
        #[command(flatten)]
        input: InputArgs,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Ask the API to cancel JOB (a name from `batch list`: `batches/...` for gemini,
    /// `batch_...` for openai), or every job of the journal that has not ended. The next run
    /// collects what they ran (openai keeps it) and submits the rest again.
    Cancel {
        #[command(flatten)]
        input: InputArgs,
        /// The job to cancel; all of the journal's when left out.
        job: Option<String>,
    },
}

pub fn command(command: BatchCommand) -> Result<ExitStatus, Failure> {
    let runtime = crate::exit::runtime()?;
    let (jobs, json) = match command {
        BatchCommand::List { input, json } => {
            let config = input.load(Overrides::default())?;
            (runtime.block_on(list_jobs(&config)), json)
        }
        BatchCommand::Cancel { input, job } => {
            let config = input.load(Overrides::default())?;
            (
                runtime.block_on(cancel_jobs(&config, job.as_deref())),
                false,
            )
        }
    };
    let jobs = jobs.map_err(|e| {
        let user = e.is_user_error();
        Failure::of(e, user)
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).expect("jobs serialize")
        );
    } else if jobs.is_empty() {
        println!("no job: the run journal names none that is not collected");
    } else {
        for j in &jobs {
            println!("{}", line(j));
        }
    }
    Ok(ExitStatus::Success)
}

fn line(j: &JobInfo) -> String {
    format!(
        "{}  {}  {} text(s)  {}",
        j.name,
        j.state,
        j.texts,
        match j.age_seconds {
            Some(s) if s >= 3600 => format!("{:.1} h old", s as f64 / 3600.0),
            Some(s) => format!("{s} s old"),
            None => "age unknown".into(),
        }
    )
}
