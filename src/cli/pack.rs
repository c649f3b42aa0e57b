//! `packd pack …`: validate pack directories and list what they hold. Reads packs straight from
//! disk; never needs a running agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use crate::pack::{self, LoadOptions, LoadedPack, Severity};

#[derive(Debug, Subcommand)]
pub enum PackCmd {
    /// Check packs and print every problem like a compiler (exit 1 when any error).
    Validate {
        /// Pack directories, or directories of packs.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Directory holding `<pack>.yaml` configs (default: `<DIR>/../configs`).
        #[arg(long = "configs")]
        configs: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One pack as the running agent has it: status, last error, recent reloads.
    Get {
        r#ref: String,
        #[arg(long)]
        json: bool,
    },
    /// Make the running agent re-read one pack (or all) from disk now.
    Reload {
        r#ref: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List packs with their dialect and what they contain. Without --packs, asks the running
    /// agent (which adds a status column: loaded, or stale when the last reload failed), and
    /// reads ./packs from disk when no agent answers.
    List {
        /// Directories of packs (default: ./packs).
        #[arg(long = "packs")]
        packs: Vec<PathBuf>,
        #[arg(long = "configs")]
        configs: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PackCmd, data: &std::path::Path) -> anyhow::Result<ExitCode> {
    match cmd {
        PackCmd::Validate { dirs, configs, json } => validate(&dirs, configs, json),
        PackCmd::List { packs, configs, json } => {
            if packs.is_empty()
                && let Ok(v) = super::call(data, &json!({"op": "pack.list"}))
            {
                return agent_list(&v, json);
            }
            list(&super::default_packs(packs), configs, json)
        }
        PackCmd::Get { r#ref, json } => {
            let v = super::call(data, &json!({"op": "pack.get", "ref": r#ref}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in ["ref", "version", "dialect", "status", "dir", "digest"] {
                    println!("{k}: {}", v[k].as_str().map(str::to_string).unwrap_or_else(|| v[k].to_string()));
                }
                if let Some(e) = v["error"].as_str() {
                    println!("error: {e}");
                }
                println!("counts: {}", v["counts"]);
                for r in v["reloads"].as_array().into_iter().flatten() {
                    println!(
                        "reload {} at {}: {}",
                        r["id"],
                        r["at"].as_str().unwrap_or(""),
                        r["result"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PackCmd::Reload { r#ref, json } => {
            let v = super::call(data, &json!({"op": "pack.reload", "ref": r#ref}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let changed: Vec<String> =
                v["changed"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect();
            println!("changed: {}", if changed.is_empty() { "nothing".to_string() } else { changed.join(", ") });
            agent_list(&v["packs"], false)
        }
    }
}

fn agent_list(v: &serde_json::Value, as_json: bool) -> anyhow::Result<ExitCode> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let n =
        |p: &serde_json::Value, k: &str| p["counts"][k].as_u64().map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut status = p["status"].as_str().unwrap_or("").to_string();
            if let Some(e) = p["error"].as_str() {
                status = format!("{status}: {e}");
            }
            vec![
                p["ref"].as_str().unwrap_or("").to_string(),
                p["version"].as_str().unwrap_or("-").to_string(),
                p["dialect"].as_str().unwrap_or("-").to_string(),
                n(p, "actions"),
                n(p, "sensors"),
                n(p, "triggers"),
                n(p, "rules"),
                n(p, "aliases"),
                n(p, "policies"),
                status,
            ]
        })
        .collect();
    let header =
        ["REF", "VERSION", "DIALECT", "ACTIONS", "SENSORS", "TRIGGERS", "RULES", "ALIASES", "POLICIES", "STATUS"];
    print!("{}", super::table(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

fn counts(l: &LoadedPack) -> serde_json::Value {
    match &l.pack {
        Some(p) => json!({
            "actions": p.actions.len(),
            "sensors": p.sensors.len(),
            "triggers": p.triggers.len(),
            "rules": p.rules.len(),
            "aliases": p.aliases.len(),
            "policies": p.policies.len(),
        }),
        None => json!(null),
    }
}

fn summary(loaded: &[LoadedPack]) -> serde_json::Value {
    serde_json::Value::Array(
        loaded
            .iter()
            .map(|l| {
                json!({
                    "ref": l.pack.as_ref().map(|p| p.ref_.clone()),
                    "dir": l.dir,
                    "version": l.pack.as_ref().map(|p| p.version.clone()),
                    "dialect": l.pack.as_ref().map(|p| p.dialect.as_str()),
                    "loaded": l.pack.is_some(),
                    "errors": l.errors(),
                    "warnings": l.diagnostics.len() - l.errors(),
                    "counts": counts(l),
                })
            })
            .collect(),
    )
}

fn validate(dirs: &[PathBuf], configs: Vec<PathBuf>, as_json: bool) -> anyhow::Result<ExitCode> {
    let loaded = pack::load_dirs(dirs, &LoadOptions { config_dirs: configs });
    let diags: Vec<&pack::Diagnostic> = loaded.iter().flat_map(|l| &l.diagnostics).collect();
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = diags.len() - errors;
    if as_json {
        let out = json!({
            "packs": summary(&loaded),
            "diagnostics": diags,
            "errors": errors,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &diags {
            println!("{d}");
        }
        let ok = loaded.iter().filter(|l| l.pack.is_some()).count();
        let items: usize = loaded
            .iter()
            .filter_map(|l| l.pack.as_ref())
            .map(|p| {
                p.actions.len()
                    + p.sensors.len()
                    + p.triggers.len()
                    + p.rules.len()
                    + p.aliases.len()
                    + p.policies.len()
            })
            .sum();
        println!(
            "{ok} of {} packs loaded ({items} items): {errors} error{}, {warnings} warning{}",
            loaded.len(),
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        );
    }
    Ok(if errors > 0 { ExitCode::from(super::EXIT_FAILED) } else { ExitCode::SUCCESS })
}

fn list(dirs: &[PathBuf], configs: Vec<PathBuf>, as_json: bool) -> anyhow::Result<ExitCode> {
    let loaded = pack::load_dirs(dirs, &LoadOptions { config_dirs: configs });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&summary(&loaded))?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = loaded
        .iter()
        .map(|l| {
            let status = match (l.pack.is_some(), l.errors()) {
                (true, 0) => "ok".to_string(),
                (true, n) => format!("loaded, {n} item error{}", if n == 1 { "" } else { "s" }),
                (false, _) => "failed".to_string(),
            };
            match &l.pack {
                Some(p) => vec![
                    p.ref_.clone(),
                    p.version.clone(),
                    p.dialect.as_str().to_string(),
                    p.actions.len().to_string(),
                    p.sensors.len().to_string(),
                    p.triggers.len().to_string(),
                    p.rules.len().to_string(),
                    p.aliases.len().to_string(),
                    p.policies.len().to_string(),
                    status,
                ],
                None => {
                    let name = l.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let mut r = vec![name, "-".into(), "-".into()];
                    r.extend(std::iter::repeat_n("-".to_string(), 6));
                    r.push(status);
                    r
                }
            }
        })
        .collect();
    print!(
        "{}",
        super::table(
            &["REF", "VERSION", "DIALECT", "ACTIONS", "SENSORS", "TRIGGERS", "RULES", "ALIASES", "POLICIES", "STATUS"],
            &rows
        )
    );
    for l in &loaded {
        for d in l.diagnostics.iter().filter(|d| d.severity == Severity::Error) {
            eprintln!("{d}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
