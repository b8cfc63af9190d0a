//! The command lines each step runs, built from the step and the device nodes it resolves to.
//! Kept free of I/O so that the dry run shows exactly what applying runs, and the arguments of
//! every tool (mdadm, LVM and cryptsetup included) are tested without root.

use std::fmt::Write as _;
use std::path::Path;

use crate::cmd::{Cmd, WRITE};
use crate::error::SystemError;
use crate::step::{NewPartition, Step, TableLabel};
use crate::target::{partition_path, Device};

/// LVM settings for a system without udev: list block devices from sysfs, ignore any devices
/// file, and let LVM make its own device nodes instead of waiting for udev to.
pub(crate) const LVM_CONFIG: &str = "devices { obtain_device_list_from_udev = 0 \
                                      use_devicesfile = 0 } activation { udev_sync = 0 \
                                      udev_rules = 0 }";

/// What the commands need besides the step and its device nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context<'a> {
    /// The key for LUKS volumes.
    pub luks_key_file: Option<&'a Path>,
    /// The profiled system's hostname, which md names its arrays after.
    pub homehost: Option<&'a str>,
    /// The directory the system is rebuilt in.
    pub target_root: Option<&'a Path>,
    /// Logical sector size of the disk a partition table is written on.
    pub sector_size: u64,
    /// Physical volumes of the volume group a striped volume is created in.
    pub stripes: Option<u32>,
}

