//! Run one child process to completion on smol: its own process group, optional stdin, capped
//! stdout/stderr, a timeout and a cancel signal that both stop the *whole group*.
//!
//! It owns the life of one process group from spawn to reap and nothing else: it does not choose
//! what to run (the dialect modules build a [`ProcessSpec`]), does not interpret output (see
//! `st2.rs`/`attune.rs`) and never blocks the executor thread.
//!
//! How a run ends, and why it is built this way:
//!
//! * The child is spawned with `process_group(0)` and no `pre_exec`, so std keeps its
//!   `posix_spawn` fast path. Its pid is then also the process group id (pgid).
//! * We learn that the leader exited from a pidfd (or, on kernels before 5.3, by polling
//!   `waitid(WNOWAIT)`), **without reaping it**. While the leader is an unreaped zombie its pid, and
//!   so the pgid, cannot be handed to a new process; every `killpg` we send happens in that window.
//!   Only at the very end is the leader reaped. (pid_max is 32768 on many systems and packd spawns
//!   fast, so a recycled pgid is a real risk: the next action could be the one killed.)
//! * Timeout or cancel: SIGTERM to the group, wait [`ProcessSpec::kill_grace`], then SIGKILL to the
//!   group. When the leader exits after a timeout or cancel, the group gets a final SIGKILL so that
//!   nothing of a stopped execution survives it.
//! * Normal exit: stdout/stderr are drained for at most [`ProcessSpec::exit_drain`]. Background
//!   processes that closed (or redirected) their output are left alone — actions that start a
//!   daemon are legitimate, and StackStorm leaves them running too. A leftover that still holds our
//!   pipes when the drain ends would otherwise hang the execution (StackStorm waits for it until
//!   the timeout); it is SIGKILLed with the group and the outcome says so (`lingering_killed`).
//!   A holder outside our group (it called `setsid`) is not killed; we only close our ends.
//! * If the future returned by [`run`] is dropped before it finishes, the group is SIGKILLed.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::pin::pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use smol::future::{self, FutureExt};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

/// Bytes kept per stream when the caller does not say otherwise. packd targets devices with a few
/// MiB of memory and stores output in SQLite; 1 MiB per stream covers real pack output (st2 packs
/// print results, not logs) while bounding `2 × cap × concurrent executions`.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;

/// Appended to a stream that was cut at its cap, so a reader sees the cut.
pub const TRUNCATION_MARKER: &str = "\n[packd: output truncated]";

/// Time between SIGTERM and SIGKILL on timeout/cancel: StackStorm's sensor container and most
/// supervisors (systemd's default is 90 s, st2's `PROCESS_EXIT_TIMEOUT` is 5 s) give a process a
/// few seconds to clean up; 5 s keeps a stuck execution's slot short.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still read after the leader exited. A well-behaved child closes its pipes
/// when it exits; anything still writing after this is a leftover background process, and an
/// execution must not wait for it until its timeout.
pub const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// Read buffer per stream. Pipes hold 64 KiB; 16 KiB reads keep the per-execution footprint small
/// at a negligible syscall cost.
const READ_CHUNK: usize = 16 * 1024;

/// Poll period for leader exit when pidfds are unavailable (Linux < 5.3). 20 ms adds at most that
/// much latency to such old kernels and costs ~50 cheap syscalls per second per running action.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What to run. Build with [`ProcessSpec::new`] and set the fields you need.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Set on top of the inherited environment (after `env_remove`).
    pub env: Vec<(OsString, OsString)>,
    /// Inherited variables to drop.
    pub env_remove: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// Written to the child's stdin, which is then closed. `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Bytes kept per stream (stdout and stderr each).
    pub output_cap: usize,
    /// SIGTERM → SIGKILL delay on timeout/cancel; [`KILL_GRACE`] by default.
    pub kill_grace: Duration,
    /// Output drain bound after the leader exited; [`EXIT_DRAIN`] by default.
    pub exit_drain: Duration,
}

