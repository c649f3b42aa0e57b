//! Parameter schemas: StackStorm's flat `name → {type, required, secret, immutable, position,
//! default, …}` maps (also Attune's current format, and pack config schemas), Attune's older
//! JSON-Schema objects, their conversion to a draft-4 JSON Schema, and a validator for the
//! draft-4 subset packs use.
//!
//! Why a hand-written validator and not the `jsonschema` crate: parameter schemas use a small
//! subset (type, enum, required, properties, items, bounds, pattern, additionalProperties), and
//! the crate costs 4 MB of binary and nine minutes of build on this class of machine. `$ref` is
//! deliberately not followed: a pack schema can never make packd read a file or the network.
//! This module is pure: no I/O, no templates (defaults that are Jinja are kept as strings and
//! rendered at execution time).

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::diag::{FileDiags, join};

/// Keys a StackStorm parameter definition may carry at the top level
/// (st2 `action_params.json`: draft-04 minus `format`, plus st2's own).
const PARAM_KEYS: &[&str] = &[
    "id",
    "$schema",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "additionalItems",
    "items",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "secret",
    "additionalProperties",
    "definitions",
    "properties",
    "patternProperties",
    "dependencies",
    "enum",
    "type",
    "position",
    "immutable",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
];

/// Nested definitions (inside `properties`, `items`, …) also allow `format` (st2 `custom.json`).
const NESTED_EXTRA_KEYS: &[&str] = &["format"];

const TYPES: &[&str] = &["array", "boolean", "integer", "null", "number", "object", "string"];

/// Deepest nesting of schema definitions walked. Real schemas nest 4 levels; the YAML depth cap
/// already bounds this, the constant keeps the walk's recursion explicit.
pub const MAX_SCHEMA_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Null,
}

impl ParamType {
    pub fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" => ParamType::String,
            "integer" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "array" => ParamType::Array,
            "object" => ParamType::Object,
            "null" => ParamType::Null,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
            ParamType::Null => "null",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    /// `None` = any type (an empty definition, as st2 normalises it).
    #[serde(rename = "type")]
    pub ty: Option<ParamType>,
    pub description: String,
    pub required: bool,
    pub secret: bool,
    pub immutable: bool,
    pub position: Option<u32>,
    pub default: Option<Value>,
    /// The definition as written (minus nothing), for nested validation.
    #[serde(skip)]
    pub def: Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ParamSchema {
    pub params: Vec<Param>,
}

impl ParamSchema {
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().filter(|p| p.secret).map(|p| p.name.as_str())
    }

