//! `keel recover batch MAPPING.toml`: recover several hosts at once, each onto a machine
//! waiting in `keel rescue --server`. Every plan is made by the server and shown together;
//! `--yes` starts them all, then one table follows their progress until each has finished
//! with its verification. One failure does not stop the others; the exit status is 1 when
//! any recovery was impossible or failed.
//!
//! ```toml
//! [[recovery]]
//! host = "web-1"          # a host the server knows
//! machine = "rescue-a"    # a waiting machine, by name or id
//! # profile = 42          # default: the host's newest profile
//! # disk_map = ["sda=/dev/nvme0n1"]
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{Client, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// The mapping: `[[recovery]]` tables, each with `host` and `machine`.
    mapping: PathBuf,
    /// Start the recoveries. Without it, only show the plans. Each erases its machine's
    /// planned disks.
    #[arg(long)]
    yes: bool,
    /// Give up following after this many seconds (the recoveries go on).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Print the recoveries as JSON when they end (and the plans, without --yes).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// The mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    recovery: Vec<Pair>,
}

/// One host onto one machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    host: String,
    machine: String,
    #[serde(default)]
    profile: Option<i64>,
    #[serde(default)]
    disk_map: Vec<String>,
}

/// A pair's recovery as followed here.
struct Row {
    pair: Pair,
    /// The recovery, once planned.
    job: Option<Value>,
    /// Why it could not be planned or started.
    refused: Option<String>,
}

impl Row {
    fn status(&self) -> &str {
        match (&self.refused, &self.job) {
            (Some(_), None) => "impossible",
            (Some(_), Some(_)) => "not started",
            (None, Some(j)) => j["status"].as_str().unwrap_or("?"),
            (None, None) => "?",
        }
    }

    fn finished(&self) -> bool {
        self.refused.is_some()
            || matches!(self.status(), "done" | "failed" | "cancelled" | "planned")
    }
}