impl ProcessSpec {
    /// A spec with no arguments, no stdin, a 60 s timeout (StackStorm's shell runner default),
    /// [`DEFAULT_OUTPUT_CAP`], [`KILL_GRACE`] and [`EXIT_DRAIN`].
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: Duration::from_secs(60),
            output_cap: DEFAULT_OUTPUT_CAP,
            kill_grace: KILL_GRACE,
            exit_drain: EXIT_DRAIN,
        }
    }
}

/// How a run ended. `exit_code` and `signal` describe the leader (one of them is set).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOutcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub canceled: bool,
    /// Lossy UTF-8; ends with [`TRUNCATION_MARKER`] when `stdout_truncated`.
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Something in the group still held stdout/stderr [`ProcessSpec::exit_drain`] after the
    /// leader exited, and the group was SIGKILLed.
    pub lingering_killed: bool,
    pub pid: u32,
    pub duration: Duration,
}

#[cfg(test)]
impl ProcessOutcome {
    /// A plain exit with this output, for tests of result parsing.
    pub fn finished(exit_code: Option<i32>, stdout: &str, stderr: &str) -> ProcessOutcome {
        ProcessOutcome {
            exit_code,
            signal: None,
            timed_out: false,
            canceled: false,
            stdout: stdout.into(),
            stderr: stderr.into(),
            stdout_truncated: false,
            stderr_truncated: false,
            lingering_killed: false,
            pid: 1,
            duration: Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {}{}: {source}", .program.display(), cwd_note(.cwd))]
    Start { program: PathBuf, cwd: Option<PathBuf>, source: io::Error },
    #[error("lost track of process {pid} ({}): {source}", .program.display())]
    Wait { program: PathBuf, pid: u32, source: io::Error },
}

fn cwd_note(cwd: &Option<PathBuf>) -> String {
    match cwd {
        Some(dir) => format!(" in {}", dir.display()),
        None => String::new(),
    }
}

/// Run `spec` to completion. A message on `cancel` (or nothing, if it is `None`) stops the
/// process group like a timeout does; a closed cancel channel just means "no cancel".
///
/// Errors only when the process cannot be started (or, never seen in practice, cannot be
/// reaped); everything the process itself does is in the [`ProcessOutcome`].
pub async fn run(spec: ProcessSpec, cancel: Option<smol::channel::Receiver<()>>) -> Result<ProcessOutcome, SpawnError> {
    let start = Instant::now();
    let mut std_cmd = std::process::Command::new(&spec.program);
    std_cmd.args(&spec.args);
    for key in &spec.env_remove {
        std_cmd.env_remove(key);
    }
    for (key, value) in &spec.env {
        std_cmd.env(key, value);
    }
    if let Some(dir) = &spec.cwd {
        std_cmd.current_dir(dir);
    }
    std_cmd.process_group(0);
    let mut cmd = smol::process::Command::from(std_cmd);
    // Stdio must be configured on the async Command: its `From<std::process::Command>` marks all
    // three as unset and `spawn` then forces unset ones to `inherit`.
    cmd.stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
        program: spec.program.clone(),
        cwd: spec.cwd.clone(),
        source,
    })?;
    let pid = child.id();
    // Declared after `child` so it drops first: the kill reaches the group before async-process
    // gets the chance to reap the leader.
    let mut guard = GroupGuard { pgid: pid_of(pid), armed: true };

    let exit_watch = ExitWatch::new(pid);
    let mut out = Capture::new(spec.output_cap);
    let mut err = Capture::new(spec.output_cap);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = spec.stdin;

