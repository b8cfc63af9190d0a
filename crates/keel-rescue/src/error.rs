//! Errors. Building fails at a named [`BuildStep`] and carries the tool's last lines of
//! output; running a kit fails with the kit file or step it is about. Messages that have
//! something to do about them end with a `hint:` line.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The stages of [`crate::build`], in order, as they are named in progress and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    /// Checking privileges, tools and inputs.
    Preflight,
    /// Preparing the work directory next to the output.
    Prepare,
    /// Restoring the cached base tree.
    RestoreCache,
    /// debootstrap of the suite with the storage tools.
    Debootstrap,
    /// Downloading the kernel package.
    DownloadKernel,
    /// Unpacking the kernel and its modules with dpkg-deb.
    ExtractKernel,
    /// Dropping modules nothing needs, then depmod.
    PruneModules,
    /// Removing documentation, manuals, locales and caches.
    Strip,
    /// Saving the base tree into the cache.
    SaveCache,
    /// Copying keel and the init script in, and checking keel runs there.
    InstallKeel,
    /// Writing the cpio archive and compressing it.
    Pack,
    /// Writing manifest.json.
    Manifest,
    /// Moving the finished output into place.
    Finish,
}

impl BuildStep {
    /// The step's name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            BuildStep::Preflight => "preflight",
            BuildStep::Prepare => "prepare",
            BuildStep::RestoreCache => "restore cached base",
            BuildStep::Debootstrap => "debootstrap",
            BuildStep::DownloadKernel => "download kernel",
            BuildStep::ExtractKernel => "extract kernel",
            BuildStep::PruneModules => "prune modules",
            BuildStep::Strip => "strip",
            BuildStep::SaveCache => "save cached base",
            BuildStep::InstallKeel => "install keel",
            BuildStep::Pack => "pack initramfs",
            BuildStep::Manifest => "manifest",
            BuildStep::Finish => "finish",
        }
    }
}

impl fmt::Display for BuildStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why building a rescue environment failed. Nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Not running as root.
    #[error(
        "building a rescue environment needs root (running as uid {uid})\nhint: run it as root: \
         debootstrap, chroot and device nodes need it"
    )]
    NotRoot {
        /// The effective user id.
        uid: u32,
    },
    /// A tool the build calls is missing.
    #[error("{step}: `{tool}` is not installed\nhint: apt-get install {package}")]
    MissingTool {
        /// The step that needs it.
        step: BuildStep,
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// No mirror given and none configured.
    #[error(
        "no Debian archive found in /etc/apt/sources.list or /etc/apt/sources.list.d\nhint: pass \
         --mirror URL"
    )]
    NoMirror,
    /// The output path holds something a build did not make.
    #[error(
        "{} exists and is not a rescue environment built by keel\nhint: choose a new or empty \
         directory; a previous build's directory (with manifest.json) is replaced",
        path.display()
    )]
    OutputInUse {
        /// The output directory.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{step}: {}: {source}", path.display())]
    Io {
        /// Where.
        step: BuildStep,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A command could not be started, failed or ran out of time.
    #[error("{step}: `{command}` {outcome}{}", tail_block(tail))]
    Command {
        /// Where.
        step: BuildStep,
        /// The command line.
        command: String,
        /// "exited with status 1", "did not finish within 600 s", "could not start: …".
        outcome: String,
        /// Its last lines of standard error (or of its log).
        tail: String,
    },
    /// Something the build found is not what it needs.
    #[error("{step}: {message}")]
    Invalid {
        /// Where.
        step: BuildStep,
        /// What, possibly with a hint line.
        message: String,
    },
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!("; its last lines:\n{}", lines.join("\n"))
    }
}

/// Why a recovery kit cannot be read or run.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The kit file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The kit file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The kit file is not valid JSON of the expected shape.
    #[error(
        "{} is not a valid kit: {source}\nhint: a kit is {{\"format\": 1, \"steps\": [{{\"name\": \
         \"…\", \"run\": [\"program\", \"arg\"]}}, {{\"name\": \"…\", \"shell\": \"…\"}}]}}",
        path.display()
    )]
    Parse {
        /// The kit file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The kit is valid JSON but says something this version cannot do.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The kit file.
        path: PathBuf,
        /// What, possibly with a hint line.
        message: String,
    },
    /// A step's program could not be started.
    #[error("step {step:?}: cannot start `{program}`: {source}")]
    Spawn {
        /// The step's name.
        step: String,
        /// The program.
        program: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why the kit's disk cannot be mounted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mount {device} ({fstype}) read-only on {}: {message}", mountpoint.display())]
pub struct MountError {
    /// The device.
    pub device: String,
    /// Its filesystem type.
    pub fstype: String,
    /// Where.
    pub mountpoint: PathBuf,
    /// What mount said.
    pub message: String,
}
