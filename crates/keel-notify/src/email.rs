//! Email notifications: a plain-text rendering of a webhook message, sent over SMTP.

use std::fmt::Write as _;

use jiff::Timestamp;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

use crate::alert::{Alert, AlertStatus, WebhookMessage};
use crate::notifier::Failure;
use crate::receiver::{ConfigError, EmailReceiver, SmtpTls};

/// The subject and body of a notification email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub body: String,
}

/// How many host names a subject lists before "and N more".
const SUBJECT_HOSTS: usize = 3;

/// Renders `message` for `receiver`: a subject like `[keel] FIRING: 2 alerts for web1` and a
/// body listing every alert (firing first) with its severity, host, summary, description,
/// start (and end) time, link and remaining annotations and labels.
pub fn render(receiver: &EmailReceiver, message: &WebhookMessage) -> RenderedEmail {
    let firing: Vec<&Alert> = message.alerts_with(AlertStatus::Firing).collect();
    let resolved: Vec<&Alert> = message.alerts_with(AlertStatus::Resolved).collect();
    // The subject is about what the status says: the firing alerts of a firing group.
    let shown = match message.status {
        AlertStatus::Firing => &firing,
        AlertStatus::Resolved => &resolved,
    };

    let mut headline = format!(
        "{}: {} {}",
        message.status.as_str().to_uppercase(),
        shown.len(),
        if shown.len() == 1 { "alert" } else { "alerts" }
    );
    let hosts = hosts(shown);
    if !hosts.is_empty() {
        headline.push_str(" for ");
        if hosts.len() > SUBJECT_HOSTS {
            let _ = write!(
                headline,
                "{} and {} more hosts",
                hosts[..SUBJECT_HOSTS].join(", "),
                hosts.len() - SUBJECT_HOSTS
            );
        } else {
            headline.push_str(&hosts.join(", "));
        }
    }
    let subject = if receiver.subject_prefix.is_empty() {
        headline.clone()
    } else {
        format!("{} {headline}", receiver.subject_prefix)
    };

    let mut body = headline;
    if message.status == AlertStatus::Firing && !resolved.is_empty() {
        let _ = write!(body, " ({} resolved)", resolved.len());
    }
    if message.truncated_alerts > 0 {
        let _ = write!(body, " ({} more not shown)", message.truncated_alerts);
    }
    body.push_str("\n\n");
    for alert in firing.iter().chain(&resolved) {
        write_alert(&mut body, alert);
        body.push('\n');
    }
    body.push_str("-- \n");
    let _ = writeln!(
        body,
        "Sent by Keel to receiver \"{}\" for group {}.",
        message.receiver, message.group_key
    );
    if !message.external_url.is_empty() {
        let _ = writeln!(body, "{}", message.external_url);
    }
    RenderedEmail { subject, body }
}

/// The distinct `host` labels, sorted.
fn hosts<'a>(alerts: &[&'a Alert]) -> Vec<&'a str> {
    let mut hosts: Vec<&str> = alerts.iter().filter_map(|a| a.label("host")).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

fn write_alert(out: &mut String, alert: &Alert) {
    let name = alert.label("alertname").unwrap_or("alert");
    let _ = writeln!(out, "[{}] {name}", alert.status.as_str().to_uppercase());
    let mut field = |label: &str, value: &str| {
        let mut lines = value.lines();
        let _ = writeln!(
            out,
            "  {:<12} {}",
            format!("{label}:"),
            lines.next().unwrap_or("")
        );
        for line in lines {
            let _ = writeln!(out, "  {:<12} {line}", "");
        }
    };
    if let Some(severity) = alert.label("severity") {
        field("severity", severity);
    }
    if let Some(host) = alert.label("host") {
        field("host", host);
    }
    for annotation in ["summary", "description"] {
        if let Some(text) = alert.annotation(annotation) {
            field(annotation, text);
        }
    }
    field("started", &alert.starts_at.to_string());
    if alert.status == AlertStatus::Resolved {
        field("resolved", &alert.ends_at.to_string());
    }
    if !alert.generator_url.is_empty() {
        field("link", &alert.generator_url);
    }
    for (name, value) in &alert.annotations {
        if name != "summary" && name != "description" {
            field(name, value);
        }
    }
    let labels: Vec<String> = alert
        .labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    field("labels", &labels.join(", "));
    field("fingerprint", &alert.fingerprint);
}

/// A message and a transport ready to be sent as many times as needed.
pub(crate) struct Prepared {
    transport: SmtpTransport,
    email: lettre::Message,
}

pub(crate) fn prepare(
    receiver: &EmailReceiver,
    message: &WebhookMessage,
    now: Timestamp,
) -> Result<Prepared, ConfigError> {
    let invalid = |field: &'static str, value: &str, reason: String| ConfigError {
        receiver: receiver.name.clone(),
        field,
        value: value.to_owned(),
        reason,
    };
    let from: Mailbox = receiver
        .from
        .parse()
        .map_err(|e: lettre::address::AddressError| {
            invalid("from", &receiver.from, e.to_string())
        })?;
    let rendered = render(receiver, message);
    // One Message-ID for every attempt, so a relay or a mailbox can drop a duplicate.
    let message_id = format!(
        "<{}.{}@{}>",
        &message.idempotency_key()[..32],
        now.as_millisecond(),
        from.email.domain()
    );
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(rendered.subject)
        .message_id(Some(message_id))
        .user_agent(format!("keel-notify/{}", env!("CARGO_PKG_VERSION")))
        .header(ContentType::TEXT_PLAIN);
    for to in &receiver.to {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e: lettre::address::AddressError| invalid("to", to, e.to_string()))?;
        builder = builder.to(mailbox);
    }
    let email = builder
        .body(rendered.body)
        .map_err(|e| invalid("to", &receiver.to.join(", "), e.to_string()))?;

    let host = receiver.smtp_host.as_str();
    let tls = match receiver.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls | SmtpTls::Tls => {
            let parameters = TlsParameters::new(host.to_owned())
                .map_err(|e| invalid("smtp_host", host, e.to_string()))?;
            if receiver.tls == SmtpTls::Tls {
                Tls::Wrapper(parameters)
            } else {
                Tls::Required(parameters)
            }
        }
    };
    let mut transport = SmtpTransport::builder_dangerous(host)
        .port(receiver.port())
        .tls(tls)
        .timeout(Some(receiver.timeout));
    if let Some(username) = &receiver.username {
        let password = receiver
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        transport = transport.credentials(Credentials::new(username.clone(), password));
    }
    Ok(Prepared {
        transport: transport.build(),
        email,
    })
}

/// Sends once; the SMTP reply code on acceptance.
pub(crate) fn send(prepared: &Prepared) -> Result<u16, Failure> {
    match prepared.transport.send(&prepared.email) {
        Ok(response) => Ok(u16::from(response.code())),
        Err(error) => {
            // 5xx replies, TLS failures and client-side refusals (such as no usable login
            // mechanism) will fail the same way next time; the rest is the network.
            let retryable = !(error.is_permanent() || error.is_tls() || error.is_client());
            Err(Failure {
                message: error_chain(&error),
                retryable,
                status: error.status().map(u16::from),
                retry_after: None,
            })
        }
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}
