//! `keel rescue` (run a recovery kit inside the rescue environment) and `keel rescue build`.
//!
//! Exit codes of `keel rescue` run by hand: 0 the kit ran (or was only listed), 1 a step
//! failed, 2 error, 3 no kit was found. As the environment's init it never exits: it powers
//! the machine off, or keeps a shell on the console.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_rescue::{
    BootOptions, BuildOptions, Coldplug, Disk, Kit, Labelled, Mount, Progress, RescueResult,
    Runner, Status, DEFAULT_SUITE, DEFAULT_ZSTD_LEVEL, KIT_FILE, KIT_LABEL, MARKER_PATH,
    RESULT_FORMAT,
};

/// Output format of `keel rescue build`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The manifest as JSON.
    Json,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    machine: Box<super::rescue_machine::MachineArgs>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Build the rescue environment (vmlinuz, initrd.img, manifest.json) into a directory.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Output directory; a previous build there is replaced.
    #[arg(long, short)]
    output: PathBuf,
    /// Debian archive to build from (default: the first one in this machine's apt sources).
    #[arg(long)]
    mirror: Option<String>,
    /// Debian suite.
    #[arg(long, default_value = DEFAULT_SUITE)]
    suite: String,
    /// The keel binary to put inside (default: this one).
    #[arg(long)]
    keel: Option<PathBuf>,
    /// A package to install besides the storage tools (repeatable).
    #[arg(long = "include", value_name = "PACKAGE")]
    include: Vec<String>,
    /// Keep downloaded packages and the package tree here, so the next build only repacks.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// zstd compression level of the initramfs (1–22).
    #[arg(long, default_value_t = DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Filesystem label of the kit's disk (`keel.kit=` on the kernel command line).
    #[arg(long)]
    kit_label: Option<String>,
    /// Run the kit in this directory instead of looking for a disk.
    #[arg(long, value_name = "DIR")]
    kit: Option<PathBuf>,
    /// Seconds to wait for the kit's disk to appear (`keel.wait=`; 10 at boot, 0 by hand).
    #[arg(long)]
    wait: Option<u64>,
    /// Start no shell when no kit is found or a step fails (`keel.shell=0`).
    #[arg(long)]
    no_shell: bool,
    /// Power the machine off at the end (the default for the environment's init; turn it off
    /// there with `keel.poweroff=0`).
    #[arg(long)]
    poweroff: bool,
    /// Run a kit's steps even outside a rescue environment. Kits partition and format disks:
    /// without this flag they are only listed there.
    #[arg(long)]
    allow_host: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(Sub::Build(b)) => build(b),
        None if args.machine.server.is_some() => super::rescue_machine::run(&args.machine),
        None => rescue(&args.run),
    }
}

// ------------------------------------------------------------------ build

