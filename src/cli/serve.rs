//! `packd serve`: run the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::engine::{self, Settings};
use crate::store::Synchronous;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directories of packs (default: ./packs and ./packs/examples).
    #[arg(long = "packs")]
    pub packs: Vec<PathBuf>,
    /// Directories with StackStorm `<pack>.yaml` configs (default: beside each packs dir).
    #[arg(long = "configs")]
    pub configs: Vec<PathBuf>,
    /// Address of the webhook/health/metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub listen: SocketAddr,
    /// Executions running at once.
    #[arg(long, default_value_t = engine::DEFAULT_MAX_CONCURRENT)]
    pub max_concurrent: usize,
    /// Bytes of stdout and of stderr kept per execution.
    #[arg(long, default_value_t = crate::runner::process::DEFAULT_OUTPUT_CAP)]
    pub output_cap: usize,
    /// SQLite durability: normal (WAL, fsync at checkpoints) or full (fsync every commit).
    #[arg(long, default_value = "normal", value_parser = ["normal", "full"])]
    pub synchronous: String,
    /// Shared token webhooks must present (X-Packd-Token, St2-Api-Key or Bearer). Prefer the
    /// PACKD_WEBHOOK_TOKEN environment variable: arguments are visible to other local users.
    #[arg(long, env = "PACKD_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// HMAC-SHA256 secret for `X-Hub-Signature-256` (GitHub style).
    #[arg(long, env = "PACKD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Allow binding beyond loopback without webhook authentication.
    #[arg(long)]
    pub allow_insecure_bind: bool,
    /// How pack changes are noticed: inotify, poll (network filesystems) or off.
    #[arg(long, default_value = "inotify", value_parser = ["inotify", "poll", "off"])]
    pub watch: String,
}

pub fn run(args: ServeArgs, data: PathBuf) -> anyhow::Result<ExitCode> {
    let data = std::path::absolute(&data)?;
    let packs: Vec<PathBuf> =
        super::default_packs(args.packs).into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect();
    let settings = Settings {
        data_dir: data,
        packs,
        configs: args.configs,
        listen: args.listen,
        output_cap: args.output_cap,
        max_concurrent: args.max_concurrent,
        synchronous: if args.synchronous == "full" { Synchronous::Full } else { Synchronous::Normal },
        webhook_token: args.webhook_token,
        webhook_secret: args.webhook_secret,
        allow_insecure_bind: args.allow_insecure_bind,
        watch: crate::watch::WatchMode::parse(&args.watch).unwrap_or(crate::watch::WatchMode::Native),
    };
    engine::serve(settings)?;
    Ok(ExitCode::SUCCESS)
}
