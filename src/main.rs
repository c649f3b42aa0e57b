//! packd's entry point: parse arguments, dispatch, map errors to exit codes. Nothing else.

mod cli;
mod pack;

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
