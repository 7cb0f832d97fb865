//! Prefetch: the texts of the themes just ahead of the engine are queued before their themes
//! start, so requests go out full and as fast as the limiter allows.
//!
//! A window at a time: [`AHEAD`] themes at the start, and [`AHEAD`] more whenever fewer than
//! that are queued and unfinished, so at most twice [`AHEAD`] themes' texts wait at once: the
//! service's bookkeeping stays the same size whatever the number of themes (queuing every text
//! of a 3,200-theme plan at once held ~120,000 of them). Refilling a whole window at once, not
//! a theme per finished theme, keeps the requests full: a trickle of one theme's texts at a
//! time made the batcher send part-filled requests (132 requests instead of 127 on the
//! original's workload, bench/gemini_mock.sh).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::input::Inputs;
use crate::service::EmbeddingService;

/// Themes whose texts are queued ahead of the engine: at ~50 texts per theme, a few hundred
/// requests' worth, far more than any provider has in flight.
pub(super) const AHEAD: usize = 256;

/// The themes to prefetch, in the order the engine takes them, and how far it got.
pub(super) struct Prefetch {
    service: Arc<EmbeddingService>,
    inputs: Arc<Inputs>,
    themes: Vec<String>,
    /// Themes queued so far.
    next: AtomicUsize,
    /// Themes finished so far.
    finished: AtomicUsize,
    words_per_theme: usize,
}

impl Prefetch {
    /// Queues the first [`AHEAD`] of `themes` (none when `themes` is empty).
    pub(super) fn start(
        service: Arc<EmbeddingService>,
        inputs: Arc<Inputs>,
        themes: Vec<String>,
        words_per_theme: usize,
    ) -> Prefetch {
        let p = Prefetch {
            service,
            inputs,
            themes,
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            words_per_theme,
        };
        p.queue(AHEAD);
        p
    }

    /// A theme finished: when fewer than [`AHEAD`] queued themes are left unfinished, the
    /// next [`AHEAD`] are queued.
    pub(super) fn one_more(&self) {
        let finished = self.finished.fetch_add(1, Ordering::Relaxed) + 1;
        let queued = self.next.load(Ordering::Relaxed);
        if queued < self.themes.len() && queued < finished + AHEAD {
            self.queue(AHEAD);
        }
    }

    fn queue(&self, n: usize) {
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        for theme in self.themes.iter().skip(start).take(n) {
            if let Some(texts) = self.inputs.texts_to_embed(theme, self.words_per_theme) {
                self.service.prefetch(&texts);
            }
        }
    }
}
