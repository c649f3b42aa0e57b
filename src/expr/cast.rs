//! Casting of parameter values the way StackStorm does it, and Python's textual forms of values.
//!
//! Owns three things: the server-side cast applied to supplied and rendered parameter values
//! (`st2common/util/casts.py`: JSON then `ast.literal_eval` for containers, `literal_eval` of the
//! capitalised text for booleans, `int()`/`float()` for numbers), the `st2 run k=v` CLI cast, and
//! `python_repr`/`python_str`, the Python `repr()`/`str()` of a JSON value that templates print.
//! It must not look at parameter schemas beyond the one type name it is given, and it never
//! evaluates anything: the `literal_eval` here is a parser for Python literals only.

use serde_json::{Map, Number, Value};

/// The text the `use_none` filter produces; every cast turns it back into `null`.
/// StackStorm uses this magic string because a rendered template can only yield text.
pub const NONE_MAGIC_VALUE: &str = "%*****__%NONE%__*****%";

/// Deepest nesting `literal_eval` accepts. Python's own parser stops near 200 nested brackets;
/// parameters are never that deep, and the parser recurses, so the stack must stay bounded.
pub const MAX_LITERAL_DEPTH: usize = 64;

/// Deepest nesting `python_repr` prints before writing `...`. It recurses per level and the
/// values it prints may be built by code (not only parsed), so depth is capped here too.
pub const MAX_REPR_DEPTH: usize = 128;

/// Why a value could not be cast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CastError {
    /// The text is not a Python literal (`ast.literal_eval` failed).
    #[error("cannot parse {input:?} as a Python literal: {reason}")]
    Literal { input: String, reason: String },
    /// `int()`/`float()` rejected the text.
    #[error("invalid literal for {ty}(): {input:?}")]
    Number { ty: &'static str, input: String },
    /// A `string` parameter received something else (st2: `Value "x" must either be a string
    /// or None`).
    #[error("Value \"{value}\" must either be a string or None. Got \"{py_type}\".")]
    NotAString { value: String, py_type: &'static str },
    /// The CLI boolean cast failed; the text is what `st2 run` prints.
    #[error("Invalid value for boolean parameter. Valid values are: true, false")]
    Boolean,
    /// The CLI `object`/`array` cast got text that is neither JSON nor its short syntax.
    #[error("invalid {ty} value {input:?}: {reason}")]
    Container { ty: &'static str, input: String, reason: String },
}

// ------------------------------------------------------------------------------------------------
// Server-side cast
// ------------------------------------------------------------------------------------------------

/// StackStorm's server-side cast of one parameter value to the parameter's type.
///
/// Only strings are converted; other values pass through unchanged (schema validation, not the
/// cast, rejects e.g. a list given for an integer), except that a `string` parameter rejects
/// non-strings as st2 does. `null` and the `use_none` magic string become `null` for every type.
/// Unknown or missing types leave the value alone.
pub fn cast_param(ty: &str, v: Value) -> Result<Value, CastError> {
    let s = match v {
        Value::Null => return Ok(Value::Null),
        Value::String(s) => s,
        other => {
            if ty == "string" {
                return Err(CastError::NotAString { value: python_str(&other), py_type: python_type_name(&other) });
            }
            return Ok(other);
        }
    };
    if s == NONE_MAGIC_VALUE {
        return Ok(Value::Null);
    }
    match ty {
        "array" | "object" => match serde_json::from_str::<Value>(&s) {
            Ok(v) => Ok(v),
            Err(_) => literal_eval(&s),
        },
        "boolean" => literal_eval(&python_capitalize(&s)),
        "integer" => python_int(&s),
        "number" => python_float(&s),
        _ => Ok(Value::String(s)),
    }
}

/// Python's `type(x).__name__` for a JSON value, used in error texts.
fn python_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `str.capitalize()`: first character upper-cased, the rest lower-cased.
fn python_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
    }
}

/// Python's `int(str)`: surrounding whitespace, a sign, decimal digits with single underscores
/// between them. Values outside the 64-bit range are refused (JSON numbers here are 64-bit).
pub(crate) fn python_int(s: &str) -> Result<Value, CastError> {
    let err = || CastError::Number { ty: "int", input: s.to_string() };
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let clean = strip_digit_underscores(digits, |c| c.is_ascii_digit()).ok_or_else(err)?;
    let text = if neg { format!("-{clean}") } else { clean };
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Value::from(i));
    }
    text.parse::<u64>().map(Value::from).map_err(|_| err())
}

