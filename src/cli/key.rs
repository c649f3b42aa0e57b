//! `packd key set|get|list|delete`: the datastore, as `st2 key` does it. Secret values are
//! shown (and returned) encrypted unless `--decrypt` is given.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Set a key. The value is stored as a string.
    Set {
        name: String,
        value: String,
        /// Expire after this many seconds.
        #[arg(long, short = 'l')]
        ttl: Option<u64>,
        /// Encrypt the value at rest (st2 `--encrypt`).
        #[arg(long, short = 'e', visible_alias = "encrypt")]
        secret: bool,
        #[arg(long, default_value = "system")]
        scope: String,
        #[arg(long)]
        json: bool,
    },
    /// Read a key.
    Get {
        name: String,
        #[arg(long, short = 'd')]
        decrypt: bool,
        #[arg(long, default_value = "system")]
        scope: String,
        #[arg(long)]
        json: bool,
    },
    /// List keys.
    List {
        #[arg(long, short = 'p')]
        prefix: Option<String>,
        #[arg(long, short = 'd')]
        decrypt: bool,
        #[arg(long, default_value = "system")]
        scope: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key.
    Delete {
        name: String,
        #[arg(long, default_value = "system")]
        scope: String,
    },
}

pub fn run(cmd: KeyCmd, data: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCmd::Set { name, value, ttl, secret, scope, json } => {
            let v = super::call(
                data,
                &json!({"op": "kv.set", "name": name, "value": value, "ttl": ttl, "secret": secret, "scope": scope}),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}: {}", name, v["change"].as_str().unwrap_or("set"));
            }
        }
        KeyCmd::Get { name, decrypt, scope, json } => {
            let v = super::call(
                data,
                &json!({"op": "kv.get", "name": name, "decrypt": decrypt, "scope": scope, "full": true}),
            )?;
            if v.is_null() {
                eprintln!("packd: error: key {name:?} not found");
                return Ok(ExitCode::from(super::EXIT_FAILED));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", v["value"].as_str().unwrap_or(""));
            }
        }
        KeyCmd::List { prefix, decrypt, scope, json } => {
            let v = super::call(data, &json!({"op": "kv.list", "prefix": prefix, "decrypt": decrypt, "scope": scope}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let f = |x: &Value| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| if x.is_null() { "-".into() } else { x.to_string() })
                };
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| vec![f(&k["name"]), f(&k["value"]), f(&k["secret"]), f(&k["expire_timestamp"])])
                    .collect();
                print!("{}", super::table(&["NAME", "VALUE", "SECRET", "EXPIRES"], &rows));
            }
        }
        KeyCmd::Delete { name, scope } => {
            let v = super::call(data, &json!({"op": "kv.delete", "name": name, "scope": scope, "strict": true}))?;
            println!("{}: deleted", v["name"].as_str().unwrap_or(&name));
        }
    }
    Ok(ExitCode::SUCCESS)
}
