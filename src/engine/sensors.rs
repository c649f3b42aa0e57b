//! Sensors as the agent runs them: which sensors of the loaded packs start (StackStorm: every
//! enabled sensor; Attune: enabled sensors with at least one enabled rule on their triggers, as
//! Attune's sensor manager does), what they are told (config, active trigger instances), and
//! what their events become (trigger instances, through the same `ingest` as webhooks).
//! Supervision itself (process groups, backoff, stderr tails) is `crate::sensor`'s job.

use std::rc::Rc;

use serde_json::{Value, json};

use super::Agent;
use crate::pack::{Dialect, Pack, SensorKind as PackSensorKind};
use crate::registry::Registry;
use crate::sensor::{DispatchFuture, LogLevel, SensorHost, SensorKind, SensorSpec, SensorStatus};
use crate::store::{SensorUpdate, TiSource};

/// Internal triggers for sensor process life.
pub const SPAWN_TRIGGER: &str = "core.st2.sensor.process_spawn";
pub const EXIT_TRIGGER: &str = "core.st2.sensor.process_exit";

/// The agent as a sensor host. Holds a weak link so the supervisor (owned by the agent) does
/// not keep the agent alive.
pub struct Host(pub std::rc::Weak<Agent>);

fn store_state(s: crate::sensor::SensorState) -> crate::store::SensorState {
    use crate::sensor::SensorState as A;
    use crate::store::SensorState as B;
    match s {
        A::Starting => B::Starting,
        A::Running => B::Running,
        A::Backoff => B::Backoff,
        A::Failed => B::Failed,
        A::Stopped => B::Stopped,
    }
}

impl SensorHost for Host {
    fn dispatch(&self, sensor: &str, trigger: &str, payload: Value, _trace_tag: Option<String>) -> DispatchFuture {
        let agent = self.0.upgrade();
        let (sensor, trigger) = (sensor.to_string(), trigger.to_string());
        Box::pin(async move {
            let Some(agent) = agent else { return Err("the agent is shutting down".to_string()) };
            agent.ingest(&trigger, payload, TiSource::Sensor, None).await.map(|_| ()).map_err(|e| {
                crate::log_warn!("sensor {sensor}: event for {trigger} refused: {e}");
                e.to_string()
            })
        })
    }

    fn state_changed(&self, status: &SensorStatus) {
        let Some(agent) = self.0.upgrade() else { return };
        let update = SensorUpdate {
            sensor_ref: status.ref_.clone(),
            state: store_state(status.state),
            pid: status.pid.map(i64::from),
            restarts: i64::from(status.restarts),
            last_exit_code: status.last_exit_code,
            last_signal: status.last_signal,
            last_stderr: (!status.last_stderr.is_empty()).then(|| status.last_stderr.join("\n")),
        };
        let store = agent.store.clone();
        agent
            .ex
            .spawn(async move {
                let _ = store.upsert_sensor(update).await;
            })
            .detach();
    }

    fn log(&self, sensor: &str, level: LogLevel, line: &str) {
        match level {
            LogLevel::Error => crate::log_error!("sensor {sensor}: {line}"),
            LogLevel::Warn => crate::log_warn!("sensor {sensor}: {line}"),
            LogLevel::Info => crate::log_info!("sensor {sensor}: {line}"),
            LogLevel::Debug => crate::log_debug!("sensor {sensor}: {line}"),
        }
    }

    fn process_spawned(&self, status: &SensorStatus) {
        self.internal(SPAWN_TRIGGER, status);
    }

    fn process_exited(&self, status: &SensorStatus) {
        crate::log_warn!(
            "sensor {} exited (code {:?}, signal {:?}), run {}",
            status.ref_,
            status.last_exit_code,
            status.last_signal,
            status.restarts + 1
        );
        self.internal(EXIT_TRIGGER, status);
    }
}

impl Host {
    fn internal(&self, trigger: &'static str, status: &SensorStatus) {
        let Some(agent) = self.0.upgrade() else { return };
        if !agent.has_listeners(trigger) {
            return;
        }
        let payload = status.trigger_payload();
        let a = agent.clone();
        agent
            .ex
            .spawn(async move {
                let _ = a.ingest(trigger, payload, TiSource::Internal, None).await;
            })
            .detach();
    }
}

/// The active trigger instances a sensor is told about: one per distinct set of trigger
/// parameters among enabled rules on its trigger types (StackStorm's TriggerDBs), with the
/// Attune fields beside (`rule`, `trigger_ref`, `config`).
fn active_triggers(reg: &Registry, trigger_types: &[String]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for t in trigger_types {
        for (_, r) in reg.rules_for(t) {
            if out.iter().any(|x| x["type"] == t.as_str() && x["parameters"] == r.trigger_parameters) {
                continue;
            }
            let (pack, name) = t.split_once('.').unwrap_or(("", t));
            out.push(json!({
                "id": r.ref_,
                "ref": t,
                "name": name,
                "pack": pack,
                "type": t,
                "parameters": r.trigger_parameters,
                "rule": r.ref_,
                "trigger_ref": t,
                "config": r.trigger_parameters,
            }));
        }
    }
    out
}

