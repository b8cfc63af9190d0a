//! What the admin commands (`keel hosts`, `keel profiles`, `keel diff HOST`) share: where the
//! server is, the token, and a blocking HTTPS client that trusts only the server's own CA.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::output;

/// Output format of the admin commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON, as the server's API returns it.
    Json,
}

/// How to reach the server's API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's URL (`https://host:port`).
    #[arg(long, env = "KEEL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API token: the admin token `keel server` printed on its first start.
    #[arg(long, env = "KEEL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The server's CA certificate: `ca.pem` in the server's data directory.
    #[arg(long, env = "KEEL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Largest answer read (a diff of two whole profiles can be big).
const MAX_BODY: u64 = 256 * 1024 * 1024;

/// A failed API call.
#[derive(Debug)]
pub enum ApiError {
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable {
        /// The URL asked.
        url: String,
        /// The cause.
        detail: String,
        /// The certificate was not accepted.
        tls: bool,
    },
    /// The server answered with an error status.
    Status {
        /// The method used.
        method: &'static str,
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server answered 2xx with something that is not the expected JSON.
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl ApiError {
    /// The server's message, or the whole error when it did not answer.
    pub fn message(&self) -> String {
        match self {
            ApiError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { url, detail, tls } => {
                write!(f, "cannot reach {url}: {detail}")?;
                if *tls {
                    write!(
                        f,
                        "\nhint: --ca must be the ca.pem of this server's data directory"
                    )
                } else {
                    write!(
                        f,
                        "\nhint: is `keel server` running there? Check --server (or KEEL_SERVER)"
                    )
                }
            }
            ApiError::Status {
                method,
                url,
                status,
                message,
            } => {
                write!(f, "server refused {method} {url}: HTTP {status}: {message}")?;
                match status {
                    401 => write!(
                        f,
                        "\nhint: use the admin token `keel server` printed on its first start \
                         (--token or KEEL_TOKEN)"
                    ),
                    403 if *method == "GET" => write!(
                        f,
                        "\nhint: this needs an admin or read-only token; the enrollment token \
                         only lets agents enroll"
                    ),
                    403 => write!(f, "\nhint: changes need the admin token"),
                    _ => Ok(()),
                }
            }
            ApiError::BadAnswer { url, detail } => {
                write!(f, "unexpected answer from {url}: {detail}")
            }
        }
    }
}

impl std::error::Error for ApiError {}

/// A client of one server's JSON API.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    /// Checks the options and builds the client; nothing is sent yet.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let Some(server) = args.server.as_deref().filter(|s| !s.trim().is_empty()) else {
            anyhow::bail!(
                "no server given\nhint: pass --server https://HOST:PORT (or set KEEL_SERVER)"
            );
        };
        let server = server.trim().trim_end_matches('/');
        let base = if server.starts_with("https://") {
            server.to_string()
        } else if server.contains("://") {
            anyhow::bail!(
                "the server URL {server} is not https://\nhint: the Keel server speaks HTTPS only: \
                 --server https://HOST:PORT"
            );
        } else {
            format!("https://{server}")
        };
        let Some(token) = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            anyhow::bail!(
                "no API token given\nhint: pass --token (or set KEEL_TOKEN) with the admin token \
                 `keel server` printed on its first start"
            );
        };
        let Some(ca_path) = &args.ca else {
            anyhow::bail!(
                "no CA certificate given\nhint: pass --ca DATA/ca.pem (or set KEEL_CA), the ca.pem \
                 in the server's data directory"
            );
        };
        let pem = std::fs::read(ca_path)
            .with_context(|| format!("cannot read the CA certificate {}", ca_path.display()))?;
        let cert = ureq::tls::Certificate::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a PEM certificate: {e}\nhint: --ca must be the ca.pem of the server's \
                 data directory",
                ca_path.display()
            )
        })?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            base,
            token: token.to_string(),
        })
    }

    /// `GET base + path` with query parameters; the answer parsed as JSON.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.request("GET", path, query, None)
    }

    /// `method base + path` with query parameters and a JSON body; the answer parsed as JSON.
    pub fn send(
        &self,
        method: &'static str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.request(method, path, query, body.as_deref())
    }

    fn request(
        &self,
        method: &'static str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Value, ApiError> {
        let mut url = format!("{}{path}", self.base);
        let mut sep = '?';
        for (k, v) in query {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
            sep = '&';
        }
        let unreachable = |e: &ureq::Error| ApiError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
            // rustls's refusals arrive wrapped in I/O errors.
            tls: matches!(
                e,
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_)
            ) || e.to_string().contains("certificate"),
        };
        let auth = format!("Bearer {}", self.token);
        let sent = match method {
            "GET" | "DELETE" => {
                let req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                req.header("Authorization", &auth)
                    .header("Accept", "application/json")
                    .call()
            }
            _ => {
                let req = match method {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                req.header("Authorization", &auth)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json")
                    .send(body.unwrap_or_default())
            }
        };
        let mut resp = sent.map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| unreachable(&e))?;
        if status == 204 {
            return Ok(Value::Null);
        }
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        if (200..300).contains(&status) {
            return parsed.map_err(|e| ApiError::BadAnswer {
                url: url.clone(),
                detail: format!("not JSON ({e})"),
            });
        }
        let message = match &parsed {
            Ok(v) if v["error"].is_string() => v["error"].as_str().unwrap_or_default().to_string(),
            _ => String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string(),
        };
        Err(ApiError::Status {
            method,
            url,
            status,
            message,
        })
    }

    /// `GET base + path`, the answer's bytes as they are (a profile file).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ApiError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: &ureq::Error| ApiError::Unreachable {
            url: url.clone(),
            detail: e.to_string(),
            tls: false,
        };
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| unreachable(&e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
        Err(ApiError::Status {
            method: "GET",
            url,
            status,
            message,
        })
    }

    /// `GET base + path`, the answer a JSON array.
    pub fn get_array(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>, ApiError> {
        match self.get(path, query)? {
            Value::Array(a) => Ok(a),
            other => Err(ApiError::BadAnswer {
                url: format!("{}{path}", self.base),
                detail: format!(
                    "expected a JSON array, got {}",
                    output::clip(&other.to_string(), 80)
                ),
            }),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or a
/// query value.
pub fn encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            o.push(char::from(b));
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// The profiles of `host`, newest first: at most `limit` (0: all), paged with `before=`.
/// A host the server does not know is the error "no host HOST".
pub fn host_profiles(client: &Client, host: &str, limit: usize) -> anyhow::Result<Vec<Value>> {
    const PAGE: usize = 1000;
    let path = format!("/api/v1/hosts/{}/profiles", encode(host));
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let want = if limit == 0 {
            PAGE
        } else {
            (limit - out.len()).min(PAGE)
        };
        let mut query = vec![("limit", want.to_string())];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let page = client
            .get_array(&path, &query)
            .map_err(|e| no_host(e, host))?;
        let got = page.len();
        let last = page.last().and_then(|p| p["id"].as_i64());
        out.extend(page);
        if got < want || (limit != 0 && out.len() >= limit) {
            break;
        }
        match last {
            // Ids only go down; a page that does not is a server bug, not a reason to loop.
            Some(id) if before.is_none_or(|b| id < b) => before = Some(id),
            _ => break,
        }
    }
    Ok(out)
}

/// Turns a 404 about a host into "no host HOST".
pub fn no_host(e: ApiError, host: &str) -> anyhow::Error {
    if e.status() == Some(404) {
        anyhow::anyhow!("no host {host}\nhint: `keel hosts` lists the hosts the server knows")
    } else {
        e.into()
    }
}
