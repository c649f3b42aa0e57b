//! Workflow definitions: parsing and validating Orquesta (`version: 1.0`, tasks as a map) and
//! Attune (tasks as a list, `{{ }}` only, legacy `on_success`/… fields) documents into one
//! `Workflow` the conductor runs. Every expression is compiled here, so syntax errors surface
//! at load time with the path of the offending field (`tasks.task2.next[0].when`).
//!
//! This module only reads the definition (already parsed from YAML into JSON by the caller);
//! it runs nothing and knows nothing about actions (unknown action refs are the caller's
//! business, checked when a request is executed).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::WorkflowError;
use super::jinja::Flavor;
use super::tpl::Tpl;
use super::yaql::BUILTINS;
use crate::expr::TemplateEnv;

/// Most tasks one workflow may define. Real workflows have a few dozen; the graph checks are
/// quadratic in the worst case, so the cap keeps loading cheap.
pub const MAX_TASKS: usize = 1000;

/// Largest retry `count` accepted (Attune's own limit). Retries are delayed re-executions; a
/// huge count would keep a failing task looping for days.
pub const MAX_RETRY_COUNT: u64 = 100;

/// Names a task may not have: Orquesta's engine commands in `do`.
pub const RESERVED_TASK_NAMES: [&str; 4] = ["continue", "fail", "noop", "retry"];

/// Functions the YAQL side resolves through the workflow host (besides `BUILTINS` and the st2
/// filters).
const WORKFLOW_FUNCTIONS: [&str; 10] =
    ["result", "succeeded", "failed", "completed", "timed_out", "item", "task_status", "task", "st2kv", "ctx"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    All,
    Count(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Task(usize),
    Continue,
    Fail,
    Noop,
    Retry,
}

#[derive(Debug, Clone)]
pub(super) struct Transition {
    pub when: Option<Tpl>,
    pub publish: Vec<(String, Tpl)>,
    /// Empty means `continue`.
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backoff {
    Constant,
    Linear,
    Exponential,
}

#[derive(Debug, Clone)]
pub(super) struct RetrySpec {
    pub when: Option<Tpl>,
    pub count: Tpl,
    pub delay: Option<Tpl>,
    pub backoff: Backoff,
    pub max_delay: Option<u64>,
}

#[derive(Debug, Clone)]
pub(super) struct WithItems {
    /// `x, y in <% … %>`: the names items are bound to (empty: the item itself).
    pub keys: Vec<String>,
    pub items: Tpl,
    pub concurrency: Option<Tpl>,
}

#[derive(Debug, Clone)]
pub(super) struct TaskSpec {
    pub name: String,
    pub action: Option<Tpl>,
    pub input: Tpl,
    pub next: Vec<Transition>,
    pub join: Option<Join>,
    pub with: Option<WithItems>,
    pub retry: Option<RetrySpec>,
    pub delay: Option<Tpl>,
    pub timeout: Option<u64>,
}

/// A parsed and validated workflow definition; share it with `Arc` between runs.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub(super) flavor: Flavor,
    /// Orquesta `input` (name, default) / Attune `parameters` defaults.
    pub(super) inputs: Vec<(String, Option<Tpl>)>,
    pub(super) vars: Vec<(String, Tpl)>,
    pub(super) tasks: Vec<TaskSpec>,
    pub(super) output: Vec<(String, Tpl)>,
    pub(super) starts: Vec<usize>,
    /// Per task: the distinct tasks with a transition into it (the `join: all` requirement).
    pub(super) inbound: Vec<Vec<usize>>,
    unknown_functions: Vec<String>,
}

impl Workflow {
    /// Parses an Orquesta definition (the YAML document as JSON).
    pub fn parse_orquesta(def: &Json) -> Result<Workflow, WorkflowError> {
        let env = TemplateEnv::new();
        let p = Parser { flavor: Flavor::Orquesta, env: &env };
        p.orquesta(def)
    }

    /// Parses an Attune workflow definition (tasks as a list).
    pub fn parse_attune(def: &Json) -> Result<Workflow, WorkflowError> {
        let env = TemplateEnv::new();
        let p = Parser { flavor: Flavor::Attune, env: &env };
        p.attune(def)
    }

    /// Task names in definition order.
    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// Functions YAQL expressions call that this engine does not implement (sorted, unique).
    /// The workflow still loads; such an expression fails when evaluated.
    pub fn unknown_functions(&self) -> &[String] {
        &self.unknown_functions
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> WorkflowError {
    WorkflowError::Invalid { path: path.into(), message: message.into() }
}

fn type_of(v: &Json) -> &'static str {
    super::yaql::type_name(v)
}

/// Orquesta's inline parameter syntax (`core.echo message=<% ctx().x %> n=1`, publish
/// shorthand `a=<% … %> b="text"`): a name, `=`, and a bracketed list, a quoted string, a
/// number, a boolean, null or one expression. A bare word is not a value (as in Orquesta).
static INLINE_PARAM: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(\w+)=(\[.*\]\s*|"[^"]*"\s*|'[^']*'\s*|-?\d*\.\d+|-?\d+|(?i:true)|(?i:false)|null|<%.*?%>|\{\{.*?\}\}|\{%.*?%\})"#,
    )
    .ok()
});