#[allow(
    clippy::print_stderr,
    reason = "progress of a long build goes to stderr"
)]
fn build(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    let keel = match &a.keel {
        Some(k) => k.clone(),
        None => std::env::current_exe().context("cannot find the running keel binary")?,
    };
    let mut opts = BuildOptions::new(&a.output, keel);
    opts.suite.clone_from(&a.suite);
    opts.mirror.clone_from(&a.mirror);
    opts.extra_packages.clone_from(&a.include);
    opts.cache_dir.clone_from(&a.cache_dir);
    opts.zstd_level = a.zstd_level;
    let mut progress = |p: Progress| match p {
        Progress::Started(step) => eprintln!("==> {step}"),
        Progress::Finished(step, d) => eprintln!("    {step}: {:.1} s", d.as_secs_f64()),
        Progress::Note(n) => eprintln!("    {n}"),
    };
    let m = keel_rescue::build(&opts, &mut progress)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => serde_json::to_writer_pretty(&mut out, &m)?,
        Format::Text => {
            let mib = |b: u64| b as f64 / 1_048_576.0;
            writeln!(out, "rescue environment in {}", a.output.display())?;
            writeln!(
                out,
                "  suite {}, kernel {} ({} {})",
                m.suite, m.kernel.release, m.kernel.package, m.kernel.version
            )?;
            for f in &m.files {
                writeln!(
                    out,
                    "  {:<11} {:>7.1} MiB  sha256 {}",
                    f.name,
                    mib(f.size),
                    f.sha256
                )?;
            }
            writeln!(
                out,
                "  initramfs   {:.1} MiB uncompressed, {} entries; {} packages, {} of {} modules",
                mib(m.initrd.uncompressed_bytes),
                m.initrd.entries,
                m.packages.len(),
                m.modules.kept,
                m.modules.shipped
            )?;
            writeln!(
                out,
                "  built in {:.0} s{}",
                m.build_seconds,
                if m.from_cache {
                    " (package tree from the cache)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "boot it: qemu-system-x86_64 -m 1024 -nographic -kernel {0}/vmlinuz -initrd \
                 {0}/initrd.img -append console=ttyS0",
                a.output.display()
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------ rescue

/// What `keel rescue` decided to do, from its flags and the kernel command line.
#[derive(Debug)]
struct Settings {
    init: bool,
    label: String,
    wait: Duration,
    shell: bool,
    poweroff: bool,
    in_rescue: bool,
}

fn rescue(a: &RunArgs) -> anyhow::Result<ExitCode> {
    let init = keel_rescue::is_init();
    let boot = if init {
        BootOptions::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    } else {
        BootOptions::default()
    };
    let settings = Settings {
        init,
        label: a
            .kit_label
            .clone()
            .or(boot.kit_label)
            .unwrap_or_else(|| KIT_LABEL.to_string()),
        wait: Duration::from_secs(
            a.wait
                .or(boot.wait_secs)
                .unwrap_or(if init { 10 } else { 0 }),
        ),
        shell: !a.no_shell
            && boot.shell.unwrap_or(true)
            && (init || std::io::stdin().is_terminal()),
        poweroff: a.poweroff || (init && boot.poweroff.unwrap_or(true)),
        in_rescue: Path::new(MARKER_PATH).exists(),
    };
    if !init {
        let result = session(a, &settings);
        let status = result.status;
        finish(&settings, &result);
        return Ok(ExitCode::from(match status {
            Status::Ok | Status::NotRun => 0,
            Status::Failed => 1,
            Status::Error => 2,
            Status::NoKit => 3,
        }));
    }
    // As init: whatever happens, never return (the kernel panics when PID 1 exits).
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session(a, &settings)))
        .unwrap_or_else(|_| RescueResult {
            format: RESULT_FORMAT,
            keel_version: env!("CARGO_PKG_VERSION").to_string(),
            status: Status::Error,
            disks: Vec::new(),
            kit: None,
            steps: Vec::new(),
            error: Some("keel rescue panicked".into()),
            seconds: started.elapsed().as_secs_f64(),
        });
    finish(&settings, &result);
    loop {
        say("Starting a shell on the console.");
        let _ = keel_rescue::shell(keel_rescue::console_tty(Path::new("/sys")).as_deref());
        if settings.poweroff {
            power_off(true);
        }
    }
}

/// Prints a line on the console (standard output), flushed: a child's output follows it. A
/// console that cannot be written to must not stop a recovery (nor panic PID 1).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn power_off(init: bool) {
    say("Powering off.");
    // Run by hand on a system with an init of its own, ask it to shut down cleanly; the
    // rescue environment has no such command, and its init is keel.
    if !init
        && std::process::Command::new("poweroff")
            .status()
            .is_ok_and(|s| s.success())
    {
        return;
    }
    let e = keel_rescue::power_off();
    say(&format!("keel rescue: cannot power off: {e}"));
}

/// After the result line: a shell when one is wanted (no kit, or a failure), then power-off
/// when asked for.
fn finish(settings: &Settings, result: &RescueResult) {
    say(&result.line());
    let wants_shell = settings.shell && !matches!(result.status, Status::Ok | Status::NotRun);
    if wants_shell {
        say("Starting a shell; exit it to finish.");
        let tty = if settings.init {
            keel_rescue::console_tty(Path::new("/sys"))
        } else {
            None
        };
        if let Err(e) = keel_rescue::shell(tty.as_deref()) {
            say(&format!("keel rescue: cannot start a shell: {e}"));
        }
    }
    if settings.poweroff {
        power_off(settings.init);
    }
}

fn banner(settings: &Settings) -> Vec<Disk> {
    let version = env!("CARGO_PKG_VERSION");
    say("");
    say(&format!("=== Keel rescue environment — keel {version} ==="));
    if let Ok(text) = std::fs::read_to_string(MARKER_PATH) {
        let m: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let s = |k: &str| m[k].as_str().unwrap_or("?").to_string();
        say(&format!(
            "built {} from Debian {}, kernel {}",
            s("built_at"),
            s("suite"),
            s("kernel")
        ));
    } else if !settings.in_rescue {
        say("(not inside a rescue environment: kit steps are listed, not run, without --allow-host)");
    }
    if let Some(up) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
    {
        say(&format!("up {up} s"));
    }
    let disks = keel_rescue::disks(Path::new("/sys"));
    say("");
    if disks.is_empty() {
        say("Disks: none found.");
    } else {
        say("Disks:");
        say(&format!(
            "  {:<10} {:>10}  {:<9} {:<24} {}",
            "NAME", "SIZE", "TYPE", "MODEL", "SERIAL"
        ));
        for d in &disks {
            say(&format!(
                "  {:<10} {:>10}  {:<9} {:<24} {}",
                d.name,
                keel_rescue::human(d.size),
                d.transport,
                if d.model.is_empty() { "-" } else { &d.model },
                if d.serial.is_empty() { "-" } else { &d.serial },
            ));
        }
    }
    say("");
    disks
}

/// Waits up to `settings.wait` for a filesystem labelled `settings.label`, loading drivers for new
/// devices meanwhile when running as init.
fn find_kit(settings: &Settings) -> Option<Labelled> {
    let sys = Path::new("/sys");
    let deadline = Instant::now() + settings.wait;
    let mut coldplug = Coldplug::new(sys);
    loop {
        if settings.init {
            coldplug.run();
        }
        let found = keel_rescue::find_labelled(sys, Path::new("/dev"), &settings.label);
        if let Some(first) = found.first() {
            if found.len() > 1 {
                let all: Vec<&str> = found.iter().map(|f| f.device.as_str()).collect();
                say(&format!(
                    "Several filesystems are labelled {}: {}; using {}.",
                    settings.label,
                    all.join(", "),
                    first.device
                ));
            }
            return Some(first.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn session(a: &RunArgs, settings: &Settings) -> RescueResult {
    let started = Instant::now();
    let disks = banner(settings);
    let mut result = RescueResult {
        format: RESULT_FORMAT,
        keel_version: env!("CARGO_PKG_VERSION").to_string(),
        status: Status::NoKit,
        disks,
        kit: None,
        steps: Vec::new(),
        error: None,
        seconds: 0.0,
    };
    let mut mount = None;
    let dir = if let Some(dir) = &a.kit {
        say(&format!("Kit: {}", dir.display()));
        dir.clone()
    } else {
        if !settings.wait.is_zero() {
            say(&format!(
                "Looking for a recovery kit (a filesystem labelled {}) for up to {} s…",
                settings.label,
                settings.wait.as_secs()
            ));
        }
        let Some(found) = find_kit(settings) else {
            instructions(&settings.label);
            result.seconds = secs(started);
            return result;
        };
        say(&format!(
            "Kit: {} ({}, label {})",
            found.device, found.probe.fstype, found.probe.label
        ));
        result.kit = Some(found.clone());
        let at = Path::new("/run/keel/kit");
        match Mount::readonly(&found.device, &found.probe.fstype, at) {
            Ok(m) => {
                let p = m.path().to_path_buf();
                mount = Some(m);
                p
            }
            Err(e) => {
                say(&format!("error: {e}"));
                result.status = Status::Error;
                result.error = Some(e.to_string());
                result.seconds = secs(started);
                return result;
            }
        }
    };
    let kit = match Kit::load(&dir) {
        Ok(k) => k,
        Err(e) => {
            say(&format!("error: {e}"));
            result.status = Status::Error;
            result.error = Some(e.to_string());
            result.seconds = secs(started);
            return result;
        }
    };
    run_kit(&kit, &dir, a, settings, &mut result);
    drop(mount);
    result.seconds = secs(started);
    result
}

fn run_kit(kit: &Kit, dir: &Path, a: &RunArgs, settings: &Settings, result: &mut RescueResult) {
    if let Some(d) = &kit.description {
        say(&format!("  {d}"));
    }
    let n = kit.steps.len();
    say(&format!("  {n} step{}:", if n == 1 { "" } else { "s" }));
    for (i, s) in kit.steps.iter().enumerate() {
        say(&format!("  {:>3}. {}: {}", i + 1, s.name, s.summary()));
    }
    if !settings.in_rescue && !a.allow_host {
        say(&format!(
            "Not inside a rescue environment: the steps were not run.\nhint: boot the rescue \
             environment (keel rescue build), or pass --allow-host to run {} here",
            dir.join(KIT_FILE).display()
        ));
        result.status = Status::NotRun;
        return;
    }
    result.status = Status::Ok;
    let runner = Runner::new(dir, kit);
    for (i, step) in kit.steps.iter().enumerate() {
        let tag = format!("KEEL-STEP {}/{n}", i + 1);
        say(&format!(
            "----- {tag} BEGIN {}: {} -----",
            step.name,
            step.summary()
        ));
        let o = runner.run(step);
        let how = match (&o.error, o.timed_out, o.exit) {
            (Some(e), _, _) => format!("error: {e}"),
            (None, true, _) => format!("timed out after {} s", step.timeout().as_secs()),
            (None, false, Some(code)) => format!("exit {code}"),
            (None, false, None) => "killed by a signal".to_string(),
        };
        say(&format!(
            "----- {tag} END {}: {how}, {:.2} s -----",
            step.name, o.seconds
        ));
        let failed = !o.ok() && !step.allow_failure;
        result.steps.push(o);
        if failed {
            say(&format!(
                "Step {:?} failed; the steps after it were not run.",
                step.name
            ));
            result.status = Status::Failed;
            return;
        }
    }
    say("All steps done.");
}

fn instructions(label: &str) {
    say(&format!(
        "No recovery kit found (no filesystem labelled {label})."
    ));
    say("To go on:");
    say(&format!(
        "  - attach a disk or USB stick with a filesystem labelled {label} holding {KIT_FILE},"
    ));
    say("    then run `keel rescue` (or `keel rescue --kit DIR` for a kit in a directory);");
    say("  - or work by hand: sfdisk/sgdisk, mdadm, lvm, cryptsetup, mkfs.ext4/xfs/vfat, mkswap,");
    say("    grub-install; `ip` and `udhcpc` (busybox) for the network;");
    say("  - leave the shell (exit) to power off.");
}

fn secs(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}
