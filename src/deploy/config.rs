//! The agent's configuration: every `packd serve` option, read from a YAML file
//! (`/etc/packd/config.yaml` by default, or `--config FILE`) and overridden by flags.
//!
//! Precedence is defaults < file < flags. The file is parsed strictly: an unknown key (a typo)
//! is an error naming it, and every value is checked by [`Config::validate`], so a bad
//! configuration is reported, with the key and the reason, before anything starts (the caller
//! exits with [`EXIT_CONFIG`]). Relative paths in a file are relative to the file's directory,
//! so `packs: [packs]` in `/etc/packd/config.yaml` means `/etc/packd/packs`; relative paths in
//! flags are relative to the working directory, as usual.
//!
//! Defaults depend on where the configuration comes from. With a file (the systemd setup):
//! packs in `<file's dir>/packs`, state in `/var/lib/packd`. With no file (running from a
//! checkout): `packs` is left empty, meaning "the caller's default" (`./packs` and
//! `./packs/examples`), and state goes to `./var`.
//!
//! This module reads and checks configuration; it opens no socket, directory or database.
//! Secrets are held in [`Secret`], whose `Debug` masks them, so a `Config` can be logged.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::logging::Level;

/// Where the systemd setup keeps the configuration; read when it exists and no `--config`
/// was given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/packd/config.yaml";
/// State directory under systemd (`StateDirectory=packd`).
pub const SYSTEM_DATA_DIR: &str = "/var/lib/packd";
/// State directory when running from a checkout without a configuration file.
pub const LOCAL_DATA_DIR: &str = "var";
/// The webhook endpoint's default address: local only (see DESIGN.md "Local by default").
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";
/// Exit code for a configuration error (also what clap uses for a bad flag), so scripts and
/// systemd (`RestartPreventExitStatus=2`) can tell it from a runtime failure.
pub const EXIT_CONFIG: u8 = 2;

/// Largest configuration file read. A real one is a few hundred bytes; the cap keeps a wrong
/// `--config` (a log file, a device) from being read into memory.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// YAML nesting accepted in the file. The format is a flat map with lists of paths (depth 2).
pub const MAX_CONFIG_DEPTH: usize = 8;
/// YAML nodes accepted in the file: far more than a real file, far fewer than a YAML bomb.
pub const MAX_CONFIG_NODES: usize = 10_000;
/// Upper bound of `max_concurrent_executions`: each execution is a process with pipes, so more
/// than this exhausts a small device's process and descriptor limits long before it helps.
pub const MAX_CONCURRENT_EXECUTIONS: usize = 4096;
/// Bounds of `output_cap_bytes` (captured stdout/stderr per execution, stored in SQLite):
/// under 1 KiB even an error message is cut; over 64 MiB one chatty action fills an SD card.
pub const MIN_OUTPUT_CAP_BYTES: usize = 1024;
pub const MAX_OUTPUT_CAP_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound of `retention_days` (0 keeps records forever): 100 years is "forever" already,
/// and larger numbers overflow date arithmetic.
pub const MAX_RETENTION_DAYS: u64 = 36_500;
/// Upper bound of `action_timeout_default`, in seconds (one week): a longer-running job is a
/// service, not an action.
pub const MAX_ACTION_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Shortest webhook token or HMAC secret accepted. A short shared secret on a network-facing
/// endpoint can be guessed; 16 bytes is the floor GitHub-style webhook secrets are given.
pub const MIN_SECRET_BYTES: usize = 16;

/// A secret string (webhook token, HMAC key). `Debug` prints a mask and there is no
/// `Display`, so it cannot reach a log line by accident; use [`Secret::expose`] where the
/// value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// SQLite's `synchronous` pragma for the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + NORMAL: durable on checkpoint; a power cut may lose the last commits, never
    /// consistency. The fast default.
    #[default]
    Normal,
    /// FULL: every commit is fsynced; what a 202 acknowledged survives a power cut.
    Full,
}

/// How packs are watched for hot reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Watch {
    #[default]
    Inotify,
    /// Periodic rescans: for filesystems without inotify (NFS, some overlays).
    Poll,
    /// No hot reload; `packd pack reload` still works.
    Off,
}

