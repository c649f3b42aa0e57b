//! StackStorm's custom Jinja filters (`st2common/util/jinja.py` `get_filters`), written anew on
//! minijinja: JSON/YAML conversion, regex helpers, semver helpers, paths, `use_none`,
//! `to_human_time_from_seconds`, `jsonpath_query` and `decrypt_kv`.
//!
//! Each filter follows the Python function's observable behaviour (argument names usable as
//! keywords, Python `str()` of non-string inputs, `json.dumps` formatting) and fails with an
//! error naming the filter. Filters never touch the datastore except `decrypt_kv`, through the
//! render's `KvSource`. Every string a filter builds is capped at `MAX_RENDER_BYTES`.

use minijinja::value::{Kwargs, Rest, Tuple, Value, ValueOrKwargs, from_args};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::{Map, Value as Json};

use super::cast::{NONE_MAGIC_VALUE, python_float_repr};
use super::jsonpath::JsonPath;
use super::kv::{KvNode, KvScope, with_active};
use super::pyre::{self, Flags};
use super::template::MAX_RENDER_BYTES;
use super::value::{from_json, py_str, to_json};

/// Largest `indent` accepted by `to_json_string`/`to_yaml_string`. Python accepts any, but a
/// huge indent only multiplies output size; no real template needs more.
pub const MAX_INDENT: usize = 32;

/// Limits for `from_yaml_string`. The text comes from payloads and the datastore (untrusted),
/// so parsing runs under a small serde-saphyr budget: depth and node count cap stack use and
/// memory, the input cap matches the render cap.
pub const YAML_MAX_DEPTH: usize = 32;
/// See `YAML_MAX_DEPTH`.
pub const YAML_MAX_NODES: usize = 50_000;

fn err(filter: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{filter}: {msg}"))
}

/// Positional and keyword arguments of a filter, addressed as Python would bind them.
struct Params {
    filter: &'static str,
    pos: Vec<Value>,
    kw: Kwargs,
}

impl Params {
    fn new(filter: &'static str, args: Rest<ValueOrKwargs>) -> Result<Params, Error> {
        let values = args.into_values();
        let (pos, kw): (&[Value], Kwargs) = from_args(&values)?;
        Ok(Params { filter, pos: pos.to_vec(), kw })
    }

    /// Argument `i` (0 = first after the piped value) or keyword `name`; `None` if absent or
    /// Python `None`.
    fn get(&self, i: usize, name: &str) -> Result<Option<Value>, Error> {
        let v = match self.pos.get(i) {
            Some(v) => {
                if self.kw.has(name) {
                    return Err(err(self.filter, format!("got multiple values for {name:?}")));
                }
                Some(v.clone())
            }
            None if self.kw.has(name) => Some(self.kw.get::<Value>(name)?),
            None => None,
        };
        Ok(v.filter(|v| !v.is_none() && !v.is_undefined()))
    }

    fn flag(&self, i: usize, name: &str) -> Result<bool, Error> {
        Ok(self.get(i, name)?.is_some_and(|v| v.is_true()))
    }

    fn finish(&self, max: usize) -> Result<(), Error> {
        if self.pos.len() > max {
            return Err(err(self.filter, format!("takes at most {max} arguments ({} given)", self.pos.len())));
        }
        self.kw.assert_all_used()
    }
}

fn json_of(filter: &str, v: &Value) -> Result<Json, Error> {
    let mut budget = MAX_RENDER_BYTES;
    to_json(v, &mut budget).map_err(|e| err(filter, e))
}

fn capped(filter: &str, s: String) -> Result<Value, Error> {
    if s.len() > MAX_RENDER_BYTES {
        return Err(err(filter, format!("result larger than {MAX_RENDER_BYTES} bytes")));
    }
    Ok(Value::from(s))
}

