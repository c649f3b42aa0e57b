//! The agent: one process that loads packs, keeps the store, listens for admin requests (and,
//! in later layers, webhooks, timers and sensors), and runs executions.
//!
//! Everything runs on one local executor on the main thread: the engine state lives in
//! `RefCell`s that are only touched from there, so nothing needs a lock. Blocking work
//! (template rendering that may read the datastore, HTTP requests) goes to the blocking pool;
//! child processes are always spawned from the main thread. SQL runs on the store's own threads.

pub mod alias;
pub mod chain;
pub mod events;
pub mod exec;
pub mod http_runner;
pub mod kv;
pub mod ops;
pub mod orquesta;
pub mod params;
pub mod policy;
pub mod reload;
pub mod schedule;
pub mod sensors;
pub mod web;
pub mod workflow;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use smol::LocalExecutor;

use crate::expr::TemplateEnv;
use crate::pack::{self, LoadOptions, Severity};
use crate::registry::Registry;
use crate::store::{self, ExecStatus, NewExecution, Store, StoreOptions};

/// How long shutdown waits for canceled executions to finish before leaving them to be marked
/// `abandoned` at the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything `serve` needs, already validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub packs: Vec<PathBuf>,
    pub configs: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub output_cap: usize,
    pub max_concurrent: usize,
    pub synchronous: store::Synchronous,
    pub webhook_token: Option<String>,
    pub webhook_secret: Option<String>,
    pub allow_insecure_bind: bool,
    pub watch: crate::watch::WatchMode,
    /// Completed executions and events older than this many days are deleted; 0 keeps them.
    pub retention_days: u64,
    /// Timeout for actions whose runner and metadata set none.
    pub action_timeout_default: Option<u64>,
}

impl Settings {
    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join(crate::admin::SOCKET_NAME)
    }
    pub fn shim_dir(&self) -> PathBuf {
        self.data_dir.join("python")
    }
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.listen)
    }
}

pub struct Agent {
    pub settings: Settings,
    pub store: Store,
    registry: RefCell<Arc<Registry>>,
    pub templates: Arc<TemplateEnv>,
    pub slots: smol::lock::Semaphore,
    /// Cancel senders of running executions.
    pub running: RefCell<HashMap<i64, smol::channel::Sender<()>>>,
    /// Clients waiting for an execution to finish.
    waiters: RefCell<HashMap<i64, Vec<smol::channel::Sender<()>>>>,
    pub ex: Rc<LocalExecutor<'static>>,
    /// Trigger instances accepted and waiting for the rules loop.
    pub events: smol::channel::Sender<events::Pending>,
    /// Ask the timer task to re-read the registry.
    pub reschedule: smol::channel::Sender<()>,
    pub metrics: RefCell<web::Metrics>,
    /// Packs loaded and store open: what `/health` reports.
    pub ready: Cell<bool>,
    /// Per pack: directory, status (loaded / stale), last error, digest.
    pub pack_states: RefCell<std::collections::BTreeMap<String, reload::PackState>>,
    /// Ask the reload task for a rescan.
    pub reload: smol::channel::Sender<reload::Request>,
    /// One reload at a time: each builds on the registry the previous one left.
    pub reload_lock: smol::lock::Mutex<()>,
    sensors: crate::sensor::Supervisor,
    /// Concurrency and rate state of policies.
    pub policies: policy::Policies,
    /// The trigger instances each running sensor was started with.
    pub sensor_triggers: RefCell<HashMap<String, Value>>,
}

impl Agent {
    /// What the systemd watchdog checks: packs loaded and the store's writer answering.
    pub fn healthy(&self) -> bool {
        self.ready.get() && !self.store.is_closed()
    }

    pub fn sensors(&self) -> &crate::sensor::Supervisor {
        &self.sensors
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.borrow().clone()
    }

    pub fn swap_registry(&self, r: Registry) {
        *self.registry.borrow_mut() = Arc::new(r);
    }

