//! systemd service notifications (sd_notify(3)): `READY=1`, `STOPPING=1`, `STATUS=…`,
//! `WATCHDOG=1`, sent as datagrams to the socket named by `NOTIFY_SOCKET`.
//!
//! The environment is read once, into a [`Notifier`] value, instead of on every call as the
//! `sd-notify` crate does: tests then build notifiers for their own sockets without touching
//! the process environment (which is shared by every test thread and `unsafe` to change in
//! edition 2024). The protocol is a few lines of std: one unbound `AF_UNIX` datagram socket
//! per message (so no descriptor is held open or inherited by actions), a path socket for
//! `/…` and an abstract one for `@…`.
//!
//! It decides nothing about health: [`watchdog_loop`] pings only while the caller's
//! `healthy()` says so, and a missed ping is how systemd learns the agent is stuck. Nothing is
//! sent outside systemd (no `NOTIFY_SOCKET`), and every call is then a cheap no-op.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest `STATUS=` text sent. systemd shows it in `systemctl status`; a status built from
/// untrusted text (a pack name) must stay one short line.
pub const MAX_STATUS_BYTES: usize = 256;

/// Shortest watchdog period accepted. `WatchdogSec` is whole seconds in practice; a tiny value
/// (a typo, or `WATCHDOG_USEC=1`) would otherwise make the agent spin sending pings.
pub const MIN_WATCHDOG: Duration = Duration::from_millis(10);

/// Variables systemd sets for the service itself. A child (action, sensor) inherits them and
/// must not see them: with them it could talk to systemd in the agent's name (refused under
/// `NotifyAccess=main`, but it still confuses `systemd-notify`-aware scripts). The runner
/// removes these from every child's environment.
pub const SERVICE_ENV_VARS: &[&str] =
    &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// Where notifications go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// The name without the leading `@` (Linux abstract namespace).
    Abstract(Vec<u8>),
}

/// The service manager's notification channel, read once from the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing (not under systemd, or notifications turned off).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` of this process.
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok();
        Notifier::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// The same from explicit values: `pid` is this process's id. As in
    /// sd_watchdog_enabled(3), the watchdog is on only when `WATCHDOG_USEC` is a positive
    /// number of microseconds and `WATCHDOG_PID`, when set, is `pid` (systemd sets it so a
    /// forked child does not ping for its parent). A socket that is neither `/path` nor
    /// `@abstract` (e.g. systemd's `vsock:`) is ignored.
    pub fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let target = match notify_socket {
            Some(s) if s.starts_with('/') => Some(Target::Path(PathBuf::from(s))),
            Some(s) if s.len() > 1 && s.starts_with('@') => Some(Target::Abstract(s.as_bytes()[1..].to_vec())),
            _ => None,
        };
        let pid_ok = match watchdog_pid {
            None => true,
            Some(p) => p.trim().parse::<u32>().is_ok_and(|p| p == pid),
        };
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok && target.is_some())
            .map(Duration::from_micros)
            .map(|d| d.max(MIN_WATCHDOG));
        Notifier { target, watchdog }
    }

    /// Whether there is a socket to notify.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: start-up is finished. Send it only once packs are loaded and the endpoint
    /// listens; `systemctl start` returns then, and units ordered after packd start.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// `STOPPING=1`: shutdown has begun (systemd then expects the process to exit).
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `RELOADING=1`: a configuration reload began; follow with [`Notifier::ready`].
    pub fn reloading(&self) -> io::Result<()> {
        self.send("RELOADING=1")
    }

    /// `STATUS=…`, shown by `systemctl status`. Line breaks become spaces (a newline would
    /// start another assignment, e.g. a fake `READY=1`), and the text is cut at
    /// `MAX_STATUS_BYTES` on a character boundary.
    pub fn status(&self, text: &str) -> io::Result<()> {
        let mut s = String::from("STATUS=");
        for c in text.chars() {
            if s.len() + c.len_utf8() > "STATUS=".len() + MAX_STATUS_BYTES {
                break;
            }
            s.push(if c == '\n' || c == '\r' { ' ' } else { c });
        }
        self.send(&s)
    }

    /// `WATCHDOG=1`: the agent is alive. Normally sent by [`watchdog_loop`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// `EXTEND_TIMEOUT_USEC=…`: asks for more time to start or stop (a large pack corpus on a
    /// slow SD card), so `TimeoutStartSec` need not be set for the worst case.
    pub fn extend_timeout(&self, by: Duration) -> io::Result<()> {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()))
    }

    /// How often to ping: half of `WatchdogSec`, as sd_watchdog_enabled(3) recommends, so
    /// one late ping is not fatal. `None` when the watchdog is off.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends one raw notification (`KEY=VALUE` lines). A no-op when disabled.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        let sent = match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        if sent != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to NOTIFY_SOCKET"));
        }
        Ok(())
    }
}

