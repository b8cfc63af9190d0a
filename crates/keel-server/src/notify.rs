//! Alert delivery: one worker thread per receiver reads the store's notification log from
//! where that receiver was last told, groups the alerts (one notification per host by
//! default), delivers with retries and records every attempt.
//!
//! The log is written in the same transaction as the alert change (by the store), and a
//! receiver's position moves only after its batch was delivered or refused for good: a
//! server killed mid-delivery tells the receiver again on restart (the `Idempotency-Key`
//! header lets it drop the repeat) rather than never. A receiver that stays unreachable
//! through all retries is retried later with the same batch; nothing is skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use keel_notify::{Alert, AlertStatus, DeliveryAttempt, DeliveryError, Notifier, Receiver};
use keel_store::{DeliveryRecord, Notification, Store};

/// Wakes the delivery workers early (an alert was raised) and stops them.
#[derive(Debug, Default)]
pub struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Signal {
    /// Wakes every waiting worker.
    pub fn wake(&self) {
        *self
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Stops the workers at their next wake-up.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` or until woken; false when stopping.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = *guard;
        let _unused = self
            .changed
            .wait_timeout_while(guard, timeout, |g| *g == seen && !self.stopped())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !self.stopped()
    }
}

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    /// Notifications a receiver accepted.
    pub delivered: AtomicU64,
    /// Notifications refused for good.
    pub rejected: AtomicU64,
    /// Batches put back after every retry failed.
    pub deferred: AtomicU64,
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Wake-ups and stop.
    pub signal: Arc<Signal>,
    /// Counters.
    pub metrics: Arc<DeliveryMetrics>,
    /// Delivers with retries.
    pub notifier: Notifier,
    /// Links in alerts start here.
    pub external_url: String,
    /// Labels alerts are grouped on.
    pub group_by: Vec<String>,
    /// How often to look for notifications when not woken.
    pub poll: Duration,
}

/// Starts one worker per receiver.
pub fn start(dispatch: &Dispatch, receivers: Vec<Receiver>) {
    for receiver in receivers {
        let d = dispatch.clone();
        std::thread::Builder::new()
            .name(format!("keel-notify-{}", receiver.name()))
            .spawn(move || worker(&d, &receiver))
            .expect("cannot start a notification thread");
    }
}

/// Records attempts in the store as they happen.
struct StoreLog<'a> {
    store: &'a dyn Store,
}

impl keel_notify::DeliveryLog for StoreLog<'_> {
    fn record(&mut self, a: DeliveryAttempt) {
        let (ok, outcome) = match &a.outcome {
            keel_notify::AttemptOutcome::Ok { status } => {
                (true, serde_json::json!({ "status": status }))
            }
            keel_notify::AttemptOutcome::Failed {
                error,
                retryable,
                status,
            } => (
                false,
                serde_json::json!({ "error": error, "retryable": retryable, "status": status }),
            ),
        };
        let record = DeliveryRecord {
            id: 0,
            receiver: a.receiver,
            group_key: a.group_key,
            status: a.status.as_str().to_string(),
            fingerprints: a.fingerprints,
            attempt: a.attempt,
            at: a.at.as_millisecond(),
            ok,
            outcome,
        };
        // The log is for people; a failure to write it must not stop delivery.
        let _ = self.store.record_delivery(&record);
    }
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The alerts a batch announces: the newest notification of each alert wins, so an alert
/// that fired and resolved within one batch is sent once, resolved.
fn alerts_of(batch: &[Notification], external_url: &str) -> Vec<Alert> {
    let mut latest: BTreeMap<i64, &Notification> = BTreeMap::new();
    for n in batch {
        latest.insert(n.alert.id, n);
    }
    let mut ordered: Vec<&Notification> = latest.into_values().collect();
    ordered.sort_by_key(|n| n.id);
    ordered
        .into_iter()
        .map(|n| {
            let a = &n.alert;
            let host = a.alert.labels.get("host").cloned().unwrap_or_default();
            let mut alert = Alert {
                status: AlertStatus::Firing,
                labels: a.alert.labels.clone(),
                annotations: a.alert.annotations.clone(),
                starts_at: timestamp(a.alert.starts_at),
                ends_at: keel_notify::ZERO_TIME,
                generator_url: format!(
                    "{}/api/v1/alerts?host={host}",
                    external_url.trim_end_matches('/')
                ),
                fingerprint: a.alert.fingerprint.clone(),
            };
            if n.status == "resolved" {
                alert = alert.resolved_at(timestamp(a.ends_at.unwrap_or(n.at)));
            }
            alert
        })
        .collect()
}

fn worker(d: &Dispatch, receiver: &Receiver) {
    let name = receiver.name().to_string();
    let group_by: Vec<&str> = d.group_by.iter().map(String::as_str).collect();
    let mut pause = Duration::from_secs(1);
    while !d.signal.stopped() {
        let cursor = match d.store.receiver_cursor(&name) {
            Ok(Some(c)) => c,
            // A receiver seen for the first time is told what happens from now on, not the
            // whole history.
            Ok(None) => {
                let start = d
                    .store
                    .last_notification_id()
                    .and_then(|last| d.store.set_receiver_cursor(&name, last).map(|()| last));
                let Ok(last) = start else {
                    d.signal.wait(d.poll);
                    continue;
                };
                last
            }
            Err(_) => {
                d.signal.wait(d.poll);
                continue;
            }
        };
        let batch = match d.store.notifications_after(cursor, 500) {
            Ok(b) if !b.is_empty() => b,
            _ => {
                d.signal.wait(d.poll);
                continue;
            }
        };
        let last = batch.last().map_or(cursor, |n| n.id);
        let messages = keel_notify::WebhookMessage::group(
            &name,
            &d.external_url,
            &group_by,
            alerts_of(&batch, &d.external_url),
        );
        let mut deferred = false;
        for message in &messages {
            let mut log = StoreLog { store: &*d.store };
            match d.notifier.deliver(receiver, message, &mut log) {
                Ok(()) => {
                    d.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(DeliveryError::Exhausted { .. }) => {
                    deferred = true;
                    break;
                }
                Err(_) => {
                    // Refused for good (or a receiver that cannot work as configured): the
                    // attempt is in the delivery log; retrying would not help.
                    d.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            if d.signal.stopped() {
                return;
            }
        }
        if deferred {
            d.metrics.deferred.fetch_add(1, Ordering::Relaxed);
            if !d.signal.wait(pause) {
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(300));
            continue;
        }
        pause = Duration::from_secs(1);
        let _ = d.store.set_receiver_cursor(&name, last);
    }
}
