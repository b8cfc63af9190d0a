//! Running the probing tools. Unlike [`crate::run`], the exit status and stderr come back on
//! failure too: `blkid` exits 2 when a device simply has no signature and `sfdisk` fails on a
//! disk without a partition table, and neither is a problem worth a warning.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::CollectError;

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

/// Maps `f` over `items` on a few threads, keeping the order: probing is mostly waiting for
/// short-lived processes, so a handful at a time cuts the wall time without flooding a machine
/// that has hundreds of disks.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const WORKERS: usize = 8;
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_output_come_back() {
        let o = exec(
            "sh",
            &["-c", "echo out; echo err >&2; exit 2"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(o.code, Some(2));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.why(), "err");
        assert!(!o.success());
    }

    #[test]
    fn deadline_kills() {
        let t = Instant::now();
        let e = exec("sleep", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, CollectError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn missing_program() {
        let e = exec("keel-no-such-program", &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("keel-no-such-program"), "{e}");
    }

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..50).collect();
        assert_eq!(
            par_map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(par_map(&[] as &[u32], |x| *x).is_empty());
    }
}
