//! Rule matching: StackStorm rule criteria (`st2reactor/rules/filter.py`, `st2common/operators.py`)
//! and Attune rule conditions.
//!
//! StackStorm semantics kept exactly: criteria keys are JSONPath into `{trigger, system}` with
//! `#tag` suffixes stripped, the first match is the value (missing or JSON null = Python
//! `None`), string patterns are Jinja-rendered (a lone `{{ expr }}` keeps its native type),
//! operators compare with Python rules (no type coercion, `True == 1`, ordering only within
//! numbers/strings/lists, `in` on str/list/dict). Where Python would raise inside an operator,
//! the result here is `Err`, which the caller records as a failed enforcement with the reason.
//! This module decides match / no match; it records nothing and renders no action parameters.

use std::borrow::Cow;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value as Json};

use super::cast::python_float;
use super::jsonpath::{JsonPath, JsonPathError};
use super::kv::{KvScope, KvSource, with_active, with_source};
use super::pyre::{self, Flags};
use super::template::{Prepared, TemplateEnv, TemplateError, single_expression};

/// Every operator name rules may use (registration requires these exact lower-case names;
/// evaluation lower-cases first).
pub const OPERATORS: &[&str] = &[
    "equals",
    "eq",
    "nequals",
    "neq",
    "iequals",
    "ieq",
    "contains",
    "ncontains",
    "icontains",
    "incontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "lessthan",
    "lt",
    "greaterthan",
    "gt",
    "matchwildcard",
    "matchregex",
    "regex",
    "iregex",
    "timediff_lt",
    "td_lt",
    "timediff_gt",
    "td_gt",
    "exists",
    "nexists",
    "inside",
    "in",
    "ninside",
    "nin",
    "search",
];

/// Whether `name` is an operator a rule may name (exact, lower-case).
pub fn is_operator(name: &str) -> bool {
    OPERATORS.contains(&name)
}

/// How deep `search` criteria may nest inside each other. Each level multiplies the work by the
/// length of the searched list; real rules use one level.
pub const MAX_SEARCH_DEPTH: usize = 4;

/// Why criteria could not be evaluated. The text names the criterion key and, when known, the
/// operator, for the failed-enforcement record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CriteriaError {
    #[error("criterion {key:?}: {reason}")]
    Malformed { key: String, reason: String },
    #[error("criterion {key:?}: invalid operator {operator:?}")]
    UnknownOperator { key: String, operator: String },
    #[error("criterion {key:?} ({operator}): failed to render pattern: {source}")]
    Render {
        key: String,
        operator: String,
        #[source]
        source: TemplateError,
    },
    #[error("criterion {key:?}: {source}")]
    Key {
        key: String,
        #[source]
        source: JsonPathError,
    },
    #[error("criterion {key:?} ({operator}): {reason}")]
    Operator { key: String, operator: String, reason: String },
}

/// Evaluates StackStorm rule criteria against a trigger payload (all criteria AND-ed, in
/// order; the first non-match stops). Empty criteria match everything; non-empty criteria never
/// match an empty payload (`None`, `{}`, `[]`, `""`, `0`, `false`).
pub fn evaluate(
    criteria: &Map<String, Json>,
    payload: &Json,
    env: &TemplateEnv,
    kv: Option<&dyn KvSource>,
) -> Result<bool, CriteriaError> {
    evaluate_at(criteria, payload, env, kv, Timestamp::now())
}