/// Specs of every sensor that should run under `reg`, for the packs in `only` (all if None).
pub fn specs(agent: &Agent, reg: &Registry, only: Option<&[String]>) -> Vec<SensorSpec> {
    let mut out = Vec::new();
    for (pack, s) in reg.sensors() {
        if only.is_some_and(|o| !o.contains(&pack.ref_)) || !s.enabled {
            continue;
        }
        let triggers = active_triggers(reg, &s.trigger_types);
        if pack.dialect == Dialect::Attune && triggers.is_empty() {
            continue;
        }
        out.push(spec(agent, pack, s, triggers));
    }
    out
}

fn spec(agent: &Agent, pack: &Pack, s: &crate::pack::Sensor, triggers: Vec<Value>) -> SensorSpec {
    let venv = agent.settings.data_dir.join("virtualenvs").join(&pack.ref_);
    let python = if venv.join("bin/python").is_file() { venv.join("bin/python") } else { "python3".into() };
    let kind = match s.kind {
        PackSensorKind::St2Python => SensorKind::St2Python {
            class_name: s.class_name.clone().unwrap_or_default(),
            poll_interval: s.poll_interval.map(|p| p as f64),
        },
        PackSensorKind::JsonLines => SensorKind::JsonLines { interpreter: interpreter_for(&s.entry_point) },
    };
    let mut env = vec![("ATTUNE_API_URL".to_string(), agent.settings.api_url())];
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        // A pack virtualenv's site-packages, so a real eventlet (or anything else) wins.
        for e in entries.flatten() {
            let sp = e.path().join("site-packages");
            if sp.is_dir() {
                env.push(("PYTHONPATH".to_string(), sp.to_string_lossy().into_owned()));
            }
        }
    }
    SensorSpec {
        ref_: s.ref_.clone(),
        pack: pack.ref_.clone(),
        kind,
        entry_point: s.entry_point.clone(),
        pack_dir: pack.path.clone(),
        config: pack.config.clone(),
        triggers: Value::Array(triggers),
        known_triggers: s.trigger_types.clone(),
        env,
        python,
        shim_dir: agent.settings.shim_dir(),
        socket: agent.settings.socket_path(),
    }
}

/// An executable sensor runs as it is; a script without the executable bit (common after an
/// unzip or a copy from a wiki) runs through the interpreter its extension names.
fn interpreter_for(entry: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(entry).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if executable {
        return None;
    }
    Some(match entry.extension().and_then(|e| e.to_str()) {
        Some("py") => "python3".into(),
        Some("js") => "node".into(),
        _ => "/bin/sh".into(),
    })
}

impl Agent {
    /// Start every sensor of the current registry (at start-up).
    pub fn start_sensors(self: &Rc<Self>) {
        let reg = self.registry();
        for spec in specs(self, &reg, None) {
            crate::log_info!("starting sensor {}", spec.ref_);
            self.sensor_triggers.borrow_mut().insert(spec.ref_.clone(), spec.triggers.clone());
            self.sensors().start(spec);
        }
    }

    /// After a reload or a rule change: stop sensors that should no longer run, (re)start those
    /// of changed packs and those whose active trigger instances changed (Attune's "reconcile by
    /// restart"); leave every other sensor alone.
    pub async fn resync_sensors(self: &Rc<Self>, changed: &[String]) {
        let reg = self.registry();
        let wanted = specs(self, &reg, None);
        for st in self.sensors().statuses() {
            if !wanted.iter().any(|w| w.ref_ == st.ref_) {
                crate::log_info!("stopping sensor {} (removed or disabled)", st.ref_);
                let _ = self.sensors().remove(&st.ref_).await;
                let _ = self.store.delete_sensor(&st.ref_).await;
                self.sensor_triggers.borrow_mut().remove(&st.ref_);
            }
        }
        for spec in wanted {
            let running = self.sensors().status(&spec.ref_).is_some();
            let same_triggers = self.sensor_triggers.borrow().get(&spec.ref_) == Some(&spec.triggers);
            if running && same_triggers && !changed.contains(&spec.pack) {
                continue;
            }
            crate::log_info!("(re)starting sensor {}", spec.ref_);
            self.sensor_triggers.borrow_mut().insert(spec.ref_.clone(), spec.triggers.clone());
            self.sensors().start(spec);
        }
    }
}
