//! Keel's recovery planner: rebuild a profiled system's storage on other disks.
//!
//! Recovery goes plan → check → apply. [`plan`] takes a profile and the target disks (read
//! with [`Host::inventory`], or built by hand) and returns a [`Plan`]: where each source disk
//! goes and why (an explicit map first, then the original disk by WWN or serial, then best fit
//! by size and kind), every partition, array, volume group and logical volume with its old and
//! new size and the reason (scaled to the new disk, never below what its data needs), and the
//! [`Step`]s that build it all. A plan serialises to versioned JSON and prints for people.
//! [`check`] refuses a plan whose disks are no longer the ones present, [`Host::check_safe`]
//! refuses disks that are in use, and [`apply`] runs the steps through an [`Executor`].
//!
//! Three executors carry steps out: [`System`] runs the tools (sfdisk, mdadm, cryptsetup, LVM,
//! mkfs, mount) on the machine without needing udev, [`DryRun`] says what each step would do,
//! and [`Recording`] keeps what it was given. [`apply_journaled`] keeps a [`Journal`] next to
//! the plan, so that a rerun after an interruption checks the steps already done and goes on
//! from the first one that is not. Everything the real executor attaches, assembles, opens,
//! activates or mounts is a [`Guard`], released when it is dropped unless kept for the next
//! phase of the recovery; [`release`] undoes what a finished or killed apply left in place.
//!
//! ```
//! use keel_recover::{sample, PlanOptions, Recording, Step, GIB};
//!
//! // A server with 2 × 20 GiB + 2 × 100 GiB SATA disks, RAID 1 and LVM, rebuilt onto four
//! // NVMe disks of other sizes.
//! let profile = sample::raid_lvm_profile();
//! let targets = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
//! let plan = keel_recover::plan(&profile, &targets, &PlanOptions::default()).unwrap();
//!
//! // The large disks go to the two smallest targets that hold their data.
//! let to = |name: &str| {
//!     let m = plan.disk_map.iter().find(|m| m.source.name == name).unwrap();
//!     m.target.clone()
//! };
//! assert_eq!(to("sdc").as_deref(), Some("/dev/nvme1n1"));
//! assert_eq!(to("sdd").as_deref(), Some("/dev/nvme2n1"));
//! assert!(plan.steps.iter().any(|s| matches!(s, Step::CreateRaid { .. })));
//!
//! // Serialised, read back, checked against the disks present, and run without writing.
//! let back = keel_recover::Plan::from_json(&plan.to_json()).unwrap();
//! keel_recover::check(&back, &targets).unwrap();
//! let mut rec = Recording::default();
//! keel_recover::execute(&back, &mut rec).unwrap();
//! assert_eq!(rec.steps.len(), plan.steps.len());
//! println!("{plan}");
//! ```

mod check;
mod cmd;
mod display;
mod error;
mod exec;
pub mod guard;
mod host;
mod journal;
mod kernel;
mod layout;
mod map;
mod plan;
pub mod sample;
mod size;
mod source;
mod step;
mod system;
mod target;
mod tools;

pub use check::check;
pub use error::{
    ApplyError, CheckError, ExecError, InventoryError, JournalError, MinimumLine, PlanError,
    Refusal, RefusalReason, SafetyError, Shortfall, SystemError,
};
pub use exec::{
    apply, apply_journaled, execute, recheck, recheck_resuming, Applied, DryRun, Executor,
    Progress, Recording, StepError,
};
pub use guard::{Guard, Guards, Resource};
pub use host::Host;
pub use journal::{
    lock as lock_plan, Journal, JournalStep, StepState, DEFAULT_TARGET_ROOT, JOURNAL_FORMAT,
};
pub use plan::{
    plan, DiskMapping, PartitionChange, Plan, PlanOptions, PlanSource, SourceDisk, UnusedTarget,
    VolumeChange, VolumeKind, PLAN_FORMAT,
};
pub use size::{human, GIB, KIB, MIB, TIB};
pub use step::{NewPartition, Step, TableLabel};
pub use system::{release, Released, System, SystemOptions};
pub use target::{partition_path, Device, DiskKind, TargetDisk};

#[cfg(test)]
mod tests;
