//! Issue 3 acceptance: actions run as real processes through the real agent, results stored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `packd run ... --json` against `a`, returning (exit code, execution JSON or error text).
fn run_action(a: &Agent, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["run", "--json"];
    full.extend_from_slice(args);
    let o = a.cli(&full);
    let code = o.status.code().unwrap_or(-1);
    let v = serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| Value::String(stderr(&o)));
    (code, v)
}

fn fixture_packs(d: &Dir) {
    // hello_st2 from the corpus metadata, plus a script of our own.
    let corpus_pack = corpus().map(|c| c.join("st2/hello_st2"));
    let (manifest, greet) = match &corpus_pack {
        Some(p) => (
            std::fs::read_to_string(p.join("pack.yaml")).unwrap(),
            std::fs::read_to_string(p.join("actions/greet.yaml")).unwrap(),
        ),
        None => (
            "ref: hello_st2\nname: Hello StackStorm\ndescription: d\nversion: 0.1.0\nauthor: x\n".to_string(),
            "name: greet\npack: hello_st2\nrunner_type: local-shell-script\nentry_point: greet.sh\nparameters:\n  greeting:\n    type: string\n    required: true\n    position: 1\n".to_string(),
        ),
    };
    d.write("packs/hello_st2/pack.yaml", manifest);
    d.write("packs/hello_st2/actions/greet.yaml", greet);
    d.write(
        "packs/hello_st2/aliases/alias1.yaml",
        "name: greet\npack: hello_st2\ndescription: \"Greet StackStorm\"\naction_ref: \"hello_st2.greet\"\nformats:\n  - \"greet {{greeting}}\"\n",
    );
    d.write("packs/hello_st2/actions/greet.sh", "#!/bin/sh\necho \"$1, StackStorm!\"\n");
    chmod_x(&d.join("packs/hello_st2/actions/greet.sh"));

    // A StackStorm Python action using Action, self.config and the datastore.
    d.write("packs/pyst2/pack.yaml", "name: pyst2\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/pyst2/config.schema.yaml",
        "greeting:\n  type: string\n  default: Hello\napi_token:\n  type: string\n  secret: true\n",
    );
    d.write("configs/pyst2.yaml", "api_token: t0ken\n");
    d.write(
        "packs/pyst2/actions/count.yaml",
        "name: count\nrunner_type: python-script\nentry_point: count.py\nparameters:\n  who:\n    type: string\n    required: true\n  password:\n    type: string\n    secret: true\n",
    );
    d.write(
        "packs/pyst2/actions/count.py",
        r#"from st2common.runners.base_action import Action

class Count(Action):
    def run(self, who, password=None):
        n = int(self.action_service.get_value("count") or 0) + 1
        self.action_service.set_value("count", str(n))
        self.logger.info("counted %s", n)
        if who == "nobody":
            return (False, {"why": "nobody is there"})
        return {"greeting": "%s, %s" % (self.config["greeting"], who), "count": n,
                "token_len": len(self.config["api_token"]), "has_password": password is not None}
"#,
    );
    d.write(
        "packs/pyst2/actions/missing_key.yaml",
        "name: missing_key\nrunner_type: python-script\nentry_point: missing_key.py\n",
    );
    d.write(
        "packs/pyst2/actions/missing_key.py",
        "from st2common.runners.base_action import Action\n\nclass M(Action):\n    def run(self):\n        return self.config['nope']\n",
    );
    // A shell-script action with a secret and a timeout test helper.
    d.write(
        "packs/pyst2/actions/login.yaml",
        "name: login\nrunner_type: local-shell-script\nentry_point: login.sh\nparameters:\n  user:\n    type: string\n    position: 0\n  password:\n    type: string\n    secret: true\n    required: true\n  retries:\n    type: integer\n    default: 3\n",
    );
    d.write(
        "packs/pyst2/actions/login.sh",
        "#!/bin/sh\nfirst=\"$1\"\ncase \"$first\" in --password=*) first=named-password ;; esac\nfor a in \"$@\"; do last=\"$a\"; done\necho \"first=$first last=$last args=$#\"\n",
    );
    chmod_x(&d.join("packs/pyst2/actions/login.sh"));

    // Attune actions reading both parameter channels.
    d.write("packs/att/pack.yaml", "ref: att\nlabel: Attune test\nversion: 1.0.0\n");
    d.write(
        "packs/att/actions/both.yaml",
        "ref: att.both\nrunner_type: shell\nentry_point: both.sh\noutput_format: json\nparameters:\n  name: {type: string, required: true}\n  times: {type: integer, default: 2}\n",
    );
    d.write(
        "packs/att/actions/both.sh",
        "#!/bin/sh\nstdin=$(cat)\nprintf '{\"env_name\": \"%s\", \"env_times\": \"%s\", \"stdin\": %s}\\n' \"$ATTUNE_ACTION_NAME\" \"$ATTUNE_ACTION_TIMES\" \"$stdin\"\n",
    );
    d.write(
        "packs/att/actions/pyboth.yaml",
        "ref: att.pyboth\nrunner_type: python\nentry_point: pyboth.py\noutput_format: json\nparameters:\n  name: {type: string, required: true}\n",
    );
    d.write(
        "packs/att/actions/pyboth.py",
        "import json, os, sys\nparams = json.loads(sys.stdin.read())\nprint('log line first')\nprint(json.dumps({'from_stdin': params['name'], 'from_env': os.environ['ATTUNE_ACTION_NAME'], 'exec': os.environ.get('ATTUNE_EXEC_ID')}))\n",
    );
}

