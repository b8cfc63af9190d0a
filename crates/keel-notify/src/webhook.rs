//! One webhook attempt: a `POST` of the JSON payload, signed when the receiver has a secret.

use std::fmt::Write as _;
use std::io::Read;
use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use crate::alert::WebhookMessage;
use crate::notifier::Failure;
use crate::receiver::WebhookReceiver;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when the receiver has an
/// `hmac_secret` (GitHub's `X-Hub-Signature-256` convention).
pub const SIGNATURE_HEADER: &str = "X-Keel-Signature-256";

/// The header carrying [`WebhookMessage::idempotency_key`]: equal across retries of one
/// notification.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// How much of an error response's body is kept for the log and the error.
const EXCERPT_BYTES: u64 = 512;

/// `sha256=<hex>`: the value of [`SIGNATURE_HEADER`] for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", crate::hex(&mac.finalize().into_bytes()))
}

/// Whether `header` (the value of [`SIGNATURE_HEADER`]) is the signature of `body` under
/// `secret`, compared in constant time. For receivers written in Rust, and for tests.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = crate::unhex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// A request ready to be sent as many times as needed.
pub(crate) struct Prepared {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

pub(crate) fn prepare(receiver: &WebhookReceiver, message: &WebhookMessage) -> Prepared {
    let body = serde_json::to_vec(message).expect("a webhook message always serializes");
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (IDEMPOTENCY_HEADER.to_owned(), message.idempotency_key()),
    ];
    if let Some(secret) = &receiver.hmac_secret {
        headers.push((
            SIGNATURE_HEADER.to_owned(),
            sign(secret.expose().as_bytes(), &body),
        ));
    }
    headers.extend(
        receiver
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    Prepared {
        url: receiver.url.clone(),
        headers,
        body,
        timeout: receiver.timeout,
    }
}

/// Sends once; the HTTP status on a 2xx answer.
pub(crate) fn send(
    agent: &ureq::Agent,
    request: &Prepared,
    now: Timestamp,
) -> Result<u16, Failure> {
    let mut builder = agent
        .post(&request.url)
        .config()
        .timeout_global(Some(request.timeout))
        .build();
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let mut response = builder
        .send(&request.body[..])
        .map_err(|e| classify(&e, request.timeout))?;

    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let code = status.as_u16();
    let retryable = code == 429 || status.is_server_error();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    let mut message = format!("HTTP {status}");
    if status.is_redirection() {
        if let Some(location) = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
        {
            let _ = write!(message, " to {}", crate::receiver::redact_url(location));
        }
        message.push_str(" (redirects are not followed: configure the final URL)");
    }
    let excerpt = body_excerpt(response.body_mut());
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    Err(Failure {
        message,
        retryable,
        status: Some(code),
        retry_after,
    })
}

/// Connection trouble and timeouts may pass; a bad URL or a TLS failure will not.
fn classify(error: &ureq::Error, timeout: Duration) -> Failure {
    let (message, retryable) = match error {
        ureq::Error::Timeout(which) => (
            format!("timed out ({which}) within {}", humane(timeout)),
            true,
        ),
        ureq::Error::Io(e) => (format!("connection failed: {e}"), true),
        ureq::Error::HostNotFound => ("host not found".to_owned(), true),
        ureq::Error::ConnectionFailed => ("connection failed".to_owned(), true),
        ureq::Error::Protocol(e) => (format!("bad HTTP answer: {e}"), true),
        ureq::Error::BodyStalled => ("the answer stalled".to_owned(), true),
        other => (other.to_string(), false),
    };
    Failure {
        message,
        retryable,
        status: None,
        retry_after: None,
    }
}

/// `Retry-After` as delay seconds or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    // A date already past means "now".
    Some(Duration::try_from(now.duration_until(when)).unwrap_or(Duration::ZERO))
}

/// The start of a body as one line of text.
fn body_excerpt(body: &mut ureq::Body) -> String {
    let mut bytes = Vec::new();
    // An unreadable body is no reason to hide the status: keep what was read.
    let _ = body
        .as_reader()
        .take(EXCERPT_BYTES + 1)
        .read_to_end(&mut bytes);
    let cut = bytes.len() as u64 > EXCERPT_BYTES;
    bytes.truncate(EXCERPT_BYTES as usize);
    let text = String::from_utf8_lossy(&bytes);
    let mut excerpt = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if cut {
        excerpt.push('…');
    }
    excerpt
}

fn humane(duration: Duration) -> String {
    format!(
        "{:#}",
        jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(
            b"Jefe",
            b"what do ya want for nothing?",
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ));
        assert!(!verify(
            b"Jefe",
            b"what do ya want for nothing!",
            "sha256=5bdc"
        ));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now: Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