    let mut timed_out = false;
    let mut canceled = false;
    let mut lingering_killed = false;
    {
        let io = future::zip(future::zip(pump(stdout, &mut out), pump(stderr, &mut err)), feed(stdin, input));
        let mut io = pin!(io);
        let mut io_done = false;
        let mut leader_exited = false;
        let mut cancel = cancel;
        let deadline = start.checked_add(spec.timeout);
        let mut phase = Phase::Running;

        while !(io_done && leader_exited) {
            let wake_at = match phase {
                Phase::Running => deadline,
                Phase::Terminating { kill_at } => kill_at,
                Phase::Killed => None,
                Phase::Draining { until } => until,
            };
            let cancel_rx = match phase {
                Phase::Running => cancel.as_ref(),
                _ => None,
            };
            let event = async {
                if io_done {
                    future::pending().await
                } else {
                    io.as_mut().await;
                    Event::IoDone
                }
            }
            .or(async {
                if leader_exited {
                    future::pending().await
                } else {
                    exit_watch.wait().await;
                    Event::LeaderExited
                }
            })
            .or(async {
                match wake_at {
                    Some(at) => {
                        Timer::at(at).await;
                        Event::Timer
                    }
                    None => future::pending().await,
                }
            })
            .or(async {
                match cancel_rx {
                    Some(rx) => match rx.recv().await {
                        Ok(()) => Event::Cancel,
                        Err(_) => Event::CancelClosed,
                    },
                    None => future::pending().await,
                }
            })
            .await;

            match event {
                Event::IoDone => io_done = true,
                Event::LeaderExited => {
                    leader_exited = true;
                    if timed_out || canceled {
                        // The leader is an unreaped zombie, so the pgid is still ours.
                        signal_group(guard.pgid, Signal::SIGKILL);
                    }
                    phase = Phase::Draining { until: Instant::now().checked_add(spec.exit_drain) };
                }
                Event::Timer => match phase {
                    Phase::Running => {
                        timed_out = true;
                        phase = terminate(guard.pgid, spec.kill_grace);
                    }
                    Phase::Terminating { .. } => {
                        signal_group(guard.pgid, Signal::SIGKILL);
                        phase = Phase::Killed;
                    }
                    Phase::Draining { .. } => {
                        // Leader exited (zombie, pgid still ours) but something keeps our pipes.
                        signal_group(guard.pgid, Signal::SIGKILL);
                        lingering_killed = !(timed_out || canceled);
                        break;
                    }
                    Phase::Killed => {}
                },
                Event::Cancel => {
                    canceled = true;
                    phase = terminate(guard.pgid, spec.kill_grace);
                }
                Event::CancelClosed => cancel = None,
            }
        }
    }
    // The io future (and with it our pipe ends) is gone; now, and only now, reap the leader.
    let status =
        child.status().await.map_err(|source| SpawnError::Wait { program: spec.program.clone(), pid, source })?;
    guard.armed = false;

    Ok(ProcessOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        canceled,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        stdout: out.into_string(),
        stderr: err.into_string(),
        lingering_killed,
        pid,
        duration: start.elapsed(),
    })
}

enum Event {
    IoDone,
    LeaderExited,
    Timer,
    Cancel,
    CancelClosed,
}

#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for the leader; the deadline applies.
    Running,
    /// SIGTERM sent; SIGKILL at `kill_at` (`None`: a grace too long to represent).
    Terminating { kill_at: Option<Instant> },
    /// SIGKILL sent; waiting for the leader to die.
    Killed,
    /// Leader exited; reading what is left of the output until `until`.
    Draining { until: Option<Instant> },
}

fn terminate(pgid: Pid, grace: Duration) -> Phase {
    if grace.is_zero() {
        signal_group(pgid, Signal::SIGKILL);
        return Phase::Killed;
    }
    signal_group(pgid, Signal::SIGTERM);
    Phase::Terminating { kill_at: Instant::now().checked_add(grace) }
}

fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH (group already empty) and EPERM (a member changed credentials) are both "nothing more
    // we can do"; the outcome is decided by the leader's exit status.
    let _ = killpg(pgid, signal);
}

fn pid_of(pid: u32) -> Pid {
    // Linux pids fit in i32 (pid_max ≤ 2^22); saturate rather than wrap just in case.
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// SIGKILLs the group if [`run`] is abandoned half-way (its future dropped).
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Tells when the leader has exited, without reaping it.
struct ExitWatch {
    pid: Pid,
    pidfd: Option<Async<OwnedFd>>,
}

impl ExitWatch {
    fn new(pid: u32) -> Self {
        let pid = pid_of(pid);
        ExitWatch { pid, pidfd: pidfd_open(pid).and_then(|fd| Async::new(fd).ok()) }
    }

    async fn wait(&self) {
        if let Some(fd) = &self.pidfd {
            // A pidfd becomes readable once the process has exited (zombie included).
            if fd.readable().await.is_ok() {
                return;
            }
        }
        while !exited_unreaped(self.pid) {
            Timer::after(EXIT_POLL_INTERVAL).await;
        }
    }
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (O_CLOEXEC) or -1; no memory
    // is passed. ENOSYS on kernels before 5.3 → None → polling fallback.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = RawFd::try_from(ret).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn exited_unreaped(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
        // Exited, or (ECHILD) no longer our child at all: either way it is not running.
        Ok(_) | Err(_) => true,
    }
}

