//! The Attune action contract as pure functions (`reference/attune.md` A2): how parameters reach
//! the action (a document on stdin in json/dotenv/yaml, plus the seed's `ATTUNE_ACTION_<NAME>`
//! environment variables), how the process is started (interpreter + entry file, cwd = pack
//! directory) and how its output becomes a status and result object.
//!
//! Nothing here spawns or waits; it builds a [`ProcessSpec`] and reads a [`ProcessOutcome`].
//! Parameter validation and secret merging happen before we are called.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::ExecStatus;
use super::process::{ProcessOutcome, ProcessSpec};
use super::script;

/// One `ATTUNE_ACTION_<NAME>` variable is left out when its value is longer than this: Linux
/// refuses any single environment string over 128 KiB (`MAX_ARG_STRLEN`) and the whole of argv +
/// environment shares about 2 MiB, so a large parameter would make the spawn itself fail. The
/// value still reaches the action on stdin.
pub const MAX_ENV_PARAM_BYTES: usize = 32 * 1024;

/// Parameters stop being exported as variables once their total size reaches this, for the same
/// reason as [`MAX_ENV_PARAM_BYTES`]: many medium values must not add up to an `E2BIG`.
pub const MAX_ENV_PARAMS_TOTAL: usize = 256 * 1024;

/// Prefix of the per-parameter environment variables (the seed's contract).
pub const ENV_PREFIX: &str = "ATTUNE_ACTION_";

/// `parameter_format` of an Attune action: how the stdin document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParamFormat {
    #[default]
    Json,
    Dotenv,
    Yaml,
}

impl ParamFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(ParamFormat::Json),
            "dotenv" => Some(ParamFormat::Dotenv),
            "yaml" => Some(ParamFormat::Yaml),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamFormat::Json => "json",
            ParamFormat::Dotenv => "dotenv",
            ParamFormat::Yaml => "yaml",
        }
    }
}

/// `output_format` of an Attune action: how stdout is turned into `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    Yaml,
    Jsonl,
}

impl OutputFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(OutputFormat::Text),
            "json" => Some(OutputFormat::Json),
            "yaml" => Some(OutputFormat::Yaml),
            "jsonl" => Some(OutputFormat::Jsonl),
            _ => None,
        }
    }
}

/// The runtimes packd runs for Attune actions (`runner_type` aliases as Attune resolves them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttuneRunner {
    Shell,
    Python,
    Node,
}

impl AttuneRunner {
    /// `runner_type` → runtime; `None` for runtimes packd does not have (`native`, `java`, ...).
    /// A missing `runner_type` means shell.
    pub fn parse(runner_type: &str) -> Option<Self> {
        match runner_type {
            "shell" | "bash" | "sh" | "core.shell" => Some(AttuneRunner::Shell),
            "python" | "python3" | "core.python" => Some(AttuneRunner::Python),
            "node" | "nodejs" | "node.js" | "core.nodejs" => Some(AttuneRunner::Node),
            _ => None,
        }
    }
}

/// The parameter document written to stdin, always ending in `"\n"`:
/// * json: compact, on one line (actions do `json.loads(sys.stdin.readline())`);
/// * dotenv: `key='value'` lines sorted as lines, nested objects flattened to `a.b`, arrays as
///   JSON, strings raw, `null` as empty, `'` written as `'\''` — so `. /dev/stdin` works in sh;
/// * yaml: a block-style document.
pub fn params_document(params: &Value, format: ParamFormat) -> Vec<u8> {
    let mut text = match format {
        ParamFormat::Json => params.to_string(),
        ParamFormat::Dotenv => dotenv(params),
        ParamFormat::Yaml => yaml_document(params),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.into_bytes()
}

fn dotenv(params: &Value) -> String {
    let mut flat = Vec::new();
    if let Value::Object(map) = params {
        flatten("", map, &mut flat);
    }
    let mut lines: Vec<String> =
        flat.into_iter().map(|(key, value)| format!("{key}='{}'", value.replace('\'', "'\\''"))).collect();
    // Attune sorts the formatted lines, not the keys ("a.b=" sorts before "a=").
    lines.sort();
    lines.join("\n")
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (key, value) in map {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) => flatten(&full, inner, out),
            other => out.push((full, scalar_text(other))),
        }
    }
}

