//! Policies, applied around one execution: StackStorm `action.concurrency` (delay or cancel
//! beyond a threshold, optionally per parameter values: `action.concurrency.attr`),
//! `action.retry` (a new execution after a failure or timeout), and Attune's `concurrency`
//! (enqueue/cancel) and `rate_limit` (at most N starts per window; later ones wait).
//!
//! The state is in memory: counts of running executions per policy key. After a restart the
//! counts start from zero, which matches what is actually running (interrupted executions are
//! `abandoned`). This module decides *whether and when* an execution starts; it never runs one.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::pack::{Action, PolicyKind};
use crate::registry::Registry;

/// Per-key admission state, shared by every execution the key covers.
#[derive(Default)]
pub struct Policies {
    gates: RefCell<HashMap<String, std::sync::Arc<smol::lock::Semaphore>>>,
    starts: RefCell<HashMap<String, VecDeque<Instant>>>,
}

/// What admission decided.
pub enum Admission {
    /// Run; drop the guards when the execution ends.
    Run(Vec<smol::lock::SemaphoreGuardArc>),
    /// A `cancel` policy refused it.
    Cancel(String),
}

/// The retry a finished execution asks for, if any.
pub struct Retry {
    pub policy: String,
    pub delay: Duration,
    pub attempt: u64,
}

fn attr_key(policy: &str, attributes: &[String], params: &Map<String, Value>) -> String {
    let mut k = policy.to_string();
    for a in attributes {
        k.push('|');
        k.push_str(&params.get(a).map(|v| v.to_string()).unwrap_or_default());
    }
    k
}

impl Policies {
    fn gate(&self, key: &str, threshold: u64) -> std::sync::Arc<smol::lock::Semaphore> {
        self.gates
            .borrow_mut()
            .entry(format!("{key}#{threshold}"))
            .or_insert_with(|| std::sync::Arc::new(smol::lock::Semaphore::new(threshold.max(1) as usize)))
            .clone()
    }

    /// Wait for (or refuse) the right to start. `on_delay` runs once if the execution has to
    /// wait, so the caller can record `delayed`.
    pub async fn admit(
        &self,
        reg: &Registry,
        action: &Action,
        params: &Map<String, Value>,
        mut on_delay: impl FnMut(),
    ) -> Admission {
        let mut guards = Vec::new();
        let mut delayed = false;
        for (_, p) in reg.policies_for(&action.ref_) {
            for kind in &p.kinds {
                match kind {
                    PolicyKind::Concurrency { threshold, cancel, attributes } => {
                        let key = attr_key(&p.ref_, attributes, params);
                        let gate = self.gate(&key, *threshold);
                        match gate.try_acquire_arc() {
                            Some(g) => guards.push(g),
                            None if *cancel => {
                                return Admission::Cancel(format!(
                                    "canceled by policy {}: {threshold} execution(s) of {} already running",
                                    p.ref_, action.ref_
                                ));
                            }
                            None => {
                                if !delayed {
                                    delayed = true;
                                    on_delay();
                                }
                                guards.push(gate.acquire_arc().await);
                            }
                        }
                    }
                    PolicyKind::RateLimit { max_executions, window_seconds } => {
                        let window = Duration::from_secs(*window_seconds);
                        loop {
                            let now = Instant::now();
                            let wait = {
                                let mut starts = self.starts.borrow_mut();
                                let q = starts.entry(p.ref_.clone()).or_default();
                                while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                                    q.pop_front();
                                }
                                if (q.len() as u64) < *max_executions {
                                    q.push_back(now);
                                    None
                                } else {
                                    q.front().map(|t| window.saturating_sub(now.duration_since(*t)))
                                }
                            };
                            match wait {
                                None => break,
                                Some(d) => {
                                    if !delayed {
                                        delayed = true;
                                        on_delay();
                                    }
                                    smol::Timer::after(d.max(Duration::from_millis(10))).await;
                                }
                            }
                        }
                    }
                    PolicyKind::Retry { .. } => {}
                }
            }
        }
        Admission::Run(guards)
    }
}

/// After a finished execution: does a retry policy want another attempt? `attempt` is how many
/// retries already happened (from the execution context).
pub fn retry(reg: &Registry, action: &Action, status: crate::store::ExecStatus, attempt: u64) -> Option<Retry> {
    use crate::store::ExecStatus as S;
    for (_, p) in reg.policies_for(&action.ref_) {
        for kind in &p.kinds {
            if let PolicyKind::Retry { on_timeout, max_retry_count, delay } = kind {
                let applies = match status {
                    S::Timeout => *on_timeout,
                    S::Failed => !*on_timeout,
                    _ => false,
                };
                if applies && attempt < *max_retry_count {
                    // StackStorm's minimum delay between attempts is 0.1 s.
                    let delay = Duration::from_secs_f64(delay.max(0.1));
                    return Some(Retry { policy: p.ref_.clone(), delay, attempt: attempt + 1 });
                }
            }
        }
    }
    None
}
