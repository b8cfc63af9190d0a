//! `keel show`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use keel_profile::{ProfileFile, SECTIONS};

use crate::output;

/// Output format of `keel show`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// Canonical JSON.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The profile file (binary or JSON).
    file: PathBuf,
    /// Show only this section, every row of it (`all` for every section).
    #[arg(long)]
    section: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&args.file)?;
    if let Some(s) = &args.section {
        if s != "all" && !SECTIONS.contains(&s.as_str()) {
            bail!(
                "unknown section {s:?}\nhint: sections are: {}, or all",
                SECTIONS.join(", ")
            );
        }
    }
    let text = match args.format {
        Format::Json => json(&file, args.section.as_deref())?,
        Format::Text => text(&file, args.section.as_deref())?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn json(file: &ProfileFile, section: Option<&str>) -> anyhow::Result<String> {
    let mut s = match section {
        None | Some("all") => file.to_json()?,
        Some(name) => {
            let doc = serde_json::to_value(&file.profile)?;
            let part = if name == "meta" {
                serde_json::json!({ "meta": doc["meta"], "collectors": doc["collectors"] })
            } else {
                doc[name].clone()
            };
            serde_json::to_string_pretty(&part)?
        }
    };
    s.push('\n');
    Ok(s)
}

fn text(file: &ProfileFile, section: Option<&str>) -> anyhow::Result<String> {
    let p = &file.profile;
    let m = &p.meta;
    let mut o = String::new();
    let hash = file.hash()?;
    writeln!(o, "profile   {hash}")?;
    writeln!(
        o,
        "host      {} (machine-id {})",
        if m.hostname.is_empty() {
            "-"
        } else {
            &m.hostname
        },
        if m.machine_id.is_empty() {
            "-"
        } else {
            &m.machine_id
        }
    )?;
    writeln!(
        o,
        "captured  {} from {} ({}) in {} ms by keel {}",
        output::rfc3339(m.started_at_ms),
        m.root,
        if m.live {
            "running system"
        } else {
            "offline root"
        },
        m.duration_ms,
        m.agent_version
    )?;
    writeln!(
        o,
        "previous  {}",
        m.previous
            .map_or_else(|| "none".to_string(), |h| h.to_hex())
    )?;
    let blob_bytes: usize = file.blobs.values().map(|b| b.0.len()).sum();
    writeln!(o, "blobs     {} ({} bytes)", file.blobs.len(), blob_bytes)?;
    writeln!(
        o,
        "secrets   {}",
        match &m.recovery_recipient {
            Some(r) => format!("encrypted to {r}"),
            None => "withheld (no recovery key)".into(),
        }
    )?;
    writeln!(o)?;
    writeln!(o, "collectors")?;
    for c in &p.collectors {
        writeln!(
            o,
            "  {:<16} {:<15} {:>8.1} ms  {}",
            c.name,
            c.state.as_str(),
            c.duration_us as f64 / 1000.0,
            c.message
                .as_deref()
                .map(|s| output::clip(s, 80))
                .unwrap_or_default()
        )?;
    }
    for sv in p.sections() {
        if sv.name == "meta" {
            continue;
        }
        match section {
            None => {
                writeln!(o)?;
                let counts: Vec<String> = sv
                    .tables
                    .iter()
                    .map(|t| format!("{} {}", t.name, t.rows.len()))
                    .collect();
                writeln!(o, "{:<10} {}", sv.name, counts.join(", "))?;
            }
            Some(s) if s == sv.name || s == "all" => {
                for t in &sv.tables {
                    writeln!(o)?;
                    writeln!(o, "[{}.{}] {} rows", sv.name, t.name, t.rows.len())?;
                    for (key, row) in &t.rows {
                        let fields: Vec<String> = row
                            .as_object()
                            .map(|obj| {
                                obj.iter()
                                    .filter(|(_, v)| !v.is_null())
                                    .map(|(k, v)| {
                                        format!("{k}={}", output::clip(&output::value(v), 60))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        writeln!(o, "  {key}  {}", fields.join(" "))?;
                    }
                }
            }
            Some(_) => {}
        }
    }
    if section.is_none() {
        writeln!(o)?;
        writeln!(o, "(keel show FILE --section NAME lists a section's rows)")?;
    }
    Ok(o)
}
