//! Shared helpers for integration tests: run the real `packd` binary against fixture
//! directories made in temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test. When a cross test run sets `CARGO_TARGET_<TRIPLE>_RUNNER` (qemu),
/// the binary is started through that runner, since there is no binfmt on the build machine.
pub fn packd() -> Command {
    let bin = env!("CARGO_BIN_EXE_packd");
    let runner = std::env::vars()
        .find(|(k, v)| k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER") && !v.trim().is_empty())
        .map(|(_, v)| v);
    match runner {
        Some(r) => {
            let mut parts = r.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("qemu"));
            c.args(parts);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

pub fn run(args: &[&str]) -> Output {
    packd().args(args).output().expect("spawn packd")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temporary directory with helpers to write fixture files.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir { tmp: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn write(&self, p: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        path
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).to_string_lossy().into_owned()
    }
}

/// The StackStorm corpus shipped beside the project (or `$PACKD_CORPUS`).
pub fn corpus() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PACKD_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    p.is_dir().then_some(p)
}

/// A free loopback port (bound then released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The repository's shipped packs directory.
pub fn shipped_packs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packs")
}

/// A running `packd serve` in a temporary data directory; killed when dropped.
pub struct Agent {
    pub child: std::process::Child,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Agent {
    /// Start the agent with `packs` directories and extra arguments; wait until it answers.
    pub fn start(dir: &Dir, packs: &[&Path], extra: &[&str]) -> Agent {
        let data = dir.join("var");
        Agent::start_with_data(&data, packs, extra, free_port())
    }

    pub fn start_with_data(data: &Path, packs: &[&Path], extra: &[&str], port: u16) -> Agent {
        std::fs::create_dir_all(data).unwrap();
        let log = data.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = packd();
        cmd.arg("--data").arg(data).arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}"));
        for p in packs {
            cmd.arg("--packs").arg(p);
        }
        cmd.args(extra);
        cmd.stdout(logf.try_clone().unwrap()).stderr(logf);
        let child = cmd.spawn().expect("start agent");
        let mut a = Agent { child, data: data.to_path_buf(), port, log };
        a.wait_ready();
        a
    }

    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early with {status}: {}", self.log_text());
            }
            let o = self.cli(&["execution", "list", "--json"]);
            if o.status.success() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "agent not ready: {}", self.log_text());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Run a CLI command against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        packd().arg("--data").arg(&self.data).args(args).output().expect("run cli")
    }

    /// Run a CLI command that prints JSON and parse it (panics with the output otherwise).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.cli(args);
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: {e}\nstdout: {}\nstderr: {}", stdout(&o), stderr(&o)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no cleanup: for crash tests.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.1 client over a real loopback socket: returns (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Whether the endpoint on `port` answers `GET /health` with 200 (false while it is not up).
pub fn healthy(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/health", &[], b"").0 == 200
}

pub fn post_json(port: u16, hook: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    http(port, "POST", &format!("/api/v1/webhooks/{hook}"), &[("Content-Type", "application/json")], body.as_bytes())
}

/// Threads of a process, from /proc.
pub fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Threads:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
