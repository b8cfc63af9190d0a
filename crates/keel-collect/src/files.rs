//! Configuration files: every entry under `/etc` with mode, owner, size and hash, classified
//! against its package's shipped checksum. Content is kept only for files that differ from
//! their package or belong to none; secrets are sealed, never kept in clear.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use keel_profile::{DataPath, File, FileStatus, Hash, IgnoredFile, Secret};
use md5::{Digest, Md5};

use crate::{CollectError, Ctx, Piece};

/// Paths that change on their own: recorded as volatile, never alerting.
const IGNORED_EXACT: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/mtab",
    "/etc/adjtime",
    "/etc/.pwd.lock",
    "/etc/prelink.cache",
    "/etc/blkid.tab",
    "/etc/blkid/blkid.tab",
    "/etc/.updated",
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/subuid-",
    "/etc/subgid-",
];
const IGNORED_PREFIX: &[&str] = &[
    "/etc/.git/",
    "/etc/lvm/cache/",
    "/etc/lvm/archive/",
    "/etc/.etckeeper",
];
const IGNORED_SUFFIX: &[&str] = &["~", ".swp", ".swo"];

/// Trees that package scripts and triggers rebuild (update-ca-certificates,
/// update-alternatives): recorded as one digest row each, since their hundreds of links are
/// rebuilt on recovery, not restored. The choices behind the alternatives' links are recorded
/// in `packages.alternatives`.
const GENERATED_PREFIX: &[&str] = &["/etc/ssl/certs/", "/etc/alternatives/"];

/// Files a package's maintainer script copies from a template it ships: when identical to the
/// template they are generated (rebuilt on install), not local configuration.
const TEMPLATES: &[(&str, &str)] = &[
    ("/etc/profile", "/usr/share/base-files/profile"),
    ("/etc/motd", "/usr/share/base-files/motd"),
    ("/etc/nsswitch.conf", "/usr/share/base-files/nsswitch.conf"),
    ("/etc/inputrc", "/usr/share/readline/inputrc"),
    ("/etc/adduser.conf", "/usr/share/adduser/adduser.conf"),
    ("/etc/default/grub", "/usr/share/grub/default/grub"),
    ("/etc/skel/.bashrc", "/usr/share/base-files/dot.bashrc"),
    ("/etc/skel/.profile", "/usr/share/base-files/dot.profile"),
];

/// Paths that hold secrets whatever their content.
fn is_secret_path(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/security/opasswd",
        "/etc/ppp/chap-secrets",
        "/etc/ppp/pap-secrets",
        "/etc/ipsec.secrets",
        "/etc/krb5.keytab",
    ];
    const PREFIX: &[&str] = &[
        "/etc/ssl/private/",
        "/etc/NetworkManager/system-connections/",
        "/etc/wpa_supplicant/",
        "/etc/wireguard/",
    ];
    if EXACT.contains(&path) || PREFIX.iter().any(|p| path.starts_with(p)) {
        return true;
    }
    // Keel's own settings directory: everything but its TOML files (backup passwords, keys).
    if path.starts_with("/etc/keel/") && !path.ends_with(".toml") {
        return true;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    (path.starts_with("/etc/ssh/") && name.starts_with("ssh_host_") && name.ends_with("_key"))
        || name.ends_with(".key")
        || name.ends_with(".keytab")
        || name.ends_with(".psk")
}

