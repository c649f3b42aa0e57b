//! The part of JSONPath (as jsonpath-rw 1.4 reads it) that StackStorm rule criteria keys and the
//! `jsonpath_query` filter use.
//!
//! Supported: `a.b`, `$`, quoted fields `'x-y'` / `"x y"`, bracketed fields `['X-Header']`,
//! comma lists `a,b`, `*` (all values of a dict), `[0]` / `[-1]` indexes, `[*]` and `[1:3]`
//! slices, and `..` (the node and all its descendants). Not supported (parse error): `where`,
//! `|`, `&`, parentheses, `` `this` ``, slice steps. This module only selects values; it never
//! copies them and never interprets what it finds.

use serde_json::Value;

/// Longest path text accepted. Criteria keys are short; the cap keeps a hostile rule file from
/// making the parser allocate or loop on megabytes of path.
pub const MAX_PATH_LEN: usize = 4096;

/// A path that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath {path:?}: {reason}")]
pub struct JsonPathError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Named fields of a dict (`a`, `'a'`, `['a','b']`).
    Fields(Vec<String>),
    /// `*`: every value of a dict.
    AnyField,
    /// `[n]`: one element of a list (negative counts from the end) or character of a string.
    Index(i64),
    /// `[*]`, `[a:b]`: elements of a list; a dict, string or number is treated as `[itself]`
    /// (jsonpath-rw does the same).
    Slice(Option<i64>, Option<i64>),
    /// `..`: the current nodes and all their descendants, in document order.
    Descendants,
}

/// A parsed path; parse once, evaluate many times.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(path: &str) -> Result<JsonPath, JsonPathError> {
        let err = |reason: &str| JsonPathError { path: path.chars().take(200).collect(), reason: reason.to_string() };
        if path.len() > MAX_PATH_LEN {
            return Err(err("path too long"));
        }
        let mut p = Parser { chars: path.chars().collect(), pos: 0 };
        let steps = p.path().map_err(|r| err(&r))?;
        Ok(JsonPath { steps })
    }

    /// Every match, in the order jsonpath-rw returns them.
    pub fn find<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        apply_steps(&self.steps, vec![root])
    }

    /// The first match, which is what a criteria key compares.
    pub fn first<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.find(root).into_iter().next()
    }

    /// Evaluates against a virtual root dict made of `roots` (e.g. `{"trigger": payload}`)
    /// without building that dict. Steps that would return the virtual root itself yield nothing.
    pub fn find_in<'v>(&self, roots: &[(&str, &'v Value)]) -> Vec<&'v Value> {
        let Some((first, rest)) = self.steps.split_first() else {
            return Vec::new();
        };
        let start: Vec<&'v Value> = match first {
            Step::Fields(names) => {
                names.iter().flat_map(|n| roots.iter().filter(move |(k, _)| k == n).map(|(_, v)| *v)).collect()
            }
            Step::AnyField => roots.iter().map(|(_, v)| *v).collect(),
            Step::Descendants => {
                let all: Vec<&'v Value> = roots.iter().map(|(_, v)| *v).collect();
                descendants(all)
            }
            Step::Index(_) | Step::Slice(..) => Vec::new(),
        };
        apply_steps(rest, start)
    }

    /// The name the path starts with, when it starts with a plain field (`trigger.x` →
    /// `trigger`).
    pub fn root_field(&self) -> Option<&str> {
        match self.steps.first() {
            Some(Step::Fields(names)) if names.len() == 1 => names.first().map(String::as_str),
            _ => None,
        }
    }

    /// When the path is only plain single fields (`system.a.b`), the field names.
    pub fn plain_fields(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Fields(names) if names.len() == 1 => names.first().map(String::as_str),
                _ => None,
            })
            .collect()
    }
}

/// The first match of `path` in `root`; an unparsable path matches nothing.
pub fn first_match<'v>(path: &str, root: &'v Value) -> Option<&'v Value> {
    JsonPath::parse(path).ok()?.first(root)
}

/// All matches of `path` in `root`; an unparsable path matches nothing.
pub fn all_matches<'v>(path: &str, root: &'v Value) -> Vec<&'v Value> {
    match JsonPath::parse(path) {
        Ok(p) => p.find(root),
        Err(_) => Vec::new(),
    }
}

fn apply_steps<'v>(steps: &[Step], mut current: Vec<&'v Value>) -> Vec<&'v Value> {
    for step in steps {
        if current.is_empty() {
            break;
        }
        current = match step {
            Step::Descendants => descendants(current),
            _ => current.into_iter().flat_map(|v| apply(step, v)).collect(),
        };
    }
    current
}

