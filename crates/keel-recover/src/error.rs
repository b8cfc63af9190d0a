//! Errors of each stage. Every message names the disk or device it is about, and ends with a
//! `hint:` line when there is something to do about it.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::size::human;

/// A target that cannot be read or is not a disk.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Nothing at that path.
    #[error(
        "{path}: no such disk or image file\nhint: list disks with `lsblk -d`; an image file \
         must exist first (`truncate -s 20G FILE`)"
    )]
    NotFound {
        /// The path given.
        path: String,
    },
    /// Something that cannot be a target disk.
    #[error("{path} cannot be a target: {why}")]
    NotADisk {
        /// The path given.
        path: String,
        /// Why, possibly with a hint line.
        why: String,
    },
    /// The same disk given twice.
    #[error("{first} and {second} are the same disk\nhint: give each target once")]
    Duplicate {
        /// The first name given.
        first: String,
        /// The second.
        second: String,
    },
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a target disk must not be touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefusalReason {
    /// The running system's root filesystem is on it.
    RunningSystem {
        /// The device `/` is mounted from.
        device: String,
    },
    /// A filesystem on it is mounted.
    Mounted {
        /// The mounted device.
        device: String,
        /// Where.
        mountpoint: String,
    },
    /// Active swap is on it.
    Swap {
        /// The swap device.
        device: String,
    },
    /// It or a partition of it is a member of an active RAID array.
    RaidMember {
        /// The member device.
        device: String,
        /// The array.
        array: String,
    },
    /// A device-mapper device (LVM, LUKS) is built on it or a partition of it.
    Held {
        /// The device in use.
        device: String,
        /// What is built on it.
        holder: String,
    },
}

/// One target disk that must not be touched, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The target, as given.
    pub disk: String,
    /// Why.
    pub reason: RefusalReason,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.disk;
        match &self.reason {
            RefusalReason::RunningSystem { device } => {
                write!(
                    f,
                    "{d} holds the running system: / is mounted from {device}"
                )
            }
            RefusalReason::Mounted { device, mountpoint } => {
                write!(f, "{d} is mounted: {device} at {mountpoint}")
            }
            RefusalReason::Swap { device } => write!(f, "{d} is in use as swap: {device}"),
            RefusalReason::RaidMember { device, array } => write!(
                f,
                "{d} is a member of an active RAID array: {device} is in {array}"
            ),
            RefusalReason::Held { device, holder } => {
                write!(f, "{d} is in use: {holder} is built on {device}")
            }
        }
    }
}

/// Target disks that are in use.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    /// Some targets are in use.
    #[error("{}", refusals_text(.0))]
    Refused(Vec<Refusal>),
    /// The host's state could not be read, so nothing can be declared safe.
    #[error(
        "cannot read {}: {source}\nhint: the safety checks need /proc and /sys",
        path.display()
    )]
    Unreadable {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn refusals_text(found: &[Refusal]) -> String {
    let mut s = String::from(if found.len() == 1 {
        "refusing to touch a disk that is in use:"
    } else {
        "refusing to touch disks that are in use:"
    });
    for r in found {
        let _ = write!(s, "\n{r}");
    }
    let has = |f: fn(&RefusalReason) -> bool| found.iter().any(|r| f(&r.reason));
    if has(|r| matches!(r, RefusalReason::RunningSystem { .. })) {
        s.push_str(
            "\nhint: a running system cannot be rebuilt onto its own disk: boot a rescue system \
             first",
        );
    }
    if has(|r| matches!(r, RefusalReason::Mounted { .. })) {
        s.push_str("\nhint: unmount what is mounted from the disk (`umount MOUNTPOINT`)");
    }
    if has(|r| matches!(r, RefusalReason::Swap { .. })) {
        s.push_str("\nhint: stop swapping to it (`swapoff DEVICE`)");
    }
    if has(|r| matches!(r, RefusalReason::RaidMember { .. })) {
        s.push_str("\nhint: stop the array (`mdadm --stop ARRAY`)");
    }
    if has(|r| matches!(r, RefusalReason::Held { .. })) {
        s.push_str(
            "\nhint: deactivate what is built on it (`vgchange -an VG` for LVM, `cryptsetup \
             close NAME` for LUKS)",
        );
    }
    s.push_str("\nhint: or leave the disk out of --target");
    s
}

/// One line of a "does not fit" report: a partition or volume and its minimum size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinimumLine {
    /// The partition or volume (`sda2`, `vg0/root`).
    pub what: String,
    /// Its minimum size in bytes.
    pub min_bytes: u64,
    /// Why it cannot be smaller.
    pub why: String,
}

