//! StackStorm dialect → model.
//!
//! Follows what st2's registrars accept (reference/stackstorm.md §1–§11), with one deliberate
//! difference: keys st2 would reject as "Additional properties are not allowed" are reported as
//! warnings and ignored, because packd's aim is to run unmodified Exchange packs. Structural
//! problems (missing `name`, unknown runner, a path leaving the pack, bad positions) are errors
//! that skip the item. Unknown keys in sensor and trigger files are ignored silently, as st2 does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::{Map, Value, json};

use super::diag::{FileDiags, Severity, join};
use super::model::*;
use super::schema::ParamSchema;
use super::yaml::Doc;
use super::{Cx, str_field};

const ACTION_KEYS: &[&str] = &[
    "name",
    "runner_type",
    "description",
    "enabled",
    "entry_point",
    "pack",
    "parameters",
    "output_schema",
    "notify",
    "tags",
    "metadata_file",
    "id",
    "ref",
    "uid",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "pack",
    "description",
    "enabled",
    "trigger",
    "criteria",
    "action",
    "type",
    "context",
    "tags",
    "metadata_file",
    "id",
    "ref",
    "uid",
];
const ALIAS_KEYS: &[&str] = &[
    "name",
    "pack",
    "description",
    "enabled",
    "action_ref",
    "formats",
    "ack",
    "result",
    "extra",
    "immutable_parameters",
    "metadata_file",
    "id",
    "ref",
    "uid",
];
const POLICY_KEYS: &[&str] = &[
    "name",
    "pack",
    "description",
    "enabled",
    "resource_ref",
    "policy_type",
    "parameters",
    "metadata_file",
    "id",
    "ref",
    "uid",
];

/// StackStorm's minimum sensor poll interval (`MINIMUM_POLL_INTERVAL`).
pub const MIN_POLL_INTERVAL: u64 = 4;

fn pack_ref_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// st2's semver check (`PackAPI`), after `normalize_pack_version` (`0.2` → `0.2.0`).
pub fn normalize_version(v: &Value) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Err("is required".into()),
        other => return Err(format!("must be a string, found {other}")),
    };
    let s = if s.matches('.').count() == 1
        && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        format!("{s}.0")
    } else {
        s
    };
    static SEMVER: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = SEMVER.get_or_init(|| {
        Regex::new(r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-[\da-z\-]+(?:\.[\da-z\-]+)*)?(?:\+[\da-z\-]+(?:\.[\da-z\-]+)*)?$")
            .expect("static regex")
    });
    if re.is_match(&s) { Ok(s) } else { Err(format!("{s:?} is not a semantic version (MAJOR.MINOR.PATCH)")) }
}

/// Pack ref derivation: `ref`, else the directory name, else `name` — each only if it matches
/// `^[a-z0-9_]+$`. `_global` is reserved.
pub fn derive_ref(manifest: &Value, dir_name: &str) -> Result<String, String> {
    let r = if let Some(r) = str_field(manifest, "ref") {
        if !pack_ref_ok(r) {
            return Err(format!("ref {r:?} may contain only lowercase letters, digits and _"));
        }
        r.to_string()
    } else if pack_ref_ok(dir_name) {
        dir_name.to_string()
    } else if let Some(n) = str_field(manifest, "name").filter(|n| pack_ref_ok(n)) {
        n.to_string()
    } else {
        return Err(format!(
            "pack name {:?} contains invalid characters and ref attribute is not available",
            str_field(manifest, "name").unwrap_or(dir_name)
        ));
    };
    if r == "_global" {
        return Err("\"_global\" is reserved and cannot be a pack ref".into());
    }
    Ok(r)
}

