//! Alerts and the webhook message that carries a group of them, in exactly the shapes
//! Alertmanager's webhook receiver uses (payload `version: "4"`), so that anything that already
//! consumes Alertmanager notifications consumes Keel's unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A label or annotation set. A `BTreeMap` keeps names sorted, which is what both the
/// fingerprint and stable JSON output need.
pub type Labels = BTreeMap<String, String>;

/// The version of Alertmanager's webhook payload these types produce.
pub const WEBHOOK_VERSION: &str = "4";

/// What Alertmanager (Go's zero `time.Time`) sends as `endsAt` for an alert that is still
/// firing: `0001-01-01T00:00:00Z`.
pub const ZERO_TIME: Timestamp = Timestamp::constant(-62_135_596_800, 0);

/// Whether an alert (or a notification as a whole) is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// `"firing"` or `"resolved"`, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as an element of Alertmanager's webhook `alerts[]`.
///
/// The fields are public so that a stored alert can be rebuilt as it was; an alert built with
/// [`Alert::firing`] has its fingerprint computed from its labels, and whoever changes `labels`
/// afterwards should call [`Alert::refresh_fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    /// RFC 3339 in the JSON.
    pub starts_at: Timestamp,
    /// [`ZERO_TIME`] while the alert is firing, as Alertmanager sends it.
    pub ends_at: Timestamp,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// [`fingerprint`] of `labels`.
    pub fingerprint: String,
}

impl Alert {
    /// A firing alert with its fingerprint computed from `labels`, no generator URL yet and
    /// `endsAt` the zero time.
    pub fn firing(labels: Labels, annotations: Labels, starts_at: Timestamp) -> Alert {
        let fingerprint = fingerprint(&labels);
        Alert {
            status: AlertStatus::Firing,
            labels,
            annotations,
            starts_at,
            ends_at: ZERO_TIME,
            generator_url: String::new(),
            fingerprint,
        }
    }

    /// The same alert with the link back to what raised it (in Keel, the diff or rule page).
    #[must_use]
    pub fn with_generator_url(mut self, url: impl Into<String>) -> Alert {
        self.generator_url = url.into();
        self
    }

    /// The same alert, resolved at `ends_at`.
    #[must_use]
    pub fn resolved_at(mut self, ends_at: Timestamp) -> Alert {
        self.status = AlertStatus::Resolved;
        self.ends_at = ends_at;
        self
    }

    /// Recomputes `fingerprint` after `labels` were changed by hand.
    pub fn refresh_fingerprint(&mut self) {
        self.fingerprint = fingerprint(&self.labels);
    }

    /// The value of label `name`, if set.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// The value of annotation `name`, if set.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(name).map(String::as_str)
    }
}

/// Alertmanager's fingerprint of a label set: 16 lower-case hex digits.
///
/// This is `model.LabelSet.Fingerprint()` from Prometheus' `common/model` (`labelSetToFingerprint`),
/// reproduced exactly so that Keel's fingerprints equal Alertmanager's for the same labels:
/// FNV-1a, 64 bits (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), over the label
/// names in byte-wise sorted order, each name and each value followed by the separator byte
/// `0xff` (which cannot occur in UTF-8). The empty set hashes to the offset basis. Go prints the
/// result with `%016x`.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const SEPARATOR: u8 = 0xff;

    let mut hash = OFFSET_BASIS;
    let mut add = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // BTreeMap<String, _> iterates in byte-wise order, the same order as Go's sort.Strings.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

/// One notification to one receiver: Alertmanager's webhook payload (`version: "4"`).
///
/// Fields are in the order Alertmanager writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub receiver: String,
    /// `firing` when at least one alert fires, else `resolved`.
    pub status: AlertStatus,
    pub alerts: Vec<Alert>,
    /// The labels the group was formed on.
    pub group_labels: Labels,
    /// Labels every alert has with the same value.
    pub common_labels: Labels,
    /// Annotations every alert has with the same value.
    pub common_annotations: Labels,
    /// Where the sender can be reached (Keel's web address).
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// Always [`WEBHOOK_VERSION`].
    pub version: String,
    /// Identifies the group: `{}:{name="value", ...}` over the group labels, as Alertmanager
    /// writes it for its root route.
    pub group_key: String,
    /// How many alerts were left out because the receiver caps how many it takes.
    pub truncated_alerts: u64,
}

impl WebhookMessage {
    /// A message for `receiver` carrying one group of alerts formed on `group_labels`.
    ///
    /// The status, common labels and common annotations (the intersection over all alerts) and
    /// the group key are computed here.
    pub fn new(
        receiver: impl Into<String>,
        external_url: impl Into<String>,
        group_labels: Labels,
        alerts: Vec<Alert>,
    ) -> WebhookMessage {
        let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        let common_labels = intersection(alerts.iter().map(|a| &a.labels));
        let common_annotations = intersection(alerts.iter().map(|a| &a.annotations));
        let group_key = format!("{{}}:{}", label_set_string(&group_labels));
        WebhookMessage {
            receiver: receiver.into(),
            status,
            alerts,
            group_labels,
            common_labels,
            common_annotations,
            external_url: external_url.into(),
            version: WEBHOOK_VERSION.to_owned(),
            group_key,
            truncated_alerts: 0,
        }
    }

