//! The machine the plan runs on: what its target disks are, and whether touching them is safe.
//!
//! Everything is read through a root directory holding `/sys`, `/proc` and `/dev`, so tests lay
//! out a fake tree and the real thing reads `/`. Image files are read through the same root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::error::{InventoryError, Refusal, RefusalReason, SafetyError};
use crate::target::{DiskKind, TargetDisk};

/// The machine the recovery runs on, seen through a root directory.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The running system.
    pub fn system() -> Self {
        Host {
            root: PathBuf::from("/"),
        }
    }

    /// A tree laid out under `root` (`root/sys`, `root/proc`, `root/dev`): for tests, or a
    /// rescue system that mounts them elsewhere.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    /// The host path of an absolute path.
    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// An attribute's value, trimmed; `None` when missing, unreadable or empty.
    fn attr(&self, abs: &str) -> Option<String> {
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
        names.sort();
        names
    }

    // ------------------------------------------------------------------ inventory

    /// Reads every target; the same disk given twice (by two names) is an error.
    pub fn inventory<S: AsRef<str>>(&self, given: &[S]) -> Result<Vec<TargetDisk>, InventoryError> {
        let mut out: Vec<TargetDisk> = Vec::new();
        for g in given {
            let t = self.target(g.as_ref())?;
            let same = out.iter().find(|o| {
                o.path == t.path
                    || (o.name.is_some() && o.name == t.name)
                    || (t.kind == DiskKind::Image && o.kind == DiskKind::Image && {
                        let a = std::fs::canonicalize(self.path(&o.path)).ok();
                        a.is_some() && a == std::fs::canonicalize(self.path(&t.path)).ok()
                    })
            });
            if let Some(o) = same {
                return Err(InventoryError::Duplicate {
                    first: o.path.clone(),
                    second: t.path.clone(),
                });
            }
            out.push(t);
        }
        Ok(out)
    }

    /// Reads one target: a whole block device (`/dev/sdb`, `/dev/disk/by-id/…`) from sysfs, or
    /// an image file from its size.
    pub fn target(&self, given: &str) -> Result<TargetDisk, InventoryError> {
        let abs = absolute(given);
        if let Some(name) = self.kernel_name(&abs) {
            return self.block_target(&abs, &name);
        }
        let host_path = self.path(&abs);
        match std::fs::metadata(&host_path) {
            Ok(m) if m.is_file() => {
                if m.len() == 0 {
                    return Err(InventoryError::NotADisk {
                        path: abs,
                        why: "the image file is empty\nhint: give it a size first, e.g. \
                              `truncate -s 20G FILE`"
                            .into(),
                    });
                }
                Ok(TargetDisk::image(abs, m.len()))
            }
            Ok(m) if m.is_dir() => Err(InventoryError::NotADisk {
                path: abs,
                why: "it is a directory".into(),
            }),
            Ok(_) => Err(InventoryError::NotADisk {
                path: abs,
                why: "it is neither a block device the kernel lists in /sys/class/block nor a \
                      regular file"
                    .into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(InventoryError::NotFound { path: abs })
            }
            Err(e) => Err(InventoryError::Io {
                path: host_path,
                source: e,
            }),
        }
    }

    /// The kernel name of a device path, when it names a block device.
    fn kernel_name(&self, abs: &str) -> Option<String> {
        let dev_dir = self.path("/dev");
        if let Ok(real) = std::fs::canonicalize(self.path(abs)) {
            let real_dev = std::fs::canonicalize(&dev_dir).unwrap_or(dev_dir.clone());
            let rel = real.strip_prefix(&real_dev).ok()?;
            let name = rel.to_string_lossy().replace('/', "!");
            return self.path(&block(&name)).exists().then_some(name);
        }
        // No node under /dev (a tree without udev): the kernel name is the path's rest.
        let rel = abs.strip_prefix("/dev/")?;
        let name = rel.replace('/', "!");
        self.path(&block(&name)).exists().then_some(name)
    }

    fn block_target(&self, path: &str, name: &str) -> Result<TargetDisk, InventoryError> {
        let b = block(name);
        let refuse = |why: String| InventoryError::NotADisk {
            path: path.to_string(),
            why,
        };
        if self.path(&format!("{b}/partition")).exists() {
            let parent = self.parent_disk(name).unwrap_or_else(|| "?".into());
            return Err(refuse(format!(
                "it is a partition of /dev/{parent}\nhint: give the whole disk, /dev/{parent}"
            )));
        }
        if name.starts_with("dm-") {
            return Err(refuse(
                "it is a device-mapper device (an LVM volume or a LUKS mapping)\nhint: give the \
                 disks under it"
                    .into(),
            ));
        }
        if self.path(&format!("{b}/md")).exists() {
            return Err(refuse(
                "it is a RAID array\nhint: give its member disks; the plan creates arrays".into(),
            ));
        }
        if ["ram", "zram", "sr", "fd"].iter().any(|p| {
            name.starts_with(p) && name[p.len()..].starts_with(|c: char| c.is_ascii_digit())
        }) {
            return Err(refuse(
                "it is a RAM disk or an optical or floppy drive".into(),
            ));
        }
        let loop_dev = name.starts_with("loop");
        let backing_file = loop_dev
            .then(|| self.attr(&format!("{b}/loop/backing_file")))
            .flatten();
        if loop_dev && backing_file.is_none() {
            return Err(refuse(
                "it is a loop device with no image attached\nhint: give the image file itself"
                    .into(),
            ));
        }
        let size = self.number(&format!("{b}/size")).unwrap_or(0) * 512;
        if size == 0 {
            return Err(refuse("it has no medium (its size is 0)".into()));
        }
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
        let flag = |rel: &str| self.attr(&format!("{b}/{rel}")).as_deref() == Some("1");
        Ok(TargetDisk {
            path: path.to_string(),
            name: Some(name.to_string()),
            size_bytes: size,
            logical_sector_size: self
                .number(&format!("{b}/queue/logical_block_size"))
                .unwrap_or(512),
            model: self.attr(&format!("{b}/device/model")),
            serial,
            wwn,
            kind: self.kind(name),
            rotational: flag("queue/rotational"),
            removable: flag("removable"),
            backing_file,
        })
    }

    /// How a disk is attached: from its name, else from the driver-model path sysfs links it
    /// to (the same rules the storage collector follows, so kinds compare).
    fn kind(&self, name: &str) -> DiskKind {
        let by_name = [
            ("nvme", DiskKind::Nvme),
            ("mmcblk", DiskKind::Mmc),
            ("vd", DiskKind::Virtio),
            ("xvd", DiskKind::Xen),
            ("loop", DiskKind::Loop),
        ];
        if let Some((_, k)) = by_name.iter().find(|(p, _)| name.starts_with(p)) {
            return *k;
        }
        let path = std::fs::canonicalize(self.path(&block(name)))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let by_path = [
            ("/usb", DiskKind::Usb),
            ("/ata", DiskKind::Sata),
            ("/end_device-", DiskKind::Sas),
            ("/rport-", DiskKind::FibreChannel),
            ("/session", DiskKind::Iscsi),
        ];
        if let Some((_, k)) = by_path.iter().find(|(p, _)| path.contains(p)) {
            return *k;
        }
        if name.starts_with("sd") {
            DiskKind::Scsi
        } else {
            DiskKind::Unknown
        }
    }

    // ------------------------------------------------------------------ stacking

    /// The disk a partition belongs to, or `None` for a whole device.
    fn parent_disk(&self, name: &str) -> Option<String> {
        let node = self.path(&block(name));
        if !node.join("partition").exists() {
            return None;
        }
        let real = std::fs::canonicalize(&node).ok()?;
        Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
    }

    /// The partitions of a disk, by kernel name.
    fn partitions(&self, disk: &str) -> Vec<String> {
        self.list(&block(disk))
            .into_iter()
            .filter(|c| {
                self.path(&format!("{}/{c}/partition", block(disk)))
                    .exists()
            })
            .collect()
    }

    /// The whole disks a device is built on: a partition's disk, an array's or a mapping's
    /// member disks, recursively.
    fn disks_under(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(p) = self.parent_disk(&n) {
                todo.push(p);
                continue;
            }
            let slaves = self.list(&format!("{}/slaves", block(&n)));
            if slaves.is_empty() {
                out.insert(n);
            } else {
                todo.extend(slaves);
            }
        }
        out
    }

    /// The kernel name of block device `major:minor`.
    fn name_of_dev(&self, major: u32, minor: u32) -> Option<String> {
        let link =
            std::fs::read_link(self.path(&format!("/sys/dev/block/{major}:{minor}"))).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// What a device is called for people: `/dev/mapper/NAME` for device-mapper devices.
    fn display(&self, name: &str) -> String {
        if name.starts_with("dm-") {
            if let Some(m) = self.attr(&format!("{}/dm/name", block(name))) {
                return format!("/dev/mapper/{m}");
            }
        }
        format!("/dev/{}", name.replace('!', "/"))
    }

    // ------------------------------------------------------------------ safety

    /// Refuses targets that are in use: mounted, holding the running system's root, active
    /// swap, or a member of an active RAID array or device-mapper device (LVM, LUKS). For an
    /// image file the same applies to any loop device it is attached to.
    pub fn check_safe(&self, targets: &[TargetDisk]) -> Result<(), SafetyError> {
        // Each target's kernel names: its own, or the loop devices its image is attached to.
        let loops = self.loop_backings();
        let names: Vec<(usize, String)> = targets
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                let mut n: Vec<(usize, String)> = t.name.iter().map(|n| (i, n.clone())).collect();
                if t.kind == DiskKind::Image {
                    let real = std::fs::canonicalize(self.path(&t.path))
                        .ok()
                        .and_then(|p| self.unroot(&p));
                    for (lo, file) in &loops {
                        if real.as_deref() == Some(file.as_str()) || *file == t.path {
                            n.push((i, lo.clone()));
                        }
                    }
                }
                n
            })
            .collect();
        let mut found: Vec<Refusal> = Vec::new();
        let mut refuse = |i: usize, reason: RefusalReason| {
            let r = Refusal {
                disk: targets[i].path.clone(),
                reason,
            };
            if !found.contains(&r) {
                found.push(r);
            }
        };
        let on = |disks: &BTreeSet<String>| -> Vec<usize> {
            names
                .iter()
                .filter(|(_, n)| disks.contains(n))
                .map(|(i, _)| *i)
                .collect()
        };

        let info = self.path("/proc/self/mountinfo");
        let text = std::fs::read_to_string(&info).map_err(|e| SafetyError::Unreadable {
            path: info.clone(),
            source: e,
        })?;
        for m in parse_mountinfo(&text) {
            let dev = if m.major == 0 {
                // btrfs and others report an anonymous device number: the source names it.
                self.kernel_name(&m.source)
            } else {
                self.name_of_dev(m.major, m.minor)
            };
            let Some(dev) = dev else { continue };
            for i in on(&self.disks_under(&dev)) {
                let reason = if m.mountpoint == "/" {
                    RefusalReason::RunningSystem {
                        device: self.display(&dev),
                    }
                } else {
                    RefusalReason::Mounted {
                        device: self.display(&dev),
                        mountpoint: m.mountpoint.clone(),
                    }
                };
                refuse(i, reason);
            }
        }

        let swaps = std::fs::read_to_string(self.path("/proc/swaps")).unwrap_or_default();
        for line in swaps.lines().skip(1) {
            let Some(dev) = line.split_whitespace().next().map(unescape_octal) else {
                continue;
            };
            let Some(name) = self.kernel_name(&dev) else {
                continue;
            };
            for i in on(&self.disks_under(&name)) {
                refuse(
                    i,
                    RefusalReason::Swap {
                        device: self.display(&name),
                    },
                );
            }
        }

        for (i, name) in &names {
            let mut devices = vec![name.clone()];
            devices.extend(self.partitions(name));
            for d in devices {
                for h in self.list(&format!("{}/holders", block(&d))) {
                    let reason = if h.starts_with("md") {
                        RefusalReason::RaidMember {
                            device: self.display(&d),
                            array: format!("/dev/{h}"),
                        }
                    } else {
                        RefusalReason::Held {
                            device: self.display(&d),
                            holder: self.display(&h),
                        }
                    };
                    refuse(*i, reason);
                }
            }
        }

        let mdstat = std::fs::read_to_string(self.path("/proc/mdstat")).unwrap_or_default();
        for (array, members) in parse_mdstat(&mdstat) {
            for m in members {
                for i in on(&self.disks_under(&m)) {
                    refuse(
                        i,
                        RefusalReason::RaidMember {
                            device: self.display(&m),
                            array: format!("/dev/{array}"),
                        },
                    );
                }
            }
        }

        if found.is_empty() {
            Ok(())
        } else {
            Err(SafetyError::Refused(found))
        }
    }

    /// Loop devices and the image files behind them.
    fn loop_backings(&self) -> BTreeMap<String, String> {
        self.list("/sys/class/block")
            .into_iter()
            .filter(|n| n.starts_with("loop"))
            .filter_map(|n| {
                let f = self.attr(&format!("{}/loop/backing_file", block(&n)))?;
                Some((n, f))
            })
            .collect()
    }

    /// A host path as an absolute path inside the root.
    fn unroot(&self, p: &Path) -> Option<String> {
        let root = std::fs::canonicalize(&self.root).unwrap_or(self.root.clone());
        let rel = p.strip_prefix(&root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()))
    }
}

