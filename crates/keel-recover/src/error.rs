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
    /// The journal cannot be used.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A step the journal records as done no longer holds.
    #[error(
        "step {step} ({description}) was done by an earlier run, but {message}\nhint: the \
         disks changed since; release what is held (keel recover release), remove the journal \
         and apply the plan from the start"
    )]
    Resume {
        /// The step's number (from 1).
        step: usize,
        /// What the step does.
        description: String,
        /// What no longer holds.
        message: String,
    },
    /// The executor could not get ready (attach an image, read a disk).
    #[error("cannot start applying the plan: {0}")]
    Prepare(String),
}

/// What went wrong running the storage tools, or checking what they did.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The program could not be started.
    #[error(
        "cannot run {program}: {source}\nhint: the rescue environment needs {program} on the \
         PATH (package {package})"
    )]
    NotRun {
        /// The program.
        program: String,
        /// The Debian package that has it.
        package: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran past its deadline and was stopped.
    #[error("`{command}` did not finish within {} s and was stopped{}", secs(*.timeout), tail(.stderr))]
    TimedOut {
        /// The command line.
        command: String,
        /// The deadline.
        timeout: std::time::Duration,
        /// The last lines it wrote to standard error.
        stderr: String,
    },
    /// The program failed.
    #[error("`{command}` failed ({status}){}", tail(.stderr))]
    Failed {
        /// The command line.
        command: String,
        /// How it ended (`exit status 1`).
        status: String,
        /// The last lines it wrote to standard error (or standard output when that was empty).
        stderr: String,
    },
    /// A tool reported success but the result is not what the plan asked for, or a device
    /// the step needs is missing.
    #[error("{what}")]
    Unexpected {
        /// What, naming the device, possibly with a hint line.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SystemError {
    /// An [`SystemError::Unexpected`] with this text.
    pub(crate) fn unexpected(what: impl Into<String>) -> Self {
        SystemError::Unexpected { what: what.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SystemError::Io {
            path: path.into(),
            source,
        }
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.0}", d.as_secs_f64())
}

/// The last lines of a tool's output, indented under the command.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(8);
    let mut s = String::from(":");
    for l in &lines[from..] {
        s.push_str("\n  ");
        s.push_str(l.trim_end());
    }
    s
}

/// A journal that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal was written for another plan.
    #[error(
        "{} is the journal of another plan (plan hash {found}, this plan's is {expected})\nhint: \
         give this plan its own journal with --journal FILE; remove the old one only once \
         nothing of the other apply is still in use (keel recover release)",
        path.display()
    )]
    OtherPlan {
        /// The journal.
        path: PathBuf,
        /// The plan hash it records.
        found: String,
        /// This plan's hash.
        expected: String,
    },
    /// The journal was written with another target root.
    #[error(
        "{} records the target root {}, not {}\nhint: resume with --target-root {}",
        path.display(),
        recorded.display(),
        given.display(),
        recorded.display()
    )]
    OtherRoot {
        /// The journal.
        path: PathBuf,
        /// The target root it records.
        recorded: PathBuf,
        /// The one given now.
        given: PathBuf,
    },
    /// The journal is not one this version reads.
    #[error(
        "{} is not a journal this keel can read: {why}\nhint: it may be damaged or from a newer \
         keel; release what the apply holds (keel recover release) and start again with \
         another --journal",
        path.display()
    )]
    Unreadable {
        /// The journal.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Another apply holds the plan.
    #[error(
        "another keel recover apply is running with {}\nhint: wait for it to finish, or stop it",
        path.display()
    )]
    Busy {
        /// The plan or journal that is locked.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot write or read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
