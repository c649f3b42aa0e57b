//! Cron timers: StackStorm's APScheduler `CronTrigger` field sets translated into a croner
//! pattern, Attune's 6-field (seconds-first) expressions, and the search for the next fire time.
//!
//! Owns: parsing APScheduler field expressions exactly as APScheduler 3.11 accepts them
//! (`apscheduler/triggers/cron/{__init__,fields,expressions}.py`), the defaulting rule, the
//! translation to croner, and a small post-filter for what croner cannot express (ISO `week`, and
//! `day` lists that mix `xth y` with plain days or with a restricted `day_of_week`). Must not read
//! the clock or do I/O: every search starts from an instant the caller gives.
//!
//! Why croner: it is DST correct (a daily 02:30 runs at 03:00 on the spring-forward day and once
//! on the fall-back day; `*/30` yields strictly increasing instants through the repeated hour),
//! see `reference/crates.md` §3.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};

use super::spec::{TimerError, Zone};

/// Longest accepted text of one cron field or Attune expression. Real ones are under 40 bytes;
/// the bound keeps parsing of untrusted rule files cheap.
pub const MAX_FIELD_LEN: usize = 256;

/// How many candidate instants the post-filter (`week`, mixed `day` lists) may reject before a
/// search gives up and reports "no next fire". Each rejection skips at least a whole day (a whole
/// ISO week for `week`), so 1,000 covers any satisfiable StackStorm spec seen in practice
/// (`{week: 53}` needs ~320 week skips between 53-week years) while an unsatisfiable one such as
/// `{month: 6, week: 1}` ends in milliseconds instead of scanning to the year 5000.
pub const MAX_FILTER_STEPS: u32 = 1_000;

/// Last year croner can represent; APScheduler allows 9999 but a year past this is refused.
pub const MAX_YEAR: u32 = croner::YEAR_UPPER_LIMIT as u32;

/// A cron timer ready to be searched: the croner pattern, its zone and the post-filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronTimer {
    zone: Zone,
    /// The croner pattern actually evaluated (7 fields for StackStorm; Attune's text as given).
    pattern: String,
    cron: Cron,
    filter: DateFilter,
}

impl CronTimer {
    /// Builds a timer from StackStorm `core.st2.CronTimer` fields. `fields` holds, for each field
    /// name that was given, its text (integers already turned into decimal text).
    pub(super) fn from_apscheduler(fields: &[(ApField, String)], zone: Zone) -> Result<CronTimer, TimerError> {
        let translated = translate(fields)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .dom_and_dow(true)
            .build()
            .parse(&translated.pattern)
            // The pattern is generated from validated fields, so this is a bug, but report it as
            // an error on the timer rather than panic.
            .map_err(|e| {
                TimerError::field("cron", format!("internal pattern {:?} rejected: {e}", translated.pattern))
            })?;
        Ok(CronTimer { zone, pattern: translated.pattern, cron, filter: translated.filter })
    }

    /// Builds a timer from an Attune `core.crontimer` expression: 6 fields, seconds first
    /// (`sec min hour dom month dow`, optional 7th year), dow 0 = Sunday, day-of-month AND
    /// day-of-week (tokio-cron-scheduler parses with croner `seconds_required` + `dom_and_dow`).
    pub(super) fn from_attune(expression: &str, zone: Zone) -> Result<CronTimer, TimerError> {
        if expression.len() > MAX_FIELD_LEN {
            return Err(TimerError::field("expression", format!("longer than {MAX_FIELD_LEN} bytes")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Optional)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| TimerError::field("expression", e.to_string()))?;
        Ok(CronTimer { zone, pattern: expression.to_string(), cron, filter: DateFilter::default() })
    }

    /// The croner pattern evaluated. For StackStorm timers this is the translation; note that an
    /// ISO `week` restriction and mixed `day` lists are applied after croner and do not appear in
    /// it (see `has_post_filter`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Whether candidates from croner are filtered further (ISO week or a mixed `day` list).
    pub fn has_post_filter(&self) -> bool {
        self.filter != DateFilter::default()
    }

    /// The first matching instant strictly after `after`, in this timer's zone. `None` when the
    /// pattern has no later match (year range exhausted) or the post-filter rejected
    /// `MAX_FILTER_STEPS` candidates in a row.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.next_after_bounded(after, MAX_FILTER_STEPS)
    }

