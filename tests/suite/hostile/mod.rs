//! Hostile and careless inputs (issue 10), grouped as the issue lists them: nothing the user
//! paid for is lost, nothing is clobbered, nothing is silent or endless. One module per group.

mod cache;
mod fuzz;
mod inputs;
mod limits;
mod messages;
mod network;
mod outputs;
mod shared;
mod status;
mod tiers;