    /// Resolve parameters (off the executor: templates may read the datastore), store the
    /// execution as `requested`, and start it. Errors mean nothing was stored or started.
    pub async fn request(
        self: &Rc<Self>,
        action_ref: &str,
        supplied: Map<String, Value>,
        context: Value,
        origin: exec::Origin,
    ) -> Result<i64, RequestError> {
        let reg = self.registry();
        let (pack, action) = reg.action(action_ref).ok_or_else(|| RequestError::NotFound(action_ref.to_string()))?;
        if !action.enabled {
            return Err(RequestError::Invalid(format!("Unable to execute. Action {action_ref} is disabled.")));
        }
        let pack = pack.clone();
        let action = action.clone();
        let env = self.templates.clone();
        let store = self.store.clone();
        let (a2, p2, ctx2) = (action.clone(), pack.clone(), context.clone());
        let resolved = smol::unblock(move || {
            let kv = kv::StoreKv(store);
            let config = params::dynamic_config(&p2.config, &p2.config_schema, &env, Some(&kv))?;
            let cx = params::Context { trigger: None, action_context: ctx2, config, extra: Map::new() };
            params::resolve(&a2, supplied, &cx, &env, Some(&kv)).map_err(|e| e.to_string())
        })
        .await
        .map_err(RequestError::Invalid)?;
        let id = self
            .store
            .create_execution(NewExecution {
                action_ref: action.ref_.clone(),
                runner: action.runner.name().to_string(),
                status: ExecStatus::Scheduled,
                parameters: Value::Object(resolved.masked.clone()),
                context,
                parent_id: None,
            })
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))?;
        crate::log_info!("execution {id} {} requested", action.ref_);
        self.ex.spawn(exec::run(self.clone(), id, pack, action, resolved.values, origin)).detach();
        Ok(id)
    }

    /// Wait until execution `id` is finished (returns at once if it already is).
    pub async fn wait(&self, id: i64) {
        let (tx, rx) = smol::channel::bounded(1);
        self.waiters.borrow_mut().entry(id).or_default().push(tx);
        // It may have finished before we registered.
        if let Ok(Some(e)) = self.store.get_execution(id).await
            && e.status.is_terminal()
        {
            return;
        }
        let _ = rx.recv().await;
    }

    /// Packs were added, replaced or removed: sensors follow.
    pub async fn packs_changed(self: &Rc<Self>, changed: &[String]) {
        self.resync_sensors(changed).await;
    }

    pub(crate) async fn finished(&self, id: i64) {
        if let Some(ws) = self.waiters.borrow_mut().remove(&id) {
            for w in ws {
                let _ = w.try_send(());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("action {0:?} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

/// Load every pack; report problems to the log. Returns the registry.
pub fn load_registry(
    settings: &Settings,
    generation: u64,
    overrides: HashMap<String, bool>,
) -> (Registry, std::collections::BTreeMap<String, reload::PackState>) {
    let loaded = pack::load_dirs(&settings.packs, &LoadOptions { config_dirs: settings.configs.clone() });
    for l in &loaded {
        for d in &l.diagnostics {
            match d.severity {
                Severity::Error => crate::log_error!("{d}"),
                Severity::Warning => crate::log_warn!("{d}"),
            }
        }
    }
    let states = reload::initial_states(&loaded);
    (Registry::new(loaded.into_iter().filter_map(|l| l.pack), generation, overrides), states)
}

/// Run the agent until SIGTERM or SIGINT.
pub fn serve(settings: Settings) -> anyhow::Result<()> {
    // systemd's variables are read once, then removed so no action or sensor inherits them (a
    // child that wrote to NOTIFY_SOCKET could claim readiness for the agent). Still one thread
    // here, so changing the environment is sound.
    let notifier = crate::deploy::notify::Notifier::from_env();
    for var in crate::deploy::notify::SERVICE_ENV_VARS {
        // SAFETY: no other thread exists yet (the store, executor and watcher start below).
        unsafe { std::env::remove_var(var) };
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data directory {}", settings.data_dir.display()))?;
    let store =
        Store::open(&settings.data_dir, StoreOptions { synchronous: settings.synchronous, ..StoreOptions::default() })
            .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
    let abandoned = store.abandon_running_blocking().context("cannot mark interrupted executions")?;
    if !abandoned.is_empty() {
        crate::log_warn!(
            "{} execution(s) were running when the agent stopped and are now abandoned: {abandoned:?}",
            abandoned.len()
        );
    }
    crate::runner::shim::install_python_shim(&settings.shim_dir()).context("cannot write the Python shim")?;
    let overrides: HashMap<String, bool> =
        store.rule_overrides_blocking().context("cannot read rule overrides")?.into_iter().collect();
    let (registry, states) = load_registry(&settings, 1, overrides);
    crate::log_info!(
        "loaded {} pack(s): {}",
        registry.packs.len(),
        registry.packs.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let socket = settings.socket_path();
    let http_cfg = crate::http::HttpConfig {
        auth: crate::http::HookAuth { token: settings.webhook_token.clone(), secret: settings.webhook_secret.clone() },
        ..crate::http::HttpConfig::default()
    };
    crate::http::check_bind(settings.listen, http_cfg.auth_configured(), settings.allow_insecure_bind)?;
    if !settings.listen.ip().is_loopback() {
        crate::log_warn!(
            "listening on {} beyond loopback: webhook authentication is {}",
            settings.listen,
            if http_cfg.auth_configured() { "required" } else { "OFF (--allow-insecure-bind)" }
        );
    }
    let tcp = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tcp.set_nonblocking(true)?;
    let tcp = smol::net::TcpListener::try_from(tcp)?;
    let listener = bind_socket(&socket)?;
    let ex = Rc::new(LocalExecutor::new());
    let (events_tx, events_rx) = smol::channel::unbounded();
    let (resched_tx, resched_rx) = smol::channel::bounded(1);
    let (reload_tx, reload_rx) = smol::channel::unbounded::<reload::Request>();
    let (watch_tx, watch_rx) = smol::channel::unbounded::<crate::watch::Change>();
    let _watch = match crate::watch::start(&settings.packs, settings.watch, watch_tx.clone()) {
        Ok(w) => Some(w),
        Err(e) if settings.watch == crate::watch::WatchMode::Native => {
            crate::log_warn!(
                "cannot watch the packs directories with inotify ({e}); polling every {:?} instead",
                crate::watch::POLL_INTERVAL
            );
            crate::watch::start(&settings.packs, crate::watch::WatchMode::Poll, watch_tx.clone()).ok()
        }
        Err(e) => {
            crate::log_warn!("cannot watch the packs directories ({e}); reload with SIGHUP or `packd pack reload`");
            None
        }
    };
    let agent = Rc::new_cyclic(|weak: &std::rc::Weak<Agent>| Agent {
        sensors: crate::sensor::Supervisor::new(
            ex.clone(),
            Rc::new(sensors::Host(weak.clone())),
            crate::sensor::Timings::default(),
        ),
        sensor_triggers: RefCell::new(HashMap::new()),
        policies: policy::Policies::default(),
        slots: smol::lock::Semaphore::new(settings.max_concurrent.max(1)),
        settings,
        store: store.clone(),
        registry: RefCell::new(Arc::new(registry)),
        templates: Arc::new(TemplateEnv::new()),
        running: RefCell::new(HashMap::new()),
        waiters: RefCell::new(HashMap::new()),
        ex: ex.clone(),
        events: events_tx,
        reschedule: resched_tx,
        metrics: RefCell::new(web::Metrics::default()),
        ready: Cell::new(false),
        pack_states: RefCell::new(states),
        reload: reload_tx.clone(),
        reload_lock: smol::lock::Mutex::new(()),
    });
    // Watch events feed the reload task.
    {
        let tx = reload_tx.clone();
        ex.spawn(async move {
            while let Ok(c) = watch_rx.recv().await {
                if tx.send(reload::Request::Changes(vec![c])).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    ex.spawn(reload::run(agent.clone(), reload_rx)).detach();
    let handler = Rc::new(ops::Ops { agent: agent.clone() });
    ex.spawn(crate::admin::serve(ex.clone(), listener, handler)).detach();
    let (http_stop_tx, http_stop_rx) = smol::channel::bounded::<()>(1);
    let ingest: Rc<dyn crate::http::Ingest> = Rc::new(web::HttpIngest(agent.clone()));
    ex.spawn(crate::http::serve(tcp, ingest, http_cfg, http_stop_rx)).detach();
    ex.spawn(events::rules_loop(agent.clone(), events_rx)).detach();
    ex.spawn(schedule::run(agent.clone(), resched_rx)).detach();
    ex.spawn(web::refresh_metrics(agent.clone())).detach();
    ex.spawn(housekeeping(agent.clone())).detach();
    let signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int, async_signal::Signal::Hup])
            .context("cannot install signal handlers")?;
    smol::block_on(ex.run(async {
        use smol::stream::StreamExt;
        let recovered = events::recover(&agent).await;
        if recovered > 0 {
            crate::log_info!("re-queued {recovered} trigger instance(s) accepted before the last stop");
        }
        agent.start_sensors();
        agent.ready.set(true);
        // READY=1 only now: packs are loaded, the store is open, the endpoint listens.
        if let Err(e) = notifier.ready() {
            crate::log_warn!("cannot notify systemd of readiness: {e}");
        }
        let _ = notifier.status(&format!("{} pack(s) loaded", agent.registry().packs.len()));
        {
            let a = agent.clone();
            let n = notifier.clone();
            agent.ex.spawn(crate::deploy::notify::watchdog_loop(n, move || a.healthy())).detach();
        }
        crate::log_info!(
            "ready: http://{} (webhooks, /health, /metrics), admin socket {}",
            agent.settings.listen,
            socket.display()
        );
        agent.persist_pack_states().await;
        let mut signals = signals;
        while let Some(Ok(sig)) = signals.next().await {
            if sig == async_signal::Signal::Hup {
                crate::log_info!("SIGHUP: rescanning every pack");
                let _ = agent.reload.try_send(reload::Request::All);
                continue;
            }
            crate::log_info!("received {sig:?}, shutting down");
            let _ = notifier.stopping();
            break;
        }
        let _ = http_stop_tx.try_send(());
        shutdown(&agent).await;
    }));
    let _ = std::fs::remove_file(&socket);
    store.close();
    Ok(())
}

/// How often expired datastore keys are deleted (they are invisible from the moment they
/// expire; this only reclaims the rows).
pub const KV_PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// How often old records are deleted when `retention_days` is set.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

async fn housekeeping(agent: Rc<Agent>) {
    let mut last_retention: Option<std::time::Instant> = None;
    loop {
        smol::Timer::after(KV_PURGE_INTERVAL).await;
        let days = agent.settings.retention_days;
        if days > 0 && last_retention.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
            last_retention = Some(std::time::Instant::now());
            match agent.store.purge_completed_older_than(Duration::from_secs(days * 86_400)).await {
                Ok(r) => crate::log_debug!("retention: {r:?}"),
                Err(e) => crate::log_warn!("retention purge failed: {e}"),
            }
        }
        match agent.store.purge_expired_kv().await {
            Ok(0) => {}
            Ok(n) => crate::log_debug!("deleted {n} expired datastore key(s)"),
            Err(e) => crate::log_warn!("cannot purge expired keys: {e}"),
        }
    }
}

async fn shutdown(agent: &Rc<Agent>) {
    agent.sensors().stop_all().await;
    let running: Vec<(i64, smol::channel::Sender<()>)> =
        agent.running.borrow().iter().map(|(k, v)| (*k, v.clone())).collect();
    for (id, tx) in &running {
        crate::log_info!("canceling execution {id} for shutdown");
        let _ = agent.store.request_cancel(*id).await;
        let _ = tx.try_send(());
    }
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while !agent.running.borrow().is_empty() && std::time::Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

/// Bind the admin socket with mode 0600, replacing a stale socket file left by a crash (but
/// never one a live agent still answers on).
fn bind_socket(path: &Path) -> anyhow::Result<smol::net::unix::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another packd agent is already running with this data directory ({} answers)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(smol::net::unix::UnixListener::try_from(l)?)
}

/// A stored execution as the CLI and API show it: RFC 3339 times, the action ref.
pub fn execution_json(e: &store::Execution) -> Value {
    json!({
        "id": e.id,
        "action": e.action_ref,
        "runner": e.runner,
        "status": e.status.as_str(),
        "parameters": e.parameters,
        "context": e.context,
        "result": e.result,
        "exit_code": e.exit_code,
        "error": e.error,
        "parent_id": e.parent_id,
        "enforcement_id": e.enforcement_id,
        "created_at": time(e.created_at),
        "started_at": e.started_at.map(time),
        "finished_at": e.finished_at.map(time),
        "log": e.log.iter().map(|c| json!({"status": c.status, "at": time(c.at)})).collect::<Vec<_>>(),
    })
}

pub fn time(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map(|t| t.to_string()).unwrap_or_else(|_| us.to_string())
}
