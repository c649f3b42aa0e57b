//! Issue 6 acceptance: the running agent follows pack changes on disk, keeps the last good
//! version of a pack that breaks, and never loses or doubles a timer fire it did not touch.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const MANIFEST: &str = "name: live\ndescription: d\nversion: 1.0.0\nauthor: me\n";

fn hook_rule(env: &str, out: &std::path::Path) -> String {
    format!(
        "name: hook\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters: {{url: live}}\ncriteria:\n  trigger.body.env:\n    type: equals\n    pattern: {env}\naction:\n  ref: core.local\n  parameters:\n    cmd: \"echo {{{{ trigger.body.n }}}} >> {}\"\n",
        out.display()
    )
}

/// POST until the marker `n` shows up in `out` (the new rule is active) or time runs out.
fn fires(a: &Agent, env: &str, n: u32, out: &std::path::Path) -> bool {
    wait_for(Duration::from_secs(8), || {
        let (code, _, _) = post_json(a.port, "live", &format!("{{\"env\": \"{env}\", \"n\": {n}}}"));
        if code != 202 {
            return None;
        }
        std::thread::sleep(Duration::from_millis(150));
        std::fs::read_to_string(out).ok().filter(|t| t.lines().any(|l| l == n.to_string())).map(|_| ())
    })
    .is_some()
}

fn setup(d: &Dir) -> (Agent, std::path::PathBuf) {
    let out = d.join("out.txt");
    d.write("packs/live/pack.yaml", MANIFEST);
    d.write("packs/live/rules/hook.yaml", hook_rule("prod", &out));
    let a = Agent::start(d, &[&shipped_packs(), &d.join("packs")], &[]);
    (a, out)
}

#[test]
fn edit_in_place_and_by_rename() {
    let d = Dir::new();
    let (a, out) = setup(&d);
    assert!(fires(&a, "prod", 1, &out), "{}", a.log_text());
    // In place.
    std::fs::write(d.join("packs/live/rules/hook.yaml"), hook_rule("dev", &out)).unwrap();
    assert!(fires(&a, "dev", 2, &out), "criteria edited in place: {}", a.log_text());
    // Write to a temporary file and rename over the rule (vim, sed -i).
    let tmp = d.join("packs/live/rules/.hook.yaml.tmp");
    std::fs::write(&tmp, hook_rule("stage", &out)).unwrap();
    std::fs::rename(&tmp, d.join("packs/live/rules/hook.yaml")).unwrap();
    assert!(fires(&a, "stage", 3, &out), "saved by rename: {}", a.log_text());
    // The old criteria no longer match.
    let before = std::fs::read_to_string(&out).unwrap();
    post_json(a.port, "live", "{\"env\": \"prod\", \"n\": 99}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);
    let packs = a.json(&["pack", "get", "live", "--json"]);
    assert!(!packs["reloads"].as_array().unwrap().is_empty(), "reloads are recorded: {packs}");
}

#[test]
fn new_pack_copied_in_and_a_pack_deleted() {
    let d = Dir::new();
    let (a, _) = setup(&d);
    let out = d.join("new.txt");
    // Build the pack elsewhere, then `mkdir -p` + `cp -r` it in.
    d.write("staging/fresh/pack.yaml", "name: fresh\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "staging/fresh/rules/r.yaml",
        format!("name: r\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters: {{url: fresh}}\naction:\n  ref: core.local\n  parameters:\n    cmd: \"echo new > {}\"\n", out.display()),
    );
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("mkdir -p {p}/sub && cp -r {s}/fresh {p}/", p = d.s("packs"), s = d.s("staging")))
        .status()
        .unwrap();
    assert!(st.success());
    let ok = wait_for(Duration::from_secs(8), || (post_json(a.port, "fresh", "{}").0 == 202).then_some(()));
    assert!(ok.is_some(), "new pack picked up: {}", a.log_text());
    assert!(wait_for(Duration::from_secs(5), || std::fs::read_to_string(&out).ok()).is_some());
    // Delete it: its webhook disappears.
    std::fs::remove_dir_all(d.join("packs/fresh")).unwrap();
    let gone = wait_for(Duration::from_secs(8), || (post_json(a.port, "fresh", "{}").0 == 404).then_some(()));
    assert!(gone.is_some(), "removed pack stops matching: {}", a.log_text());
    let list = a.json(&["pack", "list", "--json"]);
    assert!(!list.as_array().unwrap().iter().any(|p| p["ref"] == "fresh"), "{list}");
}

