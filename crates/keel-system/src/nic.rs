//! Network adapters on another machine: which of the target's NICs takes the place of each
//! of the profile's, and the network configuration rewritten to match.
//!
//! An explicit map wins (`OLD=NEW` renames the interface in the configuration; `OLD=MAC`
//! keeps the old name and pins it on the NIC with that MAC with a systemd `.link` file).
//! The profile's other NICs are paired with the target's NICs of the same driver, in bus
//! order, then with any NIC left, in bus order.

use std::fs;
use std::path::{Path, PathBuf};

use keel_profile::Nic;
use serde::{Deserialize, Serialize};

use crate::error::SystemError;

/// A NIC of the machine being recovered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TargetNic {
    /// Kernel name (`enp1s0`).
    pub name: String,
    /// Permanent MAC address, lower case.
    pub mac: String,
    /// Kernel driver (`virtio_net`).
    #[serde(default)]
    pub driver: Option<String>,
    /// Bus address (`0000:00:05.0`).
    #[serde(default)]
    pub bus: Option<String>,
}

/// The physical NICs under a sysfs tree (`/sys`): those with a `device` link.
pub fn target_nics(sys: &Path) -> Vec<TargetNic> {
    let Ok(entries) = fs::read_dir(sys.join("class/net")) else {
        return Vec::new();
    };
    let mut nics: Vec<TargetNic> = entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let device = fs::canonicalize(dir.join("device")).ok()?;
            let read = |f: &str| {
                fs::read_to_string(dir.join(f))
                    .ok()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
            };
            let mac = read("address")?;
            let driver = fs::read_link(device.join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
            Some(TargetNic {
                name: e.file_name().to_string_lossy().into_owned(),
                mac,
                driver,
                bus: device.file_name().map(|n| n.to_string_lossy().into_owned()),
            })
        })
        .collect();
    nics.sort_by(|a, b| (&a.bus, &a.name).cmp(&(&b.bus, &b.name)));
    nics
}

/// Where one of the profile's interfaces goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicMapping {
    /// The profile's interface name.
    pub old_name: String,
    /// The profile's MAC address, when known.
    pub old_mac: Option<String>,
    /// The name it has on the target (the same as `old_name` when pinned by MAC).
    pub new_name: String,
    /// The target NIC's MAC address, when known.
    pub new_mac: Option<String>,
    /// Pin `new_name` on `new_mac` with a systemd `.link` file.
    pub pin: bool,
    /// Why.
    pub reason: String,
}

/// Parses `OLD=NEW` or `OLD=MAC` as `--nic-map` takes it.
pub fn parse_nic_map(s: &str) -> Result<(String, String), SystemError> {
    match s.split_once('=') {
        Some((a, b)) if valid_name(a.trim()) && !b.trim().is_empty() => {
            let b = b.trim();
            if is_mac(b) || valid_name(b) {
                Ok((a.trim().to_string(), b.to_ascii_lowercase()))
            } else {
                Err(bad_map(s))
            }
        }
        _ => Err(bad_map(s)),
    }
}

