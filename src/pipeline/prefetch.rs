//! Prefetch: the texts of the themes just ahead of the engine are queued before their themes
//! start, so requests go out full and as fast as the limiter allows.
//!
//! A window at a time ([`AHEAD`] themes), one more theme queued as each one finishes: the
//! service's bookkeeping of queued texts stays the same size whatever the number of themes
//! (queuing every text of a 3,200-theme plan at once held ~120,000 of them).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::input::Inputs;
use crate::service::EmbeddingService;
use crate::words::{texts_of, usable_candidates};

/// Themes whose texts are queued ahead of the engine: at ~50 texts per theme, a few hundred
/// requests' worth, far more than any provider has in flight.
pub(super) const AHEAD: usize = 256;

/// The themes to prefetch, in the order the engine takes them, and how far it got.
pub(super) struct Prefetch {
    service: Arc<EmbeddingService>,
    inputs: Arc<Inputs>,
    themes: Vec<String>,
    next: AtomicUsize,
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
            words_per_theme,
        };
        p.queue(AHEAD);
        p
    }

    /// A theme finished: the next one beyond the window is queued.
    pub(super) fn one_more(&self) {
        self.queue(1);
    }

    fn queue(&self, n: usize) {
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        for theme in self.themes.iter().skip(start).take(n) {
            let Some(words) = self.inputs.candidates_of(theme) else {
                continue;
            };
            let usable = usable_candidates(words);
            if usable.len() >= self.words_per_theme {
                self.service.prefetch(&texts_of(theme, &usable));
            }
        }
    }
}