/// Registers every st2 filter on `env`.
pub(super) fn register(env: &mut Environment<'static>) {
    env.add_filter("to_json_string", to_json_string);
    env.add_filter("to_complex", |v: Value| -> Result<Value, Error> {
        let j = json_of("to_complex", &v)?;
        capped("to_complex", dumps(&j, &JsonStyle::python_default())?)
    });
    env.add_filter("json_escape", |v: Value| -> Result<Value, Error> {
        let j = json_of("json_escape", &v)?;
        let s = dumps(&j, &JsonStyle::python_default())?;
        capped("json_escape", s.trim_matches('"').to_string())
    });
    env.add_filter("to_yaml_string", to_yaml_string);
    env.add_filter("from_json_string", |v: Value| -> Result<Value, Error> {
        let text = py_str(&v);
        let j: Json = serde_json::from_str(&text).map_err(|e| err("from_json_string", e))?;
        Ok(from_json(&j))
    });
    env.add_filter("from_yaml_string", |v: Value| -> Result<Value, Error> {
        let j = parse_yaml(&py_str(&v)).map_err(|e| err("from_yaml_string", e))?;
        Ok(from_json(&j))
    });
    env.add_filter("jsonpath_query", |v: Value, query: Value| -> Result<Value, Error> {
        let path = JsonPath::parse(&py_str(&query)).map_err(|e| err("jsonpath_query", e))?;
        let doc = json_of("jsonpath_query", &v)?;
        let found: Vec<Json> = path.find(&doc).into_iter().cloned().collect();
        if found.is_empty() { Ok(Value::from(())) } else { Ok(from_json(&Json::Array(found))) }
    });
    env.add_filter("regex_match", |v: Value, args: Rest<ValueOrKwargs>| regex_bool("regex_match", v, args, true));
    env.add_filter("regex_search", |v: Value, args: Rest<ValueOrKwargs>| regex_bool("regex_search", v, args, false));
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_substring", regex_substring);
    env.add_filter("use_none", |v: Value| -> Value {
        if v.is_none() || v.is_undefined() { Value::from(NONE_MAGIC_VALUE) } else { v }
    });
    env.add_filter("basename", |v: Value| -> Value {
        let p = py_str(&v);
        Value::from(p.rsplit('/').next().unwrap_or("").to_string())
    });
    env.add_filter("dirname", |v: Value| -> Value { Value::from(dirname(&py_str(&v))) });
    env.add_filter("to_human_time_from_seconds", |v: Value| -> Result<Value, Error> {
        human_time(&v).map(Value::from).map_err(|e| err("to_human_time_from_seconds", e))
    });
    env.add_filter("version_compare", |v: Value, p: Value| -> Result<Value, Error> {
        Ok(Value::from(ver_cmp("version_compare", &v, &p)?))
    });
    env.add_filter("version_more_than", |v: Value, p: Value| -> Result<bool, Error> {
        Ok(ver_cmp("version_more_than", &v, &p)? == 1)
    });
    env.add_filter("version_less_than", |v: Value, p: Value| -> Result<bool, Error> {
        Ok(ver_cmp("version_less_than", &v, &p)? == -1)
    });
    env.add_filter("version_equal", |v: Value, p: Value| -> Result<bool, Error> {
        Ok(ver_cmp("version_equal", &v, &p)? == 0)
    });
    env.add_filter("version_match", |v: Value, p: Value| -> Result<bool, Error> {
        semver_match(&py_str(&v), &py_str(&p)).map_err(|e| err("version_match", e))
    });
    env.add_filter("version_bump_major", |v: Value| -> Result<String, Error> {
        let s = Semver::parse(&py_str(&v)).map_err(|e| err("version_bump_major", e))?;
        Ok(format!("{}.0.0", s.major.saturating_add(1)))
    });
    env.add_filter("version_bump_minor", |v: Value| -> Result<String, Error> {
        let s = Semver::parse(&py_str(&v)).map_err(|e| err("version_bump_minor", e))?;
        Ok(format!("{}.{}.0", s.major, s.minor.saturating_add(1)))
    });
    env.add_filter("version_bump_patch", |v: Value| -> Result<String, Error> {
        let s = Semver::parse(&py_str(&v)).map_err(|e| err("version_bump_patch", e))?;
        Ok(format!("{}.{}.{}", s.major, s.minor, s.patch.saturating_add(1)))
    });
    env.add_filter("version_strip_patch", |v: Value| -> Result<String, Error> {
        let s = Semver::parse(&py_str(&v)).map_err(|e| err("version_strip_patch", e))?;
        Ok(format!("{}.{}", s.major, s.minor))
    });
    env.add_filter("decrypt_kv", decrypt_kv);
}

