//! A tiny logger: one line per event on stderr, in the form journald wants when stderr is the
//! journal stream, and with a timestamp otherwise.
//!
//! Under systemd, stderr is a stream socket to journald and `JOURNAL_STREAM=<dev>:<inode>` names
//! it. journald adds its own timestamps and reads a `<N>` syslog priority prefix at the start of
//! each line, so there we print `<6>message`. `JOURNAL_STREAM` is inherited by children, so, as
//! systemd documents (systemd.exec(5), "JOURNAL_STREAM"), it only counts when the device and
//! inode of our own stderr match it; otherwise (a terminal, a file, a pipe from a supervisor
//! that is not journald) each line starts with an RFC 3339 UTC timestamp and a level word.
//!
//! This module formats and writes; it does not decide what is secret. Callers must never pass a
//! secret value in the arguments (config secrets have a masking `Debug`, see `config::Secret`).
//! A message with line breaks is still one line: `\n` and `\r` are written as `\\n` and `\\r`,
//! because journald would otherwise split it into several entries with only the first one
//! carrying the priority. It has no macros: `#[macro_export]` would put them at the crate root,
//! so the crate's macros call [`log`] and [`enabled`].

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// Longest line written, in bytes, before the message is cut. journald splits lines longer
/// than its LineMax (48 KiB by default) into several entries, and a line that echoes an
/// untrusted payload must not fill the journal; 16 KiB keeps every real message whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// How important an event is; the syslog priorities journald understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    /// The syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug).
    pub fn priority(self) -> u8 {
        self as u8
    }

    /// The word printed (and parsed): `error`, `warn`, `info`, `debug`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn from_priority(p: u8) -> Level {
        match p {
            0..=3 => Level::Error,
            4 | 5 => Level::Warn,
            6 => Level::Info,
            _ => Level::Debug,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown log level `{0}`: expected one of error, warn, info, debug")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        match s {
            "error" => Ok(Level::Error),
            "warn" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(ParseLevelError(s.to_string())),
        }
    }
}

/// The two line formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `<6>message`: journald adds the time and reads the priority.
    Journal,
    /// `2026-11-23T04:53:39.123Z INFO  message`: for terminals and files.
    Timestamped,
}

impl Style {
    /// The style for this process's stderr: `Journal` only when `JOURNAL_STREAM` names the
    /// very stream stderr is (see the module comment).
    pub fn detect() -> Style {
        let var = std::env::var("JOURNAL_STREAM").ok();
        use std::os::fd::AsFd;
        let stat = dev_ino(std::io::stderr().as_fd());
        match (var, stat) {
            (Some(v), Some((dev, ino))) if journal_stream_matches(&v, dev, ino) => Style::Journal,
            _ => Style::Timestamped,
        }
    }
}

/// Whether `JOURNAL_STREAM`'s `<dev>:<inode>` (decimal, as systemd writes it) names the file
/// with this device and inode number.
pub fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Device and inode of an open file (for stderr: fd 2).
fn dev_ino(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // fstat on a duplicate: the same open file, so the same device and inode, and std gives
    // us the call without unsafe code.
    let fd = fd.try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Appends one formatted event to `out` (with the trailing newline). `now` is only used in the
/// timestamped style. Pure, so the formats are tested without touching stderr or the clock.
pub fn format_line(out: &mut String, style: Style, level: Level, now: jiff::Timestamp, args: fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    match style {
        Style::Journal => {
            let _ = write!(out, "<{}>", level.priority());
        }
        Style::Timestamped => {
            let word = match level {
                Level::Error => "ERROR",
                Level::Warn => "WARN ",
                Level::Info => "INFO ",
                Level::Debug => "DEBUG",
            };
            let _ = write!(out, "{} {word} ", now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
    }
    let start = out.len();
    let _ = OneLine { out, start }.write_fmt(args);
    out.push('\n');
}

/// A `fmt::Write` that escapes line breaks and stops at `MAX_LINE_BYTES` from the start of
/// the line, so a message built from untrusted text stays one bounded line.
struct OneLine<'a> {
    out: &'a mut String,
    start: usize,
}

impl fmt::Write for OneLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const CUT: &str = " …[cut]";
        for c in s.chars() {
            if self.out.len() - self.start >= MAX_LINE_BYTES {
                if !self.out.ends_with(CUT) {
                    self.out.push_str(CUT);
                }
                // Stop formatting the rest: an error ends `write_fmt` early.
                return Err(fmt::Error);
            }
            match c {
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                c => self.out.push(c),
            }
        }
        Ok(())
    }
}