    /// Read a flat map (`name: {type: …}`), reporting unknown keywords as warnings (StackStorm
    /// would refuse them; packd's aim is to run unmodified packs, so it loads and says so) and
    /// malformed definitions as errors (the parameter is then skipped).
    pub fn from_flat(map: &Value, field: &str, d: &mut FileDiags) -> ParamSchema {
        let mut params = Vec::new();
        let Some(obj) = map.as_object() else {
            if !map.is_null() {
                d.error(field, format!("must be a mapping of parameter names to definitions, found {}", kind(map)));
            }
            return ParamSchema::default();
        };
        for (name, def) in obj {
            let f = join(field, name);
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                d.error(&f, format!("parameter name {name:?} is invalid: only letters, digits and _ are allowed"));
                continue;
            }
            match param_from_def(name, def, &f, d) {
                Some(p) => params.push(p),
                None => continue,
            }
        }
        ParamSchema { params }
    }

    /// Read a JSON-Schema object (`{type: object, properties: {…}, required: [...]}`), the
    /// format of Attune's seed documents.
    pub fn from_json_schema(schema: &Value, field: &str, d: &mut FileDiags) -> ParamSchema {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let props = schema.get("properties").cloned().unwrap_or(Value::Object(Map::new()));
        let mut out = ParamSchema::from_flat(&props, &join(field, "properties"), d);
        for p in &mut out.params {
            if required.contains(&p.name.as_str()) {
                p.required = true;
            }
        }
        out
    }

    /// Either shape: a JSON-Schema object is recognised by `type: object` with `properties`.
    pub fn from_any(v: &Value, field: &str, d: &mut FileDiags) -> ParamSchema {
        if is_json_schema_object(v) {
            ParamSchema::from_json_schema(v, field, d)
        } else {
            ParamSchema::from_flat(v, field, d)
        }
    }

    /// Runner parameters overlaid by the action's own, as st2 merges them. Only `default`,
    /// `description`, `enum`, `immutable` and `required` may be overridden; a different `type`
    /// is reported (st2 refuses it) and the runner's type kept.
    pub fn overlay(runner: ParamSchema, action: ParamSchema, field: &str, d: &mut FileDiags) -> ParamSchema {
        let mut params = runner.params;
        for a in action.params {
            match params.iter_mut().find(|p| p.name == a.name) {
                Some(r) => {
                    let explicit = a.def.as_object().cloned().unwrap_or_default();
                    if let (Some(Some(at)), Some(rt)) = (explicit.get("type").map(|t| t.as_str()), r.ty)
                        && ParamType::parse(at) != Some(rt)
                    {
                        d.warn(
                            &join(&join(field, &a.name), "type"),
                            format!("overrides runner parameter type {} with {at}; only default, description, enum, immutable and required may be overridden", rt.as_str()),
                        );
                    }
                    if explicit.contains_key("default") {
                        r.default = a.default.clone();
                    }
                    if explicit.contains_key("description") {
                        r.description = a.description.clone();
                    }
                    if explicit.contains_key("immutable") {
                        r.immutable = a.immutable;
                    }
                    if explicit.contains_key("required") {
                        r.required = a.required;
                    }
                    if explicit.contains_key("secret") {
                        r.secret = a.secret;
                    }
                    if explicit.contains_key("position") {
                        r.position = a.position;
                    }
                    let mut def = r.def.as_object().cloned().unwrap_or_default();
                    for (k, v) in explicit {
                        if k != "type" || !def.contains_key("type") {
                            def.insert(k, v);
                        }
                    }
                    r.def = Value::Object(def);
                }
                None => params.push(a),
            }
        }
        ParamSchema { params }
    }

    /// st2: positions must be unique and contiguous.
    pub fn check_positions(&self, field: &str, d: &mut FileDiags) -> bool {
        let mut pos: Vec<(u32, &str)> =
            self.params.iter().filter_map(|p| p.position.map(|x| (x, p.name.as_str()))).collect();
        pos.sort();
        for w in pos.windows(2) {
            if w[0].0 == w[1].0 {
                d.error(
                    &join(&join(field, w[1].1), "position"),
                    format!("position {} is used by both {:?} and {:?}", w[0].0, w[0].1, w[1].1),
                );
                return false;
            }
            if w[1].0 != w[0].0 + 1 {
                d.error(
                    &join(&join(field, w[1].1), "position"),
                    format!("positions are not contiguous: {} follows {}", w[1].0, w[0].0),
                );
                return false;
            }
        }
        true
    }

    /// The draft-4 JSON Schema of the whole parameter object. `position`, `secret` and
    /// `immutable` stay on each property as extension keywords; `required` becomes the draft-4
    /// array.
    pub fn to_json_schema(&self) -> Value {
        let mut props = Map::new();
        let mut required = Vec::new();
        for p in &self.params {
            let mut def = p.def.as_object().cloned().unwrap_or_default();
            def.remove("required");
            if p.ty.is_none() && !def.contains_key("anyOf") {
                def.insert("anyOf".into(), Value::Array(TYPES.iter().map(|t| json!({ "type": t })).collect()));
            }
            if p.required {
                required.push(Value::String(p.name.clone()));
            }
            props.insert(p.name.clone(), Value::Object(def));
        }
        let mut schema = Map::new();
        schema.insert("$schema".into(), json!("http://json-schema.org/draft-04/schema#"));
        schema.insert("type".into(), json!("object"));
        schema.insert("properties".into(), Value::Object(props));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        schema.insert("additionalProperties".into(), json!(false));
        Value::Object(schema)
    }

    /// Validate a complete parameter object: every value against its definition, required
    /// parameters present, no unknown names. Optional parameters and those with a null default
    /// accept `null` (st2 `allow_default_none`). Errors name the parameter.
    pub fn validate(&self, values: &Map<String, Value>) -> Vec<String> {
        let mut errors = Vec::new();
        for name in values.keys() {
            if self.get(name).is_none() {
                errors.push(format!("parameter {name:?} is not declared by this action"));
            }
        }
        for p in &self.params {
            match values.get(&p.name) {
                None | Some(Value::Null) if p.required => {
                    errors.push(format!("parameter {:?} is required", p.name));
                }
                None => {}
                Some(Value::Null) if !p.required => {}
                Some(v) => validate_value(v, &p.def, &p.name, 0, &mut errors),
            }
        }
        errors
    }
}

