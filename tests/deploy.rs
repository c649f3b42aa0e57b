//! Issue 7 acceptance (the parts that run natively): the agent's systemd notifications against
//! a real NOTIFY_SOCKET datagram socket, configuration errors before anything starts, and
//! journald-style log lines.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn recv_all(sock: &UnixDatagram, until: Duration, stop_when: impl Fn(&[String]) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + until;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !stop_when(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let d = Dir::new();
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port();
    let mut child = packd()
        .args([
            "--data",
            &d.s("var"),
            "serve",
            "--packs",
            &shipped_packs().to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let got = recv_all(&sock, Duration::from_secs(20), |g| {
        g.iter().any(|m| m.contains("READY=1")) && g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    assert!(got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "{got:?}");
    // READY=1 comes only when the endpoint answers.
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    // A child action never sees NOTIFY_SOCKET.
    let env = run(&["--data", &d.s("var"), "run", "--json", "core.local", "cmd=env"]);
    assert!(!stdout(&env).contains("NOTIFY_SOCKET"), "{}", stdout(&env));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let got = recv_all(&sock, Duration::from_secs(10), |g| g.iter().any(|m| m.contains("STOPPING=1")));
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn invalid_configuration_exits_2_before_anything_starts() {
    let d = Dir::new();
    d.write("etc/config.yaml", "listen: 127.0.0.1:9101\nlisen: typo\n");
    let o = run(&["--data", &d.s("var"), "serve", "--config", &d.s("etc/config.yaml")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("lisen"), "{}", stderr(&o));
    assert!(!d.join("var/packd.db").exists(), "nothing started");
    let o = run(&["--data", &d.s("var"), "serve", "--config", &d.s("etc/missing.yaml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.yaml"), "{}", stderr(&o));
    d.write("etc/bad.yaml", "max_concurrent_executions: lots\n");
    let o = run(&["--data", &d.s("var"), "serve", "--config", &d.s("etc/bad.yaml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("max_concurrent_executions"), "{}", stderr(&o));
}

#[test]
fn a_config_file_sets_the_options_and_flags_override_it() {
    let d = Dir::new();
    let port = free_port();
    d.write(
        "etc/config.yaml",
        format!(
            "packs: [{}]\nlisten: 127.0.0.1:{}\nlog_level: debug\nwebhook_token: from-file-token-0123456789\n",
            shipped_packs().display(),
            free_port()
        ),
    );
    let mut child = packd()
        .args([
            "--data",
            &d.s("var"),
            "serve",
            "--config",
            &d.s("etc/config.yaml"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(20), || healthy(port).then_some(()));
    if up.is_none() {
        let _ = child.kill();
    }
    assert!(up.is_some(), "the --listen flag overrides the file");
    // The file's token applies.
    let h = http(port, "POST", "/api/v1/webhooks/st2", &[("Content-Type", "application/json")], b"{}").0;
    assert_eq!(h, 401);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("DEBUG"), "log_level from the file: {log}");
    assert!(!log.contains("from-file-token"), "the token is never logged");
}

#[test]
fn journald_lines_have_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let d = Dir::new();
    let log = std::fs::File::create(d.join("stderr.log")).unwrap();
    let meta = log.metadata().unwrap();
    let port = free_port();
    let mut child = packd()
        .args([
            "--data",
            &d.s("var"),
            "serve",
            "--packs",
            &shipped_packs().to_string_lossy(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(20), || healthy(port).then_some(()));
    if up.is_none() {
        let _ = child.kill();
    }
    assert!(up.is_some(), "agent did not come up");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let text = std::fs::read_to_string(d.join("stderr.log")).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'), "not a journald line: {line}");
        assert!(!line.contains("T0") && !line.contains("Z INFO"), "timestamp in a journald line: {line}");
    }
    assert!(text.contains("<6>"), "{text}");
}
