//! `storage.devices`: the disks, layouts, filesystems and mounts that hold the captured root.
//!
//! For the running system that is every disk. For an offline root it is only the storage stack
//! under the mounts at and below the root directory (an image attached with `losetup` and
//! `partx -a`, mounted at DIR with DIR/boot/efi and so on), found by following sysfs links from
//! the mounted devices, so the host's own disks never describe someone else's system. A root
//! that is a plain directory on the host's filesystem has no devices of its own at all.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_profile::{
    Disk, Filesystem, Luks, LvmLv, LvmPv, LvmVg, MdArray, Mount, Partition, Swap, Usage,
};

use super::blkid::{ext_fs_size, parse_blkid_export, Probe};
use super::exec::{exec, par_map, Output};
use super::luks::parse_luks_dump;
use super::lvm::{parse_report, FULLREPORT_ARGS};
use super::mdstat::{parse_mdstat, MdMember};
use super::mountinfo::{classify, parse_mountinfo, relative_to, visible, FsClass, MountInfo};
use super::sfdisk::{parse_sfdisk_json, PartTable};
use super::swaps::parse_proc_swaps;
use super::sysfs::{dev_path, BlockDev, Kind, Sys};
use super::usage::{measure, Target};
use crate::{have, CollectError, Ctx, Piece};

/// The tables `storage.devices` fills.
#[derive(Debug, Default)]
struct Tables {
    disks: Vec<Disk>,
    partitions: Vec<Partition>,
    md_arrays: Vec<MdArray>,
    lvm_pvs: Vec<LvmPv>,
    lvm_vgs: Vec<LvmVg>,
    lvm_lvs: Vec<LvmLv>,
    luks: Vec<Luks>,
    filesystems: Vec<Filesystem>,
    mounts: Vec<Mount>,
    usage: Vec<Usage>,
    swaps: Vec<Swap>,
}

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let (t, warnings) = describe(
        &Sys::host(),
        ctx.root.dir(),
        ctx.root.is_live(),
        ctx.timeout,
    )?;
    Ok(Piece::new(move |file: &mut keel_profile::ProfileFile| {
        let s = &mut file.profile.storage;
        s.disks = t.disks;
        s.partitions = t.partitions;
        s.md_arrays = t.md_arrays;
        s.lvm_pvs = t.lvm_pvs;
        s.lvm_vgs = t.lvm_vgs;
        s.lvm_lvs = t.lvm_lvs;
        s.luks = t.luks;
        s.filesystems = t.filesystems;
        s.mounts = t.mounts;
        s.usage = t.usage;
        s.swaps = t.swaps;
    })
    .warn(warnings))
}

/// One probing command.
enum Probing {
    /// `sfdisk --json` of a disk.
    Table(String),
    /// `blkid -p` of a device.
    Signature(String),
}

/// Commands that need the signatures first.
enum Detail {
    Lvm,
    LuksDump(String),
}

