//! Compiled workflow values and their rendering: a JSON value from the definition whose
//! strings may hold YAQL `<% %>` or Jinja `{{ }}`/`{% %}` expressions, compiled once at load
//! time (YAQL parsed, Jinja pre-translated and syntax-checked) and rendered against a `Scope`
//! (the workflow context, the current task and item, task records, the datastore).
//!
//! Rendering follows Orquesta: a string that is exactly one expression yields the expression's
//! native value; otherwise every expression is replaced by its Python `str()`; dicts (keys too)
//! and lists render element-wise. Unlike Orquesta, a string *result* is never evaluated again:
//! a task result that happens to contain `<% %>` stays data (no expression injection).
//!
//! This module evaluates but never changes workflow state; the datastore is only read through
//! the `KvSource` the run was started with.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::jinja::{self, Flavor, KvCall, Uses};
use super::yaql::{self, Expr, Host, YaqlError};
use crate::expr::{KvScope, KvSource, MAX_VALUE_DEPTH, TemplateEnv, TemplateErrorKind, python_str};

/// One string segment of a YAQL-templated string.
#[derive(Debug, Clone)]
pub(super) enum Part {
    Text(String),
    /// The parsed expression and its source with delimiters (for error messages).
    Expr(Box<Expr>, String),
}

/// A compiled value.
#[derive(Debug, Clone)]
pub(super) enum Tpl {
    Lit(Json),
    Yaql(Vec<Part>),
    /// A string, or a list/dict containing only Jinja and plain values, translated (see
    /// `jinja.rs`) and rendered by one `TemplateEnv::render_value` call.
    Jinja {
        value: Json,
        uses: Uses,
        kv: Vec<KvCall>,
        source: String,
    },
    List(Vec<Tpl>),
    Map(Vec<(Tpl, Tpl)>),
}

impl Tpl {
    pub fn lit(v: Json) -> Tpl {
        Tpl::Lit(v)
    }

    /// Compiles `v`; the error names what is wrong (the caller adds where).
    pub fn compile(v: &Json, flavor: Flavor, env: &TemplateEnv) -> Result<Tpl, String> {
        Self::compile_at(v, flavor, env, 0)
    }

    fn compile_at(v: &Json, flavor: Flavor, env: &TemplateEnv, depth: usize) -> Result<Tpl, String> {
        if depth > MAX_VALUE_DEPTH {
            return Err(format!("value nested deeper than {MAX_VALUE_DEPTH} levels"));
        }
        match v {
            Json::String(s) => compile_str(s, flavor, env),
            Json::Array(items) => {
                let parts =
                    items.iter().map(|i| Self::compile_at(i, flavor, env, depth + 1)).collect::<Result<Vec<_>, _>>()?;
                if parts.iter().all(|p| matches!(p, Tpl::Lit(_))) {
                    return Ok(Tpl::Lit(v.clone()));
                }
                if let Some(j) = batch(&parts, None) {
                    return Ok(j);
                }
                Ok(Tpl::List(parts))
            }
            Json::Object(m) => {
                let mut entries = Vec::with_capacity(m.len());
                for (k, val) in m {
                    entries.push((compile_str(k, flavor, env)?, Self::compile_at(val, flavor, env, depth + 1)?));
                }
                if entries.iter().all(|(k, v)| matches!(k, Tpl::Lit(_)) && matches!(v, Tpl::Lit(_))) {
                    return Ok(Tpl::Lit(v.clone()));
                }
                let flat: Vec<Tpl> = entries.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
                if let Some(j) = batch(&flat, Some(m.len())) {
                    return Ok(j);
                }
                Ok(Tpl::Map(entries))
            }
            other => Ok(Tpl::Lit(other.clone())),
        }
    }

    /// Renders against `sc`. Errors are worded as Orquesta's (`YaqlEvaluationException: …`).
    pub fn render(&self, sc: &Scope<'_>) -> Result<Json, String> {
        let v = self.render_inner(sc)?;
        check_depth(&v)?;
        Ok(v)
    }

