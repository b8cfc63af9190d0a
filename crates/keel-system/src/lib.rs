//! Keel's system tree: make the root filesystem a profile describes, and verify a recovered
//! root against its profile.
//!
//! [`build`] turns a profile into a tree, in phases that are each timed and reported:
//!
//! 1. **check** — [`SystemPlan::from_profile`] reads the release, architecture, repositories,
//!    keys, every installed package with its version, and the configuration overlay from the
//!    profile; a throwaway apt state then asks the profile's repositories which versions they
//!    carry and whether the whole set installs together. A version the repositories no longer
//!    carry stops the build *before anything is written*, naming each package with the
//!    choices (`allow_newer`, or another archive such as a snapshot).
//! 2. **base** — debootstrap or mmdebstrap of the release's minimal base system.
//! 3. **packages** — every package the profile records, at its recorded version, from the
//!    profile's repositories with the profile's keys, in a chroot where no service starts;
//!    packages the profiled system had not are purged, automatic and held marks restored.
//! 4. **overlay** — the configuration: accounts with their numeric ids, changed and unowned
//!    files with modes and owners, links, deleted conffiles, user crontabs, alternatives,
//!    unit-file states, hostname, timezone and locale ([`OverlayStep`], [`apply_overlay`]:
//!    the same steps put configuration back on a live system).
//! 5. **secrets** — decrypted with the recovery identity and written last; a cached tree
//!    never holds them.
//!
//! With a cache directory, downloaded packages, base systems and finished trees are kept, so
//! a second build of the same profile only lays the tree down and writes its secrets.
//!
//! [`verify`] captures a root with `keel-collect` and compares it with the profile: what is
//! expected to differ on another machine (hardware, disk sizes, MAC addresses, live state) is
//! reported apart from everything else.
//!
//! The overlay on its own, on a directory (no root privileges needed when the owners are
//! your own):
//!
//! ```
//! use std::os::unix::fs::MetadataExt;
//! use keel_profile::{File, FileStatus, ProfileFile};
//! use keel_system::{apply_overlay, overlay_steps, OverlayContext};
//!
//! let root = tempfile::tempdir().unwrap();
//! let me = std::fs::metadata(root.path()).unwrap();
//! let mut file = ProfileFile::default();
//! let content = file.add_blob(b"vm.swappiness = 10\n".to_vec());
//! file.profile.files.files.push(File {
//!     path: "/etc/sysctl.d/60-app.conf".into(),
//!     kind: "file".into(),
//!     mode: 0o644,
//!     uid: me.uid(),
//!     gid: me.gid(),
//!     hash: Some(content),
//!     status: FileStatus::Unowned,
//!     content: true,
//!     ..File::default()
//! });
//!
//! let overlay = overlay_steps(&file.profile);
//! let ctx = OverlayContext { blobs: &file.blobs, identity: None };
//! let report = apply_overlay(root.path(), &overlay.steps, &ctx).unwrap();
//! assert_eq!(report.files_written, 1);
//! let written = std::fs::read_to_string(root.path().join("etc/sysctl.d/60-app.conf")).unwrap();
//! assert_eq!(written, "vm.swappiness = 10\n");
//!
//! // Steps compare before they change anything: a second run changes nothing.
//! assert_eq!(apply_overlay(root.path(), &overlay.steps, &ctx).unwrap().files_written, 0);
//! ```
//!
//! A whole tree (as root, with debootstrap or mmdebstrap installed):
//!
//! ```no_run
//! use keel_system::{build, verify, BuildOptions, Progress, VerifyOptions};
//!
//! let data = std::fs::read("web-1.keel").unwrap();
//! let file = keel_profile::ProfileFile::decode(&data).unwrap();
//! let identity = keel_system::load_identity("recovery.key".as_ref()).unwrap();
//! let mut opts = BuildOptions::new("/srv/trees/web-1");
//! opts.cache = Some("/var/cache/keel".into());
//! let report = build(&file, &opts, Some(&identity), &mut |p| {
//!     if let Progress::Finished(phase, took, detail) = p {
//!         eprintln!("{phase}: {took:.1?} {detail}");
//!     }
//! })
//! .unwrap();
//! println!("{}", report.to_json());
//!
//! let checked = verify(
//!     &file,
//!     "/srv/trees/web-1".as_ref(),
//!     &VerifyOptions { identity: Some(&identity), ..VerifyOptions::default() },
//! )
//! .unwrap();
//! assert!(checked.ok(), "{:?}", checked.unexpected);
//! ```

mod accounts;
mod apt;
mod build;
mod cache;
mod cmd;
mod data;
mod dpkg;
mod error;
mod identity;
mod install;
mod mounts;
mod nic;
mod overlay;
mod plan;
mod report;
mod verify;
mod version;

pub use build::{
    build, check, clear_target_root, holds_only_mounts, Bootstrap, BuildOptions, Phase, Progress,
    TREE_FORMAT,
};
pub use cache::ArchiveKind;
pub use data::{restore_data, DataOptions, DataRestore};
pub use error::{MissingVersion, SystemError};
pub use identity::load_identity;
pub use install::{install, Firmware, InstallOptions, InstallPhase, InstallReport};
pub use nic::{
    apply_nic_map, map_nics, parse_nic_map, rename_in_text, target_nics, NicMapping, TargetNic,
};
pub use overlay::{
    apply_overlay, overlay_steps, OverlayContext, OverlayReport, OverlayStep, OverlaySteps,
};
pub use plan::{AptSource, KeyFile, KeyOrigin, PackagePin, PlanOptions, SystemPlan};
pub use report::{BuildReport, NewerPackage, PackageReport, PhaseReport, REPORT_FORMAT};
pub use verify::{compare, verify, Difference, VerifyOptions, VerifyReport};
pub use version::compare_versions;
