//! `packd alias list|match|run "greet Yo"`: action aliases, as StackStorm's ChatOps matches them.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Aliases of the loaded packs and their formats.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show which alias a command matches and the parameters it yields.
    Match {
        command: String,
        #[arg(long)]
        json: bool,
    },
    /// Match a command and run its action (waits; exit 1 unless it succeeded).
    Run {
        command: String,
        #[arg(long = "async")]
        async_: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AliasCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        AliasCmd::List { json } => {
            let v = super::call(data, &json!({"op": "alias.list"}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let formats: Vec<&str> =
                            a["formats"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        vec![
                            a["ref"].as_str().unwrap_or("").into(),
                            a["action"].as_str().unwrap_or("").into(),
                            formats.join(" | "),
                        ]
                    })
                    .collect();
                print!("{}", super::table(&["REF", "ACTION", "FORMATS"], &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        AliasCmd::Match { command, json } => {
            let v = super::call(data, &json!({"op": "alias.match", "command": command}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("alias: {}", v["alias"].as_str().unwrap_or(""));
                println!("action: {}", v["action"].as_str().unwrap_or(""));
                println!("format: {}", v["format"].as_str().unwrap_or(""));
                println!("parameters: {}", v["parameters"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        AliasCmd::Run { command, async_, json } => {
            let e = super::call(data, &json!({"op": "alias.run", "command": command, "wait": !async_}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                super::execution::print_execution(&e);
            }
            let ok = async_ || e["status"] == "succeeded";
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FAILED) })
        }
    }
}