    fn render_inner(&self, sc: &Scope<'_>) -> Result<Json, String> {
        match self {
            Tpl::Lit(v) => Ok(v.clone()),
            Tpl::Yaql(parts) => render_yaql(parts, sc),
            Tpl::Jinja { value, uses, kv, source } => render_jinja(value, *uses, kv, source, sc),
            Tpl::List(items) => {
                items.iter().map(|i| i.render_inner(sc)).collect::<Result<Vec<_>, _>>().map(Json::Array)
            }
            Tpl::Map(entries) => {
                let mut out = Map::new();
                for (k, v) in entries {
                    let key = match k.render_inner(sc)? {
                        Json::String(s) => s,
                        other => python_str(&other),
                    };
                    out.insert(key, v.render_inner(sc)?);
                }
                Ok(Json::Object(out))
            }
        }
    }

    /// The function names YAQL expressions in this value call.
    pub fn yaql_functions(&self, out: &mut Vec<String>) {
        match self {
            Tpl::Yaql(parts) => {
                for p in parts {
                    if let Part::Expr(e, _) = p {
                        out.extend(e.functions());
                    }
                }
            }
            Tpl::List(items) => items.iter().for_each(|i| i.yaql_functions(out)),
            Tpl::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.yaql_functions(out);
                v.yaql_functions(out);
            }),
            Tpl::Lit(_) | Tpl::Jinja { .. } => {}
        }
    }
}

/// Joins Jinja/literal parts into one Jinja value (`map_len` = Some for dict entries given as
/// key, value, key, value…); `None` when a part is YAQL or nested mixed.
fn batch(parts: &[Tpl], map_len: Option<usize>) -> Option<Tpl> {
    let mut uses = Uses::default();
    let mut kv: Vec<KvCall> = Vec::new();
    let mut sources = Vec::new();
    let mut vals = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Tpl::Lit(v) => vals.push(v.clone()),
            Tpl::Jinja { value, uses: u, kv: k, source } => {
                // `__kv[i]` indices are per template; merging two templates with datastore
                // calls would need renumbering, so those stay separate.
                if !k.is_empty() && !kv.is_empty() {
                    return None;
                }
                kv.extend(k.iter().cloned());
                uses = uses.union(*u);
                sources.push(source.clone());
                vals.push(value.clone());
            }
            _ => return None,
        }
    }
    let value = match map_len {
        None => Json::Array(vals),
        Some(_) => {
            let mut m = Map::new();
            let mut it = vals.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                m.insert(k.as_str().map(str::to_string).unwrap_or_else(|| python_str(&k)), v);
            }
            Json::Object(m)
        }
    };
    Some(Tpl::Jinja { value, uses, kv, source: sources.join(" ") })
}

