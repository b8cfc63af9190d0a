//! `keel diff`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use keel_profile::{diff, Change, ChangeKind, DiffOptions};

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
    /// The older profile.
    old: PathBuf,
    /// The newer profile.
    new: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also report changes to volatile fields (free space, link state, …).
    #[arg(long)]
    include_volatile: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let old = output::read_profile(&args.old)?;
    let new = output::read_profile(&args.new)?;
    let changes = diff(
        &old.profile,
        &new.profile,
        DiffOptions {
            include_volatile: args.include_volatile,
        },
    );
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
