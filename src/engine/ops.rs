//! What each admin request does. The admin module frames requests; this maps them onto the
//! agent (run, executions, actions, datastore). Every answer is JSON; secrets are masked unless
//! a datastore request asks to decrypt.

use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::{Agent, RequestError, exec, execution_json};
use crate::admin::{Handler, OpError, OpFuture};
use crate::expr::cli_cast;
use crate::store::{ExecStatus, ExecutionFilter, KvFilter, KvSet};

pub struct Ops {
    pub agent: Rc<Agent>,
}

impl Handler for Ops {
    fn handle(self: Rc<Self>, req: Value) -> OpFuture {
        Box::pin(async move {
            let op = req.get("op").and_then(Value::as_str).unwrap_or("").to_string();
            match op.as_str() {
                "ping" => Ok(json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()})),
                "run" => self.run(&req).await,
                "execution.get" => self.execution_get(&req).await,
                "execution.list" => self.execution_list(&req).await,
                "execution.cancel" => self.execution_cancel(&req).await,
                "action.list" => Ok(self.action_list()),
                "action.get" => self.action_get(&req),
                "kv.get" => self.kv_get(&req).await,
                "kv.set" => self.kv_set(&req).await,
                "kv.delete" => self.kv_delete(&req).await,
                "kv.list" => self.kv_list(&req).await,
                "trigger.list" => Ok(self.trigger_list()),
                "pack.list" => Ok(self.pack_list()),
                "alias.list" => Ok(self.alias_list()),
                "alias.match" => self.alias_match(&req).map(|(m, _)| m),
                "alias.run" => self.alias_run(&req).await,
                "sensor.list" => Ok(self.sensor_list()),
                "sensor.get" => self.sensor_get(&req),
                "sensor.restart" => self.sensor_restart(&req),
                "pack.get" => self.pack_get(&req).await,
                "pack.reload" => self.pack_reload(&req).await,
                "rule.list" => Ok(self.rule_list(&req)),
                "rule.get" => self.rule_get(&req),
                "rule.enable" => self.rule_set(&req, true).await,
                "rule.disable" => self.rule_set(&req, false).await,
                "webhook.list" => Ok(self.webhook_list()),
                "trigger_instance.list" => self.ti_list(&req).await,
                "trigger_instance.get" => self.ti_get(&req).await,
                other => Err(OpError::invalid(format!("unknown op {other:?}"))),
            }
        })
    }
}

fn str_arg<'a>(req: &'a Value, key: &str) -> Result<&'a str, OpError> {
    req.get(key).and_then(Value::as_str).ok_or_else(|| OpError::invalid(format!("{key:?} is required")))
}

fn id_arg(req: &Value) -> Result<i64, OpError> {
    match req.get("id") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| OpError::invalid("id must be a whole number")),
        Some(Value::String(s)) => {
            s.trim().parse().map_err(|_| OpError::invalid(format!("{s:?} is not an execution id")))
        }
        _ => Err(OpError::invalid("\"id\" is required")),
    }
}

fn store_err(e: crate::store::StoreError) -> OpError {
    OpError::internal(e.to_string())
}

/// StackStorm scope names (`st2kv.system`, `system`, `st2kv.user`, `user`) → the store's.
fn scope(req: &Value) -> Result<&'static str, OpError> {
    match req.get("scope").and_then(Value::as_str).unwrap_or("system") {
        "system" | "st2kv.system" => Ok(super::kv::SCOPE_SYSTEM),
        "user" | "st2kv.user" => Ok(super::kv::SCOPE_USER),
        other => Err(OpError::invalid(format!("unknown scope {other:?}; use system or user"))),
    }
}

