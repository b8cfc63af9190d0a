//! `keel hosts`: the hosts a server knows, through its API.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::client::{Client, Format, ServerArgs};
use crate::output;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Set when a host's profiles are expected (its agent captures on the same schedule).
    Schedule(ScheduleArgs),
    /// Stop watching a host for missing profiles (maintenance); resolves its missing alert.
    Pause(HostArg),
    /// Watch a paused host again; silence counts from now.
    Resume(HostArg),
    /// Decommission a host: its history stays, it is never alerted on again.
    Retire(HostArg),
    /// Undo `retire`.
    Reinstate(HostArg),
}

#[derive(Debug, clap::Args)]
pub struct HostArg {
    /// The host's name.
    host: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    schedule: super::schedule::ScheduleArgs,
    #[command(flatten)]
    host: HostArg,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
    /// Hosts asked for per request (paging).
    #[arg(long, default_value_t = 500, hide = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        None => list(&args.list),
        Some(Action::Schedule(s)) => {
            let Some(schedule) = s.schedule.schedule()? else {
                anyhow::bail!("give the schedule: --every 15m, or --cron EXPR [--tz ZONE]");
            };
            patch(&s.host, &serde_json::json!({ "schedule": schedule }))
        }
        Some(Action::Pause(h)) => patch(h, &serde_json::json!({ "paused": true })),
        Some(Action::Resume(h)) => patch(h, &serde_json::json!({ "paused": false })),
        Some(Action::Retire(h)) => patch(h, &serde_json::json!({ "retired": true })),
        Some(Action::Reinstate(h)) => patch(h, &serde_json::json!({ "retired": false })),
    }
}

fn patch(h: &HostArg, change: &Value) -> anyhow::Result<ExitCode> {
    let client = Client::new(&h.server)?;
    let host = client
        .send(
            "PATCH",
            &format!("/api/v1/hosts/{}", super::client::encode(&h.host)),
            &[],
            Some(change),
        )
        .map_err(|e| super::client::no_host(e, &h.host))?;
    let text = match h.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&host)?;
            s.push('\n');
            s
        }
        Format::Text => render(std::slice::from_ref(&host)),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let hosts = all_hosts(&client, args.page_size as usize)?;
    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&hosts)?;
            s.push('\n');
            s
        }
        Format::Text => render(&hosts),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Every host, by name: pages of `page` hosts, each after the last name of the one before.
fn all_hosts(client: &Client, page: usize) -> anyhow::Result<Vec<Value>> {
    let mut out: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", page.to_string())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let hosts = client.get_array("/api/v1/hosts", &query)?;
        let got = hosts.len();
        let last = hosts
            .last()
            .and_then(|h| h["name"].as_str())
            .map(String::from);
        out.extend(hosts);
        if got < page {
            break;
        }
        match last {
            // Names only go up; a page that does not is a server bug, not a reason to loop.
            Some(name) if after.as_deref().is_none_or(|a| name.as_str() > a) => {
                after = Some(name);
            }
            _ => break,
        }
    }
    Ok(out)
}

fn render(hosts: &[Value]) -> String {
    if hosts.is_empty() {
        return "no hosts enrolled\n".into();
    }
    let rows: Vec<[String; 6]> = hosts
        .iter()
        .map(|h| {
            let schedule: Option<keel_schedule::Schedule> =
                serde_json::from_value(h["schedule"].clone()).ok();
            let state = h["state"].as_str().unwrap_or("?");
            [
                h["name"].as_str().unwrap_or("?").to_string(),
                state.to_string(),
                h["last_seen_at"]
                    .as_i64()
                    .map_or_else(|| "never".into(), output::rfc3339),
                if matches!(state, "paused" | "retired") {
                    "-".into()
                } else {
                    h["due_at"]
                        .as_i64()
                        .map_or_else(|| "-".into(), output::rfc3339)
                },
                h["last_profile_id"]
                    .as_i64()
                    .map_or_else(|| "-".into(), |id| id.to_string()),
                schedule.map_or_else(|| "?".into(), |s| s.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "STATE",
            "LAST SEEN",
            "DUE",
            "LAST PROFILE",
            "SCHEDULE",
        ],
        &rows,
    )
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        o.push_str(l.trim_end());
        o.push('\n');
    };
    line(header);
    for r in rows {
        line(&r.each_ref().map(String::as_str));
    }
    o
}
