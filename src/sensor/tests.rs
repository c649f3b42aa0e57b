//! End-to-end tests of sensor supervision with real processes (sh and python3) and a fake host
//! that records every call. Each test runs its own `LocalExecutor` on its test thread, which is
//! also the thread that forks (the parent-death signal follows it).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smol::{LocalExecutor, Timer};

use super::*;

/// The shim files the sensor wrapper needs, as the lead's installer writes them.
const SHIM: &[(&str, &str)] = &[
    ("packd_sensor_wrapper.py", include_str!("../runner/python/packd_sensor_wrapper.py")),
    ("packd_client.py", include_str!("../runner/python/packd_client.py")),
    ("st2reactor/__init__.py", include_str!("../runner/python/st2reactor/__init__.py")),
    ("st2reactor/sensor/__init__.py", include_str!("../runner/python/st2reactor/sensor/__init__.py")),
    ("st2reactor/sensor/base.py", include_str!("../runner/python/st2reactor/sensor/base.py")),
    ("packd_fallback/eventlet/__init__.py", include_str!("../runner/python/packd_fallback/eventlet/__init__.py")),
];

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The real interpreter behind `python3` (a pyenv shim costs 200 ms per start).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|p| !p.is_empty())
                .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
        })
        .clone()
}

type Store = Arc<Mutex<BTreeMap<String, String>>>;

/// The agent's datastore socket, in memory.
fn serve_kv(listener: UnixListener, store: Store) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let store = store.clone();
            std::thread::spawn(move || handle_kv(conn, store));
        }
    });
}

fn handle_kv(conn: UnixStream, store: Store) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let name = request["name"].as_str().unwrap_or_default().to_owned();
        let Ok(mut map) = store.lock() else { return };
        let response = match request["op"].as_str() {
            Some("kv.get") => json!({"ok": true, "result": map.get(&name)}),
            Some("kv.set") => {
                let value = request["value"].as_str().unwrap_or_default().to_owned();
                map.insert(name, value);
                json!({"ok": true, "result": null})
            }
            Some("kv.delete") => json!({"ok": true, "result": map.remove(&name).is_some()}),
            Some("kv.list") => {
                let prefix = request["prefix"].as_str().unwrap_or_default();
                let items: Vec<Value> = map
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect();
                json!({"ok": true, "result": items})
            }
            _ => json!({"ok": false, "error": "unknown op"}),
        };
        drop(map);
        if writeln!(writer, "{response}").is_err() {
            return;
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    shim: PathBuf,
    socket: PathBuf,
    store: Store,
}

impl Fixture {
    fn new() -> Self {
        let dir = ok(tempfile::tempdir());
        let shim = dir.path().join("shim");
        for (relative, contents) in SHIM {
            let path = shim.join(relative);
            ok(std::fs::create_dir_all(path.parent().unwrap_or(&shim)));
            ok(std::fs::write(path, contents));
        }
        let socket = dir.path().join("agent.sock");
        let store: Store = Arc::default();
        serve_kv(ok(UnixListener::bind(&socket)), store.clone());
        ok(std::fs::create_dir_all(dir.path().join("mypack/sensors")));
        Fixture { dir, shim, socket, store }
    }

    fn pack_dir(&self) -> PathBuf {
        self.dir.path().join("mypack")
    }

    /// Write `sensors/<name>` (executable).
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.pack_dir().join("sensors").join(name);
        ok(std::fs::write(&path, contents));
        ok(std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)));
        path
    }

    fn spec(&self, ref_: &str, kind: SensorKind, entry_point: PathBuf) -> SensorSpec {
        SensorSpec {
            ref_: ref_.into(),
            pack: "mypack".into(),
            kind,
            entry_point,
            pack_dir: self.pack_dir(),
            config: json!({"greeting": "Yo"}),
            triggers: json!([]),
            known_triggers: vec!["mypack.tick".into()],
            env: Vec::new(),
            python: python(),
            shim_dir: self.shim.clone(),
            socket: self.socket.clone(),
        }
    }

    fn shell(&self, ref_: &str, script: &str) -> SensorSpec {
        let path = self.file(&format!("{ref_}.sh"), &format!("#!/bin/sh\n{script}"));
        self.spec(ref_, SensorKind::JsonLines { interpreter: None }, path)
    }

    fn python_lines(&self, ref_: &str, script: &str) -> SensorSpec {
        let path = self.file(&format!("{ref_}.py"), script);
        self.spec(ref_, SensorKind::JsonLines { interpreter: Some(python()) }, path)
    }

    fn st2(&self, ref_: &str, class_name: &str, source: &str) -> SensorSpec {
        let path = self.file(&format!("{}.py", ref_.replace('.', "_")), source);
        self.spec(ref_, SensorKind::St2Python { class_name: class_name.into(), poll_interval: None }, path)
    }
}

