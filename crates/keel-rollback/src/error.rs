//! What can go wrong while selecting, planning and applying a rollback.

use std::path::PathBuf;

/// Why a rollback could not be planned or applied. Messages name the thing that failed and,
/// where there is something to do, end with a `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// A `--only` selector is malformed.
    #[error("invalid selection {0:?}: expected SECTION:KEY (such as files:/etc/login.defs or users:mallory)\nhint: SECTION is a profile section or table name, KEY a row's key as `keel diff` shows it")]
    BadSelector(String),
    /// A selector matched no change between the two profiles.
    #[error("no change between the two profiles matches {selector}{near}\nhint: run `keel diff` on the same profiles to see the changes and their keys")]
    NoMatch {
        /// The selector as given.
        selector: String,
        /// Keys that look alike, as ", near: …".
        near: String,
    },
    /// Nothing was selected.
    #[error("nothing selected to back out\nhint: name each change with --only SECTION:KEY")]
    EmptySelection,
    /// A command failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The journal belongs to another plan.
    #[error("the journal {path} belongs to another rollback plan\nhint: finish or remove it first (it records {done} of {total} steps done)")]
    OtherPlan {
        /// The journal.
        path: PathBuf,
        /// Steps it records as done.
        done: usize,
        /// Its steps.
        total: usize,
    },
    /// A step needs something the plan does not carry.
    #[error("{0}")]
    Plan(String),
    /// The configuration overlay failed.
    #[error(transparent)]
    System(#[from] keel_system::SystemError),
}

impl RollbackError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        RollbackError::Io {
            path: path.into(),
            detail: e.to_string(),
        }
    }
}
