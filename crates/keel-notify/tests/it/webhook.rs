//! Webhook delivery against a real HTTP server on loopback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use keel_notify::webhook::{self, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use keel_notify::{
    fingerprint, AlertStatus, AttemptOutcome, Backoff, DeliveryError, MemoryLog, Notifier,
    Receiver, Secret, WebhookMessage, WebhookReceiver,
};

use crate::http_server::{dead_port, HttpReceiver, Reply};
use crate::{fast_backoff, firing_message, recording_notifier, resolved_message, rule_alert};

const SECRET: &str = "s3cret-shared-with-the-receiver";

fn receiver(server: &HttpReceiver) -> WebhookReceiver {
    WebhookReceiver::new("ops-hook", server.url("/hooks/keel"))
}

fn keys(value: &serde_json::Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn outcomes(log: &MemoryLog) -> Vec<(u32, Option<u16>, bool)> {
    log.attempts
        .iter()
        .map(|attempt| match &attempt.outcome {
            AttemptOutcome::Ok { status } => (attempt.attempt, Some(*status), true),
            AttemptOutcome::Failed { status, .. } => (attempt.attempt, *status, false),
        })
        .collect()
}

#[test]
fn payload_has_exactly_alertmanagers_keys_and_a_valid_signature() {
    let server = HttpReceiver::start(vec![]);
    let mut hook = receiver(&server);
    hook.hmac_secret = Some(Secret::new(SECRET));
    hook.headers
        .insert("Authorization".to_owned(), "Bearer t0ken".to_owned());
    let message = firing_message("ops-hook");
    let mut log = MemoryLog::new();

    Notifier::default()
        .deliver(&Receiver::Webhook(hook), &message, &mut log)
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/keel");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(
        request.header(IDEMPOTENCY_HEADER),
        Some(message.idempotency_key().as_str())
    );

    // The signature is an HMAC-SHA256 of the exact bytes received, under the shared secret.
    let signature = request.header(SIGNATURE_HEADER).expect("signed");
    assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
    assert!(webhook::verify(SECRET.as_bytes(), &request.body, signature));
    assert!(!webhook::verify(
        b"another secret",
        &request.body,
        signature
    ));
    let mut tampered = request.body.clone();
    tampered[10] ^= 1;
    assert!(!webhook::verify(SECRET.as_bytes(), &tampered, signature));

    let json = request.json();
    assert_eq!(
        keys(&json),
        BTreeSet::from([
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ])
    );
    assert_eq!(json["version"], "4");
    assert_eq!(json["status"], "firing");
    assert_eq!(json["receiver"], "ops-hook");
    assert_eq!(json["groupKey"], r#"{}:{host="web1"}"#);
    assert_eq!(json["truncatedAlerts"], 0);
    assert_eq!(json["externalURL"], "https://keel.example/");
    assert_eq!(json["groupLabels"], serde_json::json!({"host": "web1"}));
    assert_eq!(
        json["commonLabels"],
        serde_json::json!({"host": "web1"}),
        "alertname, rule_id and severity differ between the two alerts"
    );
    assert_eq!(
        json["commonAnnotations"]["diff_url"],
        "https://keel.example/hosts/web1/diff/41..42"
    );

    let alerts = json["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    for (alert, sent) in alerts.iter().zip(&message.alerts) {
        assert_eq!(
            keys(alert),
            BTreeSet::from([
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint",
            ])
        );
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["startsAt"], "2024-06-01T12:00:00Z");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            alert["generatorURL"],
            "https://keel.example/hosts/web1/profiles/42"
        );
        assert_eq!(alert["fingerprint"], fingerprint(&sent.labels));
        assert_eq!(alert["labels"]["host"], "web1");
    }

    // What arrived decodes into the message that was sent.
    let decoded: WebhookMessage = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(decoded, message);

    assert_eq!(outcomes(&log), [(1, Some(200), true)]);
    let attempt = &log.attempts[0];
    assert_eq!(attempt.receiver, "ops-hook");
    assert_eq!(attempt.group_key, message.group_key);
    assert_eq!(attempt.status, AlertStatus::Firing);
    assert_eq!(attempt.fingerprints, message.fingerprints());
}