// ------------------------------------------------------------------------------------------------
// JSON (Python json.dumps)
// ------------------------------------------------------------------------------------------------

/// `json.dumps` options.
pub(super) struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonStyle {
    /// `json.dumps(v)` defaults: `, ` and `: `.
    pub(super) fn python_default() -> JsonStyle {
        JsonStyle { indent: None, item_sep: ", ".into(), key_sep: ": ".into(), sort_keys: false }
    }
}

fn to_json_string(v: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let p = Params::new("to_json_string", args)?;
    let indent = indent_text("to_json_string", p.get(0, "indent")?)?;
    let sort_keys = p.flag(1, "sort_keys")?;
    // st2 passes separators=(",", ": ") explicitly, so items are joined by a bare comma.
    let (item_sep, key_sep) = match p.get(2, "separators")? {
        None => (",".to_string(), ": ".to_string()),
        Some(seps) => {
            let parts: Vec<Value> =
                seps.try_iter().map_err(|_| err("to_json_string", "separators must be a pair of strings"))?.collect();
            match parts.as_slice() {
                [a, b] => (py_str(a), py_str(b)),
                _ => {
                    return Err(err("to_json_string", "separators must be a pair of strings"));
                }
            }
        }
    };
    p.finish(3)?;
    let j = json_of("to_json_string", &v)?;
    let style = JsonStyle { indent, item_sep, key_sep, sort_keys };
    capped("to_json_string", dumps(&j, &style)?)
}

/// Python's `indent` argument: a number of spaces or the indent text itself.
fn indent_text(filter: &str, v: Option<Value>) -> Result<Option<String>, Error> {
    let Some(v) = v else { return Ok(None) };
    if let Some(s) = v.as_str() {
        if s.len() > MAX_INDENT {
            return Err(err(filter, format!("indent longer than {MAX_INDENT}")));
        }
        return Ok(Some(s.to_string()));
    }
    let n = i64::try_from(v.clone()).map_err(|_| err(filter, "indent must be an int or str"))?;
    let n = usize::try_from(n.max(0)).unwrap_or(0);
    if n > MAX_INDENT {
        return Err(err(filter, format!("indent larger than {MAX_INDENT}")));
    }
    Ok(Some(" ".repeat(n)))
}

/// `json.dumps` with `ensure_ascii=True`.
pub(super) fn dumps(v: &Json, style: &JsonStyle) -> Result<String, Error> {
    let mut out = String::new();
    dump_at(&mut out, v, style, 0)?;
    Ok(out)
}

