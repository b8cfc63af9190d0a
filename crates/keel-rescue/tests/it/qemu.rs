//! One QEMU guest booted from the rescue environment: TCG only (KVM does not work on these
//! machines), serial console into a file, under `timeout`, killed by its process group when
//! dropped. Only one guest runs at a time on the machine (a lock in the cache directory).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{cache_dir, RescueEnv};

/// How a disk is attached.
#[derive(Debug, Clone, Copy)]
pub enum Bus {
    /// virtio-blk (`/dev/vdX`).
    Virtio,
    /// NVM Express (`/dev/nvmeNn1`).
    Nvme,
}

/// A disk image attached to the guest.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The raw image.
    pub image: PathBuf,
    /// How it is attached.
    pub bus: Bus,
    /// The serial number the guest sees.
    pub serial: String,
    /// Attached read-only.
    pub readonly: bool,
}

impl Disk {
    /// A writable disk.
    pub fn new(image: &Path, bus: Bus, serial: &str) -> Disk {
        Disk {
            image: image.to_path_buf(),
            bus,
            serial: serial.to_string(),
            readonly: false,
        }
    }
}

/// The lock that lets one guest run at a time on the machine.
fn qemu_lock() -> fs::File {
    let lock_path = cache_dir().join("qemu.lock");
    fs::create_dir_all(cache_dir()).expect("cache dir");
    let lock = fs::File::create(&lock_path).expect("qemu lock file");
    lock.lock().expect("lock qemu.lock");
    lock
}

/// A running guest.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: PathBuf,
    started: Instant,
    _lock: fs::File,
}

impl Vm {
    /// Boots `env` with `disks` and `append` added to the kernel command line. The whole run
    /// is bounded by `limit`; the console goes to `console`.
    pub fn boot(
        env: &RescueEnv,
        disks: &[Disk],
        append: &str,
        console: &Path,
        limit: Duration,
    ) -> Vm {
        Vm::boot_with(env, disks, append, console, limit, &[])
    }

    /// [`Vm::boot`] with more QEMU arguments (firmware, NICs).
    pub fn boot_with(
        env: &RescueEnv,
        disks: &[Disk],
        append: &str,
        console: &Path,
        limit: Duration,
        extra: &[String],
    ) -> Vm {
        let lock = qemu_lock();
        let mut cmd = Command::new("timeout");
        cmd.args(["--signal=KILL", &limit.as_secs().to_string()])
            .arg("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .args([
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
            ])
            .arg("-kernel")
            .arg(env.vmlinuz())
            .arg("-initrd")
            .arg(env.initrd())
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {append}"));
        // cache=unsafe: the images are scratch files, and writes that wait for the host's
        // disk stall QEMU's emulated NVMe controller long enough, on a busy host, for the
        // guest to time its commands out.
        for (i, d) in disks.iter().enumerate() {
            let id = format!("d{i}");
            let ro = if d.readonly { ",readonly=on" } else { "" };
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=none,id={id},cache=unsafe{ro}",
                d.image.display()
            ));
            let device = match d.bus {
                Bus::Virtio => "virtio-blk-pci",
                Bus::Nvme => "nvme",
            };
            cmd.arg("-device")
                .arg(format!("{device},drive={id},serial={}", d.serial));
        }
        cmd.args(extra);
        Vm::launch(cmd, console, lock)
    }

    /// Boots a disk image with its own boot loader: `args` are QEMU's (machine, firmware,
    /// disks, NICs); the serial console goes to `console`.
    pub fn boot_disk(args: &[String], console: &Path, limit: Duration) -> Vm {
        let lock = qemu_lock();
        let mut cmd = Command::new("timeout");
        cmd.args(["--signal=KILL", &limit.as_secs().to_string()])
            .arg("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
            .args(["-display", "none", "-no-reboot", "-monitor", "none"])
            .args([
                "-chardev",
                "stdio,id=con,signal=off",
                "-serial",
                "chardev:con",
            ])
            .args(args);
        Vm::launch(cmd, console, lock)
    }

    fn launch(mut cmd: Command, console: &Path, lock: fs::File) -> Vm {
        let out = fs::File::create(console).expect("console file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("console file"))
            .stderr(out)
            .spawn()
            .expect("start qemu-system-x86_64");
        let stdin = child.stdin.take();
        Vm {
            child,
            stdin,
            console: console.to_path_buf(),
            started: Instant::now(),
            _lock: lock,
        }
    }

    /// The console so far, with the serial line's carriage returns removed.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).replace('\r', "")
    }

    /// Waits until the console shows `needle`; returns the time since QEMU started, or `None`
    /// if the guest stopped or `timeout` passed first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console().contains(needle) {
                return Some(self.started.elapsed());
            }
            let exited = self.child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                // One last look: the guest may have written it just before stopping.
                return self
                    .console()
                    .contains(needle)
                    .then(|| self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(text.as_bytes())
            .expect("write to the console");
        stdin.flush().expect("flush the console");
    }

    /// Waits for QEMU to exit (the guest powered off); `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for qemu") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // `timeout` runs in its own process group with QEMU: end that group, by its id.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
