//! The action-chain runner: a StackStorm workflow that runs its nodes one after the other.
//!
//! Each node's parameters are rendered with the chain's parameters, `vars`, everything
//! published so far, the results of earlier nodes by node name (`{{ c1.stdout }}`),
//! `__results`, `action_context` (with `parent.execution_id`), `config_context` and `st2kv`;
//! the node then runs as a child execution (parent_id = the chain). `on-success` / `on-failure`
//! pick the next node; the chain's status is the status of the last node run, as in StackStorm.

use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::{Agent, exec, kv::StoreKv, params};
use crate::pack::{Action, Pack};
use crate::store::{Completion, ExecStatus, NewExecution};

/// Most nodes one chain run may execute: chains may loop through `on-failure`, and a loop that
/// never ends must not run forever.
pub const MAX_CHAIN_STEPS: usize = 1000;

fn str_of<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

use super::exec::completion as done;

/// The start node: `default`, else the first node no transition points to, else the first.
fn start_node(def: &Value, chain: &[Value]) -> Option<String> {
    if let Some(d) = str_of(def, "default") {
        return Some(d.to_string());
    }
    let targets: Vec<&str> =
        chain.iter().flat_map(|n| [str_of(n, "on-success"), str_of(n, "on-failure")]).flatten().collect();
    chain
        .iter()
        .filter_map(|n| str_of(n, "name"))
        .find(|n| !targets.contains(n))
        .or_else(|| chain.first().and_then(|n| str_of(n, "name")))
        .map(str::to_string)
}

pub async fn run(
    agent: &Rc<Agent>,
    id: i64,
    pack: &Pack,
    action: &Action,
    chain_params: &Map<String, Value>,
    cancel: smol::channel::Receiver<()>,
) -> Completion {
    let Some(def) = action.workflow.as_ref().map(|w| w.definition.clone()) else {
        return done(
            ExecStatus::Failed,
            json!({"error": "action-chain without a chain definition"}),
            Some("no chain".into()),
        );
    };
    let chain: Vec<Value> = def.get("chain").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut ctx = Map::new();
    for (k, v) in chain_params {
        ctx.insert(k.clone(), v.clone());
    }
    ctx.insert("action_context".into(), json!({"parent": {"execution_id": id.to_string()}, "user": "stanley"}));
    ctx.insert("config_context".into(), pack.config.clone());
    // `vars` are rendered once, with the parameters and the datastore.
    if let Some(vars) = def.get("vars").filter(|v| v.is_object()) {
        match render(agent, vars.clone(), Value::Object(ctx.clone())).await {
            Ok(Value::Object(m)) => ctx.extend(m),
            Ok(_) => {}
            Err(e) => {
                return done(ExecStatus::Failed, json!({"error": format!("vars: {e}")}), Some(format!("vars: {e}")));
            }
        }
    }
    let mut tasks: Vec<Value> = Vec::new();
    let mut published = Map::new();
    let mut results = Map::new();
    let mut status = ExecStatus::Succeeded;
    let mut next = start_node(&def, &chain);
    let mut steps = 0;
    while let Some(name) = next.take() {
        if cancel.try_recv().is_ok() {
            status = ExecStatus::Canceled;
            break;
        }
        steps += 1;
        if steps > MAX_CHAIN_STEPS {
            let e = format!("the chain ran more than {MAX_CHAIN_STEPS} nodes; stopped");
            return done(ExecStatus::Failed, json!({"tasks": tasks, "published": published, "error": e}), Some(e));
        }
        let Some(node) = chain.iter().find(|n| str_of(n, "name") == Some(name.as_str())) else {
            let e = format!("Unable to find node with name \"{name}\" in the chain");
            return done(ExecStatus::Failed, json!({"tasks": tasks, "published": published, "error": e}), Some(e));
        };
        let action_ref = str_of(node, "ref").unwrap_or("").to_string();
        let raw = node.get("parameters").or_else(|| node.get("params")).cloned().unwrap_or(json!({}));
        let mut node_ctx = ctx.clone();
        node_ctx.extend(published.clone());
        node_ctx.extend(results.clone());
        node_ctx.insert("__results".into(), Value::Object(results.clone()));
        let (child_status, child_result, child_id, error) =
            match render(agent, raw, Value::Object(node_ctx.clone())).await {
                Err(e) => (ExecStatus::Failed, Value::Null, None, Some(format!("node {name}: {e}"))),
                Ok(rendered) => {
                    let supplied = rendered.as_object().cloned().unwrap_or_default();
                    match child(agent, id, &name, &action_ref, supplied, &cancel).await {
                        Ok((cid, st, res)) => (st, res, Some(cid), None),
                        Err(e) => (ExecStatus::Failed, Value::Null, None, Some(format!("node {name}: {e}"))),
                    }
                }
            };
        status = child_status;
        tasks.push(json!({
            "id": name,
            "name": name,
            "execution_id": child_id.map(|i| i.to_string()),
            "state": child_status.as_str(),
            "result": child_result,
            "error": error,
        }));
        results.insert(name.clone(), child_result.clone());
        if child_status == ExecStatus::Succeeded
            && let Some(Value::Object(p)) = node.get("publish")
        {
            let mut pctx = node_ctx.clone();
            pctx.insert(name.clone(), child_result);
            match render(agent, Value::Object(p.clone()), Value::Object(pctx)).await {
                Ok(Value::Object(m)) => published.extend(m),
                Ok(_) => {}
                Err(e) => {
                    let e = format!("publish of node {name}: {e}");
                    return done(
                        ExecStatus::Failed,
                        json!({"tasks": tasks, "published": published, "error": e}),
                        Some(e),
                    );
                }
            }
        }
        next = match child_status {
            ExecStatus::Succeeded => str_of(node, "on-success").map(str::to_string),
            ExecStatus::Canceled => None,
            _ => str_of(node, "on-failure").map(str::to_string),
        };
        // Transitions may be templates.
        if let Some(n) = next.as_ref().filter(|n| n.contains("{{")) {
            let mut tctx = ctx.clone();
            tctx.extend(published.clone());
            tctx.extend(results.clone());
            next = render(agent, Value::String(n.clone()), Value::Object(tctx))
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
        }
    }
    let result = json!({"tasks": tasks, "published": published});
    let error = (status != ExecStatus::Succeeded).then(|| format!("chain ended with a {} node", status.as_str()));
    done(status, result, error)
}

