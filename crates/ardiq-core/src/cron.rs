//! When cron jobs fire: the [`CronSchedule`] trait, a 5-field cron parser ([`CronSpec`],
//! read in UTC or in an IANA time zone) and fixed intervals ([`Every`]).
//!
//! Occurrence times are pure functions of the spec, so every worker names the same
//! occurrence (`cron:<name>:<ms>`) whatever its clock says, and the `cron` script fires
//! each once.
//!
//! In a time zone each matching wall time fires once: a wall time that a daylight-saving
//! change skips (the spring-forward gap) fires at the first instant after the gap, one
//! that happens twice (the fall-back overlap) at its first instance. The Python side
//! (`python/ardiq/cron.py`) computes the same instants; tests/test_cron_tz.py holds the
//! two to it over a year of a zone with daylight saving.

use std::fmt;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// A schedule: the first occurrence strictly after a time.
pub trait CronSchedule: Send + Sync {
    /// The first occurrence strictly after `epoch_ms`, in epoch ms; `None` if it never
    /// fires again.
    fn next_after(&self, epoch_ms: i64) -> Option<i64>;
}

impl<F> CronSchedule for F
where
    F: Fn(i64) -> Option<i64> + Send + Sync,
{
    fn next_after(&self, epoch_ms: i64) -> Option<i64> {
        self(epoch_ms)
    }
}

/// A fixed interval, aligned to the Unix epoch (so all workers agree on occurrences):
/// `every=60s` fires at each whole minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    interval_ms: i64,
}

impl Every {
    /// `None` for a zero or negative interval.
    pub fn new(interval_ms: i64) -> Option<Self> {
        (interval_ms > 0).then_some(Every { interval_ms })
    }
}

impl CronSchedule for Every {
    fn next_after(&self, epoch_ms: i64) -> Option<i64> {
        epoch_ms
            .div_euclid(self.interval_ms)
            .checked_add(1)?
            .checked_mul(self.interval_ms)
    }
}

/// Why a cron spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

/// A parsed 5-field cron spec, evaluated in UTC (or, after [`CronSpec::in_time_zone`],
/// in that zone's wall time): `minute hour day-of-month month day-of-week`. Each field takes `*`, values, ranges `a-b`, lists `a,b`, and steps
/// (`*/n`, `a-b/n`, `a/n`). Day-of-week is 0-6 with 7 also meaning Sunday. As in Vixie
/// cron, when both day fields are restricted (neither starts with `*`) a day matches if
/// either does; otherwise both must. `@hourly`, `@daily`/`@midnight`, `@weekly`,
/// `@monthly` and `@yearly`/`@annually` are accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
    /// The zone the fields are read in (`None`: UTC, with no lookups).
    tz: Option<TimeZone>,
}

/// How far ahead `next_after` looks: long enough for any satisfiable spec (Feb 29 comes
/// at least every 8 years), short enough to stay cheap.
const SEARCH_DAYS: i64 = 366 * 9;

impl CronSpec {
    /// Parses a spec; rejects syntax errors, out-of-range values and specs that can never
    /// fire (such as `0 0 30 2 *`).
    pub fn parse(spec: &str) -> Result<Self, CronError> {
        let expanded = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "cron spec `{spec}` needs 5 fields (minute hour day month weekday), got {}",
                fields.len()
            )));
        }
        let mut dow = parse_field(fields[4], 0, 7, "day-of-week")?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let parsed = CronSpec {
            minutes: parse_field(fields[0], 0, 59, "minute")?,
            hours: parse_field(fields[1], 0, 23, "hour")?,
            dom: parse_field(fields[2], 1, 31, "day-of-month")?,
            months: parse_field(fields[3], 1, 12, "month")?,
            dow,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
            tz: None,
        };
        if parsed.next_after(0).is_none() {
            return Err(CronError(format!("cron spec `{spec}` can never fire")));
        }
        Ok(parsed)
    }

    /// The same spec read in the IANA time zone `name` (such as `Europe/Paris`); an
    /// unknown zone is an error.
    pub fn in_time_zone(mut self, name: &str) -> Result<Self, CronError> {
        let tz = TimeZone::get(name)
            .map_err(|e| CronError(format!("unknown time zone `{name}`: {e}")))?;
        self.tz = Some(tz);
        Ok(self)
    }

    fn day_matches(&self, days_since_epoch: i64) -> bool {
        let (_, month, day) = civil_from_days(days_since_epoch);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday = (days_since_epoch + 4).rem_euclid(7); // 1970-01-01 was a Thursday
        let dom_ok = self.dom & (1 << day) != 0;
        let dow_ok = self.dow & (1 << weekday) != 0;
        if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }
}

