//! The build cache and tree archives.
//!
//! A cache directory holds, under an exclusive lock for the duration of a build:
//!
//! ```text
//! debs/                   downloaded packages (apt's archive directory, shared by all builds)
//! apt/KEY/                the throwaway apt state of a repository set (its package lists)
//! base/SUITE-ARCH-KEY.tar.zst   a bootstrapped base system, keyed by tool, suite,
//!                         architecture, archive and components
//! trees/HOST-KEY.tar.zst  a finished tree without its secrets, keyed by profile and plan
//! ```
//!
//! Finished trees never hold decrypted secrets: those are written after a tree is laid down,
//! every time. The directory is private to root (mode 0700) all the same, since trees hold
//! the profiled system's configuration.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keel_profile::Hash;

use crate::build::Phase;
use crate::cmd;
use crate::error::SystemError;

/// Bump when what goes into a cached base or tree changes, so stale entries are not reused.
pub(crate) const RECIPE: &str = "keel-system-1";

/// An open, locked cache directory.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    _lock: fs::File,
}

impl Cache {
    /// Opens (creating) the cache in `dir` and waits for its lock.
    pub(crate) fn open(dir: &Path) -> Result<Cache, SystemError> {
        fs::create_dir_all(dir).map_err(|e| SystemError::io("cannot create", dir, e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| SystemError::io("cannot open", dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| SystemError::io("cannot set the mode of", &dir, e))?;
        let lock_path = dir.join("lock");
        let lock = fs::File::create(&lock_path)
            .map_err(|e| SystemError::io("cannot create", &lock_path, e))?;
        lock.lock()
            .map_err(|e| SystemError::io("cannot lock", &lock_path, e))?;
        Ok(Cache { dir, _lock: lock })
    }

    fn sub(&self, name: &str) -> Result<PathBuf, SystemError> {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).map_err(|e| SystemError::io("cannot create", &p, e))?;
        Ok(p)
    }

    /// apt's archive directory for every build.
    pub(crate) fn debs(&self) -> Result<PathBuf, SystemError> {
        let d = self.sub("debs")?;
        self.sub("debs/partial")?;
        Ok(d)
    }

    /// The apt state of the repository set `key`.
    pub(crate) fn apt_state(&self, key: &str) -> Result<PathBuf, SystemError> {
        self.sub(&format!("apt/{key}"))
    }

    /// The base system archive named `name`.
    pub(crate) fn base(&self, name: &str) -> Result<PathBuf, SystemError> {
        Ok(self.sub("base")?.join(format!("{name}.tar.zst")))
    }

    /// The finished tree archive named `name`.
    pub(crate) fn tree(&self, name: &str) -> Result<PathBuf, SystemError> {
        Ok(self.sub("trees")?.join(format!("{name}.tar.zst")))
    }
}

/// Removes the cached trees named `PREFIX` and a key (and their reports), except `keep`.
pub(crate) fn forget_other_trees(keep: &Path, prefix: &str) {
    let Some(dir) = keep.parent() else { return };
    let Some(keep_name) = keep.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let keep_stem = keep_name.trim_end_matches(".tar.zst");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Exactly PREFIX + key + suffix: the trees of host `web` are not those of `web-1`.
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(key) = rest
            .strip_suffix(".tar.zst")
            .or_else(|| rest.strip_suffix(".tar.json"))
        else {
            continue;
        };
        let is_key = key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if is_key && !name.starts_with(keep_stem) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A short stable key of `parts`.
pub(crate) fn key(parts: &[&str]) -> String {
    let mut joined = String::from(RECIPE);
    for p in parts {
        joined.push('\0');
        joined.push_str(p);
    }
    Hash::of(joined.as_bytes()).to_hex()[..16].to_string()
}

/// How a tree archive is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.tar`
    Tar,
    /// `.tar.zst`, `.tzst`
    TarZst,
    /// `.tar.gz`, `.tgz`
    TarGz,
}

impl ArchiveKind {
    /// The kind a file name asks for; `None` for anything else (a directory).
    pub fn of(path: &Path) -> Option<ArchiveKind> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(ArchiveKind::TarZst)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else if name.ends_with(".tar") {
            Some(ArchiveKind::Tar)
        } else {
            None
        }
    }
}

/// tar options that keep everything a system tree needs: numeric owners, modes, file
/// capabilities and other extended attributes.
const TAR_KEEP: &[&str] = &["--numeric-owner", "--xattrs", "--xattrs-include=*"];

