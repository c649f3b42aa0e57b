//! The embedded StackStorm Python shim (`python/` beside this file): `st2common`, `st2reactor`,
//! `packd_client` (datastore over the agent socket) and `packd_action_wrapper.py`. The files are
//! compiled into the binary and written to a state directory at start, which then goes first on
//! `PYTHONPATH`.
//!
//! This module only ships files; it does not run Python (see `st2::python_command`) and does not
//! serve the socket protocol the shim speaks (the agent does).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Every shim file, as (path relative to the shim directory, contents).
pub const FILES: &[(&str, &str)] = &[
    ("packd_action_wrapper.py", include_str!("python/packd_action_wrapper.py")),
    ("packd_client.py", include_str!("python/packd_client.py")),
    ("st2common/__init__.py", include_str!("python/st2common/__init__.py")),
    ("st2common/log.py", include_str!("python/st2common/log.py")),
    ("st2common/exceptions/__init__.py", include_str!("python/st2common/exceptions/__init__.py")),
    ("st2common/exceptions/action.py", include_str!("python/st2common/exceptions/action.py")),
    ("st2common/runners/__init__.py", include_str!("python/st2common/runners/__init__.py")),
    ("st2common/runners/base_action.py", include_str!("python/st2common/runners/base_action.py")),
    ("st2common/runners/utils.py", include_str!("python/st2common/runners/utils.py")),
    ("st2common/util/__init__.py", include_str!("python/st2common/util/__init__.py")),
    ("st2common/util/date.py", include_str!("python/st2common/util/date.py")),
    ("st2common/util/isotime.py", include_str!("python/st2common/util/isotime.py")),
    ("st2common/util/shell.py", include_str!("python/st2common/util/shell.py")),
    ("st2reactor/__init__.py", include_str!("python/st2reactor/__init__.py")),
    ("st2reactor/sensor/__init__.py", include_str!("python/st2reactor/sensor/__init__.py")),
    ("st2reactor/sensor/base.py", include_str!("python/st2reactor/sensor/base.py")),
    ("packd_sensor_wrapper.py", include_str!("python/packd_sensor_wrapper.py")),
    // Not on PYTHONPATH: the sensor wrapper appends this directory after site-packages, so a real
    // eventlet in the pack's virtualenv wins.
    ("packd_fallback/eventlet/__init__.py", include_str!("python/packd_fallback/eventlet/__init__.py")),
];