fn describe(
    sys: &Sys,
    dir: &Path,
    live: bool,
    timeout: Duration,
) -> Result<(Tables, Vec<String>), CollectError> {
    let mut warnings = Vec::new();
    let info_path = sys.path("/proc/self/mountinfo");
    let text = std::fs::read_to_string(&info_path).map_err(|e| CollectError::io(&info_path, e))?;
    let all = visible(parse_mountinfo(&text)?);
    // The mounts that make up the root, with their mountpoints as the root sees them.
    let mounts: Vec<(String, &MountInfo)> = all
        .iter()
        .filter(|m| classify(&m.fstype) != FsClass::Pseudo)
        .filter_map(|m| Some((relative_to(dir, &m.mountpoint)?, m)))
        .collect();
    if !live {
        if let Some(why) = offline_root_problem(dir, &all) {
            return Ok((Tables::default(), vec![why]));
        }
    }

    let devs = sys.block_devices();
    let relevant: Option<BTreeSet<String>> = (!live).then(|| {
        let seeds: Vec<String> = mounts
            .iter()
            .filter_map(|(_, m)| mount_device(sys, m))
            .collect();
        sys.related(&seeds, &devs)
    });
    let wanted = |name: &str| relevant.as_ref().is_none_or(|r| r.contains(name));
    let chosen: Vec<&BlockDev> = devs
        .iter()
        .filter(|d| d.ignored.is_none() && wanted(&d.name))
        .collect();

    let cmd_timeout = (timeout / 2).min(Duration::from_secs(10));
    let (tables, probes) = probe(&chosen, cmd_timeout, &mut warnings);
    let mut t = Tables::default();
    lvm_and_luks(sys, &chosen, &probes, cmd_timeout, &mut t, &mut warnings);
    if !live {
        // Keep the volume groups with a physical volume under the root, and all their parts.
        t.lvm_pvs
            .retain(|pv| sys.name_of_path(&pv.device).is_some_and(|n| wanted(&n)));
        let vgs: BTreeSet<&str> = t.lvm_pvs.iter().map(|pv| pv.vg.as_str()).collect();
        t.lvm_vgs.retain(|vg| vgs.contains(vg.name.as_str()));
        t.lvm_lvs.retain(|lv| vgs.contains(lv.vg.as_str()));
    }

    // Disks and their partitions.
    for d in chosen.iter().filter(|d| is_disk(d)) {
        let mut disk = sys.disk_record(d);
        let table = tables.get(&d.name);
        let whole = probes.get(&d.name);
        disk.pttype = table
            .map(|t| t.pttype.clone())
            .or_else(|| whole.and_then(|p| p.get("PTTYPE").cloned()));
        disk.ptuuid = table
            .and_then(|t| t.ptuuid.clone())
            .or_else(|| whole.and_then(|p| p.get("PTUUID").cloned()));
        t.partitions
            .extend(partitions_of(&disk.id, d, table, &probes));
        t.disks.push(disk);
    }

    t.md_arrays = md_arrays(sys, &probes, wanted);
    t.filesystems = filesystems(sys, &probes);

    // Mounts and their usage.
    let mut targets = Vec::new();
    for (rel, m) in &mounts {
        let uuid = mount_device(sys, m)
            .and_then(|n| probes.get(&n))
            .and_then(|p| p.get("UUID"))
            .cloned();
        t.mounts.push(Mount {
            mountpoint: rel.clone(),
            source: m.source.clone(),
            fstype: m.fstype.clone(),
            options: m.options(),
            uuid,
        });
        if classify(&m.fstype) == FsClass::Local {
            targets.push(Target {
                mountpoint: rel.clone(),
                host_path: PathBuf::from(&m.mountpoint),
            });
        }
    }
    let (usage, usage_warnings) = measure(targets, (timeout / 4).min(Duration::from_secs(5)));
    t.usage = usage;
    warnings.extend(usage_warnings);

    t.swaps = swaps(sys, dir, live, wanted);
    Ok((t, warnings))
}