fn dump_at(out: &mut String, v: &Json, style: &JsonStyle, level: usize) -> Result<(), Error> {
    if out.len() > MAX_RENDER_BYTES {
        return Err(err("json", format!("result larger than {MAX_RENDER_BYTES} bytes")));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&python_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Json::String(s) => json_str(out, s),
        Json::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, level + 1);
                dump_at(out, item, style, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        Json::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, level + 1);
                json_str(out, k);
                out.push_str(&style.key_sep);
                dump_at(out, item, style, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string literal with Python's `ensure_ascii` escaping (also used by the runner's
/// `json.dumps`).
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

// ------------------------------------------------------------------------------------------------
// YAML
// ------------------------------------------------------------------------------------------------

/// `yaml.safe_load` under a small budget: PyYAML-like booleans, last duplicate key wins.
pub(super) fn parse_yaml(text: &str) -> Result<Json, String> {
    if text.len() > MAX_RENDER_BYTES {
        return Err(format!("input larger than {MAX_RENDER_BYTES} bytes"));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: YAML_MAX_DEPTH,
            max_nodes: YAML_MAX_NODES,
            max_reader_input_bytes: Some(MAX_RENDER_BYTES),
            max_total_scalar_bytes: MAX_RENDER_BYTES,
            max_documents: 1,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
        legacy_octal_numbers: true,
        // One-line errors: a template error message is not the place for a source snippet.
        with_snippet: false,
    };
    if text.trim().is_empty() {
        return Ok(Json::Null); // safe_load("") is None
    }
    serde_saphyr::from_str_with_options::<Json>(text, options).map_err(|e| e.to_string())
}

fn to_yaml_string(v: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let p = Params::new("to_yaml_string", args)?;
    let indent = match indent_text("to_yaml_string", p.get(0, "indent")?)? {
        // PyYAML only honours indents between 2 and 9.
        Some(s) if (2..=9).contains(&s.len()) => s.len(),
        _ => 2,
    };
    let _allow_unicode = p.get(1, "allow_unicode")?;
    p.finish(2)?;
    let j = json_of("to_yaml_string", &v)?;
    let mut out = String::new();
    emit_yaml(&mut out, &j, indent);
    capped("to_yaml_string", out)
}

/// PyYAML `safe_dump(default_flow_style=False)`: block style, sorted keys, sequences inside
/// mappings not indented, a plain scalar document closed with `...`.
pub(super) fn emit_yaml(out: &mut String, v: &Json, indent: usize) {
    match v {
        Json::Object(m) if !m.is_empty() => yaml_map(out, m, 0, indent, false),
        Json::Array(a) if !a.is_empty() => yaml_seq(out, a, 0, indent, false),
        scalar => {
            let (text, plain) = yaml_scalar(scalar);
            out.push_str(&text);
            out.push('\n');
            if plain {
                out.push_str("...\n");
            }
        }
    }
}

fn pad(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn yaml_map(out: &mut String, m: &Map<String, Json>, col: usize, step: usize, inline: bool) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 || !inline {
            pad(out, col);
        }
        out.push_str(&yaml_scalar(&Json::String(k.clone())).0);
        out.push(':');
        match m.get(k) {
            Some(Json::Object(sub)) if !sub.is_empty() => {
                out.push('\n');
                yaml_map(out, sub, col + step, step, false);
            }
            Some(Json::Array(items)) if !items.is_empty() => {
                out.push('\n');
                yaml_seq(out, items, col, step, false);
            }
            Some(scalar) => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar).0);
                out.push('\n');
            }
            None => out.push('\n'),
        }
    }
}

fn yaml_seq(out: &mut String, items: &[Json], col: usize, step: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, col);
        }
        out.push_str("- ");
        match item {
            Json::Object(sub) if !sub.is_empty() => yaml_map(out, sub, col + 2, step, true),
            Json::Array(sub) if !sub.is_empty() => yaml_seq(out, sub, col + 2, step, true),
            scalar => {
                out.push_str(&yaml_scalar(scalar).0);
                out.push('\n');
            }
        }
    }
}

/// The YAML text of a scalar (or empty container) and whether it is a plain scalar.
fn yaml_scalar(v: &Json) -> (String, bool) {
    match v {
        Json::Null => ("null".into(), true),
        Json::Bool(b) => (b.to_string(), true),
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => (yaml_float(f), true),
            _ => (n.to_string(), true),
        },
        Json::String(s) => yaml_string(s),
        Json::Array(_) => ("[]".into(), false),
        Json::Object(_) => ("{}".into(), false),
    }
}

fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    let r = python_float_repr(f).to_lowercase();
    // PyYAML keeps a '.' in the mantissa so the text resolves back to a float: 1e+16 → 1.0e+16.
    match r.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => r,
    }
}

