//! The second half of `keel recover apply`: after the storage steps, the system. The tree is
//! laid down (or built onto the disks), made to boot on this machine, the data paths come back
//! from their backups, and the result is verified against the profile. Every phase is timed;
//! a JSON report is written at the end, whatever the outcome.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_profile::ProfileFile;
use keel_recover::Plan;
use keel_system::{
    BuildOptions, BuildReport, DataOptions, DataRestore, Firmware, InstallOptions, InstallReport,
    Progress, VerifyOptions, VerifyReport,
};
use serde::{Deserialize, Serialize};

use crate::output;

/// Version of the recovery report's shape.
pub const REPORT_FORMAT: u32 = 1;

/// What the system phases need, from `keel recover apply`'s arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SystemArgs {
    /// The profile the plan was made from [default: the file the plan names]. The system
    /// phases need it.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Stop after the storage steps: partition tables, RAID, LUKS, LVM, filesystems, mounts.
    #[arg(long)]
    pub storage_only: bool,
    /// The system tree to lay down: the directory or tarball `keel recover build-tree` wrote.
    /// Without it the tree is built onto the disks (its packages are checked against the
    /// profile's repositories before any disk is written).
    #[arg(long, value_name = "DIR|TARBALL")]
    pub tree: Option<PathBuf>,
    /// The recovery identity (`keel keygen`) that decrypts the profile's secrets.
    #[arg(long, value_name = "FILE")]
    pub recovery_identity: Option<PathBuf>,
    /// Keep downloaded packages, base systems and finished trees here, when building.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// The target machine's firmware [default: this machine's].
    #[arg(long, value_enum)]
    pub firmware: Option<super::install::FirmwareArg>,
    /// Put GRUB on this disk [default: the disks holding /boot, or /]; repeatable.
    #[arg(long = "boot-disk", value_name = "DEV")]
    pub boot_disks: Vec<PathBuf>,
    /// Map a NIC: OLD=NEW renames the interface OLD of the profile's network configuration to
    /// NEW; OLD=MAC gives the name OLD to the NIC with that MAC address. Repeatable; wins
    /// over the automatic mapping (same driver, bus order).
    #[arg(long = "nic-map", value_name = "OLD=NEW|OLD=MAC")]
    pub nic_map: Vec<String>,
    /// Restore restic data paths from this repository instead of the one the profile names.
    #[arg(long, value_name = "REPO")]
    pub restic_repository: Option<String>,
    /// The restic repository's password file [default: the profile's, from the recovered
    /// secrets; else `RESTIC_PASSWORD`].
    #[arg(long, value_name = "FILE")]
    pub restic_password_file: Option<PathBuf>,
    /// Make the initramfs again even when the tree's is generic and current (it is made
    /// again anyway whenever the install changes what it holds).
    #[arg(long)]
    pub rebuild_initramfs: bool,
    /// Do not restore the data paths.
    #[arg(long)]
    pub no_data: bool,
    /// Do not verify the recovered system against the profile.
    #[arg(long)]
    pub no_verify: bool,
    /// Write the recovery report (JSON) here [default: NAME.report.json next to the plan].
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Show the tools' output as they run.
    #[arg(long, short)]
    pub verbose: bool,
}

/// One timed phase of a recovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseTime {
    /// `check`, `storage`, `base`, `packages`, …, `data`, `verify`.
    pub phase: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// What it did.
    pub detail: String,
}

/// A phase of a recovery starting or finishing, for whoever follows it live (a rescue machine
/// reports them to its server).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseEvent {
    /// `storage`, `base`, `packages`, …, `verify`.
    pub phase: String,
    /// False when it starts, true when it finished.
    pub finished: bool,
    /// Seconds it took, when finished.
    pub seconds: f64,
    /// What it does or did.
    pub detail: String,
}

/// What an [`Observer`] calls.
type OnPhase = Box<dyn FnMut(&PhaseEvent) + Send>;

/// Called with every [`PhaseEvent`] of a recovery.
#[derive(Default)]
pub struct Observer(Option<OnPhase>);

impl Observer {
    /// An observer calling `f`.
    pub fn new(f: impl FnMut(&PhaseEvent) + Send + 'static) -> Self {
        Observer(Some(Box::new(f)))
    }

