//! Keel's server store: tokens, hosts, agents, profiles, content blobs and changes behind one
//! trait, [`Store`], with SQLite ([`SqliteStore`]) as the embedded default. Another backend
//! (PostgreSQL) implements the same trait and passes the same contract test.
//!
//! Ingesting a profile is one transaction: the profile, its new blobs and its changes become
//! visible together or not at all, and nothing is acknowledged before it is committed.
//!
//! ```
//! use keel_store::{SqliteStore, Store, TokenKind};
//! use keel_profile::Hash;
//!
//! let store = SqliteStore::open_in_memory().unwrap();
//! store.put_token(&Hash::of(b"secret"), TokenKind::Admin, "first admin").unwrap();
//! assert_eq!(store.token_kind(&Hash::of(b"secret")).unwrap(), Some(TokenKind::Admin));
//! ```

mod recovery;
mod sqlite;
mod users;

use keel_profile::{Change, Hash};
use keel_schedule::{HostState, Schedule, Status};
use serde::{Deserialize, Serialize};

pub use keel_schedule;
pub use recovery::{
    MachineRecord, NewMachine, NewRecovery, RecoveryEnd, RecoveryRecord, RecoveryStore,
};
pub use sqlite::SqliteStore;
pub use users::{Role, SessionRecord, UserRecord, UserStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Stored data did not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database file could not be opened or migrated.
    #[error("cannot open store {path}: {detail}")]
    Open {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Everything.
    Admin,
    /// Reading only.
    Readonly,
    /// Enrolling agents.
    Enroll,
}

impl TokenKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Readonly => "readonly",
            TokenKind::Enroll => "enroll",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(TokenKind::Admin),
            "readonly" => Some(TokenKind::Readonly),
            "enroll" => Some(TokenKind::Enroll),
            _ => None,
        }
    }
}

/// A host as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Store id.
    pub id: i64,
    /// Host name (unique).
    pub name: String,
    /// `/etc/machine-id` recorded at enrollment.
    pub machine_id: String,
    /// Labels for rules and grouping.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Enrollment time, ms since the epoch.
    pub created_at: i64,
    /// The newest profile.
    pub last_profile_id: Option<i64>,
    /// When the newest profile arrived, ms since the epoch.
    pub last_seen_at: Option<i64>,
    /// Missing-profile alerts are off.
    pub paused: bool,
    /// Decommissioned.
    pub retired: bool,
    /// When the host's profiles are expected.
    pub schedule: Schedule,
    /// Silence counts from the newest profile or from this time (enrollment, or the end of a
    /// pause), whichever is later; ms since the epoch.
    pub watch_from: i64,
    /// When the host counts as missing if no profile comes, ms since the epoch.
    pub missing_at: Option<i64>,
}

impl HostRecord {
    /// The host's state at `now` (ms since the epoch).
    pub fn status(&self, now: i64) -> Status {
        self.schedule
            .status(
                self.watch_from,
                self.last_seen_at,
                self.paused,
                self.retired,
                now,
            )
            .unwrap_or(Status {
                // A stored schedule is validated when saved; should one no longer parse, the
                // host is shown as missing rather than silently fine.
                state: if self.retired {
                    HostState::Retired
                } else if self.paused {
                    HostState::Paused
                } else {
                    HostState::Missing
                },
                due_at: 0,
                missing_at: 0,
            })
    }
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Agent id.
    pub id: String,
    /// The host it may write.
    pub host_id: i64,
    /// Its ed25519 public key.
    pub public_key: Vec<u8>,
    /// Revoked agents are refused.
    pub revoked: bool,
}

/// A new agent for a host.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// Agent id (random, chosen by the server).
    pub id: String,
    /// Host name.
    pub host: String,
    /// The host's machine-id.
    pub machine_id: String,
    /// The agent's ed25519 public key.
    pub public_key: Vec<u8>,
    /// Now, ms since the epoch.
    pub now: i64,
    /// The schedule the host's agent captures on; kept as it is when `None`.
    pub schedule: Option<Schedule>,
}