/// (sensor, trigger, payload, trace_tag)
type Dispatched = (String, String, Value, Option<String>);

#[derive(Default)]
struct FakeHost {
    dispatched: RefCell<Vec<Dispatched>>,
    states: RefCell<Vec<SensorStatus>>,
    logs: RefCell<Vec<(String, LogLevel, String)>>,
    spawned: RefCell<Vec<(String, Instant, Value)>>,
    exited: RefCell<Vec<SensorStatus>>,
    dispatch_delay: Cell<Duration>,
    in_flight: Rc<Cell<usize>>,
    max_in_flight: Rc<Cell<usize>>,
}

impl SensorHost for FakeHost {
    fn dispatch(&self, sensor: &str, trigger: &str, payload: Value, trace_tag: Option<String>) -> DispatchFuture {
        self.dispatched.borrow_mut().push((sensor.into(), trigger.into(), payload, trace_tag));
        let delay = self.dispatch_delay.get();
        let in_flight = self.in_flight.clone();
        let max = self.max_in_flight.clone();
        Box::pin(async move {
            in_flight.set(in_flight.get() + 1);
            max.set(max.get().max(in_flight.get()));
            Timer::after(delay).await;
            in_flight.set(in_flight.get() - 1);
            Ok(())
        })
    }

    fn state_changed(&self, status: &SensorStatus) {
        self.states.borrow_mut().push(status.clone());
    }

    fn log(&self, sensor: &str, level: LogLevel, line: &str) {
        self.logs.borrow_mut().push((sensor.into(), level, line.into()));
    }

    fn process_spawned(&self, status: &SensorStatus) {
        self.spawned.borrow_mut().push((status.ref_.clone(), Instant::now(), status.trigger_payload()));
    }

    fn process_exited(&self, status: &SensorStatus) {
        self.exited.borrow_mut().push(status.clone());
    }
}

impl FakeHost {
    fn events(&self, sensor: &str) -> Vec<(String, Value, Option<String>)> {
        self.dispatched
            .borrow()
            .iter()
            .filter(|d| d.0 == sensor)
            .map(|d| (d.1.clone(), d.2.clone(), d.3.clone()))
            .collect()
    }

    fn log_lines(&self, sensor: &str) -> Vec<String> {
        self.logs.borrow().iter().filter(|l| l.0 == sensor).map(|l| format!("{:?} {}", l.1, l.2)).collect()
    }

    fn logged(&self, sensor: &str, needle: &str) -> bool {
        self.log_lines(sensor).iter().any(|l| l.contains(needle))
    }
}

fn fast() -> Timings {
    Timings {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        stable_run: Duration::from_secs(10),
        stop_grace: Duration::from_secs(2),
        exit_drain: Duration::from_millis(300),
    }
}

/// Run `body` on a fresh executor with a supervisor and a fake host; stop everything after.
fn run<F: Future<Output = ()>>(timings: Timings, body: impl FnOnce(Rc<Supervisor>, Rc<FakeHost>) -> F) {
    let ex = Rc::new(LocalExecutor::new());
    let host = Rc::new(FakeHost::default());
    let dyn_host: Rc<dyn SensorHost> = host.clone();
    let sup = Rc::new(Supervisor::new(ex.clone(), dyn_host, timings));
    let test = body(sup.clone(), host);
    smol::block_on(ex.run(async {
        test.await;
        sup.stop_all().await;
    }));
}

/// Wait (polling the executor) until `cond` holds; false after `timeout`.
async fn until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return false;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    true
}

const WAIT: Duration = Duration::from_secs(8);

fn status(sup: &Supervisor, ref_: &str) -> SensorStatus {
    sup.status(ref_).unwrap_or_else(|| panic!("no status for {ref_}"))
}

