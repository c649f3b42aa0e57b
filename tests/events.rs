//! Issue 4 acceptance: webhooks, rules, timers and crash safety through the real agent over
//! real loopback HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const PACK: &str = "name: hooks\ndescription: d\nversion: 1.0.0\nauthor: me\n";

fn pack(d: &Dir) -> std::path::PathBuf {
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    d.write("packs/hooks/pack.yaml", PACK);
    d.write(
        "packs/hooks/rules/deploy.yaml",
        format!(
            "name: deploy\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters: {{url: deploy}}\ncriteria:\n  trigger.body.env:\n    type: equals\n    pattern: prod\naction:\n  ref: core.local\n  parameters:\n    cmd: \"echo {{{{ trigger.body.version }}}} by {{{{ trigger.headers_lower['x-user'] }}}} > {}/deploy.txt\"\n",
            out.display()
        ),
    );
    d.write(
        "packs/hooks/rules/form.yaml",
        format!(
            "name: form\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters: {{url: form}}\ncriteria:\n  trigger.body.name[0]:\n    type: equals\n    pattern: edge\naction:\n  ref: core.local\n  parameters:\n    cmd: \"echo {{{{ trigger.body.name[0] }}}}-{{{{ trigger.body.n | length }}}} > {}/form.txt\"\n",
            out.display()
        ),
    );
    d.write(
        "packs/hooks/rules/crash.yaml",
        "name: crash\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters: {url: crash}\naction:\n  ref: core.noop\n",
    );
    out
}

