//! Keel's collectors: read a Linux system's configuration and state into a
//! [`keel_profile::Profile`].
//!
//! Every reader goes through a [`Root`], so the same code profiles the running system (`/`) or
//! a system image mounted anywhere. Facts that only the running system has (live addresses,
//! loaded modules, the running kernel) are collected only when the root is `/`; for any other
//! root those collectors report `not_applicable` rather than describing the host.
//!
//! Each collector runs in its own thread under a deadline and reports ok, error or timeout with
//! its duration; a failed collector leaves its tables unknown, never empty.
//!
//! ```no_run
//! let opts = keel_collect::Options::new("/");
//! let file = keel_collect::capture(&opts).unwrap();
//! println!("{} packages", file.profile.packages.packages.len());
//! ```

mod dpkg;
mod error;
mod files;
mod hardware;
mod kernel;
mod network;
mod os;
mod packages;
mod root;
mod schedules;
mod secrets;
mod security;
mod services;
mod storage;
mod users;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_profile::{Collector, CollectorState, ProfileFile};

pub use error::CollectError;
pub use root::{have, normalize, run, Root};
pub use secrets::{load_or_create_key, Secrets};

/// How to capture.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root directory to profile (`/` for the running system).
    pub root: PathBuf,
    /// age recipient (`age1…`) that secrets are encrypted to; without one they are withheld.
    pub recovery_recipient: Option<String>,
    /// Directory for the capture's local state (the key of secret fingerprints).
    pub state_dir: PathBuf,
    /// The previous profile: its hash is chained, and unchanged secrets keep their ciphertext.
    pub previous: Option<ProfileFile>,
    /// Deadline for each collector.
    pub timeout: Duration,
    /// Files larger than this are recorded by hash only.
    pub max_content: u64,
}

impl Options {
    /// Defaults for a root: 20 s per collector, 1 MiB content limit, state in
    /// `/var/lib/keel`.
    pub fn new(root: impl AsRef<Path>) -> Self {
        Options {
            root: root.as_ref().to_path_buf(),
            recovery_recipient: None,
            state_dir: PathBuf::from("/var/lib/keel"),
            previous: None,
            timeout: Duration::from_secs(20),
            max_content: 1024 * 1024,
        }
    }
}

/// What a collector hands back: how to fill its tables, and any warnings.
pub(crate) struct Piece {
    apply: Box<dyn FnOnce(&mut ProfileFile) + Send>,
    warnings: Vec<String>,
}

