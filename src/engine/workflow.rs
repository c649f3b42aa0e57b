//! Running Orquesta and Attune workflows: the pure conductor (`orquesta/`) decides which tasks
//! are ready; this module runs each task as a child execution (in parallel where the graph
//! allows), feeds results back, and records the workflow's output. Conductor steps may read the
//! datastore (`st2kv` in expressions), so they run on the blocking pool.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::orquesta::{Conductor, RunStatus, TaskStatus, Workflow};
use super::{Agent, kv::StoreKv};
use crate::pack::{Action, Pack, Runner, WorkflowKind};
use crate::store::{Completion, ExecStatus};

use super::exec::completion as done;

fn task_status(s: ExecStatus) -> TaskStatus {
    match s {
        ExecStatus::Succeeded => TaskStatus::Succeeded,
        ExecStatus::Timeout => TaskStatus::Timeout,
        ExecStatus::Canceled => TaskStatus::Canceled,
        _ => TaskStatus::Failed,
    }
}

pub async fn run(
    agent: &Rc<Agent>,
    id: i64,
    pack: &Pack,
    action: &Action,
    params: &Map<String, Value>,
    cancel: smol::channel::Receiver<()>,
) -> Completion {
    let Some(wf) = action.workflow.as_ref() else {
        return done(
            ExecStatus::Failed,
            json!({"error": "workflow action without a definition"}),
            Some("no definition".into()),
        );
    };
    let parsed = match wf.kind {
        WorkflowKind::Attune => Workflow::parse_attune(&wf.definition),
        _ => Workflow::parse_orquesta(&wf.definition),
    };
    let workflow = match parsed {
        Ok(w) => Arc::new(w),
        Err(e) => {
            let msg = format!("{}: {e}", wf.file.display());
            return done(ExecStatus::Failed, json!({"errors": [{"type": "error", "message": msg}]}), Some(msg));
        }
    };
    // The workflow's input: the action's own parameters (runner parameters such as `notify`
    // are not workflow inputs).
    let input: Map<String, Value> = if action.runner == Runner::Orquesta {
        params.iter().filter(|(k, _)| k.as_str() != "notify").map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        params.clone()
    };
    let st2 = json!({
        "action_execution_id": id.to_string(),
        "workflow_execution_id": id.to_string(),
        "api_url": agent.settings.api_url(),
        "user": "stanley",
        "pack": pack.ref_,
        "action": action.ref_,
        "runner": action.runner.name(),
        "config": pack.config,
    });
    let env = agent.templates.clone();
    let kv: Arc<dyn crate::expr::KvSource> = Arc::new(StoreKv(agent.store.clone()));
    let started = smol::unblock(move || Conductor::start(workflow, input, st2, env, Some(kv))).await;
    let mut conductor = match started {
        Ok(c) => c,
        Err(e) => {
            return done(
                ExecStatus::Failed,
                json!({"errors": [{"type": "error", "message": e.to_string()}]}),
                Some(e.to_string()),
            );
        }
    };
    let (done_tx, done_rx) = smol::channel::unbounded::<(u64, i64, ExecStatus, Value)>();
    let mut children: Vec<(u64, Option<i64>)> = Vec::new();
    let mut canceled = false;
    loop {
        let (c, ready) = smol::unblock(move || {
            let mut c = conductor;
            let r = c.ready();
            (c, r)
        })
        .await;
        conductor = c;
        for req in ready {
            let (a, tx) = (agent.clone(), done_tx.clone());
            children.push((req.id, None));
            agent
                .ex
                .spawn(async move {
                    if let Some(d) = req.delay {
                        smol::Timer::after(d).await;
                    }
                    let never = smol::channel::bounded::<()>(1).1;
                    let r = Box::pin(super::chain::child(&a, id, &req.task, &req.action, req.input, &never)).await;
                    let (cid, status, result) = match r {
                        Ok(x) => x,
                        Err(e) => (0, ExecStatus::Failed, json!({"error": e})),
                    };
                    let _ = tx.send((req.id, cid, status, result)).await;
                })
                .detach();
        }
        if conductor.status() != RunStatus::Running && conductor.in_flight().is_empty() {
            break;
        }
        if conductor.in_flight().is_empty() {
            // Running with nothing in flight and nothing ready: the conductor is stuck.
            break;
        }
        let next = smol::future::or(async { done_rx.recv().await.ok().map(Some) }, async {
            match cancel.recv().await {
                Ok(()) => Some(None),
                Err(_) => std::future::pending().await,
            }
        })
        .await;
        match next {
            Some(Some((req, cid, status, result))) => {
                if let Some(slot) = children.iter_mut().find(|(r, _)| *r == req) {
                    slot.1 = Some(cid);
                }
                conductor = smol::unblock(move || {
                    let mut c = conductor;
                    c.completed(req, task_status(status), result);
                    c
                })
                .await;
            }
            Some(None) if !canceled => {
                canceled = true;
                conductor.cancel();
                // Cancel every child still running (their ids are in the agent's table).
                let running: Vec<i64> = agent
                    .store
                    .list_executions(crate::store::ExecutionFilter { parent_id: Some(id), ..Default::default() })
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| !e.status.is_terminal())
                    .map(|e| e.id)
                    .collect();
                for cid in running {
                    if let Some(tx) = agent.running.borrow().get(&cid) {
                        let _ = tx.try_send(());
                    }
                    let _ = agent.store.request_cancel(cid).await;
                }
            }
            _ => {}
        }
    }
    let output = conductor.output();
    let status = match conductor.status() {
        RunStatus::Succeeded => ExecStatus::Succeeded,
        RunStatus::Canceled => ExecStatus::Canceled,
        _ if canceled => ExecStatus::Canceled,
        _ => ExecStatus::Failed,
    };
    let error = (status != ExecStatus::Succeeded).then(|| {
        output
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("workflow did not succeed")
            .to_string()
    });
    done(status, output, error)
}
