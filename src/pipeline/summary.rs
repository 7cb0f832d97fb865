//! What a finished run reports back: the closing summary printed by the CLI.

use std::time::Duration;

use crate::embed::EmbedError;
use crate::service::ServiceStats;

/// Why a run ended before doing all its work (its outputs, in `<paths.outputs>/partial/`, hold
/// what was finished).
#[derive(Debug, Clone)]
pub enum Stop {
    /// A signal asked the run to stop.
    Interrupted,
    /// The embedding API refused to go on (bad key, daily quota).
    Fatal(EmbedError),
}

/// What a finished run reports back (the closing summary).
#[derive(Debug, Clone)]
pub struct Summary {
    pub themes_ok: usize,
    pub themes_failed: usize,
    /// Themes taken from the journal of an earlier, interrupted run.
    pub themes_resumed: usize,
    pub puzzles_ok: usize,
    pub puzzles_failed: usize,
    pub spares_used: usize,
    pub stats: ServiceStats,
    /// Embeddings this run added to the cache database, and where it is.
    pub cache: Option<(u64, std::path::PathBuf)>,
    pub elapsed: Duration,
    pub files: Vec<std::path::PathBuf>,
    pub stop: Option<Stop>,
    /// Where a run that stopped early wrote its outputs (`<paths.outputs>/partial`); the
    /// complete outputs of an earlier run were left as they were.
    pub partial: Option<std::path::PathBuf>,
    /// What the Batch API jobs did (batch mode only).
    pub batch: Option<crate::report::shapes::BatchStats>,
}

impl Summary {
    pub fn texts_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.stats.texts_embedded as f64 / s
        } else {
            0.0
        }
    }
}

impl Summary {
    /// When the limiter held requests back for most of a run that finished: what held them,
    /// and where to look.
    fn limiter_hint(&self) -> Option<String> {
        let run = self.elapsed.as_secs_f64();
        let held = self.stats.limiter_wait_seconds;
        if self.stop.is_some() || run < 1.0 || held < run / 2.0 {
            return None;
        }
        let by = self.stats.limiter_held_most_by?;
        Some(format!(
            "requests waited on the limiter for {:.0}% of the run, mostly at {by}",
            (held / run * 100.0).min(100.0)
        ))
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "themes:  {} ok, {} failed ({} spare theme(s) used{})",
            self.themes_ok,
            self.themes_failed,
            self.spares_used,
            if self.themes_resumed > 0 {
                format!(", {} resumed from the journal", self.themes_resumed)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "puzzles: {} ok, {} failed",
            self.puzzles_ok, self.puzzles_failed
        )?;
        writeln!(
            f,
            "texts:   {} embedded, {} cache hits ({:.1}% hit rate){}",
            self.stats.texts_embedded,
            self.stats.cache_hits,
            self.stats.hit_rate() * 100.0,
            match self.stats.shared_hits {
                0 => String::new(),
                n => format!(", {n} from the shared Redis tier"),
            }
        )?;
        let retries: Vec<String> = self
            .stats
            .retries
            .iter()
            .map(|(cause, n)| format!("{cause} {n}"))
            .collect();
        writeln!(
            f,
            "api:     {} requests, {} texts sent, retries: {}, {} x 429, {:.2} s with requests held by the limiter, peak {} in flight",
            self.stats.requests,
            self.stats.texts_sent,
            if retries.is_empty() {
                "none".into()
            } else {
                retries.join(", ")
            },
            self.stats.rate_limited,
            self.stats.limiter_wait_seconds,
            self.stats.peak_concurrency
        )?;
        if let Some(hint) = self.limiter_hint() {
            writeln!(f, "limits:  {hint}")?;
        }
        if let Some(b) = &self.batch {
            writeln!(
                f,
                "batch:   {} job(s) created{}, {} texts embedded by jobs, ~{} input tokens, {}",
                b.jobs,
                match b.jobs_resumed {
                    0 => String::new(),
                    n => format!(", {n} of an earlier run collected"),
                },
                b.texts_embedded,
                b.tokens_estimate,
                match b.cost_usd_estimate {
                    Some(c) => format!("~${c:.6} at the batch price"),
                    None => "no price for the model in pricing".into(),
                }
            )?;
        }
        if let Some((written, path)) = &self.cache {
            writeln!(
                f,
                "cache:   {written} new embedding(s) stored in {}",
                path.display()
            )?;
        }
        write!(
            f,
            "time:    {:.2} s wall, {:.0} texts/s",
            self.elapsed.as_secs_f64(),
            self.texts_per_second()
        )?;
        let why = match &self.stop {
            None => return Ok(()),
            Some(Stop::Interrupted) => "interrupted".to_owned(),
            Some(Stop::Fatal(e)) => e.to_string(),
        };
        write!(f, "\nstopped: {why}")?;
        if let Some(dir) = &self.partial {
            write!(
                f,
                "; partial outputs in {} (any complete outputs of an earlier run are left as \
                 they were; run again to finish the work)",
                dir.display()
            )?;
        }
        Ok(())
    }
}
