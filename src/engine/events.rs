//! Events: trigger instances in, enforcements and executions out.
//!
//! `ingest` is the one door every event source uses (timers, webhooks, sensors, internal
//! triggers): it validates the payload against the trigger type's payload schema and stores the
//! trigger instance durably before anyone is told "accepted". Processing then matches rules
//! (StackStorm criteria or Attune conditions), renders the action parameters, and creates the
//! enforcement and its execution in one transaction, so that replaying an instance after a
//! crash (instances still `pending`/`processing` at start) can never run an action twice.
//!
//! Architecture invariant: an execution started by a rule always has an enforcement row, and
//! `UNIQUE(rule, trigger instance)` is what makes processing exactly-once.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Agent, exec, kv::StoreKv, params};
use crate::expr::TemplateEnv;
use crate::pack::{Matcher, Pack, Rule};
use crate::registry::{Registry, WEBHOOK_TRIGGER, normalize_hook};
use crate::store::{
    Completion, Enforced, EnforcementStatus, ExecStatus, NewEnforcement, NewExecution, NewTriggerInstance, Store,
    TiSource, TiStatus, TriggerInstance,
};

/// The trigger every finished execution emits (when some rule listens for it).
pub const ACTION_TRIGGER: &str = "core.st2.generic.actiontrigger";

/// Trigger instances processed at once. Each holds a blocking-pool thread while rules are
/// matched and parameters rendered; more than this only queues in memory.
pub const MAX_PARALLEL_INSTANCES: usize = 32;

/// Pending instances read per page during crash recovery.
pub const RECOVERY_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown trigger {0:?}")]
    UnknownTrigger(String),
    #[error("payload does not match the schema of trigger {trigger}: {reason}")]
    Invalid { trigger: String, reason: String },
    #[error("the agent is overloaded; try again")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

/// One trigger instance to process, as queued after ingest.
#[derive(Clone, Debug)]
pub struct Pending {
    pub id: i64,
    pub trigger: String,
    pub payload: Value,
    pub target: Option<String>,
    pub occurred_at: i64,
}

impl From<TriggerInstance> for Pending {
    fn from(t: TriggerInstance) -> Pending {
        Pending { id: t.id, trigger: t.trigger_ref, payload: t.payload, target: t.target, occurred_at: t.occurred_at }
    }
}

/// Validate a payload against the trigger type's payload schema (when the type is known).
pub fn check_payload(reg: &Registry, trigger: &str, payload: &Value) -> Result<(), IngestError> {
    let Some(tt) = reg.trigger_type(trigger) else {
        return Ok(());
    };
    if tt.payload_schema.as_object().is_none_or(|o| o.is_empty()) {
        return Ok(());
    }
    let mut errors = Vec::new();
    crate::pack::schema::validate_value(payload, &tt.payload_schema, "payload", 0, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(IngestError::Invalid { trigger: trigger.to_string(), reason: errors.join("; ") })
    }
}

impl Agent {
    /// Store an event durably and queue it for the rules engine. Resolves after COMMIT.
    pub async fn ingest(
        &self,
        trigger: &str,
        payload: Value,
        source: TiSource,
        target: Option<String>,
    ) -> Result<i64, IngestError> {
        let reg = self.registry();
        check_payload(&reg, trigger, &payload)?;
        let new = NewTriggerInstance {
            trigger_ref: trigger.to_string(),
            payload: payload.clone(),
            source,
            occurred_at: None,
            target: target.clone(),
        };
        let id = match self.store.try_insert_trigger_instance(new).await {
            Ok(id) => id,
            Err(crate::store::StoreError::Busy { .. }) => return Err(IngestError::Busy),
            Err(e) => return Err(IngestError::Internal(e.to_string())),
        };
        self.metrics.borrow_mut().events_accepted += 1;
        let _ = self.events.try_send(Pending {
            id,
            trigger: trigger.to_string(),
            payload,
            target,
            occurred_at: self.store.now(),
        });
        Ok(id)
    }

    /// Whether any enabled rule listens on `trigger` (internal triggers are only stored when
    /// someone listens, so every execution does not cost a second write).
    pub fn has_listeners(&self, trigger: &str) -> bool {
        self.registry().rules_for(trigger).next().is_some()
    }
}

/// The rules loop: process queued instances, several at once.
pub async fn rules_loop(agent: Rc<Agent>, rx: smol::channel::Receiver<Pending>) {
    let slots = std::sync::Arc::new(smol::lock::Semaphore::new(MAX_PARALLEL_INSTANCES));
    while let Ok(p) = rx.recv().await {
        let guard = slots.acquire_arc().await;
        let a = agent.clone();
        agent
            .ex
            .spawn(async move {
                process(&a, p).await;
                drop(guard);
            })
            .detach();
    }
}