#[test]
fn server_errors_are_retried_with_backoff_until_accepted() {
    let server = HttpReceiver::start(vec![
        Reply::status(500).body("database is locked"),
        Reply::status(503).body("overloaded"),
    ]);
    let message = firing_message("ops-hook");
    let mut log = MemoryLog::new();
    let backoff = fast_backoff(5);

    let started = Instant::now();
    Notifier::new(backoff.clone())
        .deliver(&Receiver::Webhook(receiver(&server)), &message, &mut log)
        .unwrap();
    let elapsed = started.elapsed();

    assert_eq!(
        outcomes(&log),
        [
            (1, Some(500), false),
            (2, Some(503), false),
            (3, Some(200), true)
        ]
    );
    for failed in &log.attempts[..2] {
        let AttemptOutcome::Failed {
            error, retryable, ..
        } = &failed.outcome
        else {
            unreachable!()
        };
        assert!(retryable, "{error}");
        assert!(error.starts_with("HTTP 50"), "{error}");
    }
    let AttemptOutcome::Failed { error, .. } = &log.attempts[0].outcome else {
        unreachable!()
    };
    assert!(
        error.contains("database is locked"),
        "body excerpt kept: {error}"
    );

    // Every retry is the same request: same body, same idempotency key.
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let key = message.idempotency_key();
    for request in &requests {
        assert_eq!(request.header(IDEMPOTENCY_HEADER), Some(key.as_str()));
        assert_eq!(request.body, requests[0].body);
    }
    // It really waited: at least half of 10 ms, then half of 20 ms.
    assert!(
        elapsed >= backoff.delay(1) / 2 + backoff.delay(2) / 2,
        "{elapsed:?}"
    );
}

#[test]
fn waits_grow_exponentially_with_jitter() {
    let server = HttpReceiver::start(vec![
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
    ]);
    let (notifier, waits) = recording_notifier(Backoff::default());
    let mut log = MemoryLog::new();

    notifier
        .deliver(
            &Receiver::Webhook(receiver(&server)),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap();

    let waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 3);
    for (retry, wait) in (1..).zip(&waits) {
        // 1 s, 2 s, 4 s, each drawn from its upper half.
        let full = Duration::from_secs(1 << (retry - 1));
        assert!(
            *wait >= full / 2 && *wait <= full,
            "retry {retry}: {wait:?}"
        );
    }
    assert_eq!(log.attempts.len(), 4);
}

