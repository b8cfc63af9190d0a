//! The journal of a rollback: one JSON file recording each step's state, written and synced
//! before and after every step, so that a run cut short midway can be run again and go on from
//! the step it stopped at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::RollbackError;
use crate::plan::{Plan, Step};

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not run yet.
    Pending,
    /// Begun and not known to have finished.
    Started,
    /// Finished.
    Done,
    /// Failed; run again next time.
    Failed,
    /// Undone by [`revert`].
    Reverted,
}

/// What a step found before it first ran, so that it can be undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// A path inside the root: copied aside (`backup`, a name in the journal's backup
    /// directory), or absent.
    Path {
        /// The path inside the root.
        path: String,
        /// The copy, or none when the path did not exist.
        backup: Option<String>,
    },
    /// A package's installed version, or none when it was not installed.
    Package {
        /// `name:arch`.
        package: String,
        /// The version.
        version: Option<String>,
    },
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStep {
    /// Its number, from 1.
    pub number: usize,
    /// What it does.
    pub description: String,
    /// Where it is.
    pub state: StepState,
    /// How many times it was begun.
    pub attempts: u32,
    /// When it last changed state, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// What it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it found before it first ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<Undo>,
}

/// The journal file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalFile {
    /// The plan's identity ([`Plan::id`]).
    pub plan: String,
    /// Every step.
    pub steps: Vec<JournalStep>,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: JournalFile,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Journal {
    /// Reads the journal at `path` when it belongs to `plan` (a rerun), or starts a new one.
    /// An unfinished journal of another plan is refused.
    pub fn open(path: &Path, plan: &Plan) -> Result<Journal, RollbackError> {
        let id = plan.id().to_hex();
        if let Some(old) = Self::read(path)? {
            if old.plan == id {
                return Ok(Journal {
                    path: path.to_path_buf(),
                    file: old,
                });
            }
            let done = old
                .steps
                .iter()
                .filter(|s| s.state == StepState::Done)
                .count();
            if done < old.steps.len() && done > 0 {
                return Err(RollbackError::OtherPlan {
                    path: path.to_path_buf(),
                    done,
                    total: old.steps.len(),
                });
            }
        }
        let file = JournalFile {
            plan: id,
            steps: plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| JournalStep {
                    number: i + 1,
                    description: s.describe(),
                    state: StepState::Pending,
                    attempts: 0,
                    at_ms: now_ms(),
                    output: None,
                    error: None,
                    undo: Vec::new(),
                })
                .collect(),
        };
        let j = Journal {
            path: path.to_path_buf(),
            file,
        };
        // Copies kept for an earlier rollback belong to its journal, which this one replaces.
        let _ = std::fs::remove_dir_all(j.backup_dir());
        j.write()?;
        Ok(j)
    }

    /// The journal at `path`, if there is one.
    pub fn read(path: &Path) -> Result<Option<JournalFile>, RollbackError> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| RollbackError::io(path, format!("not a rollback journal: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RollbackError::io(path, e)),
        }
    }

    /// True when step `number` is recorded as done.
    pub fn done(&self, number: usize) -> bool {
        self.file
            .steps
            .get(number - 1)
            .is_some_and(|s| s.state == StepState::Done)
    }

    fn set(
        &mut self,
        number: usize,
        f: impl FnOnce(&mut JournalStep),
    ) -> Result<(), RollbackError> {
        if let Some(s) = self.file.steps.get_mut(number - 1) {
            f(s);
            s.at_ms = now_ms();
        }
        self.write()
    }

    /// The directory the copies of what steps changed go to.
    pub fn backup_dir(&self) -> PathBuf {
        backup_dir(&self.path)
    }

    /// Records, before step `number` first runs, what it is about to change under `root`.
    pub(crate) fn save(
        &mut self,
        number: usize,
        root: &Path,
        step: &Step,
    ) -> Result<(), RollbackError> {
        if self
            .file
            .steps
            .get(number - 1)
            .is_none_or(|s| s.attempts > 0 || !s.undo.is_empty())
        {
            return Ok(()); // the state before its first attempt is kept
        }
        let mut undo = Vec::new();
        for (i, path) in step.touches().into_iter().enumerate() {
            let host = root.join(path.trim_start_matches('/'));
            let backup = if std::fs::symlink_metadata(&host).is_ok() {
                let dir = self.backup_dir();
                std::fs::create_dir_all(&dir).map_err(|e| RollbackError::io(&dir, e))?;
                let name = format!("{number}-{i}");
                let dest = dir.join(&name);
                let _ = std::fs::remove_dir_all(&dest);
                let _ = std::fs::remove_file(&dest);
                copy_all(&host, &dest)?;
                Some(name)
            } else {
                None
            };
            undo.push(Undo::Path { path, backup });
        }
        if let Some(package) = step.package() {
            undo.push(Undo::Package {
                version: crate::exec::installed_version(root, package),
                package: package.to_string(),
            });
        }
        self.set(number, |s| s.undo = undo)
    }

    pub(crate) fn start(&mut self, number: usize) -> Result<(), RollbackError> {
        self.set(number, |s| {
            s.state = StepState::Started;
            s.attempts += 1;
        })
    }

    pub(crate) fn finish(&mut self, number: usize, output: &str) -> Result<(), RollbackError> {
        self.set(number, |s| {
            s.state = StepState::Done;
            s.output = Some(output.to_string());
            s.error = None;
        })
    }

    pub(crate) fn fail(&mut self, number: usize, error: &str) -> Result<(), RollbackError> {
        self.set(number, |s| {
            s.state = StepState::Failed;
            s.error = Some(error.to_string());
        })
    }

    /// Writes the journal: a temporary file, synced, renamed over the old one, and the
    /// directory synced.
    fn write(&self) -> Result<(), RollbackError> {
        let path = &self.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RollbackError::io(dir, e))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(&self.file).expect("serialisable");
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        res.map_err(|e| RollbackError::io(path, e))
    }
}

