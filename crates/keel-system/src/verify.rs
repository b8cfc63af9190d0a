//! Verify: capture a recovered root and compare it with the profile it was rebuilt from.
//!
//! Some differences are expected on another machine or in a tree that is not running: the
//! hardware, the disks' sizes, serials and device names, MAC addresses, live state (a tree
//! has no running kernel, addresses or listening sockets), and the boot loader's generated
//! configuration. They are reported apart, each with its reason. Everything else is
//! unexpected.
//!
//! Secrets are recorded as fingerprints keyed with a key only the profiled system has, so a
//! capture made anywhere else cannot match them. With the recovery identity, verify decrypts
//! each secret from the profile and compares it with the file in the root instead (and the
//! password hashes of `/etc/shadow` user by user); without it, secret fingerprints are
//! reported as expected differences that were not compared.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_profile::{diff, Change, ChangeKind, DiffOptions, Profile, ProfileFile, Volatility};
use serde::Serialize;

use crate::accounts::Table;
use crate::error::SystemError;
use crate::overlay::host_path;

/// How to verify.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The recovery identity: secrets are compared by content with it.
    pub identity: Option<&'a age::x25519::Identity>,
    /// Deadline for each collector of the capture.
    pub timeout: Duration,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        VerifyOptions {
            identity: None,
            timeout: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("identity", &self.identity.map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A difference that is expected, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The change from the profile to the recovered root.
    #[serde(flatten)]
    pub change: Change,
    /// Why it is expected.
    pub reason: String,
}

/// The outcome of a verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The profile's hash.
    pub profile: String,
    /// The profiled system's hostname.
    pub hostname: String,
    /// The root that was captured.
    pub root: String,
    /// The root is the running system.
    pub live: bool,
    /// Differences expected on another machine or in an offline tree.
    pub expected: Vec<Difference>,
    /// Everything else.
    pub unexpected: Vec<Change>,
    /// Secrets compared by content.
    pub secrets_compared: usize,
    /// Secrets that could not be compared, and why.
    pub secrets_not_compared: BTreeMap<String, String>,
    /// Seconds the capture took.
    pub capture_seconds: f64,
}

impl VerifyReport {
    /// True when nothing unexpected remains.
    pub fn ok(&self) -> bool {
        self.unexpected.is_empty()
    }
}

/// Captures `root` and compares it with `file`.
pub fn verify(
    file: &ProfileFile,
    root: &Path,
    opts: &VerifyOptions<'_>,
) -> Result<VerifyReport, SystemError> {
    let state =
        tempfile::tempdir().map_err(|e| SystemError::io("cannot create", Path::new("/tmp"), e))?;
    let mut copts = keel_collect::Options::new(root);
    copts.state_dir = state.path().to_path_buf();
    copts.timeout = opts.timeout;
    let t = Instant::now();
    let captured = keel_collect::capture(&copts).map_err(|e| SystemError::Capture {
        root: root.to_path_buf(),
        source: e,
    })?;
    let took = t.elapsed();
    let mut report = compare(file, captured.profile, root, opts.identity)?;
    report.capture_seconds = (took.as_secs_f64() * 100.0).round() / 100.0;
    Ok(report)
}

/// Compares a capture of `root` (`captured`) with the profile `file`.
pub fn compare(
    file: &ProfileFile,
    mut captured: Profile,
    root: &Path,
    identity: Option<&age::x25519::Identity>,
) -> Result<VerifyReport, SystemError> {
    let secrets = settle_secrets(file, &mut captured, root, identity)?;
    let changes = diff(&file.profile, &captured, DiffOptions::default());
    let mut expected = Vec::new();
    let mut unexpected = Vec::new();
    for c in changes {
        match expected_reason(&c, &secrets) {
            Some(reason) => expected.push(Difference { change: c, reason }),
            None => unexpected.push(c),
        }
    }
    Ok(VerifyReport {
        profile: file.hash().map(|h| h.to_hex()).unwrap_or_default(),
        hostname: file.profile.meta.hostname.clone(),
        root: root.display().to_string(),
        live: captured.meta.live,
        expected,
        unexpected,
        secrets_compared: secrets.compared,
        secrets_not_compared: secrets.not_compared,
        capture_seconds: 0.0,
    })
}

/// What comparing the secrets by content found.
#[derive(Debug, Default)]
struct Secrets {
    compared: usize,
    /// Path → why it was not compared.
    not_compared: BTreeMap<String, String>,
    /// The password hashes of `/etc/shadow` were compared user by user.
    shadow_compared: bool,
}

