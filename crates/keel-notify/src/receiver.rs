//! Where notifications go: receivers as the configuration file states them.
//!
//! Every struct refuses unknown fields, so a misspelt key is an error rather than a silently
//! ignored setting, and every secret (HMAC key, SMTP password, header values such as
//! `Authorization`, credentials in a URL) is left out of `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A receiver: a webhook or a mailbox. In configuration, `type = "webhook"` or `"email"` next
/// to the receiver's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Receiver {
    Webhook(WebhookReceiver),
    Email(EmailReceiver),
}

impl Receiver {
    /// The receiver's name, as it appears in messages and in the delivery log.
    pub fn name(&self) -> &str {
        match self {
            Receiver::Webhook(webhook) => &webhook.name,
            Receiver::Email(email) => &email.name,
        }
    }

    /// Where this receiver delivers, fit for logs and errors: the webhook URL without
    /// credentials, query or fragment, or `smtp://host:port`.
    pub fn target(&self) -> String {
        match self {
            Receiver::Webhook(webhook) => redact_url(&webhook.url),
            Receiver::Email(email) => {
                let scheme = match email.tls {
                    SmtpTls::Tls => "smtps",
                    SmtpTls::None | SmtpTls::Starttls => "smtp",
                };
                format!("{scheme}://{}:{}", email.smtp_host, email.port())
            }
        }
    }

    /// Checks what can be checked without the network: URL, header names and values, mail
    /// addresses. Delivery runs the same check first and fails permanently on it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Receiver::Webhook(webhook) => webhook.validate(),
            Receiver::Email(email) => email.validate(),
        }
    }
}

/// An HTTP endpoint that takes Alertmanager's webhook JSON by `POST`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Extra request headers, e.g. `Authorization`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// When set, each request carries `X-Keel-Signature-256: sha256=<hex HMAC-SHA256 of the
    /// body>` under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<Secret>,
    /// Per attempt, from connecting to reading the answer (`"10s"`, `"1m 30s"`, `"PT10S"`).
    #[serde(
        default = "default_timeout",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub timeout: Duration,
    /// Most alerts sent in one request (the rest are counted in `truncatedAlerts`); 0, the
    /// default, sends all.
    #[serde(default)]
    pub max_alerts: usize,
}

impl WebhookReceiver {
    /// A receiver posting to `url` with the defaults: no extra headers, no signature, a 10 s
    /// timeout, no cap on alerts.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> WebhookReceiver {
        WebhookReceiver {
            name: name.into(),
            url: url.into(),
            headers: BTreeMap::new(),
            hmac_secret: None,
            timeout: default_timeout(),
            max_alerts: 0,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, value: &str, reason: String| ConfigError {
            receiver: self.name.clone(),
            field,
            value: value.to_owned(),
            reason,
        };
        let url = url::Url::parse(&self.url)
            .map_err(|e| invalid("url", &redact_url(&self.url), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "url",
                &redact_url(&self.url),
                "the scheme must be http or https".to_owned(),
            ));
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_header_name_byte) {
                return Err(invalid(
                    "headers",
                    name,
                    "not a valid HTTP header name".to_owned(),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(invalid(
                    "headers",
                    name,
                    "the value contains a line break or NUL".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are often credentials (Authorization, API keys): show names only.
        let headers: BTreeMap<&str, Redacted> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), Redacted))
            .collect();
        f.debug_struct("WebhookReceiver")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("headers", &headers)
            .field("hmac_secret", &self.hmac_secret)
            .field("timeout", &self.timeout)
            .field("max_alerts", &self.max_alerts)
            .finish()
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text; only for a relay on the same host or a test server.
    None,
    /// Plain connection upgraded with `STARTTLS`, which is required (default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", default port 465).
    Tls,
}

/// A mailbox reached through an SMTP relay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailReceiver {
    pub name: String,
    pub smtp_host: String,
    /// Defaults by `tls`: 25 for none, 587 for starttls, 465 for tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `keel@example.com` or `Keel <keel@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    /// Starts every subject; `[keel]` by default.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// For connecting and for each SMTP command.
    #[serde(
        default = "default_timeout",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub timeout: Duration,
}

impl EmailReceiver {
    /// A receiver with the defaults: STARTTLS on port 587, no login, subject prefix `[keel]`,
    /// a 10 s timeout.
    pub fn new(
        name: impl Into<String>,
        smtp_host: impl Into<String>,
        from: impl Into<String>,
        to: Vec<String>,
    ) -> EmailReceiver {
        EmailReceiver {
            name: name.into(),
            smtp_host: smtp_host.into(),
            smtp_port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: from.into(),
            to,
            subject_prefix: default_subject_prefix(),
            timeout: default_timeout(),
        }
    }

    /// `smtp_port`, or the usual port for `tls`.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, value: &str, reason: String| ConfigError {
            receiver: self.name.clone(),
            field,
            value: value.to_owned(),
            reason,
        };
        if self.smtp_host.is_empty() {
            return Err(invalid("smtp_host", "", "must not be empty".to_owned()));
        }
        self.from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| invalid("from", &self.from, e.to_string()))?;
        if self.to.is_empty() {
            return Err(invalid("to", "[]", "needs at least one address".to_owned()));
        }
        for to in &self.to {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("to", to, e.to_string()))?;
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid(
                "username",
                "",
                "a password is set but no username".to_owned(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for EmailReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailReceiver")
            .field("name", &self.name)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject_prefix", &self.subject_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A secret string: serialized as it is (the configuration must hold it), never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Redacted.fmt(f)
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A receiver setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receiver `{receiver}`: {field} {value:?} is not valid: {reason}")]
pub struct ConfigError {
    pub receiver: String,
    pub field: &'static str,
    /// The offending value (a URL without its credentials, or a header's name).
    pub value: String,
    pub reason: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_subject_prefix() -> String {
    "[keel]".to_owned()
}

/// RFC 9110 `token` characters.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `url` without user name, password, query or fragment, which is where credentials usually
/// sit. What cannot be parsed is replaced whole.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let hidden = !parsed.username().is_empty()
                || parsed.password().is_some()
                || parsed.query().is_some()
                || parsed.fragment().is_some();
            // Both only fail for URLs that cannot have credentials.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            if hidden {
                shown.push_str(" (credentials, query or fragment hidden)");
            }
            shown
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example.com/x?token=abc"),
            "https://hooks.example.com/x (credentials, query or fragment hidden)"
        );
        assert_eq!(redact_url("http://127.0.0.1:9/a"), "http://127.0.0.1:9/a");
    }

    #[test]
    fn default_ports_follow_tls() {
        let mut email = EmailReceiver::new("m", "mx", "a@b.c", vec!["d@e.f".into()]);
        assert_eq!(email.port(), 587);
        email.tls = SmtpTls::Tls;
        assert_eq!(email.port(), 465);
        email.smtp_port = Some(2525);
        assert_eq!(email.port(), 2525);
    }
}
