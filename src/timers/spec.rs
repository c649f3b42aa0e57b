//! Timer trigger parameters validated into types at the boundary.
//!
//! Owns: which trigger refs are timers, the parameter schemas of the StackStorm timers
//! (`core.st2.IntervalTimer`, `core.st2.DateTimer`, `core.st2.CronTimer`; `additionalProperties:
//! false` in `st2common/constants/triggers.py`) and the Attune timers (`core.intervaltimer`,
//! `core.crontimer`, `core.datetimetimer`), time zone lookup, and the errors that name the
//! offending parameter. Must not compute schedules (that is `schedule.rs` / `cron.rs`) or read the
//! clock: whether a date is already past is decided when the timer is armed.
//!
//! Time zones: a timer's `timezone` parameter names an IANA zone looked up in the system tz
//! database (`/usr/share/zoneinfo`, via `jiff::tz::TimeZone::get`). When the parameter is absent
//! (or null) the zone is **UTC**. StackStorm/APScheduler would use the host's local zone there,
//! which st2 users found confusing (st2 issue #4356); Attune's trigger schemas default to "UTC".
//! `UTC` itself resolves even on a device without tzdata.

use jiff::Timestamp;
use jiff::fmt::temporal::{Pieces, PiecesOffset};
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::cron::{ApField, CronTimer, MAX_FIELD_LEN};

pub const ST2_INTERVAL_TIMER: &str = "core.st2.IntervalTimer";
pub const ST2_DATE_TIMER: &str = "core.st2.DateTimer";
pub const ST2_CRON_TIMER: &str = "core.st2.CronTimer";
pub const ATTUNE_INTERVAL_TIMER: &str = "core.intervaltimer";
pub const ATTUNE_CRON_TIMER: &str = "core.crontimer";
pub const ATTUNE_DATETIME_TIMER: &str = "core.datetimetimer";
/// Attune's RRULE timer: recognised as a timer so a rule using it gets a clear "unsupported"
/// error instead of silently never firing.
pub const ATTUNE_RRULE_TIMER: &str = "core.rruletimer";

/// Longest interval accepted (100 years of seconds). Nothing longer can fire during a device's
/// life, and the bound keeps `created + k × interval` far inside jiff's ±9999-year range.
pub const MAX_INTERVAL_SECONDS: u64 = 100 * 366 * 86_400;

/// Longest time zone name accepted; the longest IANA name is about 30 bytes.
pub const MAX_TZ_NAME_LEN: usize = 64;

/// Why a timer's parameters were refused. `field` is the parameter name (e.g. `delta`,
/// `day_of_week`, `timezone`); the caller adds its own prefix such as `trigger.parameters.`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("{trigger_ref:?} is not a timer trigger")]
    NotATimer { trigger_ref: String },
    #[error("{trigger_ref}: {reason}")]
    Unsupported { trigger_ref: String, reason: &'static str },
    #[error("parameters must be an object, not {found}")]
    NotAnObject { found: &'static str },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl TimerError {
    pub(super) fn field(field: impl Into<String>, reason: impl Into<String>) -> TimerError {
        TimerError::Field { field: field.into(), reason: reason.into() }
    }

    /// The parameter at fault, when one is.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            TimerError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A time zone together with the name it was given by (kept for payloads and display).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone { name: "UTC".to_string(), tz: TimeZone::UTC }
    }

    /// Looks `name` up in the system tz database. `field` names the parameter for errors.
    pub fn lookup(field: &str, name: &str) -> Result<Zone, TimerError> {
        if name.len() > MAX_TZ_NAME_LEN {
            return Err(TimerError::field(field, format!("longer than {MAX_TZ_NAME_LEN} bytes")));
        }
        let tz = match TimeZone::get(name) {
            Ok(tz) => tz,
            // UTC needs no database; keeps explicit "UTC" working on images without tzdata.
            Err(_) if name.eq_ignore_ascii_case("utc") || name.eq_ignore_ascii_case("etc/utc") => TimeZone::UTC,
            Err(_) => {
                return Err(TimerError::field(field, format!("unknown time zone {name:?}")));
            }
        };
        Ok(Zone { name: name.to_string(), tz })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntervalUnit {
    Weeks,
    Days,
    Hours,
    Minutes,
    Seconds,
}

impl IntervalUnit {
    pub fn seconds(self) -> u64 {
        match self {
            IntervalUnit::Weeks => 7 * 86_400,
            IntervalUnit::Days => 86_400,
            IntervalUnit::Hours => 3_600,
            IntervalUnit::Minutes => 60,
            IntervalUnit::Seconds => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            IntervalUnit::Weeks => "weeks",
            IntervalUnit::Days => "days",
            IntervalUnit::Hours => "hours",
            IntervalUnit::Minutes => "minutes",
            IntervalUnit::Seconds => "seconds",
        }
    }
}

/// Fires every `count × unit` of real (absolute) time, the first time one interval after the
/// timer was created. Like APScheduler's IntervalTrigger, a day is always 86,400 s, across DST too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntervalTimer {
    pub unit: IntervalUnit,
    pub count: u64,
    /// Kept for display; an interval does not depend on the zone.
    pub zone: Zone,
}

impl IntervalTimer {
    pub fn period_seconds(&self) -> u64 {
        self.count.saturating_mul(self.unit.seconds())
    }
}

/// Fires once at `at`; never when `at` is already past when the timer is armed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateTimer {
    pub at: Timestamp,
    /// The zone a date without offset was read in.
    pub zone: Zone,
    /// The parameter text as given.
    pub text: String,
}

