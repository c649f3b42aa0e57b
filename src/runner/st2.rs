//! StackStorm runner semantics as pure functions: how action parameters become a script's argv
//! (`local-shell-script`), how a python-script action is launched through the shim's wrapper, and
//! how a finished process becomes StackStorm's status and result object
//! (`reference/stackstorm.md` §3.1–3.3, §16 items 6–8).
//!
//! Nothing here spawns or waits: it builds [`ProcessSpec`]s and reads [`ProcessOutcome`]s. It
//! does not validate or cast parameters (the pack schema code does that before we are called).
//! Python's `str()`/`repr()`/`json.dumps()` are reproduced because st2 puts exactly those strings
//! in front of scripts.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::ExecStatus;
use super::process::{ProcessOutcome, ProcessSpec};
use super::script;

/// Frames the result the Python wrapper prints (`ACTION_OUTPUT_RESULT_DELIMITER`).
pub const PYTHON_RESULT_DELIMITER: &str = "%%%%%~=~=~=************=~=~=~%%%%";

/// Exit code of the wrapper when `run()` returned a 2-tuple whose first item is not a bool
/// (`PYTHON_RUNNER_INVALID_ACTION_STATUS_EXIT_CODE`).
pub const PYTHON_INVALID_STATUS_EXIT_CODE: i32 = 220;

/// File name of the action wrapper inside the shim directory.
pub const PYTHON_WRAPPER: &str = "packd_action_wrapper.py";

/// Return code st2 records for a timed-out shell action (`-1 * SIGKILL`), whatever signal
/// actually ended it.
pub const TIMEOUT_RETURN_CODE: i64 = -9;

/// One action parameter as the script runner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptParam {
    pub name: String,
    /// The declared `type` (`string`, `integer`, ...), if any.
    pub ty: Option<String>,
    pub position: Option<u32>,
    /// `Null` when the parameter has no value.
    pub value: Value,
}

/// The argv tail StackStorm gives a `local-shell-script`: named arguments first, in the order of
/// `params`, then positional ones by position.
///
/// st2 shell-quotes every part (`quote_unix`) and lets `/bin/sh` split the line again; we exec
/// without a shell and pass each part as one argv element, which is exactly what the script
/// receives under st2.
///
/// * Named: `Null` and `""` are left out; `true` → bare `<op><name>`; `false` is left out;
///   everything else → `<op><name>=<str(value)>` (lists and dicts in Python repr).
/// * Positional (`serialize_positional_argument`): `string`/`number` → `str(v)` (null → `""`);
///   `boolean` → `"1"`/`"0"`; `array` → `",".join(map(str, v))`; `object` → `json.dumps(v)`;
///   `null` → `""`; any other or no type, `integer` included → `str(v) if v else ""`, so integer
///   0 becomes `""`. A missing value is `""`, so positions never shift.
/// * Two parameters with the same position: the later one wins the position and the other one
///   becomes a named argument, as in st2 (its dict keyed by position).
pub fn script_args(params: &[ScriptParam], kwarg_op: &str) -> Vec<String> {
    let mut by_position: BTreeMap<u32, &ScriptParam> = BTreeMap::new();
    for param in params {
        if let Some(position) = param.position {
            by_position.insert(position, param);
        }
    }
    let positional_names: HashSet<&str> = by_position.values().map(|p| p.name.as_str()).collect();

    let mut args = Vec::new();
    for param in params {
        if positional_names.contains(param.name.as_str()) {
            continue;
        }
        match &param.value {
            Value::Null | Value::Bool(false) => {}
            Value::String(s) if s.is_empty() => {}
            Value::Bool(true) => args.push(format!("{kwarg_op}{}", param.name)),
            other => args.push(format!("{kwarg_op}{}={}", param.name, py_str(other))),
        }
    }
    for param in by_position.values() {
        args.push(positional_arg(param.ty.as_deref(), &param.value));
    }
    args
}

