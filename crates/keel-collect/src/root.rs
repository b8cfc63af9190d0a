//! The captured root: every read goes through here, so a collector never reads the host by
//! accident when it is given a mounted image.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::CollectError;

/// The directory a capture reads from.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
    live: bool,
}

impl Root {
    /// A root at `path`; it is *live* when it is the running system's `/`.
    pub fn new(path: &Path) -> io::Result<Self> {
        let canon = path.canonicalize()?;
        let live = canon == Path::new("/");
        Ok(Root { path: canon, live })
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// True when the root is the running system, so live facts describe it.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The host path of an absolute path inside the root (`/etc/passwd` →
    /// `<root>/etc/passwd`).
    pub fn path(&self, abs: &str) -> PathBuf {
        self.path.join(abs.trim_start_matches('/'))
    }

    /// Reads a text file inside the root, lossily decoding invalid UTF-8.
    pub fn read(&self, abs: &str) -> Result<String, CollectError> {
        let p = self.path(abs);
        std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| CollectError::io(&p, e))
    }

    /// Like [`Root::read`], but a missing file is `None`.
    pub fn read_opt(&self, abs: &str) -> Result<Option<String>, CollectError> {
        let p = self.path(abs);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(20) => Ok(None), // ENOTDIR
            Err(e) => Err(CollectError::io(&p, e)),
        }
    }

    /// True when the path exists inside the root (without following a final symlink).
    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).symlink_metadata().is_ok()
    }

    /// File names in a directory inside the root, sorted; a missing directory is empty.
    pub fn list_dir(&self, abs: &str) -> Result<Vec<String>, CollectError> {
        let p = self.path(abs);
        let rd = match std::fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(20) => return Ok(Vec::new()),
            Err(e) => return Err(CollectError::io(&p, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| CollectError::io(&p, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Resolves a symlink target found inside the root to an absolute path inside the root.
    pub fn resolve_link(&self, link_abs: &str, target: &str) -> String {
        if target.starts_with('/') {
            target.to_string()
        } else {
            let parent = Path::new(link_abs).parent().unwrap_or(Path::new("/"));
            normalize(&parent.join(target))
        }
    }
}

/// Collapses `.` and `..` without touching the filesystem.
pub fn normalize(p: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.to_str().unwrap_or("").split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Runs a command with a deadline; kills it when the deadline passes.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String, CollectError> {
    let cmdline = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|e| CollectError::Command {
            command: cmdline(),
            detail: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CollectError::Timeout {
                    what: cmdline(),
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                return Err(CollectError::Command {
                    command: cmdline(),
                    detail: e.to_string(),
                })
            }
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(CollectError::Command {
            command: cmdline(),
            detail: format!("{status}: {}", String::from_utf8_lossy(&err).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// True when `program` is on the `PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