/// A profile ready to be stored.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The host it belongs to.
    pub host_id: i64,
    /// Its identity.
    pub hash: Hash,
    /// The hash it chains to.
    pub previous: Option<Hash>,
    /// Capture start (agent clock), ms.
    pub captured_at: i64,
    /// Arrival, ms.
    pub received_at: i64,
    /// Agent version.
    pub agent_version: String,
    /// Canonical CBOR bytes of the profile.
    pub profile: Vec<u8>,
    /// The same profile as a patch against the host's previous stored profile, when there is
    /// one: the store keeps the patch instead of the whole profile while the chain of patches
    /// stays short.
    pub delta: Option<Delta>,
    /// Blobs the store does not have yet.
    pub blobs: Vec<(Hash, Vec<u8>)>,
    /// Changes against the host's previous profile.
    pub changes: Vec<Change>,
    /// Alerts the rules raised on this profile (already open ones stay as they are).
    pub alerts: Vec<NewAlert>,
    /// Rules whose alerts describe a state: their open alerts for this host that did not
    /// fire again on this profile are resolved.
    pub state_rules: Vec<String>,
}

/// A profile as a patch against an earlier stored profile of the same host.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The stored profile the patch applies to.
    pub base_id: i64,
    /// The patch (`keel_profile::Patch`) as CBOR.
    pub patch: Vec<u8>,
}

/// Most patches between two whole stored profiles: reading a profile applies at most this
/// many.
pub const MAX_DELTA_DEPTH: i64 = 32;

/// An alert raised by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAlert {
    /// Identity of the alert (Alertmanager's label fingerprint).
    pub fingerprint: String,
    /// The rule that raised it.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Labels (alertname, host, severity, …).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations (summary, …).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// When it started, ms since the epoch.
    pub starts_at: i64,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Store id.
    pub id: i64,
    /// The host.
    pub host_id: i64,
    /// The profile that raised it.
    pub profile_id: Option<i64>,
    /// `firing` or `resolved`.
    pub status: String,
    /// When it ended, ms.
    pub ends_at: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When, ms.
    pub acked_at: Option<i64>,
    /// The alert itself.
    #[serde(flatten)]
    pub alert: NewAlert,
}

/// A stored profile's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// Store id.
    pub id: i64,
    /// Host id.
    pub host_id: i64,
    /// Identity.
    pub hash: Hash,
    /// Chained predecessor.
    pub previous: Option<Hash>,
    /// Capture start, ms.
    pub captured_at: i64,
    /// Arrival, ms.
    pub received_at: i64,
    /// Agent version.
    pub agent_version: String,
    /// Uncompressed size.
    pub size: i64,
    /// Non-volatile changes against the predecessor.
    pub changes: i64,
}

/// The rule name of the alert the missing-profile watch raises.
pub const MISSING_RULE: &str = "profile-missing";

/// A change of an alert's status that receivers are to be told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Position in the notification log.
    pub id: i64,
    /// `firing` or `resolved`: what this notification announces.
    pub status: String,
    /// When the change happened, ms.
    pub at: i64,
    /// The alert as it is now.
    pub alert: AlertRecord,
}

/// One attempt to deliver notifications to a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Store id (0 before it is stored).
    pub id: i64,
    /// The receiver's name.
    pub receiver: String,
    /// The alert group (Alertmanager's group key).
    pub group_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Fingerprints of the alerts carried.
    pub fingerprints: Vec<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt ended, ms.
    pub at: i64,
    /// Whether the receiver accepted it.
    pub ok: bool,
    /// The answer: status code, or the error and whether it was retried.
    pub outcome: serde_json::Value,
}

