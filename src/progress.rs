//! Progress of long work: a bar on a terminal, plain log lines elsewhere.
//!
//! On a TTY (stderr) an `indicatif` bar shows done/total, rate and ETA. When stderr is not a
//! terminal (CI, pipes, log files) a line is logged at every tenth of the work instead, so logs
//! stay readable and short.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar if stderr is a terminal, log lines otherwise.
    Auto,
    /// Nothing at all.
    Hidden,
}

/// A rate as a person reads it: `2158/s`, `12.5/s`, `0.25/s` (indicatif's own shows
/// `2,158.4009/s`).
fn rate(per_sec: f64) -> String {
    match per_sec {
        r if !r.is_finite() => "-/s".to_owned(),
        r if r >= 100.0 => format!("{r:.0}/s"),
        r if r >= 1.0 => format!("{r:.1}/s"),
        r => format!("{r:.2}/s"),
    }
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
                ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} ({rate}, eta {eta})")
                    .expect("static template is valid")
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate(s.per_sec()));
                    })
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
        self.add(1);
    }

    /// Marks `n` more items done.
    pub fn add(&self, n: u64) {
        let mut done = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = *done;
        *done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.log_lines && self.total > 0 && n > 0 {
            let step = (self.total / 10).max(1);
            if before / step != *done / step || *done == self.total {
                tracing::info!("{}: {}/{} done", self.label, *done, self.total);
            }
        }
    }

    /// Shows `note` after the label on the bar (on a terminal only: log lines say what
    /// changes as it changes).
    pub fn set_note(&self, note: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} ({note})", self.label));
        }
    }

    /// Removes the bar (if any) so the summary prints on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_plainly() {
        assert_eq!(super::rate(2158.4009), "2158/s");
        assert_eq!(super::rate(12.46), "12.5/s");
        assert_eq!(super::rate(0.254), "0.25/s");
        assert_eq!(super::rate(f64::INFINITY), "-/s");
    }
}
