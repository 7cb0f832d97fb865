//! `puzzlegen plan`: what a run would embed, send, cost and take, before it runs.

use clap::Args;
use puzzlegen::config::{Config, Overrides};
use puzzlegen::pipeline::forecast::{ASSUMED_JOB_SECONDS, Forecast, forecast};

use crate::exit::{ExitStatus, Failure};
use crate::run::InputArgs;

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Also look texts up in the shared tier of this Redis (read only); overrides
    /// distributed.redis_url.
    #[arg(long, value_name = "URL", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub redis: Option<String>,
    /// Print one JSON object (texts_total, texts_cached, texts_to_embed, requests, batch_jobs,
    /// tokens_estimate, cost_usd {interactive, batch}, seconds_estimate, ...).
    #[arg(long)]
    pub json: bool,
}

/// Prints the forecast of the run the config describes.
pub fn plan(args: PlanArgs) -> Result<ExitStatus, Failure> {
    let config = args.input.load(Overrides {
        redis_url: args.redis,
        ..Overrides::default()
    })?;
    crate::exit::warn_about_keys(&config);
    let runtime = crate::exit::runtime()?;
    let f = runtime.block_on(forecast(&config)).map_err(|e| {
        let user = e.is_user_error();
        Failure::of(e, user)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&f).expect("a forecast serializes")
        );
    } else {
        print!("{}", human(&f, &config));
    }
    Ok(ExitStatus::Success)
}

/// The forecast in a few lines.
fn human(f: &Forecast, config: &Config) -> String {
    let dollars = |c: Option<f64>| match c {
        Some(c) => format!("${c:.6}"),
        None => format!("unknown (no price for {} in pricing)", f.model),
    };
    let mut out = format!(
        "{} ({} {}, {} mode)\n\
         puzzles: {}, themes: {} (+{} spare, embedded only if a theme fails)\n\
         texts:   {} distinct, {} in the cache{}, {} to embed (~{} input tokens, about 4 \
         characters a token)\n",
        config.source.display(),
        f.provider,
        f.model,
        f.mode,
        f.puzzles,
        f.themes,
        f.spare_themes,
        f.texts_total,
        f.texts_cached,
        match f.texts_in_shared_tier {
            0 => String::new(),
            n => format!(" ({n} in the shared Redis tier)"),
        },
        f.texts_to_embed,
        f.tokens_estimate,
    );
    out.push_str(&format!(
        "interactive: {} request(s) of up to {} texts, cost {}\n",
        f.requests,
        f.texts_per_request,
        dollars(f.cost_usd.interactive)
    ));
    if f.provider != "local" {
        out.push_str(&format!(
            "batch:       {} job(s) of up to {} texts, cost {}\n",
            f.batch_jobs,
            config.batch.max_texts_per_job,
            dollars(f.cost_usd.batch)
        ));
    }
    out.push_str(&match f.seconds_estimate {
        None => "time:    the local model's speed is this machine's (not estimated)\n".into(),
        Some(s) if f.mode == "batch" => format!(
            "time:    ~{:.0} min, assuming {:.0} min per round of {} job(s) at once (most jobs \
             finish within minutes, every job within 24 h)\n",
            s / 60.0,
            ASSUMED_JOB_SECONDS / 60.0,
            config.batch.max_active_jobs
        ),
        Some(s) => format!(
            "time:    ~{s:.0} s of embedding under the configured limits (plus the API's \
             latency where the limits do not bind)\n"
        ),
    });
    out
}
