//! The Jinja environment StackStorm templates need, on minijinja: strict undefined variables,
//! `trim_blocks`/`lstrip_blocks`, Python method calls (`.upper()`, `.split()`, `.keys()`),
//! Python `str()` when printing (`True`, `None`, `{'a': 1}`), st2's filters, `st2kv` datastore
//! lookups, and hard bounds on work (fuel), output size and recursion.
//!
//! It renders strings and JSON values; it does not know about parameters, schemas or casting
//! (see `cast.rs`) and does no I/O besides the `KvSource` calls a template makes.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value as Json;

use super::kv::{DEFAULT_KV_USER, KvNode, KvRoot, KvScope, KvSource, with_source};
use super::value::{MAX_VALUE_DEPTH, RootCtx, ToJsonError, py_str, to_json};

/// Work budget of one render or expression (minijinja "fuel": roughly one unit per VM
/// instruction, plus output of printed containers). Parameter templates use a few hundred;
/// 100k allows loops over a few thousand items and stops runaway loops within milliseconds.
pub const TEMPLATE_FUEL: u64 = 100_000;

/// Largest text one render may produce (and largest value a native `{{ }}` may yield).
/// Rendered values become process arguments, environment variables and database rows; 1 MiB is
/// far above real parameters and well below what would hurt memory on a small device.
pub const MAX_RENDER_BYTES: usize = 1 << 20;

/// Macro/call nesting limit. minijinja's default is 500 frames, which on a 2 MiB thread stack
/// is too close to overflowing; templates in packs never nest more than a few levels.
pub const TEMPLATE_RECURSION_LIMIT: usize = 64;

/// Largest template source accepted. Templates come from pack files and payloads; compiling is
/// linear in size, and nothing legitimate comes near this.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// What went wrong in a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateErrorKind {
    Syntax,
    /// An undefined variable or attribute was used (StrictUndefined).
    Undefined,
    /// `TEMPLATE_FUEL` ran out.
    OutOfFuel,
    /// Output, template or value over a size limit.
    TooLarge,
    /// Anything else: a filter error, a type error, an unknown filter or method.
    Other,
}

/// A render failure: the message (naming the undefined variable, the filter, the limit) and the
/// template line when minijinja knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    pub message: String,
    pub line: Option<usize>,
}

impl TemplateError {
    fn new(kind: TemplateErrorKind, message: impl Into<String>) -> TemplateError {
        TemplateError { kind, message: message.into(), line: None }
    }
}

/// The shared Jinja environment. Build once (`new` registers filters and compiles nothing),
/// share by reference or `Arc`; rendering takes `&self`.
pub struct TemplateEnv {
    env: Environment<'static>,
}

impl std::fmt::Debug for TemplateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplateEnv")
    }
}

