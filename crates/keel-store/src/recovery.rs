//! Recovery machines and recovery jobs: the part of the store behind point-and-click and batch
//! recovery. A machine booted into a rescue system registers with its inventory and asks for
//! work; an admin plans a host's recovery onto it, starts it, and the machine takes it,
//! reports each phase and finishes with its report.
//!
//! A job goes `planned` → `queued` (started) → `running` (taken by its machine) → `done` or
//! `failed`. A machine runs one job at a time: a second cannot be started while one is queued
//! or running on it.

use keel_profile::Hash;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, SqliteStore, StoreError};

/// A machine to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMachine {
    /// What the machine calls itself.
    pub name: String,
    /// The hash of the token it authenticates with from now on.
    pub token_hash: Hash,
    /// Its inventory (disks, NICs, firmware) as JSON.
    pub inventory: serde_json::Value,
    /// When, ms.
    pub now: i64,
}

/// A registered machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Store id.
    pub id: i64,
    /// What the machine calls itself.
    pub name: String,
    /// Its inventory as it reported it.
    pub inventory: serde_json::Value,
    /// When it registered, ms.
    pub registered_at_ms: i64,
    /// When it last asked for work, ms.
    pub seen_at_ms: i64,
    /// The recovery queued or running on it, if any.
    pub busy_with: Option<i64>,
}

/// A recovery to store, as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecovery {
    /// The host recovered.
    pub host_id: i64,
    /// Its profile rebuilt.
    pub profile_id: i64,
    /// The machine it is rebuilt on.
    pub machine_id: i64,
    /// The plan (keel-recover's JSON).
    pub plan: serde_json::Value,
    /// The NIC map shown with the plan.
    pub nics: serde_json::Value,
    /// Who planned it.
    pub created_by: String,
    /// When, ms.
    pub now: i64,
}

/// How a running recovery ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryEnd {
    /// True for `done`, false for `failed`.
    pub ok: bool,
    /// Why it failed.
    pub reason: Option<String>,
    /// The machine's recovery report.
    pub report: Option<serde_json::Value>,
}

/// A stored recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// Store id.
    pub id: i64,
    /// The host's id.
    pub host_id: i64,
    /// The host's name.
    pub host: String,
    /// The profile rebuilt.
    pub profile_id: i64,
    /// The machine's id.
    pub machine_id: i64,
    /// The machine's name.
    pub machine: String,
    /// The plan.
    pub plan: serde_json::Value,
    /// The NIC map shown with the plan.
    pub nics: serde_json::Value,
    /// `planned`, `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    /// The phase the machine reported last.
    pub phase: Option<String>,
    /// Every phase event the machine reported, in order.
    pub progress: Vec<serde_json::Value>,
    /// The machine's recovery report, with the verification.
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Who planned it.
    pub created_by: String,
    /// When, ms.
    pub created_at_ms: i64,
    /// Who started it.
    pub started_by: Option<String>,
    /// When, ms.
    pub started_at_ms: Option<i64>,
    /// When the machine took it, ms.
    pub taken_at_ms: Option<i64>,
    /// When it ended, ms.
    pub finished_at_ms: Option<i64>,
}

