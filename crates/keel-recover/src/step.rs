//! The steps a plan is made of, in the order they run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::size::human;
use crate::target::Device;

/// A partition table's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableLabel {
    /// GUID partition table.
    Gpt,
    /// MBR (`dos` in sfdisk's terms).
    Dos,
}

impl TableLabel {
    /// sfdisk's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TableLabel::Gpt => "gpt",
            TableLabel::Dos => "dos",
        }
    }
}

/// A partition to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartition {
    /// Partition number, as on the source.
    pub number: u32,
    /// First byte (a multiple of 1 MiB).
    pub start_bytes: u64,
    /// Size in bytes (a multiple of 1 MiB).
    pub size_bytes: u64,
    /// GPT type GUID or MBR type byte (`0x83`), as on the source.
    pub part_type: String,
    /// GPT partition name.
    pub name: Option<String>,
    /// PARTUUID, preserved so that references by PARTUUID keep working.
    pub uuid: Option<String>,
    /// GPT attribute names or MBR `bootable`.
    pub flags: Vec<String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Erase every filesystem, RAID, LVM and partition-table signature on a disk, so that
    /// nothing left over is picked up again.
    WipeSignatures {
        /// The disk.
        disk: Device,
    },
    /// Write a new partition table.
    PartitionTable {
        /// The disk.
        disk: Device,
        /// GPT or MBR.
        label: TableLabel,
        /// Disk GUID (GPT) or disk identifier (MBR), preserved.
        table_id: Option<String>,
        /// The partitions, in number order.
        partitions: Vec<NewPartition>,
    },
    /// Create a software RAID array.
    CreateRaid {
        /// The array.
        device: Device,
        /// `raid1`, `raid5`, …
        level: String,
        /// Active members.
        devices: Vec<Device>,
        /// Member slots left empty (a degraded array).
        missing: u32,
        /// Spare members.
        spares: Vec<Device>,
        /// Array UUID, preserved (as the profile records it).
        uuid: Option<String>,
        /// Superblock format (`1.2`).
        metadata: Option<String>,
        /// Expected array size in bytes.
        size_bytes: u64,
    },
    /// Format and open a LUKS volume. The key comes from the operator when the step runs.
    CreateLuks {
        /// The device to encrypt.
        device: Device,
        /// Mapping name it is opened as.
        name: String,
        /// LUKS UUID, preserved so crypttab keeps working.
        uuid: String,
        /// LUKS version (1 or 2).
        version: u32,
        /// Cipher, as the source used.
        cipher: Option<String>,
        /// LUKS2 label.
        label: Option<String>,
    },
    /// Create an LVM physical volume.
    CreatePv {
        /// The device.
        device: Device,
        /// PV UUID, preserved.
        uuid: Option<String>,
    },
    /// Create an LVM volume group.
    CreateVg {
        /// Its name.
        name: String,
        /// Its physical volumes.
        pvs: Vec<Device>,
        /// Extent size in bytes.
        extent_size: u64,
    },
    /// Create an LVM logical volume.
    CreateLv {
        /// Volume group.
        vg: String,
        /// Its name.
        name: String,
        /// Size in bytes (a multiple of the extent size).
        size_bytes: u64,
        /// `linear` or `striped`.
        segtype: String,
    },
    /// Make a filesystem.
    Mkfs {
        /// The device.
        device: Device,
        /// Filesystem type.
        fstype: String,
        /// UUID, preserved so fstab and the boot loader keep finding it.
        uuid: Option<String>,
        /// Label, preserved.
        label: Option<String>,
    },
    /// Make a swap area.
    Mkswap {
        /// The device.
        device: Device,
        /// UUID, preserved.
        uuid: Option<String>,
        /// Label, preserved.
        label: Option<String>,
    },
    /// Mount a filesystem under the directory the system is rebuilt in (parents first).
    Mount {
        /// The device.
        device: Device,
        /// Mountpoint in the rebuilt system (`/boot`).
        mountpoint: String,
        /// Filesystem type.
        fstype: String,
        /// Mount options from fstab.
        options: String,
    },
}

impl Step {
    /// What the step does, in one line.
    pub fn describe(&self) -> String {
        match self {
            Step::WipeSignatures { disk } => format!("wipe all signatures on {disk}"),
            Step::PartitionTable {
                disk,
                label,
                partitions,
                ..
            } => {
                let parts: Vec<String> = partitions
                    .iter()
                    .map(|p| format!("{} {}", p.number, human(p.size_bytes)))
                    .collect();
                format!(
                    "write a {} partition table on {disk}: {}",
                    label.as_str(),
                    if parts.is_empty() {
                        "no partitions".into()
                    } else {
                        parts.join(", ")
                    }
                )
            }
            Step::CreateRaid {
                device,
                level,
                devices,
                missing,
                spares,
                size_bytes,
                ..
            } => {
                let mut members: Vec<String> = devices.iter().map(ToString::to_string).collect();
                members.extend((0..*missing).map(|_| "missing".to_string()));
                let mut s = format!(
                    "create {level} array {device} ({}) on {}",
                    human(*size_bytes),
                    members.join(", ")
                );
                if !spares.is_empty() {
                    let sp: Vec<String> = spares.iter().map(ToString::to_string).collect();
                    let _ = write!(s, ", spares {}", sp.join(", "));
                }
                s
            }
            Step::CreateLuks {
                device,
                name,
                version,
                ..
            } => format!("encrypt {device} with LUKS{version} and open it as {name}"),
            Step::CreatePv { device, .. } => format!("create LVM physical volume {device}"),
            Step::CreateVg {
                name,
                pvs,
                extent_size,
            } => {
                let p: Vec<String> = pvs.iter().map(ToString::to_string).collect();
                format!(
                    "create volume group {name} on {} ({} extents)",
                    p.join(", "),
                    human(*extent_size)
                )
            }
            Step::CreateLv {
                vg,
                name,
                size_bytes,
                segtype,
            } => format!(
                "create {segtype} logical volume {vg}/{name} of {}",
                human(*size_bytes)
            ),
            Step::Mkfs {
                device,
                fstype,
                uuid,
                label,
            } => {
                let mut s = format!("make {fstype} on {device}");
                if let Some(u) = uuid {
                    let _ = write!(s, " (UUID {u}");
                    if let Some(l) = label {
                        let _ = write!(s, ", label {l}");
                    }
                    s.push(')');
                }
                s
            }
            Step::Mkswap { device, uuid, .. } => match uuid {
                Some(u) => format!("make swap on {device} (UUID {u})"),
                None => format!("make swap on {device}"),
            },
            Step::Mount {
                device,
                mountpoint,
                fstype,
                options,
            } => format!("mount {device} at {mountpoint} ({fstype}, {options})"),
        }
    }

    /// The devices the step writes to or reads from.
    pub fn devices(&self) -> Vec<&Device> {
        match self {
            Step::WipeSignatures { disk } | Step::PartitionTable { disk, .. } => vec![disk],
            Step::CreateRaid {
                device,
                devices,
                spares,
                ..
            } => std::iter::once(device)
                .chain(devices)
                .chain(spares)
                .collect(),
            Step::CreatePv { device, .. }
            | Step::CreateLuks { device, .. }
            | Step::Mkfs { device, .. }
            | Step::Mkswap { device, .. }
            | Step::Mount { device, .. } => vec![device],
            Step::CreateVg { pvs, .. } => pvs.iter().collect(),
            Step::CreateLv { .. } => Vec::new(),
        }
    }
}