/// An enum value that is not one of the accepted words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown value `{value}`: expected one of {expected}")]
pub struct BadWord {
    pub value: String,
    pub expected: &'static str,
}

macro_rules! words {
    ($ty:ty, $expected:literal, $($word:literal => $v:expr),+) => {
        impl FromStr for $ty {
            type Err = BadWord;
            fn from_str(s: &str) -> Result<Self, BadWord> {
                match s {
                    $($word => Ok($v),)+
                    _ => Err(BadWord { value: s.to_string(), expected: $expected }),
                }
            }
        }
        impl $ty {
            pub fn as_str(self) -> &'static str {
                $(if self == $v { return $word; })+
                ""
            }
        }
    };
}
words!(Synchronous, "normal, full", "normal" => Synchronous::Normal, "full" => Synchronous::Full);
words!(Watch, "inotify, poll, off",
    "inotify" => Watch::Inotify, "poll" => Watch::Poll, "off" => Watch::Off);

/// Every `packd serve` option, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this came from; `None` when no file was read.
    pub file: Option<PathBuf>,
    /// Directories of packs. Empty means the caller's default (no file and no `--packs`).
    pub packs: Vec<PathBuf>,
    /// Directories of StackStorm pack configs (`<pack>.yaml`). Empty: `configs/` beside each
    /// packs directory.
    pub configs: Vec<PathBuf>,
    /// State directory: the database, the secrets key, the Python shim.
    pub data: PathBuf,
    /// The webhook/health/metrics endpoint.
    pub listen: SocketAddr,
    /// Shared token webhooks must present.
    pub webhook_token: Option<Secret>,
    /// Key for GitHub-style HMAC-SHA256 body signatures.
    pub webhook_hmac_secret: Option<Secret>,
    /// Allow a non-loopback `listen` without webhook authentication.
    pub allow_insecure_bind: bool,
    pub synchronous: Synchronous,
    pub log_level: Level,
    pub watch: Watch,
    pub max_concurrent_executions: usize,
    /// Completed records older than this are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// Captured stdout/stderr per execution, in bytes.
    pub output_cap_bytes: usize,
    /// Timeout in seconds for actions that set none; `None`: each runner's own default.
    pub action_timeout_default: Option<u64>,
}

impl Default for Config {
    /// The defaults with no configuration file (a checkout).
    fn default() -> Config {
        Config {
            file: None,
            packs: Vec::new(),
            configs: Vec::new(),
            data: PathBuf::from(LOCAL_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            webhook_token: None,
            webhook_hmac_secret: None,
            allow_insecure_bind: false,
            synchronous: Synchronous::Normal,
            log_level: Level::Info,
            watch: Watch::Inotify,
            max_concurrent_executions: 8,
            retention_days: 30,
            output_cap_bytes: 1024 * 1024,
            action_timeout_default: None,
        }
    }
}

/// Why the configuration cannot be used. Every variant names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {}: {size} bytes, over the {max}-byte limit", path.display())]
    TooLarge { path: PathBuf, size: u64, max: usize },
    #[error("configuration file {}:{line}:{col}: {message}", path.display())]
    Parse { path: PathBuf, line: u64, col: u64, message: String },
    #[error("invalid configuration{}:{}", origin_suffix(.file), list(.problems))]
    Invalid { file: Option<PathBuf>, problems: Vec<Problem> },
}

impl ConfigError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        EXIT_CONFIG
    }
}

fn origin_suffix(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!(" ({} and flags)", f.display()),
        None => " (flags)".to_string(),
    }
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Problem {
    pub key: &'static str,
    pub reason: String,
}

/// The file as written: every key optional, no other key allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    packs: Option<Vec<PathBuf>>,
    configs: Option<Vec<PathBuf>>,
    data: Option<PathBuf>,
    listen: Option<String>,
    webhook_token: Option<String>,
    webhook_hmac_secret: Option<String>,
    allow_insecure_bind: Option<bool>,
    synchronous: Option<String>,
    log_level: Option<String>,
    watch: Option<String>,
    max_concurrent_executions: Option<usize>,
    retention_days: Option<u64>,
    output_cap_bytes: Option<usize>,
    action_timeout_default: Option<u64>,
}

