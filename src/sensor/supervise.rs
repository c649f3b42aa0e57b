//! The life of one supervised sensor: spawn, read its stdout events and stderr log, stop on
//! request, and restart after any exit with capped exponential backoff.
//!
//! One task per sensor runs [`supervise`]; the per-process work (readers, exit, stop escalation)
//! is a single future in that task, so nothing here spawns tasks or holds the executor. It owns
//! the sensor's [`SensorStatus`] (shared read-only with the supervisor) and must never hold a
//! `RefCell` borrow across an `.await` or a call into the host.

use std::cell::RefCell;
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use smol::Timer;
use smol::channel::Receiver;
use smol::future::{self, FutureExt};
use smol::io::{AsyncWriteExt, BufReader};

use super::child::{self, Exit};
use super::lines::{self, LineError};
use super::{
    Command, FAIL_THRESHOLD, LogLevel, MAX_LINE_BYTES, MAX_STDERR_LINE_BYTES, STDERR_TAIL_LINES, SensorHost,
    SensorSpec, SensorState, SensorStatus, Timings,
};

/// Read buffer per pipe: a pipe holds 64 KiB; 16 KiB reads keep each sensor's footprint small.
const READ_CHUNK: usize = 16 * 1024;

/// The delay before restart number `consecutive_failures` of a row (1 → `backoff_initial`),
/// doubling up to `backoff_max`.
pub fn backoff_delay(timings: &Timings, consecutive_failures: u32) -> Duration {
    let doublings = consecutive_failures.saturating_sub(1).min(31);
    timings.backoff_initial.saturating_mul(1u32 << doublings).min(timings.backoff_max)
}

/// Supervise one sensor until it is asked to stop (or the command channel closes).
pub async fn supervise(
    host: &dyn SensorHost,
    timings: Timings,
    spec: &SensorSpec,
    status: &RefCell<SensorStatus>,
    commands: &Receiver<Command>,
) {
    let launch = child::launch_for(spec);
    // A stop may have arrived while this task waited for its predecessor to stop; a queued
    // restart is moot (the sensor is about to start anyway).
    if let Ok(Command::Stop) = commands.try_recv() {
        return stopped(host, spec, status);
    }
    // Set when the next spawn is a restart; counted with the `starting` state change so that the
    // host sees one change per transition.
    let mut restarting = false;
    loop {
        update(host, status, |s| {
            if restarting {
                s.restarts = s.restarts.saturating_add(1);
            }
            s.state = SensorState::Starting;
            s.pid = None;
            s.next_restart_at = None;
        });
        let started = Instant::now();
        let requested = match child::spawn(&launch) {
            Err(e) => {
                let message = format!("cannot start {}: {e}", launch.program.display());
                host.log(&spec.ref_, LogLevel::Error, &message);
                update(host, status, |s| {
                    push_tail(s, format!("packd: {message}"));
                    s.last_error = Some(message);
                    s.last_exit_code = None;
                    s.last_signal = None;
                });
                None
            }
            Ok(spawned) => {
                let pid = spawned.process.pid();
                update(host, status, |s| {
                    s.state = SensorState::Running;
                    s.pid = Some(pid);
                    s.started_at = Some(SystemTime::now());
                });
                host.log(&spec.ref_, LogLevel::Info, &format!("started, pid {pid}"));
                let snapshot = status.borrow().clone();
                host.process_spawned(&snapshot);
                let (exit, requested) = run_process(host, &timings, spec, status, commands, spawned, &launch).await;
                let ran = started.elapsed();
                update(host, status, |s| {
                    s.pid = None;
                    s.last_exit_code = exit.and_then(|e| e.code);
                    s.last_signal = exit.and_then(|e| e.signal);
                });
                let snapshot = status.borrow().clone();
                host.process_exited(&snapshot);
                if requested.is_none() {
                    let how = describe_exit(exit);
                    let last = snapshot.last_stderr.last().cloned().unwrap_or_default();
                    host.log(
                        &spec.ref_,
                        LogLevel::Warn,
                        &format!("{how} after {:.1} s; last stderr: {last}", ran.as_secs_f64()),
                    );
                }
                requested
            }
        };
        match requested {
            Some(Command::Stop) => return stopped(host, spec, status),
            Some(Command::Restart) => {
                status.borrow_mut().consecutive_failures = 0;
                restarting = true;
                continue;
            }
            None => {}
        }

        // An unrequested exit (exit code 0 included: a sensor is meant to run forever).
        let ran_stably = started.elapsed() >= timings.stable_run;
        let delay = {
            let mut s = status.borrow_mut();
            s.consecutive_failures = if ran_stably { 1 } else { s.consecutive_failures.saturating_add(1) };
            backoff_delay(&timings, s.consecutive_failures)
        };
        update(host, status, |s| {
            s.state = if s.consecutive_failures >= FAIL_THRESHOLD { SensorState::Failed } else { SensorState::Backoff };
            s.next_restart_at = SystemTime::now().checked_add(delay);
        });
        host.log(&spec.ref_, LogLevel::Info, &format!("restarting in {:.1} s", delay.as_secs_f64()));
        let wake = async {
            Timer::after(delay).await;
            None
        }
        .or(async { Some(commands.recv().await.unwrap_or(Command::Stop)) })
        .await;
        match wake {
            Some(Command::Stop) => return stopped(host, spec, status),
            Some(Command::Restart) => status.borrow_mut().consecutive_failures = 0,
            None => {}
        }
        restarting = true;
    }
}

