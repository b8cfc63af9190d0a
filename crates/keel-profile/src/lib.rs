//! Keel's profile model: what a captured system looks like, how it is stored, and how two
//! captures differ.
//!
//! A [`Profile`] is a set of typed tables grouped in sections (`hardware`, `storage`, `os`,
//! `packages`, `users`, `security`, `network`, `services`, `schedules`, `kernel`, `files`).
//! Every row has a natural key and every field a [`Volatility`] class. A [`ProfileFile`] adds
//! the content-addressed blobs the profile refers to and encodes to a compact, versioned file.
//! No I/O happens here: collecting is `keel-collect`'s job.
//!
//! ```
//! use keel_profile::{diff, DiffOptions, Package, ProfileFile};
//!
//! let mut old = ProfileFile::default();
//! old.profile.packages.packages.push(Package { name: "nano".into(), arch: "amd64".into(),
//!     version: "7.2-1".into(), manager: "dpkg".into(), status: "installed".into(),
//!     ..Package::default() });
//! let mut new = old.clone();
//! new.profile.packages.packages[0].version = "7.2-2".into();
//!
//! let bytes = new.encode().unwrap();
//! let back = ProfileFile::decode(&bytes).unwrap();
//! let changes = diff(&old.profile, &back.profile, DiffOptions::default());
//! assert_eq!(changes.len(), 1);
//! assert_eq!(changes[0].key, "nano:amd64");
//! assert_eq!(changes[0].field.as_deref(), Some("version"));
//! ```

mod diff;
mod envelope;
#[cfg(test)]
mod golden;
mod hash;
mod model;
mod patch;
mod table;
mod upload;

pub use diff::{diff, Change, ChangeKind, DiffOptions};
pub use envelope::{
    profile_bytes, profile_hash, Blob, DecodeError, EncodeError, ProfileFile, FORMAT_VERSION,
    MAGIC, MAX_PAYLOAD, OLDEST_FORMAT_VERSION,
};
pub use hash::{Hash, ParseHashError};
pub use model::*;
pub use patch::{apply_patch, make_patch, Patch, PatchError, TablePatch};
pub use table::{Record, Section, TableView, Volatility};
pub use upload::{AgentKey, Upload, UploadBody, UploadError};

/// The schema version of the tables this build writes (`meta.schema`).
pub const SCHEMA_VERSION: u32 = 1;
