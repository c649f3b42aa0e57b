//! One sensor process: the command line and environment built from a [`SensorSpec`], the spawn
//! into a new session with the parent-death signal, group signals, and exit detection without
//! reaping.
//!
//! It owns the OS side of one process and nothing else: it does not read the output (see
//! `supervise.rs`), decide about restarts or talk to the host.
//!
//! Why it is built this way:
//! * `std::process::Command` directly, not `smol::process`: the leader must stay an unreaped
//!   zombie until the last signal to its group has been sent (a reaped pid, and so the pgid, can
//!   be recycled for an unrelated process), and async-process would reap it on its own thread.
//!   Exit is detected from a pidfd (or `waitid(WNOWAIT)` polling on kernels before 5.3); the
//!   reap happens only in [`SensorProcess::reap`].
//! * `setsid` (in `pre_exec`): the sensor leads its own session and process group, so a stop
//!   reaches everything it started, and it has no controlling terminal of the agent.
//! * `PR_SET_PDEATHSIG(SIGKILL)`: no sensor outlives the agent, even after `kill -9`. It follows
//!   the forking *thread*, which is why spawning happens on the executor thread only. The parent
//!   may die between fork and prctl, so `getppid` is checked afterwards.
//! * The signal mask is reset: the agent may block signals for `async-signal`, and a child would
//!   inherit that mask and ignore SIGTERM.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use smol::{Async, Timer};

use super::{SensorKind, SensorSpec};

/// Poll period for exit detection when pidfds are unavailable (Linux < 5.3): 50 ms of extra
/// restart latency on such kernels, 20 cheap syscalls per second per sensor.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The wrapper that runs StackStorm sensors, inside the shim directory.
pub const SENSOR_WRAPPER: &str = "packd_sensor_wrapper.py";

/// What to execute for a sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Set over the inherited environment, in order.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// Written to stdin, which is then closed; `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

/// The command line, environment and stdin document of `spec` (see the module doc of `sensor`).
pub fn launch_for(spec: &SensorSpec) -> Launch {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PACKD_SOCKET".into(), spec.socket.clone().into_os_string()),
        ("PACKD_SENSOR_REF".into(), spec.ref_.clone().into()),
    ];
    let mut extra_pythonpath = Vec::new();
    let launch = match &spec.kind {
        SensorKind::St2Python { class_name, poll_interval } => {
            let mut args: Vec<OsString> = vec![
                "-u".into(),
                spec.shim_dir.join(SENSOR_WRAPPER).into_os_string(),
                crate::runner::script::os_concat("--pack=", spec.pack.as_ref()),
                crate::runner::script::os_concat("--file-path=", spec.entry_point.as_os_str()),
                crate::runner::script::os_concat("--class-name=", class_name.as_ref()),
            ];
            if let Some(seconds) = poll_interval {
                args.push(format!("--poll-interval={seconds}").into());
            }
            let mut doc = Map::new();
            doc.insert("config".into(), spec.config.clone());
            doc.insert("triggers".into(), spec.triggers.clone());
            let mut stdin = Value::Object(doc).to_string().into_bytes();
            stdin.push(b'\n');
            for (key, value) in &spec.env {
                if key == "PYTHONPATH" {
                    extra_pythonpath.push(OsString::from(value));
                }
            }
            let mut pythonpath = vec![spec.shim_dir.clone().into_os_string()];
            pythonpath.append(&mut extra_pythonpath);
            if let Some(inherited) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
                pythonpath.push(inherited);
            }
            env.push(("PYTHONPATH".into(), crate::runner::script::join_paths(&pythonpath)));
            Launch {
                program: spec.python.clone(),
                args,
                env: Vec::new(),
                cwd: spec.pack_dir.clone(),
                stdin: Some(stdin),
            }
        }
        SensorKind::JsonLines { interpreter } => {
            env.push(("ATTUNE_SENSOR_REF".into(), spec.ref_.clone().into()));
            env.push(("ATTUNE_SENSOR_TRIGGERS".into(), spec.triggers.to_string().into()));
            env.push((
                "ATTUNE_SENSOR_TRIGGER_TYPES".into(),
                Value::from(spec.known_triggers.clone()).to_string().into(),
            ));
            env.push(("ATTUNE_SENSOR_CONFIG".into(), spec.config.to_string().into()));
            // Python sensors that print without flushing would otherwise deliver events only
            // when their 8 KiB buffer fills; other programs ignore the variable.
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            let (program, args) = match interpreter {
                Some(interpreter) => (interpreter.clone(), vec![spec.entry_point.clone().into_os_string()]),
                None => (spec.entry_point.clone(), Vec::new()),
            };
            Launch { program, args, env: Vec::new(), cwd: spec.pack_dir.clone(), stdin: None }
        }
    };
    let is_python = matches!(spec.kind, SensorKind::St2Python { .. });
    for (key, value) in &spec.env {
        if !(is_python && key == "PYTHONPATH") {
            env.push((key.into(), value.into()));
        }
    }
    Launch { env, ..launch }
}