impl Ops {
    async fn run(&self, req: &Value) -> Result<Value, OpError> {
        let action_ref = str_arg(req, "action")?;
        let reg = self.agent.registry();
        let (_, action) =
            reg.action(action_ref).ok_or_else(|| OpError::not_found(format!("action {action_ref:?} not found")))?;
        let mut supplied: Map<String, Value> = match req.get("parameters") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(OpError::invalid("\"parameters\" must be an object")),
        };
        // Raw `key=value` words from the CLI, cast by the parameter's declared type the way
        // `st2 run` does (repeated keys append for arrays).
        if let Some(Value::Array(args)) = req.get("args") {
            for pair in args {
                let (Some(k), Some(v)) = (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str))
                else {
                    return Err(OpError::invalid("args must be [key, value] pairs"));
                };
                let ty = action.parameters.get(k).and_then(|p| p.ty).map(|t| t.as_str());
                let previous = supplied.remove(k);
                let cast = cli_cast(ty, v, previous).map_err(|e| OpError::invalid(format!("parameter {k:?}: {e}")))?;
                supplied.insert(k.to_string(), cast);
            }
        }
        let user = req.get("user").and_then(Value::as_str).unwrap_or("stanley").to_string();
        let context = json!({"user": user, "source": "cli"});
        let id =
            self.agent.request(action_ref, supplied, context, exec::Origin::default()).await.map_err(|e| match e {
                RequestError::NotFound(m) => OpError::not_found(format!("action {m:?} not found")),
                RequestError::Invalid(m) => OpError::invalid(m),
                RequestError::Internal(m) => OpError::internal(m),
            })?;
        if req.get("wait").and_then(Value::as_bool).unwrap_or(true) {
            self.agent.wait(id).await;
        }
        self.get(id).await
    }

    async fn get(&self, id: i64) -> Result<Value, OpError> {
        match self.agent.store.get_execution(id).await.map_err(store_err)? {
            Some(e) => {
                let mut v = execution_json(&e);
                v["stdout"] = Value::String(e.stdout);
                v["stderr"] = Value::String(e.stderr);
                Ok(v)
            }
            None => Err(OpError::not_found(format!("execution {id} not found"))),
        }
    }

    async fn execution_get(&self, req: &Value) -> Result<Value, OpError> {
        self.get(id_arg(req)?).await
    }

    async fn execution_list(&self, req: &Value) -> Result<Value, OpError> {
        let status = match req.get("status").and_then(Value::as_str) {
            Some(s) => Some(ExecStatus::parse(s).ok_or_else(|| OpError::invalid(format!("unknown status {s:?}")))?),
            None => None,
        };
        let filter = ExecutionFilter {
            action_ref: req.get("action").and_then(Value::as_str).map(str::to_string),
            status,
            limit: req.get("limit").and_then(Value::as_u64).unwrap_or(50) as usize,
            ..ExecutionFilter::default()
        };
        let list = self.agent.store.list_executions(filter).await.map_err(store_err)?;
        Ok(Value::Array(
            list.iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "action": e.action_ref,
                        "status": e.status.as_str(),
                        "exit_code": e.exit_code,
                        "created_at": super::time(e.created_at),
                        "started_at": e.started_at.map(super::time),
                        "finished_at": e.finished_at.map(super::time),
                    })
                })
                .collect(),
        ))
    }

    async fn execution_cancel(&self, req: &Value) -> Result<Value, OpError> {
        let id = id_arg(req)?;
        let outcome = self.agent.store.request_cancel(id).await.map_err(|e| match e {
            crate::store::StoreError::NotFound { .. } => OpError::not_found(format!("execution {id} not found")),
            other => store_err(other),
        })?;
        if let Some(tx) = self.agent.running.borrow().get(&id) {
            let _ = tx.try_send(());
        }
        Ok(json!({"id": id, "outcome": format!("{outcome:?}").to_lowercase()}))
    }

    fn action_list(&self) -> Value {
        let reg = self.agent.registry();
        Value::Array(
            reg.actions()
                .map(|(p, a)| json!({"ref": a.ref_, "pack": p.ref_, "runner": a.runner.name(), "enabled": a.enabled, "description": a.description}))
                .collect(),
        )
    }

    fn action_get(&self, req: &Value) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?;
        let reg = self.agent.registry();
        let (_, a) = reg.action(r).ok_or_else(|| OpError::not_found(format!("action {r:?} not found")))?;
        Ok(json!({
            "ref": a.ref_,
            "pack": a.pack,
            "name": a.name,
            "description": a.description,
            "enabled": a.enabled,
            "runner": a.runner.name(),
            "entry_point": a.entry_point,
            "parameters": a.parameters.to_json_schema(),
            "output_schema": a.output_schema,
            "timeout": a.timeout,
            "metadata_file": a.metadata_file,
        }))
    }

    async fn kv_get(&self, req: &Value) -> Result<Value, OpError> {
        let name = str_arg(req, "name")?;
        let decrypt = req.get("decrypt").and_then(Value::as_bool).unwrap_or(false);
        let e = self.agent.store.kv_get(scope(req)?, name, decrypt).await.map_err(store_err)?;
        if req.get("full").and_then(Value::as_bool) == Some(true) {
            return Ok(e.map(|e| kv_json(&e)).unwrap_or(Value::Null));
        }
        Ok(e.map(|e| Value::String(e.value)).unwrap_or(Value::Null))
    }

    async fn kv_set(&self, req: &Value) -> Result<Value, OpError> {
        let name = str_arg(req, "name")?.to_string();
        let value = match req.get("value") {
            Some(Value::String(s)) => s.clone(),
            // StackStorm stores strings only; other JSON is serialised, as `st2 key load -c` does.
            Some(v) if !v.is_null() => v.to_string(),
            _ => return Err(OpError::invalid("\"value\" is required")),
        };
        let ttl = match req.get("ttl") {
            None | Some(Value::Null) => None,
            Some(t) => Some(std::time::Duration::from_secs(
                t.as_u64()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| OpError::invalid("ttl must be a positive number of seconds"))?,
            )),
        };
        let secret = req.get("secret").and_then(Value::as_bool).unwrap_or(false);
        let change = self
            .agent
            .store
            .kv_set(KvSet { scope: scope(req)?.to_string(), name: name.clone(), value, secret, encrypted: false, ttl })
            .await
            .map_err(|e| OpError::invalid(e.to_string()))?;
        let word = format!("{change:?}").split(['{', ' ', '(']).next().unwrap_or("").to_lowercase();
        let scope_name = scope(req)?;
        let object = json!({"name": name, "scope": scope_name, "secret": secret});
        match &change {
            crate::store::KvChange::Created => self.kv_event("create", json!({"object": object})).await,
            crate::store::KvChange::Updated { value_changed, .. } => {
                self.kv_event("update", json!({"object": object})).await;
                if *value_changed {
                    self.kv_event(
                        "value_change",
                        json!({"old_object": {"name": name, "scope": scope_name}, "new_object": object}),
                    )
                    .await;
                }
            }
        }
        Ok(json!({"name": name, "change": word}))
    }

    async fn kv_delete(&self, req: &Value) -> Result<Value, OpError> {
        let name = str_arg(req, "name")?;
        let gone = self.agent.store.kv_delete(scope(req)?, name).await.map_err(store_err)?;
        if gone.is_none() && req.get("strict").and_then(Value::as_bool) == Some(true) {
            return Err(OpError::not_found(format!("key {name:?} not found")));
        }
        if let Some(e) = &gone {
            self.kv_event("delete", json!({"object": {"name": e.name, "scope": e.scope, "secret": e.secret}})).await;
        }
        Ok(json!({"name": name, "deleted": gone.is_some()}))
    }

    /// `core.st2.key_value_pair.*` (never with a value: secrets must not leak into events).
    async fn kv_event(&self, what: &str, payload: Value) {
        let trigger = format!("core.st2.key_value_pair.{what}");
        if self.agent.has_listeners(&trigger) {
            let _ = self.agent.ingest(&trigger, payload, crate::store::TiSource::Internal, None).await;
        }
    }

    async fn kv_list(&self, req: &Value) -> Result<Value, OpError> {
        let filter = KvFilter {
            scope: Some(scope(req)?.to_string()),
            prefix: req.get("prefix").and_then(Value::as_str).map(str::to_string),
            decrypt: req.get("decrypt").and_then(Value::as_bool).unwrap_or(false),
            ..KvFilter::default()
        };
        let list = self.agent.store.kv_list(filter).await.map_err(store_err)?;
        Ok(Value::Array(list.iter().map(kv_json).collect()))
    }
}