/// Partition tables and signatures: one sfdisk per disk, one blkid per device that can hold
/// a filesystem, run a few at a time. Returns the tables and the signatures by kernel name.
fn probe(
    chosen: &[&BlockDev],
    cmd_timeout: Duration,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, PartTable>, BTreeMap<String, Probe>) {
    let sfdisk = have("sfdisk");
    let blkid = have("blkid");
    if chosen.iter().any(|d| is_disk(d)) {
        if !sfdisk {
            warnings.push(
                "sfdisk (util-linux) is not installed: partition tables are read from blkid \
                 and sysfs"
                    .into(),
            );
        }
        if !blkid {
            warnings.push(
                "blkid (util-linux) is not installed: filesystem types, UUIDs and labels are \
                 not recorded"
                    .into(),
            );
        }
    }
    let mut jobs = Vec::new();
    for d in chosen {
        if is_disk(d) && sfdisk {
            jobs.push(Probing::Table(d.name.clone()));
        }
        if !blkid {
            continue;
        }
        // A disk with partitions holds its filesystems there; its own signature is only its
        // partition table, which sfdisk reads.
        if d.partitions.is_empty() || !is_disk(d) || !sfdisk {
            jobs.push(Probing::Signature(d.name.clone()));
        }
        // An extended partition shows as 2 sectors and holds nothing.
        for p in d.partitions.iter().filter(|p| p.size_sectors > 2) {
            jobs.push(Probing::Signature(p.name.clone()));
        }
    }
    let outputs = par_map(&jobs, |j| match j {
        Probing::Table(n) => exec("sfdisk", &["--json", &dev_path(n)], cmd_timeout),
        Probing::Signature(n) => exec("blkid", &["-p", "-o", "export", &dev_path(n)], cmd_timeout),
    });
    let mut tables: BTreeMap<String, PartTable> = BTreeMap::new();
    let mut probes: BTreeMap<String, Probe> = BTreeMap::new();
    for (job, out) in jobs.iter().zip(outputs) {
        match (job, out) {
            (Probing::Table(n), Ok(o)) if o.success() => match parse_sfdisk_json(&o.stdout) {
                Ok(t) => {
                    tables.insert(n.clone(), t);
                }
                Err(e) => warnings.push(format!("partition table of {}: {e}", dev_path(n))),
            },
            // A disk used whole (a filesystem or PV on it) has no table: nothing to report.
            (Probing::Table(_), Ok(o))
                if o.stderr
                    .contains("does not contain a recognized partition table") => {}
            (Probing::Table(n), Ok(o)) => warnings.push(format!(
                "cannot read the partition table of {}: {}; its partitions are described from \
                 sysfs",
                dev_path(n),
                o.why()
            )),
            (Probing::Signature(n), Ok(o)) if o.success() => {
                if let Some(p) = parse_blkid_export(&o.stdout).into_iter().next() {
                    probes.insert(n.clone(), p);
                }
            }
            // blkid exits 2 without a word when a device carries no signature.
            (Probing::Signature(_), Ok(o)) if no_signature(&o) => {}
            (Probing::Signature(n), Ok(o)) => warnings.push(format!(
                "cannot probe {} for a filesystem: {}",
                dev_path(n),
                o.why()
            )),
            (_, Err(e)) => warnings.push(e.to_string()),
        }
    }

    (tables, probes)
}

