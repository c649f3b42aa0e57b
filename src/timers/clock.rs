//! Where "now" comes from. Everything else in `timers` takes instants as arguments, so the only
//! code that reads the real clock is `SystemClock::now`. `ManualClock` lets tests walk across DST
//! changes and months of schedule in microseconds. This file must not sleep, spawn or wait: the
//! caller decides how to wait for the next deadline.

use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};

/// A source of the current instant. `Send + Sync` so one clock can be shared by the engine task
/// and whoever computes payloads.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock (UTC instant; time zones are applied per timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to. For tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// Jumps to `to`, forwards or backwards (a test may simulate the wall clock being set back).
    pub fn set(&self, to: Timestamp) {
        *self.lock() = to;
    }

    /// Moves by `by` (may be negative) and returns the new instant. Saturates at the ends of
    /// jiff's range instead of panicking, so a test with an absurd step still terminates.
    pub fn advance(&self, by: SignedDuration) -> Timestamp {
        let mut now = self.lock();
        *now = now.checked_add(by).unwrap_or(if by.is_negative() { Timestamp::MIN } else { Timestamp::MAX });
        *now
    }

    // A poisoned lock only means another thread panicked while holding it; the Timestamp inside
    // is still a valid value, so keep going rather than propagate the panic.
    fn lock(&self) -> MutexGuard<'_, Timestamp> {
        self.now.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start: Timestamp = "2026-03-29T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        let later = clock.advance(SignedDuration::from_hours(3));
        assert_eq!(later.to_string(), "2026-03-29T03:00:00Z");
        assert_eq!(clock.now(), later);
        clock.set(start);
        assert_eq!(clock.now(), start);
        // Saturates instead of panicking.
        assert_eq!(clock.advance(SignedDuration::MAX), Timestamp::MAX);
        assert_eq!(clock.advance(SignedDuration::MIN), Timestamp::MIN);
    }

    #[test]
    fn system_clock_is_after_2020() {
        let now = SystemClock.now();
        assert!(now > "2020-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        // Usable as a trait object, which is how the engine holds it.
        let clock: &dyn Clock = &SystemClock;
        assert!(clock.now() >= now);
    }
}
