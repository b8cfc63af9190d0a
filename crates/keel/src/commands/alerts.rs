//! `keel alerts`: list, acknowledge and resolve a server's alerts, and read its delivery log.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::client::{encode, Client, Format, ServerArgs};
use super::hosts::table;
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
    /// Acknowledge an alert: someone is on it (it keeps firing until it resolves).
    Ack(One),
    /// Resolve a firing alert by hand.
    Resolve(One),
    /// The delivery log: every attempt to tell a receiver, newest first.
    Deliveries(DeliveryArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Which alerts: firing, resolved or all.
    #[arg(long, value_enum, default_value = "firing")]
    status: Status,
    /// Only this host's alerts.
    #[arg(long)]
    host: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Status {
    Firing,
    Resolved,
    All,
}

#[derive(Debug, clap::Args)]
pub struct One {
    /// The alert's id (first column of `keel alerts`).
    id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct DeliveryArgs {
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        None => list(&args.list),
        Some(Action::Ack(one)) => change(one, "ack", "acknowledged"),
        Some(Action::Resolve(one)) => change(one, "resolve", "resolved"),
        Some(Action::Deliveries(d)) => deliveries(d),
    }
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

fn json(v: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let mut query = vec![("limit", args.limit.to_string())];
    match args.status {
        Status::Firing => query.push(("status", "firing".into())),
        Status::Resolved => query.push(("status", "resolved".into())),
        Status::All => {}
    }
    if let Some(h) = &args.host {
        query.push(("host", h.clone()));
    }
    let alerts = client
        .get_array("/api/v1/alerts", &query)
        .map_err(|e| match &args.host {
            Some(h) => super::client::no_host(e, h),
            None => e.into(),
        })?;
    let text = match args.format {
        Format::Json => json(&Value::Array(alerts))?,
        Format::Text if alerts.is_empty() => "no alerts\n".into(),
        Format::Text => {
            let rows: Vec<[String; 7]> = alerts
                .iter()
                .map(|a| {
                    let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
                    [
                        a["id"].to_string(),
                        s("status"),
                        s("severity"),
                        a["labels"]["host"].as_str().unwrap_or("?").to_string(),
                        s("rule"),
                        a["starts_at"]
                            .as_i64()
                            .map_or_else(String::new, output::rfc3339),
                        format!(
                            "{}{}",
                            a["acked_by"]
                                .as_str()
                                .map(|by| format!("[acked by {by}] "))
                                .unwrap_or_default(),
                            a["annotations"]["summary"].as_str().unwrap_or("")
                        ),
                    ]
                })
                .collect();
            table(
                &[
                    "ID", "STATUS", "SEVERITY", "HOST", "RULE", "SINCE", "SUMMARY",
                ],
                &rows,
            )
        }
    };
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn change(one: &One, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(&one.server)?;
    let answer = client
        .send(
            "POST",
            &format!("/api/v1/alerts/{}/{verb}", encode(&one.id.to_string())),
            &[],
            None,
        )
        .map_err(|e| {
            if e.status() == Some(404) {
                anyhow::anyhow!(
                    "no {}alert {}\nhint: `keel alerts --status all` lists the alerts",
                    if verb == "resolve" { "firing " } else { "" },
                    one.id
                )
            } else {
                e.into()
            }
        })?;
    match one.format {
        Format::Json => write_out(&json(&answer)?)?,
        Format::Text => write_out(&format!("alert {} {done}\n", one.id))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn deliveries(args: &DeliveryArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let log = client.get_array("/api/v1/deliveries", &[("limit", args.limit.to_string())])?;
    let text = match args.format {
        Format::Json => json(&Value::Array(log))?,
        Format::Text if log.is_empty() => "no deliveries yet\n".into(),
        Format::Text => {
            let rows: Vec<[String; 6]> = log
                .iter()
                .map(|d| {
                    let outcome = &d["outcome"];
                    let result = if d["ok"].as_bool() == Some(true) {
                        format!("ok {}", outcome["status"])
                    } else {
                        format!(
                            "failed{}: {}",
                            if outcome["retryable"].as_bool() == Some(true) {
                                " (will retry)"
                            } else {
                                ""
                            },
                            outcome["error"].as_str().unwrap_or("?")
                        )
                    };
                    [
                        d["at"].as_i64().map_or_else(String::new, output::rfc3339),
                        d["receiver"].as_str().unwrap_or("?").to_string(),
                        d["status"].as_str().unwrap_or("?").to_string(),
                        d["fingerprints"].as_array().map_or(0, Vec::len).to_string(),
                        d["attempt"].to_string(),
                        result,
                    ]
                })
                .collect();
            table(
                &["AT", "RECEIVER", "STATUS", "ALERTS", "ATTEMPT", "RESULT"],
                &rows,
            )
        }
    };
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
