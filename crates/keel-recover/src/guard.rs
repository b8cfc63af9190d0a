//! What an apply holds — loop devices, running arrays, opened LUKS volumes, active volume
//! groups and mounts — as guards that release it when dropped, the latest first.
//!
//! A guard that is kept ([`Guard::keep`], [`Guards::keep`]) is left as it is: that is how an
//! apply hands its mounted target to the next phase of a recovery. Releasing retries for a
//! moment, since a reader (a desktop's indexer, a `cd` in another shell) can keep a mount
//! busy; a mount still busy after that is detached lazily and reported.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cmd::Cmd;
use crate::error::SystemError;
use crate::kernel;
use crate::tools::{mount_cmd, LVM_CONFIG};

/// Something an apply holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// An image file attached to a loop device.
    LoopDevice {
        /// The loop device (`/dev/loop3`).
        device: String,
        /// The image file.
        image: PathBuf,
    },
    /// A running md array.
    Array {
        /// Its device (`/dev/md1`).
        device: String,
    },
    /// An opened LUKS volume.
    Luks {
        /// The mapping's name (`/dev/mapper/NAME`).
        name: String,
    },
    /// A volume group whose logical volumes are active.
    VolumeGroup {
        /// Its name.
        name: String,
    },
    /// A mounted filesystem.
    Mount {
        /// The device mounted.
        device: String,
        /// Where.
        at: PathBuf,
    },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::LoopDevice { device, image } => {
                write!(f, "loop device {device} (image {})", image.display())
            }
            Resource::Array { device } => write!(f, "RAID array {device}"),
            Resource::Luks { name } => write!(f, "LUKS volume /dev/mapper/{name}"),
            Resource::VolumeGroup { name } => write!(f, "volume group {name} (active)"),
            Resource::Mount { device, at } => write!(f, "{device} mounted on {}", at.display()),
        }
    }
}

/// One held resource, released when dropped unless kept.
#[derive(Debug)]
pub struct Guard {
    resource: Resource,
    armed: bool,
}

impl Guard {
    /// Attaches `image` to a free loop device (`losetup --find --show`), and tells the
    /// kernel about the partitions it already has (`partx -a`), since a loop device attached
    /// without `-P` shows none and `-P` does nothing on a kernel without a partition parser.
    pub fn attach(image: &Path) -> Result<Guard, SystemError> {
        let out = Cmd::new("losetup", &["--find", "--show"])
            .arg(image.display().to_string())
            .run()?;
        let device = out.stdout.trim().to_string();
        if !device.starts_with("/dev/") {
            return Err(SystemError::unexpected(format!(
                "losetup attached {} but printed {device:?}, not a device",
                image.display()
            )));
        }
        let g = Guard::adopt(Resource::LoopDevice {
            device: device.clone(),
            image: image.to_path_buf(),
        });
        // No partition table yet, or the kernel scanned it itself: both are fine.
        let _ = Cmd::new("partx", &["-a", &device]).output();
        Ok(g)
    }

    /// Mounts `device` on `at` (made first), with the fstab `options` that make sense while
    /// the system is rebuilt.
    pub fn mount(
        device: &str,
        at: &Path,
        fstype: &str,
        options: &str,
    ) -> Result<Guard, SystemError> {
        std::fs::create_dir_all(at).map_err(|e| SystemError::io(at, e))?;
        mount_cmd(device, &at.display().to_string(), fstype, options).run()?;
        Ok(Guard::adopt(Resource::Mount {
            device: device.to_string(),
            at: at.to_path_buf(),
        }))
    }

    /// Takes charge of something already held (by an earlier run, say): it is released when
    /// the guard is dropped.
    pub fn adopt(resource: Resource) -> Guard {
        Guard {
            resource,
            armed: true,
        }
    }

    /// What is held.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Releases it now.
    pub fn release(mut self) -> Result<(), SystemError> {
        self.armed = false;
        release(&self.resource)
    }

    /// Keeps it: it is not released, and is returned for the caller to report.
    pub fn keep(mut self) -> Resource {
        self.armed = false;
        self.resource.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            // Nothing can report it from here; `release` is the way to hear about failures.
            let _ = release(&self.resource);
        }
    }
}