fn compile_str(s: &str, flavor: Flavor, env: &TemplateEnv) -> Result<Tpl, String> {
    if crate::expr::is_template(s) {
        let t = jinja::translate(s, flavor).map_err(|e| format!("Jinja expression '{s}': {e}"))?;
        // Syntax check: render against nothing. Undefined variables and the like are expected
        // (there is no context); only a syntax error is a definition error.
        if let Err(e) = env.render_str(&t.text, &Json::Null, None)
            && e.kind == TemplateErrorKind::Syntax
        {
            return Err(format!("Jinja expression '{s}': {e}"));
        }
        return Ok(Tpl::Jinja { value: Json::String(t.text), uses: t.uses, kv: t.kv, source: s.to_string() });
    }
    if !s.contains("<%") {
        return Ok(Tpl::Lit(Json::String(s.to_string())));
    }
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("<%") {
        let Some(close) = rest[open + 2..].find("%>") else { break };
        let close = open + 2 + close;
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let src = &rest[open + 2..close];
        let whole = &rest[open..close + 2];
        let e = yaql::parse(src.trim()).map_err(|e| format!("YAQL expression '{whole}': {e}"))?;
        parts.push(Part::Expr(Box::new(e), whole.to_string()));
        rest = &rest[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    if parts.iter().all(|p| matches!(p, Part::Text(_))) {
        return Ok(Tpl::Lit(Json::String(s.to_string())));
    }
    Ok(Tpl::Yaql(parts))
}

/// Values nested deeper than `MAX_VALUE_DEPTH` are refused: they would make later merges,
/// comparisons and drops recurse without bound (a loop can nest a published value once per
/// iteration).
pub(super) fn check_depth(v: &Json) -> Result<(), String> {
    let mut stack: Vec<(&Json, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        if d > MAX_VALUE_DEPTH {
            return Err(format!("value nested deeper than {MAX_VALUE_DEPTH} levels"));
        }
        match v {
            Json::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Json::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Per-run settings every render needs.
pub(super) struct Runtime {
    pub env: Arc<TemplateEnv>,
    pub kv: Option<Arc<dyn KvSource>>,
    /// The user whose datastore scope `st2kv('key')` reads (`ctx().st2.user`).
    pub user: String,
    pub flavor: Flavor,
    /// Attune: `parameters` and `config`.
    pub params: Json,
    pub config: Json,
}

/// What the current task looks like to `result()`, `succeeded()`…
pub(super) struct Current<'a> {
    pub name: &'a str,
    /// Orquesta status string: "running", "succeeded", "failed", "timeout", "canceled".
    pub status: &'a str,
    pub result: &'a Json,
}

/// Task records for `task(name)` / `task_status(name)` / Attune's `task.<name>`.
pub(super) trait Tasks {
    /// The `task(name)` record of the latest execution of `name`.
    fn record(&self, name: &str) -> Option<Json>;
    /// Names of tasks that have executed.
    fn names(&self) -> Vec<String>;
}

/// Everything one render can see.
pub(super) struct Scope<'a> {
    pub rt: &'a Runtime,
    /// Orquesta `ctx()`; Attune `workflow`.
    pub ctx: &'a Json,
    pub current: Option<Current<'a>>,
    pub item: Option<&'a Json>,
    pub index: Option<usize>,
    pub tasks: &'a dyn Tasks,
}

impl Scope<'_> {
    fn current(&self) -> Result<&Current<'_>, String> {
        self.current.as_ref().ok_or_else(|| "The current task is not set in the context.".to_string())
    }
}

fn yaql_message(e: &YaqlError, whole: &str) -> String {
    match e {
        YaqlError::MissingKey(k) => {
            format!("YaqlEvaluationException: Unable to resolve key '{k}' in expression '{whole}' from context.")
        }
        other => format!("YaqlEvaluationException: Unable to evaluate expression '{whole}'. {other}"),
    }
}

fn render_yaql(parts: &[Part], sc: &Scope<'_>) -> Result<Json, String> {
    if let [Part::Expr(e, whole)] = parts {
        return yaql::evaluate(e, sc).map_err(|err| yaql_message(&err, whole));
    }
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Expr(e, whole) => match yaql::evaluate(e, sc).map_err(|err| yaql_message(&err, whole))? {
                Json::String(s) => out.push_str(&s),
                other => out.push_str(&python_str(&other)),
            },
        }
        if out.len() > yaql::YAQL_MAX_STRING {
            return Err(format!("rendered string longer than {} bytes", yaql::YAQL_MAX_STRING));
        }
    }
    Ok(Json::String(out))
}

fn status_is(status: &str, which: &str) -> bool {
    match which {
        "succeeded" => status == "succeeded",
        "failed" => status == "failed",
        "timed_out" => status == "timeout",
        _ => matches!(status, "succeeded" | "failed" | "timeout" | "canceled"),
    }
}

