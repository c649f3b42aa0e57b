//! Orquesta's Jinja functions (`ctx()`, `result()`, `succeeded()`, `item()`, `task()`,
//! `st2kv()`, st2 filters called as functions…) on top of `crate::expr::TemplateEnv`, whose
//! render context is plain JSON and so cannot hold callables.
//!
//! Approach: the template is *pre-translated* once, at load time. Inside `{{ }}` / `{% %}`
//! every call of a workflow function becomes a reference to a reserved variable that the
//! caller puts in the render context: `ctx()` → `__ctx`, `ctx('x')` → `__ctx['x']`,
//! `result()` → `__result`, `succeeded()` → `__succeeded`, `item(x)` → `__item[x]`,
//! `task('t')` → `__tasks['t']`, `task()` → `__task`, `task_status('t')` →
//! `__task_status['t']`; `st2kv(key, decrypt=…, default=…)` → `__kv[i]`, whose arguments are
//! evaluated (as Jinja expressions) and looked up before the render; a filter called as a
//! function, `to_json_string(x, 2)`, becomes `(x | to_json_string(2))`. `Uses` records which
//! reserved variables a template needs, so the render context only carries those.
//!
//! This module only rewrites text: it evaluates nothing. Text outside Jinja delimiters, string
//! literals, comments and `{% raw %}` blocks are copied unchanged; calls after `.` (methods) or
//! `|` (filters) are left alone.

/// Which reserved variables a translated template reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uses {
    pub ctx: bool,
    pub result: bool,
    pub status: bool,
    pub item: bool,
    pub task: bool,
    pub tasks: bool,
    pub task_status: bool,
}

impl Uses {
    pub fn union(self, o: Uses) -> Uses {
        Uses {
            ctx: self.ctx || o.ctx,
            result: self.result || o.result,
            status: self.status || o.status,
            item: self.item || o.item,
            task: self.task || o.task,
            tasks: self.tasks || o.tasks,
            task_status: self.task_status || o.task_status,
        }
    }
}

/// One `st2kv(...)` call: its arguments as translated Jinja expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCall {
    pub key: String,
    pub decrypt: Option<String>,
    pub default: Option<String>,
}

/// A translated template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub text: String,
    pub uses: Uses,
    pub kv: Vec<KvCall>,
}

/// Which workflow language the template belongs to: Attune's `keystore.x` reads the system
/// datastore scope (`st2kv.system.x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Orquesta,
    Attune,
}

/// st2 filters (see `crate::expr` filters) that Orquesta also exposes as functions, plus the
/// aliases Orquesta/st2 register (`json_parse` is `from_json_string`…) and the builtin Jinja
/// filters Attune templates call as functions (`length(x)`).
pub const FILTER_FUNCTIONS: &[(&str, &str)] = &[
    ("to_json_string", "to_json_string"),
    ("from_json_string", "from_json_string"),
    ("to_yaml_string", "to_yaml_string"),
    ("from_yaml_string", "from_yaml_string"),
    ("json_parse", "from_json_string"),
    ("json_dump", "to_json_string"),
    ("yaml_parse", "from_yaml_string"),
    ("yaml_dump", "to_yaml_string"),
    ("json", "from_json_string"),
    ("to_complex", "to_complex"),
    ("json_escape", "json_escape"),
    ("jsonpath_query", "jsonpath_query"),
    ("regex_match", "regex_match"),
    ("regex_search", "regex_search"),
    ("regex_replace", "regex_replace"),
    ("regex_substring", "regex_substring"),
    ("use_none", "use_none"),
    ("basename", "basename"),
    ("dirname", "dirname"),
    ("to_human_time_from_seconds", "to_human_time_from_seconds"),
    ("version_compare", "version_compare"),
    ("version_more_than", "version_more_than"),
    ("version_less_than", "version_less_than"),
    ("version_equal", "version_equal"),
    ("version_match", "version_match"),
    ("version_bump_major", "version_bump_major"),
    ("version_bump_minor", "version_bump_minor"),
    ("version_bump_patch", "version_bump_patch"),
    ("version_strip_patch", "version_strip_patch"),
    ("decrypt_kv", "decrypt_kv"),
    ("length", "length"),
    ("lower", "lower"),
    ("upper", "upper"),
    ("trim", "trim"),
    ("first", "first"),
    ("last", "last"),
    ("tojson", "tojson"),
];

/// Deepest nesting of translated calls (`ctx(ctx(…))`): translation recurses per level, so
/// hostile templates must not nest without bound; real templates nest two or three levels.
pub const MAX_CALL_NESTING: usize = 32;