    fn emit(&mut self, e: &PhaseEvent) {
        if let Some(f) = &mut self.0 {
            f(e);
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(..)"
        } else {
            "Observer(none)"
        })
    }
}

/// The machine-readable account of one `keel recover apply`.
#[derive(Debug, Serialize)]
pub struct RecoveryReport {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// The profiled system's hostname.
    pub hostname: String,
    /// The profile's hash.
    pub profile: Option<String>,
    /// The plan file.
    pub plan: String,
    /// Where the recovered system was mounted.
    pub target_root: String,
    /// When the recovery started (RFC 3339).
    pub started_at: String,
    /// True when every phase succeeded and the verification found nothing unexpected.
    pub ok: bool,
    /// Why it stopped, when it failed.
    pub error: Option<String>,
    /// Every phase in order, with its time.
    pub phases: Vec<PhaseTime>,
    /// Total wall-clock seconds.
    pub total_seconds: f64,
    /// The tree build, when the tree was built onto the disks.
    pub build: Option<BuildReport>,
    /// What making the system boot here did.
    pub install: Option<InstallReport>,
    /// The data paths restored.
    pub data: Vec<DataRestore>,
    /// The verification.
    pub verify: Option<VerifyReport>,
    /// Who follows the phases live.
    #[serde(skip)]
    pub observer: Observer,
}

impl RecoveryReport {
    /// A report for a recovery of `plan` starting now.
    pub fn new(plan: &Plan, plan_path: &Path, target_root: &Path) -> RecoveryReport {
        RecoveryReport {
            format: REPORT_FORMAT,
            hostname: plan.source.hostname.clone(),
            profile: plan.source.profile_hash.clone(),
            plan: plan_path.display().to_string(),
            target_root: target_root.display().to_string(),
            started_at: jiff::Timestamp::now().to_string(),
            ok: false,
            error: None,
            phases: Vec::new(),
            total_seconds: 0.0,
            build: None,
            install: None,
            data: Vec::new(),
            verify: None,
            observer: Observer::default(),
        }
    }

    /// Tells the observer a phase starts.
    pub fn started(&mut self, phase: &str, what: impl Into<String>) {
        self.observer.emit(&PhaseEvent {
            phase: phase.to_string(),
            finished: false,
            seconds: 0.0,
            detail: what.into(),
        });
    }

    /// Records a phase.
    pub fn phase(&mut self, phase: &str, took: Duration, detail: impl Into<String>) {
        let p = PhaseTime {
            phase: phase.to_string(),
            seconds: took.as_secs_f64(),
            detail: detail.into(),
        };
        self.observer.emit(&PhaseEvent {
            phase: p.phase.clone(),
            finished: true,
            seconds: p.seconds,
            detail: p.detail.clone(),
        });
        self.phases.push(p);
    }

    /// Writes the report (atomically, mode 0600).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("cannot encode the report")? + "\n";
        output::write_atomic(path, json.as_bytes(), 0o600)
    }

    /// The phases as a table for people.
    pub fn render(&self) -> String {
        let mut s = format!(
            "recovery of {} {} in {:.1} s\n",
            if self.hostname.is_empty() {
                "the profiled system"
            } else {
                &self.hostname
            },
            if self.ok { "succeeded" } else { "FAILED" },
            self.total_seconds
        );
        for p in &self.phases {
            let _ = writeln!(s, "  {:<11} {:7.1} s  {}", p.phase, p.seconds, p.detail);
        }
        if let Some(e) = &self.error {
            let first = e.lines().next().unwrap_or_default();
            let _ = writeln!(s, "  error: {first}");
        }
        s
    }
}

/// The report's default place: `NAME.report.json` next to the plan `NAME.json`.
pub fn default_report_path(plan: &Path) -> PathBuf {
    let stem = plan
        .file_stem()
        .map_or_else(|| "plan".into(), |s| s.to_string_lossy().into_owned());
    plan.with_file_name(format!("{stem}.report.json"))
}