/// A source disk (or volume group) whose minimum layout is larger than the space it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// What does not fit (`disk sda (20.0 GiB)`, `volume group vg0`).
    pub what: String,
    /// Where it was to go (`/dev/vdb (10.0 GiB)`).
    pub onto: String,
    /// Bytes available for its partitions or volumes.
    pub usable_bytes: u64,
    /// Each part's minimum.
    pub lines: Vec<MinimumLine>,
    /// What to do about it.
    pub hint: String,
}

impl Shortfall {
    /// The sum of the minimums.
    pub fn needed_bytes(&self) -> u64 {
        self.lines.iter().map(|l| l.min_bytes).sum()
    }

    /// How many bytes are missing.
    pub fn short_bytes(&self) -> u64 {
        self.needed_bytes().saturating_sub(self.usable_bytes)
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} does not fit on {}: it needs at least {} but {} is usable, {} ({} bytes) short",
            self.what,
            self.onto,
            human(self.needed_bytes()),
            human(self.usable_bytes),
            human(self.short_bytes()),
            self.short_bytes()
        )?;
        let width = self.lines.iter().map(|l| l.what.len()).max().unwrap_or(0);
        for l in &self.lines {
            write!(
                f,
                "\n{:<width$}  {:>10}  {}",
                l.what,
                human(l.min_bytes),
                l.why
            )?;
        }
        write!(f, "\nhint: {}", self.hint)
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The profile has no disks.
    #[error(
        "the profile records no disks, so there is no layout to rebuild\nhint: capture the \
         system with its disks present (the storage.devices collector must succeed)"
    )]
    NoDisks,
    /// No target disks were given.
    #[error("no target disks\nhint: give the disks to rebuild onto with --target")]
    NoTargets,
    /// A `--disk-map` entry is not `SRC=DST`.
    #[error("--disk-map {given:?} is not SRC=DST\nhint: for example --disk-map sda=/dev/nvme0n1")]
    BadMapping {
        /// The entry as given.
        given: String,
    },
    /// A `--disk-map` source names no disk of the profile.
    #[error(
        "--disk-map: the profile has no disk {given:?}\nhint: its disks are: {}",
        known.join(", ")
    )]
    UnknownSource {
        /// The name given.
        given: String,
        /// The profile's disks (name and id).
        known: Vec<String>,
    },
    /// A `--disk-map` target is not one of the target disks.
    #[error(
        "--disk-map: {given} is not one of the target disks ({})\nhint: every disk the plan \
         touches must be given with --target",
        targets.join(", ")
    )]
    UnknownTarget {
        /// The name given.
        given: String,
        /// The targets.
        targets: Vec<String>,
    },
    /// A disk appears twice in `--disk-map`.
    #[error("--disk-map: {disk} is mapped twice\nhint: map each disk once")]
    MappedTwice {
        /// The disk.
        disk: String,
    },
    /// Fewer target disks than source disks that hold data.
    #[error("{message}")]
    NotEnoughDisks {
        /// The full explanation, with hints.
        message: String,
    },
    /// A layout does not fit.
    #[error("{0}")]
    DoesNotFit(Box<Shortfall>),
    /// Something the planner cannot rebuild holds data the system uses.
    #[error("{what}\nhint: {hint}")]
    Unsupported {
        /// What.
        what: String,
        /// What to do about it.
        hint: String,
    },
}

/// A plan that no longer matches the machine, or is not a plan this version can read.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Written by a newer version.
    #[error(
        "the plan has format {found}; this keel reads formats up to {supported}\nhint: make the \
         plan again with this version (keel recover plan)"
    )]
    Format {
        /// The plan's format.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The disks present differ from those planned for.
    #[error(
        "the target disks are not the ones the plan was made for:\n{}\nhint: make a new plan \
         for the disks present (keel recover plan)",
        .0.join("\n")
    )]
    Changed(Vec<String>),
    /// A step touches a disk that is not a target of the plan.
    #[error(
        "step {step} touches {device}, which is not a target disk of the plan\nhint: the plan \
         was edited or is corrupt; make it again"
    )]
    NotInPlan {
        /// The step's number (from 1).
        step: usize,
        /// The device.
        device: String,
    },
}

/// A step that failed while being carried out.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({description}) failed: {message}")]
pub struct ExecError {
    /// The step's number (from 1).
    pub step: usize,
    /// What the step does.
    pub description: String,
    /// What went wrong.
    pub message: String,
}

/// Why a plan was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The targets could not be read again.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The plan does not match the disks present.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// A target is in use.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// A step failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
}