/// Content that is a secret wherever it lives.
fn is_secret_content(data: &[u8]) -> bool {
    memfind(data, b"PRIVATE KEY-----") || memfind(data, b"PRIVATE KEY BLOCK-----")
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn classify_ignored(path: &str) -> bool {
    IGNORED_EXACT.contains(&path)
        || IGNORED_PREFIX.iter().any(|p| path.starts_with(p))
        || IGNORED_SUFFIX.iter().any(|s| path.ends_with(s))
}

struct Walk {
    /// Digest of each generated tree's entries (name, kind, target or content hash).
    generated: BTreeMap<&'static str, (blake3::Hasher, u64)>,
    files: Vec<File>,
    ignored: Vec<IgnoredFile>,
    secrets: Vec<Secret>,
    blobs: Vec<Vec<u8>>,
    sealed: Vec<(Hash, Vec<u8>)>,
    warnings: Vec<String>,
}

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let db = ctx.dpkg()?;
    let mut md5_cache: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut w = Walk {
        generated: BTreeMap::new(),
        files: Vec::new(),
        ignored: Vec::new(),
        secrets: Vec::new(),
        blobs: Vec::new(),
        sealed: Vec::new(),
        warnings: Vec::new(),
    };
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    walk(ctx, "/etc", &mut |path, meta| {
        seen.insert(path.to_string());
        visit(ctx, &db, &mut md5_cache, &mut w, path, meta)
    })?;

    // Conffiles (and other /etc files dpkg knows a checksum for) that are gone.
    for (path, cf) in &db.conffiles {
        if !cf.obsolete && !seen.contains(path) && path.starts_with("/etc/") {
            w.files.push(missing(path, &cf.package));
        }
    }
    let mut owners_with_sums: BTreeSet<&str> = BTreeSet::new();
    for (path, stem) in &db.etc_owners {
        if !seen.contains(path) && !db.conffiles.contains_key(path) {
            owners_with_sums.insert(stem.as_str());
        }
    }
    for stem in &owners_with_sums {
        let sums = md5_cache
            .entry((*stem).to_string())
            .or_insert_with(|| crate::dpkg::Db::etc_md5sums(&ctx.root, stem));
        for path in sums.keys() {
            if !seen.contains(path) && !db.conffiles.contains_key(path) {
                w.files.push(missing(path, package_name(stem)));
            }
        }
    }

    for (prefix, (hasher, count)) in std::mem::take(&mut w.generated) {
        w.files.push(File {
            path: format!("{prefix}*"),
            kind: "generated".into(),
            size: count,
            hash: Some(Hash(*hasher.finalize().as_bytes())),
            status: FileStatus::Generated,
            ..File::default()
        });
    }
    let (data_paths, data_warnings) = data_paths(ctx);
    w.warnings.extend(data_warnings);
    let Walk {
        files,
        ignored,
        secrets,
        blobs,
        sealed,
        warnings,
        ..
    } = w;
    Ok(Piece::new(move |file| {
        for b in blobs {
            file.add_blob(b);
        }
        for (h, ct) in sealed {
            file.blobs.insert(h, keel_profile::Blob(ct));
        }
        file.profile.files.files = files;
        file.profile.files.ignored_files = ignored;
        file.profile.files.data_paths = data_paths;
        file.profile.security.secrets = secrets;
    })
    .warn(warnings))
}

/// Where the administrator declares data paths and how they are backed up.
pub(crate) const DATA_PATHS_FILE: &str = "/etc/keel/data.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    #[serde(default)]
    data: Vec<DataEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataEntry {
    path: String,
    backup: String,
    repository: Option<String>,
    password_file: Option<String>,
    restore_command: Option<String>,
}

/// The data paths declared in [`DATA_PATHS_FILE`]; a file that cannot be read or is not
/// valid gives a warning and no data paths.
fn data_paths(ctx: &Ctx) -> (Vec<DataPath>, Vec<String>) {
    let host = ctx.root.path(DATA_PATHS_FILE);
    let text = match std::fs::read_to_string(&host) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("cannot read {DATA_PATHS_FILE}: {e}")],
            )
        }
    };
    let parsed: DataFile = match toml::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.message().to_string();
            return (
                Vec::new(),
                vec![format!("{DATA_PATHS_FILE} is not valid: {msg}")],
            );
        }
    };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for d in parsed.data {
        let problem = if !d.path.starts_with('/') || d.path == "/" {
            Some("the path must be an absolute directory other than /")
        } else {
            match d.backup.as_str() {
                "restic" if d.repository.is_none() => Some("restic needs a repository"),
                "command" if d.restore_command.is_none() => {
                    Some("backup = \"command\" needs a restore_command")
                }
                "restic" | "command" => None,
                _ => Some("backup must be \"restic\" or \"command\""),
            }
        };
        if let Some(why) = problem {
            warnings.push(format!("{DATA_PATHS_FILE}: data path {}: {why}", d.path));
            continue;
        }
        out.push(DataPath {
            path: d.path.trim_end_matches('/').to_string(),
            backup: d.backup,
            repository: d.repository,
            password_file: d.password_file,
            restore_command: d.restore_command,
        });
    }
    (out, warnings)
}

