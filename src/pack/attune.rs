//! Attune dialect → model.
//!
//! Attune's pack format has moved while its authors iterated, so both generations load: the
//! seed document's spellings (`ref`/`label`, JSON-Schema `parameters`, `output_schema`,
//! `parameters_schema`/`payload_schema`, `timeout`, `conf_schema` as JSON Schema) and the
//! current loader's (flat parameter maps, `output`, `timeout_seconds`, `parameters`/`output` on
//! triggers, `trigger_ref`/`action_ref`/`conditions` rules, `workflow_file`). Attune packs carry
//! many platform fields (placement, retention, permission sets) that mean nothing on one
//! machine; those are accepted silently.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::diag::{FileDiags, Severity, join};
use super::model::*;
use super::schema::ParamSchema;
use super::st2::{self, push_unique};
use super::yaml::Doc;
use super::{Cx, str_field};

/// A manifest is Attune's when it has Attune-only keys, or a `ref` and no StackStorm `name`.
pub fn is_attune_manifest(m: &Value) -> bool {
    ["label", "conf_schema", "runtime_deps", "requires", "meta"].iter().any(|k| m.get(k).is_some())
        || (m.get("ref").is_some() && m.get("name").is_none())
}

fn attune_ref_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Qualify a component ref with its pack (`counter` → `pack.counter`); a ref of another pack
/// (`core.echo`) is kept as is.
fn qualify(pack: &str, r: &str) -> String {
    if r.contains('.') { r.to_string() } else { format!("{pack}.{r}") }
}

/// The component's own ref, which must belong to this pack.
fn own_ref(v: &Value, pack: &str, d: &mut FileDiags) -> Option<(String, String)> {
    let r = match (str_field(v, "ref"), str_field(v, "name")) {
        (Some(r), _) => r,
        (None, Some(n)) => n,
        (None, None) => {
            d.error("ref", "is required");
            return None;
        }
    };
    let full = qualify(pack, r);
    match full.strip_prefix(&format!("{pack}.")) {
        Some(name) if !name.is_empty() => Some((full.clone(), name.to_string())),
        _ => {
            d.error("ref", format!("{r:?} must start with the pack ref {pack:?} followed by a dot"));
            None
        }
    }
}

fn enabled(v: &Value, default: bool, d: &mut FileDiags) -> bool {
    match v.get("enabled") {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            d.warn("enabled", format!("must be true or false, found {other}; using {default}"));
            default
        }
    }
}

fn description(v: &Value) -> String {
    str_field(v, "description").or_else(|| str_field(v, "label")).unwrap_or_default().to_string()
}

