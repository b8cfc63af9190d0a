//! The payload model, the golden fixture and receiver configuration.

use keel_notify::{
    fingerprint, AlertStatus, Backoff, EmailReceiver, Receiver, SmtpTls, WebhookMessage, ZERO_TIME,
};

use crate::{at, labels, rule_alert};

const GOLDEN: &str = include_str!("../fixtures/webhook-v4.json");
const RECEIVERS: &str = include_str!("../fixtures/receivers.json");

#[test]
fn the_golden_alertmanager_payload_decodes_and_encodes_unchanged() {
    let message: WebhookMessage = serde_json::from_str(GOLDEN).unwrap();
    assert_eq!(message.version, "4");
    assert_eq!(message.status, AlertStatus::Firing);
    assert_eq!(message.alerts.len(), 2);
    assert_eq!(message.alerts[0].ends_at, ZERO_TIME);
    assert_eq!(message.alerts[1].ends_at, at("2024-06-01T08:15:30.5Z"));
    for alert in &message.alerts {
        assert_eq!(fingerprint(&alert.labels), alert.fingerprint);
    }

    let golden: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
    assert_eq!(serde_json::to_value(&message).unwrap(), golden);

    // Building the same group from its alerts gives the same message.
    let rebuilt = WebhookMessage::new(
        &message.receiver,
        &message.external_url,
        message.group_labels.clone(),
        message.alerts.clone(),
    );
    assert_eq!(rebuilt, message);
}