fn missing(path: &str, package: &str) -> File {
    File {
        path: path.to_string(),
        kind: "file".into(),
        status: FileStatus::Missing,
        package: Some(package.to_string()),
        ..File::default()
    }
}

/// `name:arch` info-file stems name the package `name`.
fn package_name(stem: &str) -> &str {
    stem.split(':').next().unwrap_or(stem)
}

/// Walks a directory inside the root depth-first without following links, calling `f` with
/// each entry's absolute path (inside the root) and metadata.
fn walk(
    ctx: &Ctx,
    abs: &str,
    f: &mut dyn FnMut(&str, &std::fs::Metadata) -> Result<(), CollectError>,
) -> Result<(), CollectError> {
    let host = ctx.root.path(abs);
    let rd = std::fs::read_dir(&host).map_err(|e| CollectError::io(&host, e))?;
    let mut entries: Vec<(String, std::fs::Metadata)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| CollectError::io(&host, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry
            .metadata()
            .map_err(|e| CollectError::io(&entry.path(), e))?;
        entries.push((name, meta));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, meta) in entries {
        let path = format!("{abs}/{name}");
        f(&path, &meta)?;
        if meta.file_type().is_dir() && !classify_ignored(&format!("{path}/")) {
            walk(ctx, &path, f)?;
        }
    }
    Ok(())
}

fn visit(
    ctx: &Ctx,
    db: &crate::dpkg::Db,
    md5_cache: &mut HashMap<String, HashMap<String, String>>,
    w: &mut Walk,
    path: &str,
    meta: &std::fs::Metadata,
) -> Result<(), CollectError> {
    let ft = meta.file_type();
    let host = ctx.root.path(path);
    let mode = meta.permissions().mode() & 0o7777;
    let secret_path = is_secret_path(path);

    if classify_ignored(path) || (ft.is_dir() && classify_ignored(&format!("{path}/"))) {
        let hash = if ft.is_file() && !secret_path {
            std::fs::read(&host).ok().map(|d| Hash::of(&d))
        } else {
            None
        };
        w.ignored.push(IgnoredFile {
            path: path.to_string(),
            size: meta.len(),
            hash,
        });
        return Ok(());
    }

    let owner = db.etc_owners.get(path);
    if owner.is_none() && !secret_path {
        if let Some(prefix) = GENERATED_PREFIX.iter().find(|p| path.starts_with(**p)) {
            return add_generated(w, prefix, path, &host, meta);
        }
    }
    let mut row = File {
        path: path.to_string(),
        mode,
        uid: meta.uid(),
        gid: meta.gid(),
        package: owner.map(|s| package_name(s).to_string()),
        ..File::default()
    };

    if ft.is_symlink() {
        let target = std::fs::read_link(&host).map_err(|e| CollectError::io(&host, e))?;
        row.kind = "symlink".into();
        row.size = meta.len();
        row.target = Some(target.to_string_lossy().into_owned());
        row.status = if owner.is_some() {
            FileStatus::Pristine
        } else {
            FileStatus::Unowned
        };
        w.files.push(row);
        return Ok(());
    }
    if ft.is_dir() {
        row.kind = "dir".into();
        row.status = if owner.is_some() {
            FileStatus::Pristine
        } else {
            FileStatus::Unowned
        };
        w.files.push(row);
        return Ok(());
    }
    if !ft.is_file() {
        // FIFOs, sockets and device nodes: never read (reading a FIFO blocks for ever).
        w.warnings.push(format!("skipped special file {path}"));
        return Ok(());
    }

    row.kind = "file".into();
    row.size = meta.len();
    let data = match std::fs::read(&host) {
        Ok(d) => d,
        Err(e) => {
            w.warnings.push(format!("cannot read {path}: {e}"));
            w.files.push(row);
            return Ok(());
        }
    };

    // Expected checksum: the conffile's, else the package's md5sums entry.
    let expected: Option<String> = if let Some(cf) = db.conffiles.get(path) {
        Some(cf.md5.clone())
    } else if let Some(stem) = owner {
        md5_cache
            .entry(stem.clone())
            .or_insert_with(|| crate::dpkg::Db::etc_md5sums(&ctx.root, stem))
            .get(path)
            .cloned()
    } else {
        None
    };
    let differs = expected.as_ref().map(|md5| hex_md5(&data) != *md5);
    let base_status = match (owner.is_some() || expected.is_some(), differs) {
        (_, Some(true)) => FileStatus::Modified,
        (true, _) => FileStatus::Pristine,
        (false, _) => FileStatus::Unowned,
    };
    let kept = matches!(base_status, FileStatus::Modified | FileStatus::Unowned);
    let secret = secret_path
        || is_secret_content(&data)
        || (kept && meta.uid() == 0 && mode.trailing_zeros() >= 6 && !data.is_empty());

    if secret {
        let sealed = ctx
            .secrets
            .seal(path, &data, mode, meta.uid(), meta.gid())?;
        row.hash = Some(sealed.row.fingerprint);
        row.status = FileStatus::Secret;
        if let Some(b) = sealed.blob {
            w.sealed.push(b);
        }
        w.secrets.push(sealed.row);
        w.files.push(row);
        return Ok(());
    }

    row.status = base_status;
    if base_status != FileStatus::Pristine {
        row.hash = Some(Hash::of(&data));
    }
    let from_template = owner.is_none()
        && TEMPLATES.iter().any(|(p, t)| {
            *p == path && std::fs::read(ctx.root.path(t)).is_ok_and(|tpl| tpl == data)
        });
    if from_template {
        row.status = FileStatus::Generated;
    } else if kept {
        if meta.len() > ctx.max_content {
            // Recorded by hash so a change is still seen; the content is too large to carry.
            row.status = if base_status == FileStatus::Modified {
                FileStatus::Modified
            } else {
                FileStatus::TooLarge
            };
            w.warnings.push(format!(
                "{path} is {} bytes, over the {} byte content limit: hash only",
                meta.len(),
                ctx.max_content
            ));
        } else {
            row.content = true;
            w.blobs.push(data);
        }
    }
    w.files.push(row);
    Ok(())
}