/// Python's `float(str)`: like `int` plus a fraction, an exponent, `inf`/`nan`. Infinite and NaN
/// results are refused because JSON cannot hold them.
pub(crate) fn python_float(s: &str) -> Result<Value, CastError> {
    let err = || CastError::Number { ty: "float", input: s.to_string() };
    let t = s.trim();
    let body = t.trim_start_matches(['+', '-']);
    if body.len() + 1 < t.len() {
        return Err(err()); // more than one sign
    }
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return Err(err());
    }
    // Underscores are only allowed between digits; check each digit run separately.
    let mut clean = String::with_capacity(t.len());
    let mut prev_digit = false;
    let chars: Vec<char> = t.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if !(prev_digit && next_digit) {
                return Err(err());
            }
            prev_digit = false;
            continue;
        }
        if !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')) {
            return Err(err());
        }
        prev_digit = c.is_ascii_digit();
        clean.push(c);
    }
    if !clean.chars().any(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    let f: f64 = clean.parse().map_err(|_| err())?;
    Number::from_f64(f).map(Value::Number).ok_or_else(err)
}

/// Removes underscores that sit between two characters accepted by `is_digit`; returns `None`
/// if the text is empty, has another character, or has a misplaced underscore.
fn strip_digit_underscores(s: &str, is_digit: impl Fn(char) -> bool) -> Option<String> {
    if s.is_empty() || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '_' {
            continue;
        }
        if !is_digit(c) {
            return None;
        }
        out.push(c);
    }
    Some(out)
}

// ------------------------------------------------------------------------------------------------
// CLI cast (`st2 run pack.action k=v`)
// ------------------------------------------------------------------------------------------------