#[test]
fn broken_pack_keeps_its_last_good_version_until_fixed() {
    let d = Dir::new();
    let (a, out) = setup(&d);
    assert!(fires(&a, "prod", 1, &out));
    let rule = d.join("packs/live/rules/hook.yaml");
    std::fs::write(&rule, "name: hook\nenabled: [unclosed\n").unwrap();
    let stale = wait_for(Duration::from_secs(8), || {
        let list = a.json(&["pack", "list", "--json"]);
        let p = list.as_array()?.iter().find(|p| p["ref"] == "live")?.clone();
        (p["status"] == "stale").then_some(p)
    })
    .unwrap_or_else(|| panic!("stale status: {}", a.log_text()));
    assert!(stale["error"].as_str().unwrap().contains("hook.yaml"), "{stale}");
    let table = stdout(&a.cli(&["pack", "list"]));
    assert!(table.contains("stale"), "{table}");
    // The last good version still runs.
    assert!(fires(&a, "prod", 2, &out));
    let (_, _, metrics) = http(a.port, "GET", "/metrics", &[], b"");
    assert!(metrics.lines().any(|l| l.starts_with("packd_reload_failures_total") && !l.ends_with(" 0")), "{metrics}");
    // Fix it.
    std::fs::write(&rule, hook_rule("dev", &out)).unwrap();
    assert!(fires(&a, "dev", 3, &out), "{}", a.log_text());
    let list = a.json(&["pack", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().iter().find(|p| p["ref"] == "live").unwrap()["status"], "loaded");
}

fn timer_count(a: &Agent, rule_action_marker: &str) -> usize {
    a.json(&["execution", "list", "-n", "1000", "--json"])
        .as_array()
        .map(|l| l.iter().filter(|e| e["action"] == rule_action_marker).count())
        .unwrap_or(0)
}

#[test]
fn schedule_change_takes_effect_and_untouched_timers_keep_their_rhythm() {
    let d = Dir::new();
    d.write("packs/live/pack.yaml", MANIFEST);
    // A slow timer whose schedule we will change.
    d.write(
        "packs/live/rules/slow.yaml",
        "name: slow\nenabled: true\ntrigger:\n  type: core.st2.IntervalTimer\n  parameters: {unit: minutes, delta: 10}\naction:\n  ref: core.noop\n",
    );
    // A steady timer in another pack that reloads must not disturb.
    d.write("packs/steady/pack.yaml", "name: steady\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/steady/rules/tick.yaml",
        "name: tick\nenabled: true\ntrigger:\n  type: core.st2.IntervalTimer\n  parameters: {unit: seconds, delta: 1}\naction:\n  ref: core.echo\n  parameters: {message: \"{{ trigger.executed_at }}\"}\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let start = std::time::Instant::now();
    // Change the slow timer to every second, several times, while the steady one runs.
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(600));
        d.write(
            "packs/live/rules/slow.yaml",
            format!("name: slow\nenabled: true\ndescription: edit {i}\ntrigger:\n  type: core.st2.IntervalTimer\n  parameters: {{unit: seconds, delta: 1}}\naction:\n  ref: core.noop\n"),
        );
    }
    let noop = wait_for(Duration::from_secs(8), || (timer_count(&a, "core.noop") >= 1).then_some(()));
    assert!(noop.is_some(), "changed schedule fires: {}", a.log_text());
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = start.elapsed().as_secs_f64();
    let list = a.json(&["execution", "list", "-n", "1000", "--json"]);
    let ticks: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "core.echo")
        .map(|e| {
            a.json(&["execution", "get", &e["id"].to_string(), "--json"])["result"]["stdout"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a steady timer fired twice for one schedule: {ticks:?}");
    // One fire per second since start (the first one second after load), give or take one.
    let expected = elapsed.floor() as i64;
    assert!((ticks.len() as i64 - expected).abs() <= 1, "{} fires in {elapsed:.1}s: {ticks:?}", ticks.len());
    let v: Value = a.json(&["rule", "get", "live.slow", "--json"]);
    assert_eq!(v["trigger"]["parameters"]["unit"], "seconds");
}

#[test]
fn sighup_and_pack_reload_force_a_rescan_without_a_watcher() {
    let d = Dir::new();
    let out = d.join("out.txt");
    d.write("packs/live/pack.yaml", MANIFEST);
    d.write("packs/live/rules/hook.yaml", hook_rule("prod", &out));
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &["--watch", "off"]);
    std::fs::write(d.join("packs/live/rules/hook.yaml"), hook_rule("dev", &out)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let o = a.cli(&["pack", "reload", "live"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("changed: live"), "{}", stdout(&o));
    assert!(fires(&a, "dev", 1, &out));
    std::fs::write(d.join("packs/live/rules/hook.yaml"), hook_rule("stage", &out)).unwrap();
    unsafe { libc::kill(a.pid() as i32, libc::SIGHUP) };
    assert!(fires(&a, "stage", 2, &out), "SIGHUP rescans: {}", a.log_text());
}

#[test]
fn changing_a_sensor_script_restarts_only_that_sensor() {
    let d = Dir::new();
    let out = d.join("out.txt");
    for (p, v) in [("a", "one"), ("b", "two")] {
        d.write(&format!("packs/{p}/pack.yaml"), format!("ref: {p}\nlabel: {p}\nversion: 1.0.0\n"));
        d.write(&format!("packs/{p}/triggers/t.yaml"), format!("ref: {p}.t\n"));
        d.write(&format!("packs/{p}/sensors/s.yaml"), format!("ref: {p}.s\nentry_point: s.sh\ntrigger_types: [t]\n"));
        d.write(
            &format!("packs/{p}/sensors/s.sh"),
            format!("#!/bin/sh\necho '{{\"trigger\": \"{p}.t\", \"payload\": {{\"v\": \"{v}\"}}}}'\nexec sleep 600\n"),
        );
        d.write(
            &format!("packs/{p}/rules/r.yaml"),
            format!("ref: {p}.r\ntrigger_ref: t\naction_ref: core.local\naction_params: {{cmd: \"echo {{{{ event.payload.v }}}} >> {}\"}}\n", out.display()),
        );
    }
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let pid = |r: &str| a.json(&["sensor", "get", r, "--json"])["pid"].as_i64();
    let started = wait_for(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&out).ok()?;
        (t.contains("one") && t.contains("two")).then_some(())
    });
    assert!(started.is_some(), "{}", a.log_text());
    let (pa, pb) = (pid("a.s"), pid("b.s"));
    d.write(
        "packs/a/sensors/s.sh",
        "#!/bin/sh\necho '{\"trigger\": \"a.t\", \"payload\": {\"v\": \"three\"}}'\nexec sleep 600\n",
    );
    let changed =
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&out).ok().filter(|t| t.contains("three")));
    assert!(changed.is_some(), "changed sensor restarted: {}", a.log_text());
    assert_ne!(pid("a.s"), pa);
    assert_eq!(pid("b.s"), pb, "the other pack's sensor was not touched");
}