/// LVM and LUKS, only where the signatures (or device-mapper) say they are in use: one
/// `lvm fullreport` and one `cryptsetup luksDump` per LUKS device.
fn lvm_and_luks(
    sys: &Sys,
    chosen: &[&BlockDev],
    probes: &BTreeMap<String, Probe>,
    cmd_timeout: Duration,
    t: &mut Tables,
    warnings: &mut Vec<String>,
) {
    let lvm_in_use = probes.values().any(|p| signature(p) == Some("LVM2_member"))
        || chosen.iter().any(|d| {
            d.kind == Kind::Dm
                && sys
                    .attr(&format!("/sys/block/{}/dm/uuid", d.name))
                    .is_some_and(|u| u.starts_with("LVM-"))
        });
    let have_lvm = have("lvm");
    if lvm_in_use && !have_lvm {
        warnings.push(
            "LVM is in use but the lvm2 tools are not installed: physical volumes, volume \
             groups and logical volumes are not recorded"
                .into(),
        );
    }
    let luks_devices: Vec<&String> = probes
        .iter()
        .filter(|(_, p)| signature(p) == Some("crypto_LUKS"))
        .map(|(n, _)| n)
        .collect();
    let have_cryptsetup = have("cryptsetup");
    if !luks_devices.is_empty() && !have_cryptsetup {
        warnings.push(
            "cryptsetup is not installed: LUKS headers are described from blkid only, \
             without cipher or keyslots"
                .into(),
        );
    }
    let mut details = Vec::new();
    if lvm_in_use && have_lvm {
        details.push(Detail::Lvm);
    }
    if have_cryptsetup {
        details.extend(luks_devices.iter().map(|n| Detail::LuksDump((*n).clone())));
    }
    let detail_out = par_map(&details, |d| match d {
        Detail::Lvm => exec("lvm", FULLREPORT_ARGS, cmd_timeout),
        Detail::LuksDump(n) => exec("cryptsetup", &["luksDump", &dev_path(n)], cmd_timeout),
    });

    let mut luks_dumps: BTreeMap<String, Luks> = BTreeMap::new();
    for (d, out) in details.iter().zip(detail_out) {
        let text = match out {
            Ok(o) if o.success() => o.stdout,
            Ok(o) => {
                warnings.push(format!("`{}` failed: {}", detail_name(d), o.why()));
                continue;
            }
            Err(e) => {
                warnings.push(e.to_string());
                continue;
            }
        };
        let parsed = match d {
            Detail::Lvm => parse_report(&text).map(|r| {
                t.lvm_pvs = r.pvs;
                t.lvm_vgs = r.vgs;
                t.lvm_lvs = r.lvs;
            }),
            Detail::LuksDump(n) => parse_luks_dump(&text).map(|h| {
                luks_dumps.insert(
                    n.clone(),
                    Luks {
                        uuid: h.uuid,
                        device: dev_path(n),
                        version: h.version,
                        cipher: h.cipher,
                        keyslots: h.keyslots,
                        label: h.label,
                    },
                );
            }),
        };
        if let Err(e) = parsed {
            warnings.push(format!("{}: {e}", detail_name(d)));
        }
    }
    for n in luks_devices {
        let luks = luks_dumps.remove(n).unwrap_or_else(|| {
            let p = &probes[n];
            Luks {
                uuid: p.get("UUID").cloned().unwrap_or_default(),
                device: dev_path(n),
                version: p.get("VERSION").and_then(|v| v.parse().ok()).unwrap_or(0),
                cipher: None,
                keyslots: 0,
                label: p.get("LABEL").cloned(),
            }
        });
        t.luks.push(luks);
    }
}

/// Software RAID arrays from `/proc/mdstat`, with their UUID from a member's signature.
fn md_arrays(
    sys: &Sys,
    probes: &BTreeMap<String, Probe>,
    wanted: impl Fn(&str) -> bool,
) -> Vec<MdArray> {
    let mut arrays = Vec::new();
    let mdstat = std::fs::read_to_string(sys.path("/proc/mdstat")).unwrap_or_default();
    for st in parse_mdstat(&mdstat) {
        if !wanted(&st.name) {
            continue;
        }
        let md = format!("/sys/block/{}", st.name);
        let member_uuid = st.members.iter().find_map(|m| {
            let p = probes.get(&m.name)?;
            (signature(p) == Some("linux_raid_member")).then(|| p.get("UUID").cloned())?
        });
        let size = sys
            .attr(&format!("{md}/size"))
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(|s| s * 512);
        arrays.push(MdArray {
            uuid: member_uuid
                .or_else(|| sys.attr(&format!("{md}/md/uuid")))
                .unwrap_or_else(|| format!("name:{}", st.name)),
            level: st
                .level
                .clone()
                .or_else(|| sys.attr(&format!("{md}/md/level")))
                .unwrap_or_default(),
            metadata: st
                .metadata
                .clone()
                .or_else(|| sys.attr(&format!("{md}/md/metadata_version"))),
            devices: st.members.iter().map(MdMember::describe).collect(),
            size_bytes: size.or(st.blocks.map(|b| b * 1024)).unwrap_or(0),
            state: Some(st.state.clone()),
            name: st.name,
        });
    }

    arrays
}