/// Compares secrets by content where the identity allows, and gives the capture the
/// profile's fingerprints where the content is the same (fingerprints are keyed per system,
/// so equal content never has equal fingerprints here).
fn settle_secrets(
    file: &ProfileFile,
    captured: &mut Profile,
    root: &Path,
    identity: Option<&age::x25519::Identity>,
) -> Result<Secrets, SystemError> {
    let mut out = Secrets::default();
    let mut shadow: Option<Vec<u8>> = None;
    for p in &file.profile.security.secrets {
        if let Some(c) = captured
            .security
            .secrets
            .iter_mut()
            .find(|c| c.path == p.path)
        {
            // How the capture was made, not what the system holds.
            c.withheld = p.withheld;
            c.ciphertext = p.ciphertext;
        }
        let blob = p.ciphertext.and_then(|h| file.blobs.get(&h));
        let (Some(id), Some(blob)) = (identity, blob) else {
            let why = if p.ciphertext.is_none() {
                "withheld at capture (no recovery key)"
            } else {
                "no recovery identity given"
            };
            out.not_compared.insert(p.path.clone(), why.to_string());
            continue;
        };
        let plain = crate::identity::decrypt(id, &p.path, &blob.0)?;
        out.compared += 1;
        let actual = std::fs::read(host_path(root, &p.path)?).ok();
        if actual.as_deref() == Some(plain.as_slice()) {
            if let Some(c) = captured
                .security
                .secrets
                .iter_mut()
                .find(|c| c.path == p.path)
            {
                c.fingerprint = p.fingerprint;
            }
            let recorded = file.profile.files.files.iter().find(|f| f.path == p.path);
            let now = captured.files.files.iter_mut().find(|f| f.path == p.path);
            if let (Some(r), Some(n)) = (recorded, now) {
                n.hash = r.hash;
            }
        }
        if p.path == "/etc/shadow" {
            shadow = Some(plain);
        }
    }
    if let Some(plain) = shadow {
        out.shadow_compared = true;
        let hashes = |t: &Table| -> BTreeMap<String, String> {
            let mut m = BTreeMap::new();
            for line in t.render().lines() {
                let mut f = line.split(':');
                if let (Some(n), Some(h)) = (f.next(), f.next()) {
                    m.insert(n.to_string(), h.to_string());
                }
            }
            m
        };
        let recorded = hashes(&Table::parse(&String::from_utf8_lossy(&plain)));
        let now = hashes(&Table::read(&host_path(root, "/etc/shadow")?)?);
        for u in &mut captured.users.users {
            let Some(p) = file.profile.users.users.iter().find(|p| p.name == u.name) else {
                continue;
            };
            if recorded.contains_key(&u.name) && recorded.get(&u.name) == now.get(&u.name) {
                u.password_fingerprint = p.password_fingerprint;
            }
        }
    }
    Ok(out)
}

/// Tables that describe the machine's disks rather than the system's configuration.
const STORAGE_DEVICES: &[&str] = &[
    "disks",
    "partitions",
    "md_arrays",
    "lvm_pvs",
    "lvm_vgs",
    "lvm_lvs",
    "luks",
    "filesystems",
    "mounts",
    "usage",
    "swaps",
];

/// Why `c` is expected, or `None` when it is not.
fn expected_reason(c: &Change, secrets: &Secrets) -> Option<String> {
    let field = c.field.as_deref().unwrap_or("");
    let table = c.table.as_str();
    let reason = match c.section.as_str() {
        "hardware" => "hardware of this machine",
        "storage" if STORAGE_DEVICES.contains(&table) => {
            "disks and filesystems of this machine (sizes, serials, device names)"
        }
        "network" if matches!(table, "interfaces" | "addresses" | "routes" | "listening") => {
            "live network state of this machine (interface names, MAC addresses, addresses)"
        }
        "os" if table == "running_kernel" => "the running kernel",
        "os" if table == "boot" && field == "grub_cfg_hash" => {
            "the boot loader's configuration is generated when the boot loader is installed"
        }
        "kernel" if matches!(table, "sysctl_running" | "modules") => "live kernel state",
        // apt records the archive's override, debootstrap the package's own field.
        "packages" if table == "packages" && field == "priority" => {
            "the priority dpkg records depends on the tool that installed the package"
        }
        "security" if matches!(table, "mac" | "firewall") => "live security state",
        "meta" if table == "collectors" => return collector_reason(c),
        "security" if table == "secrets" && matches!(field, "fingerprint" | "withheld") => {
            return secrets
                .not_compared
                .get(&c.key)
                .map(|why| format!("secret not compared: {why}"));
        }
        "files" if table == "files" && field == "hash" => {
            return secrets
                .not_compared
                .get(&c.key)
                .map(|why| format!("secret not compared: {why}"));
        }
        "users" if table == "users" && field == "password_fingerprint" => {
            if secrets.shadow_compared {
                return None;
            }
            let why = secrets
                .not_compared
                .get("/etc/shadow")
                .map_or("the profile holds no /etc/shadow", String::as_str);
            return Some(format!("password hashes not compared: {why}"));
        }
        _ if field == "mac" => "MAC address of this machine",
        _ if c.volatility == Volatility::Runtime => "runtime state",
        _ => return None,
    };
    Some(reason.to_string())
}

