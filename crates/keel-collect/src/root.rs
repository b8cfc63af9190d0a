//! The captured root: every read goes through here, so a collector never reads the host by
//! accident when it is given a mounted image.

use std::io;
use std::io::Read;
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

/// What a finished command said.
#[derive(Debug)]
pub(crate) struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The first line of stderr, or the exit code: for a warning.
    pub fn why(&self) -> String {
        match self.stderr.lines().find(|l| !l.trim().is_empty()) {
            Some(l) => l.trim().to_string(),
            None => match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            },
        }
    }
}

/// Runs `program` with a deadline, killing it when the deadline passes.
pub(crate) fn exec(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Output, CollectError> {
    let cmdline = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        // lvm complains on stderr about every inherited descriptor otherwise.
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .spawn()
        .map_err(|e| CollectError::Command {
            command: cmdline(),
            detail: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(200);
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
            Ok(None) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(CollectError::Command {
                    command: cmdline(),
                    detail: e.to_string(),
                })
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Runs a command with a deadline and returns its standard output; a non-zero exit is an
/// error carrying the exit status and stderr.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String, CollectError> {
    let out = exec(program, args, timeout)?;
    if !out.success() {
        return Err(CollectError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: match out.code {
                Some(c) => format!("exit status {c}: {}", out.stderr.trim()),
                None => format!("killed by a signal: {}", out.stderr.trim()),
            },
        });
    }
    Ok(out.stdout)
}

/// True when `program` is on the `PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
