//! Carrying a plan out, step by step, through an [`Executor`].
//!
//! This crate has the executors that write nothing: [`DryRun`] says what each step would do,
//! [`Recording`] keeps the steps it was given (for tests). The executor that runs the commands
//! (sfdisk, mdadm, cryptsetup, LVM, mkfs, mount) implements the same trait.

use crate::error::{ApplyError, ExecError, InventoryError};
use crate::host::Host;
use crate::plan::Plan;
use crate::step::Step;

/// The error an executor reports for a step.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// Carries out steps. Steps come in plan order; `number` counts from 1.
pub trait Executor {
    /// Carries out one step.
    fn run(&mut self, number: usize, step: &Step) -> Result<(), StepError>;
}

/// Writes nothing: keeps a line per step saying what it would do.
#[derive(Debug, Default, Clone)]
pub struct DryRun {
    /// `N. would …`, one per step run.
    pub lines: Vec<String>,
}

impl Executor for DryRun {
    fn run(&mut self, number: usize, step: &Step) -> Result<(), StepError> {
        self.lines
            .push(format!("{number}. would {}", step.describe()));
        Ok(())
    }
}

/// Writes nothing: records the steps it is given, and can be told to fail at one.
#[derive(Debug, Default, Clone)]
pub struct Recording {
    /// The steps run, with their numbers.
    pub steps: Vec<(usize, Step)>,
    /// Fail at this step number (after recording it).
    pub fail_at: Option<usize>,
}

impl Executor for Recording {
    fn run(&mut self, number: usize, step: &Step) -> Result<(), StepError> {
        self.steps.push((number, step.clone()));
        if self.fail_at == Some(number) {
            return Err(format!("failing at step {number} as asked").into());
        }
        Ok(())
    }
}

/// Runs every step of `plan` in order through `exec`, stopping at the first failure. Returns
/// the number of steps run. Does not check the plan: see [`apply`].
pub fn execute(plan: &Plan, exec: &mut dyn Executor) -> Result<usize, ExecError> {
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
    host.check_safe(&current)?;
    Ok(())
}

/// Applies a plan on `host`: [`recheck`], then runs the steps. Returns the number run.
pub fn apply(plan: &Plan, host: &Host, exec: &mut dyn Executor) -> Result<usize, ApplyError> {
    recheck(plan, host)?;
    Ok(execute(plan, exec)?)
}
