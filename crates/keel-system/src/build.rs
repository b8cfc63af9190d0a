//! Building the tree: check, base, packages, overlay, secrets — each phase timed and
//! reported.

use std::collections::BTreeSet;
use std::fmt;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_profile::ProfileFile;
use serde::Serialize;

use crate::apt::{self, AptState};
use crate::cache::{self, ArchiveKind, Cache};
use crate::cmd;
use crate::dpkg;
use crate::error::SystemError;
use crate::mounts::{self, WorkDir};
use crate::overlay::{apply_overlay, OverlayContext};
use crate::plan::{PlanOptions, SystemPlan};
use crate::report::{
    BuildReport, CachedBuild, NewerPackage, PackageReport, PhaseReport, REPORT_FORMAT,
};

/// The format of the trees a build makes, part of every cached tree's key: a tree cached by
/// an earlier format is built again. "tree-2": the initramfs is made after the configuration.
pub const TREE_FORMAT: &str = "tree-2";

/// A phase of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Plan from the profile; check keys, repositories and versions. Writes nothing.
    Check,
    /// Bootstrap the base system of the release (or unpack it from the cache).
    Base,
    /// Install every package at its recorded version.
    Packages,
    /// Write the configuration overlay.
    Overlay,
    /// Decrypt and write the secrets.
    Secrets,
    /// Lay down a finished tree from the cache.
    Restore,
    /// Keep the finished tree in the cache.
    Save,
    /// Pack the tree into the output tarball.
    Pack,
    /// Lay the tree onto the recovered disks.
    Laydown,
    /// Check fstab, crypttab and mdadm.conf against the recovered disks.
    Mounts,
    /// Map the network configuration to the target's NICs.
    Network,
    /// Rebuild the initramfs.
    Initramfs,
    /// Install GRUB and write its configuration.
    Bootloader,
    /// Restore the data paths from their backups.
    Data,
}

impl Phase {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Base => "base",
            Phase::Packages => "packages",
            Phase::Overlay => "overlay",
            Phase::Secrets => "secrets",
            Phase::Restore => "restore",
            Phase::Save => "save",
            Phase::Pack => "pack",
            Phase::Laydown => "laydown",
            Phase::Mounts => "mounts",
            Phase::Network => "network",
            Phase::Initramfs => "initramfs",
            Phase::Bootloader => "bootloader",
            Phase::Data => "data",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tool makes the base system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootstrap {
    /// mmdebstrap when installed (it is faster), debootstrap otherwise.
    #[default]
    Auto,
    /// debootstrap.
    Debootstrap,
    /// mmdebstrap.
    Mmdebstrap,
}

/// What a build reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A phase started, doing what.
    Started(Phase, String),
    /// A phase finished after this long, with a summary.
    Finished(Phase, Duration, String),
    /// Something worth knowing.
    Note(String),
    /// A line a tool printed.
    Output(Phase, String),
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A new or empty directory, or a tarball (`.tar`, `.tar.zst`, `.tar.gz`).
    pub output: PathBuf,
    /// Choices about versions, mirror and keys.
    pub plan: PlanOptions,
    /// Keep downloaded packages, base systems and finished trees here.
    pub cache: Option<PathBuf>,
    /// The tool that makes the base system.
    pub bootstrap: Bootstrap,
    /// Build even when the cache holds a finished tree for this profile (and refresh it).
    pub rebuild: bool,
    /// Where the build machine's own files are (`/`): repository keys are looked up there.
    pub host_root: PathBuf,
    /// The output is a recovered system's root with its filesystems mounted on it (`keel
    /// recover apply`): besides `lost+found`, it may hold the empty directories other
    /// filesystems are mounted on, and those mounts stay.
    pub onto_mounts: bool,
}

impl BuildOptions {
    /// Defaults for building into `output`.
    pub fn new(output: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions {
            output: output.into(),
            plan: PlanOptions::default(),
            cache: None,
            bootstrap: Bootstrap::Auto,
            rebuild: false,
            host_root: PathBuf::from("/"),
            onto_mounts: false,
        }
    }
}

/// Longest the base system or the package installation may take.
const LONG: Duration = Duration::from_secs(3600);
/// Where the build's apt configuration lives inside the tree while packages install.
const BUILD_DIR: &str = "tmp/keel-build";