pub fn load(cx: &mut Cx, manifest: Doc, config_dirs: &[PathBuf]) -> Option<Pack> {
    let file = cx.root.join("pack.yaml");
    let m = &manifest.value;
    if !m.is_object() {
        cx.file_error(&file, Severity::Error, "pack.yaml must be a mapping".into(), None);
        return None;
    }
    let dir_name = cx.root.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    let mut d = cx.at(&file, Some(&manifest));
    let ref_ = match derive_ref(m, &dir_name) {
        Ok(r) => r,
        Err(e) => {
            d.error("ref", e);
            return None;
        }
    };
    let version = match normalize_version(m.get("version").unwrap_or(&Value::Null)) {
        Ok(v) => v,
        Err(e) => {
            d.error("version", e);
            return None;
        }
    };
    for k in ["name", "description", "author"] {
        if str_field(m, k).is_none() {
            d.warn(k, "is required by StackStorm and missing or not a string");
        }
    }
    let name = str_field(m, "name").unwrap_or(&ref_).to_string();
    let description = str_field(m, "description").unwrap_or_default().to_string();
    let author = str_field(m, "author").map(str::to_string);

    // Config schema and config.
    let schema_file = cx.root.join("config.schema.yaml");
    let mut config_schema = ParamSchema::default();
    if schema_file.exists()
        && let Some(doc) = cx.read(&schema_file)
    {
        let mut d = cx.at(&schema_file, Some(&doc));
        config_schema = ParamSchema::from_flat(&doc.value, "", &mut d);
    }
    let mut config = Value::Object(Map::new());
    let mut config_file = None;
    for dir in config_dirs {
        let f = dir.join(format!("{ref_}.yaml"));
        if f.is_file() {
            config_file = Some(f);
            break;
        }
    }
    if let Some(f) = &config_file
        && let Some(doc) = read_config(cx, f)
    {
        config = doc;
    }
    let (resolved, errors) = super::schema::resolve_config(&config_schema, &config);
    // A missing config file is not validated (st2 does the same): required keys then fail at
    // use, with the friendly "config is missing key" message.
    if let Some(f) = &config_file {
        for e in errors {
            let (field, msg) = e.split_once(": ").unwrap_or(("", &e));
            cx.diags.push(super::Diagnostic {
                severity: Severity::Error,
                file: f.clone(),
                line: None,
                column: None,
                field: Some(field.to_string()),
                message: format!("invalid config for pack {ref_:?}: {msg}"),
            });
        }
    }

    let mut pack = Pack {
        ref_: ref_.clone(),
        name,
        version,
        description,
        author,
        dialect: Dialect::StackStorm,
        path: cx.root.clone(),
        config: resolved,
        config_schema,
        actions: Vec::new(),
        sensors: Vec::new(),
        triggers: Vec::new(),
        rules: Vec::new(),
        aliases: Vec::new(),
        policies: Vec::new(),
        digest: String::new(),
    };
    // Registration order st2 uses: triggers, sensors, actions, rules, aliases, policies.
    for f in cx.list_yaml("triggers") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(t) = trigger_type(&doc.value, "", &ref_, &f, &mut d) {
                push_unique(&mut pack.triggers, t, |t| &t.ref_, &f, &mut d, "trigger type");
            }
        }
    }
    for f in cx.list_yaml("sensors") {
        if let Some(doc) = cx.read(&f) {
            load_sensor(cx, &doc, &f, &mut pack);
        }
    }
    for f in cx.list_yaml("actions") {
        if f.file_name().and_then(|n| n.to_str()) == Some("config.yaml") {
            continue;
        }
        if let Some(doc) = cx.read(&f)
            && let Some(a) = load_action(cx, &doc, &f, &ref_)
        {
            let mut d = cx.at(&f, Some(&doc));
            push_unique(&mut pack.actions, a, |a| &a.ref_, &f, &mut d, "action");
        }
    }
    for f in cx.list_yaml("rules") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(r) = load_rule(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.rules, r, |r| &r.ref_, &f, &mut d, "rule");
            }
        }
    }
    for f in cx.list_yaml("aliases") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(a) = load_alias(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.aliases, a, |a| &a.ref_, &f, &mut d, "alias");
            }
        }
    }
    for f in cx.list_yaml("policies") {
        if let Some(doc) = cx.read(&f) {
            let mut d = cx.at(&f, Some(&doc));
            if let Some(p) = load_policy(&doc.value, &ref_, &f, &mut d) {
                push_unique(&mut pack.policies, p, |p| &p.ref_, &f, &mut d, "policy");
            }
        }
    }
    Some(pack)
}

fn read_config(cx: &mut Cx, f: &Path) -> Option<Value> {
    let doc = cx.read_operator_file(f)?;
    match doc.value {
        Value::Object(_) => Some(doc.value),
        Value::Null => None,
        _ => {
            cx.file_error(f, Severity::Error, "a pack config must be a mapping".into(), None);
            None
        }
    }
}

/// Add an item unless its ref is taken; a duplicate is an error on the later file.
pub fn push_unique<T>(
    items: &mut Vec<T>,
    item: T,
    key: impl Fn(&T) -> &String,
    file: &Path,
    d: &mut FileDiags,
    what: &str,
) {
    if let Some(prev) = items.iter().find(|x| key(x) == key(&item)) {
        let _ = prev;
        d.error(
            "name",
            format!(
                "duplicate {what} {:?}: already defined in this pack; this file is skipped ({})",
                key(&item),
                file.display()
            ),
        );
        return;
    }
    items.push(item);
}