fn stopped(host: &dyn SensorHost, spec: &SensorSpec, status: &RefCell<SensorStatus>) {
    update(host, status, |s| {
        s.state = SensorState::Stopped;
        s.pid = None;
        s.next_restart_at = None;
    });
    host.log(&spec.ref_, LogLevel::Info, "stopped");
}

fn describe_exit(exit: Option<Exit>) -> String {
    match exit {
        Some(Exit { signal: Some(sig), .. }) => {
            format!("killed by signal {sig} ({})", Signal::try_from(sig).map_or("unknown", Signal::as_str))
        }
        Some(Exit { code: Some(code), .. }) => format!("exited with code {code}"),
        _ => "exited (status unknown)".to_owned(),
    }
}

/// Change the status and tell the host. No borrow is held while the host runs.
fn update(host: &dyn SensorHost, status: &RefCell<SensorStatus>, change: impl FnOnce(&mut SensorStatus)) {
    let snapshot = {
        let mut s = status.borrow_mut();
        change(&mut s);
        s.clone()
    };
    host.state_changed(&snapshot);
}

fn push_tail(status: &mut SensorStatus, line: String) {
    status.last_stderr.push(line);
    let excess = status.last_stderr.len().saturating_sub(STDERR_TAIL_LINES);
    if excess > 0 {
        status.last_stderr.drain(..excess);
    }
}

enum Event {
    IoDone,
    Exited,
    Command(Command),
    Timer,
}

