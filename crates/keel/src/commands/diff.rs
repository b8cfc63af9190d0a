//! `keel diff`: two profile files, or two stored profiles of a host through the server's API.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use keel_profile::{diff, Change, ChangeKind, DiffOptions};

use super::client::{encode, no_host, Client, ServerArgs};
use crate::output;

/// Output format of `keel diff`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// A JSON array of changes.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The older profile; with --from and --to, the host whose stored profiles to compare.
    #[arg(value_name = "OLD|HOST")]
    old: PathBuf,
    /// The newer profile.
    #[arg(value_name = "NEW")]
    new: Option<PathBuf>,
    /// With --to: compare two profiles stored on the server; the older one's id (`keel
    /// profiles HOST` lists them).
    #[arg(long, value_name = "ID")]
    from: Option<i64>,
    /// With --from: the newer stored profile's id.
    #[arg(long, value_name = "ID")]
    to: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also report changes to volatile fields (free space, link state, …).
    #[arg(long)]
    include_volatile: bool,
    #[command(flatten, next_help_heading = "Server (with --from and --to)")]
    server: ServerArgs,
}

const USAGE_HINT: &str = "hint: `keel diff OLD NEW` compares two profile files; \
                          `keel diff HOST --from ID --to ID` compares two stored profiles of HOST \
                          (`keel profiles HOST` lists their ids)";

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let changes = match (args.from, args.to, &args.new) {
        (Some(from), Some(to), None) => remote(args, &args.old.to_string_lossy(), from, to)?,
        (Some(_), Some(_), Some(new)) => bail!(
            "with --from and --to, give only the host, not two profiles ({} and {})\n{USAGE_HINT}",
            args.old.display(),
            new.display()
        ),
        (Some(_), None, _) => bail!("--from needs --to\n{USAGE_HINT}"),
        (None, Some(_), _) => bail!("--to needs --from\n{USAGE_HINT}"),
        (None, None, None) => bail!("missing the newer profile\n{USAGE_HINT}"),
        (None, None, Some(new)) => {
            let old = output::read_profile(&args.old)?;
            let new = output::read_profile(new)?;
            diff(
                &old.profile,
                &new.profile,
                DiffOptions {
                    include_volatile: args.include_volatile,
                },
            )
        }
    };
    let text = match args.format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&changes)?;
            s.push('\n');
            s
        }
        Format::Text => render(&changes, output::color()),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")?;
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The changes between two stored profiles of `host`, as the server computes them, after
/// checking that both are profiles of `host`.
fn remote(args: &Args, host: &str, from: i64, to: i64) -> anyhow::Result<Vec<Change>> {
    let client = Client::new(&args.server)?;
    let record = client
        .get(&format!("/api/v1/hosts/{}", encode(host)), &[])
        .map_err(|e| no_host(e, host))?;
    let Some(host_id) = record["id"].as_i64() else {
        bail!("the server's record of host {host} has no id");
    };
    for id in [from, to] {
        check_profile_of(&client, host, host_id, id)?;
    }
    let changes = client.get(
        "/api/v1/diff",
        &[
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("include_volatile", args.include_volatile.to_string()),
        ],
    )?;
    serde_json::from_value(changes).context("the server's diff is not a list of changes")
}

/// Refuses profile `id` unless it is stored and belongs to `host`.
fn check_profile_of(client: &Client, host: &str, host_id: i64, id: i64) -> anyhow::Result<()> {
    // Cheap first: the host's newest profile with an id up to `id`, one summary.
    if let Some(next) = id.checked_add(1) {
        let page = client
            .get_array(
                &format!("/api/v1/hosts/{}/profiles", encode(host)),
                &[("before", next.to_string()), ("limit", "1".into())],
            )
            .map_err(|e| no_host(e, host))?;
        if page.first().and_then(|p| p["id"].as_i64()) == Some(id) {
            return Ok(());
        }
    }
    // Otherwise the stored profile says whose it is, or that it does not exist.
    match client.get(&format!("/api/v1/profiles/{id}"), &[]) {
        Ok(v) if v["summary"]["host_id"].as_i64() == Some(host_id) => Ok(()),
        Ok(_) => bail!(
            "profile {id} is not a profile of {host}\nhint: `keel profiles {host}` lists its profiles"
        ),
        Err(e) if e.status() == Some(404) => bail!(
            "no profile {id} on the server\nhint: `keel profiles {host}` lists the profiles of {host}"
        ),
        Err(e) => Err(e.into()),
    }
}

fn render(changes: &[Change], color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut o = String::new();
    if changes.is_empty() {
        o.push_str("no changes\n");
        return o;
    }
    let mut last = (String::new(), String::new());
    for c in changes {
        if (c.section.as_str(), c.table.as_str()) != (last.0.as_str(), last.1.as_str()) {
            if !last.0.is_empty() {
                o.push('\n');
            }
            let _ = writeln!(o, "{}", paint("1", &format!("{}.{}", c.section, c.table)));
            last = (c.section.clone(), c.table.clone());
        }
        let vol = if c.volatility == keel_profile::Volatility::Config {
            String::new()
        } else {
            format!("  [{}]", c.volatility.as_str())
        };
        let _ = match c.kind {
            ChangeKind::Added => writeln!(o, "  {} {}{vol}", paint("32", "+"), paint("32", &c.key)),
            ChangeKind::Removed => {
                writeln!(o, "  {} {}{vol}", paint("31", "-"), paint("31", &c.key))
            }
            ChangeKind::Changed => writeln!(
                o,
                "  {} {} {}: {} → {}{vol}",
                paint("33", "~"),
                c.key,
                c.field.as_deref().unwrap_or(""),
                output::clip(&output::value(&c.old), 70),
                output::clip(&output::value(&c.new), 70),
            ),
        };
    }
    let added = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Added)
        .count();
    let removed = changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Removed)
        .count();
    let changed = changes.len() - added - removed;
    let _ = writeln!(o, "\n{added} added, {removed} removed, {changed} changed");
    o
}
