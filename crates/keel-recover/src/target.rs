//! The disks a system is rebuilt onto, and how the plan names the devices it creates.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::size::human;

/// How a disk is attached. Used to prefer a target of the same kind as the source disk, and
/// shown in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskKind {
    /// An `NVMe` namespace.
    Nvme,
    /// A virtio block device.
    Virtio,
    /// A SATA disk.
    Sata,
    /// A SAS disk.
    Sas,
    /// A SCSI disk of unknown transport.
    Scsi,
    /// A USB disk.
    Usb,
    /// An MMC or SD card.
    Mmc,
    /// A Xen virtual disk.
    Xen,
    /// A Fibre Channel LUN.
    FibreChannel,
    /// An iSCSI LUN.
    Iscsi,
    /// A loop device (an image file attached to the kernel).
    Loop,
    /// An image file not attached to any device.
    Image,
    /// Anything else.
    #[default]
    Unknown,
}

impl DiskKind {
    /// The kind of a profile disk from its `transport` column.
    pub fn from_transport(transport: Option<&str>) -> Self {
        match transport.unwrap_or_default() {
            "nvme" => DiskKind::Nvme,
            "virtio" => DiskKind::Virtio,
            "sata" | "ata" => DiskKind::Sata,
            "sas" => DiskKind::Sas,
            "scsi" => DiskKind::Scsi,
            "usb" => DiskKind::Usb,
            "mmc" => DiskKind::Mmc,
            "xen" => DiskKind::Xen,
            "fc" => DiskKind::FibreChannel,
            "iscsi" => DiskKind::Iscsi,
            "loop" => DiskKind::Loop,
            "image" => DiskKind::Image,
            _ => DiskKind::Unknown,
        }
    }

    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::Nvme => "nvme",
            DiskKind::Virtio => "virtio",
            DiskKind::Sata => "sata",
            DiskKind::Sas => "sas",
            DiskKind::Scsi => "scsi",
            DiskKind::Usb => "usb",
            DiskKind::Mmc => "mmc",
            DiskKind::Xen => "xen",
            DiskKind::FibreChannel => "fc",
            DiskKind::Iscsi => "iscsi",
            DiskKind::Loop => "loop",
            DiskKind::Image => "image",
            DiskKind::Unknown => "unknown",
        }
    }

    /// Whether two kinds count as the same when choosing a target: an image file and a loop
    /// device are both files.
    pub fn same_as(self, other: DiskKind) -> bool {
        let file = |k: DiskKind| matches!(k, DiskKind::Loop | DiskKind::Image);
        self == other || (file(self) && file(other))
    }
}

impl fmt::Display for DiskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A disk the system may be rebuilt onto, as it was when the plan was made. The plan keeps
/// these so that applying it can check that the disks present are still the ones planned for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetDisk {
    /// The path as given (`/dev/nvme0n1`, `/dev/disk/by-id/…`, or an image file).
    pub path: String,
    /// The kernel's name for it (`nvme0n1`); none for an image file.
    pub name: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical sector size in bytes.
    pub logical_sector_size: u64,
    /// Model, as the device reports it.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// World-wide name, normalised as the profile records it (`0x…` or `eui.…`).
    pub wwn: Option<String>,
    /// How it is attached.
    pub kind: DiskKind,
    /// Spinning disk.
    pub rotational: bool,
    /// Removable medium.
    pub removable: bool,
    /// For a loop device: the image file behind it.
    pub backing_file: Option<String>,
}

impl TargetDisk {
    /// An image file of `size_bytes` at `path`.
    pub fn image(path: impl Into<String>, size_bytes: u64) -> Self {
        TargetDisk {
            path: path.into(),
            size_bytes,
            logical_sector_size: 512,
            kind: DiskKind::Image,
            ..TargetDisk::default()
        }
    }