/// `evaluate` with an explicit "now" for the `timediff_*` operators.
pub fn evaluate_at(
    criteria: &Map<String, Json>,
    payload: &Json,
    env: &TemplateEnv,
    kv: Option<&dyn KvSource>,
    now: Timestamp,
) -> Result<bool, CriteriaError> {
    if criteria.is_empty() {
        return Ok(true);
    }
    if !py_truthy(payload) {
        return Ok(false);
    }
    with_source(kv, || {
        let mut ev = Eval { env, payload, prepared: None, now };
        for (key, spec) in criteria {
            if !ev.criterion(key, spec, &[("trigger", payload)], 0)? {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

struct Eval<'a> {
    env: &'a TemplateEnv,
    payload: &'a Json,
    /// The pattern-rendering context, built on first use (most patterns are plain values).
    prepared: Option<Prepared>,
    now: Timestamp,
}

impl Eval<'_> {
    fn criterion(
        &mut self,
        key: &str,
        spec: &Json,
        roots: &[(&str, &Json)],
        depth: usize,
    ) -> Result<bool, CriteriaError> {
        let Json::Object(spec) = spec else {
            return Err(CriteriaError::Malformed {
                key: key.into(),
                reason: "must be a mapping with 'type' and 'pattern'".into(),
            });
        };
        let Some(Json::String(op_name)) = spec.get("type") else {
            return Err(CriteriaError::Malformed { key: key.into(), reason: "has no operator ('type')".into() });
        };
        let op = op_name.to_lowercase();
        if !is_operator(&op) {
            return Err(CriteriaError::UnknownOperator { key: key.into(), operator: op_name.clone() });
        }
        let op_err = |reason: String| CriteriaError::Operator { key: key.into(), operator: op.clone(), reason };

        let value = self.lookup(key, roots)?;
        let value = value.as_deref().filter(|v| !v.is_null());

        if op == "search" {
            if depth >= MAX_SEARCH_DEPTH {
                return Err(op_err(format!("search criteria nested deeper than {MAX_SEARCH_DEPTH}")));
            }
            let condition = spec.get("condition").and_then(Json::as_str).unwrap_or("");
            let pattern = spec.get("pattern").unwrap_or(&Json::Null);
            return self.search(key, &op, value, pattern, condition, depth);
        }

        let pattern = match spec.get("pattern") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(self.render(s).map_err(|source| CriteriaError::Render {
                key: key.into(),
                operator: op.clone(),
                source,
            })?),
            Some(other) => Some(other.clone()),
        };
        let pattern = pattern.as_ref().filter(|p| !p.is_null());
        apply(&op, value, pattern, self.now).map_err(op_err)
    }

    fn render(&mut self, s: &str) -> Result<Json, TemplateError> {
        if !super::template::is_template(s) {
            return Ok(Json::String(s.to_string()));
        }
        let env = self.env;
        let payload = self.payload;
        let p = self.prepared.get_or_insert_with(|| env.prepare_criteria(payload));
        env.render_native_prepared(s, p)
    }

    /// The payload value a criterion key names: first JSONPath match, `None` when nothing
    /// matches. `system.<key>` reads the datastore (system scope), as st2's lookup context has
    /// a `system` entry.
    fn lookup<'v>(&self, key: &str, roots: &[(&str, &'v Json)]) -> Result<Option<Cow<'v, Json>>, CriteriaError> {
        let path_text = key.split('#').next().unwrap_or("");
        let path = JsonPath::parse(path_text).map_err(|source| CriteriaError::Key { key: key.into(), source })?;
        if path.root_field() == Some("system") {
            let fields = path.plain_fields().unwrap_or_default();
            let name = fields.get(1..).unwrap_or(&[]).join(".");
            if name.is_empty() {
                return Ok(None);
            }
            let found = with_active(|kv| kv.get(KvScope::System, &name)).flatten();
            return Ok(found.map(|s| Cow::Owned(Json::String(s))));
        }
        Ok(path.find_in(roots).into_iter().next().map(Cow::Borrowed))
    }

    fn search(
        &mut self,
        key: &str,
        op: &str,
        value: Option<&Json>,
        pattern: &Json,
        condition: &str,
        depth: usize,
    ) -> Result<bool, CriteriaError> {
        let op_err = |reason: String| CriteriaError::Operator { key: key.into(), operator: op.into(), reason };
        let Json::Object(children) = pattern else {
            return Err(op_err("search pattern must be a mapping of child criteria".into()));
        };
        if !matches!(condition, "any" | "all" | "all2any" | "any2any") {
            return Err(op_err(format!(
                "The '{condition}' search condition is not recognized, only 'any', 'all', \
                 'all2any' and 'any2any' are allowed"
            )));
        }
        let chars: Vec<Json>;
        let items: Vec<&Json> = match value {
            Some(Json::Array(a)) => a.iter().collect(),
            Some(obj @ Json::Object(_)) => vec![obj],
            Some(Json::String(s)) => {
                chars = s.chars().map(|c| Json::String(c.to_string())).collect();
                chars.iter().collect()
            }
            other => {
                return Err(op_err(format!("'{}' object is not iterable", py_type(other))));
            }
        };
        // st2 evaluates every child of every item and counts a child that raised as a
        // non-match; the error only surfaces when the search as a whole does not match.
        let mut first_error: Option<CriteriaError> = None;
        let mut per_item: Vec<(bool, bool)> = Vec::with_capacity(items.len());
        for item in items {
            let mut all = true;
            let mut any = false;
            for (child_key, child_spec) in children {
                let ok = match self.criterion(child_key, child_spec, &[("item", item)], depth + 1) {
                    Ok(b) => b,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        false
                    }
                };
                all &= ok;
                any |= ok;
            }
            per_item.push((all, any));
        }
        let matched = match condition {
            "any" => per_item.iter().any(|(all, _)| *all),
            "all" => per_item.iter().all(|(all, _)| *all),
            "all2any" => per_item.iter().all(|(_, any)| *any),
            _ => per_item.iter().any(|(_, any)| *any),
        };
        match first_error {
            Some(e) if !matched => Err(e),
            _ => Ok(matched),
        }
    }
}

/// Applies one (non-search) operator. `v`/`p` are `None` for Python `None`.
fn apply(op: &str, v: Option<&Json>, p: Option<&Json>, now: Timestamp) -> Result<bool, String> {
    match op {
        "exists" => return Ok(v.is_some()),
        "nexists" => return Ok(v.is_none()),
        "nequals" | "neq" => return Ok(!py_eq(v, p)),
        _ => {}
    }
    // Every other operator is false for a `None` pattern.
    let Some(p) = p else { return Ok(false) };
    match op {
        "equals" | "eq" => Ok(py_eq(v, Some(p))),
        "iequals" | "ieq" => Ok(lower(v)? == lower(Some(p))?),
        "contains" => py_in(Some(p), v),
        "ncontains" => py_in(Some(p), v).map(|b| !b),
        "icontains" => {
            let p = lower(Some(p))?;
            Ok(lower(v)?.contains(&p))
        }
        "incontains" => {
            let p = lower(Some(p))?;
            Ok(!lower(v)?.contains(&p))
        }
        "startswith" => Ok(str_self(v, "startswith")?.starts_with(str_arg(p, "startswith")?)),
        "endswith" => Ok(str_self(v, "endswith")?.ends_with(str_arg(p, "endswith")?)),
        "istartswith" => Ok(lower(v)?.starts_with(&lower(Some(p))?)),
        "iendswith" => Ok(lower(v)?.ends_with(&lower(Some(p))?)),
        "lessthan" | "lt" => py_lt(v, Some(p), "<"),
        "greaterthan" | "gt" => py_lt(Some(p), v, ">"),
        "matchwildcard" => {
            let (text, pat) = both_str(v, p, "fnmatch")?;
            Ok(fnmatch(pat, text))
        }
        "matchregex" | "regex" | "iregex" => {
            let (text, pat) = both_str(v, p, "re")?;
            let flags = Flags {
                ignore_case: op == "iregex",
                dot_all: op == "matchregex",
                anchored: op == "matchregex",
                bool_only: true,
            };
            Ok(pyre::compile(pat, flags)?.is_match(text))
        }
        "timediff_lt" | "td_lt" => Ok(timediff(v, now)? < period(p)?),
        "timediff_gt" | "td_gt" => Ok(timediff(v, now)? > period(p)?),
        "inside" | "in" => py_in(v, Some(p)),
        "ninside" | "nin" => py_in(v, Some(p)).map(|b| !b),
        other => Err(format!("Invalid operator: {other}")),
    }
}

/// Python's truthiness of a JSON value.
fn py_truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(m) => !m.is_empty(),
    }
}

