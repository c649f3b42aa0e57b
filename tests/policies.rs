//! Policies: concurrency (delay and cancel) and retry, through the real agent.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn pack(d: &Dir, policy: &str) {
    d.write("packs/pol/pack.yaml", "name: pol\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/pol/actions/slow.yaml",
        "name: slow\nrunner_type: local-shell-cmd\nparameters:\n  cmd: {default: 'sleep 1', immutable: true}\n",
    );
    d.write(
        "packs/pol/actions/flaky.yaml",
        "name: flaky\nrunner_type: local-shell-cmd\nparameters:\n  cmd: {default: 'echo try >&2; exit 1', immutable: true}\n",
    );
    d.write("packs/pol/policies/p.yaml", policy);
}

fn run_async(a: &Agent, action: &str) -> String {
    let o = a.cli(&["run", "--async", "--json", action]);
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    e["id"].to_string()
}

fn get(a: &Agent, id: &str) -> Value {
    a.json(&["execution", "get", id, "--json"])
}

fn finished(a: &Agent, id: &str) -> Value {
    wait_for(Duration::from_secs(20), || {
        let e = get(a, id);
        ["succeeded", "failed", "canceled", "timeout"].contains(&e["status"].as_str()?).then_some(e)
    })
    .expect("execution finished")
}

#[test]
fn concurrency_delay_runs_one_at_a_time() {
    let d = Dir::new();
    pack(&d, "name: one\nresource_ref: pol.slow\npolicy_type: action.concurrency\nparameters: {threshold: 1}\n");
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (x, y) = (run_async(&a, "pol.slow"), run_async(&a, "pol.slow"));
    let (ex, ey) = (finished(&a, &x), finished(&a, &y));
    assert_eq!(ex["status"], "succeeded");
    assert_eq!(ey["status"], "succeeded");
    let log: Vec<String> =
        ey["log"].as_array().unwrap().iter().map(|l| l["status"].as_str().unwrap().to_string()).collect();
    assert!(log.contains(&"delayed".to_string()), "{log:?}");
    assert!(ey["started_at"].as_str().unwrap() >= ex["finished_at"].as_str().unwrap(), "{ex}\n{ey}");
}

#[test]
fn concurrency_cancel_refuses_the_second() {
    let d = Dir::new();
    pack(
        &d,
        "name: one\nresource_ref: pol.slow\npolicy_type: action.concurrency\nparameters: {threshold: 1, action: cancel}\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (x, y) = (run_async(&a, "pol.slow"), run_async(&a, "pol.slow"));
    assert_eq!(finished(&a, &x)["status"], "succeeded");
    let ey = finished(&a, &y);
    assert_eq!(ey["status"], "canceled");
    assert!(ey["error"].as_str().unwrap().contains("policy pol.one"), "{ey}");
}

#[test]
fn retry_on_failure_makes_new_executions() {
    let d = Dir::new();
    pack(
        &d,
        "name: again\nresource_ref: pol.flaky\npolicy_type: action.retry\nparameters: {retry_on: failure, max_retry_count: 2, delay: 0}\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let o = a.cli(&["run", "pol.flaky"]);
    assert_eq!(o.status.code(), Some(1));
    let all = wait_for(Duration::from_secs(15), || {
        let l = a.json(&["execution", "list", "--action", "pol.flaky", "--json"]);
        let l = l.as_array()?.clone();
        (l.len() == 3 && l.iter().all(|e| e["status"] == "failed")).then_some(l)
    });
    assert!(all.is_some(), "{}", a.log_text());
    std::thread::sleep(Duration::from_millis(500));
    let l = a.json(&["execution", "list", "--action", "pol.flaky", "--json"]);
    assert_eq!(l.as_array().unwrap().len(), 3, "no more than max_retry_count retries");
    let newest = get(&a, &l[0]["id"].to_string());
    assert_eq!(newest["context"]["policies"]["retry"]["retry_count"], 2);
}