/// Requeue every instance that was accepted but not fully processed when the agent stopped.
pub async fn recover(agent: &Rc<Agent>) -> usize {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = match agent.store.pending_trigger_instances(after, RECOVERY_PAGE).await {
            Ok(p) => p,
            Err(e) => {
                crate::log_error!("cannot read pending trigger instances: {e}");
                return n;
            }
        };
        if page.is_empty() {
            return n;
        }
        for t in page {
            after = t.id;
            n += 1;
            let _ = agent.events.try_send(Pending::from(t));
        }
    }
}

/// What rule matching decided for one rule, computed off the executor.
enum Decision {
    /// Criteria failed to evaluate: a failed enforcement with the reason, nothing runs.
    Broken { rule: String, reason: String },
    /// Matched; parameters resolved (or not: the execution is then recorded as failed).
    Run(Box<Run>),
}

/// A matched rule, ready to become an enforcement and an execution.
struct Run {
    rule: String,
    action: String,
    pack: Option<Arc<Pack>>,
    resolved: Result<params::Resolved, String>,
    context: Value,
    runner: String,
}

fn candidates<'a>(reg: &'a Registry, p: &Pending) -> Vec<(&'a Arc<Pack>, &'a Rule)> {
    reg.rules_for(&p.trigger)
        .filter(|(_, r)| match &p.target {
            None => true,
            Some(t) if p.trigger == WEBHOOK_TRIGGER => {
                r.trigger_parameters.get("url").and_then(Value::as_str).map(normalize_hook).as_deref()
                    == Some(t.as_str())
            }
            Some(t) if crate::timers::is_timer_trigger(&p.trigger) => &r.ref_ == t,
            Some(_) => true,
        })
        .collect()
}

fn matches(rule: &Rule, p: &Pending, env: &TemplateEnv, kv: &StoreKv) -> Result<bool, String> {
    match &rule.matcher {
        Matcher::Criteria(c) => crate::expr::evaluate(c, &p.payload, env, Some(kv))
            .map_err(|e| format!("There might be a problem with the criteria in rule {}: {e}", rule.ref_)),
        Matcher::Conditions(c) => Ok(crate::expr::evaluate_attune(c, &attune_event(p), env)),
    }
}

fn attune_event(p: &Pending) -> Value {
    json!({
        "id": p.id,
        "trigger": p.trigger,
        "trigger_ref": p.trigger,
        "payload": p.payload,
        "created": super::time(p.occurred_at),
    })
}

fn decide(reg: &Registry, p: &Pending, env: &TemplateEnv, store: &Store) -> Vec<Decision> {
    let kv = StoreKv(store.clone());
    let rules = candidates(reg, p);
    let mut out = Vec::new();
    let mut standard_matched = false;
    for pass_backstop in [false, true] {
        if pass_backstop && standard_matched {
            break;
        }
        for (rule_pack, rule) in rules.iter().filter(|(_, r)| r.backstop == pass_backstop) {
            match matches(rule, p, env, &kv) {
                Ok(false) => continue,
                Err(reason) => {
                    out.push(Decision::Broken { rule: rule.ref_.clone(), reason });
                    continue;
                }
                Ok(true) => {}
            }
            standard_matched |= !pass_backstop;
            let context = json!({
                "user": "stanley",
                "rule": {"ref": rule.ref_, "name": rule.name},
                "trigger_instance": {"id": p.id, "name": p.trigger},
                "source": "rule",
            });
            let Some((action_pack, action)) = reg.action(&rule.action) else {
                out.push(Decision::Run(Box::new(Run {
                    rule: rule.ref_.clone(),
                    action: rule.action.clone(),
                    pack: None,
                    resolved: Err(format!("Action {} doesn't exist", rule.action)),
                    context,
                    runner: String::new(),
                })));
                continue;
            };
            let supplied = rule.action_parameters.as_object().cloned().unwrap_or_default();
            let mut extra = Map::new();
            extra.insert("event".into(), attune_event(p));
            extra.insert("pack".into(), json!({"ref": rule_pack.ref_, "config": rule_pack.config}));
            let cx = params::Context {
                trigger: Some(p.payload.clone()),
                action_context: json!({"user": "stanley", "pack": action_pack.ref_, "rule": rule.ref_, "trigger_instance": p.id}),
                config: action_pack.config.clone(),
                extra,
            };
            let resolved = if action.enabled {
                params::dynamic_config(&action_pack.config, &action_pack.config_schema, env, Some(&kv)).and_then(
                    |config| {
                        let cx = params::Context { config, ..cx };
                        params::resolve(action, supplied, &cx, env, Some(&kv)).map_err(|e| e.to_string())
                    },
                )
            } else {
                Err(format!("Unable to execute. Action {} is disabled.", action.ref_))
            };
            out.push(Decision::Run(Box::new(Run {
                rule: rule.ref_.clone(),
                action: action.ref_.clone(),
                pack: Some(action_pack.clone()),
                resolved,
                context,
                runner: action.runner.name().to_string(),
            })));
        }
    }
    out
}

