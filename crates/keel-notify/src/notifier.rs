//! Delivery with retries: the loop around one attempt, its backoff and its log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alert::WebhookMessage;
use crate::log::{AttemptOutcome, DeliveryAttempt, DeliveryLog};
use crate::receiver::{ConfigError, Receiver};
use crate::{email, webhook};

/// When to try again: exponential backoff with jitter.
///
/// The wait before retry `n` (1 after the first failed attempt) is `initial × factorⁿ⁻¹`,
/// capped at `max_delay`, then with jitter drawn uniformly from its upper half, so that many
/// notifications failing together do not retry in lockstep. A `Retry-After` from the receiver
/// replaces the computed wait (capped at `max_delay` as well, since delivery holds a worker
/// thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(
        default = "default_initial",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub initial: Duration,
    #[serde(default = "default_factor")]
    pub factor: u32,
    #[serde(
        default = "default_max_delay",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub max_delay: Duration,
    /// Attempts in all, the first included; at least 1.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_jitter")]
    pub jitter: bool,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 5 min apart, 5 attempts, with jitter.
    fn default() -> Backoff {
        Backoff {
            initial: default_initial(),
            factor: default_factor(),
            max_delay: default_max_delay(),
            max_attempts: default_max_attempts(),
            jitter: default_jitter(),
        }
    }
}

impl Backoff {
    /// The wait before retry `retry` (1-based), without jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let growth = self.factor.saturating_pow(retry.saturating_sub(1));
        self.initial.saturating_mul(growth).min(self.max_delay)
    }

    /// The wait before retry `retry`, with jitter when enabled: within `[delay / 2, delay]`.
    pub fn wait(&self, retry: u32) -> Duration {
        let delay = self.delay(retry);
        if self.jitter {
            let half = delay / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            delay
        }
    }
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_factor() -> u32 {
    2
}
fn default_max_delay() -> Duration {
    Duration::from_secs(300)
}
fn default_max_attempts() -> u32 {
    5
}
fn default_jitter() -> bool {
    true
}

type SleepFn = dyn Fn(Duration) + Send + Sync;
type ClockFn = dyn Fn() -> Timestamp + Send + Sync;

/// Delivers notifications to receivers, retrying what may pass and logging every attempt.
///
/// Blocking: call it from a worker thread. One `Notifier` can be shared between threads; it
/// keeps a pool of HTTP connections.
#[derive(Clone)]
pub struct Notifier {
    backoff: Backoff,
    agent: ureq::Agent,
    sleep: Arc<SleepFn>,
    clock: Arc<ClockFn>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier::new(Backoff::default())
    }
}

