//! The command line: one clap definition for every command, dispatched to one file per command
//! group. Commands that only read packs work without an agent; commands that act on a running
//! agent talk to it over its admin socket. This module parses and prints; it owns no state.

pub mod action;
pub mod alias;
pub mod events;
pub mod execution;
pub mod key;
pub mod pack;
pub mod run;
pub mod sensor;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// packd: run StackStorm and Attune packs on one machine.
#[derive(Debug, Parser)]
#[command(name = "packd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// State directory of the agent (database, admin socket, key file) [default: ./var, or the
    /// `data` of /etc/packd/config.yaml when that file exists]
    #[arg(long, global = true, env = "PACKD_DATA")]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load packs, listen, run executions, until SIGTERM.
    Serve(crate::deploy::config::ServeFlags),
    /// Run an action and wait for its result.
    Run(run::RunArgs),
    /// Inspect and check packs.
    #[command(subcommand)]
    Pack(pack::PackCmd),
    /// Executions: list, get, cancel.
    #[command(subcommand)]
    Execution(execution::ExecutionCmd),
    /// Actions the running agent knows.
    #[command(subcommand)]
    Action(action::ActionCmd),
    /// Trigger types.
    #[command(subcommand)]
    Trigger(events::TriggerCmd),
    /// Rules: list, get, enable, disable.
    #[command(subcommand)]
    Rule(events::RuleCmd),
    /// Webhook urls.
    #[command(subcommand)]
    Webhook(events::WebhookCmd),
    /// Trigger instances (events) and what they caused.
    #[command(subcommand, name = "trigger-instance")]
    TriggerInstance(events::TriggerInstanceCmd),
    /// Supervised sensors: list, get, restart.
    #[command(subcommand)]
    Sensor(sensor::SensorCmd),
    /// The datastore: set, get, list, delete.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Action aliases: list, match, run.
    #[command(subcommand)]
    Alias(alias::AliasCmd),
}

/// Exit codes, as documented in the README: 0 = success, 1 = the thing checked or run failed,
/// 2 = usage or configuration error (clap uses 2 for usage errors too).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `serve` takes its data directory from its configuration; clients look for the agent's.
    let flag = cli.data;
    let data = || client_data(flag.clone());
    match cli.command {
        Command::Serve(flags) => serve::run(flags, flag.clone()),
        Command::Run(args) => run::run(args, &data()),
        Command::Pack(cmd) => pack::run(cmd, &data()),
        Command::Execution(cmd) => execution::run(cmd, &data()),
        Command::Action(cmd) => action::run(cmd, &data()),
        Command::Trigger(cmd) => events::trigger(cmd, &data()),
        Command::Rule(cmd) => events::rule(cmd, &data()),
        Command::Webhook(cmd) => events::webhook(cmd, &data()),
        Command::TriggerInstance(cmd) => events::trigger_instance(cmd, &data()),
        Command::Sensor(cmd) => sensor::run(cmd, &data()),
        Command::Key(cmd) => key::run(cmd, &data()),
        Command::Alias(cmd) => alias::run(cmd, &data()),
    }
}

/// Where a client command finds the agent: `--data`/`$PACKD_DATA`, else the `data` of the
/// system configuration file when there is one (a device set up with systemd), else `./var`.
fn client_data(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if std::path::Path::new(crate::deploy::config::DEFAULT_CONFIG_PATH).is_file()
        && let Ok(c) = crate::deploy::config::load(None)
    {
        return c.data;
    }
    PathBuf::from(crate::deploy::config::LOCAL_DATA_DIR)
}

/// One request to the running agent over its admin socket.
pub fn call(data: &std::path::Path, req: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let sock = data.join(crate::admin::SOCKET_NAME);
    crate::admin::call(&sock, req).map_err(anyhow::Error::from)
}

/// `./packs` (and `./packs/examples` when present) when no `--packs` was given, so the
/// README's first command runs the shipped packs straight from a checkout.
pub fn default_packs(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if !dirs.is_empty() {
        return dirs;
    }
    let mut d = vec![PathBuf::from("packs")];
    if std::path::Path::new("packs/examples").is_dir() {
        d.push(PathBuf::from("packs/examples"));
    }
    d
}

/// Render rows as an aligned text table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let cells: Vec<String> = cells.collect();
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().map(|h| h.to_string()), &mut out);
    for r in rows {
        line(&mut r.iter().cloned(), &mut out);
    }
    out
}
