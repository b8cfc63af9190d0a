//! `keel recover install`: after `keel recover apply --keep-mounted`, lay the system tree
//! onto the recovered disks and make it boot on this machine, then verify it against the
//! profile.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel_recover::{Journal, DEFAULT_TARGET_ROOT};
use keel_system::{Firmware, InstallOptions, InstallReport, Progress, VerifyOptions};

use crate::output;

/// The firmware GRUB is installed for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FirmwareArg {
    /// Legacy BIOS (GRUB in the disk's boot area and BIOS boot partition).
    Bios,
    /// UEFI (GRUB on the EFI system partition, at the removable-media path).
    Uefi,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The profile the tree was built from (binary or JSON).
    #[arg(long)]
    profile: PathBuf,
    /// The plan that was applied: its journal tells the target root.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// The tree to lay down: the directory or tarball `keel recover build-tree` wrote.
    /// Without it, the tree must be on the target root already.
    #[arg(long, value_name = "DIR|TARBALL")]
    tree: Option<PathBuf>,
    /// Where the recovered disks are mounted [default: the plan journal's, else
    /// /mnt/keel-target].
    #[arg(long, value_name = "DIR")]
    target_root: Option<PathBuf>,
    /// The target machine's firmware [default: this machine's].
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    /// Put GRUB on this disk [default: the disks holding /boot, or /]; repeatable.
    #[arg(long = "boot-disk", value_name = "DEV")]
    boot_disks: Vec<PathBuf>,
    /// Map a NIC: OLD=NEW renames the interface OLD of the profile's network
    /// configuration to NEW; OLD=MAC keeps the name OLD and gives it to the NIC with that
    /// MAC address. Repeatable; wins over the automatic mapping (same driver, bus order).
    #[arg(long = "nic-map", value_name = "OLD=NEW|OLD=MAC")]
    nic_map: Vec<String>,
    /// The recovery identity: secrets are compared by content when verifying.
    #[arg(long, value_name = "FILE")]
    recovery_identity: Option<PathBuf>,
    /// Make the initramfs again even when the tree's is generic and current.
    #[arg(long)]
    rebuild_initramfs: bool,
    /// Do not verify the installed system against the profile at the end.
    #[arg(long)]
    no_verify: bool,
    /// Show the tools' output as they run.
    #[arg(long, short)]
    verbose: bool,
}

/// `keel recover install`.
#[allow(clippy::print_stderr)]
pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&args.profile)?;
    let identity = args
        .recovery_identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    let root = match (&args.target_root, &args.plan) {
        (Some(r), _) => r.clone(),
        (None, Some(plan)) => Journal::load(&Journal::default_path(plan))?.map_or_else(
            || PathBuf::from(DEFAULT_TARGET_ROOT),
            |j| j.target_root().to_path_buf(),
        ),
        (None, None) => PathBuf::from(DEFAULT_TARGET_ROOT),
    };
    let mut opts = InstallOptions::new(&root);
    opts.tree.clone_from(&args.tree);
    if let Some(f) = args.firmware {
        opts.firmware = match f {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
        };
    }
    opts.boot_disks.clone_from(&args.boot_disks);
    opts.rebuild_initramfs = args.rebuild_initramfs;
    opts.nic_map = args
        .nic_map
        .iter()
        .map(|s| keel_system::parse_nic_map(s))
        .collect::<Result<_, _>>()?;
    let verbose = args.verbose;
    eprintln!(
        "installing onto {} for {} firmware",
        root.display(),
        opts.firmware.as_str()
    );
    let report = keel_system::install(&file.profile, &opts, &mut |p| match p {
        Progress::Started(phase, what) => eprintln!("[{phase}] {what}"),
        Progress::Finished(phase, took, detail) => {
            eprintln!("[{phase}] done in {:.1} s: {detail}", took.as_secs_f64());
        }
        Progress::Note(n) => eprintln!("  {n}"),
        Progress::Output(_, line) if verbose => eprintln!("  | {line}"),
        Progress::Output(..) => {}
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(render(&report).as_bytes())
        .context("cannot write to standard output")?;
    if args.no_verify {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "[verify] capturing {} and comparing it with the profile",
        root.display()
    );
    let t = std::time::Instant::now();
    let mut v = keel_system::verify(
        &file,
        &root,
        &VerifyOptions {
            identity: identity.as_ref(),
            timeout: Duration::from_secs(60),
        },
    )?;
    report.explain(&mut v);
    eprintln!("[verify] done in {:.1} s", t.elapsed().as_secs_f64());
    out.write_all(super::tree::render_verify(&v, output::color()).as_bytes())
        .context("cannot write to standard output")?;
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(r: &InstallReport) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "installed in {:.1} s for {} firmware",
        r.total_seconds,
        r.firmware.as_str()
    );
    if !r.boot_disks.is_empty() {
        let _ = write!(s, ", GRUB on {}", r.boot_disks.join(", "));
    }
    s.push('\n');
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  {:<11} {:6.1} s  {}",
            p.phase.as_str(),
            p.seconds,
            p.detail
        );
    }
    for c in &r.mount_changes {
        let _ = writeln!(s, "  changed: {c}");
    }
    for m in r.nics.iter().filter(|m| m.old_name != m.new_name || m.pin) {
        let _ = writeln!(
            s,
            "  nic: {} → {}{} ({})",
            m.old_name,
            m.new_name,
            m.new_mac
                .as_deref()
                .map_or_else(String::new, |mac| format!(" [{mac}]")),
            m.reason
        );
    }
    for f in &r.network_files {
        let _ = writeln!(s, "  rewritten: {f}");
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    s
}
