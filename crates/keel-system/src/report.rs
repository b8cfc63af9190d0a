//! The machine-readable account of a build: what each phase took, what was installed and
//! written, and what did not come back exactly.

use serde::{Deserialize, Serialize};

use crate::build::Phase;
use crate::overlay::OverlayReport;

/// Version of the report's shape.
pub const REPORT_FORMAT: u32 = 1;

/// One phase of a build.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// What it did, in a few words.
    pub detail: String,
}

/// A package installed at a newer version than the profile records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewerPackage {
    /// Package name.
    pub name: String,
    /// The recorded version.
    pub recorded: String,
    /// The version installed.
    pub installed: String,
}

/// What the packages phase did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageReport {
    /// Packages pinned to a version (every installed package of the profile).
    pub pinned: usize,
    /// Packages installed in the finished tree.
    pub installed: usize,
    /// Packages the packages phase added to the base system.
    pub added: usize,
    /// Packages installed at a newer version (`--allow-newer`).
    pub newer: Vec<NewerPackage>,
    /// Packages of the base system the profiled system did not have, removed.
    pub purged: Vec<String>,
    /// Packages marked as installed automatically, as on the profiled system.
    pub marked_auto: usize,
    /// Packages held, as on the profiled system.
    pub held: usize,
}

/// The report of one build.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// The profile's hash.
    pub profile: String,
    /// The profiled system's hostname.
    pub hostname: String,
    /// Distribution and suite (`debian bookworm`).
    pub release: String,
    /// Architecture.
    pub arch: String,
    /// The archive the base system came from.
    pub mirror: String,
    /// The tool that made the base system (`debootstrap`, `mmdebstrap`), when one ran.
    pub bootstrap: Option<String>,
    /// Where the tree went.
    pub output: String,
    /// The base system came from the cache.
    pub base_from_cache: bool,
    /// The finished tree came from the cache: only its secrets were written.
    pub tree_from_cache: bool,
    /// Every phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Packages.
    pub packages: PackageReport,
    /// The configuration overlay.
    pub overlay: OverlayReport,
    /// Secrets.
    pub secrets: OverlayReport,
    /// What did not come back exactly, and why.
    pub warnings: Vec<String>,
    /// Seconds from start to finish.
    pub total_seconds: f64,
}

impl BuildReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Seconds spent in `phase` (zero when it did not run).
    pub fn seconds(&self, phase: Phase) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.phase == phase)
            .map(|p| p.seconds)
            .sum()
    }
}

/// What a cached tree keeps of the build that made it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CachedBuild {
    pub bootstrap: Option<String>,
    pub packages: PackageReport,
    pub overlay: OverlayReport,
    pub warnings: Vec<String>,
}