fn backup_dir(journal: &Path) -> PathBuf {
    let name = journal
        .file_name()
        .map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
    journal.with_file_name(format!("{name}.backup"))
}

/// Copies a file, link or directory with its modes, owners and links (`cp -a`).
fn copy_all(from: &Path, to: &Path) -> Result<(), RollbackError> {
    let out = std::process::Command::new("cp")
        .args(["-a", "--no-dereference", "--"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| RollbackError::io(from, format!("cannot run cp: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RollbackError::io(
            from,
            format!(
                "cannot copy to {}: {}",
                to.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

fn remove_any(path: &Path) -> Result<(), RollbackError> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    r.map_err(|e| RollbackError::io(path, e))
}

/// Undoes the steps a journal records as begun, newest first: paths get back what they held
/// before the step first ran (or are removed when they did not exist), packages their earlier
/// version (or are purged). `exec` does the package steps. Returns the steps undone; the
/// journal then records them as reverted.
pub fn revert(
    journal: &Path,
    root: &Path,
    exec: &mut dyn crate::Executor,
    log: &mut dyn FnMut(&str),
) -> Result<usize, RollbackError> {
    let Some(file) = Journal::read(journal)? else {
        return Err(RollbackError::Plan(format!(
            "there is no rollback journal at {}\nhint: nothing was applied, or it finished and \
             was cleaned up",
            journal.display()
        )));
    };
    let mut j = Journal {
        path: journal.to_path_buf(),
        file,
    };
    let backups = j.backup_dir();
    let begun: Vec<usize> = j
        .file
        .steps
        .iter()
        .filter(|s| s.attempts > 0 && s.state != StepState::Reverted)
        .map(|s| s.number)
        .collect();
    for &number in begun.iter().rev() {
        let step = j.file.steps[number - 1].clone();
        for u in step.undo.iter().rev() {
            match u {
                Undo::Path { path, backup } => {
                    let host = root.join(path.trim_start_matches('/'));
                    remove_any(&host)?;
                    if let Some(b) = backup {
                        copy_all(&backups.join(b), &host)?;
                        log(&format!("{number}. {path}: put back as it was"));
                    } else {
                        log(&format!("{number}. {path}: removed (it did not exist)"));
                    }
                }
                Undo::Package { package, version } => {
                    let undo = match version {
                        Some(v) => Step::Install {
                            package: package.clone(),
                            version: v.clone(),
                        },
                        None => Step::Purge {
                            package: package.clone(),
                        },
                    };
                    let out = exec.run(&undo)?;
                    log(&format!("{number}. {}: {out}", undo.describe()));
                }
            }
        }
        j.set(number, |s| s.state = StepState::Reverted)?;
    }
    Ok(begun.len())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    use keel_profile::{Blob, Hash};
    use keel_system::OverlayStep;

    use super::*;
    use crate::{apply, Real, Recording};

    #[test]
    fn a_rollback_can_be_reverted_from_its_journal() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("motd"), "edited\n").unwrap();
        std::fs::write(etc.join("extra.conf"), "added\n").unwrap();
        let me = std::fs::metadata(&etc).unwrap();
        let content = Hash::of(b"stock\n");
        let blobs: BTreeMap<Hash, Blob> = [(content, Blob(b"stock\n".to_vec()))].into();
        let plan = Plan {
            format: crate::PLAN_FORMAT,
            before: Hash::of(b"a"),
            after: Hash::of(b"b"),
            current: Hash::of(b"b"),
            selection: Vec::new(),
            items: Vec::new(),
            steps: vec![
                Step::Overlay {
                    overlay: OverlayStep::File {
                        path: "/etc/motd".into(),
                        content,
                        mode: 0o644,
                        uid: me.uid(),
                        gid: me.gid(),
                    },
                },
                Step::Overlay {
                    overlay: OverlayStep::Remove {
                        path: "/etc/extra.conf".into(),
                    },
                },
                Step::Purge {
                    package: "tree:amd64".into(),
                },
            ],
            blobs: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let journal = root.path().join("state/rollback.journal.json");
        let mut real = Real {
            root: root.path(),
            blobs: &blobs,
            identity: None,
        };
        apply(&plan, &mut real, Some(&journal), &mut |_| {}).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("motd")).unwrap(),
            "stock\n"
        );
        assert!(!etc.join("extra.conf").exists());

        let mut packages = Recording::default();
        let mut lines = Vec::new();
        let undone = revert(&journal, root.path(), &mut packages, &mut |l| {
            lines.push(l.to_string());
        })
        .unwrap();
        assert_eq!(undone, 3);
        assert_eq!(
            std::fs::read_to_string(etc.join("motd")).unwrap(),
            "edited\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("extra.conf")).unwrap(),
            "added\n"
        );
        // The package was not installed before: undoing its step purges it.
        assert_eq!(packages.steps, vec!["purge package tree:amd64"]);
        let j = Journal::read(&journal).unwrap().unwrap();
        assert!(j.steps.iter().all(|s| s.state == StepState::Reverted));
        assert_eq!(
            revert(&journal, root.path(), &mut packages, &mut |_| {}).unwrap(),
            0,
            "a second revert has nothing left to do"
        );
    }
}