/// Strings raw, `null` empty, everything else compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `ATTUNE_ACTION_<NAME>` for each top-level parameter: the name upper-cased, strings raw and
/// other values as compact JSON (`true`, `42`, `["a"]`; `null` as JSON `null`). Delivered in
/// addition to the stdin document. Left out: names containing `=` or NUL and values containing
/// NUL (the environment cannot carry them), values over [`MAX_ENV_PARAM_BYTES`], and everything
/// once [`MAX_ENV_PARAMS_TOTAL`] is reached.
pub fn env_vars(params: &Value) -> Vec<(String, String)> {
    let Value::Object(map) = params else {
        return Vec::new();
    };
    let mut total = 0usize;
    let mut vars = Vec::new();
    for (name, value) in map {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if name.contains(['=', '\0']) || value.contains('\0') || value.len() > MAX_ENV_PARAM_BYTES {
            continue;
        }
        let key = format!("{ENV_PREFIX}{}", name.to_uppercase());
        total = total.saturating_add(key.len() + value.len() + 2);
        if total > MAX_ENV_PARAMS_TOTAL {
            break;
        }
        vars.push((key, value));
    }
    vars
}

/// Everything needed to launch one Attune action.
#[derive(Debug, Clone)]
pub struct AttuneAction<'a> {
    pub runner: AttuneRunner,
    /// Absolute path of `actions/<entry_point>`.
    pub entry_point: &'a Path,
    pub pack_dir: &'a Path,
    pub action_ref: &'a str,
    pub pack_ref: &'a str,
    /// Parameters with secrets already merged in (Attune's `merge_parameters_and_secrets`).
    pub parameters: &'a Value,
    pub param_format: ParamFormat,
    pub timeout: Duration,
}

/// The process for an Attune action: the interpreter with the entry file as its last argument
/// (`shell` → the file's shebang interpreter, else `/bin/sh`; `python` → `python3`; `node` →
/// `node`), cwd = pack directory, the parameter document on stdin, `ATTUNE_ACTION_*` variables,
/// the context variables `ATTUNE_ACTION`, `ATTUNE_PACK_REF`, `ATTUNE_PARAMETER_DELIVERY`,
/// `ATTUNE_PARAMETER_FORMAT`, and an inherited `ATTUNE_API_TOKEN` removed.
///
/// Errors only for a shell entry file that cannot be read (to look for its shebang).
pub fn command(action: &AttuneAction<'_>) -> std::io::Result<ProcessSpec> {
    let (program, args) = match action.runner {
        AttuneRunner::Shell => {
            let launch = script::via_interpreter(action.entry_point, Path::new("/bin/sh"))?;
            (launch.program, launch.args)
        }
        AttuneRunner::Python => (PathBuf::from("python3"), vec![action.entry_point.as_os_str().to_os_string()]),
        AttuneRunner::Node => (PathBuf::from("node"), vec![action.entry_point.as_os_str().to_os_string()]),
    };
    let mut spec = ProcessSpec::new(program);
    spec.args = args;
    spec.cwd = Some(action.pack_dir.to_path_buf());
    spec.timeout = action.timeout;
    spec.stdin = Some(params_document(action.parameters, action.param_format));
    spec.env_remove.push("ATTUNE_API_TOKEN".into());
    // Parameters first: a parameter called e.g. "pack_ref" must not shadow the context, and
    // `ATTUNE_ACTION_*` never collides with the names below (they have no such prefix).
    for (key, value) in env_vars(action.parameters) {
        spec.env.push((key.into(), value.into()));
    }
    let context = [
        ("ATTUNE_ACTION", action.action_ref),
        ("ATTUNE_PACK_REF", action.pack_ref),
        ("ATTUNE_PARAMETER_DELIVERY", "stdin"),
        ("ATTUNE_PARAMETER_FORMAT", action.param_format.as_str()),
    ];
    for (key, value) in context {
        spec.env.push((key.into(), value.into()));
    }
    Ok(spec)
}

