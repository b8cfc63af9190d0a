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

mod sqlite;

use keel_profile::{Change, Hash};
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

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
    /// The expected schedule (JSON).
    pub schedule: serde_json::Value,
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

/// One store backend. Every method is blocking; servers call them from worker threads.
pub trait Store: Send + Sync + std::fmt::Debug {
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
}