/// The flags of `packd serve`, one per option, for `#[command(flatten)]`. Every flag is
/// optional; a flag given replaces the file's value (a list flag replaces the whole list).
#[derive(Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// Configuration file [default: /etc/packd/config.yaml when it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of packs (repeatable) [default: ./packs, or <config dir>/packs]
    #[arg(long = "packs", value_name = "DIR")]
    pub packs: Vec<PathBuf>,
    /// Directory of pack configs `<pack>.yaml` (repeatable) [default: configs/ beside packs]
    #[arg(long = "configs", value_name = "DIR")]
    pub configs: Vec<PathBuf>,
    /// State directory: set from the global `--data` flag by the CLI (not a flag of its own).
    #[arg(skip)]
    pub data: Option<PathBuf>,
    /// Webhook/health/metrics address [default: 127.0.0.1:9101]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Shared webhook token (visible in `ps`: prefer the config file or PACKD_WEBHOOK_TOKEN)
    #[arg(long, value_name = "TOKEN", env = "PACKD_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<Secret>,
    /// HMAC-SHA256 webhook signature key (prefer the config file or PACKD_WEBHOOK_SECRET)
    #[arg(long, value_name = "SECRET", env = "PACKD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_hmac_secret: Option<Secret>,
    /// Allow a non-loopback --listen without webhook authentication
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_bind: Option<bool>,
    /// SQLite durability: normal | full [default: normal]
    #[arg(long, value_name = "MODE")]
    pub synchronous: Option<Synchronous>,
    /// error | warn | info | debug [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<Level>,
    /// Hot reload: inotify | poll | off [default: inotify]
    #[arg(long, value_name = "MODE")]
    pub watch: Option<Watch>,
    /// Executions running at once [default: 8]
    #[arg(long, value_name = "N")]
    pub max_concurrent_executions: Option<usize>,
    /// Days to keep completed records, 0 = forever [default: 30]
    #[arg(long, value_name = "DAYS")]
    pub retention_days: Option<u64>,
    /// Captured output per execution, bytes [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub output_cap_bytes: Option<usize>,
    /// Timeout for actions that set none, seconds [default: the runner's]
    #[arg(long, value_name = "SECONDS")]
    pub action_timeout_default: Option<u64>,
}

impl fmt::Debug for ServeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secret's own Debug masks; listed by hand only because clap's derive needs no Debug.
        f.debug_struct("ServeFlags")
            .field("config", &self.config)
            .field("packs", &self.packs)
            .field("webhook_token", &self.webhook_token)
            .field("webhook_hmac_secret", &self.webhook_hmac_secret)
            .finish_non_exhaustive()
    }
}

/// `load(flags.config)`, then the flags, then `validate`: the whole configuration of
/// `packd serve`, or the error to print before exiting with [`EXIT_CONFIG`].
pub fn resolve(flags: &ServeFlags) -> Result<Config, ConfigError> {
    let mut config = load(flags.config.as_deref())?;
    config.apply(flags);
    config.validate()?;
    Ok(config)
}

/// Reads the configuration file: `path` when given (missing is an error), else
/// [`DEFAULT_CONFIG_PATH`] when it exists, else the defaults. Values are not validated yet
/// (flags may still change them): call [`Config::validate`].
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_from(path, Path::new(DEFAULT_CONFIG_PATH))
}

fn load_from(path: Option<&Path>, default_path: &Path) -> Result<Config, ConfigError> {
    let (path, explicit) = match path {
        Some(p) => (p, true),
        None => (default_path, false),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if explicit {
                Err(ConfigError::NotFound { path: path.to_path_buf() })
            } else {
                Ok(Config::default())
            };
        }
        Err(source) => {
            return Err(ConfigError::Read { path: path.to_path_buf(), source });
        }
    };
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(ConfigError::TooLarge { path: path.to_path_buf(), size: meta.len(), max: MAX_CONFIG_BYTES });
    }
    let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(read)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        ))
    })?;
    Config::from_yaml(&text, path)
}