impl CronSchedule for CronSpec {
    fn next_after(&self, epoch_ms: i64) -> Option<i64> {
        if let Some(tz) = &self.tz {
            return self.next_in_zone(tz, epoch_ms);
        }
        let first = epoch_ms.div_euclid(60_000).checked_add(1)?;
        self.wall_minutes_from(first)
            .next()
            .map(|(day, hour, minute)| (day * 1440 + hour * 60 + minute) * 60_000)
    }
}

impl CronSpec {
    /// Wall times map to instants in order (all of a gap's to its end, an overlap's to
    /// their first instance), so the walk starts at the wall minute of `epoch_ms` and
    /// returns the first matching wall time whose instant is after it.
    fn next_in_zone(&self, tz: &TimeZone, epoch_ms: i64) -> Option<i64> {
        let second = epoch_ms.div_euclid(1000);
        let offset = tz.to_offset(Timestamp::from_second(second).ok()?).seconds();
        let local = (second + i64::from(offset)).div_euclid(60);
        for (day, hour, minute) in self.wall_minutes_from(local) {
            let when = resolve(tz, day, hour, minute)?;
            if when > epoch_ms {
                return Some(when);
            }
        }
        None
    }

    /// The matching wall minutes (day since the epoch, hour, minute) from the wall minute
    /// `first` (minutes since the epoch) on, in order, within the search horizon: the
    /// walk both the UTC and the time-zone schedules share.
    fn wall_minutes_from(&self, first: i64) -> impl Iterator<Item = (i64, i64, i64)> + '_ {
        let first_day = first.div_euclid(1440);
        let from = first.rem_euclid(1440);
        (first_day..first_day + SEARCH_DAYS)
            .filter(|&day| self.day_matches(day))
            .flat_map(move |day| {
                let from = if day == first_day { from } else { 0 };
                (from / 60..24)
                    .filter(|&hour| self.hours & (1 << hour) != 0)
                    .flat_map(move |hour| {
                        let start = if hour == from / 60 { from % 60 } else { 0 };
                        (start..60)
                            .filter(move |&m| self.minutes & (1 << m) != 0)
                            .map(move |minute| (day, hour, minute))
                    })
            })
    }
}

/// Epoch ms of a wall time in `tz`: its first instance when it happens twice, the first
/// instant after the gap when a daylight-saving change skips it. `None` out of range.
fn resolve(tz: &TimeZone, day: i64, hour: i64, minute: i64) -> Option<i64> {
    let (y, mo, d) = civil_from_days(day);
    let wall = DateTime::new(
        i16::try_from(y).ok()?,
        mo as i8,
        d as i8,
        hour as i8,
        minute as i8,
        0,
        0,
    )
    .ok()?;
    let wall_s = (day * 1440 + hour * 60 + minute) * 60;
    let second = match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => wall_s - i64::from(offset.seconds()),
        AmbiguousOffset::Fold { before, .. } => wall_s - i64::from(before.seconds()),
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset, the wall time lies before the change: the
            // next transition from there is the end of the gap.
            let early = Timestamp::from_second(wall_s - i64::from(after.seconds())).ok()?;
            match tz.following(early).next() {
                Some(t) => t.timestamp().as_second(),
                None => wall_s - i64::from(before.seconds()),
            }
        }
    };
    second.checked_mul(1000)
}

