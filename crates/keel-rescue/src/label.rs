//! Filesystem labels read straight from the superblock, so the kit's disk is found without
//! udev or blkid: ext2/3/4, FAT, ISO 9660 and XFS.

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How many bytes of a device [`probe`] needs (ISO 9660's volume descriptor is at 32 KiB).
pub const PROBE_BYTES: usize = 36 * 1024;

/// A filesystem found on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The type to mount it as: `ext4` (for ext2/3/4), `vfat`, `iso9660`, `xfs`.
    pub fstype: String,
    /// Its label (may be empty).
    pub label: String,
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end()
        .to_string()
}

/// The filesystem type and label in the first [`PROBE_BYTES`] of a device, if any.
pub fn probe(data: &[u8]) -> Option<Probe> {
    let found = |fstype: &str, label: String| {
        Some(Probe {
            fstype: fstype.to_string(),
            label,
        })
    };
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56, volume name at +120 (16 bytes).
    if data.len() >= 1024 + 136 && data[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        return found("ext4", text(&data[1024 + 120..1024 + 136]));
    }
    // XFS: "XFSB" at 0, label at 108 (12 bytes).
    if data.len() >= 120 && &data[..4] == b"XFSB" {
        return found("xfs", text(&data[108..120]));
    }
    // ISO 9660: primary volume descriptor at 32 KiB, volume id at +40 (32 bytes).
    if data.len() >= 32768 + 72 && &data[32769..32774] == b"CD001" && data[32768] == 1 {
        return found("iso9660", text(&data[32768 + 40..32768 + 72]));
    }
    // FAT: boot signature 55 AA; FAT32 keeps its label at 71, FAT12/16 at 43.
    if data.len() >= 512 && data[510..512] == [0x55, 0xAA] {
        let (kind, label) = if &data[82..87] == b"FAT32" {
            (true, &data[71..82])
        } else if &data[54..57] == b"FAT" {
            (true, &data[43..54])
        } else {
            (false, &data[..0])
        };
        if kind {
            let label = text(label);
            return found(
                "vfat",
                if label == "NO NAME" {
                    String::new()
                } else {
                    label
                },
            );
        }
    }
    None
}

/// A block device carrying a filesystem with the label looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labelled {
    /// Its device node (`/dev/vdc`, `/dev/sdb1`).
    pub device: String,
    /// What is on it.
    pub probe: Probe,
}

/// Every block device (disks and partitions, from `sys/class/block`, opened under `dev`) whose
/// filesystem label is `label`, compared without regard to ASCII case (FAT labels are often
/// upper-cased). Devices that cannot be read (an empty drive) are skipped. Sorted by name.
pub fn find_labelled(sys: &Path, dev: &Path, label: &str) -> Vec<Labelled> {
    let Ok(entries) = fs::read_dir(sys.join("class/block")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let size: u64 = fs::read_to_string(sys.join("class/block").join(&name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if size == 0 {
            continue;
        }
        let node = dev.join(&name);
        let Ok(file) = fs::File::open(&node) else {
            continue;
        };
        let mut data = Vec::with_capacity(PROBE_BYTES);
        if file
            .take(PROBE_BYTES as u64)
            .read_to_end(&mut data)
            .is_err()
        {
            continue;
        }
        if let Some(p) = probe(&data) {
            if p.label.eq_ignore_ascii_case(label) {
                out.push(Labelled {
                    device: node.to_string_lossy().into_owned(),
                    probe: p,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
    }

    fn head(path: &Path) -> Vec<u8> {
        let mut data = Vec::new();
        fs::File::open(path)
            .unwrap()
            .take(PROBE_BYTES as u64)
            .read_to_end(&mut data)
            .unwrap();
        data
    }

    #[allow(clippy::print_stderr, reason = "a skipped check must say so")]
    /// Makes a filesystem image with a real mkfs (no root needed), or says why not.
    fn image(dir: &Path, mkfs: &str, args: &[&str], mib: u64) -> Option<Vec<u8>> {
        if !have(mkfs) {
            eprintln!("skipped: {mkfs} is not installed");
            return None;
        }
        let img = dir.join(format!("{mkfs}.img"));
        fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        let ok = Command::new(mkfs)
            .args(args)
            .arg(&img)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        Some(head(&img))
    }

    #[test]
    fn real_superblocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        if let Some(d) = image(p, "mkfs.ext4", &["-q", "-F", "-L", "KEELKIT"], 8) {
            assert_eq!(
                probe(&d),
                Some(Probe {
                    fstype: "ext4".into(),
                    label: "KEELKIT".into()
                })
            );
        }
        if let Some(d) = image(p, "mkfs.vfat", &["-n", "KEELKIT"], 8) {
            assert_eq!(
                probe(&d),
                Some(Probe {
                    fstype: "vfat".into(),
                    label: "KEELKIT".into()
                })
            );
        }
        if let Some(d) = image(p, "mkfs.vfat", &["-F", "32", "-n", "kit32"], 40) {
            assert_eq!(
                probe(&d),
                Some(Probe {
                    fstype: "vfat".into(),
                    label: "kit32".into()
                })
            );
        }
        if let Some(d) = image(p, "mkfs.vfat", &[], 8) {
            assert_eq!(
                probe(&d),
                Some(Probe {
                    fstype: "vfat".into(),
                    label: String::new()
                })
            );
        }
        if let Some(d) = image(p, "mkfs.xfs", &["-q", "-f", "-L", "KEELKIT"], 300) {
            assert_eq!(
                probe(&d),
                Some(Probe {
                    fstype: "xfs".into(),
                    label: "KEELKIT".into()
                })
            );
        }
    }

    #[test]
    fn iso9660_and_nothing() {
        let mut d = vec![0u8; PROBE_BYTES];
        assert_eq!(probe(&d), None);
        d[32768] = 1;
        d[32769..32774].copy_from_slice(b"CD001");
        d[32808..32840].copy_from_slice(b"KEELKIT                         ");
        assert_eq!(
            probe(&d),
            Some(Probe {
                fstype: "iso9660".into(),
                label: "KEELKIT".into()
            })
        );
        assert_eq!(probe(&d[..100]), None, "short reads are not filesystems");
    }

    #[test]
    fn finds_the_labelled_device_through_sys_and_dev() {
        let tmp = tempfile::tempdir().unwrap();
        let (sys, dev) = (tmp.path().join("sys"), tmp.path().join("dev"));
        fs::create_dir_all(&dev).unwrap();
        let mut kit = vec![0u8; 4096];
        kit[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        kit[1024 + 120..1024 + 127].copy_from_slice(b"keelkit");
        for (name, size, data) in [
            ("vda", "8", vec![0u8; 4096]),
            ("vdb", "8", kit),
            ("sr0", "0", vec![]),
        ] {
            let d = sys.join("class/block").join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("size"), size).unwrap();
            fs::write(dev.join(name), data).unwrap();
        }
        let found = find_labelled(&sys, &dev, "KEELKIT");
        assert_eq!(found.len(), 1);
        assert!(found[0].device.ends_with("/dev/vdb"));
        assert_eq!(found[0].probe.fstype, "ext4");
    }
}