    /// Splits a batch into one message per distinct value of the `group_by` labels (Keel groups
    /// per host, so a change on many packages of one host is one notification, not a storm).
    ///
    /// A label an alert lacks is left out of its group labels, as Alertmanager does. Messages
    /// come out ordered by group labels, alerts in each in their input order; an empty
    /// `group_by` puts every alert in one message.
    pub fn group(
        receiver: &str,
        external_url: &str,
        group_by: &[&str],
        alerts: Vec<Alert>,
    ) -> Vec<WebhookMessage> {
        let mut groups: BTreeMap<Labels, Vec<Alert>> = BTreeMap::new();
        for alert in alerts {
            let key: Labels = group_by
                .iter()
                .filter_map(|name| {
                    alert
                        .labels
                        .get(*name)
                        .map(|value| ((*name).to_owned(), value.clone()))
                })
                .collect();
            groups.entry(key).or_default().push(alert);
        }
        groups
            .into_iter()
            .map(|(group_labels, alerts)| {
                WebhookMessage::new(receiver, external_url, group_labels, alerts)
            })
            .collect()
    }

    /// The same message keeping at most `max_alerts` alerts (0 keeps all) and counting the rest
    /// in `truncatedAlerts`, as Alertmanager's `max_alerts` does. Status and common labels stay
    /// those of the whole group.
    #[must_use]
    pub fn truncated(&self, max_alerts: usize) -> WebhookMessage {
        let mut message = self.clone();
        if max_alerts > 0 && message.alerts.len() > max_alerts {
            let dropped = message.alerts.len() - max_alerts;
            message.alerts.truncate(max_alerts);
            message.truncated_alerts += dropped as u64;
        }
        message
    }

    /// The fingerprints of the alerts carried, sorted.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut fingerprints: Vec<String> =
            self.alerts.iter().map(|a| a.fingerprint.clone()).collect();
        fingerprints.sort();
        fingerprints
    }

    /// The alerts with the given status.
    pub fn alerts_with(&self, status: AlertStatus) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(move |a| a.status == status)
    }

    /// The idempotency key of this notification: hex SHA-256 over the group key, the status and
    /// the sorted fingerprints, each followed by a `0xff` byte. Retries of one notification
    /// share it, so a receiver can drop duplicates; the resolved notification of the same group
    /// gets another key.
    pub fn idempotency_key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.group_key.as_bytes());
        hasher.update([0xff]);
        hasher.update(self.status.as_str().as_bytes());
        hasher.update([0xff]);
        for fingerprint in self.fingerprints() {
            hasher.update(fingerprint.as_bytes());
            hasher.update([0xff]);
        }
        crate::hex(&hasher.finalize())
    }
}

/// The entries every map has with the same value.
fn intersection<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut common = first.clone();
    for map in maps {
        common.retain(|name, value| map.get(name) == Some(value));
    }
    common
}

/// A label set as Prometheus' `LabelSet.String()` prints it: `{a="1", b="2"}`, values quoted
/// as Go's `%q` does for the characters labels carry in practice.
fn label_set_string(labels: &Labels) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={}", go_quote(value)))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn zero_time_prints_as_go_does() {
        assert_eq!(ZERO_TIME.to_string(), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn group_key_quotes_like_go() {
        let set = labels(&[("host", "web1"), ("q", "a\"b\\c\n")]);
        assert_eq!(label_set_string(&set), r#"{host="web1", q="a\"b\\c\n"}"#);
        assert_eq!(label_set_string(&Labels::new()), "{}");
    }

    #[test]
    fn common_labels_are_the_intersection() {
        let at = Timestamp::UNIX_EPOCH;
        let a = Alert::firing(
            labels(&[
                ("host", "web1"),
                ("alertname", "A"),
                ("severity", "warning"),
            ]),
            labels(&[("summary", "one")]),
            at,
        );
        let b = Alert::firing(
            labels(&[
                ("host", "web1"),
                ("alertname", "B"),
                ("severity", "warning"),
            ]),
            labels(&[("summary", "two")]),
            at,
        );
        let message = WebhookMessage::new("r", "", labels(&[("host", "web1")]), vec![a, b]);
        assert_eq!(
            message.common_labels,
            labels(&[("host", "web1"), ("severity", "warning")])
        );
        assert!(message.common_annotations.is_empty());
        assert_eq!(message.status, AlertStatus::Firing);
    }
}