/// The store of recovery machines and recovery jobs. Every method is blocking.
pub trait RecoveryStore: Send + Sync {
    /// Registers a machine.
    fn register_machine(&self, machine: &NewMachine) -> Result<MachineRecord>;
    /// One machine.
    fn machine(&self, id: i64) -> Result<Option<MachineRecord>>;
    /// The machine whose token has this hash.
    fn machine_by_token(&self, token_hash: &Hash) -> Result<Option<MachineRecord>>;
    /// Machines, most recently seen first.
    fn machines(&self, limit: u32) -> Result<Vec<MachineRecord>>;
    /// Stores a planned recovery.
    fn create_recovery(&self, job: &NewRecovery) -> Result<RecoveryRecord>;
    /// One recovery.
    fn recovery(&self, id: i64) -> Result<Option<RecoveryRecord>>;
    /// Recoveries, newest first.
    fn recoveries(&self, limit: u32) -> Result<Vec<RecoveryRecord>>;
    /// Starts a planned recovery (it waits for its machine); refused when the machine has
    /// another one queued or running.
    fn start_recovery(&self, id: i64, by: &str, now: i64) -> Result<RecoveryRecord>;
    /// Cancels a recovery its machine has not taken yet (planned or queued); one that is
    /// running or has ended is a conflict.
    fn cancel_recovery(&self, id: i64, by: &str, now: i64) -> Result<RecoveryRecord>;
    /// The machine's queued recovery (or the one it was running when interrupted), now
    /// running; also records that the machine asked.
    fn take_recovery(&self, machine_id: i64, now: i64) -> Result<Option<RecoveryRecord>>;
    /// Appends a phase event to a running recovery of this machine.
    fn record_progress(
        &self,
        id: i64,
        machine_id: i64,
        event: &serde_json::Value,
    ) -> Result<RecoveryRecord>;
    /// Ends a running recovery of this machine.
    fn finish_recovery(
        &self,
        id: i64,
        machine_id: i64,
        end: &RecoveryEnd,
        now: i64,
    ) -> Result<RecoveryRecord>;
}

const MACHINE_COLS: &str = "m.id, m.name, m.inventory, m.registered_at, m.seen_at,
    (SELECT r.id FROM recoveries r WHERE r.machine_id = m.id AND r.status IN ('queued', 'running')
     ORDER BY r.id LIMIT 1)";

fn machine_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(MachineRecord, String)> {
    Ok((
        MachineRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            inventory: serde_json::Value::Null,
            registered_at_ms: r.get(3)?,
            seen_at_ms: r.get(4)?,
            busy_with: r.get(5)?,
        },
        r.get(2)?,
    ))
}

fn finish_machine((mut m, inventory): (MachineRecord, String)) -> Result<MachineRecord> {
    m.inventory = serde_json::from_str(&inventory)
        .map_err(|e| StoreError::Corrupt(format!("machine {}: {e}", m.id)))?;
    Ok(m)
}

fn machine_where(
    c: &Connection,
    clause: &str,
    p: impl rusqlite::Params,
) -> Result<Option<MachineRecord>> {
    let row = c
        .query_row(
            &format!("SELECT {MACHINE_COLS} FROM machines m WHERE {clause}"),
            p,
            machine_row,
        )
        .optional()?;
    row.map(finish_machine).transpose()
}

const RECOVERY_COLS: &str = "r.id, r.host_id, h.name, r.profile_id, r.machine_id, m.name, r.plan,
    r.status, r.phase, r.progress, r.report, r.reason, r.created_by, r.created_at, r.started_by,
    r.started_at, r.taken_at, r.finished_at, r.nics";

type RecoveryRow = (RecoveryRecord, String, String, Option<String>, String);

fn recovery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecoveryRow> {
    Ok((
        RecoveryRecord {
            id: r.get(0)?,
            host_id: r.get(1)?,
            host: r.get(2)?,
            profile_id: r.get(3)?,
            machine_id: r.get(4)?,
            machine: r.get(5)?,
            plan: serde_json::Value::Null,
            nics: serde_json::Value::Null,
            status: r.get(7)?,
            phase: r.get(8)?,
            progress: Vec::new(),
            report: None,
            reason: r.get(11)?,
            created_by: r.get(12)?,
            created_at_ms: r.get(13)?,
            started_by: r.get(14)?,
            started_at_ms: r.get(15)?,
            taken_at_ms: r.get(16)?,
            finished_at_ms: r.get(17)?,
        },
        r.get(6)?,
        r.get(9)?,
        r.get(10)?,
        r.get(18)?,
    ))
}

fn finish_recovery_row(
    (mut j, plan, progress, report, nics): RecoveryRow,
) -> Result<RecoveryRecord> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("recovery {}: {e}", j.id));
    j.plan = serde_json::from_str(&plan).map_err(corrupt)?;
    j.nics = serde_json::from_str(&nics).map_err(corrupt)?;
    j.progress = serde_json::from_str(&progress).map_err(corrupt)?;
    j.report = report
        .map(|r| serde_json::from_str(&r))
        .transpose()
        .map_err(corrupt)?;
    Ok(j)
}

