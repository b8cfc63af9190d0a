//! Carrying a plan out, step by step, through an [`Executor`].
//!
//! Three executors implement the trait: [`crate::System`] runs the tools (sfdisk, mdadm,
//! cryptsetup, LVM, mkfs, mount), [`DryRun`] says what each step would do, [`Recording`] keeps
//! the steps it was given (for tests). [`apply_journaled`] runs a plan with a [`Journal`], so
//! that a rerun after an interruption checks what was done and goes on from there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ApplyError, ExecError, InventoryError, Refusal, RefusalReason, SafetyError};
use crate::host::Host;
use crate::journal::{Journal, StepState};
use crate::plan::Plan;
use crate::step::Step;
use crate::target::Device;

/// The error an executor reports for a step.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// Carries out steps. Steps come in plan order; `number` counts from 1.
pub trait Executor {
    /// Gets ready to run `plan`, once, after it was checked and before its first step (the
    /// real executor attaches image files to loop devices here).
    fn prepare(&mut self, plan: &Plan) -> Result<(), StepError> {
        let _ = plan;
        Ok(())
    }

    /// What the step does, in one line, as this executor does it (for progress).
    fn label(&self, step: &Step) -> String {
        step.describe()
    }

    /// Carries out one step; returns what it did, in one line, for the journal.
    fn run(&mut self, number: usize, step: &Step) -> Result<String, StepError>;

    /// For a step an earlier run finished: checks that its result still holds, and brings
    /// back what a new process has to (assembles the array, opens the LUKS volume, activates
    /// the volume group, mounts again), without redoing what writes to the disks. Returns
    /// what it found, in one line. By default trusts the journal.
    fn resume(&mut self, number: usize, step: &Step) -> Result<String, StepError> {
        let _ = (number, step);
        Ok("done earlier".into())
    }
}

/// Writes nothing: keeps a line per step saying what it would do.
#[derive(Debug, Default, Clone)]
pub struct DryRun {
    /// `N. would …`, one per step run.
    pub lines: Vec<String>,
}

impl Executor for DryRun {
    fn run(&mut self, number: usize, step: &Step) -> Result<String, StepError> {
        let line = format!("would {}", step.describe());
        self.lines.push(format!("{number}. {line}"));
        Ok(line)
    }
}

/// Writes nothing: records the steps it is given, and can be told to fail at one.
#[derive(Debug, Default, Clone)]
pub struct Recording {
    /// The steps run, with their numbers.
    pub steps: Vec<(usize, Step)>,
    /// The numbers of the steps it was asked to check as done earlier.
    pub resumed: Vec<usize>,
    /// Fail at this step number (after recording it).
    pub fail_at: Option<usize>,
}

impl Executor for Recording {
    fn run(&mut self, number: usize, step: &Step) -> Result<String, StepError> {
        self.steps.push((number, step.clone()));
        if self.fail_at == Some(number) {
            return Err(format!("failing at step {number} as asked").into());
        }
        Ok("recorded".into())
    }

    fn resume(&mut self, number: usize, _step: &Step) -> Result<String, StepError> {
        self.resumed.push(number);
        Ok("done earlier".into())
    }
}

/// Runs every step of `plan` in order through `exec`, stopping at the first failure. Returns
/// the number of steps run. Does not check the plan, and keeps no journal: see [`apply`] and
/// [`apply_journaled`].
pub fn execute(plan: &Plan, exec: &mut dyn Executor) -> Result<usize, ExecError> {
    exec.prepare(plan).map_err(|e| ExecError {
        step: 0,
        description: "getting ready".into(),
        message: e.to_string(),
    })?;
    for (i, step) in plan.steps.iter().enumerate() {
        exec.run(i + 1, step).map_err(|e| ExecError {
            step: i + 1,
            description: step.describe(),
            message: e.to_string(),
        })?;
    }
    Ok(plan.steps.len())
}

/// Checks a plan against `host` as it is now: reads its target disks again, checks them
/// against the plan ([`crate::check`]) and that none is in use ([`Host::check_safe`]).
pub fn recheck(plan: &Plan, host: &Host) -> Result<(), ApplyError> {
    recheck_with(plan, host, &|_| false)
}

