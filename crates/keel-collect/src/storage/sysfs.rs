//! Block devices as the kernel lists them in sysfs: which exist, what they are, how they stack
//! (partition → disk, LV/array → its members) and the identity of each disk.
//!
//! This is always the host's sysfs (an offline root's own `/sys` is empty): the caller decides
//! which devices describe the root. The base directory is injectable so tests can lay out a
//! fake tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use keel_profile::Disk;

/// What a `/sys/block` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A disk (or anything else with a partition table: an `NVMe` namespace, a virtio disk, …).
    Disk,
    /// A loop device with a backing file.
    Loop,
    /// A software RAID array.
    Md,
    /// A device-mapper device (LVM LV, LUKS mapping, multipath).
    Dm,
}

/// A `/sys/block` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockDev {
    /// Kernel name (`sda`, `loop3`, `dm-0`).
    pub name: String,
    pub kind: Kind,
    /// Size in 512-byte sectors.
    pub size_sectors: u64,
    /// Partitions the kernel knows, by number.
    pub partitions: Vec<PartNode>,
    /// Why the device is not storage worth describing (a RAM disk, an empty drive), if so.
    pub ignored: Option<&'static str>,
}

/// A partition as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartNode {
    /// Kernel name (`sda1`, `loop3p1`).
    pub name: String,
    pub number: u32,
    /// First sector, 512-byte units.
    pub start: u64,
    /// Size in 512-byte sectors (2 for an extended partition: the kernel exposes only its
    /// first KiB).
    pub size_sectors: u64,
}

/// The host's `/sys` and `/dev`, under a base directory.
#[derive(Debug, Clone)]
pub(crate) struct Sys {
    base: PathBuf,
}

impl Sys {
    /// The running system's sysfs.
    pub fn host() -> Self {
        Sys {
            base: PathBuf::from("/"),
        }
    }

    /// A tree laid out under `base` (tests).
    #[cfg(test)]
    pub fn at(base: &std::path::Path) -> Self {
        Sys {
            base: base.to_path_buf(),
        }
    }