fn positional_arg(ty: Option<&str>, value: &Value) -> String {
    match (ty, value) {
        (Some("string" | "number" | "boolean" | "array" | "object"), Value::Null) => String::new(),
        (Some("string" | "number"), v) => py_str(v),
        (Some("boolean"), v) => if py_truthy(v) { "1" } else { "0" }.to_owned(),
        (Some("array"), v) if !py_truthy(v) => String::new(),
        (Some("array"), Value::Array(items)) => items.iter().map(py_str).collect::<Vec<_>>().join(","),
        // `",".join(v)` iterates whatever it is given: a string's characters, a dict's keys.
        (Some("array"), Value::String(s)) => s.chars().map(String::from).collect::<Vec<_>>().join(","),
        (Some("array"), Value::Object(map)) => map.keys().cloned().collect::<Vec<_>>().join(","),
        // st2 raises TypeError on a non-iterable; we degrade to `str(v)` instead of failing.
        (Some("array"), v) => py_str(v),
        (Some("object"), v) if !py_truthy(v) => String::new(),
        (Some("object"), v) => py_json_dumps(v),
        (Some("null"), _) => String::new(),
        (_, v) if py_truthy(v) => py_str(v),
        _ => String::new(),
    }
}

/// `/bin/sh -c <cmd>`: how `local-shell-cmd` runs its `cmd` (Python `shell=True`).
pub fn shell_command(cmd: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new("/bin/sh");
    spec.args = vec!["-c".into(), cmd.into()];
    spec
}

/// How `local-shell-script` runs `script` with `args` (see [`script_args`]): directly when
/// executable, else through its shebang interpreter or `/bin/sh` (st2 would `chmod +x` it).
pub fn script_command(script: &Path, args: &[String]) -> std::io::Result<ProcessSpec> {
    let launch = script::direct_or_interpreter(script, Path::new("/bin/sh"))?;
    let mut spec = ProcessSpec::new(launch.program);
    spec.args = launch.args;
    spec.args.extend(args.iter().map(OsString::from));
    Ok(spec)
}

/// The exit code as Python's `subprocess` reports it: `-N` for death by signal N.
fn return_code(outcome: &ProcessOutcome) -> i64 {
    match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => i64::from(code),
        (None, Some(sig)) => -i64::from(sig),
        (None, None) => -1,
    }
}

fn timeout_error(timeout_secs: u64) -> String {
    format!("Action failed to complete in {timeout_secs} seconds")
}

/// Status and result object of `local-shell-cmd` / `local-shell-script`:
/// `{failed, succeeded, return_code, stdout, stderr[, error]}`. One trailing `\n`, then one `\r`,
/// is stripped from stdout/stderr, which are then JSON-decoded when they parse. A timeout records
/// return code -9 and the error "Action failed to complete in N seconds".
pub fn shell_result(outcome: &ProcessOutcome, timeout_secs: u64) -> (ExecStatus, Value) {
    let rc = if outcome.timed_out { TIMEOUT_RETURN_CODE } else { return_code(outcome) };
    let succeeded = rc == 0;
    let mut result = Map::new();
    result.insert("failed".into(), Value::Bool(!succeeded));
    result.insert("succeeded".into(), Value::Bool(succeeded));
    result.insert("return_code".into(), Value::from(rc));
    result.insert("stdout".into(), json_or_string(strip_shell_chars(&outcome.stdout)));
    result.insert("stderr".into(), json_or_string(strip_shell_chars(&outcome.stderr)));
    let status = if outcome.timed_out {
        result.insert("error".into(), Value::String(timeout_error(timeout_secs)));
        ExecStatus::Timeout
    } else if outcome.canceled {
        ExecStatus::Canceled
    } else if succeeded {
        ExecStatus::Succeeded
    } else {
        ExecStatus::Failed
    };
    (status, Value::Object(result))
}

