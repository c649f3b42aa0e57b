//! Moving values between `serde_json::Value` (what packd stores and passes around) and
//! `minijinja::Value` (what templates compute with), and Python's `str()` of a template value.
//!
//! JSON goes into templates through `JsonRef`, a zero-copy view that keeps dict key order (the
//! minijinja build here has no `preserve_order`, so its own maps would sort keys, and StackStorm
//! prints dicts in insertion order). Values come back out through `to_json`, which follows
//! `json.dumps` conventions for keys and refuses what JSON cannot hold. No rendering here.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value, ValueKind};
use serde_json::{Map, Number, Value as Json};

use super::cast::{python_float_repr, python_str_repr};
use super::kv::{KvNode, KvRoot};

/// Deepest value nesting converted or printed. Both directions recurse once per level; the cap
/// keeps a hostile payload (or a template building nested lists) from overflowing the stack.
pub const MAX_VALUE_DEPTH: usize = 128;

/// One step from a `JsonRef` root to the node it stands for.
#[derive(Debug, Clone)]
enum Seg {
    Key(Arc<str>),
    Index(usize),
}

/// A dict or list inside a shared JSON document, addressed by its path from the root. Scalars
/// are converted on access; containers stay views, so a template touching one field of a large
/// payload copies nothing else.
#[derive(Debug)]
pub(super) struct JsonRef {
    root: Arc<Json>,
    path: Vec<Seg>,
}

impl JsonRef {
    fn node(&self) -> &Json {
        let mut cur = &*self.root;
        for seg in &self.path {
            let next = match (seg, cur) {
                (Seg::Key(k), Json::Object(m)) => m.get(&**k),
                (Seg::Index(i), Json::Array(a)) => a.get(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                // Paths are only built from nodes that exist, so this does not happen; null is
                // a harmless answer if it ever did.
                None => return &Json::Null,
            }
        }
        cur
    }

    fn child(&self, seg: Seg, node: &Json) -> Value {
        match node {
            Json::Object(_) | Json::Array(_) => {
                let mut path = self.path.clone();
                path.push(seg);
                Value::from_object(JsonRef { root: self.root.clone(), path })
            }
            scalar => scalar_to_value(scalar),
        }
    }
}

impl Object for JsonRef {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            Json::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.node() {
            Json::Object(map) => {
                let k = key.as_str()?;
                let (k, v) = map.get_key_value(k)?;
                Some(self.child(Seg::Key(Arc::from(k.as_str())), v))
            }
            Json::Array(items) => {
                let i = key.as_i64()?;
                let i = if i < 0 {
                    items.len().checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                } else {
                    usize::try_from(i).ok()?
                };
                let v = items.get(i)?;
                Some(self.child(Seg::Index(i), v))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            Json::Object(map) => Enumerator::Values(map.keys().map(|k| Value::from(k.as_str())).collect()),
            Json::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.node() {
            Json::Object(map) => Some(map.len()),
            Json::Array(items) => Some(items.len()),
            _ => Some(0),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::cast::python_repr(self.node()))
    }
}

fn scalar_to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => number_to_value(n),
        Json::String(s) => Value::from(s.as_str()),
        // Containers are handled by the callers; a full conversion is the safe fallback.
        other => from_json(other),
    }
}

