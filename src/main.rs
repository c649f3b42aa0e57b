//! packd's entry point: parse arguments, dispatch, map errors to exit codes. Nothing else.

#[macro_use]
mod logx;

mod admin;
mod cli;
mod engine;
mod expr;
mod http;
mod pack;
mod registry;
mod runner;
mod sensor;
mod store;
#[allow(dead_code)]
mod timers;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("packd: error: {err:#}");
            ExitCode::from(cli::EXIT_FAILED)
        }
    }
}