/// A spawned sensor and its pipes (taken by the reader).
pub struct Spawned {
    pub process: SensorProcess,
    pub stdin: Option<Async<ChildStdin>>,
    pub stdout: Option<Async<ChildStdout>>,
    pub stderr: Option<Async<ChildStderr>>,
}

/// Spawn `launch` in a new session with the parent-death signal. Call on the executor thread.
pub fn spawn(launch: &Launch) -> io::Result<Spawned> {
    let mut cmd = std::process::Command::new(&launch.program);
    cmd.args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(if launch.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (setsid, prctl, getppid, sigprocmask); it allocates nothing
    // and takes no lock (nix's Errno → io::Error conversion is a plain integer wrap).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                // The agent died before prctl: nobody would ever stop this sensor.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            SigSet::empty().thread_set_mask()?;
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = pid_of(child.id());
    let stdin = child.stdin.take().and_then(|p| Async::new(p).ok());
    let stdout = child.stdout.take().and_then(|p| Async::new(p).ok());
    let stderr = child.stderr.take().and_then(|p| Async::new(p).ok());
    let pidfd = pidfd_open(pid).and_then(|fd| Async::new(fd).ok());
    Ok(Spawned { process: SensorProcess { child, pid, pidfd, reaped: false }, stdin, stdout, stderr })
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A running (or exited, unreaped) sensor process. Dropped unreaped, it SIGKILLs its group and
/// reaps the leader, so an abandoned supervision task leaves nothing behind.
pub struct SensorProcess {
    child: Child,
    pid: Pid,
    pidfd: Option<Async<OwnedFd>>,
    reaped: bool,
}

impl SensorProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Signal the whole group. Only valid before [`SensorProcess::reap`], which is why it is
    /// here: while the leader is unreaped its pid (the pgid) cannot belong to anyone else.
    pub fn signal_group(&self, signal: Signal) {
        if !self.reaped {
            // ESRCH: the group is already empty; EPERM: a member changed credentials. Neither
            // leaves anything to do.
            let _ = killpg(self.pid, signal);
        }
    }

    /// Resolves once the leader has exited; does not reap it.
    pub async fn exited(&self) {
        if let Some(fd) = &self.pidfd {
            // A pidfd becomes readable when the process exits (zombie included).
            if fd.readable().await.is_ok() {
                return;
            }
        }
        while !exited_unreaped(self.pid) {
            Timer::after(EXIT_POLL_INTERVAL).await;
        }
    }

    /// Reap the leader (call after [`SensorProcess::exited`]).
    pub async fn reap(&mut self) -> io::Result<Exit> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(Exit { code: status.code(), signal: status.signal() });
            }
            Timer::after(EXIT_POLL_INTERVAL).await;
        }
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal_group(Signal::SIGKILL);
            // A SIGKILLed process exits at once; this wait is the reap, not a real block.
            let _ = self.child.wait();
        }
    }
}

fn exited_unreaped(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => false,
        // Exited, or gone (ECHILD): either way nothing is left to wait for.
        Ok(_) | Err(_) => true,
    }
}