/// Run one process to its end. Returns how it ended (`None` if it could not be reaped) and the
/// command that ended it, if any.
async fn run_process(
    host: &dyn SensorHost,
    timings: &Timings,
    spec: &SensorSpec,
    status: &RefCell<SensorStatus>,
    commands: &Receiver<Command>,
    spawned: child::Spawned,
    launch: &child::Launch,
) -> (Option<Exit>, Option<Command>) {
    let child::Spawned { mut process, stdin, stdout, stderr } = spawned;
    let input = launch.stdin.clone();
    let mut requested: Option<Command> = None;
    {
        let io = future::zip(
            future::zip(pump_events(host, spec, status, stdout), pump_log(host, spec, status, stderr)),
            feed(stdin, input),
        );
        let mut io = pin!(io);
        let mut io_done = false;
        let mut exited = false;
        let mut wake_at: Option<Instant> = None;
        let process_ref = &process;
        while !(io_done && exited) {
            let listen = !exited;
            let event = async {
                if io_done {
                    future::pending().await
                } else {
                    io.as_mut().await;
                    Event::IoDone
                }
            }
            .or(async {
                if exited {
                    future::pending().await
                } else {
                    process_ref.exited().await;
                    Event::Exited
                }
            })
            .or(async {
                if listen {
                    Event::Command(commands.recv().await.unwrap_or(Command::Stop))
                } else {
                    future::pending().await
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
            .await;
            match event {
                Event::IoDone => io_done = true,
                Event::Exited => {
                    exited = true;
                    // The leader is an unreaped zombie, so its group is still ours: whatever it
                    // left running dies with it (a restarted sensor must not find its
                    // predecessor's children).
                    process_ref.signal_group(Signal::SIGKILL);
                    wake_at = Instant::now().checked_add(timings.exit_drain);
                }
                Event::Command(command) => {
                    let first = requested.is_none();
                    if command == Command::Stop || requested.is_none() {
                        requested = Some(command);
                    }
                    if first {
                        process_ref.signal_group(Signal::SIGTERM);
                        wake_at = Instant::now().checked_add(timings.stop_grace);
                    }
                }
                Event::Timer => {
                    if exited {
                        host.log(
                            &spec.ref_,
                            LogLevel::Warn,
                            "output still open after the sensor exited (a process outside \
                             its group holds it); no longer reading it",
                        );
                        break;
                    }
                    host.log(
                        &spec.ref_,
                        LogLevel::Warn,
                        &format!(
                            "still running {:.1} s after SIGTERM; sending SIGKILL",
                            timings.stop_grace.as_secs_f64()
                        ),
                    );
                    process_ref.signal_group(Signal::SIGKILL);
                    wake_at = None;
                }
            }
        }
    }
    let exit = match process.reap().await {
        Ok(exit) => Some(exit),
        Err(e) => {
            host.log(&spec.ref_, LogLevel::Error, &format!("cannot reap pid {}: {e}", process.pid()));
            None
        }
    };
    (exit, requested)
}

async fn feed(stdin: Option<smol::Async<std::process::ChildStdin>>, input: Option<Vec<u8>>) {
    if let (Some(mut pipe), Some(input)) = (stdin, input) {
        // A sensor that exits without reading its stdin makes this fail (EPIPE); nothing to do.
        let _ = pipe.write_all(&input).await;
    }
    // The pipe is dropped (closed) here: the wrapper sees EOF after its line.
}

/// stdout: one event per line, each dispatched (and awaited) before the next line is read.
async fn pump_events(
    host: &dyn SensorHost,
    spec: &SensorSpec,
    status: &RefCell<SensorStatus>,
    stdout: Option<smol::Async<std::process::ChildStdout>>,
) {
    let Some(stdout) = stdout else { return };
    let mut reader = BufReader::with_capacity(READ_CHUNK, stdout);
    let mut line = Vec::new();
    loop {
        let len = match lines::read_line_capped(&mut reader, &mut line, MAX_LINE_BYTES).await {
            Ok(Some(len)) => len,
            Ok(None) => return,
            Err(e) => {
                host.log(&spec.ref_, LogLevel::Error, &format!("cannot read stdout: {e}"));
                return;
            }
        };
        let parsed = if len > line.len() {
            Err(LineError::TooLong { len })
        } else {
            lines::parse_event(&line, &spec.known_triggers)
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(event)) => {
                let trigger = event.trigger;
                let result = host.dispatch(&spec.ref_, &trigger, event.payload, event.trace_tag).await;
                match result {
                    Ok(()) => status.borrow_mut().events += 1,
                    Err(e) => host.log(&spec.ref_, LogLevel::Error, &format!("event for {trigger} not accepted: {e}")),
                }
            }
            Err(reason) => {
                let message = match &reason {
                    LineError::TooLong { .. } => format!("dropped a stdout line: {reason}"),
                    _ => format!("dropped a stdout line: {reason}: {}", lines::snippet(&line)),
                };
                {
                    let mut s = status.borrow_mut();
                    s.dropped_lines += 1;
                    s.last_error = Some(message.clone());
                }
                host.log(&spec.ref_, LogLevel::Warn, &message);
            }
        }
    }
}

/// stderr: each line to the host log and the status tail.
async fn pump_log(
    host: &dyn SensorHost,
    spec: &SensorSpec,
    status: &RefCell<SensorStatus>,
    stderr: Option<smol::Async<std::process::ChildStderr>>,
) {
    let Some(stderr) = stderr else { return };
    let mut reader = BufReader::with_capacity(READ_CHUNK, stderr);
    let mut line = Vec::new();
    while let Ok(Some(len)) = lines::read_line_capped(&mut reader, &mut line, MAX_STDERR_LINE_BYTES).await {
        let text = lines::stderr_text(&line, len);
        let (level, message) = lines::stderr_level(&text);
        host.log(&spec.ref_, level, message);
        push_tail(&mut status.borrow_mut(), text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let t = Timings::default();
        let delays: Vec<u64> =
            [0, 1, 2, 3, 4, 8, 9, 10, 40, u32::MAX].iter().map(|n| backoff_delay(&t, *n).as_secs()).collect();
        expect!["[1, 1, 2, 4, 8, 128, 256, 300, 300, 300]"].assert_eq(&format!("{delays:?}"));
        let fast = Timings { backoff_initial: Duration::from_millis(50), backoff_max: Duration::from_millis(300), ..t };
        let delays: Vec<u128> = (1..6).map(|n| backoff_delay(&fast, n).as_millis()).collect();
        expect!["[50, 100, 200, 300, 300]"].assert_eq(&format!("{delays:?}"));
    }

    #[test]
    fn exits_are_described() {
        let d = |code, signal| describe_exit(Some(Exit { code, signal }));
        expect![[r#"["exited with code 3", "killed by signal 9 (SIGKILL)", "killed by signal 99 (unknown)", "exited (status unknown)"]"#]]
            .assert_eq(&format!(
                "{:?}",
                [
                    d(Some(3), None),
                    d(None, Some(9)),
                    d(None, Some(99)),
                    describe_exit(None)
                ]
            ));
    }
}