/// Splits inline parameters into (name, value) in order. Quoted values stay strings; other
/// values are JSON-decoded where possible (numbers, booleans, lists), as Orquesta does.
pub(super) fn parse_inline_params(s: &str) -> Vec<(String, Json)> {
    let Some(re) = INLINE_PARAM.as_ref() else { return Vec::new() };
    let mut out = Vec::new();
    for cap in re.captures_iter(s) {
        let (Some(k), Some(v)) = (cap.get(1), cap.get(2)) else { continue };
        let mut v = v.as_str().trim();
        let quoted =
            (v.contains('"') && v.matches('"').count() >= 2) || (v.contains('\'') && v.matches('\'').count() >= 2);
        v = v.strip_prefix('"').unwrap_or(v);
        v = v.strip_suffix('"').unwrap_or(v);
        v = v.strip_prefix('\'').unwrap_or(v);
        v = v.strip_suffix('\'').unwrap_or(v);
        let braces = v.starts_with('{') && v.ends_with('}');
        let keep_string = quoted && !braces;
        let value = if keep_string {
            Json::String(v.to_string())
        } else {
            let lower = v.to_ascii_lowercase();
            let text = if lower == "true" || lower == "false" { lower.as_str() } else { v };
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(v.to_string()))
        };
        out.push((k.as_str().to_string(), value));
    }
    out
}

struct Parser<'e> {
    flavor: Flavor,
    env: &'e TemplateEnv,
}

/// A task before its transition targets are resolved to indices.
struct RawTask {
    spec: TaskSpec,
    /// Per transition: target names with their path.
    targets: Vec<(Vec<String>, String)>,
}