/// The tool commands that carry out `step`; `node` gives each device's node.
pub(crate) fn commands(
    step: &Step,
    node: &dyn Fn(&Device) -> String,
    cx: &Context<'_>,
) -> Result<Vec<Cmd>, SystemError> {
    let lvm = |program: &str| {
        Cmd::new(program, &["--config", LVM_CONFIG])
            .env("DM_DISABLE_UDEV", "1")
            .timeout(WRITE)
    };
    Ok(match step {
        Step::WipeSignatures { disk } => {
            vec![Cmd::new("wipefs", &["--all", &node(disk)])]
        }
        Step::PartitionTable {
            disk,
            label,
            table_id,
            partitions,
        } => {
            let dev = node(disk);
            let script = sfdisk_script(
                *label,
                table_id.as_deref(),
                partitions,
                &|n| partition_path(&dev, n),
                cx.sector_size.max(512),
            )?;
            vec![Cmd::new(
                "sfdisk",
                &[
                    "--quiet",
                    "--no-reread",
                    "--no-tell-kernel",
                    "--wipe",
                    "always",
                    "--wipe-partitions",
                    "never",
                    &dev,
                ],
            )
            .input(script)
            .timeout(WRITE)]
        }
        Step::CreateRaid {
            device,
            level,
            devices,
            missing,
            spares,
            uuid,
            metadata,
            ..
        } => {
            let Device::Md { name } = device else {
                return Err(SystemError::unexpected(format!(
                    "{device} is not an md array"
                )));
            };
            let mut c = Cmd::new(
                "mdadm",
                &[
                    "--create".to_string(),
                    format!("/dev/{name}"),
                    "--run".into(),
                    format!("--level={level}"),
                    format!("--raid-devices={}", devices.len() + *missing as usize),
                ],
            )
            .env("MDADM_NO_UDEV", "1")
            .env("MDADM_NO_SYSTEMCTL", "1")
            .timeout(WRITE);
            if let Some(m) = metadata {
                c = c.arg(format!("--metadata={m}"));
            }
            // mdadm 4.3 and later make an array without a write-intent bitmap when --run
            // answers for them; with one, a member that drops out resyncs only what changed.
            if matches!(
                level.as_str(),
                "raid1" | "raid4" | "raid5" | "raid6" | "raid10"
            ) {
                c = c.arg("--bitmap=internal");
            }
            if let Some(u) = uuid {
                let Some(m) = mdadm_uuid(u) else {
                    return Err(SystemError::unexpected(format!(
                        "the array UUID {u} of /dev/{name} is not a UUID mdadm can set\nhint: \
                         edit the plan's uuid for {name}, or remove it to let mdadm choose one \
                         (then update mdadm.conf in the rebuilt system)"
                    )));
                };
                c = c.arg(format!("--uuid={m}"));
            }
            if let (Some(host), Some(n)) = (cx.homehost, md_number(name)) {
                c = c
                    .arg(format!("--homehost={host}"))
                    .arg(format!("--name={n}"));
            }
            for d in devices {
                c = c.arg(node(d));
            }
            for _ in 0..*missing {
                c = c.arg("missing");
            }
            if !spares.is_empty() {
                c = c.arg(format!("--spare-devices={}", spares.len()));
                for d in spares {
                    c = c.arg(node(d));
                }
            }
            vec![c]
        }
        Step::CreateLuks {
            device,
            name,
            uuid,
            version,
            cipher,
            label,
        } => {
            let key = cx
                .luks_key_file
                .map_or_else(|| "KEY_FILE".to_string(), |k| k.display().to_string());
            let dev = node(device);
            let mut format = Cmd::new(
                "cryptsetup",
                &[
                    "luksFormat",
                    "--batch-mode",
                    "--type",
                    if *version == 1 { "luks1" } else { "luks2" },
                    "--uuid",
                    uuid,
                    "--key-file",
                    &key,
                ],
            )
            .env("DM_DISABLE_UDEV", "1")
            .timeout(WRITE);
            if let Some(c) = cipher {
                format = format.arg("--cipher").arg(c);
            }
            if let (Some(l), 2..) = (label, *version) {
                format = format.arg("--label").arg(l);
            }
            let format = format.arg(dev.clone());
            let open = Cmd::new(
                "cryptsetup",
                &["open", "--type", "luks", "--key-file", &key, &dev, name],
            )
            .env("DM_DISABLE_UDEV", "1")
            .timeout(WRITE);
            vec![format, open]
        }
        Step::CreatePv { device, uuid } => {
            let mut c = lvm("pvcreate").arg("--yes");
            if let Some(u) = uuid {
                if !lvm_uuid_ok(u) {
                    return Err(SystemError::unexpected(format!(
                        "the physical volume UUID {u} of {device} is not an LVM UUID (32 letters \
                         and digits in groups of 6-4-4-4-4-4-6)\nhint: edit the plan's uuid for \
                         {device}, or remove it to let LVM choose one"
                    )));
                }
                c = c.arg("--uuid").arg(u).arg("--norestorefile");
            }
            vec![c.arg(node(device))]
        }
        Step::CreateVg {
            name,
            pvs,
            extent_size,
        } => {
            let mut c = lvm("vgcreate")
                .arg("--yes")
                .arg("--physicalextentsize")
                .arg(format!("{}k", extent_size / 1024))
                .arg(name.clone());
            for p in pvs {
                c = c.arg(node(p));
            }
            vec![c]
        }
        Step::CreateLv {
            vg,
            name,
            size_bytes,
            segtype,
        } => {
            let mut c = lvm("lvcreate")
                .arg("--yes")
                .arg("--wipesignatures")
                .arg("y")
                .arg("--zero")
                .arg("y")
                .arg("--size")
                .arg(format!("{}k", size_bytes.div_ceil(1024)))
                .arg("--name")
                .arg(name.clone());
            if segtype == "striped" {
                c = c.arg("--type").arg("striped");
                if let Some(n) = cx.stripes.filter(|n| *n > 1) {
                    c = c.arg("--stripes").arg(n.to_string());
                }
            }
            vec![c.arg(vg.clone())]
        }
        Step::Mkfs {
            device,
            fstype,
            uuid,
            label,
        } => vec![mkfs(
            fstype,
            uuid.as_deref(),
            label.as_deref(),
            &node(device),
        )?],
        Step::Mkswap {
            device,
            uuid,
            label,
        } => {
            let mut c = Cmd::new("mkswap", &["--force"]).timeout(WRITE);
            if let Some(u) = uuid {
                c = c.arg("--uuid").arg(u.clone());
            }
            if let Some(l) = label {
                c = c.arg("--label").arg(l.clone());
            }
            vec![c.arg(node(device))]
        }
        Step::Mount {
            device,
            mountpoint,
            fstype,
            options,
        } => {
            let at = cx.target_root.map_or_else(
                || mountpoint.clone(),
                |r| mount_dir(r, mountpoint).display().to_string(),
            );
            vec![mount_cmd(&node(device), &at, fstype, options)]
        }
    })
}