/// Packs the tree `dir` into `out` (written under a temporary name, then renamed). Returns
/// the archive's size.
pub(crate) fn pack(phase: Phase, dir: &Path, out: &Path) -> Result<u64, SystemError> {
    let kind = ArchiveKind::of(out).unwrap_or(ArchiveKind::TarZst);
    let partial = out.with_file_name(format!(
        ".{}.partial-{}",
        out.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let result = match kind {
        ArchiveKind::Tar | ArchiveKind::TarGz => {
            let mut c = cmd::host("tar");
            c.args(TAR_KEEP);
            if kind == ArchiveKind::TarGz {
                c.arg("-z");
            }
            c.arg("-C").arg(dir).arg("-cf").arg(&partial).arg(".");
            cmd::run_quiet(phase, &mut c, std::time::Duration::from_secs(3600)).map(drop)
        }
        ArchiveKind::TarZst => pack_zstd(phase, dir, &partial),
    };
    // A tree holds the system's configuration, and its secrets once they are written.
    let result = result
        .and_then(|()| {
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))
                .map_err(|e| SystemError::io("cannot set the mode of", &partial, e))
        })
        .and_then(|()| {
            fs::rename(&partial, out).map_err(|e| SystemError::io("cannot write", out, e))
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::metadata(out)
        .map(|m| m.len())
        .map_err(|e| SystemError::io("cannot read", out, e))
}

fn pack_zstd(phase: Phase, dir: &Path, dest: &Path) -> Result<(), SystemError> {
    let mut c = cmd::host("tar");
    c.args(TAR_KEEP).arg("-C").arg(dir).args(["-cf", "-", "."]);
    let what = cmd::describe(&c);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tar_failed(phase, &what, &format!("could not start: {e}"), ""))?;
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let mut stdout = child.stdout.take().expect("piped");
    let file = fs::File::create(dest).map_err(|e| SystemError::io("cannot create", dest, e))?;
    let copied = (|| -> std::io::Result<()> {
        let mut enc = zstd::stream::Encoder::new(std::io::BufWriter::new(file), 3)?;
        enc.include_checksum(true)?;
        std::io::copy(&mut stdout, &mut enc)?;
        enc.finish()?.flush()
    })();
    let status = child.wait();
    let err = err_reader.join().unwrap_or_default();
    match (copied, status) {
        (Ok(()), Ok(s)) if s.success() => Ok(()),
        (Err(e), _) => Err(SystemError::io("cannot write", dest, e)),
        (_, Ok(s)) => Err(tar_failed(phase, &what, &format!("{s}"), &err)),
        (_, Err(e)) => Err(tar_failed(phase, &what, &e.to_string(), &err)),
    }
}

/// Unpacks `archive` into the directory `dir`.
pub(crate) fn unpack(phase: Phase, archive: &Path, dir: &Path) -> Result<(), SystemError> {
    fs::create_dir_all(dir).map_err(|e| SystemError::io("cannot create", dir, e))?;
    let kind = ArchiveKind::of(archive).unwrap_or(ArchiveKind::Tar);
    if kind != ArchiveKind::TarZst {
        let mut c = cmd::host("tar");
        c.args(TAR_KEEP);
        if kind == ArchiveKind::TarGz {
            c.arg("-z");
        }
        c.arg("-xpf").arg(archive).arg("-C").arg(dir);
        return cmd::run_quiet(phase, &mut c, std::time::Duration::from_secs(3600)).map(drop);
    }
    let mut c = Command::new("tar");
    c.env("PATH", cmd::PATH)
        .args(TAR_KEEP)
        .args(["-xpf", "-", "-C"])
        .arg(dir);
    let what = cmd::describe(&c);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tar_failed(phase, &what, &format!("could not start: {e}"), ""))?;
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let mut stdin = child.stdin.take().expect("piped");
    let copied = (|| -> std::io::Result<()> {
        let file = fs::File::open(archive)?;
        let mut dec = zstd::stream::Decoder::new(file)?;
        std::io::copy(&mut dec, &mut stdin)?;
        Ok(())
    })();
    drop(stdin);
    let status = child.wait();
    let err = err_reader.join().unwrap_or_default();
    match (copied, status) {
        (Ok(()), Ok(s)) if s.success() => Ok(()),
        (Err(e), _) => Err(SystemError::io("cannot read", archive, e)),
        (_, Ok(s)) => Err(tar_failed(phase, &what, &format!("{s}"), &err)),
        (_, Err(e)) => Err(tar_failed(phase, &what, &e.to_string(), &err)),
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut s = Vec::new();
    let _ = r.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

fn tar_failed(phase: Phase, what: &str, status: &str, output: &str) -> SystemError {
    SystemError::Command {
        phase,
        command: what.to_string(),
        status: status.to_string(),
        output: output
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tree_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = ("a".repeat(16), "b".repeat(16), "c".repeat(16));
        for n in [
            format!("web-1-{a}.tar.zst"),
            format!("web-1-{a}.tar.json"),
            format!("web-1-{b}.tar.zst"),
            format!("web-1-{b}.tar.json"),
            format!("web-{c}.tar.zst"),
            format!("web-10-{c}.tar.zst"),
        ] {
            fs::write(dir.path().join(n), "x").unwrap();
        }
        forget_other_trees(&dir.path().join(format!("web-1-{b}.tar.zst")), "web-1-");
        forget_other_trees(&dir.path().join(format!("web-{a}.tar.zst")), "web-");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("web-1-{b}.tar.json"),
                format!("web-1-{b}.tar.zst"),
                format!("web-10-{c}.tar.zst"),
            ]
        );
    }

    #[test]
    fn archive_kinds() {
        assert_eq!(
            ArchiveKind::of(Path::new("/x/t.tar")),
            Some(ArchiveKind::Tar)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("t.TAR.ZST")),
            Some(ArchiveKind::TarZst)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("t.tgz")),
            Some(ArchiveKind::TarGz)
        );
        assert_eq!(ArchiveKind::of(Path::new("/srv/tree")), None);
    }

    #[test]
    fn pack_and_unpack_keep_modes_and_links() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/f"), "x").unwrap();
        fs::set_permissions(src.path().join("etc/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        std::os::unix::fs::symlink("/dev/null", src.path().join("etc/l")).unwrap();
        let out = tempfile::tempdir().unwrap();
        for name in ["t.tar.zst", "t.tar", "t.tar.gz"] {
            let archive = out.path().join(name);
            assert!(pack(Phase::Save, src.path(), &archive).unwrap() > 0);
            let mode = fs::metadata(&archive).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: private to its owner");
            let dst = out.path().join(format!("x-{name}"));
            unpack(Phase::Restore, &archive, &dst).unwrap();
            let m = fs::metadata(dst.join("etc/f")).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o4751, "{name}");
            assert_eq!(
                fs::read_link(dst.join("etc/l")).unwrap(),
                Path::new("/dev/null")
            );
        }
    }
}