/// Pings the watchdog every [`Notifier::watchdog_interval`] (the first ping at once) as long
/// as `healthy()` returns true at the tick; an unhealthy tick sends nothing, and if that goes
/// on for `WatchdogSec` systemd kills and restarts the agent (`Restart=on-failure`). Send
/// errors are ignored: the socket belongs to systemd and a missed ping is the right outcome.
///
/// Never returns: with no watchdog it waits forever, so it is safe both to `detach` and to
/// race against a shutdown future with `or`. Runs on smol timers; no thread of its own.
pub async fn watchdog_loop(n: Notifier, healthy: impl Fn() -> bool) {
    let Some(period) = n.watchdog_interval() else {
        return std::future::pending().await;
    };
    let mut next = Instant::now();
    loop {
        smol::Timer::at(next).await;
        if healthy() {
            let _ = n.watchdog();
        }
        // Deadlines advance by whole periods from the start, so a slow tick does not make
        // every later ping late; after a long stall (suspend) the next one is a period ahead.
        next += period;
        let now = Instant::now();
        if next < now {
            next = now + period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A notification socket like systemd's, bound in a temporary directory.
    struct Listener {
        _dir: tempfile::TempDir,
        path: PathBuf,
        sock: UnixDatagram,
    }

    fn listener() -> Listener {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        Listener { _dir: dir, path, sock }
    }

    impl Listener {
        fn notifier(&self, watchdog_usec: Option<&str>) -> Notifier {
            Notifier::from_vars(self.path.to_str(), watchdog_usec, None, std::process::id())
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 1024];
            let n = self.sock.recv(&mut buf).expect("recv");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }

        /// Every message already queued, without waiting.
        fn drain(&self) -> Vec<String> {
            self.sock.set_nonblocking(true).expect("nonblocking");
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = self.sock.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            out
        }
    }

    #[test]
    fn ready_status_stopping_reach_the_socket() {
        let l = listener();
        let n = l.notifier(None);
        assert!(n.is_enabled());
        n.ready().expect("ready");
        n.status("loaded 3 packs\nREADY=1").expect("status");
        n.extend_timeout(Duration::from_secs(30)).expect("extend");
        n.stopping().expect("stopping");
        n.reloading().expect("reloading");
        assert_eq!(l.recv(), "READY=1");
        assert_eq!(l.recv(), "STATUS=loaded 3 packs READY=1");
        assert_eq!(l.recv(), "EXTEND_TIMEOUT_USEC=30000000");
        assert_eq!(l.recv(), "STOPPING=1");
        assert_eq!(l.recv(), "RELOADING=1");
    }

    #[test]
    fn status_is_capped() {
        let l = listener();
        let n = l.notifier(None);
        n.status(&"é".repeat(MAX_STATUS_BYTES)).expect("status");
        let got = l.recv();
        assert_eq!(got.len(), "STATUS=".len() + MAX_STATUS_BYTES);
        assert!(got.ends_with('é'));
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("packd-test-{}-{:?}", std::process::id(), Instant::now());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1);
        n.ready().expect("ready");
        let mut buf = [0u8; 64];
        let len = sock.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn environment_rules() {
        // (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID, expected) for a process with pid 42.
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (None, None, None, "off, no watchdog"),
            (Some(""), Some("200000"), None, "off, no watchdog"),
            (Some("@"), None, None, "off, no watchdog"),
            (Some("vsock:2:1234"), None, None, "off, no watchdog"),
            (Some("relative/sock"), None, None, "off, no watchdog"),
            (Some("/run/notify"), None, None, "on, no watchdog"),
            (Some("@abstract"), Some("200000"), None, "on, ping every 100ms"),
            (Some("/run/notify"), Some("30000000"), Some("42"), "on, ping every 15s"),
            (Some("/run/notify"), Some("30000000"), Some("43"), "on, no watchdog"),
            (Some("/run/notify"), Some("0"), None, "on, no watchdog"),
            (Some("/run/notify"), Some("-5"), None, "on, no watchdog"),
            (Some("/run/notify"), Some("soon"), None, "on, no watchdog"),
            (Some("/run/notify"), Some("1"), None, "on, ping every 5ms"),
            // No socket: a watchdog could never be fed, so it is off too.
            (None, Some("200000"), None, "off, no watchdog"),
        ];
        for &(sock, usec, pid, want) in cases {
            let n = Notifier::from_vars(sock, usec, pid, 42);
            let got = format!(
                "{}, {}",
                if n.is_enabled() { "on" } else { "off" },
                match n.watchdog_interval() {
                    Some(d) => format!("ping every {d:?}"),
                    None => "no watchdog".to_string(),
                }
            );
            assert_eq!(got, want, "{sock:?} {usec:?} {pid:?}");
        }
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        assert!(n.ready().is_ok() && n.watchdog().is_ok() && n.stopping().is_ok());
        // With no watchdog the loop never returns (so `or` against it is safe).
        let ended = smol::block_on(smol::future::or(
            async {
                watchdog_loop(n, || true).await;
                true
            },
            async {
                smol::Timer::after(Duration::from_millis(50)).await;
                false
            },
        ));
        assert!(!ended);
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nobody-listens");
        let n = Notifier::from_vars(path.to_str(), None, None, 1);
        assert!(n.ready().is_err());
    }

    /// WATCHDOG_USEC=200 ms → a ping at once and then every 100 ms while healthy, none after.
    #[test]
    fn watchdog_cadence_follows_health() {
        let l = listener();
        let n = l.notifier(Some("200000"));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(100)));
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let start = Instant::now();
        let mut stamps: Vec<Duration> = Vec::new();
        smol::block_on(smol::future::or(watchdog_loop(n, move || h.load(Ordering::SeqCst)), async {
            // Receive on a blocking pool thread so the timers keep running here.
            let sock = l.sock.try_clone().expect("clone");
            let got = smol::unblock(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                for _ in 0..5 {
                    let Ok(n) = sock.recv(&mut buf) else { break };
                    got.push((start.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
                got
            })
            .await;
            for (at, msg) in got {
                assert_eq!(msg, "WATCHDOG=1");
                stamps.push(at);
            }
            // Now unhealthy: no more pings for three periods.
            healthy.store(false, Ordering::SeqCst);
            smol::Timer::after(Duration::from_millis(50)).await;
            let _ = l.drain(); // a ping racing the store above
            smol::Timer::after(Duration::from_millis(300)).await;
        }));
        assert_eq!(stamps.len(), 5, "{stamps:?}");
        // Ping k is due k × 100 ms after the loop started (which is after `start`), and a
        // timer never fires early, so it cannot arrive before that; a loaded 2-core machine
        // or qemu may make it late, hence the generous upper bound.
        for (k, at) in stamps.iter().enumerate() {
            let due = Duration::from_millis(100) * k as u32;
            assert!(*at >= due, "ping {k} early: {stamps:?}");
            assert!(*at < due + Duration::from_millis(300), "ping {k} late: {stamps:?}");
        }
        assert_eq!(l.drain(), Vec::<String>::new(), "pinged while unhealthy");
    }
}