/// A logger writing to any sink; the process-wide one writes to stderr. Tests give it a
/// buffer.
pub struct Logger {
    max: AtomicU8,
    style: Style,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    pub fn new(level: Level, style: Style, sink: Box<dyn Write + Send>) -> Logger {
        Logger { max: AtomicU8::new(level.priority()), style, sink: Mutex::new(sink) }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level.priority() <= self.max.load(Ordering::Relaxed)
    }

    pub fn set_level(&self, level: Level) {
        self.max.store(level.priority(), Ordering::Relaxed);
    }

    pub fn level(&self) -> Level {
        Level::from_priority(self.max.load(Ordering::Relaxed))
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Writes one event if `level` is enabled. The line is formatted first and written with
    /// one `write_all` under the lock, so events from several threads never interleave.
    /// Write errors are dropped: there is nowhere left to report them.
    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        let mut line = String::with_capacity(128);
        format_line(&mut line, self.style, level, jiff::Timestamp::now(), args);
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.flush();
    }
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up the process-wide logger on stderr, in the style `Style::detect` finds. Called once
/// at start; a second call only changes the level.
pub fn init(level: Level) {
    let logger = LOGGER.get_or_init(|| Logger::new(level, Style::detect(), Box::new(std::io::stderr())));
    logger.set_level(level);
}

fn global() -> &'static Logger {
    // Before `init` (early errors, tests of other modules), log at info in the detected style.
    LOGGER.get_or_init(|| Logger::new(Level::Info, Style::detect(), Box::new(std::io::stderr())))
}

/// Writes one event to stderr if `level` is enabled: `log(Level::Info, format_args!(..))`.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    global().log(level, args);
}

/// Whether events at `level` are written (to skip building expensive messages).
pub fn enabled(level: Level) -> bool {
    global().enabled(level)
}

pub fn error(args: fmt::Arguments<'_>) {
    log(Level::Error, args);
}

pub fn warn(args: fmt::Arguments<'_>) {
    log(Level::Warn, args);
}

pub fn info(args: fmt::Arguments<'_>) {
    log(Level::Info, args);
}

