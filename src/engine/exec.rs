//! Running one execution: from "resolved parameters" to a stored result.
//!
//! Picks the runner for the action, builds the process (or HTTP request), waits for it under
//! the action's timeout and the agent's cancel signal, and records status, result and output.
//! Children are spawned from the executor thread (never a short-lived pool thread). This module
//! does not decide whether an execution may run (policies and rules do) and does not resolve
//! parameters (`params.rs` does).

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Agent;
use crate::pack::{Action, Pack, Runner};
use crate::runner::{self, ExecStatus as RunStatus, process::ProcessSpec};
use crate::store::{Completion, ExecStatus};

/// Default timeout of runners that declare none (Attune's default execution timeout).
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// What the engine knows about why an execution runs, for the environment of the child.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub rule: Option<String>,
    pub trigger: Option<String>,
    /// Retries already made by a retry policy (0 for a first attempt).
    pub attempt: u64,
}

fn timeout_secs(action: &Action, params: &Map<String, Value>, agent_default: Option<u64>) -> u64 {
    params
        .get("timeout")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0 && action.runner != Runner::HttpRequest)
        .or(action.timeout)
        .or(agent_default)
        .unwrap_or(match action.runner {
            Runner::LocalShellCmd | Runner::LocalShellScript => 60,
            _ => DEFAULT_TIMEOUT_SECS,
        })
}

fn map_status(s: RunStatus) -> ExecStatus {
    match s {
        RunStatus::Succeeded => ExecStatus::Succeeded,
        RunStatus::Failed => ExecStatus::Failed,
        RunStatus::Timeout => ExecStatus::Timeout,
        RunStatus::Canceled => ExecStatus::Canceled,
    }
}

/// A completion that is not a process's: a workflow's, an HTTP request's.
pub fn completion(status: ExecStatus, result: Value, error: Option<String>) -> Completion {
    Completion {
        status,
        result: Some(result),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: None,
        error,
        finished_at: None,
    }
}

fn failed(error: impl Into<String>) -> Completion {
    let error = error.into();
    Completion {
        status: ExecStatus::Failed,
        result: Some(json!({ "error": error })),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: None,
        error: Some(error),
        finished_at: None,
    }
}

/// Environment every action gets: StackStorm's `ST2_ACTION_*`, Attune's context variables, and
/// the datastore socket for the Python shim.
fn context_env(agent: &Agent, id: i64, pack: &Pack, action: &Action, origin: &Origin) -> Vec<(String, String)> {
    let api = agent.settings.api_url();
    let mut env = vec![
        ("ST2_ACTION_PACK_NAME".to_string(), pack.ref_.clone()),
        ("ST2_ACTION_EXECUTION_ID".to_string(), id.to_string()),
        ("ST2_ACTION_API_URL".to_string(), api.clone()),
        ("ST2_ACTION_DEBUG".to_string(), "false".to_string()),
        ("ATTUNE_ACTION".to_string(), action.ref_.clone()),
        ("ATTUNE_PACK_REF".to_string(), pack.ref_.clone()),
        ("ATTUNE_EXEC_ID".to_string(), id.to_string()),
        ("ATTUNE_API_URL".to_string(), api),
        ("PACKD_SOCKET".to_string(), agent.settings.socket_path().to_string_lossy().into_owned()),
    ];
    if let Some(r) = &origin.rule {
        env.push(("ATTUNE_RULE".into(), r.clone()));
    }
    if let Some(t) = &origin.trigger {
        env.push(("ATTUNE_TRIGGER".into(), t.clone()));
    }
    env
}