fn bad_map(s: &str) -> SystemError {
    SystemError::Other(format!(
        "--nic-map {s}: expected OLD=NEW (interface names) or OLD=MAC (aa:bb:cc:dd:ee:ff)\n\
         hint: OLD is the interface name in the profile's network configuration"
    ))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Pairs the profile's NICs with the target's; `explicit` (`OLD`, `NEW` or MAC) wins.
pub fn map_nics(
    profile: &[Nic],
    target: &[TargetNic],
    explicit: &[(String, String)],
) -> Vec<NicMapping> {
    let mut out = Vec::new();
    let mut taken: Vec<&str> = Vec::new();
    for (old, new) in explicit {
        let old_mac = profile
            .iter()
            .find(|n| &n.name == old)
            .map(|n| n.mac.to_ascii_lowercase());
        if is_mac(new) {
            let t = target.iter().find(|t| &t.mac == new);
            taken.extend(t.map(|t| t.name.as_str()));
            out.push(NicMapping {
                old_name: old.clone(),
                old_mac,
                new_name: old.clone(),
                new_mac: Some(new.clone()),
                pin: true,
                reason: "--nic-map: the name pinned on this MAC address".into(),
            });
        } else {
            let t = target.iter().find(|t| &t.name == new);
            taken.push(new.as_str());
            out.push(NicMapping {
                old_name: old.clone(),
                old_mac,
                new_name: new.clone(),
                new_mac: t.map(|t| t.mac.clone()),
                pin: false,
                reason: "--nic-map".into(),
            });
        }
    }
    let mut left: Vec<&Nic> = profile
        .iter()
        .filter(|n| !explicit.iter().any(|(old, _)| old == &n.name))
        .collect();
    left.sort_by(|a, b| (&a.bus_info, &a.name).cmp(&(&b.bus_info, &b.name)));
    let pair = |n: &Nic, t: &TargetNic, reason: String, out: &mut Vec<NicMapping>| {
        out.push(NicMapping {
            old_name: n.name.clone(),
            old_mac: Some(n.mac.to_ascii_lowercase()),
            new_name: t.name.clone(),
            new_mac: Some(t.mac.clone()),
            pin: false,
            reason,
        });
    };
    let mut unpaired = Vec::new();
    for n in left {
        let same = target.iter().find(|t| {
            !taken.contains(&t.name.as_str()) && t.driver.is_some() && t.driver == n.driver
        });
        match same {
            Some(t) => {
                taken.push(&t.name);
                let reason = format!(
                    "same driver ({}), in bus order",
                    n.driver.as_deref().unwrap_or_default()
                );
                pair(n, t, reason, &mut out);
            }
            None => unpaired.push(n),
        }
    }
    for n in unpaired {
        if let Some(t) = target.iter().find(|t| !taken.contains(&t.name.as_str())) {
            taken.push(&t.name);
            pair(n, t, "in bus order".into(), &mut out);
        }
    }
    out
}

/// `text` with every interface name in `renames` (old, new) replaced where it stands as a
/// name of its own (`ens3`, `ens3.100`, `ens3:1`, but not `ens30`), all at once (so that
/// swapping two names works), and MAC addresses (`macs`, old, new) replaced in any case.
pub fn rename_in_text(
    text: &str,
    renames: &[(String, String)],
    macs: &[(String, String)],
) -> String {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        // A MAC address: six pairs of hex digits with colons.
        if i + 17 <= bytes.len() && text.is_char_boundary(i + 17) {
            let cand = &text[i..i + 17];
            let before_ok = i == 0 || !word(bytes[i - 1]);
            if before_ok && is_mac(cand) {
                let low = cand.to_ascii_lowercase();
                match macs.iter().find(|(old, _)| *old == low) {
                    Some((_, new)) => out.push_str(new),
                    None => out.push_str(cand),
                }
                i += 17;
                continue;
            }
        }
        if word(bytes[i]) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let token = &text[start..i];
            match renames.iter().find(|(old, _)| old == token) {
                Some((_, new)) => out.push_str(new),
                None => out.push_str(token),
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The network configuration files of a root that name interfaces.
fn config_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        root.join("etc/network/interfaces"),
        root.join("etc/udev/rules.d/70-persistent-net.rules"),
    ];
    let dir_files = |dir: &str, exts: &[&str]| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| {
            exts.is_empty() || p.extension().is_some_and(|x| exts.iter().any(|e| x == *e))
        });
        v.sort();
        v
    };
    files.extend(dir_files("etc/network/interfaces.d", &[]));
    files.extend(dir_files(
        "etc/systemd/network",
        &["network", "link", "netdev"],
    ));
    files.extend(dir_files("etc/netplan", &["yaml"]));
    files.extend(dir_files("etc/NetworkManager/system-connections", &[]));
    files.retain(|p| p.is_file() && !p.is_symlink());
    files
}