    fn next_after_bounded(&self, after: Timestamp, max_steps: u32) -> Option<Timestamp> {
        let tz = self.zone.tz();
        let mut from = after.to_zoned(tz.clone());
        let mut inclusive = false;
        for _ in 0..max_steps {
            let candidate = self.cron.find_next_occurrence(&from, inclusive).ok()?;
            if candidate.timestamp() <= after {
                // croner promises a later instant; if it ever did not, step past it rather than
                // return a time that goes backwards.
                from = candidate;
                inclusive = false;
                continue;
            }
            match self.filter.check(candidate.date()) {
                Verdict::Accept => return Some(candidate.timestamp()),
                Verdict::SkipTo(date) => {
                    // Start of that day in the zone (jiff moves a midnight inside a DST gap to
                    // the first instant after it).
                    from = date.to_zoned(tz.clone()).ok()?;
                    inclusive = true;
                }
                Verdict::End => return None,
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// APScheduler fields
// ---------------------------------------------------------------------------------------------

/// The eight `CronTrigger` fields, most significant first (APScheduler's `FIELD_NAMES` order,
/// which the defaulting rule depends on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ApField {
    Year,
    Month,
    Day,
    Week,
    DayOfWeek,
    Hour,
    Minute,
    Second,
}

impl ApField {
    pub(super) const ALL: [ApField; 8] = [
        ApField::Year,
        ApField::Month,
        ApField::Day,
        ApField::Week,
        ApField::DayOfWeek,
        ApField::Hour,
        ApField::Minute,
        ApField::Second,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            ApField::Year => "year",
            ApField::Month => "month",
            ApField::Day => "day",
            ApField::Week => "week",
            ApField::DayOfWeek => "day_of_week",
            ApField::Hour => "hour",
            ApField::Minute => "minute",
            ApField::Second => "second",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<ApField> {
        ApField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// APScheduler's MIN_VALUES / MAX_VALUES (year capped at croner's limit).
    fn bounds(self) -> (u32, u32) {
        match self {
            ApField::Year => (1970, MAX_YEAR),
            ApField::Month => (1, 12),
            ApField::Day => (1, 31),
            ApField::Week => (1, 53),
            ApField::DayOfWeek => (0, 6),
            ApField::Hour => (0, 23),
            ApField::Minute | ApField::Second => (0, 59),
        }
    }

    /// APScheduler's DEFAULT_VALUES: what a field *after* the least significant given one gets.
    fn default_text(self) -> &'static str {
        match self {
            ApField::Year | ApField::Week | ApField::DayOfWeek => "*",
            ApField::Month | ApField::Day => "1",
            ApField::Hour | ApField::Minute | ApField::Second => "0",
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
/// `xth y` positions; index + 1 is the occurrence, `last` is stored as `LAST_POSITION`.
const POSITIONS: [&str; 5] = ["1st", "2nd", "3rd", "4th", "5th"];
const LAST_POSITION: u8 = 0;

/// One comma-separated item of a field, as APScheduler's expression classes understand it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expr {
    /// `*` or `*/step`.
    All { step: Option<u32> },
    /// `a`, `a-b`, `a-b/step`, `a/step` (then `last` is the field maximum); also month and
    /// weekday names, which APScheduler turns into numeric ranges.
    Range { first: u32, last: u32, step: Option<u32> },
    /// `last` in `day`: the last day of the month.
    LastDay,
    /// `xth y` / `last y` in `day`: `nth` 1..=5 or `LAST_POSITION`, `weekday` 0 = Monday.
    Position { nth: u8, weekday: u8 },
}

impl Expr {
    /// The plain values this item selects within `min..=max` (none for `last` / positions).
    fn values(self, min: u32, max: u32) -> Vec<u32> {
        match self {
            Expr::All { step } => stepped(min, max, step),
            Expr::Range { first, last, step } => stepped(first, last.min(max), step),
            Expr::LastDay | Expr::Position { .. } => Vec::new(),
        }
    }
}

fn stepped(first: u32, last: u32, step: Option<u32>) -> Vec<u32> {
    let step = step.unwrap_or(1).max(1) as usize;
    (first..=last).step_by(step).collect()
}

/// Parses a whole field (`"1-5,10"`) into its items, with APScheduler's validation.
fn parse_field(field: ApField, text: &str) -> Result<Vec<Expr>, TimerError> {
    let err = |reason: String| TimerError::field(field.name(), reason);
    if text.len() > MAX_FIELD_LEN {
        return Err(err(format!("longer than {MAX_FIELD_LEN} bytes")));
    }
    let mut items = Vec::new();
    for item in text.trim().split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(err(format!("empty item in {text:?}")));
        }
        items.push(parse_expr(field, item).map_err(|reason| err(format!("{item:?}: {reason}")))?);
    }
    Ok(items)
}

fn parse_expr(field: ApField, item: &str) -> Result<Expr, String> {
    let (min, max) = field.bounds();
    let lower = item.to_ascii_lowercase();

    if let Some(rest) = lower.strip_prefix('*') {
        let step = match rest.strip_prefix('/') {
            None if rest.is_empty() => None,
            Some(step) => Some(parse_step(step, max - min)?),
            None => return Err("unrecognized expression".into()),
        };
        return Ok(Expr::All { step });
    }

    // APScheduler's RangeExpression regex is anchored at both ends: only digits, `-` and `/`.
    // Anything else ("2nd mon") belongs to the field's word forms below.
    if lower.starts_with(|c: char| c.is_ascii_digit())
        && lower.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'/')
    {
        let (range, step) = match lower.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (lower.as_str(), None),
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (parse_number(a)?, Some(parse_number(b)?)),
            None => (parse_number(range)?, None),
        };
        // APScheduler: a bare number is the range a-a; `a/n` runs to the field maximum.
        let last = match (last, step) {
            (None, None) => Some(first),
            (last, _) => last,
        };
        if first < min {
            return Err(format!("{first} is below the minimum {min}"));
        }
        if let Some(last) = last {
            if last > max {
                return Err(format!("{last} is above the maximum {max}"));
            }
            if first > last {
                return Err(format!("range start {first} is above its end {last}"));
            }
        }
        let end = last.unwrap_or(max);
        if first > end {
            return Err(format!("{first} is above the maximum {max}"));
        }
        let step = step.map(|s| parse_step(s, end - first)).transpose()?;
        return Ok(Expr::Range { first, last: end, step });
    }

    match field {
        ApField::Month => parse_named_range(&lower, &MONTHS, 1),
        ApField::DayOfWeek => parse_named_range(&lower, &WEEKDAYS, 0),
        ApField::Day => parse_day_word(&lower),
        _ => Err("unrecognized expression".into()),
    }
}

/// APScheduler rejects a step of 0 and a step larger than the range it steps through.
fn parse_step(text: &str, range: u32) -> Result<u32, String> {
    let step = parse_number(text)?;
    if step == 0 {
        return Err("step must be greater than 0".into());
    }
    if step > range {
        return Err(format!("step {step} is larger than the range it steps through ({range})"));
    }
    Ok(step)
}

fn parse_number(text: &str) -> Result<u32, String> {
    // At most 9 digits so the value fits u32 whatever it is; no field needs more than 4.
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number"));
    }
    text.parse::<u32>().map_err(|_| format!("{text:?} is not a number"))
}

/// `name` or `name-name` (APScheduler's MonthRangeExpression / WeekdayRangeExpression; no step).
fn parse_named_range(text: &str, names: &[&str], base: u32) -> Result<Expr, String> {
    let index = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| i as u32 + base)
            .ok_or_else(|| format!("unknown name {name:?} (expected one of {})", names.join(",")))
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (index(a)?, index(b)?),
        None => {
            let v = index(text)?;
            (v, v)
        }
    };
    if first > last {
        return Err(format!("range start {first} is above its end {last}"));
    }
    Ok(Expr::Range { first, last, step: None })
}