fn table(rows: &[Row], started: Instant) -> String {
    let w_host = rows
        .iter()
        .map(|r| r.pair.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let w_machine = rows
        .iter()
        .map(|r| r.pair.machine.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut s = format!(
        "{:<w_host$}  {:<w_machine$}  {:<11}  {:<12}  {}\n",
        "HOST", "MACHINE", "STATUS", "PHASE", "ELAPSED"
    );
    for r in rows {
        let phase = r
            .job
            .as_ref()
            .and_then(|j| j["phase"].as_str())
            .unwrap_or("-");
        let elapsed = r
            .job
            .as_ref()
            .and_then(|j| {
                let from = j["taken_at_ms"].as_i64()?;
                let to = j["finished_at_ms"]
                    .as_i64()
                    .unwrap_or_else(keel_server::now_ms);
                #[allow(clippy::cast_precision_loss, reason = "milliseconds of a recovery")]
                Some(format!("{:.0} s", (to - from) as f64 / 1000.0))
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<w_host$}  {:<w_machine$}  {:<11}  {:<12}  {elapsed}",
            r.pair.host,
            r.pair.machine,
            r.status(),
            phase
        );
    }
    let _ = write!(s, "({:.0} s)", started.elapsed().as_secs_f64());
    s
}

/// The end of one recovery in a line: verified, or why not.
fn outcome(r: &Row) -> String {
    if let Some(why) = &r.refused {
        return format!(
            "{} → {}: {}: {why}",
            r.pair.host,
            r.pair.machine,
            r.status()
        );
    }
    let Some(j) = &r.job else {
        return format!("{} → {}: ?", r.pair.host, r.pair.machine);
    };
    let verify = &j["report"]["verify"];
    let verified = if verify.is_object() {
        format!(
            "verified: {} expected difference(s), {} unexpected",
            verify["expected"].as_array().map_or(0, Vec::len),
            verify["unexpected"].as_array().map_or(0, Vec::len)
        )
    } else {
        "not verified".into()
    };
    let total = j["report"]["total_seconds"]
        .as_f64()
        .map(|t| format!(" in {t:.1} s"))
        .unwrap_or_default();
    match j["status"].as_str() {
        Some("done") => format!(
            "{} → {}: done{total}, {verified}",
            r.pair.host, r.pair.machine
        ),
        Some(other) => format!(
            "{} → {}: {other}{total}: {}",
            r.pair.host,
            r.pair.machine,
            j["reason"].as_str().unwrap_or(&verified)
        ),
        None => format!("{} → {}: ?", r.pair.host, r.pair.machine),
    }
}

#[allow(clippy::print_stderr, reason = "progress goes to stderr")]
pub fn batch(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.mapping)
        .with_context(|| format!("cannot read {}", args.mapping.display()))?;
    let mapping: Mapping = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a recovery mapping: {e}\nhint: one [[recovery]] table per host, with \
             host = \"NAME\" and machine = \"NAME\"",
            args.mapping.display()
        )
    })?;
    if mapping.recovery.is_empty() {
        bail!("{} maps no host", args.mapping.display());
    }
    let client = Client::new(&args.server)?;

    // Every plan first: the server computes each from the host's profile and the machine's
    // disks, and refuses an impossible one with the planner's reason.
    let mut rows: Vec<Row> = Vec::new();
    for pair in &mapping.recovery {
        let mut body = json!({ "host": pair.host, "machine": pair.machine });
        if let Some(p) = pair.profile {
            body["profile"] = json!(p);
        }
        if !pair.disk_map.is_empty() {
            body["disk_map"] = json!(pair.disk_map);
        }
        let row = match client.send("POST", "/api/v1/recoveries", &[], Some(&body)) {
            Ok(job) => Row {
                pair: pair.clone(),
                job: Some(job),
                refused: None,
            },
            Err(e) => Row {
                pair: pair.clone(),
                job: None,
                refused: Some(e.message()),
            },
        };
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    if !args.json || !args.yes {
        if args.json {
            let plans: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({ "host": r.pair.host, "machine": r.pair.machine,
                            "recovery": r.job, "refused": r.refused })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&plans)?)?;
        } else {
            for r in &rows {
                writeln!(out, "== {} → {}", r.pair.host, r.pair.machine)?;
                match (&r.job, &r.refused) {
                    (Some(j), _) => {
                        writeln!(
                            out,
                            "recovery {}: planned\n{}",
                            j["id"],
                            j["plan_text"].as_str().unwrap_or_default().trim_end()
                        )?;
                    }
                    (None, Some(why)) => writeln!(out, "IMPOSSIBLE: {why}")?,
                    (None, None) => {}
                }
                writeln!(out)?;
            }
        }
    }
    let planned = rows.iter().filter(|r| r.job.is_some()).count();
    if !args.yes {
        writeln!(
            out,
            "nothing started: add --yes to start {planned} recover{} (each erases its \
             machine's planned disks)",
            if planned == 1 { "y" } else { "ies" }
        )?;
        return Ok(if planned == rows.len() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    drop(out);

    for r in &mut rows {
        let Some(id) = r.job.as_ref().and_then(|j| j["id"].as_i64()) else {
            continue;
        };
        let confirm = json!({ "confirm": r.pair.host });
        match client.send(
            "POST",
            &format!("/api/v1/recoveries/{id}/start"),
            &[],
            Some(&confirm),
        ) {
            Ok(job) => r.job = Some(job),
            Err(e) => r.refused = Some(e.message()),
        }
    }
    let started = Instant::now();
    let deadline = args.timeout.map(|t| started + Duration::from_secs(t));
    let mut shown = String::new();
    loop {
        for r in &mut rows {
            if r.finished() {
                continue;
            }
            let Some(id) = r.job.as_ref().and_then(|j| j["id"].as_i64()) else {
                continue;
            };
            match client.get(&format!("/api/v1/recoveries/{id}"), &[]) {
                Ok(job) => r.job = Some(job),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        let t = table(&rows, started);
        // Redrawn when a status or phase changed (the elapsed column alone does not count).
        let key = rows.iter().fold(String::new(), |mut k, r| {
            let phase = r.job.as_ref().and_then(|j| j["phase"].as_str());
            let _ = write!(k, "{}/{};", r.status(), phase.unwrap_or(""));
            k
        });
        if key != shown {
            eprintln!("{t}\n");
            shown = key;
        }
        if rows.iter().all(Row::finished) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "gave up following after {} s: the recoveries go on (keel recover batch does \
                 not stop them)",
                args.timeout.unwrap_or_default()
            );
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({ "host": r.pair.host, "machine": r.pair.machine, "status": r.status(),
                        "recovery": r.job, "refused": r.refused })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    } else {
        writeln!(
            out,
            "batch of {} recover{} in {:.1} s:",
            rows.len(),
            if rows.len() == 1 { "y" } else { "ies" },
            started.elapsed().as_secs_f64()
        )?;
        for r in &rows {
            writeln!(out, "  {}", outcome(r))?;
        }
    }
    let all_done = rows.iter().all(|r| r.status() == "done");
    Ok(if all_done {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
