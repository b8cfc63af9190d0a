//! `/etc/fstab` and `/etc/crypttab`: the persisted storage configuration.

use keel_profile::{CrypttabEntry, FstabEntry};

/// Decodes the octal escapes (`\040` for a space, `\134` for a backslash) that fstab, crypttab,
/// mountinfo and `/proc/swaps` use, since their fields are separated by whitespace.
pub(crate) fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = b.get(i + 1..i + 4).and_then(octal_triplet) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte three octal digits spell, if they are octal digits and fit a byte.
fn octal_triplet(d: &[u8]) -> Option<u8> {
    let mut v: u32 = 0;
    for &c in d {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v * 8 + u32::from(c - b'0');
    }
    u8::try_from(v).ok()
}

/// The whitespace-separated fields of a table line, escapes decoded. A field starting with `#`
/// ends the line: libmount stops there too, and people put comments after the last field.
fn fields(line: &str) -> Vec<String> {
    line.split_whitespace()
        .take_while(|f| !f.starts_with('#'))
        .map(unescape_octal)
        .collect()
}

/// Parses `/etc/fstab`, returning the entries and a description of each line that could not be
/// understood (such a line is not recorded). `fs_mntops` defaults to `defaults` and
/// `fs_freq`/`fs_passno` to 0 when missing, as fstab(5) says.
pub(crate) fn parse_fstab(text: &str) -> (Vec<FstabEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f = fields(line);
        if f.is_empty() {
            continue;
        }
        if f.len() < 3 {
            problems.push(format!(
                "/etc/fstab line {}: expected at least device, mountpoint and type, found {:?}; \
                 the line is not recorded",
                n + 1,
                line.trim()
            ));
            continue;
        }
        let mut number = |i: usize, what: &str| -> u32 {
            match f.get(i) {
                None => 0,
                Some(v) => v.parse().unwrap_or_else(|_| {
                    problems.push(format!(
                        "/etc/fstab line {}: {what} field {v:?} is not a number; recorded as 0",
                        n + 1
                    ));
                    0
                }),
            }
        };
        let dump = number(4, "dump");
        let pass = number(5, "pass");
        entries.push(FstabEntry {
            spec: f[0].clone(),
            mountpoint: f[1].clone(),
            fstype: f[2].clone(),
            options: f.get(3).cloned().unwrap_or_else(|| "defaults".into()),
            dump,
            pass,
        });
    }
    (entries, problems)
}

/// Parses `/etc/crypttab`: `name device [keyfile [options]]`, returning the entries and a
/// description of each line that could not be understood. A missing key file is recorded as
/// `none` (crypttab(5): ask for a passphrase) and missing options as empty.
pub(crate) fn parse_crypttab(text: &str) -> (Vec<CrypttabEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f = fields(line);
        if f.is_empty() {
            continue;
        }
        if f.len() < 2 {
            problems.push(format!(
                "/etc/crypttab line {}: expected at least a name and a device, found {:?}; \
                 the line is not recorded",
                n + 1,
                line.trim()
            ));
            continue;
        }
        entries.push(CrypttabEntry {
            name: f[0].clone(),
            device: f[1].clone(),
            keyfile: f.get(2).cloned().unwrap_or_else(|| "none".into()),
            options: f.get(3).cloned().unwrap_or_default(),
        });
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/storage/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal(r"a\011b\134c\012"), "a\tb\\c\n");
        // Not an escape: kept as written.
        assert_eq!(unescape_octal(r"C:\dir\08x\4"), r"C:\dir\08x\4");
        assert_eq!(unescape_octal(r"\777"), r"\777");
        assert_eq!(unescape_octal("plain"), "plain");
    }

    #[test]
    fn fstab_fixture() {
        let (entries, problems) = parse_fstab(&fixture("fstab"));
        assert_eq!(entries.len(), 6, "{entries:#?}");
        assert_eq!(
            entries[0],
            FstabEntry {
                spec: "UUID=3f1e2d4c-5b6a-4789-9abc-def012345678".into(),
                mountpoint: "/".into(),
                fstype: "ext4".into(),
                options: "errors=remount-ro".into(),
                dump: 0,
                pass: 1,
            }
        );
        assert_eq!(entries[1].mountpoint, "/srv");
        assert_eq!(entries[1].options, "defaults,nofail");
        assert_eq!(entries[1].pass, 2);
        // Escapes decoded; missing dump and pass default to 0; a trailing comment is dropped.
        assert_eq!(entries[2].spec, "LABEL=My Data");
        assert_eq!(entries[2].mountpoint, "/mnt/my data");
        assert_eq!(entries[2].options, "noatime");
        assert_eq!((entries[2].dump, entries[2].pass), (0, 0));
        assert_eq!(entries[3].fstype, "swap");
        assert_eq!(entries[4].options, "_netdev,vers=4.2");
        // Missing options are `defaults`.
        assert_eq!(entries[5].options, "defaults");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("line 12"), "{problems:?}");
    }

    #[test]
    fn fstab_bad_number() {
        let (entries, problems) = parse_fstab("/dev/sda1 / ext4 defaults x 1\n");
        assert_eq!(entries[0].dump, 0);
        assert_eq!(entries[0].pass, 1);
        assert!(problems[0].contains("dump field \"x\""), "{problems:?}");
    }

    #[test]
    fn crypttab_fixture() {
        let (entries, problems) = parse_crypttab(&fixture("crypttab"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0],
            CrypttabEntry {
                name: "cryptroot".into(),
                device: "UUID=2f1b6a44-8c3e-4d1f-9b7a-5e6d7c8b9a01".into(),
                keyfile: "none".into(),
                options: "luks,discard".into(),
            }
        );
        assert_eq!(entries[1].keyfile, "/dev/urandom");
        assert_eq!(entries[2].name, "data vol");
        assert_eq!(entries[2].keyfile, "none");
        assert_eq!(entries[2].options, "");
        let (_, problems) = parse_crypttab("lonely\n");
        assert!(problems[0].contains("line 1"), "{problems:?}");
    }
}
