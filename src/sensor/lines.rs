//! Reading a sensor's output line by line under a byte cap, and turning one stdout line into an
//! event (or the reason it is dropped), plus the log level of a stderr line.
//!
//! Pure parsing and bounded buffering only: nothing here dispatches, logs or knows about
//! processes. Sensor output is untrusted: no input may panic, and no line may grow memory past
//! its cap however long it is.

use std::io;

use serde_json::{Map, Value};
use smol::io::{AsyncBufRead, AsyncBufReadExt};

use super::LogLevel;

/// Longest stdout line (one event) accepted. Trigger payloads are stored in SQLite and evaluated
/// by rules; StackStorm's own API caps request bodies at 1 MiB-ish sizes, and a larger event is
/// far more likely a bug (a dumped file) than a legitimate trigger. Longer lines are discarded
/// while being read, never buffered whole.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Longest stderr line kept; the rest of the line is cut (and the cut is marked). Logs are for
/// humans, and every kept line may be stored with the sensor status.
pub const MAX_STDERR_LINE_BYTES: usize = 4 * 1024;

/// Bytes of a dropped stdout line quoted in the report: enough to recognise it.
pub const REPORT_SNIPPET_BYTES: usize = 200;

/// Known trigger refs listed in an "unknown trigger" report; the rest are counted.
const REPORT_KNOWN_TRIGGERS: usize = 10;

/// Read one line (without its `\n`, or up to EOF) into `buf`, keeping at most `cap` bytes.
/// Returns the full length of the line, `None` at EOF before any byte. A length greater than
/// `buf.len()` means the line was cut; the excess was consumed from the reader, not stored.
pub async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(total));
        }
        any = true;
        let (chunk, consumed, complete) = match memchr(available) {
            Some(at) => (available.get(..at).unwrap_or_default(), at + 1, true),
            None => (available, available.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        total = total.saturating_add(chunk.len());
        reader.consume(consumed);
        if complete {
            return Ok(Some(total));
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

/// One event a sensor emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub trigger: String,
    pub payload: Value,
    pub trace_tag: Option<String>,
}

/// Why a stdout line was dropped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("line of {len} bytes exceeds the {MAX_LINE_BYTES}-byte limit")]
    TooLong { len: usize },
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no \"trigger\" string")]
    NoTrigger,
    #[error("unknown trigger \"{trigger}\" (this sensor may emit: {known})")]
    UnknownTrigger { trigger: String, known: String },
    #[error("\"payload\" must be a JSON object, got {0}")]
    BadPayload(&'static str),
}

/// Parse one stdout line (already within [`MAX_LINE_BYTES`]). `Ok(None)`: a blank line.
pub fn parse_event(line: &[u8], known_triggers: &[String]) -> Result<Option<Emitted>, LineError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| LineError::NotJson(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(LineError::NotObject);
    };
    let trigger = match object.remove("trigger").or_else(|| object.remove("trigger_ref")) {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(LineError::NoTrigger),
    };
    if !known_triggers.contains(&trigger) {
        return Err(LineError::UnknownTrigger { trigger, known: describe_known(known_triggers) });
    }
    let payload = match object.remove("payload") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(other) => return Err(LineError::BadPayload(json_type(&other))),
    };
    let trace_tag = match object.remove("trace_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(Some(Emitted { trigger, payload, trace_tag }))
}

