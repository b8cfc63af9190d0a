//! What `keel rescue` does to the machine it runs on: load drivers, mount the kit, open a
//! shell on the console, power off.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::error::MountError;

/// Whether this process is the system's init (PID 1), as `keel rescue` is inside the rescue
/// environment.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Flushes the filesystems and powers the machine off at once (QEMU started with
/// `-no-reboot` exits). Returns only if the kernel refuses.
pub fn power_off() -> std::io::Error {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        Ok(()) => std::io::Error::other("the kernel returned from power-off"),
        Err(e) => e.into(),
    }
}

/// Loads drivers for the devices present, by their modalias, as udev would at boot.
#[derive(Debug)]
pub struct Coldplug {
    sys: PathBuf,
    seen: BTreeSet<String>,
}

impl Coldplug {
    /// Coldplug for the devices under `sys` (`/sys`).
    pub fn new(sys: &Path) -> Coldplug {
        Coldplug {
            sys: sys.to_path_buf(),
            seen: BTreeSet::new(),
        }
    }

    /// Every modalias of every device under `sys/bus`.
    pub fn aliases(sys: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Ok(buses) = fs::read_dir(sys.join("bus")) else {
            return out;
        };
        for bus in buses.flatten() {
            let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
                continue;
            };
            for dev in devices.flatten() {
                if let Ok(alias) = fs::read_to_string(dev.path().join("modalias")) {
                    let alias = alias.trim();
                    if !alias.is_empty() {
                        out.insert(alias.to_string());
                    }
                }
            }
        }
        out
    }

    /// Runs `modprobe` for the aliases not seen before; returns how many there were.
    pub fn run(&mut self) -> usize {
        let new: Vec<String> = Self::aliases(&self.sys)
            .into_iter()
            .filter(|a| !self.seen.contains(a))
            .collect();
        if new.is_empty() {
            return 0;
        }
        let _ = Command::new("modprobe")
            .args(["-q", "-b", "-a"])
            .args(&new)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.seen.extend(new.iter().cloned());
        new.len()
    }
}

/// A read-only mount, unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// Mounts `device` (of type `fstype`) read-only on `dir`, creating `dir`.
    pub fn readonly(device: &str, fstype: &str, dir: &Path) -> Result<Mount, MountError> {
        let err = |message: String| MountError {
            device: device.to_string(),
            fstype: fstype.to_string(),
            mountpoint: dir.to_path_buf(),
            message,
        };
        fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let out = Command::new("mount")
            .args(["-o", "ro", "-t", fstype, device])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run mount: {e}")))?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A step may have left a process in the directory for a moment; retry, then detach.
        for attempt in 0..5 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let _ = fs::remove_dir(&self.dir);
                return;
            }
            if attempt == 4 {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The terminal the kernel console writes to (`/dev/ttyS0`, `/dev/tty1`): the last entry of
/// `sys/class/tty/console/active`, which is the one `/dev/console` means.
pub fn console_tty(sys: &Path) -> Option<PathBuf> {
    let active = fs::read_to_string(sys.join("class/tty/console/active")).ok()?;
    let name = active.split_whitespace().last()?;
    Some(Path::new("/dev").join(name))
}

/// Runs an interactive shell on `tty` (with job control: it becomes the shell's controlling
/// terminal), or on this process's own terminal when `tty` is `None`, and waits for it.
pub fn shell(tty: Option<&Path>) -> std::io::Result<ExitStatus> {
    let sh = ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/sh");
    let Some(tty) = tty else {
        return Command::new(sh).arg("-i").status();
    };
    let open = || fs::OpenOptions::new().read(true).write(true).open(tty);
    let status = Command::new("setsid")
        .args(["-c", "-w", sh, "-i"])
        .env("PS1", "keel-rescue:\\w# ")
        .stdin(open()?)
        .stdout(open()?)
        .stderr(open()?)
        .status();
    match status {
        Ok(s) if s.code() != Some(127) => Ok(s),
        // No setsid: a shell without job control still beats none.
        _ => Command::new(sh)
            .arg("-i")
            .stdin(open()?)
            .stdout(open()?)
            .stderr(open()?)
            .status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_console() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        for (bus, dev, alias) in [
            (
                "pci",
                "0000:00:04.0",
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
            ),
            (
                "pci",
                "0000:00:05.0",
                "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n",
            ),
            ("virtio", "virtio1", "virtio:d00000002v00001AF4\n"),
            ("virtio", "virtio2", "virtio:d00000002v00001AF4\n"),
            ("cpu", "cpu0", "\n"),
        ] {
            let d = sys.join("bus").join(bus).join("devices").join(dev);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("modalias"), alias).unwrap();
        }
        let a = Coldplug::aliases(sys);
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(a.contains("virtio:d00000002v00001AF4"));

        assert_eq!(console_tty(sys), None);
        fs::create_dir_all(sys.join("class/tty/console")).unwrap();
        fs::write(sys.join("class/tty/console/active"), "tty0 ttyS0\n").unwrap();
        assert_eq!(console_tty(sys), Some(PathBuf::from("/dev/ttyS0")));
    }
}