fn pid_of(pid: u32) -> Pid {
    // Linux pids fit in i32 (pid_max ≤ 2^22); saturate rather than wrap just in case.
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (O_CLOEXEC) or -1; no memory
    // is passed. ENOSYS on kernels before 5.3 → None → polling fallback.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = RawFd::try_from(ret).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;
    use std::path::Path;

    fn spec(kind: SensorKind) -> SensorSpec {
        SensorSpec {
            ref_: "hello_st2.HelloSensor".into(),
            pack: "hello_st2".into(),
            kind,
            entry_point: "/packs/hello_st2/sensors/sensor1.py".into(),
            pack_dir: "/packs/hello_st2".into(),
            config: json!({"token": "t"}),
            triggers: json!([{"ref": "hello_st2.event1", "parameters": {}}]),
            known_triggers: vec!["hello_st2.event1".into()],
            env: vec![("PYTHONPATH".into(), "/venv/site".into()), ("X".into(), "y".into())],
            python: "/venv/bin/python".into(),
            shim_dir: "/state/python".into(),
            socket: "/run/packd.sock".into(),
        }
    }

    fn render(launch: &Launch) -> String {
        let env: Vec<String> =
            launch.env.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
        format!(
            "{} {:?}\ncwd {}\nenv {env:#?}\nstdin {:?}",
            launch.program.display(),
            launch.args,
            launch.cwd.display(),
            launch.stdin.as_ref().map(|s| String::from_utf8_lossy(s).into_owned())
        )
    }

    #[test]
    fn st2_python_launch() {
        let launch =
            launch_for(&spec(SensorKind::St2Python { class_name: "HelloSensor".into(), poll_interval: Some(30.0) }));
        let inherited = std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty());
        let mut text = render(&launch);
        if let Some(inherited) = inherited {
            text = text.replace(&format!(":{inherited}"), "");
        }
        expect![[r#"
            /venv/bin/python ["-u", "/state/python/packd_sensor_wrapper.py", "--pack=hello_st2", "--file-path=/packs/hello_st2/sensors/sensor1.py", "--class-name=HelloSensor", "--poll-interval=30"]
            cwd /packs/hello_st2
            env [
                "PACKD_SOCKET=/run/packd.sock",
                "PACKD_SENSOR_REF=hello_st2.HelloSensor",
                "PYTHONPATH=/state/python:/venv/site",
                "X=y",
            ]
            stdin Some("{\"config\":{\"token\":\"t\"},\"triggers\":[{\"ref\":\"hello_st2.event1\",\"parameters\":{}}]}\n")"#]]
        .assert_eq(&text);
        let fractional = launch_for(&spec(SensorKind::St2Python { class_name: "C".into(), poll_interval: Some(0.25) }));
        assert!(fractional.args.contains(&"--poll-interval=0.25".into()));
        let none = launch_for(&spec(SensorKind::St2Python { class_name: "C".into(), poll_interval: None }));
        assert!(!none.args.iter().any(|a| a.to_string_lossy().starts_with("--poll")));
    }

    #[test]
    fn json_lines_launch() {
        let launch = launch_for(&spec(SensorKind::JsonLines { interpreter: None }));
        expect![[r#"
            /packs/hello_st2/sensors/sensor1.py []
            cwd /packs/hello_st2
            env [
                "PACKD_SOCKET=/run/packd.sock",
                "PACKD_SENSOR_REF=hello_st2.HelloSensor",
                "ATTUNE_SENSOR_REF=hello_st2.HelloSensor",
                "ATTUNE_SENSOR_TRIGGERS=[{\"ref\":\"hello_st2.event1\",\"parameters\":{}}]",
                "ATTUNE_SENSOR_TRIGGER_TYPES=[\"hello_st2.event1\"]",
                "ATTUNE_SENSOR_CONFIG={\"token\":\"t\"}",
                "PYTHONUNBUFFERED=1",
                "PYTHONPATH=/venv/site",
                "X=y",
            ]
            stdin None"#]]
        .assert_eq(&render(&launch));
        let launch = launch_for(&spec(SensorKind::JsonLines { interpreter: Some("/usr/bin/python3".into()) }));
        assert_eq!(launch.program, Path::new("/usr/bin/python3"));
        assert_eq!(launch.args, vec![OsString::from("/packs/hello_st2/sensors/sensor1.py")]);
    }
}