impl Parser<'_> {
    fn tpl(&self, v: &Json, path: &str) -> Result<Tpl, WorkflowError> {
        Tpl::compile(v, self.flavor, self.env).map_err(|m| invalid(path, m))
    }

    fn opt_str<'a>(&self, obj: &'a Map<String, Json>, key: &str, path: &str) -> Result<Option<&'a str>, WorkflowError> {
        match obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
            Some(Json::String(_)) => Err(invalid(format!("{path}.{key}"), "must not be empty")),
            Some(other) => Err(invalid(format!("{path}.{key}"), format!("must be a string, not {}", type_of(other)))),
        }
    }

    /// A list of one-key dicts (`vars`, `output`, `publish`), in order, names unique.
    fn assignments(&self, v: &Json, path: &str) -> Result<Vec<(String, Tpl)>, WorkflowError> {
        let Json::Array(items) = v else {
            return Err(invalid(path, format!("must be a list of one-key dicts, not {}", type_of(v))));
        };
        let mut out: Vec<(String, Tpl)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some((k, val)) = item.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
                return Err(invalid(p, "must be a dict with exactly one key"));
            };
            if out.iter().any(|(n, _)| n == k) {
                return Err(invalid(p, format!("\"{k}\" is assigned twice")));
            }
            out.push((k.clone(), self.tpl(val, &format!("{p}.{k}"))?));
        }
        Ok(out)
    }

    fn orquesta(&self, def: &Json) -> Result<Workflow, WorkflowError> {
        let Json::Object(root) = def else {
            return Err(invalid("", format!("a workflow must be a dict, not {}", type_of(def))));
        };
        for k in root.keys() {
            if !matches!(
                k.as_str(),
                "version" | "description" | "name" | "tags" | "input" | "vars" | "tasks" | "output"
            ) {
                return Err(invalid(k, "unknown workflow attribute"));
            }
        }
        match root.get("version") {
            None => return Err(invalid("version", "is required")),
            Some(Json::Number(n)) if n.as_f64() == Some(1.0) => {}
            Some(Json::String(s)) if s == "1.0" || s == "1" => {}
            Some(v) => return Err(invalid("version", format!("unsupported version {v} (only 1.0)"))),
        }
        let mut inputs = Vec::new();
        if let Some(v) = root.get("input").filter(|v| !v.is_null()) {
            let Json::Array(items) = v else { return Err(invalid("input", "must be a list")) };
            for (i, item) in items.iter().enumerate() {
                let p = format!("input[{i}]");
                let (name, default) = match item {
                    Json::String(s) => (s.clone(), None),
                    Json::Object(m) if m.len() == 1 => {
                        let Some((k, d)) = m.iter().next() else { return Err(invalid(p, "empty")) };
                        (k.clone(), Some(self.tpl(d, &format!("{p}.{k}"))?))
                    }
                    _ => return Err(invalid(p, "must be a name or a dict with one key")),
                };
                if inputs.iter().any(|(n, _): &(String, _)| *n == name) {
                    return Err(invalid(p, format!("input \"{name}\" is declared twice")));
                }
                inputs.push((name, default));
            }
        }
        let vars = match root.get("vars").filter(|v| !v.is_null()) {
            Some(v) => self.assignments(v, "vars")?,
            None => Vec::new(),
        };
        let output = match root.get("output").filter(|v| !v.is_null()) {
            Some(v) => self.assignments(v, "output")?,
            None => Vec::new(),
        };
        let Some(Json::Object(tasks)) = root.get("tasks") else {
            return Err(invalid("tasks", "is required and must be a dict of tasks"));
        };
        let mut raw = Vec::new();
        for (name, t) in tasks {
            raw.push(self.orquesta_task(name, t)?);
        }
        self.finish(raw, inputs, vars, output)
    }

    fn check_name(&self, name: &str, path: &str) -> Result<(), WorkflowError> {
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(invalid(path, format!("task name \"{name}\" must be letters, digits and '_'")));
        }
        if RESERVED_TASK_NAMES.contains(&name) {
            return Err(invalid(path, format!("The task name \"{name}\" is reserved with special function.")));
        }
        Ok(())
    }

    fn orquesta_task(&self, name: &str, t: &Json) -> Result<RawTask, WorkflowError> {
        let path = format!("tasks.{name}");
        self.check_name(name, &path)?;
        let Json::Object(m) = t else {
            return Err(invalid(path, format!("a task must be a dict, not {}", type_of(t))));
        };
        for k in m.keys() {
            if !matches!(k.as_str(), "action" | "input" | "next" | "join" | "with" | "retry" | "delay") {
                return Err(invalid(format!("{path}.{k}"), "unknown task attribute"));
            }
        }
        let mut input = match m.get("input") {
            None | Some(Json::Null) => Json::Object(Map::new()),
            Some(v @ Json::Object(_)) => v.clone(),
            Some(v) => {
                return Err(invalid(
                    format!("{path}.input"),
                    format!("must be a dict of parameters, not {}", type_of(v)),
                ));
            }
        };
        let action = match self.opt_str(m, "action", &path)? {
            None => None,
            Some(a) => {
                let inline = parse_inline_params(a);
                let action = if inline.is_empty() {
                    a.trim()
                } else {
                    // Inline parameters replace `input`, as in Orquesta.
                    input = Json::Object(inline.into_iter().collect());
                    a.trim().split(char::is_whitespace).next().unwrap_or(a)
                };
                Some(self.tpl(&Json::String(action.to_string()), &format!("{path}.action"))?)
            }
        };
        let input = self.tpl(&input, &format!("{path}.input"))?;
        let join = match m.get("join") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) if s == "all" => Some(Join::All),
            Some(Json::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
                Some(Join::Count(n.as_u64().unwrap_or(1).min(MAX_TASKS as u64) as usize))
            }
            Some(v) => {
                return Err(invalid(format!("{path}.join"), format!("must be \"all\" or a positive integer, not {v}")));
            }
        };
        let with = match m.get("with") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(self.items(s, None, &format!("{path}.with"))?),
            Some(Json::Object(w)) => {
                for k in w.keys() {
                    if k != "items" && k != "concurrency" {
                        return Err(invalid(format!("{path}.with.{k}"), "unknown attribute"));
                    }
                }
                let Some(Json::String(items)) = w.get("items") else {
                    return Err(invalid(format!("{path}.with.items"), "is required and must be a string"));
                };
                Some(self.items(items, w.get("concurrency"), &format!("{path}.with"))?)
            }
            Some(v) => {
                return Err(invalid(format!("{path}.with"), format!("must be a string or a dict, not {}", type_of(v))));
            }
        };
        if with.is_some() && action.is_none() {
            return Err(invalid(format!("{path}.action"), "The action property is required for with items task."));
        }
        let retry = match m.get("retry") {
            None | Some(Json::Null) => None,
            Some(Json::Object(r)) => {
                for k in r.keys() {
                    if !matches!(k.as_str(), "when" | "count" | "delay") {
                        return Err(invalid(format!("{path}.retry.{k}"), "unknown attribute"));
                    }
                }
                Some(self.retry(r, &format!("{path}.retry"))?)
            }
            Some(v) => return Err(invalid(format!("{path}.retry"), format!("must be a dict, not {}", type_of(v)))),
        };
        let delay = self.count_or_expr(m.get("delay"), &format!("{path}.delay"))?;
        let mut next = Vec::new();
        let mut targets = Vec::new();
        match m.get("next") {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) => {
                for (i, tr) in items.iter().enumerate() {
                    let (t, names) = self.orquesta_transition(tr, &format!("{path}.next[{i}]"))?;
                    next.push(t);
                    targets.push((names, format!("{path}.next[{i}].do")));
                }
            }
            Some(v) => return Err(invalid(format!("{path}.next"), format!("must be a list, not {}", type_of(v)))),
        }
        let spec = TaskSpec { name: name.to_string(), action, input, next, join, with, retry, delay, timeout: None };
        Ok(RawTask { spec, targets })
    }

    /// A count or delay: a non-negative integer or an expression string.
    fn count_or_expr(&self, v: Option<&Json>, path: &str) -> Result<Option<Tpl>, WorkflowError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(n @ Json::Number(x)) if x.as_u64().is_some() => Ok(Some(Tpl::lit(n.clone()))),
            Some(s @ Json::String(_)) => Ok(Some(self.tpl(s, path)?)),
            Some(v) => Err(invalid(path, format!("must be a non-negative integer or an expression, not {v}"))),
        }
    }

    fn retry(&self, r: &Map<String, Json>, path: &str) -> Result<RetrySpec, WorkflowError> {
        let count = self
            .count_or_expr(r.get("count"), &format!("{path}.count"))?
            .ok_or_else(|| invalid(format!("{path}.count"), "is required"))?;
        if let Tpl::Lit(Json::Number(n)) = &count
            && n.as_u64().is_some_and(|n| n > MAX_RETRY_COUNT)
        {
            return Err(invalid(format!("{path}.count"), format!("must be at most {MAX_RETRY_COUNT}")));
        }
        let when = match r.get("when").or_else(|| r.get("on_error")) {
            None | Some(Json::Null) => None,
            Some(s @ Json::String(_)) => Some(self.tpl(s, &format!("{path}.when"))?),
            Some(v) => {
                return Err(invalid(format!("{path}.when"), format!("must be an expression, not {}", type_of(v))));
            }
        };
        let delay = self.count_or_expr(r.get("delay"), &format!("{path}.delay"))?;
        let backoff = match r.get("backoff").and_then(Json::as_str) {
            None | Some("constant") => Backoff::Constant,
            Some("linear") => Backoff::Linear,
            Some("exponential") => Backoff::Exponential,
            Some(other) => return Err(invalid(format!("{path}.backoff"), format!("unknown backoff \"{other}\""))),
        };
        let max_delay = r.get("max_delay").and_then(Json::as_u64);
        Ok(RetrySpec { when, count, delay, backoff, max_delay })
    }

    /// `with` items: `<% list %>` or `x, y in <% list %>`.
    fn items(&self, s: &str, concurrency: Option<&Json>, path: &str) -> Result<WithItems, WorkflowError> {
        let (keys, expr) = match s.find(" in ") {
            Some(i) if !s[..i].contains("<%") && !s[..i].contains("{{") => {
                let keys: Vec<String> = s[..i].split(',').map(|k| k.trim().to_string()).collect();
                if keys.iter().any(|k| k.is_empty() || !k.chars().all(|c| c.is_alphanumeric() || c == '_')) {
                    return Err(invalid(format!("{path}.items"), format!("bad item names in \"{s}\"")));
                }
                (keys, s[i + 4..].trim())
            }
            _ => (Vec::new(), s.trim()),
        };
        let items = self.tpl(&Json::String(expr.to_string()), &format!("{path}.items"))?;
        if matches!(items, Tpl::Lit(_)) {
            return Err(invalid(format!("{path}.items"), format!("\"{s}\" must be an expression that yields a list")));
        }
        let concurrency = self.count_or_expr(concurrency, &format!("{path}.concurrency"))?;
        Ok(WithItems { keys, items, concurrency })
    }

    fn do_list(&self, v: Option<&Json>, path: &str) -> Result<Vec<String>, WorkflowError> {
        Ok(match v {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::String(s)) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
            Some(Json::Array(items)) => {
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    let Json::String(s) = it else {
                        return Err(invalid(
                            format!("{path}[{i}]"),
                            format!("must be a task name, not {}", type_of(it)),
                        ));
                    };
                    out.push(s.trim().to_string());
                }
                out
            }
            Some(v) => {
                return Err(invalid(path, format!("must be a task name or a list of task names, not {}", type_of(v))));
            }
        })
    }

    fn orquesta_transition(&self, tr: &Json, path: &str) -> Result<(Transition, Vec<String>), WorkflowError> {
        let Json::Object(m) = tr else {
            return Err(invalid(path, format!("a transition must be a dict, not {}", type_of(tr))));
        };
        for k in m.keys() {
            if !matches!(k.as_str(), "when" | "publish" | "do") {
                return Err(invalid(format!("{path}.{k}"), "unknown transition attribute"));
            }
        }
        let when = match self.opt_str(m, "when", path)? {
            Some(w) => Some(self.tpl(&Json::String(w.to_string()), &format!("{path}.when"))?),
            None => None,
        };
        let publish = match m.get("publish") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::String(s)) => {
                let params = parse_inline_params(s);
                if params.is_empty() {
                    return Err(invalid(format!("{path}.publish"), format!("no \"name=value\" assignment in \"{s}\"")));
                }
                let mut out = Vec::new();
                for (k, v) in params {
                    let t = self.tpl(&v, &format!("{path}.publish.{k}"))?;
                    out.push((k, t));
                }
                out
            }
            Some(v) => self.assignments(v, &format!("{path}.publish"))?,
        };
        let names = self.do_list(m.get("do"), &format!("{path}.do"))?;
        Ok((Transition { when, publish, targets: Vec::new() }, names))
    }

    fn attune(&self, def: &Json) -> Result<Workflow, WorkflowError> {
        let Json::Object(root) = def else {
            return Err(invalid("", format!("a workflow must be a dict, not {}", type_of(def))));
        };
        // Parameter defaults: a flat map `name: {default: …}` or a JSON schema with
        // `properties`.
        let mut inputs = Vec::new();
        if let Some(Json::Object(params)) = root.get("parameters") {
            let props = match params.get("properties") {
                Some(Json::Object(p)) if params.get("type").and_then(Json::as_str) == Some("object") => p,
                _ => params,
            };
            for (name, p) in props {
                let default = match p.get("default") {
                    Some(d) => Some(self.tpl(d, &format!("parameters.{name}.default"))?),
                    None => None,
                };
                inputs.push((name.clone(), default));
            }
        }
        let vars = match root.get("vars") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Object(m)) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    out.push((k.clone(), self.tpl(v, &format!("vars.{k}"))?));
                }
                out
            }
            Some(v) => return Err(invalid("vars", format!("must be a dict, not {}", type_of(v)))),
        };
        let output = match root.get("output_map") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Object(m)) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    out.push((k.clone(), self.tpl(v, &format!("output_map.{k}"))?));
                }
                out
            }
            Some(v) => return Err(invalid("output_map", format!("must be a dict, not {}", type_of(v)))),
        };
        let Some(Json::Array(tasks)) = root.get("tasks") else {
            return Err(invalid("tasks", "is required and must be a list of tasks"));
        };
        let mut raw = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            raw.push(self.attune_task(i, t)?);
        }
        self.finish(raw, inputs, vars, output)
    }

    fn attune_task(&self, i: usize, t: &Json) -> Result<RawTask, WorkflowError> {
        let Json::Object(m) = t else {
            return Err(invalid(format!("tasks[{i}]"), format!("a task must be a dict, not {}", type_of(t))));
        };
        let Some(Json::String(name)) = m.get("name") else {
            return Err(invalid(format!("tasks[{i}].name"), "is required"));
        };
        let path = format!("tasks.{name}");
        self.check_name(name, &path)?;
        match m.get("type").and_then(Json::as_str) {
            None | Some("action") | Some("workflow") => {}
            Some(other) => {
                return Err(invalid(format!("{path}.type"), format!("task type \"{other}\" is not supported")));
            }
        }
        for k in ["when", "batch_size", "tasks", "decision"] {
            if m.get(k).is_some_and(|v| !v.is_null() && v != &Json::Array(Vec::new())) {
                return Err(invalid(format!("{path}.{k}"), "is not supported"));
            }
        }
        let action = match self.opt_str(m, "action", &path)? {
            Some(a) => Some(self.tpl(&Json::String(a.trim().to_string()), &format!("{path}.action"))?),
            None => None,
        };
        let input = match m.get("input") {
            None | Some(Json::Null) => Tpl::lit(Json::Object(Map::new())),
            Some(v @ Json::Object(_)) => self.tpl(v, &format!("{path}.input"))?,
            Some(v) => return Err(invalid(format!("{path}.input"), format!("must be a dict, not {}", type_of(v)))),
        };
        let join = match m.get("join") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) if s == "all" => Some(Join::All),
            Some(Json::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => {
                Some(Join::Count(n.as_u64().unwrap_or(1).min(MAX_TASKS as u64) as usize))
            }
            Some(v) => return Err(invalid(format!("{path}.join"), format!("must be a positive integer, not {v}"))),
        };
        let with = match m.get("with_items") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => {
                // Attune runs items one at a time unless told otherwise.
                let conc = m.get("concurrency").cloned().unwrap_or(Json::from(1));
                let w = self.items(s, Some(&conc), &format!("{path}.with_items"))?;
                if action.is_none() {
                    return Err(invalid(format!("{path}.action"), "is required for a with_items task"));
                }
                Some(w)
            }
            Some(v) => {
                return Err(invalid(format!("{path}.with_items"), format!("must be a string, not {}", type_of(v))));
            }
        };
        let retry = match m.get("retry") {
            None | Some(Json::Null) => None,
            Some(Json::Object(r)) => Some(self.retry(r, &format!("{path}.retry"))?),
            Some(v) => return Err(invalid(format!("{path}.retry"), format!("must be a dict, not {}", type_of(v)))),
        };
        let delay = self.count_or_expr(m.get("delay"), &format!("{path}.delay"))?;
        let timeout = match m.get("timeout") {
            None | Some(Json::Null) => None,
            Some(Json::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(v) => return Err(invalid(format!("{path}.timeout"), format!("must be a number of seconds, not {v}"))),
        };
        let mut next = Vec::new();
        let mut targets = Vec::new();
        match m.get("next") {
            Some(Json::Array(items)) if !items.is_empty() => {
                for (i, tr) in items.iter().enumerate() {
                    let p = format!("{path}.next[{i}]");
                    let Json::Object(tm) = tr else { return Err(invalid(p, "a transition must be a dict")) };
                    let when = match self.opt_str(tm, "when", &p)? {
                        Some(w) => Some(self.tpl(&Json::String(w.to_string()), &format!("{p}.when"))?),
                        None => None,
                    };
                    let publish = self.attune_publish(tm.get("publish"), &format!("{p}.publish"))?;
                    let names = self.do_list(tm.get("do"), &format!("{p}.do"))?;
                    next.push(Transition { when, publish, targets: Vec::new() });
                    targets.push((names, format!("{p}.do")));
                }
            }
            None | Some(Json::Null) | Some(Json::Array(_)) => {
                // Legacy flat fields, folded into `next` the way Attune does.
                let mut legacy: Vec<(Option<&str>, &str)> = Vec::new();
                for (field, when) in [
                    ("on_success", Some("{{ succeeded() }}")),
                    ("on_failure", Some("{{ failed() }}")),
                    ("on_complete", None),
                    ("on_timeout", Some("{{ timed_out() }}")),
                ] {
                    if let Some(t) = self.opt_str(m, field, &path)? {
                        legacy.push((when, t));
                        targets.push((vec![t.to_string()], format!("{path}.{field}")));
                    }
                }
                for (when, _) in &legacy {
                    let when = match when {
                        Some(w) => Some(self.tpl(&Json::String(w.to_string()), &path)?),
                        None => None,
                    };
                    next.push(Transition { when, publish: Vec::new(), targets: Vec::new() });
                }
                let publish = self.attune_publish(m.get("publish"), &format!("{path}.publish"))?;
                if !publish.is_empty() {
                    let ok = legacy.iter().position(|(w, _)| w.is_some_and(|w| w.contains("succeeded()")));
                    match ok {
                        Some(i) => next[i].publish = publish,
                        None if next.is_empty() => {
                            let when = self.tpl(&Json::String("{{ succeeded() }}".into()), &path)?;
                            next.push(Transition { when: Some(when), publish, targets: Vec::new() });
                            targets.push((Vec::new(), format!("{path}.publish")));
                        }
                        None => next[0].publish = publish,
                    }
                }
            }
            Some(v) => return Err(invalid(format!("{path}.next"), format!("must be a list, not {}", type_of(v)))),
        }
        let spec = TaskSpec { name: name.clone(), action, input, next, join, with, retry, delay, timeout };
        Ok(RawTask { spec, targets })
    }

    /// Attune publish: a list of `{name: value}` dicts or bare names (which publish the whole
    /// result).
    fn attune_publish(&self, v: Option<&Json>, path: &str) -> Result<Vec<(String, Tpl)>, WorkflowError> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
        let Json::Array(items) = v else { return Err(invalid(path, "must be a list")) };
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            match it {
                Json::String(name) => {
                    out.push((name.clone(), self.tpl(&Json::String("{{ result() }}".into()), path)?));
                }
                Json::Object(m) => {
                    for (k, val) in m {
                        out.push((k.clone(), self.tpl(val, &format!("{path}[{i}].{k}"))?));
                    }
                }
                other => {
                    return Err(invalid(
                        format!("{path}[{i}]"),
                        format!("must be a dict or a name, not {}", type_of(other)),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Resolves targets, checks the graph, collects unknown functions.
    fn finish(
        &self,
        raw: Vec<RawTask>,
        inputs: Vec<(String, Option<Tpl>)>,
        vars: Vec<(String, Tpl)>,
        output: Vec<(String, Tpl)>,
    ) -> Result<Workflow, WorkflowError> {
        if raw.is_empty() {
            return Err(invalid("tasks", "at least one task is required"));
        }
        if raw.len() > MAX_TASKS {
            return Err(invalid("tasks", format!("more than {MAX_TASKS} tasks")));
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, t) in raw.iter().enumerate() {
            if index.insert(t.spec.name.clone(), i).is_some() {
                return Err(invalid(format!("tasks.{}", t.spec.name), "task name used twice"));
            }
        }
        let mut tasks = Vec::with_capacity(raw.len());
        let mut inbound: Vec<Vec<usize>> = vec![Vec::new(); raw.len()];
        for (i, mut t) in raw.into_iter().enumerate() {
            for (ti, (names, path)) in t.targets.iter().enumerate() {
                let mut resolved = Vec::new();
                for n in names {
                    resolved.push(match n.as_str() {
                        "continue" => Target::Continue,
                        "fail" => Target::Fail,
                        "noop" => Target::Noop,
                        "retry" => Target::Retry,
                        _ => {
                            let Some(&j) = index.get(n) else {
                                return Err(invalid(path, format!("The task \"{n}\" is not defined.")));
                            };
                            if !inbound[j].contains(&i) {
                                inbound[j].push(i);
                            }
                            Target::Task(j)
                        }
                    });
                }
                if let Some(tr) = t.spec.next.get_mut(ti) {
                    tr.targets = resolved;
                }
            }
            tasks.push(t.spec);
        }
        let starts: Vec<usize> = (0..tasks.len()).filter(|&i| inbound[i].is_empty()).collect();
        if starts.is_empty() {
            return Err(invalid(
                "tasks",
                "Unable to identify any tasks to start the workflow. If the workflow has a loop, please add a task \
                 that serves as an entry point (or lead) into the loop.",
            ));
        }
        let mut funcs = Vec::new();
        let mut collect = |t: &Tpl| t.yaql_functions(&mut funcs);
        inputs.iter().filter_map(|(_, d)| d.as_ref()).for_each(&mut collect);
        vars.iter().for_each(|(_, t)| collect(t));
        output.iter().for_each(|(_, t)| collect(t));
        for t in &tasks {
            [&t.action, &t.delay].into_iter().flatten().for_each(&mut collect);
            collect(&t.input);
            if let Some(w) = &t.with {
                collect(&w.items);
                w.concurrency.iter().for_each(&mut collect);
            }
            if let Some(r) = &t.retry {
                [&r.when, &r.delay].into_iter().flatten().for_each(&mut collect);
                collect(&r.count);
            }
            for tr in &t.next {
                tr.when.iter().for_each(&mut collect);
                tr.publish.iter().for_each(|(_, p)| collect(p));
            }
        }
        let known: HashSet<&str> = BUILTINS
            .iter()
            .chain(WORKFLOW_FUNCTIONS.iter())
            .copied()
            .chain(super::jinja::FILTER_FUNCTIONS.iter().map(|(f, _)| *f))
            .collect();
        let mut unknown_functions: Vec<String> = funcs.into_iter().filter(|f| !known.contains(f.as_str())).collect();
        unknown_functions.sort();
        unknown_functions.dedup();
        Ok(Workflow { flavor: self.flavor, inputs, vars, tasks, output, starts, inbound, unknown_functions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn check(def: Json, expect: Expect) {
        let out = match Workflow::parse_orquesta(&def) {
            Ok(w) => format!("ok tasks={:?} starts={:?} unknown={:?}", w.task_names(), w.starts, w.unknown_functions()),
            Err(e) => format!("ERROR {e}"),
        };
        expect.assert_eq(&out);
    }

    fn wf(tasks: Json) -> Json {
        json!({"version": 1.0, "tasks": tasks})
    }

    #[test]
    fn parse_errors_name_the_field() {
        check(json!([]), expect!["ERROR : a workflow must be a dict, not list"]);
        check(json!({"tasks": {"a": {}}}), expect!["ERROR version: is required"]);
        check(json!({"version": 2, "tasks": {"a": {}}}), expect!["ERROR version: unsupported version 2 (only 1.0)"]);
        check(
            json!({"version": "1.0", "tasks": {"a": {}}, "bogus": 1}),
            expect!["ERROR bogus: unknown workflow attribute"],
        );
        check(json!({"version": 1.0}), expect!["ERROR tasks: is required and must be a dict of tasks"]);
        check(wf(json!({})), expect!["ERROR tasks: at least one task is required"]);
        check(
            wf(json!({"a": {"next": [{"do": "b"}]}})),
            expect![[r#"ERROR tasks.a.next[0].do: The task "b" is not defined."#]],
        );
        check(
            wf(json!({"a": {"next": [{"do": ["noop", "zz"]}]}})),
            expect![[r#"ERROR tasks.a.next[0].do: The task "zz" is not defined."#]],
        );
        check(
            wf(json!({"fail": {}})),
            expect![[r#"ERROR tasks.fail: The task name "fail" is reserved with special function."#]],
        );
        check(
            wf(json!({"retry": {}})),
            expect![[r#"ERROR tasks.retry: The task name "retry" is reserved with special function."#]],
        );
        check(wf(json!({"a-b": {}})), expect![[r#"ERROR tasks.a-b: task name "a-b" must be letters, digits and '_'"#]]);
        check(wf(json!({"a": {"acton": "x"}})), expect!["ERROR tasks.a.acton: unknown task attribute"]);
        check(
            wf(json!({"a": {"input": [{"cmd": "x"}]}})),
            expect!["ERROR tasks.a.input: must be a dict of parameters, not list"],
        );
        check(wf(json!({"a": {"action": 5}})), expect!["ERROR tasks.a.action: must be a string, not integer"]);
        check(
            wf(json!({"a": {"join": "some"}})),
            expect![[r#"ERROR tasks.a.join: must be "all" or a positive integer, not "some""#]],
        );
        check(
            wf(json!({"a": {"with": "<% [1] %>"}})),
            expect!["ERROR tasks.a.action: The action property is required for with items task."],
        );
        check(
            wf(json!({"a": {"action": "x", "with": "a b in <% [1] %>"}})),
            expect![[r#"ERROR tasks.a.with.items: bad item names in "a b in <% [1] %>""#]],
        );
        check(
            wf(json!({"a": {"action": "x", "with": "[1, 2]"}})),
            expect![[r#"ERROR tasks.a.with.items: "[1, 2]" must be an expression that yields a list"#]],
        );
        check(wf(json!({"a": {"retry": {"delay": 1}}})), expect!["ERROR tasks.a.retry.count: is required"]);
        check(wf(json!({"a": {"retry": {"count": 1000}}})), expect!["ERROR tasks.a.retry.count: must be at most 100"]);
        check(
            wf(json!({"a": {"delay": -1}})),
            expect!["ERROR tasks.a.delay: must be a non-negative integer or an expression, not -1"],
        );
        check(
            wf(json!({"a": {"next": [{"when": "<% <% succeeded() %>"}]}})),
            expect![
                "ERROR tasks.a.next[0].when: YAQL expression '<% <% succeeded() %>': Parse error: unexpected '<' at position 0"
            ],
        );
        check(
            wf(json!({"a": {"next": [{"publish": [{"x": "{{ 1 + }}"}]}]}})),
            expect![
                "ERROR tasks.a.next[0].publish[0].x: Jinja expression '{{ 1 + }}': syntax error: unexpected end of variable block (line 1)"
            ],
        );
        check(
            wf(json!({"a": {"next": [{"publish": "nothing here"}]}})),
            expect![[r#"ERROR tasks.a.next[0].publish: no "name=value" assignment in "nothing here""#]],
        );
        check(
            wf(json!({"a": {"next": [{"go": "b"}]}})),
            expect!["ERROR tasks.a.next[0].go: unknown transition attribute"],
        );
        check(
            json!({"version": 1.0, "vars": {"a": 1}, "tasks": {"a": {}}}),
            expect!["ERROR vars: must be a list of one-key dicts, not dict"],
        );
        check(
            json!({"version": 1.0, "vars": [{"a": 1, "b": 2}], "tasks": {"a": {}}}),
            expect!["ERROR vars[0]: must be a dict with exactly one key"],
        );
        check(
            json!({"version": 1.0, "input": ["a", "a"], "tasks": {"a": {}}}),
            expect![[r#"ERROR input[1]: input "a" is declared twice"#]],
        );
        check(
            wf(json!({"a": {"next": [{"do": "b"}]}, "b": {"next": [{"do": "a"}]}})),
            expect![
                "ERROR tasks: Unable to identify any tasks to start the workflow. If the workflow has a loop, please add a task that serves as an entry point (or lead) into the loop."
            ],
        );
    }

    #[test]
    fn task_count_limit() {
        let mut tasks = Map::new();
        for i in 0..=MAX_TASKS {
            tasks.insert(format!("t{i}"), json!({}));
        }
        check(wf(Json::Object(tasks.clone())), expect!["ERROR tasks: more than 1000 tasks"]);
        tasks.remove("t0");
        assert!(Workflow::parse_orquesta(&wf(Json::Object(tasks))).is_ok());
    }

    #[test]
    fn parses_shapes() {
        check(
            wf(
                json!({"a": {"action": "core.echo message=<% str(random(1, 2)) %>", "next": [{"do": "b, c"}]}, "b": {}, "c": {"join": "all"}}),
            ),
            expect![[r#"ok tasks=["a", "b", "c"] starts=[0] unknown=["random"]"#]],
        );
        let w = Workflow::parse_orquesta(&wf(json!({
            "t": {"action": "core.local cmd=\"rm -rf <% ctx().file %>\" timeout=60 flag=True list=[1, 2]"},
            "u": {"with": {"items": "h, c in <% zip(ctx(a), ctx(b)) %>", "concurrency": 2}, "action": "x"},
        })))
        .unwrap();
        assert_eq!(w.tasks[1].with.as_ref().map(|w| w.keys.clone()), Some(vec!["h".to_string(), "c".to_string()]));
        let Tpl::Map(entries) = &w.tasks[0].input else { panic!("{:?}", w.tasks[0].input) };
        assert_eq!(entries.len(), 4);
    }

    #[test]
    fn inline_params() {
        let show = |s: &str| serde_json::to_string(&parse_inline_params(s)).unwrap();
        expect![[r#"[["message","<% ctx().name %>"]]"#]].assert_eq(&show("core.echo message=<% ctx().name %>"));
        expect![[r#"[["cmd","<% ctx(cmd) %>"],["timeout","<% ctx(timeout) %>"]]"#]]
            .assert_eq(&show("core.local cmd=<% ctx(cmd) %> timeout=<% ctx(timeout) %>"));
        expect![[r#"[["message","<% item() %>, resistance is futile!"]]"#]]
            .assert_eq(&show(r#"core.echo message="<% item() %>, resistance is futile!""#));
        expect![[r#"[["a",1],["b",-2.5],["c",true],["d",null],["e","x y"],["f",[1,2]]]"#]]
            .assert_eq(&show(r#"a=1 b=-2.5 c=TRUE d=null e='x y' f=[1, 2]"#));
        expect![[r#"[["msg","task2 done"],["cd","<% result() %>"]]"#]]
            .assert_eq(&show(r#"msg="task2 done", cd=<% result() %>"#));
        expect![[r#"[["x","{{ ctx().a }}"]]"#]].assert_eq(&show("x={{ ctx().a }} bare=word"));
        expect!["[]"].assert_eq(&show("core.local cmd=hostname"));
    }

    #[test]
    fn attune_parse() {
        let def = json!({
            "ref": "p.wf", "version": "1.0.0",
            "parameters": {"hosts": {"type": "array", "default": ["a"]}},
            "vars": {"count": 0},
            "tasks": [
                {"name": "one", "action": "core.echo", "on_success": "two", "on_failure": "three", "publish": ["out"]},
                {"name": "two", "action": "core.echo", "with_items": "{{ parameters.hosts }}", "timeout": 5},
                {"name": "three", "action": "core.noop", "next": [{"when": "{{ succeeded() }}", "publish": [{"x": 1}], "do": ["two"], "__chart_meta__": {}}]},
            ],
            "output_map": {"n": "{{ workflow.count }}"},
        });
        let w = Workflow::parse_attune(&def).unwrap();
        assert_eq!(w.task_names(), vec!["one", "two", "three"]);
        assert_eq!(w.starts, vec![0]);
        assert_eq!(w.tasks[0].next.len(), 2);
        assert_eq!(w.tasks[0].next[0].publish.len(), 1);
        assert_eq!(w.tasks[1].timeout, Some(5));
        assert_eq!(w.inbound[1], vec![0, 2]);
        let bad = |d: Json| Workflow::parse_attune(&d).unwrap_err().to_string();
        expect!["tasks[0].name: is required"].assert_eq(&bad(json!({"tasks": [{}]})));
        expect![[r#"tasks.a.next[0].do: The task "zz" is not defined."#]]
            .assert_eq(&bad(json!({"tasks": [{"name": "a", "next": [{"do": ["zz"]}]}]})));
        expect![[r#"tasks.a.on_success: The task "zz" is not defined."#]]
            .assert_eq(&bad(json!({"tasks": [{"name": "a", "on_success": "zz"}]})));
        expect![[r#"tasks.a.type: task type "parallel" is not supported"#]]
            .assert_eq(&bad(json!({"tasks": [{"name": "a", "type": "parallel"}]})));
        expect!["tasks.a.batch_size: is not supported"]
            .assert_eq(&bad(json!({"tasks": [{"name": "a", "batch_size": 2}]})));
        expect!["tasks: is required and must be a list of tasks"].assert_eq(&bad(json!({"tasks": {}})));
        expect![[r#"tasks.noop: The task name "noop" is reserved with special function."#]]
            .assert_eq(&bad(json!({"tasks": [{"name": "noop"}]})));
    }

    /// Every Orquesta workflow in the StackStorm corpus parses, except the one written to fail
    /// inspection. Skipped when the corpus is not on this machine.
    #[test]
    fn corpus_workflows_parse() {
        let root = std::path::Path::new("/work/shared/corpus/st2");
        if !root.is_dir() {
            eprintln!("corpus not present, skipping");
            return;
        }
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml")
                    && p.components().any(|c| c.as_os_str() == "workflows")
                {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut parsed = 0;
        let mut failures = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let def: Json = match serde_saphyr::from_str(&text) {
                Ok(d) => d,
                Err(e) => panic!("{}: {e}", f.display()),
            };
            if def.get("version").is_none() {
                continue; // ActionChain
            }
            match Workflow::parse_orquesta(&def) {
                Ok(w) => {
                    parsed += 1;
                    unknown.extend(w.unknown_functions().iter().cloned());
                }
                Err(e) => failures.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy())),
            }
        }
        unknown.sort();
        unknown.dedup();
        assert_eq!(parsed + failures.len(), 72, "{files:?}");
        expect![[r#"
            [
                "orquesta-fail-inspection.yaml: tasks.task2.input: must be a dict of parameters, not list",
            ]
        "#]]
        .assert_debug_eq(&failures);
        expect![[r#"
            [
                "random",
            ]
        "#]]
        .assert_debug_eq(&unknown);
    }
}
