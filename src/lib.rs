//! puzzlegen: word-grouping puzzles (themes x words) scored with text embeddings.
//!
//! # Layout
//!
//! A run flows in one direction, each step in its own module:
//!
//! - [`config`]: `params.yaml` (the Python pipeline's file, unchanged) -> one validated [`Config`].
//! - [`input`]: `selected_themes.json` and `candidate_words.json` -> [`input::Inputs`].
//! - [`plan`]: which theme fills which slot of which puzzle; spare themes.
//! - [`engine`]: themes processed concurrently, each under a deadline, with [`progress`].
//! - [`theme`]: one theme worker: dedupe candidates, embed, cosine to the theme, rank.
//! - [`embed`]: the [`embed::Provider`] trait and its backends ([`embed::local`],
//!   [`embed::gemini`], [`embed::openai`]), and the [`embed::service`] that puts the [`cache`],
//!   request coalescing, retries and the [`limit`]er in front of a provider.
//! - [`cache`]: vectors already paid for: memory in front of an SQLite database, and the
//!   Python pipeline's cache CSVs in and out.
//! - [`journal`]: each finished theme result, so a killed run resumes with what is left.
//! - [`assemble`]: each puzzle's words chosen jointly (no word twice), with a quality margin.
//! - [`report`]: the output files, with the original names and shapes, written atomically.
//! - [`pipeline`]: the only module that knows the order of the steps above.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`pipeline::run`] and maps the
//! result to an exit code.

pub mod assemble;
pub mod cache;
pub mod config;
pub mod embed;
pub mod engine;
pub mod input;
pub mod journal;
pub mod limit;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod theme;

pub use config::Config;
