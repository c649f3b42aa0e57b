//! When a validated timer fires next, and what event payload a fire produces.
//!
//! Owns the per-kind "next fire strictly after an instant" rule and the payload shapes of
//! StackStorm (`st2reactor/timer/base.py _emit_trigger_instance`) and Attune's core timer sensor
//! (`crates/core-timer-sensor/src/timer_manager.rs`). Must not read the clock, keep state or
//! decide about missed fires (that is `queue.rs`): every instant is an argument.

use jiff::Timestamp;
use jiff::tz::Offset;
use serde_json::{Value, json};

use super::spec::TimerSpec;

impl TimerSpec {
    /// The first fire strictly after `after`; `created` is when the timer was registered (the
    /// phase of interval timers). `None` when the timer never fires again.
    ///
    /// * Interval: `created + k × period` for the smallest k ≥ 1 that is after `after`
    ///   (APScheduler: `start_date = now + interval`, then every interval; no fire at creation).
    /// * Date: the date if it is after `after`, else never (st2: "Not scheduling expired timer").
    /// * Cron: the next matching wall-clock time in the timer's zone (see `cron.rs` for DST).
    pub fn next_after(&self, after: Timestamp, created: Timestamp) -> Option<Timestamp> {
        match self {
            TimerSpec::St2Interval(i) | TimerSpec::AttuneInterval(i) => {
                next_interval(i.period_seconds(), after, created)
            }
            TimerSpec::St2Date(d) | TimerSpec::AttuneDateTime(d) => (d.at > after).then_some(d.at),
            TimerSpec::St2Cron(c) | TimerSpec::AttuneCron(c) => c.next_after(after),
        }
    }

    /// The event payload for one fire.
    ///
    /// `fired_at` is when the fire is being processed, `scheduled_at` the deadline it was due at,
    /// `count` the 1-based number of this fire, `rule_or_sensor_ref` what Attune reports as
    /// `sensor_ref` (StackStorm payloads do not carry it).
    ///
    /// * StackStorm: `{"executed_at": <fired_at>, "schedule": null}` where `executed_at` is
    ///   Python's `str()` of an aware UTC datetime, e.g. `2026-11-23 04:39:01.123456+00:00`
    ///   (no fraction when the microseconds are 0, as Python prints it). `schedule` reads a
    ///   parameter (`time`) no timer has, so it is always null in st2.
    /// * Attune interval: `{type: "interval", interval_seconds, fired_at, execution_count,
    ///   sensor_ref}`; cron: `{type: "cron", fired_at, scheduled_at, expression, timezone,
    ///   next_fire_at, execution_count, sensor_ref}` (`next_fire_at` null when there is none);
    ///   one-shot: `{type: "one_shot", fire_at, fired_at, timezone, delay_ms, sensor_ref}`.
    ///   Times are RFC 3339 in UTC as chrono's `to_rfc3339` prints them
    ///   (`2026-01-01T00:00:00.250+00:00`).
    pub fn payload(&self, fired_at: Timestamp, scheduled_at: Timestamp, count: u64, rule_or_sensor_ref: &str) -> Value {
        match self {
            TimerSpec::St2Interval(_) | TimerSpec::St2Date(_) | TimerSpec::St2Cron(_) => json!({
                "executed_at": python_utc(fired_at),
                "schedule": null,
            }),
            TimerSpec::AttuneInterval(i) => json!({
                "type": "interval",
                "interval_seconds": i.period_seconds(),
                "fired_at": rfc3339_utc(fired_at),
                "execution_count": count,
                "sensor_ref": rule_or_sensor_ref,
            }),
            TimerSpec::AttuneCron(c) => json!({
                "type": "cron",
                "fired_at": rfc3339_utc(fired_at),
                "scheduled_at": rfc3339_utc(scheduled_at),
                "expression": c.pattern(),
                "timezone": c.zone().name(),
                // The same instant the queue re-arms the timer for.
                "next_fire_at": c.next_after(fired_at.max(scheduled_at)).map(rfc3339_utc),
                "execution_count": count,
                "sensor_ref": rule_or_sensor_ref,
            }),
            TimerSpec::AttuneDateTime(d) => json!({
                "type": "one_shot",
                "fire_at": rfc3339_utc(d.at),
                "fired_at": rfc3339_utc(fired_at),
                "timezone": d.zone.name(),
                "delay_ms": fired_at.duration_since(d.at).as_millis().max(0),
                "sensor_ref": rule_or_sensor_ref,
            }),
        }
    }
}