pub fn load(cx: &mut Cx, manifest: Doc) -> Option<Pack> {
    let file = cx.root.join("pack.yaml");
    let m = &manifest.value;
    let mut d = cx.at(&file, Some(&manifest));
    if !m.is_object() {
        d.error("", "pack.yaml must be a mapping");
        return None;
    }
    let Some(ref_) = str_field(m, "ref").map(str::to_string) else {
        d.error("ref", "is required");
        return None;
    };
    if !attune_ref_ok(&ref_) {
        d.error(
            "ref",
            format!("{ref_:?} must start with a lowercase letter and contain only a-z, 0-9, _ and - (no dots)"),
        );
        return None;
    }
    if ref_ == "_global" {
        d.error("ref", "\"_global\" is reserved");
        return None;
    }
    let version = match st2::normalize_version(m.get("version").unwrap_or(&Value::Null)) {
        Ok(v) => v,
        Err(e) => {
            d.error("version", e);
            return None;
        }
    };
    let config_schema = match m.get("conf_schema") {
        None | Some(Value::Null) => ParamSchema::default(),
        Some(s) => ParamSchema::from_any(s, "conf_schema", &mut d),
    };
    let config_in = m.get("config").cloned().unwrap_or(json!({}));
    let (config, errors) = super::schema::resolve_config(&config_schema, &config_in);
    if m.get("config").is_some() {
        for e in errors {
            let (f, msg) = e.split_once(": ").unwrap_or(("", &e));
            d.error(&join("config", f), msg.to_string());
        }
    }
    let mut pack = Pack {
        ref_: ref_.clone(),
        name: str_field(m, "label").unwrap_or(&ref_).to_string(),
        version,
        description: str_field(m, "description").unwrap_or_default().to_string(),
        author: str_field(m, "author").map(str::to_string),
        dialect: Dialect::Attune,
        path: cx.root.clone(),
        config,
        config_schema,
        actions: Vec::new(),
        sensors: Vec::new(),
        triggers: Vec::new(),
        rules: Vec::new(),
        aliases: Vec::new(),
        policies: Vec::new(),
        digest: String::new(),
    };
    // Attune's dependency order: triggers, actions (+ workflows), policies, rules, sensors.
    for f in cx.list_yaml("triggers") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(t) = trigger(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.triggers, t, |t| &t.ref_, &f, &mut d, "trigger");
            }
        }
    }
    for f in cx.list_yaml("actions") {
        if let Some(doc) = cx.read(&f)
            && let Some(a) = action(cx, &doc, &f, &ref_)
        {
            let mut d = cx.at(&f, Some(&doc));
            push_unique(&mut pack.actions, a, |a| &a.ref_, &f, &mut d, "action");
        }
    }
    // Standalone workflow files carry their own ref/parameters; actions/ wins on a clash.
    for f in cx.list_yaml("workflows") {
        if let Some(doc) = cx.read(&f)
            && let Some(a) = standalone_workflow(cx, &doc, &f, &ref_)
            && !pack.actions.iter().any(|x| x.ref_ == a.ref_)
        {
            pack.actions.push(a);
        }
    }
    for f in cx.list_yaml("policies") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(p) = policy(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.policies, p, |p| &p.ref_, &f, &mut d, "policy");
            }
        }
    }
    for f in cx.list_yaml("rules") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(r) = rule(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.rules, r, |r| &r.ref_, &f, &mut d, "rule");
            }
        }
    }
    for f in cx.list_yaml("sensors") {
        if let Some(doc) = cx.read(&f) {
            let root = cx.root.clone();
            let mut d = cx.at(&f, Some(&doc));
            if let Some(s) = sensor(&doc.value, &ref_, &root, &f, &mut d) {
                push_unique(&mut pack.sensors, s, |s| &s.ref_, &f, &mut d, "sensor");
            }
        }
    }
    Some(pack)
}

fn schema_of(v: &Value, keys: &[&str], d: &mut FileDiags) -> ParamSchema {
    for k in keys {
        if let Some(s) = v.get(*k).filter(|s| !s.is_null()) {
            return ParamSchema::from_any(s, k, d);
        }
    }
    ParamSchema::default()
}

fn json_schema_of(v: &Value, keys: &[&str], d: &mut FileDiags) -> Value {
    for k in keys {
        if let Some(s) = v.get(*k).filter(|s| !s.is_null()) {
            // Flat maps become JSON Schema; JSON-Schema objects are kept as written.
            return if s.get("type").is_some() && s.get("properties").is_some() {
                s.clone()
            } else {
                ParamSchema::from_flat(s, k, d).to_json_schema()
            };
        }
    }
    json!({})
}

fn timeout(v: &Value, d: &mut FileDiags) -> Option<u64> {
    for k in ["timeout_seconds", "timeout"] {
        if let Some(t) = v.get(k).filter(|t| !t.is_null()) {
            match t.as_u64().filter(|t| *t > 0) {
                Some(t) => return Some(t),
                None => {
                    d.error(k, format!("must be a positive whole number of seconds, found {t}"));
                    return None;
                }
            }
        }
    }
    None
}

