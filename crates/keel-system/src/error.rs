//! Errors of the system tree: what failed, where, and what to do about it.
//!
//! Every message names the thing that failed (the package and version, the file, the command
//! with its exit status and the end of its output) and, where there is something to do, ends
//! with a `hint:` line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Phase;

/// A package version the profile records that the repositories no longer carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingVersion {
    /// Package name.
    pub name: String,
    /// Architecture as recorded (`amd64`, `all`).
    pub arch: String,
    /// The recorded version.
    pub version: String,
    /// Versions the repositories carry, newest first.
    pub available: Vec<String>,
    /// The newest available version when it is newer than the recorded one: what
    /// `--allow-newer` would install.
    pub newer: Option<String>,
}

impl fmt::Display for MissingVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)?;
        match (&self.newer, self.available.is_empty()) {
            (Some(n), _) => write!(f, ": not in the repositories; newer version {n} available"),
            (None, true) => write!(f, ": no version of it is in the repositories"),
            (None, false) => write!(
                f,
                ": not in the repositories, and nothing newer either (available: {})",
                self.available.join(", ")
            ),
        }
    }
}

/// Why a system tree could not be planned, built or verified.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The profile lacks what a rebuild needs.
    #[error("the profile cannot be rebuilt: {what}\nhint: {hint}")]
    Profile {
        /// What is missing or unsupported.
        what: String,
        /// What to do.
        hint: String,
    },
    /// Recorded package versions are not in the repositories; nothing was written.
    #[error("{}", missing_message(.0))]
    MissingVersions(Vec<MissingVersion>),
    /// apt cannot install the package set together.
    #[error("apt cannot install the profile's packages together (nothing was written):\n{detail}\nhint: the repositories may have moved on; rerun with --allow-newer, or point --mirror at an archive holding the recorded versions")]
    Unresolvable {
        /// apt's explanation.
        detail: String,
    },
    /// A tool the build needs is not installed.
    #[error("`{tool}` is not installed\nhint: install the `{package}` package on this machine")]
    MissingTool {
        /// The program.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// The build must run as root.
    #[error("building a system tree needs root (running as uid {uid})\nhint: run keel as root: the tree holds files of every owner, and chroot and mount need root")]
    NotRoot {
        /// The effective uid.
        uid: String,
    },
    /// The output exists and is not empty.
    #[error("{} already exists and is not empty\nhint: give a new or empty directory, or a tarball name ending in .tar, .tar.zst or .tar.gz", .0.display())]
    OutputExists(PathBuf),
    /// A command failed.
    #[error("{phase}: `{command}` {status}{}", tail(.output))]
    Command {
        /// The phase it ran in.
        phase: Phase,
        /// The command line.
        command: String,
        /// How it ended (`exited with 100`, `did not finish within 600 s`).
        status: String,
        /// The last lines of its output.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done (`cannot write`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The recovery identity could not be used.
    #[error("cannot use the recovery identity {}: {detail}\nhint: give the file `keel keygen` wrote (it holds a line starting with AGE-SECRET-KEY-)", .path.display())]
    Identity {
        /// The identity file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A secret could not be decrypted.
    #[error("cannot decrypt the secret {path}: {detail}\nhint: --recovery-identity must be the private half of the recovery key the profile's secrets were encrypted to")]
    Decrypt {
        /// The secret's path in the tree.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// Capturing the recovered root failed.
    #[error("cannot capture {}: {source}", .root.display())]
    Capture {
        /// The root.
        root: PathBuf,
        /// The cause.
        source: keel_collect::CollectError,
    },
    /// Something else about the build was wrong.
    #[error("{0}")]
    Other(String),
}

impl SystemError {
    /// An I/O error with its path.
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        SystemError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

fn tail(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", output.trim_end())
    }
}

fn missing_message(missing: &[MissingVersion]) -> String {
    use fmt::Write;
    let mut s = format!(
        "{} recorded package version{} the repositories no longer carry (nothing was written):",
        missing.len(),
        if missing.len() == 1 {
            " is one"
        } else {
            "s are ones"
        }
    );
    for m in missing {
        let _ = write!(s, "\n  {m}");
    }
    let newer = missing.iter().filter(|m| m.newer.is_some()).count();
    s.push_str("\nchoices:");
    if newer > 0 {
        let _ = write!(
            s,
            "\n  - install the newer version{} listed: rerun with --allow-newer",
            if newer == 1 { "" } else { "s" }
        );
    }
    s.push_str(
        "\n  - abort, and rebuild from an archive that still carries the recorded versions \
         (a snapshot archive): rerun with --mirror URI",
    );
    s.push_str("\nhint: nothing has been written; choose one of the above");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_versions_name_package_version_and_choices() {
        let e = SystemError::MissingVersions(vec![
            MissingVersion {
                name: "openssh-server".into(),
                arch: "amd64".into(),
                version: "1:9.2p1-2+deb12u1".into(),
                available: vec!["1:9.2p1-2+deb12u5".into()],
                newer: Some("1:9.2p1-2+deb12u5".into()),
            },
            MissingVersion {
                name: "gone".into(),
                arch: "all".into(),
                version: "1.0".into(),
                available: vec![],
                newer: None,
            },
        ])
        .to_string();
        assert!(
            e.contains("openssh-server 1:9.2p1-2+deb12u1 (amd64)"),
            "{e}"
        );
        assert!(
            e.contains("newer version 1:9.2p1-2+deb12u5 available"),
            "{e}"
        );
        assert!(e.contains("gone 1.0 (all): no version of it"), "{e}");
        assert!(e.contains("--allow-newer") && e.contains("--mirror"), "{e}");
        assert!(e.contains("nothing was written"), "{e}");
    }
}
