//! Timer triggers: StackStorm `core.st2.{Interval,Date,Cron}Timer` and Attune
//! `core.{interval,cron,datetime}timer`, validated into `TimerSpec`s, scheduled on one
//! `TimerQueue`, and turned into event payloads.
//!
//! Pure and clock-driven: no threads, no async, no I/O apart from jiff reading the system tz
//! database when a zone is looked up. The caller owns waiting: it sleeps until
//! `TimerQueue::next_deadline()`, asks its `Clock` for now, calls `pop_due(now)` and builds each
//! payload with `TimerSpec::payload`. This module must not depend on other packd modules.

mod clock;
mod cron;
mod queue;
mod schedule;
mod spec;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::{CronTimer, MAX_FIELD_LEN, MAX_FILTER_STEPS, MAX_YEAR};
pub use queue::{Fired, TimerQueue};
pub use spec::{
    ATTUNE_CRON_TIMER, ATTUNE_DATETIME_TIMER, ATTUNE_INTERVAL_TIMER, ATTUNE_RRULE_TIMER, DateTimer, IntervalTimer,
    IntervalUnit, MAX_INTERVAL_SECONDS, MAX_TZ_NAME_LEN, ST2_CRON_TIMER, ST2_DATE_TIMER, ST2_INTERVAL_TIMER,
    TimerError, TimerSpec, Zone, is_timer_trigger,
};