/// Write the shim into `dir` (created if needed) and return the directory to put on
/// `PYTHONPATH` (`dir` itself).
///
/// Idempotent: a file whose contents already match is not touched (its `.pyc` stays valid).
/// Each changed file is written to a temporary name and renamed over the old one, so a Python
/// process starting meanwhile sees either the old or the new file, never half of one.
pub fn install_python_shim(dir: &Path) -> io::Result<PathBuf> {
    for (relative, contents) in FILES {
        let path = dir.join(relative);
        if std::fs::read(&path).is_ok_and(|existing| existing == contents.as_bytes()) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent.join(format!(".{file_name}.tmp{}", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())));
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::super::ExecStatus;
    use super::super::process::{self, ProcessOutcome};
    use super::super::st2::{self, PythonAction};
    use super::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn install_is_idempotent_and_repairs_changed_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shim = dir.path().join("python");
        let got = install_python_shim(&shim).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, shim);
        for (relative, contents) in FILES {
            let on_disk = std::fs::read_to_string(shim.join(relative)).unwrap_or_default();
            assert_eq!(&on_disk, contents, "{relative}");
        }
        let wrapper = shim.join("packd_action_wrapper.py");
        let before = std::fs::metadata(&wrapper).and_then(|m| m.modified()).ok();
        std::thread::sleep(Duration::from_millis(20));
        install_python_shim(&shim).unwrap_or_else(|e| panic!("{e}"));
        let after = std::fs::metadata(&wrapper).and_then(|m| m.modified()).ok();
        assert_eq!(before, after, "an unchanged file must not be rewritten");
        std::fs::write(&wrapper, "broken").unwrap_or_else(|e| panic!("{e}"));
        install_python_shim(&shim).unwrap_or_else(|e| panic!("{e}"));
        let repaired = std::fs::read_to_string(&wrapper).unwrap_or_default();
        assert!(repaired.starts_with("\"\"\"packd's python-script action wrapper"));
        let leftovers = std::fs::read_dir(&shim)
            .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn install_into_an_unwritable_place_names_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").unwrap_or_else(|e| panic!("{e}"));
        // A regular file where the shim directory should be.
        let err = install_python_shim(&blocker.join("python"));
        assert!(err.is_err());
    }

    /// The agent side of the socket protocol, with an in-memory store.
    type Store = Arc<Mutex<BTreeMap<String, (String, bool)>>>;

    fn serve(listener: UnixListener, store: Store) {
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let store = store.clone();
                std::thread::spawn(move || handle(conn, store));
            }
        });
    }

    fn handle(conn: UnixStream, store: Store) {
        let Ok(mut writer) = conn.try_clone() else {
            return;
        };
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { return };
            let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let name = request["name"].as_str().unwrap_or_default().to_owned();
            let Ok(mut map) = store.lock() else { return };
            let response = match request["op"].as_str() {
                Some("kv.get") => {
                    json!({"ok": true, "result": map.get(&name).map(|v| v.0.clone())})
                }
                Some("kv.set") => {
                    let value = request["value"].as_str().unwrap_or_default().to_owned();
                    map.insert(name, (value, request["secret"] == json!(true)));
                    json!({"ok": true, "result": null})
                }
                Some("kv.delete") => json!({"ok": true, "result": map.remove(&name).is_some()}),
                Some("kv.list") => {
                    let prefix = request["prefix"].as_str().unwrap_or_default();
                    let items: Vec<Value> = map
                        .iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(k, (v, s))| json!({"name": k, "value": v, "secret": s, "expire_timestamp": null}))
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

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let shim = install_python_shim(&dir.path().join("python")).unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
        let store: Store = Arc::default();
        serve(listener, store.clone());
        std::fs::create_dir_all(dir.path().join("mypack/actions/lib")).unwrap_or_else(|e| panic!("{e}"));
        Fixture { dir, shim, socket, store }
    }

    fn run_action(fx: &Fixture, source: &str, params: Value, config: Value) -> (ExecStatus, Value, ProcessOutcome) {
        let pack_dir = fx.dir.path().join("mypack");
        let entry = pack_dir.join("actions").join("my_action.py");
        std::fs::write(&entry, source).unwrap_or_else(|e| panic!("{e}"));
        let venv = fx.dir.path().join("no-venv");
        let action = PythonAction {
            pack: "mypack",
            pack_dir: &pack_dir,
            entry_point: &entry,
            parameters: &params,
            config: &config,
            log_level: "DEBUG",
            virtualenv: &venv,
            shim_dir: &fx.shim,
            socket: Some(&fx.socket),
            env: &[],
            timeout: Duration::from_secs(20),
        };
        let spec = st2::python_command(&action);
        let outcome = smol::block_on(process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        let (status, result) = st2::python_result(&outcome, 20);
        (status, result, outcome)
    }

    const ACTION: &str = r#"
import sys
from st2common.runners.base_action import Action
from helper import shout


class Zeta(Action):
    def run(self):
        return "never picked: Zeta sorts after MyAction"


class NotAnAction(object):
    pass


class MyAction(Action):
    def run(self, name, count=None, fail=False):
        self.logger.info("hello %s", name)
        print("printed by the action")
        n = int(self.action_service.get_value("counter") or 0) + 1
        self.action_service.set_value("counter", n)
        self.action_service.set_value("global_key", "g", local=False, encrypt=True)
        listed = [kv.name for kv in self.action_service.list_values()]
        token = self.config["token"]
        try:
            self.config["missing"]
        except ValueError as e:
            missing = str(e)
        if fail:
            return (False, {"why": "asked to fail"})
        return (True, {"greeting": shout(name), "count": count, "n": n, "token": token,
                       "listed": listed, "missing": missing, "deleted": self.action_service.delete_value("counter"),
                       "deleted_again": self.action_service.delete_value("counter")})
"#;

    #[test]
    fn python_action_end_to_end() {
        let fx = fixture();
        std::fs::write(
            fx.dir.path().join("mypack/actions/lib/helper.py"),
            "def shout(s):\n    return s.upper() + '!'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (status, result, outcome) =
            run_action(&fx, ACTION, json!({"name": "bob", "count": null, "fail": false}), json!({"token": "s3cret"}));
        assert_eq!(status, ExecStatus::Succeeded, "{result:#}");
        assert_eq!(
            result["result"],
            json!({
                "greeting": "BOB!", "count": null, "n": 1, "token": "s3cret",
                "listed": ["mypack.MyAction:counter"],
                "missing": "Config for pack \"mypack\" is missing key \"missing\". Make sure that the config file exists (configs/mypack.yaml) and that it contains this key, or that the key has a default value in config.schema.yaml.",
                "deleted": true, "deleted_again": false
            })
        );
        assert_eq!(result["stdout"], json!("printed by the action\n"));
        assert_eq!(result["exit_code"], json!(0));
        assert_eq!(outcome.stderr, "actions.python.MyAction: INFO     hello bob\n");
        let store = fx.store.lock().map(|m| m.clone()).unwrap_or_default();
        assert_eq!(store.get("global_key"), Some(&("g".to_owned(), true)));
        assert_eq!(store.get("mypack.MyAction:counter"), None);

        // (False, data): failed, exit code still 0 as in st2; the local key survives this time.
        let (status, result, _) =
            run_action(&fx, ACTION, json!({"name": "x", "count": 1, "fail": true}), json!({"token": "t"}));
        assert_eq!(status, ExecStatus::Failed);
        assert_eq!(result["result"], json!({"why": "asked to fail"}));
        assert_eq!(result["exit_code"], json!(0));
        let store = fx.store.lock().map(|m| m.clone()).unwrap_or_default();
        assert_eq!(store.get("mypack.MyAction:counter"), Some(&("1".to_owned(), false)));
    }

    #[test]
    fn python_action_return_protocol_edges() {
        let fx = fixture();
        let action = |body: &str| {
            format!(
                "from st2common.runners.base_action import Action\n\
                 class A(Action):\n    def __init__(self, config=None):\n        super().__init__(config)\n\
                 \n    def run(self, **kw):\n{body}\n"
            )
        };
        // A non-bool first element: exit 220 with st2's message → failed.
        let (status, result, outcome) = run_action(&fx, &action("        return (1, 2)"), json!({}), json!({}));
        assert_eq!(status, ExecStatus::Failed);
        assert_eq!(outcome.exit_code, Some(220));
        assert!(
            result["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Status returned from the action run() method must either be True or False, got: 1")
        );
        // Not JSON-serializable → str(); a constructor without action_service still gets it.
        let (status, result, _) =
            run_action(&fx, &action("        return {1, 2} if self.action_service else None"), json!({}), json!({}));
        assert_eq!(status, ExecStatus::Succeeded);
        assert_eq!(result["result"], json!("{1, 2}"));
        // Parameters far beyond st2's 128 KiB argv limit arrive intact (they travel on stdin).
        let big = "p".repeat(300 * 1024);
        let (_, result, _) = run_action(&fx, &action("        return len(kw['big'])"), json!({"big": big}), json!({}));
        assert_eq!(result["result"], json!(300 * 1024));
        // Plain values, and a 3-tuple, are results without a status.
        let (_, result, _) = run_action(&fx, &action("        return [kw, (1, 2, 3)]"), json!({"a": [1]}), json!({}));
        assert_eq!(result["result"], json!([{"a": [1]}, [1, 2, 3]]));
        // An exception: traceback on stderr, exit 1, result "None".
        let (status, result, outcome) =
            run_action(&fx, &action("        raise RuntimeError('kaput')"), json!({}), json!({}));
        assert_eq!(status, ExecStatus::Failed);
        assert_eq!(result["result"], json!("None"));
        assert_eq!(outcome.exit_code, Some(1));
        assert!(outcome.stderr.contains("RuntimeError: kaput"), "{}", outcome.stderr);
        // A file without an action class.
        let (status, _, outcome) = run_action(&fx, "class X(object):\n    pass\n", json!({}), json!({}));
        assert_eq!(status, ExecStatus::Failed);
        assert!(outcome.stderr.contains("has no action class"), "{}", outcome.stderr);
    }

    #[test]
    fn python_shim_modules_and_missing_socket() {
        let fx = fixture();
        let source = r#"
import datetime
from st2common import log
from st2common.util import isotime
from st2common.util.shell import quote_unix
from st2common.exceptions.action import InvalidActionParameterException
from st2common.runners.base_action import Action
from st2reactor.sensor.base import PollingSensor, Sensor


class Poller(PollingSensor):
    def setup(self): pass
    def poll(self): pass
    def cleanup(self): pass
    def add_trigger(self, t): pass
    def update_trigger(self, t): pass
    def remove_trigger(self, t): pass


class Check(Action):
    def run(self):
        dt = isotime.parse("2024-05-01T12:00:00.123Z")
        p = Poller(sensor_service="svc", config=None)
        p2 = Poller("svc", {"a": 1}, poll_interval=30)
        p2.set_poll_interval(7)
        try:
            self.action_service.get_value("k")
            socket_error = None
        except Exception as e:
            socket_error = str(e)
        try:
            self.action_service.get_value("k", scope="user")
        except ValueError as e:
            scope_error = str(e)
        return {
            "format": isotime.format(dt),
            "format_z": isotime.format(dt, usec=False, offset=False),
            "space": isotime.format("2024-05-01 12:00:00+00"),
            "quote": quote_unix("it's"),
            "logger": log.getLogger("x").name,
            "exc": issubclass(InvalidActionParameterException, Exception),
            "poll": [p.get_poll_interval(), p2.get_poll_interval(), p.sensor_service, p._config, p2.config],
            "sensor_abstract": Sensor.__abstractmethods__ and sorted(Sensor.__abstractmethods__),
            "socket_error": socket_error,
            "scope_error": scope_error,
        }
"#;
        let pack_dir = fx.dir.path().join("mypack");
        let entry = pack_dir.join("actions").join("check.py");
        std::fs::write(&entry, source).unwrap_or_else(|e| panic!("{e}"));
        let venv = fx.dir.path().join("no-venv");
        let (params, config) = (json!({}), json!({}));
        let action = PythonAction {
            pack: "mypack",
            pack_dir: &pack_dir,
            entry_point: &entry,
            parameters: &params,
            config: &config,
            log_level: "INFO",
            virtualenv: &venv,
            shim_dir: &fx.shim,
            socket: None,
            env: &[],
            timeout: Duration::from_secs(20),
        };
        let mut spec = st2::python_command(&action);
        spec.env_remove.push("PACKD_SOCKET".into());
        let outcome = smol::block_on(process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        let (status, result) = st2::python_result(&outcome, 20);
        assert_eq!(status, ExecStatus::Succeeded, "{result:#}");
        expect_test::expect![[r#"
            {
              "format": "2024-05-01T12:00:00.123000+00:00",
              "format_z": "2024-05-01T12:00:00Z",
              "space": "2024-05-01T12:00:00.000000+00:00",
              "quote": "'it'\"'\"'s'",
              "logger": "st2.x",
              "exc": true,
              "poll": [
                5,
                7,
                "svc",
                {},
                {
                  "a": 1
                }
              ],
              "sensor_abstract": [
                "add_trigger",
                "cleanup",
                "remove_trigger",
                "run",
                "setup",
                "update_trigger"
              ],
              "socket_error": "PACKD_SOCKET is not set: this process was not started by the packd agent, so the datastore is not available",
              "scope_error": "Scope user is unsupported."
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&result["result"]).unwrap_or_default());
    }
}