/// `created + k × period` (k ≥ 1) strictly after `after`, in integer nanoseconds so long-running
/// timers do not drift.
fn next_interval(period_seconds: u64, after: Timestamp, created: Timestamp) -> Option<Timestamp> {
    let period = i128::from(period_seconds).checked_mul(1_000_000_000)?;
    if period <= 0 {
        return None;
    }
    let first = created.as_nanosecond().checked_add(period)?;
    let after = after.as_nanosecond();
    let next = if first > after {
        first
    } else {
        let k = (after - first) / period + 1;
        first.checked_add(k.checked_mul(period)?)?
    };
    Timestamp::from_nanosecond(next).ok()
}

/// Python `str(datetime.now(timezone.utc))`: `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`.
fn python_utc(t: Timestamp) -> String {
    let dt = Offset::UTC.to_datetime(t);
    let micros = dt.subsec_nanosecond() / 1_000;
    let fraction = if micros == 0 { String::new() } else { format!(".{micros:06}") };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction}+00:00",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// chrono's `DateTime<Utc>::to_rfc3339()`: fraction of 0, 3, 6 or 9 digits, `+00:00`.
fn rfc3339_utc(t: Timestamp) -> String {
    let dt = Offset::UTC.to_datetime(t);
    let nanos = dt.subsec_nanosecond();
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}+00:00",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use jiff::SignedDuration;
    use serde_json::json;

    use super::super::clock::{Clock, ManualClock};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(trigger_ref: &str, params: Value) -> TimerSpec {
        TimerSpec::parse(trigger_ref, &params).unwrap()
    }

    #[test]
    fn interval_first_fire_is_one_interval_after_creation() {
        let clock = ManualClock::new(ts("2026-01-01T00:00:00.5Z"));
        let created = clock.now();
        let s = spec("core.st2.IntervalTimer", json!({"unit": "minutes", "delta": 5}));
        let first = s.next_after(created, created).unwrap();
        assert_eq!(first.to_string(), "2026-01-01T00:05:00.5Z");
        // Asked a little before the first fire: still the first fire.
        clock.set(first - SignedDuration::from_millis(1));
        assert_eq!(s.next_after(clock.now(), created), Some(first));
        // Asked exactly at a fire: the one after (strictly later).
        assert_eq!(s.next_after(first, created).unwrap().to_string(), "2026-01-01T00:10:00.5Z");
        // A long pause: the next point on the original grid, no drift.
        clock.advance(SignedDuration::from_hours(24 * 365));
        assert_eq!(s.next_after(clock.now(), created).unwrap().to_string(), "2027-01-01T00:05:00.5Z");
        // Days are 86,400 s across DST, like APScheduler's timedelta arithmetic.
        let d = spec("core.st2.IntervalTimer", json!({"unit": "days", "delta": 1, "timezone": "Europe/Berlin"}));
        let c = ts("2026-03-28T12:00:00Z");
        assert_eq!(d.next_after(c, c).unwrap().to_string(), "2026-03-29T12:00:00Z");
    }

    #[test]
    fn interval_arithmetic_at_the_edge_of_time_ends_instead_of_overflowing() {
        let s = spec("core.intervaltimer", json!({"interval": 1, "unit": "days"}));
        let late = Timestamp::MAX - SignedDuration::from_secs(10);
        assert_eq!(s.next_after(late, late), None);
        assert_eq!(next_interval(0, late, late), None);
    }

    #[test]
    fn date_timer_fires_once_and_never_in_the_past() {
        let s = spec("core.st2.DateTimer", json!({"date": "2026-06-01T12:00:00Z"}));
        let created = ts("2026-05-01T00:00:00Z");
        assert_eq!(s.next_after(created, created), Some(ts("2026-06-01T12:00:00Z")));
        assert_eq!(s.next_after(ts("2026-06-01T12:00:00Z"), created), None);
        // Registered after the date: never.
        let later = ts("2026-07-01T00:00:00Z");
        assert_eq!(s.next_after(later, later), None);
    }

    /// Every fire of `params` in `[from, to)`, as local wall-clock strings.
    fn fires_between(trigger_ref: &str, params: Value, from: &str, to: &str) -> Vec<String> {
        let s = spec(trigger_ref, params);
        let tz = s.zone().tz().clone();
        let (mut after, end) = (ts(from), ts(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(after, after) {
            if next >= end {
                break;
            }
            assert!(next > after, "not strictly increasing");
            out.push(next.to_zoned(tz.clone()).strftime("%F %T%:z").to_string());
            after = next;
        }
        out
    }

    /// A daily job must run exactly once on each local day around a DST change.
    fn assert_once_per_day(fires: &[String], days: usize) {
        assert_eq!(fires.len(), days, "{fires:#?}");
        let mut dates: Vec<&str> = fires.iter().map(|f| &f[..10]).collect();
        dates.dedup();
        assert_eq!(dates.len(), days, "{fires:#?}");
    }

    #[test]
    fn daily_0230_across_2026_dst_changes() {
        let daily = |tz: &str| json!({"hour": 2, "minute": 30, "timezone": tz});
        // Berlin spring forward, 29 Mar: 02:30 does not exist and runs at 03:00 CEST.
        let f =
            fires_between("core.st2.CronTimer", daily("Europe/Berlin"), "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z");
        assert_once_per_day(&f, 4);
        expect![[r#"
            [
                "2026-03-28 02:30:00+01:00",
                "2026-03-29 03:00:00+02:00",
                "2026-03-30 02:30:00+02:00",
                "2026-03-31 02:30:00+02:00",
            ]
        "#]]
        .assert_debug_eq(&f);
        // Berlin fall back, 25 Oct: 02:30 happens twice and runs once, on the first.
        let f =
            fires_between("core.st2.CronTimer", daily("Europe/Berlin"), "2026-10-23T12:00:00Z", "2026-10-27T12:00:00Z");
        assert_once_per_day(&f, 4);
        expect![[r#"
            [
                "2026-10-24 02:30:00+02:00",
                "2026-10-25 02:30:00+02:00",
                "2026-10-26 02:30:00+01:00",
                "2026-10-27 02:30:00+01:00",
            ]
        "#]]
        .assert_debug_eq(&f);
        // New York spring forward, 8 Mar.
        let f = fires_between(
            "core.st2.CronTimer",
            daily("America/New_York"),
            "2026-03-06T12:00:00Z",
            "2026-03-10T12:00:00Z",
        );
        assert_once_per_day(&f, 4);
        expect![[r#"
            [
                "2026-03-07 02:30:00-05:00",
                "2026-03-08 03:00:00-04:00",
                "2026-03-09 02:30:00-04:00",
                "2026-03-10 02:30:00-04:00",
            ]
        "#]]
        .assert_debug_eq(&f);
        // New York fall back, 1 Nov: the repeated hour is 01:00-01:59, so test 01:30 too.
        let f = fires_between(
            "core.st2.CronTimer",
            daily("America/New_York"),
            "2026-10-30T12:00:00Z",
            "2026-11-03T12:00:00Z",
        );
        assert_once_per_day(&f, 4);
        let f = fires_between(
            "core.crontimer",
            json!({"expression": "0 30 1 * * *", "timezone": "America/New_York"}),
            "2026-10-30T12:00:00Z",
            "2026-11-03T12:00:00Z",
        );
        assert_once_per_day(&f, 4);
        expect![[r#"
            [
                "2026-10-31 01:30:00-04:00",
                "2026-11-01 01:30:00-04:00",
                "2026-11-02 01:30:00-05:00",
                "2026-11-03 01:30:00-05:00",
            ]
        "#]]
        .assert_debug_eq(&f);
    }

    #[test]
    fn every_30_minutes_through_the_repeated_hour() {
        // Berlin 25 Oct: 02:00-02:59 happens twice; all four half-hours run, 30 real minutes apart.
        let p = json!({"minute": "*/30", "timezone": "Europe/Berlin"});
        let f = fires_between("core.st2.CronTimer", p.clone(), "2026-10-24T22:45:00Z", "2026-10-25T02:15:00Z");
        expect![[r#"
            [
                "2026-10-25 01:00:00+02:00",
                "2026-10-25 01:30:00+02:00",
                "2026-10-25 02:00:00+02:00",
                "2026-10-25 02:30:00+02:00",
                "2026-10-25 02:00:00+01:00",
                "2026-10-25 02:30:00+01:00",
                "2026-10-25 03:00:00+01:00",
            ]
        "#]]
        .assert_debug_eq(&f);
        // Same in New York on 1 Nov (repeated hour 01:00-01:59), checked as real-time spacing.
        let s = spec("core.st2.CronTimer", json!({"minute": "*/30", "timezone": "America/New_York"}));
        let mut after = ts("2026-11-01T04:00:00Z");
        for _ in 0..8 {
            let next = s.next_after(after, after).unwrap();
            assert_eq!(next.duration_since(after), SignedDuration::from_mins(30));
            after = next;
        }
        // Spring forward skips the hour that does not exist, and nothing goes backwards.
        let f = fires_between(
            "core.st2.CronTimer",
            json!({"minute": "*/30", "timezone": "Europe/Berlin"}),
            "2026-03-29T00:15:00Z",
            "2026-03-29T02:15:00Z",
        );
        expect![[r#"
            [
                "2026-03-29 01:30:00+01:00",
                "2026-03-29 03:00:00+02:00",
                "2026-03-29 03:30:00+02:00",
                "2026-03-29 04:00:00+02:00",
            ]
        "#]]
        .assert_debug_eq(&f);
    }

    #[test]
    fn st2_payload_matches_python_str_of_utc_datetime() {
        let s = spec("core.st2.IntervalTimer", json!({"unit": "seconds", "delta": 1}));
        let fired = ts("2026-11-23T04:39:01.123456789Z");
        expect![[r#"{"executed_at":"2026-11-23 04:39:01.123456+00:00","schedule":null}"#]]
            .assert_eq(&s.payload(fired, fired, 1, "pack.rule").to_string());
        let whole = ts("2026-11-23T04:39:01Z");
        expect![[r#"{"executed_at":"2026-11-23 04:39:01+00:00","schedule":null}"#]]
            .assert_eq(&s.payload(whole, whole, 1, "pack.rule").to_string());
    }

    #[test]
    fn attune_payloads() {
        let fired = ts("2026-01-01T00:00:05.250Z");
        let i = spec("core.intervaltimer", json!({"unit": "seconds", "interval": 5}));
        expect![[r#"{"type":"interval","interval_seconds":5,"fired_at":"2026-01-01T00:00:05.250+00:00","execution_count":3,"sensor_ref":"core.timer_sensor"}"#]]
            .assert_eq(&i.payload(fired, ts("2026-01-01T00:00:05Z"), 3, "core.timer_sensor").to_string());
        let c = spec("core.crontimer", json!({"expression": "*/5 * * * * *", "timezone": "Europe/Berlin"}));
        expect![[r#"{"type":"cron","fired_at":"2026-01-01T00:00:05.250+00:00","scheduled_at":"2026-01-01T00:00:05+00:00","expression":"*/5 * * * * *","timezone":"Europe/Berlin","next_fire_at":"2026-01-01T00:00:10+00:00","execution_count":1,"sensor_ref":"core.timer_sensor"}"#]]
            .assert_eq(&c.payload(fired, ts("2026-01-01T00:00:05Z"), 1, "core.timer_sensor").to_string());
        let d = spec("core.datetimetimer", json!({"fire_at": "2026-01-01T00:00:05Z"}));
        expect![[r#"{"type":"one_shot","fire_at":"2026-01-01T00:00:05+00:00","fired_at":"2026-01-01T00:00:05.250+00:00","timezone":"UTC","delay_ms":250,"sensor_ref":"core.timer_sensor"}"#]]
            .assert_eq(&d.payload(fired, ts("2026-01-01T00:00:05Z"), 1, "core.timer_sensor").to_string());
        // A cron timer whose year range is over reports no next fire as null.
        let last = spec("core.crontimer", json!({"expression": "0 0 0 1 1 * 2026"}));
        let at = ts("2026-01-01T00:00:00Z");
        assert_eq!(last.payload(at, at, 1, "x")["next_fire_at"], Value::Null);
    }

    #[test]
    fn timestamp_formats() {
        let f = |s: &str| (python_utc(ts(s)), rfc3339_utc(ts(s)));
        expect![[r#"
            [
                (
                    "2026-01-01 00:00:00+00:00",
                    "2026-01-01T00:00:00+00:00",
                ),
                (
                    "2026-01-01 00:00:00.001000+00:00",
                    "2026-01-01T00:00:00.001+00:00",
                ),
                (
                    "2026-01-01 00:00:00.000001+00:00",
                    "2026-01-01T00:00:00.000001+00:00",
                ),
                (
                    "2026-01-01 00:00:00+00:00",
                    "2026-01-01T00:00:00.000000001+00:00",
                ),
                (
                    "1969-12-31 23:59:59.500000+00:00",
                    "1969-12-31T23:59:59.500+00:00",
                ),
            ]
        "#]]
        .assert_debug_eq(&[
            f("2026-01-01T00:00:00Z"),
            f("2026-01-01T00:00:00.001Z"),
            f("2026-01-01T00:00:00.000001Z"),
            f("2026-01-01T00:00:00.000000001Z"),
            f("1969-12-31T23:59:59.5Z"),
        ]);
    }
}
