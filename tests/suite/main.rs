//! The integration tests: one binary (one link of the library), one module per area. Shared
//! helpers are in [`common`]; tests that start a mock server start their own on a free
//! loopback port.

mod common;

mod batch;
mod batch_openai;
mod cache_cli;
mod cli;
mod cluster;
mod compat;
mod design;
mod gemini;
mod hostile;
mod local_model;
mod metrics;
mod plan;
mod redis;
mod resume;
mod review;
