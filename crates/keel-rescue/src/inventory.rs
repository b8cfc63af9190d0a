//! The disks the rescue environment sees, read from sysfs (there is no udev to ask).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`, `sda`).
    pub name: String,
    /// Device node (`/dev/vda`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Model, when the device reports one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Serial number, when the device reports one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    /// World-wide identifier, when the device reports one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wwid: String,
    /// How it is attached: `nvme`, `virtio`, `sata`, `scsi`, `usb`, `mmc`, `xen`, `cdrom`.
    pub transport: String,
    /// Removable media (USB sticks, card readers, optical drives).
    pub removable: bool,
    /// Read-only.
    pub read_only: bool,
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The unit serial number from a SCSI VPD page 0x80 (4-byte header, then the serial).
pub fn parse_vpd_pg80(data: &[u8]) -> String {
    if data.len() < 4 || data[1] != 0x80 {
        return String::new();
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = &data[4..data.len().min(4 + len)];
    String::from_utf8_lossy(body)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}

fn transport(name: &str, device_path: &str) -> &'static str {
    if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("vd") {
        "virtio"
    } else if name.starts_with("xvd") {
        "xen"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("sr") {
        "cdrom"
    } else if device_path.contains("/usb") {
        "usb"
    } else if device_path.contains("/ata") {
        "sata"
    } else {
        "scsi"
    }
}

/// The whole disks under `sys` (`/sys` on a live system): virtual devices (loop, ram, md,
/// dm, zram) and empty ones (a drive without media) are left out. Sorted by name.
pub fn disks(sys: &Path) -> Vec<Disk> {
    let Ok(entries) = fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let target = fs::read_link(&dir)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if target.contains("devices/virtual/") {
            continue;
        }
        let sectors: u64 = read_trim(&dir.join("size")).parse().unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let dev = dir.join("device");
        let first = |names: &[&Path]| {
            names
                .iter()
                .map(|p| read_trim(p))
                .find(|s| !s.is_empty())
                .unwrap_or_default()
        };
        let mut serial = first(&[&dir.join("serial"), &dev.join("serial")]);
        if serial.is_empty() {
            serial = parse_vpd_pg80(&fs::read(dev.join("vpd_pg80")).unwrap_or_default());
        }
        let model = {
            // SCSI/SATA report a vendor apart ("ATA" for every SATA disk); virtio reports a
            // PCI vendor id and no model.
            let vendor = read_trim(&dev.join("vendor"));
            let model = read_trim(&dev.join("model"));
            if model.is_empty()
                || vendor.is_empty()
                || vendor == "ATA"
                || vendor.starts_with("0x")
                || model.starts_with(&vendor)
            {
                model
            } else {
                format!("{vendor} {model}")
            }
        };
        out.push(Disk {
            path: format!("/dev/{name}"),
            size: sectors * 512,
            model,
            serial,
            wwid: first(&[&dir.join("wwid"), &dev.join("wwid")]),
            transport: transport(&name, &target).to_string(),
            removable: read_trim(&dir.join("removable")) == "1",
            read_only: read_trim(&dir.join("ro")) == "1",
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A size for people: `512 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || (value - value.round()).abs() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn disk(sys: &Path, name: &str, device_path: &str, files: &[(&str, &str)]) {
        let real = sys.join(device_path.trim_start_matches('/')).join(name);
        fs::create_dir_all(real.join("device")).unwrap();
        for (f, content) in files {
            fs::write(real.join(f), content).unwrap();
        }
        fs::create_dir_all(sys.join("block")).unwrap();
        symlink(&real, sys.join("block").join(name)).unwrap();
    }

    #[test]
    fn reads_virtio_nvme_sata_and_skips_virtual_and_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        disk(
            sys,
            "vda",
            "devices/pci0000:00/0000:00:04.0/virtio1/block",
            &[
                ("size", "1048576\n"),
                ("serial", "KEEL-1\n"),
                ("device/vendor", "0x1af4\n"),
                ("removable", "0\n"),
                ("ro", "0\n"),
            ],
        );
        disk(
            sys,
            "nvme0n1",
            "devices/pci0000:00/0000:00:05.0/nvme/nvme0",
            &[
                ("size", "2097152\n"),
                ("device/serial", "NV-2   \n"),
                ("device/model", "QEMU NVMe Ctrl\n"),
                ("wwid", "nvme.1b36-4e562d32\n"),
            ],
        );
        let mut pg80 = vec![0, 0x80, 0, 8];
        pg80.extend_from_slice(b"WD-ABC  ");
        disk(
            sys,
            "sda",
            "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block",
            &[
                ("size", "4096\n"),
                ("device/vendor", "ATA     \n"),
                ("device/model", "WDC WD10EZEX\n"),
            ],
        );
        fs::write(
            sys.join("devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/device/vpd_pg80"),
            &pg80,
        )
        .unwrap();
        disk(sys, "loop0", "devices/virtual/block", &[("size", "100\n")]);
        disk(
            sys,
            "sr0",
            "devices/pci0000:00/ata2/block",
            &[("size", "0\n")],
        );

        let found = disks(sys);
        let names: Vec<&str> = found.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda", "vda"]);
        assert_eq!(found[0].serial, "NV-2");
        assert_eq!(found[0].model, "QEMU NVMe Ctrl");
        assert_eq!(found[0].transport, "nvme");
        assert_eq!(found[0].size, 1024 * 1024 * 1024);
        assert_eq!(found[1].serial, "WD-ABC");
        assert_eq!(found[1].model, "WDC WD10EZEX");
        assert_eq!(found[1].transport, "sata");
        assert_eq!(found[2].serial, "KEEL-1");
        assert_eq!(found[2].model, "");
        assert_eq!(found[2].path, "/dev/vda");
        assert_eq!(found[2].transport, "virtio");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(512 * 1024 * 1024), "512 MiB");
        assert_eq!(human(1536 * 1024 * 1024), "1.5 GiB");
    }
}
