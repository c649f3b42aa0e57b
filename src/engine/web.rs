//! The agent side of the HTTP endpoint: webhooks become trigger instances, `/health` says
//! whether packs are loaded and the store is open, `/metrics` renders the agent's counters.

use std::fmt::Write as _;
use std::rc::Rc;

use serde_json::Value;

use super::Agent;
use super::events::IngestError as AgentError;
use crate::http::{Health, Ingest, IngestError, IngestFuture};
use crate::registry::{WEBHOOK_TRIGGER, normalize_hook};
use crate::store::TiSource;

/// Counters for `/metrics`, updated on the executor thread only.
#[derive(Default, Debug)]
pub struct Metrics {
    pub events_received: u64,
    pub events_accepted: u64,
    pub events_rejected: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Executions by status, refreshed in the background (never queried from `/metrics`).
    pub executions: Vec<(String, u64)>,
}

pub struct HttpIngest(pub Rc<Agent>);

fn map_err(e: AgentError) -> IngestError {
    match e {
        AgentError::UnknownTrigger(t) => IngestError::UnknownTrigger(t),
        AgentError::Invalid { .. } => IngestError::Invalid(e.to_string()),
        AgentError::Busy => IngestError::Overloaded(e.to_string()),
        AgentError::Internal(m) => IngestError::Internal(m),
    }
}

/// A hook name that is not a StackStorm webhook but names a pack's own trigger type is an
/// Attune-style webhook trigger: the body becomes that trigger's payload. Core triggers are
/// never accepted this way (timers and internal events are the agent's own).
fn attune_trigger(agent: &Agent, hook: &str) -> Option<String> {
    let reg = agent.registry();
    let h = normalize_hook(hook);
    (!h.starts_with("core.") && !reg.has_webhook(&h) && reg.trigger_type(&h).is_some()).then_some(h)
}

impl Ingest for HttpIngest {
    fn webhook(&self, hook: &str, payload: Value) -> IngestFuture<'_> {
        let hook = hook.to_string();
        Box::pin(async move {
            let agent = &self.0;
            agent.metrics.borrow_mut().events_received += 1;
            let r = match attune_trigger(agent, &hook) {
                Some(t) => {
                    let body = payload.get("body").cloned().unwrap_or(Value::Null);
                    agent.ingest(&t, body, TiSource::Webhook, None).await
                }
                None => agent.ingest(WEBHOOK_TRIGGER, payload, TiSource::Webhook, Some(normalize_hook(&hook))).await,
            };
            r.map(|id| id.to_string()).map_err(|e| {
                agent.metrics.borrow_mut().events_rejected += 1;
                map_err(e)
            })
        })
    }

    fn trigger(&self, trigger: &str, payload: Value) -> IngestFuture<'_> {
        let trigger = trigger.to_string();
        Box::pin(async move {
            let agent = &self.0;
            agent.metrics.borrow_mut().events_received += 1;
            if agent.registry().trigger_type(&trigger).is_none() {
                agent.metrics.borrow_mut().events_rejected += 1;
                return Err(IngestError::UnknownTrigger(trigger));
            }
            agent.ingest(&trigger, payload, TiSource::Webhook, None).await.map(|id| id.to_string()).map_err(|e| {
                agent.metrics.borrow_mut().events_rejected += 1;
                map_err(e)
            })
        })
    }

    fn hook_exists(&self, hook: &str) -> bool {
        self.0.registry().has_webhook(hook) || attune_trigger(&self.0, hook).is_some()
    }

    fn health(&self) -> Health {
        if self.0.ready.get() { Health::Ready } else { Health::NotReady("packs are still loading".into()) }
    }

    fn metrics(&self) -> String {
        let a = &self.0;
        let m = a.metrics.borrow();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("packd_events_received_total", "Events offered to the agent.", m.events_received);
        counter("packd_events_accepted_total", "Events stored as trigger instances.", m.events_accepted);
        counter("packd_events_rejected_total", "Events refused (invalid, unknown, overloaded).", m.events_rejected);
        counter("packd_reloads_total", "Pack reloads.", m.reloads);
        counter("packd_reload_failures_total", "Pack reloads that kept a last good version.", m.reload_failures);
        let _ = writeln!(out, "# HELP packd_executions Executions by status.\n# TYPE packd_executions gauge");
        for (status, n) in &m.executions {
            let _ = writeln!(out, "packd_executions{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP packd_queue_depth Trigger instances waiting for the rules engine.\n# TYPE packd_queue_depth gauge\npackd_queue_depth {}",
            a.events.len()
        );
        let _ = writeln!(
            out,
            "# HELP packd_running_executions Executions running now.\n# TYPE packd_running_executions gauge\npackd_running_executions {}",
            a.running.borrow().len()
        );
        let mut states: std::collections::BTreeMap<&'static str, u64> =
            ["starting", "running", "backoff", "failed", "stopped"].iter().map(|s| (*s, 0)).collect();
        for st in a.sensors().statuses() {
            *states.entry(st.state.as_str()).or_default() += 1;
        }
        let _ = writeln!(out, "# HELP packd_sensors Sensors by state.\n# TYPE packd_sensors gauge");
        for (state, n) in states {
            let _ = writeln!(out, "packd_sensors{{state=\"{state}\"}} {n}");
        }
        let reg = a.registry();
        let _ = writeln!(
            out,
            "# HELP packd_packs_loaded Packs loaded.\n# TYPE packd_packs_loaded gauge\npackd_packs_loaded {}",
            reg.packs.len()
        );
        out
    }
}

/// Refresh the execution counts for `/metrics` every few seconds.
pub async fn refresh_metrics(agent: Rc<Agent>) {
    loop {
        if let Ok(counts) = agent.store.count_executions_by_status().await {
            agent.metrics.borrow_mut().executions =
                counts.into_iter().map(|(s, n)| (s.as_str().to_string(), n)).collect();
        }
        smol::Timer::after(std::time::Duration::from_secs(2)).await;
    }
}