fn is_json_schema_object(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("object") && v.get("properties").is_some_and(Value::is_object)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn param_from_def(name: &str, def: &Value, field: &str, d: &mut FileDiags) -> Option<Param> {
    let empty = Map::new();
    let obj = match def {
        Value::Object(o) => o,
        Value::Null => &empty,
        other => {
            d.error(field, format!("parameter definition must be a mapping, found {}", kind(other)));
            return None;
        }
    };
    check_def_keys(obj, field, false, 0, d);
    let ty = match obj.get("type") {
        None => None,
        Some(Value::String(t)) => match ParamType::parse(t) {
            Some(t) => Some(t),
            None => {
                d.error(&join(field, "type"), format!("unknown type {t:?}; expected one of {}", TYPES.join(", ")));
                return None;
            }
        },
        Some(Value::Array(_)) => {
            d.warn(&join(field, "type"), "a list of types is not allowed for a parameter; treated as any type");
            None
        }
        Some(other) => {
            d.error(&join(field, "type"), format!("must be a string, found {}", kind(other)));
            return None;
        }
    };
    let flag = |k: &str, d: &mut FileDiags| match obj.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            d.warn(&join(field, k), format!("must be true or false, found {}; treated as false", kind(other)));
            false
        }
    };
    let required = flag("required", d);
    let secret = flag("secret", d);
    let immutable = flag("immutable", d);
    let position = match obj.get("position") {
        None | Some(Value::Null) => None,
        Some(v) => {
            match v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)) {
                Some(p) if p <= u32::MAX as u64 => Some(p as u32),
                _ => {
                    d.error(&join(field, "position"), format!("must be a whole number ≥ 0, found {v}"));
                    return None;
                }
            }
        }
    };
    let description = obj.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    Some(Param {
        name: name.to_string(),
        ty,
        description,
        required,
        secret,
        immutable,
        position,
        default: obj.get("default").cloned(),
        def: Value::Object(obj.clone()),
    })
}