/// The sysfs directory of a block device.
fn block(name: &str) -> String {
    format!("/sys/class/block/{name}")
}

/// An absolute, lexically normalised path (relative ones are taken from the working directory).
fn absolute(given: &str) -> String {
    let p = std::path::absolute(given).unwrap_or_else(|_| PathBuf::from(given));
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.to_string_lossy().into_owned()
}

/// A world-wide name from a sysfs `wwid`, as the storage collector normalises it: NAA names
/// as `0x…`, EUI-64 as `eui.…`; vendor-made `t10.` and `nvme.` ids are not WWNs.
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

/// The serial number in a SCSI VPD page 0x80.
fn vpd_serial(page: &[u8]) -> Option<String> {
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

/// One mount, as far as safety needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountLine {
    pub major: u32,
    pub minor: u32,
    pub mountpoint: String,
    pub source: String,
}

/// The mounts in mountinfo text (proc(5)); malformed lines are skipped, since a line this
/// reader cannot parse cannot name a target either.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
            let (major, minor) = f.get(2)?.split_once(':')?;
            Some(MountLine {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mountpoint: unescape_octal(f.get(4)?),
                source: unescape_octal(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// Arrays in `/proc/mdstat` with their member devices' kernel names.
fn parse_mdstat(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" : ")?;
            let name = name.trim();
            if !name.starts_with("md") {
                return None;
            }
            let members = rest
                .split_whitespace()
                .filter_map(|w| Some(w.split_once('[')?.0.to_string()))
                .collect();
            Some((name.to_string(), members))
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'\\' && at + 4 <= bytes.len() {
            let digits = &bytes[at + 1..at + 4];
            if digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let value = digits
                    .iter()
                    .fold(0u16, |acc, c| acc * 8 + u16::from(c - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    at += 4;
                    continue;
                }
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// A fake machine: `vda` (virtio, holds `/`), `nvme0n1` (serial, WWN) with partition 1
    /// mounted at `/mnt/old`, blank `nvme1n1`, `sdb` (SATA) whose partition is in active `md0`,
    /// blank `sdc` whose partition holds `dm-0`, `loop0` backing `/images/a.img` and used as
    /// swap, and an image file `/images/b.img`.
    pub(crate) fn fake() -> (tempfile::TempDir, Host) {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        let w = |rel: &str, content: &str| {
            let p = base.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        };
        let link = |rel: &str, target: &str| {
            let p = base.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        };
        let dir = |rel: &str| fs::create_dir_all(base.join(rel)).unwrap();
        let pci = "sys/devices/pci0000:00";
        let disk = |path: &str, name: &str, sectors: &str, devno: &str| {
            w(&format!("{path}/size"), sectors);
            w(&format!("{path}/queue/logical_block_size"), "512\n");
            dir(&format!("{path}/holders"));
            dir(&format!("{path}/slaves"));
            let up = "../".repeat(3);
            link(&format!("sys/class/block/{name}"), &format!("{up}{path}"));
            link(&format!("sys/block/{name}"), &format!("../../{path}"));
            link(&format!("sys/dev/block/{devno}"), &format!("{up}{path}"));
            w(&format!("dev/{name}"), "");
        };
        let part = |disk_path: &str, name: &str, n: u32, devno: &str| {
            let p = format!("{disk_path}/{name}");
            w(&format!("{p}/partition"), &format!("{n}\n"));
            w(&format!("{p}/size"), "2048\n");
            dir(&format!("{p}/holders"));
            let up = "../".repeat(3);
            link(&format!("sys/class/block/{name}"), &format!("{up}{p}"));
            link(&format!("sys/dev/block/{devno}"), &format!("{up}{p}"));
            w(&format!("dev/{name}"), "");
        };
        let vda = format!("{pci}/0000:00:02.0/virtio1/block/vda");
        disk(&vda, "vda", "41943040\n", "254:0");
        w(&format!("{vda}/serial"), "root-disk");
        let nvme0 = format!("{pci}/0000:00:04.0/nvme/nvme0/nvme0n1");
        disk(&nvme0, "nvme0n1", "83886080\n", "259:0");
        w(&format!("{nvme0}/wwid"), "eui.0025388b91b31a8f\n");
        w(&format!("{nvme0}/device/serial"), "S4EWNX0N123456\n");
        w(
            &format!("{nvme0}/device/model"),
            "Samsung SSD 970 EVO Plus 1TB\n",
        );
        part(&nvme0, "nvme0n1p1", 1, "259:1");
        let nvme1 = format!("{pci}/0000:00:05.0/nvme/nvme1/nvme1n1");
        disk(&nvme1, "nvme1n1", "83886080\n", "259:2");
        w(&format!("{nvme1}/device/serial"), "S4EWNX0N654321\n");
        let sdb = format!("{pci}/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdb");
        disk(&sdb, "sdb", "41943040\n", "8:16");
        w(&format!("{sdb}/device/wwid"), "naa.5000C500A1B2C3D4\n");
        w(&format!("{sdb}/queue/rotational"), "1\n");
        part(&sdb, "sdb1", 1, "8:17");
        let sdc = format!("{pci}/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdc");
        disk(&sdc, "sdc", "41943040\n", "8:32");
        part(&sdc, "sdc1", 1, "8:33");
        let virt = "sys/devices/virtual/block";
        disk(&format!("{virt}/md0"), "md0", "2048\n", "9:0");
        dir(&format!("{virt}/md0/md"));
        link(
            &format!("{sdb}/sdb1/holders/md0"),
            "../../../../../../../../../../virtual/block/md0",
        );
        link(
            &format!("{virt}/md0/slaves/sdb1"),
            &format!("../../../../../../{sdb}/sdb1"),
        );
        disk(&format!("{virt}/dm-0"), "dm-0", "2048\n", "253:0");
        w(&format!("{virt}/dm-0/dm/name"), "vgold-data\n");
        link(
            &format!("{sdc}/sdc1/holders/dm-0"),
            "../../../../../../../../../../virtual/block/dm-0",
        );
        link(
            &format!("{virt}/dm-0/slaves/sdc1"),
            &format!("../../../../../../{sdc}/sdc1"),
        );
        disk(&format!("{virt}/loop0"), "loop0", "131072\n", "7:0");
        w(
            &format!("{virt}/loop0/loop/backing_file"),
            "/images/a.img\n",
        );
        disk(&format!("{virt}/loop1"), "loop1", "0\n", "7:1");
        w("images/a.img", "");
        fs::File::create(base.join("images/b.img"))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        w(
            "proc/self/mountinfo",
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             42 27 259:1 / /mnt/old\\040disk rw,relatime - ext4 /dev/nvme0n1p1 rw\n",
        );
        w(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/loop0                              partition\t65532\t\t0\t\t-2\n",
        );
        w(
            "proc/mdstat",
            "Personalities : [raid1]\n\
             md0 : active raid1 sdb1[0]\n      1024 blocks super 1.2 [2/1] [U_]\n\n\
             unused devices: <none>\n",
        );
        (t, Host::at(base))
    }

    #[test]
    fn reads_block_devices() {
        let (_t, host) = fake();
        let n = host.target("/dev/nvme0n1").unwrap();
        assert_eq!(n.name.as_deref(), Some("nvme0n1"));
        assert_eq!(n.size_bytes, 40 << 30);
        assert_eq!(n.kind, DiskKind::Nvme);
        assert_eq!(n.wwn.as_deref(), Some("eui.0025388b91b31a8f"));
        assert_eq!(n.serial.as_deref(), Some("S4EWNX0N123456"));
        assert_eq!(n.model.as_deref(), Some("Samsung SSD 970 EVO Plus 1TB"));
        assert_eq!(n.logical_sector_size, 512);
        let s = host.target("/dev/sdb").unwrap();
        assert_eq!(s.kind, DiskKind::Sata);
        assert_eq!(s.wwn.as_deref(), Some("0x5000c500a1b2c3d4"));
        assert!(s.rotational);
        let v = host.target("/dev/vda").unwrap();
        assert_eq!(v.kind, DiskKind::Virtio);
        assert_eq!(v.serial.as_deref(), Some("root-disk"));
        let l = host.target("/dev/loop0").unwrap();
        assert_eq!(l.kind, DiskKind::Loop);
        assert_eq!(l.backing_file.as_deref(), Some("/images/a.img"));
    }

    #[test]
    fn reads_image_files() {
        let (_t, host) = fake();
        let i = host.target("/images/b.img").unwrap();
        assert_eq!(i.kind, DiskKind::Image);
        assert_eq!(i.size_bytes, 64 << 20);
        assert_eq!(i.name, None);
        let e = host.target("/images/a.img").unwrap_err().to_string();
        assert!(e.contains("the image file is empty"), "{e}");
        let e = host.target("/images/none.img").unwrap_err().to_string();
        assert!(
            e.starts_with("/images/none.img: no such disk or image file"),
            "{e}"
        );
        let e = host.target("/images").unwrap_err().to_string();
        assert!(e.contains("it is a directory"), "{e}");
    }

    #[test]
    fn refuses_what_is_not_a_whole_disk() {
        let (_t, host) = fake();
        let e = host.target("/dev/sdb1").unwrap_err().to_string();
        assert!(e.contains("it is a partition of /dev/sdb"), "{e}");
        assert!(e.contains("hint: give the whole disk, /dev/sdb"), "{e}");
        let e = host.target("/dev/dm-0").unwrap_err().to_string();
        assert!(e.contains("device-mapper"), "{e}");
        let e = host.target("/dev/md0").unwrap_err().to_string();
        assert!(e.contains("RAID array"), "{e}");
        let e = host.target("/dev/loop1").unwrap_err().to_string();
        assert!(e.contains("no image attached"), "{e}");
    }

    #[test]
    fn the_same_disk_twice_is_an_error() {
        let (t, host) = fake();
        fs::create_dir_all(t.path().join("dev/disk/by-id")).unwrap();
        std::os::unix::fs::symlink("../../nvme1n1", t.path().join("dev/disk/by-id/nvme-x"))
            .unwrap();
        let one = host.target("/dev/disk/by-id/nvme-x").unwrap();
        assert_eq!(one.name.as_deref(), Some("nvme1n1"));
        assert_eq!(one.path, "/dev/disk/by-id/nvme-x");
        let e = host
            .inventory(&["/dev/nvme1n1", "/dev/disk/by-id/nvme-x"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/nvme1n1 and /dev/disk/by-id/nvme-x are the same disk\nhint: give each target once"
        );
    }

    #[test]
    fn safety() {
        let (_t, host) = fake();
        let inv = host
            .inventory(&[
                "/dev/vda",
                "/dev/nvme0n1",
                "/dev/nvme1n1",
                "/dev/sdb",
                "/dev/sdc",
                "/images/b.img",
                "/dev/loop0",
            ])
            .unwrap();
        let SafetyError::Refused(found) = host.check_safe(&inv).unwrap_err() else {
            panic!("expected refusals");
        };
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "/dev/vda holds the running system: / is mounted from /dev/vda",
                "/dev/nvme0n1 is mounted: /dev/nvme0n1p1 at /mnt/old disk",
                "/dev/loop0 is in use as swap: /dev/loop0",
                "/dev/sdb is a member of an active RAID array: /dev/sdb1 is in /dev/md0",
                "/dev/sdc is in use: /dev/mapper/vgold-data is built on /dev/sdc1",
            ]
        );
        // The blank disk and the unattached image are fine.
        host.check_safe(&inv[2..3]).unwrap();
        host.check_safe(&inv[5..6]).unwrap();
    }

    #[test]
    fn an_image_attached_to_a_busy_loop_device_is_refused() {
        let (t, host) = fake();
        fs::write(t.path().join("images/a.img"), vec![0u8; 4096]).unwrap();
        let inv = host.inventory(&["/images/a.img"]).unwrap();
        let e = host.check_safe(&inv).unwrap_err().to_string();
        assert!(
            e.contains("/images/a.img is in use as swap: /dev/loop0"),
            "{e}"
        );
    }

    #[test]
    fn parsers() {
        let m = parse_mountinfo(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             45 27 0:46 /@home /home rw shared:31 - btrfs /dev/vdb2 rw\n\
             bad line\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!((m[1].major, m[1].source.as_str()), (0, "/dev/vdb2"));
        let md = parse_mdstat(
            "md2 : active raid5 sdc1[0] sdd1[1] sde1[3](S) sdf1[2](F)\n      2095104 blocks\nmd127 : inactive sdg[0](S)\n",
        );
        assert_eq!(
            md,
            [
                (
                    "md2".into(),
                    vec!["sdc1".into(), "sdd1".into(), "sde1".into(), "sdf1".into()]
                ),
                ("md127".into(), vec!["sdg".to_string()]),
            ]
        );
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("a\\"), "a\\");
        assert_eq!(absolute("/dev/../dev/sda"), "/dev/sda");
    }

    #[test]
    fn wwn_and_serial_forms() {
        assert_eq!(
            normalize_wwn("naa.600508B1001C4D2E").as_deref(),
            Some("0x600508b1001c4d2e")
        );
        assert_eq!(normalize_wwn("nvme.1b36-3132"), None);
        assert_eq!(
            vpd_serial(b"\0\x80\0\x08ABCD1234").as_deref(),
            Some("ABCD1234")
        );
        assert_eq!(vpd_serial(b"\0\x83\0\x08ABCD1234"), None);
    }
}
