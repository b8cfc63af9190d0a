//! `keel profiles HOST`: a host's stored profiles, newest first, through the server's API.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::client::{host_profiles, Client, Format, ServerArgs};
use super::hosts::table;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host, as `keel hosts` names it.
    host: String,
    /// Show at most this many profiles, newest first (0: all of them).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let profiles = host_profiles(&client, &args.host, args.limit)?;
    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&profiles)?;
            s.push('\n');
            s
        }
        Format::Text => render(&args.host, &profiles),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn render(host: &str, profiles: &[Value]) -> String {
    if profiles.is_empty() {
        return format!("no profiles of {host} yet\n");
    }
    let time = |v: &Value| v.as_i64().map_or_else(|| "-".into(), output::rfc3339);
    let rows: Vec<[String; 6]> = profiles
        .iter()
        .map(|p| {
            [
                p["id"]
                    .as_i64()
                    .map_or_else(|| "?".into(), |id| id.to_string()),
                time(&p["captured_at"]),
                time(&p["received_at"]),
                p["changes"]
                    .as_i64()
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                p["hash"]
                    .as_str()
                    .map_or_else(|| "-".into(), |h| h.chars().take(12).collect()),
                p["agent_version"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "CAPTURED", "RECEIVED", "CHANGES", "HASH", "AGENT"],
        &rows,
    )
}
