//! `packd action list|get`: the actions the running agent knows.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum ActionCmd {
    List {
        /// Only this pack's actions.
        #[arg(long)]
        pack: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Get {
        r#ref: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ActionCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ActionCmd::List { pack, json } => {
            let v = super::call(data, &json!({"op": "action.list"}))?;
            let items: Vec<&serde_json::Value> = v
                .as_array()
                .map(|a| a.iter().filter(|x| pack.as_deref().is_none_or(|p| x["pack"] == p)).collect())
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|a| {
                        vec![
                            a["ref"].as_str().unwrap_or("").to_string(),
                            a["runner"].as_str().unwrap_or("").to_string(),
                            a["description"].as_str().unwrap_or("").chars().take(70).collect(),
                        ]
                    })
                    .collect();
                print!("{}", super::table(&["REF", "RUNNER", "DESCRIPTION"], &rows));
            }
        }
        ActionCmd::Get { r#ref, json } => {
            let v = super::call(data, &json!({"op": "action.get", "ref": r#ref}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("ref: {}", v["ref"].as_str().unwrap_or(""));
                println!("runner: {}", v["runner"].as_str().unwrap_or(""));
                println!("enabled: {}", v["enabled"]);
                println!("description: {}", v["description"].as_str().unwrap_or(""));
                println!("parameters: {}", serde_json::to_string_pretty(&v["parameters"]["properties"])?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