fn unknown_keys(v: &Value, allowed: &[&str], what: &str, d: &mut FileDiags) {
    if let Some(obj) = v.as_object() {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                d.warn(k, format!("unknown key {k:?} in {what} metadata; StackStorm rejects it, packd ignores it"));
            }
        }
    }
}

fn check_pack_field(v: &Value, pack: &str, d: &mut FileDiags) -> bool {
    match v.get("pack") {
        None | Some(Value::Null) => true,
        Some(Value::String(p)) if p == pack => true,
        Some(other) => {
            d.error("pack", format!("is {other} but the file is in pack {pack:?}"));
            false
        }
    }
}

fn bool_field(v: &Value, key: &str, default: bool, d: &mut FileDiags) -> bool {
    match v.get(key) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            d.warn(key, format!("must be true or false, found {other}; using {default}"));
            default
        }
    }
}

fn required_str<'a>(v: &'a Value, key: &str, d: &mut FileDiags) -> Option<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        None | Some(Value::Null) => {
            d.error(key, "is required");
            None
        }
        Some(other) => {
            d.error(key, format!("must be a non-empty string, found {other}"));
            None
        }
    }
}

fn as_mapping(v: &Value, file: &Path, d: &mut FileDiags) -> bool {
    if v.is_object() {
        true
    } else {
        d.error("", format!("{} must be a mapping", file.display()));
        false
    }
}

/// Parameters each runner contributes (st2 `runner.yaml`), merged under the action's own.
pub fn runner_params(runner: &Runner) -> Value {
    let shell = json!({
        "cwd": {"type": "string", "description": "Working directory where the command is executed."},
        "env": {"type": "object", "description": "Environment variables for the command."},
        "kwarg_op": {"type": "string", "default": "--", "description": "Operator for keyword arguments."},
        "sudo": {"type": "boolean", "default": false, "description": "Run the command with sudo."},
        "sudo_password": {"type": "string", "secret": true, "default": null, "required": false, "description": "Password for sudo."},
        "timeout": {"type": "integer", "default": 60, "description": "Seconds before the command is killed."},
    });
    let mut m = match runner {
        Runner::LocalShellCmd => {
            let mut m = shell;
            m["cmd"] = json!({"type": "string", "description": "Command to run."});
            m
        }
        Runner::LocalShellScript => {
            let mut m = shell;
            m["debug"] = json!({"type": "boolean", "default": false});
            m["content_version"] = json!({"type": "string"});
            m
        }
        Runner::PythonScript => json!({
            "env": {"type": "object"},
            "timeout": {"type": "integer", "default": 600},
            "log_level": {"type": "string", "default": "DEBUG", "enum": ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]},
            "debug": {"type": "boolean", "default": false},
            "content_version": {"type": "string"},
        }),
        Runner::HttpRequest => json!({
            "url": {"type": "string", "required": true},
            "headers": {"type": "object"},
            "cookies": {"type": "object"},
            "username": {"type": "string"},
            "password": {"type": "string", "secret": true},
            "allow_redirects": {"type": "boolean", "default": false},
            "verify_ssl_cert": {"type": "boolean", "default": true},
            "http_proxy": {"type": "string"},
            "https_proxy": {"type": "string"},
            "url_hosts_blacklist": {"type": "array", "default": []},
            "url_hosts_whitelist": {"type": "array", "default": []},
        }),
        Runner::ActionChain => json!({
            "display_published": {"type": "boolean", "default": true},
            "skip_notify": {"type": "array", "default": []},
        }),
        Runner::Orquesta => json!({"notify": {"type": "array", "default": []}}),
        Runner::Inquirer => json!({
            "schema": {"type": "object", "default": {"type": "object", "properties": {"continue": {"type": "boolean", "required": true}}}},
            "route": {"type": "string", "default": ""},
            "roles": {"type": "array", "default": []},
            "users": {"type": "array", "default": []},
            "ttl": {"type": "integer", "default": 1440},
        }),
        Runner::Announcement => json!({
            "experimental": {"type": "boolean", "required": true},
            "route": {"type": "string", "default": "general"},
        }),
        Runner::RemoteShellCmd | Runner::RemoteShellScript => json!({
            "hosts": {"type": "string", "required": true},
            "username": {"type": "string"},
            "password": {"type": "string", "secret": true},
            "private_key": {"type": "string", "secret": true},
            "passphrase": {"type": "string", "secret": true},
            "port": {"type": "integer", "default": 22},
            "bastion_host": {"type": "string"},
            "cmd": {"type": "string"},
            "cwd": {"type": "string", "default": "/tmp"},
            "dir": {"type": "string", "default": "/tmp"},
            "env": {"type": "object"},
            "kwarg_op": {"type": "string", "default": "--"},
            "parallel": {"type": "boolean", "default": false},
            "sudo": {"type": "boolean", "default": false},
            "sudo_password": {"type": "string", "secret": true},
            "timeout": {"type": "integer", "default": 60},
        }),
        Runner::WinrmCmd | Runner::WinrmPsCmd | Runner::WinrmPsScript => json!({
            "host": {"type": "string", "required": true},
            "username": {"type": "string", "required": true},
            "password": {"type": "string", "required": true, "secret": true},
            "port": {"type": "integer", "default": 5986},
            "scheme": {"type": "string", "default": "https"},
            "transport": {"type": "string", "default": "ntlm"},
            "verify_ssl_cert": {"type": "boolean", "default": true},
            "cmd": {"type": "string"},
            "cwd": {"type": "string"},
            "env": {"type": "object"},
            "kwarg_op": {"type": "string", "default": "-"},
            "timeout": {"type": "integer", "default": 60},
        }),
        _ => json!({}),
    };
    if *runner == Runner::WinrmPsScript
        && let Some(o) = m.as_object_mut()
    {
        o.remove("cmd");
    }
    m
}