    /// A one-line description: path, size, kind and identity.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({}, {}", self.path, human(self.size_bytes), self.kind);
        if let Some(w) = &self.wwn {
            s.push_str(", wwn ");
            s.push_str(w);
        } else if let Some(serial) = &self.serial {
            s.push_str(", serial ");
            s.push_str(serial);
        }
        s.push(')');
        s
    }

    /// The device path under `/dev` the kernel knows it by, when it is a block device.
    pub fn dev_path(&self) -> Option<String> {
        self.name
            .as_ref()
            .map(|n| format!("/dev/{}", n.replace('!', "/")))
    }
}

/// The path of partition `number` of the disk at `disk`, as the kernel or udev names it:
/// `/dev/vda` → `/dev/vda1`, `/dev/nvme0n1` → `/dev/nvme0n1p1`, `/dev/loop0` → `/dev/loop0p1`,
/// `/dev/disk/by-id/ata-X` → `/dev/disk/by-id/ata-X-part1`.
pub fn partition_path(disk: &str, number: u32) -> String {
    if disk.starts_with("/dev/disk/by-") {
        format!("{disk}-part{number}")
    } else if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// A block device a step works on. Disks are named by their target path; everything built on
/// them by what it is, so that applying the plan can resolve names that only exist once an
/// image is attached or an array assembled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Device {
    /// A whole target disk.
    Disk {
        /// Its target path.
        disk: String,
    },
    /// A partition of a target disk.
    Partition {
        /// The disk's target path.
        disk: String,
        /// Partition number.
        number: u32,
    },
    /// A software RAID array (`/dev/md0`).
    Md {
        /// Kernel name (`md0`).
        name: String,
    },
    /// An LVM logical volume (`/dev/vg/lv`).
    Lv {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
    },
    /// An opened LUKS mapping (`/dev/mapper/name`).
    Crypt {
        /// Mapping name.
        name: String,
    },
}

impl Device {
    /// The target disk this device is on, for disks and partitions.
    pub fn disk(&self) -> Option<&str> {
        match self {
            Device::Disk { disk } | Device::Partition { disk, .. } => Some(disk),
            _ => None,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Disk { disk } => f.write_str(disk),
            Device::Partition { disk, number } if disk.starts_with("/dev/") => {
                f.write_str(&partition_path(disk, *number))
            }
            // An image file's partitions get a device only once it is attached.
            Device::Partition { disk, number } => write!(f, "{disk}:p{number}"),
            Device::Md { name } => write!(f, "/dev/{name}"),
            Device::Lv { vg, lv } => write!(f, "/dev/{vg}/{lv}"),
            Device::Crypt { name } => write!(f, "/dev/mapper/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(partition_path("/dev/vda", 1), "/dev/vda1");
        assert_eq!(partition_path("/dev/sdb", 12), "/dev/sdb12");
        assert_eq!(partition_path("/dev/nvme0n1", 1), "/dev/nvme0n1p1");
        assert_eq!(partition_path("/dev/loop0", 3), "/dev/loop0p3");
        assert_eq!(partition_path("/dev/mmcblk0", 2), "/dev/mmcblk0p2");
        assert_eq!(partition_path("/dev/md0", 1), "/dev/md0p1");
        assert_eq!(
            partition_path("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001", 2),
            "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part2"
        );
    }

    #[test]
    fn device_display() {
        let p = |disk: &str, number| Device::Partition {
            disk: disk.into(),
            number,
        };
        assert_eq!(p("/dev/nvme1n1", 2).to_string(), "/dev/nvme1n1p2");
        assert_eq!(p("/dev/sda", 2).to_string(), "/dev/sda2");
        assert_eq!(p("/srv/disk0.img", 2).to_string(), "/srv/disk0.img:p2");
        let lv = Device::Lv {
            vg: "vg0".into(),
            lv: "root".into(),
        };
        assert_eq!(lv.to_string(), "/dev/vg0/root");
        assert_eq!(Device::Md { name: "md1".into() }.to_string(), "/dev/md1");
    }

    #[test]
    fn kinds() {
        assert_eq!(DiskKind::from_transport(Some("nvme")), DiskKind::Nvme);
        assert_eq!(DiskKind::from_transport(None), DiskKind::Unknown);
        assert!(DiskKind::Loop.same_as(DiskKind::Image));
        assert!(!DiskKind::Nvme.same_as(DiskKind::Virtio));
    }
}
