//! Prometheus metrics, in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Profiles stored.
    pub profiles_stored: AtomicU64,
    /// Uploads refused, by reason code.
    pub uploads_refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Upload bytes received.
    pub upload_bytes: AtomicU64,
    /// Agents enrolled.
    pub enrollments: AtomicU64,
    /// API requests refused for missing or wrong credentials.
    pub auth_failures: AtomicU64,
    /// Rule evaluation errors, by rule.
    pub rule_errors: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Alert delivery.
    pub delivery: std::sync::Arc<crate::notify::DeliveryMetrics>,
    /// The missing-profile watch.
    pub watch: std::sync::Arc<crate::watch::WatchMetrics>,
}

impl Metrics {
    /// Counts a refused upload.
    pub fn refused(&self, code: &'static str) {
        *self
            .uploads_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(code)
            .or_insert(0) += 1;
    }

    /// Counts a rule that failed to evaluate.
    pub fn rule_error(&self, rule: &str) {
        *self
            .rule_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(rule.to_string())
            .or_insert(0) += 1;
    }

    /// Renders the exposition text; `hosts` (by state) and `profiles` are gauges read from
    /// the store.
    pub fn render(
        &self,
        hosts: &std::collections::BTreeMap<keel_store::keel_schedule::HostState, i64>,
        profiles: i64,
    ) -> String {
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "keel_profiles_stored_total",
            "Profiles stored since the server started.",
            self.profiles_stored.load(Ordering::Relaxed),
        );
        counter(
            "keel_upload_bytes_total",
            "Bytes of profile uploads received.",
            self.upload_bytes.load(Ordering::Relaxed),
        );
        counter(
            "keel_enrollments_total",
            "Agents enrolled.",
            self.enrollments.load(Ordering::Relaxed),
        );
        counter(
            "keel_auth_failures_total",
            "Requests refused for missing or wrong credentials.",
            self.auth_failures.load(Ordering::Relaxed),
        );
        counter(
            "keel_notifications_delivered_total",
            "Notifications a receiver accepted.",
            self.delivery.delivered.load(Ordering::Relaxed),
        );
        counter(
            "keel_notifications_rejected_total",
            "Notifications a receiver refused for good.",
            self.delivery.rejected.load(Ordering::Relaxed),
        );
        counter(
            "keel_notifications_deferred_total",
            "Notification batches put back after every retry failed.",
            self.delivery.deferred.load(Ordering::Relaxed),
        );
        counter(
            "keel_missing_alerts_total",
            "Missing-profile alerts raised by the watch.",
            self.watch.raised.load(Ordering::Relaxed),
        );
        let _ = writeln!(o, "# HELP keel_uploads_refused_total Uploads refused, by reason.\n# TYPE keel_uploads_refused_total counter");
        for (code, n) in self
            .uploads_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(o, "keel_uploads_refused_total{{reason=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP keel_hosts Hosts enrolled, by state.\n# TYPE keel_hosts gauge"
        );
        for (state, n) in hosts {
            let _ = writeln!(o, "keel_hosts{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP keel_profiles Profiles stored.\n# TYPE keel_profiles gauge\nkeel_profiles {profiles}");
        o
    }
}
