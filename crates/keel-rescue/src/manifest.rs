//! `manifest.json`: what a build put in the rescue environment, so two builds can be compared
//! and a boot medium checked against what was built.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// The manifest's file name in the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything a build records about its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The Debian suite (`bookworm`).
    pub suite: String,
    /// The archive the packages came from.
    pub mirror: String,
    /// The kernel.
    pub kernel: Kernel,
    /// The keel binary inside.
    pub keel: KeelBinary,
    /// Installed packages, by name.
    pub packages: Vec<Package>,
    /// The output files with their sizes and SHA-256.
    pub files: Vec<OutputFile>,
    /// The initramfs.
    pub initrd: Initrd,
    /// Kernel modules kept.
    pub modules: Modules,
    /// Paths removed from the installed packages (documentation, locales, tools nothing in a
    /// rescue calls).
    pub stripped: Vec<String>,
    /// When it was built (RFC 3339, UTC).
    pub built_at: String,
    /// How long the build took, in seconds.
    pub build_seconds: f64,
    /// Whether the package tree came from the build cache.
    pub from_cache: bool,
}

/// The kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// The package it came from (`linux-image-6.1.0-28-amd64`).
    pub package: String,
    /// That package's version.
    pub version: String,
    /// The release (`uname -r`).
    pub release: String,
}

/// The keel binary inside the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeelBinary {
    /// What `keel --version` says.
    pub version: String,
    /// SHA-256 of the binary given to the build.
    pub sha256: String,
    /// Its size in bytes inside the environment (debug information is stripped).
    pub size: u64,
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
}

/// An output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Its name in the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initrd {
    /// Compression (`zstd`).
    pub compression: String,
    /// Compression level.
    pub level: i32,
    /// Size of the cpio archive before compression.
    pub uncompressed_bytes: u64,
    /// Size of `initrd.img`.
    pub compressed_bytes: u64,
    /// Entries in the archive.
    pub entries: u64,
}

/// Kernel modules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modules {
    /// How many the kernel package ships.
    pub shipped: usize,
    /// How many were kept.
    pub kept: usize,
    /// Loaded by `/init` at boot (hardware drivers are loaded by modalias too).
    pub loaded_at_boot: Vec<String>,
}

/// The installed packages in a dpkg status file.
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(Package {
                name,
                version,
                arch: field("Architecture").unwrap_or_default(),
            });
        }
    }
    out.sort();
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_installed_packages_only() {
        let text = "Package: b\nStatus: install ok installed\nVersion: 2\nArchitecture: amd64\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                    Package: a\nStatus: install ok installed\nVersion: 1:1.0-1\nArchitecture: all\nDescription: x\n y\n";
        let p = parse_dpkg_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0],
            Package {
                name: "a".into(),
                version: "1:1.0-1".into(),
                arch: "all".into()
            }
        );
        assert_eq!(p[1].name, "b");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
