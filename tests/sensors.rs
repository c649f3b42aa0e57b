//! Issue 5 acceptance: supervised sensors (StackStorm Python sensors unmodified, JSON-lines
//! sensors in any language) and the datastore, through the real agent.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn chmod_x(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The seed's hello_st2 pack, with its full sensor (60 s between dispatches).
fn hello_st2(d: &Dir) {
    d.write(
        "packs/hello_st2/pack.yaml",
        "ref: hello_st2\nname: Hello StackStorm\ndescription: Simple pack containing examples of sensor, rule, and action.\nversion: 0.1.0\nauthor: StackStorm, Inc.\n",
    );
    d.write(
        "packs/hello_st2/actions/greet.yaml",
        "name: greet\npack: hello_st2\nrunner_type: \"local-shell-script\"\ndescription: Greet StackStorm!\nenabled: true\nentry_point: greet.sh\nparameters:\n    greeting:\n        type: string\n        description: Greeting you want to say to StackStorm (i.e. Hello, Hi, Yo, etc.)\n        required: true\n        position: 1\n",
    );
    d.write("packs/hello_st2/actions/greet.sh", "#!/bin/bash\necho \"$1, StackStorm!\"\n");
    chmod_x(&d.join("packs/hello_st2/actions/greet.sh"));
    d.write(
        "packs/hello_st2/sensors/sensor1.yaml",
        "class_name: \"HelloSensor\"\nentry_point: \"sensor1.py\"\ndescription: \"Test sensor that emits triggers.\"\ntrigger_types:\n  -\n    name: \"event1\"\n    description: \"An example trigger.\"\n    payload_schema:\n      type: \"object\"\n",
    );
    d.write(
        "packs/hello_st2/sensors/sensor1.py",
        r#"import eventlet

from st2reactor.sensor.base import Sensor


class HelloSensor(Sensor):
    def __init__(self, sensor_service, config):
        super(HelloSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self._stop = False

    def setup(self):
        pass

    def run(self):
        while not self._stop:
            self._logger.debug("HelloSensor dispatching trigger...")
            count = self.sensor_service.get_value("hello_st2.count") or 0
            payload = {"greeting": "Yo, StackStorm!", "count": int(count) + 1}
            self.sensor_service.dispatch(trigger="hello_st2.event1", payload=payload)
            self.sensor_service.set_value("hello_st2.count", payload["count"])
            eventlet.sleep(60)

    def cleanup(self):
        self._stop = True

    # Methods required for programmable sensors.
    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
"#,
    );
    d.write(
        "packs/hello_st2/rules/rule1.yaml",
        "name: on_hello_event1\npack: hello_st2\ndescription: Sample rule firing on hello_st2.event1.\nenabled: true\ntrigger:\n    type: hello_st2.event1\naction:\n    ref: hello_st2.greet\n    parameters:\n        greeting: Yo\n",
    );
}

fn executions(a: &Agent) -> Vec<Value> {
    a.json(&["execution", "list", "-n", "1000", "--json"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn hello_st2_runs_unmodified() {
    let d = Dir::new();
    hello_st2(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let e = wait_for(Duration::from_secs(20), || {
        executions(&a).into_iter().find(|e| e["action"] == "hello_st2.greet" && e["status"] == "succeeded")
    })
    .unwrap_or_else(|| panic!("no greet execution: {}", a.log_text()));
    let e = a.json(&["execution", "get", &e["id"].to_string(), "--json"]);
    assert_eq!(e["result"]["stdout"], "Yo, StackStorm!");
    // The count is in the datastore under the sensor's local prefix, as StackStorm keeps it.
    let keys = a.json(&["key", "list", "--json"]);
    let k = keys.as_array().unwrap().iter().find(|k| k["name"] == "hello_st2.HelloSensor:hello_st2.count").cloned();
    assert_eq!(k.map(|k| k["value"].clone()), Some(Value::String("1".into())), "{keys}");
    // The sensor event is a stored trigger instance with the count.
    let tis = a.json(&["trigger-instance", "list", "--trigger", "hello_st2.event1", "--json"]);
    assert_eq!(tis[0]["payload"]["count"], 1);
    let sensors = a.json(&["sensor", "list", "--json"]);
    let s = &sensors.as_array().unwrap().iter().find(|s| s["ref"] == "hello_st2.HelloSensor").cloned().unwrap();
    assert_eq!(s["state"], "running", "{s}");
    // The eventlet shim says so once.
    assert!(a.log_text().contains("eventlet shim"), "{}", a.log_text());
}

#[test]
fn polling_sensor_dispatches_repeatedly_and_counts_in_the_datastore() {
    let d = Dir::new();
    d.write("packs/poll/pack.yaml", "name: poll\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/poll/sensors/poller.yaml",
        "class_name: Poller\nentry_point: poller.py\npoll_interval: 4\ntrigger_types:\n  - name: tick\n    payload_schema:\n      type: object\n      properties:\n        n: {type: integer}\n",
    );
    d.write(
        "packs/poll/sensors/poller.py",
        r#"from st2reactor.sensor.base import PollingSensor


class Poller(PollingSensor):
    def setup(self):
        self.n = 0

    def poll(self):
        self.n += 1
        self._sensor_service.dispatch(trigger="poll.tick", payload={"n": self.n})
        self.sensor_service.set_value("last", str(self.n), local=False)

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
    d.write(
        "packs/poll/rules/r.yaml",
        "name: r\nenabled: true\ntrigger: {type: poll.tick}\naction:\n  ref: core.echo\n  parameters: {message: \"tick {{ trigger.n }}\"}\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let two = wait_for(Duration::from_secs(15), || (executions(&a).len() >= 2).then_some(()));
    assert!(two.is_some(), "{}", a.log_text());
    let o = a.cli(&["key", "get", "last"]);
    assert!(o.status.success());
    let n: u32 = stdout(&o).trim().parse().unwrap();
    assert!(n >= 2);
}

#[test]
fn json_lines_sensors_in_shell_and_python_fire_rules_and_garbage_is_dropped() {
    let d = Dir::new();
    let out = d.join("out.txt");
    d.write("packs/jl/pack.yaml", "ref: jl\nlabel: JSON lines\nversion: 1.0.0\n");
    d.write("packs/jl/triggers/ping.yaml", "ref: jl.ping\noutput:\n  n: {type: integer, required: true}\n");
    d.write("packs/jl/sensors/sh.yaml", "ref: jl.sh\nentry_point: sh_sensor.sh\ntrigger_types: [ping]\n");
    d.write(
        "packs/jl/sensors/sh_sensor.sh",
        "#!/bin/sh\necho 'not json at all'\necho '{\"trigger\": \"jl.nope\", \"payload\": {}}'\necho '{\"trigger\": \"jl.ping\", \"payload\": {\"n\": \"wrong type\"}}'\nhead -c 10485760 /dev/zero | tr '\\0' 'x'; echo\necho \"rules: $ATTUNE_SENSOR_TRIGGERS\" >&2\necho '{\"trigger\": \"jl.ping\", \"payload\": {\"n\": 1}}'\nexec sleep 600\n",
    );
    chmod_x(&d.join("packs/jl/sensors/sh_sensor.sh"));
    d.write(
        "packs/jl/sensors/py.yaml",
        "ref: jl.py\nentry_point: py_sensor.py\nrunner_type: python\ntrigger_types: [ping]\n",
    );
    d.write(
        "packs/jl/sensors/py_sensor.py",
        "#!/usr/bin/env python3\nimport json, sys, time\nprint(json.dumps({'trigger': 'jl.ping', 'payload': {'n': 2}}), flush=True)\ntime.sleep(600)\n",
    );
    chmod_x(&d.join("packs/jl/sensors/py_sensor.py"));
    d.write(
        "packs/jl/rules/r.yaml",
        format!("ref: jl.r\ntrigger_ref: jl.ping\naction_ref: core.local\naction_params:\n  cmd: \"echo {{{{ event.payload.n }}}} >> {}\"\n", out.display()),
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let both = wait_for(Duration::from_secs(15), || {
        let t = std::fs::read_to_string(&out).ok()?;
        let mut lines: Vec<&str> = t.lines().collect();
        lines.sort();
        (lines == ["1", "2"]).then_some(())
    });
    assert!(both.is_some(), "{}\n{:?}", a.log_text(), std::fs::read_to_string(&out));
    let log = a.log_text();
    assert!(log.contains("sensor jl.sh") && log.contains("not json"), "{log}");
    assert!(log.contains("jl.nope"), "unknown trigger reported: {log}");
    assert!(log.contains("wrong type") || log.contains("expected integer"), "schema violation reported: {log}");
    assert!(log.contains("\"rule\":\"jl.r\"") || log.contains("jl.r"), "ATTUNE_SENSOR_TRIGGERS passed: {log}");
    // The agent keeps serving.
    assert_eq!(http(a.port, "GET", "/health", &[], b"").0, 200);
}

#[test]
fn crashing_and_broken_sensors_are_restarted_visibly_and_the_agent_stays_healthy() {
    let d = Dir::new();
    d.write("packs/bad/pack.yaml", "name: bad\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write("packs/bad/sensors/crash.yaml", "class_name: Crash\nentry_point: crash.py\ntrigger_types: [{name: t}]\n");
    d.write(
        "packs/bad/sensors/crash.py",
        "import sys\nsys.stderr.write('boom: cannot reach the device\\n')\nsys.exit(3)\n",
    );
    d.write("packs/bad/sensors/noclass.yaml", "class_name: Missing\nentry_point: noclass.py\n");
    d.write(
        "packs/bad/sensors/noclass.py",
        "from st2reactor.sensor.base import Sensor\nclass Other(Sensor):\n    pass\n",
    );
    d.write("packs/bad/sensors/syntax.yaml", "class_name: S\nentry_point: syntax.py\n");
    d.write("packs/bad/sensors/syntax.py", "def broken(:\n");
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let crash = wait_for(Duration::from_secs(15), || {
        let s = a.json(&["sensor", "get", "bad.Crash", "--json"]);
        (s["restarts"].as_u64().unwrap_or(0) >= 2).then_some(s)
    })
    .unwrap_or_else(|| panic!("{}", a.log_text()));
    assert!(["backoff", "failed", "starting", "running"].contains(&crash["state"].as_str().unwrap()), "{crash}");
    assert!(crash["last_stderr"].to_string().contains("boom: cannot reach the device"), "{crash}");
    assert_eq!(crash["last_exit_code"], 3);
    let miss = a.json(&["sensor", "get", "bad.Missing", "--json"]);
    let syn = a.json(&["sensor", "get", "bad.S", "--json"]);
    let text = stdout(&a.cli(&["sensor", "get", "bad.Missing"]));
    assert!(miss["last_stderr"].to_string().contains("Missing") || text.contains("Missing"), "{miss}");
    assert!(syn["last_stderr"].to_string().to_lowercase().contains("syntax"), "{syn}");
    // The agent is fine, and the table view works.
    assert_eq!(http(a.port, "GET", "/health", &[], b"").0, 200);
    let (_, _, metrics) = http(a.port, "GET", "/metrics", &[], b"");
    assert!(metrics.contains("packd_sensors{state=\"backoff\"}"), "{metrics}");
    let table = stdout(&a.cli(&["sensor", "list"]));
    assert!(table.contains("bad.Crash"), "{table}");
    assert!(a.cli(&["sensor", "restart", "bad.Crash"]).status.success());
}

#[test]
fn no_sensor_outlives_a_killed_agent() {
    let d = Dir::new();
    d.write("packs/s/pack.yaml", "name: s\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write("packs/s/sensors/stubborn.yaml", "class_name: Stubborn\nentry_point: stubborn.py\n");
    d.write(
        "packs/s/sensors/stubborn.py",
        "import signal, time\nfrom st2reactor.sensor.base import Sensor\nclass Stubborn(Sensor):\n    def setup(self):\n        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    def run(self):\n        while True:\n            time.sleep(1)\n    def cleanup(self):\n        pass\n    def add_trigger(self, t): pass\n    def update_trigger(self, t): pass\n    def remove_trigger(self, t): pass\n",
    );
    let mut a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let pid = wait_for(Duration::from_secs(15), || {
        let s = a.json(&["sensor", "get", "s.Stubborn", "--json"]);
        (s["state"] == "running").then(|| s["pid"].as_i64()).flatten()
    })
    .unwrap_or_else(|| panic!("{}", a.log_text()));
    a.kill9();
    let gone = wait_for(Duration::from_secs(10), || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for a reaper (no process left running).
        (st.is_empty() || st.split_whitespace().nth(2) == Some("Z")).then_some(())
    });
    assert!(gone.is_some(), "sensor {pid} outlived the agent");
}

#[test]
fn datastore_ttl_scopes_and_secrets() {
    let d = Dir::new();
    let a = Agent::start(&d, &[&shipped_packs()], &[]);
    assert!(a.cli(&["key", "set", "plain", "v1"]).status.success());
    assert!(a.cli(&["key", "set", "short", "v2", "--ttl", "1"]).status.success());
    assert!(a.cli(&["key", "set", "mine", "u1", "--scope", "user"]).status.success());
    let secret = "Pa55-unique-secret-Qx";
    assert!(a.cli(&["key", "set", "token", secret, "--secret"]).status.success());
    assert_eq!(stdout(&a.cli(&["key", "get", "plain"])).trim(), "v1");
    assert_eq!(stdout(&a.cli(&["key", "get", "mine", "--scope", "user"])).trim(), "u1");
    assert!(!a.cli(&["key", "get", "mine"]).status.success(), "scopes are separate");
    // Secrets: encrypted unless --decrypt.
    let listed = stdout(&a.cli(&["key", "list"]));
    assert!(!listed.contains(secret), "{listed}");
    assert!(!stdout(&a.cli(&["key", "get", "token"])).contains(secret));
    assert_eq!(stdout(&a.cli(&["key", "get", "token", "--decrypt"])).trim(), secret);
    // TTL: gone at once after expiry.
    std::thread::sleep(Duration::from_millis(1300));
    assert!(!a.cli(&["key", "get", "short"]).status.success());
    assert!(!stdout(&a.cli(&["key", "list"])).contains("short"));
    // A template can read system keys and decrypt secrets.
    let o = a.cli(&[
        "run",
        "--json",
        "core.local",
        "cmd=echo {{ st2kv.system.plain }}-{{ st2kv.system.token | decrypt_kv | length }}",
    ]);
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["result"]["stdout"], format!("v1-{}", secret.len()));
    assert!(a.cli(&["key", "delete", "plain"]).status.success());
    assert!(!a.cli(&["key", "delete", "plain"]).status.success());
    let log = a.log_text();
    drop(a);
    assert!(!log.contains(secret));
    let mut all = Vec::new();
    for f in ["packd.db", "packd.db-wal"] {
        if let Ok(b) = std::fs::read(d.join("var").join(f)) {
            all.extend(b);
        }
    }
    assert!(!String::from_utf8_lossy(&all).contains(secret), "secret in the database files");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("var/packd.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