fn runner_schema(runner: &Runner) -> ParamSchema {
    let mut sink = Vec::new();
    let mut d = FileDiags { file: Path::new("<runner>"), doc: None, out: &mut sink };
    ParamSchema::from_flat(&runner_params(runner), "", &mut d)
}

fn load_action(cx: &mut Cx, doc: &Doc, f: &Path, pack: &str) -> Option<Action> {
    let v = &doc.value;
    let root = cx.root.clone();
    let mut workflow_file: Option<PathBuf> = None;
    let action = {
        let mut d = FileDiags { file: f, doc: Some(doc), out: &mut cx.diags };
        if !as_mapping(v, f, &mut d) {
            return None;
        }
        unknown_keys(v, ACTION_KEYS, "action", &mut d);
        let name = required_str(v, "name", &mut d)?.to_string();
        if !check_pack_field(v, pack, &mut d) {
            return None;
        }
        let runner_name = required_str(v, "runner_type", &mut d)?;
        let Some(runner) = Runner::from_st2(runner_name) else {
            d.error("runner_type", format!("unknown runner {runner_name:?}"));
            return None;
        };
        let own = ParamSchema::from_flat(v.get("parameters").unwrap_or(&Value::Null), "parameters", &mut d);
        let params = ParamSchema::overlay(runner_schema(&runner), own, "parameters", &mut d);
        if !params.check_positions("parameters", &mut d) {
            return None;
        }
        for p in &params.params {
            if p.immutable && p.default.is_none() && v.pointer(&format!("/parameters/{}/default", p.name)).is_none() {
                d.error(&join(&join("parameters", &p.name), "immutable"), "an immutable parameter needs a default");
                return None;
            }
        }
        let entry = str_field(v, "entry_point").unwrap_or("");
        let actions_dir = root.join("actions");
        let entry_point = if entry.is_empty() {
            if runner.needs_entry_point() {
                d.error("entry_point", format!("is required by runner {}", runner.name()));
                return None;
            }
            None
        } else {
            match cx_resolve(&root, &actions_dir, entry) {
                Ok(p) => Some(p),
                Err(e) => {
                    d.error("entry_point", e);
                    return None;
                }
            }
        };
        if runner.is_workflow() {
            workflow_file = entry_point.clone();
        }
        Action {
            ref_: format!("{pack}.{name}"),
            name,
            pack: pack.to_string(),
            description: str_field(v, "description").unwrap_or_default().to_string(),
            enabled: bool_field(v, "enabled", true, &mut d),
            runner,
            entry_point,
            parameters: params,
            output_schema: v.get("output_schema").cloned().filter(|o| !o.is_null()),
            timeout: None,
            workflow: None,
            attune: None,
            metadata_file: f.to_path_buf(),
        }
    };
    let mut action = action;
    if let Some(wf) = workflow_file {
        let kind =
            if action.runner == Runner::ActionChain { WorkflowKind::ActionChain } else { WorkflowKind::Orquesta };
        action.workflow = Some(load_workflow(cx, &wf, kind)?);
    }
    Some(action)
}