/// Plans the system `file` describes and checks it against its repositories: keys,
/// reachability, every package's version, and that apt can install them together. Writes
/// nothing but the cache's package lists.
pub fn check(
    file: &ProfileFile,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<SystemPlan, SystemError> {
    cmd::require("apt-get", "apt")?;
    let cache = opts.cache.as_deref().map(Cache::open).transpose()?;
    let plan = SystemPlan::from_profile(file, &opts.plan)?;
    let (plan, _apt) = timed(
        Phase::Check,
        "planning from the profile and reading its repositories",
        progress,
        |p| checked_plan(plan, opts, cache.as_ref(), p),
    )?;
    Ok(plan)
}

fn checked_plan(
    mut plan: SystemPlan,
    opts: &BuildOptions,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(Progress),
) -> Result<((SystemPlan, AptState), String), SystemError> {
    plan.resolve_keys(&opts.host_root, &opts.plan.keyrings)?;
    let mut sources = String::new();
    for s in &plan.sources {
        let _ = writeln!(sources, "{s:?}");
    }
    let keys: Vec<String> = plan.keys.iter().map(|k| k.hash.to_hex()).collect();
    let state_key = cache::key(&[
        &sources,
        &plan.arch,
        &plan.foreign_archs.join(","),
        &keys.join(","),
    ]);
    let state_dir = cache.map(|c| c.apt_state(&state_key)).transpose()?;
    let apt = AptState::create(state_dir, &plan)?;
    progress(Progress::Note(format!(
        "{} {} {}: {} packages from {} repositories",
        plan.distribution,
        plan.suite,
        plan.arch,
        plan.packages.len(),
        plan.sources.len()
    )));
    apt.update(&mut |l| progress(Progress::Output(Phase::Check, l.to_string())))?;
    let queries: Vec<String> = plan
        .packages
        .iter()
        .map(|p| p.query(&plan.arch))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let available = apt.availability(&queries)?;
    plan.check_versions(&available, opts.plan.allow_newer)?;
    apt.simulate(&plan.specs())?;
    let detail = format!(
        "{} packages available at their versions{}",
        plan.packages.len(),
        if plan.newer.is_empty() {
            String::new()
        } else {
            format!(" ({} newer)", plan.newer.len())
        }
    );
    Ok(((plan, apt), detail))
}

/// Runs `f` as `phase`, reporting its start, end and duration.
fn timed<T>(
    phase: Phase,
    what: &str,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&mut dyn FnMut(Progress)) -> Result<(T, String), SystemError>,
) -> Result<T, SystemError> {
    progress(Progress::Started(phase, what.to_string()));
    let t = Instant::now();
    let (v, detail) = f(progress)?;
    progress(Progress::Finished(phase, t.elapsed(), detail));
    Ok(v)
}