fn env_param(params: &Map<String, Value>) -> Vec<(String, String)> {
    match params.get("env") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn apply_env(spec: &mut ProcessSpec, env: Vec<(String, String)>) {
    for (k, v) in env {
        spec.env.push((k.into(), v.into()));
    }
}

/// Run the execution `id` (already stored as `requested`) and record its outcome.
pub async fn run(
    agent: Rc<Agent>,
    id: i64,
    pack: Arc<Pack>,
    action: Action,
    params: Map<String, Value>,
    origin: Origin,
) {
    // Registered before waiting for a slot, so a cancel that arrives meanwhile is seen.
    let (cancel_tx, cancel_rx) = smol::channel::bounded::<()>(1);
    agent.running.borrow_mut().insert(id, cancel_tx);
    // Policies first (they may hold the execution in `delayed`), then a global slot.
    let reg = agent.registry();
    let on_delay = || {
        let store = agent.store.clone();
        agent
            .ex
            .spawn(async move {
                let _ = store.set_execution_status(id, ExecStatus::Delayed, None).await;
            })
            .detach();
    };
    let _policy_guards = match agent.policies.admit(&reg, &action, &params, on_delay).await {
        super::policy::Admission::Run(guards) => guards,
        super::policy::Admission::Cancel(reason) => {
            agent.running.borrow_mut().remove(&id);
            crate::log_info!("execution {id} {}: {reason}", action.ref_);
            let mut c = failed(reason);
            c.status = ExecStatus::Canceled;
            let _ = agent.store.complete_execution(id, c).await;
            agent.after_execution(id).await;
            return;
        }
    };
    // A workflow parent only waits for its children, which take slots themselves; holding one
    // here could deadlock a full agent.
    let _slot = if action.runner.is_workflow() { None } else { Some(agent.slots.acquire().await) };
    if cancel_rx.try_recv().is_ok() {
        // Canceled while queued: the store already says so; nothing was started.
        agent.running.borrow_mut().remove(&id);
        agent.after_execution(id).await;
        return;
    }
    // Record `running` while the child starts instead of before: both are queued in order, and
    // the hot path does not wait for one more commit.
    let set_running = agent.store.set_execution_status(id, ExecStatus::Running, Some(agent.store.now()));
    let (marked, completion) =
        smol::future::zip(set_running, dispatch(&agent, id, &pack, &action, &params, &origin, cancel_rx)).await;
    agent.running.borrow_mut().remove(&id);
    if let Err(e) = marked {
        crate::log_debug!("execution {id}: could not mark running: {e}");
    }
    let status = completion.status;
    if let Err(e) = agent.store.complete_execution(id, completion).await {
        crate::log_error!("execution {id}: cannot record the result: {e}");
    }
    crate::log_info!("execution {id} {} {}", action.ref_, status.as_str());
    agent.after_execution(id).await;
    drop(_policy_guards);
    if let Some(r) = super::policy::retry(&agent.registry(), &action, status, origin.attempt) {
        let a = agent.clone();
        agent.ex.spawn(retry(a, id, pack, action, params, origin, r)).detach();
    }
}

/// A retry policy's new attempt: a new execution with the same parameters, after the delay.
async fn retry(
    agent: Rc<Agent>,
    previous: i64,
    pack: Arc<Pack>,
    action: Action,
    params: Map<String, Value>,
    origin: Origin,
    r: super::policy::Retry,
) {
    smol::Timer::after(r.delay).await;
    let context = json!({
        "user": "stanley",
        "source": "policy",
        "policies": {"retry": {"applied_policy": r.policy, "retry_count": r.attempt, "retried_liveaction_id": previous}},
    });
    let masked = super::params::mask(&action, &params);
    let id = match agent
        .store
        .create_execution(crate::store::NewExecution {
            action_ref: action.ref_.clone(),
            runner: action.runner.name().to_string(),
            status: ExecStatus::Scheduled,
            parameters: Value::Object(masked),
            context,
            parent_id: None,
        })
        .await
    {
        Ok(id) => id,
        Err(e) => {
            crate::log_error!("retry of execution {previous}: cannot store the new execution: {e}");
            return;
        }
    };
    crate::log_info!(
        "execution {previous} {}: retry {} as execution {id} (policy {})",
        action.ref_,
        r.attempt,
        r.policy
    );
    run(agent, id, pack, action, params, Origin { attempt: r.attempt, ..origin }).await;
}

async fn dispatch(
    agent: &Rc<Agent>,
    id: i64,
    pack: &Pack,
    action: &Action,
    params: &Map<String, Value>,
    origin: &Origin,
    cancel: smol::channel::Receiver<()>,
) -> Completion {
    let timeout = timeout_secs(action, params, agent.settings.action_timeout_default);
    let mut env = context_env(agent, id, pack, action, origin);
    let spec = match &action.runner {
        Runner::Noop => {
            return Completion {
                status: ExecStatus::Succeeded,
                result: Some(json!({"failed": false, "succeeded": true, "return_code": 0})),
                stdout: String::new(),
                stderr: String::new(),
                exit_code: Some(0),
                error: None,
                finished_at: None,
            };
        }
        Runner::HttpRequest => {
            return super::http_runner::run(action, params, timeout, cancel).await;
        }
        Runner::ActionChain => {
            return Box::pin(super::chain::run(agent, id, pack, action, params, cancel)).await;
        }
        Runner::Orquesta | Runner::AttuneWorkflow => {
            return Box::pin(super::workflow::run(agent, id, pack, action, params, cancel)).await;
        }
        Runner::LocalShellCmd => {
            let Some(cmd) = params.get("cmd").and_then(Value::as_str) else {
                return failed("parameter \"cmd\" is required by local-shell-cmd");
            };
            let mut spec = sudo_wrap(runner::st2::shell_command(cmd), params);
            env.extend(env_param(params));
            spec.cwd = params.get("cwd").and_then(Value::as_str).map(Into::into);
            spec
        }
        Runner::LocalShellScript => {
            let Some(entry) = action.entry_point.as_deref() else {
                return failed("local-shell-script needs an entry_point");
            };
            if !entry.is_file() {
                return failed(format!("entry point {} does not exist", entry.display()));
            }
            let runner_names: Vec<String> = runner_param_names(&action.runner);
            let script_params: Vec<runner::st2::ScriptParam> = action
                .parameters
                .params
                .iter()
                .filter(|p| !runner_names.contains(&p.name))
                .map(|p| runner::st2::ScriptParam {
                    name: p.name.clone(),
                    ty: p.ty.map(|t| t.as_str().to_string()),
                    position: p.position,
                    value: params.get(&p.name).cloned().unwrap_or(Value::Null),
                })
                .collect();
            let kwarg_op = params.get("kwarg_op").and_then(Value::as_str).unwrap_or("--");
            let args = runner::st2::script_args(&script_params, kwarg_op);
            let spec = match runner::st2::script_command(entry, &args) {
                Ok(s) => s,
                Err(e) => return failed(format!("cannot start {}: {e}", entry.display())),
            };
            let mut spec = sudo_wrap(spec, params);
            env.extend(env_param(params));
            spec.cwd = params.get("cwd").and_then(Value::as_str).map(Into::into);
            spec
        }
        Runner::PythonScript => {
            let Some(entry) = action.entry_point.as_deref() else {
                return failed("python-script needs an entry_point");
            };
            if !entry.is_file() {
                return failed(format!("entry point {} does not exist", entry.display()));
            }
            let runner_names = runner_param_names(&action.runner);
            let action_params: Map<String, Value> =
                params.iter().filter(|(k, _)| !runner_names.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            let action_params = Value::Object(action_params);
            let user_env = env_param(params);
            // The config the action sees, with its dynamic (`{{ st2kv... }}`) values rendered.
            let config = {
                let (c, schema, env, store) =
                    (pack.config.clone(), pack.config_schema.clone(), agent.templates.clone(), agent.store.clone());
                match smol::unblock(move || {
                    super::params::dynamic_config(&c, &schema, &env, Some(&super::kv::StoreKv(store)))
                })
                .await
                {
                    Ok(c) => c,
                    Err(e) => return failed(e),
                }
            };
            let venv = agent.settings.data_dir.join("virtualenvs").join(&pack.ref_);
            let socket = agent.settings.socket_path();
            runner::st2::python_command(&runner::st2::PythonAction {
                pack: &pack.ref_,
                pack_dir: &pack.path,
                entry_point: entry,
                parameters: &action_params,
                config: &config,
                log_level: params.get("log_level").and_then(Value::as_str).unwrap_or("DEBUG"),
                virtualenv: &venv,
                shim_dir: &agent.settings.shim_dir(),
                socket: Some(&socket),
                env: &user_env,
                timeout: Duration::from_secs(timeout),
            })
        }
        Runner::AttuneShell | Runner::AttunePython | Runner::AttuneNode | Runner::AttuneNative => {
            let Some(entry) = action.entry_point.as_deref() else {
                return failed("an Attune action needs an entry_point");
            };
            if !entry.is_file() {
                return failed(format!("entry point {} does not exist", entry.display()));
            }
            let io = action.attune.clone().unwrap_or(crate::pack::AttuneIo {
                delivery: "stdin".into(),
                format: "json".into(),
                output_format: "text".into(),
            });
            let kind = match action.runner {
                Runner::AttunePython => runner::attune::AttuneRunner::Python,
                Runner::AttuneNode => runner::attune::AttuneRunner::Node,
                _ => runner::attune::AttuneRunner::Shell,
            };
            let all = Value::Object(params.clone());
            let spec = runner::attune::command(&runner::attune::AttuneAction {
                runner: kind,
                entry_point: entry,
                pack_dir: &pack.path,
                action_ref: &action.ref_,
                pack_ref: &pack.ref_,
                parameters: &all,
                param_format: runner::attune::ParamFormat::parse(&io.format)
                    .unwrap_or(runner::attune::ParamFormat::Json),
                timeout: Duration::from_secs(timeout),
            });
            match spec {
                Ok(mut s) => {
                    if action.runner == Runner::AttuneNative {
                        s.program = entry.to_path_buf();
                        s.args.clear();
                    }
                    s
                }
                Err(e) => return failed(format!("cannot start {}: {e}", entry.display())),
            }
        }
        other => {
            return failed(format!("runner {} is not supported yet", other.name()));
        }
    };
    let mut spec = spec;
    apply_env(&mut spec, env);
    spec.timeout = Duration::from_secs(timeout);
    spec.output_cap = agent.settings.output_cap;
    let outcome = match runner::process::run(spec, Some(cancel)).await {
        Ok(o) => o,
        Err(e) => return failed(e.to_string()),
    };
    let (status, result) = match &action.runner {
        Runner::PythonScript => runner::st2::python_result(&outcome, timeout),
        Runner::AttuneShell | Runner::AttunePython | Runner::AttuneNode | Runner::AttuneNative => {
            let fmt = action
                .attune
                .as_ref()
                .and_then(|io| runner::attune::OutputFormat::parse(&io.output_format))
                .unwrap_or(runner::attune::OutputFormat::Text);
            runner::attune::result(&outcome, fmt, timeout)
        }
        _ => runner::st2::shell_result(&outcome, timeout),
    };
    let status = if outcome.canceled { RunStatus::Canceled } else { status };
    let error = result.get("error").and_then(Value::as_str).map(str::to_string);
    Completion {
        status: map_status(status),
        result: Some(result),
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        exit_code: outcome.exit_code.or(outcome.signal.map(|s| -s)),
        error,
        finished_at: None,
    }
}

/// `sudo: true` runs the command as root through `sudo -E --` (non-interactive unless a
/// `sudo_password` is given, which goes on stdin with `-S`), as StackStorm's local runner does.
fn sudo_wrap(mut spec: ProcessSpec, params: &Map<String, Value>) -> ProcessSpec {
    if params.get("sudo").and_then(Value::as_bool) != Some(true) {
        return spec;
    }
    let mut args: Vec<std::ffi::OsString> = vec!["-E".into()];
    match params.get("sudo_password").and_then(Value::as_str) {
        Some(pw) => {
            args.push("-S".into());
            spec.stdin = Some(format!("{pw}\n").into_bytes());
        }
        None => args.push("-n".into()),
    }
    args.push("--".into());
    args.push(spec.program.as_os_str().to_os_string());
    args.append(&mut spec.args);
    spec.program = Path::new("sudo").to_path_buf();
    spec.args = args;
    spec
}

fn runner_param_names(runner: &Runner) -> Vec<String> {
    crate::pack::st2::runner_params(runner).as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}
