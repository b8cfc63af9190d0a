//! Keel's rollback: back out selected configuration changes.
//!
//! A rollback starts from a diff between two profiles — `before` (the state to go back to)
//! and `after` (the one in which the unwanted changes appear) — and a selection of its rows,
//! each named `SECTION:KEY` ([`Selector`]: `files:/etc/login.defs`, `users:mallory`,
//! `packages:tree`). [`build_plan`] turns the selected rows into steps: files with their
//! earlier content, mode and owner (from the profile's blobs; secrets decrypted with the
//! recovery identity when it is given), packages purged, reinstalled or returned to their
//! earlier version, users and groups removed or restored, unit enablement links, sysctl,
//! cron and timer files. Configuration steps are keel-system's [`keel_system::OverlayStep`]s,
//! the ones recovery applies.
//!
//! Safety:
//!
//! - A selected row (or a file its steps would write) that differs between `after` and the
//!   system's present state changed again later: it is a **conflict**, shown in the plan and
//!   left alone unless forced.
//! - Data paths ([`DATA_PATHS`], and mount points the profile's fstab lists outside the
//!   system directories) are never written or removed.
//! - [`apply`] runs the steps through an [`Executor`] — [`DryRun`] first, then [`Real`] — and
//!   with a [`Journal`] a run cut short can be run again and finishes from where it stopped,
//!   or be undone with [`revert`] (the journal keeps a copy of whatever each step changed).
//!
//! ```
//! use std::os::unix::fs::MetadataExt;
//! use keel_profile::{File, FileStatus, ProfileFile};
//! use keel_rollback::{apply, build_plan, DryRun, PlanOptions, Real, Selector};
//!
//! let root = tempfile::tempdir().unwrap();
//! let me = std::fs::metadata(root.path()).unwrap();
//! let mut before = ProfileFile::default();
//! let content = before.add_blob(b"PASS_MAX_DAYS 99999\n".to_vec());
//! before.profile.files.files.push(File {
//!     path: "/etc/login.defs".into(), kind: "file".into(), mode: 0o644,
//!     uid: me.uid(), gid: me.gid(), hash: Some(content), status: FileStatus::Unowned,
//!     content: true, ..File::default()
//! });
//! // Someone shortened the password lifetime.
//! std::fs::create_dir(root.path().join("etc")).unwrap();
//! std::fs::write(root.path().join("etc/login.defs"), "PASS_MAX_DAYS 7\n").unwrap();
//! let mut after = before.clone();
//! after.profile.files.files[0].hash = Some(keel_profile::Hash::of(b"PASS_MAX_DAYS 7\n"));
//!
//! let only: Selector = "files:/etc/login.defs".parse().unwrap();
//! let plan = build_plan(&before, &after.profile, &after.profile, &[only], PlanOptions::default())
//!     .unwrap();
//! println!("{plan}");
//! let blobs = plan.blob_map().unwrap();
//! let dry = apply(&plan, &mut DryRun { root: root.path(), blobs: &blobs }, None, &mut |_| {})
//!     .unwrap();
//! assert_eq!(dry.steps[0].output, "would rewrite /etc/login.defs");
//! let journal = root.path().join("rollback.journal");
//! let mut real = Real { root: root.path(), blobs: &blobs, identity: None };
//! apply(&plan, &mut real, Some(&journal), &mut |_| {}).unwrap();
//! let now = std::fs::read_to_string(root.path().join("etc/login.defs")).unwrap();
//! assert_eq!(now, "PASS_MAX_DAYS 99999\n");
//! ```

mod error;
mod exec;
mod journal;
mod plan;
mod select;

pub use error::RollbackError;
pub use exec::{apply, installed_version, Applied, DryRun, Executor, Real, Recording, StepOutcome};
pub use journal::{revert, Journal, JournalFile, JournalStep, StepState, Undo};
pub use plan::{
    build_plan, is_data_path, remaining, row, same_row, Item, Plan, PlanOptions, Step, DATA_PATHS,
    PLAN_FORMAT,
};
pub use select::{select, RowRef, Selector};

/// What an agent signs (with its enrollment key, as it signs uploads) to ask a server for its
/// rollback jobs or to report one: the BLAKE3 of the request body under a context of its
/// own, so such a signature can never pass for a profile's.
pub fn agent_request_hash(body: &[u8]) -> keel_profile::Hash {
    let mut m = b"keel rollback agent request v1\n".to_vec();
    m.extend_from_slice(body);
    keel_profile::Hash::of(&m)
}
