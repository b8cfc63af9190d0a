//! Five-field cron expressions, as Vixie cron reads them, evaluated in a time zone.
//!
//! Fields: minute, hour, day of month, month, day of week. Each is `*`, a number, a range
//! `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those; months and weekdays also
//! take English names (`jan`, `mon`); day of week 0 and 7 are Sunday. When both day fields are
//! restricted, a day matching either one fires (Vixie's rule). `@hourly`, `@daily`,
//! `@midnight`, `@weekly`, `@monthly`, `@yearly` and `@annually` are shorthands.
//!
//! Times are wall-clock times in the zone: a local time skipped by a daylight-saving jump fires
//! at the shifted instant, and a local time that occurs twice fires on its first occurrence.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {reason}")]
pub struct CronError {
    /// The expression.
    pub expr: String,
    /// What is wrong, naming the field.
    pub reason: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first_name: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first_name: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        first_name: 1,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        first_name: 0,
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + self.first_name);
        }
        let n: u32 = text.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{} field: {text:?} is not a number", self.name)
            } else {
                format!(
                    "{} field: {text:?} is neither a number nor a name ({}…)",
                    self.name,
                    self.names[..3].join(", ")
                )
            }
        })?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{} field: {n} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(n)
    }

    /// The set of values as a bit mask, and whether the field was a bare `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut mask = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} field: step {s:?} is not a positive number", self.name)
                    })?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} field: range {range:?} runs backwards",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n` means from a to the end in steps of n.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                mask |= 1 << v;
                v += step;
            }
        }
        Ok((mask, text == "*"))
    }
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Cron, CronError> {
        let err = |reason: String| CronError {
            expr: expr.to_owned(),
            reason,
        };
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(err(format!(
                    "unknown shorthand {other:?}; use @hourly, @daily, @weekly, @monthly or @yearly"
                )))
            }
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        }
        let mut masks = [0u64; 5];
        let mut stars = [false; 5];
        for (i, (field, text)) in FIELDS.iter().zip(&parts).enumerate() {
            (masks[i], stars[i]) = field.parse(text).map_err(err)?;
        }
        // Day of week 7 is Sunday.
        if masks[4] & (1 << 7) != 0 {
            masks[4] = (masks[4] & !(1 << 7)) | 1;
        }
        let cron = Cron {
            source: expr.trim().to_owned(),
            minutes: masks[0],
            hours: masks[1],
            days: masks[2],
            months: masks[3],
            weekdays: masks[4],
            days_restricted: !stars[2],
            weekdays_restricted: !stars[4],
        };
        // An expression such as `0 0 31 2 *` parses but never fires.
        if cron
            .next_after(Timestamp::UNIX_EPOCH, &TimeZone::UTC)
            .is_none()
        {
            return Err(err("it never fires (no such date)".into()));
        }
        Ok(cron)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn has(mask: u64, v: i8) -> bool {
    mask & (1 << v) != 0
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let day = has(self.days, date.day());
        let weekday = has(self.weekdays, date.weekday().to_sunday_zero_offset());
        if self.days_restricted && self.weekdays_restricted {
            day || weekday
        } else {
            day && weekday
        }
    }

    /// The first time strictly after `after` at which the expression fires in `tz`; `None`
    /// when it does not fire within eight years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.date().checked_add(8.years()).ok()?;
        while dt.date() <= limit {
            if !has(self.months, dt.month()) {
                dt = DateTime::from(dt.date().first_of_month().checked_add(1.month()).ok()?);
                continue;
            }
            if !self.day_matches(dt.date()) {
                dt = DateTime::from(dt.date().tomorrow().ok()?);
                continue;
            }
            if !has(self.hours, dt.hour()) {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minutes, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = tz.to_timestamp(dt).ok()?;
            if at > after {
                return Some(at);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let cron: Cron = expr.parse().unwrap();
        let tz = TimeZone::get(tz).unwrap();
        let after: Timestamp = after.parse().unwrap();
        cron.next_after(after, &tz)
            .unwrap()
            .to_zoned_datetime(tz)
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    #[test]
    fn every_fifteen_minutes() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-24T10:07:30Z", "UTC"),
            "2026-11-24 10:15 UTC"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-24T10:15:00Z", "UTC"),
            "2026-11-24 10:30 UTC",
            "strictly after"
        );
    }

    #[test]
    fn hourly_in_a_zone_and_names() {
        assert_eq!(
            next("30 9 * * mon-fri", "2026-11-27T12:00:00Z", "Europe/Berlin"),
            "2026-11-30 09:30 CET",
            "Friday afternoon → Monday morning"
        );
        assert_eq!(
            next("@monthly", "2026-12-15T00:00:00Z", "UTC"),
            "2027-01-01 00:00 UTC"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-29 00:00 UTC"
        );
    }

    #[test]
    fn vixie_day_rule() {
        // The 13th or any Friday.
        assert_eq!(
            next("0 0 13 * fri", "2026-11-24T00:00:00Z", "UTC"),
            "2026-11-27 00:00 UTC"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29 00:00 UTC"
        );
    }

    #[test]
    fn daylight_saving() {
        // 02:30 does not exist on 2026-03-29 in Berlin: it fires at the shifted instant.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Berlin"),
            "2026-03-29 03:30 CEST"
        );
        // 02:30 occurs twice on 2026-10-25: once.
        let cron: Cron = "30 2 * * *".parse().unwrap();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let first = cron
            .next_after("2026-10-24T12:00:00Z".parse().unwrap(), &tz)
            .unwrap();
        let second = cron.next_after(first, &tz).unwrap();
        assert_eq!(second.duration_since(first).as_secs(), 25 * 3600);
    }

    #[test]
    fn refusals_name_the_field() {
        let e = |s: &str| s.parse::<Cron>().unwrap_err().reason;
        assert!(e("* * *").contains("expected 5 fields"));
        assert!(e("61 * * * *").contains("minute field: 61 is outside 0-59"));
        assert!(e("* * * foo *").contains("month field"));
        assert!(e("* 5-2 * * *").contains("runs backwards"));
        assert!(e("*/0 * * * *").contains("step"));
        assert!(e("0 0 31 2 *").contains("never fires"));
        assert!(e("@often").contains("unknown shorthand"));
    }
}