/// The process no longer runs (gone, or a zombie nobody reaped yet).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn shell_sensor_events_backpressure_stop_restart_replace() {
    let fx = Fixture::new();
    let child_pid_file = fx.dir.path().join("child.pid");
    let script = format!(
        r#"sleep 60 &
echo $! > {pidfile}
echo "{{\"trigger\": \"mypack.tick\", \"payload\": {{\"n\": 1, \"ref\": \"$ATTUNE_SENSOR_REF\"}}}}"
printf '%s\n' "{{\"trigger\":\"mypack.tick\",\"payload\":{{\"n\":2,\"triggers\":$ATTUNE_SENSOR_TRIGGERS,\"config\":$ATTUNE_SENSOR_CONFIG,\"types\":$ATTUNE_SENSOR_TRIGGER_TYPES,\"socket\":\"$PACKD_SOCKET\"}}}}"
echo '{{"trigger":"mypack.tick","payload":{{"n":3}},"trace_tag":"t3"}}'
echo "to the log" >&2
echo "ERROR something failed" >&2
exec sleep 30
"#,
        pidfile = child_pid_file.display()
    );
    let mut spec = fx.shell("mypack.shell", &script);
    spec.triggers = json!([{"id": 1, "trigger_ref": "mypack.tick", "config": {"a": 1}}]);
    run(fast(), |sup, host| async move {
        host.dispatch_delay.set(Duration::from_millis(60));
        let started = Instant::now();
        sup.start(spec.clone());
        assert!(until(WAIT, || host.events("mypack.shell").len() == 3).await);
        // Back-pressure: the next line is read only after the previous dispatch finished.
        assert!(until(WAIT, || host.in_flight.get() == 0).await);
        assert_eq!(host.max_in_flight.get(), 1);
        assert!(started.elapsed() >= Duration::from_millis(180));
        let events = host.events("mypack.shell");
        let socket = fx.socket.display().to_string();
        assert_eq!(
            events,
            vec![
                ("mypack.tick".into(), json!({"n": 1, "ref": "mypack.shell"}), None),
                (
                    "mypack.tick".into(),
                    json!({"n": 2, "triggers": [{"id": 1, "trigger_ref": "mypack.tick", "config": {"a": 1}}],
                           "config": {"greeting": "Yo"}, "types": ["mypack.tick"], "socket": socket}),
                    None
                ),
                ("mypack.tick".into(), json!({"n": 3}), Some("t3".into())),
            ]
        );
        assert!(until(WAIT, || host.logged("mypack.shell", "Error something failed")).await);
        assert!(host.logged("mypack.shell", "Info to the log"));
        let st = status(&sup, "mypack.shell");
        assert_eq!(st.state, SensorState::Running);
        assert_eq!(st.events, 3);
        assert_eq!(st.last_stderr, vec!["to the log", "ERROR something failed"]);
        let pid = st.pid.unwrap_or_default();
        assert!(pid > 0 && !is_gone(pid));
        {
            let spawned = host.spawned.borrow();
            assert_eq!(spawned.len(), 1);
            let object = &spawned.first().map(|s| s.2.clone()).unwrap_or_default()["object"];
            assert_eq!(object["id"], json!("mypack.shell"));
            assert_eq!(object["state"], json!("running"));
            assert_eq!(object["pid"], json!(pid));
        }

        // Stop: SIGTERM reaches the whole group, the background child included.
        let child_pid = read_pid(&child_pid_file).unwrap_or_default();
        assert!(child_pid > 0 && !is_gone(child_pid));
        ok(sup.stop("mypack.shell").await);
        let st = status(&sup, "mypack.shell");
        assert_eq!(st.state, SensorState::Stopped);
        assert_eq!(st.pid, None);
        assert_eq!(st.last_signal, Some(15));
        assert!(is_gone(pid));
        assert!(until(WAIT, || is_gone(child_pid)).await);
        assert_eq!(host.exited.borrow().len(), 1);
        assert_eq!(sup.stop("mypack.nope").await, Err(SensorError::Unknown("mypack.nope".into())));
        // Stopping a stopped sensor is a no-op.
        ok(sup.stop("mypack.shell").await);

        // Restart a stopped sensor.
        ok(sup.restart("mypack.shell"));
        assert!(until(WAIT, || host.events("mypack.shell").len() == 6).await);
        let st = status(&sup, "mypack.shell");
        assert_eq!(st.restarts, 1);
        let pid2 = st.pid.unwrap_or_default();
        assert!(pid2 > 0 && pid2 != pid);

        // Restart a running one: stopped first, then spawned again.
        ok(sup.restart("mypack.shell"));
        assert!(until(WAIT, || host.events("mypack.shell").len() == 9).await);
        let st = status(&sup, "mypack.shell");
        assert_eq!(st.restarts, 2);
        assert_eq!(st.state, SensorState::Running);
        assert!(is_gone(pid2));
        let pid3 = st.pid.unwrap_or_default();

        // Replace with a new spec under the same ref: the old process is gone before the new
        // one starts (no duplicate events from two generations).
        let mut replacement = spec.clone();
        replacement.config = json!({"greeting": "new"});
        sup.start(replacement);
        assert!(until(WAIT, || host.events("mypack.shell").len() == 12).await);
        assert!(is_gone(pid3));
        let last = host.events("mypack.shell").get(10).cloned();
        assert_eq!(last.map(|e| e.1["config"].clone()), Some(json!({"greeting": "new"})));
        assert_eq!(status(&sup, "mypack.shell").restarts, 0);
        assert_eq!(sup.statuses().len(), 1);
        ok(sup.remove("mypack.shell").await);
        assert!(sup.statuses().is_empty());
        assert!(sup.restart("mypack.shell").is_err());
    });
}

