//! Hostile cases: network.
