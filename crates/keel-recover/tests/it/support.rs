//! Disposable loop devices and mounts, released when dropped even if a test fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// Why this process cannot attach loop devices, if it cannot.
pub fn missing_privileges() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("running as uid {uid}, not root"));
    }
    for tool in ["losetup", "partx", "sfdisk", "mkfs.ext4", "mount", "umount"] {
        if !keel_collect::have(tool) {
            return Some(format!("{tool} is not on the PATH"));
        }
    }
    None
}

#[allow(clippy::print_stderr)] // a skipped test says so where the test runner shows it
pub fn skip(test: &str, why: &str) {
    eprintln!("{test}: skipped: {why}");
}

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A sparse image file of `size` bytes with the partition table `layout` (sfdisk script).
pub fn image(path: &Path, size: u64, layout: &str) {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    run_with_input("sfdisk", &["-q", &path.display().to_string()], Some(layout)).unwrap();
}

/// A loop device with its partitions; detached (partitions first) when dropped.
pub struct LoopDevice {
    pub dev: String,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> Result<Self, String> {
        let dev = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        let lo = LoopDevice {
            dev: dev.trim().to_string(),
        };
        // This kernel may not scan partition tables itself (`losetup -P` makes no nodes).
        run("partx", &["-a", &lo.dev])?;
        Ok(lo)
    }

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        for attempt in 1..=5 {
            if run("partx", &["-d", &self.dev]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

/// A mount, unmounted when dropped (retried: a reader can keep it busy for a moment).
pub struct Mounted {
    at: PathBuf,
}

impl Mounted {
    pub fn new(dev: &str, at: &Path) -> Self {
        fs::create_dir_all(at).unwrap();
        run("mount", &[dev, &at.display().to_string()]).unwrap();
        Mounted {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let at = self.at.display().to_string();
        for attempt in 1..=5 {
            if run("umount", &[&at]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        let _ = run("umount", &["-l", &at]);
    }
}
