//! Sensor supervision: every sensor is a child process in its own session, restarted on any exit
//! with capped exponential backoff, whose stdout is a JSON-lines event channel and whose stderr is
//! its log. StackStorm Python sensors run unmodified under the embedded wrapper
//! (`runner/python/packd_sensor_wrapper.py`), which speaks the same JSON-lines protocol, so one
//! reader serves both dialects.
//!
//! This module owns process life (spawn, stop, backoff, reap), line parsing and the status of each
//! sensor. It must not decide what an event means or store anything: events go to the
//! [`SensorHost`] (the engine), which makes them durable; datastore calls of Python sensors go to
//! the agent socket directly. It does not load packs (the lead maps the pack model to a
//! [`SensorSpec`]) and does not install the Python shim (it receives the installed directory).
//!
//! Everything runs on the agent's single-threaded `smol::LocalExecutor`: children must be spawned
//! from that long-lived thread because the parent-death signal follows the *thread* that forked.
//!
//! # The event protocol (stdout)
//!
//! One JSON object per line: `{"trigger": "<ref>", "payload": {...}, "trace_tag": "..."}`
//! (`trigger_ref` is accepted for `trigger`; `payload` may be omitted or null → `{}`;
//! `trace_tag` is optional). A line that is not JSON, is longer than [`MAX_LINE_BYTES`], is not an
//! object, has no trigger, names a trigger outside [`SensorSpec::known_triggers`] or has a
//! non-object payload is reported through [`SensorHost::log`] with the reason and dropped. Blank
//! lines are ignored. The next line is read only after [`SensorHost::dispatch`] finished
//! (back-pressure: a flooding sensor waits for the durable store).
//!
//! # Environment
//!
//! Every sensor: the agent's environment, then `PACKD_SOCKET`, `PACKD_SENSOR_REF`, and last
//! [`SensorSpec::env`]; cwd is the pack directory.
//! JSON-lines sensors also get `ATTUNE_SENSOR_REF`, `ATTUNE_SENSOR_TRIGGERS` (JSON of
//! [`SensorSpec::triggers`]), `ATTUNE_SENSOR_TRIGGER_TYPES` (JSON array of `known_triggers`) and
//! `ATTUNE_SENSOR_CONFIG` (JSON of the config) and `PYTHONUNBUFFERED=1`; stdin is `/dev/null`.
//! StackStorm sensors get `PYTHONPATH` = shim dir, then any `PYTHONPATH` from `env`, then the
//! inherited one; stdin carries one line `{"config": …, "triggers": […]}` and is then closed.
//!
//! # States
//!
//! `starting` (being spawned) → `running` → on any exit `backoff` (waiting `next_restart_at`),
//! or `failed` once [`FAIL_THRESHOLD`] runs in a row ended before [`STABLE_RUN`]: `failed` is
//! still retried at `next_restart_at` — never silently dead — it only tells the operator that
//! retrying is not helping. `stopped` after [`Supervisor::stop`].

mod child;
mod lines;
mod supervise;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use smol::channel::{Receiver, Sender};
use smol::{LocalExecutor, Task};

pub use lines::{Emitted, LineError, MAX_LINE_BYTES, MAX_STDERR_LINE_BYTES, parse_event};
pub use supervise::backoff_delay;

/// First restart delay after a crash. Attune starts at 5 s, StackStorm at 2.5 s; 1 s gets a
/// sensor that died of a transient error (network blip at start) back quickly.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// Longest restart delay: Attune's cap. A permanently broken sensor costs one spawn every 5 min,
/// and a fixed one (config, network) is picked up within 5 min without operator action.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// A run this long counts as healthy and resets the backoff. StackStorm uses 10 s; 60 s also
/// catches sensors that fail at their first poll after a few seconds of setup.
pub const STABLE_RUN: Duration = Duration::from_secs(60);

/// SIGTERM → SIGKILL delay on stop: StackStorm's `PROCESS_EXIT_TIMEOUT`. Enough for `cleanup()`
/// to close connections; a sensor that ignores SIGTERM does not hold up a reload for longer.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after the sensor exited. Its group has been SIGKILLed by then,
/// so only a process that left the session (its own `setsid`) can keep the pipe open; it must not
/// stop the restart.
pub const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// Consecutive short runs after which the state shows `failed` (Attune alerts after 3).
pub const FAIL_THRESHOLD: u32 = 3;