/// One store backend. Every method is blocking; servers call them from worker threads.
pub trait Store: RecoveryStore + Send + Sync + std::fmt::Debug {
    /// Records a token by its hash.
    fn put_token(&self, hash: &Hash, kind: TokenKind, label: &str) -> Result<()>;
    /// What the token with this hash allows, if it exists.
    fn token_kind(&self, hash: &Hash) -> Result<Option<TokenKind>>;
    /// True when any token of `kind` exists (first start creates them).
    fn has_token(&self, kind: TokenKind) -> Result<bool>;

    /// Enrolls an agent: creates the host, or binds a new agent to the existing host of that
    /// name when the machine-id matches. A different machine claiming the name is refused.
    fn enroll(&self, agent: &NewAgent) -> Result<HostRecord>;
    /// An agent by id.
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>>;
    /// A host by name.
    fn host(&self, name: &str) -> Result<Option<HostRecord>>;
    /// A host by id.
    fn host_by_id(&self, id: i64) -> Result<Option<HostRecord>>;
    /// Hosts ordered by name, after `after` (for paging).
    fn hosts(&self, after: Option<&str>, limit: u32) -> Result<Vec<HostRecord>>;

    /// Which of `hashes` the store does not hold.
    fn missing_blobs(&self, hashes: &[Hash]) -> Result<Vec<Hash>>;
    /// A blob's content.
    fn blob(&self, hash: &Hash) -> Result<Option<Vec<u8>>>;