fn chmod_x(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn start(d: &Dir) -> Agent {
    fixture_packs(d);
    let core = shipped_packs();
    Agent::start(d, &[&core, &d.join("packs")], &["--configs", &d.s("configs")])
}

#[test]
fn core_local_and_echo() {
    let d = Dir::new();
    let a = start(&d);
    let (code, e) = run_action(&a, &["core.local", "cmd=echo hi"]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["result"]["stdout"], "hi");
    assert_eq!(e["result"]["return_code"], 0);
    let (code, e) = run_action(&a, &["core.echo", "message=hello world"]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(e["result"]["stdout"], "hello world");
    // st2's "first word without = becomes cmd".
    let (code, e) = run_action(&a, &["core.local", "printf", "%s-%s", "a", "b"]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(e["result"]["stdout"], "a-b");
    // A failing command: exit code 1 from the CLI, status failed, stored.
    let (code, e) = run_action(&a, &["core.local", "cmd=echo oops >&2; exit 3"]);
    assert_eq!(code, 1);
    assert_eq!(e["status"], "failed");
    assert_eq!(e["result"]["return_code"], 3);
    assert_eq!(e["result"]["stderr"], "oops");
    // Stored: `execution get` shows the same.
    let id = e["id"].to_string();
    let got = a.json(&["execution", "get", &id, "--json"]);
    assert_eq!(got["status"], "failed");
    assert_eq!(got["parameters"]["cmd"], "echo oops >&2; exit 3");
}

#[test]
fn hello_st2_greet_with_a_positional_argument() {
    let d = Dir::new();
    let a = start(&d);
    let (code, e) = run_action(&a, &["hello_st2.greet", "greeting=Yo"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    assert_eq!(e["result"]["stdout"], "Yo, StackStorm!");
}

#[test]
fn script_arguments_and_secret_masking() {
    let d = Dir::new();
    let a = start(&d);
    let secret = "hunter2-Zq9";
    let (code, e) = run_action(&a, &["pyst2.login", "user=ann", &format!("password={secret}")]);
    assert_eq!(code, 0, "{e}");
    // Named args first (--password=…, --retries=3), then the positional user.
    assert_eq!(e["result"]["stdout"], "first=named-password last=ann args=3", "{e}");
    assert_eq!(e["parameters"]["password"], "********");
    let id = e["id"].to_string();
    let shown = stdout(&a.cli(&["execution", "get", &id]));
    assert!(shown.contains("********") && !shown.contains(secret), "{shown}");
    let listed = stdout(&a.cli(&["execution", "get", &id, "--json"]));
    assert!(!listed.contains(secret));
    let log = a.log_text();
    drop(a);
    assert!(!log.contains(secret), "{log}");
    let mut all = Vec::new();
    for f in ["packd.db", "packd.db-wal"] {
        if let Ok(b) = std::fs::read(d.join("var").join(f)) {
            all.extend(b);
        }
    }
    assert!(!String::from_utf8_lossy(&all).contains(secret), "secret found in the database files");
}

#[test]
fn secret_never_stored_when_the_action_does_not_print_it() {
    let d = Dir::new();
    let a = start(&d);
    let secret = "s3cr3t-Vb7-unique";
    let (code, e) = run_action(&a, &["pyst2.count", "who=ann", &format!("password={secret}")]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    assert_eq!(e["result"]["result"]["has_password"], true);
    assert_eq!(e["parameters"]["password"], "********");
    let id = e["id"].to_string();
    assert!(!stdout(&a.cli(&["execution", "get", &id])).contains(secret));
    assert!(!stdout(&a.cli(&["execution", "get", &id, "--json"])).contains(secret));
    let log = a.log_text();
    drop(a);
    assert!(!log.contains(secret), "log: {log}");
    let mut all = Vec::new();
    for f in ["packd.db", "packd.db-wal", "packd.db-shm"] {
        if let Ok(b) = std::fs::read(d.join("var").join(f)) {
            all.extend(b);
        }
    }
    assert!(!all.is_empty());
    assert!(!String::from_utf8_lossy(&all).contains(secret), "secret found in the database files");
}

#[test]
fn python_action_with_config_and_datastore() {
    let d = Dir::new();
    let a = start(&d);
    let (code, e) = run_action(&a, &["pyst2.count", "who=Bob"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    let r = &e["result"]["result"];
    assert_eq!(r["greeting"], "Hello, Bob");
    assert_eq!(r["count"], 1);
    assert_eq!(r["token_len"], 5);
    assert!(e["result"]["stderr"].as_str().unwrap().contains("counted 1"), "{e}");
    let (_, e) = run_action(&a, &["pyst2.count", "who=Bob"]);
    assert_eq!(e["result"]["result"]["count"], 2, "datastore value persisted between runs");
    // (False, data) → failed, data kept.
    let (code, e) = run_action(&a, &["pyst2.count", "who=nobody"]);
    assert_eq!(code, 1);
    assert_eq!(e["status"], "failed");
    assert_eq!(e["result"]["result"]["why"], "nobody is there");
    // A missing config key: the friendly error, failed.
    let (code, e) = run_action(&a, &["pyst2.missing_key"]);
    assert_eq!(code, 1);
    let stderr = e["result"]["stderr"].as_str().unwrap_or("");
    assert!(stderr.contains("nope"), "{e}");
}

#[test]
fn attune_actions_get_parameters_on_stdin_and_in_env() {
    let d = Dir::new();
    let a = start(&d);
    let (code, e) = run_action(&a, &["att.both", "name=edge"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    let r = &e["result"]["result"];
    assert_eq!(r["env_name"], "edge");
    assert_eq!(r["env_times"], "2");
    assert_eq!(r["stdin"]["name"], "edge");
    assert_eq!(r["stdin"]["times"], 2);
    let (code, e) = run_action(&a, &["att.pyboth", "name=gw"]);
    assert_eq!(code, 0, "{e}");
    let r = &e["result"]["result"];
    assert_eq!(r["from_stdin"], "gw");
    assert_eq!(r["from_env"], "gw");
    assert_eq!(r["exec"], e["id"].to_string());
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let d = Dir::new();
    let a = start(&d);
    let pidfile = d.join("grandchild.pid");
    let cmd = format!("cmd=sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let (code, e) = run_action(&a, &["core.local", &cmd, "timeout=1"]);
    assert_eq!(code, 1);
    assert_eq!(e["status"], "timeout", "{e}");
    assert_eq!(e["result"]["error"], "Action failed to complete in 1 seconds");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        (!alive).then_some(())
    });
    assert!(gone.is_some(), "grandchild {pid} survived the timeout");
}

#[test]
fn bad_requests_start_nothing_and_store_nothing() {
    let d = Dir::new();
    let a = start(&d);
    let cases: &[(&[&str], &str)] = &[
        (&["no.such_action"], "not found"),
        (&["core.local", "cmd=true", "bogus=1"], "\"bogus\""),
        (&["pyst2.login", "password=x", "retries=many"], "retries"),
        (&["core.echo", "message=hi", "cmd=rm -rf /tmp/x"], "immutable"),
        (&["core.local"], "\"cmd\" is required"),
        (&["core.local", "cmd=echo {{ nope }}"], "nope"),
        (&["core.local", "cmd={% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}"], "fuel"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let o = a.cli(&full);
        assert_ne!(o.status.code(), Some(0), "{args:?} should fail");
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err:?}");
    }
    let list = a.json(&["execution", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing stored: {list}");
}

#[test]
fn running_executions_become_abandoned_after_a_crash() {
    let d = Dir::new();
    fixture_packs(&d);
    let core = shipped_packs();
    let packs = d.join("packs");
    let data = d.join("var");
    let port = free_port();
    let mut a = Agent::start_with_data(&data, &[&core, &packs], &["--configs", &d.s("configs")], port);
    let o = a.cli(&["run", "--async", "--json", "core.local", "cmd=sleep 30"]);
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let id = e["id"].to_string();
    wait_for(Duration::from_secs(10), || {
        (a.json(&["execution", "get", &id, "--json"])["status"] == "running").then_some(())
    })
    .expect("running");
    a.kill9();
    let b = Agent::start_with_data(&data, &[&core, &packs], &["--configs", &d.s("configs")], port);
    let e = b.json(&["execution", "get", &id, "--json"]);
    assert_eq!(e["status"], "abandoned");
}

#[test]
fn cancel_a_running_execution() {
    let d = Dir::new();
    let a = start(&d);
    let o = a.cli(&["run", "--async", "--json", "core.local", "cmd=sleep 30"]);
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let id = e["id"].to_string();
    wait_for(Duration::from_secs(10), || {
        (a.json(&["execution", "get", &id, "--json"])["status"] == "running").then_some(())
    })
    .expect("running");
    assert!(a.cli(&["execution", "cancel", &id]).status.success());
    let done = wait_for(Duration::from_secs(15), || {
        let s = a.json(&["execution", "get", &id, "--json"])["status"].clone();
        (s == "canceled").then_some(())
    });
    assert!(done.is_some(), "{}", a.json(&["execution", "get", &id, "--json"]));
}

#[test]
fn alias_match_and_run() {
    let d = Dir::new();
    let a = start(&d);
    let m = a.json(&["alias", "match", "greet Yo", "--json"]);
    assert_eq!(m["alias"], "hello_st2.greet");
    assert_eq!(m["parameters"]["greeting"], "Yo");
    let o = a.cli(&["alias", "run", "greet \"Good day\"", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["result"]["stdout"], "Good day, StackStorm!");
    let o = a.cli(&["alias", "run", "wave hello"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("matched no patterns"), "{}", stderr(&o));
}

#[test]
fn dynamic_config_values_are_rendered_and_secrets_decrypted() {
    let d = Dir::new();
    fixture_packs(&d);
    d.write("packs/dyn/pack.yaml", "name: dyn\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write("packs/dyn/config.schema.yaml", "host:\n  type: string\ntoken:\n  type: string\n  secret: true\n");
    d.write("configs/dyn.yaml", "host: \"{{ st2kv.system.dyn_host }}\"\ntoken: \"{{ st2kv.system.dyn_token }}\"\n");
    d.write("packs/dyn/actions/show.yaml", "name: show\nrunner_type: python-script\nentry_point: show.py\n");
    d.write(
        "packs/dyn/actions/show.py",
        "from st2common.runners.base_action import Action\n\nclass Show(Action):\n    def run(self):\n        return {'host': self.config['host'], 'token_ok': self.config['token'] == 'tok-42'}\n",
    );
    d.write(
        "packs/dyn/actions/echo_host.yaml",
        "name: echo_host\nrunner_type: local-shell-cmd\nparameters:\n  cmd: {default: 'echo {{ config_context.host }}', immutable: true}\n",
    );
    let core = shipped_packs();
    let a = Agent::start(&d, &[&core, &d.join("packs")], &["--configs", &d.s("configs")]);
    assert!(a.cli(&["key", "set", "dyn_host", "gw-1"]).status.success());
    assert!(a.cli(&["key", "set", "dyn_token", "tok-42", "--secret"]).status.success());
    let (code, e) = run_action(&a, &["dyn.show"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    assert_eq!(e["result"]["result"]["host"], "gw-1");
    assert_eq!(e["result"]["result"]["token_ok"], true);
    let (code, e) = run_action(&a, &["dyn.echo_host"]);
    assert_eq!(code, 0, "{e}");
    assert_eq!(e["result"]["stdout"], "gw-1");
}
