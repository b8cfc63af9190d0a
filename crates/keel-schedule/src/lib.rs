//! When a host's profile is expected, and what it means when none came.
//!
//! A [`Schedule`] is an interval (`every 15m`) or a cron expression in a time zone, plus a
//! grace period. The agent captures on it; the server uses the same schedule to tell whether
//! a host is [`HostState::Up`], [`HostState::Late`] (due, within grace) or
//! [`HostState::Missing`] (grace over: an alert), as healthchecks-style monitors do.
//!
//! ```
//! use keel_schedule::{HostState, Schedule};
//!
//! let schedule = Schedule::interval("15m", "5m").unwrap();
//! let minute = 60_000;
//! let seen = 1_000 * minute;
//! let at = |now| schedule.status(0, Some(seen), false, false, now).unwrap().state;
//! assert_eq!(at(seen + 10 * minute), HostState::Up);
//! assert_eq!(at(seen + 17 * minute), HostState::Late);
//! assert_eq!(at(seen + 21 * minute), HostState::Missing);
//! ```

mod cron;

use std::fmt;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub use cron::{Cron, CronError};

/// How the schedule is stated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `expr` is a duration such as `15m` or `1h 30m`.
    Interval,
    /// `expr` is a five-field cron expression, read in `tz`.
    Cron,
}

/// A host's schedule, as stored and sent over the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Interval or cron.
    pub kind: Kind,
    /// The interval (`15m`) or the cron expression (`*/15 * * * *`).
    pub expr: String,
    /// IANA time zone the cron expression is read in.
    #[serde(default = "utc")]
    pub tz: String,
    /// How long after the due time a profile may still come before the host is missing.
    pub grace_s: u64,
}

fn utc() -> String {
    "UTC".into()
}

impl Default for Schedule {
    /// Every hour, one hour of grace.
    fn default() -> Self {
        Schedule {
            kind: Kind::Interval,
            expr: "1h".into(),
            tz: utc(),
            grace_s: 3600,
        }
    }
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A bad cron expression.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// A bad duration.
    #[error("invalid duration {text:?}: {reason} (examples: 30s, 15m, 1h 30m, 1d)")]
    Duration {
        /// The text.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// An unknown time zone.
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
}

/// Parses a friendly duration: `30s`, `15m`, `1h 30m`, `2d`, or ISO 8601 (`PT15M`). At least
/// one second.
pub fn parse_duration(text: &str) -> Result<Duration, ScheduleError> {
    let bad = |reason: String| ScheduleError::Duration {
        text: text.to_owned(),
        reason,
    };
    let d: SignedDuration = text
        .trim()
        .parse()
        .map_err(|e: jiff::Error| bad(e.to_string()))?;
    let d = Duration::try_from(d).map_err(|_| bad("it is negative".into()))?;
    if d < Duration::from_secs(1) {
        return Err(bad("it must be at least 1s".into()));
    }
    Ok(d)
}

/// A duration as people write it: `1h 30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let mut rest = d.as_secs();
    let mut out = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        "0s".into()
    } else {
        out.join(" ")
    }
}

impl Schedule {
    /// An interval schedule: `every` and `grace` as friendly durations.
    pub fn interval(every: &str, grace: &str) -> Result<Schedule, ScheduleError> {
        let s = Schedule {
            kind: Kind::Interval,
            expr: format_duration(parse_duration(every)?),
            tz: utc(),
            grace_s: parse_duration(grace)?.as_secs(),
        };
        Ok(s)
    }