async fn render(agent: &Rc<Agent>, v: Value, ctx: Value) -> Result<Value, String> {
    let (env, store) = (agent.templates.clone(), agent.store.clone());
    smol::unblock(move || env.render_value(&v, &ctx, Some(&StoreKv(store))).map_err(|e| e.to_string())).await
}

/// Run one node (or workflow task) as a child execution and wait for it.
pub async fn child(
    agent: &Rc<Agent>,
    parent: i64,
    node: &str,
    action_ref: &str,
    supplied: Map<String, Value>,
    cancel: &smol::channel::Receiver<()>,
) -> Result<(i64, ExecStatus, Value), String> {
    let reg = agent.registry();
    let (pack, action) = reg.action(action_ref).ok_or_else(|| format!("action {action_ref:?} not found"))?;
    let (pack, action) = (pack.clone(), action.clone());
    let context = json!({"user": "stanley", "parent": {"execution_id": parent.to_string()}, "chain": {"node": node}});
    let resolved = {
        let (a, p, env, store, ctx) =
            (action.clone(), pack.clone(), agent.templates.clone(), agent.store.clone(), context.clone());
        smol::unblock(move || {
            let kv = StoreKv(store);
            let config = params::dynamic_config(&p.config, &p.config_schema, &env, Some(&kv))?;
            let cx = params::Context { trigger: None, action_context: ctx, config, extra: Map::new() };
            params::resolve(&a, supplied, &cx, &env, Some(&kv)).map_err(|e| e.to_string())
        })
        .await?
    };
    let cid = agent
        .store
        .create_execution(NewExecution {
            action_ref: action.ref_.clone(),
            runner: action.runner.name().to_string(),
            status: ExecStatus::Scheduled,
            parameters: Value::Object(resolved.masked.clone()),
            context,
            parent_id: Some(parent),
        })
        .await
        .map_err(|e| e.to_string())?;
    let run = Box::pin(exec::run(agent.clone(), cid, pack, action, resolved.values, exec::Origin::default()));
    // A cancel of the chain cancels the running node, then the chain stops.
    let canceled = async {
        if cancel.recv().await.is_err() {
            std::future::pending::<()>().await;
        }
        if let Some(tx) = agent.running.borrow().get(&cid) {
            let _ = tx.try_send(());
        }
        let _ = agent.store.request_cancel(cid).await;
        std::future::pending::<()>().await
    };
    smol::future::or(run, canceled).await;
    let e = agent.store.get_execution(cid).await.map_err(|e| e.to_string())?.ok_or("child execution vanished")?;
    Ok((cid, e.status, e.result.unwrap_or(Value::Null)))
}