fn cx_resolve(root: &Path, base: &Path, rel: &str) -> Result<PathBuf, String> {
    let cx = Cx::new(root);
    cx.resolve_inside(base, rel)
}

/// Parse a workflow file an action points to; kept for the workflow runner.
pub fn load_workflow(cx: &mut Cx, file: &Path, kind: WorkflowKind) -> Option<Workflow> {
    if !file.exists() {
        cx.file_error(file, Severity::Error, "workflow file named by entry_point does not exist".into(), None);
        return None;
    }
    let doc = cx.read(file)?;
    let mut d = cx.at(file, Some(&doc));
    let ok = match kind {
        WorkflowKind::ActionChain => check_chain(&doc.value, &mut d),
        WorkflowKind::Orquesta => check_orquesta(&doc.value, &mut d),
        WorkflowKind::Attune => {
            doc.value.get("tasks").is_some() || {
                d.error("tasks", "is required in a workflow");
                false
            }
        }
    };
    ok.then(|| Workflow { kind, file: file.to_path_buf(), definition: doc.value })
}

fn check_chain(v: &Value, d: &mut FileDiags) -> bool {
    let Some(chain) = v.get("chain").and_then(Value::as_array) else {
        d.error("chain", "is required and must be a list of tasks");
        return false;
    };
    let names: HashSet<&str> = chain.iter().filter_map(|n| str_field(n, "name")).collect();
    for (i, node) in chain.iter().enumerate() {
        let f = format!("chain.{i}");
        if str_field(node, "name").is_none() {
            d.error(&join(&f, "name"), "is required");
            return false;
        }
        if str_field(node, "ref").is_none() {
            d.error(&join(&f, "ref"), "is required");
            return false;
        }
        for t in ["on-success", "on-failure"] {
            if let Some(target) = str_field(node, t)
                && !target.contains("{{")
                && !names.contains(target)
            {
                // st2 registers such chains and fails them when they run; so does packd.
                d.warn(
                    &join(&f, t),
                    format!("names task {target:?}, which is not in the chain; the chain fails if it gets there"),
                );
            }
        }
    }
    true
}

fn check_orquesta(v: &Value, d: &mut FileDiags) -> bool {
    if v.get("version").is_none() {
        d.warn("version", "is required by Orquesta (version: 1.0)");
    }
    match v.get("tasks") {
        Some(Value::Object(_)) => true,
        _ => {
            d.error("tasks", "is required and must be a mapping of task names to tasks");
            false
        }
    }
}

fn load_sensor(cx: &mut Cx, doc: &Doc, f: &Path, pack: &mut Pack) {
    let v = &doc.value;
    let root = cx.root.clone();
    let mut d = FileDiags { file: f, doc: Some(doc), out: &mut cx.diags };
    if !as_mapping(v, f, &mut d) || !check_pack_field(v, &pack.ref_, &mut d) {
        return;
    }
    let Some(class_name) = required_str(v, "class_name", &mut d).map(str::to_string) else {
        return;
    };
    let Some(entry) = required_str(v, "entry_point", &mut d) else {
        return;
    };
    let base = f.parent().unwrap_or(&root).to_path_buf();
    let entry_point = match cx_resolve(&root, &base, entry) {
        Ok(p) => p,
        Err(e) => {
            d.error("entry_point", e);
            return;
        }
    };
    let poll_interval = match v.get("poll_interval") {
        None | Some(Value::Null) => None,
        Some(p) => match p.as_f64() {
            Some(x) if x >= MIN_POLL_INTERVAL as f64 => Some(x as u64),
            Some(x) => {
                d.error(
                    "poll_interval",
                    format!("{x} is below the minimum possible poll_interval of {MIN_POLL_INTERVAL} seconds"),
                );
                return;
            }
            None => {
                d.error("poll_interval", format!("must be a number of seconds, found {p}"));
                return;
            }
        },
    };
    let mut trigger_refs = Vec::new();
    if let Some(list) = v.get("trigger_types") {
        match list.as_array() {
            Some(items) => {
                for (i, t) in items.iter().enumerate() {
                    if let Some(tt) = trigger_type(t, &format!("trigger_types.{i}"), &pack.ref_, f, &mut d) {
                        trigger_refs.push(tt.ref_.clone());
                        push_unique(&mut pack.triggers, tt, |t| &t.ref_, f, &mut d, "trigger type");
                    }
                }
            }
            None => d.error("trigger_types", "must be a list"),
        }
    }
    let kind = if entry.ends_with(".py") { SensorKind::St2Python } else { SensorKind::JsonLines };
    let sensor = Sensor {
        ref_: format!("{}.{class_name}", pack.ref_),
        pack: pack.ref_.clone(),
        class_name: Some(class_name),
        description: str_field(v, "description").unwrap_or_default().to_string(),
        enabled: bool_field(v, "enabled", true, &mut d),
        entry_point,
        kind,
        poll_interval,
        trigger_types: trigger_refs,
        metadata_file: f.to_path_buf(),
    };
    push_unique(&mut pack.sensors, sensor, |s| &s.ref_, f, &mut d, "sensor");
}

