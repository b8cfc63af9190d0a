//! A real SMTP server for the email tests: Python's `aiosmtpd` (from the Python Package Index) running
//! `tests/fixtures/smtp_sink.py` as a child process, killed when the guard drops.
//!
//! `aiosmtpd` is installed on first use into a directory under the target directory
//! (`pip install --target`), leaving the system's Python alone. Without `python3`, or when pip
//! cannot install it, the tests that need it say why they skip and return.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One mail as the server accepted it.
#[derive(Debug, Deserialize)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub content_type: String,
    pub body: String,
}

/// The running server; killed on drop.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    outdir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts the server, or explains on stderr why the calling test skips and returns `None`.
    #[allow(clippy::print_stderr, reason = "a skipped test says why")]
    pub fn start_or_skip() -> Option<SmtpSink> {
        match SmtpSink::start() {
            Ok(sink) => Some(sink),
            Err(reason) => {
                eprintln!("skipped: needs python3 aiosmtpd ({reason})");
                None
            }
        }
    }

    fn start() -> Result<SmtpSink, String> {
        let pythonpath = ensure_aiosmtpd()?;
        let outdir = tempfile::tempdir().map_err(|e| e.to_string())?;
        // The script travels inside the test binary, so other crates' tests can use this
        // server too.
        let script = outdir.path().join("smtp_sink.py");
        std::fs::write(&script, include_str!("../fixtures/smtp_sink.py"))
            .map_err(|e| e.to_string())?;
        let stderr = File::create(outdir.path().join("server.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(&script)
            .arg(outdir.path())
            .env("PYTHONPATH", &pythonpath)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;

        // The script prints the port it listens on; wait for it, boundedly.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(30));
        let mut sink = SmtpSink {
            child,
            port: 0,
            outdir,
        };
        let port = line.ok().and_then(|line| line.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let log =
                std::fs::read_to_string(sink.outdir.path().join("server.log")).unwrap_or_default();
            panic!("the SMTP server did not start; its stderr:\n{log}");
        };
        sink.port = port;

        // Accepting connections before anything is sent (bounded retries).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the SMTP server never accepted connections on port {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(sink)
    }

    /// The mails accepted so far, in order, waiting up to 10 s for at least `count`.
    pub fn mails(&self, count: usize) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(self.outdir.path())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "json"))
                .collect();
            if paths.len() >= count || Instant::now() >= deadline {
                paths.sort();
                return paths
                    .iter()
                    .map(|path| {
                        let text = std::fs::read_to_string(path).unwrap();
                        let mut mail: ReceivedMail = serde_json::from_str(&text).unwrap();
                        mail.body = mail.body.replace("\r\n", "\n");
                        mail
                    })
                    .collect();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `import aiosmtpd` work, installing it with pip if needed; returns the PYTHONPATH to
/// use. A file lock keeps concurrent test processes from installing at the same time.
fn ensure_aiosmtpd() -> Result<PathBuf, String> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let pythonpath = base.join("keel-notify-pylib");
    let imports = || {
        Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .env("PYTHONPATH", &pythonpath)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
    };
    match imports() {
        Ok(true) => return Ok(pythonpath),
        Ok(false) => {}
        Err(e) => return Err(format!("cannot run python3: {e}")),
    }
    std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
    let lock = File::create(base.join("keel-notify-pip.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if matches!(imports(), Ok(true)) {
        return Ok(pythonpath); // another test process installed it meanwhile
    }
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&pythonpath)
        .arg("aiosmtpd")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("pip install aiosmtpd failed: {last}"));
    }
    if matches!(imports(), Ok(true)) {
        Ok(pythonpath)
    } else {
        Err("aiosmtpd installed but cannot be imported".to_owned())
    }
}
