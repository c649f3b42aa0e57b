//! All armed timers in one ordered queue keyed by the caller (e.g. a rule ref): the engine waits
//! for `next_deadline()`, then calls `pop_due(now)`. No thread or task per timer.
//!
//! Owns arming, re-arming after a fire, replacement on reload, and the missed-fire policy. Must
//! not read the clock, sleep or build payloads: `now` is always an argument.
//!
//! Missed fires are **coalesced**: if `now` has jumped past several deadlines of one timer (the
//! device was suspended, the engine was blocked, the wall clock was set forward), that timer
//! fires once for the whole missed window, and is re-armed for its first deadline after `now`.
//! This is APScheduler's default `coalesce=True`; unlike APScheduler (`misfire_grace_time` 1 s)
//! the late fire is delivered rather than dropped. `Fired::scheduled_at` is the first missed
//! deadline.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::spec::TimerSpec;

/// One fire returned by `pop_due`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired<K> {
    pub key: K,
    /// The deadline this fire was due at (≤ the `now` given to `pop_due`).
    pub scheduled_at: Timestamp,
    /// 1-based count of fires of this timer since it was (re)inserted with a new spec.
    pub count: u64,
    /// The timer's spec, so the caller can build the payload even for a one-shot timer that has
    /// just left the queue.
    pub spec: TimerSpec,
}

#[derive(Debug)]
struct Entry {
    spec: TimerSpec,
    created: Timestamp,
    deadline: Timestamp,
    count: u64,
}

/// Timers ordered by next deadline (ties broken by key, so fire order is deterministic).
#[derive(Debug)]
pub struct TimerQueue<K: Clone + Ord> {
    entries: BTreeMap<K, Entry>,
    /// (deadline, key) for every entry: the min-ordered index; first() is the next fire.
    order: BTreeSet<(Timestamp, K)>,
}

impl<K: Clone + Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue { entries: BTreeMap::new(), order: BTreeSet::new() }
    }
}