pub fn debug(args: fmt::Arguments<'_>) {
    log(Level::Debug, args);
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use std::sync::Arc;

    fn at() -> jiff::Timestamp {
        "2026-11-23T04:53:39.123456Z".parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn check(style: Style, level: Level, msg: &str, expect: Expect) {
        let mut out = String::new();
        format_line(&mut out, style, level, at(), format_args!("{msg}"));
        expect.assert_eq(&out);
    }

    #[test]
    fn formats() {
        check(
            Style::Journal,
            Level::Error,
            "db open failed",
            expect![[r#"
                <3>db open failed
            "#]],
        );
        check(
            Style::Journal,
            Level::Warn,
            "w",
            expect![[r#"
                <4>w
            "#]],
        );
        check(
            Style::Journal,
            Level::Info,
            "ready",
            expect![[r#"
                <6>ready
            "#]],
        );
        check(
            Style::Journal,
            Level::Debug,
            "d",
            expect![[r#"
                <7>d
            "#]],
        );
        check(
            Style::Timestamped,
            Level::Info,
            "ready: 3 packs",
            expect![[r#"
                2026-11-23T04:53:39.123Z INFO  ready: 3 packs
            "#]],
        );
        check(
            Style::Timestamped,
            Level::Error,
            "boom",
            expect![[r#"
                2026-11-23T04:53:39.123Z ERROR boom
            "#]],
        );
        // A payload with line breaks stays one journal entry.
        check(
            Style::Journal,
            Level::Warn,
            "bad payload: {\"a\":\n1}\r\n<3>fake",
            expect![[r#"
                <4>bad payload: {"a":\n1}\r\n<3>fake
            "#]],
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let long = "x".repeat(MAX_LINE_BYTES * 2);
        let mut out = String::new();
        format_line(&mut out, Style::Journal, Level::Info, at(), format_args!("{long}{}", "tail"));
        assert!(out.len() < MAX_LINE_BYTES + 32, "{}", out.len());
        assert!(out.ends_with(" …[cut]\n"), "{}", &out[out.len() - 20..]);
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn parse_levels() {
        let got: Vec<String> = ["error", "warn", "info", "debug", "INFO", "trace", ""]
            .iter()
            .map(|s| match s.parse::<Level>() {
                Ok(l) => format!("{s} -> {l} <{}>", l.priority()),
                Err(e) => format!("{s} -> {e}"),
            })
            .collect();
        expect![[r#"
            error -> error <3>
            warn -> warn <4>
            info -> info <6>
            debug -> debug <7>
            INFO -> unknown log level `INFO`: expected one of error, warn, info, debug
            trace -> unknown log level `trace`: expected one of error, warn, info, debug
             -> unknown log level ``: expected one of error, warn, info, debug"#]]
        .assert_eq(&got.join("\n"));
    }

    #[test]
    fn journal_stream_detection() {
        let cases = [
            ("8:1234", 8, 1234, true),
            ("8:1234\n", 8, 1234, true),
            ("8:1235", 8, 1234, false),
            ("9:1234", 8, 1234, false),
            ("", 8, 1234, false),
            ("8", 8, 1234, false),
            ("x:y", 8, 1234, false),
            ("-8:1234", 8, 1234, false),
        ];
        for (var, dev, ino, want) in cases {
            assert_eq!(journal_stream_matches(var, dev, ino), want, "{var:?}");
        }
    }

    /// The check systemd documents, end to end: a `JOURNAL_STREAM` built from a file's
    /// fstat matches that file and no other.
    #[test]
    fn journal_stream_of_a_real_file() {
        use std::os::fd::AsFd;
        let a = tempfile::tempfile().expect("tempfile");
        let b = tempfile::tempfile().expect("tempfile");
        let (dev, ino) = dev_ino(a.as_fd()).expect("fstat");
        let var = format!("{dev}:{ino}");
        assert!(dev_ino(a.as_fd()).is_some_and(|(d, i)| journal_stream_matches(&var, d, i)));
        assert!(!dev_ino(b.as_fd()).is_some_and(|(d, i)| journal_stream_matches(&var, d, i)));
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            self.0.lock().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
        }
    }

    #[test]
    fn level_filter_and_sink() {
        let buf = Buf::default();
        let logger = Logger::new(Level::Warn, Style::Journal, Box::new(buf.clone()));
        logger.log(Level::Error, format_args!("e{}", 1));
        logger.log(Level::Warn, format_args!("w"));
        logger.log(Level::Info, format_args!("hidden"));
        logger.log(Level::Debug, format_args!("hidden"));
        assert!(logger.enabled(Level::Warn) && !logger.enabled(Level::Info));
        logger.set_level(Level::Debug);
        assert_eq!(logger.level(), Level::Debug);
        logger.log(Level::Debug, format_args!("now shown"));
        expect![[r#"
            <3>e1
            <4>w
            <7>now shown
        "#]]
        .assert_eq(&buf.text());
    }

    #[test]
    fn threads_never_interleave() {
        let buf = Buf::default();
        let logger = Arc::new(Logger::new(Level::Info, Style::Journal, Box::new(buf.clone())));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let logger = logger.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        logger.log(Level::Info, format_args!("thread {t} line {i} {}", "y".repeat(100)));
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let text = buf.text();
        assert_eq!(text.lines().count(), 800);
        assert!(text.lines().all(|l| l.starts_with("<6>thread ") && l.ends_with('y')));
    }
}