#[test]
fn bad_lines_are_dropped_and_reported_and_a_10_mib_line_is_skipped() {
    let fx = Fixture::new();
    let spec = fx.python_lines(
        "mypack.noisy",
        r#"
import json, sys, time
out = sys.stdout
out.write("garbage\n")
out.write('{"trigger": "mypack.nope", "payload": {}}\n')
out.write('{"trigger": "mypack.tick", "payload": 5}\n')
out.write("\n")
out.write("[1]\n")
out.write("x" * (10 * 1024 * 1024) + "\n")
out.write(json.dumps({"trigger": "mypack.tick", "payload": {"after": "huge"}}) + "\n")
out.flush()
time.sleep(30)
"#,
    );
    run(fast(), |sup, host| async move {
        sup.start(spec);
        assert!(until(WAIT, || !host.events("mypack.noisy").is_empty()).await);
        assert_eq!(host.events("mypack.noisy"), vec![("mypack.tick".into(), json!({"after": "huge"}), None)]);
        let st = status(&sup, "mypack.noisy");
        assert_eq!(st.state, SensorState::Running);
        assert_eq!(st.dropped_lines, 5);
        assert_eq!(st.events, 1);
        assert_eq!(
            st.last_error.as_deref(),
            Some("dropped a stdout line: line of 10485760 bytes exceeds the 1048576-byte limit")
        );
        let warnings: Vec<String> =
            host.log_lines("mypack.noisy").into_iter().filter(|l| l.starts_with("Warn")).collect();
        expect_test::expect![[r#"
            [
                "Warn dropped a stdout line: not valid JSON: expected value at line 1 column 1: garbage",
                "Warn dropped a stdout line: unknown trigger \"mypack.nope\" (this sensor may emit: mypack.tick): {\"trigger\": \"mypack.nope\", \"payload\": {}}",
                "Warn dropped a stdout line: \"payload\" must be a JSON object, got a number: {\"trigger\": \"mypack.tick\", \"payload\": 5}",
                "Warn dropped a stdout line: not a JSON object: [1]",
                "Warn dropped a stdout line: line of 10485760 bytes exceeds the 1048576-byte limit",
            ]
        "#]]
        .assert_debug_eq(&warnings);
    });
}

const HELLO_SENSOR: &str = r#"
import time
from st2reactor.sensor.base import Sensor


class Helper(object):
    pass


class HelloSensor(Sensor):
    def __init__(self, sensor_service, config):
        super(HelloSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self._stop = False
        self._triggers = []

    def setup(self):
        self._logger.info("setup, greeting %s", self._config["greeting"])

    def run(self):
        print("print goes to the log, not the event channel")
        while not self._stop:
            count = self.sensor_service.get_value("hello_st2.count") or 0
            payload = {"greeting": self.config["greeting"], "count": int(count) + 1}
            self.sensor_service.dispatch(trigger="hello_st2.event1", payload=payload)
            self._sensor_service.set_value("hello_st2.count", payload["count"])
            if payload["count"] == 3:
                for trigger in self._triggers:
                    self.sensor_service.dispatch_with_context(
                        trigger, {"param": trigger["parameters"]}, trace_context={"trace_tag": "ctx"})
                self.sensor_service.set_value("global", "g", local=False)
                listed = [kv.name for kv in self.sensor_service.list_values()]
                self.sensor_service.dispatch("hello_st2.event1", {"listed": listed}, trace_tag="t")
            time.sleep(0.2)

    def cleanup(self):
        self._stop = True
        self._logger.info("cleanup called")

    def add_trigger(self, trigger):
        self._triggers.append(trigger)

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
"#;

#[test]
fn hello_st2_sensor_dispatches_and_uses_the_datastore() {
    let fx = Fixture::new();
    let mut spec = fx.st2("hello_st2.HelloSensor", "HelloSensor", HELLO_SENSOR);
    spec.pack = "hello_st2".into();
    spec.triggers = json!([{"id": "1", "ref": "hello_st2.5f1c", "uid": "trigger:hello_st2:5f1c",
        "name": "5f1c", "pack": "hello_st2", "type": "hello_st2.event2", "parameters": {"x": 1}}]);
    spec.known_triggers = vec!["hello_st2.event1".into(), "hello_st2.5f1c".into()];
    let store = fx.store.clone();
    run(fast(), |sup, host| async move {
        sup.start(spec);
        let s = "hello_st2.HelloSensor";
        assert!(until(WAIT, || host.events(s).len() >= 6).await);
        let events: Vec<String> = host.events(s).iter().take(6).map(|e| format!("{} {} {:?}", e.0, e.1, e.2)).collect();
        expect_test::expect![[r#"
            [
                "hello_st2.event1 {\"greeting\":\"Yo\",\"count\":1} None",
                "hello_st2.event1 {\"greeting\":\"Yo\",\"count\":2} None",
                "hello_st2.event1 {\"greeting\":\"Yo\",\"count\":3} None",
                "hello_st2.5f1c {\"param\":{\"x\":1}} Some(\"ctx\")",
                "hello_st2.event1 {\"listed\":[\"hello_st2.HelloSensor:hello_st2.count\"]} Some(\"t\")",
                "hello_st2.event1 {\"greeting\":\"Yo\",\"count\":4} None",
            ]
        "#]]
        .assert_debug_eq(&events);
        {
            let map = store.lock().map(|m| m.clone()).unwrap_or_default();
            assert_eq!(map.get("global").map(String::as_str), Some("g"));
            let count: u32 =
                map.get("hello_st2.HelloSensor:hello_st2.count").and_then(|v| v.parse().ok()).unwrap_or_default();
            assert!(count >= 4, "{map:?}");
        }
        assert!(host.logged(s, "Info SensorWrapper.hello_st2.HelloSensor.HelloSensor: setup, greeting Yo"));
        assert!(host.logged(s, "Info print goes to the log, not the event channel"));
        assert_eq!(status(&sup, s).dropped_lines, 0);

        // Stop: SIGTERM → cleanup() → exit 0, well within the grace.
        let t0 = Instant::now();
        ok(sup.stop(s).await);
        assert!(t0.elapsed() < Duration::from_secs(2));
        let st = status(&sup, s);
        assert_eq!((st.state, st.last_exit_code), (SensorState::Stopped, Some(0)));
        assert!(host.logged(s, "cleanup called"), "{:#?}", host.log_lines(s));
    });
}

#[test]
fn polling_sensor_with_the_eventlet_shim_and_a_real_eventlet_that_wins() {
    let fx = Fixture::new();
    let mut poller = fx.st2(
        "mypack.Poller",
        "Poller",
        r#"
import eventlet
eventlet.monkey_patch()
import eventlet
from st2reactor.sensor.base import PollingSensor


class Poller(PollingSensor):
    def setup(self):
        self.n = 0

    def poll(self):
        self.n += 1
        eventlet.sleep(0.01)
        doubled = eventlet.spawn(lambda x: x * 2, self.n).wait()
        pool = eventlet.GreenPool(2)
        squares = list(pool.imap(lambda x: x * x, [1, 2, 3]))
        self.sensor_service.dispatch("mypack.tick", {
            "n": doubled, "squares": squares, "interval": self.get_poll_interval(),
            "shim": getattr(eventlet, "PACKD_SHIM", False)})

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
"#,
    );
    poller.kind = SensorKind::St2Python { class_name: "Poller".into(), poll_interval: Some(0.1) };
    let site = fx.dir.path().join("venv-site");
    ok(std::fs::create_dir_all(site.join("eventlet")));
    ok(std::fs::write(site.join("eventlet/__init__.py"), "REAL = True\ndef monkey_patch(**kw):\n    pass\n"));
    let mut real = fx.st2(
        "mypack.Real",
        "Real",
        r#"
import time
import eventlet
eventlet.monkey_patch(socket=True)
from st2reactor.sensor.base import Sensor


class Real(Sensor):
    def setup(self): pass
    def run(self):
        self.sensor_service.dispatch("mypack.tick", {"real": getattr(eventlet, "REAL", False)})
        while True:
            time.sleep(1)
    def cleanup(self): pass
    def add_trigger(self, t): pass
    def update_trigger(self, t): pass
    def remove_trigger(self, t): pass
"#,
    );
    real.env = vec![("PYTHONPATH".into(), site.display().to_string())];
    run(fast(), |sup, host| async move {
        sup.start(poller);
        sup.start(real);
        assert!(until(WAIT, || host.events("mypack.Poller").len() >= 3).await);
        assert!(until(WAIT, || !host.events("mypack.Real").is_empty()).await);
        let payloads: Vec<Value> = host.events("mypack.Poller").into_iter().take(3).map(|e| e.1).collect();
        assert_eq!(
            payloads,
            (1..=3)
                .map(|n| json!({"n": n * 2, "squares": [1, 4, 9], "interval": 0.1, "shim": true}))
                .collect::<Vec<_>>()
        );
        let shim_notes = host
            .log_lines("mypack.Poller")
            .iter()
            .filter(|l| *l == "Warn packd: using the eventlet shim (sleep, spawn, monkey_patch only)")
            .count();
        assert_eq!(shim_notes, 1);
        assert_eq!(host.events("mypack.Real").first().map(|e| e.1.clone()), Some(json!({"real": true})));
        assert!(!host.logged("mypack.Real", "eventlet shim"));
    });
}

#[test]
fn a_crashing_sensor_restarts_with_growing_delays_and_shows_its_stderr() {
    let fx = Fixture::new();
    let spec = fx.shell("mypack.crash", "echo \"boom from $$\" >&2\nexit 3\n");
    run(fast(), |sup, host| async move {
        sup.start(spec);
        let s = "mypack.crash";
        assert!(until(WAIT, || host.spawned.borrow().len() >= 6).await);
        let times: Vec<Instant> = host.spawned.borrow().iter().map(|x| x.1).collect();
        let gaps: Vec<Duration> = times
            .windows(2)
            .filter_map(|w| match w {
                [a, b] => Some(b.duration_since(*a)),
                _ => None,
            })
            .collect();
        let ms = |d: &Duration| d.as_millis();
        // 50, 100, 200, 200, 200 ms (+ spawn time): doubling up to the cap.
        let g: Vec<u128> = gaps.iter().map(ms).collect();
        assert!(g.first().is_some_and(|g| *g >= 50), "{g:?}");
        assert!(g.get(1).is_some_and(|g| *g >= 100), "{g:?}");
        assert!(g.get(2).is_some_and(|g| *g >= 200), "{g:?}");
        assert!(g.iter().all(|g| *g < 1000), "{g:?}");
        let st = status(&sup, s);
        assert!(st.restarts >= 5);
        assert_eq!(st.last_exit_code, Some(3));
        assert!(st.last_stderr.iter().all(|l| l.starts_with("boom from ")), "{:?}", st.last_stderr);
        assert!(st.last_stderr.len() >= 5);
        // Backoff for the first two failures in a row, then "failed" (still retried).
        let seen: Vec<(SensorState, u32)> = host
            .states
            .borrow()
            .iter()
            .filter(|st| matches!(st.state, SensorState::Backoff | SensorState::Failed))
            .map(|st| (st.state, st.consecutive_failures))
            .take(4)
            .collect();
        assert_eq!(
            seen,
            vec![
                (SensorState::Backoff, 1),
                (SensorState::Backoff, 2),
                (SensorState::Failed, 3),
                (SensorState::Failed, 4)
            ]
        );
        assert!(
            host.states
                .borrow()
                .iter()
                .filter(|st| st.state == SensorState::Failed)
                .all(|st| st.next_restart_at.is_some())
        );
        assert!(host.logged(s, "Warn exited with code 3 after"));
        assert!(host.logged(s, "last stderr: boom from"));
        // A stop during backoff is immediate.
        let t0 = Instant::now();
        ok(sup.stop(s).await);
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(status(&sup, s).state, SensorState::Stopped);
    });
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let fx = Fixture::new();
    let spec = fx.shell("mypack.flaky", "sleep 0.15\nexit 1\n");
    let timings = Timings { stable_run: Duration::from_millis(100), ..fast() };
    run(timings, |sup, host| async move {
        sup.start(spec);
        assert!(until(WAIT, || host.spawned.borrow().len() >= 4).await);
        let failures: Vec<u32> = host
            .states
            .borrow()
            .iter()
            .filter(|st| st.state == SensorState::Backoff)
            .map(|st| st.consecutive_failures)
            .collect();
        assert!(failures.len() >= 3 && failures.iter().all(|f| *f == 1), "{failures:?}");
        assert_eq!(status(&sup, "mypack.flaky").last_exit_code, Some(1));
    });
}

#[test]
fn a_sensor_that_ignores_sigterm_is_killed_after_the_grace() {
    let fx = Fixture::new();
    let spec = fx.python_lines(
        "mypack.stubborn",
        r#"
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print('{"trigger": "mypack.tick"}', flush=True)
while True:
    time.sleep(1)
"#,
    );
    let timings = Timings { stop_grace: Duration::from_millis(300), ..fast() };
    run(timings, |sup, host| async move {
        let s = "mypack.stubborn";
        sup.start(spec);
        assert!(until(WAIT, || !host.events(s).is_empty()).await);
        let pid = status(&sup, s).pid.unwrap_or_default();
        let t0 = Instant::now();
        ok(sup.stop(s).await);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
        let st = status(&sup, s);
        assert_eq!((st.state, st.last_signal), (SensorState::Stopped, Some(9)));
        assert!(is_gone(pid));
        assert!(host.logged(s, "Warn still running 0.3 s after SIGTERM; sending SIGKILL"));
    });
}

#[test]
fn load_errors_are_reported_and_retried() {
    let fx = Fixture::new();
    let missing_class = fx.st2(
        "mypack.Missing",
        "Nope",
        "from st2reactor.sensor.base import Sensor\n\nclass Real(Sensor):\n    pass\n",
    );
    let syntax = fx.st2("mypack.Syntax", "Syntax", "class Syntax(:\n    pass\n");
    let raises = fx.st2(
        "mypack.Raises",
        "Raises",
        r#"
from st2reactor.sensor.base import Sensor
class Raises(Sensor):
    def setup(self): pass
    def run(self): raise RuntimeError("kaput")
    def cleanup(self): pass
    def add_trigger(self, t): pass
    def update_trigger(self, t): pass
    def remove_trigger(self, t): pass
"#,
    );
    let abstract_ = fx.st2(
        "mypack.Abstract",
        "Abstract",
        "from st2reactor.sensor.base import Sensor\nclass Abstract(Sensor):\n    pass\n",
    );
    let no_program =
        fx.spec("mypack.absent", SensorKind::JsonLines { interpreter: None }, fx.pack_dir().join("sensors/absent.sh"));
    run(fast(), |sup, _host| async move {
        for spec in [missing_class, syntax, raises, abstract_, no_program] {
            sup.start(spec);
        }
        let restarted = |r: &str| sup.status(r).is_some_and(|s| s.restarts >= 1);
        for r in ["mypack.Missing", "mypack.Syntax", "mypack.Raises", "mypack.Abstract", "mypack.absent"] {
            assert!(until(WAIT, || restarted(r)).await, "{r}: {:?}", sup.status(r));
        }
        let tail = |r: &str| status(&sup, r).last_stderr.join("\n");
        let missing = tail("mypack.Missing");
        assert!(missing.contains("ERROR packd.sensor_wrapper: Sensor class \"Nope\" not found in file"), "{missing}");
        assert!(missing.contains("(classes defined there: Real)"), "{missing}");
        assert_eq!(status(&sup, "mypack.Missing").last_exit_code, Some(1));
        let syntax = tail("mypack.Syntax");
        assert!(syntax.contains("SyntaxError"), "{syntax}");
        assert!(syntax.contains("Cannot import"), "{syntax}");
        let raises = tail("mypack.Raises");
        assert!(raises.contains("RuntimeError: kaput"), "{raises}");
        let abstract_ = tail("mypack.Abstract");
        assert!(abstract_.contains("Cannot instantiate sensor class \"Abstract\""), "{abstract_}");
        let absent = status(&sup, "mypack.absent");
        assert!(absent.last_stderr.iter().any(|l| l.starts_with("packd: cannot start ")), "{absent:?}");
        assert!(absent.last_error.as_deref().is_some_and(|e| e.contains("No such file")), "{absent:?}");
        assert!(matches!(absent.state, SensorState::Backoff | SensorState::Failed | SensorState::Starting));
    });
}

#[test]
fn stderr_tail_is_bounded_and_long_stderr_lines_are_cut() {
    let fx = Fixture::new();
    let spec = fx.python_lines(
        "mypack.chatty",
        r#"
import sys, time
for i in range(30):
    sys.stderr.write("line %d\n" % i)
sys.stderr.write("e" * 10000 + "\n")
sys.stderr.flush()
time.sleep(30)
"#,
    );
    run(fast(), |sup, _host| async move {
        sup.start(spec);
        let s = "mypack.chatty";
        assert!(until(WAIT, || status(&sup, s).last_stderr.last().is_some_and(|l| l.starts_with('e'))).await);
        let tail = status(&sup, s).last_stderr;
        assert_eq!(tail.len(), STDERR_TAIL_LINES);
        assert_eq!(tail.first().map(String::as_str), Some("line 11"));
        let last = tail.last().cloned().unwrap_or_default();
        assert_eq!(
            last,
            format!("{} [… {} more bytes cut]", "e".repeat(MAX_STDERR_LINE_BYTES), 10000 - MAX_STDERR_LINE_BYTES)
        );
    });
}

#[test]
fn output_held_open_outside_the_group_does_not_wedge_supervision() {
    let fx = Fixture::new();
    let pidfile = fx.dir.path().join("escaped.pid");
    let spec = fx.python_lines(
        "mypack.escape",
        &format!(
            r#"
import os, sys, time
if os.fork() == 0:
    os.setsid()
    with open({pidfile:?}, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(30)
    os._exit(0)
time.sleep(0.1)
sys.exit(0)
"#,
            pidfile = pidfile.display().to_string()
        ),
    );
    run(fast(), |sup, host| async move {
        sup.start(spec);
        let s = "mypack.escape";
        assert!(until(WAIT, || host.spawned.borrow().len() >= 2).await);
        assert!(host.logged(s, "output still open after the sensor exited"));
        assert_eq!(status(&sup, s).last_exit_code, Some(0));
    });
    if let Some(pid) = read_pid(&pidfile) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

const HELPER_ENV: &str = "PACKD_SENSOR_PARENT_DEATH_HELPER";

/// Not a test on its own: run as a child by `a_sensor_dies_with_the_agent`, it plays the agent.
#[test]
fn parent_death_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let spec = SensorSpec {
        ref_: "mypack.orphan".into(),
        pack: "mypack".into(),
        kind: SensorKind::JsonLines { interpreter: Some("/bin/sh".into()) },
        entry_point: dir.join("orphan.sh"),
        pack_dir: dir.clone(),
        config: json!({}),
        triggers: json!([]),
        known_triggers: Vec::new(),
        env: Vec::new(),
        python: python(),
        shim_dir: dir.clone(),
        socket: dir.join("none.sock"),
    };
    let ex = Rc::new(LocalExecutor::new());
    let host: Rc<dyn SensorHost> = Rc::new(FakeHost::default());
    let sup = Supervisor::new(ex.clone(), host, fast());
    smol::block_on(ex.run(async {
        sup.start(spec);
        // Killed by the parent test with SIGKILL while here.
        Timer::after(Duration::from_secs(30)).await;
    }));
}

#[test]
fn a_sensor_dies_with_the_agent() {
    let dir = ok(tempfile::tempdir());
    let pidfile = dir.path().join("sensor.pid");
    ok(std::fs::write(dir.path().join("orphan.sh"), format!("echo $$ > {}\nexec sleep 60\n", pidfile.display())));
    let module = module_path!();
    let test_name = format!("{}::parent_death_helper", module.split_once("::").map_or(module, |(_, rest)| rest));
    // Cross test runs have no binfmt: start the test binary through the same qemu runner.
    let exe = ok(std::env::current_exe());
    let runner = std::env::vars()
        .find(|(k, v)| k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER") && !v.trim().is_empty())
        .map(|(_, v)| v);
    let mut cmd = match &runner {
        Some(r) => {
            let mut parts = r.split_whitespace();
            let mut c = std::process::Command::new(parts.next().unwrap_or("qemu"));
            c.args(parts).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let mut agent = ok(cmd
        .args(["--exact", &test_name, "--test-threads=1", "--quiet"])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn());
    let start = Instant::now();
    let mut pid = None;
    while pid.is_none() && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
        pid = read_pid(&pidfile);
    }
    let pid = pid.unwrap_or_else(|| panic!("the helper agent did not start its sensor"));
    assert!(!is_gone(pid));
    ok(agent.kill());
    ok(agent.wait());
    let start = Instant::now();
    while !is_gone(pid) && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_gone(pid), "sensor {pid} outlived its agent");
}

#[test]
fn limits_and_defaults() {
    let t = Timings::default();
    assert_eq!(
        (t.backoff_initial, t.backoff_max, t.stable_run, t.stop_grace),
        (Duration::from_secs(1), Duration::from_secs(300), Duration::from_secs(60), Duration::from_secs(5))
    );
    let mut st = SensorStatus::new("p.s");
    st.state = SensorState::Backoff;
    st.next_restart_at = Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    st.last_exit_code = Some(3);
    expect_test::expect![[r#"{"ref":"p.s","state":"backoff","pid":null,"restarts":0,"consecutive_failures":0,"last_exit_code":3,"last_signal":null,"last_stderr":[],"next_restart_at":"2023-11-14T22:13:20Z","started_at":null,"events":0,"dropped_lines":0,"last_error":null}"#]]
        .assert_eq(&st.to_json().to_string());
    let payload = st.trigger_payload();
    assert_eq!(payload["object"]["id"], json!("p.s"));
    assert!(payload["object"]["timestamp"].is_string());
}

#[test]
fn quick_successive_replacements_leave_one_process() {
    let fx = Fixture::new();
    let spec = fx.shell(
        "mypack.gen",
        "echo \"{\\\"trigger\\\": \\\"mypack.tick\\\", \\\"payload\\\": {\\\"pid\\\": $$}}\"\nexec sleep 30\n",
    );
    run(fast(), |sup, host| async move {
        for _ in 0..3 {
            sup.start(spec.clone());
        }
        let pids = || -> Vec<u32> {
            host.events("mypack.gen")
                .iter()
                .filter_map(|e| e.1["pid"].as_u64())
                .filter_map(|p| u32::try_from(p).ok())
                .collect()
        };
        let current = || sup.status("mypack.gen").and_then(|s| s.pid);
        assert!(until(WAIT, || current().is_some() && pids().last().copied() == current()).await);
        Timer::after(Duration::from_millis(200)).await;
        // The first generation had started before the others existed (it may have been stopped
        // before printing); the middle one never spawned: its stop was queued while it waited.
        let spawned: Vec<Option<u32>> = host
            .spawned
            .borrow()
            .iter()
            .map(|s| s.2["object"]["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect();
        assert_eq!(spawned.len(), 2, "{spawned:?}");
        assert_eq!(status(&sup, "mypack.gen").state, SensorState::Running);
        assert!(spawned.first().copied().flatten().is_some_and(is_gone));
        assert_eq!(spawned.last().copied().flatten(), current());
        assert_eq!(sup.statuses().len(), 1);
    });
}
