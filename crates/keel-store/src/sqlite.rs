//! The embedded SQLite backend.

use std::path::Path;
use std::sync::Mutex;

use keel_profile::{Change, Hash};
use rusqlite::{params, Connection, OptionalExtension};

use keel_schedule::{HostState, Schedule};

use crate::{
    AgentRecord, AlertRecord, DeliveryRecord, HostRecord, Ingest, NewAgent, NewAlert, NewRollback,
    Notification, ProfileSummary, Result, RollbackEnd, RollbackRecord, Store, StoreError,
    TokenKind, MISSING_RULE,
};

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_rules_alerts.sql"),
    include_str!("../migrations/0003_watch_notify.sql"),
    include_str!("../migrations/0004_profile_deltas.sql"),
    include_str!("../migrations/0005_rollbacks.sql"),
    include_str!("../migrations/0006_users.sql"),
    include_str!("../migrations/0007_recovery.sql"),
    include_str!("../migrations/0008_recovery_nics.sql"),
];

/// SQLite in WAL mode: one writer connection, one reader connection, so reads never wait for
/// a write transaction. `synchronous = FULL`: a committed ingest survives power loss, which is
/// what an acknowledgement promises.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Option<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |detail: String| StoreError::Open {
            path: path.display().to_string(),
            detail,
        };
        let writer = Connection::open(path).map_err(|e| err(e.to_string()))?;
        configure(&writer).map_err(|e| err(e.to_string()))?;
        migrate(&writer).map_err(|e| err(e.to_string()))?;
        fill_deadlines(&writer).map_err(|e| err(e.to_string()))?;
        let reader = Connection::open(path).map_err(|e| err(e.to_string()))?;
        configure(&reader).map_err(|e| err(e.to_string()))?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Some(Mutex::new(reader)),
        })
    }

    /// A private in-memory database (tests, examples).
    pub fn open_in_memory() -> Result<Self> {
        let c = Connection::open_in_memory()?;
        configure(&c)?;
        migrate(&c)?;
        fill_deadlines(&c)?;
        Ok(SqliteStore {
            writer: Mutex::new(c),
            reader: None,
        })
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let lock = self.reader.as_ref().unwrap_or(&self.writer);
        let c = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&c)
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c)
    }
}

fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let version: usize =
        c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = c.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Computes the deadlines of hosts that have none (rows from before schema version 3).
fn fill_deadlines(c: &Connection) -> Result<()> {
    let ids: Vec<i64> = c
        .prepare("SELECT id FROM hosts WHERE missing_at IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        update_deadline(c, id)?;
    }
    Ok(())
}

/// Recomputes when a host counts as missing, from its schedule and its newest profile.
fn update_deadline(c: &Connection, host_id: i64) -> Result<()> {
    let (schedule, watch_from, last_seen): (String, i64, Option<i64>) = c
        .prepare_cached("SELECT schedule, watch_from, last_seen_at FROM hosts WHERE id = ?1")?
        .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let schedule: Schedule = serde_json::from_str(&schedule)
        .map_err(|e| StoreError::Corrupt(format!("schedule of host {host_id}: {e}")))?;
    let missing_at = schedule
        .status(watch_from, last_seen, false, false, 0)
        .map_err(|e| StoreError::Corrupt(format!("schedule of host {host_id}: {e}")))?
        .missing_at;
    c.prepare_cached("UPDATE hosts SET missing_at = ?1 WHERE id = ?2")?
        .execute(params![missing_at, host_id])?;
    Ok(())
}

/// How a profile is stored: as a patch against its base while the chain stays short and the
/// patch is much smaller than the profile, else whole. Returns `(base_id, depth, body)`.
fn stored_body(c: &Connection, ing: &Ingest) -> Result<(Option<i64>, i64, Vec<u8>)> {
    let compress = |bytes: &[u8]| {
        zstd::bulk::compress(bytes, 1)
            .map_err(|e| StoreError::Corrupt(format!("cannot compress profile: {e}")))
    };
    if let Some(delta) = &ing.delta {
        let base_depth: Option<i64> = c
            .prepare_cached("SELECT depth FROM profiles WHERE id = ?1 AND host_id = ?2")?
            .query_row(params![delta.base_id, ing.host_id], |r| r.get(0))
            .optional()?;
        if let Some(d) = base_depth {
            if d < crate::MAX_DELTA_DEPTH && delta.patch.len() * 4 < ing.profile.len() {
                return Ok((Some(delta.base_id), d + 1, compress(&delta.patch)?));
            }
        }
    }
    Ok((None, 0, compress(&ing.profile)?))
}

