//! Installing a system tree onto the recovered disks and making it boot there.
//!
//! After `keel recover apply` has partitioned, formatted and mounted the target under a
//! target root, [`install`] goes on in phases, each timed and reported:
//!
//! 1. **laydown** — the tree (a directory or a tarball) is copied onto the target root with
//!    numeric owners, modes and extended attributes (file capabilities).
//! 2. **mounts** — `/etc/fstab`, `/etc/crypttab` and `mdadm.conf` are checked against the
//!    filesystems, LUKS volumes and arrays on the target, by UUID: a reference the target
//!    lacks is rewritten to the UUID of what is mounted there, a device path becomes its
//!    UUID, a mounted filesystem fstab lacks is added.
//! 3. **network** — interface names and MAC addresses in the network configuration are
//!    mapped from the profile's NICs to the target's ([`map_nics`]).
//! 4. **initramfs** — rebuilt for every kernel, in the target.
//! 5. **bootloader** — GRUB for the target's firmware on the boot disks, and `grub.cfg`.
//!
//! Commands run in the target with `chroot`, in a private mount namespace holding `/proc`,
//! `/sys` and a `/dev` of its own: a copy of the host's device nodes plus the
//! `/dev/disk/by-uuid` links udev would make for the target's filesystems (without them
//! `update-grub` writes device paths such as `/dev/loop0p2` into `grub.cfg`). Nothing of it
//! outlives the command, and nothing is left mounted however keel ends.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_profile::Profile;
use serde::Serialize;

use crate::build::{Phase, Progress};
use crate::cache::{self, ArchiveKind};
use crate::cmd;
use crate::error::SystemError;
use crate::mounts::unescape_mountinfo;
use crate::nic::{apply_nic_map, map_nics, NicMapping, TargetNic};

/// The firmware the target machine boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// Legacy BIOS: GRUB in the MBR and the BIOS boot partition.
    Bios,
    /// UEFI: GRUB on the EFI system partition, at the removable-media path.
    Uefi,
}

impl Firmware {
    /// The firmware of the machine whose `/sys` is under `host_root`.
    pub fn detect(host_root: &Path) -> Firmware {
        if host_root.join("sys/firmware/efi").is_dir() {
            Firmware::Uefi
        } else {
            Firmware::Bios
        }
    }

    /// `bios` or `uefi`.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// How to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the target's filesystems are mounted.
    pub target_root: PathBuf,
    /// The tree to lay down (a directory or a tarball); `None` when it is there already.
    pub tree: Option<PathBuf>,
    /// The target machine's firmware.
    pub firmware: Firmware,
    /// Disks to put GRUB on; empty for the disks holding `/boot` (or `/`).
    pub boot_disks: Vec<PathBuf>,
    /// Explicit NIC mappings (`OLD`, `NEW` name or MAC).
    pub nic_map: Vec<(String, String)>,
    /// The target machine's NICs, for the automatic mapping ([`crate::target_nics`]).
    pub target_nics: Vec<TargetNic>,
    /// Make the initramfs again even when the tree's still holds everything it should.
    pub rebuild_initramfs: bool,
}

impl InstallOptions {
    /// Defaults for installing onto `target_root`: the firmware of this machine, boot disks
    /// found from the mounts, this machine's NICs.
    pub fn new(target_root: impl Into<PathBuf>) -> InstallOptions {
        InstallOptions {
            target_root: target_root.into(),
            tree: None,
            firmware: Firmware::detect(Path::new("/")),
            boot_disks: Vec::new(),
            nic_map: Vec::new(),
            target_nics: crate::nic::target_nics(Path::new("/sys")),
            rebuild_initramfs: false,
        }
    }
}

/// One phase of an install.
#[derive(Debug, Clone, Serialize)]
pub struct InstallPhase {
    /// The phase.
    pub phase: Phase,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// What it did.
    pub detail: String,
}

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// The phases, in order.
    pub phases: Vec<InstallPhase>,
    /// Total wall-clock seconds.
    pub total_seconds: f64,
    /// The firmware GRUB was installed for.
    pub firmware: Firmware,
    /// The disks GRUB was installed on.
    pub boot_disks: Vec<String>,
    /// What was changed in fstab, crypttab and mdadm.conf.
    pub mount_changes: Vec<String>,
    /// How the profile's NICs were mapped.
    pub nics: Vec<NicMapping>,
    /// Network configuration files rewritten.
    pub network_files: Vec<String>,
    /// Kernels whose initramfs was rebuilt.
    pub kernels: Vec<String>,
    /// What may need a look.
    pub warnings: Vec<String>,
}

/// A block device on the target, as `blkid` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BlockInfo {
    pub dev: String,
    pub uuid: Option<String>,
    pub partuuid: Option<String>,
    pub label: Option<String>,
    pub fstype: Option<String>,
}

/// A filesystem mounted under the target root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetMount {
    /// Mountpoint inside the target (`/`, `/srv`).
    pub mountpoint: String,
    pub fstype: String,
    pub block: BlockInfo,
}

const LONG: Duration = Duration::from_secs(1800);

/// The body of one phase: given the report and the progress callback, a summary.
type PhaseBody<'a> =
    dyn FnMut(&mut InstallReport, &mut dyn FnMut(Progress)) -> Result<String, SystemError> + 'a;

/// A rewrite of one file: its text and the warnings so far, to the new text and the changes.
type Rewrite<'a> = dyn FnMut(&str, &mut Vec<String>) -> (String, Vec<String>) + 'a;