/// Python's `type(x).__name__`.
fn py_type(v: Option<&Json>) -> &'static str {
    match v {
        None | Some(Json::Null) => "NoneType",
        Some(Json::Bool(_)) => "bool",
        Some(Json::Number(n)) if n.is_f64() => "float",
        Some(Json::Number(_)) => "int",
        Some(Json::String(_)) => "str",
        Some(Json::Array(_)) => "list",
        Some(Json::Object(_)) => "dict",
    }
}

#[derive(Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

/// Numbers as Python sees them: `bool` is an `int`.
fn num(v: Option<&Json>) -> Option<Num> {
    match v? {
        Json::Bool(b) => Some(Num::I(i128::from(*b))),
        Json::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::I(i128::from(i)),
            (None, Some(u)) => Num::I(i128::from(u)),
            _ => Num::F(n.as_f64().unwrap_or(f64::NAN)),
        }),
        _ => None,
    }
}

fn num_cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::I(x), Num::F(y)) => (x as f64).partial_cmp(&y),
        (Num::F(x), Num::I(y)) => x.partial_cmp(&(y as f64)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
    }
}

/// Python `==` (JSON null is `None`).
fn py_eq(a: Option<&Json>, b: Option<&Json>) -> bool {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_cmp(x, y) == Some(std::cmp::Ordering::Equal);
    }
    match (a, b) {
        (None, None) => true,
        (Some(Json::String(x)), Some(Json::String(y))) => x == y,
        (Some(Json::Array(x)), Some(Json::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(i, j)| py_eq(Some(i), Some(j)))
        }
        (Some(Json::Object(x)), Some(Json::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, i)| y.get(k).is_some_and(|j| py_eq(Some(i), Some(j))))
        }
        _ => false,
    }
}

/// Python `a < b` (`sym` names the operator in the TypeError text).
fn py_lt(a: Option<&Json>, b: Option<&Json>, sym: &str) -> Result<bool, String> {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(num_cmp(x, y) == Some(std::cmp::Ordering::Less));
    }
    match (a, b) {
        (Some(Json::String(x)), Some(Json::String(y))) => Ok(x < y),
        (Some(Json::Array(x)), Some(Json::Array(y))) => {
            for (i, j) in x.iter().zip(y) {
                if !py_eq(Some(i), Some(j)) {
                    return py_lt(Some(i), Some(j), sym);
                }
            }
            Ok(x.len() < y.len())
        }
        _ => {
            // Python reports the operands in source order: value OP pattern.
            let (l, r) = if sym == ">" { (b, a) } else { (a, b) };
            Err(format!("'{sym}' not supported between instances of '{}' and '{}'", py_type(l), py_type(r)))
        }
    }
}

/// Python `needle in container`.
fn py_in(needle: Option<&Json>, container: Option<&Json>) -> Result<bool, String> {
    let needle = needle.filter(|v| !v.is_null());
    match container.filter(|v| !v.is_null()) {
        Some(Json::String(hay)) => match needle {
            Some(Json::String(n)) => Ok(hay.contains(n.as_str())),
            other => Err(format!("'in <string>' requires string as left operand, not {}", py_type(other))),
        },
        Some(Json::Array(items)) => Ok(items.iter().any(|x| py_eq(needle, Some(x)))),
        Some(Json::Object(map)) => match needle {
            Some(Json::String(n)) => Ok(map.contains_key(n)),
            Some(other @ (Json::Array(_) | Json::Object(_))) => {
                Err(format!("unhashable type: '{}'", py_type(Some(other))))
            }
            // JSON keys are strings; numbers, bools and None never equal them.
            _ => Ok(false),
        },
        other => Err(format!("argument of type '{}' is not iterable", py_type(other))),
    }
}

/// `x.lower()`: only strings have it.
fn lower(v: Option<&Json>) -> Result<String, String> {
    match v {
        Some(Json::String(s)) => Ok(s.to_lowercase()),
        other => Err(format!("'{}' object has no attribute 'lower'", py_type(other))),
    }
}

/// The string a str method is called on.
fn str_self<'v>(v: Option<&'v Json>, method: &str) -> Result<&'v str, String> {
    match v {
        Some(Json::String(s)) => Ok(s),
        other => Err(format!("'{}' object has no attribute '{method}'", py_type(other))),
    }
}

/// The argument of `str.startswith`/`endswith`.
fn str_arg<'v>(p: &'v Json, method: &str) -> Result<&'v str, String> {
    match p {
        Json::String(s) => Ok(s),
        other => Err(format!("{method} first arg must be str or a tuple of str, not {}", py_type(Some(other)))),
    }
}

fn both_str<'v>(v: Option<&'v Json>, p: &'v Json, what: &str) -> Result<(&'v str, &'v str), String> {
    match (v, p) {
        (Some(Json::String(t)), Json::String(pat)) => Ok((t, pat)),
        (other, Json::String(_)) => {
            Err(format!("{what}: expected string or bytes-like object, got '{}'", py_type(other)))
        }
        (_, other) => Err(format!("{what}: pattern must be a string, got '{}'", py_type(Some(other)))),
    }
}

/// Seconds from the timestamp in `v` to `now`.
fn timediff(v: Option<&Json>, now: Timestamp) -> Result<f64, String> {
    let text = match v {
        Some(Json::String(s)) => s,
        other => {
            return Err(format!("Parser must be a string or character stream, not {}", py_type(other)));
        }
    };
    let then = parse_timestamp(text)?;
    let nanos = now.as_nanosecond() - then.as_nanosecond();
    Ok(nanos as f64 / 1e9)
}

/// The period of a `timediff_*` pattern: a number, or text `float()` accepts.
fn period(p: &Json) -> Result<f64, String> {
    match p {
        Json::Number(n) => n.as_f64().ok_or_else(|| "invalid number".to_string()),
        Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Json::String(s) => python_float(s)
            .ok()
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("could not convert string to float: {s:?}")),
        other => Err(format!("float() argument must be a string or a number, not '{}'", py_type(Some(other)))),
    }
}