/// Reads profile `id` whole: its chain of patches down to a whole stored profile, applied in
/// order, each result checked against the stored hash.
fn read_profile(c: &Connection, id: i64) -> Result<Option<Vec<u8>>> {
    let mut chain: Vec<(i64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut next = Some(id);
    while let Some(at) = next {
        let row: Option<(Option<i64>, Vec<u8>, Vec<u8>)> = c
            .prepare_cached("SELECT base_id, hash, body FROM profiles WHERE id = ?1")?
            .query_row([at], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((base, hash, body)) = row else {
            if at == id {
                return Ok(None);
            }
            return Err(StoreError::Corrupt(format!(
                "profile {id}: its base profile {at} is gone"
            )));
        };
        let body = zstd::stream::decode_all(&body[..])
            .map_err(|e| StoreError::Corrupt(format!("profile {at}: {e}")))?;
        chain.push((at, hash, body));
        if chain.len() as i64 > crate::MAX_DELTA_DEPTH + 1 {
            return Err(StoreError::Corrupt(format!(
                "profile {id}: its chain of patches is longer than {}",
                crate::MAX_DELTA_DEPTH
            )));
        }
        next = base;
    }
    let (_, _, whole) = chain
        .pop()
        .expect("the chain holds at least the profile asked for");
    if chain.is_empty() {
        return Ok(Some(whole));
    }
    let mut profile: keel_profile::Profile = ciborium::from_reader(&whole[..])
        .map_err(|e| StoreError::Corrupt(format!("profile {id}'s base: {e}")))?;
    let mut bytes = whole;
    while let Some((at, hash, body)) = chain.pop() {
        let patch: keel_profile::Patch = ciborium::from_reader(&body[..])
            .map_err(|e| StoreError::Corrupt(format!("profile {at}: {e}")))?;
        let (next, next_bytes) = keel_profile::apply_patch(&profile, &patch, hash_from(hash)?)
            .map_err(|e| StoreError::Corrupt(format!("profile {at}: {e}")))?;
        profile = next;
        bytes = next_bytes;
    }
    Ok(Some(bytes))
}

/// A host read inside a transaction.
fn host_in(c: &Connection, host_id: i64) -> Result<HostRecord> {
    finish_host(c.query_row(
        &format!("SELECT {HOST_COLS} FROM hosts WHERE id = ?1"),
        [host_id],
        host_row,
    )?)
}

fn schedule_json(s: &Schedule) -> Result<String> {
    serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Opens the alerts that are new and resolves state alerts that no longer fire.
fn write_alerts(tx: &rusqlite::Transaction<'_>, ing: &Ingest, profile_id: i64) -> Result<()> {
    let json = |v: &std::collections::BTreeMap<String, String>| {
        serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    {
        let mut open = tx.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM alerts WHERE fingerprint = ?1 AND status = 'firing')",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO alerts (fingerprint, host_id, rule, severity, status, labels, annotations, starts_at, profile_id)
             VALUES (?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7, ?8)",
        )?;
        for a in &ing.alerts {
            let exists: bool = open.query_row([&a.fingerprint], |r| r.get(0))?;
            if !exists {
                insert.execute(params![
                    a.fingerprint,
                    ing.host_id,
                    a.rule,
                    a.severity,
                    json(&a.labels)?,
                    json(&a.annotations)?,
                    a.starts_at,
                    profile_id
                ])?;
            }
        }
    }
    // A profile that arrives ends the host's silence.
    tx.prepare_cached(&format!(
        "UPDATE alerts SET status = 'resolved', ends_at = ?1
         WHERE host_id = ?2 AND rule = '{MISSING_RULE}' AND status = 'firing'"
    ))?
    .execute(params![ing.received_at, ing.host_id])?;
    if !ing.state_rules.is_empty() {
        let firing: std::collections::BTreeSet<&str> =
            ing.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        let mut st = tx.prepare_cached(
            "SELECT id, fingerprint, rule FROM alerts WHERE host_id = ?1 AND status = 'firing'",
        )?;
        let open: Vec<(i64, String, String)> = st
            .query_map([ing.host_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut resolve =
            tx.prepare_cached("UPDATE alerts SET status = 'resolved', ends_at = ?1 WHERE id = ?2")?;
        for (id, fp, rule) in open {
            if ing.state_rules.contains(&rule) && !firing.contains(fp.as_str()) {
                resolve.execute(params![ing.received_at, id])?;
            }
        }
    }
    Ok(())
}

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AlertRecord, String, String)> {
    Ok((
        AlertRecord {
            id: r.get(0)?,
            host_id: r.get(1)?,
            profile_id: r.get(2)?,
            status: r.get(3)?,
            ends_at: r.get(4)?,
            acked_by: r.get(5)?,
            acked_at: r.get(6)?,
            alert: NewAlert {
                fingerprint: r.get(7)?,
                rule: r.get(8)?,
                severity: r.get(9)?,
                labels: std::collections::BTreeMap::new(),
                annotations: std::collections::BTreeMap::new(),
                starts_at: r.get(12)?,
            },
        },
        r.get(10)?,
        r.get(11)?,
    ))
}

fn finish_alert(
    (mut a, labels, annotations): (AlertRecord, String, String),
) -> Result<AlertRecord> {
    a.alert.labels = serde_json::from_str(&labels)
        .map_err(|e| StoreError::Corrupt(format!("alert {}: {e}", a.id)))?;
    a.alert.annotations = serde_json::from_str(&annotations)
        .map_err(|e| StoreError::Corrupt(format!("alert {}: {e}", a.id)))?;
    Ok(a)
}

const ALERT_COLS: &str = "id, host_id, profile_id, status, ends_at, acked_by, acked_at, fingerprint, rule, severity, labels, annotations, starts_at";

fn hash_from(v: Vec<u8>) -> Result<Hash> {
    let arr: [u8; 32] = v
        .try_into()
        .map_err(|_| StoreError::Corrupt("a stored hash is not 32 bytes".into()))?;
    Ok(Hash(arr))
}

fn host_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(HostRecord, String, String)> {
    Ok((
        HostRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            machine_id: r.get(2)?,
            labels: std::collections::BTreeMap::new(),
            created_at: r.get(4)?,
            last_profile_id: r.get(5)?,
            last_seen_at: r.get(6)?,
            paused: r.get(7)?,
            retired: r.get(8)?,
            schedule: Schedule::default(),
            watch_from: r.get(10)?,
            missing_at: r.get(11)?,
        },
        r.get(3)?,
        r.get(9)?,
    ))
}

fn finish_host((mut h, labels, schedule): (HostRecord, String, String)) -> Result<HostRecord> {
    h.labels = serde_json::from_str(&labels)
        .map_err(|e| StoreError::Corrupt(format!("labels of host {}: {e}", h.name)))?;
    h.schedule = serde_json::from_str(&schedule)
        .map_err(|e| StoreError::Corrupt(format!("schedule of host {}: {e}", h.name)))?;
    Ok(h)
}

const HOST_COLS: &str = "id, name, machine_id, labels, created_at, last_profile_id, last_seen_at, paused, retired, schedule, watch_from, missing_at";
const PROFILE_COLS: &str =
    "id, host_id, hash, previous, captured_at, received_at, agent_version, size, changes";

fn profile_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(ProfileSummary, Vec<u8>, Option<Vec<u8>>)> {
    Ok((
        ProfileSummary {
            id: r.get(0)?,
            host_id: r.get(1)?,
            hash: Hash::default(),
            previous: None,
            captured_at: r.get(4)?,
            received_at: r.get(5)?,
            agent_version: r.get(6)?,
            size: r.get(7)?,
            changes: r.get(8)?,
        },
        r.get(2)?,
        r.get(3)?,
    ))
}

fn finish_profile(
    (mut p, hash, prev): (ProfileSummary, Vec<u8>, Option<Vec<u8>>),
) -> Result<ProfileSummary> {
    p.hash = hash_from(hash)?;
    p.previous = prev.map(hash_from).transpose()?;
    Ok(p)
}

impl Store for SqliteStore {
    fn put_token(&self, hash: &Hash, kind: TokenKind, label: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO tokens (hash, kind, label, created_at) VALUES (?1, ?2, ?3, strftime('%s','now') * 1000)",
                params![&hash.0[..], kind.as_str(), label],
            )?;
            Ok(())
        })
    }

    fn token_kind(&self, hash: &Hash) -> Result<Option<TokenKind>> {
        self.read(|c| {
            let k: Option<String> = c
                .query_row(
                    "SELECT kind FROM tokens WHERE hash = ?1",
                    [&hash.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(k.and_then(|k| TokenKind::parse(&k)))
        })
    }

    fn has_token(&self, kind: TokenKind) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE kind = ?1)",
                [kind.as_str()],
                |r| r.get(0),
            )?)
        })
    }

    fn enroll(&self, a: &NewAgent) -> Result<HostRecord> {
        self.write(|c| {
            let tx = c.transaction()?;
            let existing: Option<(i64, String, bool)> = tx
                .query_row("SELECT id, machine_id, retired FROM hosts WHERE name = ?1", [&a.host], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let host_id = match existing {
                Some((_, mid, _)) if mid != a.machine_id => {
                    return Err(StoreError::Conflict(format!(
                        "host {} is already enrolled with another machine-id ({mid}); retire it first, or enroll this machine under another name",
                        a.host
                    )))
                }
                Some((id, _, retired)) => {
                    if retired {
                        tx.execute("UPDATE hosts SET retired = 0, watch_from = ?1 WHERE id = ?2", params![a.now, id])?;
                    }
                    if let Some(schedule) = &a.schedule {
                        tx.execute("UPDATE hosts SET schedule = ?1 WHERE id = ?2", params![schedule_json(schedule)?, id])?;
                    }
                    // One agent per host: a re-enrolled machine replaces its old key.
                    tx.execute("UPDATE agents SET revoked = 1 WHERE host_id = ?1", [id])?;
                    id
                }
                None => {
                    let schedule = schedule_json(a.schedule.as_ref().unwrap_or(&Schedule::default()))?;
                    tx.execute(
                        "INSERT INTO hosts (name, machine_id, created_at, watch_from, schedule) VALUES (?1, ?2, ?3, ?3, ?4)",
                        params![a.host, a.machine_id, a.now, schedule],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            update_deadline(&tx, host_id)?;
            tx.execute(
                "INSERT INTO agents (id, host_id, public_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![a.id, host_id, a.public_key, a.now],
            )?;
            let h = host_in(&tx, host_id)?;
            tx.commit()?;
            Ok(h)
        })
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT id, host_id, public_key, revoked FROM agents WHERE id = ?1",
                [id],
                |r| {
                    Ok(AgentRecord {
                        id: r.get(0)?,
                        host_id: r.get(1)?,
                        public_key: r.get(2)?,
                        revoked: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn host(&self, name: &str) -> Result<Option<HostRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {HOST_COLS} FROM hosts WHERE name = ?1"),
                [name],
                host_row,
            )
            .optional()?
            .map(finish_host)
            .transpose()
        })
    }

    fn host_by_id(&self, id: i64) -> Result<Option<HostRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {HOST_COLS} FROM hosts WHERE id = ?1"),
                [id],
                host_row,
            )
            .optional()?
            .map(finish_host)
            .transpose()
        })
    }

    fn hosts(&self, after: Option<&str>, limit: u32) -> Result<Vec<HostRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {HOST_COLS} FROM hosts WHERE name > ?1 ORDER BY name LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after.unwrap_or(""), limit], host_row)?;
            rows.map(|r| finish_host(r?)).collect()
        })
    }

    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT EXISTS (SELECT 1 FROM blobs WHERE hash = ?1)")?;
            let mut out = Vec::new();
            for h in hashes {
                let present: bool = st.query_row([&h.0[..]], |r| r.get(0))?;
                if !present {
                    out.push(*h);
                }
            }
            Ok(out)
        })
    }

    fn blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT data FROM blobs WHERE hash = ?1",
                [&hash.0[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn ingest(&self, batch: &[Ingest]) -> Result<Vec<i64>> {
        self.write(|c| {
            let tx = c.transaction()?;
            let mut ids = Vec::with_capacity(batch.len());
            for ing in batch {
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM profiles WHERE hash = ?1)",
                    [&ing.hash.0[..]],
                    |r| r.get(0),
                )?;
                if exists {
                    return Err(StoreError::Conflict(format!("profile {} is already stored", ing.hash)));
                }
                {
                    let mut st = tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")?;
                    for (h, data) in &ing.blobs {
                        st.execute(params![&h.0[..], data])?;
                    }
                }
                let (base_id, depth, body) = stored_body(&tx, ing)?;
                let counted = ing
                    .changes
                    .iter()
                    .filter(|ch| ch.volatility != keel_profile::Volatility::Volatile)
                    .count() as i64;
                tx.prepare_cached(
                    "INSERT INTO profiles (host_id, hash, previous, captured_at, received_at, agent_version, size, changes, body, base_id, depth)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    ing.host_id,
                    &ing.hash.0[..],
                    ing.previous.as_ref().map(|h| h.0.to_vec()),
                    ing.captured_at,
                    ing.received_at,
                    ing.agent_version,
                    ing.profile.len() as i64,
                    counted,
                    body,
                    base_id,
                    depth,
                ])?;
                let id = tx.last_insert_rowid();
                {
                    let mut st = tx.prepare_cached("INSERT INTO changes (profile_id, seq, change) VALUES (?1, ?2, ?3)")?;
                    for (seq, ch) in ing.changes.iter().enumerate() {
                        let json = serde_json::to_string(ch).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        st.execute(params![id, seq as i64, json])?;
                    }
                }
                write_alerts(&tx, ing, id)?;
                tx.prepare_cached("UPDATE hosts SET last_profile_id = ?1, last_seen_at = ?2 WHERE id = ?3")?
                    .execute(params![id, ing.received_at, ing.host_id])?;
                update_deadline(&tx, ing.host_id)?;
                ids.push(id);
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    fn profile_by_hash(&self, hash: &Hash) -> Result<Option<ProfileSummary>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {PROFILE_COLS} FROM profiles WHERE hash = ?1"),
                [&hash.0[..]],
                profile_row,
            )
            .optional()?
            .map(finish_profile)
            .transpose()
        })
    }

    fn profile(&self, id: i64) -> Result<Option<(ProfileSummary, Vec<u8>)>> {
        self.read(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {PROFILE_COLS} FROM profiles WHERE id = ?1"),
                    [id],
                    profile_row,
                )
                .optional()?;
            let Some(summary) = row else {
                return Ok(None);
            };
            let Some(bytes) = read_profile(c, id)? else {
                return Ok(None);
            };
            Ok(Some((finish_profile(summary)?, bytes)))
        })
    }

    fn profiles(
        &self,
        host_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ProfileSummary>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PROFILE_COLS} FROM profiles WHERE host_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![host_id, before.unwrap_or(i64::MAX), limit], profile_row)?;
            rows.map(|r| finish_profile(r?)).collect()
        })
    }

    fn changes(&self, profile_id: i64) -> Result<Vec<Change>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT change FROM changes WHERE profile_id = ?1 ORDER BY seq")?;
            let rows = st.query_map([profile_id], |r| r.get::<_, String>(0))?;
            rows.map(|r| {
                serde_json::from_str(&r?).map_err(|e| {
                    StoreError::Corrupt(format!("change of profile {profile_id}: {e}"))
                })
            })
            .collect()
        })
    }

    fn rules(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT name, body FROM rules ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn put_rule(&self, name: &str, body: &str, now: i64) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO rules (name, body, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                params![name, body, now],
            )?;
            Ok(())
        })
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        self.write(|c| Ok(c.execute("DELETE FROM rules WHERE name = ?1", [name])? > 0))
    }

    fn alerts(
        &self,
        status: Option<&str>,
        host_id: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ALERT_COLS} FROM alerts
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR host_id = ?2) AND id < ?3
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![status, host_id, before.unwrap_or(i64::MAX), limit],
                alert_row,
            )?;
            rows.map(|r| finish_alert(r?)).collect()
        })
    }

    fn ack_alert(&self, id: i64, by: &str, now: i64) -> Result<bool> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE alerts SET acked_by = ?1, acked_at = ?2 WHERE id = ?3",
                params![by, now, id],
            )? > 0)
        })
    }

    fn resolve_alert(&self, id: i64, now: i64) -> Result<bool> {
        self.write(|c| {
            Ok(c.execute(
                "UPDATE alerts SET status = 'resolved', ends_at = ?1 WHERE id = ?2 AND status = 'firing'",
                params![now, id],
            )? > 0)
        })
    }

    fn host_count(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM hosts", [], |r| r.get(0))?))
    }

    fn profile_count(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM profiles", [], |r| r.get(0))?))
    }
    fn raise_alert(&self, host_id: i64, alert: &NewAlert) -> Result<bool> {
        let json = |v: &std::collections::BTreeMap<String, String>| {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let (labels, annotations) = (json(&alert.labels)?, json(&alert.annotations)?);
        self.write(|c| {
            Ok(c.execute(
                "INSERT INTO alerts (fingerprint, host_id, rule, severity, status, labels, annotations, starts_at)
                 SELECT ?1, ?2, ?3, ?4, 'firing', ?5, ?6, ?7
                 WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE fingerprint = ?1 AND status = 'firing')",
                params![
                    alert.fingerprint,
                    host_id,
                    alert.rule,
                    alert.severity,
                    labels,
                    annotations,
                    alert.starts_at
                ],
            )? > 0)
        })
    }

    fn set_schedule(&self, host_id: i64, schedule: &Schedule) -> Result<HostRecord> {
        let json = schedule_json(schedule)?;
        self.write(|c| {
            let tx = c.transaction()?;
            if tx.execute(
                "UPDATE hosts SET schedule = ?1 WHERE id = ?2",
                params![json, host_id],
            )? == 0
            {
                return Err(StoreError::NotFound(format!("host {host_id}")));
            }
            update_deadline(&tx, host_id)?;
            let h = host_in(&tx, host_id)?;
            tx.commit()?;
            Ok(h)
        })
    }

    fn set_host_flags(
        &self,
        host_id: i64,
        paused: Option<bool>,
        retired: Option<bool>,
        now: i64,
    ) -> Result<HostRecord> {
        self.write(|c| {
            let tx = c.transaction()?;
            let (was_paused, was_retired): (bool, bool) = tx
                .query_row(
                    "SELECT paused, retired FROM hosts WHERE id = ?1",
                    [host_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("host {host_id}")))?;
            let paused = paused.unwrap_or(was_paused);
            let retired = retired.unwrap_or(was_retired);
            tx.execute(
                "UPDATE hosts SET paused = ?1, retired = ?2 WHERE id = ?3",
                params![paused, retired, host_id],
            )?;
            if paused || retired {
                // Nobody is waiting for this host's profiles now.
                tx.execute(
                    &format!(
                        "UPDATE alerts SET status = 'resolved', ends_at = ?1
                         WHERE host_id = ?2 AND rule = '{MISSING_RULE}' AND status = 'firing'"
                    ),
                    params![now, host_id],
                )?;
            } else if was_paused || was_retired {
                // Watching again: silence counts from now.
                tx.execute(
                    "UPDATE hosts SET watch_from = ?1 WHERE id = ?2",
                    params![now, host_id],
                )?;
                update_deadline(&tx, host_id)?;
            }
            let h = host_in(&tx, host_id)?;
            tx.commit()?;
            Ok(h)
        })
    }

    fn overdue_hosts(&self, now: i64, limit: u32) -> Result<Vec<HostRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {HOST_COLS} FROM hosts h
                 WHERE paused = 0 AND retired = 0 AND missing_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM alerts a
                                   WHERE a.host_id = h.id AND a.rule = '{MISSING_RULE}' AND a.status = 'firing')
                 ORDER BY missing_at LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], host_row)?;
            rows.map(|r| finish_host(r?)).collect()
        })
    }

    fn host_states(&self, now: i64) -> Result<std::collections::BTreeMap<HostState, i64>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT CASE
                    WHEN retired THEN 'retired'
                    WHEN paused THEN 'paused'
                    WHEN missing_at < ?1 THEN 'missing'
                    WHEN last_seen_at IS NULL THEN 'new'
                    ELSE 'other' END AS state, count(*)
                 FROM hosts GROUP BY state",
            )?;
            let rows: Vec<(String, i64)> = st
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out: std::collections::BTreeMap<HostState, i64> =
                HostState::ALL.iter().map(|s| (*s, 0)).collect();
            for (state, n) in rows {
                let state = match state.as_str() {
                    "retired" => HostState::Retired,
                    "paused" => HostState::Paused,
                    "missing" => HostState::Missing,
                    "new" => HostState::New,
                    _ => {
                        // Up or late: that needs each host's schedule.
                        let mut st = c.prepare_cached(&format!(
                            "SELECT {HOST_COLS} FROM hosts
                             WHERE NOT retired AND NOT paused AND missing_at >= ?1 AND last_seen_at IS NOT NULL"
                        ))?;
                        let hosts = st.query_map([now], host_row)?;
                        for h in hosts {
                            *out.entry(finish_host(h?)?.status(now).state).or_default() += 1;
                        }
                        continue;
                    }
                };
                *out.entry(state).or_default() += n;
            }
            Ok(out)
        })
    }

    fn notifications_after(&self, after: i64, limit: u32) -> Result<Vec<Notification>> {
        self.read(|c| {
            let cols = ALERT_COLS
                .split(", ")
                .map(|col| format!("a.{col}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = c.prepare_cached(&format!(
                "SELECT {cols}, n.id, n.status, n.created_at FROM notifications n
                 JOIN alerts a ON a.id = n.alert_id
                 WHERE n.id > ?1 ORDER BY n.id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok((alert_row(r)?, r.get(13)?, r.get(14)?, r.get(15)?))
            })?;
            rows.map(|r| {
                let (alert, id, status, at) = r?;
                Ok(Notification {
                    id,
                    status,
                    at,
                    alert: finish_alert(alert)?,
                })
            })
            .collect()
        })
    }

    fn last_notification_id(&self) -> Result<i64> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT coalesce(max(id), 0) FROM notifications", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    fn receiver_cursor(&self, receiver: &str) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT last_id FROM receiver_cursors WHERE receiver = ?1",
                [receiver],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn set_receiver_cursor(&self, receiver: &str, last_id: i64) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO receiver_cursors (receiver, last_id) VALUES (?1, ?2)
                 ON CONFLICT (receiver) DO UPDATE SET last_id = excluded.last_id",
                params![receiver, last_id],
            )?;
            Ok(())
        })
    }

    fn record_delivery(&self, d: &DeliveryRecord) -> Result<()> {
        let fingerprints = serde_json::to_string(&d.fingerprints)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let outcome = d.outcome.to_string();
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO deliveries (receiver, group_key, status, fingerprints, attempt, at, ok, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                d.receiver,
                d.group_key,
                d.status,
                fingerprints,
                d.attempt,
                d.at,
                d.ok,
                outcome
            ])?;
            Ok(())
        })
    }

    fn deliveries(&self, before: Option<i64>, limit: u32) -> Result<Vec<DeliveryRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, receiver, group_key, status, fingerprints, attempt, at, ok, outcome
                 FROM deliveries WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
                Ok((
                    DeliveryRecord {
                        id: r.get(0)?,
                        receiver: r.get(1)?,
                        group_key: r.get(2)?,
                        status: r.get(3)?,
                        fingerprints: Vec::new(),
                        attempt: r.get(5)?,
                        at: r.get(6)?,
                        ok: r.get(7)?,
                        outcome: serde_json::Value::Null,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            rows.map(|r| {
                let (mut d, fingerprints, outcome) = r?;
                d.fingerprints = serde_json::from_str(&fingerprints)
                    .map_err(|e| StoreError::Corrupt(format!("delivery {}: {e}", d.id)))?;
                d.outcome = serde_json::from_str(&outcome)
                    .map_err(|e| StoreError::Corrupt(format!("delivery {}: {e}", d.id)))?;
                Ok(d)
            })
            .collect()
        })
    }

    fn create_rollback(&self, job: &NewRollback) -> Result<RollbackRecord> {
        let selection = serde_json::to_string(&job.selection)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let plan = job.plan.to_string();
        let id = self.write(|c| {
            for p in [job.from_profile, job.to_profile] {
                let owner: Option<i64> = c
                    .query_row("SELECT host_id FROM profiles WHERE id = ?1", [p], |r| r.get(0))
                    .optional()?;
                if owner != Some(job.host_id) {
                    return Err(StoreError::NotFound(format!("profile {p} of the host")));
                }
            }
            c.execute(
                "INSERT INTO rollbacks (host_id, from_profile, to_profile, selection, plan, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.host_id,
                    job.from_profile,
                    job.to_profile,
                    selection,
                    plan,
                    job.created_by,
                    job.now
                ],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        self.rollback(id)?
            .ok_or_else(|| StoreError::NotFound(format!("rollback {id}")))
    }

    fn rollback(&self, id: i64) -> Result<Option<RollbackRecord>> {
        self.read(|c| rollback_by_id(c, id))
    }

    fn rollbacks(&self, host_id: Option<i64>, limit: u32) -> Result<Vec<RollbackRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ROLLBACK_COLS} FROM rollbacks r JOIN hosts h ON h.id = r.host_id
                 WHERE (?1 IS NULL OR r.host_id = ?1) ORDER BY r.id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![host_id, limit], rollback_row)?;
            rows.map(|r| finish_rollback_row(r?)).collect()
        })
    }

    fn decide_rollback(
        &self,
        id: i64,
        approve: bool,
        by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<RollbackRecord> {
        let status = if approve { "approved" } else { "rejected" };
        self.write(|c| {
            let changed = c.execute(
                "UPDATE rollbacks SET status = ?1, decided_by = ?2, decided_at = ?3, reason = ?4
                 WHERE id = ?5 AND status = 'proposed'",
                params![status, by, now, reason, id],
            )?;
            let job = rollback_by_id(c, id)?
                .ok_or_else(|| StoreError::NotFound(format!("rollback {id}")))?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "rollback {id} is {}, not proposed: only a proposed rollback can be {status}",
                    job.status
                )));
            }
            Ok(job)
        })
    }

    fn next_rollback(&self, host_id: i64, now: i64) -> Result<Option<RollbackRecord>> {
        self.write(|c| {
            let id: Option<i64> = c
                .query_row(
                    "SELECT id FROM rollbacks WHERE host_id = ?1 AND status IN ('approved', 'running')
                     ORDER BY id LIMIT 1",
                    [host_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            c.execute(
                "UPDATE rollbacks SET status = 'running', started_at = coalesce(started_at, ?1)
                 WHERE id = ?2",
                params![now, id],
            )?;
            rollback_by_id(c, id)
        })
    }

    fn finish_rollback(&self, id: i64, end: &RollbackEnd, now: i64) -> Result<RollbackRecord> {
        let status = if end.done { "done" } else { "failed" };
        self.write(|c| {
            let changed = c.execute(
                "UPDATE rollbacks SET status = ?1, reason = ?2, result_profile = ?3, output = ?4,
                 finished_at = ?5 WHERE id = ?6 AND status = 'running'",
                params![status, end.reason, end.result_profile, end.output, now, id],
            )?;
            let job = rollback_by_id(c, id)?
                .ok_or_else(|| StoreError::NotFound(format!("rollback {id}")))?;
            if changed == 0 {
                return Err(StoreError::Conflict(format!(
                    "rollback {id} is {}, not running",
                    job.status
                )));
            }
            Ok(job)
        })
    }
}

const ROLLBACK_COLS: &str = "r.id, r.host_id, h.name, r.from_profile, r.to_profile, r.selection, r.plan, r.status, r.reason, r.created_by, r.created_at, r.decided_by, r.decided_at, r.started_at, r.finished_at, r.result_profile, r.output";

fn rollback_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RollbackRecord, String, String)> {
    Ok((
        RollbackRecord {
            id: r.get(0)?,
            host_id: r.get(1)?,
            host: r.get(2)?,
            from_profile: r.get(3)?,
            to_profile: r.get(4)?,
            selection: Vec::new(),
            plan: serde_json::Value::Null,
            status: r.get(7)?,
            reason: r.get(8)?,
            created_by: r.get(9)?,
            created_at_ms: r.get(10)?,
            decided_by: r.get(11)?,
            decided_at_ms: r.get(12)?,
            started_at_ms: r.get(13)?,
            finished_at_ms: r.get(14)?,
            result_profile: r.get(15)?,
            output: r.get(16)?,
        },
        r.get(5)?,
        r.get(6)?,
    ))
}

fn finish_rollback_row(
    (mut j, selection, plan): (RollbackRecord, String, String),
) -> Result<RollbackRecord> {
    j.selection = serde_json::from_str(&selection)
        .map_err(|e| StoreError::Corrupt(format!("rollback {}: {e}", j.id)))?;
    j.plan = serde_json::from_str(&plan)
        .map_err(|e| StoreError::Corrupt(format!("rollback {}: {e}", j.id)))?;
    Ok(j)
}

fn rollback_by_id(c: &Connection, id: i64) -> Result<Option<RollbackRecord>> {
    let row = c
        .query_row(
            &format!(
                "SELECT {ROLLBACK_COLS} FROM rollbacks r JOIN hosts h ON h.id = r.host_id WHERE r.id = ?1"
            ),
            [id],
            rollback_row,
        )
        .optional()?;
    row.map(finish_rollback_row).transpose()
}