/// Builds the root filesystem `file` describes into `opts.output`: checks the plan (nothing
/// is written when a recorded version is missing), bootstraps the release, installs every
/// package at its recorded version, writes the configuration overlay and, with `identity`,
/// the secrets.
///
/// With a cache that holds a finished tree of the same profile (built with the same archive
/// and version choice), that tree is laid down instead, without consulting the repositories:
/// a tree built ahead of time needs no network during the recovery.
pub fn build(
    file: &ProfileFile,
    opts: &BuildOptions,
    identity: Option<&age::x25519::Identity>,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildReport, SystemError> {
    let started = Instant::now();
    preflight(opts)?;
    let cache = opts.cache.as_deref().map(Cache::open).transpose()?;
    let mut phases: Vec<PhaseReport> = Vec::new();
    let mut record = |progress: &mut dyn FnMut(Progress), p: Progress| {
        if let Progress::Finished(phase, took, detail) = &p {
            phases.push(PhaseReport {
                phase: *phase,
                seconds: (took.as_secs_f64() * 100.0).round() / 100.0,
                detail: detail.clone(),
            });
        }
        progress(p);
    };
    let mut progress = |p: Progress| record(progress, p);

    let plan = SystemPlan::from_profile(file, &opts.plan)?;
    let choice = if opts.plan.allow_newer {
        "newer allowed"
    } else {
        "recorded versions"
    };
    let tree_name = format!(
        "{}-{}",
        sanitize(&plan.hostname),
        cache::key(&[&plan.profile, &plan.mirror, choice, TREE_FORMAT])
    );
    let tree_archive = cache.as_ref().map(|c| c.tree(&tree_name)).transpose()?;
    let cached_tree = tree_archive
        .as_ref()
        .filter(|a| a.is_file() && !opts.rebuild)
        .cloned();
    // Laying down a finished tree only reads its archive, so the cache's lock is let go:
    // concurrent recoveries from one cache are not held up by each other. Archives are
    // replaced by rename, and a reader keeps the file it opened.
    let cache = if cached_tree.is_some() { None } else { cache };

    let (plan, apt, tool) = if cached_tree.is_some() {
        progress(Progress::Note(
            "a finished tree of this profile is in the cache: laying it down".into(),
        ));
        (plan, None, None)
    } else {
        for (tool, package) in [
            ("apt-get", "apt"),
            ("chroot", "coreutils"),
            ("mount", "mount"),
            ("unshare", "util-linux"),
        ] {
            cmd::require(tool, package)?;
        }
        let tool = choose_tool(opts.bootstrap)?;
        let (plan, apt) = timed(
            Phase::Check,
            "planning from the profile and reading its repositories",
            &mut progress,
            |p| checked_plan(plan, opts, cache.as_ref(), p),
        )?;
        (plan, Some(apt), Some(tool))
    };
    // Nothing has been written so far.
    let target = Target::prepare(&opts.output)?;
    let root = target.root.clone();

    let mut built = CachedBuild::default();
    let mut base_from_cache = false;
    if let Some(archive) = &cached_tree {
        timed(
            Phase::Restore,
            "laying down the cached tree",
            &mut progress,
            |_| {
                cache::unpack(Phase::Restore, archive, &root)?;
                Ok(((), archive.display().to_string()))
            },
        )?;
        built = fs::read(archive.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    } else if let (Some(tool), Some(apt)) = (tool, &apt) {
        base_from_cache = timed(
            Phase::Base,
            &format!("{} {} from {}", tool, plan.suite, plan.mirror),
            &mut progress,
            |p| base(&plan, tool, cache.as_ref(), &root, &target.kept_mounts, p),
        )?;
        built.bootstrap = Some(tool.to_string());
        built.packages = timed(
            Phase::Packages,
            &format!(
                "{} packages at their recorded versions",
                plan.packages.len()
            ),
            &mut progress,
            |p| packages(&plan, &root, apt, cache.as_ref(), p),
        )?;
        built.overlay = timed(
            Phase::Overlay,
            &format!("{} configuration steps", plan.overlay.len()),
            &mut progress,
            |_| {
                let r = apply_overlay(
                    &root,
                    &plan.overlay,
                    &OverlayContext {
                        blobs: &file.blobs,
                        identity: None,
                    },
                )?;
                let detail = format!(
                    "{} files, {} links, {} accounts, {} units, {} pruned",
                    r.files_written,
                    r.links_written,
                    r.accounts_written,
                    r.units_changed,
                    r.pruned.len()
                );
                Ok((r, detail))
            },
        )?;
        if has_kernels(&root) && root.join("usr/sbin/update-initramfs").exists() {
            // The kernel's package made the initramfs before the configuration was laid:
            // made again, it holds the profile's fstab, mdadm.conf and initramfs settings,
            // and recovery keeps it when nothing it holds changes on the target.
            timed(
                Phase::Initramfs,
                "the initramfs, made again with the configuration",
                &mut progress,
                |p| {
                    let mut c = cmd::in_root_mounted(&root, None, "update-initramfs");
                    c.args(["-u", "-k", "all"]);
                    let lines = &mut |l: &str| p(Progress::Output(Phase::Initramfs, l.to_string()));
                    cmd::run(Phase::Initramfs, &mut c, LONG, lines)?;
                    Ok(((), "update-initramfs -u -k all".to_string()))
                },
            )?;
        }
        built.warnings.clone_from(&plan.warnings);
        built
            .warnings
            .extend(built.overlay.warnings.iter().cloned());
        if let Some(archive) = &tree_archive {
            timed(
                Phase::Save,
                "keeping the tree in the cache",
                &mut progress,
                |_| {
                    let size = cache::pack(Phase::Save, &root, archive)?;
                    // One finished tree per host: the one of its latest profile.
                    cache::forget_other_trees(archive, &format!("{}-", sanitize(&plan.hostname)));
                    let meta = archive.with_extension("json");
                    let json = serde_json::to_vec_pretty(&built).unwrap_or_default();
                    fs::write(&meta, json)
                        .map_err(|e| SystemError::io("cannot write", &meta, e))?;
                    Ok(((), format!("{} MiB", size / (1024 * 1024))))
                },
            )?;
        }
    }

    let secrets = timed(
        Phase::Secrets,
        &format!("{} secrets", plan.secrets.len()),
        &mut progress,
        |_| {
            let r = apply_overlay(
                &root,
                &plan.secrets,
                &OverlayContext {
                    blobs: &file.blobs,
                    identity,
                },
            )?;
            let detail = format!(
                "{} restored, {} not restored",
                r.secrets_restored,
                r.secrets_skipped.len()
            );
            Ok((r, detail))
        },
    )?;

    if let Some(archive) = &target.archive {
        timed(
            Phase::Pack,
            &format!("packing {}", archive.display()),
            &mut progress,
            |_| {
                let size = cache::pack(Phase::Pack, &root, archive)?;
                Ok(((), format!("{} MiB", size / (1024 * 1024))))
            },
        )?;
    }
    target.finish();

    let mut warnings = if cached_tree.is_some() {
        built.warnings.clone()
    } else {
        let mut w = plan.warnings.clone();
        w.extend(built.overlay.warnings.iter().cloned());
        w
    };
    warnings.extend(secrets.warnings.iter().cloned());
    if identity.is_none() && !secrets.secrets_skipped.is_empty() {
        warnings.push(format!(
            "{} secrets not restored: no recovery identity given ({})",
            secrets.secrets_skipped.len(),
            secrets.secrets_skipped.join(", ")
        ));
    }
    Ok(BuildReport {
        format: REPORT_FORMAT,
        profile: plan.profile.clone(),
        hostname: plan.hostname.clone(),
        release: format!("{} {}", plan.distribution, plan.suite),
        arch: plan.arch.clone(),
        mirror: plan.mirror.clone(),
        bootstrap: built.bootstrap.clone(),
        output: opts.output.display().to_string(),
        base_from_cache,
        tree_from_cache: cached_tree.is_some(),
        phases,
        packages: built.packages,
        overlay: built.overlay,
        secrets,
        warnings,
        total_seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    })
}

/// Refuses to start what cannot finish: not root, no tar, output in the way. (The tools a
/// build from packages needs are required once it is clear the cache cannot serve.)
fn preflight(opts: &BuildOptions) -> Result<(), SystemError> {
    let uid = cmd::euid();
    if uid != "0" {
        return Err(SystemError::NotRoot { uid });
    }
    cmd::require("tar", "tar")?;
    let out = &opts.output;
    if ArchiveKind::of(out).is_some() {
        if fs::symlink_metadata(out).is_ok() {
            return Err(SystemError::OutputExists(out.clone()));
        }
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(SystemError::Other(format!(
                "the directory of {} does not exist\nhint: create it first",
                out.display()
            )));
        }
    } else if opts.onto_mounts {
        if !out.is_dir() {
            return Err(SystemError::Other(format!(
                "{} is not a directory\nhint: give the target root the recovered disks are \
                 mounted on",
                out.display()
            )));
        }
        if !holds_only_mounts(out) {
            return Err(SystemError::OutputExists(out.clone()));
        }
    } else if let Ok(entries) = fs::read_dir(out) {
        if entries.flatten().any(|e| e.file_name() != "lost+found") {
            return Err(SystemError::OutputExists(out.clone()));
        }
    } else if out.exists() {
        return Err(SystemError::OutputExists(out.clone()));
    }
    Ok(())
}

/// True when the tree has a kernel in `/boot`.
fn has_kernels(root: &Path) -> bool {
    fs::read_dir(root.join("boot")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
    })
}