/// Guards held together, released in the reverse of the order they were taken.
#[derive(Debug, Default)]
pub struct Guards {
    held: Vec<Guard>,
}

impl Guards {
    /// Adds a guard; it is released before those added earlier.
    pub fn push(&mut self, g: Guard) {
        self.held.push(g);
    }

    /// Whether this resource is held.
    pub fn holds(&self, r: &Resource) -> bool {
        self.held.iter().any(|g| &g.resource == r)
    }

    /// What is held, in the order it was taken.
    pub fn resources(&self) -> Vec<Resource> {
        self.held.iter().map(|g| g.resource.clone()).collect()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Releases everything, latest first, going on after a failure; returns what could not
    /// be released cleanly.
    pub fn release(&mut self) -> Vec<(Resource, SystemError)> {
        let mut failed = Vec::new();
        while let Some(g) = self.held.pop() {
            let r = g.resource.clone();
            if let Err(e) = g.release() {
                failed.push((r, e));
            }
        }
        failed
    }

    /// Keeps everything; returns what is held, in the order it was taken.
    pub fn keep(&mut self) -> Vec<Resource> {
        self.held.drain(..).map(Guard::keep).collect()
    }
}

impl Drop for Guards {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Runs `cmd` until it succeeds, pausing longer each time; the last failure is returned.
fn retry(cmd: &Cmd) -> Result<(), SystemError> {
    let mut pause = Duration::from_millis(50);
    let mut last = None;
    for _ in 0..6 {
        match cmd.run() {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    Err(last.expect("at least one attempt"))
}

/// Releases one resource; one already gone is fine.
pub(crate) fn release(r: &Resource) -> Result<(), SystemError> {
    match r {
        Resource::Mount { at, .. } => {
            if kernel::mounted_on(at)?.is_none() {
                return Ok(());
            }
            let at_s = at.display().to_string();
            match retry(&Cmd::new("umount", &[&at_s])) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = Cmd::new("umount", &["--lazy", &at_s]).run();
                    Err(SystemError::unexpected(format!(
                        "{at_s} stayed busy and was detached lazily (it goes once nothing uses \
                         it): {e}"
                    )))
                }
            }
        }
        Resource::VolumeGroup { name } => {
            let prefix = format!("{}-", name.replace('-', "--"));
            if !kernel::dm_names().iter().any(|n| n.starts_with(&prefix)) {
                return Ok(());
            }
            retry(
                &Cmd::new(
                    "vgchange",
                    &["--config", LVM_CONFIG, "--activate", "n", name],
                )
                .env("DM_DISABLE_UDEV", "1"),
            )
        }
        Resource::Luks { name } => {
            if kernel::dm_kernel_name(name).is_none() {
                return Ok(());
            }
            retry(&Cmd::new("cryptsetup", &["close", name]).env("DM_DISABLE_UDEV", "1"))
        }
        Resource::Array { device } => {
            let name = device.trim_start_matches("/dev/");
            if !kernel::md_running(name) && !kernel::exists(name) {
                return Ok(());
            }
            retry(
                &Cmd::new("mdadm", &["--stop", device])
                    .env("MDADM_NO_UDEV", "1")
                    .env("MDADM_NO_SYSTEMCTL", "1"),
            )
        }
        Resource::LoopDevice { device, image } => {
            let name = device.trim_start_matches("/dev/");
            let attached = kernel::loops_of(image).iter().any(|l| l == name);
            if !attached {
                return Ok(());
            }
            if !kernel::partitions(name).is_empty() {
                let _ = Cmd::new("partx", &["-d", device]).output();
            }
            retry(&Cmd::new("losetup", &["--detach", device]))?;
            // The kernel detaches once the last user lets go (a filesystem another mount
            // namespace still holds, for a moment): wait a little, so that whoever comes next
            // finds the image free; past that, the detach completes on its own.
            for _ in 0..50 {
                if !kernel::loops_of(image).iter().any(|l| l == name) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(())
        }
    }
}
