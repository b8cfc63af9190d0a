//! The delivery log: one record per attempt, successful or not, so that "did the on-call get
//! the alert, and if not, why" has an answer. The server persists records in its store; tests
//! and tools use [`MemoryLog`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alert::AlertStatus;

/// One attempt to deliver one notification to one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The receiver's name.
    pub receiver: String,
    /// The group the notification was for.
    pub group_key: String,
    /// Whether the notification announced firing or resolved alerts.
    pub status: AlertStatus,
    /// Fingerprints of the alerts sent, sorted.
    pub fingerprints: Vec<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt ended.
    pub at: Timestamp,
    pub outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// Accepted: the HTTP status (2xx) or the SMTP reply code (250).
    Ok { status: u16 },
    /// Not accepted. `retryable` tells whether another attempt could succeed (connection
    /// failures, timeouts, HTTP 5xx and 429, SMTP 4xx) or not (other HTTP 4xx, SMTP 5xx, a
    /// receiver misconfigured). `status` is the HTTP status or SMTP reply code when there was
    /// an answer.
    Failed {
        error: String,
        retryable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
}

impl AttemptOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, AttemptOutcome::Ok { .. })
    }
}

/// Where delivery attempts are recorded.
pub trait DeliveryLog {
    fn record(&mut self, attempt: DeliveryAttempt);
}

/// A delivery log kept in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryLog {
    pub attempts: Vec<DeliveryAttempt>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }
}

impl DeliveryLog for MemoryLog {
    fn record(&mut self, attempt: DeliveryAttempt) {
        self.attempts.push(attempt);
    }
}

impl DeliveryLog for Vec<DeliveryAttempt> {
    fn record(&mut self, attempt: DeliveryAttempt) {
        self.push(attempt);
    }
}