/// st2's `strip_shell_chars`: drop one trailing `"\n"`, then one trailing `"\r"`.
pub fn strip_shell_chars(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

fn json_or_string(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// Status and result object of a `python-script` action: `{stdout, stderr, exit_code, result
/// [, error]}`. The wrapper's `{"result", "status"}` JSON sits between two
/// [`PYTHON_RESULT_DELIMITER`]s; what the action printed around it stays in `stdout`. No
/// delimiter (an exception, a timeout) → `result` is the string `"None"`, as in st2.
pub fn python_result(outcome: &ProcessOutcome, timeout_secs: u64) -> (ExecStatus, Value) {
    let exit_code = if outcome.timed_out { TIMEOUT_RETURN_CODE } else { return_code(outcome) };
    let mut error = outcome.timed_out.then(|| timeout_error(timeout_secs));
    let mut stdout = outcome.stdout.clone();
    let mut result = Value::String("None".into());
    let mut flag: Option<Value> = None;
    let mut forced_failure = false;

    if exit_code == i64::from(PYTHON_INVALID_STATUS_EXIT_CODE) {
        // st2 raises ValueError(stderr) here, which fails the execution with that message.
        forced_failure = true;
        error = Some(outcome.stderr.trim().to_owned());
    } else if outcome.stdout.contains(PYTHON_RESULT_DELIMITER) {
        let parts: Vec<&str> = outcome.stdout.split(PYTHON_RESULT_DELIMITER).collect();
        if let [before, framed, after] = parts.as_slice() {
            stdout = format!("{before}{after}");
            (result, flag) = parse_framed_result(framed.trim());
        } else {
            forced_failure = true;
            error = Some(format!("The result length should be 3, was {}.", parts.len()));
        }
    }

    let mut status = match &flag {
        Some(flag) if exit_code == 0 && *flag == Value::Bool(true) => ExecStatus::Succeeded,
        Some(_) => ExecStatus::Failed,
        None if exit_code == 0 => ExecStatus::Succeeded,
        None => ExecStatus::Failed,
    };
    if forced_failure {
        status = ExecStatus::Failed;
    }
    if outcome.canceled {
        status = ExecStatus::Canceled;
    }
    if outcome.timed_out {
        status = ExecStatus::Timeout;
    }

    let mut output = Map::new();
    output.insert("stdout".into(), Value::String(stdout));
    output.insert("stderr".into(), Value::String(outcome.stderr.clone()));
    output.insert("exit_code".into(), Value::from(exit_code));
    output.insert("result".into(), result);
    if let Some(error) = error {
        output.insert("error".into(), Value::String(error));
    }
    (status, Value::Object(output))
}

/// The middle part between the delimiters → (result, status flag), as `_get_output_values`.
fn parse_framed_result(framed: &str) -> (Value, Option<Value>) {
    if framed.is_empty() {
        return (Value::String("None".into()), None);
    }
    match serde_json::from_str::<Value>(framed) {
        Ok(parsed) if !py_truthy(&parsed) => (Value::String("None".into()), None),
        Ok(Value::Object(mut map)) => {
            let result = map.remove("result").unwrap_or(Value::Null);
            let flag = map.remove("status").filter(|s| !s.is_null());
            (result, flag)
        }
        Ok(Value::String(s)) => (Value::String(result_from_repr(&s)), None),
        Ok(other) => (other, None),
        // Not JSON: the wrapper printed `str(dict)`; st2 fishes the result out with a regex.
        Err(_) => (Value::String(result_from_repr(framed)), None),
    }
}

/// `re.search("'result': (.*?)$", s)` → group 1, else `s`: the earliest `'result': ` after which
/// the rest of the text is one line (`$` also matches before a final newline).
fn result_from_repr(s: &str) -> String {
    const KEY: &str = "'result': ";
    for (at, _) in s.match_indices(KEY) {
        let rest = s.get(at + KEY.len()..).unwrap_or_default();
        let line = rest.strip_suffix('\n').unwrap_or(rest);
        if !line.contains('\n') {
            return line.to_owned();
        }
    }
    s.to_owned()
}

/// Everything needed to launch one python-script action.
#[derive(Debug, Clone)]
pub struct PythonAction<'a> {
    /// Pack ref (directory name), used for the datastore key prefix and config errors.
    pub pack: &'a str,
    pub pack_dir: &'a Path,
    /// Absolute path of the action's `.py` file.
    pub entry_point: &'a Path,
    /// Every declared parameter (missing ones as `null`: `run()` gets them all as kwargs).
    pub parameters: &'a Value,
    /// The pack config (`{}` when there is none).
    pub config: &'a Value,
    /// `log_level` runner parameter (`DEBUG` by default in st2).
    pub log_level: &'a str,
    /// The pack's virtualenv directory; used only if it exists.
    pub virtualenv: &'a Path,
    /// Where [`super::shim::install_python_shim`] put the shim.
    pub shim_dir: &'a Path,
    /// The agent's datastore socket, exported as `PACKD_SOCKET`.
    pub socket: Option<&'a Path>,
    /// The `env` runner parameter (a `PYTHONPATH` in it is ignored, as in st2).
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

/// The process for a python-script action: `<venv>/bin/python` (or `python3` when the pack has
/// no virtualenv) `-u <shim>/packd_action_wrapper.py --pack=.. --file-path=.. --stdin-parameters
/// --log-level=..`, with `PYTHONPATH` = shim, venv site-packages, `<pack>/actions/lib`, inherited,
/// and `PATH` = the venv's `bin` (if any) + the agent's `PATH` (a `PATH` or `PYTHONPATH` in the
/// `env` runner parameter does not win, as in st2's sandboxing).
///
/// Unlike st2, parameters and config always travel on stdin (one line,
/// `{"parameters": {...}, "config": {...}}`), never in `--parameters=`/`--config=`: argv is
/// readable by every local user through `/proc/<pid>/cmdline`, and both carry secrets. This also
/// removes st2's switch to stdin at 128 KiB (Linux refuses longer argv strings). The wrapper still
/// accepts the st2 flags.
pub fn python_command(action: &PythonAction<'_>) -> ProcessSpec {
    let venv = action.virtualenv.is_dir().then_some(action.virtualenv);
    let program = match venv {
        Some(venv) => venv.join("bin").join("python"),
        None => PathBuf::from("python3"),
    };
    let mut spec = ProcessSpec::new(program);
    spec.timeout = action.timeout;
    spec.args = vec![
        "-u".into(),
        action.shim_dir.join(PYTHON_WRAPPER).into_os_string(),
        super::script::os_concat("--pack=", action.pack.as_ref()),
        super::script::os_concat("--file-path=", action.entry_point.as_os_str()),
        "--stdin-parameters".into(),
        super::script::os_concat("--log-level=", action.log_level.as_ref()),
    ];
    let mut doc = Map::new();
    doc.insert("parameters".into(), action.parameters.clone());
    doc.insert("config".into(), action.config.clone());
    let mut stdin = Value::Object(doc).to_string().into_bytes();
    stdin.push(b'\n');
    spec.stdin = Some(stdin);

    let mut pythonpath = vec![action.shim_dir.as_os_str().to_os_string()];
    if let Some(venv) = venv {
        pythonpath.extend(site_packages(venv).into_iter().map(PathBuf::into_os_string));
    }
    pythonpath.push(action.pack_dir.join("actions").join("lib").into_os_string());
    if let Some(inherited) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        pythonpath.push(inherited);
    }

    for (key, value) in action.env {
        if key != "PYTHONPATH" {
            spec.env.push((key.into(), value.into()));
        }
    }
    spec.env.push(("PYTHONPATH".into(), super::script::join_paths(&pythonpath)));
    let inherited_path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let path = match venv {
        Some(venv) => super::script::join_paths(&[venv.join("bin").into_os_string(), inherited_path]),
        None => inherited_path,
    };
    spec.env.push(("PATH".into(), path));
    if let Some(socket) = action.socket {
        spec.env.push(("PACKD_SOCKET".into(), socket.into()));
    }
    spec
}

/// `<venv>/lib/python*/site-packages` directories, sorted.
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// Python's str(), repr(), truthiness and json.dumps() for JSON values.

// str(), repr() and float repr are the template engine's (one implementation of Python's
// printing rules for the whole agent).
pub use crate::expr::{python_float_repr as py_float_repr, python_repr as py_repr, python_str as py_str};

/// Python's truthiness: `None`, `False`, `0`, `0.0`, `""`, `[]`, `{}` are false.
pub fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn py_number(n: &serde_json::Number) -> String {
    if n.is_f64() { n.as_f64().map(py_float_repr).unwrap_or_else(|| n.to_string()) } else { n.to_string() }
}

/// Python `json.dumps(v)` with its defaults: `", "` and `": "` separators, `ensure_ascii`
/// (`\u00e9`, surrogate pairs above the BMP), floats as `repr(float)`.
pub fn py_json_dumps(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&py_number(n)),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_str(key, out);
                out.push_str(": ");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    crate::expr::filters::json_str(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn param(name: &str, ty: Option<&str>, position: Option<u32>, value: Value) -> ScriptParam {
        ScriptParam { name: name.into(), ty: ty.map(str::to_owned), position, value }
    }

    fn check_args(params: &[ScriptParam], expect: Expect) {
        expect.assert_debug_eq(&script_args(params, "--"));
    }

    fn check_positional(ty: Option<&str>, value: Value, expect: Expect) {
        let args = script_args(&[param("p", ty, Some(1), value)], "--");
        expect.assert_eq(&format!("{args:?}"));
    }

    fn check_named(value: Value, expect: Expect) {
        let args = script_args(&[param("n", Some("string"), None, value)], "--");
        expect.assert_eq(&format!("{args:?}"));
    }

    #[test]
    fn named_arguments() {
        check_named(json!("hello world"), expect![[r#"["--n=hello world"]"#]]);
        check_named(json!(""), expect!["[]"]);
        check_named(Value::Null, expect!["[]"]);
        check_named(json!(true), expect![[r#"["--n"]"#]]);
        check_named(json!(false), expect!["[]"]);
        check_named(json!(0), expect![[r#"["--n=0"]"#]]);
        check_named(json!(2.0), expect![[r#"["--n=2.0"]"#]]);
        check_named(json!([]), expect![[r#"["--n=[]"]"#]]);
        check_named(json!(["a", 1, true, null, "it's"]), expect![[r#"["--n=['a', 1, True, None, \"it's\"]"]"#]]);
        check_named(json!({"k": {"x": [1.5]}, "q": "v"}), expect![[r#"["--n={'k': {'x': [1.5]}, 'q': 'v'}"]"#]]);
        check_named(json!("it's \"x\""), expect![[r#"["--n=it's \"x\""]"#]]);
        let args = script_args(&[param("n", None, None, json!(1))], "-");
        assert_eq!(args, ["-n=1"]);
        let args = script_args(&[param("flag", None, None, json!(true))], "/");
        assert_eq!(args, ["/flag"]);
    }

    #[test]
    fn positional_arguments_by_type() {
        check_positional(Some("string"), json!("a b"), expect![[r#"["a b"]"#]]);
        check_positional(Some("string"), Value::Null, expect![[r#"[""]"#]]);
        check_positional(Some("string"), json!(""), expect![[r#"[""]"#]]);
        check_positional(Some("string"), json!(0), expect![[r#"["0"]"#]]);
        check_positional(Some("number"), json!(1.5), expect![[r#"["1.5"]"#]]);
        check_positional(Some("number"), json!(3.0), expect![[r#"["3.0"]"#]]);
        check_positional(Some("number"), json!(0), expect![[r#"["0"]"#]]);
        check_positional(Some("number"), Value::Null, expect![[r#"[""]"#]]);
        check_positional(Some("boolean"), json!(true), expect![[r#"["1"]"#]]);
        check_positional(Some("boolean"), json!(false), expect![[r#"["0"]"#]]);
        check_positional(Some("boolean"), Value::Null, expect![[r#"[""]"#]]);
        check_positional(Some("array"), json!(["a", 1, 2.5]), expect![[r#"["a,1,2.5"]"#]]);
        check_positional(Some("array"), json!([]), expect![[r#"[""]"#]]);
        check_positional(Some("array"), json!("abc"), expect![[r#"["a,b,c"]"#]]);
        check_positional(Some("array"), json!([["x"], {"k": 1}]), expect![[r#"["['x'],{'k': 1}"]"#]]);
        check_positional(
            Some("object"),
            json!({"a": 1, "b": [true, null], "é": "ü"}),
            expect![[r#"["{\"a\": 1, \"b\": [true, null], \"\\u00e9\": \"\\u00fc\"}"]"#]],
        );
        check_positional(Some("object"), json!({}), expect![[r#"[""]"#]]);
        check_positional(Some("null"), json!("x"), expect![[r#"[""]"#]]);
        check_positional(Some("integer"), json!(0), expect![[r#"[""]"#]]);
        check_positional(Some("integer"), json!(7), expect![[r#"["7"]"#]]);
        check_positional(Some("integer"), Value::Null, expect![[r#"[""]"#]]);
        check_positional(None, json!(false), expect![[r#"[""]"#]]);
        check_positional(None, json!(true), expect![[r#"["True"]"#]]);
        check_positional(Some("weird"), json!([1]), expect![[r#"["[1]"]"#]]);
    }

    #[test]
    fn named_first_then_positional_by_position() {
        check_args(
            &[
                param("third", Some("string"), Some(3), json!("c")),
                param("verbose", Some("boolean"), None, json!(true)),
                param("first", Some("string"), Some(1), json!("a")),
                param("missing", Some("string"), Some(2), Value::Null),
                param("name", Some("string"), None, json!("x y")),
                param("quiet", Some("boolean"), None, json!(false)),
            ],
            expect![[r#"
                [
                    "--verbose",
                    "--name=x y",
                    "a",
                    "",
                    "c",
                ]
            "#]],
        );
        // Gaps in positions do not add empty arguments; a shared position goes to the later
        // parameter, and the loser becomes a named argument.
        check_args(
            &[
                param("a", Some("string"), Some(5), json!("five")),
                param("b", Some("string"), Some(1), json!("one")),
                param("c", Some("string"), Some(5), json!("also five")),
            ],
            expect![[r#"
                [
                    "--a=five",
                    "one",
                    "also five",
                ]
            "#]],
        );
    }

    #[test]
    fn python_reprs() {
        let check = |v: Value, e: Expect| e.assert_eq(&py_repr(&v));
        check(json!("plain"), expect!["'plain'"]);
        check(json!("it's"), expect![[r#""it's""#]]);
        check(json!("both ' and \""), expect![[r#"'both \' and "'"#]]);
        check(
            json!("tab\tnl\nbs\\ bell\u{7} del\u{7f} nbsp\u{a0} é 😀"),
            expect![[r#"'tab\tnl\nbs\\ bell\x07 del\x7f nbsp\xa0 é 😀'"#]],
        );
        check(json!("zw\u{200b} ls\u{2028}"), expect![[r#"'zw\u200b ls\u2028'"#]]);
        check(json!({"a": null, "b": false}), expect!["{'a': None, 'b': False}"]);
        check(json!(-5), expect!["-5"]);
        check(json!(18446744073709551615u64), expect!["18446744073709551615"]);
    }

    #[test]
    fn python_float_reprs() {
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000123, "0.000123"),
            (0.0000123, "1.23e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e300, "1e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::INFINITY, "inf"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn python_json_dumps() {
        let v = json!({"s": "q\"b\\n\n\u{1}\u{7f}", "emoji": "😀", "f": 1.0, "l": [], "o": {}});
        expect![[r#"{"s": "q\"b\\n\n\u0001\u007f", "emoji": "\ud83d\ude00", "f": 1.0, "l": [], "o": {}}"#]]
            .assert_eq(&py_json_dumps(&v));
    }

    fn outcome(code: Option<i32>, stdout: &str, stderr: &str) -> ProcessOutcome {
        ProcessOutcome::finished(code, stdout, stderr)
    }

    fn check_shell(o: &ProcessOutcome, expect: Expect) {
        let (status, result) = shell_result(o, 60);
        expect.assert_eq(&format!("{} {result}", status.as_str()));
    }

    #[test]
    fn shell_results() {
        check_shell(
            &outcome(Some(0), "hello\n", ""),
            expect![[r#"succeeded {"failed":false,"succeeded":true,"return_code":0,"stdout":"hello","stderr":""}"#]],
        );
        check_shell(
            &outcome(Some(0), "{\"a\": 1}\n", "[1,2]\r\n"),
            expect![[r#"succeeded {"failed":false,"succeeded":true,"return_code":0,"stdout":{"a":1},"stderr":[1,2]}"#]],
        );
        // Only one "\n" then one "\r"; "\n\r" keeps its "\n"; JSON scalars decode too.
        check_shell(
            &outcome(Some(1), "a\n\n", "b\n\r"),
            expect![[r#"failed {"failed":true,"succeeded":false,"return_code":1,"stdout":"a\n","stderr":"b\n"}"#]],
        );
        check_shell(
            &outcome(Some(2), "42\n", "null"),
            expect![[r#"failed {"failed":true,"succeeded":false,"return_code":2,"stdout":42,"stderr":null}"#]],
        );
        check_shell(
            &outcome(Some(0), " true \n", "NaN"),
            expect![[r#"succeeded {"failed":false,"succeeded":true,"return_code":0,"stdout":true,"stderr":"NaN"}"#]],
        );
        let mut timed = outcome(None, "partial\n", "");
        timed.signal = Some(15);
        timed.timed_out = true;
        check_shell(
            &timed,
            expect![[
                r#"timeout {"failed":true,"succeeded":false,"return_code":-9,"stdout":"partial","stderr":"","error":"Action failed to complete in 60 seconds"}"#
            ]],
        );
        let mut killed = outcome(None, "", "");
        killed.signal = Some(11);
        check_shell(
            &killed,
            expect![[r#"failed {"failed":true,"succeeded":false,"return_code":-11,"stdout":"","stderr":""}"#]],
        );
        let mut canceled = outcome(None, "", "");
        canceled.signal = Some(15);
        canceled.canceled = true;
        check_shell(
            &canceled,
            expect![[r#"canceled {"failed":true,"succeeded":false,"return_code":-15,"stdout":"","stderr":""}"#]],
        );
    }

    fn framed(body: &str) -> String {
        format!("{PYTHON_RESULT_DELIMITER}{body}\n{PYTHON_RESULT_DELIMITER}")
    }

    fn check_python(o: &ProcessOutcome, expect: Expect) {
        let (status, result) = python_result(o, 600);
        expect.assert_eq(&format!("{} {result}", status.as_str()));
    }

    #[test]
    fn python_results() {
        let out = format!("printed\n{}after\n", framed(r#"{"result": {"x": 1}, "status": null}"#));
        check_python(
            &outcome(Some(0), &out, "log\n"),
            expect![[r#"succeeded {"stdout":"printed\nafter\n","stderr":"log\n","exit_code":0,"result":{"x":1}}"#]],
        );
        check_python(
            &outcome(Some(0), &framed(r#"{"result": "nope", "status": false}"#), ""),
            expect![[r#"failed {"stdout":"","stderr":"","exit_code":0,"result":"nope"}"#]],
        );
        check_python(
            &outcome(Some(0), &framed(r#"{"result": [1], "status": true}"#), ""),
            expect![[r#"succeeded {"stdout":"","stderr":"","exit_code":0,"result":[1]}"#]],
        );
        check_python(
            &outcome(Some(1), &framed(r#"{"result": 1, "status": true}"#), ""),
            expect![[r#"failed {"stdout":"","stderr":"","exit_code":1,"result":1}"#]],
        );
        // An exception: no delimiter, result is the string "None".
        check_python(
            &outcome(Some(1), "before crash\n", "Traceback ...\nValueError: x\n"),
            expect![[
                r#"failed {"stdout":"before crash\n","stderr":"Traceback ...\nValueError: x\n","exit_code":1,"result":"None"}"#
            ]],
        );
        check_python(
            &outcome(
                Some(220),
                "",
                "Status returned from the action run() method must either be True or False, got: 1\n",
            ),
            expect![[
                r#"failed {"stdout":"","stderr":"Status returned from the action run() method must either be True or False, got: 1\n","exit_code":220,"result":"None","error":"Status returned from the action run() method must either be True or False, got: 1"}"#
            ]],
        );
        // The action printed the delimiter itself.
        let twice = format!("{PYTHON_RESULT_DELIMITER}{}", framed("{}"));
        check_python(
            &outcome(Some(0), &twice, ""),
            expect![[
                r#"failed {"stdout":"%%%%%~=~=~=************=~=~=~%%%%%%%%%~=~=~=************=~=~=~%%%%{}\n%%%%%~=~=~=************=~=~=~%%%%","stderr":"","exit_code":0,"result":"None","error":"The result length should be 3, was 4."}"#
            ]],
        );
        // Not JSON (an old wrapper printing str(dict)): the regex fishes out the result.
        check_python(
            &outcome(Some(0), &framed("{'result': <object at 0x1>, 'status': None}"), ""),
            expect![[
                r#"succeeded {"stdout":"","stderr":"","exit_code":0,"result":"<object at 0x1>, 'status': None}"}"#
            ]],
        );
        check_python(
            &outcome(Some(0), &framed("{}"), ""),
            expect![[r#"succeeded {"stdout":"","stderr":"","exit_code":0,"result":"None"}"#]],
        );
        let mut timed = outcome(None, "slow\n", "");
        timed.timed_out = true;
        timed.signal = Some(9);
        check_python(
            &timed,
            expect![[
                r#"timeout {"stdout":"slow\n","stderr":"","exit_code":-9,"result":"None","error":"Action failed to complete in 600 seconds"}"#
            ]],
        );
    }

    #[test]
    fn python_command_layout() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let venv = dir.path().join("venv");
        let site = venv.join("lib").join("python3.11").join("site-packages");
        std::fs::create_dir_all(&site).unwrap_or_else(|e| panic!("{e}"));
        let params = json!({"a": 1});
        let config = json!({"token": "s3cret"});
        let env = [("PYTHONPATH".to_owned(), "/ignored".to_owned()), ("X".to_owned(), "y".to_owned())];
        let action = PythonAction {
            pack: "mypack",
            pack_dir: Path::new("/packs/mypack"),
            entry_point: Path::new("/packs/mypack/actions/a.py"),
            parameters: &params,
            config: &config,
            log_level: "DEBUG",
            virtualenv: &venv,
            shim_dir: Path::new("/state/python"),
            socket: Some(Path::new("/run/packd.sock")),
            env: &env,
            timeout: Duration::from_secs(600),
        };
        let spec = python_command(&action);
        assert_eq!(spec.program, venv.join("bin/python"));
        let args: Vec<String> = spec.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        expect![[r#"["-u", "/state/python/packd_action_wrapper.py", "--pack=mypack", "--file-path=/packs/mypack/actions/a.py", "--stdin-parameters", "--log-level=DEBUG"]"#]]
            .assert_eq(&format!("{args:?}"));
        let stdin = String::from_utf8(spec.stdin.clone().unwrap_or_default()).unwrap_or_default();
        assert_eq!(stdin, "{\"parameters\":{\"a\":1},\"config\":{\"token\":\"s3cret\"}}\n");
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        let env_of = |k: &str| spec.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.to_string_lossy().into_owned());
        let pythonpath = env_of("PYTHONPATH").unwrap_or_default();
        let expected_prefix = format!("/state/python:{}:/packs/mypack/actions/lib", site.display());
        assert!(pythonpath.starts_with(&expected_prefix), "{pythonpath}");
        assert!(!pythonpath.contains("/ignored"));
        assert!(env_of("PATH").unwrap_or_default().starts_with(&format!("{}:", venv.join("bin").display())));
        assert_eq!(env_of("X").as_deref(), Some("y"));
        assert_eq!(env_of("PACKD_SOCKET").as_deref(), Some("/run/packd.sock"));

        let no_venv = dir.path().join("absent");
        let spec = python_command(&PythonAction { virtualenv: &no_venv, socket: None, ..action });
        assert_eq!(spec.program, PathBuf::from("python3"));
        assert!(spec.env.iter().all(|(k, _)| k != "PACKD_SOCKET"));
        let path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        assert_eq!(path, std::env::var_os("PATH"));
    }

    #[test]
    fn script_command_appends_args() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.sh");
        std::fs::write(&path, "echo \"$@\"\n").unwrap_or_else(|e| panic!("{e}"));
        let spec = script_command(&path, &["--a=1".into(), "".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.program, PathBuf::from("/bin/sh"));
        assert_eq!(spec.args, vec![path.into_os_string(), "--a=1".into(), "".into()]);
        let out = smol::block_on(super::super::process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.stdout, "--a=1 \n");
        let spec = shell_command("echo $((1+2))");
        let out = smol::block_on(super::super::process::run(spec, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shell_result(&out, 60).1["stdout"], json!(3));
    }
}