fn add_generated(
    w: &mut Walk,
    prefix: &'static str,
    path: &str,
    host: &std::path::Path,
    meta: &std::fs::Metadata,
) -> Result<(), CollectError> {
    let (hasher, count) = w
        .generated
        .entry(prefix)
        .or_insert_with(|| (blake3::Hasher::new(), 0));
    *count += 1;
    hasher.update(path.as_bytes());
    hasher.update(b"\0");
    let ft = meta.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(host).map_err(|e| CollectError::io(host, e))?;
        hasher.update(b"l");
        hasher.update(t.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        match std::fs::read(host) {
            Ok(d) => {
                hasher.update(b"f");
                hasher.update(blake3::hash(&d).as_bytes());
            }
            Err(e) => w.warnings.push(format!("cannot read {path}: {e}")),
        }
    } else {
        hasher.update(b"d");
    }
    hasher.update(b"\n");
    Ok(())
}

fn hex_md5(data: &[u8]) -> String {
    let d = Md5::digest(data);
    let mut s = String::with_capacity(32);
    for b in d {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths() {
        assert!(is_secret_path("/etc/shadow"));
        assert!(is_secret_path("/etc/ssh/ssh_host_ed25519_key"));
        assert!(!is_secret_path("/etc/ssh/ssh_host_ed25519_key.pub"));
        assert!(is_secret_path("/etc/ssl/private/site.pem"));
        assert!(is_secret_path("/etc/nginx/tls/site.key"));
        assert!(!is_secret_path("/etc/ssh/sshd_config"));
    }

    #[test]
    fn secret_content() {
        assert!(is_secret_content(
            b"x\n-----BEGIN OPENSSH PRIVATE KEY-----\nabc"
        ));
        assert!(is_secret_content(b"-----BEGIN RSA PRIVATE KEY-----"));
        assert!(!is_secret_content(b"-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn ignored() {
        assert!(classify_ignored("/etc/ld.so.cache"));
        assert!(classify_ignored("/etc/.git/"));
        assert!(classify_ignored("/etc/fstab~"));
        assert!(!classify_ignored("/etc/fstab"));
    }

    #[test]
    fn md5_hex() {
        assert_eq!(hex_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
