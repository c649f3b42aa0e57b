//! The timer task: every enabled timer rule (StackStorm interval/date/cron, Attune
//! interval/cron/datetime) on one queue with one OS timer armed for the next deadline — never a
//! thread or task per timer. A fire becomes a trigger instance aimed at its rule.
//!
//! On reload, `sync` upserts every current timer: an unchanged timer keeps its deadline and
//! count (no lost or duplicate fire), a changed one is rescheduled, a removed one dropped.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use super::Agent;
use crate::registry::Registry;
use crate::store::TiSource;
use crate::timers::{Clock, SystemClock, TimerQueue, TimerSpec, is_timer_trigger};

/// Longest sleep between checks even when nothing is due: wall-clock jumps (NTP, suspend) are
/// noticed within this bound.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Bring the queue in line with the registry's enabled timer rules.
pub fn sync(q: &mut TimerQueue<String>, reg: &Registry, now: jiff::Timestamp) {
    let mut seen = BTreeSet::new();
    for (_, rule) in reg.rules().filter(|(_, r)| r.enabled && is_timer_trigger(&r.trigger)) {
        match TimerSpec::parse(&rule.trigger, &rule.trigger_parameters) {
            Ok(spec) => {
                seen.insert(rule.ref_.clone());
                if !q.upsert(rule.ref_.clone(), spec, now, now) {
                    crate::log_info!(
                        "timer of rule {} will never fire (its date is past or its schedule is empty)",
                        rule.ref_
                    );
                }
            }
            Err(e) => crate::log_error!("rule {}: trigger.parameters: {e}; the timer is not scheduled", rule.ref_),
        }
    }
    let stale: Vec<String> = q.iter().map(|(k, _, _)| k.clone()).filter(|k| !seen.contains(k)).collect();
    for k in stale {
        q.remove(&k);
    }
}

pub async fn run(agent: Rc<Agent>, reschedule: smol::channel::Receiver<()>) {
    let clock = SystemClock;
    let mut q: TimerQueue<String> = TimerQueue::new();
    sync(&mut q, &agent.registry(), clock.now());
    crate::log_info!("{} timer(s) scheduled", q.len());
    loop {
        let now = clock.now();
        for fired in q.pop_due(now) {
            let payload = fired.spec.payload(now, fired.scheduled_at, fired.count, &fired.key);
            let trigger = fired.spec.trigger_ref();
            if let Err(e) = agent.ingest(trigger, payload, TiSource::Timer, Some(fired.key.clone())).await {
                crate::log_error!("timer of rule {}: {e}", fired.key);
            }
        }
        let now = clock.now();
        let sleep = q
            .next_deadline()
            .map(|d| {
                let us = d.as_microsecond().saturating_sub(now.as_microsecond()).max(0) as u64;
                Duration::from_micros(us)
            })
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        let woke = smol::future::or(
            async {
                smol::Timer::after(sleep).await;
                false
            },
            async {
                match reschedule.recv().await {
                    Ok(()) => true,
                    // No one can ask for a reschedule any more: just keep to the deadlines.
                    Err(_) => std::future::pending().await,
                }
            },
        )
        .await;
        if woke {
            while reschedule.try_recv().is_ok() {}
            sync(&mut q, &agent.registry(), clock.now());
        }
    }
}