    /// Stores profiles in one transaction; each gets its id. A profile whose hash is already
    /// stored is a conflict, and nothing of the batch is written in that case.
    fn ingest(&self, batch: &[Ingest]) -> Result<Vec<i64>>;
    /// A stored profile's summary by hash.
    fn profile_by_hash(&self, hash: &Hash) -> Result<Option<ProfileSummary>>;
    /// A stored profile's summary and canonical CBOR bytes.
    fn profile(&self, id: i64) -> Result<Option<(ProfileSummary, Vec<u8>)>>;
    /// A host's profiles, newest first, older than `before`.
    fn profiles(
        &self,
        host_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ProfileSummary>>;
    /// The changes stored with a profile.
    fn changes(&self, profile_id: i64) -> Result<Vec<Change>>;
    /// Number of stored profiles.
    fn profile_count(&self) -> Result<i64>;
    /// Number of hosts.
    fn host_count(&self) -> Result<i64>;

    /// Stored rules as `(name, JSON body)`, by name.
    fn rules(&self) -> Result<Vec<(String, String)>>;
    /// Saves a rule (replacing one of the same name).
    fn put_rule(&self, name: &str, body: &str, now: i64) -> Result<()>;
    /// Deletes a rule; false when there was none.
    fn delete_rule(&self, name: &str) -> Result<bool>;

    /// Alerts, newest first: only `status` ones when given, only of `host_id` when given,
    /// older than `before`.
    fn alerts(
        &self,
        status: Option<&str>,
        host_id: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>>;
    /// Acknowledges an alert; false when there is no such alert.
    fn ack_alert(&self, id: i64, by: &str, now: i64) -> Result<bool>;
    /// Resolves a firing alert; false when there is no such firing alert.
    fn resolve_alert(&self, id: i64, now: i64) -> Result<bool>;
    /// Raises an alert for a host unless one with the same fingerprint is firing; true when
    /// it was raised.
    fn raise_alert(&self, host_id: i64, alert: &NewAlert) -> Result<bool>;

    /// Sets a host's schedule (checked by the caller) and recomputes its deadline.
    fn set_schedule(&self, host_id: i64, schedule: &Schedule) -> Result<HostRecord>;
    /// Pauses or resumes, retires or reinstates a host. Pausing or retiring resolves its
    /// missing-profile alert; resuming starts the silence count afresh at `now`.
    fn set_host_flags(
        &self,
        host_id: i64,
        paused: Option<bool>,
        retired: Option<bool>,
        now: i64,
    ) -> Result<HostRecord>;
    /// Watched hosts whose deadline passed before `now` and that have no firing
    /// missing-profile alert yet.
    fn overdue_hosts(&self, now: i64, limit: u32) -> Result<Vec<HostRecord>>;
    /// How many hosts are in each state at `now`.
    fn host_states(&self, now: i64) -> Result<std::collections::BTreeMap<HostState, i64>>;

    /// Notifications after position `after`, oldest first.
    fn notifications_after(&self, after: i64, limit: u32) -> Result<Vec<Notification>>;
    /// The position of the newest notification (0 when there is none).
    fn last_notification_id(&self) -> Result<i64>;
    /// How far a receiver has been told.
    fn receiver_cursor(&self, receiver: &str) -> Result<Option<i64>>;
    /// Records how far a receiver has been told.
    fn set_receiver_cursor(&self, receiver: &str, last_id: i64) -> Result<()>;
    /// Records a delivery attempt.
    fn record_delivery(&self, record: &DeliveryRecord) -> Result<()>;
    /// Delivery attempts, newest first, older than `before`.
    fn deliveries(&self, before: Option<i64>, limit: u32) -> Result<Vec<DeliveryRecord>>;

    /// Stores a proposed rollback.
    fn create_rollback(&self, job: &NewRollback) -> Result<RollbackRecord>;
    /// One rollback.
    fn rollback(&self, id: i64) -> Result<Option<RollbackRecord>>;
    /// Rollbacks, newest first, optionally of one host.
    fn rollbacks(&self, host_id: Option<i64>, limit: u32) -> Result<Vec<RollbackRecord>>;
    /// Approves (or rejects) a proposed rollback, recording who, when and why; any other
    /// status is a conflict.
    fn decide_rollback(
        &self,
        id: i64,
        approve: bool,
        by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<RollbackRecord>;
    /// The host's oldest approved rollback (or one left running by an interrupted agent),
    /// marked running.
    fn next_rollback(&self, host_id: i64, now: i64) -> Result<Option<RollbackRecord>>;
    /// Ends a running rollback: `done`, or `failed` with the reason.
    fn finish_rollback(&self, id: i64, end: &RollbackEnd, now: i64) -> Result<RollbackRecord>;
}

/// A rollback to store, as proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRollback {
    /// The host.
    pub host_id: i64,
    /// The profile in which the selected changes appear.
    pub from_profile: i64,
    /// The profile they go back to.
    pub to_profile: i64,
    /// The `SECTION:KEY` selectors.
    pub selection: Vec<String>,
    /// The plan (keel-rollback's JSON).
    pub plan: serde_json::Value,
    /// Who proposed it.
    pub created_by: String,
    /// When, ms.
    pub now: i64,
}

/// How a running rollback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackEnd {
    /// True for `done`, false for `failed`.
    pub done: bool,
    /// Why it failed.
    pub reason: Option<String>,
    /// The profile captured after it.
    pub result_profile: Option<i64>,
    /// What the agent reported (its steps).
    pub output: Option<String>,
}

/// A stored rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// Store id.
    pub id: i64,
    /// The host's id.
    pub host_id: i64,
    /// The host's name.
    pub host: String,
    /// The profile in which the selected changes appear.
    pub from_profile: i64,
    /// The profile they go back to.
    pub to_profile: i64,
    /// The `SECTION:KEY` selectors.
    pub selection: Vec<String>,
    /// The plan.
    pub plan: serde_json::Value,
    /// `proposed`, `approved`, `rejected`, `running`, `done` or `failed`.
    pub status: String,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
    /// Who proposed it.
    pub created_by: String,
    /// When, ms.
    pub created_at_ms: i64,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When, ms.
    pub decided_at_ms: Option<i64>,
    /// When the agent picked it up, ms.
    pub started_at_ms: Option<i64>,
    /// When it ended, ms.
    pub finished_at_ms: Option<i64>,
    /// The profile captured after it was applied.
    pub result_profile: Option<i64>,
    /// What the agent reported.
    pub output: Option<String>,
}
