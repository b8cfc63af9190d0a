//! `keel recover`: plan how a profiled system's storage is rebuilt on the disks at hand, check
//! a plan against the disks present, apply it (a dry run unless `--yes`), and release what an
//! apply left mounted. Also `keel bench plan`, which times the planner.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_recover::{
    human, sample, ApplyError, Executor, Host, Journal, Plan, PlanOptions, Progress, Resource,
    StepState, System, SystemOptions, DEFAULT_TARGET_ROOT, GIB,
};

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
    /// Apply a plan: partition tables, RAID, LUKS, LVM, filesystems with their UUIDs and
    /// labels, mounted under the target root. Without --yes, print what would be done and
    /// change nothing. Every step is journaled: run it again after an interruption and it
    /// goes on where it stopped.
    Apply(ApplyArgs),
    /// Undo what an apply left in place (with --keep-mounted, or when it was killed):
    /// unmount the target root, close LUKS volumes, deactivate volume groups, stop arrays,
    /// detach image files.
    Release(ReleaseArgs),
    /// Build the root filesystem the profile describes (release, packages at their
    /// recorded versions, configuration, secrets) into a directory or a tarball.
    BuildTree(super::tree::BuildTreeArgs),
    /// Capture a recovered root and compare it with the profile: expected differences
    /// (hardware, disk sizes, MAC addresses) apart from the rest; exit 1 if anything else.
    Verify(super::tree::VerifyArgs),
    /// Lay the system tree onto the disks an apply left mounted (--keep-mounted) and make it
    /// boot on this machine: fstab, crypttab and mdadm.conf by UUID, the network
    /// configuration for this machine's NICs, the initramfs, GRUB; then verify it.
    Install(super::install::InstallArgs),
    /// Recover several hosts at once, each onto a machine waiting in `keel rescue --server`:
    /// MAPPING.toml pairs hosts with machines; every plan is shown; --yes starts them all and
    /// follows them in one table until each is verified. Exit 1 if any was impossible or
    /// failed.
    Batch(super::recover_batch::BatchArgs),
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

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The plan file (`keel recover plan --output`).
    pub(crate) plan: PathBuf,
    /// Carry the plan out. Without it, print the steps and their commands and change nothing.
    #[arg(long)]
    pub(crate) yes: bool,
    /// The key LUKS volumes are made with and opened by. The whole file is the key: for a
    /// passphrase typed at boot, write it without a newline (`printf %s PASSPHRASE > FILE`).
    #[arg(long, value_name = "FILE")]
    pub(crate) luks_key_file: Option<PathBuf>,
    /// Where the rebuilt system is mounted [default: the journal's, else /mnt/keel-target].
    #[arg(long, value_name = "DIR")]
    pub(crate) target_root: Option<PathBuf>,
    /// The journal [default: NAME.journal.json next to the plan NAME.json].
    #[arg(long, value_name = "FILE")]
    pub(crate) journal: Option<PathBuf>,
    /// Leave the target mounted, with its arrays, LUKS volumes, volume groups and loop devices,
    /// for the next phase of the recovery (`keel recover release` undoes it).
    #[arg(long)]
    pub(crate) keep_mounted: bool,
    /// Directory holding the host's /sys, /proc and /dev, for the checks.
    #[arg(long, default_value = "/", hide = true)]
    pub(crate) host_root: PathBuf,
    #[command(flatten)]
    pub(crate) system: super::recover_system::SystemArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The plan file that was applied.
    plan: PathBuf,
    /// The apply's journal [default: NAME.journal.json next to the plan NAME.json].
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// The target root the apply mounted under [default: the journal's, else
    /// /mnt/keel-target].
    #[arg(long, value_name = "DIR")]
    target_root: Option<PathBuf>,
}

