//! Hot reload: pack directories change on disk, the running agent follows.
//!
//! Changes arrive from `watch.rs` (or SIGHUP, `packd pack reload`, the periodic safety-net
//! rescan). After a short debounce the changed packs are re-read from disk and compared by
//! digest; a new immutable registry is swapped in, and only what changed is touched: timers are
//! upserted (an unchanged timer keeps its schedule), sensors of changed packs restart, webhook
//! routes follow the registry.
//!
//! Architecture invariant: a pack whose new version has any error keeps its last good version
//! active (status `stale`, the error shown in `packd pack list`, the log and `/metrics`); only a
//! clean load replaces it. A pack seen for the first time loads like at start-up (items with
//! errors skipped).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::Agent;
use crate::pack::{self, LoadedPack, Pack, Severity};
use crate::store::{PackRecord, PackStatus};
use crate::watch::Change;

/// Quiet time after the first change before packs are re-read: an editor's save or a `cp -r`
/// produces a burst of events, and one rescan should see the end result.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The safety-net full rescan, for changes no watcher reported.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// What one reload request asks for.
#[derive(Clone, Debug)]
pub enum Request {
    Changes(Vec<Change>),
    /// Everything (SIGHUP, periodic, `pack reload` without a ref).
    All,
    /// One pack by ref.
    Pack(String),
}

/// The state of one pack as the agent last saw it.
#[derive(Clone, Debug)]
pub struct PackState {
    pub dir: PathBuf,
    pub status: PackStatus,
    pub error: Option<String>,
    pub digest: String,
}

fn first_error(l: &LoadedPack) -> Option<String> {
    l.diagnostics.iter().find(|d| d.severity == Severity::Error).map(|d| d.to_string())
}

fn log_diags(l: &LoadedPack) {
    for d in &l.diagnostics {
        match d.severity {
            Severity::Error => crate::log_error!("{d}"),
            Severity::Warning => crate::log_warn!("{d}"),
        }
    }
}

/// Directories currently holding a `pack.yaml` under the packs dirs, by path.
pub fn scan_dirs(agent: &Agent) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in &agent.settings.packs {
        let mut sink = Vec::new();
        out.extend(pack::pack_dirs(d, &mut sink));
    }
    out
}

/// Re-read `dirs` (which may have vanished) and apply the results. Returns what changed.
pub async fn apply(agent: &Rc<Agent>, dirs: BTreeSet<PathBuf>, reason: &str) -> Vec<String> {
    let _one_at_a_time = agent.reload_lock.lock().await;
    let reg = agent.registry();
    let configs = agent.settings.configs.clone();
    let dirs_vec: Vec<PathBuf> = dirs.iter().cloned().collect();
    let loaded: Vec<(PathBuf, Option<LoadedPack>)> = smol::unblock(move || {
        dirs_vec
            .into_iter()
            .map(|d| {
                if d.join("pack.yaml").is_file() {
                    // Same default as at start-up: `<packs dir>/../configs`.
                    let config_dirs = if configs.is_empty() {
                        d.parent().map(|p| vec![p.join("..").join("configs")]).unwrap_or_default()
                    } else {
                        configs.clone()
                    };
                    let l = pack::load_pack(&d, &config_dirs);
                    (d, Some(l))
                } else {
                    (d, None)
                }
            })
            .collect()
    })
    .await;
    let mut packs: BTreeMap<String, Arc<Pack>> = reg.packs.clone();
    let mut states = agent.pack_states.borrow().clone();
    let mut changed: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (dir, l) in loaded {
        let old_ref = states.iter().find(|(_, s)| s.dir == dir).map(|(r, _)| r.clone());
        match l {
            None => {
                // The directory (or its pack.yaml) is gone: the pack is removed.
                if let Some(r) = old_ref {
                    packs.remove(&r);
                    states.remove(&r);
                    let _ = agent.store.delete_pack(&r).await;
                    crate::log_info!("pack {r} removed ({})", dir.display());
                    changed.push(r);
                }
            }
            Some(l) => {
                log_diags(&l);
                let err = first_error(&l);
                match (l.pack, old_ref) {
                    (Some(p), old) => {
                        let r = p.ref_.clone();
                        let clash =
                            packs.get(&r).is_some_and(|q| q.path != p.path && old.as_deref() != Some(r.as_str()));
                        if clash {
                            crate::log_error!(
                                "pack {r} in {} is already loaded from another directory; ignored",
                                dir.display()
                            );
                            continue;
                        }
                        let had = packs.contains_key(&r);
                        let same =
                            states.get(&r).is_some_and(|s| s.digest == p.digest && s.status == PackStatus::Loaded);
                        if had && err.is_some() {
                            // Keep the last good version.
                            crate::log_error!(
                                "pack {r} failed to reload; keeping its last good version: {}",
                                err.as_deref().unwrap_or("")
                            );
                            if let Some(s) = states.get_mut(&r) {
                                s.status = PackStatus::Stale;
                                s.error = err.clone();
                            }
                            failed.push(r.clone());
                            continue;
                        }
                        if same {
                            continue;
                        }
                        if let Some(o) = old.filter(|o| o != &r) {
                            packs.remove(&o);
                            states.remove(&o);
                        }
                        states.insert(
                            r.clone(),
                            PackState {
                                dir: dir.clone(),
                                status: PackStatus::Loaded,
                                error: err,
                                digest: p.digest.clone(),
                            },
                        );
                        crate::log_info!("pack {r} {} ({})", if had { "reloaded" } else { "added" }, dir.display());
                        packs.insert(r.clone(), Arc::new(p));
                        changed.push(r);
                    }
                    (None, Some(r)) => {
                        crate::log_error!(
                            "pack {r} failed to reload; keeping its last good version: {}",
                            err.as_deref().unwrap_or("unreadable pack.yaml")
                        );
                        if let Some(s) = states.get_mut(&r) {
                            s.status = PackStatus::Stale;
                            s.error = err;
                        }
                        failed.push(r);
                    }
                    (None, None) => {
                        crate::log_error!("{} is not a loadable pack: {}", dir.display(), err.as_deref().unwrap_or(""));
                    }
                }
            }
        }
    }
    let result =
        if failed.is_empty() { "ok".to_string() } else { format!("kept last good version of: {}", failed.join(", ")) };
    if !changed.is_empty() {
        let new =
            crate::registry::Registry::from_arcs(packs.into_values(), reg.generation + 1, reg.overrides().clone());
        agent.swap_registry(new);
        let _ = agent.reschedule.try_send(());
        agent.packs_changed(&changed).await;
    }
    *agent.pack_states.borrow_mut() = states;
    {
        let mut m = agent.metrics.borrow_mut();
        m.reloads += 1;
        if !failed.is_empty() {
            m.reload_failures += 1;
        }
    }
    if !changed.is_empty() || !failed.is_empty() {
        let mut all = changed.clone();
        all.extend(failed.iter().cloned());
        let _ = agent.store.record_reload(all, format!("{reason}: {result}")).await;
        agent.persist_pack_states().await;
    }
    changed
}

