//! Parameter resolution, as StackStorm does it before an execution exists: supplied values,
//! defaults, Jinja templates that reference other parameters (`cmd: echo "{{message}}"`),
//! `config_context`, `action_context`, `st2kv`, and for rule-triggered runs `trigger`; then
//! casting and validation against the action's schema.
//!
//! Every failure names the parameter, and happens before any process starts. This module is
//! synchronous and may read the datastore through `KvSource`, so callers run it off the
//! executor thread.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::expr::{KvSource, TemplateEnv, cast_param};
use crate::pack::Action;

/// What secret values look like wherever parameters are stored or shown.
pub const MASK: &str = "********";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("parameter {0:?} is not declared by action {1}")]
    Unknown(String, String),
    #[error("override of immutable parameter(s) {0:?} is unsupported")]
    Immutable(Vec<String>),
    #[error("cyclic dependency found in the following variables: {0:?}")]
    Cycle(Vec<String>),
    #[error("parameter {name:?}: {message}")]
    Render { name: String, message: String },
    #[error("parameter {name:?}: {message}")]
    Cast { name: String, message: String },
    #[error("invalid parameters: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// What templates may see besides the other parameters.
#[derive(Default)]
pub struct Context {
    /// The trigger payload, for rule-triggered executions.
    pub trigger: Option<Value>,
    /// `action_context`: user, rule, trigger instance…
    pub action_context: Value,
    /// The pack config of the action's pack (`config_context`).
    pub config: Value,
    /// Further roots (Attune's `event`, `pack`).
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Every declared parameter; unset ones are `null`.
    pub values: Map<String, Value>,
    /// The same with secret values replaced by [`MASK`], for storage and display.
    pub masked: Map<String, Value>,
}

/// Roots a parameter template may use that are not parameters.
const CONTEXT_ROOTS: &[&str] = &["trigger", "action_context", "config_context", "st2kv", "event", "pack", "system"];

pub fn resolve(
    action: &Action,
    supplied: Map<String, Value>,
    cx: &Context,
    env: &TemplateEnv,
    kv: Option<&dyn KvSource>,
) -> Result<Resolved, ParamError> {
    let schema = &action.parameters;
    for name in supplied.keys() {
        if schema.get(name).is_none() {
            return Err(ParamError::Unknown(name.clone(), action.ref_.clone()));
        }
    }
    let immutable: Vec<String> =
        supplied.keys().filter(|n| schema.get(n).is_some_and(|p| p.immutable)).cloned().collect();
    if !immutable.is_empty() {
        return Err(ParamError::Immutable(immutable));
    }

    // Raw values: supplied, else default.
    let mut raw: Vec<(String, Option<Value>, bool)> = Vec::new(); // (name, value, explicitly supplied)
    for p in &schema.params {
        match supplied.get(&p.name) {
            Some(v) => raw.push((p.name.clone(), Some(v.clone()), true)),
            None => raw.push((p.name.clone(), p.default.clone(), false)),
        }
    }
    let names: BTreeSet<&str> = schema.params.iter().map(|p| p.name.as_str()).collect();
    let mut deps: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, v, _) in &raw {
        let mut d = Vec::new();
        if let Some(v) = v {
            for_each_template(v, &mut |t| {
                for r in crate::expr::template::referenced_names(t) {
                    if let Some(n) = names.get(r.as_str())
                        && !d.contains(n)
                    {
                        d.push(*n);
                    }
                }
            });
        }
        deps.insert(name.as_str(), d);
    }
    let order = topo_order(&schema.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), &deps)?;

    let mut ctx = Map::new();
    if let Some(t) = &cx.trigger {
        ctx.insert("trigger".into(), t.clone());
    }
    ctx.insert("action_context".into(), cx.action_context.clone());
    ctx.insert("config_context".into(), cx.config.clone());
    for (k, v) in &cx.extra {
        ctx.insert(k.clone(), v.clone());
    }
    let by_name: HashMap<&str, &(String, Option<Value>, bool)> = raw.iter().map(|r| (r.0.as_str(), r)).collect();
    let mut values = Map::new();
    for name in order {
        let Some((_, v, explicit)) = by_name.get(name).copied() else {
            continue;
        };
        let Some(p) = schema.get(name) else { continue };
        let value = match v {
            None => Value::Null,
            Some(v) if has_template(v) => {
                let ctx_now = Value::Object(ctx.clone());
                let rendered = env
                    .render_value(v, &ctx_now, kv)
                    .map_err(|e| ParamError::Render { name: name.to_string(), message: e.to_string() })?;
                cast(p.ty.map(|t| t.as_str()), rendered, name)?
            }
            Some(v) if *explicit => cast(p.ty.map(|t| t.as_str()), v.clone(), name)?,
            Some(v) => v.clone(),
        };
        // Later templates see this parameter by name (unless it shadows a context root).
        if !CONTEXT_ROOTS.contains(&name) {
            ctx.insert(name.to_string(), value.clone());
        }
        values.insert(name.to_string(), value);
    }
    // Keep declaration order in the result.
    let mut ordered = Map::new();
    for p in &schema.params {
        ordered.insert(p.name.clone(), values.remove(&p.name).unwrap_or(Value::Null));
    }
    let errors = schema.validate(&ordered);
    if !errors.is_empty() {
        return Err(ParamError::Invalid(errors));
    }
    let masked = mask(action, &ordered);
    Ok(Resolved { values: ordered, masked })
}

