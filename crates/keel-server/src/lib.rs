//! Keel's central server: agents enroll and upload profiles over HTTPS; the server verifies
//! each upload, diffs it against the host's previous profile and stores both in one
//! transaction; people and tools read hosts, profiles and diffs through a JSON API, and
//! Prometheus scrapes `/metrics`.
//!
//! On first start the server makes its own certificate authority and TLS certificate under its
//! data directory, and creates an admin token and an enrollment token, which it returns once
//! ([`FirstStart`]); only their hashes are stored. The enrollment token carries the CA's
//! fingerprint, so an enrolling agent can check the server it talks to.
//!
//! ```no_run
//! # async fn run() -> Result<(), keel_server::ServerError> {
//! let config = keel_server::Config::new("./keel-data", "127.0.0.1:8443".parse().unwrap());
//! let server = keel_server::Server::start(&config).await?;
//! if let Some(first) = &server.first_start {
//!     println!("admin token: {}", first.admin_token);
//! }
//! server.wait().await
//! # }
//! ```

mod api;
mod ingest;
mod metrics;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_profile::Hash;
use keel_store::{SqliteStore, Store, TokenKind};

pub use api::MAX_UPLOAD;
pub use ingest::{IngestError, Stored};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file of the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    /// Binding or serving.
    #[error("cannot serve on {addr}: {detail}\nhint: is another server already listening there? choose another address with --listen")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        detail: String,
    },
}

impl ServerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory: database, CA and certificates.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Names (DNS or IP) the TLS certificate is valid for, besides localhost.
    pub names: Vec<String>,
}

impl Config {
    /// A configuration with the default names (`localhost`, `127.0.0.1`, `::1`, the host name).
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen,
            names: Vec::new(),
        }
    }
}

/// Secrets made on first start, shown once.
#[derive(Debug, Clone)]
pub struct FirstStart {
    /// Full access to the API.
    pub admin_token: String,
    /// Lets agents enroll; carries the CA fingerprint.
    pub enroll_token: String,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Set on the first start of a data directory.
    pub first_start: Option<FirstStart>,
    /// SHA-256 of the CA certificate.
    pub ca_fingerprint: String,
    /// Stored rules that no longer compile (skipped), with the reason.
    pub broken_rules: Vec<String>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Opens the data directory (creating it on first start) and starts listening.
    pub async fn start(config: &Config) -> Result<Server, ServerError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::io(&config.data_dir, e))?;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(h.trim().to_string());
        }
        names.extend(config.names.iter().cloned());
        names.dedup();
        let tls = tls::load_or_create(&config.data_dir, &names)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir.join("keel.db"))?);

        let first_start = if store.has_token(TokenKind::Admin)? {
            None
        } else {
            let admin_token = format!("keel-admin-{}", random_token(16));
            let enroll_token = format!("keel-enroll-{}-{}", random_token(16), tls.ca_fingerprint);
            store.put_token(
                &Hash::of(enroll_token.as_bytes()),
                TokenKind::Enroll,
                "first start",
            )?;
            // The admin token last: its presence marks the first start as done.
            store.put_token(
                &Hash::of(admin_token.as_bytes()),
                TokenKind::Admin,
                "first start",
            )?;
            Some(FirstStart {
                admin_token,
                enroll_token,
            })
        };

        let metrics = Arc::new(metrics::Metrics::default());
        let stored_rules = stored_rules(&*store)?;
        let (rules, broken) = ingest::Rules::compile(stored_rules);
        let broken_rules: Vec<String> = broken.iter().map(ToString::to_string).collect();
        let state = Arc::new(api::AppState {
            ingestor: ingest::Ingestor::new(Arc::clone(&store), Arc::clone(&metrics), rules),
            store,
            metrics,
            ca_pem: tls.ca_pem.clone(),
        });
        let app = api::router(state);
        let rustls_config = axum_server::tls_rustls::RustlsConfig::from_pem(
            tls.cert_pem.clone().into_bytes(),
            tls.key_pem.clone().into_bytes(),
        )
        .await
        .map_err(|e| ServerError::Tls(e.to_string()))?;
        let handle = axum_server::Handle::new();
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|e| ServerError::Serve {
                addr: config.listen,
                detail: e.to_string(),
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::Serve {
                addr: config.listen,
                detail: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| ServerError::Serve {
            addr: config.listen,
            detail: e.to_string(),
        })?;
        // TCP_NODELAY: without it a small answer waits for the peer's delayed ACK (40 ms).
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls_config)
            .acceptor(axum_server::accept::NoDelayAcceptor::new());
        let server = axum_server::from_tcp(listener)
            .map_err(|e| ServerError::Serve {
                addr,
                detail: e.to_string(),
            })?
            .acceptor(acceptor)
            .handle(handle.clone());
        let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Ok(Server {
            addr,
            first_start,
            ca_fingerprint: tls.ca_fingerprint,
            broken_rules,
            handle,
            task,
        })
    }

    /// Serves until the server stops.
    pub async fn wait(self) -> Result<(), ServerError> {
        let addr = self.addr;
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Serve {
                addr,
                detail: e.to_string(),
            }),
            Err(e) => Err(ServerError::Serve {
                addr,
                detail: e.to_string(),
            }),
        }
    }

    /// Stops accepting connections and lets requests in flight finish.
    pub fn shutdown(&self) {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    }
}

/// The rules saved in the store.
pub(crate) fn stored_rules(store: &dyn Store) -> keel_store::Result<Vec<keel_rules::Rule>> {
    let mut out = Vec::new();
    for (name, body) in store.rules()? {
        let rule: keel_rules::Rule = serde_json::from_str(&body)
            .map_err(|e| keel_store::StoreError::Corrupt(format!("stored rule {name}: {e}")))?;
        out.push(rule);
    }
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `n` random bytes from the OS, as hex.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("the OS random source is readable");
    tls::hex(&buf)
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
