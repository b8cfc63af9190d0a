//! The missing-profile watch: hosts whose profile is overdue past their grace period get a
//! `profile-missing` alert; the store resolves it when a profile arrives, or when the host is
//! paused or retired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_store::{HostRecord, NewAlert, Store, MISSING_RULE};

use crate::notify::Signal;

/// Alerts the watch raised, for `/metrics`.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    /// Missing alerts raised.
    pub raised: AtomicU64,
    /// Looks done.
    pub runs: AtomicU64,
}

/// The alert for a host that went silent.
pub fn missing_alert(host: &HostRecord, now: i64) -> NewAlert {
    let labels: keel_notify::Labels = [
        ("alertname", MISSING_RULE),
        ("host", host.name.as_str()),
        ("severity", "critical"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let since = match host.last_seen_at {
        Some(ms) => format!("since {}", format_ms(ms)),
        None => format!("since it enrolled at {}", format_ms(host.created_at)),
    };
    let summary = format!(
        "no profile from {} {since} (expected {})",
        host.name, host.schedule
    );
    NewAlert {
        fingerprint: keel_notify::fingerprint(&labels),
        rule: MISSING_RULE.into(),
        severity: "critical".into(),
        labels,
        annotations: [("summary".to_owned(), summary)].into(),
        starts_at: now,
    }
}

fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string(),
    )
}

/// One look: raises the alerts of every overdue host; returns how many were raised.
pub fn run_once(store: &dyn Store, now: i64) -> keel_store::Result<usize> {
    let mut raised = 0;
    loop {
        let overdue = store.overdue_hosts(now, 500)?;
        if overdue.is_empty() {
            return Ok(raised);
        }
        let mut progress = false;
        for host in &overdue {
            if store.raise_alert(host.id, &missing_alert(host, now))? {
                raised += 1;
                progress = true;
            }
        }
        // A host whose alert could not be raised (its fingerprint fires elsewhere) would be
        // listed again: stop rather than spin.
        if !progress {
            return Ok(raised);
        }
    }
}

/// Looks every `interval` until the signal stops.
pub fn start(
    store: Arc<dyn Store>,
    signal: Arc<Signal>,
    metrics: Arc<WatchMetrics>,
    interval: Duration,
) {
    std::thread::Builder::new()
        .name("keel-watch".into())
        .spawn(move || loop {
            if let Ok(n) = run_once(&*store, crate::now_ms()) {
                metrics.runs.fetch_add(1, Ordering::Relaxed);
                if n > 0 {
                    metrics.raised.fetch_add(n as u64, Ordering::Relaxed);
                    signal.wake();
                }
            }
            if !signal.wait(interval) {
                return;
            }
        })
        .expect("cannot start the watch thread");
}