/// One field as a bit set over `min..=max`.
fn parse_field(field: &str, min: u32, max: u32, what: &str) -> Result<u64, CronError> {
    let err = |m: String| CronError(format!("{what} field `{field}`: {m}"));
    let num = |s: &str| -> Result<u32, CronError> {
        let n = digits(s).ok_or_else(|| err(format!("`{s}` is not a number")))?;
        if n < u64::from(min) || n > u64::from(max) {
            return Err(err(format!("{n} is outside {min}-{max}")));
        }
        Ok(n as u32)
    };
    let mut bits = 0u64;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = digits(s).ok_or_else(|| err(format!("bad step `{s}`")))?;
                if step == 0 {
                    return Err(err("bad step `0` (a step of 0)".into()));
                }
                // Any step past the field's span picks the start alone.
                (r, u32::try_from(step).unwrap_or(u32::MAX))
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(err(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let a = num(range)?;
            // `a/n` means from a to the end, stepping n (a common extension).
            (a, if item.contains('/') { max } else { a })
        };
        bits |= (lo..=hi)
            .step_by(step as usize)
            .fold(0u64, |acc, v| acc | (1 << v));
    }
    Ok(bits)
}

/// A plain decimal number (ASCII digits only: no sign, no spaces), saturating; `None`
/// when `s` is anything else.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian),
/// after Howard Hinnant's `civil_from_days`. Public for the binary's log timestamps.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch ms of a UTC civil time (test helper; the inverse of the code under test is
    /// computed independently here).
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        let (y2, m2) = if mo <= 2 {
            (y - 1, mo + 9)
        } else {
            (y, mo - 3)
        };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let doy = (153 * i64::from(m2) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days * 1440 + h * 60 + mi) * 60_000
    }

    fn next(spec: &str, from: i64) -> i64 {
        CronSpec::parse(spec).unwrap().next_after(from).unwrap()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            civil_from_days(at(2024, 2, 29, 0, 0) / 86_400_000),
            (2024, 2, 29)
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn every_minute_and_strictly_after() {
        let t = at(2024, 5, 17, 10, 30);
        assert_eq!(next("* * * * *", t), t + 60_000);
        assert_eq!(next("* * * * *", t - 1), t);
        assert_eq!(next("* * * * *", t + 59_999), t + 60_000);
    }

    #[test]
    fn values_ranges_lists_steps() {
        let t = at(2024, 5, 17, 10, 30); // a Friday
        assert_eq!(next("15 * * * *", t), at(2024, 5, 17, 11, 15));
        assert_eq!(next("*/20 * * * *", t), at(2024, 5, 17, 10, 40));
        assert_eq!(next("0 9-17/4 * * *", t), at(2024, 5, 17, 13, 0));
        assert_eq!(next("5,45 8,22 * * *", t), at(2024, 5, 17, 22, 5));
        assert_eq!(next("0 0 1 */3 *", t), at(2024, 7, 1, 0, 0));
        assert_eq!(next("10/25 * * * *", t), at(2024, 5, 17, 10, 35));
        assert_eq!(next("*/99999999999 * * * *", t), at(2024, 5, 17, 11, 0));
        let big = CronSpec::parse("99999999999 * * * *").unwrap_err();
        assert!(big.to_string().contains("is outside"), "{big}");
        assert_eq!(next("0 0 29 2 *", t), at(2028, 2, 29, 0, 0));
        assert_eq!(next("@daily", t), at(2024, 5, 18, 0, 0));
        assert_eq!(next("@monthly", t), at(2024, 6, 1, 0, 0));
        assert_eq!(
            next("0 0 31 12 *", at(2024, 12, 31, 0, 0)),
            at(2025, 12, 31, 0, 0)
        );
    }

    #[test]
    fn weekdays_and_sunday_as_7() {
        let fri = at(2024, 5, 17, 10, 30);
        assert_eq!(next("0 12 * * 0", fri), at(2024, 5, 19, 12, 0));
        assert_eq!(next("0 12 * * 7", fri), at(2024, 5, 19, 12, 0));
        assert_eq!(next("0 12 * * 1-5", fri), at(2024, 5, 17, 12, 0));
        assert_eq!(next("0 8 * * 1-5", fri), at(2024, 5, 20, 8, 0));
        assert_eq!(
            next("0 0 * * 5-7", at(2024, 5, 18, 1, 0)),
            at(2024, 5, 19, 0, 0)
        );
        assert_eq!(next("@weekly", fri), at(2024, 5, 19, 0, 0));
    }

    #[test]
    fn day_fields_or_when_both_restricted() {
        let fri = at(2024, 5, 17, 10, 30);
        // The 20th or any Saturday: Saturday the 18th comes first.
        assert_eq!(next("0 0 20 * 6", fri), at(2024, 5, 18, 0, 0));
        // The 1st or any Wednesday: Wednesday the 22nd comes before June 1st.
        assert_eq!(next("0 0 1 * 3", fri), at(2024, 5, 22, 0, 0));
        // Day-of-week is `*`: only the day of month counts.
        assert_eq!(next("0 0 20 * *", fri), at(2024, 5, 20, 0, 0));
        // A starred step counts as unrestricted (Vixie cron): AND.
        assert_eq!(next("0 0 */10 * 1", fri), at(2024, 7, 1, 0, 0));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            // Plain ASCII digits only, as the Python side reads them.
            "+5 * * * *",
            "*/+2 * * * *",
            "\u{663} * * * *",
        ] {
            assert!(CronSpec::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    fn paris(spec: &str) -> CronSpec {
        CronSpec::parse(spec)
            .unwrap()
            .in_time_zone("Europe/Paris")
            .unwrap()
    }

    #[test]
    fn wall_times_in_a_zone() {
        // Summer (UTC+2) and winter (UTC+1).
        let s = paris("30 9 * * *");
        assert_eq!(
            s.next_after(at(2024, 7, 1, 0, 0)),
            Some(at(2024, 7, 1, 7, 30))
        );
        assert_eq!(
            s.next_after(at(2024, 12, 1, 0, 0)),
            Some(at(2024, 12, 1, 8, 30))
        );
        // The day rolls over in the zone, not in UTC: 00:10 Paris is 23:10 UTC.
        let s = paris("10 0 * * 1"); // Mondays
        assert_eq!(
            s.next_after(at(2024, 12, 1, 12, 0)), // a Sunday
            Some(at(2024, 12, 1, 23, 10))
        );
        // UTC stays the default, with no zone lookups.
        assert_eq!(
            next("30 9 * * *", at(2024, 7, 1, 0, 0)),
            at(2024, 7, 1, 9, 30)
        );
    }

    #[test]
    fn spring_forward_gap_fires_once_at_its_end() {
        // 2024-03-31: Paris skips 02:00-03:00 (01:00 UTC).
        let s = paris("30 2 * * *");
        let from = at(2024, 3, 30, 12, 0);
        let gap = s.next_after(from).unwrap();
        assert_eq!(gap, at(2024, 3, 31, 1, 0));
        assert_eq!(s.next_after(gap), Some(at(2024, 4, 1, 0, 30)));
        // Every wall time in the gap maps to its end: one firing, not four.
        let s = paris("*/15 2 * * *");
        let first = s.next_after(from).unwrap();
        assert_eq!(first, at(2024, 3, 31, 1, 0));
        assert_eq!(s.next_after(first), Some(at(2024, 4, 1, 0, 0)));
    }

    #[test]
    fn fall_back_overlap_fires_the_first_instance() {
        // 2024-10-27: Paris goes through 02:00-03:00 twice (00:00-01:00 UTC in summer
        // time, then 01:00-02:00 UTC in winter time).
        let s = paris("30 2 * * *");
        let first = s.next_after(at(2024, 10, 26, 12, 0)).unwrap();
        assert_eq!(first, at(2024, 10, 27, 0, 30));
        assert_eq!(s.next_after(first), Some(at(2024, 10, 28, 1, 30)));
        // Asked during the second pass, the repeated wall times are already done.
        let s = paris("*/20 * * * *");
        assert_eq!(
            s.next_after(at(2024, 10, 27, 1, 10)),
            Some(at(2024, 10, 27, 2, 0))
        );
        assert_eq!(
            s.next_after(at(2024, 10, 27, 0, 20)),
            Some(at(2024, 10, 27, 0, 40))
        );
    }

    #[test]
    fn unknown_zones_are_refused() {
        let e = CronSpec::parse("* * * * *")
            .unwrap()
            .in_time_zone("Mars/Olympus_Mons")
            .unwrap_err();
        assert!(e.to_string().contains("unknown time zone"), "{e}");
    }

    #[test]
    fn every_aligns_to_the_epoch() {
        let e = Every::new(1000).unwrap();
        assert_eq!(e.next_after(0), Some(1000));
        assert_eq!(e.next_after(1999), Some(2000));
        assert_eq!(e.next_after(2000), Some(3000));
        assert!(Every::new(0).is_none());
        let closure = |t: i64| Some(t + 5);
        assert_eq!(closure.next_after(1), Some(6));
    }
}