fn describe_known(known: &[String]) -> String {
    if known.is_empty() {
        return "nothing".to_owned();
    }
    let mut text = known.iter().take(REPORT_KNOWN_TRIGGERS).map(String::as_str).collect::<Vec<_>>().join(", ");
    if known.len() > REPORT_KNOWN_TRIGGERS {
        text.push_str(&format!(" and {} more", known.len() - REPORT_KNOWN_TRIGGERS));
    }
    text
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The start of a dropped line, for the report (lossy UTF-8, cut at a character boundary).
pub fn snippet(line: &[u8]) -> String {
    let head = line.get(..REPORT_SNIPPET_BYTES).unwrap_or(line);
    let mut text = String::from_utf8_lossy(head).into_owned();
    if line.len() > REPORT_SNIPPET_BYTES {
        // The cut may have split a character into U+FFFD; that is fine for a report.
        text.push('…');
    }
    text
}

/// A stderr line as text: lossy UTF-8, a trailing `\r` removed, a cut (`full_len` longer than
/// the `kept` bytes) marked.
pub fn stderr_text(kept: &[u8], full_len: usize) -> String {
    let cut = full_len.saturating_sub(kept.len());
    let kept = if cut == 0 { kept.strip_suffix(b"\r").unwrap_or(kept) } else { kept };
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if cut > 0 {
        text.push_str(&format!(" [… {cut} more bytes cut]"));
    }
    text
}

/// The level a stderr line announces in its first word (the wrapper's `LEVEL name: message`
/// format, also common elsewhere), and the rest of the line.
pub fn stderr_level(line: &str) -> (LogLevel, &str) {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let word = word.trim_matches(|c| c == '[' || c == ']' || c == ':');
    let level = match word {
        "DEBUG" => LogLevel::Debug,
        "INFO" => LogLevel::Info,
        "WARNING" | "WARN" => LogLevel::Warn,
        "ERROR" | "CRITICAL" | "FATAL" => LogLevel::Error,
        _ => return (LogLevel::Info, line),
    };
    (level, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use smol::io::BufReader;

    fn check(line: &str, expect: Expect) {
        let known = vec!["p.t".to_owned(), "p.other".to_owned()];
        let got = match parse_event(line.as_bytes(), &known) {
            Ok(Some(e)) => {
                format!("{} {} {:?}", e.trigger, serde_json::to_string(&e.payload).unwrap_or_default(), e.trace_tag)
            }
            Ok(None) => "blank".to_owned(),
            Err(e) => format!("drop: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn event_lines() {
        check(r#"{"trigger":"p.t","payload":{"a":1}}"#, expect![[r#"p.t {"a":1} None"#]]);
        check(r#"{"trigger_ref":"p.t"}"#, expect![[r#"p.t {} None"#]]);
        check(r#"{"trigger":"p.t","payload":null,"trace_tag":"x"}"#, expect![[r#"p.t {} Some("x")"#]]);
        check(r#"{"trigger":"p.t","trace_tag":42}"#, expect![[r#"p.t {} Some("42")"#]]);
        check("   ", expect!["blank"]);
        check("", expect!["blank"]);
        check("hello world", expect!["drop: not valid JSON: expected value at line 1 column 1"]);
        check(r#"{"trigger":"p.t""#, expect!["drop: not valid JSON: EOF while parsing an object at line 1 column 16"]);
        check("[1,2]", expect!["drop: not a JSON object"]);
        check(r#"{"payload":{}}"#, expect![[r#"drop: no "trigger" string"#]]);
        check(r#"{"trigger":7}"#, expect![[r#"drop: no "trigger" string"#]]);
        check(
            r#"{"trigger":"p.nope"}"#,
            expect![[r#"drop: unknown trigger "p.nope" (this sensor may emit: p.t, p.other)"#]],
        );
        check(
            r#"{"trigger":"p.t","payload":[1]}"#,
            expect![[r#"drop: "payload" must be a JSON object, got an array"#]],
        );
        check(
            r#"{"trigger":"p.t","payload":"s"}"#,
            expect![[r#"drop: "payload" must be a JSON object, got a string"#]],
        );
    }

    #[test]
    fn unknown_trigger_report_is_bounded() {
        let known: Vec<String> = (0..25).map(|i| format!("p.t{i}")).collect();
        let err = parse_event(br#"{"trigger":"x"}"#, &known).err().map(|e| e.to_string()).unwrap_or_default();
        expect![[r#"unknown trigger "x" (this sensor may emit: p.t0, p.t1, p.t2, p.t3, p.t4, p.t5, p.t6, p.t7, p.t8, p.t9 and 15 more)"#]]
            .assert_eq(&err);
        let err = parse_event(br#"{"trigger":"x"}"#, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        expect![[r#"unknown trigger "x" (this sensor may emit: nothing)"#]].assert_eq(&err);
    }

    fn read_all(input: &[u8], cap: usize, chunk: usize) -> Vec<(String, usize)> {
        smol::block_on(async {
            let mut reader = BufReader::with_capacity(chunk, input);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            while let Ok(Some(len)) = read_line_capped(&mut reader, &mut buf, cap).await {
                out.push((String::from_utf8_lossy(&buf).into_owned(), len));
            }
            out
        })
    }

    #[test]
    fn capped_lines() {
        expect![[r#"[("abc", 3), ("", 0), ("defghi", 6), ("tail", 4)]"#]]
            .assert_eq(&format!("{:?}", read_all(b"abc\n\ndefghi\ntail", 100, 2)));
        // Over the cap: the first `cap` bytes are kept, the length is the real one, and the
        // next line is intact.
        expect![[r#"[("abcd", 10), ("ok", 2)]"#]].assert_eq(&format!("{:?}", read_all(b"abcdefghij\nok\n", 4, 3)));
        expect!["[]"].assert_eq(&format!("{:?}", read_all(b"", 4, 3)));
    }

    #[test]
    fn a_line_over_max_line_bytes_is_not_buffered() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\n{}\n");
        let lines = read_all(&input, MAX_LINE_BYTES, 64 * 1024);
        let shape: Vec<(usize, usize)> = lines.iter().map(|(s, n)| (s.len(), *n)).collect();
        assert_eq!(shape, vec![(MAX_LINE_BYTES, MAX_LINE_BYTES * 3), (2, 2)]);
    }

    #[test]
    fn stderr_lines() {
        let long = vec![b'e'; MAX_STDERR_LINE_BYTES + 10];
        let lines = read_all(&long, MAX_STDERR_LINE_BYTES, 1024);
        let (kept, len) = lines.first().cloned().unwrap_or_default();
        assert_eq!(kept.len(), MAX_STDERR_LINE_BYTES);
        let text = stderr_text(kept.as_bytes(), len);
        assert_eq!(text, format!("{kept} [… 10 more bytes cut]"));
        assert_eq!(stderr_text(b"plain\r", 6), "plain");
        assert_eq!(stderr_text(b"ab", 3), "ab [… 1 more bytes cut]");
        assert_eq!(stderr_text(b"plain", 5), "plain");
        let levels: Vec<String> = [
            "DEBUG x: y",
            "INFO SensorWrapper.p.C.n: hi",
            "WARNING packd: using the eventlet shim",
            "ERROR a: b",
            "CRITICAL c",
            "[WARN] bracketed",
            "Traceback (most recent call last):",
            "",
        ]
        .iter()
        .map(|l| {
            let (level, rest) = stderr_level(l);
            format!("{level:?}|{rest}")
        })
        .collect();
        expect![[r#"
            [
                "Debug|x: y",
                "Info|SensorWrapper.p.C.n: hi",
                "Warn|packd: using the eventlet shim",
                "Error|a: b",
                "Error|c",
                "Warn|bracketed",
                "Info|Traceback (most recent call last):",
                "Info|",
            ]
        "#]]
        .assert_debug_eq(&levels);
    }

    #[test]
    fn snippets() {
        assert_eq!(snippet(b"short"), "short");
        let long = vec![b'a'; REPORT_SNIPPET_BYTES + 1];
        assert_eq!(snippet(&long).chars().count(), REPORT_SNIPPET_BYTES + 1);
        assert!(snippet(&long).ends_with('…'));
    }
}