/// `st2 run` casting of one `k=v` argument, given the parameter's type (runner parameters take
/// precedence over action parameters; the caller looks that up). `previous` is the value already
/// collected for the same key: for `array` parameters a repeated key appends to it.
pub fn cli_cast(ty: Option<&str>, raw: &str, previous: Option<Value>) -> Result<Value, CastError> {
    match ty {
        Some("integer") => python_int(raw),
        Some("number") => python_float(raw),
        Some("boolean") => literal_eval(&python_capitalize(raw)).map_err(|_| CastError::Boolean),
        Some("object") => cli_object(raw),
        Some("array") => {
            let new = cli_array(raw)?;
            Ok(match previous {
                None => new,
                Some(Value::Array(mut items)) => {
                    match new {
                        Value::Array(more) => items.extend(more),
                        other => items.push(other),
                    }
                    Value::Array(items)
                }
                Some(prev) => {
                    let mut items = vec![prev];
                    match new {
                        Value::Array(more) => items.extend(more),
                        other => items.push(other),
                    }
                    Value::Array(items)
                }
            })
        }
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// `object`: JSON when the text starts with `{`, else `k1=v1,k2=v2` (pairs without `=` are
/// skipped, values stay strings).
fn cli_object(raw: &str) -> Result<Value, CastError> {
    if raw.starts_with('{') {
        return serde_json::from_str(raw).map_err(|e| CastError::Container {
            ty: "object",
            input: raw.to_string(),
            reason: e.to_string(),
        });
    }
    let mut map = Map::new();
    for pair in raw.split(',') {
        if let Some((k, v)) = pair.split_once('=') {
            map.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    Ok(Value::Object(map))
}

/// `array`: a bare integer becomes `[int]`, then JSON (whatever it decodes to), then a comma
/// split with each element trimmed.
fn cli_array(raw: &str) -> Result<Value, CastError> {
    if let Ok(Value::Number(n)) = python_int(raw)
        && !n.is_f64()
    {
        return Ok(Value::Array(vec![Value::Number(n)]));
    }
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        return Ok(v);
    }
    Ok(Value::Array(raw.split(',').map(|s| Value::String(s.trim().to_string())).collect()))
}

// ------------------------------------------------------------------------------------------------
// Python repr / str
// ------------------------------------------------------------------------------------------------

/// Python's `repr()` of a JSON value as a dict/list/str/int/float/bool/None:
/// `{'a': 1, 'b': True, 'c': None}`, `['x', 1.5]`, `'it\'s'`.
pub fn python_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, v, 0);
    out
}

/// Python's `str()`: strings as they are, everything else as `repr()`. This is what a Jinja
/// `{{ value }}` prints in StackStorm.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

fn write_repr(out: &mut String, v: &Value, depth: usize) {
    if depth > MAX_REPR_DEPTH {
        out.push_str("...");
        return;
    }
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => out.push_str(&python_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(&python_str_repr(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item, depth + 1);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&python_str_repr(k));
                out.push_str(": ");
                write_repr(out, item, depth + 1);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(float)`: the shortest text that round-trips, positional for exponents in
/// [-4, 16), otherwise `1e+16` / `1.5e-07`; integral values keep a `.0`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // `{:e}` gives the shortest round-trip digits with an exponent, e.g. "1.5e16".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote;
/// backslash, the quote, `\n \r \t` and non-printable characters escaped.
pub fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !python_printable(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Approximates Python's `str.isprintable()` without Unicode tables: control characters,
/// separators other than the plain space, and the common format characters are not printable.
fn python_printable(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    !matches!(c,
        '\u{a0}' | '\u{ad}' | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
        | '\u{205f}'..='\u{2064}' | '\u{3000}' | '\u{feff}'
        | '\u{e000}'..='\u{f8ff}')
}

// ------------------------------------------------------------------------------------------------
// ast.literal_eval subset
// ------------------------------------------------------------------------------------------------

/// Parses a Python literal (`ast.literal_eval`): dicts, lists, tuples and sets (both become JSON
/// arrays), strings in any quote style with escapes and adjacent-literal concatenation, ints
/// (decimal, `0x`, `0o`, `0b`, underscores), floats, `True`/`False`/`None`, unary signs.
/// Dict keys become JSON keys the way `json.dumps` converts them (`1` → `"1"`, `True` → `"true"`).
pub fn literal_eval(s: &str) -> Result<Value, CastError> {
    let mut p = LitParser { src: s, pos: 0, depth: 0 };
    let fail = |reason: String| CastError::Literal { input: s.to_string(), reason };
    p.skip_ws();
    let v = p.expr().map_err(fail)?;
    p.skip_ws();
    if p.pos < s.len() {
        return Err(fail(format!("unexpected text at offset {}", p.pos)));
    }
    Ok(v)
}

struct LitParser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl LitParser<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Whitespace, line continuations and `#` comments, as the Python tokenizer skips them
    /// inside brackets.
    fn skip_ws(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('\\') if self.rest().starts_with("\\\n") => self.pos += 2,
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn expr(&mut self) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > MAX_LITERAL_DEPTH {
            return Err(format!("nesting deeper than {MAX_LITERAL_DEPTH}"));
        }
        let v = self.expr_inner();
        self.depth -= 1;
        v
    }

    fn expr_inner(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.peek() {
            None => Err("unexpected end of input".into()),
            Some('[') => {
                self.bump();
                Ok(Value::Array(self.items(']')?))
            }
            Some('(') => {
                self.bump();
                self.skip_ws();
                if self.peek() == Some(')') {
                    self.bump();
                    return Ok(Value::Array(vec![]));
                }
                let first = self.expr()?;
                self.skip_ws();
                match self.bump() {
                    Some(')') => Ok(first), // parenthesised expression, not a tuple
                    Some(',') => {
                        let mut items = vec![first];
                        items.extend(self.items(')')?);
                        Ok(Value::Array(items))
                    }
                    _ => Err("expected ',' or ')'".into()),
                }
            }
            Some('{') => {
                self.bump();
                self.dict_or_set()
            }
            Some('+') | Some('-') => {
                let neg = self.bump() == Some('-');
                self.skip_ws();
                let v = self.expr()?;
                match v {
                    Value::Number(n) if !neg => Ok(Value::Number(n)),
                    Value::Number(n) => negate(&n).ok_or_else(|| "integer out of range".into()),
                    _ => Err("unary sign applies only to numbers".into()),
                }
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c == '\'' || c == '"' => self.strings(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.bump();
                }
                let word = self.src.get(start..self.pos).unwrap_or("");
                match word {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    w if is_string_prefix(w) && matches!(self.peek(), Some('\'' | '"')) => {
                        self.pos = start;
                        self.strings()
                    }
                    w => Err(format!("malformed node or string: name {w:?}")),
                }
            }
            Some(c) => Err(format!("unexpected character {c:?}")),
        }
    }

    /// Comma-separated items up to `close`, trailing comma allowed.
    fn items(&mut self, close: char) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.bump();
                return Ok(items);
            }
            items.push(self.expr()?);
            self.skip_ws();
            match self.bump() {
                Some(',') => {}
                Some(c) if c == close => return Ok(items),
                _ => return Err(format!("expected ',' or '{close}'")),
            }
        }
    }

    fn dict_or_set(&mut self) -> Result<Value, String> {
        self.skip_ws();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(Value::Object(Map::new()));
        }
        let first = self.expr()?;
        self.skip_ws();
        if self.peek() != Some(':') {
            // A set literal: `{1, 2}`; JSON has no sets, so it becomes a list.
            let mut items = vec![first];
            match self.bump() {
                Some('}') => return Ok(Value::Array(items)),
                Some(',') => {
                    items.extend(self.items('}')?);
                    return Ok(Value::Array(items));
                }
                _ => return Err("expected ':', ',' or '}'".into()),
            }
        }
        let mut map = Map::new();
        let mut key = first;
        loop {
            self.skip_ws();
            if self.bump() != Some(':') {
                return Err("expected ':'".into());
            }
            let value = self.expr()?;
            map.insert(json_key(&key)?, value);
            self.skip_ws();
            match self.bump() {
                Some('}') => return Ok(Value::Object(map)),
                Some(',') => {
                    self.skip_ws();
                    if self.peek() == Some('}') {
                        self.bump();
                        return Ok(Value::Object(map));
                    }
                    key = self.expr()?;
                }
                _ => return Err("expected ',' or '}'".into()),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            let c = self.bump();
            // An exponent sign belongs to the number: `1e-5`.
            if matches!(c, Some('e' | 'E'))
                && !self.src.get(start..self.pos).is_some_and(|t| t.starts_with("0x") || t.starts_with("0X"))
                && matches!(self.peek(), Some('+' | '-'))
            {
                self.bump();
            }
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        let lower = text.to_ascii_lowercase();
        let radix = [("0x", 16), ("0o", 8), ("0b", 2)].into_iter().find(|(p, _)| lower.starts_with(p));
        if let Some((prefix, radix)) = radix {
            let digits = lower.get(prefix.len()..).unwrap_or("");
            let digits = digits.strip_prefix('_').unwrap_or(digits);
            let clean = strip_digit_underscores(digits, |c| c.is_digit(radix))
                .ok_or_else(|| format!("invalid number {text:?}"))?;
            return u64::from_str_radix(&clean, radix)
                .map(Value::from)
                .map_err(|_| format!("integer out of range {text:?}"));
        }
        let is_float = lower.contains(['.', 'e']);
        if !is_float {
            // Python 3 rejects leading zeros in decimal integers ("0755"), except for zero.
            if lower.len() > 1 && lower.starts_with('0') && !lower.trim_start_matches(['0', '_']).is_empty() {
                return Err(format!("leading zeros in decimal integer {text:?}"));
            }
            return python_int(text).map_err(|_| format!("invalid number {text:?}"));
        }
        python_float(text).map_err(|_| format!("invalid number {text:?}"))
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<Value, String> {
        let mut out = String::new();
        loop {
            self.skip_ws_inline();
            let start = self.pos;
            let mut raw = false;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphabetic() {
                    if matches!(c, 'r' | 'R') {
                        raw = true;
                    }
                    self.bump();
                } else {
                    break;
                }
            }
            let prefix = self.src.get(start..self.pos).unwrap_or("");
            if !is_string_prefix(prefix) {
                self.pos = start;
                break;
            }
            match self.peek() {
                Some(q @ ('\'' | '"')) => self.string_body(q, raw, &mut out)?,
                _ => {
                    self.pos = start;
                    break;
                }
            }
        }
        Ok(Value::String(out))
    }

    /// Skips spaces between adjacent string literals.
    fn skip_ws_inline(&mut self) {
        self.skip_ws();
    }

    fn string_body(&mut self, q: char, raw: bool, out: &mut String) -> Result<(), String> {
        let triple: String = [q, q, q].iter().collect();
        let is_triple = self.rest().starts_with(&triple);
        self.pos += if is_triple { 3 } else { 1 };
        loop {
            if is_triple && self.rest().starts_with(&triple) {
                self.pos += 3;
                return Ok(());
            }
            let c = self.bump().ok_or("unterminated string")?;
            match c {
                c if c == q && !is_triple => return Ok(()),
                '\n' if !is_triple => return Err("unterminated string".into()),
                '\\' if raw => {
                    out.push('\\');
                    if let Some(n) = self.bump() {
                        out.push(n);
                    }
                }
                '\\' => self.escape(out)?,
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), String> {
        let c = self.bump().ok_or("unterminated string")?;
        match c {
            '\n' => {}
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '0'..='7' => {
                let mut n = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            n = n * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(n).ok_or("invalid octal escape")?);
            }
            'x' | 'u' | 'U' => {
                let len = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex = self.rest().get(..len).ok_or("truncated escape")?;
                if !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return Err(format!("truncated \\{c} escape"));
                }
                let n = u32::from_str_radix(hex, 16).map_err(|_| "invalid escape")?;
                self.pos += len;
                out.push(char::from_u32(n).ok_or("invalid code point in escape")?);
            }
            other => {
                // Python keeps unknown escapes literally (with a warning).
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }
}

fn is_string_prefix(w: &str) -> bool {
    matches!(w.to_ascii_lowercase().as_str(), "" | "r" | "u" | "b" | "br" | "rb")
}

fn negate(n: &Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(Value::from);
    }
    if let Some(u) = n.as_u64() {
        // -9223372036854775808 is the only u64 whose negation fits.
        return (u == 1u64 << 63).then(|| Value::from(i64::MIN));
    }
    n.as_f64().and_then(|f| Number::from_f64(-f)).map(Value::Number)
}

/// The JSON key `json.dumps` would write for a Python dict key.
fn json_key(k: &Value) -> Result<String, String> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok("null".into()),
        Value::Number(n) => Ok(match n.as_f64() {
            Some(f) if n.is_f64() => python_float_repr(f),
            _ => n.to_string(),
        }),
        Value::Array(_) | Value::Object(_) => Err("unhashable dict key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn show(r: Result<Value, CastError>) -> String {
        match r {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!("err {e}"),
        }
    }

    fn check_lit(input: &str, expect: Expect) {
        expect.assert_eq(&show(literal_eval(input)));
    }

    #[test]
    fn literal_eval_cases() {
        check_lit("{'a': 1, 'b': True, 'c': None}", expect![[r#"ok {"a":1,"b":true,"c":null}"#]]);
        check_lit("['x', 1, 2.5, -3]", expect![[r#"ok ["x",1,2.5,-3]"#]]);
        check_lit("(1, 2,)", expect!["ok [1,2]"]);
        check_lit("(1)", expect!["ok 1"]);
        check_lit("()", expect!["ok []"]);
        check_lit("{1, 2}", expect!["ok [1,2]"]);
        check_lit("{}", expect!["ok {}"]);
        check_lit(
            "{1: 'a', True: 'b', None: 'c', 1.5: 'd'}",
            expect![[r#"ok {"1":"a","true":"b","null":"c","1.5":"d"}"#]],
        );
        check_lit(r#""dq" 'sq'"#, expect![[r#"ok "dqsq""#]]);
        check_lit(r"'a\nb\x41\u00e9\101'", expect![[r#"ok "a\nbAéA""#]]);
        check_lit(r"r'a\nb'", expect![[r#"ok "a\\nb""#]]);
        check_lit("'''tri\nple'''", expect![[r#"ok "tri\nple""#]]);
        check_lit("0x1F", expect!["ok 31"]);
        check_lit("0o17", expect!["ok 15"]);
        check_lit("0b101", expect!["ok 5"]);
        check_lit("1_000", expect!["ok 1000"]);
        check_lit("1e3", expect!["ok 1000.0"]);
        check_lit("1e-3", expect!["ok 0.001"]);
        check_lit(".5", expect!["ok 0.5"]);
        check_lit("-9223372036854775808", expect!["ok -9223372036854775808"]);
        check_lit("18446744073709551615", expect!["ok 18446744073709551615"]);
        check_lit(
            "99999999999999999999",
            expect![[
                r#"err cannot parse "99999999999999999999" as a Python literal: invalid number "99999999999999999999""#
            ]],
        );
        check_lit("  [1, # comment\n 2]  ", expect!["ok [1,2]"]);
        // Failures: names, calls, operators, leading zeros, unbalanced brackets.
        check_lit(
            "yes",
            expect![[r#"err cannot parse "yes" as a Python literal: malformed node or string: name "yes""#]],
        );
        check_lit(
            "true",
            expect![[r#"err cannot parse "true" as a Python literal: malformed node or string: name "true""#]],
        );
        check_lit(
            "0755",
            expect![[r#"err cannot parse "0755" as a Python literal: leading zeros in decimal integer "0755""#]],
        );
        check_lit("[1, 2", expect![[r#"err cannot parse "[1, 2" as a Python literal: expected ',' or ']'"#]]);
        check_lit("1 + 2", expect![[r#"err cannot parse "1 + 2" as a Python literal: unexpected text at offset 2"#]]);
        check_lit("'abc", expect![[r#"err cannot parse "'abc" as a Python literal: unterminated string"#]]);
        check_lit("{[1]: 2}", expect![[r#"err cannot parse "{[1]: 2}" as a Python literal: unhashable dict key"#]]);
        check_lit("", expect![[r#"err cannot parse "" as a Python literal: unexpected end of input"#]]);
    }

    #[test]
    fn literal_depth_limit() {
        let deep = format!("{}{}", "[".repeat(MAX_LITERAL_DEPTH + 1), "]".repeat(MAX_LITERAL_DEPTH + 1));
        assert!(matches!(literal_eval(&deep), Err(CastError::Literal { reason, .. }) if reason.contains("nesting")));
        let ok = format!("{}{}", "[".repeat(MAX_LITERAL_DEPTH), "]".repeat(MAX_LITERAL_DEPTH));
        assert!(literal_eval(&ok).is_ok());
    }

    fn check_cast(ty: &str, v: Value, expect: Expect) {
        expect.assert_eq(&show(cast_param(ty, v)));
    }

    #[test]
    fn server_casts() {
        check_cast("object", json!(r#"{"a": 1}"#), expect![[r#"ok {"a":1}"#]]);
        check_cast("object", json!("{'a': 1, 'b': True}"), expect![[r#"ok {"a":1,"b":true}"#]]);
        check_cast("array", json!("['x', None]"), expect![[r#"ok ["x",null]"#]]);
        check_cast("array", json!("[1, 2]"), expect!["ok [1,2]"]);
        check_cast(
            "array",
            json!("not a list"),
            expect![[r#"err cannot parse "not a list" as a Python literal: malformed node or string: name "not""#]],
        );
        check_cast("object", json!({"already": 1}), expect![[r#"ok {"already":1}"#]]);
        check_cast("boolean", json!("true"), expect!["ok true"]);
        check_cast("boolean", json!("TRUE"), expect!["ok true"]);
        check_cast("boolean", json!("false"), expect!["ok false"]);
        check_cast("boolean", json!("1"), expect!["ok 1"]);
        check_cast("boolean", json!("none"), expect!["ok null"]);
        check_cast(
            "boolean",
            json!("yes"),
            expect![[r#"err cannot parse "Yes" as a Python literal: malformed node or string: name "Yes""#]],
        );
        check_cast("boolean", json!(false), expect!["ok false"]);
        check_cast("integer", json!(" 42 "), expect!["ok 42"]);
        check_cast("integer", json!("-1_000"), expect!["ok -1000"]);
        check_cast("integer", json!("4.5"), expect![[r#"err invalid literal for int(): "4.5""#]]);
        check_cast("integer", json!("0x10"), expect![[r#"err invalid literal for int(): "0x10""#]]);
        check_cast("integer", json!(7), expect!["ok 7"]);
        check_cast("number", json!("1.5"), expect!["ok 1.5"]);
        check_cast("number", json!("3"), expect!["ok 3.0"]);
        check_cast("number", json!("1e3"), expect!["ok 1000.0"]);
        check_cast("number", json!("inf"), expect![[r#"err invalid literal for float(): "inf""#]]);
        check_cast("number", json!("abc"), expect![[r#"err invalid literal for float(): "abc""#]]);
        check_cast("number", json!("1__0"), expect![[r#"err invalid literal for float(): "1__0""#]]);
        check_cast("string", json!("x"), expect![[r#"ok "x""#]]);
        check_cast("string", json!(5), expect![[r#"err Value "5" must either be a string or None. Got "int"."#]]);
        check_cast(
            "string",
            json!({"a": true}),
            expect![[r#"err Value "{'a': True}" must either be a string or None. Got "dict"."#]],
        );
        check_cast("string", Value::Null, expect!["ok null"]);
        for ty in ["string", "integer", "object", "boolean", "number", "array"] {
            check_cast(ty, json!(NONE_MAGIC_VALUE), expect!["ok null"]);
        }
        check_cast("weird", json!("x"), expect![[r#"ok "x""#]]);
    }

    fn check_cli(ty: Option<&str>, raw: &str, prev: Option<Value>, expect: Expect) {
        expect.assert_eq(&show(cli_cast(ty, raw, prev)));
    }

    #[test]
    fn cli_casts() {
        check_cli(Some("string"), "42", None, expect![[r#"ok "42""#]]);
        check_cli(None, "a=b", None, expect![[r#"ok "a=b""#]]);
        check_cli(Some("integer"), "42", None, expect!["ok 42"]);
        check_cli(Some("integer"), "x", None, expect![[r#"err invalid literal for int(): "x""#]]);
        check_cli(Some("number"), "2.5", None, expect!["ok 2.5"]);
        check_cli(Some("boolean"), "true", None, expect!["ok true"]);
        check_cli(Some("boolean"), "False", None, expect!["ok false"]);
        check_cli(
            Some("boolean"),
            "maybe",
            None,
            expect!["err Invalid value for boolean parameter. Valid values are: true, false"],
        );
        check_cli(Some("object"), r#"{"a": [1]}"#, None, expect![[r#"ok {"a":[1]}"#]]);
        check_cli(Some("object"), "k1=v1,k2=v=2,junk", None, expect![[r#"ok {"k1":"v1","k2":"v=2"}"#]]);
        check_cli(
            Some("object"),
            "{broken",
            None,
            expect![[r#"err invalid object value "{broken": key must be a string at line 1 column 2"#]],
        );
        check_cli(Some("array"), "51", None, expect!["ok [51]"]);
        check_cli(Some("array"), r#"["a", 2]"#, None, expect![[r#"ok ["a",2]"#]]);
        check_cli(Some("array"), "a, b ,c", None, expect![[r#"ok ["a","b","c"]"#]]);
        check_cli(Some("array"), "true", None, expect!["ok true"]);
        check_cli(Some("array"), "c", Some(json!(["a", "b"])), expect![[r#"ok ["a","b","c"]"#]]);
        check_cli(Some("array"), "3", Some(json!([1, 2])), expect!["ok [1,2,3]"]);
        check_cli(Some("array"), "x", Some(json!("w")), expect![[r#"ok ["w","x"]"#]]);
    }

    fn check_repr(v: Value, expect: Expect) {
        expect.assert_eq(&python_repr(&v));
    }

    #[test]
    fn python_reprs() {
        check_repr(json!({"a": 1, "b": true, "c": null}), expect!["{'a': 1, 'b': True, 'c': None}"]);
        check_repr(json!(["x", 1, false]), expect!["['x', 1, False]"]);
        check_repr(json!({"z": 1, "a": 2}), expect!["{'z': 1, 'a': 2}"]);
        check_repr(json!("it's"), expect![[r#""it's""#]]);
        check_repr(json!("both ' and \""), expect![[r#"'both \' and "'"#]]);
        check_repr(json!("tab\there\nnl\\ \u{1} é \u{a0}"), expect![[r"'tab\there\nnl\\ \x01 é \xa0'"]]);
        check_repr(json!(1.0), expect!["1.0"]);
        check_repr(json!(1e16), expect!["1e+16"]);
        check_repr(json!(1.5e-7), expect!["1.5e-07"]);
        check_repr(json!(123456.789), expect!["123456.789"]);
        check_repr(json!(0.0001), expect!["0.0001"]);
        check_repr(json!(-0.0), expect!["-0.0"]);
        check_repr(json!(u64::MAX), expect!["18446744073709551615"]);
        check_repr(json!([[], {}]), expect!["[[], {}]"]);
        assert_eq!(python_str(&json!("plain")), "plain");
    }

    #[test]
    fn repr_depth_limit() {
        let mut v = json!(1);
        for _ in 0..MAX_REPR_DEPTH + 5 {
            v = json!([v]);
        }
        assert!(python_repr(&v).contains("..."));
    }
}
