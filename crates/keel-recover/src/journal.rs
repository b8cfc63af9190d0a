//! The journal of an apply: a JSON file recording, for one plan, each step's state with times
//! and what it did, written and synced before and after every step. A rerun reads it, checks
//! that the steps it records as done still hold, and goes on from the first one that is not.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::JournalError;
use crate::plan::Plan;

/// The journal format this build writes and reads.
pub const JOURNAL_FORMAT: u32 = 1;

/// Where the rebuilt system is mounted unless told otherwise.
pub const DEFAULT_TARGET_ROOT: &str = "/mnt/keel-target";

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not run yet.
    Pending,
    /// Begun, and not known to have finished: the run was interrupted.
    Started,
    /// Finished, and its result checked.
    Done,
    /// Failed; run again on the next apply.
    Failed,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStep {
    /// The step's number, from 1.
    pub number: usize,
    /// What the step does.
    pub description: String,
    /// Where it is.
    pub state: StepState,
    /// How many times it was begun.
    #[serde(default)]
    pub attempts: u32,
    /// When it was last begun, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// When it last finished or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    /// How long its last run took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What it did, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a later run last checked that its result still holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct File {
    format: u32,
    /// BLAKE3 of the plan's JSON.
    plan_hash: String,
    /// The directory the plan's mounts go under.
    target_root: PathBuf,
    created_at_ms: i64,
    updated_at_ms: i64,
    steps: Vec<JournalStep>,
}

/// The journal of applying one plan.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    on_disk: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Journal {
    /// The journal of the plan at `plan_path` unless one is given: next to it, `NAME.json` →
    /// `NAME.journal.json`.
    pub fn default_path(plan_path: &Path) -> PathBuf {
        let stem = plan_path
            .file_stem()
            .map_or_else(|| "plan".into(), |s| s.to_string_lossy().into_owned());
        plan_path.with_file_name(format!("{stem}.journal.json"))
    }

    /// BLAKE3 of the plan's JSON: what ties a journal to its plan.
    pub fn plan_hash(plan: &Plan) -> String {
        blake3::hash(plan.to_json().as_bytes()).to_hex().to_string()
    }

    /// Reads the journal at `path`, if there is one; changes nothing.
    pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let unreadable = |why: String| JournalError::Unreadable {
            path: path.to_path_buf(),
            why,
        };
        let file: File = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        if file.format > JOURNAL_FORMAT {
            return Err(unreadable(format!(
                "format {} (this keel reads up to {JOURNAL_FORMAT})",
                file.format
            )));
        }
        Ok(Some(Journal {
            path: path.to_path_buf(),
            file,
            on_disk: true,
        }))
    }

    /// The journal of applying `plan`: the one at `path` if there is one (it must be this
    /// plan's, and have this target root when one is given), else a new one, written when the
    /// first step begins. The target root is [`DEFAULT_TARGET_ROOT`] when neither the caller
    /// nor the journal names one.
    pub fn open(
        path: &Path,
        plan: &Plan,
        target_root: Option<&Path>,
    ) -> Result<Journal, JournalError> {
        let hash = Journal::plan_hash(plan);
        if let Some(j) = Journal::load(path)? {
            if j.file.plan_hash != hash {
                return Err(JournalError::OtherPlan {
                    path: path.to_path_buf(),
                    found: j.file.plan_hash,
                    expected: hash,
                });
            }
            if let Some(given) = target_root {
                if given != j.file.target_root {
                    return Err(JournalError::OtherRoot {
                        path: path.to_path_buf(),
                        recorded: j.file.target_root,
                        given: given.to_path_buf(),
                    });
                }
            }
            if j.file.steps.len() != plan.steps.len() {
                return Err(JournalError::Unreadable {
                    path: path.to_path_buf(),
                    why: format!(
                        "it records {} steps for a plan of {}",
                        j.file.steps.len(),
                        plan.steps.len()
                    ),
                });
            }
            return Ok(j);
        }
        let now = now_ms();
        Ok(Journal {
            path: path.to_path_buf(),
            file: File {
                format: JOURNAL_FORMAT,
                plan_hash: hash,
                target_root: target_root
                    .map_or_else(|| PathBuf::from(DEFAULT_TARGET_ROOT), Path::to_path_buf),
                created_at_ms: now,
                updated_at_ms: now,
                steps: plan
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| JournalStep {
                        number: i + 1,
                        description: s.describe(),
                        state: StepState::Pending,
                        attempts: 0,
                        started_at_ms: None,
                        finished_at_ms: None,
                        duration_ms: None,
                        output: None,
                        error: None,
                        verified_at_ms: None,
                    })
                    .collect(),
            },
            on_disk: false,
        })
    }

    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the plan's mounts go under.
    pub fn target_root(&self) -> &Path {
        &self.file.target_root
    }

    /// The plan hash it records.
    pub fn hash(&self) -> &str {
        &self.file.plan_hash
    }

    /// Every step's record, in plan order.
    pub fn steps(&self) -> &[JournalStep] {
        &self.file.steps
    }

    /// The state of step `number` (from 1).
    pub fn state(&self, number: usize) -> StepState {
        self.file
            .steps
            .get(number.wrapping_sub(1))
            .map_or(StepState::Pending, |s| s.state)
    }

    /// How many steps are done.
    pub fn done(&self) -> usize {
        self.file
            .steps
            .iter()
            .filter(|s| s.state == StepState::Done)
            .count()
    }

    /// Whether it has been written yet.
    pub fn exists(&self) -> bool {
        self.on_disk
    }

    fn step(&mut self, number: usize) -> &mut JournalStep {
        &mut self.file.steps[number - 1]
    }

    /// Records that step `number` begins, and writes the journal.
    pub(crate) fn started(&mut self, number: usize) -> Result<(), JournalError> {
        let now = now_ms();
        let s = self.step(number);
        s.state = StepState::Started;
        s.attempts += 1;
        s.started_at_ms = Some(now);
        s.finished_at_ms = None;
        s.duration_ms = None;
        s.error = None;
        s.output = None;
        self.save()
    }

    /// Records that step `number` is done, and writes the journal.
    pub(crate) fn finished(
        &mut self,
        number: usize,
        output: String,
        took: Duration,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        let s = self.step(number);
        s.state = StepState::Done;
        s.finished_at_ms = Some(now);
        s.duration_ms = Some(took.as_millis() as u64);
        s.output = Some(output);
        self.save()
    }

    /// Records that step `number` failed, and writes the journal.
    pub(crate) fn failed(
        &mut self,
        number: usize,
        error: String,
        took: Duration,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        let s = self.step(number);
        s.state = StepState::Failed;
        s.finished_at_ms = Some(now);
        s.duration_ms = Some(took.as_millis() as u64);
        s.error = Some(error);
        self.save()
    }

    /// Records that a done step was checked and still holds, and writes the journal.
    pub(crate) fn verified(&mut self, number: usize) -> Result<(), JournalError> {
        let now = now_ms();
        self.step(number).verified_at_ms = Some(now);
        self.save()
    }

    /// Writes the journal: a temporary file in the same directory, synced, renamed over the
    /// old one, and the directory synced, so that a crash leaves the old or the new journal,
    /// never a torn one.
    fn save(&mut self) -> Result<(), JournalError> {
        self.file.updated_at_ms = now_ms();
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(&self.file).expect("a journal serialises") + "\n";
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.on_disk = true;
        Ok(())
    }
}