fn apply<'v>(step: &Step, v: &'v Value) -> Vec<&'v Value> {
    match (step, v) {
        (Step::Fields(names), Value::Object(map)) => names.iter().filter_map(|n| map.get(n.as_str())).collect(),
        (Step::AnyField, Value::Object(map)) => map.values().collect(),
        (Step::Index(i), Value::Array(items)) => {
            index(items.len(), *i).and_then(|i| items.get(i)).into_iter().collect()
        }
        (Step::Slice(a, b), Value::Array(items)) => {
            let (start, end) = slice_bounds(items.len(), *a, *b);
            items.get(start..end).map(|s| s.iter().collect()).unwrap_or_default()
        }
        (Step::Slice(..), Value::Object(_) | Value::String(_) | Value::Number(_) | Value::Bool(_)) => {
            vec![v]
        }
        _ => Vec::new(),
    }
}

fn index(len: usize, i: i64) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok().filter(|&i| i < len)
    } else {
        let back = usize::try_from(i.unsigned_abs()).ok()?;
        len.checked_sub(back)
    }
}

/// Python slice bounds for `[a:b]` with step 1.
fn slice_bounds(len: usize, a: Option<i64>, b: Option<i64>) -> (usize, usize) {
    let fix = |x: i64| -> usize {
        if x >= 0 {
            usize::try_from(x).unwrap_or(usize::MAX).min(len)
        } else {
            len.saturating_sub(usize::try_from(x.unsigned_abs()).unwrap_or(usize::MAX))
        }
    };
    let start = a.map_or(0, fix);
    let end = b.map_or(len, fix);
    (start, end.max(start))
}

