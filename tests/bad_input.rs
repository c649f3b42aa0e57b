//! Hostile and broken packs: each gives a clear diagnostic quickly, and never a crash.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MANIFEST: &str = "name: bad\ndescription: d\nversion: 1.0.0\nauthor: me\n";

/// Validate `dir`, expect exit 1 (an error was found) within a second, and return stdout.
fn validate_fails(dir: &Dir) -> String {
    let t = Instant::now();
    let out = run(&["pack", "validate", &dir.s("bad")]);
    let elapsed = t.elapsed();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "stdout: {text}\nstderr: {}", stderr(&out));
    assert!(
        elapsed < Duration::from_secs(1) || std::env::vars().any(|(k, _)| k.ends_with("_RUNNER")),
        "took {elapsed:?}"
    );
    text
}

fn pack_with(file: &str, contents: &[u8]) -> Dir {
    let d = Dir::new();
    d.write("bad/pack.yaml", MANIFEST);
    d.write(&format!("bad/{file}"), contents);
    d
}

#[test]
fn billion_laughs() {
    let mut s = String::from(
        "name: x\nrunner_type: noop\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        s.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 9].join(",")));
    }
    let out = validate_fails(&pack_with("actions/laughs.yaml", s.as_bytes()));
    assert!(out.contains("actions/laughs.yaml") && out.contains("invalid YAML"), "{out}");
    assert!(out.to_lowercase().contains("budget") || out.contains("alias"), "{out}");
}

#[test]
fn deeply_nested_list() {
    let deep = "- ".repeat(100_000) + "x\n";
    let out = validate_fails(&pack_with("actions/deep.yaml", deep.as_bytes()));
    assert!(out.contains("actions/deep.yaml") && out.contains("invalid YAML"), "{out}");
    assert!(out.contains("Depth") || out.contains("depth"), "{out}");
}

#[test]
fn file_over_the_size_cap() {
    let mut big = b"name: big\nrunner_type: noop\ndescription: \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    big.extend(b"\"\n");
    let out = validate_fails(&pack_with("actions/big.yaml", &big));
    assert!(out.contains("actions/big.yaml") && out.contains("over the 1048576-byte limit"), "{out}");
}

#[test]
fn symlink_out_of_the_pack() {
    let d = Dir::new();
    d.write("bad/pack.yaml", MANIFEST);
    d.write("outside/secret.yaml", "name: stolen\nrunner_type: noop\n");
    std::fs::create_dir_all(d.join("bad/actions")).unwrap();
    std::os::unix::fs::symlink(d.join("outside/secret.yaml"), d.join("bad/actions/link.yaml")).unwrap();
    let out = validate_fails(&d);
    assert!(out.contains("actions/link.yaml") && out.contains("outside the pack"), "{out}");
}

#[test]
fn entry_point_escaping_the_pack() {
    let out = validate_fails(&pack_with(
        "actions/esc.yaml",
        b"name: esc\nrunner_type: local-shell-script\nentry_point: ../../bin/sh\n",
    ));
    assert!(out.contains("actions/esc.yaml:3:1: error: entry_point:"), "{out}");
    assert!(out.contains("outside the pack directory") || out.contains("leaves the pack"), "{out}");
}

#[test]
fn non_utf8_file() {
    let out = validate_fails(&pack_with("actions/latin1.yaml", b"name: caf\xe9\nrunner_type: noop\n"));
    assert!(out.contains("actions/latin1.yaml") && out.contains("not valid UTF-8"), "{out}");
}

#[test]
fn duplicate_action_name() {
    let d = pack_with("actions/one.yaml", b"name: same\nrunner_type: noop\n");
    d.write("bad/actions/two.yaml", "name: same\nrunner_type: noop\n");
    let out = validate_fails(&d);
    assert!(out.contains("actions/two.yaml:1:1: error: name: duplicate action \"bad.same\""), "{out}");
}

#[test]
fn one_bad_pack_does_not_stop_the_others() {
    let d = Dir::new();
    d.write("good/pack.yaml", "name: good\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write("good/actions/a.yaml", "name: a\nrunner_type: noop\n");
    d.write("worse/pack.yaml", "name: [unclosed\n");
    d.write("bad/pack.yaml", MANIFEST);
    d.write("bad/actions/ok.yaml", "name: ok\nrunner_type: noop\n");
    d.write("bad/actions/broken.yaml", "name: broken\nrunner_type: no-such-runner\n");
    let out = run(&["pack", "list", "--json", "--packs", &d.s("")]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let by: std::collections::HashMap<String, &serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["dir"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), p))
        .collect();
    assert_eq!(by["good"]["counts"]["actions"], 1);
    assert_eq!(by["bad"]["counts"]["actions"], 1, "the good file of a pack with a bad file loads");
    assert_eq!(by["bad"]["errors"], 1);
    assert_eq!(by["worse"]["loaded"], false);
    let out = run(&["pack", "validate", &d.s("")]);
    let text = stdout(&out);
    assert!(text.contains("worse/pack.yaml:1:") && text.contains("invalid YAML"), "{text}");
    assert!(text.contains("runner_type: unknown runner \"no-such-runner\""), "{text}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["pack", "validate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_pack_reached_through_a_symlink_and_dot_dot_is_not_mistaken_for_an_escape() {
    let d = Dir::new();
    d.write("real/p/pack.yaml", "name: p\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write("real/p/actions/a.yaml", "name: a\nrunner_type: local-shell-script\nentry_point: a.sh\n");
    // The CI layout: a checkout `main/` and `shared/` beside it, here a symlink.
    std::fs::create_dir_all(d.join("main")).unwrap();
    std::os::unix::fs::symlink(d.join("real"), d.join("shared")).unwrap();
    let path = format!("{}/main/../shared/p", d.path().display());
    let out = run(&["pack", "validate", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