fn number_to_value(n: &Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::from(i)
    } else if let Some(u) = n.as_u64() {
        Value::from(u)
    } else {
        Value::from(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Wraps a JSON document for template use (no copy beyond the `Arc`).
pub(super) fn json_view(root: Arc<Json>) -> Value {
    match &*root {
        Json::Object(_) | Json::Array(_) => Value::from_object(JsonRef { root, path: vec![] }),
        scalar => scalar_to_value(scalar),
    }
}

/// Wraps an owned JSON value for template use.
pub(super) fn from_json(v: &Json) -> Value {
    json_view(Arc::new(v.clone()))
}

/// The root context of a render: the caller's JSON context (a dict) plus extra named roots
/// (`st2kv`, `system`) that win over same-named context keys.
#[derive(Debug)]
pub(super) struct RootCtx {
    pub(super) json: Arc<Json>,
    pub(super) extra: Vec<(&'static str, Value)>,
}

impl Object for RootCtx {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        if let Some((_, v)) = self.extra.iter().find(|(name, _)| *name == k) {
            return Some(v.clone());
        }
        let Json::Object(map) = &*self.json else {
            return None;
        };
        let (k, v) = map.get_key_value(k)?;
        Some(match v {
            Json::Object(_) | Json::Array(_) => {
                Value::from_object(JsonRef { root: self.json.clone(), path: vec![Seg::Key(Arc::from(k.as_str()))] })
            }
            scalar => scalar_to_value(scalar),
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = match &*self.json {
            Json::Object(map) => map
                .keys()
                .filter(|k| !self.extra.iter().any(|(n, _)| n == k))
                .map(|k| Value::from(k.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        keys.extend(self.extra.iter().map(|(n, _)| Value::from(*n)));
        Enumerator::Values(keys)
    }
}

/// Why a template value cannot become JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ToJsonError {
    Undefined,
    NotSerializable(String),
    TooDeep,
    TooLarge,
}

impl fmt::Display for ToJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToJsonError::Undefined => f.write_str("undefined value"),
            ToJsonError::NotSerializable(what) => write!(f, "{what} is not JSON serializable"),
            ToJsonError::TooDeep => write!(f, "value nested deeper than {MAX_VALUE_DEPTH}"),
            ToJsonError::TooLarge => f.write_str("value larger than the render size limit"),
        }
    }
}

/// Converts a template value to JSON as `json.loads(json.dumps(v))` would: dict keys that are
/// numbers/bools/None become their JSON text, tuples become lists, datastore lookups their
/// stored text. `budget` is an approximate byte allowance shared by the whole value.
pub(super) fn to_json(v: &Value, budget: &mut usize) -> Result<Json, ToJsonError> {
    to_json_at(v, budget, 0)
}

fn charge(budget: &mut usize, n: usize) -> Result<(), ToJsonError> {
    *budget = budget.checked_sub(n).ok_or(ToJsonError::TooLarge)?;
    Ok(())
}

fn to_json_at(v: &Value, budget: &mut usize, depth: usize) -> Result<Json, ToJsonError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(ToJsonError::TooDeep);
    }
    charge(budget, 4)?;
    if let Some(node) = v.downcast_object_ref::<KvNode>() {
        let s = node.text();
        charge(budget, s.len())?;
        return Ok(Json::String(s));
    }
    if let Some(r) = v.downcast_object_ref::<JsonRef>() {
        let node = r.node();
        // A view of stored JSON converts by cloning; the budget still applies to its size.
        charge(budget, approx_json_size(node, *budget))?;
        return Ok(node.clone());
    }
    match v.kind() {
        ValueKind::Undefined => Err(ToJsonError::Undefined),
        ValueKind::None => Ok(Json::Null),
        ValueKind::Bool => Ok(Json::Bool(v.is_true())),
        ValueKind::Number => number_to_json(v),
        ValueKind::String | ValueKind::Bytes => {
            let s = match v.as_str() {
                Some(s) => s.to_string(),
                None => String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned(),
            };
            charge(budget, s.len())?;
            Ok(Json::String(s))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let iter = v.try_iter().map_err(|_| ToJsonError::NotSerializable(v.kind().to_string()))?;
            let mut out = Vec::new();
            for item in iter {
                out.push(to_json_at(&item, budget, depth + 1)?);
            }
            Ok(Json::Array(out))
        }
        ValueKind::Map => {
            let iter = v.try_iter().map_err(|_| ToJsonError::NotSerializable("map".into()))?;
            let mut out = Map::new();
            for key in iter {
                let item = v.get_item(&key).unwrap_or(Value::UNDEFINED);
                let k = json_key(&key)?;
                charge(budget, k.len())?;
                out.insert(k, to_json_at(&item, budget, depth + 1)?);
            }
            Ok(Json::Object(out))
        }
        ValueKind::Plain => {
            if v.downcast_object_ref::<KvRoot>().is_some() {
                return Ok(Json::String(String::new()));
            }
            Err(ToJsonError::NotSerializable(format!("object {v}")))
        }
        other => Err(ToJsonError::NotSerializable(other.to_string())),
    }
}

/// A lower bound of a JSON node's serialized size, stopping once `cap` is exceeded.
fn approx_json_size(v: &Json, cap: usize) -> usize {
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Json::String(s) => s.len() + 2,
            Json::Object(m) => {
                stack.extend(m.values());
                m.keys().map(|k| k.len() + 4).sum::<usize>() + 2
            }
            Json::Array(a) => {
                stack.extend(a.iter());
                a.len() + 2
            }
            _ => 4,
        });
        if total > cap {
            break;
        }
    }
    total
}