/// Rewrites the network configuration under `root` for `mappings`, and writes a `.link`
/// file for each pinned name. Returns the files changed, relative to `root`.
pub fn apply_nic_map(root: &Path, mappings: &[NicMapping]) -> Result<Vec<String>, SystemError> {
    let renames: Vec<(String, String)> = mappings
        .iter()
        .filter(|m| m.old_name != m.new_name)
        .map(|m| (m.old_name.clone(), m.new_name.clone()))
        .collect();
    let macs: Vec<(String, String)> = mappings
        .iter()
        .filter_map(|m| Some((m.old_mac.clone()?, m.new_mac.clone()?)))
        .filter(|(a, b)| a != b)
        .collect();
    let mut changed = Vec::new();
    let rel = |p: &Path| format!("/{}", p.strip_prefix(root).unwrap_or(p).display());
    if !renames.is_empty() || !macs.is_empty() {
        for path in config_files(root) {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let new = rename_in_text(&text, &renames, &macs);
            if new != text {
                fs::write(&path, new).map_err(|e| SystemError::io("cannot write", &path, e))?;
                changed.push(rel(&path));
            }
        }
    }
    for m in mappings.iter().filter(|m| m.pin) {
        let Some(mac) = &m.new_mac else { continue };
        let dir = root.join("etc/systemd/network");
        fs::create_dir_all(&dir).map_err(|e| SystemError::io("cannot create", &dir, e))?;
        let path = dir.join(format!("10-keel-{}.link", m.new_name));
        let text = format!(
            "# Written by keel recover install: the profile's interface name on this \
             machine's NIC.\n[Match]\nMACAddress={mac}\n\n[Link]\nName={}\n",
            m.new_name
        );
        fs::write(&path, text).map_err(|e| SystemError::io("cannot write", &path, e))?;
        changed.push(rel(&path));
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, driver: &str, bus: &str) -> Nic {
        Nic {
            name: name.into(),
            mac: mac.into(),
            driver: Some(driver.into()),
            bus_info: Some(bus.into()),
            ..Nic::default()
        }
    }

    fn tnic(name: &str, mac: &str, driver: &str, bus: &str) -> TargetNic {
        TargetNic {
            name: name.into(),
            mac: mac.into(),
            driver: Some(driver.into()),
            bus: Some(bus.into()),
        }
    }

    #[test]
    fn names_are_replaced_whole_and_all_at_once() {
        let r = vec![
            ("ens3".to_string(), "ens4".to_string()),
            ("ens4".to_string(), "ens3".to_string()),
        ];
        let m = vec![(
            "52:54:00:00:00:01".to_string(),
            "52:54:00:00:00:99".to_string(),
        )];
        let text = "auto ens3 ens30\niface ens3 inet static\n  hwaddress 52:54:00:00:00:01\n\
                    iface ens3.100 inet manual\niface ens4:1 inet dhcp\n# ens3 was eth0\n";
        assert_eq!(
            rename_in_text(text, &r, &m),
            "auto ens4 ens30\niface ens4 inet static\n  hwaddress 52:54:00:00:00:99\n\
             iface ens4.100 inet manual\niface ens3:1 inet dhcp\n# ens4 was eth0\n"
        );
        let upper = "ATTR{address}==\"52:54:00:00:00:01\", NAME=\"ens3\"";
        assert_eq!(
            rename_in_text(&upper.to_uppercase().replace("ENS3", "ens3"), &r, &m),
            "ATTR{ADDRESS}==\"52:54:00:00:00:99\", NAME=\"ens4\""
        );
    }

    #[test]
    fn nics_pair_by_driver_then_bus_order_and_explicit_wins() {
        let profile = [
            nic("eno1", "00:00:00:00:00:01", "igb", "0000:01:00.0"),
            nic("eno2", "00:00:00:00:00:02", "igb", "0000:01:00.1"),
            nic("enp5s0", "00:00:00:00:00:05", "ixgbe", "0000:05:00.0"),
        ];
        let target = [
            tnic("ens1", "aa:00:00:00:00:01", "virtio_net", "0000:00:01.0"),
            tnic("enp2s0", "aa:00:00:00:00:02", "igb", "0000:02:00.0"),
            tnic("enp3s0", "aa:00:00:00:00:03", "igb", "0000:03:00.0"),
        ];
        let m = map_nics(&profile, &target, &[]);
        let pairs: Vec<(&str, &str)> = m
            .iter()
            .map(|m| (m.old_name.as_str(), m.new_name.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("eno1", "enp2s0"), ("eno2", "enp3s0"), ("enp5s0", "ens1")]
        );
        assert!(m[0].reason.contains("same driver (igb)"), "{}", m[0].reason);
        assert_eq!(m[0].new_mac.as_deref(), Some("aa:00:00:00:00:02"));

        let explicit = [
            ("eno2".to_string(), "enp2s0".to_string()),
            ("enp5s0".to_string(), "aa:00:00:00:00:03".to_string()),
        ];
        let m = map_nics(&profile, &target, &explicit);
        let pairs: Vec<(&str, &str, bool)> = m
            .iter()
            .map(|m| (m.old_name.as_str(), m.new_name.as_str(), m.pin))
            .collect();
        assert_eq!(
            pairs,
            [
                ("eno2", "enp2s0", false),
                ("enp5s0", "enp5s0", true),
                ("eno1", "ens1", false)
            ]
        );
    }

    #[test]
    fn the_map_is_parsed_and_checked() {
        assert_eq!(
            parse_nic_map("ens3=ens5").unwrap(),
            ("ens3".into(), "ens5".into())
        );
        assert_eq!(
            parse_nic_map("eth0=52:54:00:AB:cd:01").unwrap(),
            ("eth0".into(), "52:54:00:ab:cd:01".into())
        );
        for bad in ["ens3", "=ens5", "ens3=", "ens3=a b", "a/b=ens5"] {
            assert!(parse_nic_map(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_is_rewritten_and_pins_written() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("etc/network")).unwrap();
        fs::create_dir_all(r.join("etc/systemd/network")).unwrap();
        fs::write(
            r.join("etc/network/interfaces"),
            "auto ens3\niface ens3 inet static\n    address 192.0.2.10/24\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/systemd/network/20-wired.network"),
            "[Match]\nName=eth1\n",
        )
        .unwrap();
        let maps = map_nics(
            &[],
            &[],
            &[
                ("ens3".into(), "ens5".into()),
                ("eth1".into(), "52:54:00:00:00:07".into()),
            ],
        );
        let changed = apply_nic_map(r, &maps).unwrap();
        assert_eq!(
            changed,
            [
                "/etc/network/interfaces",
                "/etc/systemd/network/10-keel-eth1.link"
            ]
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/network/interfaces")).unwrap(),
            "auto ens5\niface ens5 inet static\n    address 192.0.2.10/24\n"
        );
        let link = fs::read_to_string(r.join("etc/systemd/network/10-keel-eth1.link")).unwrap();
        assert!(link.contains("MACAddress=52:54:00:00:00:07\n\n[Link]\nName=eth1\n"));
    }

    #[test]
    fn physical_nics_are_read_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let dev = s.join("devices/pci0000:00/0000:00:05.0");
        fs::create_dir_all(dev.join("virtio2")).unwrap();
        fs::create_dir_all(s.join("bus/pci/drivers/virtio-pci")).unwrap();
        std::os::unix::fs::symlink(s.join("bus/pci/drivers/virtio-pci"), dev.join("driver"))
            .unwrap();
        for (name, device) in [("ens5", Some(&dev)), ("lo", None)] {
            let d = s.join("class/net").join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("address"), "52:54:00:4B:45:4C\n").unwrap();
            if let Some(device) = device {
                std::os::unix::fs::symlink(device, d.join("device")).unwrap();
            }
        }
        assert_eq!(
            target_nics(s),
            [TargetNic {
                name: "ens5".into(),
                mac: "52:54:00:4b:45:4c".into(),
                driver: Some("virtio-pci".into()),
                bus: Some("0000:00:05.0".into()),
            }]
        );
    }
}