fn collector_reason(c: &Change) -> Option<String> {
    let state = |v: &serde_json::Value| v.as_str().map(String::from);
    match (c.kind, c.field.as_deref()) {
        (ChangeKind::Changed, Some("state")) => {
            let (old, new) = (state(&c.old), state(&c.new));
            let na = Some("not_applicable".to_string());
            (old == na || new == na)
                .then(|| "live facts are not read from a root that is not running".to_string())
        }
        (ChangeKind::Changed, Some("message" | "duration_us")) => Some("collector notes".into()),
        (ChangeKind::Changed, _) => None,
        (ChangeKind::Added | ChangeKind::Removed, _) => {
            Some("a collector of another keel version".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_profile::{Collector, CollectorState, File, FileStatus, Hash, Nic, Secret, User};

    fn base() -> ProfileFile {
        let mut f = ProfileFile::default();
        f.profile.collectors.push(Collector {
            name: "hardware".into(),
            state: CollectorState::Ok,
            tables: vec!["hardware.nics".into()],
            ..Collector::default()
        });
        f.profile.hardware.nics.push(Nic {
            mac: "52:54:00:00:00:01".into(),
            name: "eth0".into(),
            ..Nic::default()
        });
        f.profile.files.files.push(File {
            path: "/etc/ssh/sshd_config".into(),
            kind: "file".into(),
            mode: 0o644,
            hash: Some(Hash::of(b"Port 2222\n")),
            status: FileStatus::Modified,
            content: true,
            ..File::default()
        });
        f
    }

    #[test]
    fn hardware_is_expected_a_changed_file_is_not() {
        let file = base();
        let mut now = file.profile.clone();
        now.collectors[0].state = CollectorState::NotApplicable;
        now.hardware.nics.clear();
        let dir = tempfile::tempdir().unwrap();
        let r = compare(&file, now.clone(), dir.path(), None).unwrap();
        assert!(r.ok(), "{:?}", r.unexpected);
        assert_eq!(r.expected.len(), 1, "{:?}", r.expected);
        assert!(r.expected[0].reason.contains("live facts"));

        now.files.files[0].hash = Some(Hash::of(b"Port 22\n"));
        let r = compare(&file, now, dir.path(), None).unwrap();
        assert!(!r.ok());
        assert_eq!(r.unexpected[0].key, "/etc/ssh/sshd_config");
    }

    #[test]
    fn secrets_are_compared_by_content_with_the_identity() {
        let identity = age::x25519::Identity::generate();
        let mut file = base();
        let shadow = b"root:$y$abc:19000:0:99999:7:::\n".to_vec();
        let ct = file.add_blob(age::encrypt(&identity.to_public(), &shadow).unwrap());
        file.profile.security.secrets.push(Secret {
            path: "/etc/shadow".into(),
            fingerprint: Hash::keyed(&[1; 32], &shadow),
            ciphertext: Some(ct),
            mode: 0o640,
            ..Secret::default()
        });
        file.profile.users.users.push(User {
            name: "root".into(),
            password_fingerprint: Some(Hash::keyed(&[1; 32], b"$y$abc")),
            ..User::default()
        });
        // The recovered root, captured with another fingerprint key.
        let mut now = file.profile.clone();
        now.security.secrets[0].fingerprint = Hash::keyed(&[2; 32], &shadow);
        now.security.secrets[0].withheld = true;
        now.security.secrets[0].ciphertext = None;
        now.users.users[0].password_fingerprint = Some(Hash::keyed(&[2; 32], b"$y$abc"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), &shadow).unwrap();

        let without = compare(&file, now.clone(), dir.path(), None).unwrap();
        assert!(without.ok(), "{:?}", without.unexpected);
        assert_eq!(without.secrets_not_compared.len(), 1);
        assert!(without
            .expected
            .iter()
            .any(|d| d.reason.contains("no recovery identity")));

        let with = compare(&file, now.clone(), dir.path(), Some(&identity)).unwrap();
        assert!(with.ok(), "{:?}", with.unexpected);
        assert!(with.expected.is_empty(), "{:?}", with.expected);
        assert_eq!(with.secrets_compared, 1);

        std::fs::write(
            dir.path().join("etc/shadow"),
            b"root:$y$other:19000:0:99999:7:::\n",
        )
        .unwrap();
        let changed = compare(&file, now, dir.path(), Some(&identity)).unwrap();
        let keys: Vec<(&str, Option<&str>)> = changed
            .unexpected
            .iter()
            .map(|c| (c.key.as_str(), c.field.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                ("root", Some("password_fingerprint")),
                ("/etc/shadow", Some("fingerprint"))
            ]
        );
    }
}