    /// The host path of an absolute path.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.base.join(abs.trim_start_matches('/'))
    }

    /// An attribute's value, trimmed; `None` when missing, unreadable or empty.
    pub fn attr(&self, abs: &str) -> Option<String> {
        let v = std::fs::read(self.path(abs)).ok()?;
        let v = String::from_utf8_lossy(&v).trim().to_string();
        (!v.is_empty()).then_some(v)
    }

    fn number(&self, abs: &str) -> Option<u64> {
        self.attr(abs)?.parse().ok()
    }

    fn list(&self, abs: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_by_key(|n| natural(n));
        names
    }

    /// Every `/sys/block` entry, classified.
    pub fn block_devices(&self) -> Vec<BlockDev> {
        self.list("/sys/block")
            .into_iter()
            .map(|name| {
                let size_sectors = self.number(&format!("/sys/block/{name}/size")).unwrap_or(0);
                let (kind, ignored) = self.classify(&name, size_sectors);
                let partitions = self.partitions(&name);
                BlockDev {
                    name,
                    kind,
                    size_sectors,
                    partitions,
                    ignored,
                }
            })
            .collect()
    }

    fn classify(&self, name: &str, size: u64) -> (Kind, Option<&'static str>) {
        let has = |rel: &str| self.path(&format!("/sys/block/{name}/{rel}")).exists();
        if name.starts_with("dm-") {
            return (Kind::Dm, None);
        }
        if name.starts_with("md") {
            return (Kind::Md, None);
        }
        if name.starts_with("loop") {
            let why = if !has("loop/backing_file") {
                Some("a loop device with no backing file")
            } else if size == 0 {
                Some("an empty loop device")
            } else {
                None
            };
            return (Kind::Loop, why);
        }
        let why = if name.starts_with("ram") || name.starts_with("zram") {
            Some("a RAM disk")
        } else if name.starts_with("sr") || name.starts_with("fd") {
            Some("an optical or floppy drive")
        } else if self.attr(&format!("/sys/block/{name}/hidden")).as_deref() == Some("1") {
            Some("a hidden path of a multipath NVMe namespace")
        } else if size == 0 {
            Some("empty (no medium, or an unconnected network block device)")
        } else {
            None
        };
        (Kind::Disk, why)
    }

    /// The partitions of a `/sys/block` entry, by number.
    pub fn partitions(&self, disk: &str) -> Vec<PartNode> {
        let mut parts: Vec<PartNode> = self
            .list(&format!("/sys/block/{disk}"))
            .into_iter()
            .filter_map(|child| {
                let dir = format!("/sys/block/{disk}/{child}");
                let number = self.number(&format!("{dir}/partition"))? as u32;
                Some(PartNode {
                    number,
                    start: self.number(&format!("{dir}/start")).unwrap_or(0),
                    size_sectors: self.number(&format!("{dir}/size")).unwrap_or(0),
                    name: child,
                })
            })
            .collect();
        parts.sort_by_key(|p| p.number);
        parts
    }

    /// The kernel name of block device `major:minor`.
    pub fn name_of_dev(&self, major: u32, minor: u32) -> Option<String> {
        let link =
            std::fs::read_link(self.path(&format!("/sys/dev/block/{major}:{minor}"))).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// The kernel name behind a device path (`/dev/mapper/vg-root` → `dm-0`).
    pub fn name_of_path(&self, dev: &str) -> Option<String> {
        let rel = dev.strip_prefix("/dev/")?;
        if let Ok(p) = std::fs::canonicalize(self.path(dev)) {
            if let Some(n) = p.file_name() {
                let n = n.to_string_lossy().into_owned();
                if self.path(&format!("/sys/class/block/{n}")).exists() {
                    return Some(n);
                }
            }
        }
        // A node not named after the kernel (LVM makes /dev/mapper/VG-LV itself when no udev
        // runs): its device number names it.
        if let Ok(m) = std::fs::metadata(self.path(dev)) {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if m.file_type().is_block_device() {
                let rdev = m.rdev();
                if let Some(n) = self.name_of_dev(rustix::fs::major(rdev), rustix::fs::minor(rdev))
                {
                    return Some(n);
                }
            }
        }
        // No node under /dev (no udev): the kernel name is the path with `/` as `!`.
        let n = rel.replace('/', "!");
        self.path(&format!("/sys/class/block/{n}"))
            .exists()
            .then_some(n)
    }

    /// Devices this one is built on (an LV's PVs, an array's members).
    pub fn slaves(&self, name: &str) -> Vec<String> {
        self.list(&format!("/sys/class/block/{name}/slaves"))
    }

    /// Devices built on this one.
    pub fn holders(&self, name: &str) -> Vec<String> {
        self.list(&format!("/sys/class/block/{name}/holders"))
    }

    /// The disk a partition belongs to, or `None` for a whole device.
    pub fn parent_disk(&self, name: &str) -> Option<String> {
        let node = self.path(&format!("/sys/class/block/{name}"));
        if !node.join("partition").exists() {
            return None;
        }
        // A partition's directory sits inside its disk's.
        let real = std::fs::canonicalize(&node).ok()?;
        Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
    }

    /// The device-mapper name of `dm-N` (`vgkeel-root`).
    pub fn dm_name(&self, name: &str) -> Option<String> {
        self.attr(&format!("/sys/block/{name}/dm/name"))
    }

    /// All devices connected to `seeds` through partition, member and holder links: the storage
    /// stack under (and beside) a set of mounted devices.
    pub fn related(&self, seeds: &[String], devs: &[BlockDev]) -> BTreeSet<String> {
        let by_disk: BTreeMap<&str, &BlockDev> =
            devs.iter().map(|d| (d.name.as_str(), d)).collect();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = seeds.to_vec();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(parent) = self.parent_disk(&name) {
                todo.push(parent);
            }
            if let Some(d) = by_disk.get(name.as_str()) {
                todo.extend(d.partitions.iter().map(|p| p.name.clone()));
            }
            todo.extend(self.slaves(&name));
            todo.extend(self.holders(&name));
        }
        seen
    }

    /// A disk's identity and geometry from sysfs (its partition table is filled by the caller).
    pub fn disk_record(&self, dev: &BlockDev) -> Disk {
        let name = &dev.name;
        let b = format!("/sys/block/{name}");
        let wwn = self
            .attr(&format!("{b}/wwid"))
            .or_else(|| self.attr(&format!("{b}/device/wwid")))
            .and_then(|w| normalize_wwn(&w));
        let serial = self
            .attr(&format!("{b}/device/serial"))
            .or_else(|| self.attr(&format!("{b}/serial")))
            .or_else(|| {
                std::fs::read(self.path(&format!("{b}/device/vpd_pg80")))
                    .ok()
                    .and_then(|v| vpd_serial(&v))
            });
        let model = self.attr(&format!("{b}/device/model"));
        let backing_file = if dev.kind == Kind::Loop {
            self.attr(&format!("{b}/loop/backing_file"))
        } else {
            None
        };
        // NVMe namespaces of one controller share its serial; the namespace tells them apart.
        let nsid = self.attr(&format!("{b}/nsid")).filter(|n| n != "1");
        let id = if let Some(w) = &wwn {
            format!("wwn:{w}")
        } else if let Some(s) = &serial {
            match &nsid {
                Some(ns) => format!("serial:{s}/ns{ns}"),
                None => format!("serial:{s}"),
            }
        } else if let Some(f) = &backing_file {
            format!("loop:{f}")
        } else {
            format!("name:{name}")
        };
        let flag = |rel: &str| self.attr(&format!("{b}/{rel}")).as_deref() == Some("1");
        Disk {
            id,
            name: name.clone(),
            model,
            serial,
            wwn,
            size_bytes: dev.size_sectors * 512,
            rotational: flag("queue/rotational"),
            removable: flag("removable"),
            transport: self.transport(dev),
            logical_sector_size: self
                .number(&format!("{b}/queue/logical_block_size"))
                .unwrap_or(512),
            physical_sector_size: self
                .number(&format!("{b}/queue/physical_block_size"))
                .unwrap_or(512),
            pttype: None,
            ptuuid: None,
            backing_file,
        }
    }

    /// The bus a disk hangs off, from the driver model path sysfs links it to.
    fn transport(&self, dev: &BlockDev) -> Option<String> {
        let name = dev.name.as_str();
        let by_name = [
            ("nvme", "nvme"),
            ("mmcblk", "mmc"),
            ("vd", "virtio"),
            ("xvd", "xen"),
        ];
        if dev.kind == Kind::Loop {
            return Some("loop".into());
        }
        if let Some((_, t)) = by_name.iter().find(|(p, _)| name.starts_with(p)) {
            return Some((*t).into());
        }
        let path = std::fs::canonicalize(self.path(&format!("/sys/block/{name}")))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let by_path = [
            ("/usb", "usb"),
            ("/ata", "sata"),
            ("/end_device-", "sas"),
            ("/rport-", "fc"),
            ("/session", "iscsi"),
        ];
        if let Some((_, t)) = by_path.iter().find(|(p, _)| path.contains(p)) {
            return Some((*t).into());
        }
        name.starts_with("sd").then(|| "scsi".into())
    }
}