/// The `mount` command for a filesystem of the plan.
pub(crate) fn mount_cmd(dev: &str, at: &str, fstype: &str, options: &str) -> Cmd {
    let mut c = Cmd::new("mount", &[] as &[&str]).timeout(WRITE);
    if !fstype.is_empty() && fstype != "auto" {
        c = c.arg("-t").arg(fstype);
    }
    if let Some(o) = mount_options(options) {
        c = c.arg("-o").arg(o);
    }
    c.arg(dev).arg(at)
}

/// Where a mountpoint of the rebuilt system is under the target root.
pub(crate) fn mount_dir(root: &Path, mountpoint: &str) -> std::path::PathBuf {
    let rel = mountpoint.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The mkfs command for a filesystem type, keeping its UUID and label.
fn mkfs(
    fstype: &str,
    uuid: Option<&str>,
    label: Option<&str>,
    dev: &str,
) -> Result<Cmd, SystemError> {
    let (program, force, uuid_flag, label_flag) = match fstype {
        "ext2" | "ext3" | "ext4" => ("", "-F", "-U", "-L"),
        "xfs" => ("mkfs.xfs", "-f", "-m", "-L"),
        "vfat" => ("mkfs.vfat", "", "-i", "-n"),
        "btrfs" => ("mkfs.btrfs", "-f", "-U", "-L"),
        "f2fs" => ("mkfs.f2fs", "-f", "-U", "-l"),
        other => {
            return Err(SystemError::unexpected(format!(
                "cannot make a {other} filesystem on {dev}: keel makes ext2, ext3, ext4, xfs, \
                 vfat, btrfs and f2fs"
            )))
        }
    };
    let program = if program.is_empty() {
        format!("mkfs.{fstype}")
    } else {
        program.to_string()
    };
    let mut c = Cmd::new(&program, &[] as &[&str]).timeout(WRITE);
    if !force.is_empty() {
        c = c.arg(force);
    }
    if fstype != "vfat" {
        c = c.arg("-q");
    }
    if let Some(u) = uuid {
        let value = match fstype {
            "xfs" => format!("uuid={u}"),
            "vfat" => vfat_volume_id(u).ok_or_else(|| {
                SystemError::unexpected(format!(
                    "the FAT volume id {u} of {dev} is not 8 hex digits (XXXX-XXXX), so it \
                     cannot be kept"
                ))
            })?,
            _ => u.to_string(),
        };
        c = c.arg(uuid_flag).arg(value);
    }
    if let Some(l) = label {
        c = c.arg(label_flag).arg(l);
    }
    Ok(c.arg(dev))
}

/// An sfdisk script that writes `parts` as a `label` table with disk id `table_id`; `node`
/// names partition `n`'s device (sfdisk reads the number from it), sizes are in sectors of
/// `sector` bytes.
pub(crate) fn sfdisk_script(
    label: TableLabel,
    table_id: Option<&str>,
    parts: &[NewPartition],
    node: &dyn Fn(u32) -> String,
    sector: u64,
) -> Result<String, SystemError> {
    let gpt = label == TableLabel::Gpt;
    let mut s = format!("label: {}\n", label.as_str());
    if let Some(id) = table_id.filter(|i| !i.is_empty()) {
        if gpt {
            let _ = writeln!(s, "label-id: {id}");
        } else {
            let hex = id.trim_start_matches("0x");
            if hex.len() > 8 || u32::from_str_radix(hex, 16).is_err() {
                return Err(SystemError::unexpected(format!(
                    "the MBR disk identifier {id} is not 8 hex digits"
                )));
            }
            let _ = writeln!(s, "label-id: 0x{hex}");
        }
    }
    s.push_str("unit: sectors\n\n");
    for p in parts {
        if p.start_bytes % sector != 0 || p.size_bytes % sector != 0 {
            return Err(SystemError::unexpected(format!(
                "partition {} (start {}, size {}) is not in whole {sector}-byte sectors",
                p.number, p.start_bytes, p.size_bytes
            )));
        }
        let _ = write!(
            s,
            "{} : start={}, size={}",
            node(p.number),
            p.start_bytes / sector,
            p.size_bytes / sector
        );
        let t = p.part_type.trim();
        if !t.is_empty() {
            if gpt {
                let _ = write!(s, ", type={t}");
            } else {
                let hex = t.trim_start_matches("0x");
                if u8::from_str_radix(hex, 16).is_err() {
                    return Err(SystemError::unexpected(format!(
                        "partition {}: {t} is not an MBR partition type",
                        p.number
                    )));
                }
                let _ = write!(s, ", type={hex}");
            }
        }
        if gpt {
            if let Some(u) = &p.uuid {
                let _ = write!(s, ", uuid={u}");
            }
            if let Some(n) = &p.name {
                // The script has no escape for a quote inside a name.
                let _ = write!(s, ", name=\"{}\"", n.replace('"', "'"));
            }
            if !p.flags.is_empty() {
                let _ = write!(s, ", attrs=\"{}\"", p.flags.join(" "));
            }
        } else if p.flags.iter().any(|f| f == "bootable") {
            s.push_str(", bootable");
        }
        s.push('\n');
    }
    Ok(s)
}

/// Whether an MBR type is an extended partition (a container for logical ones).
pub(crate) fn is_extended(part_type: &str) -> bool {
    matches!(
        part_type.trim().trim_start_matches("0x"),
        "5" | "05" | "f" | "0f" | "85"
    )
}

/// A UUID as mdadm takes and shows it: 32 hex digits in four groups of eight, separated by
/// colons. blkid shows the same digits as a standard UUID.
pub(crate) fn mdadm_uuid(uuid: &str) -> Option<String> {
    let mut hex = String::new();
    for c in uuid.chars() {
        if c.is_ascii_hexdigit() {
            hex.push(c.to_ascii_lowercase());
        } else if !":-. ".contains(c) {
            return None;
        }
    }
    (hex.len() == 32).then(|| {
        format!(
            "{}:{}:{}:{}",
            &hex[0..8],
            &hex[8..16],
            &hex[16..24],
            &hex[24..32]
        )
    })
}

/// The same UUID in any of its forms: hex digits compared without separators or case.
pub(crate) fn same_uuid(a: &str, b: &str) -> bool {
    let digits = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    !a.is_empty() && digits(a) == digits(b)
}

/// Whether `uuid` is an LVM UUID (`HoisJx-XBq7-3Dky-kkAI-i9Uu-EQMo-tJK1WI`).
pub(crate) fn lvm_uuid_ok(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [6, 4, 4, 4, 4, 4, 6] || lens == [32])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// A FAT volume id as `mkfs.vfat -i` takes it: `ABCD-1234` → `ABCD1234`.
pub(crate) fn vfat_volume_id(uuid: &str) -> Option<String> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    (hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_uppercase())
}