impl Config {
    /// Parses a configuration file's text; `path` is where it came from (for messages and for
    /// resolving relative paths). An empty file, or one with only comments, gives the defaults.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: text.len() as u64,
                max: MAX_CONFIG_BYTES,
            });
        }
        let raw = if is_blank_yaml(text) {
            FileConfig::default()
        } else {
            serde_saphyr::from_str_with_options::<FileConfig>(text, yaml_options())
                .map_err(|e| parse_error(&e, text, path))?
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        // An empty entry stays empty, so `validate` reports it instead of it becoming the
        // config directory.
        let rel = |p: PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() { dir.join(p) } else { p }
        };
        let mut problems = Vec::new();
        let mut word = |key: &'static str, v: Option<String>, set: &mut dyn FnMut(&str) -> Result<(), String>| {
            if let Some(v) = v
                && let Err(reason) = set(&v)
            {
                problems.push(Problem { key, reason });
            }
        };

        let mut c = Config {
            file: Some(path.to_path_buf()),
            packs: vec![dir.join("packs")],
            data: PathBuf::from(SYSTEM_DATA_DIR),
            ..Config::default()
        };
        word("listen", raw.listen, &mut |v| {
            c.listen = parse_listen(v)?;
            Ok(())
        });
        word("synchronous", raw.synchronous, &mut |v| {
            c.synchronous = v.parse().map_err(|e: BadWord| e.to_string())?;
            Ok(())
        });
        word("watch", raw.watch, &mut |v| {
            c.watch = v.parse().map_err(|e: BadWord| e.to_string())?;
            Ok(())
        });
        word("log_level", raw.log_level, &mut |v| {
            c.log_level = v.parse().map_err(|e: super::logging::ParseLevelError| {
                BadWord { value: e.0, expected: "error, warn, info, debug" }.to_string()
            })?;
            Ok(())
        });
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { file: c.file, problems });
        }
        if let Some(v) = raw.packs {
            c.packs = v.into_iter().map(rel).collect();
        }
        if let Some(v) = raw.configs {
            c.configs = v.into_iter().map(rel).collect();
        }
        if let Some(v) = raw.data {
            c.data = rel(v);
        }
        c.webhook_token = raw.webhook_token.map(Secret);
        c.webhook_hmac_secret = raw.webhook_hmac_secret.map(Secret);
        set(&mut c.allow_insecure_bind, raw.allow_insecure_bind);
        set(&mut c.max_concurrent_executions, raw.max_concurrent_executions);
        set(&mut c.retention_days, raw.retention_days);
        set(&mut c.output_cap_bytes, raw.output_cap_bytes);
        if raw.action_timeout_default.is_some() {
            c.action_timeout_default = raw.action_timeout_default;
        }
        Ok(c)
    }

    /// Applies the flags that were given over this configuration.
    pub fn apply(&mut self, f: &ServeFlags) {
        if !f.packs.is_empty() {
            self.packs = f.packs.clone();
        }
        if !f.configs.is_empty() {
            self.configs = f.configs.clone();
        }
        set(&mut self.data, f.data.clone());
        set(&mut self.listen, f.listen);
        if f.webhook_token.is_some() {
            self.webhook_token = f.webhook_token.clone();
        }
        if f.webhook_hmac_secret.is_some() {
            self.webhook_hmac_secret = f.webhook_hmac_secret.clone();
        }
        set(&mut self.allow_insecure_bind, f.allow_insecure_bind);
        set(&mut self.synchronous, f.synchronous);
        set(&mut self.log_level, f.log_level);
        set(&mut self.watch, f.watch);
        set(&mut self.max_concurrent_executions, f.max_concurrent_executions);
        set(&mut self.retention_days, f.retention_days);
        set(&mut self.output_cap_bytes, f.output_cap_bytes);
        if f.action_timeout_default.is_some() {
            self.action_timeout_default = f.action_timeout_default;
        }
    }

    /// Checks every value; the error lists each bad key with its reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let mut bad = |key: &'static str, reason: String| p.push(Problem { key, reason });

        for (key, dirs) in [("packs", &self.packs), ("configs", &self.configs)] {
            if dirs.iter().any(|d| d.as_os_str().is_empty()) {
                bad(key, "an entry is empty".to_string());
            }
        }
        if self.data.as_os_str().is_empty() {
            bad("data", "is empty".to_string());
        }
        for (key, secret) in
            [("webhook_token", &self.webhook_token), ("webhook_hmac_secret", &self.webhook_hmac_secret)]
        {
            // The reason never includes the value.
            if let Some(s) = secret {
                if s.0.len() < MIN_SECRET_BYTES {
                    bad(key, format!("is {} bytes; use at least {MIN_SECRET_BYTES}", s.0.len()));
                } else if s.0.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    bad(key, "contains whitespace or control characters".to_string());
                }
            }
        }
        let authenticated = self.webhook_token.is_some() || self.webhook_hmac_secret.is_some();
        if !self.listen.ip().is_loopback() && !authenticated && !self.allow_insecure_bind {
            bad(
                "listen",
                format!(
                    "{} is reachable from other machines but webhooks are not authenticated: \
                     set webhook_token or webhook_hmac_secret (or allow_insecure_bind: true)",
                    self.listen
                ),
            );
        }
        if !(1..=MAX_CONCURRENT_EXECUTIONS).contains(&self.max_concurrent_executions) {
            bad(
                "max_concurrent_executions",
                format!("{} is outside 1..={MAX_CONCURRENT_EXECUTIONS}", self.max_concurrent_executions),
            );
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            bad(
                "retention_days",
                format!("{} is over {MAX_RETENTION_DAYS} (use 0 to keep records forever)", self.retention_days),
            );
        }
        if !(MIN_OUTPUT_CAP_BYTES..=MAX_OUTPUT_CAP_BYTES).contains(&self.output_cap_bytes) {
            bad(
                "output_cap_bytes",
                format!("{} is outside {MIN_OUTPUT_CAP_BYTES}..={MAX_OUTPUT_CAP_BYTES}", self.output_cap_bytes),
            );
        }
        match self.action_timeout_default {
            Some(0) => bad(
                "action_timeout_default",
                "0 would time every action out at once; leave it unset for the runner's default".to_string(),
            ),
            Some(t) if t > MAX_ACTION_TIMEOUT_SECS => {
                bad("action_timeout_default", format!("{t} s is over {MAX_ACTION_TIMEOUT_SECS} s (one week)"))
            }
            _ => {}
        }
        if p.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { file: self.file.clone(), problems: p }) }
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.trim().parse().map_err(|_| {
        format!(
            "`{v}` is not an IP address with a port (like 127.0.0.1:9101, 0.0.0.0:9101 or \
             \"[::1]:9101\"; host names are not resolved)"
        )
    })
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_CONFIG_DEPTH;
    budget.flow_nesting_limit = MAX_CONFIG_DEPTH;
    budget.max_nodes = MAX_CONFIG_NODES;
    budget.max_aliases = 100;
    budget.max_anchors = 100;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES;
    budget.max_reader_input_bytes = Some(MAX_CONFIG_BYTES);
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    // A key given twice is almost certainly a mistake in a hand-edited file.
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    o.strict_booleans = false;
    o.with_snippet = false;
    o
}