#[test]
fn a_batch_is_grouped_per_host() {
    let alerts = vec![
        rule_alert("PackageAdded", "web2", "warning", "a"),
        rule_alert("PackageAdded", "web1", "warning", "b"),
        rule_alert("ServiceAdded", "web2", "info", "c"),
        rule_alert("HardwareChanged", "web1", "critical", "d"),
    ];
    let messages = WebhookMessage::group("r", "https://keel.example/", &["host"], alerts);

    let summary: Vec<(&str, Vec<&str>)> = messages
        .iter()
        .map(|m| {
            (
                m.group_key.as_str(),
                m.alerts
                    .iter()
                    .map(|a| a.label("alertname").unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                r#"{}:{host="web1"}"#,
                vec!["PackageAdded", "HardwareChanged"]
            ),
            (r#"{}:{host="web2"}"#, vec!["PackageAdded", "ServiceAdded"]),
        ]
    );
    assert_eq!(messages[1].common_labels, labels(&[("host", "web2")]));
    assert_eq!(
        messages[0].common_annotations,
        labels(&[("diff_url", "https://keel.example/hosts/web1/diff/41..42")])
    );
}

#[test]
fn a_group_resolves_only_when_every_alert_has() {
    let a = rule_alert("PackageAdded", "web1", "warning", "a");
    let b = rule_alert("PackageRemoved", "web1", "warning", "b");
    let later = at("2024-06-01T13:00:00Z");
    let half = WebhookMessage::new(
        "r",
        "",
        labels(&[]),
        vec![a.clone(), b.clone().resolved_at(later)],
    );
    assert_eq!(half.status, AlertStatus::Firing);
    let all = WebhookMessage::new(
        "r",
        "",
        labels(&[]),
        vec![a.resolved_at(later), b.resolved_at(later)],
    );
    assert_eq!(all.status, AlertStatus::Resolved);
    assert_ne!(half.idempotency_key(), all.idempotency_key());
}

#[test]
fn receivers_parse_from_configuration() {
    let receivers: Vec<Receiver> = serde_json::from_str(RECEIVERS).unwrap();
    let names: Vec<&str> = receivers.iter().map(Receiver::name).collect();
    assert_eq!(
        names,
        ["ops-hook", "minimal-hook", "ops-mail", "minimal-mail"]
    );
    for receiver in &receivers {
        receiver.validate().unwrap();
    }

    let Receiver::Webhook(hook) = &receivers[0] else {
        panic!()
    };
    assert_eq!(hook.timeout, std::time::Duration::from_secs(5));
    assert_eq!(hook.max_alerts, 50);
    assert_eq!(
        hook.hmac_secret.as_ref().unwrap().expose(),
        "hmac-secret-value"
    );

    let Receiver::Webhook(minimal) = &receivers[1] else {
        panic!()
    };
    assert_eq!(minimal.timeout, std::time::Duration::from_secs(10));
    assert!(minimal.hmac_secret.is_none() && minimal.headers.is_empty());

    let Receiver::Email(mail) = &receivers[2] else {
        panic!()
    };
    assert_eq!((mail.tls, mail.port()), (SmtpTls::Tls, 465));
    assert_eq!(mail.timeout, std::time::Duration::from_secs(90));
    assert_eq!(receivers[2].target(), "smtps://smtp.example.com:465");

    let Receiver::Email(minimal) = &receivers[3] else {
        panic!()
    };
    assert_eq!((minimal.tls, minimal.port()), (SmtpTls::Starttls, 587));
    assert_eq!(minimal.subject_prefix, "[keel]");

    // Written back and read again, nothing changes.
    let text = serde_json::to_string(&receivers).unwrap();
    let again: Vec<Receiver> = serde_json::from_str(&text).unwrap();
    assert_eq!(again, receivers);
}

#[test]
fn debug_output_hides_every_secret() {
    let receivers: Vec<Receiver> = serde_json::from_str(RECEIVERS).unwrap();
    let mut with_credentials = keel_notify::WebhookReceiver::new(
        "creds",
        "https://user:url-secret-value@hooks.example.com/x?token=query-secret-value",
    );
    with_credentials.timeout = std::time::Duration::from_secs(1);
    let debug = format!("{receivers:?} {with_credentials:?}");
    for secret in [
        "hdr-secret-value",
        "hmac-secret-value",
        "smtp-secret-value",
        "url-secret-value",
        "query-secret-value",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(
        debug.contains("Authorization") && debug.contains("<redacted>"),
        "{debug}"
    );
}

#[test]
fn a_misspelt_setting_is_an_error() {
    let typo = r#"{"type": "webhook", "name": "x", "url": "http://h/", "max_alert": 3}"#;
    let error = serde_json::from_str::<Receiver>(typo)
        .unwrap_err()
        .to_string();
    assert!(error.contains("max_alert"), "{error}");

    let typo = r#"{"type": "email", "name": "x", "smtp_host": "h", "from": "a@b.c",
                   "to": ["d@e.f"], "tls": "ssl"}"#;
    assert!(serde_json::from_str::<Receiver>(typo).is_err());

    let untyped = r#"{"name": "x", "url": "http://h/"}"#;
    assert!(serde_json::from_str::<Receiver>(untyped).is_err());

    assert!(serde_json::from_str::<Backoff>(r#"{"max_attempt": 3}"#).is_err());
}

#[test]
fn validation_names_the_receiver_and_the_field() {
    let mut mail = EmailReceiver::new("ops-mail", "smtp.example.com", "not an address", vec![]);
    let error = Receiver::Email(mail.clone()).validate().unwrap_err();
    assert_eq!((error.receiver.as_str(), error.field), ("ops-mail", "from"));
    assert!(
        error
            .to_string()
            .starts_with("receiver `ops-mail`: from \"not an address\""),
        "{error}"
    );

    mail.from = "keel@example.com".to_owned();
    let error = Receiver::Email(mail).validate().unwrap_err();
    assert_eq!(error.field, "to");

    let mut hook = keel_notify::WebhookReceiver::new("h", "https://hooks.example.com/");
    hook.headers.insert("Bad Header".to_owned(), "v".to_owned());
    assert_eq!(
        Receiver::Webhook(hook).validate().unwrap_err().field,
        "headers"
    );
}