/// True when `dir` holds nothing but `lost+found` and directories other filesystems are
/// mounted on, which in turn hold nothing else: a freshly made target.
pub fn holds_only_mounts(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(here) = fs::metadata(dir) else {
        return false;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        if e.file_name() == "lost+found" {
            return true;
        }
        let path = e.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                // A directory on the same filesystem may only lead to mountpoints.
                let mounted = m.dev() != here.dev();
                (mounted || fs::read_dir(&path).is_ok()) && holds_only_mounts(&path)
            }
            _ => false,
        }
    })
}

/// Empties a recovered system's root of what an interrupted build onto it left: everything
/// but `lost+found` and the directories other filesystems are mounted on, whose contents are
/// cleared the same way. The filesystems themselves stay mounted.
pub fn clear_target_root(root: &Path) -> Result<(), SystemError> {
    use std::os::unix::fs::MetadataExt;
    fn clear(dir: &Path) -> Result<(), SystemError> {
        let here = fs::metadata(dir).map_err(|e| SystemError::io("cannot read", dir, e))?;
        for e in fs::read_dir(dir).map_err(|e| SystemError::io("cannot read", dir, e))? {
            let e = e.map_err(|e| SystemError::io("cannot read", dir, e))?;
            let path = e.path();
            if e.file_name() == "lost+found" {
                continue;
            }
            let m = fs::symlink_metadata(&path)
                .map_err(|e| SystemError::io("cannot read", &path, e))?;
            if !m.is_dir() {
                fs::remove_file(&path).map_err(|e| SystemError::io("cannot remove", &path, e))?;
                continue;
            }
            clear(&path)?;
            // A directory of this filesystem goes, unless another filesystem is mounted on
            // it or below it.
            if m.dev() == here.dev() && mounts::mounts_under(&path).is_empty() {
                fs::remove_dir(&path).map_err(|e| SystemError::io("cannot remove", &path, e))?;
            }
        }
        Ok(())
    }
    clear(root)
}