/// ISO-8601 / RFC 3339 timestamps; without an offset the time is taken as UTC (st2's
/// `date_utils.parse`). A date alone means midnight UTC.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string());
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return d.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string());
    }
    Err(format!("Unknown string format: {s}"))
}

// ------------------------------------------------------------------------------------------------
// fnmatch
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Glob {
    Star,
    Any,
    Set { negated: bool, ranges: Vec<(char, char)> },
    Lit(char),
}

fn compile_glob(pattern: &str) -> Vec<Glob> {
    let p: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        i += 1;
        match c {
            '*' => {
                if !matches!(out.last(), Some(Glob::Star)) {
                    out.push(Glob::Star);
                }
            }
            '?' => out.push(Glob::Any),
            '[' => {
                // Find the closing ']' the way fnmatch.translate does: a leading '!' and a
                // ']' right after '[' or '[!' belong to the set.
                let mut j = i;
                if p.get(j) == Some(&'!') {
                    j += 1;
                }
                if p.get(j) == Some(&']') {
                    j += 1;
                }
                while p.get(j).is_some_and(|&c| c != ']') {
                    j += 1;
                }
                if j >= p.len() {
                    out.push(Glob::Lit('['));
                    continue;
                }
                let content = p.get(i..j).unwrap_or(&[]);
                let (negated, body) = match content.split_first() {
                    Some(('!', rest)) => (true, rest),
                    _ => (false, content),
                };
                let mut ranges = Vec::new();
                let mut k = 0;
                while let Some(&a) = body.get(k) {
                    match (body.get(k + 1), body.get(k + 2)) {
                        (Some('-'), Some(&b)) => {
                            // Reversed ranges match nothing, as in Python 3.9+.
                            if a <= b {
                                ranges.push((a, b));
                            }
                            k += 3;
                        }
                        _ => {
                            ranges.push((a, a));
                            k += 1;
                        }
                    }
                }
                out.push(Glob::Set { negated, ranges });
                i = j + 1;
            }
            c => out.push(Glob::Lit(c)),
        }
    }
    out
}

fn glob_one(tok: &Glob, c: char) -> bool {
    match tok {
        Glob::Any => true,
        Glob::Lit(l) => *l == c,
        Glob::Set { negated, ranges } => ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *negated,
        Glob::Star => false,
    }
}

/// `fnmatch.fnmatch(text, pattern)` on POSIX: case-sensitive, whole string, `*` also matches
/// newlines; `*`, `?`, `[seq]`, `[!seq]`, no backslash escapes. Linear backtracking on the
/// last `*`, so hostile patterns cannot blow up.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let toks = compile_glob(pattern);
    let s: Vec<char> = text.chars().collect();
    let (mut ti, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = s.get(si) {
        match toks.get(ti) {
            Some(Glob::Star) => {
                star = Some((ti, si));
                ti += 1;
                continue;
            }
            Some(t) if glob_one(t, c) => {
                ti += 1;
                si += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, ss)) => {
                ti = st + 1;
                si = ss + 1;
                star = Some((st, ss + 1));
            }
            None => return false,
        }
    }
    while matches!(toks.get(ti), Some(Glob::Star)) {
        ti += 1;
    }
    ti == toks.len()
}

// ------------------------------------------------------------------------------------------------
// Attune conditions
// ------------------------------------------------------------------------------------------------

/// Attune rule conditions against an event `{id, trigger, trigger_ref, payload, created}`:
/// `null`/`{}`/`[]` match; an event without payload matches; `{expression: "{{ ... }}"}` is a
/// Jinja expression over `event` whose result is tested for Python truthiness (any error is
/// false); a list of `{field, operator: equals|not_equals|contains, value}` (field a dot path in
/// the payload) must all hold, a missing field or unknown operator being false.
pub fn evaluate_attune(conditions: &Json, event: &Json, env: &TemplateEnv) -> bool {
    let empty = match conditions {
        Json::Null => true,
        Json::Object(m) => m.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        return true;
    }
    let Some(payload) = event.get("payload").filter(|p| !p.is_null()) else {
        return true;
    };
    match conditions {
        Json::Object(m) => match m.get("expression") {
            Some(Json::String(expr)) => attune_expression(expr, event, env),
            _ => false,
        },
        Json::Array(items) => items.iter().all(|c| attune_condition(c, payload)),
        _ => false,
    }
}

fn attune_expression(expr: &str, event: &Json, env: &TemplateEnv) -> bool {
    let inner = single_expression(expr).unwrap_or(expr);
    let mut ctx = Map::new();
    ctx.insert("event".into(), event.clone());
    let p = env.prepare(&Json::Object(ctx));
    with_source(None, || env.eval_value(inner, &p)).map(|v| v.is_true()).unwrap_or(false)
}