/// The number in an md kernel name (`md1` → `1`), which mdadm names an array after.
fn md_number(name: &str) -> Option<&str> {
    let n = name.strip_prefix("md")?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then_some(n)
}

/// The fstab options to mount with while the system is rebuilt: those that only matter at
/// boot (`noauto`, `nofail`, `x-systemd.*`, `_netdev`, …) are dropped, and so are those that
/// would stop the rebuild writing (`ro`) or running what it installs (`noexec`, `nodev`,
/// `nosuid`). `None` when nothing is left.
pub(crate) fn mount_options(options: &str) -> Option<String> {
    const DROP: &[&str] = &[
        "defaults", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group",
        "_netdev", "ro", "rw", "noexec", "exec", "nodev", "dev", "nosuid", "suid", "loop", "sw",
    ];
    let kept: Vec<&str> = options
        .split(',')
        .map(str::trim)
        .filter(|o| {
            !o.is_empty()
                && !DROP.contains(o)
                && !o.starts_with("x-")
                && !o.starts_with("comment=")
                && !o.starts_with("pri=")
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::MIB;

    fn part(number: u32, start: u64, size: u64, t: &str) -> NewPartition {
        NewPartition {
            number,
            start_bytes: start,
            size_bytes: size,
            part_type: t.into(),
            name: None,
            uuid: None,
            flags: Vec::new(),
        }
    }

    #[test]
    fn gpt_script() {
        let mut bios = part(1, MIB, MIB, "21686148-6449-6e6f-744e-656564454649");
        bios.name = Some("bios \"boot\"".into());
        bios.uuid = Some("c88c76cf-4bf8-5242-ac2d-c858a901fe99".into());
        bios.flags = vec!["LegacyBIOSBootable".into(), "GUID:48,63".into()];
        let root = part(
            2,
            2 * MIB,
            100 * MIB,
            "0fc63daf-8483-4772-8e79-3d69d8477de4",
        );
        let s = sfdisk_script(
            TableLabel::Gpt,
            Some("5b2c0c6e-7d3a-4c0f-9a51-2d7a1e0b9c11"),
            &[bios, root],
            &|n| partition_path("/dev/loop3", n),
            512,
        )
        .unwrap();
        assert_eq!(
            s,
            "label: gpt\nlabel-id: 5b2c0c6e-7d3a-4c0f-9a51-2d7a1e0b9c11\nunit: sectors\n\n\
             /dev/loop3p1 : start=2048, size=2048, type=21686148-6449-6e6f-744e-656564454649, \
             uuid=c88c76cf-4bf8-5242-ac2d-c858a901fe99, name=\"bios 'boot'\", \
             attrs=\"LegacyBIOSBootable GUID:48,63\"\n\
             /dev/loop3p2 : start=4096, size=204800, type=0fc63daf-8483-4772-8e79-3d69d8477de4\n"
        );
        // 4 KiB sectors.
        let s = sfdisk_script(
            TableLabel::Gpt,
            None,
            &[part(1, MIB, MIB, "x")],
            &|n| partition_path("/dev/sda", n),
            4096,
        )
        .unwrap();
        assert!(s.contains("/dev/sda1 : start=256, size=256"), "{s}");
        let e = sfdisk_script(
            TableLabel::Gpt,
            None,
            &[part(1, 1000, MIB, "x")],
            &|n| n.to_string(),
            512,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not in whole 512-byte sectors"),
            "{e}"
        );
    }

    #[test]
    fn mbr_script() {
        let mut boot = part(1, MIB, 256 * MIB, "0x83");
        boot.flags = vec!["bootable".into()];
        boot.uuid = Some("1a2b3c4d-01".into());
        let ext = part(2, 257 * MIB, 600 * MIB, "0x05");
        let root = part(5, 258 * MIB, 500 * MIB, "0x83");
        let swap = part(6, 759 * MIB, 98 * MIB, "0x82");
        let s = sfdisk_script(
            TableLabel::Dos,
            Some("1a2b3c4d"),
            &[boot, ext, root, swap],
            &|n| partition_path("/dev/vdb", n),
            512,
        )
        .unwrap();
        assert_eq!(
            s,
            "label: dos\nlabel-id: 0x1a2b3c4d\nunit: sectors\n\n\
             /dev/vdb1 : start=2048, size=524288, type=83, bootable\n\
             /dev/vdb2 : start=526336, size=1228800, type=05\n\
             /dev/vdb5 : start=528384, size=1024000, type=83\n\
             /dev/vdb6 : start=1554432, size=200704, type=82\n"
        );
        assert!(sfdisk_script(TableLabel::Dos, Some("xyz"), &[], &|n| n.to_string(), 512).is_err());
        assert!(sfdisk_script(
            TableLabel::Dos,
            None,
            &[part(1, MIB, MIB, "0fc63daf-8483-4772-8e79-3d69d8477de4")],
            &|n| n.to_string(),
            512
        )
        .is_err());
        assert!(is_extended("0x05") && is_extended("0x0f") && !is_extended("0x83"));
    }

    #[test]
    fn uuid_forms() {
        assert_eq!(
            mdadm_uuid("4d5cf215-8002-4c95-e19f-dff42fba35a8").as_deref(),
            Some("4d5cf215:80024c95:e19fdff4:2fba35a8")
        );
        assert_eq!(
            mdadm_uuid("4D5CF215:80024C95:E19FDFF4:2FBA35A8").as_deref(),
            Some("4d5cf215:80024c95:e19fdff4:2fba35a8")
        );
        assert_eq!(mdadm_uuid("name:md0"), None);
        assert_eq!(mdadm_uuid("4d5cf215"), None);
        assert!(same_uuid(
            "4d5cf215:80024c95:e19fdff4:2fba35a8",
            "4D5CF215-8002-4C95-E19F-DFF42FBA35A8"
        ));
        assert!(!same_uuid("", ""));
        assert!(lvm_uuid_ok("HoisJx-XBq7-3Dky-kkAI-i9Uu-EQMo-tJK1WI"));
        assert!(!lvm_uuid_ok("SAMPLE-vg0"));
        assert_eq!(vfat_volume_id("ab12-CD34").as_deref(), Some("AB12CD34"));
        assert_eq!(vfat_volume_id("0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5"), None);
    }

    #[test]
    fn mount_options_for_the_rebuild() {
        assert_eq!(mount_options("defaults"), None);
        assert_eq!(
            mount_options("errors=remount-ro"),
            Some("errors=remount-ro".into())
        );
        assert_eq!(
            mount_options("rw,nosuid,nodev,noexec,relatime,x-systemd.automount,nofail"),
            Some("relatime".into())
        );
        assert_eq!(
            mount_options("ro,umask=0077,shortname=mixed"),
            Some("umask=0077,shortname=mixed".into())
        );
    }

    fn names(d: &Device) -> String {
        d.to_string()
    }

    fn line(step: &Step, cx: &Context<'_>) -> Vec<String> {
        commands(step, &names, cx)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn command_lines() {
        let cx = Context {
            luks_key_file: Some(Path::new("/kit/luks.key")),
            homehost: Some("web-01"),
            target_root: Some(Path::new("/mnt/keel-target")),
            sector_size: 512,
            stripes: Some(2),
        };
        let p = |disk: &str, number| Device::Partition {
            disk: disk.into(),
            number,
        };
        let raid = Step::CreateRaid {
            device: Device::Md { name: "md1".into() },
            level: "raid1".into(),
            devices: vec![p("/dev/vda", 2), p("/dev/vdb", 2)],
            missing: 1,
            spares: vec![p("/dev/vdc", 2)],
            uuid: Some("00000301-0000-4000-8000-000000000301".into()),
            metadata: Some("1.2".into()),
            size_bytes: 0,
        };
        assert_eq!(
            line(&raid, &cx),
            [
                "mdadm --create /dev/md1 --run --level=raid1 --raid-devices=3 --metadata=1.2 \
                 --bitmap=internal --uuid=00000301:00004000:80000000:00000301 \
                 --homehost=web-01 --name=1 /dev/vda2 /dev/vdb2 missing --spare-devices=1 \
                 /dev/vdc2"
            ]
        );
        let luks = Step::CreateLuks {
            device: Device::Md { name: "md1".into() },
            name: "cryptroot".into(),
            uuid: "2f1b6a44-8c3e-4d1f-9b7a-5e6d7c8b9a01".into(),
            version: 2,
            cipher: Some("aes-xts-plain64".into()),
            label: Some("root".into()),
        };
        assert_eq!(
            line(&luks, &cx),
            [
                "cryptsetup luksFormat --batch-mode --type luks2 --uuid \
                 2f1b6a44-8c3e-4d1f-9b7a-5e6d7c8b9a01 --key-file /kit/luks.key --cipher \
                 aes-xts-plain64 --label root /dev/md1",
                "cryptsetup open --type luks --key-file /kit/luks.key /dev/md1 cryptroot"
            ]
        );
        let cfg = crate::cmd::quote(LVM_CONFIG);
        let pv = Step::CreatePv {
            device: Device::Crypt {
                name: "cryptroot".into(),
            },
            uuid: Some("HoisJx-XBq7-3Dky-kkAI-i9Uu-EQMo-tJK1WI".into()),
        };
        assert_eq!(
            line(&pv, &cx),
            [format!(
                "pvcreate --config {cfg} --yes --uuid HoisJx-XBq7-3Dky-kkAI-i9Uu-EQMo-tJK1WI \
                 --norestorefile /dev/mapper/cryptroot"
            )]
        );
        let bad_pv = Step::CreatePv {
            device: Device::Md { name: "md1".into() },
            uuid: Some("SAMPLE-pv".into()),
        };
        let e = commands(&bad_pv, &names, &cx).unwrap_err().to_string();
        assert!(e.contains("is not an LVM UUID"), "{e}");
        let vg = Step::CreateVg {
            name: "vg0".into(),
            pvs: vec![Device::Crypt {
                name: "cryptroot".into(),
            }],
            extent_size: 4 * MIB,
        };
        assert_eq!(
            line(&vg, &cx),
            [format!(
                "vgcreate --config {cfg} --yes --physicalextentsize 4096k vg0 /dev/mapper/cryptroot"
            )]
        );
        let lv = Step::CreateLv {
            vg: "vg0".into(),
            name: "srv".into(),
            size_bytes: 512 * MIB,
            segtype: "striped".into(),
        };
        assert_eq!(
            line(&lv, &cx),
            [format!(
                "lvcreate --config {cfg} --yes --wipesignatures y --zero y --size 524288k --name \
                 srv --type striped --stripes 2 vg0"
            )]
        );
        let fs = |fstype: &str, uuid: &str, label: Option<&str>| Step::Mkfs {
            device: p("/dev/vda", 1),
            fstype: fstype.into(),
            uuid: Some(uuid.into()),
            label: label.map(Into::into),
        };
        assert_eq!(
            line(
                &fs("ext4", "0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5", Some("root")),
                &cx
            ),
            ["mkfs.ext4 -F -q -U 0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5 -L root /dev/vda1"]
        );
        assert_eq!(
            line(
                &fs("xfs", "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", None),
                &cx
            ),
            ["mkfs.xfs -f -q -m uuid=9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a /dev/vda1"]
        );
        assert_eq!(
            line(&fs("vfat", "AB12-CD34", Some("EFI")), &cx),
            ["mkfs.vfat -i AB12CD34 -n EFI /dev/vda1"]
        );
        assert!(commands(&fs("zfs", "x", None), &names, &cx).is_err());
        let swap = Step::Mkswap {
            device: p("/dev/vda", 3),
            uuid: Some("9f347fc7-1605-4788-98fd-fca828beedf1".into()),
            label: Some("swap".into()),
        };
        assert_eq!(
            line(&swap, &cx),
            ["mkswap --force --uuid 9f347fc7-1605-4788-98fd-fca828beedf1 --label swap /dev/vda3"]
        );
        let mount = Step::Mount {
            device: Device::Lv {
                vg: "vg0".into(),
                lv: "srv".into(),
            },
            mountpoint: "/srv".into(),
            fstype: "xfs".into(),
            options: "defaults,noatime".into(),
        };
        assert_eq!(
            line(&mount, &cx),
            ["mount -t xfs -o noatime /dev/vg0/srv /mnt/keel-target/srv"]
        );
        let table = Step::PartitionTable {
            disk: Device::Disk {
                disk: "/dev/vda".into(),
            },
            label: TableLabel::Gpt,
            table_id: None,
            partitions: vec![part(1, MIB, MIB, "x")],
        };
        let c = commands(&table, &names, &cx).unwrap();
        assert_eq!(
            c[0].to_string(),
            "sfdisk --quiet --no-reread --no-tell-kernel --wipe always --wipe-partitions never \
             /dev/vda < SCRIPT"
        );
        assert_eq!(
            c[0].input.as_deref(),
            Some("label: gpt\nunit: sectors\n\n/dev/vda1 : start=2048, size=2048, type=x\n")
        );
    }
}