impl Ops {
    fn alias_list(&self) -> Value {
        let reg = self.agent.registry();
        Value::Array(
            reg.packs
                .values()
                .flat_map(|p| p.aliases.iter())
                .map(|a| {
                    let formats: Vec<&str> = a.formats.iter().map(|f| f.display.as_str()).collect();
                    json!({"ref": a.ref_, "action": a.action, "enabled": a.enabled, "formats": formats, "description": a.description})
                })
                .collect(),
        )
    }

    fn alias_match(&self, req: &Value) -> Result<(Value, Map<String, Value>), OpError> {
        let command = str_arg(req, "command")?;
        let reg = self.agent.registry();
        let m = super::alias::find(reg.packs.values().flat_map(|p| p.aliases.iter()), command)
            .map_err(|e| OpError::new("no_match", e.to_string()))?;
        let alias = reg.packs.values().flat_map(|p| p.aliases.iter()).find(|a| a.ref_ == m.alias);
        let immutable = alias.and_then(|a| a.immutable_parameters.as_object().cloned()).unwrap_or_default();
        if let Some(k) = m.params.keys().find(|k| immutable.contains_key(*k)) {
            return Err(OpError::invalid(format!("Immutable arguments cannot be overriden: {k}")));
        }
        let v = json!({"alias": m.alias, "action": m.action, "format": m.format, "parameters": m.params});
        let mut params = m.params;
        params.extend(immutable);
        Ok((v, params))
    }