fn executions(a: &Agent) -> Vec<Value> {
    a.json(&["execution", "list", "-n", "1000", "--json"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn webhook_runs_a_shell_action_with_parameters_from_the_body() {
    let d = Dir::new();
    let out = pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, headers, body) = http(
        a.port,
        "POST",
        "/api/v1/webhooks/deploy",
        &[("Content-Type", "application/json"), ("X-User", "ann")],
        br#"{"env": "prod", "version": "1.4.2"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["version"], "1.4.2");
    assert!(headers.iter().any(|(k, _)| k == "x-packd-event-id"));
    let text = wait_for(Duration::from_secs(10), || std::fs::read_to_string(out.join("deploy.txt")).ok());
    assert_eq!(text.as_deref(), Some("1.4.2 by ann\n"), "{}", a.log_text());
    let e = &executions(&a)[0];
    assert_eq!(e["status"], "succeeded");

    // A non-matching post is stored and runs nothing.
    let before = executions(&a).len();
    let (code, _, _) = post_json(a.port, "deploy", r#"{"env": "dev", "version": "9"}"#);
    assert_eq!(code, 202);
    let ti = wait_for(Duration::from_secs(10), || {
        let list = a.json(&["trigger-instance", "list", "--json"]);
        let t = list.as_array()?.iter().find(|t| t["payload"]["body"]["env"] == "dev")?.clone();
        (t["status"] == "processed").then_some(t)
    })
    .expect("the non-matching event is stored and processed");
    assert_eq!(ti["trigger"], "core.st2.webhook");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(executions(&a).len(), before, "nothing ran for a non-matching event");
    let got = a.json(&["trigger-instance", "get", &ti["id"].to_string(), "--json"]);
    assert_eq!(got["enforcements"].as_array().unwrap().len(), 0);
}

#[test]
fn form_encoded_post_is_a_dict_of_lists() {
    let d = Dir::new();
    let out = pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, _, body) = http(
        a.port,
        "POST",
        "/api/v1/webhooks/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=edge&n=1&n=2",
    );
    assert_eq!(code, 202, "{body}");
    let text = wait_for(Duration::from_secs(10), || std::fs::read_to_string(out.join("form.txt")).ok());
    assert_eq!(text.as_deref(), Some("edge-2\n"), "{}", a.log_text());
}

#[test]
fn http_errors() {
    let d = Dir::new();
    pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    assert_eq!(post_json(a.port, "nope", "{}").0, 404);
    let (code, _, body) = post_json(a.port, "deploy", "{not json");
    assert_eq!(code, 400);
    assert!(body.to_lowercase().contains("json"), "{body}");
    let big = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(http(a.port, "POST", "/api/v1/webhooks/deploy", &[("Content-Type", "application/json")], &big).0, 413);
    // The generic hook needs a known trigger.
    assert_eq!(post_json(a.port, "st2", r#"{"trigger": "no.such", "payload": {}}"#).0, 404);
    assert_eq!(
        post_json(a.port, "st2", r#"{"trigger": "core.st2.webhook", "payload": {"headers": {}, "body": {}}}"#).0,
        202
    );
    let (code, _, body) = http(a.port, "GET", "/health", &[], b"");
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = http(a.port, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(body.contains("packd_events_accepted_total"), "{body}");
}

#[test]
fn webhook_token_is_enforced() {
    let d = Dir::new();
    pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &["--webhook-token", "tok-123-long-enough-token"]);
    assert_eq!(post_json(a.port, "crash", "{}").0, 401);
    let h = |t: &'static str| {
        http(
            a.port,
            "POST",
            "/api/v1/webhooks/crash",
            &[("Content-Type", "application/json"), ("X-Packd-Token", t)],
            b"{}",
        )
        .0
    };
    assert_eq!(h("wrong"), 403);
    assert_eq!(h("tok-123-long-enough-token"), 202);
}

#[test]
fn refuses_a_public_bind_without_auth() {
    let d = Dir::new();
    let out =
        run(&["--data", &d.s("var"), "serve", "--packs", &shipped_packs().to_string_lossy(), "--listen", "0.0.0.0:0"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("0.0.0.0"), "{}", stderr(&out));
}

#[test]
fn a_slow_client_is_dropped_while_others_are_served_and_idle_connections_add_no_threads() {
    use std::io::{Read, Write};
    let d = Dir::new();
    pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let threads_before = threads(a.pid());
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    slow.write_all(b"POST /api/v1/webhooks/crash HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut idle: Vec<std::net::TcpStream> =
        (0..200).map(|_| std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap()).collect();
    for s in idle.iter_mut().step_by(2) {
        let _ = s.write_all(b"GET /hea");
    }
    // Served meanwhile.
    assert_eq!(http(a.port, "GET", "/health", &[], b"").0, 200);
    let threads_during = threads(a.pid());
    assert!(threads_during <= threads_before + 2, "threads grew from {threads_before} to {threads_during}");
    // The slow client is cut off after the header timeout (5 s).
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(t.elapsed() < Duration::from_secs(12), "slow client held for {:?}", t.elapsed());
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.contains("408") || text.contains("400"), "{text}");
    drop(idle);
}

#[test]
fn interval_rule_fires_an_action_twice_in_a_few_seconds() {
    let d = Dir::new();
    d.write("packs/tick/pack.yaml", "name: tick\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/tick/rules/tick.yaml",
        "name: tick\nenabled: true\ntrigger:\n  type: core.st2.IntervalTimer\n  parameters: {unit: seconds, delta: 1}\naction:\n  ref: core.echo\n  parameters:\n    message: \"{{ trigger.executed_at }}\"\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let two = wait_for(Duration::from_secs(10), || {
        let list = executions(&a);
        (list.iter().filter(|e| e["status"] == "succeeded").count() >= 2).then_some(list)
    });
    let list = two.unwrap_or_else(|| panic!("{}", a.log_text()));
    let id = list[0]["id"].to_string();
    let e = a.json(&["execution", "get", &id, "--json"]);
    let out = e["result"]["stdout"].as_str().unwrap_or_default().to_string();
    assert!(out.contains("+00:00"), "executed_at in st2 format: {out}");
    // Disable the rule from the CLI: no more fires.
    assert!(a.cli(&["rule", "disable", "tick.tick"]).status.success());
    let rules = a.json(&["rule", "list", "--json"]);
    assert_eq!(rules.as_array().unwrap().iter().find(|r| r["ref"] == "tick.tick").unwrap()["enabled"], false);
    std::thread::sleep(Duration::from_millis(300));
    let n = executions(&a).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(executions(&a).len(), n, "a disabled timer rule does not fire");
}

#[test]
fn actiontrigger_chains_rules() {
    let d = Dir::new();
    let out = pack(&d);
    d.write(
        "packs/hooks/rules/chain.yaml",
        format!(
            "name: chain\nenabled: true\ntrigger:\n  type: core.st2.generic.actiontrigger\ncriteria:\n  trigger.action_ref:\n    type: equals\n    pattern: core.noop\naction:\n  ref: core.local\n  parameters:\n    cmd: \"echo {{{{ trigger.status }}}} > {}/chain.txt\"\n",
            out.display()
        ),
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    assert_eq!(post_json(a.port, "crash", "{}").0, 202);
    let text = wait_for(Duration::from_secs(10), || std::fs::read_to_string(out.join("chain.txt")).ok());
    assert_eq!(text.as_deref(), Some("succeeded\n"), "{}", a.log_text());
}

#[test]
fn crash_loses_no_acknowledged_event_and_duplicates_no_execution() {
    let d = Dir::new();
    pack(&d);
    let data = d.join("var");
    let packs = d.join("packs");
    let port = free_port();
    let mut a = Agent::start_with_data(&data, &[&shipped_packs(), &packs], &[], port);
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let acc = accepted.clone();
    let poster = std::thread::spawn(move || {
        for i in 0..400 {
            let r = std::panic::catch_unwind(|| post_json(port, "crash", &format!("{{\"i\": {i}}}")));
            match r {
                Ok((202, headers, _)) => {
                    if let Some((_, id)) = headers.iter().find(|(k, _)| k == "x-packd-event-id") {
                        acc.lock().unwrap().push(id.parse().unwrap());
                    }
                }
                _ => break,
            }
        }
    });
    // Kill at a moment that depends on the machine's speed: after some events got through.
    wait_for(Duration::from_secs(20), || (accepted.lock().unwrap().len() >= 60).then_some(()));
    a.kill9();
    poster.join().unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(!accepted.is_empty());
    let b = Agent::start_with_data(&data, &[&shipped_packs(), &packs], &[], port);
    // Every acknowledged event is stored and ends up processed with exactly one enforcement.
    let done = wait_for(Duration::from_secs(60), || {
        let list = b.json(&["trigger-instance", "list", "-n", "1000", "--json"]);
        let list = list.as_array()?.clone();
        list.iter().all(|t| t["status"] == "processed").then_some(list)
    })
    .expect("all trigger instances processed after restart");
    let ids: std::collections::HashSet<i64> = done.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    for id in &accepted {
        assert!(ids.contains(id), "acknowledged event {id} lost");
    }
    let execs = b.json(&["execution", "list", "-n", "1000", "--json"]);
    let execs = execs.as_array().unwrap();
    for t in &done {
        let got = b.json(&["trigger-instance", "get", &t["id"].to_string(), "--json"]);
        let n = got["enforcements"].as_array().unwrap().len();
        assert_eq!(n, 1, "trigger instance {} has {n} enforcements", t["id"]);
    }
    assert_eq!(execs.len(), done.len(), "one execution per event, none duplicated");
}