fn render_jinja(value: &Json, uses: Uses, kv: &[KvCall], source: &str, sc: &Scope<'_>) -> Result<Json, String> {
    let rt = sc.rt;
    let mut c = Map::new();
    let text_has = |word: &str| match value {
        Json::String(s) => s.contains(word),
        other => other.to_string().contains(word),
    };
    match rt.flavor {
        Flavor::Orquesta => {
            if uses.ctx {
                c.insert("__ctx".into(), sc.ctx.clone());
            }
        }
        Flavor::Attune => {
            if text_has("parameters") {
                c.insert("parameters".into(), rt.params.clone());
            }
            if text_has("workflow") {
                c.insert("workflow".into(), sc.ctx.clone());
            }
            if text_has("config") {
                c.insert("config".into(), rt.config.clone());
            }
            if text_has("task") {
                let mut m = Map::new();
                for n in sc.tasks.names() {
                    if let Some(r) = sc.tasks.record(&n) {
                        m.insert(n, r);
                    }
                }
                c.insert("task".into(), Json::Object(m));
            }
            if let Some(item) = sc.item {
                c.insert("item".into(), item.clone());
            }
            if let Some(i) = sc.index {
                c.insert("index".into(), Json::from(i));
            }
        }
    }
    if let Some(cur) = &sc.current {
        if uses.result {
            c.insert("__result".into(), cur.result.clone());
        }
        if uses.status {
            for which in ["succeeded", "failed", "completed", "timed_out"] {
                c.insert(format!("__{which}"), Json::Bool(status_is(cur.status, which)));
            }
        }
        if uses.task
            && let Some(r) = sc.tasks.record(cur.name)
        {
            c.insert("__task".into(), r);
        }
    }
    if uses.item
        && let Some(item) = sc.item
    {
        c.insert("__item".into(), item.clone());
    }
    if uses.tasks || uses.task_status {
        let mut recs = Map::new();
        let mut statuses = Map::new();
        for n in sc.tasks.names() {
            if let Some(r) = sc.tasks.record(&n) {
                statuses.insert(n.clone(), r.get("status").cloned().unwrap_or(Json::Null));
                recs.insert(n, r);
            }
        }
        if uses.tasks {
            c.insert("__tasks".into(), Json::Object(recs));
        }
        if uses.task_status {
            c.insert("__task_status".into(), Json::Object(statuses));
        }
    }
    c.insert("action_context".into(), serde_json::json!({ "user": rt.user }));
    let kvsrc = rt.kv.as_deref();
    let jinja_err = |msg: String| format!("JinjaEvaluationException: Unable to evaluate expression '{source}'. {msg}");
    if !kv.is_empty() {
        c.insert("__kv".into(), Json::Array(Vec::new()));
        for call in kv {
            let mut ctx = Json::Object(c);
            let key = rt.env.eval_expression(&call.key, &ctx, kvsrc).map_err(|e| jinja_err(e.to_string()));
            let decrypt = match &call.decrypt {
                Some(d) => rt.env.eval_expression(d, &ctx, kvsrc).map_err(|e| jinja_err(e.to_string())),
                None => Ok(Json::Bool(false)),
            };
            let default = match &call.default {
                Some(d) => rt.env.eval_expression(d, &ctx, kvsrc).map(Some).map_err(|e| jinja_err(e.to_string())),
                None => Ok(None),
            };
            let v = st2kv(rt, &key?, &decrypt?, default?.as_ref()).map_err(jinja_err)?;
            if let Some(Json::Array(list)) = ctx.get_mut("__kv") {
                list.push(v);
            }
            let Json::Object(m) = ctx else { return Err(jinja_err("internal: context is not a dict".into())) };
            c = m;
        }
    }
    let ctx = Json::Object(c);
    rt.env.render_value(value, &ctx, kvsrc).map_err(|e| jinja_err(e.to_string()))
}

/// `st2kv(key, decrypt, default)`: `system.` keys read the system scope, `user.` keys and
/// plain keys the run's user; a missing key is an error unless a default is given.
pub(super) fn st2kv(rt: &Runtime, key: &Json, decrypt: &Json, default: Option<&Json>) -> Result<Json, String> {
    let Json::String(key) = key else { return Err("Given key is not typeof string.".into()) };
    let Json::Bool(decrypt) = decrypt else { return Err("Decrypt parameter is not typeof bool.".into()) };
    let (scope, name) = if let Some(k) = key.strip_prefix("system.") {
        (KvScope::System, k)
    } else if let Some(k) = key.strip_prefix("user.") {
        (KvScope::User(rt.user.clone()), k)
    } else {
        (KvScope::User(rt.user.clone()), key.as_str())
    };
    let found = rt.kv.as_ref().and_then(|kv| kv.get(scope.clone(), name));
    let Some(value) = found else {
        return match default {
            Some(d) => Ok(d.clone()),
            None => Err(format!("Key {key} does not exist in StackStorm datastore.")),
        };
    };
    if *decrypt {
        let kv = rt.kv.as_ref().ok_or_else(|| "no datastore".to_string())?;
        return kv.decrypt(scope, &value).map(Json::String);
    }
    Ok(Json::String(value))
}

