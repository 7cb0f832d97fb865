//! Hostile cases: inputs.