pub fn run(r: &Recover) -> anyhow::Result<ExitCode> {
    match r {
        Recover::Plan(a) => plan(a),
        Recover::Check(a) => check(a),
        Recover::Apply(a) => apply(a),
        Recover::Release(a) => release(a),
        Recover::BuildTree(a) => super::tree::build_tree(a),
        Recover::Verify(a) => super::tree::verify(a),
        Recover::Install(a) => super::install::install(a),
        Recover::Batch(a) => super::recover_batch::batch(a),
    }
}

fn read_plan(path: &Path) -> anyhow::Result<Plan> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Plan::from_json(&text).with_context(|| {
        format!(
            "{} is not a readable recovery plan\nhint: make one with keel recover plan \
             --output FILE",
            path.display()
        )
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The plan in a few lines: whose it is, and which disk goes where.
fn summary(plan: &Plan) -> String {
    let host = if plan.source.hostname.is_empty() {
        "the profiled system"
    } else {
        plan.source.hostname.as_str()
    };
    let used: Vec<_> = plan
        .disk_map
        .iter()
        .filter(|m| m.target.is_some())
        .collect();
    let mut s = format!("recovery plan for {host}");
    if let Some(h) = &plan.source.profile_hash {
        let _ = write!(s, " (profile {})", h.get(..12).unwrap_or(h));
    }
    let _ = write!(
        s,
        ": {} step{} on {} disk{}",
        plan.steps.len(),
        plural(plan.steps.len()),
        used.len(),
        plural(used.len())
    );
    for m in used {
        let target = m.target.as_deref().unwrap_or_default();
        let t = plan.inventory.iter().find(|d| d.path == target);
        let _ = write!(
            s,
            "\n  {} ← {} ({})",
            t.map_or_else(|| target.to_string(), keel_recover::TargetDisk::describe),
            m.source.name,
            human(m.source.size_bytes)
        );
    }
    s
}

/// `[3/28] mkfs.ext4 /dev/vda2 (UUID …) … done in 0.4 s`, on standard error.
struct Printer;

#[allow(clippy::print_stderr)]
impl Progress for Printer {
    fn begin(&mut self, number: usize, total: usize, label: &str) {
        eprint!("[{number}/{total}] {label} … ");
        let _ = std::io::stderr().flush();
    }

    fn done(&mut self, _number: usize, _total: usize, took: Duration, _output: &str) {
        eprintln!("done in {:.1} s", took.as_secs_f64());
    }

    fn verified(&mut self, number: usize, total: usize, label: &str, took: Duration, _: &str) {
        eprintln!(
            "[{number}/{total}] {label} … done earlier, still holds ({:.1} s)",
            took.as_secs_f64()
        );
    }

    fn failed(&mut self, _number: usize, _total: usize, took: Duration, _error: &str) {
        eprintln!("failed after {:.1} s", took.as_secs_f64());
    }
}

fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    apply_observed(args, super::recover_system::Observer::default())
}

/// `keel recover apply`, with every phase told to `observer` as it starts and ends (a rescue
/// machine runs the recoveries its server gives it through this).
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn apply_observed(
    args: &ApplyArgs,
    observer: super::recover_system::Observer,
) -> anyhow::Result<ExitCode> {
    use super::recover_system::{self as sys, RecoveryReport};
    let plan = read_plan(&args.plan)?;
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| Journal::default_path(&args.plan));
    let host = Host::at(&args.host_root);
    if !args.yes {
        return dry_run(args, &plan, &journal_path, &host);
    }
    let _lock = keel_recover::lock_plan(&args.plan)?;
    let mut journal = Journal::open(&journal_path, &plan, args.target_root.as_deref())?;
    let target_root = journal.target_root().to_path_buf();
    let report_path = args
        .system
        .report
        .clone()
        .unwrap_or_else(|| sys::default_report_path(&args.plan));
    let started = Instant::now();
    let mut report = RecoveryReport::new(&plan, &args.plan, &target_root);
    report.observer = observer;
    let finish = |report: &mut RecoveryReport, error: Option<&anyhow::Error>| {
        report.total_seconds = started.elapsed().as_secs_f64();
        if let Some(e) = error {
            report.ok = false;
            report.error = Some(format!("{e:#}"));
        }
        match report.write(&report_path) {
            Ok(()) => eprintln!("report: {}", report_path.display()),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    };

    // Everything the system phases need is checked before the disks are written.
    let prepared = match sys::prepare(&args.system, &plan, &mut report) {
        Ok(p) => p,
        Err(e) => {
            finish(&mut report, Some(&e));
            return Err(e);
        }
    };
    let mut opts = SystemOptions::for_plan(&plan);
    opts.target_root.clone_from(&target_root);
    opts.luks_key_file.clone_from(&args.luks_key_file);
    let mut system = System::new(&plan, opts);

    if let Err(e) = keel_recover::recheck_resuming(&plan, &host, &journal) {
        let e = with_release_hint(&e, &args.plan, &journal);
        finish(&mut report, Some(&e));
        return Err(e);
    }
    eprintln!("{}", summary(&plan));
    let done = journal.done();
    if journal.exists() && done > 0 {
        eprintln!(
            "journal: {} ({done} of {} step{} done earlier: each is checked, not redone)",
            journal.path().display(),
            plan.steps.len(),
            plural(plan.steps.len())
        );
    } else if journal.exists() {
        eprintln!(
            "journal: {} (an earlier run stopped before finishing a step)",
            journal.path().display()
        );
    } else {
        eprintln!("journal: {} (new)", journal.path().display());
    }
    eprintln!("target root: {}", target_root.display());

    report.started("storage", summary(&plan));
    let result =
        keel_recover::apply_journaled(&plan, &host, &mut system, &mut journal, &mut Printer);
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => {
            let r = system.release();
            for (what, why) in &r.failed {
                eprintln!("warning: could not release {what}: {why}");
            }
            let resume = matches!(e, ApplyError::Exec(_));
            let mut msg = e.to_string();
            if resume {
                let _ = write!(
                    msg,
                    "\nhint: the journal {} records how far it got; fix the cause and run the \
                     same command again to go on from the failed step",
                    journal_path.display()
                );
            }
            let e = anyhow::anyhow!(msg);
            finish(&mut report, Some(&e));
            return Err(e);
        }
    };
    let storage = format!(
        "{} step{} run, {} checked as done earlier",
        applied.run.len(),
        plural(applied.run.len()),
        applied.verified.len()
    );
    eprintln!("applied: {storage}, in {:.1} s", applied.took.as_secs_f64());
    report.phase("storage", applied.took, storage);

    let outcome = match &prepared {
        Some(p) => sys::run(&args.system, p, &target_root, &journal_path, &mut report),
        None => Ok(true),
    };
    if args.keep_mounted {
        let kept = system.keep();
        let mut out = std::io::stdout().lock();
        writeln!(out, "kept for the next phase:")?;
        for r in &kept {
            writeln!(out, "  {r}")?;
        }
        eprintln!(
            "hint: release them with keel recover release {}",
            args.plan.display()
        );
    } else {
        let t = Instant::now();
        let r = system.release();
        if prepared.is_some() {
            report.phase(
                "release",
                t.elapsed(),
                format!("{} released", r.released.len()),
            );
        }
        if let Err(e) = report_release(&r.released, &r.failed, false) {
            finish(&mut report, Some(&e));
            return Err(e);
        }
    }
    match outcome {
        Ok(ok) => {
            report.ok = ok;
            finish(&mut report, None);
            if prepared.is_some() {
                std::io::stdout()
                    .lock()
                    .write_all(report.render().as_bytes())
                    .context("cannot write to standard output")?;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            finish(&mut report, Some(&e));
            std::io::stdout()
                .lock()
                .write_all(report.render().as_bytes())
                .context("cannot write to standard output")?;
            Err(e)
        }
    }
}

/// A refusal when an earlier apply of this plan may be what holds the disks.
fn with_release_hint(e: &ApplyError, plan_path: &Path, journal: &Journal) -> anyhow::Error {
    let mut msg = e.to_string();
    if matches!(e, ApplyError::Safety(_)) {
        let _ = write!(
            msg,
            "\nhint: if an earlier keel recover apply of this plan holds them, release it first: \
             keel recover release {}{}",
            plan_path.display(),
            if journal.exists() {
                String::new()
            } else {
                format!(" --target-root {}", journal.target_root().display())
            }
        );
    }
    anyhow::anyhow!(msg)
}

/// Without --yes: the plan, the check, and each step with its commands. Changes nothing.
fn dry_run(
    args: &ApplyArgs,
    plan: &Plan,
    journal_path: &Path,
    host: &Host,
) -> anyhow::Result<ExitCode> {
    let journal = match Journal::load(journal_path)? {
        Some(_) => Some(Journal::open(
            journal_path,
            plan,
            args.target_root.as_deref(),
        )?),
        None => None,
    };
    let root = args
        .target_root
        .clone()
        .or_else(|| journal.as_ref().map(|j| j.target_root().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TARGET_ROOT));
    let mut opts = SystemOptions::for_plan(plan);
    opts.target_root.clone_from(&root);
    opts.luks_key_file.clone_from(&args.luks_key_file);
    let system = System::new(plan, opts);
    let check = match &journal {
        Some(j) => keel_recover::recheck_resuming(plan, host, j),
        None => keel_recover::recheck(plan, host),
    };

    let mut o = std::io::stdout().lock();
    writeln!(o, "dry run: nothing is written; add --yes to apply\n")?;
    writeln!(o, "{}", summary(plan))?;
    match &check {
        Ok(()) => writeln!(
            o,
            "check: ok: every target disk is as planned and none is in use"
        )?,
        Err(_) => writeln!(o, "check: FAILED (see below): applying would be refused")?,
    }
    match &journal {
        Some(j) => writeln!(
            o,
            "journal: {} ({} of {} steps done earlier: they would be checked, not redone)",
            j.path().display(),
            j.done(),
            plan.steps.len()
        )?,
        None => writeln!(o, "journal: {} (would be made)", journal_path.display())?,
    }
    writeln!(o, "target root: {}", root.display())?;
    if plan
        .inventory
        .iter()
        .any(|t| t.kind == keel_recover::DiskKind::Image)
    {
        writeln!(
            o,
            "image files are attached to free loop devices when applied (shown as \
             /dev/loop[FILE])"
        )?;
    }
    writeln!(o, "\nsteps:")?;
    let width = plan.steps.len().to_string().len();
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        let state = match journal.as_ref().map(|j| j.state(n)) {
            Some(StepState::Done) => " [done earlier: would be checked]",
            Some(StepState::Started) => " [interrupted: would run again]",
            Some(StepState::Failed) => " [failed: would run again]",
            _ => "",
        };
        writeln!(o, "  {n:>width$}. {}{state}", system.label(step))?;
        match system.preview(step) {
            Ok(cmds) => {
                for c in cmds {
                    let shown = if c.starts_with('#') {
                        c
                    } else {
                        format!("$ {c}")
                    };
                    writeln!(o, "  {:>width$}    {shown}", "")?;
                }
            }
            Err(e) => {
                for (k, line) in e.to_string().lines().enumerate() {
                    let lead = if k == 0 { "cannot run: " } else { "" };
                    writeln!(o, "  {:>width$}    {lead}{line}", "")?;
                }
            }
        }
    }
    writeln!(
        o,
        "\nthen: {}",
        super::recover_system::describe(&args.system, plan)
    )?;
    if !plan.notes.is_empty() {
        writeln!(o, "\nnotes:")?;
        for n in &plan.notes {
            writeln!(o, "  - {n}")?;
        }
    }
    drop(o);
    check.map_err(|e| match &journal {
        Some(j) => with_release_hint(&e, &args.plan, j),
        None => anyhow::Error::new(e),
    })?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn report_release(
    released: &[Resource],
    failed: &[(Resource, keel_recover::SystemError)],
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    if verbose {
        let mut out = std::io::stdout().lock();
        if released.is_empty() && failed.is_empty() {
            writeln!(out, "nothing to release")?;
        }
        for r in released {
            writeln!(out, "released {r}")?;
        }
    } else if !released.is_empty() {
        eprintln!(
            "released {} thing{} the apply held (unmounted, closed, detached)",
            released.len(),
            plural(released.len())
        );
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut msg = String::from("some of what the apply held could not be released:");
    for (r, e) in failed {
        let _ = write!(msg, "\n{r}: {}", e.to_string().replace('\n', "\n  "));
    }
    msg.push_str(
        "\nhint: stop what still uses them (fuser -vm DIR), then run keel recover release again",
    );
    bail!(msg)
}

fn release(args: &ReleaseArgs) -> anyhow::Result<ExitCode> {
    let plan = read_plan(&args.plan)?;
    let journal_path = args
        .journal
        .clone()
        .unwrap_or_else(|| Journal::default_path(&args.plan));
    let root = match (&args.target_root, Journal::load(&journal_path)?) {
        (Some(r), _) => r.clone(),
        (None, Some(j)) => j.target_root().to_path_buf(),
        (None, None) => PathBuf::from(DEFAULT_TARGET_ROOT),
    };
    let _lock = keel_recover::lock_plan(&args.plan)?;
    let r = keel_recover::release(&plan, &root)?;
    report_release(&r.released, &r.failed, true)
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
    plan.source.profile_path = std::path::absolute(&args.profile)
        .ok()
        .map(|p| p.display().to_string());
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
    let plan = read_plan(&args.plan)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        recover: Recover,
    }

    #[test]
    fn apply_is_a_dry_run_unless_told() {
        let c = Cli::try_parse_from(["keel", "apply", "plan.json"]).unwrap();
        let Recover::Apply(a) = c.recover else {
            panic!("{:?}", c.recover)
        };
        assert!(!a.yes && !a.keep_mounted);
        assert_eq!(
            (a.target_root, a.journal, a.luks_key_file),
            (None, None, None)
        );
        let c = Cli::try_parse_from([
            "keel",
            "apply",
            "plan.json",
            "--yes",
            "--luks-key-file",
            "luks.key",
            "--target-root",
            "/mnt/t",
            "--journal",
            "/tmp/j.json",
            "--keep-mounted",
        ])
        .unwrap();
        let Recover::Apply(a) = c.recover else {
            panic!("{:?}", c.recover)
        };
        assert!(a.yes && a.keep_mounted);
        assert_eq!(a.target_root.as_deref(), Some(Path::new("/mnt/t")));
        assert_eq!(a.luks_key_file.as_deref(), Some(Path::new("luks.key")));
        let c = Cli::try_parse_from(["keel", "release", "plan.json", "--target-root", "/mnt/t"])
            .unwrap();
        assert!(matches!(c.recover, Recover::Release(_)));
    }

    #[test]
    fn the_summary_names_each_target_and_its_source() {
        let targets = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
        let plan = keel_recover::plan(
            &sample::raid_lvm_profile(),
            &targets,
            &PlanOptions::default(),
        )
        .unwrap();
        let s = summary(&plan);
        assert!(
            s.starts_with("recovery plan for sample-raid-lvm: 28 steps on 4 disks\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "\n  /dev/nvme1n1 (64.0 GiB, nvme, wwn eui.0000000000000001) ← sdc (100.0 GiB)"
            ),
            "{s}"
        );
    }
}