/// `last`, or `<1st..5th|last> <weekday name>` in the `day` field.
fn parse_day_word(text: &str) -> Result<Expr, String> {
    if text == "last" {
        return Ok(Expr::LastDay);
    }
    let mut words = text.split_whitespace();
    let (Some(position), Some(weekday), None) = (words.next(), words.next(), words.next()) else {
        return Err("unrecognized expression (expected a number, range, \"last\" or \"xth day\")".into());
    };
    let nth = if position == "last" {
        LAST_POSITION
    } else {
        POSITIONS
            .iter()
            .position(|p| *p == position)
            .map(|i| i as u8 + 1)
            .ok_or_else(|| format!("unknown position {position:?} (expected 1st..5th or last)"))?
    };
    let weekday = WEEKDAYS
        .iter()
        .position(|w| *w == weekday)
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown weekday {weekday:?} (expected mon..sun)"))?;
    Ok(Expr::Position { nth, weekday })
}

// ---------------------------------------------------------------------------------------------
// Translation
// ---------------------------------------------------------------------------------------------

struct Translated {
    pattern: String,
    filter: DateFilter,
}

/// APScheduler's defaulting rule (`CronTrigger.__init__`): walking the fields from `year` down
/// to `second`, a given field is used as is; a missing field *before* the least significant given
/// one is `*`; a missing field *after* it takes DEFAULT_VALUES (its minimum, but `*` for `year`,
/// `week` and `day_of_week`). With no field given at all every field is `*`: the timer fires
/// every second.
fn translate(given: &[(ApField, String)]) -> Result<Translated, TimerError> {
    let last_given = given.iter().map(|(f, _)| *f).max();
    let mut fields: Vec<Vec<Expr>> = Vec::with_capacity(8);
    for field in ApField::ALL {
        let text = match given.iter().find(|(f, _)| *f == field) {
            Some((_, text)) => text.as_str(),
            None if last_given.is_some_and(|last| field > last) => field.default_text(),
            None => "*",
        };
        fields.push(parse_field(field, text)?);
    }
    let get = |f: ApField| fields.get(f as usize).map(Vec::as_slice).unwrap_or(&[]);

    let second = render_plain(ApField::Second, get(ApField::Second));
    let minute = render_plain(ApField::Minute, get(ApField::Minute));
    let hour = render_plain(ApField::Hour, get(ApField::Hour));
    let month = render_plain(ApField::Month, get(ApField::Month));
    let year = render_plain(ApField::Year, get(ApField::Year));
    let dow_items = get(ApField::DayOfWeek);
    let dow_is_star = dow_items.contains(&Expr::All { step: None });
    let mut dow = render_dow(dow_items);

    let mut filter = DateFilter { weeks: week_mask(get(ApField::Week)), day: None };

    let day_items = get(ApField::Day);
    let positions: Vec<(u8, u8)> = day_items
        .iter()
        .filter_map(|e| match e {
            Expr::Position { nth, weekday } => Some((*nth, *weekday)),
            _ => None,
        })
        .collect();
    let day = if day_items.contains(&Expr::All { step: None }) || positions.is_empty() {
        // Plain days and `last`: croner's day-of-month field says exactly this.
        render_plain(ApField::Day, day_items)
    } else if positions.len() == day_items.len() && dow_is_star {
        // Only `xth y` items and no day_of_week: croner's `#` / `L` weekday forms say exactly
        // this, and croner ORs items within the weekday field as APScheduler does within `day`.
        dow = positions
            .iter()
            .map(|&(nth, weekday)| {
                let d = croner_weekday(u32::from(weekday));
                if nth == LAST_POSITION { format!("{d}L") } else { format!("{d}#{nth}") }
            })
            .collect::<Vec<_>>()
            .join(",");
        "*".to_string()
    } else {
        // `xth y` mixed with plain days, or ANDed with a restricted day_of_week: croner cannot
        // OR a day-of-month with an nth weekday inside an AND pattern, so croner keeps
        // day_of_week and the exact APScheduler day rule runs as a post-filter.
        filter.day = Some(DayRule::new(day_items));
        "*".to_string()
    };

    Ok(Translated { pattern: format!("{second} {minute} {hour} {day} {month} {dow} {year}"), filter })
}