/// stderr lines kept in [`SensorStatus::last_stderr`]: enough for a Python traceback's tail
/// (the exception and the frames above it), small enough to store with every state change.
pub const STDERR_TAIL_LINES: usize = 20;

/// The timings of supervision; [`Timings::default`] holds the named constants, tests use
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_run: Duration,
    pub stop_grace: Duration,
    pub exit_drain: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            stable_run: STABLE_RUN,
            stop_grace: STOP_GRACE,
            exit_drain: EXIT_DRAIN,
        }
    }
}

/// How a sensor is run.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// A StackStorm Python sensor: `class_name` from `entry_point`, run by the wrapper with
    /// [`SensorSpec::python`]. `poll_interval` (seconds) is passed only when set, and used only
    /// by `PollingSensor` subclasses, as in StackStorm.
    St2Python { class_name: String, poll_interval: Option<f64> },
    /// Any-language sensor printing JSON lines: `entry_point` is executed directly, or as
    /// `interpreter entry_point` (e.g. Attune's `runner_type: python`).
    JsonLines { interpreter: Option<PathBuf> },
}

/// Everything needed to run one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSpec {
    /// `<pack>.<name>`; the key of the sensor in the supervisor and in every report.
    pub ref_: String,
    pub pack: String,
    pub kind: SensorKind,
    /// Absolute path of the sensor file.
    pub entry_point: PathBuf,
    pub pack_dir: PathBuf,
    /// The pack config (StackStorm) or sensor config (Attune), a JSON object.
    pub config: Value,
    /// The active trigger instances, a JSON array: StackStorm trigger dicts `{id, ref, name,
    /// pack, type, parameters}` (one `add_trigger` each) or Attune's rule instances.
    pub triggers: Value,
    /// Every trigger ref the sensor may emit: its trigger-type refs *and* the refs of the active
    /// parameterized trigger instances in `triggers`. Anything else is dropped.
    pub known_triggers: Vec<String>,
    /// Set last, over everything the supervisor sets (a `PYTHONPATH` is merged instead).
    pub env: Vec<(String, String)>,
    /// The interpreter for `St2Python` (the pack virtualenv's `bin/python`, or `python3`).
    pub python: PathBuf,
    /// The installed Python shim (`runner::shim::install_python_shim`).
    pub shim_dir: PathBuf,
    /// The agent's Unix socket (datastore), exported as `PACKD_SOCKET`.
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorState {
    Starting,
    Running,
    Backoff,
    Failed,
    Stopped,
}

impl SensorState {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorState::Starting => "starting",
            SensorState::Running => "running",
            SensorState::Backoff => "backoff",
            SensorState::Failed => "failed",
            SensorState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// What is known about one sensor; a snapshot goes to [`SensorHost::state_changed`].
#[derive(Debug, Clone, PartialEq)]
pub struct SensorStatus {
    pub ref_: String,
    pub state: SensorState,
    /// The running process (also its process group and session id).
    pub pid: Option<u32>,
    /// Restarts since [`Supervisor::start`] (after crashes and on request).
    pub restarts: u32,
    /// Runs in a row that ended before [`Timings::stable_run`]; drives the backoff.
    pub consecutive_failures: u32,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<i32>,
    /// The last [`STDERR_TAIL_LINES`] stderr lines, across restarts (so a crash's reason is
    /// still visible during backoff), plus `packd: …` lines when a spawn failed.
    pub last_stderr: Vec<String>,
    pub next_restart_at: Option<SystemTime>,
    pub started_at: Option<SystemTime>,
    /// Events handed to the host successfully, and stdout lines dropped, since `start`.
    pub events: u64,
    pub dropped_lines: u64,
    /// Why the last stdout line was dropped, or why the last spawn failed.
    pub last_error: Option<String>,
}

impl SensorStatus {
    fn new(ref_: &str) -> Self {
        SensorStatus {
            ref_: ref_.to_owned(),
            state: SensorState::Starting,
            pid: None,
            restarts: 0,
            consecutive_failures: 0,
            last_exit_code: None,
            last_signal: None,
            last_stderr: Vec::new(),
            next_restart_at: None,
            started_at: None,
            events: 0,
            dropped_lines: 0,
            last_error: None,
        }
    }

