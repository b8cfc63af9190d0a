//! Keel's rescue environment: one small bootable Debian system for the whole fleet, with the
//! storage tools recovery needs and the `keel` binary, and the code that runs inside it.
//!
//! [`build`] makes it: debootstrap's minbase of a suite with the storage tools, the kernel from
//! the `linux-image-amd64` package with its modules pruned to storage, filesystems, crypto and
//! network, and an `/init` that loads drivers and hands PID 1 to `keel rescue`, packed as a
//! zstd-compressed cpio initramfs next to the kernel and a `manifest.json`.
//!
//! Inside the environment, `keel rescue` lists the [`disks`] it sees, looks for a recovery
//! kit (a filesystem labelled [`KIT_LABEL`], found with [`find_labelled`] by reading
//! superblocks, since there is no udev), runs the [`Kit`]'s steps and prints a
//! [`RescueResult`] line.
//!
//! ```
//! use keel_rescue::{Kit, Runner};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(
//!     dir.path().join("kit.json"),
//!     r#"{"format": 1, "steps": [{"name": "hello", "run": ["true"]}]}"#,
//! )
//! .unwrap();
//! let kit = Kit::load(dir.path()).unwrap();
//! let runner = Runner::new(dir.path(), &kit);
//! let outcome = runner.run(&kit.steps[0]);
//! assert!(outcome.ok());
//! ```

mod build;
mod cmdline;
mod error;
mod exec;
mod init;
mod inventory;
mod kit;
mod label;
mod manifest;
mod result;
pub mod sources;
mod system;

pub use build::{
    build, module_name, BuildOptions, ModuleGraph, Progress, DEFAULT_SUITE, DEFAULT_ZSTD_LEVEL,
    KERNEL_META_PACKAGE, STRIP,
};
pub use cmdline::BootOptions;
pub use error::{BuildError, BuildStep, KitError, MountError};
pub use init::{init_script, BOOT_MODULES, KEEL_PATH, KEEP_MODULES, MARKER_PATH, PACKAGES};
pub use inventory::{disks, human, parse_vpd_pg80, Disk};
pub use kit::{
    Kit, KitStep, Runner, StepOutcome, DEFAULT_STEP_TIMEOUT, KIT_FILE, KIT_FORMAT, KIT_LABEL,
};
pub use label::{find_labelled, probe, Labelled, Probe, PROBE_BYTES};
pub use manifest::{
    hex, parse_dpkg_status, sha256_file, Initrd, KeelBinary, Kernel, Manifest, Modules, OutputFile,
    Package, MANIFEST_FILE, MANIFEST_FORMAT,
};
pub use result::{RescueResult, Status, RESULT_FORMAT, RESULT_PREFIX};
pub use system::{console_tty, is_init, power_off, shell, Coldplug, Mount};
