//! `keel bench`: measures Keel's own speed and size, reproducibly.
//!
//! `keel bench capture` runs `keel capture` as separate processes (so each run pays its own
//! start-up and its peak memory is its own) and reports the median; `keel bench size` breaks a
//! profile's compressed size down by section.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use keel_profile::{Profile, ProfileFile};

use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Time `keel capture` over repeated runs: median wall time, peak RSS, profile size.
    Capture(CaptureArgs),
    /// Break a profile's compressed size down by section.
    Size(SizeArgs),
    /// Ingest throughput and latency: simulated agents upload to a real server over loopback
    /// HTTPS (diff included).
    Ingest(super::bench_ingest::IngestArgs),
    /// Recovery planning time: a 4-disk RAID 1 + LVM profile planned onto 4 other disks.
    Plan(super::recover::BenchPlanArgs),
    /// Web UI: the fleet page's server time on a seeded fleet (10,000 hosts by default).
    Ui(super::bench_ui::UiArgs),
}

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// Root directory to capture.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Number of runs (after one warm-up run).
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Directory of Keel's local state.
    #[arg(long, env = "KEEL_STATE_DIR", default_value = "/var/lib/keel")]
    state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SizeArgs {
    /// The profile file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(b: Bench) -> anyhow::Result<ExitCode> {
    match b {
        Bench::Capture(a) => capture(&a),
        Bench::Size(a) => size(&a),
        Bench::Ingest(a) => super::bench_ingest::run(&a),
        Bench::Plan(a) => super::recover::bench(&a),
        Bench::Ui(a) => super::bench_ui::run(&a),
    }
}

struct Run {
    wall_ms: f64,
    rss_kib: u64,
    bytes: u64,
}

fn capture(a: &CaptureArgs) -> anyhow::Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find the keel executable")?;
    let dir = tempfile_dir()?;
    let out = dir.join("bench.keel");
    let mut runs = Vec::new();
    for i in 0..=a.runs {
        let o = Command::new(&exe)
            .arg("capture")
            .arg("--root")
            .arg(&a.root)
            .arg("--state-dir")
            .arg(&a.state_dir)
            .arg("--output")
            .arg(&out)
            .arg("--stats")
            .output()
            .context("cannot run keel capture")?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            bail!("keel capture failed: {}", stderr.trim());
        }
        let run =
            parse_stats(&stderr).with_context(|| format!("unexpected --stats output: {stderr}"))?;
        if i > 0 {
            runs.push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut walls: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
    walls.sort_by(f64::total_cmp);
    let mut rss: Vec<u64> = runs.iter().map(|r| r.rss_kib).collect();
    rss.sort_unstable();
    let median_wall = walls[walls.len() / 2];
    let median_rss = rss[rss.len() / 2];
    let bytes = runs.last().map_or(0, |r| r.bytes);
    let mut o = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "runs": runs.len(),
            "wall_ms": { "median": median_wall, "min": walls[0], "max": walls[walls.len() - 1] },
            "peak_rss_kib": { "median": median_rss, "max": rss[rss.len() - 1] },
            "profile_bytes": bytes,
        });
        writeln!(o, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            o,
            "keel capture --root {} ({} runs after a warm-up)",
            a.root.display(),
            runs.len()
        )?;
        writeln!(
            o,
            "  wall time   median {median_wall:.1} ms  (min {:.1}, max {:.1})",
            walls[0],
            walls[walls.len() - 1]
        )?;
        writeln!(
            o,
            "  peak RSS    median {:.1} MB  (max {:.1} MB)",
            median_rss as f64 / 1024.0,
            rss[rss.len() - 1] as f64 / 1024.0
        )?;
        writeln!(o, "  profile     {bytes} bytes compressed")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Reads the `--stats` line: `capture: 12.3 ms wall, 456 KiB peak RSS, 789 bytes (…)`.
fn parse_stats(s: &str) -> Option<Run> {
    let line = s.lines().find(|l| l.starts_with("capture: "))?;
    let mut w = line.trim_start_matches("capture: ").split_whitespace();
    let wall_ms = w.next()?.parse().ok()?;
    let _ = (w.next()?, w.next()?);
    let rss_kib = w.next()?.parse().ok()?;
    let _ = (w.next()?, w.next()?, w.next()?);
    let bytes = w.next()?.parse().ok()?;
    Some(Run {
        wall_ms,
        rss_kib,
        bytes,
    })
}

fn size(a: &SizeArgs) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&a.file)?;
    let total = file.encode()?.len();
    let p = &file.profile;
    // Each section alone in an otherwise empty profile, compressed the same way; the sum
    // exceeds the total a little since each part pays its own header and dictionary.
    let mut parts: Vec<(String, usize)> = Vec::new();
    let empty = ProfileFile::default().encode()?.len();
    let alone = |f: &dyn Fn(&mut Profile)| -> anyhow::Result<usize> {
        let mut x = ProfileFile::default();
        f(&mut x.profile);
        Ok(x.encode()?.len().saturating_sub(empty))
    };
    parts.push((
        "meta+collectors".into(),
        alone(&|x| {
            x.meta = p.meta.clone();
            x.collectors.clone_from(&p.collectors);
        })?,
    ));
    parts.push((
        "hardware".into(),
        alone(&|x| x.hardware = p.hardware.clone())?,
    ));
    parts.push(("storage".into(), alone(&|x| x.storage = p.storage.clone())?));
    parts.push(("os".into(), alone(&|x| x.os = p.os.clone())?));
    parts.push((
        "packages".into(),
        alone(&|x| x.packages = p.packages.clone())?,
    ));
    parts.push(("users".into(), alone(&|x| x.users = p.users.clone())?));
    parts.push((
        "security".into(),
        alone(&|x| x.security = p.security.clone())?,
    ));
    parts.push(("network".into(), alone(&|x| x.network = p.network.clone())?));
    parts.push((
        "services".into(),
        alone(&|x| x.services = p.services.clone())?,
    ));
    parts.push((
        "schedules".into(),
        alone(&|x| x.schedules = p.schedules.clone())?,
    ));
    parts.push(("kernel".into(), alone(&|x| x.kernel = p.kernel.clone())?));
    parts.push(("files".into(), alone(&|x| x.files = p.files.clone())?));
    let blobs = {
        let x = ProfileFile {
            blobs: file.blobs.clone(),
            ..ProfileFile::default()
        };
        x.encode()?.len().saturating_sub(empty)
    };
    parts.push((format!("blobs ({})", file.blobs.len()), blobs));
    let mut o = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "total": total,
            "parts": parts.iter().map(|(k, v)| (k.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        });
        writeln!(o, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(o, "{}: {total} bytes compressed", a.file.display())?;
        for (k, v) in parts {
            writeln!(o, "  {k:<18} {v:>8} bytes")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