/// Status and result object of an Attune action, as Attune's process executor builds them:
/// `{exit_code, stdout, stderr, result, [error,] stdout_truncated, stderr_truncated}`.
///
/// * `result` is parsed only when the exit code is 0 and stdout is not blank: json = the whole
///   (trimmed) stdout, else its last line; yaml = the whole; jsonl = every line that parses;
///   text = never. When parsed, `stdout` is emptied (Attune does not store it twice).
/// * A non-zero exit fails with `error` = the whole stderr when it has ≤ 5 lines, else its last
///   line; "Command exited with code N" when stderr is empty. Death by signal is exit code -1.
/// * Timeout: exit code -1, "Execution timed out after N seconds", status `Timeout`; cancel:
///   "Execution cancelled by user", status `Canceled`.
pub fn result(outcome: &ProcessOutcome, output_format: OutputFormat, timeout_secs: u64) -> (ExecStatus, Value) {
    let exit_code = outcome.exit_code.unwrap_or(-1);
    let (status, exit_code, parsed, error) = if outcome.timed_out {
        let error = format!("Execution timed out after {timeout_secs} seconds");
        (ExecStatus::Timeout, -1, None, Some(error))
    } else if outcome.canceled {
        let error = "Execution cancelled by user".to_owned();
        (ExecStatus::Canceled, exit_code, None, Some(error))
    } else if exit_code == 0 {
        let parsed = parse_output(&outcome.stdout, output_format);
        (ExecStatus::Succeeded, 0, parsed, None)
    } else {
        (ExecStatus::Failed, exit_code, None, Some(failure_message(&outcome.stderr, exit_code)))
    };
    let mut out = Map::new();
    out.insert("exit_code".into(), Value::from(exit_code));
    let stdout = if parsed.is_some() { String::new() } else { outcome.stdout.clone() };
    out.insert("stdout".into(), Value::String(stdout));
    out.insert("stderr".into(), Value::String(outcome.stderr.clone()));
    out.insert("result".into(), parsed.unwrap_or(Value::Null));
    if let Some(error) = error {
        out.insert("error".into(), Value::String(error));
    }
    out.insert("stdout_truncated".into(), Value::Bool(outcome.stdout_truncated));
    out.insert("stderr_truncated".into(), Value::Bool(outcome.stderr_truncated));
    (status, Value::Object(out))
}

fn failure_message(stderr: &str, exit_code: i32) -> String {
    if stderr.is_empty() {
        return format!("Command exited with code {exit_code}");
    }
    if stderr.lines().count() > 5 { stderr.lines().last().unwrap_or_default().to_owned() } else { stderr.to_owned() }
}