fn trigger_type(v: &Value, field: &str, pack: &str, f: &Path, d: &mut FileDiags) -> Option<TriggerType> {
    if !v.is_object() {
        d.error(field, "a trigger type must be a mapping");
        return None;
    }
    let name = match v.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            d.error(&join(field, "name"), "is required");
            return None;
        }
    };
    if let Some(Value::String(p)) = v.get("pack")
        && p != pack
    {
        d.error(&join(field, "pack"), format!("is {p:?} but the file is in pack {pack:?}"));
        return None;
    }
    let schema = |k: &str, d: &mut FileDiags| match v.get(k) {
        None | Some(Value::Null) => json!({}),
        Some(s @ Value::Object(_)) => s.clone(),
        Some(other) => {
            d.warn(&join(field, k), format!("must be a mapping (a JSON schema), found {other}; ignored"));
            json!({})
        }
    };
    Some(TriggerType {
        ref_: format!("{pack}.{name}"),
        pack: pack.to_string(),
        name,
        description: str_field(v, "description").unwrap_or_default().to_string(),
        parameters_schema: schema("parameters_schema", d),
        payload_schema: schema("payload_schema", d),
        metadata_file: f.to_path_buf(),
    })
}

fn load_rule(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<Rule> {
    if !as_mapping(v, f, d) {
        return None;
    }
    unknown_keys(v, RULE_KEYS, "rule", d);
    let name = required_str(v, "name", d)?.to_string();
    if !check_pack_field(v, pack, d) {
        return None;
    }
    let Some(trigger) = v.get("trigger").filter(|t| t.is_object()) else {
        d.error("trigger", "is required: {type: <trigger ref>, parameters: {...}}");
        return None;
    };
    let Some(trigger_ref) = str_field(trigger, "type") else {
        d.error("trigger.type", "is required");
        return None;
    };
    let trigger_parameters = trigger.get("parameters").cloned().filter(|p| !p.is_null()).unwrap_or(json!({}));
    if !trigger_parameters.is_object() {
        d.error("trigger.parameters", "must be a mapping");
        return None;
    }
    if !super::check_trigger_parameters(trigger_ref, &trigger_parameters, "trigger.parameters", d) {
        return None;
    }
    let Some(action) = v.get("action").filter(|a| a.is_object()) else {
        d.error("action", "is required: {ref: <action ref>, parameters: {...}}");
        return None;
    };
    if let Some(obj) = action.as_object() {
        for k in obj.keys() {
            if !["ref", "parameters", "description"].contains(&k.as_str()) {
                d.warn(
                    &join("action", k),
                    format!("unknown key {k:?} in a rule's action; StackStorm rejects it, packd ignores it"),
                );
            }
        }
    }
    let Some(action_ref) = str_field(action, "ref") else {
        d.error("action.ref", "is required");
        return None;
    };
    let action_parameters = action.get("parameters").cloned().filter(|p| !p.is_null()).unwrap_or(json!({}));
    let criteria = match v.get("criteria") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c.clone(),
        Some(other) => {
            d.error("criteria", format!("must be a mapping, found {other}"));
            return None;
        }
    };
    for (key, c) in &criteria {
        let f = join("criteria", key);
        let Some(op) = str_field(c, "type") else {
            d.error(&join(&f, "type"), "every criterion needs a type (the operator)");
            return None;
        };
        if !crate::expr::is_operator(op) {
            d.error(
                &join(&f, "type"),
                format!("unknown operator {op:?}; known: {}", crate::expr::OPERATORS.join(", ")),
            );
            return None;
        }
        if c.get("pattern").is_none_or(Value::is_null) {
            d.error(&join(&f, "pattern"), "every criterion needs a non-null pattern (even exists/nexists)");
            return None;
        }
        if op == "search" {
            if !c.get("pattern").is_some_and(Value::is_object) {
                d.error(&join(&f, "pattern"), "a search pattern must be a mapping of item criteria");
                return None;
            }
            if let Some(cond) = str_field(c, "condition")
                && !["any", "all", "all2any", "any2any"].contains(&cond)
            {
                d.error(
                    &join(&f, "condition"),
                    format!("unknown search condition {cond:?}; expected any, all, all2any or any2any"),
                );
                return None;
            }
        }
    }
    let backstop = match v.pointer("/type/ref").and_then(Value::as_str) {
        None | Some("standard") => false,
        Some("backstop") => true,
        Some(other) => {
            d.error("type.ref", format!("unknown rule type {other:?}; expected standard or backstop"));
            return None;
        }
    };
    Some(Rule {
        ref_: format!("{pack}.{name}"),
        pack: pack.to_string(),
        name,
        description: str_field(v, "description").unwrap_or_default().to_string(),
        // StackStorm: rules are disabled unless `enabled: true` is written.
        enabled: bool_field(v, "enabled", false, d),
        trigger: trigger_ref.to_string(),
        trigger_parameters,
        matcher: Matcher::Criteria(criteria),
        action: action_ref.to_string(),
        action_parameters,
        backstop,
        metadata_file: f.to_path_buf(),
    })
}

