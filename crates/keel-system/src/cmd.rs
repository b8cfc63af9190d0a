//! Running the tools a build needs: under a deadline, with their output kept for errors and
//! handed line by line to whoever shows progress.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::build::Phase;
use crate::error::SystemError;

/// The `PATH` commands run with, in the build machine and in the tree.
pub(crate) const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Lines of output kept for an error message.
const TAIL_LINES: usize = 25;

/// What a finished command printed on standard output.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: String,
}

/// The path of `tool` on `PATH` or in the sbin directories.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fails unless `tool` is installed.
pub(crate) fn require(tool: &str, package: &str) -> Result<PathBuf, SystemError> {
    which(tool).ok_or_else(|| SystemError::MissingTool {
        tool: tool.into(),
        package: package.into(),
    })
}

/// A command that runs inside `root`: directly when `root` is `/`, through `chroot`
/// otherwise, with a plain environment.
pub(crate) fn in_root(root: &Path, program: &str) -> Command {
    let mut cmd = if root == Path::new("/") {
        Command::new(program)
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).arg(program);
        c
    };
    plain_env(&mut cmd);
    cmd
}

/// Mounts `/proc`, `/dev` and (when given) the package cache inside the tree, then runs the
/// command in it. Run in a mount namespace of its own, the mounts exist only while the
/// command runs and are never seen outside it: nothing stays mounted in the tree however the
/// build ends, even when keel is killed.
const MOUNTED_CHROOT: &str = r#"set -e
root=$1; debs=$2; shift 2
mkdir -p "$root/proc" "$root/dev"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
if [ -n "$debs" ]; then mount --bind "$debs" "$root/var/cache/apt/archives"; fi
exec chroot "$root" "$@""#;

/// A command that runs inside `root` with `/proc`, `/dev` and optionally `debs` (as apt's
/// archive directory) mounted for it, in a private mount namespace.
pub(crate) fn in_root_mounted(root: &Path, debs: Option<&Path>, program: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(MOUNTED_CHROOT)
        .arg("keel-chroot")
        .arg(root)
        .arg(debs.map_or(OsStr::new(""), Path::as_os_str))
        .arg(program);
    plain_env(&mut cmd);
    cmd
}

/// A command on the build machine in a private mount namespace: whatever it mounts is gone
/// when it ends.
pub(crate) fn host_unshared(program: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", program]);
    plain_env(&mut cmd);
    cmd
}

/// A command on the build machine with a plain environment.
pub(crate) fn host(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    plain_env(&mut cmd);
    cmd
}

fn plain_env(cmd: &mut Command) {
    cmd.env("PATH", PATH)
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env_remove("APT_CONFIG")
        .env_remove("LANG")
        .env_remove("LANGUAGE");
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    let mut args = cmd.get_args().peekable();
    let mut shown = 0;
    while let Some(a) = args.next() {
        if shown == 12 && args.peek().is_some() {
            s.push_str(" …");
            break;
        }
        s.push(' ');
        s.push_str(&a.to_string_lossy());
        shown += 1;
    }
    s
}

/// Runs `cmd` to completion within `timeout`, handing each line of its output (both streams)
/// to `lines`. A failure carries the last lines of output.
pub(crate) fn run(
    phase: Phase,
    cmd: &mut Command,
    timeout: Duration,
    lines: &mut dyn FnMut(&str),
) -> Result<Output, SystemError> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SystemError::Command {
            phase,
            command: what.clone(),
            status: format!("could not start: {e}"),
            output: String::new(),
        })?;
    let (tx, rx) = mpsc::channel::<Line>();
    let mut out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let tx_err = tx.clone();
    // Standard output is kept whole (some callers parse it); standard error line by line.
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut pending = Vec::new();
        loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=pos).collect();
                        let _ = tx.send(Line::Out(
                            String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                        ));
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(Line::Out(String::from_utf8_lossy(&pending).into_owned()));
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx_err.send(Line::Err(line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Line::Out(l) | Line::Err(l)) => keep(&mut tail, l, lines),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().map_err(|e| SystemError::Command {
            phase,
            command: what.clone(),
            status: format!("could not be waited for: {e}"),
            output: String::new(),
        })? {
            break status;
        }
        if Instant::now() > deadline {
            // Only the child this function started, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            return Err(SystemError::Command {
                phase,
                command: what,
                status: format!("did not finish within {} s", timeout.as_secs()),
                output: Vec::from(tail).join("\n"),
            });
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let _ = err_reader.join();
    while let Ok(Line::Out(l) | Line::Err(l)) = rx.try_recv() {
        keep(&mut tail, l, lines);
    }
    if !status.success() {
        let status = match status.code() {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(SystemError::Command {
            phase,
            command: what,
            status,
            output: Vec::from(tail).join("\n"),
        });
    }
    Ok(Output {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

/// Runs `cmd` quietly: its output only appears in an error.
pub(crate) fn run_quiet(
    phase: Phase,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<Output, SystemError> {
    run(phase, cmd, timeout, &mut |_| {})
}

/// Hands a line on and keeps it among the last few.
fn keep(tail: &mut VecDeque<String>, line: String, lines: &mut dyn FnMut(&str)) {
    lines(&line);
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

enum Line {
    Out(String),
    Err(String),
}

/// The effective uid of this process, from `/proc/self/status`.
pub(crate) fn euid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failure_tail() {
        let mut seen = Vec::new();
        let out = run(
            Phase::Check,
            Command::new("sh").args(["-c", "echo one; echo two >&2; printf three"]),
            Duration::from_secs(10),
            &mut |l| seen.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(out.stdout, "one\nthree");
        seen.sort();
        assert_eq!(seen, ["one", "three", "two"]);

        let e = run_quiet(
            Phase::Packages,
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exited with 3") && e.contains("broken"), "{e}");
    }

    #[test]
    fn deadline_kills() {
        let e = run_quiet(
            Phase::Base,
            Command::new("sleep").arg("5"),
            Duration::from_millis(200),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did not finish"), "{e}");
    }
}