/// [`recheck`], leaving out the refusals `excused` accepts.
fn recheck_with(
    plan: &Plan,
    host: &Host,
    excused: &dyn Fn(&Refusal) -> bool,
) -> Result<(), ApplyError> {
    // A target that is gone is reported by the check, with what it was.
    let mut current = Vec::new();
    for t in &plan.inventory {
        match host.target(&t.path) {
            Ok(d) => current.push(d),
            Err(InventoryError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    crate::check::check(plan, &current)?;
    match host.check_safe(&current) {
        Ok(()) => Ok(()),
        Err(SafetyError::Refused(found)) => {
            let left: Vec<Refusal> = found.into_iter().filter(|r| !excused(r)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(SafetyError::Refused(left).into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a refusal is about something an earlier apply of `plan` made: a mount under the
/// target root, or one of the plan's arrays, LUKS volumes or logical volumes. Never the
/// running system or swap.
fn made_by_plan(plan: &Plan, root: &Path, r: &Refusal) -> bool {
    let mut ours: Vec<String> = Vec::new();
    for step in &plan.steps {
        match step {
            Step::CreateRaid { device, .. } => ours.push(device.to_string()),
            Step::CreateLuks { name, .. } => {
                ours.push(Device::Crypt { name: name.clone() }.to_string());
            }
            Step::CreateLv { vg, name, .. } => ours.push(format!(
                "/dev/mapper/{}-{}",
                vg.replace('-', "--"),
                name.replace('-', "--")
            )),
            _ => {}
        }
    }
    match &r.reason {
        RefusalReason::Mounted { mountpoint, .. } => {
            root != Path::new("/") && Path::new(mountpoint).starts_with(root)
        }
        RefusalReason::RaidMember { array, .. } => ours.contains(array),
        RefusalReason::Held { holder, .. } => ours.contains(holder),
        RefusalReason::RunningSystem { .. } | RefusalReason::Swap { .. } => false,
    }
}

/// [`recheck`] for a plan applied with `journal`: when the journal records an earlier run,
/// what that run made (mounts under its target root, the plan's arrays, LUKS volumes and
/// logical volumes) does not count as in use; the running system's disk, swap and anything
/// else still do.
pub fn recheck_resuming(plan: &Plan, host: &Host, journal: &Journal) -> Result<(), ApplyError> {
    let resuming = journal
        .steps()
        .iter()
        .any(|s| s.state != StepState::Pending);
    if resuming {
        let root: PathBuf = std::fs::canonicalize(journal.target_root())
            .unwrap_or_else(|_| journal.target_root().to_path_buf());
        recheck_with(plan, host, &|r| made_by_plan(plan, &root, r))
    } else {
        recheck(plan, host)
    }
}

/// Applies a plan on `host`: [`recheck`], then runs the steps. Returns the number run.
pub fn apply(plan: &Plan, host: &Host, exec: &mut dyn Executor) -> Result<usize, ApplyError> {
    recheck(plan, host)?;
    Ok(execute(plan, exec)?)
}

/// Hears how an apply goes, step by step. Every method does nothing by default; `()` is a
/// progress that hears nothing.
pub trait Progress {
    /// Step `number` of `total` begins.
    fn begin(&mut self, number: usize, total: usize, label: &str) {
        let _ = (number, total, label);
    }
    /// Step `number` is done.
    fn done(&mut self, number: usize, total: usize, took: Duration, output: &str) {
        let _ = (number, total, took, output);
    }
    /// Step `number` was done by an earlier run, and still holds.
    fn verified(&mut self, number: usize, total: usize, label: &str, took: Duration, output: &str) {
        let _ = (number, total, label, took, output);
    }
    /// Step `number` failed.
    fn failed(&mut self, number: usize, total: usize, took: Duration, error: &str) {
        let _ = (number, total, took, error);
    }
}

impl Progress for () {}

/// How a journaled apply went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The steps run now, by number.
    pub run: Vec<usize>,
    /// The steps an earlier run did, checked now, by number.
    pub verified: Vec<usize>,
    /// How long it all took.
    pub took: Duration,
}

/// Applies a plan with a journal: checks the plan against `host` ([`recheck`]; when resuming,
/// what the journal's earlier run made — mounts under its target root, the plan's arrays and
/// volumes — does not count as in use), then goes through the steps in order. A step the
/// journal records as done is checked with [`Executor::resume`]; any other is run, the journal
/// written and synced before and after it. Stops at the first failure; a rerun with the same
/// journal goes on from there.
pub fn apply_journaled(
    plan: &Plan,
    host: &Host,
    exec: &mut dyn Executor,
    journal: &mut Journal,
    progress: &mut dyn Progress,
) -> Result<Applied, ApplyError> {
    let started = Instant::now();
    recheck_resuming(plan, host, journal)?;
    exec.prepare(plan)
        .map_err(|e| ApplyError::Prepare(e.to_string()))?;
    let total = plan.steps.len();
    let mut applied = Applied::default();
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        let label = exec.label(step);
        let t = Instant::now();
        if journal.state(n) == StepState::Done {
            match exec.resume(n, step) {
                Ok(out) => {
                    journal.verified(n)?;
                    progress.verified(n, total, &label, t.elapsed(), &out);
                    applied.verified.push(n);
                    continue;
                }
                Err(e) => {
                    return Err(ApplyError::Resume {
                        step: n,
                        description: step.describe(),
                        message: e.to_string(),
                    })
                }
            }
        }
        progress.begin(n, total, &label);
        journal.started(n)?;
        match exec.run(n, step) {
            Ok(out) => {
                let took = t.elapsed();
                journal.finished(n, out.clone(), took)?;
                progress.done(n, total, took, &out);
                applied.run.push(n);
            }
            Err(e) => {
                let took = t.elapsed();
                let message = e.to_string();
                // The step's own error matters more; a journal left at "started" reruns it.
                let _ = journal.failed(n, message.clone(), took);
                progress.failed(n, total, took, &message);
                return Err(ExecError {
                    step: n,
                    description: step.describe(),
                    message,
                }
                .into());
            }
        }
    }
    applied.took = started.elapsed();
    Ok(applied)
}