/// Whether PyYAML's YAML 1.1 resolver would read `s` as something other than a string.
fn resolves_to_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "<<", "=", ".inf", ".Inf", ".INF", "+.inf", "-.inf",
        ".nan", ".NaN", ".NAN",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let Some(first) = body.chars().next() else {
        return true;
    };
    if !(first.is_ascii_digit() || first == '.') {
        return false;
    }
    // Numbers in any YAML 1.1 spelling (ints, floats, 0x/0o/0b, sexagesimal with ':', '_'
    // separators) and dates/timestamps all start with a digit or '.' and use only these
    // characters; quoting a few extra strings is harmless, plain-emitting a number is not.
    body.chars().all(|c| {
        c.is_ascii_hexdigit()
            || matches!(
                c,
                '.' | '_' | ':' | 'x' | 'o' | 'X' | 'O' | '+' | '-' | 'e' | 'E' | 'T' | 't' | 'Z' | 'z' | ' '
            )
    })
}

fn yaml_string(s: &str) -> (String, bool) {
    let printable = s.chars().all(|c| !c.is_control() && c != '\u{feff}' && c != '\u{2028}' && c != '\u{2029}');
    if !printable || s.contains('\n') {
        // Double-quoted with escapes (PyYAML would fold multi-line text; this reads the same).
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                    let n = c as u32;
                    if n < 0x100 {
                        out.push_str(&format!("\\x{n:02X}"));
                    } else {
                        out.push_str(&format!("\\u{n:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        return (out, false);
    }
    let first = s.chars().next().unwrap_or(' ');
    let last = s.chars().last().unwrap_or(' ');
    let plain_ok = !resolves_to_non_string(s)
        && !"-?:,[]{}#&*!|>'\"%@`".contains(first)
        && first != ' '
        && last != ' '
        && last != ':'
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains('\t');
    if plain_ok { (s.to_string(), true) } else { (format!("'{}'", s.replace('\'', "''")), false) }
}

// ------------------------------------------------------------------------------------------------
// Regex filters
// ------------------------------------------------------------------------------------------------

fn regex_bool(name: &'static str, v: Value, args: Rest<ValueOrKwargs>, anchored: bool) -> Result<bool, Error> {
    let p = Params::new(name, args)?;
    let pattern = p.get(0, "pattern")?.ok_or_else(|| err(name, "missing argument 'pattern'"))?;
    let ignore_case = p.flag(1, "ignorecase")?;
    p.finish(2)?;
    let flags = Flags { ignore_case, anchored, bool_only: true, ..Flags::default() };
    let re = pyre::compile(&py_str(&pattern), flags).map_err(|e| err(name, e))?;
    Ok(re.is_match(&py_str(&v)))
}

fn regex_replace(v: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    const NAME: &str = "regex_replace";
    let p = Params::new(NAME, args)?;
    let pattern = p.get(0, "pattern")?.ok_or_else(|| err(NAME, "missing argument 'pattern'"))?;
    let replacement = p.get(1, "replacement")?.ok_or_else(|| err(NAME, "missing argument 'replacement'"))?;
    let ignore_case = p.flag(2, "ignorecase")?;
    p.finish(3)?;
    let flags = Flags { ignore_case, ..Flags::default() };
    let re = pyre::compile(&py_str(&pattern), flags).map_err(|e| err(NAME, e))?;
    let repl = pyre::translate_replacement(&py_str(&replacement)).map_err(|e| err(NAME, e))?;
    let out = re.replace_all(&py_str(&v), repl.as_str()).into_owned();
    capped(NAME, out)
}

fn regex_substring(v: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    const NAME: &str = "regex_substring";
    let p = Params::new(NAME, args)?;
    let pattern = p.get(0, "pattern")?.ok_or_else(|| err(NAME, "missing argument 'pattern'"))?;
    let index = match p.get(1, "result_index")? {
        None => 0,
        Some(i) => i64::try_from(i).map_err(|_| err(NAME, "result_index must be an int"))?,
    };
    let ignore_case = p.flag(2, "ignorecase")?;
    p.finish(3)?;
    let flags = Flags { ignore_case, ..Flags::default() };
    let re = pyre::compile(&py_str(&pattern), flags).map_err(|e| err(NAME, e))?;
    let text = py_str(&v);
    // re.findall: whole matches without groups, group 1 with one group, tuples with more.
    let groups = re.captures_len().saturating_sub(1);
    let found: Vec<Value> = re
        .captures_iter(&text)
        .map(|caps| {
            let group = |i: usize| Value::from(caps.get(i).map_or("", |m| m.as_str()));
            match groups {
                0 => group(0),
                1 => group(1),
                n => Value::from(Tuple::from((1..=n).map(group).collect::<Vec<_>>())),
            }
        })
        .collect();
    let len = i64::try_from(found.len()).unwrap_or(i64::MAX);
    let i = if index < 0 { index + len } else { index };
    usize::try_from(i)
        .ok()
        .and_then(|i| found.get(i).cloned())
        .ok_or_else(|| err(NAME, "list index out of range (no such match)"))
}

// ------------------------------------------------------------------------------------------------
// Paths and time
// ------------------------------------------------------------------------------------------------

/// `os.path.dirname` (POSIX): everything before the last `/`, trailing slashes removed unless
/// the head is all slashes.
fn dirname(p: &str) -> String {
    let head = match p.rfind('/') {
        Some(i) => p.get(..=i).unwrap_or(""),
        None => "",
    };
    if !head.is_empty() && !head.chars().all(|c| c == '/') {
        head.trim_end_matches('/').to_string()
    } else {
        head.to_string()
    }
}

/// `to_human_time_from_seconds`: `1h3m5s`. Mirrors st2 exactly, including that the day count
/// is the day-of-month of `0001-01-01 + seconds` (so it wraps after a month) and that values
/// below one second print as microseconds text.
fn human_time(v: &Value) -> Result<String, String> {
    if !v.is_number() && v.kind() != minijinja::value::ValueKind::Bool {
        return Err(format!("expected a number of seconds, got {}", v.kind()));
    }
    let is_float = !v.is_integer() && v.kind() != minijinja::value::ValueKind::Bool;
    let f = f64::try_from(v.clone()).map_err(|e| e.to_string())?;
    if f == 0.0 {
        return Ok("0s".into());
    }
    if f < 1.0 {
        return Ok(format!("{}\u{3bc}s", py_str(v)));
    }
    let secs: i64 = if is_float {
        let r = f.round_ties_even();
        if r > 1e15 {
            return Err("date value out of range".into());
        }
        r as i64
    } else {
        i64::try_from(v.clone()).map_err(|_| "date value out of range".to_string())?
    };
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // 0001-01-01 is day -719162 relative to 1970-01-01.
    let (year, _month, day) = civil_from_days(days - 719_162);
    if year > 9999 {
        return Err("date value out of range".into());
    }
    let parts = [year - 1, day - 1, rem / 3600, rem % 3600 / 60, rem % 60];
    let Some(first) = parts.iter().position(|&x| x != 0) else {
        return Ok("0s".into());
    };
    let units = ["y", "d", "h", "m", "s"];
    let shown = parts.get(first..).unwrap_or(&[]);
    // st2 labels by count from the right: with two parts they are minutes and seconds, etc.
    let labels = units.get(units.len() - shown.len()..).unwrap_or(&[]);
    Ok(shown.iter().zip(labels).map(|(n, u)| format!("{n}{u}")).collect())
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

// ------------------------------------------------------------------------------------------------
// Semver (python-semver 3 semantics)
// ------------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Semver {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<String>,
}

impl Semver {
    fn parse(s: &str) -> Result<Semver, String> {
        let bad = || format!("{s} is not valid SemVer string");
        let (core, build) = match s.split_once('+') {
            Some((c, b)) => (c, Some(b)),
            None => (s, None),
        };
        if let Some(b) = build
            && (b.is_empty() || b.split('.').any(|id| !valid_ident(id)))
        {
            return Err(bad());
        }
        let (nums, pre) = match core.split_once('-') {
            Some((n, p)) => (n, Some(p)),
            None => (core, None),
        };
        let num = |t: &str| -> Result<u64, String> {
            if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let parts: Vec<&str> = nums.split('.').collect();
        let [ma, mi, pa] = parts.as_slice() else {
            return Err(bad());
        };
        let pre: Vec<String> = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_string).collect();
                for id in &ids {
                    let numeric = id.bytes().all(|b| b.is_ascii_digit());
                    if !valid_ident(id) || (numeric && id.len() > 1 && id.starts_with('0')) {
                        return Err(bad());
                    }
                }
                ids
            }
        };
        Ok(Semver { major: num(ma)?, minor: num(mi)?, patch: num(pa)?, pre })
    }

    fn cmp(&self, other: &Semver) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let core = (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch));
        if core != Ordering::Equal {
            return core;
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => {}
        }
        for (a, b) in self.pre.iter().zip(&other.pre) {
            let ord = match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                (Ok(_), Err(_)) => Ordering::Less,
                (Err(_), Ok(_)) => Ordering::Greater,
                (Err(_), Err(_)) => a.cmp(b),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        self.pre.len().cmp(&other.pre.len())
    }
}