fn load_alias(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<Alias> {
    if !as_mapping(v, f, d) {
        return None;
    }
    unknown_keys(v, ALIAS_KEYS, "alias", d);
    let name = required_str(v, "name", d)?.to_string();
    if !check_pack_field(v, pack, d) {
        return None;
    }
    let action = required_str(v, "action_ref", d)?.to_string();
    let mut formats = Vec::new();
    if let Some(list) = v.get("formats") {
        let Some(items) = list.as_array() else {
            d.error("formats", "must be a list");
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            let fld = format!("formats.{i}");
            let fmt = match item {
                Value::String(s) => AliasFormat {
                    display: s.clone(),
                    representations: vec![s.clone()],
                    match_multiple: false,
                    params: Vec::new(),
                },
                Value::Object(o) => {
                    let display = o.get("display").and_then(Value::as_str).unwrap_or("").to_string();
                    let representations = match o.get("representation") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::String(s)) => vec![s.clone()],
                        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                        Some(other) => {
                            d.error(
                                &join(&fld, "representation"),
                                format!("must be a string or a list of strings, found {other}"),
                            );
                            return None;
                        }
                    };
                    AliasFormat {
                        display,
                        representations,
                        match_multiple: o.get("match_multiple").and_then(Value::as_bool).unwrap_or(false),
                        params: Vec::new(),
                    }
                }
                other => {
                    d.error(&fld, format!("must be a string or {{display, representation}}, found {other}"));
                    return None;
                }
            };
            let mut fmt = fmt;
            let mut params = Vec::new();
            for r in &fmt.representations {
                for p in alias_params(r) {
                    if !params.iter().any(|q: &AliasParam| q.name == p.name) {
                        params.push(p);
                    }
                }
            }
            fmt.params = params;
            formats.push(fmt);
        }
    }
    Some(Alias {
        ref_: format!("{pack}.{name}"),
        pack: pack.to_string(),
        name,
        description: str_field(v, "description").unwrap_or_default().to_string(),
        enabled: bool_field(v, "enabled", true, d),
        action,
        formats,
        ack: v.get("ack").cloned().unwrap_or(Value::Null),
        result: v.get("result").cloned().unwrap_or(Value::Null),
        immutable_parameters: v.get("immutable_parameters").cloned().unwrap_or(json!({})),
        metadata_file: f.to_path_buf(),
    })
}

/// `{{ name }}` and `{{ name = default }}` placeholders of an alias format, in order.
pub fn alias_params(format: &str) -> Vec<AliasParam> {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\{\{\s*(\w+)\s*(?:=\s*(.*?))?\s*\}\}").expect("static regex"));
    re.captures_iter(format)
        .map(|c| AliasParam {
            name: c[1].to_string(),
            default: c.get(2).map(|m| m.as_str().trim().trim_matches(|q| q == '"' || q == '\'').to_string()),
        })
        .collect()
}