fn parse_error(e: &serde_saphyr::Error, text: &str, path: &Path) -> ConfigError {
    let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    let first = e.to_string();
    let mut message = first.lines().next().unwrap_or("invalid YAML").trim();
    // The position is printed as `path:line:col`; drop serde-saphyr's own copy of it.
    if let Some(i) = message.rfind(" at line ") {
        message = &message[..i];
    }
    // Say what serde-saphyr's terse messages mean for this file.
    let mut message = if message.starts_with("invalid u") {
        "expected a whole number (0 or more)".to_string()
    } else if message.starts_with("duplicate mapping key") {
        "given twice".to_string()
    } else if message == "expected mapping start" {
        "the file must be a map of `key: value` lines".to_string()
    } else {
        message.to_string()
    };
    // serde reports a wrong type ("expected usize") without the key; the file is a flat map,
    // so the key is the nearest unindented `key:` at or above the line.
    if let Some(key) = key_at(text, line)
        && !message.contains(&format!("`{key}`"))
    {
        message = format!("{key}: {message}");
    }
    ConfigError::Parse { path: path.to_path_buf(), line, col, message }
}

fn key_at(text: &str, line: u64) -> Option<&str> {
    let upto = usize::try_from(line).ok()?;
    text.lines().take(upto).collect::<Vec<_>>().into_iter().rev().find_map(|l| {
        if l.starts_with([' ', '\t', '#', '-']) {
            return None;
        }
        let (k, _) = l.split_once(':')?;
        let k = k.trim();
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(k)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check(yaml: &str, expect: Expect) {
        let got = match Config::from_yaml(yaml, Path::new("/etc/packd/config.yaml")) {
            Ok(c) => match c.validate() {
                Ok(()) => format!("{c:#?}"),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn good_file() {
        check(
            r#"
# every key
packs: [/opt/packd/packs, local-packs]
configs:
  - configs
data: /srv/packd
listen: 0.0.0.0:9101
webhook_token: "0123456789abcdef-token"
webhook_hmac_secret: 0123456789abcdef-hmac
allow_insecure_bind: no
synchronous: full
log_level: debug
watch: poll
max_concurrent_executions: 4
retention_days: 0
output_cap_bytes: 65536
action_timeout_default: 600
"#,
            expect![[r#"
                Config {
                    file: Some(
                        "/etc/packd/config.yaml",
                    ),
                    packs: [
                        "/opt/packd/packs",
                        "/etc/packd/local-packs",
                    ],
                    configs: [
                        "/etc/packd/configs",
                    ],
                    data: "/srv/packd",
                    listen: 0.0.0.0:9101,
                    webhook_token: Some(
                        Secret(********),
                    ),
                    webhook_hmac_secret: Some(
                        Secret(********),
                    ),
                    allow_insecure_bind: false,
                    synchronous: Full,
                    log_level: Debug,
                    watch: Poll,
                    max_concurrent_executions: 4,
                    retention_days: 0,
                    output_cap_bytes: 65536,
                    action_timeout_default: Some(
                        600,
                    ),
                }"#]],
        );
    }

    #[test]
    fn empty_file_gives_system_defaults() {
        let want = expect![[r#"
            Config {
                file: Some(
                    "/etc/packd/config.yaml",
                ),
                packs: [
                    "/etc/packd/packs",
                ],
                configs: [],
                data: "/var/lib/packd",
                listen: 127.0.0.1:9101,
                webhook_token: None,
                webhook_hmac_secret: None,
                allow_insecure_bind: false,
                synchronous: Normal,
                log_level: Info,
                watch: Inotify,
                max_concurrent_executions: 8,
                retention_days: 30,
                output_cap_bytes: 1048576,
                action_timeout_default: None,
            }"#]];
        // The shipped example has every key commented out: it is exactly the defaults.
        let example = include_str!("../../systemd/config.yaml");
        let path = Path::new("/etc/packd/config.yaml");
        let empty = Config::from_yaml("", path).expect("empty");
        for text in ["# only comments\n\n---\n", example] {
            assert_eq!(Config::from_yaml(text, path).expect("comments"), empty);
        }
        check("", want);
    }

    #[test]
    fn errors_name_the_key() {
        check(
            "lisen: 127.0.0.1:9101\n",
            expect![
                "configuration file /etc/packd/config.yaml:1:1: unknown field `lisen`, expected one of packs, configs, data, listen, webhook_token, webhook_hmac_secret, allow_insecure_bind, synchronous, log_level, watch, max_concurrent_executions, retention_days, output_cap_bytes, action_timeout_default"
            ],
        );
        check(
            "listen: localhost:9101\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  listen: `localhost:9101` is not an IP address with a port (like 127.0.0.1:9101, 0.0.0.0:9101 or "[::1]:9101"; host names are not resolved)"#]],
        );
        check(
            "listen: 9101\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  listen: `9101` is not an IP address with a port (like 127.0.0.1:9101, 0.0.0.0:9101 or "[::1]:9101"; host names are not resolved)"#]],
        );
        check(
            "listen: '[::1]:9101'\nsynchronous: fast\nwatch: fanotify\nlog_level: trace\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  synchronous: unknown value `fast`: expected one of normal, full
                  watch: unknown value `fanotify`: expected one of inotify, poll, off
                  log_level: unknown value `trace`: expected one of error, warn, info, debug"#]],
        );
        check(
            "data: /x\nmax_concurrent_executions: lots\n",
            expect![
                "configuration file /etc/packd/config.yaml:2:28: max_concurrent_executions: expected a whole number (0 or more)"
            ],
        );
        check(
            "packs:\n  - a\n  - [b]\n",
            expect!["configuration file /etc/packd/config.yaml:3:5: packs: expected string scalar"],
        );
        check(
            "retention_days: -1\n",
            expect![
                "configuration file /etc/packd/config.yaml:1:17: retention_days: expected a whole number (0 or more)"
            ],
        );
        check("data: /a\ndata: /b\n", expect!["configuration file /etc/packd/config.yaml:2:1: data: given twice"]);
        check(
            "- just\n- a list\n",
            expect!["configuration file /etc/packd/config.yaml:1:1: the file must be a map of `key: value` lines"],
        );
        check("listen: [\n", expect!["configuration file /etc/packd/config.yaml:1:9: listen: expected string scalar"]);
    }

    #[test]
    fn validation() {
        check(
            "listen: 0.0.0.0:9101\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  listen: 0.0.0.0:9101 is reachable from other machines but webhooks are not authenticated: set webhook_token or webhook_hmac_secret (or allow_insecure_bind: true)"#]],
        );
        check(
            "listen: 0.0.0.0:9101\nallow_insecure_bind: true\n",
            expect![[r#"
                Config {
                    file: Some(
                        "/etc/packd/config.yaml",
                    ),
                    packs: [
                        "/etc/packd/packs",
                    ],
                    configs: [],
                    data: "/var/lib/packd",
                    listen: 0.0.0.0:9101,
                    webhook_token: None,
                    webhook_hmac_secret: None,
                    allow_insecure_bind: true,
                    synchronous: Normal,
                    log_level: Info,
                    watch: Inotify,
                    max_concurrent_executions: 8,
                    retention_days: 30,
                    output_cap_bytes: 1048576,
                    action_timeout_default: None,
                }"#]],
        );
        check(
            "listen: 192.168.1.10:9101\nwebhook_token: short\nwebhook_hmac_secret: 'has a space in it'\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  webhook_token: is 5 bytes; use at least 16
                  webhook_hmac_secret: contains whitespace or control characters"#]],
        );
        check(
            "max_concurrent_executions: 0\nretention_days: 36501\noutput_cap_bytes: 10\naction_timeout_default: 0\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  max_concurrent_executions: 0 is outside 1..=4096
                  retention_days: 36501 is over 36500 (use 0 to keep records forever)
                  output_cap_bytes: 10 is outside 1024..=67108864
                  action_timeout_default: 0 would time every action out at once; leave it unset for the runner's default"#]],
        );
        check(
            "max_concurrent_executions: 4097\noutput_cap_bytes: 67108865\naction_timeout_default: 604801\ndata: ''\npacks: ['']\n",
            expect![[r#"
                invalid configuration (/etc/packd/config.yaml and flags):
                  packs: an entry is empty
                  data: is empty
                  max_concurrent_executions: 4097 is outside 1..=4096
                  output_cap_bytes: 67108865 is outside 1024..=67108864
                  action_timeout_default: 604801 s is over 604800 s (one week)"#]],
        );
    }

    #[test]
    fn secrets_never_printed() {
        let c = Config::from_yaml(
            "webhook_token: tok-0123456789abcdef\nwebhook_hmac_secret: hmac-0123456789abcdef\n",
            Path::new("c.yaml"),
        )
        .expect("parse");
        let dbg = format!("{c:?} {c:#?}");
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
        let short = Config::from_yaml("webhook_token: sh0rt\n", Path::new("c.yaml")).expect("parse");
        let err = short.validate().expect_err("too short").to_string();
        assert!(!err.contains("sh0rt"), "{err}");
        let flags = ServeFlags { webhook_token: Some(Secret::new("flag-0123456789abcdef")), ..ServeFlags::default() };
        assert!(!format!("{flags:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn files_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.yaml");
        // An explicit file must exist; the default one may be absent.
        let e = load_from(Some(&missing), &missing).expect_err("explicit missing");
        assert!(matches!(e, ConfigError::NotFound { .. }), "{e}");
        assert_eq!(e.exit_code(), EXIT_CONFIG);
        let c = load_from(None, &missing).expect("defaults");
        assert_eq!(c, Config::default());
        assert!(c.packs.is_empty() && c.data == Path::new("var"));

        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "packs: [p]\nlisten: 127.0.0.1:9200\nlog_level: warn\n").expect("write");
        let c = load_from(None, &file).expect("default file");
        assert_eq!(c.packs, vec![dir.path().join("p")]);

        let flags = ServeFlags {
            config: Some(file.clone()),
            packs: vec![PathBuf::from("a"), PathBuf::from("b")],
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9300))),
            allow_insecure_bind: Some(true),
            log_level: Some(Level::Debug),
            retention_days: Some(7),
            ..ServeFlags::default()
        };
        let c = resolve(&flags).expect("resolve");
        assert_eq!(c.packs, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:9300");
        assert_eq!((c.log_level, c.retention_days), (Level::Debug, 7));
        assert_eq!(c.data, Path::new(SYSTEM_DATA_DIR));

        // A flag can make a good file invalid; the error says flags are involved.
        let flags = ServeFlags {
            config: Some(file.clone()),
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9300))),
            ..ServeFlags::default()
        };
        let e = resolve(&flags).expect_err("insecure bind");
        assert!(e.to_string().contains("listen: 0.0.0.0:9300 is reachable"), "{e}");

        std::fs::write(&file, "x".repeat(MAX_CONFIG_BYTES + 1)).expect("write");
        let e = load_from(Some(&file), &missing).expect_err("too large");
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
        std::fs::write(&file, b"data: \xff\n").expect("write");
        let e = load_from(Some(&file), &missing).expect_err("not utf-8");
        assert!(e.to_string().contains("not UTF-8 (byte 6)"), "{e}");
    }

    #[test]
    fn yaml_bomb_is_refused() {
        let mut y = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 { "a".to_string() } else { format!("b{}", i - 1) };
            y.push_str(&format!(
                "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = Config::from_yaml(&y, Path::new("c.yaml")).expect_err("bomb");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let deep = format!("packs: {}{}\n", "[".repeat(50), "]".repeat(50));
        let e = Config::from_yaml(&deep, Path::new("c.yaml")).expect_err("deep");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    }

    #[test]
    fn flags_parse_with_clap() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            flags: ServeFlags,
        }
        let cli = Cli::try_parse_from([
            "packd",
            "--packs",
            "/a",
            "--packs",
            "/b",
            "--listen",
            "[::1]:9101",
            "--synchronous",
            "full",
            "--watch",
            "off",
            "--log-level",
            "warn",
            "--allow-insecure-bind",
            "--action-timeout-default",
            "30",
        ])
        .expect("parse");
        let f = cli.flags;
        assert_eq!(f.packs.len(), 2);
        assert_eq!(f.listen.map(|l| l.to_string()).as_deref(), Some("[::1]:9101"));
        assert_eq!(f.synchronous, Some(Synchronous::Full));
        assert_eq!(f.watch, Some(Watch::Off));
        assert_eq!(f.log_level, Some(Level::Warn));
        assert_eq!(f.allow_insecure_bind, Some(true));
        assert_eq!(f.action_timeout_default, Some(30));
        let bad = Cli::try_parse_from(["packd", "--watch", "fanotify"]).err().map(|e| e.exit_code());
        assert_eq!(bad, Some(i32::from(EXIT_CONFIG)));
        let bad = Cli::try_parse_from(["packd", "--listen", "localhost"]).err().map(|e| e.exit_code());
        assert_eq!(bad, Some(i32::from(EXIT_CONFIG)));
    }
}