impl Piece {
    pub(crate) fn new(apply: impl FnOnce(&mut ProfileFile) + Send + 'static) -> Self {
        Piece {
            apply: Box::new(apply),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn warn(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

/// Shared state of one capture.
pub(crate) struct Ctx {
    pub root: Root,
    pub secrets: Secrets,
    pub timeout: Duration,
    pub max_content: u64,
    dpkg: OnceLock<Result<Arc<dpkg::Db>, String>>,
    units: OnceLock<Result<Arc<services::UnitScan>, String>>,
}

impl Ctx {
    /// The dpkg database, parsed once and shared by the collectors that need it.
    pub fn dpkg(&self) -> Result<Arc<dpkg::Db>, CollectError> {
        self.dpkg
            .get_or_init(|| {
                dpkg::Db::load(&self.root)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(CollectError::Setup)
    }

    /// The systemd unit files, scanned once for the services and schedules collectors.
    pub fn units(&self) -> Result<Arc<services::UnitScan>, CollectError> {
        self.units
            .get_or_init(|| {
                services::scan(&self.root)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(CollectError::Setup)
    }

    /// Runs a command with the capture's deadline.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, CollectError> {
        run(program, args, self.timeout)
    }
}

type RunFn = fn(&Ctx) -> Result<Piece, CollectError>;

struct Def {
    name: &'static str,
    tables: &'static [&'static str],
    live_only: bool,
    run: RunFn,
}

const COLLECTORS: &[Def] = &[
    Def {
        name: "hardware",
        tables: &[
            "hardware.system",
            "hardware.cpu",
            "hardware.memory",
            "hardware.pci_devices",
            "hardware.nics",
            "hardware.firmware",
        ],
        live_only: true,
        run: hardware::collect,
    },
    Def {
        name: "storage.config",
        tables: &["storage.fstab", "storage.crypttab"],
        live_only: false,
        run: storage::collect_config,
    },
    Def {
        name: "storage.devices",
        tables: &[
            "storage.disks",
            "storage.partitions",
            "storage.md_arrays",
            "storage.lvm_pvs",
            "storage.lvm_vgs",
            "storage.lvm_lvs",
            "storage.luks",
            "storage.filesystems",
            "storage.mounts",
            "storage.usage",
            "storage.swaps",
        ],
        live_only: false,
        run: storage::collect_devices,
    },
    Def {
        name: "os",
        tables: &["os.release", "os.host", "os.kernels", "os.boot"],
        live_only: false,
        run: os::collect,
    },
    Def {
        name: "os.running",
        tables: &["os.running_kernel"],
        live_only: true,
        run: os::collect_running,
    },
    Def {
        name: "packages",
        tables: &[
            "packages.packages",
            "packages.repositories",
            "packages.repository_keys",
            "packages.alternatives",
        ],
        live_only: false,
        run: packages::collect,
    },
    Def {
        name: "users",
        tables: &["users.users", "users.groups", "users.authorized_keys"],
        live_only: false,
        run: users::collect,
    },
    Def {
        name: "security",
        tables: &[
            "security.sshd",
            "security.ssh_host_keys",
            "security.sudoers",
        ],
        live_only: false,
        run: security::collect,
    },
    Def {
        name: "security.live",
        tables: &["security.mac", "security.firewall"],
        live_only: true,
        run: security::collect_live,
    },
    Def {
        name: "network.config",
        tables: &["network.dns", "network.hosts", "network.ifupdown"],
        live_only: false,
        run: network::collect_config,
    },
    Def {
        name: "network.live",
        tables: &[
            "network.interfaces",
            "network.addresses",
            "network.routes",
            "network.listening",
        ],
        live_only: true,
        run: network::collect_live,
    },
    Def {
        name: "services",
        tables: &[
            "services.units",
            "services.default_target",
            "services.init_scripts",
        ],
        live_only: false,
        run: services::collect,
    },
    Def {
        name: "schedules",
        tables: &["schedules.cron", "schedules.timers"],
        live_only: false,
        run: schedules::collect,
    },
    Def {
        name: "kernel.config",
        tables: &["kernel.sysctl", "kernel.modprobe", "kernel.modules_load"],
        live_only: false,
        run: kernel::collect_config,
    },
    Def {
        name: "kernel.live",
        tables: &["kernel.sysctl_running", "kernel.modules"],
        live_only: true,
        run: kernel::collect_live,
    },
    Def {
        name: "files",
        tables: &["files.files", "files.ignored_files", "security.secrets"],
        live_only: false,
        run: files::collect,
    },
];

/// The names of all collectors, in run order.
pub fn collector_names() -> Vec<&'static str> {
    COLLECTORS.iter().map(|d| d.name).collect()
}

/// Captures a profile of `opts.root`.
pub fn capture(opts: &Options) -> Result<ProfileFile, CollectError> {
    let started = Instant::now();
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let root = Root::new(&opts.root).map_err(|e| {
        CollectError::Setup(format!(
            "cannot open root {}: {e}\nhint: --root must be an existing directory",
            opts.root.display()
        ))
    })?;
    if !root.path("/etc").is_dir() {
        return Err(CollectError::Setup(format!(
            "{} has no /etc: it does not look like a system root\nhint: give --root the directory where the system's / is mounted",
            root.dir().display()
        )));
    }
    let key = load_or_create_key(&opts.state_dir)?;
    let secrets = Secrets::new(
        opts.recovery_recipient.as_deref(),
        key,
        opts.previous.as_ref(),
    )?;
    let ctx = Arc::new(Ctx {
        root,
        secrets,
        timeout: opts.timeout,
        max_content: opts.max_content,
        dpkg: OnceLock::new(),
        units: OnceLock::new(),
    });

    let (tx, rx) = mpsc::channel();
    let mut reports: Vec<Option<Collector>> = Vec::new();
    let mut pending = 0usize;
    for (i, def) in COLLECTORS.iter().enumerate() {
        let tables = def.tables.iter().map(ToString::to_string).collect();
        if def.live_only && !ctx.root.is_live() {
            reports.push(Some(Collector {
                name: def.name.into(),
                state: CollectorState::NotApplicable,
                duration_us: 0,
                message: Some(
                    "live state of the running system does not describe an offline root".into(),
                ),
                tables,
            }));
            continue;
        }
        reports.push(None);
        pending += 1;
        let tx = tx.clone();
        let ctx = Arc::clone(&ctx);
        let run = def.run;
        std::thread::Builder::new()
            .name(format!("collect-{}", def.name))
            .spawn(move || {
                let t = Instant::now();
                let result = run(&ctx);
                let _ = tx.send((i, result, t.elapsed()));
            })
            .map_err(|e| CollectError::Setup(format!("cannot start collector thread: {e}")))?;
    }
    drop(tx);

    let mut file = ProfileFile::default();
    let deadline = started + opts.timeout;
    while pending > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok((i, result, took)) = rx.recv_timeout(wait) else {
            break;
        };
        pending -= 1;
        let def = &COLLECTORS[i];
        let tables = def.tables.iter().map(ToString::to_string).collect();
        let duration_us = took.as_micros() as u64;
        reports[i] = Some(match result {
            Ok(piece) => {
                (piece.apply)(&mut file);
                let message = (!piece.warnings.is_empty()).then(|| piece.warnings.join("; "));
                Collector {
                    name: def.name.into(),
                    state: CollectorState::Ok,
                    duration_us,
                    message,
                    tables,
                }
            }
            Err(CollectError::Timeout { what, after }) => Collector {
                name: def.name.into(),
                state: CollectorState::Timeout,
                duration_us,
                message: Some(format!("{what} did not finish within {after:?}")),
                tables,
            },
            Err(e) => Collector {
                name: def.name.into(),
                state: CollectorState::Error,
                duration_us,
                message: Some(e.to_string()),
                tables,
            },
        });
    }
    // Whatever has not reported is abandoned: its thread may be stuck in the kernel (a hung
    // network mount); the profile says so instead of waiting for ever.
    for (i, r) in reports.iter_mut().enumerate() {
        if r.is_none() {
            let def = &COLLECTORS[i];
            *r = Some(Collector {
                name: def.name.into(),
                state: CollectorState::Timeout,
                duration_us: opts.timeout.as_micros() as u64,
                message: Some(format!("did not finish within {:?}", opts.timeout)),
                tables: def.tables.iter().map(ToString::to_string).collect(),
            });
        }
    }
    file.profile.collectors = reports.into_iter().flatten().collect();

    let p = &mut file.profile;
    p.meta.schema = keel_profile::SCHEMA_VERSION;
    p.meta.agent_version = env!("CARGO_PKG_VERSION").into();
    p.meta.root = ctx.root.dir().display().to_string();
    p.meta.live = ctx.root.is_live();
    p.meta.started_at_ms = started_at_ms;
    if let Some(h) = p.os.host.first() {
        p.meta.hostname.clone_from(&h.hostname);
        p.meta.machine_id.clone_from(&h.machine_id);
    }
    p.meta
        .recovery_recipient
        .clone_from(&opts.recovery_recipient);
    p.meta.previous = match &opts.previous {
        Some(prev) => Some(
            prev.hash()
                .map_err(|e| CollectError::Setup(e.to_string()))?,
        ),
        None => None,
    };
    p.normalize();
    // Drop blobs nothing refers to (a collector may have offered content it later withheld).
    let refs = p.blob_refs();
    file.blobs.retain(|h, _| refs.binary_search(h).is_ok());
    file.profile.meta.duration_ms = started.elapsed().as_millis() as u64;
    Ok(file)
}
