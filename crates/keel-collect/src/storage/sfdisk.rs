//! Partition tables from `sfdisk --json`: what is written on the disk, which is what recovery
//! recreates (the kernel's view in sysfs lacks types, names and attributes).

use serde::Deserialize;

use crate::CollectError;

#[derive(Deserialize)]
struct Doc {
    partitiontable: RawTable,
}

#[derive(Deserialize)]
struct RawTable {
    label: String,
    id: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default = "default_sector_size")]
    sectorsize: u64,
    #[serde(default)]
    partitions: Vec<RawPart>,
}

fn default_sector_size() -> u64 {
    512
}

#[derive(Deserialize)]
struct RawPart {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    part_type: String,
    uuid: Option<String>,
    name: Option<String>,
    attrs: Option<String>,
    #[serde(default)]
    bootable: bool,
}

/// A partition table as written on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartTable {
    /// `gpt` or `dos`.
    pub pttype: String,
    /// Disk GUID (GPT) or disk identifier (MBR, as eight hex digits like blkid shows it).
    pub ptuuid: Option<String>,
    /// Partitions in table order.
    pub parts: Vec<TablePart>,
}

/// One partition of a [`PartTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TablePart {
    pub number: u32,
    /// First sector in 512-byte units, whatever the disk's sector size.
    pub start: u64,
    pub size_bytes: u64,
    /// Lowercase GPT type GUID, or the MBR type byte as `0x83`.
    pub part_type: String,
    /// Lowercase GPT partition GUID, or the MBR `disk id-number` blkid derives.
    pub partuuid: Option<String>,
    pub partlabel: Option<String>,
    /// GPT attribute names (`LegacyBIOSBootable`, `GUID:63`) or MBR `bootable`.
    pub flags: Vec<String>,
}

/// Parses `sfdisk --json` output.
pub(crate) fn parse_sfdisk_json(text: &str) -> Result<PartTable, CollectError> {
    let doc: Doc = serde_json::from_str(text)
        .map_err(|e| CollectError::parse("sfdisk --json output", e.to_string()))?;
    let t = doc.partitiontable;
    if let Some(unit) = t.unit.as_deref() {
        if unit != "sectors" {
            return Err(CollectError::parse(
                "sfdisk --json output",
                format!("unit is {unit:?}, expected \"sectors\""),
            ));
        }
    }
    let dos = t.label == "dos";
    let ptuuid = t.id.map(|id| {
        let id = id.to_ascii_lowercase();
        id.strip_prefix("0x").map(str::to_string).unwrap_or(id)
    });
    let parts = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let number = trailing_number(&p.node).unwrap_or(i as u32 + 1);
            let part_type = if dos {
                u8::from_str_radix(&p.part_type, 16)
                    .map_or_else(|_| p.part_type.clone(), |b| format!("0x{b:02x}"))
            } else {
                p.part_type.to_ascii_lowercase()
            };
            let partuuid = match (&p.uuid, dos, &ptuuid) {
                (Some(u), _, _) => Some(u.to_ascii_lowercase()),
                (None, true, Some(id)) => Some(format!("{id}-{number:02x}")),
                _ => None,
            };
            let mut flags: Vec<String> = p
                .attrs
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if p.bootable {
                flags.push("bootable".into());
            }
            TablePart {
                number,
                start: p.start * t.sectorsize / 512,
                size_bytes: p.size * t.sectorsize,
                part_type,
                partuuid,
                partlabel: p.name.clone().filter(|n| !n.is_empty()),
                flags,
            }
        })
        .collect();
    Ok(PartTable {
        pttype: t.label,
        ptuuid,
        parts,
    })
}

/// The partition number at the end of a device node (`/dev/loop0p12` → 12).
fn trailing_number(node: &str) -> Option<u32> {
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    node[node.len() - digits..].parse().ok()
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
    fn gpt() {
        let t = parse_sfdisk_json(&fixture("sfdisk-gpt.json")).unwrap();
        assert_eq!(t.pttype, "gpt");
        assert_eq!(
            t.ptuuid.as_deref(),
            Some("5b2c0c6e-7d3a-4c0f-9a51-2d7a1e0b9c11")
        );
        assert_eq!(t.parts.len(), 3);
        assert_eq!(
            t.parts[0],
            TablePart {
                number: 1,
                start: 2048,
                size_bytes: 1024 * 1024,
                part_type: "21686148-6449-6e6f-744e-656564454649".into(),
                partuuid: Some("c88c76cf-4bf8-5242-ac2d-c858a901fe99".into()),
                partlabel: Some("bios boot".into()),
                flags: vec!["LegacyBIOSBootable".into()],
            }
        );
        assert_eq!(t.parts[1].number, 2);
        assert_eq!(t.parts[1].size_bytes, 40 * 1024 * 1024);
        assert_eq!(
            t.parts[1].partuuid.as_deref(),
            Some("0e0c1d4f-3a5b-4c6d-8e7f-901122334455")
        );
        assert_eq!(t.parts[1].flags, ["RequiredPartition", "GUID:63"]);
        assert_eq!(t.parts[2].partlabel.as_deref(), Some("srv"));
        assert!(t.parts[2].flags.is_empty());
    }

    #[test]
    fn dos() {
        let t = parse_sfdisk_json(&fixture("sfdisk-dos.json")).unwrap();
        assert_eq!(t.pttype, "dos");
        assert_eq!(t.ptuuid.as_deref(), Some("1a2b3c4d"));
        let numbers: Vec<u32> = t.parts.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3, 5], "logical partitions start at 5");
        assert_eq!(t.parts[0].part_type, "0x83");
        assert_eq!(t.parts[0].flags, ["bootable"]);
        assert_eq!(t.parts[0].partuuid.as_deref(), Some("1a2b3c4d-01"));
        assert_eq!(t.parts[2].part_type, "0x05");
        assert_eq!(t.parts[3].partuuid.as_deref(), Some("1a2b3c4d-05"));
        assert_eq!(t.parts[3].start, 102_400);
        assert_eq!(t.parts[3].size_bytes, 8192 * 512);
        assert_eq!(t.parts[3].partlabel, None);
    }

    #[test]
    fn large_sectors_are_converted() {
        let json = r#"{"partitiontable": {"label": "gpt", "id": "X", "device": "/dev/sdb",
            "unit": "sectors", "sectorsize": 4096, "partitions": [
            {"node": "/dev/sdb1", "start": 256, "size": 1024, "type": "T"}]}}"#;
        let t = parse_sfdisk_json(json).unwrap();
        assert_eq!(t.parts[0].start, 2048, "start is in 512-byte units");
        assert_eq!(t.parts[0].size_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn garbage_is_an_error() {
        let e = parse_sfdisk_json("not json").unwrap_err().to_string();
        assert!(e.contains("sfdisk --json"), "{e}");
    }
}
