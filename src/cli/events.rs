//! `packd trigger list`, `packd rule list|get|enable|disable`, `packd webhook list`,
//! `packd trigger-instance list|get`: what the running agent matches on, and what happened.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print(v: &Value, as_json: bool, header: &[&str], row: impl Fn(&Value) -> Vec<String>) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        let rows: Vec<Vec<String>> = v.as_array().map(|a| a.iter().map(&row).collect()).unwrap_or_default();
        print!("{}", super::table(header, &rows));
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum TriggerCmd {
    /// Trigger types of the loaded packs.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn trigger(cmd: TriggerCmd, data: &Path) -> anyhow::Result<ExitCode> {
    let TriggerCmd::List { json } = cmd;
    let v = super::call(data, &json!({"op": "trigger.list"}))?;
    print(&v, json, &["REF", "PACK", "DESCRIPTION"], |t| {
        vec![s(&t["ref"]), s(&t["pack"]), s(&t["description"]).chars().take(70).collect()]
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    List {
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
    /// Enable a rule (kept in the database; the pack file is not changed).
    Enable { r#ref: String },
    /// Disable a rule (kept in the database; the pack file is not changed).
    Disable { r#ref: String },
}

pub fn rule(cmd: RuleCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        RuleCmd::List { pack, json } => {
            let v = super::call(data, &json!({"op": "rule.list", "pack": pack}))?;
            print(&v, json, &["REF", "ENABLED", "TRIGGER", "ACTION"], |r| {
                vec![s(&r["ref"]), s(&r["enabled"]), s(&r["trigger"]["type"]), s(&r["action"]["ref"])]
            })?;
        }
        RuleCmd::Get { r#ref, json } => {
            let v = super::call(data, &json!({"op": "rule.get", "ref": r#ref}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in ["ref", "enabled", "description", "type", "metadata_file"] {
                    println!("{k}: {}", s(&v[k]));
                }
                println!("trigger: {}", serde_json::to_string_pretty(&v["trigger"])?);
                if !v["criteria"].is_null() {
                    println!("criteria: {}", serde_json::to_string_pretty(&v["criteria"])?);
                }
                if !v["conditions"].is_null() {
                    println!("conditions: {}", serde_json::to_string_pretty(&v["conditions"])?);
                }
                println!("action: {}", serde_json::to_string_pretty(&v["action"])?);
            }
        }
        RuleCmd::Enable { r#ref } => {
            let v = super::call(data, &json!({"op": "rule.enable", "ref": r#ref}))?;
            println!("rule {} enabled", s(&v["ref"]));
        }
        RuleCmd::Disable { r#ref } => {
            let v = super::call(data, &json!({"op": "rule.disable", "ref": r#ref}))?;
            println!("rule {} disabled", s(&v["ref"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Webhook urls the enabled rules listen on.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn webhook(cmd: WebhookCmd, data: &Path) -> anyhow::Result<ExitCode> {
    let WebhookCmd::List { json } = cmd;
    let v = super::call(data, &json!({"op": "webhook.list"}))?;
    print(&v, json, &["URL", "PATH", "RULES"], |w| {
        let rules: Vec<String> = w["rules"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
        vec![s(&w["url"]), s(&w["path"]), rules.join(",")]
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TriggerInstanceCmd {
    /// Recent trigger instances (events), newest first.
    List {
        #[arg(long)]
        trigger: Option<String>,
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// One trigger instance with its payload and the enforcements it caused.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn trigger_instance(cmd: TriggerInstanceCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        TriggerInstanceCmd::List { trigger, limit, json } => {
            let v = super::call(data, &json!({"op": "trigger_instance.list", "trigger": trigger, "limit": limit}))?;
            print(&v, json, &["ID", "TRIGGER", "STATUS", "SOURCE", "OCCURRED"], |t| {
                vec![s(&t["id"]), s(&t["trigger"]), s(&t["status"]), s(&t["source"]), s(&t["occurred_at"])]
            })?;
        }
        TriggerInstanceCmd::Get { id, json } => {
            let v = super::call(data, &json!({"op": "trigger_instance.get", "id": id}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in ["id", "trigger", "target", "status", "source", "occurred_at", "processed_at"] {
                    println!("{k}: {}", s(&v[k]));
                }
                println!("payload: {}", serde_json::to_string_pretty(&v["payload"])?);
                for e in v["enforcements"].as_array().into_iter().flatten() {
                    let reason = e["failure_reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                    println!(
                        "enforcement {}: rule {} -> execution {} {}{reason}",
                        s(&e["id"]),
                        s(&e["rule"]),
                        s(&e["execution_id"]),
                        s(&e["status"])
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