/// Renders a field whose numbering croner shares with APScheduler (all but day_of_week).
fn render_plain(field: ApField, items: &[Expr]) -> String {
    let (min, max) = field.bounds();
    // croner accepts `*` only as the whole field; `*` in a list selects everything anyway.
    if items.contains(&Expr::All { step: None }) {
        return "*".to_string();
    }
    items
        .iter()
        .filter_map(|item| match *item {
            // croner's `*/n` starts at the field minimum like APScheduler's, except for the year
            // (croner's minimum is year 1, APScheduler's 1970), so spell the range out there.
            Expr::All { step: Some(n) } if field == ApField::Year => Some(format!("{min}-{max}/{n}")),
            Expr::All { step: Some(n) } => Some(format!("*/{n}")),
            Expr::All { step: None } => Some("*".to_string()),
            Expr::Range { first, last, step } => Some(match step {
                Some(n) => format!("{first}-{last}/{n}"),
                None if first == last => first.to_string(),
                None => format!("{first}-{last}"),
            }),
            Expr::LastDay => Some("L".to_string()),
            Expr::Position { .. } => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// APScheduler weekday (0 = Monday … 6 = Sunday) → croner/POSIX (0 = Sunday, 1 = Monday).
fn croner_weekday(apscheduler: u32) -> u32 {
    (apscheduler + 1) % 7
}

fn render_dow(items: &[Expr]) -> String {
    if items.contains(&Expr::All { step: None }) {
        return "*".to_string();
    }
    let (min, max) = ApField::DayOfWeek.bounds();
    let mut parts = Vec::new();
    for item in items {
        match *item {
            // A plain range shifts by one; croner reads 7 as Sunday, so `sat-sun` (5-6) is `6-7`.
            Expr::Range { first, last, step: None } if first != last => {
                parts.push(format!("{}-{}", first + 1, last + 1))
            }
            // Steps count from Monday in APScheduler but from Sunday in croner: list the days.
            other => parts.extend(other.values(min, max).into_iter().map(|v| croner_weekday(v).to_string())),
        }
    }
    parts.join(",")
}

/// Bit `w` set for every ISO week `w` the field selects; `None` when it selects all 53.
fn week_mask(items: &[Expr]) -> Option<u64> {
    let (min, max) = ApField::Week.bounds();
    let mask = items.iter().flat_map(|e| e.values(min, max)).fold(0u64, |m, w| m | (1u64 << w));
    let all = (min..=max).fold(0u64, |m, w| m | (1u64 << w));
    (mask != all).then_some(mask)
}

// ---------------------------------------------------------------------------------------------
// Post-filter
// ---------------------------------------------------------------------------------------------

/// Date conditions applied to croner's candidates. The default accepts everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DateFilter {
    /// ISO week numbers allowed (bit per week).
    weeks: Option<u64>,
    /// The exact APScheduler `day` rule, when croner could not express it.
    day: Option<DayRule>,
}

enum Verdict {
    Accept,
    /// Rejected; no later candidate can match before this date.
    SkipTo(Date),
    /// Rejected and the calendar ran out.
    End,
}

impl DateFilter {
    fn check(&self, date: Date) -> Verdict {
        if let Some(weeks) = self.weeks {
            let week = date.iso_week_date().week();
            if weeks & (1u64 << week.clamp(0, 63)) == 0 {
                // The ISO week is the same until next Monday.
                let to_monday = 7 - i64::from(date.weekday().to_monday_zero_offset());
                return match date.checked_add(to_monday.days()) {
                    Ok(monday) => Verdict::SkipTo(monday),
                    Err(_) => Verdict::End,
                };
            }
        }
        if let Some(rule) = &self.day
            && !rule.matches(date)
        {
            return match date.tomorrow() {
                Ok(next) => Verdict::SkipTo(next),
                Err(_) => Verdict::End,
            };
        }
        Verdict::Accept
    }
}

/// APScheduler's DayOfMonthField: a day matches when any item matches.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DayRule {
    /// Bit per plain day of month 1..=31.
    days: u32,
    last_day: bool,
    positions: Vec<(u8, u8)>,
}

impl DayRule {
    fn new(items: &[Expr]) -> DayRule {
        let (min, max) = ApField::Day.bounds();
        let mut rule = DayRule { days: 0, last_day: false, positions: Vec::new() };
        for item in items {
            match *item {
                Expr::LastDay => rule.last_day = true,
                Expr::Position { nth, weekday } => rule.positions.push((nth, weekday)),
                other => {
                    for d in other.values(min, max) {
                        rule.days |= 1u32 << d.min(31);
                    }
                }
            }
        }
        rule
    }

    fn matches(&self, date: Date) -> bool {
        let day = date.day().unsigned_abs();
        let month_len = date.days_in_month().unsigned_abs();
        if self.days & (1u32 << day.min(31)) != 0 || (self.last_day && day == month_len) {
            return true;
        }
        let weekday = date.weekday().to_monday_zero_offset().unsigned_abs();
        self.positions.iter().any(|&(nth, wd)| {
            wd == weekday
                && if nth == LAST_POSITION {
                    // The last occurrence: no room for another one a week later.
                    day + 7 > month_len
                } else {
                    (day - 1) / 7 + 1 == nth
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::super::spec::TimerSpec;

    fn st2(params: serde_json::Value) -> Result<TimerSpec, TimerError> {
        TimerSpec::parse("core.st2.CronTimer", &params)
    }

    /// APScheduler field set → croner pattern (or the error).
    fn check(params: serde_json::Value, expect: Expect) {
        let got = match st2(params) {
            Ok(spec) => {
                let filter = match &spec {
                    TimerSpec::St2Cron(c) if c.has_post_filter() => " + post-filter",
                    _ => "",
                };
                format!("{}{filter}", spec.cron_pattern().unwrap_or_default())
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn apscheduler_fields_to_croner_patterns() {
        // Nothing given: every field `*`, i.e. every second (APScheduler does the same).
        check(json!({}), expect![["* * * * * * *"]]);
        // Smaller fields default to their minimum, larger ones to `*`.
        check(json!({"hour": 5}), expect![["0 0 5 * * * *"]]);
        check(json!({"minute": "*/15"}), expect![["0 */15 * * * * *"]]);
        check(json!({"second": 30}), expect![["30 * * * * * *"]]);
        check(json!({"month": 6}), expect![["0 0 0 1 6 * *"]]);
        // week and day_of_week default to `*` even after the last given field.
        check(json!({"year": 2027}), expect![["0 0 0 1 1 * 2027"]]);
        check(json!({"day_of_week": 0, "hour": 9}), expect![["0 0 9 * * 1 *"]]);
        check(json!({"day_of_week": "mon-fri", "hour": "8-18/2"}), expect![["0 0 8-18/2 * * 1-5 *"]]);
        check(json!({"day_of_week": "sat-sun"}), expect![["0 0 0 * * 6-7 *"]]);
        check(json!({"day_of_week": "sun,3"}), expect![["0 0 0 * * 0,4 *"]]);
        check(json!({"day_of_week": "*/2"}), expect![["0 0 0 * * 1,3,5,0 *"]]);
        check(json!({"day_of_week": "4-6"}), expect![["0 0 0 * * 5-7 *"]]);
        check(json!({"day": "last"}), expect![["0 0 0 L * * *"]]);
        check(json!({"day": "1,15,last", "hour": 12}), expect![["0 0 12 1,15,L * * *"]]);
        check(json!({"day": "last fri"}), expect![["0 0 0 * * 5L *"]]);
        check(json!({"day": "2nd mon"}), expect![["0 0 0 * * 1#2 *"]]);
        check(json!({"day": "1st sun, last sun"}), expect![["0 0 0 * * 0#1,0L *"]]);
        check(json!({"day": "1,last fri"}), expect![["0 0 0 * * * * + post-filter"]]);
        check(json!({"day": "2nd mon", "day_of_week": "fri"}), expect![["0 0 0 * * 5 * + post-filter"]]);
        check(json!({"week": 10}), expect![["0 0 0 * * * * + post-filter"]]);
        check(json!({"week": "*", "hour": 1}), expect![["0 0 1 * * * *"]]);
        check(json!({"year": "2027-2028", "month": "feb", "day": 29}), expect![["0 0 0 29 2 * 2027-2028"]]);
        check(json!({"year": "*/4"}), expect![["0 0 0 1 1 * 1970-5000/4"]]);
        check(json!({"month": "jan-mar,Dec", "day": "5/10"}), expect![["0 0 0 5-31/10 1-3,12 * *"]]);
        check(json!({"minute": "*, 5"}), expect![["0 * * * * * *"]]);
        check(json!({"hour": "9-17", "minute": "0,30", "timezone": "Europe/Berlin"}), expect![["0 0,30 9-17 * * * *"]]);

        // Errors name the field and the reason.
        check(json!({"hour": 24}), expect![[r#"error: hour: "24": 24 is above the maximum 23"#]]);
        check(
            json!({"minute": "*/60"}),
            expect![[r#"error: minute: "*/60": step 60 is larger than the range it steps through (59)"#]],
        );
        check(json!({"second": "*/0"}), expect![[r#"error: second: "*/0": step must be greater than 0"#]]);
        check(json!({"hour": "5-3"}), expect![[r#"error: hour: "5-3": range start 5 is above its end 3"#]]);
        check(json!({"day": 0}), expect![[r#"error: day: "0": 0 is below the minimum 1"#]]);
        check(
            json!({"day": "6th mon"}),
            expect![[r#"error: day: "6th mon": unknown position "6th" (expected 1st..5th or last)"#]],
        );
        check(
            json!({"day": "last frd"}),
            expect![[r#"error: day: "last frd": unknown weekday "frd" (expected mon..sun)"#]],
        );
        check(json!({"day_of_week": 7}), expect![[r#"error: day_of_week: "7": 7 is above the maximum 6"#]]);
        check(
            json!({"day_of_week": "mon-fri/2"}),
            expect![[
                r#"error: day_of_week: "mon-fri/2": unknown name "fri/2" (expected one of mon,tue,wed,thu,fri,sat,sun)"#
            ]],
        );
        check(
            json!({"month": "foo"}),
            expect![[
                r#"error: month: "foo": unknown name "foo" (expected one of jan,feb,mar,apr,may,jun,jul,aug,sep,oct,nov,dec)"#
            ]],
        );
        check(json!({"year": 1969}), expect![[r#"error: year: "1969": 1969 is below the minimum 1970"#]]);
        check(json!({"year": 9999}), expect![[r#"error: year: "9999": 9999 is above the maximum 5000"#]]);
        check(json!({"week": 54}), expect![[r#"error: week: "54": 54 is above the maximum 53"#]]);
        check(json!({"hour": "1,,2"}), expect![[r#"error: hour: empty item in "1,,2""#]]);
        check(json!({"hour": ""}), expect![[r#"error: hour: empty item in """#]]);
        check(json!({"hour": -1}), expect![[r#"error: hour: "-1": unrecognized expression"#]]);
        check(
            json!({"hour": "99999999999"}),
            expect![[r#"error: hour: "99999999999": "99999999999" is not a number"#]],
        );
        check(json!({"hour": 1.5}), expect![["error: hour: must be a string or an integer"]]);
        check(json!({"hour": true}), expect![["error: hour: must be a string or an integer"]]);
        check(
            json!({"minute": 5, "hours": 1}),
            expect![[
                "error: hours: unknown parameter (allowed: timezone, year, month, day, week, day_of_week, hour, minute, second)"
            ]],
        );
        check(json!({"timezone": "Mars/Olympus"}), expect![[r#"error: timezone: unknown time zone "Mars/Olympus""#]]);
    }

    #[test]
    fn field_text_longer_than_limit_is_refused() {
        let long = "1,".repeat(MAX_FIELD_LEN / 2) + "1";
        assert!(long.len() > MAX_FIELD_LEN);
        check(json!({ "minute": long }), expect![["error: minute: longer than 256 bytes"]]);
        let ok = "1,".repeat(MAX_FIELD_LEN / 2 - 1) + "1";
        assert!(ok.len() <= MAX_FIELD_LEN);
        assert!(st2(json!({ "minute": ok })).is_ok());
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The first `n` fires strictly after `from`, shown in the timer's zone.
    fn fires(spec: &TimerSpec, from: &str, n: usize) -> String {
        let zone = match spec {
            TimerSpec::St2Cron(c) | TimerSpec::AttuneCron(c) => c.zone().tz().clone(),
            _ => jiff::tz::TimeZone::UTC,
        };
        let mut out = Vec::new();
        let mut after = ts(from);
        for _ in 0..n {
            match spec.next_after(after, after) {
                Some(next) => {
                    assert!(next > after, "not increasing: {next} after {after}");
                    out.push(next.to_zoned(zone.clone()).strftime("%a %F %T%:z").to_string());
                    after = next;
                }
                None => {
                    out.push("none".to_string());
                    break;
                }
            }
        }
        out.join(" | ")
    }

    fn check_fires(params: serde_json::Value, n: usize, expect: Expect) {
        // 2026-01-01 is a Thursday.
        let spec = st2(params).unwrap();
        expect.assert_eq(&fires(&spec, "2026-01-01T00:00:00Z", n));
    }

    #[test]
    fn apscheduler_next_fire_times() {
        check_fires(
            json!({}),
            3,
            expect![["Thu 2026-01-01 00:00:01+00:00 | Thu 2026-01-01 00:00:02+00:00 | Thu 2026-01-01 00:00:03+00:00"]],
        );
        check_fires(json!({"hour": 5}), 2, expect![["Thu 2026-01-01 05:00:00+00:00 | Fri 2026-01-02 05:00:00+00:00"]]);
        check_fires(
            json!({"minute": "*/15"}),
            3,
            expect![["Thu 2026-01-01 00:15:00+00:00 | Thu 2026-01-01 00:30:00+00:00 | Thu 2026-01-01 00:45:00+00:00"]],
        );
        check_fires(
            json!({"day_of_week": 0, "hour": 9}),
            2,
            expect![["Mon 2026-01-05 09:00:00+00:00 | Mon 2026-01-12 09:00:00+00:00"]],
        );
        check_fires(
            json!({"day_of_week": "sat-sun", "hour": 8}),
            3,
            expect![["Sat 2026-01-03 08:00:00+00:00 | Sun 2026-01-04 08:00:00+00:00 | Sat 2026-01-10 08:00:00+00:00"]],
        );
        check_fires(
            json!({"day": "last"}),
            3,
            expect![["Sat 2026-01-31 00:00:00+00:00 | Sat 2026-02-28 00:00:00+00:00 | Tue 2026-03-31 00:00:00+00:00"]],
        );
        check_fires(
            json!({"day": "last fri"}),
            3,
            expect![["Fri 2026-01-30 00:00:00+00:00 | Fri 2026-02-27 00:00:00+00:00 | Fri 2026-03-27 00:00:00+00:00"]],
        );
        check_fires(
            json!({"day": "2nd mon"}),
            3,
            expect![["Mon 2026-01-12 00:00:00+00:00 | Mon 2026-02-09 00:00:00+00:00 | Mon 2026-03-09 00:00:00+00:00"]],
        );
        check_fires(
            json!({"day": "5th fri"}),
            2,
            expect![["Fri 2026-01-30 00:00:00+00:00 | Fri 2026-05-29 00:00:00+00:00"]],
        );
        check_fires(
            json!({"day": "1,last fri"}),
            4,
            expect![[
                "Fri 2026-01-30 00:00:00+00:00 | Sun 2026-02-01 00:00:00+00:00 | Fri 2026-02-27 00:00:00+00:00 | Sun 2026-03-01 00:00:00+00:00"
            ]],
        );
        check_fires(
            json!({"day": "last fri,last sat", "day_of_week": "sat"}),
            2,
            expect![["Sat 2026-01-31 00:00:00+00:00 | Sat 2026-02-28 00:00:00+00:00"]],
        );
        // week 10 of 2026 is Mon 2 Mar .. Sun 8 Mar.
        check_fires(json!({"week": 10}), 2, expect![["Mon 2026-03-02 00:00:00+00:00 | Tue 2026-03-03 00:00:00+00:00"]]);
        check_fires(
            json!({"week": 10, "day_of_week": "sun", "hour": 12}),
            2,
            expect![["Sun 2026-03-08 12:00:00+00:00 | Sun 2027-03-14 12:00:00+00:00"]],
        );
        // 2026 has an ISO week 53 (Mon 28 Dec .. Sun 3 Jan 2027); the next one is in 2032.
        check_fires(
            json!({"week": 53, "day_of_week": "mon"}),
            2,
            expect![["Mon 2026-12-28 00:00:00+00:00 | Mon 2032-12-27 00:00:00+00:00"]],
        );
        check_fires(
            json!({"year": "2027-2028", "month": "feb", "day": 29}),
            2,
            expect![["Tue 2028-02-29 00:00:00+00:00 | none"]],
        );
        check_fires(
            json!({"month": "jan-mar,Dec", "day": 1, "hour": 6}),
            4,
            expect![[
                "Thu 2026-01-01 06:00:00+00:00 | Sun 2026-02-01 06:00:00+00:00 | Sun 2026-03-01 06:00:00+00:00 | Tue 2026-12-01 06:00:00+00:00"
            ]],
        );
        // Steps count from APScheduler's minimum year 1970: 2026, 2030, 2034 ...
        check_fires(
            json!({"year": "*/4"}),
            2,
            expect![["Tue 2030-01-01 00:00:00+00:00 | Sun 2034-01-01 00:00:00+00:00"]],
        );
        check_fires(
            json!({"hour": 9, "timezone": "Asia/Shanghai"}),
            2,
            expect![["Thu 2026-01-01 09:00:00+08:00 | Fri 2026-01-02 09:00:00+08:00"]],
        );
        // Never satisfiable: croner runs out of years (5000) and the answer is "none".
        check_fires(json!({"month": 2, "day": 31}), 1, expect![["none"]]);
        // Never satisfiable: the second Monday is never a Friday.
        check_fires(json!({"day": "2nd mon", "day_of_week": "fri"}), 1, expect![["none"]]);
    }

    #[test]
    fn post_filter_gives_up_after_the_step_limit() {
        // June is never in ISO week 1: every June day is rejected, a week at a time, until the
        // limit (about 200 years of Junes), then "no next fire" instead of a hang.
        let TimerSpec::St2Cron(c) = st2(json!({"month": 6, "week": 1, "hour": "*"})).unwrap() else {
            panic!("not a cron timer")
        };
        let start = std::time::Instant::now();
        assert_eq!(c.next_after(ts("2026-01-01T00:00:00Z")), None);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // The same search with one step fewer than a satisfiable spec needs also ends in None,
        // which shows the bound, not the calendar, ended it.
        let TimerSpec::St2Cron(w53) = st2(json!({"week": 53})).unwrap() else { panic!("not a cron timer") };
        let after = ts("2027-01-04T00:00:00Z");
        assert!(w53.next_after_bounded(after, MAX_FILTER_STEPS).is_some());
        assert_eq!(w53.next_after_bounded(after, 10), None);
    }

    #[test]
    fn attune_six_field_expressions() {
        let attune = |expr: &str, tz: Option<&str>| {
            let mut p = json!({ "expression": expr });
            if let Some(tz) = tz {
                p["timezone"] = json!(tz);
            }
            TimerSpec::parse("core.crontimer", &p)
        };
        let show = |expr: &str, tz: Option<&str>, n| match attune(expr, tz) {
            Ok(spec) => fires(&spec, "2026-01-01T00:00:00Z", n),
            Err(e) => format!("error: {e}"),
        };
        expect![["Thu 2026-01-01 01:00:00+00:00 | Thu 2026-01-01 02:00:00+00:00"]].assert_eq(&show(
            "0 0 * * * *",
            None,
            2,
        ));
        // 1 = Monday (croner/POSIX numbering), weekday mornings in New York.
        expect![["Thu 2026-01-01 08:30:00-05:00 | Fri 2026-01-02 08:30:00-05:00 | Mon 2026-01-05 08:30:00-05:00"]]
            .assert_eq(&show("0 30 8 * * 1-5", Some("America/New_York"), 3));
        // Day of month AND day of week (tokio-cron-scheduler's dom_and_dow): Friday the 13th.
        expect![["Fri 2026-02-13 00:00:00+00:00 | Fri 2026-03-13 00:00:00+00:00 | Fri 2026-11-13 00:00:00+00:00"]]
            .assert_eq(&show("0 0 0 13 * FRI", None, 3));
        expect![["Sun 2026-01-04 00:00:15+00:00"]].assert_eq(&show("15 0 0 * * SUN", None, 1));
        // 5 fields (no seconds) are refused, like Attune's scheduler.
        expect![["error: expression: Invalid pattern: Pattern must have 6 or 7 fields when seconds are required and years are optional."]]
            .assert_eq(&show("0 * * * *", None, 1));
        expect![["error: expression: CronPattern cannot be an empty string."]].assert_eq(&show("", None, 1));
        expect![["error: expression: Component error: Number out of bounds."]].assert_eq(&show(
            "0 0 25 * * *",
            None,
            1,
        ));
        expect![["error: expression: longer than 256 bytes"]].assert_eq(&show(&"0 ".repeat(200), None, 1));
    }
}