impl Host for Scope<'_> {
    fn root(&self) -> &Json {
        self.ctx
    }

    fn call(&self, name: &str, args: &[Json], kwargs: &[(String, Json)]) -> Option<Result<Cow<'_, Json>, YaqlError>> {
        let err = |m: String| YaqlError::Eval(m);
        let no_args = |n: usize| {
            if args.len() > n || !kwargs.is_empty() {
                Err(err(format!("{name}() takes at most {n} argument(s)")))
            } else {
                Ok(())
            }
        };
        Some(match name {
            "result" => no_args(0).and_then(|_| self.current().map(|c| Cow::Borrowed(c.result)).map_err(err)),
            "succeeded" | "failed" | "completed" | "timed_out" => no_args(0)
                .and_then(|_| self.current().map(|c| Cow::Owned(Json::Bool(status_is(c.status, name)))).map_err(err)),
            "item" => no_args(1).and_then(|_| {
                let item = self.item.ok_or_else(|| err("The current item is not set in the context.".into()))?;
                match args.first() {
                    None | Some(Json::Null) => Ok(Cow::Borrowed(item)),
                    Some(Json::String(k)) => match item {
                        Json::Object(m) => m
                            .get(k.as_str())
                            .map(Cow::Borrowed)
                            .ok_or_else(|| err(format!("Item does not have key \"{k}\"."))),
                        _ => Err(err("Item is not type of collections.abc.Mapping.".into())),
                    },
                    Some(other) => Err(err(format!("item() takes a key name, got {}", yaql::type_name(other)))),
                }
            }),
            "task_status" => (|| {
                let Some(Json::String(t)) = args.first() else {
                    return Err(err("task_status() takes a task name".into()));
                };
                let status = self.tasks.record(t).and_then(|r| r.get("status").cloned());
                Ok(Cow::Owned(status.unwrap_or_else(|| Json::String("null".into()))))
            })(),
            "task" => (|| {
                let t = match args.first() {
                    Some(Json::String(t)) => t.clone(),
                    Some(other) => {
                        return Err(err(format!("task() takes a task name, got {}", yaql::type_name(other))));
                    }
                    None => self.current().map_err(err)?.name.to_string(),
                };
                self.tasks
                    .record(&t)
                    .map(Cow::Owned)
                    .ok_or_else(|| err(format!("Unable to find task execution for \"{t}\".")))
            })(),
            "st2kv" => (|| {
                let key = args.first().ok_or_else(|| err("st2kv() needs a key".into()))?;
                let mut decrypt = args.get(1).cloned().unwrap_or(Json::Bool(false));
                let mut default = None;
                for (k, v) in kwargs {
                    match k.as_str() {
                        "decrypt" => decrypt = v.clone(),
                        "default" => default = Some(v.clone()),
                        other => return Err(err(format!("st2kv() got an unexpected argument '{other}'"))),
                    }
                }
                st2kv(self.rt, key, &decrypt, default.as_ref()).map(Cow::Owned).map_err(err)
            })(),
            _ => {
                if yaql::BUILTINS.contains(&name) {
                    return None;
                }
                let (_, filter) = jinja::FILTER_FUNCTIONS.iter().find(|(f, _)| *f == name)?;
                filter_bridge(self.rt, filter, args, kwargs).map(Cow::Owned)
            }
        })
    }
}