/// Filesystems and other signatures.
fn filesystems(sys: &Sys, probes: &BTreeMap<String, Probe>) -> Vec<Filesystem> {
    let mut out = Vec::new();
    let mut uuid_uses: BTreeMap<&str, usize> = BTreeMap::new();
    for p in probes.values() {
        if let (Some(_), Some(u)) = (signature(p), p.get("UUID")) {
            *uuid_uses.entry(u.as_str()).or_default() += 1;
        }
    }
    for (name, p) in probes {
        let Some(fstype) = signature(p) else { continue };
        // An md member or a multi-device btrfs shares its set's UUID with the other members:
        // each row then carries the device's own UUID_SUB, so rows stay distinct.
        let uuid = p
            .get("UUID")
            .map(|u| match p.get("UUID_SUB") {
                Some(sub) if uuid_uses.get(u.as_str()).copied().unwrap_or(0) > 1 => sub,
                _ => u,
            })
            .cloned();
        let size_bytes = p.get("FSSIZE").and_then(|s| s.parse().ok()).or_else(|| {
            fstype
                .starts_with("ext")
                .then(|| read_ext_size(&sys.path(&dev_path(name))))
                .flatten()
        });
        out.push(Filesystem {
            uuid,
            device: device_display(sys, name),
            fstype: fstype.to_string(),
            label: p.get("LABEL").cloned(),
            size_bytes,
        });
    }

    out
}

/// Active swap: for an offline root, only areas on its devices or inside it.
fn swaps(sys: &Sys, dir: &Path, live: bool, wanted: impl Fn(&str) -> bool) -> Vec<Swap> {
    let mut out = Vec::new();
    let swaps = std::fs::read_to_string(sys.path("/proc/swaps")).unwrap_or_default();
    for mut s in parse_proc_swaps(&swaps) {
        if !live {
            if s.kind == "file" {
                let Some(rel) = relative_to(dir, &s.device) else {
                    continue;
                };
                s.device = rel;
            } else if !sys.name_of_path(&s.device).is_some_and(|n| wanted(&n)) {
                continue;
            }
        }
        out.push(s);
    }
    out
}

/// Why an offline root has no devices to describe, if it has none.
fn offline_root_problem(dir: &Path, all: &[MountInfo]) -> Option<String> {
    let here = all.iter().find(|m| Path::new(&m.mountpoint) == dir);
    match here {
        None => Some(format!(
            "root {} is a directory on the host's filesystem, not a mounted disk: no devices \
             describe it, so disks, partitions, filesystems and mounts are left empty \
             (hint: to record them, mount the system's disk or image and give its mountpoint as \
             the root)",
            dir.display()
        )),
        Some(m) if classify(&m.fstype) == FsClass::Pseudo => Some(format!(
            "root {} is a {} mount, which no disk backs: no devices describe it",
            dir.display(),
            m.fstype
        )),
        Some(_) => None,
    }
}

/// The kernel name of the block device a mount comes from.
fn mount_device(sys: &Sys, m: &MountInfo) -> Option<String> {
    if m.major != 0 {
        if let Some(n) = sys.name_of_dev(m.major, m.minor) {
            return Some(n);
        }
    }
    // btrfs reports an anonymous device number; its source names the device.
    sys.name_of_path(&m.source)
}

/// A disk in the sense of the `disks` table: something with (room for) a partition table.
fn is_disk(d: &BlockDev) -> bool {
    matches!(d.kind, Kind::Disk | Kind::Loop)
}

fn signature(p: &Probe) -> Option<&str> {
    p.get("TYPE").map(String::as_str)
}

fn no_signature(o: &Output) -> bool {
    o.code == Some(2) && o.stderr.trim().is_empty()
}

fn detail_name(d: &Detail) -> String {
    match d {
        Detail::Lvm => "lvm fullreport".into(),
        Detail::LuksDump(n) => format!("cryptsetup luksDump {}", dev_path(n)),
    }
}

/// How a device is named in the profile: device-mapper devices by their mapper name, which
/// survives a reboot, others by their kernel name.
fn device_display(sys: &Sys, name: &str) -> String {
    if name.starts_with("dm-") {
        if let Some(m) = sys.dm_name(name) {
            return format!("/dev/mapper/{m}");
        }
    }
    dev_path(name)
}

/// Reads the ext superblock of a device for its filesystem size.
fn read_ext_size(dev: &Path) -> Option<u64> {
    let f = std::fs::File::open(dev).ok()?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024).ok()?;
    ext_fs_size(&sb)
}

