//! Email delivery to a real SMTP server (aiosmtpd) on loopback.

use keel_notify::{
    email, AttemptOutcome, DeliveryError, EmailReceiver, MemoryLog, Notifier, Receiver, SmtpTls,
};

use crate::http_server::dead_port;
use crate::smtp_server::SmtpSink;
use crate::{fast_backoff, firing_message, resolved_message};

fn mailbox(port: u16, to: &[&str]) -> EmailReceiver {
    let mut receiver = EmailReceiver::new(
        "ops-mail",
        "127.0.0.1",
        "Keel <keel@example.com>",
        to.iter().map(|&to| to.to_owned()).collect(),
    );
    receiver.tls = SmtpTls::None;
    receiver.smtp_port = Some(port);
    receiver
}

#[test]
fn firing_and_resolved_mail_reach_a_real_smtp_server() {
    let Some(sink) = SmtpSink::start_or_skip() else {
        return;
    };
    let receiver = Receiver::Email(mailbox(
        sink.port,
        &["ops@example.com", "On Call <oncall@example.com>"],
    ));
    let notifier = Notifier::new(fast_backoff(3));
    let mut log = MemoryLog::new();

    notifier
        .deliver(&receiver, &firing_message("ops-mail"), &mut log)
        .unwrap();
    notifier
        .deliver(&receiver, &resolved_message("ops-mail"), &mut log)
        .unwrap();

    let mails = sink.mails(2);
    assert_eq!(mails.len(), 2);
    let (firing, resolved) = (&mails[0], &mails[1]);

    assert_eq!(firing.mail_from, "keel@example.com");
    assert_eq!(firing.rcpt_tos, ["ops@example.com", "oncall@example.com"]);
    assert_eq!(firing.from, "Keel <keel@example.com>");
    assert_eq!(firing.to, "ops@example.com, On Call <oncall@example.com>");
    assert_eq!(firing.subject, "[keel] FIRING: 2 alerts for web1");
    assert_eq!(firing.content_type, "text/plain");
    assert!(
        firing.message_id.ends_with("@example.com>"),
        "{}",
        firing.message_id
    );
    for needle in [
        "[FIRING] PackageAdded",
        "[FIRING] NewRootAccount",
        "severity:    warning",
        "severity:    critical",
        "host:        web1",
        "summary:     package nginx 1.24 installed",
        "summary:     uid 0 account toor added",
        // Continuation lines of a multi-line annotation stay aligned under its first line.
        "description: uid 0 account toor added.\n               Seen in the profile of web1.",
        "started:     2024-06-01T12:00:00Z",
        "link:        https://keel.example/hosts/web1/profiles/42",
        "diff_url:    https://keel.example/hosts/web1/diff/41..42",
    ] {
        assert!(
            firing.body.contains(needle),
            "{needle:?} missing from:\n{}",
            firing.body
        );
    }
    assert!(!firing.body.contains("RESOLVED"), "{}", firing.body);

    assert_eq!(resolved.subject, "[keel] RESOLVED: 2 alerts for web1");
    for needle in [
        "[RESOLVED] PackageAdded",
        "[RESOLVED] NewRootAccount",
        "resolved:    2024-06-01T12:30:00Z",
        "host:        web1",
    ] {
        assert!(
            resolved.body.contains(needle),
            "{needle:?} missing from:\n{}",
            resolved.body
        );
    }
    assert_ne!(firing.message_id, resolved.message_id);

    assert_eq!(log.attempts.len(), 2);
    for attempt in &log.attempts {
        assert_eq!(attempt.outcome, AttemptOutcome::Ok { status: 250 });
        assert_eq!(attempt.receiver, "ops-mail");
    }
}