    /// A cron schedule read in `tz`.
    pub fn cron(expr: &str, tz: &str, grace: &str) -> Result<Schedule, ScheduleError> {
        let s = Schedule {
            kind: Kind::Cron,
            expr: expr.trim().to_owned(),
            tz: tz.to_owned(),
            grace_s: parse_duration(grace)?.as_secs(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the expression and the time zone.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        self.compiled().map(|_| ())
    }

    fn compiled(&self) -> Result<Compiled, ScheduleError> {
        let tz = TimeZone::get(&self.tz).map_err(|_| ScheduleError::TimeZone(self.tz.clone()))?;
        Ok(match self.kind {
            Kind::Interval => Compiled::Every(parse_duration(&self.expr)?),
            Kind::Cron => Compiled::Cron(self.expr.parse()?, tz),
        })
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_s)
    }

    /// When the next capture is due after one at `after_ms` (ms since the epoch).
    pub fn next_after(&self, after_ms: i64) -> Result<i64, ScheduleError> {
        Ok(match self.compiled()? {
            Compiled::Every(d) => after_ms.saturating_add(d.as_millis() as i64),
            Compiled::Cron(cron, tz) => {
                let after = Timestamp::from_millisecond(after_ms).unwrap_or(Timestamp::UNIX_EPOCH);
                cron.next_after(after, &tz)
                    .map_or(i64::MAX, Timestamp::as_millisecond)
            }
        })
    }

    /// A host's state at `now_ms`. Silence counts from the newest profile's arrival or from
    /// `watch_from_ms` (enrollment, or the end of a pause), whichever is later.
    ///
    /// A host with no profile yet is `new` until its first profile is due and the grace is
    /// over, then `missing`: an agent that enrolled and never delivered needs a look too.
    pub fn status(
        &self,
        watch_from_ms: i64,
        last_seen_ms: Option<i64>,
        paused: bool,
        retired: bool,
        now_ms: i64,
    ) -> Result<Status, ScheduleError> {
        let since = last_seen_ms.map_or(watch_from_ms, |seen| seen.max(watch_from_ms));
        let due_at = self.next_after(since)?;
        let missing_at = due_at.saturating_add(self.grace_s.saturating_mul(1000) as i64);
        let state = if retired {
            HostState::Retired
        } else if paused {
            HostState::Paused
        } else if now_ms > missing_at {
            HostState::Missing
        } else if last_seen_ms.is_none() {
            HostState::New
        } else if now_ms > due_at {
            HostState::Late
        } else {
            HostState::Up
        };
        Ok(Status {
            state,
            due_at,
            missing_at,
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Interval => write!(f, "every {}", self.expr)?,
            Kind::Cron => write!(f, "cron \"{}\" ({})", self.expr, self.tz)?,
        }
        write!(f, ", grace {}", format_duration(self.grace()))
    }
}

enum Compiled {
    Every(Duration),
    Cron(Cron, TimeZone),
}

/// What the server makes of a host's silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Enrolled, no profile yet, not overdue.
    New,
    /// The newest profile came on time.
    Up,
    /// A profile is due and the grace period runs.
    Late,
    /// The grace period is over: an alert fires.
    Missing,
    /// Watching is off for now.
    Paused,
    /// Decommissioned: kept for history, never alerted on.
    Retired,
}

impl HostState {
    /// Every state, in order.
    pub const ALL: [HostState; 6] = [
        HostState::New,
        HostState::Up,
        HostState::Late,
        HostState::Missing,
        HostState::Paused,
        HostState::Retired,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::New => "new",
            HostState::Up => "up",
            HostState::Late => "late",
            HostState::Missing => "missing",
            HostState::Paused => "paused",
            HostState::Retired => "retired",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host's state and its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The state.
    pub state: HostState,
    /// When the next profile is due, ms since the epoch.
    pub due_at: i64,
    /// When the host counts as missing, ms since the epoch.
    pub missing_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("PT2S").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("soon")
            .unwrap_err()
            .to_string()
            .contains("examples"));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d 1h 1m 1s");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn states() {
        let s = Schedule::interval("10m", "5m").unwrap();
        let m = 60_000;
        let st = |seen: Option<i64>, paused, retired, now| {
            s.status(0, seen, paused, retired, now).unwrap().state
        };
        assert_eq!(st(None, false, false, 5 * m), HostState::New);
        assert_eq!(st(None, false, false, 16 * m), HostState::Missing);
        assert_eq!(st(Some(100 * m), false, false, 110 * m), HostState::Up);
        assert_eq!(st(Some(100 * m), false, false, 111 * m), HostState::Late);
        assert_eq!(st(Some(100 * m), false, false, 116 * m), HostState::Missing);
        assert_eq!(st(Some(100 * m), true, false, 200 * m), HostState::Paused);
        assert_eq!(st(Some(100 * m), true, true, 200 * m), HostState::Retired);
    }

    #[test]
    fn cron_schedule_in_a_zone() {
        let s = Schedule::cron("0 * * * *", "Europe/Berlin", "10m").unwrap();
        let seen: Timestamp = "2026-11-24T10:00:05Z".parse().unwrap();
        let due = s.next_after(seen.as_millisecond()).unwrap();
        assert_eq!(
            Timestamp::from_millisecond(due).unwrap().to_string(),
            "2026-11-24T11:00:00Z"
        );
        assert!(Schedule::cron("0 * * * *", "Mars/Olympus", "1m")
            .unwrap_err()
            .to_string()
            .contains("unknown time zone"));
    }

    #[test]
    fn json_shape() {
        let s: Schedule =
            serde_json::from_str(r#"{"kind":"interval","expr":"1h","tz":"UTC","grace_s":3600}"#)
                .unwrap();
        assert_eq!(s, Schedule::default());
        assert_eq!(s.to_string(), "every 1h, grace 1h");
        assert!(
            serde_json::from_str::<Schedule>(r#"{"kind":"weekly","expr":"1h","grace_s":1}"#)
                .is_err()
        );
    }
}
