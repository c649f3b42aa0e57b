//! Filesystem watching for hot reload: which pack directories changed.
//!
//! Why the events' details are never trusted: editors save by writing a temporary file and
//! renaming it, `cp -r` and unzip create whole trees before a watch on them exists, and inotify
//! can overflow. So this module only answers "something under `packs/<name>/` changed" (or
//! "rescan everything") and the agent re-reads that pack from disk. It watches each packs
//! directory recursively (never single files, whose watches die on rename). It reads no pack
//! files and touches no agent state.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

/// How the packs directories are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify (the default on Linux).
    Native,
    /// Compare the tree every `POLL_INTERVAL`: for filesystems where inotify sees nothing
    /// (network mounts, some bind mounts and overlays).
    Poll,
    /// No watching: reload only on SIGHUP, `packd pack reload` or the periodic rescan.
    Off,
}

impl WatchMode {
    pub fn parse(s: &str) -> Option<WatchMode> {
        match s {
            "inotify" | "native" => Some(WatchMode::Native),
            "poll" => Some(WatchMode::Poll),
            "off" => Some(WatchMode::Off),
            _ => None,
        }
    }
}

/// Poll interval of `WatchMode::Poll`. Polling walks every pack file, so not too often.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Something under `<packs dir>/<name>/` (or the entry `<name>` itself) changed.
    Pack { packs_dir: PathBuf, name: String },
    /// The watcher lost track (queue overflow, packs dir replaced): rescan everything.
    Rescan,
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watch {
    _native: Option<notify::RecommendedWatcher>,
    _poll: Option<notify::PollWatcher>,
}

/// Map an event path to the pack directory it belongs to.
pub fn classify(dirs: &[PathBuf], path: &Path) -> Option<Change> {
    for d in dirs {
        if let Ok(rel) = path.strip_prefix(d) {
            return match rel.components().next() {
                Some(Component::Normal(name)) => {
                    let name = name.to_string_lossy().into_owned();
                    // Editor swap files and hidden entries at the top level are not packs.
                    if name.starts_with('.') {
                        return None;
                    }
                    Some(Change::Pack { packs_dir: d.clone(), name })
                }
                _ => Some(Change::Rescan),
            };
        }
    }
    None
}

/// Start watching `dirs` (absolute paths); changes are sent on `tx`. Errors are returned so
/// the caller can fall back (e.g. inotify watch limit reached → poll).
pub fn start(dirs: &[PathBuf], mode: WatchMode, tx: smol::channel::Sender<Change>) -> notify::Result<Watch> {
    let dirs_owned: Vec<PathBuf> = dirs.to_vec();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.try_send(Change::Rescan);
                return;
            }
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            for p in &ev.paths {
                if let Some(c) = classify(&dirs_owned, p) {
                    let _ = tx.try_send(c);
                }
            }
        }
        Err(_) => {
            let _ = tx.try_send(Change::Rescan);
        }
    };
    match mode {
        WatchMode::Off => Ok(Watch { _native: None, _poll: None }),
        WatchMode::Native => {
            let mut w = notify::recommended_watcher(handler)?;
            for d in dirs {
                w.watch(d, RecursiveMode::Recursive)?;
            }
            Ok(Watch { _native: Some(w), _poll: None })
        }
        WatchMode::Poll => {
            let cfg = notify::Config::default().with_poll_interval(POLL_INTERVAL).with_compare_contents(true);
            let mut w = notify::PollWatcher::new(handler, cfg)?;
            for d in dirs {
                w.watch(d, RecursiveMode::Recursive)?;
            }
            Ok(Watch { _native: None, _poll: Some(w) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        let dirs = vec![PathBuf::from("/p/packs"), PathBuf::from("/p/more")];
        let c = |p: &str| classify(&dirs, Path::new(p));
        assert_eq!(
            c("/p/packs/demo/rules/r.yaml"),
            Some(Change::Pack { packs_dir: "/p/packs".into(), name: "demo".into() })
        );
        assert_eq!(c("/p/more/x"), Some(Change::Pack { packs_dir: "/p/more".into(), name: "x".into() }));
        assert_eq!(c("/p/packs"), Some(Change::Rescan));
        assert_eq!(c("/p/packs/.demo.swp"), None);
        assert_eq!(c("/elsewhere/x"), None);
    }
}
