//! The schedule options `keel agent enroll` and `keel hosts schedule` share.

use keel_schedule::Schedule;

/// `--every` or `--cron`/`--tz`, and `--grace`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// A profile every this long (`15m`, `1h`).
    #[arg(long, conflicts_with = "cron")]
    every: Option<String>,
    /// A profile on this cron expression (`*/15 * * * *`, `@hourly`), read in `--tz`.
    #[arg(long)]
    cron: Option<String>,
    /// Time zone of `--cron` (IANA name).
    #[arg(long, default_value = "UTC", requires = "cron")]
    tz: String,
    /// How long past the due time before the host counts as missing.
    #[arg(long, default_value = "1h")]
    grace: String,
}

impl ScheduleArgs {
    /// The schedule given, if any.
    pub fn schedule(&self) -> anyhow::Result<Option<Schedule>> {
        Ok(match (&self.every, &self.cron) {
            (Some(every), _) => Some(Schedule::interval(every, &self.grace)?),
            (None, Some(cron)) => Some(Schedule::cron(cron, &self.tz, &self.grace)?),
            (None, None) => None,
        })
    }
}