fn recovery_by_id(c: &Connection, id: i64) -> Result<Option<RecoveryRecord>> {
    let row = c
        .query_row(
            &format!(
                "SELECT {RECOVERY_COLS} FROM recoveries r JOIN hosts h ON h.id = r.host_id
                 JOIN machines m ON m.id = r.machine_id WHERE r.id = ?1"
            ),
            [id],
            recovery_row,
        )
        .optional()?;
    row.map(finish_recovery_row).transpose()
}

fn must(c: &Connection, id: i64) -> Result<RecoveryRecord> {
    recovery_by_id(c, id)?.ok_or_else(|| StoreError::NotFound(format!("recovery {id}")))
}

/// The recovery, which must be `status` and of `machine_id`.
fn running_of(c: &Connection, id: i64, machine_id: i64) -> Result<RecoveryRecord> {
    let job = must(c, id)?;
    if job.machine_id != machine_id {
        return Err(StoreError::Conflict(format!(
            "recovery {id} is not for this machine"
        )));
    }
    if job.status != "running" {
        return Err(StoreError::Conflict(format!(
            "recovery {id} is {}, not running",
            job.status
        )));
    }
    Ok(job)
}

impl RecoveryStore for SqliteStore {
    fn register_machine(&self, m: &NewMachine) -> Result<MachineRecord> {
        self.write(|c| {
            c.execute(
                "INSERT INTO machines (name, token_hash, inventory, registered_at, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![m.name, &m.token_hash.0[..], m.inventory.to_string(), m.now],
            )?;
            let id = c.last_insert_rowid();
            machine_where(c, "m.id = ?1", [id])?
                .ok_or_else(|| StoreError::NotFound(format!("machine {id}")))
        })
    }

    fn machine(&self, id: i64) -> Result<Option<MachineRecord>> {
        self.read(|c| machine_where(c, "m.id = ?1", [id]))
    }

    fn machine_by_token(&self, token_hash: &Hash) -> Result<Option<MachineRecord>> {
        self.read(|c| machine_where(c, "m.token_hash = ?1", [&token_hash.0[..]]))
    }