impl Default for TemplateEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A render context converted once and reused for several templates (criteria patterns, the
/// strings of one parameter object).
pub(super) struct Prepared {
    root: Value,
}

impl TemplateEnv {
    pub fn new() -> TemplateEnv {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // The default delimiters always build; were that to change, the default syntax stays.
        if let Ok(syntax) = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build() {
            env.set_syntax(syntax);
        }
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            let text = match value.as_str() {
                Some(s) => return out.write_str(s).map_err(minijinja::Error::from),
                None => py_str(value),
            };
            out.write_str(&text).map_err(minijinja::Error::from)
        });
        super::filters::register(&mut env);
        TemplateEnv { env }
    }

    /// Renders `tpl` to text. `ctx` is the variables (a JSON object; anything else means no
    /// variables); `st2kv.system.*` and `st2kv.user.*` read from `kv` (the user is
    /// `ctx.action_context.user`, else `DEFAULT_KV_USER`); missing keys print `""`.
    pub fn render_str(&self, tpl: &str, ctx: &Json, kv: Option<&dyn KvSource>) -> Result<String, TemplateError> {
        let p = self.prepare(ctx);
        with_source(kv, || self.render_prepared(tpl, &p))
    }

    /// Renders a JSON value the way StackStorm renders parameter values: strings without
    /// `{{`/`{%` are returned unchanged; a string that is exactly one `{{ expr }}` yields the
    /// expression's native value (list, dict, number, bool, null); other strings render to
    /// strings; dicts (keys too) and lists are rendered recursively.
    pub fn render_value(&self, v: &Json, ctx: &Json, kv: Option<&dyn KvSource>) -> Result<Json, TemplateError> {
        let p = self.prepare(ctx);
        with_source(kv, || self.render_value_prepared(v, &p, 0))
    }

    /// Evaluates a Jinja *expression* (no `{{ }}`) against `ctx` and returns its value.
    pub fn eval_expression(&self, expr: &str, ctx: &Json, kv: Option<&dyn KvSource>) -> Result<Json, TemplateError> {
        let p = self.prepare(ctx);
        with_source(kv, || {
            check_size(expr)?;
            let env: &Environment<'_> = &self.env;
            let compiled = env.compile_expression(expr).map_err(|e| self.convert(e, expr, &p))?;
            self.eval_json(&compiled, expr, &p)
        })
    }

    /// Wraps `ctx` plus the `st2kv` root for rendering.
    pub(super) fn prepare(&self, ctx: &Json) -> Prepared {
        let user = ctx
            .get("action_context")
            .and_then(|a| a.get("user"))
            .and_then(Json::as_str)
            .unwrap_or(DEFAULT_KV_USER)
            .to_string();
        let st2kv = Value::from_object(KvRoot { user: Some(user) });
        self.prepare_with(Arc::new(ctx.clone()), vec![("st2kv", st2kv)])
    }

    /// The rule-criteria context: `trigger` = payload, `st2kv.system` and `system` (no user
    /// scope, as in StackStorm).
    pub(super) fn prepare_criteria(&self, payload: &Json) -> Prepared {
        let mut map = serde_json::Map::new();
        map.insert("trigger".into(), payload.clone());
        let extra = vec![
            ("st2kv", Value::from_object(KvRoot { user: None })),
            ("system", Value::from_object(KvNode { scope: KvScope::System, key: None })),
        ];
        self.prepare_with(Arc::new(Json::Object(map)), extra)
    }

    fn prepare_with(&self, json: Arc<Json>, extra: Vec<(&'static str, Value)>) -> Prepared {
        Prepared { root: Value::from_object(RootCtx { json, extra }) }
    }

    /// Renders with a prepared context (the caller has set up the `KvSource`).
    pub(super) fn render_prepared(&self, tpl: &str, p: &Prepared) -> Result<String, TemplateError> {
        check_size(tpl)?;
        let env: &Environment<'_> = &self.env;
        let t = env.template_from_str(tpl).map_err(|e| self.convert(e, tpl, p))?;
        let mut out = CappedBuf::default();
        t.render_captured_to(p.root.clone(), &mut out).map_err(|e| self.convert(e, tpl, p))?;
        String::from_utf8(out.buf)
            .map_err(|_| TemplateError::new(TemplateErrorKind::Other, "rendered output is not UTF-8"))
    }

    /// A pattern or parameter string: native value for exactly one `{{ expr }}`, text
    /// otherwise, unchanged when there is no template.
    pub(super) fn render_native_prepared(&self, s: &str, p: &Prepared) -> Result<Json, TemplateError> {
        if !is_template(s) {
            return Ok(Json::String(s.to_string()));
        }
        check_size(s)?;
        if let Some(expr) = single_expression(s) {
            let env: &Environment<'_> = &self.env;
            // Not an expression after all (e.g. a string literal containing `}}`): render the
            // text as a template, which also reports the real syntax error.
            if let Ok(compiled) = env.compile_expression(expr) {
                return self.eval_json(&compiled, expr, p);
            }
        }
        self.render_prepared(s, p).map(Json::String)
    }

    fn render_value_prepared(&self, v: &Json, p: &Prepared, depth: usize) -> Result<Json, TemplateError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(TemplateError::new(
                TemplateErrorKind::TooLarge,
                format!("value nested deeper than {MAX_VALUE_DEPTH}"),
            ));
        }
        match v {
            Json::String(s) => self.render_native_prepared(s, p),
            Json::Array(items) => items
                .iter()
                .map(|item| self.render_value_prepared(item, p, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            Json::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, item) in map {
                    let key = if is_template(k) { self.render_prepared(k, p)? } else { k.clone() };
                    out.insert(key, self.render_value_prepared(item, p, depth + 1)?);
                }
                Ok(Json::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// An expression's value as JSON; undefined parts are errors naming the variable.
    fn eval_json(
        &self,
        compiled: &minijinja::Expression<'_, '_>,
        expr: &str,
        p: &Prepared,
    ) -> Result<Json, TemplateError> {
        let v = self.eval_compiled(compiled, expr, p)?;
        value_to_json(&v).map_err(|e| {
            if e.kind == TemplateErrorKind::Undefined {
                undefined_error(&self.env, compiled.undeclared_variables(true), expr, p, None)
            } else {
                e
            }
        })
    }

    /// Evaluates an expression; an undefined result is an error naming the variable.
    pub(super) fn eval_value(&self, expr: &str, p: &Prepared) -> Result<Value, TemplateError> {
        check_size(expr)?;
        let env: &Environment<'_> = &self.env;
        let compiled = env.compile_expression(expr).map_err(|e| self.convert(e, expr, p))?;
        self.eval_compiled(&compiled, expr, p)
    }

    fn eval_compiled(
        &self,
        compiled: &minijinja::Expression<'_, '_>,
        expr: &str,
        p: &Prepared,
    ) -> Result<Value, TemplateError> {
        let v = compiled.eval(p.root.clone()).map_err(|e| self.convert_expr(e, compiled, p))?;
        if v.is_undefined() {
            let names = compiled.undeclared_variables(true);
            return Err(undefined_error(&self.env, names, expr, p, None));
        }
        Ok(v)
    }

    fn convert(&self, e: minijinja::Error, source: &str, p: &Prepared) -> TemplateError {
        let line = e.line();
        if e.kind() == ErrorKind::UndefinedError {
            let env: &Environment<'_> = &self.env;
            let names = env.template_from_str(source).map(|t| t.undeclared_variables(true)).unwrap_or_default();
            return undefined_error(&self.env, names, source, p, line);
        }
        from_minijinja(e)
    }

    fn convert_expr(
        &self,
        e: minijinja::Error,
        compiled: &minijinja::Expression<'_, '_>,
        p: &Prepared,
    ) -> TemplateError {
        if e.kind() == ErrorKind::UndefinedError {
            let names = compiled.undeclared_variables(true);
            return undefined_error(&self.env, names, "", p, e.line());
        }
        from_minijinja(e)
    }
}

/// Maps a minijinja error to ours, with clear texts for the limits.
fn from_minijinja(e: minijinja::Error) -> TemplateError {
    let line = e.line();
    let (kind, message) = match e.kind() {
        ErrorKind::SyntaxError => (TemplateErrorKind::Syntax, describe(&e)),
        ErrorKind::OutOfFuel => (
            TemplateErrorKind::OutOfFuel,
            format!(
                "template ran out of fuel: it did more work than the limit of {TEMPLATE_FUEL} \
                 steps allows (runaway loop?)"
            ),
        ),
        ErrorKind::WriteFailure => {
            (TemplateErrorKind::TooLarge, format!("rendered output exceeds the limit of {MAX_RENDER_BYTES} bytes"))
        }
        _ if e.to_string().contains("recursion") => (TemplateErrorKind::TooLarge, describe(&e)),
        _ => (TemplateErrorKind::Other, describe(&e)),
    };
    TemplateError { kind, message, line }
}

/// minijinja's text without its ` (in <string>:N)` suffix (the line is kept separately).
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" (in <") {
        text.truncate(i);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Builds "'x' is undefined" / "'a.b' has no attribute 'c'" by finding which of the
/// template's variable paths does not resolve in the context. minijinja reports only
/// "undefined value", and operators need the name to fix a rule or parameter.
fn undefined_error(
    env: &Environment<'static>,
    names: HashSet<String>,
    source: &str,
    p: &Prepared,
    line: Option<usize>,
) -> TemplateError {
    let globals: HashSet<String> = env.globals().map(|(k, _)| k.to_string()).collect();
    let mut paths: Vec<String> = names.into_iter().collect();
    // Report the first one in source order (ties and unknown positions by name).
    paths.sort_by_key(|path| (source.find(path.as_str()).unwrap_or(usize::MAX), path.clone()));
    for path in &paths {
        let mut parts = path.split('.');
        let Some(root) = parts.next() else { continue };
        if globals.contains(root) {
            continue;
        }
        let Ok(mut cur) = p.root.get_attr(root) else {
            continue;
        };
        if cur.is_undefined() {
            return TemplateError {
                kind: TemplateErrorKind::Undefined,
                message: format!("'{root}' is undefined"),
                line,
            };
        }
        let mut walked = root.to_string();
        for part in parts {
            let next = cur.get_attr(part).unwrap_or(Value::UNDEFINED);
            if next.is_undefined() {
                return TemplateError {
                    kind: TemplateErrorKind::Undefined,
                    message: format!("'{walked}' has no attribute '{part}'"),
                    line,
                };
            }
            walked.push('.');
            walked.push_str(part);
            cur = next;
        }
    }
    TemplateError {
        kind: TemplateErrorKind::Undefined,
        message: "undefined value (a variable, attribute or item used by the template does not \
                  exist)"
            .into(),
        line,
    }
}

fn check_size(source: &str) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::new(
            TemplateErrorKind::TooLarge,
            format!("template larger than {MAX_TEMPLATE_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn value_to_json(v: &Value) -> Result<Json, TemplateError> {
    let mut budget = MAX_RENDER_BYTES;
    to_json(v, &mut budget).map_err(|e| {
        let kind = match e {
            ToJsonError::TooLarge | ToJsonError::TooDeep => TemplateErrorKind::TooLarge,
            ToJsonError::Undefined => TemplateErrorKind::Undefined,
            ToJsonError::NotSerializable(_) => TemplateErrorKind::Other,
        };
        TemplateError::new(kind, e.to_string())
    })
}

/// Output buffer that refuses to grow past `MAX_RENDER_BYTES`.
#[derive(Default)]
struct CappedBuf {
    buf: Vec<u8>,
}

impl io::Write for CappedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > MAX_RENDER_BYTES {
            return Err(io::Error::other("render output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether StackStorm would treat `s` as a Jinja template (`{{` or `{%` inside).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The expression inside a string that is exactly one `{{ expr }}` (surrounding whitespace
/// allowed, whitespace-control `-`/`+` markers dropped).
pub(super) fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"].iter().any(|m| inner.contains(m)) {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    if inner.trim().is_empty() {
        return None;
    }
    Some(inner)
}

/// The top-level variable names a template reads (`{{ a.b }}{% for x in c %}` → `a`, `c`),
/// sorted, for parameter dependency graphs. Names bound inside the template are excluded; names
/// of globals such as `range` may appear, so intersect with the names you know. A template that
/// does not parse yields no names (rendering it reports the error).
pub fn referenced_names(tpl: &str) -> Vec<String> {
    let env = Environment::empty();
    let env = &env;
    let names = match env.template_from_str(tpl) {
        Ok(t) => t.undeclared_variables(false),
        Err(_) => HashSet::new(),
    };
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;
    use std::collections::HashMap;

    /// A datastore for tests: system keys, user keys as "user:key", ciphertext "enc:<plain>".
    struct TestKv(HashMap<String, String>);

    impl TestKv {
        fn new() -> TestKv {
            let mut m = HashMap::new();
            m.insert("foo".to_string(), "foo-value".to_string());
            m.insert("a.b".to_string(), "dotted".to_string());
            m.insert("secret".to_string(), "enc:hunter2".to_string());
            m.insert("empty".to_string(), String::new());
            m.insert("bad".to_string(), "garbage".to_string());
            m.insert("stanley:token".to_string(), "user-token".to_string());
            m.insert("alice:token".to_string(), "alice-token".to_string());
            m.insert("cfg".to_string(), r#"{"port": 8080}"#.to_string());
            TestKv(m)
        }
    }

    impl KvSource for TestKv {
        fn get(&self, scope: KvScope, name: &str) -> Option<String> {
            let key = match scope {
                KvScope::System => name.to_string(),
                KvScope::User(u) => format!("{u}:{name}"),
            };
            self.0.get(&key).cloned()
        }
        fn decrypt(&self, _scope: KvScope, c: &str) -> Result<String, String> {
            c.strip_prefix("enc:").map(str::to_string).ok_or_else(|| format!("cannot decrypt {c:?}"))
        }
    }

    fn ctx() -> Json {
        json!({
            "trigger": {
                "body": {"b": 1, "a": true, "c": null, "name": "web-01", "list": ["x", 1, 2.5]},
                "count": 5,
                "text": "Hello World",
                "ver": "1.2.3",
                "path": "/var/log/app.log"
            },
            "n": 3661,
            "f": 0.5
        })
    }

    fn show(r: Result<String, TemplateError>) -> String {
        match r {
            Ok(s) => s,
            Err(e) => format!("ERROR[{:?}] {e}", e.kind),
        }
    }

    fn check(tpl: &str, expect: Expect) {
        let env = TemplateEnv::new();
        let kv = TestKv::new();
        expect.assert_eq(&show(env.render_str(tpl, &ctx(), Some(&kv))));
    }

    fn check_native(tpl: &str, expect: Expect) {
        let env = TemplateEnv::new();
        let kv = TestKv::new();
        let out = match env.render_value(&json!(tpl), &ctx(), Some(&kv)) {
            Ok(v) => v.to_string(),
            Err(e) => format!("ERROR[{:?}] {e}", e.kind),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn printing_is_python_str() {
        check(
            "{{ trigger.body }}",
            expect![[r#"{'b': 1, 'a': True, 'c': None, 'name': 'web-01', 'list': ['x', 1, 2.5]}"#]],
        );
        check("{{ trigger.body.list }}", expect!["['x', 1, 2.5]"]);
        check("{{ trigger.body.a }} {{ trigger.body.c }} {{ 1.0 }} {{ 1e16 }}", expect!["True None 1.0 1e+16"]);
        check("{{ {'k': 'v'} }} {{ (1, 'a') }} {{ [none] }}", expect!["{'k': 'v'} (1, 'a') [None]"]);
        check("{{ trigger.text }}", expect!["Hello World"]);
    }

    #[test]
    fn python_methods_and_builtins() {
        check("{{ trigger.text.upper() }}", expect!["HELLO WORLD"]);
        check("{{ trigger.body.name.split('-') }}", expect!["['web', '01']"]);
        check("{{ trigger.body.keys() | list }}", expect!["['b', 'a', 'c', 'name', 'list']"]);
        check(
            "{% for k, v in trigger.body.items() %}{{ k }}={{ v }};{% endfor %}",
            expect!["b=1;a=True;c=None;name=web-01;list=['x', 1, 2.5];"],
        );
        check("{{ trigger.missing | default('d') }}", expect!["d"]);
        check("{{ trigger.body.list | length }} {{ trigger.body.list | join(',') }}", expect!["3 x,1,2.5"]);
        check("{{ trigger.text | replace('World', 'There') }}", expect!["Hello There"]);
        check("{{ 'a' in trigger.body }} {{ 'zz' in trigger.body }} {{ 1 is in [1, 2] }}", expect!["True False True"]);
        check("{{ trigger.body.list[0] }} {{ trigger.body.list[-1] }}", expect!["x 2.5"]);
        check(
            "{{ trigger.body == {'b': 1, 'a': true, 'c': none, 'name': 'web-01', 'list': ['x', 1, 2.5]} }}",
            expect!["True"],
        );
        check(
            "{{ trigger.body | tojson }}",
            expect![[r#"{"b": 1, "a": true, "c": null, "name": "web-01", "list": ["x", 1, 2.5]}"#]],
        );
    }

    #[test]
    fn whitespace_control() {
        let env = TemplateEnv::new();
        let out = env.render_str("{% if trigger.count > 1 %}\n  many\n  {% endif %}\nend\n", &ctx(), None);
        assert_eq!(out.unwrap(), "  many\nend");
    }

    #[test]
    fn strict_undefined_names_the_variable() {
        check("{{ nope }}", expect!["ERROR[Undefined] 'nope' is undefined (line 1)"]);
        check("ok\n{{ trigger.body.zz }}", expect!["ERROR[Undefined] 'trigger.body' has no attribute 'zz' (line 2)"]);
        check("{{ trigger.nope.x }}", expect!["ERROR[Undefined] 'trigger' has no attribute 'nope' (line 1)"]);
        check("{% if missing %}x{% endif %}", expect!["ERROR[Undefined] 'missing' is undefined (line 1)"]);
        check_native("{{ nope }}", expect!["ERROR[Undefined] 'nope' is undefined"]);
        check_native("{{ trigger.body.zz }}", expect!["ERROR[Undefined] 'trigger.body' has no attribute 'zz'"]);
        check_native("{{ [1, trigger.nope] }}", expect!["ERROR[Undefined] 'trigger' has no attribute 'nope'"]);
        check_native("{{ trigger.nope | default('d') }}", expect![[r#""d""#]]);
        let env = TemplateEnv::new();
        let err = env.eval_expression("a.b", &json!({"a": {}}), None).unwrap_err();
        assert_eq!(err.to_string(), "'a' has no attribute 'b'");
    }

    #[test]
    fn errors_have_lines_and_reasons() {
        check(
            "a\n{{ x | nosuchfilter }}",
            expect!["ERROR[Other] unknown filter: filter nosuchfilter is unknown (line 2)"],
        );
        check("{{ 1 +", expect!["ERROR[Syntax] syntax error: unexpected end of input, expected expression (line 1)"]);
        check(
            "{{ trigger.text | regex_substring('zzz') }}",
            expect![
                "ERROR[Other] invalid operation: regex_substring: list index out of range (no such match) (line 1)"
            ],
        );
    }

    #[test]
    fn fuel_limit() {
        check(
            "{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) %}{% endfor %}{% endfor %}{% endfor %}",
            expect![
                "ERROR[OutOfFuel] template ran out of fuel: it did more work than the limit of 100000 steps allows (runaway loop?) (line 1)"
            ],
        );
        let env = TemplateEnv::new();
        let out = env.render_str("{% for i in range(1000) %}{{ i % 10 }}{% endfor %}", &ctx(), None);
        assert_eq!(out.unwrap().len(), 1000);
    }

    #[test]
    fn output_cap() {
        let env = TemplateEnv::new();
        let big = "x".repeat(MAX_RENDER_BYTES / 2 + 1);
        let c = json!({ "big": big });
        let err = env.render_str("{{ big }}{{ big }}", &c, None).unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::TooLarge, "{err}");
        assert!(err.message.contains("exceeds the limit"), "{err}");
        assert!(env.render_str("{{ big }}", &c, None).is_ok());
        let err = env.render_value(&json!("{{ [big, big] }}"), &c, None).unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::TooLarge, "{err}");
        let err = env.render_str(&"x".repeat(MAX_TEMPLATE_BYTES + 1), &c, None).unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::TooLarge, "{err}");
    }

    #[test]
    fn filter_and_value_limits() {
        let env = TemplateEnv::new();
        let err = env.render_str("{{ [1] | to_json_string(indent=33) }}", &json!({}), None).unwrap_err();
        assert!(err.message.contains("indent larger than 32"), "{err}");
        let many = format!("[{}]", "1,".repeat(crate_yaml_nodes() + 1));
        let err = env.render_str("{{ doc | from_yaml_string }}", &json!({ "doc": many }), None).unwrap_err();
        assert!(err.message.contains("from_yaml_string"), "{err}");
        let mut deep = json!("x");
        for _ in 0..MAX_VALUE_DEPTH + 2 {
            deep = json!([deep]);
        }
        let err = env.render_value(&deep, &json!({}), None).unwrap_err();
        assert_eq!(err.kind, TemplateErrorKind::TooLarge, "{err}");
        // Values built by a template are printed with a depth guard.
        let tpl = "{% set ns = namespace(v=1) %}{% for i in range(200) %}{% set ns.v = [ns.v] %}\
                   {% endfor %}{{ ns.v }}";
        let out = env.render_str(tpl, &json!({}), None).unwrap();
        assert!(out.starts_with(&"[".repeat(MAX_VALUE_DEPTH)) && out.contains("..."));
    }

    fn crate_yaml_nodes() -> usize {
        super::super::filters::YAML_MAX_NODES
    }

    #[test]
    fn recursion_limit() {
        check(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            expect!["ERROR[TooLarge] invalid operation: recursion limit exceeded (line 1)"],
        );
    }

    #[test]
    fn native_types() {
        check_native("{{ trigger.count }}", expect!["5"]);
        check_native("  {{ trigger.body.list }}\n", expect![[r#"["x",1,2.5]"#]]);
        check_native(
            "{{ trigger.body }}",
            expect![[r#"{"b":1,"a":true,"c":null,"name":"web-01","list":["x",1,2.5]}"#]],
        );
        check_native("{{- trigger.body.a -}}", expect!["true"]);
        check_native("{{ trigger.body.c }}", expect!["null"]);
        check_native("{{ trigger.count > 3 }}", expect!["true"]);
        check_native("{{ {1: 'a', none: 'b'} }}", expect![[r#"{"null":"b","1":"a"}"#]]);
        check_native("{{ st2kv.system.foo }}", expect![[r#""foo-value""#]]);
        check_native("{{ trigger.count }} items", expect![[r#""5 items""#]]);
        check_native("{{ 'a' }}{{ 'b' }}", expect![[r#""ab""#]]);
        check_native("{% if true %}x{% endif %}", expect![[r#""x""#]]);
        check_native("no template", expect![[r#""no template""#]]);
        check_native("{{ 1 / 0 }}", expect!["ERROR[Other] invalid operation: unable to calculate 1 / 0 (line 1)"]);
        let env = TemplateEnv::new();
        let v =
            json!({"{{ trigger.body.name }}": ["{{ trigger.count }}", "n={{ n }}", 7, {"x": "{{ f }}"}], "plain": "p"});
        assert_eq!(
            env.render_value(&v, &ctx(), None).unwrap(),
            json!({"web-01": [5, "n=3661", 7, {"x": 0.5}], "plain": "p"})
        );
        assert_eq!(env.eval_expression("trigger.count * 2", &ctx(), None).unwrap(), json!(10));
    }

    #[test]
    fn st2kv_lookups() {
        check("{{ st2kv.system.foo }}", expect!["foo-value"]);
        check("[{{ st2kv.system.missing }}]", expect!["[]"]);
        check("{{ st2kv.system.a.b }}", expect!["dotted"]);
        check("{{ st2kv.system['a.b'] }}", expect!["dotted"]);
        check("{{ st2kv.system.foo.upper() }}", expect!["FOO-VALUE"]);
        check("{{ st2kv.system.a }}|{{ st2kv.system['a'].b }}", expect!["|dotted"]);
        check("{{ st2kv.user.token }}", expect!["user-token"]);
        check("{{ st2kv.system.cfg | from_json_string }}", expect!["{'port': 8080}"]);
        check("{% if st2kv.system.missing %}yes{% else %}no{% endif %}", expect!["no"]);
        check(
            "{{ st2kv.system.foo | length }} {{ st2kv.system.foo == 'foo-value' }} {{ st2kv.system.cfg | length > 3 }}",
            expect!["9 True True"],
        );
        check("[{{ st2kv.system.missing | default('d') }}] {{ st2kv.system.missing.upper() }}", expect!["[] "]);
        let env = TemplateEnv::new();
        let kv = TestKv::new();
        let c = json!({"action_context": {"user": "alice"}});
        assert_eq!(env.render_str("{{ st2kv.user.token }}", &c, Some(&kv)).unwrap(), "alice-token");
        // Without a source every key is missing.
        assert_eq!(env.render_str("[{{ st2kv.system.foo }}]", &c, None).unwrap(), "[]");
    }

    #[test]
    fn decrypt_kv_filter() {
        check("{{ st2kv.system.secret | decrypt_kv }}", expect!["hunter2"]);
        check("{{ 'enc:direct' | decrypt_kv }}", expect!["direct"]);
        check(
            "{{ st2kv.system.missing | decrypt_kv }}",
            expect![[
                r#"ERROR[Other] invalid operation: decrypt_kv: Referenced datastore item "missing" doesn't exist or it contains an empty string (line 1)"#
            ]],
        );
        check(
            "{{ st2kv.system.empty | decrypt_kv }}",
            expect![[
                r#"ERROR[Other] invalid operation: decrypt_kv: Referenced datastore item "empty" doesn't exist or it contains an empty string (line 1)"#
            ]],
        );
        check(
            "{{ st2kv.system.bad | decrypt_kv }}",
            expect![[r#"ERROR[Other] invalid operation: decrypt_kv: cannot decrypt "garbage" (line 1)"#]],
        );
        let env = TemplateEnv::new();
        let err = env.render_str("{{ 'enc:x' | decrypt_kv }}", &json!({}), None).unwrap_err();
        assert!(err.message.contains("no datastore"), "{err}");
    }

    #[test]
    fn json_filters() {
        check(
            "{{ trigger.body | to_json_string }}",
            expect![[r#"{"b": 1,"a": true,"c": null,"name": "web-01","list": ["x",1,2.5]}"#]],
        );
        check(
            "{{ {'b': 1, 'a': [1]} | to_json_string(indent=2, sort_keys=True) }}",
            expect![[r#"
            {
              "a": [
                1
              ],
              "b": 1
            }"#]],
        );
        check("{{ {'a': 1, 'b': 2} | to_json_string(none, false, (', ', ':')) }}", expect![[r#"{"a":1, "b":2}"#]]);
        check("{{ trigger.body.list | to_complex }}", expect![[r#"["x", 1, 2.5]"#]]);
        check("{{ 'caf\u{e9} \"q\"\n' | to_complex }}", expect![[r#""caf\u00e9 \"q\"\n""#]]);
        check("{{ 'say \"hi\"\\n' | json_escape }}", expect![[r#"say \"hi\"\n"#]]);
        check("{{ '{\"a\": [1, 2]}' | from_json_string }}", expect!["{'a': [1, 2]}"]);
        check(
            "{{ 'nope' | from_json_string }}",
            expect!["ERROR[Other] invalid operation: from_json_string: expected ident at line 1 column 2 (line 1)"],
        );
        check("{{ trigger.body | jsonpath_query('list[*]') }}", expect!["['x', 1, 2.5]"]);
        check("{{ trigger.body | jsonpath_query('zz') }}", expect!["None"]);
        check(
            "{{ trigger.body | jsonpath_query('a[') }}",
            expect![[
                r#"ERROR[Other] invalid operation: jsonpath_query: invalid JSONPath "a[": expected a field name, found the end (line 1)"#
            ]],
        );
        check(
            "{{ trigger.body | to_json_string(bogus=1) }}",
            expect!["ERROR[Other] too many arguments: unknown keyword argument 'bogus' (line 1)"],
        );
    }

    #[test]
    fn yaml_filters() {
        check(
            "{{ {'b': {'y': 1, 'x': [1, {'k': 'v', 'a': none}]}, 'a': 'yes', 'c': [], 'd': '1.5', 'e': 'x: y', 'f': 'multi\nline'} | to_yaml_string }}",
            expect![[r#"
            a: 'yes'
            b:
              x:
              - 1
              - a: null
                k: v
              y: 1
            c: []
            d: '1.5'
            e: 'x: y'
            f: "multi\nline"
        "#]],
        );
        check(
            "{{ 'plain' | to_yaml_string }}",
            expect![[r#"
            plain
            ...
        "#]],
        );
        check(
            "{{ [[1, 2], 3.0, 1e20, true] | to_yaml_string }}",
            expect![[r#"
            - - 1
              - 2
            - 3.0
            - 1.0e+20
            - true
        "#]],
        );
        check(
            "{{ {'a': {'b': 1}} | to_yaml_string(indent=4) }}",
            expect![[r#"
            a:
                b: 1
        "#]],
        );
        check("{{ 'a: [1, 2]\nb: yes\nc: 0755\n' | from_yaml_string }}", expect!["{'a': [1, 2], 'b': True, 'c': 493}"]);
        check(
            "{{ 'a: b: c' | from_yaml_string }}",
            expect![
                "ERROR[Other] invalid operation: from_yaml_string: mapping values are not allowed in this context at line 1, column 5 (line 1)"
            ],
        );
        let deep = format!("{{{{ '{}' | from_yaml_string }}}}", "[".repeat(40) + &"]".repeat(40));
        let env = TemplateEnv::new();
        let err = env.render_str(&deep, &json!({}), None).unwrap_err();
        assert!(err.message.contains("from_yaml_string"), "{err}");
    }

    #[test]
    fn regex_filters() {
        check(
            "{{ trigger.text | regex_match('Hello') }} {{ trigger.text | regex_match('World') }}",
            expect!["True False"],
        );
        check(
            "{{ trigger.text | regex_search('World') }} {{ trigger.text | regex_search('world') }} {{ trigger.text | regex_search('world', ignorecase=True) }}",
            expect!["True False True"],
        );
        check(r"{{ 'a-b-c' | regex_replace('(a)-(b)', '\\2-\\1') }}", expect!["b-a-c"]);
        check(r"{{ 'price 5' | regex_replace('(\\d)', '$\\1') }}", expect!["price $5"]);
        check(r"{{ 'v1.2 and v3.4' | regex_substring('v(\\d)\\.(\\d)', 1) }}", expect!["('3', '4')"]);
        check(r"{{ 'v1.2 and v3.4' | regex_substring('v\\d') }}", expect!["v1"]);
        check(r"{{ 'v1.2 and v3.4' | regex_substring('v(\\d)', -1) }}", expect!["3"]);
        check(
            "{{ 'x' | regex_match('(?<=a)b') }}",
            expect![[r#"
            ERROR[Other] invalid operation: regex_match: invalid regular expression "(?<=a)b": regex parse error:
                \A(?:(?<=a)b)
                     ^^^^
            error: look-around, including look-ahead and look-behind, is not supported (line 1)"#]],
        );
        check("{{ 42 | regex_search('4') }}", expect!["True"]);
    }

    #[test]
    fn misc_filters() {
        check("{{ none | use_none }}|{{ 'x' | use_none }}", expect!["%*****__%NONE%__*****%|x"]);
        check(
            "{{ trigger.path | basename }} {{ trigger.path | dirname }} {{ '/' | dirname }} {{ 'file' | dirname }}|{{ '/a//b' | dirname }}",
            expect!["app.log /var/log / |/a"],
        );
        check("{{ n | to_human_time_from_seconds }}", expect!["1h1m1s"]);
        check(
            "{{ 59 | to_human_time_from_seconds }} {{ 3600 | to_human_time_from_seconds }} {{ 90061 | to_human_time_from_seconds }}",
            expect!["59s 1h0m0s 1d1h1m1s"],
        );
        check(
            "{{ 0 | to_human_time_from_seconds }} {{ f | to_human_time_from_seconds }} {{ 125.6 | to_human_time_from_seconds }}",
            expect!["0s 0.5μs 2m6s"],
        );
        check(
            "{{ 31536000 | to_human_time_from_seconds }} {{ 3456000 | to_human_time_from_seconds }}",
            expect!["1y0d0h0m0s 9d0h0m0s"],
        );
        check(
            "{{ 'x' | to_human_time_from_seconds }}",
            expect![
                "ERROR[Other] invalid operation: to_human_time_from_seconds: expected a number of seconds, got string (line 1)"
            ],
        );
    }

    #[test]
    fn version_filters() {
        check(
            "{{ trigger.ver | version_compare('1.2.4') }} {{ '1.10.0' | version_compare('1.9.0') }} {{ '1.0.0' | version_compare('1.0.0+build') }}",
            expect!["-1 1 0"],
        );
        check(
            "{{ '1.0.0-alpha' | version_less_than('1.0.0') }} {{ '1.0.0-alpha.1' | version_less_than('1.0.0-alpha.beta') }} {{ '1.0.0-2' | version_less_than('1.0.0-10') }}",
            expect!["True True True"],
        );
        check(
            "{{ '2.0.0' | version_more_than('1.9.9') }} {{ '1.2.3' | version_equal('1.2.3') }}",
            expect!["True True"],
        );
        check(
            "{{ '1.2.3' | version_match('>=1.0.0') }} {{ '1.2.3' | version_match('<1.0.0') }} {{ '1.2.3' | version_match('!=1.2.3') }} {{ '1.2.3' | version_match('1.2.3') }}",
            expect!["True False False True"],
        );
        check(
            "{{ '1.2.3-rc1' | version_bump_major }} {{ '1.2.3' | version_bump_minor }} {{ '1.2.3' | version_bump_patch }} {{ '1.2.3' | version_strip_patch }}",
            expect!["2.0.0 1.3.0 1.2.4 1.2"],
        );
        check(
            "{{ '1.2' | version_bump_major }}",
            expect!["ERROR[Other] invalid operation: version_bump_major: 1.2 is not valid SemVer string (line 1)"],
        );
        check(
            "{{ '1.2.3' | version_match('~1.2') }}",
            expect![[
                r#"ERROR[Other] invalid operation: version_match: match_expr parameter should be in format <op><ver>, where <op> is one of ['<', '>', '==', '<=', '>=', '!=']. You provided: "~1.2" (line 1)"#
            ]],
        );
        check(
            "{{ '01.2.3' | version_compare('1.2.3') }}",
            expect!["ERROR[Other] invalid operation: version_compare: 01.2.3 is not valid SemVer string (line 1)"],
        );
    }

    #[test]
    fn helpers() {
        assert!(is_template("a {{ b }}") && is_template("{% if x %}") && !is_template("a { b }"));
        assert_eq!(single_expression(" {{ a | b }} "), Some(" a | b "));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("{{ a }}x"), None);
        assert_eq!(
            referenced_names("{{ a.b }}{% for x in c %}{{ x }}{% endfor %}{% set y = d %}{{ y }}"),
            vec!["a", "c", "d"]
        );
        assert_eq!(referenced_names("{{ broken"), Vec::<String>::new());
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TemplateEnv>();
    }
}
