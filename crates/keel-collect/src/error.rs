//! Collector errors: what failed, where, and with what.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a collector, or a capture, failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A command failed or could not start.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// Something ran past its deadline.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was running.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A file did not parse.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// The file or output.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// The capture could not start at all.
    #[error("{0}")]
    Setup(String),
}

impl CollectError {
    /// An I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CollectError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A parse error.
    pub fn parse(what: impl Into<String>, detail: impl Into<String>) -> Self {
        CollectError::Parse {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