    /// The status as JSON (timestamps RFC 3339, UTC), for the admin API and the store.
    pub fn to_json(&self) -> Value {
        json!({
            "ref": self.ref_,
            "state": self.state.as_str(),
            "pid": self.pid,
            "restarts": self.restarts,
            "consecutive_failures": self.consecutive_failures,
            "last_exit_code": self.last_exit_code,
            "last_signal": self.last_signal,
            "last_stderr": self.last_stderr,
            "next_restart_at": self.next_restart_at.and_then(rfc3339),
            "started_at": self.started_at.and_then(rfc3339),
            "events": self.events,
            "dropped_lines": self.dropped_lines,
            "last_error": self.last_error,
        })
    }

    /// Payload for `core.st2.sensor.process_spawn` / `process_exit`: `{"object": {...}}` with
    /// StackStorm's `id` (the sensor ref) and `timestamp` next to the status fields.
    pub fn trigger_payload(&self) -> Value {
        let mut object = self.to_json();
        if let Value::Object(map) = &mut object {
            map.insert("id".into(), Value::String(self.ref_.clone()));
            map.insert("timestamp".into(), rfc3339(SystemTime::now()).map_or(Value::Null, Value::String));
        }
        json!({ "object": object })
    }
}

fn rfc3339(t: SystemTime) -> Option<String> {
    jiff::Timestamp::try_from(t).ok().map(|ts| ts.to_string())
}

/// A future the host returns from [`SensorHost::dispatch`].
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// The engine side of supervision. Called on the executor thread; implementations must not call
/// back into the [`Supervisor`] synchronously in a way that waits (spawning a task is fine).
pub trait SensorHost {
    /// Make one event durable (e.g. commit the trigger instance). The sensor's next line is read
    /// only after this resolves. An `Err` is logged and the event counted as not delivered. The
    /// future may be dropped unfinished if the sensor is stopped while it is pending.
    fn dispatch(&self, sensor: &str, trigger: &str, payload: Value, trace_tag: Option<String>) -> DispatchFuture;
    /// Any change of state, pid or restart count (not on every event).
    fn state_changed(&self, status: &SensorStatus);
    /// A stderr line of the sensor (level from a `DEBUG|INFO|WARNING|ERROR|CRITICAL` first word,
    /// `Info` otherwise) or a supervisor message about it.
    fn log(&self, sensor: &str, level: LogLevel, line: &str);
    /// A process was spawned: dispatch `core.st2.sensor.process_spawn` with
    /// [`SensorStatus::trigger_payload`].
    fn process_spawned(&self, status: &SensorStatus);
    /// A process exited (any reason, stop included): `core.st2.sensor.process_exit`.
    fn process_exited(&self, status: &SensorStatus);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SensorError {
    #[error("no sensor \"{0}\" is known to the supervisor")]
    Unknown(String),
}

/// What a sensor task is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Stop the process now (or skip the backoff) and run it again.
    Restart,
    /// Stop the process and end supervision.
    Stop,
}

struct Slot {
    spec: Rc<SensorSpec>,
    status: Rc<RefCell<SensorStatus>>,
    commands: Sender<Command>,
    /// Closed when the task has ended (its sender is dropped then).
    done: Receiver<()>,
    _task: Task<()>,
}

/// Supervises every sensor of the agent; one per agent, used on the executor thread.
pub struct Supervisor {
    executor: Rc<LocalExecutor<'static>>,
    host: Rc<dyn SensorHost>,
    timings: Timings,
    slots: RefCell<BTreeMap<String, Slot>>,
}

impl Supervisor {
    pub fn new(executor: Rc<LocalExecutor<'static>>, host: Rc<dyn SensorHost>, timings: Timings) -> Self {
        Supervisor { executor, host, timings, slots: RefCell::new(BTreeMap::new()) }
    }

