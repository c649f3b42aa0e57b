//! packd's entry point: parse arguments, dispatch, map errors to exit codes. Nothing else.

use std::process::ExitCode;

use clap::Parser;
use packd::cli;

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
