//! Hostile cases: outputs.
