//! packd as a library: every layer of the agent, so the binary (`main.rs`) is only argument
//! parsing and exit codes, and each module's public surface is its contract with the others.
//! ARCHITECTURE.md has the map.

#[macro_use]
pub mod logx;

pub mod admin;
pub mod cli;
pub mod deploy;
pub mod engine;
pub mod expr;
pub mod http;
pub mod pack;
pub mod registry;
pub mod runner;
pub mod sensor;
pub mod store;
pub mod timers;
pub mod watch;