async fn process(agent: &Rc<Agent>, p: Pending) {
    let reg = agent.registry();
    let _ = agent.store.set_trigger_instance_status(p.id, TiStatus::Processing).await;
    let decisions = {
        let (reg2, p2, env, store) = (reg.clone(), p.clone(), agent.templates.clone(), agent.store.clone());
        smol::unblock(move || decide(&reg2, &p2, &env, &store)).await
    };
    for d in decisions {
        match d {
            Decision::Broken { rule, reason } => {
                crate::log_warn!("rule {rule} on trigger instance {}: {reason}", p.id);
                let _ = agent
                    .store
                    .create_enforcement_with_execution(NewEnforcement {
                        rule_ref: rule,
                        trigger_instance_id: p.id,
                        status: EnforcementStatus::Failed,
                        failure_reason: Some(reason),
                        execution: None,
                    })
                    .await;
            }
            Decision::Run(run) => {
                let Run { rule, action, pack, resolved, context, runner } = *run;
                let masked = match &resolved {
                    Ok(r) => Value::Object(r.masked.clone()),
                    Err(_) => json!({}),
                };
                let created = agent
                    .store
                    .create_enforcement_with_execution(NewEnforcement {
                        rule_ref: rule.clone(),
                        trigger_instance_id: p.id,
                        status: if resolved.is_ok() { EnforcementStatus::Succeeded } else { EnforcementStatus::Failed },
                        failure_reason: resolved.as_ref().err().cloned(),
                        execution: Some(NewExecution {
                            action_ref: action.clone(),
                            runner,
                            // Resolved executions go straight to `scheduled`: one commit less
                            // on the webhook → command path.
                            status: if resolved.is_ok() { ExecStatus::Scheduled } else { ExecStatus::Requested },
                            parameters: masked,
                            context,
                            parent_id: None,
                        }),
                    })
                    .await;
                let exec_id = match created {
                    Ok(Enforced::Created { execution_id: Some(id), .. }) => id,
                    Ok(Enforced::AlreadyEnforced { .. }) => {
                        crate::log_debug!("rule {rule} already enforced for trigger instance {}", p.id);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        crate::log_error!("rule {rule}: cannot record the enforcement: {e}");
                        continue;
                    }
                };
                match (resolved, pack) {
                    (Ok(r), Some(pack)) => {
                        let reg_now = agent.registry();
                        let Some((_, a)) = reg_now.action(&action).or_else(|| reg.action(&action)) else {
                            continue;
                        };
                        let a = a.clone();
                        crate::log_info!("rule {rule} matched trigger instance {}: execution {exec_id} {action}", p.id);
                        let origin =
                            exec::Origin { rule: Some(rule.clone()), trigger: Some(p.trigger.clone()), attempt: 0 };
                        agent.ex.spawn(exec::run(agent.clone(), exec_id, pack, a, r.values, origin)).detach();
                    }
                    (resolved, _) => {
                        let reason = resolved.err().unwrap_or_else(|| format!("Action {action} doesn't exist"));
                        crate::log_warn!("rule {rule}: execution {exec_id} failed before start: {reason}");
                        let _ = agent
                            .store
                            .complete_execution(
                                exec_id,
                                Completion {
                                    status: ExecStatus::Failed,
                                    result: Some(json!({"error": reason})),
                                    stdout: String::new(),
                                    stderr: String::new(),
                                    exit_code: None,
                                    error: Some(reason),
                                    finished_at: None,
                                },
                            )
                            .await;
                        agent.after_execution(exec_id).await;
                    }
                }
            }
        }
    }
    let _ = agent.store.set_trigger_instance_status(p.id, TiStatus::Processed).await;
}

impl Agent {
    /// After an execution finished: wake waiters, emit the action trigger if anyone listens.
    pub async fn after_execution(self: &Rc<Self>, id: i64) {
        self.finished(id).await;
        if !self.has_listeners(ACTION_TRIGGER) {
            return;
        }
        let Ok(Some(e)) = self.store.get_execution(id).await else {
            return;
        };
        let payload = json!({
            "execution_id": e.id.to_string(),
            "status": e.status.as_str(),
            "start_timestamp": e.started_at.map(super::time),
            "action_name": e.action_ref.split_once('.').map(|x| x.1).unwrap_or(&e.action_ref),
            "action_ref": e.action_ref,
            "runner_ref": e.runner,
            "parameters": e.parameters,
            "result": e.result,
        });
        if let Err(err) = self.ingest(ACTION_TRIGGER, payload, TiSource::Internal, None).await {
            crate::log_warn!("cannot emit {ACTION_TRIGGER} for execution {id}: {err}");
        }
    }
}
