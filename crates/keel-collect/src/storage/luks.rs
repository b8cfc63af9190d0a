//! LUKS header metadata from `cryptsetup luksDump`. Only the version, UUID, label, data cipher
//! and number of keyslots are kept: salts, digests and keyslot areas are never read into the
//! profile.

use crate::CollectError;

/// What the profile keeps of a LUKS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LuksHeader {
    pub version: u32,
    pub uuid: String,
    pub label: Option<String>,
    /// `aes-xts-plain64`.
    pub cipher: Option<String>,
    /// Keyslots in use.
    pub keyslots: u32,
}

/// Parses `cryptsetup luksDump` text output (LUKS1 and LUKS2).
pub(crate) fn parse_luks_dump(text: &str) -> Result<LuksHeader, CollectError> {
    let mut version = None;
    let mut uuid = None;
    let mut label = None;
    let mut cipher = None;
    let mut cipher_name = None;
    let mut cipher_mode = None;
    let mut keyslots = 0u32;
    // LUKS2 groups lines under unindented section headings (`Keyslots:`); entries within a
    // section are `  0: luks2` and their properties are tab-indented.
    let mut section = "";
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        if !indented && line.trim_end().ends_with(':') && !line.contains(":\t") {
            section = line.trim_end().trim_end_matches(':');
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        if !indented {
            match key {
                "Version" => version = value.parse::<u32>().ok(),
                "UUID" => uuid = Some(value.to_string()),
                "Label" if value != "(no label)" && !value.is_empty() => {
                    label = Some(value.to_string());
                }
                "Cipher name" => cipher_name = Some(value.to_string()),
                "Cipher mode" => cipher_mode = Some(value.to_string()),
                // LUKS1: `Key Slot 0: ENABLED`.
                k if k.starts_with("Key Slot ") && value == "ENABLED" => keyslots += 1,
                _ => {}
            }
            continue;
        }
        match section {
            "Data segments" if key == "cipher" && cipher.is_none() => {
                cipher = Some(value.to_string());
            }
            // A keyslot entry: `  0: luks2` (its properties are indented further, by a tab).
            "Keyslots" if !line.starts_with('\t') && key.parse::<u32>().is_ok() => keyslots += 1,
            _ => {}
        }
    }
    let version = version
        .ok_or_else(|| CollectError::parse("cryptsetup luksDump output", "no Version line"))?;
    let uuid =
        uuid.ok_or_else(|| CollectError::parse("cryptsetup luksDump output", "no UUID line"))?;
    if cipher.is_none() {
        cipher = match (cipher_name, cipher_mode) {
            (Some(n), Some(m)) => Some(format!("{n}-{m}")),
            (n, _) => n,
        };
    }
    Ok(LuksHeader {
        version,
        uuid,
        label,
        cipher,
        keyslots,
    })
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
    fn luks2() {
        let h = parse_luks_dump(&fixture("luksdump-luks2.txt")).unwrap();
        assert_eq!(
            h,
            LuksHeader {
                version: 2,
                uuid: "2f1b6a44-8c3e-4d1f-9b7a-5e6d7c8b9a01".into(),
                label: Some("keeldata".into()),
                cipher: Some("aes-xts-plain64".into()),
                keyslots: 2,
            }
        );
    }

    #[test]
    fn luks1() {
        let h = parse_luks_dump(&fixture("luksdump-luks1.txt")).unwrap();
        assert_eq!(
            h,
            LuksHeader {
                version: 1,
                uuid: "9d0e7c2a-1b3f-4e5d-8a6c-7f8e9d0a1b2c".into(),
                label: None,
                cipher: Some("aes-xts-plain64".into()),
                keyslots: 1,
            }
        );
    }

    #[test]
    fn no_label() {
        let text = fixture("luksdump-luks2.txt").replace("keeldata", "(no label)");
        assert_eq!(parse_luks_dump(&text).unwrap().label, None);
    }

    #[test]
    fn not_a_dump() {
        let e = parse_luks_dump("Device /dev/sda1 is not a valid LUKS device.").unwrap_err();
        assert!(e.to_string().contains("no Version"), "{e}");
    }
}
