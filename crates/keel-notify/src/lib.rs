//! Alert delivery for Keel: the server raises and resolves alerts, and this crate tells people.
//!
//! Alerts and notifications have exactly the shapes of Alertmanager's webhook payload
//! (`version: "4"`, [`WebhookMessage`] and [`Alert`], with Alertmanager's own [`fingerprint`]),
//! so anything that already takes Alertmanager webhooks takes Keel's. A [`Notifier`] delivers a
//! message to a [`Receiver`]:
//!
//! - **webhook**: a JSON `POST`, with an `Idempotency-Key` header that is the same on every
//!   retry and, when the receiver has a secret, `X-Keel-Signature-256: sha256=<hex HMAC>` over
//!   the body ([`webhook::verify`] checks it);
//! - **email**: a plain-text mail over SMTP (none, STARTTLS or TLS; rustls with the ring
//!   provider), one line per fact an on-call person needs ([`email::render`]).
//!
//! Connection failures, timeouts, HTTP 5xx and 429 (honouring `Retry-After`) and SMTP 4xx are
//! retried with exponential backoff and jitter ([`Backoff`]); other refusals are permanent.
//! Every attempt is recorded through a [`DeliveryLog`], which the server persists.
//!
//! Delivery blocks: the server calls it from a worker thread.
//!
//! ```no_run
//! use keel_notify::{Alert, Labels, MemoryLog, Notifier, Receiver, WebhookMessage, WebhookReceiver};
//!
//! let labels: Labels = [("alertname", "PackageAdded"), ("host", "web1"), ("severity", "warning")]
//!     .into_iter()
//!     .map(|(k, v)| (k.to_owned(), v.to_owned()))
//!     .collect();
//! let annotations: Labels = [("summary".to_owned(), "nginx 1.24 installed on web1".to_owned())].into();
//! let alert = Alert::firing(labels, annotations, jiff::Timestamp::now())
//!     .with_generator_url("https://keel.example/hosts/web1/diff/41..42");
//!
//! // One message per host, as Keel groups them.
//! let messages = WebhookMessage::group("ops", "https://keel.example/", &["host"], vec![alert]);
//! let receiver = Receiver::Webhook(WebhookReceiver::new("ops", "https://hooks.example/keel"));
//!
//! let notifier = Notifier::default();
//! let mut log = MemoryLog::new();
//! for message in &messages {
//!     if let Err(error) = notifier.deliver(&receiver, message, &mut log) {
//!         eprintln!("{error}");
//!     }
//! }
//! for attempt in &log.attempts {
//!     eprintln!("{} attempt {}: {:?}", attempt.receiver, attempt.attempt, attempt.outcome);
//! }
//! ```

pub mod alert;
pub mod email;
pub mod log;
pub mod notifier;
pub mod receiver;
pub mod webhook;

pub use alert::{
    fingerprint, Alert, AlertStatus, Labels, WebhookMessage, WEBHOOK_VERSION, ZERO_TIME,
};
pub use email::RenderedEmail;
pub use log::{AttemptOutcome, DeliveryAttempt, DeliveryLog, MemoryLog};
pub use notifier::{Backoff, DeliveryError, Notifier};
pub use receiver::{ConfigError, EmailReceiver, Receiver, Secret, SmtpTls, WebhookReceiver};

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The bytes of lower-case or upper-case hex, if it is hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
