//! Signatures on block devices: `blkid -p -o export` (a low-level probe that reads the device
//! itself, so it works without udev and on mounted devices) and the ext superblock for the
//! filesystem size that this blkid does not report.

use std::collections::BTreeMap;

/// The `KEY=value` pairs blkid reports for one device.
pub(crate) type Probe = BTreeMap<String, String>;

/// Parses `blkid -o export` output: one block of `KEY=value` lines per device, blocks separated
/// by blank lines. Values escape shell-special characters with a backslash (`keel\ root`).
pub(crate) fn parse_blkid_export(text: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut cur = Probe::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            cur.insert(k.trim().to_string(), unescape_shell(v));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn unescape_shell(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The size of an ext2/3/4 filesystem from its superblock (the 1024 bytes at offset 1024), or
/// `None` when the bytes are not an ext superblock.
pub(crate) fn ext_fs_size(sb: &[u8]) -> Option<u64> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(sb.get(off..off + 4)?.try_into().ok()?))
    };
    // s_magic at 0x38.
    if sb.get(0x38..0x3a)? != [0x53, 0xef] {
        return None;
    }
    let log_block = u32_at(0x18)?;
    if log_block > 16 {
        return None;
    }
    let block_size = 1024u64 << log_block;
    let mut blocks = u64::from(u32_at(0x04)?);
    // INCOMPAT_64BIT: the block count has a high half.
    if u32_at(0x60)? & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)?) << 32;
    }
    blocks.checked_mul(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/storage/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn ext4_partition() {
        let p = parse_blkid_export(&fixture("blkid-ext4.txt"));
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p["DEVNAME"], "/dev/loop0p2");
        assert_eq!(p["TYPE"], "ext4");
        assert_eq!(p["UUID"], "3f1e2d4c-5b6a-4789-9abc-def012345678");
        assert_eq!(p["LABEL"], "keelroot");
        assert_eq!(p["PART_ENTRY_NAME"], "keel root", "shell escape removed");
        assert_eq!(p["PART_ENTRY_NUMBER"], "2");
    }

    #[test]
    fn other_signatures() {
        let gpt = &parse_blkid_export(&fixture("blkid-disk-gpt.txt"))[0];
        assert_eq!(gpt["PTTYPE"], "gpt");
        assert!(!gpt.contains_key("TYPE"));
        let bios = &parse_blkid_export(&fixture("blkid-bios-boot.txt"))[0];
        assert!(
            !bios.contains_key("TYPE"),
            "a BIOS boot partition has no filesystem"
        );
        let luks = &parse_blkid_export(&fixture("blkid-luks.txt"))[0];
        assert_eq!(luks["TYPE"], "crypto_LUKS");
        assert_eq!(luks["LABEL"], "keeldata");
        let lvm = &parse_blkid_export(&fixture("blkid-lvm2-member.txt"))[0];
        assert_eq!(lvm["TYPE"], "LVM2_member");
        assert_eq!(lvm["VERSION"], "LVM2 001");
        let swap = &parse_blkid_export(&fixture("blkid-swap.txt"))[0];
        assert_eq!(swap["TYPE"], "swap");
        assert_eq!(swap["LABEL"], "keelswap");
        let raid = &parse_blkid_export(&fixture("blkid-raid-member.txt"))[0];
        assert_eq!(raid["TYPE"], "linux_raid_member");
        assert_eq!(raid["UUID"], "3d1f8f2a-6b4e-1c2d-9e8f-0a1b2c3d4e5f");
    }

    #[test]
    fn several_devices() {
        let text = format!(
            "{}\n{}",
            fixture("blkid-ext4.txt"),
            fixture("blkid-swap.txt")
        );
        let p = parse_blkid_export(&text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1]["DEVNAME"], "/dev/vda3");
    }

    #[test]
    fn ext_superblock() {
        let p = format!(
            "{}/tests/fixtures/storage/ext4-superblock.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        let sb = std::fs::read(p).unwrap();
        assert_eq!(ext_fs_size(&sb), Some(4 * 1024 * 1024));
        assert_eq!(ext_fs_size(&[0u8; 1024]), None);
        assert_eq!(ext_fs_size(&sb[..16]), None);
    }
}
