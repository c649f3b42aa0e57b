//! `packd execution list|get|cancel`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum ExecutionCmd {
    /// Recent executions, newest first.
    List {
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// One execution with its parameters (secrets masked), result and output.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a requested, scheduled or running execution.
    Cancel { id: String },
}

pub fn run(cmd: ExecutionCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ExecutionCmd::List { action, status, limit, json } => {
            let v = super::call(
                data,
                &json!({"op": "execution.list", "action": action, "status": status, "limit": limit}),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                vec![
                                    e["id"].to_string(),
                                    e["action"].as_str().unwrap_or("").to_string(),
                                    e["status"].as_str().unwrap_or("").to_string(),
                                    e["created_at"].as_str().unwrap_or("").to_string(),
                                    e["finished_at"].as_str().unwrap_or("").to_string(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print!("{}", super::table(&["ID", "ACTION", "STATUS", "CREATED", "FINISHED"], &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCmd::Get { id, json } => {
            let e = super::call(data, &json!({"op": "execution.get", "id": id}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print_execution(&e);
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionCmd::Cancel { id } => {
            let v = super::call(data, &json!({"op": "execution.cancel", "id": id}))?;
            println!("execution {}: {}", v["id"], v["outcome"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The human view of an execution, close to `st2 execution get`.
pub fn print_execution(e: &Value) {
    println!("id: {}", e["id"]);
    println!("action: {}", e["action"].as_str().unwrap_or(""));
    println!("status: {}", e["status"].as_str().unwrap_or(""));
    if let Some(s) = e["started_at"].as_str() {
        println!("start_timestamp: {s}");
    }
    if let Some(s) = e["finished_at"].as_str() {
        println!("end_timestamp: {s}");
    }
    if let Some(err) = e["error"].as_str() {
        println!("error: {err}");
    }
    println!("parameters: {}", serde_json::to_string_pretty(&e["parameters"]).unwrap_or_default());
    println!("result: {}", serde_json::to_string_pretty(&e["result"]).unwrap_or_default());
}