/// Warn about keywords StackStorm's meta-schema does not allow, recursing into nested
/// definitions.
fn check_def_keys(obj: &Map<String, Value>, field: &str, nested: bool, depth: usize, d: &mut FileDiags) {
    if depth > MAX_SCHEMA_DEPTH {
        d.warn(field, format!("schema nests deeper than {MAX_SCHEMA_DEPTH} levels; not checked further"));
        return;
    }
    for (k, v) in obj {
        let known = PARAM_KEYS.contains(&k.as_str()) || (nested && NESTED_EXTRA_KEYS.contains(&k.as_str()));
        if !known {
            let hint = match k.as_str() {
                "item" => " (did you mean \"items\"?)",
                "$ref" => " ($ref is not followed: packd never loads schemas from elsewhere)",
                _ => "",
            };
            d.warn(
                &join(field, k),
                format!("unknown key {k:?} in a parameter definition; StackStorm rejects it, packd ignores it{hint}"),
            );
            continue;
        }
        match (k.as_str(), v) {
            ("properties" | "patternProperties" | "definitions", Value::Object(children)) => {
                for (ck, cv) in children {
                    if let Value::Object(co) = cv {
                        check_def_keys(co, &join(&join(field, k), ck), true, depth + 1, d);
                    }
                }
            }
            ("items" | "additionalProperties" | "additionalItems" | "not", Value::Object(co)) => {
                check_def_keys(co, &join(field, k), true, depth + 1, d);
            }
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(list)) => {
                for (i, cv) in list.iter().enumerate() {
                    if let Value::Object(co) = cv {
                        check_def_keys(co, &join(&join(field, k), &i.to_string()), true, depth + 1, d);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Validate one value against a definition (draft-4 subset with draft-3 boolean `required` on
/// properties, as st2's validator does). Errors are pushed as `path: reason`.
pub fn validate_value(v: &Value, def: &Value, path: &str, depth: usize, errors: &mut Vec<String>) {
    let Some(def) = def.as_object() else { return };
    if depth > MAX_SCHEMA_DEPTH {
        return;
    }
    if let Some(t) = def.get("type") {
        let ok = match t {
            Value::String(t) => type_matches(v, t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_matches(v, t)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected {}, found {}", type_names(t), describe(v)));
            return;
        }
    }
    if let Some(Value::Array(options)) = def.get("enum")
        && !options.iter().any(|o| json_eq(o, v))
    {
        let shown: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        errors.push(format!("{path}: {} is not one of [{}]", short(v), shown.join(", ")));
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(m) = def.get("minLength").and_then(Value::as_u64)
                && len < m
            {
                errors.push(format!("{path}: shorter than {m} characters"));
            }
            if let Some(m) = def.get("maxLength").and_then(Value::as_u64)
                && len > m
            {
                errors.push(format!("{path}: longer than {m} characters"));
            }
            if let Some(p) = def.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => errors.push(format!("{path}: does not match pattern {p:?}")),
                    Ok(_) => {}
                    Err(_) => {
                        errors.push(format!("{path}: the schema's pattern {p:?} is not a valid regular expression"))
                    }
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl_min = def.get("exclusiveMinimum").and_then(Value::as_bool).unwrap_or(false);
            let excl_max = def.get("exclusiveMaximum").and_then(Value::as_bool).unwrap_or(false);
            if let Some(m) = def.get("minimum").and_then(Value::as_f64)
                && (x < m || (excl_min && x == m))
            {
                errors.push(format!("{path}: {x} is below the minimum {m}"));
            }
            if let Some(m) = def.get("maximum").and_then(Value::as_f64)
                && (x > m || (excl_max && x == m))
            {
                errors.push(format!("{path}: {x} is above the maximum {m}"));
            }
        }
        Value::Array(items) => {
            if let Some(m) = def.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < m
            {
                errors.push(format!("{path}: fewer than {m} items"));
            }
            if let Some(m) = def.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > m
            {
                errors.push(format!("{path}: more than {m} items"));
            }
            if def.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].iter().any(|b| json_eq(a, b)) {
                        errors.push(format!("{path}: items are not unique"));
                        break;
                    }
                }
            }
            match def.get("items") {
                Some(Value::Object(_)) => {
                    let item_def = &def["items"];
                    for (i, item) in items.iter().enumerate() {
                        validate_value(item, item_def, &format!("{path}[{i}]"), depth + 1, errors);
                    }
                }
                Some(Value::Array(defs)) => {
                    for (i, (item, d)) in items.iter().zip(defs).enumerate() {
                        validate_value(item, d, &format!("{path}[{i}]"), depth + 1, errors);
                    }
                }
                _ => {}
            }
        }
        Value::Object(map) => validate_object(map, def, path, depth, errors),
        _ => {}
    }
    for (k, all) in [("allOf", true), ("anyOf", false), ("oneOf", false)] {
        let Some(Value::Array(subs)) = def.get(k) else {
            continue;
        };
        let ok: Vec<bool> = subs
            .iter()
            .map(|s| {
                let mut e = Vec::new();
                validate_value(v, s, path, depth + 1, &mut e);
                e.is_empty()
            })
            .collect();
        let passed = ok.iter().filter(|x| **x).count();
        let good = if all {
            passed == subs.len()
        } else if k == "oneOf" {
            passed == 1
        } else {
            passed >= 1
        };
        if !good {
            errors.push(format!("{path}: does not satisfy {k}"));
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    def: &Map<String, Value>,
    path: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    let props = def.get("properties").and_then(Value::as_object);
    let pattern_props = def.get("patternProperties").and_then(Value::as_object);
    if let Some(Value::Array(req)) = def.get("required") {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push(format!("{path}.{r}: is required"));
            }
        }
    }
    if let Some(props) = props {
        for (name, pdef) in props {
            let sub = format!("{path}.{name}");
            match map.get(name) {
                None => {
                    if pdef.get("required").and_then(Value::as_bool) == Some(true) {
                        errors.push(format!("{sub}: is required"));
                    }
                }
                // Optional values may be null (st2's allow_default_none).
                Some(Value::Null) if pdef.get("required").and_then(Value::as_bool) != Some(true) => {}
                Some(v) => validate_value(v, pdef, &sub, depth + 1, errors),
            }
        }
    }
    for (k, v) in map {
        let mut matched = props.is_some_and(|p| p.contains_key(k));
        if let Some(pp) = pattern_props {
            for (pat, pdef) in pp {
                if regex::Regex::new(pat).is_ok_and(|re| re.is_match(k)) {
                    matched = true;
                    validate_value(v, pdef, &format!("{path}.{k}"), depth + 1, errors);
                }
            }
        }
        if !matched {
            match def.get("additionalProperties") {
                Some(Value::Bool(false)) => errors.push(format!("{path}.{k}: is not allowed here")),
                Some(extra @ Value::Object(_)) => validate_value(v, extra, &format!("{path}.{k}"), depth + 1, errors),
                _ => {}
            }
        }
    }
}

fn type_matches(v: &Value, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn type_names(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => "any".into(),
    }
}

fn describe(v: &Value) -> String {
    let k = match v {
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    format!("{k} {}", short(v))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}

/// JSON equality where 1 and 1.0 are equal (as in Python).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Apply defaults of a config schema to a config object and validate it the way st2 registers
/// pack configs: top-level and nested object defaults filled in, then validated with extra keys
/// allowed. Returns the resolved config and the problems found (as `key: reason`).
pub fn resolve_config(schema: &ParamSchema, config: &Value) -> (Value, Vec<String>) {
    let mut cfg = config.as_object().cloned().unwrap_or_default();
    for p in &schema.params {
        fill_defaults(&mut cfg, p, 0);
    }
    let mut errors = Vec::new();
    for p in &schema.params {
        match cfg.get(&p.name) {
            None | Some(Value::Null) if p.required => errors.push(format!("{}: is required", p.name)),
            None | Some(Value::Null) => {}
            Some(v) => validate_value(v, &p.def, &p.name, 0, &mut errors),
        }
    }
    (Value::Object(cfg), errors)
}

fn fill_defaults(cfg: &mut Map<String, Value>, p: &Param, depth: usize) {
    if depth > MAX_SCHEMA_DEPTH {
        return;
    }
    if !cfg.contains_key(&p.name)
        && let Some(d) = &p.default
    {
        cfg.insert(p.name.clone(), d.clone());
    }
    // Nested objects with declared properties get their own defaults (st2 creates `{}`).
    if p.ty == Some(ParamType::Object)
        && let Some(props) = p.def.get("properties").and_then(Value::as_object)
    {
        let entry = cfg.entry(p.name.clone()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(inner) = entry {
            for (name, def) in props {
                let child = Param {
                    name: name.clone(),
                    ty: def.get("type").and_then(Value::as_str).and_then(ParamType::parse),
                    description: String::new(),
                    required: false,
                    secret: false,
                    immutable: false,
                    position: None,
                    default: def.get("default").cloned(),
                    def: def.clone(),
                };
                fill_defaults(inner, &child, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use std::path::Path;

    fn diags_of(f: impl FnOnce(&mut FileDiags) -> String) -> String {
        let mut out = Vec::new();
        let mut d = FileDiags { file: Path::new("t.yaml"), doc: None, out: &mut out };
        let mut s = f(&mut d);
        for x in &out {
            s.push_str(&format!("\n{x}"));
        }
        s
    }

    fn check(yaml: &str, expect: Expect) {
        let doc = super::super::yaml::parse(yaml.as_bytes()).unwrap();
        let got = diags_of(|d| {
            let s = ParamSchema::from_flat(&doc.value, "parameters", d);
            s.check_positions("parameters", d);
            serde_json::to_string(&s.to_json_schema()).unwrap()
        });
        expect.assert_eq(&got);
    }

    #[test]
    fn flat_to_json_schema() {
        check(
            "cmd: {type: string, required: true}\nn: {type: integer, default: 3, position: 0}\npw: {type: string, secret: true}\nany: {}\n",
            expect![[
                r#"{"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"cmd":{"type":"string"},"n":{"type":"integer","default":3,"position":0},"pw":{"type":"string","secret":true},"any":{"anyOf":[{"type":"array"},{"type":"boolean"},{"type":"integer"},{"type":"null"},{"type":"number"},{"type":"object"},{"type":"string"}]}},"required":["cmd"],"additionalProperties":false}"#
            ]],
        );
    }

    #[test]
    fn unknown_keys_and_bad_definitions() {
        check(
            "a: {type: array, item: {type: string}}\nb: {type: strin}\n'c-d': {type: string}\ne: {type: object, properties: {x: {format: uri, $ref: '#/y'}}}\n",
            expect![[r##"
                {"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"a":{"type":"array","item":{"type":"string"}},"e":{"type":"object","properties":{"x":{"format":"uri","$ref":"#/y"}}}},"additionalProperties":false}
                t.yaml: warning: parameters.a.item: unknown key "item" in a parameter definition; StackStorm rejects it, packd ignores it (did you mean "items"?)
                t.yaml: error: parameters.b.type: unknown type "strin"; expected one of array, boolean, integer, null, number, object, string
                t.yaml: error: parameters.c-d: parameter name "c-d" is invalid: only letters, digits and _ are allowed
                t.yaml: warning: parameters.e.properties.x.$ref: unknown key "$ref" in a parameter definition; StackStorm rejects it, packd ignores it ($ref is not followed: packd never loads schemas from elsewhere)"##]],
        );
    }

    #[test]
    fn positions() {
        check(
            "a: {type: string, position: 0}\nb: {type: string, position: 2}\n",
            expect![[r#"
                {"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"a":{"type":"string","position":0},"b":{"type":"string","position":2}},"additionalProperties":false}
                t.yaml: error: parameters.b.position: positions are not contiguous: 2 follows 0"#]],
        );
        check(
            "a: {type: string, position: 1}\nb: {type: string, position: 1}\n",
            expect![[r#"
                {"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"a":{"type":"string","position":1},"b":{"type":"string","position":1}},"additionalProperties":false}
                t.yaml: error: parameters.b.position: position 1 is used by both "a" and "b""#]],
        );
    }

    fn check_config(schema: &str, config: &str, expect: Expect) {
        let s = super::super::yaml::parse(schema.as_bytes()).unwrap();
        let got = diags_of(|d| {
            let schema = ParamSchema::from_flat(&s.value, "", d);
            let cfg = if config.is_empty() {
                Value::Null
            } else {
                super::super::yaml::parse(config.as_bytes()).unwrap().value
            };
            let (v, errs) = resolve_config(&schema, &cfg);
            format!("{v} {errs:?}")
        });
        expect.assert_eq(&got);
    }

    #[test]
    fn config_defaults_and_validation() {
        check_config(
            "host: {type: string, default: localhost}\nport: {type: integer, default: 80}\ntoken: {type: string, required: true, secret: true}\nopts:\n  type: object\n  properties:\n    retries: {type: integer, default: 3}\n",
            "token: abc\nport: 8080\n",
            expect![[r#"{"token":"abc","port":8080,"host":"localhost","opts":{"retries":3}} []"#]],
        );
        check_config(
            "port: {type: integer, default: 80}\ntoken: {type: string, required: true}\n",
            "port: eighty\nextra: ok\n",
            expect![[
                r#"{"port":"eighty","extra":"ok"} ["port: expected integer, found string \"eighty\"", "token: is required"]"#
            ]],
        );
    }

    #[test]
    fn validate_parameters() {
        let doc = super::super::yaml::parse(b"n: {type: integer, required: true, minimum: 1}\nmode: {type: string, enum: [a, b]}\nopt: {type: string}\n").unwrap();
        let mut out = Vec::new();
        let s =
            ParamSchema::from_flat(&doc.value, "", &mut FileDiags { file: Path::new("x"), doc: None, out: &mut out });
        let v = |j: Value| s.validate(j.as_object().unwrap());
        assert_eq!(v(json!({"n": 2, "opt": null})), Vec::<String>::new());
        expect![[r#"["parameter \"zz\" is not declared by this action", "parameter \"n\" is required"]"#]]
            .assert_eq(&format!("{:?}", v(json!({"zz": 1}))));
        expect![[r#"["n: expected integer, found string \"2\"", "mode: \"c\" is not one of [\"a\", \"b\"]"]"#]]
            .assert_eq(&format!("{:?}", v(json!({"n": "2", "mode": "c"}))));
        expect![[r#"["n: 0 is below the minimum 1"]"#]].assert_eq(&format!("{:?}", v(json!({"n": 0}))));
    }
}