impl<K: Clone + Ord> TimerQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `spec` under `key`, replacing (and rescheduling) any timer already there. `created`
    /// is the registration instant (interval phase), `now` the current time: the first deadline
    /// is the first fire strictly after `now`. Returns false when the timer never fires (a date
    /// already past, a cron range that is over); nothing is stored then.
    pub fn insert(&mut self, key: K, spec: TimerSpec, created: Timestamp, now: Timestamp) -> bool {
        self.remove(&key);
        let Some(deadline) = spec.next_after(now, created) else {
            return false;
        };
        self.order.insert((deadline, key.clone()));
        self.entries.insert(key, Entry { spec, created, deadline, count: 0 });
        true
    }

    /// Like `insert`, except that when `key` already holds an equal spec nothing changes: the
    /// deadline, the interval phase (`created`) and the fire count are kept, so a reload that
    /// does not touch a timer neither loses nor duplicates a fire. Returns whether the key is
    /// armed afterwards.
    pub fn upsert(&mut self, key: K, spec: TimerSpec, created: Timestamp, now: Timestamp) -> bool {
        if self.entries.get(&key).is_some_and(|e| e.spec == spec) {
            return true;
        }
        self.insert(key, spec, created, now)
    }

    /// Disarms `key`; returns its spec if it was armed.
    pub fn remove(&mut self, key: &K) -> Option<TimerSpec> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&(entry.deadline, key.clone()));
        Some(entry.spec)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest deadline of all armed timers: how long the engine may sleep.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.order.first().map(|(deadline, _)| *deadline)
    }

    /// The deadline of one timer.
    pub fn deadline(&self, key: &K) -> Option<Timestamp> {
        self.entries.get(key).map(|e| e.deadline)
    }

    pub fn spec(&self, key: &K) -> Option<&TimerSpec> {
        self.entries.get(key).map(|e| &e.spec)
    }

    /// Armed timers in deadline order: (key, spec, next deadline). For listings.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &TimerSpec, Timestamp)> {
        self.order
            .iter()
            .filter_map(|(deadline, key)| self.entries.get_key_value(key).map(|(k, e)| (k, &e.spec, *deadline)))
    }

    /// Fires every timer whose deadline is ≤ `now`, in deadline order, each at most once
    /// (missed deadlines coalesce, see the module doc), and re-arms it for its first fire
    /// strictly after `now`; a timer with no further fire (a date timer) leaves the queue.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<Fired<K>> {
        let mut fired = Vec::new();
        while let Some((deadline, _)) = self.order.first()
            && *deadline <= now
        {
            let Some((deadline, key)) = self.order.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            entry.count = entry.count.saturating_add(1);
            fired.push(Fired {
                key: key.clone(),
                scheduled_at: deadline,
                count: entry.count,
                spec: entry.spec.clone(),
            });
            // Strictly after `now`, so this loop sees each timer at most once per call.
            match entry.spec.next_after(now.max(deadline), entry.created) {
                Some(next) => {
                    entry.deadline = next;
                    self.order.insert((next, key));
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use serde_json::{Value, json};

    use super::super::clock::{Clock, ManualClock};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(trigger_ref: &str, params: Value) -> TimerSpec {
        TimerSpec::parse(trigger_ref, &params).unwrap()
    }

    fn every(seconds: u64) -> TimerSpec {
        spec("core.st2.IntervalTimer", json!({"unit": "seconds", "delta": seconds}))
    }

    fn keys(fired: &[Fired<&'static str>]) -> Vec<(&'static str, String, u64)> {
        fired.iter().map(|f| (f.key, f.scheduled_at.to_string(), f.count)).collect()
    }

    #[test]
    fn two_timers_fire_in_deadline_order() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00Z"));
        let mut q = TimerQueue::new();
        assert!(q.insert("slow", every(10), clock.now(), clock.now()));
        assert!(q.insert("fast", every(3), clock.now(), clock.now()));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_deadline(), Some(ts("2026-01-01T00:00:03Z")));

        assert!(q.pop_due(clock.advance(SignedDuration::from_secs(2))).is_empty());
        let mut log = Vec::new();
        for _ in 0..10 {
            clock.advance(SignedDuration::from_secs(1));
            log.extend(keys(&q.pop_due(clock.now())));
        }
        expect_test::expect![[r#"
            [
                (
                    "fast",
                    "2026-01-01T00:00:03Z",
                    1,
                ),
                (
                    "fast",
                    "2026-01-01T00:00:06Z",
                    2,
                ),
                (
                    "fast",
                    "2026-01-01T00:00:09Z",
                    3,
                ),
                (
                    "slow",
                    "2026-01-01T00:00:10Z",
                    1,
                ),
                (
                    "fast",
                    "2026-01-01T00:00:12Z",
                    4,
                ),
            ]
        "#]]
        .assert_debug_eq(&log);

        // Both overdue after a jump: delivered in deadline order.
        clock.set(ts("2026-01-01T00:00:30Z"));
        let f = q.pop_due(clock.now());
        assert_eq!(keys(&f)[0].0, "fast");
        assert_eq!(keys(&f)[1].0, "slow");
    }

    #[test]
    fn upsert_with_the_same_spec_keeps_the_schedule() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00Z"));
        let mut q = TimerQueue::new();
        q.insert("r", every(60), clock.now(), clock.now());
        clock.advance(SignedDuration::from_secs(60));
        assert_eq!(q.pop_due(clock.now()).len(), 1);
        assert_eq!(q.deadline(&"r"), Some(ts("2026-01-01T00:02:00Z")));

        // A reload 45 s later re-parses the same parameters: nothing moves, the count goes on.
        clock.advance(SignedDuration::from_secs(45));
        assert!(q.upsert("r", every(60), clock.now(), clock.now()));
        assert_eq!(q.deadline(&"r"), Some(ts("2026-01-01T00:02:00Z")));
        clock.advance(SignedDuration::from_secs(15));
        let f = q.pop_due(clock.now());
        assert_eq!(keys(&f), vec![("r", "2026-01-01T00:02:00Z".to_string(), 2)]);

        // A changed spec reschedules from the reload and restarts the count.
        assert!(q.upsert("r", every(30), clock.now(), clock.now()));
        assert_eq!(q.deadline(&"r"), Some(ts("2026-01-01T00:02:30Z")));
        clock.advance(SignedDuration::from_secs(30));
        assert_eq!(q.pop_due(clock.now())[0].count, 1);

        // A changed cron spec too.
        let cron = |hour| spec("core.st2.CronTimer", json!({ "hour": hour }));
        assert!(q.upsert("c", cron(5), clock.now(), clock.now()));
        assert_eq!(q.deadline(&"c"), Some(ts("2026-01-01T05:00:00Z")));
        assert!(q.upsert("c", cron(5), clock.now(), clock.now()));
        assert_eq!(q.deadline(&"c"), Some(ts("2026-01-01T05:00:00Z")));
        assert!(q.upsert("c", cron(6), clock.now(), clock.now()));
        assert_eq!(q.deadline(&"c"), Some(ts("2026-01-01T06:00:00Z")));
    }

    #[test]
    fn clock_jump_coalesces_missed_fires() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00Z"));
        let mut q = TimerQueue::new();
        q.insert("sec", every(1), clock.now(), clock.now());
        q.insert("cron", spec("core.st2.CronTimer", json!({"minute": "*/15"})), clock.now(), clock.now());
        // Suspended for a week: one fire each, not 604,800 and 672.
        let now = clock.advance(SignedDuration::from_hours(24 * 7));
        let f = q.pop_due(now);
        expect_test::expect![[r#"
            [
                (
                    "sec",
                    "2026-01-01T00:00:01Z",
                    1,
                ),
                (
                    "cron",
                    "2026-01-01T00:15:00Z",
                    1,
                ),
            ]
        "#]]
        .assert_debug_eq(&keys(&f));
        // Re-armed for the first deadline after `now`, on the original grid.
        assert_eq!(q.deadline(&"sec"), Some(ts("2026-01-08T00:00:01Z")));
        assert_eq!(q.deadline(&"cron"), Some(ts("2026-01-08T00:15:00Z")));
        assert!(q.pop_due(now).is_empty());
    }

    #[test]
    fn one_shot_timers_fire_once_and_past_dates_never_arm() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00Z"));
        let mut q = TimerQueue::new();
        let date = |d: &str| spec("core.st2.DateTimer", json!({ "date": d }));
        assert!(!q.insert("past", date("2025-12-31T23:59:59Z"), clock.now(), clock.now()));
        assert!(!q.contains(&"past"));
        assert!(q.insert("soon", date("2026-01-01T00:00:10Z"), clock.now(), clock.now()));
        let f = q.pop_due(clock.advance(SignedDuration::from_secs(10)));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].spec.trigger_ref(), "core.st2.DateTimer");
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
        // Re-applying the same rule after it fired does not fire it again.
        assert!(!q.upsert("soon", date("2026-01-01T00:00:10Z"), clock.now(), clock.now()));
        assert!(q.pop_due(clock.advance(SignedDuration::from_hours(1))).is_empty());
    }

    #[test]
    fn remove_and_iterate() {
        let now = ts("2026-01-01T00:00:00Z");
        let mut q = TimerQueue::new();
        q.insert("a", every(5), now, now);
        q.insert("b", every(2), now, now);
        let listed: Vec<_> = q.iter().map(|(k, _, d)| (*k, d.to_string())).collect();
        assert_eq!(listed, vec![("b", "2026-01-01T00:00:02Z".to_string()), ("a", "2026-01-01T00:00:05Z".to_string())]);
        assert!(q.remove(&"b").is_some());
        assert!(q.remove(&"b").is_none());
        assert_eq!(q.next_deadline(), Some(ts("2026-01-01T00:00:05Z")));
        assert!(q.pop_due(ts("2026-01-01T00:00:04Z")).is_empty());
        assert_eq!(q.len(), 1);
    }
}