fn cast(ty: Option<&str>, v: Value, name: &str) -> Result<Value, ParamError> {
    match ty {
        Some(t) => cast_param(t, v).map_err(|e| ParamError::Cast { name: name.to_string(), message: e.to_string() }),
        None => Ok(v),
    }
}

/// Secret parameters replaced by [`MASK`] (nulls stay null: nothing to hide).
pub fn mask(action: &Action, values: &Map<String, Value>) -> Map<String, Value> {
    let mut out = values.clone();
    for p in action.parameters.params.iter().filter(|p| p.secret) {
        if let Some(v) = out.get_mut(&p.name)
            && !v.is_null()
        {
            *v = Value::String(MASK.into());
        }
    }
    out
}

fn has_template(v: &Value) -> bool {
    let mut found = false;
    for_each_template(v, &mut |_| found = true);
    found
}

fn for_each_template<'a>(v: &'a Value, f: &mut dyn FnMut(&'a str)) {
    match v {
        Value::String(s) if crate::expr::template::is_template(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| for_each_template(x, f)),
        Value::Object(o) => o.values().for_each(|x| for_each_template(x, f)),
        _ => {}
    }
}

/// Depth-first topological order; a cycle names every parameter on it.
fn topo_order<'a>(names: &[&'a str], deps: &HashMap<&'a str, Vec<&'a str>>) -> Result<Vec<&'a str>, ParamError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: HashMap<&str, Mark> = names.iter().map(|n| (*n, Mark::New)).collect();
    let mut order = Vec::new();
    // Iterative DFS: parameter graphs are small, but a pack must not be able to overflow the
    // stack with a long chain.
    for &start in names {
        if mark[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::Active);
        while let Some((node, i)) = stack.pop() {
            let children = deps.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(&child) = children.get(i) {
                stack.push((node, i + 1));
                match mark.get(child).copied().unwrap_or(Mark::Done) {
                    Mark::New => {
                        mark.insert(child, Mark::Active);
                        stack.push((child, 0));
                    }
                    Mark::Active => {
                        let mut cycle: Vec<String> = stack.iter().map(|(n, _)| n.to_string()).collect();
                        if let Some(pos) = cycle.iter().position(|n| n == child) {
                            cycle.drain(..pos);
                        }
                        cycle.sort();
                        cycle.dedup();
                        return Err(ParamError::Cycle(cycle));
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
                order.push(node);
            }
        }
    }
    Ok(order)
}

/// StackStorm's dynamic pack config values: every string leaf containing `{{` or `{%` is
/// rendered with `st2kv` at use time (so a rotated key is picked up without a reload), and a
/// top-level item marked `secret: true` in the schema is then decrypted. Runs where templates
/// may read the datastore: off the executor thread.
pub fn dynamic_config(
    config: &Value,
    schema: &crate::pack::schema::ParamSchema,
    env: &TemplateEnv,
    kv: Option<&dyn KvSource>,
) -> Result<Value, String> {
    let Some(obj) = config.as_object() else { return Ok(config.clone()) };
    if !has_template(config) {
        return Ok(config.clone());
    }
    let ctx = serde_json::json!({});
    let mut out = Map::new();
    for (k, v) in obj {
        if !has_template(v) {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let rendered = env
            .render_value(v, &ctx, kv)
            .map_err(|e| format!("Failed to render dynamic configuration value for key \"{k}\": {e}"))?;
        let secret = schema.get(k).is_some_and(|p| p.secret);
        let value = match (&rendered, secret, kv) {
            (Value::String(s), true, Some(kv)) if !s.is_empty() => kv
                .decrypt(crate::expr::KvScope::System, s)
                .map(Value::String)
                .map_err(|e| format!("Failed to decrypt dynamic configuration value for key \"{k}\": {e}"))?,
            (Value::String(s), _, _) if s.is_empty() => Value::Null,
            _ => rendered,
        };
        out.insert(k.clone(), value);
    }
    Ok(Value::Object(out))
}