#[test]
fn a_permanent_smtp_refusal_is_not_retried() {
    let Some(sink) = SmtpSink::start_or_skip() else {
        return;
    };
    let receiver = Receiver::Email(mailbox(sink.port, &["reject@example.com"]));
    let mut log = MemoryLog::new();

    let error = Notifier::new(fast_backoff(3))
        .deliver(&receiver, &firing_message("ops-mail"), &mut log)
        .unwrap_err();

    assert!(
        matches!(
            error,
            DeliveryError::Rejected {
                status: Some(550),
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("`ops-mail`") && text.contains(&format!("smtp://127.0.0.1:{}", sink.port)),
        "{text}"
    );
    assert!(text.contains("no such user"), "{text}");
    assert_eq!(log.attempts.len(), 1);
    assert!(sink.mails(0).is_empty());
}

#[test]
fn a_transient_smtp_refusal_is_retried() {
    let Some(sink) = SmtpSink::start_or_skip() else {
        return;
    };
    let receiver = Receiver::Email(mailbox(sink.port, &["busy@example.com"]));
    let mut log = MemoryLog::new();

    Notifier::new(fast_backoff(3))
        .deliver(&receiver, &firing_message("ops-mail"), &mut log)
        .unwrap();

    assert!(
        matches!(
            log.attempts[0].outcome,
            AttemptOutcome::Failed {
                retryable: true,
                status: Some(451),
                ..
            }
        ),
        "{:?}",
        log.attempts[0]
    );
    assert_eq!(log.attempts[1].outcome, AttemptOutcome::Ok { status: 250 });
    let mails = sink.mails(1);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_tos, ["busy@example.com"]);
}

#[test]
fn an_unreachable_smtp_server_fails_after_max_attempts() {
    let receiver = Receiver::Email(mailbox(dead_port(), &["ops@example.com"]));
    let mut log = MemoryLog::new();

    let error = Notifier::new(fast_backoff(2))
        .deliver(&receiver, &firing_message("ops-mail"), &mut log)
        .unwrap_err();

    assert!(
        matches!(error, DeliveryError::Exhausted { attempts: 2, .. }),
        "{error:?}"
    );
    assert_eq!(log.attempts.len(), 2);
    assert!(log.attempts.iter().all(|a| matches!(
        a.outcome,
        AttemptOutcome::Failed {
            retryable: true,
            ..
        }
    )));
}

#[test]
fn subjects_name_the_status_count_and_hosts() {
    let receiver = mailbox(25, &["ops@example.com"]);
    let mut alerts = Vec::new();
    for host in ["db1", "web1", "web2", "web3", "web4"] {
        alerts.push(crate::rule_alert("PackageAdded", host, "warning", "x"));
    }
    let one = keel_notify::WebhookMessage::new("r", "", crate::labels(&[]), alerts[..1].to_vec());
    assert_eq!(
        email::render(&receiver, &one).subject,
        "[keel] FIRING: 1 alert for db1"
    );

    let many = keel_notify::WebhookMessage::new("r", "", crate::labels(&[]), alerts.clone());
    assert_eq!(
        email::render(&receiver, &many).subject,
        "[keel] FIRING: 5 alerts for db1, web1, web2 and 2 more hosts"
    );

    // A group with one alert resolved and one firing: the subject counts what fires, and
    // names its hosts.
    let mixed = keel_notify::WebhookMessage::new(
        "r",
        "",
        crate::labels(&[]),
        vec![
            alerts[1].clone(),
            alerts[2]
                .clone()
                .resolved_at(crate::at("2024-06-01T13:00:00Z")),
        ],
    );
    let rendered = email::render(&receiver, &mixed);
    assert_eq!(rendered.subject, "[keel] FIRING: 1 alert for web1");
    assert!(rendered
        .body
        .starts_with("FIRING: 1 alert for web1 (1 resolved)\n"));
    let firing_at = rendered.body.find("[FIRING]").unwrap();
    let resolved_at = rendered.body.find("[RESOLVED]").unwrap();
    assert!(firing_at < resolved_at, "firing alerts come first");
}
