//! `packd run REF key=value ...`: run an action through the agent and wait for it, like
//! `st2 run`. Exit code 0 only when the execution succeeded.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Action ref, e.g. core.local.
    pub action: String,
    /// Parameters as key=value. The first word without `=` and everything after it become
    /// `cmd` (`packd run core.local date -u`), as in `st2 run`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub params: Vec<String>,
    /// Return at once with the execution id instead of waiting.
    #[arg(long = "async")]
    pub async_: bool,
    #[arg(long)]
    pub json: bool,
}

/// Split `k=v` words; the first word without `=` starts the `cmd` text.
pub fn split_params(words: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(' ') => out.push((k.to_string(), v.to_string())),
            _ => {
                out.push(("cmd".to_string(), words[i..].join(" ")));
                break;
            }
        }
    }
    out
}

pub fn run(args: RunArgs, data: &Path) -> anyhow::Result<ExitCode> {
    let pairs: Vec<Value> = split_params(&args.params).into_iter().map(|(k, v)| json!([k, v])).collect();
    let req = json!({"op": "run", "action": args.action, "args": pairs, "wait": !args.async_});
    let e = super::call(data, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        super::execution::print_execution(&e);
    }
    let status = e.get("status").and_then(Value::as_str).unwrap_or("");
    Ok(if args.async_ || status == "succeeded" { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FAILED) })
}