    async fn alias_run(&self, req: &Value) -> Result<Value, OpError> {
        let (m, params) = self.alias_match(req)?;
        let action_ref = m["action"].as_str().unwrap_or("").to_string();
        let reg = self.agent.registry();
        let (_, action) =
            reg.action(&action_ref).ok_or_else(|| OpError::not_found(format!("action {action_ref:?} not found")))?;
        // Alias values are text; cast them by the action's declared types, as `st2 run` does.
        let mut supplied = Map::new();
        for (k, v) in params {
            let ty = action.parameters.get(&k).and_then(|p| p.ty).map(|t| t.as_str());
            let v = match v {
                Value::String(s) => {
                    cli_cast(ty, &s, None).map_err(|e| OpError::invalid(format!("parameter {k:?}: {e}")))?
                }
                other => other,
            };
            supplied.insert(k, v);
        }
        let context = json!({"user": "stanley", "source": "alias", "alias": m["alias"]});
        let id =
            self.agent.request(&action_ref, supplied, context, exec::Origin::default()).await.map_err(|e| match e {
                RequestError::NotFound(m) => OpError::not_found(format!("action {m:?} not found")),
                RequestError::Invalid(m) => OpError::invalid(m),
                RequestError::Internal(m) => OpError::internal(m),
            })?;
        if req.get("wait").and_then(Value::as_bool).unwrap_or(true) {
            self.agent.wait(id).await;
        }
        let mut e = self.get(id).await?;
        e["alias"] = m;
        Ok(e)
    }

    fn sensor_list(&self) -> Value {
        let reg = self.agent.registry();
        let mut out = Vec::new();
        for (p, s) in reg.sensors() {
            let st = self.agent.sensors().status(&s.ref_);
            let mut v = st.map(|st| st.to_json()).unwrap_or_else(|| json!({"ref": s.ref_, "state": "not running"}));
            v["pack"] = json!(p.ref_);
            v["enabled"] = json!(s.enabled);
            v["kind"] = json!(s.kind);
            v["trigger_types"] = json!(s.trigger_types);
            out.push(v);
        }
        Value::Array(out)
    }