/// Why a template could not be translated (unbalanced parentheses, an `st2kv()` without key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TranslateError(pub String);

/// Translates `src`. Strings without `{{`/`{%` come back unchanged.
pub fn translate(src: &str, flavor: Flavor) -> Result<Translated, TranslateError> {
    let mut t = Translator { flavor, uses: Uses::default(), kv: Vec::new(), depth: 0 };
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    loop {
        let open = ["{{", "{%", "{#"].iter().filter_map(|d| rest.find(d).map(|i| (i, *d))).min();
        let Some((i, delim)) = open else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match delim {
            "{#" => {
                let end = rest.find("#}").map(|e| e + 2).unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            "{%" if is_raw_open(rest) => {
                let end = rest.find("endraw").and_then(|e| rest[e..].find("%}").map(|c| e + c + 2));
                let end = end.unwrap_or(rest.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            _ => {
                let close = if delim == "{{" { "}}" } else { "%}" };
                out.push_str(delim);
                let body = &rest[2..];
                let end = find_close(body, close).unwrap_or(body.len());
                out.push_str(&t.code(&body[..end])?);
                rest = &body[end..];
                if rest.starts_with(close) {
                    out.push_str(close);
                    rest = &rest[2..];
                }
            }
        }
    }
    Ok(Translated { text: out, uses: t.uses, kv: t.kv })
}

fn is_raw_open(s: &str) -> bool {
    let inner = s[2..].trim_start_matches(['-', '+']).trim_start();
    inner.starts_with("raw") && inner[3..].trim_start().trim_start_matches(['-', '+']).starts_with("%}")
}

/// Index of the closing delimiter, skipping string literals.
fn find_close(body: &str, close: &str) -> Option<usize> {
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => i = skip_string(b, i, q),
            _ if b[i..].starts_with(close.as_bytes()) => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Index just after the string literal starting at `i`.
fn skip_string(b: &[u8], i: usize, q: u8) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

struct Translator {
    flavor: Flavor,
    uses: Uses,
    kv: Vec<KvCall>,
    depth: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl Translator {
    /// Translates Jinja code (the inside of one `{{ }}`/`{% %}`, or one call argument).
    fn code(&mut self, src: &str) -> Result<String, TranslateError> {
        if self.depth >= MAX_CALL_NESTING {
            return Err(TranslateError(format!("calls nested deeper than {MAX_CALL_NESTING} levels")));
        }
        self.depth += 1;
        let r = self.code_inner(src);
        self.depth -= 1;
        r
    }

    fn code_inner(&mut self, src: &str) -> Result<String, TranslateError> {
        let b = src.as_bytes();
        let mut out = String::with_capacity(src.len());
        let mut i = 0;
        // The last significant token before the current position, to tell calls from
        // methods (`.`), filters (`|`), tests (`is`) and macro definitions.
        let mut prev = String::new();
        while i < b.len() {
            let c = b[i];
            if c == b'\'' || c == b'"' {
                let end = skip_string(b, i, c);
                out.push_str(&src[i..end]);
                prev = "str".into();
                i = end;
                continue;
            }
            if !is_ident_start(c) {
                let ch = src[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                if !ch.is_whitespace() {
                    prev = ch.to_string();
                }
                i += ch.len_utf8();
                continue;
            }
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let name = &src[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let callable = !matches!(prev.as_str(), "." | "|" | "is" | "macro" | "call");
            if callable && j < b.len() && b[j] == b'(' {
                let close = matching_paren(b, j)
                    .ok_or_else(|| TranslateError(format!("unbalanced parentheses after '{name}('")))?;
                let args = split_args(&src[j + 1..close]);
                if let Some(rep) = self.call(name, &args)? {
                    out.push_str(&rep);
                    i = close + 1;
                    prev = ")".into();
                    continue;
                }
            }
            if callable && self.flavor == Flavor::Attune && name == "keystore" {
                out.push_str("st2kv.system");
            } else {
                out.push_str(name);
            }
            prev = name.to_string();
        }
        Ok(out)
    }

    /// The replacement for `name(args)`, or `None` to leave the call alone.
    fn call(&mut self, name: &str, args: &[&str]) -> Result<Option<String>, TranslateError> {
        let pos: Vec<&str> = args.iter().copied().filter(|a| kw_name(a).is_none()).collect();
        let first = match pos.first() {
            Some(a) => Some(self.code(a.trim())?),
            None => None,
        };
        let indexed = |var: &str, first: Option<String>| match first {
            Some(a) => format!("{var}[{a}]"),
            None => var.to_string(),
        };
        Ok(Some(match name {
            "ctx" => {
                self.uses.ctx = true;
                indexed("__ctx", first)
            }
            "result" => {
                self.uses.result = true;
                "__result".to_string()
            }
            "succeeded" | "failed" | "completed" | "timed_out" => {
                self.uses.status = true;
                format!("__{name}")
            }
            "item" => {
                self.uses.item = true;
                indexed("__item", first)
            }
            "task_status" => {
                self.uses.task_status = true;
                indexed("__task_status", first)
            }
            "task" => match first {
                Some(a) => {
                    self.uses.tasks = true;
                    format!("__tasks[{a}]")
                }
                None => {
                    self.uses.task = true;
                    "__task".to_string()
                }
            },
            "st2kv" => {
                let key = first.ok_or_else(|| TranslateError("st2kv() needs a key".into()))?;
                let mut call = KvCall { key, decrypt: None, default: None };
                for a in args {
                    if let Some((k, v)) = kw_name(a) {
                        let v = self.code(v.trim())?;
                        match k {
                            "decrypt" => call.decrypt = Some(v),
                            "default" => call.default = Some(v),
                            other => {
                                return Err(TranslateError(format!("st2kv() got an unexpected argument '{other}'")));
                            }
                        }
                    }
                }
                self.kv.push(call);
                format!("__kv[{}]", self.kv.len() - 1)
            }
            _ => {
                let Some((_, filter)) = FILTER_FUNCTIONS.iter().find(|(f, _)| *f == name) else { return Ok(None) };
                let Some(first) = first else { return Ok(None) };
                let mut rest = Vec::new();
                for a in args.iter().skip(1) {
                    rest.push(match kw_name(a) {
                        Some((k, v)) => format!("{k}={}", self.code(v.trim())?),
                        None => self.code(a.trim())?,
                    });
                }
                if rest.is_empty() {
                    format!("(({first}) | {filter})")
                } else {
                    format!("(({first}) | {filter}({}))", rest.join(", "))
                }
            }
        }))
    }
}

/// `name=value` (not `==`) at the top level of an argument.
fn kw_name(arg: &str) -> Option<(&str, &str)> {
    let t = arg.trim_start();
    let b = t.as_bytes();
    if b.is_empty() || !is_ident_start(b[0]) {
        return None;
    }
    let mut i = 0;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    let name = &t[..i];
    let rest = t[i..].trim_start();
    let value = rest.strip_prefix('=')?;
    if value.starts_with('=') {
        return None;
    }
    Some((name, value))
}

/// Index of the `)` matching the `(` at `open`, skipping strings.
fn matching_paren(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i = skip_string(b, i, q);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return if b[i] == b')' { Some(i) } else { None };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Splits call arguments at top-level commas.
fn split_args(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i = skip_string(b, i, q);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if !s[start..].trim().is_empty() || !out.is_empty() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check(src: &str, expect: Expect) {
        check_flavor(src, Flavor::Orquesta, expect)
    }

    fn check_flavor(src: &str, flavor: Flavor, expect: Expect) {
        let out = match translate(src, flavor) {
            Ok(t) => {
                let mut s = t.text;
                if !t.kv.is_empty() {
                    s.push_str(&format!(" kv={:?}", t.kv));
                }
                s
            }
            Err(e) => format!("ERROR {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn functions() {
        check("{{ ctx().name }}", expect!["{{ __ctx.name }}"]);
        check("{{ ctx('name') }} and {{ ctx(\"x\").y }}", expect![[r#"{{ __ctx['name'] }} and {{ __ctx["x"].y }}"#]]);
        check("{{ ctx()['vars.key'] }}", expect!["{{ __ctx['vars.key'] }}"]);
        check("{{ result().result.enabled == true }}", expect!["{{ __result.result.enabled == true }}"]);
        check(
            "{{ succeeded() and not failed() or completed() }}",
            expect!["{{ __succeeded and not __failed or __completed }}"],
        );
        check("{{ item() }} {{ item('x') }}", expect!["{{ __item }} {{ __item['x'] }}"]);
        check(
            "{{ task().task_id }} {{ task('t1', route=1).result }}",
            expect!["{{ __task.task_id }} {{ __tasks['t1'].result }}"],
        );
        check("{{ task_status('t') }}", expect!["{{ __task_status['t'] }}"]);
        check(
            "{% if 'extra' in result().result %}{{ result().result.extra }}{% else %}{}{% endif %}",
            expect!["{% if 'extra' in __result.result %}{{ __result.result.extra }}{% else %}{}{% endif %}"],
        );
        check(
            "{{ st2kv('system.host') }} {{ result()[st2kv('system.host')].stdout }}",
            expect![[
                r#"{{ __kv[0] }} {{ __result[__kv[1]].stdout }} kv=[KvCall { key: "'system.host'", decrypt: None, default: None }, KvCall { key: "'system.host'", decrypt: None, default: None }]"#
            ]],
        );
        check(
            "{{ st2kv(ctx().key_name, decrypt=ctx().decrypt, default=ctx().default) }}",
            expect![[
                r#"{{ __kv[0] }} kv=[KvCall { key: "__ctx.key_name", decrypt: Some("__ctx.decrypt"), default: Some("__ctx.default") }]"#
            ]],
        );
        check("{{ st2kv() }}", expect!["ERROR st2kv() needs a key"]);
        check("{{ st2kv('k', bogus=1) }}", expect!["ERROR st2kv() got an unexpected argument 'bogus'"]);
    }

    #[test]
    fn filters_as_functions() {
        check("{{ from_json_string(ctx(\"s\")) }}", expect![[r#"{{ ((__ctx["s"]) | from_json_string) }}"#]]);
        check(
            "{{ jsonpath_query(ctx('d'), '$.foo.bar') }}",
            expect!["{{ ((__ctx['d']) | jsonpath_query('$.foo.bar')) }}"],
        );
        check(
            "{{ json_dump(x) }} {{ yaml_parse(y) }}",
            expect!["{{ ((x) | to_json_string) }} {{ ((y) | from_yaml_string) }}"],
        );
        check(
            "{{ version_match(\"0.10.1\", \">0.10.0\") }}",
            expect![[r#"{{ (("0.10.1") | version_match(">0.10.0")) }}"#]],
        );
        check(
            "{{ regex_search('a', 'b', ignorecase=True) }}",
            expect!["{{ (('a') | regex_search('b', ignorecase=True)) }}"],
        );
        // Already a filter, a method, or no arguments: unchanged.
        check(
            "{{ ctx('s') | from_json_string() | to_yaml_string() }}",
            expect!["{{ __ctx['s'] | from_json_string() | to_yaml_string() }}"],
        );
        check("{{ x.lower() }} {{ length() }}", expect!["{{ x.lower() }} {{ length() }}"]);
        check("{{ length(workflow.items) }}", expect!["{{ ((workflow.items) | length) }}"]);
        check("{{ range(3) }} {{ unknown(1) }}", expect!["{{ range(3) }} {{ unknown(1) }}"]);
    }

    #[test]
    fn leaves_other_text_alone() {
        check("ctx() outside {{ 'ctx()' }} {# ctx() #}", expect!["ctx() outside {{ 'ctx()' }} {# ctx() #}"]);
        check("{% raw %}{{ ctx() }}{% endraw %} {{ ctx() }}", expect!["{% raw %}{{ ctx() }}{% endraw %} {{ __ctx }}"]);
        check("{% macro ctx(x) %}{% endmacro %}", expect!["{% macro ctx(x) %}{% endmacro %}"]);
        check("{{ x is succeeded() }}", expect!["{{ x is succeeded() }}"]);
        check("{{ 'é' ~ ctx().ü }}", expect!["{{ 'é' ~ __ctx.ü }}"]);
        check("{{ ctx( }}", expect!["ERROR unbalanced parentheses after 'ctx('"]);
        check("{{ 'a }}' ~ ctx().b }}", expect!["{{ 'a }}' ~ __ctx.b }}"]);
        check("no templates", expect!["no templates"]);
        check_flavor(
            "{{ keystore.token }} {{ x.keystore }}",
            Flavor::Attune,
            expect!["{{ st2kv.system.token }} {{ x.keystore }}"],
        );
        let deep = format!("{{{{ {}1{} }}}}", "ctx(".repeat(MAX_CALL_NESTING), ")".repeat(MAX_CALL_NESTING));
        check(&deep, expect!["ERROR calls nested deeper than 32 levels"]);
        let ok = format!("{{{{ {}1{} }}}}", "ctx(".repeat(MAX_CALL_NESTING - 1), ")".repeat(MAX_CALL_NESTING - 1));
        assert!(translate(&ok, Flavor::Orquesta).is_ok());
        let t = translate("{{ task('a').result }} {{ ctx().b }}", Flavor::Orquesta).unwrap();
        assert_eq!(t.uses, Uses { ctx: true, tasks: true, ..Uses::default() });
    }
}