/// Takes an exclusive lock on `path` (the plan file) for as long as the returned file is open,
/// so that two applies of one plan cannot run at once.
pub fn lock(path: &Path) -> Result<std::fs::File, JournalError> {
    let f = std::fs::File::open(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Busy {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(JournalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sample, GIB};

    fn a_plan() -> Plan {
        let profile = sample::raid_lvm_profile();
        let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
        crate::plan(&profile, &t, &crate::PlanOptions::default()).unwrap()
    }

    #[test]
    fn records_resumes_and_refuses_another_plan() {
        let dir = tempfile::tempdir().unwrap();
        let plan = a_plan();
        let path = Journal::default_path(&dir.path().join("plan.json"));
        assert_eq!(path, dir.path().join("plan.journal.json"));
        let mut j = Journal::open(&path, &plan, None).unwrap();
        assert!(
            !j.exists() && !path.exists(),
            "nothing written before a step begins"
        );
        assert_eq!(j.target_root(), Path::new(DEFAULT_TARGET_ROOT));
        j.started(1).unwrap();
        assert!(path.exists());
        j.finished(1, "erased 2 signatures".into(), Duration::from_millis(12))
            .unwrap();
        j.started(2).unwrap();
        j.failed(2, "sfdisk failed".into(), Duration::from_millis(3))
            .unwrap();
        j.started(3).unwrap();

        let back = Journal::open(&path, &plan, Some(Path::new(DEFAULT_TARGET_ROOT))).unwrap();
        assert_eq!(back.state(1), StepState::Done);
        assert_eq!(back.state(2), StepState::Failed);
        assert_eq!(back.state(3), StepState::Started);
        assert_eq!(back.state(4), StepState::Pending);
        assert_eq!(back.done(), 1);
        assert_eq!(
            back.steps()[0].output.as_deref(),
            Some("erased 2 signatures")
        );
        assert_eq!(back.steps()[0].duration_ms, Some(12));
        assert_eq!(back.steps()[1].error.as_deref(), Some("sfdisk failed"));

        let e = Journal::open(&path, &plan, Some(Path::new("/elsewhere"))).unwrap_err();
        assert!(matches!(e, JournalError::OtherRoot { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("hint: resume with --target-root /mnt/keel-target"));

        let mut other = plan.clone();
        other.steps.pop();
        let e = Journal::open(&path, &other, None).unwrap_err();
        assert!(matches!(e, JournalError::OtherPlan { .. }), "{e}");
        assert!(
            e.to_string().contains("is the journal of another plan"),
            "{e}"
        );

        std::fs::write(&path, "{").unwrap();
        let e = Journal::open(&path, &plan, None).unwrap_err();
        assert!(matches!(e, JournalError::Unreadable { .. }), "{e}");
    }

    #[test]
    fn one_apply_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        std::fs::write(&p, "{}").unwrap();
        let held = lock(&p).unwrap();
        let e = lock(&p).unwrap_err();
        assert!(matches!(e, JournalError::Busy { .. }), "{e}");
        drop(held);
        lock(&p).unwrap();
    }
}