/// The device path of a kernel name (`cciss!c0d0` → `/dev/cciss/c0d0`).
pub(crate) fn dev_path(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// A world-wide name from a sysfs `wwid`: NAA names as `0x…` (what udev's `wwn-` links use),
/// EUI-64 as `eui.…`. `t10.` and `nvme.` ids are made up from vendor, model and serial, so they
/// are no better than the serial and are not WWNs.
pub(crate) fn normalize_wwn(wwid: &str) -> Option<String> {
    let w = wwid.trim().to_ascii_lowercase();
    if let Some(naa) = w.strip_prefix("naa.") {
        Some(format!("0x{naa}"))
    } else if w.starts_with("eui.") || (w.starts_with("0x") && w.len() > 2) {
        Some(w)
    } else {
        None
    }
}

/// The serial number in a SCSI VPD page 0x80 (unit serial number): a 4-byte header whose last
/// two bytes are the length, then ASCII.
pub(crate) fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let raw = page.get(4..4 + len).unwrap_or(&page[4..]);
    let s = String::from_utf8_lossy(raw)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Sort key that orders `loop10` after `loop9`.
fn natural(s: &str) -> (String, u64, String) {
    let head = s.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &s[head.len()..];
    (head.to_string(), digits.parse().unwrap_or(0), s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake sysfs: `vda` (virtio, serial, one partition), `sda` (SATA, WWN, VPD serial),
    /// `loop3` backing an image with a partition, an idle `loop4`, `zram0`, `sr0`, `dm-0` on
    /// `vda1`.
    fn fake() -> (tempfile::TempDir, Sys) {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let w = |rel: &str, content: &[u8]| {
            let p = base.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        };
        let link = |rel: &str, target: &str| {
            let p = base.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        };
        let pci = "sys/devices/pci0000:00";
        // vda: virtio disk with a serial and partition vda1, which dm-0 is built on.
        let vda = format!("{pci}/0000:00:02.0/virtio1/block/vda");
        w(&format!("{vda}/size"), b"2097152\n");
        w(&format!("{vda}/serial"), b"disk-1234");
        w(&format!("{vda}/removable"), b"0\n");
        w(&format!("{vda}/queue/rotational"), b"0\n");
        w(&format!("{vda}/queue/logical_block_size"), b"512\n");
        w(&format!("{vda}/queue/physical_block_size"), b"4096\n");
        w(&format!("{vda}/vda1/partition"), b"1\n");
        w(&format!("{vda}/vda1/start"), b"2048\n");
        w(&format!("{vda}/vda1/size"), b"2093056\n");
        fs::create_dir_all(base.join(format!("{vda}/vda1/holders"))).unwrap();
        link(
            &format!("{vda}/vda1/holders/dm-0"),
            "../../../../../../../virtual/block/dm-0",
        );
        link("sys/block/vda", &format!("../../{vda}"));
        link("sys/class/block/vda", &format!("../../../{vda}"));
        link("sys/class/block/vda1", &format!("../../../{vda}/vda1"));
        link("sys/dev/block/254:0", &format!("../../../{vda}"));
        link("sys/dev/block/254:1", &format!("../../../{vda}/vda1"));
        // sda: SATA disk with a WWN, a model and a VPD serial.
        let sda = format!("{pci}/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda");
        w(&format!("{sda}/size"), b"1953525168\n");
        w(&format!("{sda}/queue/rotational"), b"1\n");
        w(&format!("{sda}/device/wwid"), b"naa.5000C500A1B2C3D4\n");
        w(&format!("{sda}/device/model"), b"ST1000DM010-2EP1\n");
        w(
            &format!("{sda}/device/vpd_pg80"),
            b"\0\x80\0\x0c    Z9A1B2C3",
        );
        link("sys/block/sda", &format!("../../{sda}"));
        // loop3 backs an image and has a partition; loop4 is idle.
        let virt = "sys/devices/virtual/block";
        w(&format!("{virt}/loop3/size"), b"131072\n");
        w(
            &format!("{virt}/loop3/loop/backing_file"),
            b"/var/tmp/disk.img\n",
        );
        w(&format!("{virt}/loop3/loop3p1/partition"), b"1\n");
        w(&format!("{virt}/loop3/loop3p1/start"), b"2048\n");
        w(&format!("{virt}/loop3/loop3p1/size"), b"129024\n");
        link("sys/block/loop3", "../devices/virtual/block/loop3");
        link("sys/class/block/loop3", "../../devices/virtual/block/loop3");
        link(
            "sys/class/block/loop3p1",
            "../../devices/virtual/block/loop3/loop3p1",
        );
        link(
            "sys/dev/block/259:0",
            "../../devices/virtual/block/loop3/loop3p1",
        );
        w(&format!("{virt}/loop4/size"), b"0\n");
        link("sys/block/loop4", "../devices/virtual/block/loop4");
        w(&format!("{virt}/zram0/size"), b"8388608\n");
        link("sys/block/zram0", "../devices/virtual/block/zram0");
        w(&format!("{virt}/sr0/size"), b"2097151\n");
        link("sys/block/sr0", "../devices/virtual/block/sr0");
        // dm-0 on vda1.
        w(&format!("{virt}/dm-0/size"), b"2093056\n");
        w(&format!("{virt}/dm-0/dm/name"), b"vgkeel-root\n");
        link(
            &format!("{virt}/dm-0/slaves/vda1"),
            &format!("../../../../../../{vda}/vda1"),
        );
        link("sys/block/dm-0", "../devices/virtual/block/dm-0");
        link("sys/class/block/dm-0", "../../devices/virtual/block/dm-0");
        link("sys/dev/block/253:0", "../../devices/virtual/block/dm-0");
        fs::create_dir_all(base.join("dev/mapper")).unwrap();
        fs::write(base.join("dev/dm-0"), b"").unwrap();
        link("dev/mapper/vgkeel-root", "../dm-0");
        let sys = Sys::at(base);
        (t, sys)
    }

    #[test]
    fn classifies_block_devices() {
        let (_t, sys) = fake();
        let devs = sys.block_devices();
        let names: Vec<(&str, Kind, Option<&str>)> = devs
            .iter()
            .map(|d| (d.name.as_str(), d.kind, d.ignored))
            .collect();
        assert_eq!(
            names,
            [
                ("dm-0", Kind::Dm, None),
                ("loop3", Kind::Loop, None),
                (
                    "loop4",
                    Kind::Loop,
                    Some("a loop device with no backing file")
                ),
                ("sda", Kind::Disk, None),
                ("sr0", Kind::Disk, Some("an optical or floppy drive")),
                ("vda", Kind::Disk, None),
                ("zram0", Kind::Disk, Some("a RAM disk")),
            ]
        );
        let loop3 = devs.iter().find(|d| d.name == "loop3").unwrap();
        assert_eq!(
            loop3.partitions,
            [PartNode {
                name: "loop3p1".into(),
                number: 1,
                start: 2048,
                size_sectors: 129_024
            }]
        );
    }

    #[test]
    fn disk_identity() {
        let (_t, sys) = fake();
        let devs = sys.block_devices();
        let disk = |n: &str| sys.disk_record(devs.iter().find(|d| d.name == n).unwrap());
        let sda = disk("sda");
        assert_eq!(sda.id, "wwn:0x5000c500a1b2c3d4");
        assert_eq!(sda.wwn.as_deref(), Some("0x5000c500a1b2c3d4"));
        assert_eq!(sda.serial.as_deref(), Some("Z9A1B2C3"));
        assert_eq!(sda.model.as_deref(), Some("ST1000DM010-2EP1"));
        assert_eq!(sda.transport.as_deref(), Some("sata"));
        assert!(sda.rotational);
        assert_eq!(sda.size_bytes, 1_953_525_168 * 512);
        let vda = disk("vda");
        assert_eq!(vda.id, "serial:disk-1234");
        assert_eq!(vda.transport.as_deref(), Some("virtio"));
        assert_eq!(
            (vda.logical_sector_size, vda.physical_sector_size),
            (512, 4096)
        );
        assert!(!vda.rotational && !vda.removable);
        let loop3 = disk("loop3");
        assert_eq!(loop3.id, "loop:/var/tmp/disk.img");
        assert_eq!(loop3.backing_file.as_deref(), Some("/var/tmp/disk.img"));
        assert_eq!(loop3.transport.as_deref(), Some("loop"));
        assert_eq!(loop3.size_bytes, 64 * 1024 * 1024);
        let zram = disk("zram0");
        assert_eq!(zram.id, "name:zram0");
    }

    #[test]
    fn stacking() {
        let (_t, sys) = fake();
        assert_eq!(sys.parent_disk("loop3p1").as_deref(), Some("loop3"));
        assert_eq!(sys.parent_disk("vda1").as_deref(), Some("vda"));
        assert_eq!(sys.parent_disk("vda"), None);
        assert_eq!(sys.name_of_dev(259, 0).as_deref(), Some("loop3p1"));
        assert_eq!(sys.name_of_dev(253, 0).as_deref(), Some("dm-0"));
        assert_eq!(sys.name_of_dev(8, 99), None);
        assert_eq!(
            sys.name_of_path("/dev/mapper/vgkeel-root").as_deref(),
            Some("dm-0")
        );
        assert_eq!(sys.slaves("dm-0"), ["vda1"]);
        assert_eq!(sys.holders("vda1"), ["dm-0"]);
        assert_eq!(sys.dm_name("dm-0").as_deref(), Some("vgkeel-root"));
        let devs = sys.block_devices();
        // A mounted LV pulls in its PV's partition and disk; the image is not involved.
        let r: Vec<String> = sys.related(&["dm-0".into()], &devs).into_iter().collect();
        assert_eq!(r, ["dm-0", "vda", "vda1"]);
        // A mounted image partition pulls in its loop disk and nothing of the host.
        let r: Vec<String> = sys
            .related(&["loop3p1".into()], &devs)
            .into_iter()
            .collect();
        assert_eq!(r, ["loop3", "loop3p1"]);
    }

    #[test]
    fn wwn_forms() {
        assert_eq!(
            normalize_wwn("naa.600508B1001C4D2E").as_deref(),
            Some("0x600508b1001c4d2e")
        );
        assert_eq!(
            normalize_wwn("eui.0025388b91b31a8f").as_deref(),
            Some("eui.0025388b91b31a8f")
        );
        assert_eq!(
            normalize_wwn("0x5000c500a1b2c3d4").as_deref(),
            Some("0x5000c500a1b2c3d4")
        );
        assert_eq!(
            normalize_wwn("t10.ATA     Samsung SSD 860   S3Z9NB0K"),
            None
        );
        assert_eq!(normalize_wwn("nvme.1b36-3132-51454d55-00000001"), None);
    }

    #[test]
    fn vpd_page() {
        assert_eq!(
            vpd_serial(b"\0\x80\0\x08ABCD1234").as_deref(),
            Some("ABCD1234")
        );
        assert_eq!(vpd_serial(b"\0\x83\0\x08ABCD1234"), None, "wrong page");
        assert_eq!(vpd_serial(b"\0\x80\0\x04    "), None);
    }

    #[test]
    fn device_paths() {
        assert_eq!(dev_path("cciss!c0d0"), "/dev/cciss/c0d0");
        assert_eq!(dev_path("sda1"), "/dev/sda1");
    }
}