fn load_policy(v: &Value, pack: &str, f: &Path, d: &mut FileDiags) -> Option<Policy> {
    if !as_mapping(v, f, d) {
        return None;
    }
    unknown_keys(v, POLICY_KEYS, "policy", d);
    let name = required_str(v, "name", d)?.to_string();
    if !check_pack_field(v, pack, d) {
        return None;
    }
    let resource = required_str(v, "resource_ref", d)?.to_string();
    let ptype = required_str(v, "policy_type", d)?;
    let params = v.get("parameters").cloned().unwrap_or(json!({}));
    let num = |k: &str, d: &mut FileDiags| -> Option<Option<f64>> {
        match params.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(x) => match x.as_f64() {
                Some(n) => Some(Some(n)),
                None => {
                    d.error(&join("parameters", k), format!("must be a number, found {x}"));
                    None
                }
            },
        }
    };
    let kind = match ptype {
        "action.concurrency" | "action.concurrency.attr" => {
            let Some(threshold) = num("threshold", d)? else {
                d.error("parameters.threshold", "is required");
                return None;
            };
            let cancel = match str_field(&params, "action") {
                None | Some("delay") => false,
                Some("cancel") => true,
                Some(other) => {
                    d.error("parameters.action", format!("must be delay or cancel, found {other:?}"));
                    return None;
                }
            };
            let attributes: Vec<String> = params
                .get("attributes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            if ptype == "action.concurrency.attr" && attributes.is_empty() {
                d.error("parameters.attributes", "is required for action.concurrency.attr");
                return None;
            }
            PolicyKind::Concurrency { threshold: threshold.max(0.0) as u64, cancel, attributes }
        }
        "action.retry" => {
            let on_timeout = match str_field(&params, "retry_on") {
                Some("failure") => false,
                Some("timeout") => true,
                other => {
                    d.error("parameters.retry_on", format!("must be failure or timeout, found {other:?}"));
                    return None;
                }
            };
            let max = num("max_retry_count", d)?.unwrap_or(2.0);
            if !(0.0..=5.0).contains(&max) {
                d.error("parameters.max_retry_count", format!("must be between 0 and 5, found {max}"));
                return None;
            }
            let delay = num("delay", d)?.unwrap_or(0.0);
            if !(0.0..=120.0).contains(&delay) {
                d.error("parameters.delay", format!("must be between 0 and 120 seconds, found {delay}"));
                return None;
            }
            PolicyKind::Retry { on_timeout, max_retry_count: max as u64, delay }
        }
        other => {
            d.error("policy_type", format!("unknown policy type {other:?}; StackStorm has action.concurrency, action.concurrency.attr and action.retry"));
            return None;
        }
    };
    Some(Policy {
        ref_: format!("{pack}.{name}"),
        pack: pack.to_string(),
        name,
        enabled: bool_field(v, "enabled", true, d),
        resource: Some(resource),
        kinds: vec![kind],
        metadata_file: f.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check_ref(manifest: &str, dir: &str, expect: Expect) {
        let v = super::super::yaml::parse(manifest.as_bytes()).unwrap().value;
        let got = match derive_ref(&v, dir) {
            Ok(r) => r,
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn ref_derivation() {
        check_ref("ref: hello_st2\nname: Hello StackStorm\n", "whatever", expect!["hello_st2"]);
        check_ref("name: github\n", "stackstorm-github", expect!["github"]);
        check_ref("name: Git Hub\n", "github", expect!["github"]);
        check_ref(
            "name: Git Hub\n",
            "stackstorm-github",
            expect![[r#"error: pack name "Git Hub" contains invalid characters and ref attribute is not available"#]],
        );
        check_ref(
            "ref: Bad-Ref\n",
            "x",
            expect![[r#"error: ref "Bad-Ref" may contain only lowercase letters, digits and _"#]],
        );
        check_ref("ref: _global\n", "x", expect![[r#"error: "_global" is reserved and cannot be a pack ref"#]]);
    }

    fn check_version(v: &str, expect: Expect) {
        let v = super::super::yaml::parse(format!("v: {v}").as_bytes()).unwrap().value;
        let got = match normalize_version(&v["v"]) {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn versions() {
        check_version("0.1.0", expect!["0.1.0"]);
        check_version("0.2", expect!["0.2.0"]);
        check_version("'1.0.0-rc.1+b5'", expect!["1.0.0-rc.1+b5"]);
        check_version("1.x", expect![[r#"error: "1.x" is not a semantic version (MAJOR.MINOR.PATCH)"#]]);
    }

    #[test]
    fn alias_placeholders() {
        expect![[
            r#"[AliasParam { name: "cmd", default: None }, AliasParam { name: "hosts", default: Some("localhost") }]"#
        ]]
        .assert_eq(&format!("{:?}", alias_params("run {{cmd}} on {{ hosts = \"localhost\" }}")));
    }
}
