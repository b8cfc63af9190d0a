//! `keel recover`: plan how a profiled system's storage is rebuilt on the disks at hand, and
//! check a plan against the disks present. Also `keel bench plan`, which times the planner.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_recover::{sample, Host, Plan, PlanOptions, GIB};

use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Recover {
    /// Inspect the target disks and plan the rebuild: which disk goes where, every
    /// partition's and volume's new size with the reason, and the steps. Writes nothing to
    /// any disk.
    Plan(PlanArgs),
    /// Check a plan against the disks present: the same disks (size, identity) and none in
    /// use. What applying a plan does first.
    Check(CheckArgs),
}

/// Output format of `keel recover plan`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// The plan for people.
    Text,
    /// The plan as JSON (what --output writes).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The profile of the system to rebuild (binary or JSON).
    #[arg(long)]
    profile: PathBuf,
    /// A whole disk (`/dev/sdb`, `/dev/disk/by-id/…`) or an image file to rebuild onto;
    /// repeat for each disk.
    #[arg(long = "target", value_name = "DEV_OR_IMAGE", required = true)]
    targets: Vec<String>,
    /// Put a source disk on a target: SRC is the profile's kernel name (`sda`), device path,
    /// disk id, WWN or serial; DST a target. Wins over every other rule; repeatable.
    #[arg(long = "disk-map", value_name = "SRC=DST")]
    disk_map: Vec<String>,
    /// With fewer targets than disks, leave out disks that hold only RAID mirrors, and create
    /// their arrays degraded.
    #[arg(long)]
    allow_degraded: bool,
    /// Write the plan as JSON to this file (written atomically).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Directory holding the host's /sys, /proc and /dev.
    #[arg(long, default_value = "/", hide = true)]
    host_root: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The plan file (`keel recover plan --output`).
    plan: PathBuf,
    /// Directory holding the host's /sys, /proc and /dev.
    #[arg(long, default_value = "/", hide = true)]
    host_root: PathBuf,
}

pub fn run(r: &Recover) -> anyhow::Result<ExitCode> {
    match r {
        Recover::Plan(a) => plan(a),
        Recover::Check(a) => check(a),
    }
}

fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&args.profile)?;
    let host = Host::at(&args.host_root);
    let inventory = host.inventory(&args.targets)?;
    host.check_safe(&inventory)?;
    let opts = PlanOptions {
        disk_map: args
            .disk_map
            .iter()
            .map(|s| PlanOptions::parse_disk_map(s))
            .collect::<Result<_, _>>()?,
        allow_degraded: args.allow_degraded,
    };
    let mut plan = keel_recover::plan(&file.profile, &inventory, &opts)?;
    plan.source.profile_hash = Some(file.hash()?.to_hex());
    let json = plan.to_json() + "\n";
    if let Some(path) = &args.output {
        output::write_atomic(path, json.as_bytes(), 0o600)?;
    }
    let text = match args.format {
        Format::Text => plan.to_string(),
        Format::Json => json,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("cannot read {}", args.plan.display()))?;
    let plan = Plan::from_json(&text).with_context(|| {
        format!(
            "{} is not a readable recovery plan\nhint: make one with keel recover plan \
             --output FILE",
            args.plan.display()
        )
    })?;
    keel_recover::recheck(&plan, &Host::at(&args.host_root))?;
    let used = plan.disk_map.iter().filter(|m| m.target.is_some()).count();
    println!(
        "{}: ok: every target disk is as planned and none is in use ({} step{} on {used} of {} \
         disk{})",
        args.plan.display(),
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        plan.inventory.len(),
        if plan.inventory.len() == 1 { "" } else { "s" },
    );
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ keel bench plan

#[derive(Debug, clap::Args)]
pub struct BenchPlanArgs {
    /// Number of timed plans (after one warm-up).
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `keel bench plan`: plans the sample four-disk RAID 1 + LVM server onto four `NVMe` disks of
/// other sizes, many times, and reports the median and 99th percentile.
pub fn bench(a: &BenchPlanArgs) -> anyhow::Result<ExitCode> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let profile = sample::raid_lvm_profile();
    let targets = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let opts = PlanOptions::default();
    let warm = keel_recover::plan(&profile, &targets, &opts)?;
    let mut times: Vec<Duration> = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t = Instant::now();
        let p = keel_recover::plan(std::hint::black_box(&profile), &targets, &opts)?;
        times.push(t.elapsed());
        std::hint::black_box(p);
    }
    times.sort_unstable();
    let at = |q: usize| times[(times.len() * q).div_ceil(100).clamp(1, times.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (median, p99, max) = (times[times.len() / 2], at(99), times[times.len() - 1]);
    let mut o = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "runs": a.runs,
            "steps": warm.steps.len(),
            "plan_us": { "median": us(median), "p99": us(p99), "max": us(max) },
        });
        writeln!(o, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            o,
            "keel recover plan: 4-disk RAID 1 + LVM onto 4 NVMe disks, {} steps ({} runs after a \
             warm-up)",
            warm.steps.len(),
            a.runs
        )?;
        writeln!(
            o,
            "  plan time   median {:.1} µs  p99 {:.1} µs  (max {:.1} µs)",
            us(median),
            us(p99),
            us(max)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
