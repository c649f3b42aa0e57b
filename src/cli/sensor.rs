//! `packd sensor list|get|restart`: supervised sensor processes of the running agent.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum SensorCmd {
    /// Every sensor with its state, pid, restarts and last exit.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One sensor, with the last lines of its stderr.
    Get {
        r#ref: String,
        #[arg(long)]
        json: bool,
    },
    /// Restart a sensor now (also skips a pending backoff).
    Restart { r#ref: String },
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn run(cmd: SensorCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        SensorCmd::List { json } => {
            let v = super::call(data, &json!({"op": "sensor.list"}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        let exit = match (&x["last_exit_code"], &x["last_signal"]) {
                            (Value::Number(c), _) => format!("code {c}"),
                            (_, Value::Number(sig)) => format!("signal {sig}"),
                            _ => "-".into(),
                        };
                        vec![s(&x["ref"]), s(&x["state"]), s(&x["pid"]), s(&x["restarts"]), exit]
                    })
                    .collect();
                print!("{}", super::table(&["REF", "STATE", "PID", "RESTARTS", "LAST EXIT"], &rows));
            }
        }
        SensorCmd::Get { r#ref, json } => {
            let v = super::call(data, &json!({"op": "sensor.get", "ref": r#ref}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in ["ref", "state", "pid", "restarts", "last_exit_code", "last_signal", "last_error", "events"] {
                    println!("{k}: {}", s(&v[k]));
                }
                println!("last stderr:");
                for l in v["last_stderr"].as_array().into_iter().flatten() {
                    println!("  {}", l.as_str().unwrap_or(""));
                }
            }
        }
        SensorCmd::Restart { r#ref } => {
            super::call(data, &json!({"op": "sensor.restart", "ref": r#ref}))?;
            println!("sensor {ref} restarted", ref = r#ref);
        }
    }
    Ok(ExitCode::SUCCESS)
}