    /// Start supervising `spec`. A sensor already known under the same ref is replaced: its
    /// process is stopped (SIGTERM, grace, SIGKILL) before the new one is spawned, so the two
    /// never run at once (reconcile-by-restart with new triggers or config).
    pub fn start(&self, spec: SensorSpec) {
        let ref_ = spec.ref_.clone();
        let previous = self.slots.borrow_mut().remove(&ref_);
        let slot = self.spawn_slot(Rc::new(spec), SensorStatus::new(&ref_), previous);
        self.slots.borrow_mut().insert(ref_, slot);
    }

    fn spawn_slot(&self, spec: Rc<SensorSpec>, status: SensorStatus, previous: Option<Slot>) -> Slot {
        let status = Rc::new(RefCell::new(status));
        let (commands, command_rx) = smol::channel::unbounded();
        let (alive, done) = smol::channel::bounded::<()>(1);
        let host = self.host.clone();
        let timings = self.timings;
        let task_spec = spec.clone();
        let task_status = status.clone();
        let task = self.executor.spawn(async move {
            let _alive = alive;
            if let Some(previous) = previous {
                let _ = previous.commands.try_send(Command::Stop);
                let _ = previous.done.recv().await;
            }
            supervise::supervise(&*host, timings, &task_spec, &task_status, &command_rx).await;
        });
        Slot { spec, status, commands, done, _task: task }
    }

    /// Stop a sensor: SIGTERM to its process group, SIGKILL after [`Timings::stop_grace`]. The
    /// future resolves once the process is reaped and the state is `stopped`. The sensor stays
    /// known (see [`Supervisor::remove`]).
    pub fn stop(&self, ref_: &str) -> impl Future<Output = Result<(), SensorError>> + 'static {
        let handles = self
            .slots
            .borrow()
            .get(ref_)
            .map(|slot| (slot.commands.clone(), slot.done.clone()))
            .ok_or_else(|| SensorError::Unknown(ref_.to_owned()));
        async move {
            let (commands, done) = handles?;
            let _ = commands.try_send(Command::Stop);
            let _ = done.recv().await;
            Ok(())
        }
    }

    /// Stop a sensor and forget it (its pack was unloaded).
    pub fn remove(&self, ref_: &str) -> impl Future<Output = Result<(), SensorError>> + 'static {
        let slot = self.slots.borrow_mut().remove(ref_);
        let ref_ = ref_.to_owned();
        async move {
            let slot = slot.ok_or(SensorError::Unknown(ref_))?;
            let _ = slot.commands.try_send(Command::Stop);
            let _ = slot.done.recv().await;
            Ok(())
        }
    }

    /// Restart now: a running process is stopped (with the grace) and spawned again; a sensor
    /// in backoff skips the wait; a stopped one is started again. Resets the backoff.
    pub fn restart(&self, ref_: &str) -> Result<(), SensorError> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get(ref_).ok_or_else(|| SensorError::Unknown(ref_.to_owned()))?;
        if !slot.done.is_closed() {
            let _ = slot.commands.try_send(Command::Restart);
            return Ok(());
        }
        let spec = slot.spec.clone();
        let mut status = slot.status.borrow().clone();
        status.restarts = status.restarts.saturating_add(1);
        status.consecutive_failures = 0;
        let slot = self.spawn_slot(spec, status, None);
        slots.insert(ref_.to_owned(), slot);
        Ok(())
    }

    /// Stop every sensor (agent shutdown); all get SIGTERM at once, so the whole stop takes at
    /// most one grace period.
    pub fn stop_all(&self) -> impl Future<Output = ()> + 'static {
        let handles: Vec<_> =
            self.slots.borrow().values().map(|slot| (slot.commands.clone(), slot.done.clone())).collect();
        for (commands, _) in &handles {
            let _ = commands.try_send(Command::Stop);
        }
        async move {
            for (_, done) in handles {
                let _ = done.recv().await;
            }
        }
    }

    pub fn status(&self, ref_: &str) -> Option<SensorStatus> {
        self.slots.borrow().get(ref_).map(|slot| slot.status.borrow().clone())
    }

    /// Every known sensor, by ref.
    pub fn statuses(&self) -> Vec<SensorStatus> {
        self.slots.borrow().values().map(|slot| slot.status.borrow().clone()).collect()
    }
}