fn parse_output(stdout: &str, format: OutputFormat) -> Option<Value> {
    let trimmed = stdout.trim();
    if trimmed.is_empty() {
        return None;
    }
    match format {
        OutputFormat::Text => None,
        OutputFormat::Json => serde_json::from_str(trimmed).ok().or_else(|| {
            let last = trimmed.lines().last()?;
            serde_json::from_str(last).ok()
        }),
        OutputFormat::Yaml => serde_saphyr::from_str::<Value>(trimmed).ok(),
        OutputFormat::Jsonl => {
            let items: Vec<Value> = trimmed.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A small YAML emitter for parameter documents (serde-saphyr is built without its serializer).
// Strings are always double-quoted, so no value can turn into a boolean, number or null on the
// reader's side, whichever YAML version it speaks.

fn yaml_document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => yaml_block(value, 0, false, &mut out),
        Value::Array(items) if !items.is_empty() => yaml_block(value, 0, false, &mut out),
        other => {
            yaml_scalar(other, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Write a non-empty mapping or sequence, each line indented by `indent`, except the first when
/// `inline_first` (it follows a `- ` on the parent's line).
fn yaml_block(value: &Value, indent: usize, inline_first: bool, out: &mut String) {
    let pad = |first: bool, out: &mut String| {
        if !(first && inline_first) {
            out.push_str(&" ".repeat(indent));
        }
    };
    match value {
        Value::Object(map) => {
            for (i, (key, item)) in map.iter().enumerate() {
                pad(i == 0, out);
                yaml_key(key, out);
                out.push(':');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        out.push('\n');
                        yaml_block(item, indent + 2, false, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        yaml_block(item, indent, false, out);
                    }
                    scalar => {
                        out.push(' ');
                        yaml_scalar(scalar, out);
                        out.push('\n');
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pad(i == 0, out);
                out.push_str("- ");
                match item {
                    Value::Object(m) if !m.is_empty() => yaml_block(item, indent + 2, true, out),
                    Value::Array(a) if !a.is_empty() => yaml_block(item, indent + 2, true, out),
                    scalar => {
                        yaml_scalar(scalar, out);
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            yaml_scalar(scalar, out);
            out.push('\n');
        }
    }
}

fn yaml_key(key: &str, out: &mut String) {
    const SPECIAL: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"];
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !SPECIAL.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        out.push_str(key);
    } else {
        yaml_quoted(key, out);
    }
}

fn yaml_scalar(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => {
            // YAML 1.1 readers (PyYAML) need a dot in a float: "1e+16" would be a string.
            let repr = n.as_f64().map(super::st2::py_float_repr).unwrap_or_else(|| n.to_string());
            match repr.split_once('e') {
                Some((mantissa, exp)) if !mantissa.contains('.') => {
                    out.push_str(&format!("{mantissa}.0e{exp}"));
                }
                _ => out.push_str(&repr),
            }
        }
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => yaml_quoted(s, out),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A YAML double-quoted scalar; escapes everything YAML does not allow raw (C0/C1 controls,
/// DEL, BOM, U+FFFE/U+FFFF).
fn yaml_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || (0x7F..=0x9F).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn check_doc(params: Value, format: ParamFormat, expect: Expect) {
        let doc = params_document(&params, format);
        expect.assert_eq(&String::from_utf8_lossy(&doc));
    }

    fn sample() -> Value {
        json!({
            "message": "It's \"fine\"",
            "count": 42,
            "ratio": 0.5,
            "enabled": true,
            "nothing": null,
            "tags": ["a", "b c"],
            "headers": {"Content-Type": "application/json", "deep": {"x": 1}},
            "a": "top",
            "empty": {},
        })
    }

    #[test]
    fn json_document_is_one_compact_line() {
        check_doc(
            sample(),
            ParamFormat::Json,
            expect![[r#"
                {"message":"It's \"fine\"","count":42,"ratio":0.5,"enabled":true,"nothing":null,"tags":["a","b c"],"headers":{"Content-Type":"application/json","deep":{"x":1}},"a":"top","empty":{}}
            "#]],
        );
    }

    #[test]
    fn dotenv_document() {
        check_doc(
            sample(),
            ParamFormat::Dotenv,
            expect![[r#"
                a='top'
                count='42'
                enabled='true'
                headers.Content-Type='application/json'
                headers.deep.x='1'
                message='It'\''s "fine"'
                nothing=''
                ratio='0.5'
                tags='["a","b c"]'
            "#]],
        );
        // Lines, not keys, are sorted: "a.b=" before "a=".
        check_doc(
            json!({"a": "1", "a.b": "2"}),
            ParamFormat::Dotenv,
            expect![[r#"
                a.b='2'
                a='1'
            "#]],
        );
        assert_eq!(params_document(&json!({}), ParamFormat::Dotenv), b"\n");
    }

    #[test]
    fn dotenv_document_sources_in_sh() {
        let doc = params_document(&json!({"msg": "it's $HOME `x`\nline2", "n": 3}), ParamFormat::Dotenv);
        let mut spec = ProcessSpec::new("/bin/sh");
        spec.args = vec!["-c".into(), ". /dev/stdin; printf '%s|%s' \"$msg\" \"$n\"".into()];
        spec.stdin = Some(doc);
        let out = smol::block_on(super::super::process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stdout, "it's $HOME `x`\nline2|3");
    }

    #[test]
    fn yaml_document() {
        check_doc(
            sample(),
            ParamFormat::Yaml,
            expect![[r#"
                message: "It's \"fine\""
                count: 42
                ratio: 0.5
                enabled: true
                nothing: null
                tags:
                - "a"
                - "b c"
                headers:
                  Content-Type: "application/json"
                  deep:
                    x: 1
                a: "top"
                empty: {}
            "#]],
        );
        check_doc(
            json!({"list": [{"k": "v", "k2": [1, 2]}, [true, []], "x"], "yes": "no", "1a": 1e16,
                   "ctl": "\u{7}\u{85}\u{feff}"}),
            ParamFormat::Yaml,
            expect![[r#"
                list:
                - k: "v"
                  k2:
                  - 1
                  - 2
                - - true
                  - []
                - "x"
                "yes": "no"
                "1a": 1.0e+16
                ctl: "\x07\x85\ufeff"
            "#]],
        );
        assert_eq!(params_document(&json!({}), ParamFormat::Yaml), b"{}\n");
    }

    #[test]
    fn yaml_document_round_trips_through_a_yaml_reader() {
        let params = json!({
            "s": "on", "n": "123", "t": "a\tb\n\"c\"\\", "list": [{"k": [1, {"z": null}]}, "y"],
            "f": 1e16, "nested": {"deeper": {"deepest": ["x"]}}, "odd key: #": "v"
        });
        let doc = params_document(&params, ParamFormat::Yaml);
        let text = String::from_utf8_lossy(&doc);
        let back: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, params, "{text}");
    }

    #[test]
    fn env_vars_follow_the_seed_contract() {
        let vars = env_vars(&json!({
            "message": "Hello, World!",
            "uppercase": true,
            "count": 3,
            "nothing": null,
            "list": [1, "a"],
            "bad=name": "x",
            "nul": "a\u{0}b",
            "dotted.name": "ok",
        }));
        expect![[r#"
            [
                (
                    "ATTUNE_ACTION_MESSAGE",
                    "Hello, World!",
                ),
                (
                    "ATTUNE_ACTION_UPPERCASE",
                    "true",
                ),
                (
                    "ATTUNE_ACTION_COUNT",
                    "3",
                ),
                (
                    "ATTUNE_ACTION_NOTHING",
                    "null",
                ),
                (
                    "ATTUNE_ACTION_LIST",
                    "[1,\"a\"]",
                ),
                (
                    "ATTUNE_ACTION_DOTTED.NAME",
                    "ok",
                ),
            ]
        "#]]
        .assert_debug_eq(&vars);
    }

    #[test]
    fn env_vars_limits() {
        let big = "x".repeat(MAX_ENV_PARAM_BYTES + 1);
        let fits = "y".repeat(MAX_ENV_PARAM_BYTES);
        let vars = env_vars(&json!({"big": big, "fits": fits}));
        assert_eq!(vars.len(), 1);
        assert_eq!(vars.first().map(|v| v.0.as_str()), Some("ATTUNE_ACTION_FITS"));
        let mut many = Map::new();
        for i in 0..20 {
            many.insert(format!("p{i:02}"), Value::String("z".repeat(MAX_ENV_PARAM_BYTES)));
        }
        let vars = env_vars(&Value::Object(many));
        let total: usize = vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        assert!(total <= MAX_ENV_PARAMS_TOTAL);
        assert_eq!(vars.len(), MAX_ENV_PARAMS_TOTAL / (MAX_ENV_PARAM_BYTES + 18));
    }

    fn outcome(code: Option<i32>, stdout: &str, stderr: &str) -> ProcessOutcome {
        ProcessOutcome::finished(code, stdout, stderr)
    }

    fn check_result(o: &ProcessOutcome, format: OutputFormat, expect: Expect) {
        let (status, value) = result(o, format, 30);
        expect.assert_eq(&format!("{} {value}", status.as_str()));
    }

    #[test]
    fn results() {
        let ok = |s: &str| outcome(Some(0), s, "");
        check_result(
            &ok("{\n  \"a\": 1\n}\n"),
            OutputFormat::Json,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"","stderr":"","result":{"a":1},"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("starting\nworking\n{\"done\": true}\n"),
            OutputFormat::Json,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"","stderr":"","result":{"done":true},"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("no json here\n"),
            OutputFormat::Json,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"no json here\n","stderr":"","result":null,"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("{\"a\": 1}"),
            OutputFormat::Text,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"{\"a\": 1}","stderr":"","result":null,"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("key: value\nlist: [1, yes]\n"),
            OutputFormat::Yaml,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"","stderr":"","result":{"key":"value","list":[1,true]},"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("{\"a\":1}\nnoise\n{\"b\":2}\n"),
            OutputFormat::Jsonl,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"","stderr":"","result":[{"a":1},{"b":2}],"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &ok("  \n"),
            OutputFormat::Json,
            expect![[
                r#"succeeded {"exit_code":0,"stdout":"  \n","stderr":"","result":null,"stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        // Output is never parsed on failure.
        check_result(
            &outcome(Some(2), "{\"a\":1}", "boom\n"),
            OutputFormat::Json,
            expect![[
                r#"failed {"exit_code":2,"stdout":"{\"a\":1}","stderr":"boom\n","result":null,"error":"boom\n","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &outcome(Some(1), "", "1\n2\n3\n4\n5\n6 last\n"),
            OutputFormat::Text,
            expect![[
                r#"failed {"exit_code":1,"stdout":"","stderr":"1\n2\n3\n4\n5\n6 last\n","result":null,"error":"6 last","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &outcome(Some(1), "", "1\n2\n3\n4\n5\n"),
            OutputFormat::Text,
            expect![[
                r#"failed {"exit_code":1,"stdout":"","stderr":"1\n2\n3\n4\n5\n","result":null,"error":"1\n2\n3\n4\n5\n","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        check_result(
            &outcome(Some(7), "", ""),
            OutputFormat::Text,
            expect![[
                r#"failed {"exit_code":7,"stdout":"","stderr":"","result":null,"error":"Command exited with code 7","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        let mut signaled = outcome(None, "", "");
        signaled.signal = Some(9);
        check_result(
            &signaled,
            OutputFormat::Text,
            expect![[
                r#"failed {"exit_code":-1,"stdout":"","stderr":"","result":null,"error":"Command exited with code -1","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
        let mut timed = outcome(None, "{\"a\":1}", "");
        timed.timed_out = true;
        timed.signal = Some(15);
        timed.stdout_truncated = true;
        check_result(
            &timed,
            OutputFormat::Json,
            expect![[
                r#"timeout {"exit_code":-1,"stdout":"{\"a\":1}","stderr":"","result":null,"error":"Execution timed out after 30 seconds","stdout_truncated":true,"stderr_truncated":false}"#
            ]],
        );
        let mut canceled = outcome(None, "", "");
        canceled.canceled = true;
        canceled.signal = Some(15);
        check_result(
            &canceled,
            OutputFormat::Text,
            expect![[
                r#"canceled {"exit_code":-1,"stdout":"","stderr":"","result":null,"error":"Execution cancelled by user","stdout_truncated":false,"stderr_truncated":false}"#
            ]],
        );
    }

    #[test]
    fn command_runs_a_shell_action_end_to_end() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let actions = dir.path().join("actions");
        std::fs::create_dir_all(&actions).unwrap_or_else(|e| panic!("{e}"));
        let entry = actions.join("echo.sh");
        // No shebang and no exec bit: runs as `/bin/sh echo.sh`.
        std::fs::write(
            &entry,
            "read -r line\nprintf '%s|%s|%s|%s|%s\\n' \"$ATTUNE_ACTION_MESSAGE\" \"$ATTUNE_ACTION\" \
             \"$ATTUNE_PARAMETER_FORMAT\" \"$(basename \"$(pwd)\")\" \"${ATTUNE_API_TOKEN:-none}\"\n\
             printf '%s\\n' \"$line\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let params = json!({"message": "hi"});
        let action = AttuneAction {
            runner: AttuneRunner::Shell,
            entry_point: &entry,
            pack_dir: dir.path(),
            action_ref: "demo.echo",
            pack_ref: "demo",
            parameters: &params,
            param_format: ParamFormat::Json,
            timeout: Duration::from_secs(10),
        };
        let spec = command(&action).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.program, PathBuf::from("/bin/sh"));
        let out = smol::block_on(super::super::process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        let dirname = dir.path().file_name().map(|n| n.to_string_lossy().into_owned());
        assert_eq!(
            out.stdout,
            format!("hi|demo.echo|json|{}|none\n{{\"message\":\"hi\"}}\n", dirname.unwrap_or_default())
        );
        let (status, value) = result(&out, OutputFormat::Json, 10);
        assert_eq!(status, ExecStatus::Succeeded);
        assert_eq!(value["result"], json!({"message": "hi"}));
    }

    #[test]
    fn command_interpreters() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let entry = dir.path().join("a.sh");
        std::fs::write(&entry, "#!/bin/bash -e\necho\n").unwrap_or_else(|e| panic!("{e}"));
        let params = json!({});
        let mut action = AttuneAction {
            runner: AttuneRunner::Shell,
            entry_point: &entry,
            pack_dir: dir.path(),
            action_ref: "p.a",
            pack_ref: "p",
            parameters: &params,
            param_format: ParamFormat::Dotenv,
            timeout: Duration::from_secs(1),
        };
        let spec = command(&action).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.program, PathBuf::from("/bin/bash"));
        assert_eq!(spec.args, vec!["-e".into(), entry.clone().into_os_string()]);
        assert_eq!(spec.env_remove, vec![std::ffi::OsString::from("ATTUNE_API_TOKEN")]);
        action.runner = AttuneRunner::Python;
        let spec = command(&action).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((spec.program, spec.args), (PathBuf::from("python3"), vec![entry.clone().into_os_string()]));
        action.runner = AttuneRunner::Node;
        assert_eq!(command(&action).map(|s| s.program).ok(), Some(PathBuf::from("node")));
        let missing = dir.path().join("missing.sh");
        action.runner = AttuneRunner::Shell;
        action.entry_point = &missing;
        assert!(command(&action).is_err());
        assert_eq!(AttuneRunner::parse("bash"), Some(AttuneRunner::Shell));
        assert_eq!(AttuneRunner::parse("node.js"), Some(AttuneRunner::Node));
        assert_eq!(AttuneRunner::parse("java"), None);
    }
}