/// A validated timer trigger. The `St2*` variants are StackStorm's `core.st2.*Timer` triggers,
/// the `Attune*` ones Attune's core timer sensor triggers; they differ in parameters and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerSpec {
    St2Interval(IntervalTimer),
    St2Date(DateTimer),
    St2Cron(CronTimer),
    AttuneInterval(IntervalTimer),
    AttuneCron(CronTimer),
    AttuneDateTime(DateTimer),
}

/// Whether `trigger_ref` is one of the timer triggers this module fires (or refuses with a clear
/// reason: `core.rruletimer`).
pub fn is_timer_trigger(trigger_ref: &str) -> bool {
    matches!(
        trigger_ref,
        ST2_INTERVAL_TIMER
            | ST2_DATE_TIMER
            | ST2_CRON_TIMER
            | ATTUNE_INTERVAL_TIMER
            | ATTUNE_CRON_TIMER
            | ATTUNE_DATETIME_TIMER
            | ATTUNE_RRULE_TIMER
    )
}

impl TimerSpec {
    /// Validates a rule's trigger parameters for timer `trigger_ref`.
    ///
    /// `params` may be an object or null (no parameters). A null value for an optional
    /// parameter counts as absent. StackStorm timers refuse unknown keys (their schemas say
    /// `additionalProperties: false`); Attune timers ignore them (their schemas carry e.g. a
    /// free-text `description`). The time zone is the `timezone` parameter, UTC when absent.
    pub fn parse(trigger_ref: &str, params: &Value) -> Result<TimerSpec, TimerError> {
        let empty = Map::new();
        let params = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(TimerError::NotAnObject { found: json_type(other) });
            }
        };
        match trigger_ref {
            ST2_INTERVAL_TIMER => {
                only_keys(params, &["timezone", "unit", "delta"])?;
                let zone = zone_param(params)?;
                let unit = match required_str(params, "unit")? {
                    "weeks" => IntervalUnit::Weeks,
                    "days" => IntervalUnit::Days,
                    "hours" => IntervalUnit::Hours,
                    "minutes" => IntervalUnit::Minutes,
                    "seconds" => IntervalUnit::Seconds,
                    other => {
                        return Err(unknown_unit(other, "weeks, days, hours, minutes, seconds"));
                    }
                };
                let count = positive_int(params, "delta")?;
                Ok(TimerSpec::St2Interval(interval(unit, count, "delta", zone)?))
            }
            ST2_DATE_TIMER => {
                only_keys(params, &["timezone", "date"])?;
                let zone = zone_param(params)?;
                let text = required_str(params, "date")?;
                Ok(TimerSpec::St2Date(date_timer("date", text, zone)?))
            }
            ST2_CRON_TIMER => {
                let mut fields = Vec::new();
                for (key, value) in params {
                    if key == "timezone" {
                        continue;
                    }
                    let Some(field) = ApField::from_name(key) else {
                        return Err(TimerError::field(
                            key.as_str(),
                            "unknown parameter (allowed: timezone, year, month, day, week, \
                             day_of_week, hour, minute, second)",
                        ));
                    };
                    let text = match value {
                        Value::Null => continue,
                        Value::String(s) => s.clone(),
                        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => {
                            return Err(TimerError::field(key.as_str(), "must be a string or an integer"));
                        }
                    };
                    fields.push((field, text));
                }
                let zone = zone_param(params)?;
                Ok(TimerSpec::St2Cron(CronTimer::from_apscheduler(&fields, zone)?))
            }
            ATTUNE_INTERVAL_TIMER => {
                let zone = zone_param(params)?;
                // Attune's sensor defaults the unit to seconds and also accepts days.
                let unit = match optional_str(params, "unit")? {
                    None | Some("seconds") => IntervalUnit::Seconds,
                    Some("minutes") => IntervalUnit::Minutes,
                    Some("hours") => IntervalUnit::Hours,
                    Some("days") => IntervalUnit::Days,
                    Some(other) => {
                        return Err(unknown_unit(other, "seconds, minutes, hours, days"));
                    }
                };
                let count = positive_int(params, "interval")?;
                Ok(TimerSpec::AttuneInterval(interval(unit, count, "interval", zone)?))
            }
            ATTUNE_CRON_TIMER => {
                let zone = zone_param(params)?;
                let expression = required_str(params, "expression")?;
                Ok(TimerSpec::AttuneCron(CronTimer::from_attune(expression, zone)?))
            }
            ATTUNE_DATETIME_TIMER => {
                let zone = zone_param(params)?;
                let text = required_str(params, "fire_at")?;
                Ok(TimerSpec::AttuneDateTime(date_timer("fire_at", text, zone)?))
            }
            ATTUNE_RRULE_TIMER => Err(TimerError::Unsupported {
                trigger_ref: trigger_ref.to_string(),
                reason: "RRULE timers are not supported; use core.crontimer",
            }),
            other => Err(TimerError::NotATimer { trigger_ref: other.to_string() }),
        }
    }

    /// The trigger ref this spec was parsed for.
    pub fn trigger_ref(&self) -> &'static str {
        match self {
            TimerSpec::St2Interval(_) => ST2_INTERVAL_TIMER,
            TimerSpec::St2Date(_) => ST2_DATE_TIMER,
            TimerSpec::St2Cron(_) => ST2_CRON_TIMER,
            TimerSpec::AttuneInterval(_) => ATTUNE_INTERVAL_TIMER,
            TimerSpec::AttuneCron(_) => ATTUNE_CRON_TIMER,
            TimerSpec::AttuneDateTime(_) => ATTUNE_DATETIME_TIMER,
        }
    }

    /// The cron pattern evaluated, for display and tests: the croner translation of a
    /// StackStorm CronTimer (7 fields, `sec min hour dom month dow year`, dow 0 = Sunday), or an
    /// Attune expression as written. `None` for interval and date timers.
    pub fn cron_pattern(&self) -> Option<String> {
        match self {
            TimerSpec::St2Cron(c) | TimerSpec::AttuneCron(c) => Some(c.pattern().to_string()),
            _ => None,
        }
    }

    pub fn zone(&self) -> &Zone {
        match self {
            TimerSpec::St2Interval(i) | TimerSpec::AttuneInterval(i) => &i.zone,
            TimerSpec::St2Date(d) | TimerSpec::AttuneDateTime(d) => &d.zone,
            TimerSpec::St2Cron(c) | TimerSpec::AttuneCron(c) => c.zone(),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn only_keys(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), TimerError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => {
            Err(TimerError::field(key.as_str(), format!("unknown parameter (allowed: {})", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

fn optional_str<'a>(params: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, TimerError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(TimerError::field(key, format!("must be a string, not {}", json_type(other)))),
    }
}

fn required_str<'a>(params: &'a Map<String, Value>, key: &str) -> Result<&'a str, TimerError> {
    optional_str(params, key)?.ok_or_else(|| TimerError::field(key, "required"))
}

fn positive_int(params: &Map<String, Value>, key: &str) -> Result<u64, TimerError> {
    let value = match params.get(key) {
        None | Some(Value::Null) => return Err(TimerError::field(key, "required")),
        Some(v) => v,
    };
    match value.as_i64() {
        Some(n) if n > 0 => Ok(n.unsigned_abs()),
        Some(n) => Err(TimerError::field(key, format!("must be greater than 0, not {n}"))),
        None => match value.as_u64() {
            Some(n) => Ok(n),
            None => Err(TimerError::field(key, format!("must be an integer, not {}", json_type(value)))),
        },
    }
}

fn unknown_unit(unit: &str, allowed: &str) -> TimerError {
    TimerError::field("unit", format!("unknown unit {unit:?} (expected one of {allowed})"))
}

fn interval(unit: IntervalUnit, count: u64, count_key: &str, zone: Zone) -> Result<IntervalTimer, TimerError> {
    let timer = IntervalTimer { unit, count, zone };
    if count > MAX_INTERVAL_SECONDS / unit.seconds() {
        return Err(TimerError::field(
            count_key,
            format!("{count} {} is longer than the maximum of {MAX_INTERVAL_SECONDS} seconds", unit.name()),
        ));
    }
    Ok(timer)
}

fn zone_param(params: &Map<String, Value>) -> Result<Zone, TimerError> {
    match optional_str(params, "timezone")? {
        None => Ok(Zone::utc()),
        Some(name) => Zone::lookup("timezone", name),
    }
}

fn date_timer(field: &str, text: &str, zone: Zone) -> Result<DateTimer, TimerError> {
    let at = parse_instant(text, zone.tz()).map_err(|reason| TimerError::field(field, reason))?;
    Ok(DateTimer { at, zone, text: text.to_string() })
}

/// ISO 8601 / RFC 3339 date-time (`T` or a space between date and time, optional fraction),
/// or a bare date (midnight). With an offset or `Z` it names an instant; without one it is a
/// wall-clock time in `tz` (a time in a DST gap moves forward, an ambiguous one takes the
/// earlier instant). dateutil's free-form formats ("Jan 1 2026") are not accepted.
fn parse_instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let bad = |detail: &dyn std::fmt::Display| format!("{text:?} is not an ISO 8601 date-time ({detail})");
    if text.len() > MAX_FIELD_LEN {
        return Err(format!("longer than {MAX_FIELD_LEN} bytes"));
    }
    let pieces = Pieces::parse(text.trim()).map_err(|e| bad(&e))?;
    let civil = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    match pieces.offset() {
        Some(PiecesOffset::Zulu) => civil.to_zoned(TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| bad(&e)),
        Some(PiecesOffset::Numeric(offset)) => offset.offset().to_timestamp(civil).map_err(|e| bad(&e)),
        _ => civil.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| bad(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn check(trigger_ref: &str, params: Value, expect: Expect) {
        let got = match TimerSpec::parse(trigger_ref, &params) {
            Ok(TimerSpec::St2Interval(i)) => {
                format!("st2 interval {}s {}", i.period_seconds(), i.zone.name())
            }
            Ok(TimerSpec::AttuneInterval(i)) => format!("attune interval {}s", i.period_seconds()),
            Ok(TimerSpec::St2Date(d)) => format!("st2 date {} ({})", d.at, d.zone.name()),
            Ok(TimerSpec::AttuneDateTime(d)) => format!("attune date {} ({})", d.at, d.zone.name()),
            Ok(spec) => format!("{} {:?} {}", spec.trigger_ref(), spec.cron_pattern(), spec.zone().name()),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn parses_valid_parameters() {
        check(ST2_INTERVAL_TIMER, json!({"unit": "seconds", "delta": 30}), expect![["st2 interval 30s UTC"]]);
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "weeks", "delta": 2, "timezone": "Asia/Shanghai"}),
            expect![["st2 interval 1209600s Asia/Shanghai"]],
        );
        check(ATTUNE_INTERVAL_TIMER, json!({"interval": 5}), expect![["attune interval 5s"]]);
        check(
            ATTUNE_INTERVAL_TIMER,
            json!({"unit": "days", "interval": 1, "description": "daily"}),
            expect![["attune interval 86400s"]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"date": "2026-03-29T02:30:00", "timezone": "Europe/Berlin"}),
            expect![["st2 date 2026-03-29T01:30:00Z (Europe/Berlin)"]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"date": "2026-10-25 02:30:00", "timezone": "Europe/Berlin"}),
            expect![["st2 date 2026-10-25T00:30:00Z (Europe/Berlin)"]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"date": "2026-05-01 12:00:00.5+02:00"}),
            expect![["st2 date 2026-05-01T10:00:00.5Z (UTC)"]],
        );
        check(ST2_DATE_TIMER, json!({"date": "2026-05-01"}), expect![["st2 date 2026-05-01T00:00:00Z (UTC)"]]);
        check(
            ATTUNE_DATETIME_TIMER,
            json!({"fire_at": "2024-06-15T15:00:00-05:00", "timezone": "America/New_York"}),
            expect![["attune date 2024-06-15T20:00:00Z (America/New_York)"]],
        );
        check(
            ATTUNE_DATETIME_TIMER,
            json!({"fire_at": "2024-12-31T23:59:59Z"}),
            expect![["attune date 2024-12-31T23:59:59Z (UTC)"]],
        );
        check(
            ATTUNE_CRON_TIMER,
            json!({"expression": "0 */15 * * * *", "timezone": "utc"}),
            expect![[r#"core.crontimer Some("0 */15 * * * *") utc"#]],
        );
        check(
            ST2_CRON_TIMER,
            json!({"hour": 5, "timezone": null}),
            expect![[r#"core.st2.CronTimer Some("0 0 5 * * * *") UTC"#]],
        );
        check(ST2_CRON_TIMER, Value::Null, expect![[r#"core.st2.CronTimer Some("* * * * * * *") UTC"#]]);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "fortnights", "delta": 1}),
            expect![[
                r#"error: unit: unknown unit "fortnights" (expected one of weeks, days, hours, minutes, seconds)"#
            ]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 0}),
            expect![["error: delta: must be greater than 0, not 0"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": -5}),
            expect![["error: delta: must be greater than 0, not -5"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": "5"}),
            expect![["error: delta: must be an integer, not a string"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 1.5}),
            expect![["error: delta: must be an integer, not a number"]],
        );
        check(ST2_INTERVAL_TIMER, json!({"unit": "seconds"}), expect![["error: delta: required"]]);
        check(ST2_INTERVAL_TIMER, json!({"delta": 5}), expect![["error: unit: required"]]);
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 5, "start": 1}),
            expect![["error: start: unknown parameter (allowed: timezone, unit, delta)"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 5, "timezone": "Nowhere/Special"}),
            expect![[r#"error: timezone: unknown time zone "Nowhere/Special""#]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 5, "timezone": 3}),
            expect![["error: timezone: must be a string, not a number"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "seconds", "delta": 5, "timezone": "../../../etc/passwd"}),
            expect![[r#"error: timezone: unknown time zone "../../../etc/passwd""#]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"date": "tomorrow"}),
            expect![[
                r#"error: date: "tomorrow" is not an ISO 8601 date-time (failed to parse four digit integer as year: invalid digit, expected 0-9 but got t)"#
            ]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"date": "2026-02-30T00:00:00"}),
            expect![[
                r#"error: date: "2026-02-30T00:00:00" is not an ISO 8601 date-time (parsed date is not valid: parameter 'day' for `2026-02` is invalid, must be in range `1..=28`)"#
            ]],
        );
        check(
            ST2_DATE_TIMER,
            json!({"run_date": "2026-01-01"}),
            expect![["error: run_date: unknown parameter (allowed: timezone, date)"]],
        );
        check(
            ATTUNE_INTERVAL_TIMER,
            json!({"unit": "weeks", "interval": 1}),
            expect![[r#"error: unit: unknown unit "weeks" (expected one of seconds, minutes, hours, days)"#]],
        );
        check(ATTUNE_INTERVAL_TIMER, json!({"unit": "seconds"}), expect![["error: interval: required"]]);
        check(ATTUNE_CRON_TIMER, json!({"timezone": "UTC"}), expect![["error: expression: required"]]);
        check(
            ATTUNE_DATETIME_TIMER,
            json!({"fire_at": 1735689599}),
            expect![["error: fire_at: must be a string, not a number"]],
        );
        check(
            ATTUNE_RRULE_TIMER,
            json!({}),
            expect![["error: core.rruletimer: RRULE timers are not supported; use core.crontimer"]],
        );
        check("core.st2.webhook", json!({}), expect![[r#"error: "core.st2.webhook" is not a timer trigger"#]]);
        check(ST2_CRON_TIMER, json!([1, 2]), expect![["error: parameters must be an object, not an array"]]);
    }

    #[test]
    fn interval_longer_than_limit_is_refused() {
        let max_days = MAX_INTERVAL_SECONDS / 86_400;
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "days", "delta": max_days}),
            expect![["st2 interval 3162240000s UTC"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "days", "delta": max_days + 1}),
            expect![["error: delta: 36601 days is longer than the maximum of 3162240000 seconds"]],
        );
        check(
            ST2_INTERVAL_TIMER,
            json!({"unit": "weeks", "delta": u64::MAX}),
            expect![["error: delta: 18446744073709551615 weeks is longer than the maximum of 3162240000 seconds"]],
        );
    }

    #[test]
    fn time_zone_name_longer_than_limit_is_refused() {
        let long = "A".repeat(MAX_TZ_NAME_LEN + 1);
        let err = Zone::lookup("timezone", &long).unwrap_err();
        expect![["timezone: longer than 64 bytes"]].assert_eq(&err.to_string());
        assert_eq!(err.field_name(), Some("timezone"));
    }

    #[test]
    fn date_text_longer_than_limit_is_refused() {
        let long = format!("2026-01-01T00:00:00{}", "0".repeat(MAX_FIELD_LEN));
        check(ST2_DATE_TIMER, json!({ "date": long }), expect![["error: date: longer than 256 bytes"]]);
    }

    #[test]
    fn equal_parameters_give_equal_specs() {
        // The queue's upsert relies on this to keep a timer's schedule across reloads.
        let p = json!({"hour": 2, "minute": 30, "timezone": "Europe/Berlin"});
        let a = TimerSpec::parse(ST2_CRON_TIMER, &p).unwrap();
        let b = TimerSpec::parse(ST2_CRON_TIMER, &p).unwrap();
        assert_eq!(a, b);
        let c =
            TimerSpec::parse(ST2_CRON_TIMER, &json!({"hour": 2, "minute": 30, "timezone": "Europe/Paris"})).unwrap();
        assert_ne!(a, c);
        let i = |tz: &str| TimerSpec::parse(ATTUNE_INTERVAL_TIMER, &json!({"interval": 5, "timezone": tz})).unwrap();
        assert_eq!(i("America/New_York"), i("America/New_York"));
    }

    #[test]
    fn recognises_timer_triggers() {
        for r in [
            ST2_INTERVAL_TIMER,
            ST2_DATE_TIMER,
            ST2_CRON_TIMER,
            ATTUNE_INTERVAL_TIMER,
            ATTUNE_CRON_TIMER,
            ATTUNE_DATETIME_TIMER,
            ATTUNE_RRULE_TIMER,
        ] {
            assert!(is_timer_trigger(r), "{r}");
        }
        for r in ["core.st2.webhook", "core.st2.crontimer", "core.timer", ""] {
            assert!(!is_timer_trigger(r), "{r}");
        }
    }
}
