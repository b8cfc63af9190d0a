//! Running the storage tools: explicit arguments, standard input empty or given, a deadline,
//! and errors that show the command line and the end of what the tool said.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::SystemError;

/// How long a query (blkid, sfdisk --json, lvs) may take.
pub(crate) const QUERY: Duration = Duration::from_secs(30);
/// How long a tool that writes (mkfs, mdadm, cryptsetup) may take: discarding a large SSD
/// before making a filesystem can take minutes.
pub(crate) const WRITE: Duration = Duration::from_secs(600);

/// One command line to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Written to standard input; empty input when none.
    pub input: Option<String>,
    pub timeout: Duration,
    /// Extra environment (`DM_DISABLE_UDEV=1`).
    pub env: Vec<(&'static str, &'static str)>,
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    /// `program` with `args`, no input, the query deadline.
    pub fn new<S: AsRef<str>>(program: &str, args: &[S]) -> Self {
        Cmd {
            program: program.to_string(),
            args: args.iter().map(|a| a.as_ref().to_string()).collect(),
            input: None,
            timeout: QUERY,
            env: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Gives the command this text on standard input.
    pub fn input(mut self, text: impl Into<String>) -> Self {
        self.input = Some(text.into());
        self
    }

    /// Sets the deadline.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Runs it; an exit status other than 0 is returned, not an error.
    pub fn output(&self) -> Result<Output, SystemError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            // Messages are matched in a few places and shown to people: keep them in English.
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|source| SystemError::NotRun {
            program: self.program.clone(),
            package: package_of(&self.program),
            source,
        })?;
        let writer = self.input.clone().map(|text| {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                // A tool that exits early closes its end; what it did is in its status.
                let _ = stdin.write_all(text.as_bytes());
            })
        });
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let out_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out_pipe.read_to_end(&mut b);
            b
        });
        let err_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err_pipe.read_to_end(&mut b);
            b
        });
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(SystemError::NotRun {
                        program: self.program.clone(),
                        package: package_of(&self.program),
                        source: e,
                    })
                }
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(SystemError::TimedOut {
                command: self.to_string(),
                timeout: self.timeout,
                stderr,
            }),
        }
    }

    /// Runs it and returns its standard output; any exit status other than 0 is an error
    /// showing the command and the end of what it said.
    pub fn run(&self) -> Result<Output, SystemError> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The error for a finished command that failed.
    pub fn failed(&self, out: &Output) -> SystemError {
        let said = if out.stderr.trim().is_empty() {
            out.stdout.clone()
        } else {
            out.stderr.clone()
        };
        SystemError::Failed {
            command: self.to_string(),
            status: out.status.to_string(),
            stderr: said,
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        if self.input.is_some() {
            f.write_str(" < SCRIPT")?;
        }
        Ok(())
    }
}

/// A word as a shell would need it written. Square brackets are left bare: device paths
/// never have them, and the dry run's `/dev/loop[FILE]` is a name for people, not a path.
pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%[]".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The Debian package a tool comes from, for the hint when it is missing.
fn package_of(program: &str) -> &'static str {
    match program {
        "sfdisk" | "partx" | "blockdev" | "losetup" | "wipefs" | "mount" | "umount" | "blkid"
        | "mkswap" => "util-linux / fdisk / mount",
        "mdadm" => "mdadm",
        "cryptsetup" => "cryptsetup-bin",
        "pvcreate" | "vgcreate" | "lvcreate" | "vgchange" | "lvchange" | "vgs" | "lvs"
        | "dmsetup" => "lvm2 / dmsetup",
        "mkfs.xfs" => "xfsprogs",
        "mkfs.vfat" => "dosfstools",
        "mkfs.btrfs" => "btrfs-progs",
        "mkfs.f2fs" => "f2fs-tools",
        p if p.starts_with("mkfs.ext") => "e2fsprogs",
        _ => "coreutils",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/dev/sda1"), "/dev/sda1");
        assert_eq!(quote("uuid=0c1d"), "uuid=0c1d");
        assert_eq!(quote("my disk"), "'my disk'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        let c = Cmd::new("mkfs.ext4", &["-L", "root fs", "/dev/vda2"]);
        assert_eq!(c.to_string(), "mkfs.ext4 -L 'root fs' /dev/vda2");
    }

    #[test]
    fn runs_with_input_status_and_deadline() {
        let out = Cmd::new("sh", &["-c", "cat; echo oops >&2; exit 3"])
            .input("hello")
            .output()
            .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.status.code(), Some(3));
        let e = Cmd::new("sh", &["-c", "echo one >&2; echo two >&2; exit 1"])
            .run()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`sh -c 'echo one >&2; echo two >&2; exit 1'` failed (exit status: 1):\n  one\n  two"
        );
        let t = Instant::now();
        let e = Cmd::new("sleep", &["10"])
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err();
        assert!(matches!(e, SystemError::TimedOut { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let e = Cmd::new("keel-no-such-tool", &["x"]).run().unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run keel-no-such-tool: "),
            "{e}"
        );
    }
}
