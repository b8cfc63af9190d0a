//! keel-notify's integration tests: one binary, real components (an HTTP server and an SMTP
//! server on loopback), no mocked network.

mod email;
mod fingerprint;
mod http_server;
mod model;
mod smtp_server;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use keel_notify::{Alert, Backoff, Labels, Notifier, WebhookMessage};

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

pub fn at(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 timestamp")
}

/// A firing alert shaped like Keel's rule alerts.
pub fn rule_alert(name: &str, host: &str, severity: &str, summary: &str) -> Alert {
    Alert::firing(
        labels(&[
            ("alertname", name),
            ("host", host),
            ("rule_id", &name.to_lowercase()),
            ("severity", severity),
        ]),
        labels(&[
            ("summary", summary),
            (
                "description",
                &format!("{summary}.\nSeen in the profile of {host}."),
            ),
            (
                "diff_url",
                &format!("https://keel.example/hosts/{host}/diff/41..42"),
            ),
        ]),
        at("2024-06-01T12:00:00Z"),
    )
    .with_generator_url(format!("https://keel.example/hosts/{host}/profiles/42"))
}

/// Two firing alerts for web1, grouped by host.
pub fn firing_message(receiver: &str) -> WebhookMessage {
    let alerts = vec![
        rule_alert(
            "PackageAdded",
            "web1",
            "warning",
            "package nginx 1.24 installed",
        ),
        rule_alert(
            "NewRootAccount",
            "web1",
            "critical",
            "uid 0 account toor added",
        ),
    ];
    let mut messages = WebhookMessage::group(receiver, "https://keel.example/", &["host"], alerts);
    assert_eq!(messages.len(), 1);
    messages.remove(0)
}

/// The same alerts, resolved.
pub fn resolved_message(receiver: &str) -> WebhookMessage {
    let firing = firing_message(receiver);
    let alerts = firing
        .alerts
        .into_iter()
        .map(|alert| alert.resolved_at(at("2024-06-01T12:30:00Z")))
        .collect();
    WebhookMessage::new(
        receiver,
        "https://keel.example/",
        firing.group_labels,
        alerts,
    )
}

/// Backoff in milliseconds, so that tests that really sleep stay fast.
pub fn fast_backoff(max_attempts: u32) -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_attempts,
        ..Backoff::default()
    }
}

/// A notifier with the default (seconds) backoff that records its waits instead of sleeping.
pub fn recording_notifier(backoff: Backoff) -> (Notifier, Arc<Mutex<Vec<Duration>>>) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&waits);
    let notifier =
        Notifier::new(backoff).with_sleep(move |wait| recorded.lock().unwrap().push(wait));
    (notifier, waits)
}
