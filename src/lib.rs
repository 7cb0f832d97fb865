//! puzzlegen: word-grouping puzzles (themes x words) scored with text embeddings.
//!
//! # Layout
//!
//! A run flows in one direction, each step in its own module. Modules are layered: each uses
//! only the ones listed before it (checked by a test, `src/layers.rs`).
//!
//! - [`clock`]: wall-clock time as UNIX seconds; [`fsx`]: files written atomically (alone or as
//!   a set), through devices and links, and read with a size cap; `text`: long values cut
//!   short and byte counts for messages; [`metrics`]: what the process counts for Prometheus,
//!   and its `/metrics` endpoint.
//! - [`embed`]: the [`embed::Provider`] trait and its backends ([`embed::local`],
//!   [`embed::gemini`], [`embed::openai`]) and the providers' Batch APIs ([`embed::batch`]);
//!   [`words`]: normalised words, the original's plural rule, a theme's scored words.
//! - [`limit`]: the request limiter; [`config`]: `params.yaml` (the Python pipeline's file,
//!   unchanged) -> one validated [`Config`].
//! - [`distributed`]: the limiter and cache tier shared through Redis by every process that
//!   names the same one (`distributed.redis_url`, `--redis`).
//! - [`cache`]: vectors already paid for: memory in front of an SQLite database, and the
//!   Python pipeline's cache CSVs in and out; [`service`]: the cache, request coalescing,
//!   retries and the limiter in front of a provider.
//! - `journal`: each finished theme result, so a killed run resumes with what is left;
//!   `theme`: one theme worker: embed, cosine to the theme, rank.
//! - [`input`]: `selected_themes.json` and `candidate_words.json` -> [`input::Inputs`];
//!   [`plan`]: which theme fills which slot of which puzzle, spare themes; `engine`: themes
//!   processed concurrently, each under a deadline, with [`progress`].
//! - [`assemble`]: each puzzle's words chosen jointly (no word twice), with a quality margin.
//! - [`design`]: what a player meets in each puzzle: how hard each group is, and whether the
//!   words alone split back into the intended groups (the blind solver).
//! - [`report`]: the output files, with the original names and shapes, written as a set.
//! - [`pipeline`]: the order of the steps: [`pipeline::run`] returns a
//!   [`pipeline::RunResult`], [`pipeline::write_outputs`] writes its files.
//!
//! The binary (`src/bin/puzzlegen/`) is a thin shell: it parses arguments, calls the
//! pipeline or the cache, and maps every outcome to an exit code in one place (`exit.rs`).
#![warn(unreachable_pub)]

pub mod assemble;
pub mod cache;
pub mod clock;
pub mod config;
pub mod design;
pub mod distributed;
pub mod embed;
mod engine;
pub mod fsx;
pub mod input;
mod journal;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod service;
mod text;
mod theme;
pub mod words;

pub use config::Config;
pub use engine::ThemeOutcome;
pub use theme::ThemeError;

#[cfg(test)]
mod layers;