    fn sensor_get(&self, req: &Value) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?;
        self.sensor_list()
            .as_array()
            .and_then(|a| a.iter().find(|s| s["ref"] == r).cloned())
            .ok_or_else(|| OpError::not_found(format!("sensor {r:?} not found")))
    }

    fn sensor_restart(&self, req: &Value) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?;
        self.agent.sensors().restart(r).map_err(|e| OpError::not_found(e.to_string()))?;
        crate::log_info!("sensor {r} restarted on request");
        Ok(json!({"ref": r, "restarted": true}))
    }

    fn pack_json(&self, r: &str) -> Value {
        let reg = self.agent.registry();
        let states = self.agent.pack_states.borrow();
        let st = states.get(r);
        let p = reg.pack(r);
        json!({
            "ref": r,
            "version": p.map(|p| p.version.clone()),
            "dialect": p.map(|p| p.dialect.as_str()),
            "dir": st.map(|s| s.dir.clone()),
            "status": st.map(|s| s.status.as_str()).unwrap_or("loaded"),
            "error": st.and_then(|s| s.error.clone()),
            "digest": st.map(|s| s.digest.clone()),
            "counts": p.map(|p| json!({
                "actions": p.actions.len(), "sensors": p.sensors.len(), "triggers": p.triggers.len(),
                "rules": p.rules.len(), "aliases": p.aliases.len(), "policies": p.policies.len(),
            })),
        })
    }

    fn pack_list(&self) -> Value {
        let refs: Vec<String> = self.agent.pack_states.borrow().keys().cloned().collect();
        Value::Array(refs.iter().map(|r| self.pack_json(r)).collect())
    }

    async fn pack_get(&self, req: &Value) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?;
        if !self.agent.pack_states.borrow().contains_key(r) {
            return Err(OpError::not_found(format!("pack {r:?} not found")));
        }
        let mut v = self.pack_json(r);
        let reloads = self.agent.store.list_reloads(20).await.map_err(store_err)?;
        v["reloads"] = Value::Array(
            reloads
                .iter()
                .filter(|x| x.packs_changed.iter().any(|p| p == r))
                .map(|x| json!({"id": x.id, "at": super::time(x.at), "result": x.result}))
                .collect(),
        );
        Ok(v)
    }

    /// Rescan now (one pack, or all) and answer when the new registry is in place.
    async fn pack_reload(&self, req: &Value) -> Result<Value, OpError> {
        let mut dirs = std::collections::BTreeSet::new();
        match req.get("ref").and_then(Value::as_str) {
            Some(r) => {
                let dir = self.agent.pack_states.borrow().get(r).map(|s| s.dir.clone());
                dirs.insert(dir.ok_or_else(|| OpError::not_found(format!("pack {r:?} not found")))?);
            }
            None => {
                dirs.extend(super::reload::scan_dirs(&self.agent));
                dirs.extend(self.agent.pack_states.borrow().values().map(|s| s.dir.clone()));
            }
        }
        let changed = super::reload::apply(&self.agent, dirs, "pack reload").await;
        Ok(json!({"changed": changed, "packs": self.pack_list()}))
    }

    fn trigger_list(&self) -> Value {
        let reg = self.agent.registry();
        Value::Array(
            reg.trigger_types()
                .map(|t| json!({"ref": t.ref_, "pack": t.pack, "description": t.description, "parameters_schema": t.parameters_schema, "payload_schema": t.payload_schema}))
                .collect(),
        )
    }

    fn rule_json(reg: &crate::registry::Registry, r: &crate::pack::Rule) -> Value {
        let (kind, spec) = match &r.matcher {
            crate::pack::Matcher::Criteria(c) => ("criteria", Value::Object(c.clone())),
            crate::pack::Matcher::Conditions(c) => ("conditions", c.clone()),
        };
        json!({
            "ref": r.ref_,
            "pack": r.pack,
            "name": r.name,
            "description": r.description,
            "enabled": reg.rule_enabled(r),
            "enabled_in_file": r.enabled,
            "trigger": {"type": r.trigger, "parameters": r.trigger_parameters},
            kind: spec,
            "action": {"ref": r.action, "parameters": r.action_parameters},
            "type": if r.backstop { "backstop" } else { "standard" },
            "metadata_file": r.metadata_file,
        })
    }

    fn rule_list(&self, req: &Value) -> Value {
        let reg = self.agent.registry();
        let pack = req.get("pack").and_then(Value::as_str);
        Value::Array(
            reg.rules()
                .filter(|(p, _)| pack.is_none_or(|x| x == p.ref_))
                .map(|(_, r)| Self::rule_json(&reg, r))
                .collect(),
        )
    }

    fn rule_get(&self, req: &Value) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?;
        let reg = self.agent.registry();
        let (_, rule) = reg.rule(r).ok_or_else(|| OpError::not_found(format!("rule {r:?} not found")))?;
        Ok(Self::rule_json(&reg, rule))
    }

    /// Enable or disable a rule without touching its file; the override survives restarts.
    async fn rule_set(&self, req: &Value, enabled: bool) -> Result<Value, OpError> {
        let r = str_arg(req, "ref")?.to_string();
        let reg = self.agent.registry();
        if reg.rule(&r).is_none() {
            return Err(OpError::not_found(format!("rule {r:?} not found")));
        }
        self.agent.store.set_rule_override(r.clone(), enabled).await.map_err(store_err)?;
        let mut overrides = reg.overrides().clone();
        overrides.insert(r.clone(), enabled);
        self.agent.swap_registry(reg.with_overrides(overrides));
        let _ = self.agent.reschedule.try_send(());
        self.agent.resync_sensors(&[]).await;
        crate::log_info!("rule {r} {}", if enabled { "enabled" } else { "disabled" });
        let reg = self.agent.registry();
        let (_, rule) = reg.rule(&r).ok_or_else(|| OpError::not_found(format!("rule {r:?} not found")))?;
        Ok(Self::rule_json(&reg, rule))
    }

    fn webhook_list(&self) -> Value {
        let reg = self.agent.registry();
        Value::Array(
            reg.webhook_urls()
                .map(|u| {
                    let rules: Vec<&str> = reg.webhook_rules(u).map(|(_, r)| r.ref_.as_str()).collect();
                    json!({"url": u, "path": format!("/api/v1/webhooks/{u}"), "rules": rules})
                })
                .collect(),
        )
    }

    async fn ti_list(&self, req: &Value) -> Result<Value, OpError> {
        let filter = crate::store::TriggerInstanceFilter {
            trigger_ref: req.get("trigger").and_then(Value::as_str).map(str::to_string),
            limit: req.get("limit").and_then(Value::as_u64).unwrap_or(50) as usize,
            ..Default::default()
        };
        let list = self.agent.store.list_trigger_instances(filter).await.map_err(store_err)?;
        Ok(Value::Array(list.iter().map(ti_json).collect()))
    }

    async fn ti_get(&self, req: &Value) -> Result<Value, OpError> {
        let id = id_arg(req)?;
        let t = self.agent.store.get_trigger_instance(id).await.map_err(store_err)?;
        let t = t.ok_or_else(|| OpError::not_found(format!("trigger instance {id} not found")))?;
        let enf = self
            .agent
            .store
            .list_enforcements(crate::store::EnforcementFilter { trigger_instance_id: Some(id), ..Default::default() })
            .await
            .map_err(store_err)?;
        let mut v = ti_json(&t);
        v["enforcements"] = Value::Array(
            enf.iter()
                .map(|e| json!({"id": e.id, "rule": e.rule_ref, "execution_id": e.execution_id, "status": e.status.as_str(), "failure_reason": e.failure_reason, "created_at": super::time(e.created_at)}))
                .collect(),
        );
        Ok(v)
    }
}

fn ti_json(t: &crate::store::TriggerInstance) -> Value {
    json!({
        "id": t.id,
        "trigger": t.trigger_ref,
        "target": t.target,
        "payload": t.payload,
        "status": t.status.as_str(),
        "source": t.source.as_str(),
        "occurred_at": super::time(t.occurred_at),
        "processed_at": t.processed_at.map(super::time),
    })
}

fn kv_json(e: &crate::store::KvEntry) -> Value {
    json!({
        "name": e.name,
        "value": e.value,
        "secret": e.secret,
        "scope": e.scope,
        "expire_timestamp": e.expires_at.map(super::time),
        "updated_at": super::time(e.updated_at),
    })
}