/// A disk's partitions: the on-disk table wins (it is what recovery recreates); the kernel's
/// view and blkid's partition entry fill in where the table could not be read.
fn partitions_of(
    disk_id: &str,
    d: &BlockDev,
    table: Option<&PartTable>,
    probes: &BTreeMap<String, Probe>,
) -> Vec<Partition> {
    let mut numbers: BTreeSet<u32> = d.partitions.iter().map(|p| p.number).collect();
    if let Some(t) = table {
        numbers.extend(t.parts.iter().map(|p| p.number));
    }
    numbers
        .into_iter()
        .map(|n| {
            let node = d.partitions.iter().find(|p| p.number == n);
            let tp = table.and_then(|t| t.parts.iter().find(|p| p.number == n));
            let probe = node.and_then(|p| probes.get(&p.name));
            let entry = |k: &str| probe.and_then(|p| p.get(k)).cloned();
            let entry_num = |k: &str| entry(k).and_then(|v| v.parse::<u64>().ok());
            Partition {
                disk: disk_id.to_string(),
                number: n,
                name: node.map_or_else(|| partition_name(&d.name, n), |p| p.name.clone()),
                start: tp
                    .map(|t| t.start)
                    .or_else(|| entry_num("PART_ENTRY_OFFSET"))
                    .or(node.map(|p| p.start))
                    .unwrap_or(0),
                size_bytes: tp
                    .map(|t| t.size_bytes)
                    .or_else(|| entry_num("PART_ENTRY_SIZE").map(|s| s * 512))
                    .or(node.map(|p| p.size_sectors * 512))
                    .unwrap_or(0),
                part_type: tp
                    .map(|t| t.part_type.clone())
                    .or_else(|| entry("PART_ENTRY_TYPE"))
                    .unwrap_or_default(),
                partuuid: tp.map_or_else(|| entry("PART_ENTRY_UUID"), |t| t.partuuid.clone()),
                partlabel: tp.map_or_else(|| entry("PART_ENTRY_NAME"), |t| t.partlabel.clone()),
                flags: tp.map_or_else(
                    || {
                        entry("PART_ENTRY_FLAGS")
                            .map(|f| entry_flags(entry("PART_ENTRY_SCHEME").as_deref(), &f))
                            .unwrap_or_default()
                    },
                    |t| t.flags.clone(),
                ),
            }
        })
        .collect()
}

