//! Progress of long work: a bar on a terminal, plain log lines elsewhere.
//!
//! On a TTY (stderr) an `indicatif` bar shows done/total, rate and ETA. When stderr is not a
//! terminal (CI, pipes, log files) a line is logged at every tenth of the work instead, so logs
//! stay readable and short.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar if stderr is a terminal, log lines otherwise.
    Auto,
    /// Nothing at all.
    Hidden,
}

/// A counter of finished items out of a known total.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    state: Mutex<u64>,
    log_lines: bool,
}

impl Progress {
    pub fn new(mode: ProgressMode, label: &str, total: u64) -> Progress {
        let tty = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>8} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
            total,
            state: Mutex::new(0),
            log_lines: mode == ProgressMode::Auto && !tty,
        }
    }

    /// Marks one more item done.
    pub fn inc(&self) {
        let mut done = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if self.log_lines && self.total > 0 {
            let step = (self.total / 10).max(1);
            if done.is_multiple_of(step) || *done == self.total {
                tracing::info!("{}: {}/{} done", self.label, *done, self.total);
            }
        }
    }

    /// Removes the bar (if any) so the summary prints on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