impl Agent {
    /// Write every pack's current state to the store (for `pack list` from another process).
    pub async fn persist_pack_states(&self) {
        let reg = self.registry();
        let states = self.pack_states.borrow().clone();
        for (r, s) in states {
            let (version, dialect) =
                reg.pack(&r).map(|p| (p.version.clone(), p.dialect.as_str().to_string())).unwrap_or_default();
            let _ = self
                .store
                .upsert_pack(PackRecord {
                    pack_ref: r.clone(),
                    version,
                    dialect,
                    path: s.dir.to_string_lossy().into_owned(),
                    digest: s.digest.clone(),
                    status: s.status,
                    load_error: s.error.clone(),
                    loaded_at: self.store.now(),
                })
                .await;
        }
    }
}

/// The reload task: debounce watch events, re-read the packs they name, apply.
pub async fn run(agent: Rc<Agent>, rx: smol::channel::Receiver<Request>) {
    loop {
        let first = match smol::future::or(async { rx.recv().await.ok() }, async {
            smol::Timer::after(RESCAN_INTERVAL).await;
            Some(Request::All)
        })
        .await
        {
            Some(r) => r,
            None => return,
        };
        let mut reqs = vec![first];
        // Debounce: gather everything that arrives until things are quiet.
        loop {
            let more = smol::future::or(async { rx.recv().await.ok() }, async {
                smol::Timer::after(DEBOUNCE).await;
                None
            })
            .await;
            match more {
                Some(r) => reqs.push(r),
                None => break,
            }
        }
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut all = false;
        for r in &reqs {
            match r {
                Request::All => all = true,
                Request::Changes(cs) => {
                    for c in cs {
                        match c {
                            Change::Rescan => all = true,
                            Change::Pack { packs_dir, name } => {
                                dirs.insert(packs_dir.join(name));
                            }
                        }
                    }
                }
                Request::Pack(r) => {
                    if let Some(s) = agent.pack_states.borrow().get(r) {
                        dirs.insert(s.dir.clone());
                    }
                }
            }
        }
        if all {
            dirs.extend(scan_dirs(&agent));
            dirs.extend(agent.pack_states.borrow().values().map(|s| s.dir.clone()));
        }
        // A changed directory that is not directly a pack dir (a new packs sub-tree) is ignored
        // unless it holds a pack.yaml or was one.
        let known: HashMap<PathBuf, ()> = agent.pack_states.borrow().values().map(|s| (s.dir.clone(), ())).collect();
        dirs.retain(|d| d.join("pack.yaml").is_file() || known.contains_key(d));
        if dirs.is_empty() {
            continue;
        }
        let reason = if all { "rescan" } else { "change" };
        apply(&agent, dirs, reason).await;
    }
}

/// The initial states, from the start-up load.
pub fn initial_states(loaded: &[LoadedPack]) -> BTreeMap<String, PackState> {
    loaded
        .iter()
        .filter_map(|l| {
            let p = l.pack.as_ref()?;
            Some((
                p.ref_.clone(),
                PackState {
                    dir: l.dir.clone(),
                    status: PackStatus::Loaded,
                    error: first_error(l),
                    digest: p.digest.clone(),
                },
            ))
        })
        .collect()
}