    fn machines(&self, limit: u32) -> Result<Vec<MachineRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MACHINE_COLS} FROM machines m ORDER BY m.seen_at DESC, m.id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit], machine_row)?;
            rows.map(|r| finish_machine(r?)).collect()
        })
    }

    fn create_recovery(&self, job: &NewRecovery) -> Result<RecoveryRecord> {
        self.write(|c| {
            let owner: Option<i64> = c
                .query_row(
                    "SELECT host_id FROM profiles WHERE id = ?1",
                    [job.profile_id],
                    |r| r.get(0),
                )
                .optional()?;
            if owner != Some(job.host_id) {
                return Err(StoreError::NotFound(format!(
                    "profile {} of the host",
                    job.profile_id
                )));
            }
            c.execute(
                "INSERT INTO recoveries
                     (host_id, profile_id, machine_id, plan, created_by, created_at, nics)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.host_id,
                    job.profile_id,
                    job.machine_id,
                    job.plan.to_string(),
                    job.created_by,
                    job.now,
                    job.nics.to_string()
                ],
            )?;
            must(c, c.last_insert_rowid())
        })
    }

    fn recovery(&self, id: i64) -> Result<Option<RecoveryRecord>> {
        self.read(|c| recovery_by_id(c, id))
    }

    fn recoveries(&self, limit: u32) -> Result<Vec<RecoveryRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RECOVERY_COLS} FROM recoveries r JOIN hosts h ON h.id = r.host_id
                 JOIN machines m ON m.id = r.machine_id ORDER BY r.id DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit], recovery_row)?;
            rows.map(|r| finish_recovery_row(r?)).collect()
        })
    }

    fn start_recovery(&self, id: i64, by: &str, now: i64) -> Result<RecoveryRecord> {
        self.write(|c| {
            let tx = c.transaction()?;
            let job = must(&tx, id)?;
            if job.status != "planned" {
                return Err(StoreError::Conflict(format!(
                    "recovery {id} is {}, not planned: only a planned recovery can be started",
                    job.status
                )));
            }
            let other: Option<i64> = tx
                .query_row(
                    "SELECT id FROM recoveries WHERE machine_id = ?1 AND status IN ('queued', 'running')",
                    [job.machine_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                return Err(StoreError::Conflict(format!(
                    "machine {} is busy with recovery {other}",
                    job.machine
                )));
            }
            tx.execute(
                "UPDATE recoveries SET status = 'queued', started_by = ?1, started_at = ?2 WHERE id = ?3",
                params![by, now, id],
            )?;
            let job = must(&tx, id)?;
            tx.commit()?;
            Ok(job)
        })
    }

    fn cancel_recovery(&self, id: i64, by: &str, now: i64) -> Result<RecoveryRecord> {
        self.write(|c| {
            let tx = c.transaction()?;
            let job = must(&tx, id)?;
            // One statement: a machine taking the job at the same moment either took it first
            // (running: refused here) or finds it cancelled.
            let changed = tx.execute(
                "UPDATE recoveries SET status = 'cancelled', reason = ?1, finished_at = ?2
                 WHERE id = ?3 AND status IN ('planned', 'queued')",
                params![format!("cancelled by {by}"), now, id],
            )?;
            if changed == 0 {
                let why = if job.status == "running" {
                    "its machine is already rebuilding the disks; a recovery cannot be stopped \
                     halfway (if the machine stops, a rerun resumes it from its journal)"
                } else {
                    "it has ended"
                };
                return Err(StoreError::Conflict(format!(
                    "recovery {id} is {}: {why}",
                    job.status
                )));
            }
            let job = must(&tx, id)?;
            tx.commit()?;
            Ok(job)
        })
    }

    fn take_recovery(&self, machine_id: i64, now: i64) -> Result<Option<RecoveryRecord>> {
        self.write(|c| {
            c.execute(
                "UPDATE machines SET seen_at = ?1 WHERE id = ?2",
                params![now, machine_id],
            )?;
            let id: Option<i64> = c
                .query_row(
                    "SELECT id FROM recoveries WHERE machine_id = ?1 AND status IN ('queued', 'running')
                     ORDER BY id LIMIT 1",
                    [machine_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            c.execute(
                "UPDATE recoveries SET status = 'running', taken_at = coalesce(taken_at, ?1)
                 WHERE id = ?2",
                params![now, id],
            )?;
            recovery_by_id(c, id)
        })
    }

    fn record_progress(
        &self,
        id: i64,
        machine_id: i64,
        event: &serde_json::Value,
    ) -> Result<RecoveryRecord> {
        self.write(|c| {
            let mut job = running_of(c, id, machine_id)?;
            job.progress.push(event.clone());
            let phase = event["phase"].as_str().map(String::from).or(job.phase);
            let progress = serde_json::Value::Array(job.progress).to_string();
            c.execute(
                "UPDATE recoveries SET progress = ?1, phase = ?2 WHERE id = ?3",
                params![progress, phase, id],
            )?;
            must(c, id)
        })
    }

    fn finish_recovery(
        &self,
        id: i64,
        machine_id: i64,
        end: &RecoveryEnd,
        now: i64,
    ) -> Result<RecoveryRecord> {
        let status = if end.ok { "done" } else { "failed" };
        self.write(|c| {
            running_of(c, id, machine_id)?;
            c.execute(
                "UPDATE recoveries SET status = ?1, reason = ?2, report = ?3, finished_at = ?4
                 WHERE id = ?5",
                params![
                    status,
                    end.reason,
                    end.report.as_ref().map(ToString::to_string),
                    now,
                    id
                ],
            )?;
            must(c, id)
        })
    }
}
