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
mod notify;
mod recovery;
mod rollback;
pub mod settings;
pub mod tls;
mod ui;
mod watch;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_profile::Hash;
use keel_store::{SqliteStore, Store};

pub use api::MAX_UPLOAD;
pub use ingest::{IngestError, Stored};
pub use keel_store::TokenKind;
pub use settings::{Settings, SettingsError};
pub use ui::{hash_password, FleetBench};

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
    /// The settings or a rule file.
    #[error(transparent)]
    Settings(#[from] SettingsError),
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
    /// Receivers, rule files, the watch.
    pub settings: Settings,
}

impl Config {
    /// A configuration with the default names (`localhost`, `127.0.0.1`, `::1`, the host name).
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen,
            names: Vec::new(),
            settings: Settings::default(),
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
    signal: StopOnDrop,
    store: Arc<dyn Store>,
}

/// Stops the background threads (watch, notifications) when the server is dropped.
#[derive(Debug)]
struct StopOnDrop(Arc<notify::Signal>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Server {
    /// Opens the data directory (creating it on first start) and starts listening.
    pub async fn start(config: &Config) -> Result<Server, ServerError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The data directory holds the CA key and every host's history: for the server's user
        // only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(|e| ServerError::io(&config.data_dir, e))?;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(h.trim().to_string());
        }
        names.extend(config.names.iter().cloned());
        names.dedup();
        let tls = tls::load_or_create(&config.data_dir, &names)?;
        let sqlite = Arc::new(SqliteStore::open(&config.data_dir.join("keel.db"))?);
        let users: Arc<dyn keel_store::UserStore> = Arc::clone(&sqlite) as _;
        let store: Arc<dyn Store> = sqlite;

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

        let settings = &config.settings;
        settings.check().map_err(|detail| SettingsError {
            path: PathBuf::from("settings"),
            detail,
        })?;
        let file_rules = settings.file_rules()?;
        let metrics = Arc::new(metrics::Metrics::default());
        let stored_rules = stored_rules(&*store)?;
        let (rules, broken) = ingest::Rules::compile(&file_rules, stored_rules);
        let broken_rules: Vec<String> = broken.iter().map(ToString::to_string).collect();
        let signal = Arc::new(notify::Signal::default());
        let external_url = settings
            .external_url
            .clone()
            .unwrap_or_else(|| format!("https://{}/", config.listen));
        let dispatch = notify::Dispatch {
            store: Arc::clone(&store),
            signal: Arc::clone(&signal),
            metrics: Arc::clone(&metrics.delivery),
            notifier: keel_notify::Notifier::new(settings.backoff.clone()),
            external_url,
            group_by: settings.group_by.clone(),
            poll: Duration::from_secs(1),
        };
        notify::start(&dispatch, settings.receivers.clone());
        watch::start(
            Arc::clone(&store),
            Arc::clone(&signal),
            Arc::clone(&metrics.watch),
            settings.watch.interval,
        );
        let server_store = Arc::clone(&store);
        let state = Arc::new(api::AppState {
            ingestor: ingest::Ingestor::new(Arc::clone(&store), Arc::clone(&metrics), rules),
            store,
            metrics,
            ca_pem: tls.ca_pem.clone(),
            file_rules,
            signal: Arc::clone(&signal),
            machine_offline_after: settings.machine_offline_after,
        });
        let app =
            api::router(Arc::clone(&state)).merge(ui::router(Arc::new(ui::Ui::new(state, users))));
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
            signal: StopOnDrop(signal),
            store: server_store,
        })
    }

    /// Serves until the server stops.
    pub async fn wait(self) -> Result<(), ServerError> {
        let Server {
            addr, task, signal, ..
        } = self;
        let outcome = task.await;
        drop(signal);
        match outcome {
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

    /// Makes a new token of `kind` (only its hash is stored) and returns it, for tools that
    /// run the server in process (`keel up`).
    pub fn issue_token(&self, kind: TokenKind, label: &str) -> Result<String, ServerError> {
        let token = match kind {
            TokenKind::Admin => format!("keel-admin-{}", random_token(16)),
            TokenKind::Readonly => format!("keel-readonly-{}", random_token(16)),
            TokenKind::Enroll => {
                format!("keel-enroll-{}-{}", random_token(16), self.ca_fingerprint)
            }
        };
        self.store
            .put_token(&Hash::of(token.as_bytes()), kind, label)?;
        Ok(token)
    }

    /// Stops accepting connections and lets requests in flight finish.
    pub fn shutdown(&self) {
        self.signal.0.stop();
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