/// The kernel's name for partition `n` of `disk` (`sda` → `sda1`, `nvme0n1` → `nvme0n1p1`).
fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// blkid's `PART_ENTRY_FLAGS` as the names sfdisk gives them.
fn entry_flags(scheme: Option<&str>, flags: &str) -> Vec<String> {
    let Ok(bits) = u64::from_str_radix(flags.trim_start_matches("0x"), 16) else {
        return Vec::new();
    };
    if scheme == Some("dos") {
        return if bits & 0x80 != 0 {
            vec!["bootable".into()]
        } else {
            Vec::new()
        };
    }
    let mut out = Vec::new();
    for (bit, name) in [
        (0, "RequiredPartition"),
        (1, "NoBlockIOProtocol"),
        (2, "LegacyBIOSBootable"),
    ] {
        if bits & (1 << bit) != 0 {
            out.push(name.to_string());
        }
    }
    let guid: Vec<String> = (48..64)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| b.to_string())
        .collect();
    if !guid.is_empty() {
        out.push(format!("GUID:{}", guid.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::sysfs::PartNode;
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/storage/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(p).unwrap()
    }

    fn loop0() -> BlockDev {
        let part = |number: u32, start: u64, size_sectors: u64| PartNode {
            name: format!("loop0p{number}"),
            number,
            start,
            size_sectors,
        };
        BlockDev {
            name: "loop0".into(),
            kind: Kind::Loop,
            size_sectors: 131_072,
            partitions: vec![
                part(1, 2048, 2048),
                part(2, 4096, 81920),
                part(3, 86016, 43008),
            ],
            ignored: None,
        }
    }

    fn probes() -> BTreeMap<String, Probe> {
        ["blkid-bios-boot.txt", "blkid-ext4.txt"]
            .iter()
            .flat_map(|f| parse_blkid_export(&fixture(f)))
            .map(|p| (p["DEVNAME"].trim_start_matches("/dev/").to_string(), p))
            .collect()
    }

    #[test]
    fn partitions_from_the_table() {
        let table = parse_sfdisk_json(&fixture("sfdisk-gpt.json")).unwrap();
        let parts = partitions_of("loop:/img", &loop0(), Some(&table), &probes());
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[1],
            Partition {
                disk: "loop:/img".into(),
                number: 2,
                name: "loop0p2".into(),
                start: 4096,
                size_bytes: 40 * 1024 * 1024,
                part_type: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                partuuid: Some("0e0c1d4f-3a5b-4c6d-8e7f-901122334455".into()),
                partlabel: Some("keel root".into()),
                flags: vec!["RequiredPartition".into(), "GUID:63".into()],
            }
        );
    }

    #[test]
    fn partitions_without_sfdisk_agree_with_it() {
        let table = parse_sfdisk_json(&fixture("sfdisk-gpt.json")).unwrap();
        let from_table = partitions_of("d", &loop0(), Some(&table), &probes());
        let from_blkid = partitions_of("d", &loop0(), None, &probes());
        // blkid probed partitions 1 and 2; partition 3 has only the kernel's view.
        assert_eq!(from_blkid[..2], from_table[..2]);
        assert_eq!(from_blkid[2].start, 86016);
        assert_eq!(from_blkid[2].size_bytes, 43008 * 512);
        assert_eq!(from_blkid[2].part_type, "");
    }

    #[test]
    fn table_partitions_the_kernel_does_not_know() {
        let table = parse_sfdisk_json(&fixture("sfdisk-dos.json")).unwrap();
        let disk = BlockDev {
            name: "sdb".into(),
            kind: Kind::Disk,
            size_sectors: 131_072,
            partitions: Vec::new(),
            ignored: None,
        };
        let parts = partitions_of("serial:X", &disk, Some(&table), &BTreeMap::new());
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sdb1", "sdb2", "sdb3", "sdb5"]);
        assert_eq!(
            parts[2].size_bytes,
            30720 * 512,
            "the extended partition's real size"
        );
    }

    #[test]
    fn blkid_flags() {
        assert_eq!(entry_flags(Some("gpt"), "0x4"), ["LegacyBIOSBootable"]);
        assert_eq!(
            entry_flags(Some("gpt"), "0x8000000000000001"),
            ["RequiredPartition", "GUID:63"]
        );
        assert_eq!(
            entry_flags(Some("gpt"), "0x9001000000000007"),
            [
                "RequiredPartition",
                "NoBlockIOProtocol",
                "LegacyBIOSBootable",
                "GUID:48,60,63"
            ]
        );
        assert_eq!(entry_flags(Some("dos"), "0x80"), ["bootable"]);
        assert!(entry_flags(Some("dos"), "0x0").is_empty());
        assert!(entry_flags(Some("gpt"), "junk").is_empty());
    }

    #[test]
    fn partition_names() {
        assert_eq!(partition_name("sda", 1), "sda1");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(partition_name("loop3", 1), "loop3p1");
    }

    #[test]
    fn plain_directory_root() {
        let m = parse_mountinfo(&fixture("mountinfo.txt")).unwrap();
        let why = offline_root_problem(Path::new("/srv/chroot"), &m).unwrap();
        assert!(why.contains("not a mounted disk"), "{why}");
        let why = offline_root_problem(Path::new("/dev/shm"), &m).unwrap();
        assert!(why.contains("tmpfs"), "{why}");
        assert_eq!(offline_root_problem(Path::new("/tmp/stx/root"), &m), None);
    }
}
