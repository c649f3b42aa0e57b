//! `packd serve`: resolve the configuration (file, then flags), set up logging, run the agent.
//! A configuration error is reported before anything starts, with exit code 2.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::deploy::config::{self, ServeFlags};
use crate::engine::{self, Settings};
use crate::store::Synchronous;
use crate::watch::WatchMode;

pub fn run(mut flags: ServeFlags, data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    flags.data = data;
    let cfg = match config::resolve(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("packd: configuration error: {e}");
            return Ok(ExitCode::from(e.exit_code()));
        }
    };
    crate::deploy::logging::init(cfg.log_level);
    // Secrets in `Config` print masked.
    crate::log_debug!("configuration: {cfg:?}");
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let packs: Vec<PathBuf> = super::default_packs(cfg.packs.clone()).into_iter().map(abs).collect();
    let settings = Settings {
        data_dir: abs(cfg.data.clone()),
        packs,
        configs: cfg.configs.iter().cloned().map(abs).collect(),
        listen: cfg.listen,
        output_cap: cfg.output_cap_bytes,
        max_concurrent: cfg.max_concurrent_executions,
        synchronous: match cfg.synchronous {
            config::Synchronous::Full => Synchronous::Full,
            config::Synchronous::Normal => Synchronous::Normal,
        },
        webhook_token: cfg.webhook_token.as_ref().map(|s| s.expose().to_string()),
        webhook_secret: cfg.webhook_hmac_secret.as_ref().map(|s| s.expose().to_string()),
        allow_insecure_bind: cfg.allow_insecure_bind,
        watch: match cfg.watch {
            config::Watch::Inotify => WatchMode::Native,
            config::Watch::Poll => WatchMode::Poll,
            config::Watch::Off => WatchMode::Off,
        },
        retention_days: cfg.retention_days,
        action_timeout_default: cfg.action_timeout_default,
    };
    engine::serve(settings)?;
    Ok(ExitCode::SUCCESS)
}