fn choose_tool(b: Bootstrap) -> Result<&'static str, SystemError> {
    match b {
        Bootstrap::Auto if cmd::which("mmdebstrap").is_some() => Ok("mmdebstrap"),
        Bootstrap::Auto | Bootstrap::Debootstrap => {
            cmd::require("debootstrap", "debootstrap")?;
            Ok("debootstrap")
        }
        Bootstrap::Mmdebstrap => {
            cmd::require("mmdebstrap", "mmdebstrap")?;
            Ok("mmdebstrap")
        }
    }
}

fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if t.is_empty() {
        "host".into()
    } else {
        t
    }
}

/// Where the tree is built: the output directory itself, or a working directory next to the
/// output tarball. Removed on failure when the build made it.
struct Target {
    root: PathBuf,
    archive: Option<PathBuf>,
    /// Removed when dropped: the working directory, or an output directory the build made
    /// (until the build succeeds).
    guard: Option<WorkDir>,
    keep_on_success: bool,
    /// Mounts that were there before the build (a recovered system's filesystems): they stay.
    kept_mounts: Vec<PathBuf>,
}

impl Target {
    fn prepare(output: &Path) -> Result<Target, SystemError> {
        if ArchiveKind::of(output).is_some() {
            let parent = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dir = tempfile::Builder::new()
                .prefix(".keel-tree-")
                .tempdir_in(parent)
                .map_err(|e| SystemError::io("cannot create a directory in", parent, e))?
                .keep();
            return Ok(Target {
                root: dir.join("root"),
                archive: Some(output.to_path_buf()),
                guard: Some(WorkDir(dir)),
                keep_on_success: false,
                kept_mounts: Vec::new(),
            });
        }
        let made = !output.exists();
        fs::create_dir_all(output).map_err(|e| SystemError::io("cannot create", output, e))?;
        let root = output
            .canonicalize()
            .map_err(|e| SystemError::io("cannot open", output, e))?;
        Ok(Target {
            guard: made.then(|| WorkDir(root.clone())),
            kept_mounts: mounts::mounts_under(&root),
            root,
            archive: None,
            keep_on_success: true,
        })
    }

