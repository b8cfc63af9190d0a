//! Running the build's tools: always under a deadline, with standard error kept so that a
//! failure can show the tool's own last words.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{BuildError, BuildStep};

/// How many lines of a tool's output an error shows.
const TAIL_LINES: usize = 15;

/// The PATH the build's tools run with: root's tools live in the sbin directories, and a
/// caller's PATH must not pick which debootstrap or cpio runs.
pub(crate) const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `program arg…` for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains([' ', '"', '\'']) {
            let _ = write!(s, "{a:?}");
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// The last lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where a program is, on the tool PATH.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(TOOL_PATH)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn reader(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` until `deadline`; kills it (by its handle) when the time is up.
pub(crate) fn wait_until(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn outcome(status: Option<ExitStatus>, timeout: Duration) -> Option<String> {
    match status {
        Some(s) if s.success() => None,
        Some(s) => Some(match s.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was killed ({s})"),
        }),
        None => Some(format!("did not finish within {} s", timeout.as_secs())),
    }
}

/// Runs `cmd` (stdin empty) and returns its standard output; on failure the error carries the
/// last lines of its standard error.
pub(crate) fn run(
    step: BuildStep,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<Vec<u8>, BuildError> {
    let command = describe(cmd);
    let mut child = cmd
        .env("PATH", TOOL_PATH)
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::Command {
            step,
            command: command.clone(),
            outcome: format!("could not start: {e}"),
            tail: String::new(),
        })?;
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    let status = wait_until(&mut child, timeout).map_err(|e| BuildError::Command {
        step,
        command: command.clone(),
        outcome: format!("could not be waited for: {e}"),
        tail: String::new(),
    })?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if let Some(outcome) = outcome(status, timeout) {
        let mut text = String::from_utf8_lossy(&stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&stdout).into_owned();
        }
        return Err(BuildError::Command {
            step,
            command,
            outcome,
            tail: tail(&text, TAIL_LINES),
        });
    }
    Ok(stdout)
}

/// Runs `cmd` with its standard output and error going to `log`; on failure the error carries
/// the last lines of `log` and of `extra_log` (a log the tool keeps itself), when there is one.
pub(crate) fn run_logged(
    step: BuildStep,
    cmd: &mut Command,
    timeout: Duration,
    log: &Path,
    extra_log: Option<&Path>,
) -> Result<(), BuildError> {
    let command = describe(cmd);
    let io = |e: std::io::Error| BuildError::Io {
        step,
        path: log.to_path_buf(),
        source: e,
    };
    let file = fs::File::create(log).map_err(io)?;
    let mut child = cmd
        .env("PATH", TOOL_PATH)
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(io)?)
        .stderr(file)
        .spawn()
        .map_err(|e| BuildError::Command {
            step,
            command: command.clone(),
            outcome: format!("could not start: {e}"),
            tail: String::new(),
        })?;
    let status = wait_until(&mut child, timeout).map_err(io)?;
    if let Some(outcome) = outcome(status, timeout) {
        let mut text = tail(&fs::read_to_string(log).unwrap_or_default(), TAIL_LINES);
        if let Some(extra) = extra_log.and_then(|p| fs::read_to_string(p).ok()) {
            let _ = write!(
                text,
                "\n({}:)\n{}",
                extra_log.map(Path::display).expect("read above"),
                tail(&extra, TAIL_LINES)
            );
        }
        return Err(BuildError::Command {
            step,
            command,
            outcome,
            tail: text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_the_last_stderr_lines() {
        let e = run(
            BuildStep::Pack,
            Command::new("sh").args([
                "-c",
                "for i in $(seq 1 40); do echo line$i >&2; done; exit 3",
            ]),
            Duration::from_secs(20),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("pack initramfs: `sh -c"), "{msg}");
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.contains("line40") && msg.contains("line26"), "{msg}");
        assert!(!msg.contains("line25"), "{msg}");
    }

    #[test]
    fn a_hung_tool_is_killed_at_its_deadline() {
        let started = Instant::now();
        let e = run(
            BuildStep::Debootstrap,
            Command::new("sleep").arg("30"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.to_string().contains("did not finish within"), "{e}");
    }

    #[test]
    fn logged_failure_shows_both_logs() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("tool.log");
        fs::write(&extra, "W: deep reason\n").unwrap();
        let e = run_logged(
            BuildStep::Debootstrap,
            Command::new("sh").args(["-c", "echo surface; exit 1"]),
            Duration::from_secs(20),
            &dir.path().join("log"),
            Some(&extra),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("surface") && e.contains("W: deep reason"), "{e}");
    }
}