/// Each node followed by all its descendants (pre-order), iteratively so that deep documents
/// cannot exhaust the stack.
fn descendants<'v>(nodes: Vec<&'v Value>) -> Vec<&'v Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&'v Value> = nodes.into_iter().rev().collect();
    while let Some(v) = stack.pop() {
        out.push(v);
        match v {
            Value::Object(map) => stack.extend(map.values().rev()),
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    out
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.pos += 1;
        }
    }

    fn path(&mut self) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        self.skip_ws();
        match self.peek() {
            None => return Err("empty path".into()),
            Some('$') => self.pos += 1,
            Some('[') => steps.push(self.bracket()?),
            Some('.') if self.peek2() == Some('.') => {}
            _ => steps.push(self.fields_or_any()?),
        }
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(steps),
                Some('.') if self.peek2() == Some('.') => {
                    self.pos += 2;
                    steps.push(Step::Descendants);
                    self.skip_ws();
                    if self.peek() == Some('[') {
                        steps.push(self.bracket()?);
                    } else {
                        steps.push(self.fields_or_any()?);
                    }
                }
                Some('.') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some('[') {
                        steps.push(self.bracket()?);
                    } else {
                        steps.push(self.fields_or_any()?);
                    }
                }
                Some('[') => steps.push(self.bracket()?),
                Some(c) => return Err(format!("unexpected {c:?} at offset {}", self.pos)),
            }
        }
    }

    fn fields_or_any(&mut self) -> Result<Step, String> {
        self.skip_ws();
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok(Step::AnyField);
        }
        Ok(Step::Fields(self.fields()?))
    }

    fn fields(&mut self) -> Result<Vec<String>, String> {
        let mut names = vec![self.field()?];
        loop {
            self.skip_ws();
            if self.peek() != Some(',') {
                return Ok(names);
            }
            self.pos += 1;
            names.push(self.field()?);
        }
    }

    fn field(&mut self) -> Result<String, String> {
        self.skip_ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err("unterminated quoted field".into()),
                        Some('\\') => {
                            self.pos += 1;
                            if let Some(c) = self.peek() {
                                s.push(c);
                                self.pos += 1;
                            }
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            return Ok(s);
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '@' => {
                let mut s = String::new();
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '-') {
                        s.push(c);
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if matches!(s.as_str(), "where" | "this") {
                    return Err(format!("{s:?} is not supported"));
                }
                Ok(s)
            }
            Some(c) => Err(format!("expected a field name, found {c:?} at offset {}", self.pos)),
            None => Err("expected a field name, found the end".into()),
        }
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        let text: String = self.chars.get(start..self.pos).unwrap_or(&[]).iter().collect();
        text.parse::<i64>().map(Some).map_err(|_| format!("invalid index {text:?}"))
    }

    fn bracket(&mut self) -> Result<Step, String> {
        self.pos += 1; // '['
        self.skip_ws();
        let step = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Step::Slice(None, None)
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == ':' => {
                let a = self.int()?;
                self.skip_ws();
                if self.peek() == Some(':') {
                    self.pos += 1;
                    let b = self.int()?;
                    self.skip_ws();
                    if self.peek() == Some(':') {
                        return Err("slice steps are not supported".into());
                    }
                    Step::Slice(a, b)
                } else {
                    Step::Index(a.ok_or("expected an index")?)
                }
            }
            _ => Step::Fields(self.fields()?),
        };
        self.skip_ws();
        if self.peek() != Some(']') {
            return Err(format!("expected ']' at offset {}", self.pos));
        }
        self.pos += 1;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "trigger": {
                "body": {"x": 1, "name": "n", "nested": {"deep": true}},
                "headers": {"X-Custom-Header": "h", "a b": "space"},
                "items": [{"id": 10}, {"id": 20}, {"id": 30}],
                "text": "abc",
                "null": null
            }
        })
    }

    fn check(path: &str, expect: Expect) {
        let d = doc();
        let out = match JsonPath::parse(path) {
            Ok(p) => {
                let found: Vec<String> = p.find(&d).iter().map(|v| v.to_string()).collect();
                found.join(" | ")
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn paths() {
        check("trigger.body.x", expect!["1"]);
        check("$.trigger.body.name", expect![[r#""n""#]]);
        check("trigger.headers['X-Custom-Header']", expect![[r#""h""#]]);
        check("trigger.headers[\"a b\"]", expect![[r#""space""#]]);
        check("trigger.headers.'X-Custom-Header'", expect![[r#""h""#]]);
        check("trigger.headers.X-Custom-Header", expect![[r#""h""#]]);
        check("trigger.items[0].id", expect!["10"]);
        check("trigger.items[-1].id", expect!["30"]);
        check("trigger.items[5].id", expect![""]);
        check("trigger.items[-5]", expect![""]);
        check("trigger.items[*].id", expect!["10 | 20 | 30"]);
        check("trigger.items[1:].id", expect!["20 | 30"]);
        check("trigger.items[:2].id", expect!["10 | 20"]);
        check("trigger.body.*", expect![[r#"1 | "n" | {"deep":true}"#]]);
        check("trigger.body[x,name]", expect![[r#"1 | "n""#]]);
        check("trigger.body[*].x", expect!["1"]);
        check("trigger.text[0]", expect![""]);
        check("trigger..id", expect!["10 | 20 | 30"]);
        check("trigger..deep", expect!["true"]);
        check("trigger.null", expect!["null"]);
        check("trigger.missing.x", expect![""]);
        check("trigger.items.id", expect![""]);
        check("trigger.body.x.y", expect![""]);
        check("trigger.", expect![[r#"error: invalid JSONPath "trigger.": expected a field name, found the end"#]]);
        check(
            "trigger.0",
            expect![[r#"error: invalid JSONPath "trigger.0": expected a field name, found '0' at offset 8"#]],
        );
        check("trigger[0", expect![[r#"error: invalid JSONPath "trigger[0": expected ']' at offset 9"#]]);
        check("a where b", expect![[r#"error: invalid JSONPath "a where b": unexpected 'w' at offset 2"#]]);
        check(
            "trigger.items[0:2:1]",
            expect![[r#"error: invalid JSONPath "trigger.items[0:2:1]": slice steps are not supported"#]],
        );
        check("", expect![[r#"error: invalid JSONPath "": empty path"#]]);
    }

    #[test]
    fn virtual_roots_and_helpers() {
        let payload = json!({"a": {"b": 2}});
        let p = JsonPath::parse("trigger.a.b").unwrap();
        assert_eq!(p.find_in(&[("trigger", &payload)]), vec![&json!(2)]);
        assert_eq!(p.root_field(), Some("trigger"));
        assert_eq!(p.plain_fields(), Some(vec!["trigger", "a", "b"]));
        assert!(JsonPath::parse("other.a").unwrap().find_in(&[("trigger", &payload)]).is_empty());
        assert_eq!(first_match("a.b", &payload), Some(&json!(2)));
        assert_eq!(all_matches("a.*", &payload), vec![&json!(2)]);
        assert_eq!(first_match("a[", &payload), None);
    }

    #[test]
    fn path_length_limit() {
        let long = "a.".repeat(MAX_PATH_LEN) + "a";
        assert!(JsonPath::parse(&long).unwrap_err().reason.contains("too long"));
    }
}