fn valid_ident(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn ver_cmp(name: &str, v: &Value, p: &Value) -> Result<i64, Error> {
    let a = Semver::parse(&py_str(v)).map_err(|e| err(name, e))?;
    let b = Semver::parse(&py_str(p)).map_err(|e| err(name, e))?;
    Ok(match a.cmp(&b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    })
}

/// `semver.match(version, expr)`: `expr` is `<op><version>` with op one of `< > == <= >= !=`;
/// a bare version means `==`.
fn semver_match(version: &str, expr: &str) -> Result<bool, String> {
    let (op, rest) =
        if let Some(r) = [">=", "<=", "==", "!="].iter().find_map(|op| expr.strip_prefix(op).map(|r| (*op, r))) {
            r
        } else if let Some(r) = expr.strip_prefix('<') {
            ("<", r)
        } else if let Some(r) = expr.strip_prefix('>') {
            (">", r)
        } else if expr.starts_with(|c: char| c.is_ascii_digit()) {
            ("==", expr)
        } else {
            return Err(format!(
                "match_expr parameter should be in format <op><ver>, where <op> is one of \
             ['<', '>', '==', '<=', '>=', '!=']. You provided: {expr:?}"
            ));
        };
    let a = Semver::parse(version)?;
    let b = Semver::parse(rest)?;
    let ord = a.cmp(&b);
    use std::cmp::Ordering::*;
    Ok(match op {
        "<" => ord == Less,
        ">" => ord == Greater,
        "==" => ord == Equal,
        "!=" => ord != Equal,
        "<=" => ord != Greater,
        _ => ord != Less,
    })
}

// ------------------------------------------------------------------------------------------------
// decrypt_kv
// ------------------------------------------------------------------------------------------------

/// `decrypt_kv`: the input is the ciphertext (`{{ st2kv.system.k | decrypt_kv }}` hands over
/// the stored value of `k` as a string), which the `KvSource` decrypts. A missing or empty key
/// reaches the filter as a lookup node and fails naming the key, as in st2.
fn decrypt_kv(v: Value) -> Result<Value, Error> {
    const NAME: &str = "decrypt_kv";
    let (scope, ciphertext) = if let Some(node) = v.downcast_object_ref::<KvNode>() {
        let key = node.key.clone().unwrap_or_default();
        match node.stored() {
            Some(c) if !c.is_empty() => (node.scope.clone(), c),
            _ => {
                return Err(err(
                    NAME,
                    format!(
                        "Referenced datastore item \"{key}\" doesn't exist or it contains an \
                         empty string"
                    ),
                ));
            }
        }
    } else if v.is_none() || v.is_undefined() {
        return Err(err(NAME, "nothing to decrypt (value is None)"));
    } else {
        let s = py_str(&v);
        if s.is_empty() {
            return Err(err(NAME, "nothing to decrypt (empty string)"));
        }
        (KvScope::System, s)
    };
    match with_active(|kv| kv.decrypt(scope, &ciphertext)) {
        None => Err(err(NAME, "no datastore is available to this template")),
        Some(Ok(plain)) => Ok(Value::from(plain)),
        Some(Err(reason)) => Err(err(NAME, reason)),
    }
}