/// What the apply would do after the storage, for the dry run.
pub fn describe(args: &SystemArgs, plan: &Plan) -> String {
    if args.storage_only {
        return "nothing more (--storage-only): the disks are rebuilt and mounted".into();
    }
    let profile = args
        .profile
        .as_ref()
        .map(|p| p.display().to_string())
        .or_else(|| plan.source.profile_path.clone());
    let Some(profile) = profile else {
        return "nothing more: the plan names no profile (give --profile FILE for the whole \
                system)"
            .into();
    };
    let tree = args.tree.as_ref().map_or_else(
        || "build the system tree onto the disks (its packages are checked first)".to_string(),
        |t| format!("lay down the tree {}", t.display()),
    );
    let mut s = format!(
        "the system from {profile}: {tree}; make it boot here (fstab, network, initramfs, \
         GRUB)"
    );
    if !args.no_data {
        s.push_str("; restore the data paths from their backups");
    }
    if !args.no_verify {
        s.push_str("; verify it against the profile");
    }
    s
}

/// The system half, prepared before any disk is written: the profile (checked against the
/// plan), the identity, and, when the tree is to be built, the packages checked against the
/// repositories.
pub struct Prepared {
    file: ProfileFile,
    identity: Option<age::x25519::Identity>,
}

/// Reads what the system phases need and checks what can be checked before the disks are
/// touched. `None` when the apply stops after the storage.
#[allow(clippy::print_stderr)]
pub fn prepare(
    args: &SystemArgs,
    plan: &Plan,
    report: &mut RecoveryReport,
) -> anyhow::Result<Option<Prepared>> {
    if args.storage_only {
        return Ok(None);
    }
    let path = match (&args.profile, &plan.source.profile_path) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => {
            eprintln!(
                "note: the plan names no profile, so only the storage is rebuilt (give \
                 --profile FILE for the whole system)"
            );
            return Ok(None);
        }
    };
    let file = output::read_profile(&path).with_context(|| {
        format!(
            "the system phases need the profile the plan was made from\nhint: give it with \
             --profile FILE, or add --storage-only to rebuild only the disks ({})",
            path.display()
        )
    })?;
    let hash = file.hash()?.to_hex();
    if let Some(planned) = &plan.source.profile_hash {
        if *planned != hash {
            bail!(
                "{} is not the profile the plan was made from (its hash is {}, the plan's {})\n\
                 hint: give the right one with --profile, or make a new plan",
                path.display(),
                &hash[..12],
                &planned[..planned.len().min(12)]
            );
        }
    }
    report.profile = Some(hash);
    let identity = args
        .recovery_identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    if identity.is_none() && !file.profile.security.secrets.is_empty() {
        eprintln!(
            "warning: no --recovery-identity: the profile's {} secret{} (host keys, \
             passwords) will not be restored",
            file.profile.security.secrets.len(),
            if file.profile.security.secrets.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    if !args.no_data
        && file
            .profile
            .files
            .data_paths
            .iter()
            .any(|d| d.backup == "restic")
        && which("restic").is_none()
    {
        bail!(
            "the profile's data paths are backed up with restic, which is not installed \
             here\nhint: install restic, or recover without the data (--no-data)"
        );
    }
    if let Some(tree) = &args.tree {
        if !tree.exists() {
            bail!(
                "the tree {} does not exist\nhint: build it with keel recover build-tree, or \
                 leave --tree out to build it onto the disks",
                tree.display()
            );
        }
    } else {
        // A package the repositories lost stops the recovery here, before the disks.
        let t = Instant::now();
        let opts = build_options(args, Path::new("/nonexistent"));
        let checked = keel_system::check(&file, &opts, &mut |p| {
            super::tree::show_progress(&p, args.verbose);
        })
        .context(
            "the system cannot be rebuilt from the profile's repositories; no disk was \
                 written",
        )?;
        report.phase(
            "preflight",
            t.elapsed(),
            format!(
                "{} packages available from {}",
                checked.packages.len(),
                checked.mirror
            ),
        );
    }
    Ok(Some(Prepared { file, identity }))
}

fn build_options(args: &SystemArgs, output: &Path) -> BuildOptions {
    let mut opts = BuildOptions::new(output);
    opts.cache.clone_from(&args.cache);
    opts.onto_mounts = true;
    opts
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// The state of the system phases, next to the apply's journal: a rerun after an interruption
/// skips a tree that was completely laid down or built.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SystemState {
    /// The profile the tree is of.
    profile: String,
    tree_done: bool,
}

fn state_path(journal: &Path) -> PathBuf {
    let name = journal
        .file_name()
        .map_or_else(|| "journal".into(), |s| s.to_string_lossy().into_owned());
    journal.with_file_name(format!("{name}.system"))
}

/// Runs the system phases on the mounted target. Every phase lands in `report`.
#[allow(clippy::print_stderr)]
pub fn run(
    args: &SystemArgs,
    prepared: &Prepared,
    root: &Path,
    journal: &Path,
    report: &mut RecoveryReport,
) -> anyhow::Result<bool> {
    let file = &prepared.file;
    let verbose = args.verbose;
    let hash = report.profile.clone().unwrap_or_default();
    let state_file = state_path(journal);
    let state: SystemState = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let record = |report: &mut RecoveryReport, p: &Progress| match p {
        Progress::Finished(phase, took, detail) => {
            report.phase(phase.as_str(), *took, detail.clone());
        }
        Progress::Started(phase, what) => report.started(phase.as_str(), what.clone()),
        _ => {}
    };

    let tree_done = state.tree_done && state.profile == hash;
    let mut tree = args.tree.clone();
    if tree_done {
        eprintln!("[tree] laid down by an earlier run: kept");
        tree = None;
    } else {
        if !keel_system::holds_only_mounts(root) {
            eprintln!(
                "[tree] {} holds what an interrupted run left: clearing it (the filesystems \
                 stay)",
                root.display()
            );
            keel_system::clear_target_root(root)?;
        }
        if tree.is_none() {
            let opts = build_options(args, root);
            let built = keel_system::build(file, &opts, prepared.identity.as_ref(), &mut |p| {
                super::tree::show_progress(&p, verbose);
                record(report, &p);
            })?;
            report.build = Some(built);
        }
    }

    let mut opts = InstallOptions::new(root);
    opts.tree = tree;
    if let Some(f) = args.firmware {
        opts.firmware = match f {
            super::install::FirmwareArg::Bios => Firmware::Bios,
            super::install::FirmwareArg::Uefi => Firmware::Uefi,
        };
    }
    opts.boot_disks.clone_from(&args.boot_disks);
    opts.rebuild_initramfs = args.rebuild_initramfs;
    opts.nic_map = args
        .nic_map
        .iter()
        .map(|s| keel_system::parse_nic_map(s))
        .collect::<Result<_, _>>()?;
    eprintln!(
        "[system] making it boot here, for {} firmware",
        opts.firmware.as_str()
    );
    let installed = keel_system::install(&file.profile, &opts, &mut |p| {
        super::tree::show_progress(&p, verbose);
        record(report, &p);
    });
    let installed = installed?;
    // The tree is in place: a rerun keeps it.
    let done = SystemState {
        profile: hash,
        tree_done: true,
    };
    output::write_atomic(&state_file, &serde_json::to_vec(&done)?, 0o600)?;

    if !args.no_data && !file.profile.files.data_paths.is_empty() {
        let data_opts = DataOptions {
            repository: args.restic_repository.clone(),
            password_file: args.restic_password_file.clone(),
        };
        report.data = keel_system::restore_data(&file.profile, root, &data_opts, &mut |p| {
            super::tree::show_progress(&p, verbose);
            record(report, &p);
        })?;
    }

    let mut ok = true;
    if !args.no_verify {
        eprintln!(
            "[verify] capturing {} and comparing it with the profile",
            root.display()
        );
        report.started("verify", "capturing the recovered system");
        let t = Instant::now();
        let mut v = keel_system::verify(
            file,
            root,
            &VerifyOptions {
                identity: prepared.identity.as_ref(),
                timeout: Duration::from_secs(60),
            },
        )?;
        installed.explain(&mut v);
        ok = v.ok();
        let detail = format!(
            "{} expected difference{}, {} unexpected",
            v.expected.len(),
            if v.expected.len() == 1 { "" } else { "s" },
            v.unexpected.len()
        );
        eprintln!(
            "[verify] done in {:.1} s: {detail}",
            t.elapsed().as_secs_f64()
        );
        report.phase("verify", t.elapsed(), detail);
        eprint!("{}", super::tree::render_verify(&v, output::color()));
        report.verify = Some(v);
    }
    report.install = Some(installed);
    Ok(ok)
}