/// Lays `opts.tree` onto the mounted target and makes it boot on this machine: fstab,
/// crypttab and mdadm.conf by UUID, the network configuration for the target's NICs, the
/// initramfs, GRUB.
pub fn install(
    profile: &Profile,
    opts: &InstallOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<InstallReport, SystemError> {
    let euid = cmd::euid();
    if euid != "0" {
        return Err(SystemError::NotRoot { uid: euid });
    }
    let root = fs::canonicalize(&opts.target_root)
        .map_err(|e| SystemError::io("cannot read", &opts.target_root, e))?;
    if root == Path::new("/") {
        return Err(SystemError::Other(
            "the target root is / (this machine's own root)\nhint: give the directory keel \
             recover apply mounted the target under (--target-root)"
                .into(),
        ));
    }
    let mounts = target_mounts(&root);
    if !mounts.iter().any(|m| m.mountpoint == "/") {
        return Err(SystemError::Other(format!(
            "nothing is mounted on {}\nhint: run keel recover apply PLAN --yes --keep-mounted \
             first, and give the same --target-root",
            root.display()
        )));
    }
    let started = Instant::now();
    let mut report = InstallReport {
        phases: Vec::new(),
        total_seconds: 0.0,
        firmware: opts.firmware,
        boot_disks: Vec::new(),
        mount_changes: Vec::new(),
        nics: Vec::new(),
        network_files: Vec::new(),
        kernels: Vec::new(),
        warnings: Vec::new(),
    };
    let phase = |report: &mut InstallReport,
                 p: Phase,
                 what: &str,
                 progress: &mut dyn FnMut(Progress),
                 f: &mut PhaseBody<'_>|
     -> Result<(), SystemError> {
        progress(Progress::Started(p, what.to_string()));
        let t = Instant::now();
        let detail = f(report, progress)?;
        let took = t.elapsed();
        progress(Progress::Finished(p, took, detail.clone()));
        report.phases.push(InstallPhase {
            phase: p,
            seconds: took.as_secs_f64(),
            detail,
        });
        Ok(())
    };

    if let Some(tree) = &opts.tree {
        phase(
            &mut report,
            Phase::Laydown,
            &format!("laying {} onto {}", tree.display(), root.display()),
            progress,
            &mut |_, _| laydown(tree, &root).map(|()| "tree laid down".to_string()),
        )?;
    }
    if !root.join("etc").is_dir() || !root.join("usr").is_dir() {
        return Err(SystemError::Other(format!(
            "{} holds no system (no /etc, /usr)\nhint: give the tree with --tree",
            root.display()
        )));
    }

    // Everything on the target disks, for UUID references and the by-uuid links.
    let blocks = target_blocks(&mounts);
    phase(
        &mut report,
        Phase::Mounts,
        "fstab, crypttab and mdadm.conf by UUID",
        progress,
        &mut |report, _| {
            let changes = fix_storage_files(&root, profile, &mounts, &blocks, report)?;
            let n = changes.len();
            report.mount_changes = changes;
            Ok(if n == 0 {
                "fstab matches the target's filesystems".into()
            } else {
                format!("{n} change{}", if n == 1 { "" } else { "s" })
            })
        },
    )?;
    phase(
        &mut report,
        Phase::Network,
        "interface names and MAC addresses for this machine's NICs",
        progress,
        &mut |report, _| {
            let maps = map_nics(&profile.hardware.nics, &opts.target_nics, &opts.nic_map);
            let files = apply_nic_map(&root, &maps)?;
            let renamed: Vec<String> = maps
                .iter()
                .filter(|m| m.old_name != m.new_name || m.pin)
                .map(|m| {
                    if m.pin {
                        format!(
                            "{} pinned on {}",
                            m.new_name,
                            m.new_mac.as_deref().unwrap_or("?")
                        )
                    } else {
                        format!("{} → {}", m.old_name, m.new_name)
                    }
                })
                .collect();
            report.nics = maps;
            report.network_files.clone_from(&files);
            Ok(if renamed.is_empty() {
                "interface names kept".into()
            } else {
                format!(
                    "{} ({} file{})",
                    renamed.join(", "),
                    files.len(),
                    if files.len() == 1 { "" } else { "s" }
                )
            })
        },
    )?;
    let links: Vec<(String, String)> = blocks
        .iter()
        .filter_map(|b| Some((b.uuid.clone()?, b.dev.clone())))
        .collect();
    phase(
        &mut report,
        Phase::Initramfs,
        "rebuilding the initramfs for every kernel",
        progress,
        &mut |report, progress| {
            let kernels = kernels(&root);
            if kernels.is_empty() {
                report
                    .warnings
                    .push("no kernel in /boot: the system cannot boot on its own".into());
                return Ok("no kernel installed".into());
            }
            if !opts.rebuild_initramfs {
                if let Some(why) = initramfs_current(&root, &kernels, report) {
                    report.kernels.clone_from(&kernels);
                    return Ok(format!(
                        "kept the tree's for kernel {}: {why}",
                        kernels.join(", ")
                    ));
                }
            }
            if root.join("usr/sbin/update-initramfs").exists() {
                let mut c = in_target(&root, &links, &["update-initramfs", "-u", "-k", "all"]);
                cmd::run(Phase::Initramfs, &mut c, LONG, &mut |l| {
                    progress(Progress::Output(Phase::Initramfs, l.to_string()));
                })?;
            } else if root.join("usr/bin/dracut").exists() {
                let mut c = in_target(&root, &links, &["dracut", "--regenerate-all", "--force"]);
                cmd::run(Phase::Initramfs, &mut c, LONG, &mut |l| {
                    progress(Progress::Output(Phase::Initramfs, l.to_string()));
                })?;
            } else {
                report.warnings.push(
                    "neither update-initramfs nor dracut in the tree: the initramfs was not rebuilt"
                        .into(),
                );
            }
            report.kernels.clone_from(&kernels);
            Ok(format!("kernel {}", kernels.join(", ")))
        },
    )?;
    phase(
        &mut report,
        Phase::Bootloader,
        &format!("GRUB for {}", opts.firmware.as_str()),
        progress,
        &mut |report, progress| {
            let disks = if opts.boot_disks.is_empty() {
                boot_disks(&mounts)
            } else {
                opts.boot_disks
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect()
            };
            if disks.is_empty() && opts.firmware == Firmware::Bios {
                return Err(SystemError::Other(
                    "cannot tell which disk holds /boot or /\nhint: name it with --boot-disk"
                        .into(),
                ));
            }
            if let Some(w) = bootloader(&root, opts.firmware, &disks, &links, progress)? {
                report.warnings.push(w);
            }
            report.boot_disks.clone_from(&disks);
            Ok(format!(
                "grub-install on {}, grub.cfg by UUID",
                if disks.is_empty() {
                    "the EFI system partition".to_string()
                } else {
                    disks.join(", ")
                }
            ))
        },
    )?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl InstallReport {
    /// Moves the differences this install made on purpose (interfaces renamed for this
    /// machine's NICs, fstab, crypttab and mdadm.conf fixed for its disks) from a verify's
    /// unexpected differences to its expected ones, with the reason.
    pub fn explain(&self, v: &mut crate::VerifyReport) {
        let names: Vec<&str> = self
            .nics
            .iter()
            .filter(|m| m.old_name != m.new_name)
            .flat_map(|m| [m.old_name.as_str(), m.new_name.as_str()])
            .collect();
        let storage_files: Vec<String> = self
            .mount_changes
            .iter()
            .filter_map(|c| {
                let file = c.split(':').next()?;
                Some(match file {
                    "fstab" => "/etc/fstab".to_string(),
                    "crypttab" => "/etc/crypttab".to_string(),
                    _ => return None,
                })
            })
            .chain(
                self.mount_changes
                    .iter()
                    .any(|c| c.starts_with("mdadm.conf"))
                    .then(|| {
                        [
                            "/etc/mdadm/mdadm.conf".to_string(),
                            "/etc/mdadm.conf".to_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .collect();
        let mut kept = Vec::new();
        for c in std::mem::take(&mut v.unexpected) {
            let iface = c.key.split([' ', '/', ':', '.']).next().unwrap_or_default();
            let reason = if c.section == "network" && names.contains(&iface) {
                Some("interface renamed for this machine's NICs")
            } else if c.section == "files" && self.network_files.contains(&c.key) {
                Some("network configuration rewritten for this machine's NICs")
            } else if (c.section == "files" && storage_files.contains(&c.key))
                || (c.section == "storage" && matches!(c.table.as_str(), "fstab" | "crypttab"))
                    && !self.mount_changes.is_empty()
            {
                Some("rewritten by UUID for this machine's disks")
            } else {
                None
            };
            match reason {
                Some(r) => v.expected.push(crate::Difference {
                    change: c,
                    reason: r.to_string(),
                }),
                None => kept.push(c),
            }
        }
        v.unexpected = kept;
    }
}

// ------------------------------------------------------------------ laydown

/// Copies the tree (a directory or a tarball) onto `root`, keeping numeric owners, modes,
/// times, links and extended attributes (tar with `--numeric-owner --xattrs`, or `cp -a`).
fn laydown(tree: &Path, root: &Path) -> Result<(), SystemError> {
    if ArchiveKind::of(tree).is_some() && tree.is_file() {
        return cache::unpack(Phase::Laydown, tree, root);
    }
    if !tree.join("etc").is_dir() {
        return Err(SystemError::Other(format!(
            "{} is not a system tree (no etc/ in it)\nhint: give the directory or tarball \
             keel recover build-tree wrote",
            tree.display()
        )));
    }
    // cp -a keeps numeric owners, modes, times, hard and symbolic links, and extended
    // attributes (file capabilities, ACLs).
    let mut c = cmd::host("cp");
    c.args(["-a", "--sparse=auto", "--no-target-directory"])
        .arg(tree)
        .arg(root);
    cmd::run_quiet(Phase::Laydown, &mut c, LONG).map(drop)
}

// ------------------------------------------------------------------ the target's devices

/// Filesystems mounted at or below `root`, parents first, mountpoints relative to it.
pub(crate) fn target_mounts(root: &Path) -> Vec<TargetMount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<TargetMount> = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        let Ok(rel) = mp.strip_prefix(root) else {
            continue;
        };
        if !source.starts_with("/dev/") {
            continue;
        }
        let mountpoint = format!("/{}", rel.display());
        let mountpoint = if mountpoint.len() > 1 {
            mountpoint.trim_end_matches('/').to_string()
        } else {
            mountpoint
        };
        // A later mount on the same point hides the earlier one.
        out.retain(|m| m.mountpoint != mountpoint);
        out.push(TargetMount {
            mountpoint,
            fstype: (*fstype).to_string(),
            block: blkid(&unescape_mountinfo(source)),
        });
    }
    out.sort_by_key(|m| m.mountpoint.matches('/').count() - usize::from(m.mountpoint == "/"));
    out
}

/// What `blkid -p` finds on `dev`.
fn blkid(dev: &str) -> BlockInfo {
    let out = Command::new("blkid")
        .env("PATH", cmd::PATH)
        .args(["-p", "-o", "export", dev])
        .stderr(Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_string)
    };
    BlockInfo {
        dev: dev.to_string(),
        uuid: get("UUID"),
        partuuid: get("PART_ENTRY_UUID"),
        label: get("LABEL"),
        fstype: get("TYPE"),
    }
}

/// The kernel's name of a device node (`/dev/loop0p2` → `loop0p2`, `/dev/mapper/x` → `dm-0`).
fn kernel_name(dev: &str) -> Option<String> {
    let real = fs::canonicalize(dev).ok()?;
    Some(real.file_name()?.to_string_lossy().into_owned())
}

/// The whole disks under a block device: a partition's disk, an array's or mapping's
/// members' disks.
fn disks_under(name: &str, depth: usize) -> Vec<String> {
    let sys = Path::new("/sys/class/block").join(name);
    if sys.join("partition").exists() {
        let parent = fs::canonicalize(&sys).ok().and_then(|p| {
            p.parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
        });
        return parent.into_iter().collect();
    }
    let slaves: Vec<String> = fs::read_dir(sys.join("slaves"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if slaves.is_empty() || depth > 8 {
        return vec![name.to_string()];
    }
    let mut out: Vec<String> = slaves
        .iter()
        .flat_map(|s| disks_under(s, depth + 1))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Partitions of a disk, and what is built on them (arrays, mappings), by kernel name.
fn built_on(disk: &str, depth: usize, out: &mut Vec<String>) {
    let sys = Path::new("/sys/class/block").join(disk);
    let mut names: Vec<String> = fs::read_dir(&sys)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for n in names.iter().chain(std::iter::once(&disk.to_string())) {
        if !out.contains(n) {
            out.push(n.clone());
        }
        let holders: Vec<String> =
            fs::read_dir(Path::new("/sys/class/block").join(n).join("holders"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        for h in holders {
            if depth < 8 && !out.contains(&h) {
                built_on(&h, depth + 1, out);
            }
        }
    }
}

/// Every block device on the disks the target is mounted from, with what blkid finds.
fn target_blocks(mounts: &[TargetMount]) -> Vec<BlockInfo> {
    let mut disks: Vec<String> = mounts
        .iter()
        .filter_map(|m| kernel_name(&m.block.dev))
        .flat_map(|n| disks_under(&n, 0))
        .collect();
    disks.sort();
    disks.dedup();
    let mut names = Vec::new();
    for d in &disks {
        built_on(d, 0, &mut names);
    }
    let mut out: Vec<BlockInfo> = names
        .iter()
        .filter_map(|n| {
            let dev = dev_node(n)?;
            let b = blkid(&dev);
            b.fstype.is_some().then_some(b)
        })
        .collect();
    // What is mounted, as mounted, even if sysfs said nothing of it.
    for m in mounts {
        if !out
            .iter()
            .any(|b| b.uuid.is_some() && b.uuid == m.block.uuid)
        {
            out.push(m.block.clone());
        }
    }
    out
}

/// `/dev/NAME`, or for device-mapper devices their `/dev/mapper` name.
fn dev_node(name: &str) -> Option<String> {
    let dm = Path::new("/sys/class/block").join(name).join("dm/name");
    if let Ok(n) = fs::read_to_string(dm) {
        let p = format!("/dev/mapper/{}", n.trim());
        if Path::new(&p).exists() {
            return Some(p);
        }
    }
    let md = Path::new("/dev").join(name);
    md.exists().then(|| md.display().to_string())
}

/// The whole disks holding `/boot` (or `/` when `/boot` is not separate).
fn boot_disks(mounts: &[TargetMount]) -> Vec<String> {
    let boot = mounts
        .iter()
        .find(|m| m.mountpoint == "/boot")
        .or_else(|| mounts.iter().find(|m| m.mountpoint == "/"));
    let Some(b) = boot else { return Vec::new() };
    let Some(name) = kernel_name(&b.block.dev) else {
        return Vec::new();
    };
    disks_under(&name, 0)
        .into_iter()
        .filter_map(|d| dev_node(&d))
        .collect()
}

fn kernels(root: &Path) -> Vec<String> {
    let mut k: Vec<String> = fs::read_dir(root.join("boot"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("vmlinuz-")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    k.sort();
    k
}

// ------------------------------------------------------------------ fstab, crypttab, mdadm

/// A reference to a block device as fstab and crypttab write it, resolved on the target.
fn resolve(spec: &str, blocks: &[BlockInfo]) -> Option<BlockInfo> {
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let found = if let Some(u) = spec.strip_prefix("UUID=") {
        let u = unquote(u).to_ascii_lowercase();
        blocks.iter().find(|b| {
            b.uuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(&u))
        })
    } else if let Some(u) = spec.strip_prefix("PARTUUID=") {
        let u = unquote(u).to_ascii_lowercase();
        blocks.iter().find(|b| {
            b.partuuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(&u))
        })
    } else if let Some(l) = spec.strip_prefix("LABEL=") {
        let l = unquote(l);
        blocks
            .iter()
            .find(|b| b.label.as_deref() == Some(l.as_str()))
    } else {
        None
    };
    found.cloned()
}

/// `/etc/fstab` checked against the target: each line's device must be on the target; a
/// device path or a reference the target lacks becomes the UUID of what the target has
/// there; a mounted filesystem fstab lacks is added. Returns the text and what changed.
pub(crate) fn fix_fstab(
    text: &str,
    profile: &Profile,
    mounts: &[TargetMount],
    blocks: &[BlockInfo],
    warnings: &mut Vec<String>,
) -> (String, Vec<String>) {
    let mut all: Vec<BlockInfo> = blocks.to_vec();
    all.extend(mounts.iter().map(|m| m.block.clone()));
    let blocks = &all[..];
    let mut out = String::new();
    let mut changes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if trimmed.starts_with('#') || fields.len() < 3 {
            out.push_str(line);
            continue;
        }
        let (spec, mp, fstype) = (fields[0], fields[1], fields[2]);
        seen.push(mp.to_string());
        let is_device = spec.starts_with("UUID=")
            || spec.starts_with("PARTUUID=")
            || spec.starts_with("LABEL=")
            || spec.starts_with("/dev/");
        if !is_device {
            out.push_str(line);
            continue;
        }
        if resolve(spec, blocks).is_some() {
            out.push_str(line);
            continue;
        }
        // A device path: the profile knows its UUID.
        let by_profile = spec.starts_with("/dev/").then(|| {
            profile
                .storage
                .filesystems
                .iter()
                .find(|f| f.device == spec)
                .and_then(|f| f.uuid.clone())
        });
        let by_profile = by_profile
            .flatten()
            .filter(|u| resolve(&format!("UUID={u}"), blocks).is_some());
        let by_mount = mounts
            .iter()
            .find(|m| m.mountpoint == mp)
            .and_then(|m| m.block.uuid.clone());
        let Some(uuid) = by_profile.or(by_mount) else {
            if fstype == "swap"
                || fields
                    .get(3)
                    .is_some_and(|o| o.split(',').any(|o| o == "noauto" || o == "nofail"))
            {
                warnings.push(format!(
                    "fstab: {spec} ({mp}) is not on the target: left as is"
                ));
            } else {
                warnings.push(format!(
                    "fstab: {spec} ({mp}) is not on the target: the system may not boot \
                     until it is fixed"
                ));
            }
            out.push_str(line);
            continue;
        };
        let new_spec = format!("UUID={uuid}");
        let lead = &line[..line.len() - trimmed.len()];
        out.push_str(lead);
        out.push_str(&new_spec);
        out.push_str(&trimmed[spec.len()..]);
        changes.push(format!("fstab: {mp}: {spec} → {new_spec}"));
    }
    for m in mounts {
        if seen.iter().any(|s| s == &m.mountpoint) {
            continue;
        }
        let Some(uuid) = &m.block.uuid else { continue };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let (options, pass) = if m.mountpoint == "/" {
            ("errors=remount-ro", 1)
        } else {
            ("defaults", 2)
        };
        let _ = writeln!(
            out,
            "UUID={uuid} {} {} {options} 0 {pass}",
            m.mountpoint, m.fstype
        );
        changes.push(format!("fstab: {} added (UUID={uuid})", m.mountpoint));
    }
    (out, changes)
}

/// `/etc/crypttab`: each volume's device by UUID, as on the target.
pub(crate) fn fix_crypttab(
    text: &str,
    profile: &Profile,
    blocks: &[BlockInfo],
    warnings: &mut Vec<String>,
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut changes = Vec::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if trimmed.starts_with('#') || fields.len() < 2 {
            out.push_str(line);
            continue;
        }
        let (name, spec) = (fields[0], fields[1]);
        if resolve(spec, blocks).is_some() {
            out.push_str(line);
            continue;
        }
        let uuid = profile
            .storage
            .luks
            .iter()
            .find(|l| l.device == spec)
            .map(|l| l.uuid.clone())
            .filter(|u| resolve(&format!("UUID={u}"), blocks).is_some());
        if let Some(u) = uuid {
            let lead = &line[..line.len() - trimmed.len()];
            let pos = trimmed[name.len()..]
                .find(spec)
                .map_or(0, |p| p + name.len());
            let _ = write!(
                out,
                "{lead}{}UUID={u}{}",
                &trimmed[..pos],
                &trimmed[pos + spec.len()..]
            );
            changes.push(format!("crypttab: {name}: {spec} → UUID={u}"));
        } else {
            warnings.push(format!("crypttab: {name}: {spec} is not on the target"));
            out.push_str(line);
        }
    }
    (out, changes)
}

/// `mdadm.conf` with an `ARRAY` line, by UUID, for every array of the profile.
pub(crate) fn fix_mdadm(text: &str, profile: &Profile) -> (String, Vec<String>) {
    let norm = |s: &str| {
        s.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let known: Vec<String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("ARRAY"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("UUID=").or_else(|| w.strip_prefix("uuid=")))
        .map(norm)
        .collect();
    let mut out = text.to_string();
    let mut changes = Vec::new();
    for a in &profile.storage.md_arrays {
        let hex = norm(&a.uuid);
        if hex.len() != 32 || known.contains(&hex) {
            continue;
        }
        let colons = format!(
            "{}:{}:{}:{}",
            &hex[..8],
            &hex[8..16],
            &hex[16..24],
            &hex[24..]
        );
        let dev = format!("/dev/{}", a.name.trim_start_matches("/dev/"));
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let meta = a
            .metadata
            .as_deref()
            .map_or_else(String::new, |m| format!(" metadata={m}"));
        let _ = writeln!(out, "ARRAY {dev}{meta} UUID={colons}");
        changes.push(format!("mdadm.conf: ARRAY {dev} UUID={colons} added"));
    }
    (out, changes)
}

fn fix_storage_files(
    root: &Path,
    profile: &Profile,
    mounts: &[TargetMount],
    blocks: &[BlockInfo],
    report: &mut InstallReport,
) -> Result<Vec<String>, SystemError> {
    let mut changes = Vec::new();
    let mut rewrite = |rel: &str, f: &mut Rewrite<'_>, create: bool| -> Result<(), SystemError> {
        let path = root.join(rel);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) if create => String::new(),
            Err(_) => return Ok(()),
        };
        let (new, c) = f(&text, &mut report.warnings);
        if new != text {
            fs::write(&path, new).map_err(|e| SystemError::io("cannot write", &path, e))?;
        }
        changes.extend(c);
        Ok(())
    };
    rewrite(
        "etc/fstab",
        &mut |t, w| fix_fstab(t, profile, mounts, blocks, w),
        true,
    )?;
    rewrite(
        "etc/crypttab",
        &mut |t, w| fix_crypttab(t, profile, blocks, w),
        false,
    )?;
    if !profile.storage.md_arrays.is_empty() {
        let rel = if root.join("etc/mdadm").is_dir() {
            "etc/mdadm/mdadm.conf"
        } else {
            "etc/mdadm.conf"
        };
        rewrite(rel, &mut |t, _| fix_mdadm(t, profile), true)?;
    }
    Ok(changes)
}

// ------------------------------------------------------------------ commands in the target

/// Sets up the private mounts and runs the command in the target. `$KEEL_LINKS` holds
/// `UUID=DEVICE` pairs for `/dev/disk/by-uuid`.
const IN_TARGET: &str = r#"set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
if [ -d /sys/firmware/efi/efivars ] && [ -d "$root/sys/firmware/efi/efivars" ]; then
    mount -t efivarfs efivarfs "$root/sys/firmware/efi/efivars" 2>/dev/null || true
fi
mount -t tmpfs -o mode=0755 keel-dev "$root/dev"
tar -C /dev --one-file-system -cf - . 2>/dev/null | tar -C "$root/dev" -xpf - 2>/dev/null || true
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts" 2>/dev/null || true
rm -rf "$root/dev/disk"
mkdir -p "$root/dev/disk/by-uuid"
for l in $KEEL_LINKS; do ln -s "${l#*=}" "$root/dev/disk/by-uuid/${l%%=*}"; done
unset KEEL_LINKS
exec chroot "$root" "$@""#;

/// A command run in the target root with /proc, /sys and a private /dev holding the
/// by-uuid links, in a mount namespace of its own.
fn in_target(root: &Path, links: &[(String, String)], args: &[&str]) -> Command {
    let mut c = cmd::host("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        IN_TARGET,
    ])
    .arg("keel-install")
    .arg(root)
    .args(args);
    let pairs: Vec<String> = links
        .iter()
        .filter(|(u, d)| {
            u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !d.contains(char::is_whitespace)
        })
        .map(|(u, d)| format!("{u}={d}"))
        .collect();
    c.env("KEEL_LINKS", pairs.join(" "));
    c
}

fn bootloader(
    root: &Path,
    firmware: Firmware,
    disks: &[String],
    links: &[(String, String)],
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<String>, SystemError> {
    let (platform, package) = match firmware {
        Firmware::Bios => ("i386-pc", "grub-pc"),
        Firmware::Uefi => ("x86_64-efi", "grub-efi-amd64"),
    };
    let mut show = |l: &str| progress(Progress::Output(Phase::Bootloader, l.to_string()));
    let mut warning = None;
    let from_this_machine = !root.join("usr/lib/grub").join(platform).is_dir();
    if from_this_machine {
        // The profiled system booted the other way: GRUB's images for this firmware come
        // from the recovery machine, the configuration from the tree's own grub-mkconfig.
        let here = Path::new("/usr/lib/grub").join(platform);
        if !here.is_dir() || cmd::which("grub-install").is_none() {
            return Err(SystemError::Other(format!(
                "neither the tree nor this machine has GRUB for {} (no /usr/lib/grub/{platform})\n\
                 hint: install {package} on the profiled system and capture again, recover \
                 from the rescue environment (which has GRUB for BIOS and UEFI), or give \
                 --firmware for the firmware the profile's GRUB is for",
                firmware.as_str()
            )));
        }
        let boot = root.join("boot");
        match firmware {
            Firmware::Bios => {
                for d in disks {
                    let mut c = cmd::host("grub-install");
                    c.arg("--target=i386-pc")
                        .arg(format!("--directory={}", here.display()))
                        .arg(format!("--boot-directory={}", boot.display()))
                        .arg(d);
                    cmd::run(Phase::Bootloader, &mut c, LONG, &mut show)?;
                }
            }
            Firmware::Uefi => {
                efi_dir_present(root)?;
                let mut c = cmd::host("grub-install");
                c.arg("--target=x86_64-efi")
                    .arg(format!("--directory={}", here.display()))
                    .arg(format!("--boot-directory={}", boot.display()))
                    .arg(format!(
                        "--efi-directory={}",
                        root.join("boot/efi").display()
                    ))
                    .args(["--removable", "--no-nvram"]);
                cmd::run(Phase::Bootloader, &mut c, LONG, &mut show)?;
            }
        }
        warning = Some(format!(
            "the profiled system has no GRUB for {}: this machine's was installed; install \
             {package} on the recovered system so that updates keep it current",
            firmware.as_str()
        ));
    } else {
        match firmware {
            Firmware::Bios => {
                for d in disks {
                    let mut c = in_target(root, links, &["grub-install", "--target=i386-pc", d]);
                    cmd::run(Phase::Bootloader, &mut c, LONG, &mut show)?;
                }
            }
            Firmware::Uefi => {
                efi_dir_present(root)?;
                let mut c = in_target(
                    root,
                    links,
                    &[
                        "grub-install",
                        "--target=x86_64-efi",
                        "--efi-directory=/boot/efi",
                        "--removable",
                    ],
                );
                cmd::run(Phase::Bootloader, &mut c, LONG, &mut show)?;
            }
        }
    }
    let mut c = if root.join("usr/sbin/update-grub").exists() {
        in_target(root, links, &["update-grub"])
    } else {
        in_target(root, links, &["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
    };
    cmd::run(Phase::Bootloader, &mut c, LONG, &mut show)?;
    let cfg = root.join("boot/grub/grub.cfg");
    let text = fs::read_to_string(&cfg).map_err(|e| SystemError::io("cannot read", &cfg, e))?;
    if let Some(line) = text.lines().find(|l| {
        l.contains("/dev/loop") || (l.contains("root=/dev/") && !l.contains("root=/dev/mapper/"))
    }) {
        return Err(SystemError::Other(format!(
            "grub.cfg names a device path instead of a UUID: {}\nhint: the target's \
             filesystems must have UUIDs (blkid shows them) for the boot entries to find them",
            line.trim()
        )));
    }
    Ok(warning)
}

/// Configuration an initramfs copies: when any of it is newer than the initramfs, the
/// initramfs is out of date.
const INITRAMFS_INPUTS: &[&str] = &[
    "etc/fstab",
    "etc/crypttab",
    "etc/mdadm/mdadm.conf",
    "etc/initramfs-tools",
    "etc/modprobe.d",
    "etc/modules",
    "etc/lvm/lvm.conf",
];

/// Why the tree's initramfs can stay, or `None` when it must be made again: it is generic
/// (initramfs-tools with `MODULES=most`, so every storage and filesystem driver is in it,
/// whatever the hardware), every kernel has one, it was made after the configuration it
/// holds, no encrypted volume needs keys in it, and the install changed nothing it holds.
fn initramfs_current(root: &Path, kernels: &[String], report: &InstallReport) -> Option<String> {
    if !report.mount_changes.is_empty() {
        return None;
    }
    // initramfs.conf, then conf.d in order: the last setting wins.
    let mut conf = fs::read_to_string(root.join("etc/initramfs-tools/initramfs.conf")).ok()?;
    let mut extra: Vec<PathBuf> = fs::read_dir(root.join("etc/initramfs-tools/conf.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    extra.sort();
    for p in extra {
        conf.push('\n');
        conf.push_str(&fs::read_to_string(p).unwrap_or_default());
    }
    let modules = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("MODULES="))
        .next_back()?
        .trim_matches('"');
    if modules != "most" {
        return None;
    }
    let crypttab = fs::read_to_string(root.join("etc/crypttab")).unwrap_or_default();
    if crypttab
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    {
        return None;
    }
    let newest_input = INITRAMFS_INPUTS
        .iter()
        .filter_map(|p| newest_mtime(&root.join(p)))
        .max()?;
    for k in kernels {
        let made = fs::metadata(root.join(format!("boot/initrd.img-{k}")))
            .and_then(|m| m.modified())
            .ok()?;
        if made < newest_input {
            return None;
        }
    }
    Some(
        "generic (MODULES=most), made after the configuration it holds, which the install did \
         not change"
            .into(),
    )
}

/// The newest modification time of the files at or below `path`.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

fn efi_dir_present(root: &Path) -> Result<(), SystemError> {
    if root.join("boot/efi").is_dir() {
        return Ok(());
    }
    Err(SystemError::Other(
        "UEFI needs the EFI system partition mounted on /boot/efi in the target, and nothing \
         is there\nhint: the profile has no EFI system partition: boot the target in BIOS mode \
         (--firmware bios)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_profile::{Filesystem, Luks, MdArray};

    #[test]
    fn the_trees_initramfs_is_kept_only_when_nothing_it_holds_changed() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str, age_s: u64| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
                .unwrap();
        };
        write("etc/initramfs-tools/initramfs.conf", "MODULES=most\n", 100);
        write("etc/fstab", "UUID=x / ext4 defaults 0 1\n", 90);
        write("boot/initrd.img-6.1.0-1-amd64", "initrd", 50);
        let kernels = vec!["6.1.0-1-amd64".to_string()];
        let mut report = InstallReport {
            phases: Vec::new(),
            total_seconds: 0.0,
            firmware: Firmware::Bios,
            boot_disks: Vec::new(),
            mount_changes: Vec::new(),
            nics: Vec::new(),
            network_files: Vec::new(),
            kernels: Vec::new(),
            warnings: Vec::new(),
        };
        assert!(initramfs_current(root, &kernels, &report).is_some());

        // The install changed fstab: made again.
        report.mount_changes.push("fstab: /srv by UUID".into());
        assert!(initramfs_current(root, &kernels, &report).is_none());
        report.mount_changes.clear();

        // Configuration newer than the initramfs: made again.
        write("etc/mdadm/mdadm.conf", "ARRAY /dev/md0 UUID=x\n", 10);
        assert!(initramfs_current(root, &kernels, &report).is_none());
        write("boot/initrd.img-6.1.0-1-amd64", "initrd", 5);
        assert!(initramfs_current(root, &kernels, &report).is_some());

        // Host-specific modules, set in conf.d: made again.
        write("etc/initramfs-tools/conf.d/modules", "MODULES=dep\n", 200);
        assert!(initramfs_current(root, &kernels, &report).is_none());
        fs::remove_file(root.join("etc/initramfs-tools/conf.d/modules")).unwrap();

        // Encrypted volumes: made again (keys and cryptroot settings go in it).
        write("etc/crypttab", "crypt UUID=y none luks\n", 300);
        assert!(initramfs_current(root, &kernels, &report).is_none());
        write("etc/crypttab", "# none\n", 300);
        assert!(initramfs_current(root, &kernels, &report).is_some());

        // A kernel without an initramfs: made again.
        let two = vec!["6.1.0-1-amd64".to_string(), "6.1.0-2-amd64".to_string()];
        assert!(initramfs_current(root, &two, &report).is_none());
    }

    fn block(dev: &str, uuid: &str) -> BlockInfo {
        BlockInfo {
            dev: dev.into(),
            uuid: Some(uuid.into()),
            fstype: Some("ext4".into()),
            ..BlockInfo::default()
        }
    }

    fn mount(mp: &str, b: &BlockInfo) -> TargetMount {
        TargetMount {
            mountpoint: mp.into(),
            fstype: "ext4".into(),
            block: b.clone(),
        }
    }

    #[test]
    fn fstab_keeps_matching_uuids_and_fixes_the_rest() {
        let root = block("/dev/vda2", "aaaa-1");
        let srv = block("/dev/vda3", "bbbb-2");
        let var = block("/dev/vda4", "cccc-3");
        let mut p = Profile::default();
        p.storage.filesystems.push(Filesystem {
            uuid: Some("bbbb-2".into()),
            device: "/dev/sda3".into(),
            fstype: "ext4".into(),
            ..Filesystem::default()
        });
        let text = "# comment\nUUID=aaaa-1 / ext4 errors=remount-ro 0 1\n\
                    /dev/sda3\t/srv ext4 defaults 0 2\n\
                    UUID=dead-beef /var ext4 defaults 0 2\n\
                    tmpfs /tmp tmpfs defaults 0 0\n\
                    UUID=0000-0000 none swap sw 0 0\n";
        let mounts = [
            mount("/", &root),
            mount("/srv", &srv),
            mount("/var", &var),
            mount("/data", &block("/dev/vda5", "dddd-4")),
        ];
        let blocks = [root.clone(), srv.clone(), var.clone()];
        let mut w = Vec::new();
        let (out, changes) = fix_fstab(text, &p, &mounts, &blocks, &mut w);
        assert_eq!(
            out,
            "# comment\nUUID=aaaa-1 / ext4 errors=remount-ro 0 1\n\
             UUID=bbbb-2\t/srv ext4 defaults 0 2\n\
             UUID=cccc-3 /var ext4 defaults 0 2\n\
             tmpfs /tmp tmpfs defaults 0 0\n\
             UUID=0000-0000 none swap sw 0 0\n\
             UUID=dddd-4 /data ext4 defaults 0 2\n"
        );
        assert_eq!(
            changes,
            [
                "fstab: /srv: /dev/sda3 → UUID=bbbb-2",
                "fstab: /var: UUID=dead-beef → UUID=cccc-3",
                "fstab: /data added (UUID=dddd-4)"
            ]
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("UUID=0000-0000"), "{w:?}");

        // Already right: unchanged.
        let (again, c) = fix_fstab(&out, &p, &mounts, &blocks, &mut Vec::new());
        assert_eq!((again, c.len()), (out, 0));
    }

    #[test]
    fn crypttab_and_mdadm_conf_by_uuid() {
        let mut p = Profile::default();
        p.storage.luks.push(Luks {
            uuid: "1111-2222".into(),
            device: "/dev/md1".into(),
            version: 2,
            ..Luks::default()
        });
        p.storage.md_arrays.push(MdArray {
            uuid: "0123abcd:4567ef01:89abcdef:01234567".into(),
            name: "md1".into(),
            level: "raid1".into(),
            metadata: Some("1.2".into()),
            ..MdArray::default()
        });
        let mut luks = block("/dev/md1", "1111-2222");
        luks.fstype = Some("crypto_LUKS".into());
        let (out, c) = fix_crypttab(
            "md1_crypt /dev/md1 none luks,discard\n",
            &p,
            &[luks],
            &mut Vec::new(),
        );
        assert_eq!(out, "md1_crypt UUID=1111-2222 none luks,discard\n");
        assert_eq!(c.len(), 1);

        let (conf, c) = fix_mdadm("HOMEHOST <system>\n", &p);
        assert_eq!(
            conf,
            "HOMEHOST <system>\nARRAY /dev/md1 metadata=1.2 UUID=0123abcd:4567ef01:89abcdef:01234567\n"
        );
        assert_eq!(c.len(), 1);
        let (same, c) = fix_mdadm(&conf, &p);
        assert_eq!((same, c.len()), (conf, 0));
    }

    #[test]
    fn firmware_is_read_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(Firmware::detect(root.path()), Firmware::Bios);
        fs::create_dir_all(root.path().join("sys/firmware/efi")).unwrap();
        assert_eq!(Firmware::detect(root.path()), Firmware::Uefi);
    }
}