fn attune_condition(c: &Json, payload: &Json) -> bool {
    let (Some(field), Some(op)) = (c.get("field").and_then(Json::as_str), c.get("operator").and_then(Json::as_str))
    else {
        return false;
    };
    let expected = c.get("value").unwrap_or(&Json::Null);
    let mut cur = payload;
    for part in field.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    match op {
        "equals" => cur == expected,
        "not_equals" => cur != expected,
        "contains" => match (cur.as_str(), expected.as_str()) {
            (Some(hay), Some(needle)) => hay.contains(needle),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    struct Kv;
    impl KvSource for Kv {
        fn get(&self, scope: KvScope, name: &str) -> Option<String> {
            match (scope, name) {
                (KvScope::System, "threshold") => Some("10".into()),
                (KvScope::System, "env.name") => Some("prod".into()),
                _ => None,
            }
        }
        fn decrypt(&self, _: KvScope, c: &str) -> Result<String, String> {
            Ok(c.into())
        }
    }

    fn payload() -> Json {
        json!({
            "s": "Hello World",
            "n": 5,
            "f": 2.5,
            "t": true,
            "z": null,
            "one_str": "1",
            "one": 1,
            "list": ["a", "b", 3],
            "nums": [1, 2],
            "obj": {"k": "v", "inner": {"x": 1}},
            "path": "/var/log/syslog",
            "multi": "line1\nline2",
            "ts_old": "2020-01-01T00:00:00Z",
            "ts_recent": "2026-06-01T11:59:30+00:00",
            "ts_naive": "2026-06-01 11:59:00",
            "hdr": {"X-Custom-Header": "yes"},
            "items": [
                {"name": "a", "status": "ok", "n": 1},
                {"name": "b", "status": "bad", "n": 2}
            ]
        })
    }

    fn now() -> Timestamp {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn run(criteria: Json, payload: &Json) -> String {
        let env = TemplateEnv::new();
        let Json::Object(map) = criteria else {
            return "not a map".into();
        };
        match evaluate_at(&map, payload, &env, Some(&Kv), now()) {
            Ok(b) => b.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// One criterion `key` `op` `pattern` against the standard payload.
    fn check(key: &str, op: &str, pattern: Json, expect: Expect) {
        let criteria = json!({ key: {"type": op, "pattern": pattern} });
        expect.assert_eq(&run(criteria, &payload()));
    }

    #[test]
    fn equality_operators() {
        for op in ["equals", "eq", "EQUALS"] {
            check("trigger.s", op, json!("Hello World"), expect!["true"]);
        }
        check("trigger.s", "eq", json!("hello world"), expect!["false"]);
        check("trigger.one_str", "equals", json!(1), expect!["false"]);
        check("trigger.one", "equals", json!("1"), expect!["false"]);
        check("trigger.one", "equals", json!(1.0), expect!["true"]);
        check("trigger.t", "equals", json!(1), expect!["true"]);
        check("trigger.list", "equals", json!(["a", "b", 3]), expect!["true"]);
        check("trigger.obj", "equals", json!({"inner": {"x": 1.0}, "k": "v"}), expect!["true"]);
        check("trigger.z", "equals", Json::Null, expect!["false"]);
        check("trigger.missing", "equals", Json::Null, expect!["false"]);
        for op in ["nequals", "neq"] {
            check("trigger.s", op, json!("x"), expect!["true"]);
        }
        check("trigger.s", "neq", json!("Hello World"), expect!["false"]);
        check("trigger.one_str", "neq", json!(1), expect!["true"]);
        check("trigger.z", "nequals", Json::Null, expect!["false"]);
        check("trigger.s", "nequals", Json::Null, expect!["true"]);
        for op in ["iequals", "ieq"] {
            check("trigger.s", op, json!("HELLO world"), expect!["true"]);
        }
        check("trigger.s", "ieq", json!("other"), expect!["false"]);
        check("trigger.s", "iequals", Json::Null, expect!["false"]);
        check(
            "trigger.n",
            "iequals",
            json!("5"),
            expect![[r#"error: criterion "trigger.n" (iequals): 'int' object has no attribute 'lower'"#]],
        );
        check(
            "trigger.missing",
            "ieq",
            json!("x"),
            expect![[r#"error: criterion "trigger.missing" (ieq): 'NoneType' object has no attribute 'lower'"#]],
        );
    }

    #[test]
    fn containment_operators() {
        check("trigger.s", "contains", json!("World"), expect!["true"]);
        check("trigger.s", "contains", json!("world"), expect!["false"]);
        check("trigger.list", "contains", json!("b"), expect!["true"]);
        check("trigger.list", "contains", json!("3"), expect!["false"]);
        check("trigger.list", "contains", json!(3), expect!["true"]);
        check("trigger.obj", "contains", json!("k"), expect!["true"]);
        check("trigger.obj", "contains", json!("v"), expect!["false"]);
        check(
            "trigger.obj",
            "contains",
            json!(["k"]),
            expect![[r#"error: criterion "trigger.obj" (contains): unhashable type: 'list'"#]],
        );
        check(
            "trigger.s",
            "contains",
            json!(1),
            expect![[
                r#"error: criterion "trigger.s" (contains): 'in <string>' requires string as left operand, not int"#
            ]],
        );
        check(
            "trigger.n",
            "contains",
            json!(5),
            expect![[r#"error: criterion "trigger.n" (contains): argument of type 'int' is not iterable"#]],
        );
        check(
            "trigger.missing",
            "contains",
            json!("x"),
            expect![[r#"error: criterion "trigger.missing" (contains): argument of type 'NoneType' is not iterable"#]],
        );
        check("trigger.s", "contains", Json::Null, expect!["false"]);
        check("trigger.s", "ncontains", json!("xyz"), expect!["true"]);
        check("trigger.s", "ncontains", json!("World"), expect!["false"]);
        check("trigger.list", "ncontains", json!("a"), expect!["false"]);
        check("trigger.s", "ncontains", Json::Null, expect!["false"]);
        check(
            "trigger.n",
            "ncontains",
            json!("x"),
            expect![[r#"error: criterion "trigger.n" (ncontains): argument of type 'int' is not iterable"#]],
        );
        check("trigger.s", "icontains", json!("WORLD"), expect!["true"]);
        check("trigger.s", "icontains", json!("planet"), expect!["false"]);
        check("trigger.s", "icontains", Json::Null, expect!["false"]);
        check(
            "trigger.list",
            "icontains",
            json!("a"),
            expect![[r#"error: criterion "trigger.list" (icontains): 'list' object has no attribute 'lower'"#]],
        );
        check("trigger.s", "incontains", json!("PLANET"), expect!["true"]);
        check("trigger.s", "incontains", json!("WORLD"), expect!["false"]);
        check("trigger.s", "incontains", Json::Null, expect!["false"]);
        check(
            "trigger.s",
            "incontains",
            json!(1),
            expect![[r#"error: criterion "trigger.s" (incontains): 'int' object has no attribute 'lower'"#]],
        );
        for op in ["inside", "in"] {
            check("trigger.s", op, json!(["Hello World", "x"]), expect!["true"]);
        }
        check("trigger.one", "in", json!(["1"]), expect!["false"]);
        check("trigger.n", "inside", json!([5.0]), expect!["true"]);
        check("trigger.s", "inside", json!("xx Hello World xx"), expect!["true"]);
        check("trigger.s", "inside", json!({"Hello World": 1}), expect!["true"]);
        check(
            "trigger.n",
            "inside",
            json!("555"),
            expect![[
                r#"error: criterion "trigger.n" (inside): 'in <string>' requires string as left operand, not int"#
            ]],
        );
        check("trigger.missing", "inside", json!([null]), expect!["true"]);
        check("trigger.s", "inside", Json::Null, expect!["false"]);
        check(
            "trigger.s",
            "inside",
            json!(5),
            expect![[r#"error: criterion "trigger.s" (inside): argument of type 'int' is not iterable"#]],
        );
        for op in ["ninside", "nin"] {
            check("trigger.s", op, json!(["x"]), expect!["true"]);
        }
        check("trigger.s", "nin", json!(["Hello World"]), expect!["false"]);
        check("trigger.s", "ninside", Json::Null, expect!["false"]);
    }

    #[test]
    fn string_operators() {
        check("trigger.s", "startswith", json!("Hello"), expect!["true"]);
        check("trigger.s", "startswith", json!("hello"), expect!["false"]);
        check("trigger.s", "startswith", Json::Null, expect!["false"]);
        check(
            "trigger.s",
            "startswith",
            json!(["Hello"]),
            expect![[
                r#"error: criterion "trigger.s" (startswith): startswith first arg must be str or a tuple of str, not list"#
            ]],
        );
        check(
            "trigger.n",
            "startswith",
            json!("5"),
            expect![[r#"error: criterion "trigger.n" (startswith): 'int' object has no attribute 'startswith'"#]],
        );
        check("trigger.s", "istartswith", json!("hELLO"), expect!["true"]);
        check("trigger.s", "istartswith", json!("world"), expect!["false"]);
        check("trigger.s", "istartswith", Json::Null, expect!["false"]);
        check("trigger.s", "endswith", json!("World"), expect!["true"]);
        check("trigger.s", "endswith", json!("world"), expect!["false"]);
        check("trigger.s", "endswith", Json::Null, expect!["false"]);
        check(
            "trigger.list",
            "endswith",
            json!("b"),
            expect![[r#"error: criterion "trigger.list" (endswith): 'list' object has no attribute 'endswith'"#]],
        );
        check("trigger.s", "iendswith", json!("WORLD"), expect!["true"]);
        check("trigger.s", "iendswith", json!("hello"), expect!["false"]);
        check("trigger.s", "iendswith", Json::Null, expect!["false"]);
        check(
            "trigger.n",
            "iendswith",
            json!("5"),
            expect![[r#"error: criterion "trigger.n" (iendswith): 'int' object has no attribute 'lower'"#]],
        );
    }

    #[test]
    fn ordering_operators() {
        for op in ["lessthan", "lt"] {
            check("trigger.n", op, json!(10), expect!["true"]);
        }
        check("trigger.n", "lt", json!(5), expect!["false"]);
        check("trigger.f", "lt", json!(3), expect!["true"]);
        check("trigger.s", "lt", json!("Z"), expect!["true"]);
        check("trigger.nums", "lt", json!([1, 3]), expect!["true"]);
        check("trigger.nums", "lt", json!([1, 2, 0]), expect!["true"]);
        check(
            "trigger.n",
            "lt",
            json!("10"),
            expect![[r#"error: criterion "trigger.n" (lt): '<' not supported between instances of 'int' and 'str'"#]],
        );
        check(
            "trigger.missing",
            "lt",
            json!(1),
            expect![[
                r#"error: criterion "trigger.missing" (lt): '<' not supported between instances of 'NoneType' and 'int'"#
            ]],
        );
        check(
            "trigger.obj",
            "lt",
            json!({}),
            expect![[
                r#"error: criterion "trigger.obj" (lt): '<' not supported between instances of 'dict' and 'dict'"#
            ]],
        );
        check("trigger.n", "lt", Json::Null, expect!["false"]);
        for op in ["greaterthan", "gt"] {
            check("trigger.n", op, json!(4), expect!["true"]);
        }
        check("trigger.n", "gt", json!(5), expect!["false"]);
        check("trigger.t", "gt", json!(0), expect!["true"]);
        check(
            "trigger.s",
            "gt",
            json!(1),
            expect![[r#"error: criterion "trigger.s" (gt): '>' not supported between instances of 'str' and 'int'"#]],
        );
        check("trigger.n", "gt", Json::Null, expect!["false"]);
        // Templated thresholds keep their native type; from the datastore they are strings.
        check("trigger.n", "lt", json!("{{ 2 * 5 }}"), expect!["true"]);
        check(
            "trigger.n",
            "lt",
            json!("{{ st2kv.system.threshold }}"),
            expect![[r#"error: criterion "trigger.n" (lt): '<' not supported between instances of 'int' and 'str'"#]],
        );
        check("trigger.n", "lt", json!("{{ st2kv.system.threshold | int }}"), expect!["true"]);
    }

    #[test]
    fn pattern_operators() {
        check("trigger.path", "matchwildcard", json!("/var/log/*"), expect!["true"]);
        check("trigger.path", "matchwildcard", json!("/var/*/sys?og"), expect!["true"]);
        check("trigger.path", "matchwildcard", json!("/VAR/*"), expect!["false"]);
        check("trigger.path", "matchwildcard", json!("*[!a-z]"), expect!["false"]);
        check("trigger.path", "matchwildcard", json!("*[gx]"), expect!["true"]);
        check("trigger.multi", "matchwildcard", json!("line1*"), expect!["true"]);
        check("trigger.path", "matchwildcard", Json::Null, expect!["false"]);
        check(
            "trigger.n",
            "matchwildcard",
            json!("*"),
            expect![[
                r#"error: criterion "trigger.n" (matchwildcard): fnmatch: expected string or bytes-like object, got 'int'"#
            ]],
        );
        check("trigger.s", "matchregex", json!("Hel+o"), expect!["true"]);
        check("trigger.s", "matchregex", json!("World"), expect!["false"]);
        check("trigger.multi", "matchregex", json!("line1.line2"), expect!["true"]);
        check("trigger.s", "matchregex", Json::Null, expect!["false"]);
        check("trigger.s", "regex", json!("W.rld$"), expect!["true"]);
        check("trigger.s", "regex", json!("world"), expect!["false"]);
        check("trigger.multi", "regex", json!("line1.line2"), expect!["false"]);
        check("trigger.s", "regex", Json::Null, expect!["false"]);
        check(
            "trigger.s",
            "regex",
            json!("(unclosed"),
            expect![[r#"
            error: criterion "trigger.s" (regex): invalid regular expression "(unclosed": regex parse error:
                (unclosed
                ^
            error: unclosed group"#]],
        );
        check(
            "trigger.list",
            "regex",
            json!("a"),
            expect![[
                r#"error: criterion "trigger.list" (regex): re: expected string or bytes-like object, got 'list'"#
            ]],
        );
        check("trigger.s", "iregex", json!("^hello"), expect!["true"]);
        check("trigger.s", "iregex", json!("^world"), expect!["false"]);
        check("trigger.s", "iregex", Json::Null, expect!["false"]);
    }

    #[test]
    fn timediff_operators() {
        for op in ["timediff_lt", "td_lt"] {
            check("trigger.ts_recent", op, json!(60), expect!["true"]);
        }
        check("trigger.ts_old", "td_lt", json!(60), expect!["false"]);
        check("trigger.ts_naive", "td_lt", json!("61.5"), expect!["true"]);
        check("trigger.ts_recent", "td_lt", Json::Null, expect!["false"]);
        for op in ["timediff_gt", "td_gt"] {
            check("trigger.ts_old", op, json!(3600), expect!["true"]);
        }
        check("trigger.ts_recent", "td_gt", json!(3600), expect!["false"]);
        check("trigger.ts_recent", "td_gt", Json::Null, expect!["false"]);
        check(
            "trigger.s",
            "td_gt",
            json!(1),
            expect![[r#"error: criterion "trigger.s" (td_gt): Unknown string format: Hello World"#]],
        );
        check(
            "trigger.n",
            "td_lt",
            json!(1),
            expect![[r#"error: criterion "trigger.n" (td_lt): Parser must be a string or character stream, not int"#]],
        );
        check(
            "trigger.ts_old",
            "td_lt",
            json!("soon"),
            expect![[r#"error: criterion "trigger.ts_old" (td_lt): could not convert string to float: "soon""#]],
        );
        assert_eq!(parse_timestamp("2026-06-01").unwrap().to_string(), "2026-06-01T00:00:00Z");
    }

    #[test]
    fn existence_operators() {
        check("trigger.s", "exists", json!("x"), expect!["true"]);
        check("trigger.missing", "exists", json!("x"), expect!["false"]);
        check("trigger.z", "exists", json!("x"), expect!["false"]);
        check("trigger.s", "nexists", json!("x"), expect!["false"]);
        check("trigger.missing", "nexists", json!("x"), expect!["true"]);
        check("trigger.z", "nexists", Json::Null, expect!["true"]);
    }

    #[test]
    fn keys_and_patterns() {
        check("trigger.hdr['X-Custom-Header']", "equals", json!("yes"), expect!["true"]);
        check("trigger.items[1].name", "equals", json!("b"), expect!["true"]);
        check("trigger.items[*].name", "equals", json!("a"), expect!["true"]);
        check("trigger.obj.inner.x#second", "equals", json!(1), expect!["true"]);
        check("trigger.s", "equals", json!("{{ trigger.s }}"), expect!["true"]);
        check("trigger.n", "equals", json!("{{ trigger.n }}"), expect!["true"]);
        check("trigger.n", "equals", json!("{{ trigger.n }}!"), expect!["false"]);
        check("trigger.list", "equals", json!("{{ trigger.list }}"), expect!["true"]);
        check("trigger.s", "equals", json!("{{ system.env.name }}"), expect!["false"]);
        check("system.env.name", "equals", json!("prod"), expect!["true"]);
        check("system.nope", "exists", json!("x"), expect!["false"]);
        check("trigger.s", "contains", json!("{{ st2kv.system.missing }}"), expect!["true"]);
        check(
            "trigger.s",
            "equals",
            json!("{{ nope }}"),
            expect![[r#"error: criterion "trigger.s" (equals): failed to render pattern: 'nope' is undefined"#]],
        );
        check("trigger.s", "bogus", json!("x"), expect![[r#"error: criterion "trigger.s": invalid operator "bogus""#]]);
        check(
            "trigger.[",
            "equals",
            json!("x"),
            expect![[
                r#"error: criterion "trigger.[": invalid JSONPath "trigger.[": expected a field name, found the end"#
            ]],
        );
        expect![[r#"error: criterion "trigger.s": has no operator ('type')"#]]
            .assert_eq(&run(json!({"trigger.s": {"pattern": "x"}}), &payload()));
        expect![[r#"error: criterion "trigger.s": must be a mapping with 'type' and 'pattern'"#]]
            .assert_eq(&run(json!({"trigger.s": "x"}), &payload()));
    }

    #[test]
    fn and_semantics_and_empty_payloads() {
        expect!["true"].assert_eq(&run(json!({}), &Json::Null));
        let c = json!({"trigger.s": {"type": "exists", "pattern": "x"}});
        for empty in [Json::Null, json!({}), json!([]), json!(""), json!(0)] {
            expect!["false"].assert_eq(&run(c.clone(), &empty));
        }
        // The first non-match stops evaluation: the broken second criterion is never reached.
        let c = json!({
            "trigger.n#1": {"type": "gt", "pattern": 100},
            "trigger.n#2": {"type": "bogus", "pattern": 1}
        });
        expect!["false"].assert_eq(&run(c, &payload()));
        let c = json!({
            "trigger.n#1": {"type": "gt", "pattern": 1},
            "trigger.n#2": {"type": "lt", "pattern": 10}
        });
        expect!["true"].assert_eq(&run(c, &payload()));
    }

    fn check_search(condition: &str, children: Json, expect: Expect) {
        let criteria = json!({"trigger.items": {"type": "search", "condition": condition, "pattern": children}});
        expect.assert_eq(&run(criteria, &payload()));
    }

    #[test]
    fn search_operator() {
        let both = json!({
            "item.name": {"type": "equals", "pattern": "b"},
            "item.status": {"type": "equals", "pattern": "bad"}
        });
        let mixed = json!({
            "item.name": {"type": "equals", "pattern": "a"},
            "item.status": {"type": "equals", "pattern": "bad"}
        });
        check_search("any", both.clone(), expect!["true"]);
        check_search("any", mixed.clone(), expect!["false"]);
        check_search("all", both.clone(), expect!["false"]);
        check_search("all", json!({"item.n": {"type": "gt", "pattern": 0}}), expect!["true"]);
        check_search("all2any", mixed.clone(), expect!["true"]);
        check_search("all2any", json!({"item.name": {"type": "equals", "pattern": "a"}}), expect!["false"]);
        check_search("any2any", mixed, expect!["true"]);
        check_search("any2any", json!({"item.name": {"type": "equals", "pattern": "zz"}}), expect!["false"]);
        check_search(
            "some",
            both,
            expect![[
                r#"error: criterion "trigger.items" (search): The 'some' search condition is not recognized, only 'any', 'all', 'all2any' and 'any2any' are allowed"#
            ]],
        );
        // A dict payload value is searched as a one-item list.
        let c = json!({"trigger.obj": {"type": "search", "condition": "any", "pattern": {"item.k": {"type": "eq", "pattern": "v"}}}});
        expect!["true"].assert_eq(&run(c, &payload()));
        let c = json!({"trigger.missing": {"type": "search", "condition": "any", "pattern": {}}});
        expect![[r#"error: criterion "trigger.missing" (search): 'NoneType' object is not iterable"#]]
            .assert_eq(&run(c, &payload()));
        // A child error does not hide a match elsewhere, but is reported when nothing matches.
        let c = json!({"trigger.items": {"type": "search", "condition": "any", "pattern": {"item.n": {"type": "contains", "pattern": 1}}}});
        expect![[r#"error: criterion "item.n" (contains): argument of type 'int' is not iterable"#]]
            .assert_eq(&run(c, &payload()));
        let c = json!({"trigger.list": {"type": "search", "condition": "any", "pattern": {"item": {"type": "contains", "pattern": "a"}}}});
        expect!["true"].assert_eq(&run(c, &payload()));
    }

    #[test]
    fn search_depth_limit() {
        let mut pattern = json!({"item.name": {"type": "equals", "pattern": "a"}});
        for _ in 0..MAX_SEARCH_DEPTH {
            pattern = json!({"item": {"type": "search", "condition": "any", "pattern": pattern}});
        }
        let c = json!({"trigger.items": {"type": "search", "condition": "any", "pattern": pattern}});
        let out = run(c, &payload());
        assert!(out.contains("nested deeper"), "{out}");
    }

    #[test]
    fn operator_table() {
        assert_eq!(OPERATORS.len(), 33);
        assert!(OPERATORS.iter().all(|o| is_operator(o)));
        assert!(!is_operator("EQUALS") && !is_operator("ne"));
    }

    #[test]
    fn fnmatch_cases() {
        let cases = [
            ("*", "", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[!abc]x", "bx", false),
            ("[!abc]x", "dx", true),
            ("[a-c]", "b", true),
            ("[z-a]", "b", false),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[unclosed", "[unclosed", true),
            ("a\\*", "a\\x", true),
            ("*.txt", "dir/file.txt", true),
            ("**a", "xxa", true),
            ("a*a*a*a*a*b", &"a".repeat(200), false),
        ];
        for (pat, text, want) in cases {
            assert_eq!(fnmatch(pat, text), want, "{pat:?} vs {text:?}");
        }
    }

    fn event(payload: Json) -> Json {
        json!({"id": 1, "trigger": "core.intervaltimer", "payload": payload})
    }

    #[test]
    fn attune_conditions() {
        let env = TemplateEnv::new();
        let ev = event(json!({"status": "critical", "n": 5, "msg": "disk full", "nested": {"a": 1}}));
        let check = |c: Json, e: &Json| evaluate_attune(&c, e, &env);
        assert!(check(Json::Null, &ev));
        assert!(check(json!({}), &ev));
        assert!(check(json!([]), &ev));
        assert!(check(json!([{"field": "x", "operator": "equals", "value": 1}]), &event(Json::Null)));
        assert!(check(json!({"expression": "{{ event.payload.status == \"critical\" }}"}), &ev));
        assert!(!check(json!({"expression": "{{ event.payload.status == 'ok' }}"}), &ev));
        assert!(check(json!({"expression": "event.payload.n > 3 and 'disk' in event.payload.msg"}), &ev));
        assert!(check(json!({"expression": "{{ event.payload.msg }}"}), &ev));
        assert!(!check(json!({"expression": "{{ event.payload.nope.deeper }}"}), &ev));
        assert!(!check(json!({"expression": "{{ 1 / 0 }}"}), &ev));
        assert!(!check(json!({"expression": "{{ [] }}"}), &ev));
        assert!(!check(json!({"other": 1}), &ev));
        assert!(check(
            json!([
                {"field": "status", "operator": "equals", "value": "critical"},
                {"field": "n", "operator": "not_equals", "value": 4},
                {"field": "msg", "operator": "contains", "value": "disk"},
                {"field": "nested.a", "operator": "equals", "value": 1}
            ]),
            &ev
        ));
        assert!(!check(json!([{"field": "n", "operator": "equals", "value": "5"}]), &ev));
        assert!(!check(json!([{"field": "n", "operator": "contains", "value": 5}]), &ev));
        assert!(!check(json!([{"field": "missing", "operator": "not_equals", "value": 1}]), &ev));
        assert!(!check(json!([{"field": "n", "operator": "greater", "value": 1}]), &ev));
        assert!(!check(json!("string conditions"), &ev));
    }
}