/// One captured stream: keeps the first `cap` bytes, counts the rest away.
struct Capture {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Capture { buf: Vec::new(), cap, truncated: false }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        let (keep, rest) = chunk.split_at(room.min(chunk.len()));
        self.buf.extend_from_slice(keep);
        if !rest.is_empty() {
            self.truncated = true;
        }
    }

    fn into_string(self) -> String {
        let mut bytes = self.buf;
        if self.truncated {
            // Do not let the cut leave half a UTF-8 character (a U+FFFD) before the marker.
            if let Err(e) = std::str::from_utf8(&bytes)
                && e.error_len().is_none()
            {
                bytes.truncate(e.valid_up_to());
            }
        }
        let mut text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if self.truncated {
            text.push_str(TRUNCATION_MARKER);
        }
        text
    }
}

/// Read a stream to EOF into `capture`, discarding what exceeds the cap so the child never blocks
/// on a full pipe.
async fn pump<R: AsyncRead + Unpin>(stream: Option<R>, capture: &mut Capture) {
    let Some(mut stream) = stream else { return };
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => capture.push(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Write `data` to stdin and close it. A child that exits or closes stdin without reading it all
/// is normal (EPIPE); any write error just ends the feed.
async fn feed(stdin: Option<smol::process::ChildStdin>, data: Option<Vec<u8>>) {
    let (Some(mut stdin), Some(data)) = (stdin, data) else {
        return;
    };
    if stdin.write_all(&data).await.is_ok() {
        let _ = stdin.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;

    fn sh(script: &str) -> ProcessSpec {
        let mut spec = ProcessSpec::new("/bin/sh");
        spec.args = vec!["-c".into(), script.into()];
        spec.timeout = Duration::from_secs(10);
        spec
    }

    fn run_blocking(spec: ProcessSpec) -> ProcessOutcome {
        match smol::block_on(run(spec, None)) {
            Ok(outcome) => outcome,
            Err(e) => panic!("spawn failed: {e}"),
        }
    }

    /// True once `pid` is gone or a zombie (a zombie whose parent is init may linger in
    /// containers whose pid 1 does not reap; it is dead all the same).
    fn dead(pid: i32) -> bool {
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // state is the field after the parenthesised command name
        stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
    }

    fn wait_dead(pid: i32) -> bool {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if dead(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim().parse().unwrap_or_else(|_| panic!("no pid in {text:?}"))
    }

    #[test]
    fn echo_and_exit_code() {
        let out = run_blocking(sh("echo hello; echo oops >&2; exit 3"));
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.signal, None);
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.stderr, "oops\n");
        assert!(!out.timed_out && !out.canceled && !out.lingering_killed);
        assert!(!out.stdout_truncated && !out.stderr_truncated);
        assert!(out.pid > 0);
    }

    #[test]
    fn env_cwd_and_env_remove() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut spec = sh("echo \"$PACKD_T1|${HOME:-unset}|$(pwd)\"");
        spec.env = vec![("PACKD_T1".into(), "v1".into())];
        spec.env_remove = vec!["HOME".into()];
        spec.cwd = Some(dir.path().to_path_buf());
        let out = run_blocking(spec);
        let cwd = std::fs::canonicalize(dir.path()).unwrap_or_default();
        assert_eq!(out.stdout, format!("v1|unset|{}\n", cwd.display()));
    }

    #[test]
    fn output_cap_truncates_and_drains_ten_megabytes() {
        let mut spec = sh("yes | head -c 10000000; echo done >&2");
        spec.output_cap = 64 * 1024;
        let out = run_blocking(spec);
        assert_eq!(out.exit_code, Some(0));
        assert!(out.stdout_truncated);
        assert_eq!(out.stdout.len(), 64 * 1024 + TRUNCATION_MARKER.len());
        assert!(out.stdout.ends_with(TRUNCATION_MARKER));
        assert!(out.stdout.starts_with("y\ny\n"));
        assert_eq!(out.stderr, "done\n");
        assert!(!out.stderr_truncated);
    }

    #[test]
    fn default_output_cap_is_enforced() {
        let spec = sh(&format!("head -c {} /dev/zero", DEFAULT_OUTPUT_CAP + 1));
        let out = run_blocking(spec);
        assert!(out.stdout_truncated);
        assert_eq!(out.stdout.len(), DEFAULT_OUTPUT_CAP + TRUNCATION_MARKER.len());
    }

    #[test]
    fn output_exactly_at_cap_is_not_truncated() {
        let mut spec = sh("printf abcd");
        spec.output_cap = 4;
        let out = run_blocking(spec);
        assert_eq!((out.stdout.as_str(), out.stdout_truncated), ("abcd", false));
        let mut spec = sh("printf abcde");
        spec.output_cap = 4;
        let out = run_blocking(spec);
        assert_eq!(out.stdout, format!("abcd{TRUNCATION_MARKER}"));
    }

    #[test]
    fn truncation_does_not_split_a_utf8_character_and_invalid_bytes_are_lossy() {
        // "é" is two bytes; a cap of 2 cuts it after "a" + first byte.
        let mut spec = sh("printf 'a\\303\\251b'");
        spec.output_cap = 2;
        let out = run_blocking(spec);
        assert_eq!(out.stdout, format!("a{TRUNCATION_MARKER}"));
        let out = run_blocking(sh("printf 'x\\377y'"));
        assert_eq!(out.stdout, "x\u{FFFD}y");
    }

    #[test]
    fn stdin_is_delivered_and_closed() {
        let mut spec = sh("cat; echo; echo end");
        spec.stdin = Some(b"line one\nline two".to_vec());
        let out = run_blocking(spec);
        assert_eq!(out.stdout, "line one\nline two\nend\n");
    }

    #[test]
    fn stdin_larger_than_a_pipe_while_child_ignores_it() {
        // The child never reads stdin: our write gets EPIPE once it exits; that is not an error.
        let mut spec = sh("echo ok");
        spec.stdin = Some(vec![b'x'; 1024 * 1024]);
        let out = run_blocking(spec);
        assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "ok\n"));
    }

    #[test]
    fn without_stdin_the_child_reads_dev_null() {
        let out = run_blocking(sh("cat; echo eof"));
        assert_eq!(out.stdout, "eof\n");
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pidfile = dir.path().join("pid");
        let mut spec = sh(&format!("sleep 100 & echo $! > '{}'; sleep 100", pidfile.display()));
        spec.timeout = Duration::from_millis(500);
        let started = Instant::now();
        let out = run_blocking(spec);
        assert!(out.timed_out);
        assert!(!out.canceled);
        assert_eq!(out.signal, Some(libc::SIGTERM));
        assert_eq!(out.exit_code, None);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(wait_dead(read_pid(&pidfile)), "grandchild survived the timeout");
    }

    #[test]
    fn sigterm_ignored_is_followed_by_sigkill_after_grace() {
        let mut spec = sh("trap '' TERM; sleep 100 & wait");
        spec.timeout = Duration::from_millis(200);
        spec.kill_grace = Duration::from_millis(300);
        let started = Instant::now();
        let out = run_blocking(spec);
        let took = started.elapsed();
        assert!(out.timed_out);
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn cancel_stops_the_group() {
        let (tx, rx) = smol::channel::bounded(1);
        let spec = sh("sleep 100");
        let started = Instant::now();
        let out = smol::block_on(run(spec, Some(rx)).or(async {
            Timer::after(Duration::from_millis(200)).await;
            let _ = tx.send(()).await;
            future::pending().await
        }));
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert!(out.canceled);
        assert!(!out.timed_out);
        assert_eq!(out.signal, Some(libc::SIGTERM));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn closed_cancel_channel_is_not_a_cancel() {
        let (tx, rx) = smol::channel::bounded::<()>(1);
        drop(tx);
        let out = smol::block_on(run(sh("sleep 0.2; echo fine"), Some(rx))).unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.canceled);
        assert_eq!(out.stdout, "fine\n");
    }

    #[test]
    fn lingering_pipe_holder_is_killed_after_the_drain() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pidfile = dir.path().join("pid");
        // The background sleep inherits stdout and keeps it open after sh exits.
        let mut spec = sh(&format!("sleep 100 & echo $! > '{}'; echo bye", pidfile.display()));
        spec.exit_drain = Duration::from_millis(200);
        let started = Instant::now();
        let out = run_blocking(spec);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "bye\n");
        assert!(out.lingering_killed);
        assert!(!out.timed_out);
        assert!(wait_dead(read_pid(&pidfile)));
    }

    #[test]
    fn detached_background_process_without_our_pipes_survives() {
        let mut spec = sh("sleep 30 </dev/null >/dev/null 2>&1 & echo $!");
        spec.exit_drain = Duration::from_millis(200);
        let out = run_blocking(spec);
        assert!(!out.lingering_killed);
        let pid: i32 = out.stdout.trim().parse().unwrap_or(0);
        assert!(pid > 0);
        let alive = !dead(pid);
        // Clean up the process this test started.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert!(alive, "a detached daemon must not be killed after a normal exit");
    }

    #[test]
    fn killed_by_a_signal_reports_it() {
        let out = run_blocking(sh("kill -9 $$"));
        assert_eq!((out.exit_code, out.signal), (None, Some(9)));
        assert!(!out.timed_out);
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_the_path() {
        // Under qemu-user (cross test runs) a failed exec surfaces as exit code 127 of a child
        // that did start: qemu emulates the exec after the fork. Natively it is a spawn error.
        let emulated =
            std::env::vars().any(|(k, v)| k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER") && !v.is_empty());
        let spec = ProcessSpec::new("/nonexistent/packd-no-such-program");
        match smol::block_on(run(spec, None)) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cannot start /nonexistent/packd-no-such-program: "), "{msg}");
            }
            Ok(o) if emulated => assert_eq!(o.exit_code, Some(127), "{o:?}"),
            Ok(o) => panic!("unexpected success: {o:?}"),
        }
        let mut spec = ProcessSpec::new("/bin/true");
        spec.cwd = Some("/nonexistent-dir".into());
        match smol::block_on(run(spec, None)) {
            Err(e) => assert!(e.to_string().contains("in /nonexistent-dir"), "{e}"),
            Ok(o) if emulated => assert_ne!(o.exit_code, Some(0), "{o:?}"),
            Ok(o) => panic!("unexpected success: {o:?}"),
        }
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let mut spec = sh("echo x");
        spec.timeout = Duration::MAX;
        spec.kill_grace = Duration::MAX;
        spec.exit_drain = Duration::MAX;
        assert_eq!(run_blocking(spec).stdout, "x\n");
    }

    #[test]
    fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pidfile = dir.path().join("pid");
        let spec = sh(&format!("echo $$ > '{}'; sleep 100", pidfile.display()));
        smol::block_on(async {
            let stop = async {
                Timer::after(Duration::from_millis(300)).await;
                None
            };
            let r = async { Some(run(spec, None).await) }.or(stop).await;
            assert!(r.is_none());
        });
        assert!(wait_dead(read_pid(&pidfile)));
    }

    #[test]
    fn polling_fallback_detects_exit_without_reaping() {
        let child = std::process::Command::new("/bin/sh").args(["-c", "exit 0"]).spawn();
        let mut child = child.unwrap_or_else(|e| panic!("{e}"));
        let pid = pid_of(child.id());
        let until = Instant::now() + Duration::from_secs(3);
        while !exited_unreaped(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(exited_unreaped(pid));
        // Still reapable: WNOWAIT left it a zombie.
        let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success());
    }
}