fn number_to_json(v: &Value) -> Result<Json, ToJsonError> {
    if v.is_integer() {
        if let Ok(i) = i64::try_from(v.clone()) {
            return Ok(Json::from(i));
        }
        if let Ok(u) = u64::try_from(v.clone()) {
            return Ok(Json::from(u));
        }
    }
    let f = f64::try_from(v.clone()).map_err(|_| ToJsonError::NotSerializable("number".into()))?;
    Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| ToJsonError::NotSerializable(format!("float {}", python_float_repr(f))))
}

/// The JSON key `json.dumps` writes for a dict key.
fn json_key(k: &Value) -> Result<String, ToJsonError> {
    if let Some(s) = k.as_str() {
        return Ok(s.to_string());
    }
    match k.kind() {
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if k.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number => Ok(match number_to_json(k)? {
            Json::Number(n) if n.is_f64() => python_float_repr(n.as_f64().unwrap_or(0.0)),
            other => other.to_string(),
        }),
        _ => Err(ToJsonError::NotSerializable(format!("dict key of type {}", k.kind()))),
    }
}

/// Python `str()` of a template value: strings as they are, `None`/`True`/`False`, Python float
/// text, and `repr()` for the elements of lists and dicts.
pub(super) fn py_str(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    let mut out = String::new();
    write_py(&mut out, v, 0, false);
    out
}

fn write_py(out: &mut String, v: &Value, depth: usize, repr: bool) {
    if depth > MAX_VALUE_DEPTH {
        out.push_str("...");
        return;
    }
    if let Some(node) = v.downcast_object_ref::<KvNode>() {
        let text = node.text();
        if repr {
            out.push_str(&python_str_repr(&text));
        } else {
            out.push_str(&text);
        }
        return;
    }
    if let Some(r) = v.downcast_object_ref::<JsonRef>() {
        out.push_str(&super::cast::python_repr(r.node()));
        return;
    }
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => match number_to_json(v) {
            Ok(Json::Number(n)) if n.is_f64() => out.push_str(&python_float_repr(n.as_f64().unwrap_or(0.0))),
            Ok(other) => out.push_str(&other.to_string()),
            Err(_) => match f64::try_from(v.clone()) {
                Ok(f) if !v.is_integer() => out.push_str(&python_float_repr(f)),
                _ => out.push_str(&v.to_string()),
            },
        },
        ValueKind::String | ValueKind::Bytes => {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned());
            if repr {
                out.push_str(&python_str_repr(&s));
            } else {
                out.push_str(&s);
            }
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let tuple = v.is_tuple();
            out.push(if tuple { '(' } else { '[' });
            let mut n = 0;
            if let Ok(iter) = v.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_py(out, &item, depth + 1, true);
                    n += 1;
                }
            }
            if tuple && n == 1 {
                out.push(',');
            }
            out.push(if tuple { ')' } else { ']' });
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = v.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_py(out, &key, depth + 1, true);
                    out.push_str(": ");
                    let item = v.get_item(&key).unwrap_or(Value::UNDEFINED);
                    write_py(out, &item, depth + 1, true);
                }
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}