fn io(v: &Value, d: &mut FileDiags) -> Option<AttuneIo> {
    let pick = |k: &str, allowed: &[&str], default: &str, d: &mut FileDiags| -> Option<String> {
        match v.get(k) {
            None | Some(Value::Null) => Some(default.to_string()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
            Some(other) => {
                d.error(k, format!("must be one of {}, found {other}", allowed.join(", ")));
                None
            }
        }
    };
    Some(AttuneIo {
        delivery: pick("parameter_delivery", &["stdin", "file"], "stdin", d)?,
        format: pick("parameter_format", &["json", "dotenv", "yaml"], "json", d)?,
        output_format: pick("output_format", &["text", "json", "yaml", "jsonl"], "text", d)?,
    })
}

fn action(cx: &mut Cx, doc: &Doc, f: &Path, pack: &str) -> Option<Action> {
    let v = &doc.value;
    let root = cx.root.clone();
    let mut wf_path = None;
    let action = {
        let mut d = FileDiags { file: f, doc: Some(doc), out: &mut cx.diags };
        if !v.is_object() {
            d.error("", "an action file must be a mapping");
            return None;
        }
        let (ref_, name) = own_ref(v, pack, &mut d)?;
        let parameters = schema_of(v, &["parameters", "param_schema"], &mut d);
        if !parameters.check_positions("parameters", &mut d) {
            return None;
        }
        let runner = if let Some(wf) = str_field(v, "workflow_file") {
            let base = root.join("actions");
            match cx_resolve(&root, &base, wf) {
                Ok(p) if p.starts_with(root.join("actions").join("workflows")) => {
                    wf_path = Some(p);
                    Runner::AttuneWorkflow
                }
                Ok(_) => {
                    d.error("workflow_file", format!("{wf:?} must be under actions/workflows/"));
                    return None;
                }
                Err(e) => {
                    d.error("workflow_file", e);
                    return None;
                }
            }
        } else {
            let rt = str_field(v, "runner_type").unwrap_or("shell");
            match Runner::from_attune(rt) {
                Some(r) => r,
                None => {
                    d.error(
                        "runner_type",
                        format!("unsupported runtime {rt:?}; packd runs shell, python, node and native actions"),
                    );
                    return None;
                }
            }
        };
        let entry_point = if runner == Runner::AttuneWorkflow {
            None
        } else {
            let Some(entry) = str_field(v, "entry_point") else {
                d.error("entry_point", "is required (the script, relative to actions/)");
                return None;
            };
            match cx_resolve(&root, &root.join("actions"), entry) {
                Ok(p) => Some(p),
                Err(e) => {
                    d.error("entry_point", e);
                    return None;
                }
            }
        };
        Action {
            ref_,
            name,
            pack: pack.to_string(),
            description: description(v),
            enabled: enabled(v, true, &mut d),
            runner,
            entry_point,
            parameters,
            output_schema: Some(json_schema_of(v, &["output", "output_schema", "out_schema"], &mut d))
                .filter(|s| s != &json!({})),
            timeout: timeout(v, &mut d),
            workflow: None,
            attune: Some(io(v, &mut d)?),
            metadata_file: f.to_path_buf(),
        }
    };
    let mut action = action;
    if let Some(p) = wf_path {
        action.workflow = Some(st2::load_workflow(cx, &p, WorkflowKind::Attune)?);
    }
    Some(action)
}

fn standalone_workflow(cx: &mut Cx, doc: &Doc, f: &Path, pack: &str) -> Option<Action> {
    let v = &doc.value;
    let mut d = FileDiags { file: f, doc: Some(doc), out: &mut cx.diags };
    let (ref_, name) = own_ref(v, pack, &mut d)?;
    if v.get("tasks").is_none() {
        d.error("tasks", "is required in a workflow");
        return None;
    }
    Some(Action {
        ref_,
        name,
        pack: pack.to_string(),
        description: description(v),
        enabled: enabled(v, true, &mut d),
        runner: Runner::AttuneWorkflow,
        entry_point: None,
        parameters: schema_of(v, &["parameters"], &mut d),
        output_schema: None,
        timeout: timeout(v, &mut d),
        workflow: Some(Workflow { kind: WorkflowKind::Attune, file: f.to_path_buf(), definition: v.clone() }),
        attune: None,
        metadata_file: f.to_path_buf(),
    })
}

fn cx_resolve(root: &Path, base: &Path, rel: &str) -> Result<std::path::PathBuf, String> {
    Cx::new(root).resolve_inside(base, rel)
}

fn trigger(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<TriggerType> {
    if !v.is_object() {
        d.error("", "a trigger file must be a mapping");
        return None;
    }
    let (ref_, name) = own_ref(v, pack, d)?;
    Some(TriggerType {
        ref_,
        pack: pack.to_string(),
        name,
        description: description(v),
        parameters_schema: json_schema_of(v, &["parameters", "parameters_schema", "param_schema"], d),
        payload_schema: json_schema_of(v, &["output", "payload_schema", "out_schema"], d),
        metadata_file: f.to_path_buf(),
    })
}

fn rule(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<Rule> {
    if !v.is_object() {
        d.error("", "a rule file must be a mapping");
        return None;
    }
    let (ref_, name) = own_ref(v, pack, d)?;
    let trigger = match str_field(v, "trigger_ref").or_else(|| str_field(v, "trigger")) {
        Some(t) => qualify(pack, t),
        None => {
            d.error("trigger_ref", "is required");
            return None;
        }
    };
    let action = match str_field(v, "action_ref").or_else(|| str_field(v, "action")) {
        Some(a) => qualify(pack, a),
        None => {
            d.error("action_ref", "is required");
            return None;
        }
    };
    let obj = |keys: &[&str], d: &mut FileDiags| -> Option<Value> {
        for k in keys {
            match v.get(*k) {
                None | Some(Value::Null) => continue,
                Some(o @ Value::Object(_)) => return Some(o.clone()),
                Some(other) => {
                    d.error(k, format!("must be a mapping, found {other}"));
                    return None;
                }
            }
        }
        Some(Value::Object(Map::new()))
    };
    let trigger_parameters = obj(&["trigger_params", "trigger_parameters"], d)?;
    let action_parameters = obj(&["action_params", "action_parameters"], d)?;
    if !super::check_trigger_parameters(&trigger, &trigger_parameters, "trigger_params", d) {
        return None;
    }
    let conditions = v.get("conditions").or_else(|| v.get("criteria")).cloned().unwrap_or(Value::Null);
    match &conditions {
        Value::Null | Value::Object(_) | Value::Array(_) => {}
        other => {
            d.error("conditions", format!("must be a mapping or a list, found {other}"));
            return None;
        }
    }
    if let Value::Array(list) = &conditions {
        for (i, c) in list.iter().enumerate() {
            let op = str_field(c, "operator").unwrap_or("");
            if str_field(c, "field").is_none() {
                d.error(&format!("conditions.{i}.field"), "is required");
                return None;
            }
            if !["equals", "not_equals", "contains"].contains(&op) {
                d.warn(&format!("conditions.{i}.operator"), format!("unknown operator {op:?}: this condition never matches (Attune knows equals, not_equals, contains)"));
            }
        }
    }
    Some(Rule {
        ref_,
        pack: pack.to_string(),
        name,
        description: description(v),
        enabled: enabled(v, true, d),
        trigger,
        trigger_parameters,
        matcher: Matcher::Conditions(conditions),
        action,
        action_parameters,
        backstop: false,
        metadata_file: f.to_path_buf(),
    })
}

fn sensor(v: &Value, pack: &str, root: &Path, f: &Path, d: &mut FileDiags) -> Option<Sensor> {
    if !v.is_object() {
        d.error("", "a sensor file must be a mapping");
        return None;
    }
    let (ref_, _name) = own_ref(v, pack, d)?;
    let Some(entry) = str_field(v, "entry_point") else {
        d.error("entry_point", "is required (relative to sensors/)");
        return None;
    };
    let entry_point = match cx_resolve(root, &root.join("sensors"), entry) {
        Ok(p) => p,
        Err(e) => {
            d.error("entry_point", e);
            return None;
        }
    };
    let mut trigger_types: Vec<String> = Vec::new();
    match (v.get("trigger_types"), v.get("trigger_type")) {
        (Some(Value::Array(list)), _) => {
            for t in list {
                match t {
                    Value::String(s) => trigger_types.push(qualify(pack, s)),
                    Value::Object(_) => {
                        if let Some(r) = str_field(t, "ref").or_else(|| str_field(t, "name")) {
                            trigger_types.push(qualify(pack, r));
                        }
                    }
                    _ => {}
                }
            }
        }
        (_, Some(Value::String(s))) => trigger_types.push(qualify(pack, s)),
        _ => {
            d.error("trigger_types", "is required: the triggers this sensor emits");
            return None;
        }
    }
    let kind = match str_field(v, "runner_type").unwrap_or("native") {
        "python" | "python3" if entry.ends_with(".py") && str_field(v, "class_name").is_some() => SensorKind::St2Python,
        _ => SensorKind::JsonLines,
    };
    Some(Sensor {
        ref_,
        pack: pack.to_string(),
        class_name: str_field(v, "class_name").map(str::to_string),
        description: description(v),
        enabled: enabled(v, true, d),
        entry_point,
        kind,
        poll_interval: v.get("poll_interval").and_then(Value::as_u64),
        trigger_types,
        metadata_file: f.to_path_buf(),
    })
}

fn policy(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<Policy> {
    if !v.is_object() {
        d.error("", "a policy file must be a mapping");
        return None;
    }
    let (ref_, name) = own_ref(v, pack, d)?;
    let positive = |x: Option<&Value>, f: &str, d: &mut FileDiags| -> Option<u64> {
        match x.and_then(Value::as_u64).filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                d.error(f, "is required and must be a whole number greater than 0");
                None
            }
        }
    };
    let mut kinds = Vec::new();
    if let Some(c) = v.get("concurrency").filter(|c| !c.is_null()) {
        let threshold = positive(c.get("limit"), "concurrency.limit", d)?;
        let cancel = match str_field(c, "method") {
            Some("enqueue") | None => false,
            Some("cancel") => true,
            Some(other) => {
                d.error("concurrency.method", format!("must be enqueue or cancel, found {other:?}"));
                return None;
            }
        };
        let attributes = c
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        kinds.push(PolicyKind::Concurrency { threshold, cancel, attributes });
    }
    if let Some(r) = v.get("rate_limit").filter(|r| !r.is_null()) {
        let max_executions = positive(r.get("max_executions"), "rate_limit.max_executions", d)?;
        let window_seconds = positive(r.get("window_seconds"), "rate_limit.window_seconds", d)?;
        kinds.push(PolicyKind::RateLimit { max_executions, window_seconds });
    }
    if let Some(Value::Array(quotas)) = v.get("quotas") {
        for (i, q) in quotas.iter().enumerate() {
            let limit = positive(q.get("limit"), &format!("quotas.{i}.limit"), d)?;
            match str_field(q, "quota_type") {
                Some("running_executions") => {
                    kinds.push(PolicyKind::Concurrency { threshold: limit, cancel: false, attributes: Vec::new() })
                }
                other => d.warn(
                    &format!("quotas.{i}.quota_type"),
                    format!("{other:?} is not enforced by packd (only running_executions is)"),
                ),
            }
        }
    }
    if kinds.is_empty() {
        d.error("", "a policy must set at least one of concurrency, rate_limit or quotas");
        return None;
    }
    let resource = str_field(v, "action_ref").map(|a| qualify(pack, a));
    let _ = Severity::Warning;
    Some(Policy {
        ref_,
        pack: pack.to_string(),
        name: str_field(v, "name").or_else(|| str_field(v, "label")).unwrap_or(&name).to_string(),
        enabled: enabled(v, true, d),
        resource,
        kinds,
        metadata_file: f.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {

    use expect_test::{Expect, expect};

    /// Write a small Attune pack from (path, text) pairs and summarise what loads.
    fn check(files: &[(&str, &str)], expect: Expect) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("demo");
        for (p, text) in files {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let loaded = super::super::load_pack(&root, &[]);
        let mut out = String::new();
        if let Some(p) = &loaded.pack {
            out.push_str(&format!("{} {} {}\n", p.ref_, p.version, p.dialect.as_str()));
            for a in &p.actions {
                let names: Vec<String> = a
                    .parameters
                    .params
                    .iter()
                    .map(|p| {
                        format!("{}{}{}", p.name, if p.required { "!" } else { "" }, if p.secret { "*" } else { "" })
                    })
                    .collect();
                out.push_str(&format!(
                    "action {} {} params={} timeout={:?} io={:?}\n",
                    a.ref_,
                    a.runner.name(),
                    names.join(","),
                    a.timeout,
                    a.attune.as_ref().map(|i| (&i.delivery, &i.format))
                ));
            }
            for t in &p.triggers {
                out.push_str(&format!(
                    "trigger {} params={} payload={}\n",
                    t.ref_, t.parameters_schema, t.payload_schema
                ));
            }
            for r in &p.rules {
                out.push_str(&format!("rule {} {} -> {} {:?}\n", r.ref_, r.trigger, r.action, r.matcher));
            }
        }
        for d in &loaded.diagnostics {
            let s = d.to_string();
            out.push_str(&format!("{}\n", s.rsplit_once("demo/").map(|x| x.1).unwrap_or(&s)));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn seed_and_current_spellings() {
        check(
            &[
                (
                    "pack.yaml",
                    "ref: demo\nlabel: Demo\ndescription: d\nversion: \"1.0.0\"\nconf_schema:\n  type: object\n  properties:\n    limit: {type: integer, default: 5}\n",
                ),
                // The seed: JSON-Schema parameters, output_schema, timeout.
                (
                    "actions/seed.yaml",
                    "name: seed\nref: demo.seed\nrunner_type: shell\nentry_point: seed.sh\ntimeout: 30\nparameters:\n  type: object\n  properties:\n    message: {type: string}\n    token: {type: string, secret: true}\n  required: [message]\noutput_schema:\n  type: object\n  properties:\n    stdout: {type: string}\n",
                ),
                // Current loader: flat map, output, timeout_seconds, stdin/dotenv.
                (
                    "actions/current.yaml",
                    "ref: current\nrunner_type: python3\nentry_point: current.py\ntimeout_seconds: 12\nparameter_format: dotenv\nparameters:\n  url: {type: string, required: true}\n  password: {type: string, secret: true}\noutput:\n  status: {type: integer}\n",
                ),
                (
                    "triggers/old.yaml",
                    "ref: demo.old\nlabel: Old\nparameters_schema:\n  type: object\n  properties:\n    unit: {type: string}\npayload_schema:\n  type: object\n  properties:\n    n: {type: integer}\n",
                ),
                (
                    "triggers/new.yaml",
                    "ref: new\nparameters:\n  unit: {type: string, required: true}\noutput:\n  n: {type: integer}\n",
                ),
                (
                    "rules/r.yaml",
                    "ref: demo.r\ntrigger_ref: new\naction_ref: current\naction_params: {url: '{{ event.payload.n }}'}\nconditions:\n  - {field: count, operator: equals, value: 3}\n",
                ),
            ],
            expect![[r#"
                demo 1.0.0 attune
                action demo.current attune-python params=url!,password* timeout=Some(12) io=Some(("stdin", "dotenv"))
                action demo.seed attune-shell params=message!,token* timeout=Some(30) io=Some(("stdin", "json"))
                trigger demo.new params={"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"unit":{"type":"string"}},"required":["unit"],"additionalProperties":false} payload={"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"n":{"type":"integer"}},"additionalProperties":false}
                trigger demo.old params={"type":"object","properties":{"unit":{"type":"string"}}} payload={"type":"object","properties":{"n":{"type":"integer"}}}
                rule demo.r demo.new -> demo.current Conditions(Array [Object {"field": String("count"), "operator": String("equals"), "value": Number(3)}])
            "#]],
        );
    }

    #[test]
    fn bad_components() {
        check(
            &[
                ("pack.yaml", "ref: demo\nlabel: Demo\nversion: 1.0.0\n"),
                ("actions/foreign.yaml", "ref: other.x\nentry_point: x.sh\n"),
                ("actions/escape.yaml", "ref: escape\nentry_point: ../../bin/sh\n"),
                ("actions/java.yaml", "ref: j\nrunner_type: java\nentry_point: x.jar\n"),
                ("policies/empty.yaml", "ref: p\n"),
            ],
            expect![[r#"
                demo 1.0.0 attune
                actions/escape.yaml:2:1: error: entry_point: "../../bin/sh" points outside the pack directory
                actions/foreign.yaml:1:1: error: ref: "other.x" must start with the pack ref "demo" followed by a dot
                actions/java.yaml:2:1: error: runner_type: unsupported runtime "java"; packd runs shell, python, node and native actions
                policies/empty.yaml:1:1: error: a policy must set at least one of concurrency, rate_limit or quotas
            "#]],
        );
    }
}