impl Notifier {
    /// A notifier that waits with `std::thread::sleep` and reads the system clock.
    pub fn new(backoff: Backoff) -> Notifier {
        let agent = ureq::Agent::config_builder()
            // 4xx and 5xx are answers to read (status, body, Retry-After), not errors.
            .http_status_as_error(false)
            // A webhook that moved is a configuration to fix; following a 301/302 would
            // also turn the POST into a GET.
            .max_redirects(0)
            .user_agent(format!("keel-notify/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Notifier {
            backoff,
            agent,
            sleep: Arc::new(std::thread::sleep),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Replaces how the notifier waits between attempts (tests record the waits instead).
    #[must_use]
    pub fn with_sleep(mut self, sleep: impl Fn(Duration) + Send + Sync + 'static) -> Notifier {
        self.sleep = Arc::new(sleep);
        self
    }

    /// Replaces the clock that stamps attempts and reads `Retry-After` dates.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Notifier {
        self.clock = Arc::new(clock);
        self
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Delivers `message` to `receiver`, retrying connection failures, timeouts, HTTP 5xx and
    /// 429 and SMTP 4xx with [`Backoff`], and recording every attempt in `log`.
    ///
    /// A webhook receiver gets the message truncated to its `max_alerts`, with the headers
    /// `Idempotency-Key` (the same on every retry) and, when it has a secret,
    /// `X-Keel-Signature-256`. Returns once the receiver accepted, or with the reason it never
    /// did: a permanent refusal (HTTP 4xx other than 429, SMTP 5xx, TLS failure), attempts
    /// exhausted, or a receiver that cannot work as configured (logged as one failed,
    /// non-retryable attempt).
    pub fn deliver(
        &self,
        receiver: &Receiver,
        message: &WebhookMessage,
        log: &mut dyn DeliveryLog,
    ) -> Result<(), DeliveryError> {
        let name = receiver.name();
        let target = receiver.target();
        let sent = match receiver {
            Receiver::Webhook(webhook) => message.truncated(webhook.max_alerts),
            Receiver::Email(_) => message.clone(),
        };
        if sent.alerts.is_empty() {
            return Err(DeliveryError::NoAlerts {
                receiver: name.to_owned(),
            });
        }
        let fingerprints = sent.fingerprints();
        let mut record = |attempt: u32, outcome: AttemptOutcome| {
            log.record(DeliveryAttempt {
                receiver: name.to_owned(),
                group_key: sent.group_key.clone(),
                status: sent.status,
                fingerprints: fingerprints.clone(),
                attempt,
                at: (self.clock)(),
                outcome,
            });
        };

        let prepared = receiver.validate().and_then(|()| match receiver {
            Receiver::Webhook(webhook) => Ok(Prepared::Webhook(webhook::prepare(webhook, &sent))),
            Receiver::Email(email) => email::prepare(email, &sent, (self.clock)())
                .map(|email| Prepared::Email(Box::new(email))),
        });
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                record(
                    1,
                    AttemptOutcome::Failed {
                        error: error.to_string(),
                        retryable: false,
                        status: None,
                    },
                );
                return Err(DeliveryError::Config(error));
            }
        };

        let max_attempts = self.backoff.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &prepared {
                Prepared::Webhook(request) => webhook::send(&self.agent, request, (self.clock)()),
                Prepared::Email(email) => email::send(email),
            };
            let failure = match result {
                Ok(status) => {
                    record(attempt, AttemptOutcome::Ok { status });
                    return Ok(());
                }
                Err(failure) => failure,
            };
            record(
                attempt,
                AttemptOutcome::Failed {
                    error: failure.message.clone(),
                    retryable: failure.retryable,
                    status: failure.status,
                },
            );
            if !failure.retryable {
                return Err(DeliveryError::Rejected {
                    receiver: name.to_owned(),
                    target,
                    status: failure.status,
                    reason: failure.message,
                });
            }
            if attempt >= max_attempts {
                return Err(DeliveryError::Exhausted {
                    receiver: name.to_owned(),
                    target,
                    attempts: attempt,
                    status: failure.status,
                    last_error: failure.message,
                });
            }
            let wait = failure.retry_after.map_or_else(
                || self.backoff.wait(attempt),
                |after| after.min(self.backoff.max_delay),
            );
            (self.sleep)(wait);
        }
    }
}

enum Prepared {
    Webhook(webhook::Prepared),
    Email(Box<email::Prepared>),
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What happened, with the status and an excerpt of the answer when there was one.
    pub(crate) message: String,
    pub(crate) retryable: bool,
    pub(crate) status: Option<u16>,
    /// What the receiver asked for with `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver cannot work as configured; nothing was sent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The message has no alerts.
    #[error("receiver `{receiver}`: the notification carries no alerts, so nothing was sent")]
    NoAlerts { receiver: String },
    /// The receiver refused for good (HTTP 4xx other than 429, SMTP 5xx, TLS failure, bad
    /// URL); not retried.
    #[error(
        "receiver `{receiver}`: {target} refused the notification: {reason} \
         (a permanent failure, not retried)"
    )]
    Rejected {
        receiver: String,
        target: String,
        /// The HTTP status or SMTP reply code, when there was an answer.
        status: Option<u16>,
        reason: String,
    },
    /// Every attempt failed with something that might have passed.
    #[error("receiver `{receiver}`: gave up on {target} after {attempts} attempts; last error: {last_error}")]
    Exhausted {
        receiver: String,
        target: String,
        attempts: u32,
        /// The last HTTP status or SMTP reply code, when there was an answer.
        status: Option<u16>,
        last_error: String,
    },
}

impl DeliveryError {
    /// The name of the receiver the notification was for.
    pub fn receiver(&self) -> &str {
        match self {
            DeliveryError::Config(error) => &error.receiver,
            DeliveryError::NoAlerts { receiver }
            | DeliveryError::Rejected { receiver, .. }
            | DeliveryError::Exhausted { receiver, .. } => receiver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let backoff = Backoff {
            jitter: false,
            max_delay: Duration::from_secs(5),
            ..Backoff::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| backoff.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(backoff.delay(200), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let backoff = Backoff::default();
        for retry in 1..=4 {
            let delay = backoff.delay(retry);
            for _ in 0..50 {
                let wait = backoff.wait(retry);
                assert!(wait >= delay / 2 && wait <= delay, "{wait:?} for {delay:?}");
            }
        }
    }

    #[test]
    fn backoff_config_reads_friendly_durations() {
        let backoff: Backoff =
            serde_json::from_str(r#"{"initial": "250ms", "max_attempts": 3}"#).unwrap();
        assert_eq!(backoff.initial, Duration::from_millis(250));
        assert_eq!(backoff.max_attempts, 3);
        assert_eq!(backoff.factor, 2);
        assert!(serde_json::from_str::<Backoff>(r#"{"intial": "1s"}"#).is_err());
    }
}