#[test]
fn too_many_requests_honours_retry_after() {
    let server = HttpReceiver::start(vec![Reply::status(429).header("Retry-After", "7")]);
    let (notifier, waits) = recording_notifier(Backoff::default());
    let mut log = MemoryLog::new();

    notifier
        .deliver(
            &Receiver::Webhook(receiver(&server)),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap();

    assert_eq!(*waits.lock().unwrap(), [Duration::from_secs(7)]);
    assert_eq!(
        outcomes(&log),
        [(1, Some(429), false), (2, Some(200), true)]
    );
}

#[test]
fn a_client_error_is_not_retried() {
    let server = HttpReceiver::start(vec![
        Reply::status(400).body(r#"{"error": "unknown field \"groupKey\""}"#)
    ]);
    let (notifier, waits) = recording_notifier(Backoff::default());
    let mut log = MemoryLog::new();

    let error = notifier
        .deliver(
            &Receiver::Webhook(receiver(&server)),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap_err();

    assert_eq!(server.requests().len(), 1);
    assert!(waits.lock().unwrap().is_empty());
    let DeliveryError::Rejected {
        status, ref reason, ..
    } = error
    else {
        panic!("expected a permanent refusal, got {error:?}");
    };
    assert_eq!(status, Some(400));
    assert!(reason.contains("unknown field"), "{reason}");
    let text = error.to_string();
    assert!(text.contains("`ops-hook`"), "{text}");
    assert!(text.contains(&server.url("/hooks/keel")), "{text}");
    assert!(text.contains("HTTP 400"), "{text}");
    assert_eq!(error.receiver(), "ops-hook");
    assert_eq!(log.attempts.len(), 1);
    assert!(matches!(
        log.attempts[0].outcome,
        AttemptOutcome::Failed {
            retryable: false,
            status: Some(400),
            ..
        }
    ));
}

#[test]
fn an_unreachable_receiver_fails_after_max_attempts() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook = WebhookReceiver::new("gone", url.clone());
    let mut log = MemoryLog::new();

    let error = Notifier::new(fast_backoff(3))
        .deliver(&Receiver::Webhook(hook), &firing_message("gone"), &mut log)
        .unwrap_err();

    let DeliveryError::Exhausted {
        attempts, status, ..
    } = &error
    else {
        panic!("expected attempts exhausted, got {error:?}");
    };
    assert_eq!((*attempts, *status), (3, None));
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(
        outcomes(&log),
        [(1, None, false), (2, None, false), (3, None, false)]
    );
    for attempt in &log.attempts {
        let AttemptOutcome::Failed {
            error, retryable, ..
        } = &attempt.outcome
        else {
            unreachable!()
        };
        assert!(retryable);
        assert!(error.contains("connection failed"), "{error}");
    }
}

#[test]
fn a_timeout_is_retried() {
    let server = HttpReceiver::start(vec![Reply::status(200).delay(Duration::from_secs(3))]);
    let mut hook = receiver(&server);
    hook.timeout = Duration::from_millis(300);
    let mut log = MemoryLog::new();

    Notifier::new(fast_backoff(3))
        .deliver(
            &Receiver::Webhook(hook),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap();

    assert_eq!(outcomes(&log), [(1, None, false), (2, Some(200), true)]);
    let AttemptOutcome::Failed {
        error, retryable, ..
    } = &log.attempts[0].outcome
    else {
        unreachable!()
    };
    assert!(*retryable && error.contains("timed out"), "{error}");
}

#[test]
fn max_alerts_truncates_and_counts_the_rest() {
    let server = HttpReceiver::start(vec![]);
    let mut hook = receiver(&server);
    hook.max_alerts = 1;
    let alerts = vec![
        rule_alert("PackageAdded", "web1", "warning", "a"),
        rule_alert("PackageRemoved", "web1", "warning", "b"),
        rule_alert("ServiceAdded", "web1", "info", "c"),
    ];
    let message = WebhookMessage::new("ops-hook", "", crate::labels(&[]), alerts);
    let mut log = MemoryLog::new();

    Notifier::default()
        .deliver(&Receiver::Webhook(hook), &message, &mut log)
        .unwrap();

    let json = server.requests()[0].json();
    assert_eq!(json["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(json["truncatedAlerts"], 2);
    assert_eq!(
        log.attempts[0].fingerprints,
        [message.alerts[0].fingerprint.clone()]
    );
}

#[test]
fn the_resolved_notification_has_its_own_idempotency_key() {
    let server = HttpReceiver::start(vec![]);
    let notifier = Notifier::default();
    let mut log = MemoryLog::new();
    let hook = Receiver::Webhook(receiver(&server));

    notifier
        .deliver(&hook, &firing_message("ops-hook"), &mut log)
        .unwrap();
    notifier
        .deliver(&hook, &resolved_message("ops-hook"), &mut log)
        .unwrap();

    let requests = server.requests();
    let (firing, resolved) = (&requests[0], &requests[1]);
    assert_ne!(
        firing.header(IDEMPOTENCY_HEADER),
        resolved.header(IDEMPOTENCY_HEADER)
    );
    let json = resolved.json();
    assert_eq!(json["status"], "resolved");
    assert_eq!(json["alerts"][0]["status"], "resolved");
    assert_eq!(json["alerts"][0]["endsAt"], "2024-06-01T12:30:00Z");
    assert_eq!(
        json["alerts"][0]["fingerprint"],
        firing.json()["alerts"][0]["fingerprint"],
        "resolving keeps the fingerprint"
    );
    assert!(
        firing.header(SIGNATURE_HEADER).is_none(),
        "no secret, no signature"
    );
}

#[test]
fn a_misconfigured_receiver_sends_nothing_and_says_why() {
    let hook = WebhookReceiver::new("typo", "ftp://hooks.example/keel");
    let mut log = MemoryLog::new();

    let error = Notifier::default()
        .deliver(&Receiver::Webhook(hook), &firing_message("typo"), &mut log)
        .unwrap_err();

    assert!(matches!(error, DeliveryError::Config(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("`typo`") && text.contains("http or https"),
        "{text}"
    );
    assert!(matches!(
        log.attempts[..],
        [keel_notify::DeliveryAttempt {
            attempt: 1,
            outcome: AttemptOutcome::Failed {
                retryable: false,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn persistent_server_errors_exhaust_the_attempts() {
    let server = HttpReceiver::start(vec![Reply::status(502); 4]);
    let (notifier, waits) = recording_notifier(Backoff {
        max_attempts: 2,
        ..Backoff::default()
    });
    let mut log = MemoryLog::new();

    let error = notifier
        .deliver(
            &Receiver::Webhook(receiver(&server)),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap_err();

    assert!(
        matches!(
            error,
            DeliveryError::Exhausted {
                attempts: 2,
                status: Some(502),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        waits.lock().unwrap().len(),
        1,
        "no wait after the last attempt"
    );
}

#[test]
fn a_redirect_is_reported_not_followed() {
    let server = HttpReceiver::start(vec![
        Reply::status(301).header("Location", "https://elsewhere.example/hook?token=abc")
    ]);
    let mut log = MemoryLog::new();

    let error = Notifier::default()
        .deliver(
            &Receiver::Webhook(receiver(&server)),
            &firing_message("ops-hook"),
            &mut log,
        )
        .unwrap_err();

    assert!(
        matches!(
            error,
            DeliveryError::Rejected {
                status: Some(301),
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("https://elsewhere.example/hook"), "{text}");
    assert!(
        !text.contains("token=abc"),
        "query strings may hold credentials: {text}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "only the first request, no GET to the new place"
    );
}
