//! Scheduled jobs: system and user crontabs, and systemd timers.

use std::collections::BTreeMap;

use keel_profile::{CronJob, Timer};

use crate::{CollectError, Ctx, Piece};

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let mut jobs = Vec::new();
    if let Some(t) = root.read_opt("/etc/crontab")? {
        jobs.extend(parse_crontab(&t, "/etc/crontab", None));
    }
    for name in root.list_dir("/etc/cron.d")? {
        // cron ignores names with dots and editor leftovers; so do we.
        if name.contains('.') || name.ends_with('~') {
            continue;
        }
        let path = format!("/etc/cron.d/{name}");
        if let Some(t) = root.read_opt(&path)? {
            jobs.extend(parse_crontab(&t, &path, None));
        }
    }
    for dir in ["/var/spool/cron/crontabs", "/var/spool/cron"] {
        for user in root.list_dir(dir)? {
            let path = format!("{dir}/{user}");
            if !root.path(&path).is_file() {
                continue;
            }
            if let Some(t) = root.read_opt(&path)? {
                jobs.extend(parse_crontab(&t, &path, Some(&user)));
            }
        }
    }
    if let Some(t) = root.read_opt("/etc/anacrontab")? {
        jobs.extend(parse_anacrontab(&t));
    }
    unique_ids(&mut jobs);

    let scan = ctx.units()?;
    let mut timers = Vec::new();
    for (name, path) in &scan.fragments {
        if !name.ends_with(".timer") || scan.masked.contains(name) {
            continue;
        }
        let Some(text) = root.read_opt(path)? else {
            continue;
        };
        let mut t = parse_timer(&text, name);
        t.enabled = scan.enabled.contains(name);
        timers.push(t);
    }

    Ok(Piece::new(move |file| {
        file.profile.schedules.cron = jobs;
        file.profile.schedules.timers = timers;
    }))
}

fn unique_ids(jobs: &mut [CronJob]) {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for j in jobs.iter_mut() {
        let n = seen.entry(j.id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            j.id = format!("{} #{n}", j.id);
        }
    }
}

/// Parses a crontab. System crontabs (`user` is `None`) have a user column.
pub fn parse_crontab(text: &str, source: &str, user: Option<&str>) -> Vec<CronJob> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Environment settings (`SHELL=/bin/sh`, `MAILTO=""`).
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('=') && !first.starts_with('@') && !first.starts_with('*') {
            continue;
        }
        let (schedule, rest) = if first.starts_with('@') {
            (first.to_string(), line[first.len()..].trim_start())
        } else {
            let mut fields = line
                .splitn(6, char::is_whitespace)
                .filter(|s| !s.is_empty());
            let f: Vec<&str> = (0..5).filter_map(|_| fields.next()).collect();
            if f.len() < 5 {
                continue;
            }
            let consumed = nth_field_end(line, 5);
            (f.join(" "), line[consumed..].trim_start())
        };
        let (job_user, command) = if let Some(u) = user {
            (Some(u.to_string()), rest.to_string())
        } else {
            let Some((u, cmd)) = rest.split_once(char::is_whitespace) else {
                continue;
            };
            (Some(u.to_string()), cmd.trim_start().to_string())
        };
        out.push(CronJob {
            id: format!("{source}: {command}"),
            source: source.into(),
            schedule,
            user: job_user,
            command,
        });
    }
    out
}

/// Parses `/etc/anacrontab` (`period delay job-id command`).
pub fn parse_anacrontab(text: &str) -> Vec<CronJob> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('='))
        {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let command = line[nth_field_end(line, 3)..].trim_start().to_string();
        out.push(CronJob {
            id: format!("/etc/anacrontab: {}", f[2]),
            source: "/etc/anacrontab".into(),
            schedule: format!("anacron {} {}", f[0], f[1]),
            user: Some("root".into()),
            command,
        });
    }
    out
}

/// Byte offset just past the `n`th whitespace-separated field.
fn nth_field_end(line: &str, n: usize) -> usize {
    let mut count = 0;
    let mut in_field = false;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if in_field {
                count += 1;
                in_field = false;
                if count == n {
                    return i;
                }
            }
        } else {
            in_field = true;
        }
    }
    line.len()
}

/// Parses a `.timer` unit.
pub fn parse_timer(text: &str, name: &str) -> Timer {
    let mut t = Timer {
        name: name.into(),
        unit: name.trim_end_matches(".timer").to_string() + ".service",
        ..Timer::default()
    };
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = if line == "[Timer]" { "timer" } else { "" };
            continue;
        }
        if section != "timer" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "OnCalendar" if v.is_empty() => t.on_calendar.clear(),
            "OnCalendar" => t.on_calendar.push(v),
            "OnBootSec" => t.on_boot_sec = Some(v),
            "OnUnitActiveSec" => t.on_unit_active_sec = Some(v),
            "Persistent" => t.persistent = matches!(v.as_str(), "true" | "yes" | "1" | "on"),
            "Unit" => t.unit = v,
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_crontab() {
        let j = parse_crontab(
            "SHELL=/bin/sh\n# m h dom mon dow user command\n17 *\t* * *\troot    cd / && run-parts --report /etc/cron.hourly\n@reboot root /usr/local/bin/boot.sh\n",
            "/etc/crontab",
            None,
        );
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].schedule, "17 * * * *");
        assert_eq!(j[0].user.as_deref(), Some("root"));
        assert_eq!(j[0].command, "cd / && run-parts --report /etc/cron.hourly");
        assert_eq!(j[1].schedule, "@reboot");
    }

    #[test]
    fn user_crontab() {
        let j = parse_crontab(
            "*/5 * * * * /home/a/bin/poll --quiet\n",
            "/var/spool/cron/crontabs/a",
            Some("a"),
        );
        assert_eq!(j[0].command, "/home/a/bin/poll --quiet");
        assert_eq!(j[0].schedule, "*/5 * * * *");
    }

    #[test]
    fn timer() {
        let t = parse_timer("[Unit]\nDescription=x\n[Timer]\nOnCalendar=daily\nPersistent=true\n[Install]\nWantedBy=timers.target\n", "apt-daily.timer");
        assert_eq!(t.on_calendar, vec!["daily"]);
        assert!(t.persistent);
        assert_eq!(t.unit, "apt-daily.service");
    }
}
