//! Checking a plan against the disks present before anything is written.

use std::collections::BTreeSet;

use crate::error::CheckError;
use crate::plan::{Plan, PLAN_FORMAT};
use crate::size::human;
use crate::target::TargetDisk;

/// Checks that `plan` is one this build can apply and that `current` (the targets as they are
/// now, read again) are the disks it was made for: the same paths, sizes, sector sizes and
/// identities. Also checks that every step touches only the plan's target disks.
pub fn check(plan: &Plan, current: &[TargetDisk]) -> Result<(), CheckError> {
    if plan.format > PLAN_FORMAT {
        return Err(CheckError::Format {
            found: plan.format,
            supported: PLAN_FORMAT,
        });
    }
    let mut problems = Vec::new();
    for was in &plan.inventory {
        let Some(now) = current.iter().find(|c| c.path == was.path) else {
            problems.push(format!(
                "{}: not present (the plan was made for {})",
                was.path,
                was.describe()
            ));
            continue;
        };
        if now.size_bytes != was.size_bytes {
            problems.push(format!(
                "{}: size was {} ({} bytes), now {} ({} bytes)",
                was.path,
                human(was.size_bytes),
                was.size_bytes,
                human(now.size_bytes),
                now.size_bytes
            ));
        }
        if now.logical_sector_size != was.logical_sector_size {
            problems.push(format!(
                "{}: logical sector size was {}, now {}",
                was.path, was.logical_sector_size, now.logical_sector_size
            ));
        }
        let fields = [
            ("WWN", &was.wwn, &now.wwn),
            ("serial number", &was.serial, &now.serial),
            ("model", &was.model, &now.model),
            ("image file", &was.backing_file, &now.backing_file),
        ];
        for (what, a, b) in fields {
            if a != b {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
                problems.push(format!(
                    "{}: {what} was {}, now {}: a different disk",
                    was.path,
                    show(a),
                    show(b)
                ));
            }
        }
        if now.kind != was.kind {
            problems.push(format!(
                "{}: was a {} disk, now {}",
                was.path, was.kind, now.kind
            ));
        }
    }
    if !problems.is_empty() {
        return Err(CheckError::Changed(problems));
    }
    let planned: BTreeSet<&str> = plan.inventory.iter().map(|t| t.path.as_str()).collect();
    for (i, step) in plan.steps.iter().enumerate() {
        for d in step.devices() {
            if let Some(disk) = d.disk() {
                if !planned.contains(disk) {
                    return Err(CheckError::NotInPlan {
                        step: i + 1,
                        device: d.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}