/// Runs an st2 Jinja filter for a YAQL call: `f(a, b, k => c)` is `a | f(b, k=c)`, so both
/// languages share one implementation of `to_json_string`, `regex_replace`, `version_*`…
fn filter_bridge(rt: &Runtime, filter: &str, args: &[Json], kwargs: &[(String, Json)]) -> Result<Json, YaqlError> {
    let Some(first) = args.first() else {
        return Err(YaqlError::Eval(format!("{filter}() needs at least one argument")));
    };
    let mut ctx = Map::new();
    ctx.insert("__a0".into(), first.clone());
    let mut call_args = Vec::new();
    for (i, a) in args.iter().enumerate().skip(1) {
        ctx.insert(format!("__a{i}"), a.clone());
        call_args.push(format!("__a{i}"));
    }
    for (i, (k, v)) in kwargs.iter().enumerate() {
        if !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(YaqlError::Eval(format!("bad argument name '{k}'")));
        }
        ctx.insert(format!("__k{i}"), v.clone());
        call_args.push(format!("{k}=__k{i}"));
    }
    let expr = format!("__a0 | {filter}({})", call_args.join(", "));
    rt.env.eval_expression(&expr, &Json::Object(ctx), rt.kv.as_deref()).map_err(|e| YaqlError::Eval(e.message))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;
    use std::collections::HashMap;

    /// A datastore for tests: "scope:key" → value; ciphertext "enc:<plain>".
    pub struct TestKv(pub HashMap<String, String>);

    impl TestKv {
        pub fn new() -> TestKv {
            let mut m = HashMap::new();
            m.insert("system:host".to_string(), "web-01".to_string());
            m.insert("system:secret".to_string(), "enc:hunter2".to_string());
            m.insert("stanley:token".to_string(), "user-token".to_string());
            TestKv(m)
        }
    }

    impl KvSource for TestKv {
        fn get(&self, scope: KvScope, name: &str) -> Option<String> {
            let k = match scope {
                KvScope::System => format!("system:{name}"),
                KvScope::User(u) => format!("{u}:{name}"),
            };
            self.0.get(&k).cloned()
        }
        fn decrypt(&self, _: KvScope, c: &str) -> Result<String, String> {
            c.strip_prefix("enc:").map(str::to_string).ok_or_else(|| format!("cannot decrypt {c:?}"))
        }
    }

    struct NoTasks;
    impl Tasks for NoTasks {
        fn record(&self, name: &str) -> Option<Json> {
            (name == "t1").then(|| json!({"task_id": "t1", "status": "succeeded", "result": {"stdout": "one"}}))
        }
        fn names(&self) -> Vec<String> {
            vec!["t1".into()]
        }
    }

    pub fn runtime(flavor: Flavor) -> Runtime {
        Runtime {
            env: Arc::new(TemplateEnv::new()),
            kv: Some(Arc::new(TestKv::new())),
            user: "stanley".into(),
            flavor,
            params: json!({"p": 1}),
            config: json!({"region": "eu"}),
        }
    }

    fn check(tpl: Json, expect: Expect) {
        let rt = runtime(Flavor::Orquesta);
        let ctx = json!({"name": "Thanos", "n": 3, "l": [1, 2], "key": "host", "yes": true, "d": {"a": 1}});
        let result = json!({"stdout": "out", "result": {"enabled": true}});
        let item = json!({"x": "X"});
        let sc = Scope {
            rt: &rt,
            ctx: &ctx,
            current: Some(Current { name: "t1", status: "succeeded", result: &result }),
            item: Some(&item),
            index: Some(0),
            tasks: &NoTasks,
        };
        let out = match Tpl::compile(&tpl, Flavor::Orquesta, &rt.env) {
            Ok(t) => match t.render(&sc) {
                Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
                Err(e) => format!("ERROR {e}"),
            },
            Err(e) => format!("COMPILE {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn yaql_strings() {
        check(json!("<% ctx().n %>"), expect!["3"]);
        check(json!("<% ctx().l %>"), expect!["[1,2]"]);
        check(json!(" <% ctx().n %>"), expect![[r#"" 3""#]]);
        check(json!("<% ctx(\"name\") %>, <% result().stdout %>"), expect![[r#""Thanos, out""#]]);
        check(json!("<% ctx().l %> <% ctx().yes %> <% null %>"), expect![[r#""[1, 2] True None""#]]);
        check(json!("<% succeeded() and not failed() and completed() %>"), expect!["true"]);
        check(json!("<% item(x) %>|<% item() %>"), expect![[r#""X|{'x': 'X'}""#]]);
        check(
            json!("<% item(y) %>"),
            expect![[
                r#"ERROR YaqlEvaluationException: Unable to evaluate expression '<% item(y) %>'. Item does not have key "y"."#
            ]],
        );
        check(
            json!("<% task(t1).result.stdout %> <% task_status(t1) %> <% task_status(t9) %>"),
            expect![[r#""one succeeded null""#]],
        );
        check(json!("<% task().status %>"), expect![[r#""succeeded""#]]);
        check(
            json!("<% task(t9) %>"),
            expect![[
                r#"ERROR YaqlEvaluationException: Unable to evaluate expression '<% task(t9) %>'. Unable to find task execution for "t9"."#
            ]],
        );
        check(
            json!("<% ctx().nope %>"),
            expect![
                "ERROR YaqlEvaluationException: Unable to resolve key 'nope' in expression '<% ctx().nope %>' from context."
            ],
        );
        check(
            json!("<% abs(8).value %>"),
            expect![[
                r##"ERROR YaqlEvaluationException: Unable to evaluate expression '<% abs(8).value %>'. NoFunctionRegisteredException: Unknown function "#property#value""##
            ]],
        );
        check(
            json!("<% <% succeeded() %>"),
            expect!["COMPILE YAQL expression '<% <% succeeded() %>': Parse error: unexpected '<' at position 0"],
        );
        check(json!("open <% only"), expect![[r#""open <% only""#]]);
        check(
            json!({"<% ctx().name %>": ["<% ctx().n %>", 1], "k": "plain"}),
            expect![[r#"{"Thanos":[3,1],"k":"plain"}"#]],
        );
    }

    #[test]
    fn st2kv_and_filters() {
        check(json!("<% st2kv('system.host') %>"), expect![[r#""web-01""#]]);
        check(json!("<% st2kv('system.' + ctx().key) %>"), expect![[r#""web-01""#]]);
        check(json!("<% st2kv(token) %>"), expect![[r#""user-token""#]]);
        check(json!("<% st2kv('system.secret', decrypt => true) %>"), expect![[r#""hunter2""#]]);
        check(json!("<% st2kv('system.secret') %>"), expect![[r#""enc:hunter2""#]]);
        check(json!("<% st2kv('system.nope', default => 'd') %>"), expect![[r#""d""#]]);
        check(json!("<% st2kv('system.nope', default => null) %>"), expect!["null"]);
        check(
            json!("<% st2kv('system.nope') %>"),
            expect![
                "ERROR YaqlEvaluationException: Unable to evaluate expression '<% st2kv('system.nope') %>'. Key system.nope does not exist in StackStorm datastore."
            ],
        );
        check(
            json!("<% st2kv('system.host', decrypt => 'yes') %>"),
            expect![
                "ERROR YaqlEvaluationException: Unable to evaluate expression '<% st2kv('system.host', decrypt => 'yes') %>'. Decrypt parameter is not typeof bool."
            ],
        );
        check(json!("<% json_dump(ctx().d) %>"), expect![[r#""{\"a\": 1}""#]]);
        check(json!("<% json_parse('{\"b\": [1]}') %>"), expect![[r#"{"b":[1]}"#]]);
        check(
            json!("<% regex_replace('xyz', 'x', 'wx') %> <% regex_match('xyz', 'x') %>"),
            expect![[r#""wxyz True""#]],
        );
        check(json!("<% version_compare('0.10.0', '0.10.1') %>"), expect!["-1"]);
        check(json!("<% regex_search('XYZ', 'y', ignorecase => true) %>"), expect!["true"]);
        check(json!("<% to_human_time_from_seconds(12345) %>"), expect![[r#""3h25m45s""#]]);
        check(json!("<% basename('/a/b.txt') %>"), expect![[r#""b.txt""#]]);
        check(
            json!("<% version_bump_major() %>"),
            expect![
                "ERROR YaqlEvaluationException: Unable to evaluate expression '<% version_bump_major() %>'. version_bump_major() needs at least one argument"
            ],
        );
    }

    #[test]
    fn jinja_strings() {
        check(json!("{{ ctx().n }}"), expect!["3"]);
        check(json!("{{ ctx('name') }}, {{ result().stdout }}"), expect![[r#""Thanos, out""#]]);
        check(json!("{{ result().result.enabled == true }}"), expect!["true"]);
        check(json!("{{ succeeded() }}"), expect!["true"]);
        check(json!("{{ item('x') }}"), expect![[r#""X""#]]);
        check(
            json!("{{ task('t1').result.stdout }} {{ task_status('t1') }} {{ task().task_id }}"),
            expect![[r#""one succeeded t1""#]],
        );
        check(json!("{{ st2kv('system.host') }}"), expect![[r#""web-01""#]]);
        check(json!("{{ st2kv('system.' ~ ctx().key) | upper }}"), expect![[r#""WEB-01""#]]);
        check(json!("{{ st2kv('system.secret', decrypt=true) }}"), expect![[r#""hunter2""#]]);
        check(json!("{{ st2kv('nope', default='x') }}{{ st2kv('system.host') }}"), expect![[r#""xweb-01""#]]);
        check(
            json!("{{ st2kv('nope') }}"),
            expect![
                "ERROR JinjaEvaluationException: Unable to evaluate expression '{{ st2kv('nope') }}'. Key nope does not exist in StackStorm datastore."
            ],
        );
        check(json!("{{ from_json_string('{\"a\": 2}').a }}"), expect!["2"]);
        check(
            json!("{{ ctx().zz }}"),
            expect![
                "ERROR JinjaEvaluationException: Unable to evaluate expression '{{ ctx().zz }}'. '__ctx' has no attribute 'zz'"
            ],
        );
        check(
            json!("{{ ctx( }}"),
            expect!["COMPILE Jinja expression '{{ ctx( }}': unbalanced parentheses after 'ctx('"],
        );
        check(
            json!("{% if %}"),
            expect!["COMPILE Jinja expression '{% if %}': syntax error: unexpected end of block (line 1)"],
        );
        check(
            json!({"a": "{{ ctx().n }}", "b": ["{{ ctx().name }}", 2], "{{ ctx().name }}": "k"}),
            expect![[r#"{"a":3,"b":["Thanos",2],"Thanos":"k"}"#]],
        );
        check(json!({"a": "{{ ctx().n }}", "b": "<% ctx().n %>"}), expect![[r#"{"a":3,"b":3}"#]]);
    }

    #[test]
    fn attune_scope() {
        let rt = runtime(Flavor::Attune);
        let ctx = json!({"v": "var"});
        let result = json!({"stdout": "x"});
        let item = json!("it");
        let sc = Scope {
            rt: &rt,
            ctx: &ctx,
            current: Some(Current { name: "t1", status: "timeout", result: &result }),
            item: Some(&item),
            index: Some(4),
            tasks: &NoTasks,
        };
        let tpl = json!(
            "{{ parameters.p }} {{ workflow.v }} {{ config.region }} {{ item }} {{ index }} {{ task.t1.result.stdout }} {{ result().stdout }} {{ timed_out() }} {{ failed() }} {{ keystore.host }} {{ length(workflow.v) }}"
        );
        let t = Tpl::compile(&tpl, Flavor::Attune, &rt.env).unwrap();
        assert_eq!(t.render(&sc).unwrap(), json!("1 var eu it 4 one x True False web-01 3"));
    }

    #[test]
    fn depth_limit() {
        let mut deep = json!(1);
        for _ in 0..MAX_VALUE_DEPTH + 2 {
            deep = json!([deep]);
        }
        assert!(check_depth(&deep).is_err());
        let rt = runtime(Flavor::Orquesta);
        assert!(Tpl::compile(&deep, Flavor::Orquesta, &rt.env).is_err());
    }
}