    /// The build succeeded: keep the output directory; remove a working directory.
    fn finish(mut self) {
        if self.keep_on_success {
            if let Some(g) = self.guard.take() {
                std::mem::forget(g);
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // A failed build: nothing it mounted must stay mounted inside the output.
        mounts::unmount_under_except(&self.root, &self.kept_mounts);
    }
}

// ------------------------------------------------------------------ base

/// Makes the base system in `root` (from the cache when it holds one); true when it came
/// from the cache.
fn base(
    plan: &SystemPlan,
    tool: &str,
    cache: Option<&Cache>,
    root: &Path,
    kept_mounts: &[PathBuf],
    progress: &mut dyn FnMut(Progress),
) -> Result<(bool, String), SystemError> {
    let base_key_text = plan
        .keys
        .iter()
        .filter(|k| {
            plan.sources
                .iter()
                .any(|s| s.uri == plan.mirror && s.signed_by.as_deref() == Some(&k.path))
        })
        .map(|k| k.hash.to_hex())
        .collect::<Vec<_>>()
        .join(",");
    let key = cache::key(&[
        tool,
        &plan.suite,
        &plan.arch,
        &plan.mirror,
        &plan.components.join(","),
        &base_key_text,
    ]);
    let name = format!("{}-{}-{key}", sanitize(&plan.suite), sanitize(&plan.arch));
    let archive = cache.map(|c| c.base(&name)).transpose()?;
    if let Some(a) = archive.as_ref().filter(|a| a.is_file()) {
        cache::unpack(Phase::Base, a, root)?;
        return Ok((true, format!("from the cache ({})", a.display())));
    }
    fs::create_dir_all(root).map_err(|e| SystemError::io("cannot create", root, e))?;
    let debs = cache.map(Cache::debs).transpose()?;
    let keys =
        tempfile::tempdir().map_err(|e| SystemError::io("cannot create", Path::new("/tmp"), e))?;
    let mut c = match tool {
        "mmdebstrap" => mmdebstrap(plan, root, debs.as_deref(), keys.path())?,
        _ => debootstrap(plan, root, debs.as_deref(), keys.path())?,
    };
    let lines = &mut |l: &str| progress(Progress::Output(Phase::Base, l.to_string()));
    let r = cmd::run(Phase::Base, &mut c, LONG, lines);
    mounts::unmount_under_except(root, kept_mounts);
    r.map_err(|e| match e {
        SystemError::Command {
            phase,
            command,
            status,
            output,
        } => SystemError::Command {
            phase,
            command,
            status,
            output: format!(
                "{output}\nhint: check that {} is reachable and carries {}, or give another \
                 archive with --mirror",
                plan.mirror, plan.suite
            ),
        },
        other => other,
    })?;
    remove_debs(root);
    if let Some(a) = &archive {
        cache::pack(Phase::Base, root, a)?;
    }
    Ok((false, format!("{tool} {}", plan.suite)))
}

fn debootstrap(
    plan: &SystemPlan,
    root: &Path,
    debs: Option<&Path>,
    keys: &Path,
) -> Result<std::process::Command, SystemError> {
    let mut c = cmd::host_unshared("debootstrap");
    c.arg("--variant=minbase")
        .arg(format!("--arch={}", plan.arch))
        .arg(format!("--components={}", plan.components.join(",")));
    // The base archive's own key when the profile names one and it is a binary keyring
    // (debootstrap's gpgv reads no armoured keys); debootstrap's default keyring otherwise.
    let base_key = plan
        .sources
        .iter()
        .find(|s| s.uri == plan.mirror && s.suite == plan.suite)
        .and_then(|s| s.signed_by.as_ref())
        .and_then(|path| plan.keys.iter().find(|k| &k.path == path));
    if let Some(k) = base_key.filter(|k| k.path.ends_with(".gpg")) {
        if let Some(content) = &k.content {
            let p = keys.join("base.gpg");
            fs::write(&p, content).map_err(|e| SystemError::io("cannot write", &p, e))?;
            c.arg(format!("--keyring={}", p.display()));
        }
    }
    if let Some(d) = debs {
        c.arg(format!("--cache-dir={}", d.display()));
    }
    c.arg(&plan.suite).arg(root).arg(&plan.mirror);
    Ok(c)
}

fn mmdebstrap(
    plan: &SystemPlan,
    root: &Path,
    debs: Option<&Path>,
    keys: &Path,
) -> Result<std::process::Command, SystemError> {
    let mut c = cmd::host_unshared("mmdebstrap");
    c.arg("--variant=minbase")
        .arg("--mode=root")
        .arg(format!("--architectures={}", plan.arch))
        .arg(format!("--components={}", plan.components.join(",")))
        // Emptiness is checked before the build, which may go onto a recovered system's
        // root (lost+found, mountpoints).
        .arg("--skip=check/empty");
    let trusted = keys.join("trusted.gpg.d");
    fs::create_dir_all(&trusted).map_err(|e| SystemError::io("cannot create", &trusted, e))?;
    let mut any = false;
    for (i, k) in plan.keys.iter().enumerate() {
        if let Some(content) = &k.content {
            let base = k.path.rsplit('/').next().unwrap_or("key");
            let ext = if base.ends_with(".asc") { "asc" } else { "gpg" };
            let p = trusted.join(format!("{i:02}.{ext}"));
            fs::write(&p, content).map_err(|e| SystemError::io("cannot write", &p, e))?;
            any = true;
        }
    }
    if any {
        c.arg(format!("--keyring={}", trusted.display()));
    }
    if let Some(d) = debs {
        let d = d.display();
        c.arg("--skip=download/empty")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/partial")
            .arg(format!("--setup-hook=sync-in {d} /var/cache/apt/archives/"))
            .arg(format!(
                "--customize-hook=sync-out /var/cache/apt/archives {d}"
            ));
    }
    c.arg(&plan.suite).arg(root).arg(&plan.mirror);
    Ok(c)
}

/// Downloaded packages are not part of the system.
fn remove_debs(root: &Path) {
    if let Ok(entries) = fs::read_dir(root.join("var/cache/apt/archives")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

// ------------------------------------------------------------------ packages

/// A file in the tree replaced for the duration of the packages phase and put back after.
struct Replaced {
    path: PathBuf,
    original: Option<Original>,
}

enum Original {
    File(Vec<u8>, u32),
    Link(PathBuf),
}

impl Replaced {
    fn new(path: PathBuf, content: &[u8], mode: u32) -> Result<Replaced, SystemError> {
        use std::os::unix::fs::PermissionsExt;
        let original = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => fs::read_link(&path).ok().map(Original::Link),
            Ok(m) if m.is_file() => fs::read(&path)
                .ok()
                .map(|d| Original::File(d, m.permissions().mode() & 0o7777)),
            _ => None,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| SystemError::io("cannot create", parent, e))?;
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, content).map_err(|e| SystemError::io("cannot write", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| SystemError::io("cannot set the mode of", &path, e))?;
        Ok(Replaced { path, original })
    }
}

impl Drop for Replaced {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::remove_file(&self.path);
        match &self.original {
            Some(Original::File(data, mode)) => {
                let _ = fs::write(&self.path, data);
                let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(*mode));
            }
            Some(Original::Link(target)) => {
                let _ = std::os::unix::fs::symlink(target, &self.path);
            }
            None => {}
        }
    }
}

fn packages(
    plan: &SystemPlan,
    root: &Path,
    state: &AptState,
    cache: Option<&Cache>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(PackageReport, String), SystemError> {
    let build_dir = root.join(BUILD_DIR);
    let _build_dir = WorkDir(build_dir.clone());
    let seen = Path::new("/").join(BUILD_DIR);
    let conf = apt::write_config(
        &build_dir,
        &seen,
        plan,
        Some(&root.join("etc/apt/trusted.gpg.d")),
        None,
    )?;
    let conf_inside = seen.join(conf.file_name().unwrap_or_default());
    copy_lists(&state.lists(), &root.join("var/lib/apt/lists"));

    // Name resolution for apt, and no service starts.
    let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    let _resolv = Replaced::new(root.join("etc/resolv.conf"), &host_resolv, 0o644)?;
    let _policy = Replaced::new(
        root.join("usr/sbin/policy-rc.d"),
        b"#!/bin/sh\nexit 101\n",
        0o755,
    )?;
    // The shared package cache, mounted for each command only.
    let debs = cache.map(Cache::debs).transpose()?;

    let mut lines = |l: &str| progress(Progress::Output(Phase::Packages, l.to_string()));
    let apt_cmd = |program: &str| {
        let mut c = cmd::in_root_mounted(root, debs.as_deref(), program);
        c.env("APT_CONFIG", &conf_inside);
        c
    };
    for a in &plan.foreign_archs {
        cmd::run(
            Phase::Packages,
            apt_cmd("dpkg").args(["--add-architecture", a]),
            LONG,
            &mut lines,
        )?;
    }
    cmd::run(
        Phase::Packages,
        apt_cmd("apt-get").args(["-q", "update"]),
        LONG,
        &mut lines,
    )?;
    let before = dpkg::installed(root)?;
    cmd::run(
        Phase::Packages,
        apt_cmd("apt-get")
            .args([
                "-q",
                "-y",
                "install",
                "--no-install-recommends",
                "--allow-downgrades",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
            ])
            .args(plan.specs()),
        LONG,
        &mut lines,
    )?;

    // What the base system has that the profiled system did not.
    let wanted: BTreeSet<(String, String)> = plan
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.arch.clone()))
        .collect();
    let after = dpkg::installed(root)?;
    let extra: Vec<String> = after
        .iter()
        .filter(|p| !wanted.contains(&(p.name.clone(), p.arch.clone())))
        .map(|p| format!("{}:{}", p.name, p.arch))
        .collect();
    let mut warnings = Vec::new();
    if !extra.is_empty() {
        // dpkg, not apt: apt would remove what depends on them, dpkg refuses instead.
        let _ = cmd::run(
            Phase::Packages,
            apt_cmd("dpkg").arg("--purge").args(&extra),
            LONG,
            &mut lines,
        );
    }
    let finished = dpkg::installed(root)?;
    let names: BTreeSet<String> = finished
        .iter()
        .map(|p| format!("{}:{}", p.name, p.arch))
        .collect();
    let purged: Vec<String> = extra
        .iter()
        .filter(|e| !names.contains(*e))
        .cloned()
        .collect();
    for e in extra.iter().filter(|e| names.contains(*e)) {
        warnings.push(format!(
            "{e} is not installed on the profiled system but other packages here need it: kept"
        ));
    }
    let auto: Vec<String> = plan
        .packages
        .iter()
        .filter(|p| p.auto)
        .map(|p| p.query(&plan.arch))
        .collect();
    for chunk in auto.chunks(500) {
        cmd::run(
            Phase::Packages,
            apt_cmd("apt-mark").arg("auto").args(chunk),
            LONG,
            &mut lines,
        )?;
    }
    let held: Vec<String> = plan
        .packages
        .iter()
        .filter(|p| p.hold)
        .map(|p| p.query(&plan.arch))
        .collect();
    if !held.is_empty() {
        cmd::run(
            Phase::Packages,
            apt_cmd("apt-mark").arg("hold").args(&held),
            LONG,
            &mut lines,
        )?;
    }
    if cache.is_none() {
        cmd::run(
            Phase::Packages,
            apt_cmd("apt-get").arg("clean"),
            LONG,
            &mut lines,
        )?;
    }
    for w in &warnings {
        progress(Progress::Note(w.clone()));
    }
    let added = finished.len().saturating_sub(before.len());
    let report = PackageReport {
        pinned: plan.packages.len(),
        installed: finished.len(),
        added,
        newer: plan
            .newer
            .iter()
            .map(|(name, recorded, installed)| NewerPackage {
                name: name.clone(),
                recorded: recorded.clone(),
                installed: installed.clone(),
            })
            .collect(),
        purged,
        marked_auto: auto.len(),
        held: held.len(),
    };
    let detail = format!(
        "{} installed ({} added to the base), {} purged",
        report.installed,
        report.added,
        report.purged.len()
    );
    Ok((report, detail))
}

/// Copies the package lists the check downloaded, so the tree's apt starts with them.
fn copy_lists(from: &Path, to: &Path) {
    let _ = fs::create_dir_all(to);
    if let Ok(entries) = fs::read_dir(from) {
        for e in entries.flatten() {
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_file()) && name != "lock" {
                let _ = fs::copy(e.path(), to.join(&name));
            }
        }
    }
}
