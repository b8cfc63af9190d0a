//! Planner tests: mapping, scaling, naming, refusals, serialisation and execution.

use keel_profile::{
    CrypttabEntry, Disk, Filesystem, FstabEntry, Luks, LvmLv, LvmPv, LvmVg, Partition, Profile,
    Usage,
};

use crate::sample::{self, BIOS_BOOT, LINUX_FS, LINUX_SWAP};
use crate::size::{GIB, MIB};
use crate::{
    check, execute, plan, CheckError, Device, DiskKind, DryRun, Plan, PlanError, PlanOptions,
    Recording, Step, TableLabel, TargetDisk, VolumeKind,
};

const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

// ------------------------------------------------------------------ building profiles

fn add_disk(p: &mut Profile, name: &str, size: u64, transport: &str, pttype: Option<&str>) {
    p.storage.disks.push(Disk {
        id: format!("serial:{name}-serial"),
        name: name.into(),
        serial: Some(format!("{name}-serial")),
        size_bytes: size,
        transport: Some(transport.into()),
        logical_sector_size: 512,
        physical_sector_size: 512,
        pttype: pttype.map(Into::into),
        ..Disk::default()
    });
}

fn add_part(
    p: &mut Profile,
    disk: &str,
    name: &str,
    number: u32,
    start_mib: u64,
    size: u64,
    t: &str,
) {
    p.storage.partitions.push(Partition {
        disk: format!("serial:{disk}-serial"),
        number,
        name: name.into(),
        start: start_mib * MIB / 512,
        size_bytes: size,
        part_type: t.into(),
        partuuid: Some(format!("partuuid-{name}")),
        partlabel: None,
        flags: Vec::new(),
    });
}

fn add_fs(p: &mut Profile, dev: &str, fstype: &str, uuid: &str) {
    p.storage.filesystems.push(Filesystem {
        uuid: Some(uuid.into()),
        device: dev.into(),
        fstype: fstype.into(),
        label: None,
        size_bytes: None,
    });
}

fn add_mount(p: &mut Profile, uuid: &str, mp: &str, fstype: &str, used: Option<u64>) {
    p.storage.fstab.push(FstabEntry {
        spec: format!("UUID={uuid}"),
        mountpoint: mp.into(),
        fstype: fstype.into(),
        options: if fstype == "swap" { "sw" } else { "defaults" }.into(),
        dump: 0,
        pass: 0,
    });
    if let Some(used) = used {
        p.storage.usage.push(Usage {
            mountpoint: mp.into(),
            size_bytes: 0,
            used_bytes: used,
            inodes_used: 0,
        });
    }
}

/// A one-disk virtio server: BIOS boot, ext4 root (3 GiB used), swap.
fn virtio_server() -> Profile {
    let mut p = Profile::default();
    add_disk(&mut p, "vda", 20 * GIB, "virtio", Some("gpt"));
    add_part(&mut p, "vda", "vda1", 1, 1, MIB, BIOS_BOOT);
    add_part(&mut p, "vda", "vda2", 2, 2, 18 * GIB, LINUX_FS);
    add_part(
        &mut p,
        "vda",
        "vda3",
        3,
        2 + 18 * 1024,
        2 * GIB - 3 * MIB,
        LINUX_SWAP,
    );
    add_fs(&mut p, "/dev/vda2", "ext4", "root-uuid");
    add_fs(&mut p, "/dev/vda3", "swap", "swap-uuid");
    add_mount(&mut p, "root-uuid", "/", "ext4", Some(3 * GIB));
    add_mount(&mut p, "swap-uuid", "none", "swap", None);
    p
}

fn targets(kind: DiskKind, prefix: &str, sizes: &[u64]) -> Vec<TargetDisk> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let name = match kind {
                DiskKind::Nvme => format!("nvme{i}n1"),
                _ => format!("{prefix}{}", char::from(b'a' + i as u8)),
            };
            TargetDisk {
                path: format!("/dev/{name}"),
                name: Some(name.clone()),
                size_bytes: size,
                logical_sector_size: 512,
                serial: Some(format!("target-{name}")),
                kind,
                ..TargetDisk::default()
            }
        })
        .collect()
}

fn opts() -> PlanOptions {
    PlanOptions::default()
}

fn mapping<'a>(plan: &'a Plan, source: &str) -> Option<&'a str> {
    plan.disk_map
        .iter()
        .find(|m| m.source.name == source)
        .unwrap_or_else(|| panic!("no {source} in the disk map"))
        .target
        .as_deref()
}

fn part_change<'a>(plan: &'a Plan, source: &str) -> &'a crate::PartitionChange {
    plan.partitions
        .iter()
        .find(|p| p.source == source)
        .unwrap_or_else(|| panic!("no partition {source} in {:#?}", plan.partitions))
}

fn volume<'a>(plan: &'a Plan, name: &str) -> &'a crate::VolumeChange {
    plan.volumes
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// What every plan must satisfy: partitions aligned, inside their disk, not overlapping, never
/// below their minimum; logical volumes fit their group; the JSON round trip is exact; the
/// plan checks against its own inventory.
fn assert_sane(plan: &Plan) {
    for step in &plan.steps {
        if let Step::PartitionTable {
            disk,
            partitions,
            label,
            ..
        } = step
        {
            let tail = if *label == TableLabel::Gpt { MIB } else { 0 };
            let size = plan
                .inventory
                .iter()
                .find(|t| Some(t.path.as_str()) == disk.disk())
                .unwrap()
                .size_bytes;
            let mut spans: Vec<(u64, u64, u32)> = partitions
                .iter()
                .filter(|p| !matches!(p.part_type.as_str(), "0x05" | "0x0f" | "0x85"))
                .map(|p| (p.start_bytes, p.start_bytes + p.size_bytes, p.number))
                .collect();
            spans.sort_unstable();
            for p in partitions {
                assert_eq!(p.start_bytes % MIB, 0, "{disk} {} unaligned", p.number);
                assert_eq!(p.size_bytes % MIB, 0, "{disk} {} unaligned", p.number);
                assert!(p.start_bytes >= MIB);
                assert!(
                    p.start_bytes + p.size_bytes <= size - tail,
                    "{disk} {} past the end",
                    p.number
                );
            }
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "{disk}: {} overlaps {}", w[0].2, w[1].2);
            }
        }
    }
    for p in &plan.partitions {
        assert!(
            p.new_bytes >= p.min_bytes,
            "{} below its minimum: {p:?}",
            p.source
        );
    }
    for v in &plan.volumes {
        if v.kind == VolumeKind::LogicalVolume {
            assert!(
                v.new_bytes >= v.min_bytes,
                "{} below its minimum: {v:?}",
                v.name
            );
        }
    }
    for vg in plan
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::VolumeGroup)
    {
        let lvs: u64 = plan
            .volumes
            .iter()
            .filter(|v| {
                v.kind == VolumeKind::LogicalVolume && v.name.starts_with(&format!("{}/", vg.name))
            })
            .map(|v| v.new_bytes)
            .sum();
        assert!(
            lvs <= vg.new_bytes,
            "{}: LVs {lvs} > {}",
            vg.name,
            vg.new_bytes
        );
    }
    let back = Plan::from_json(&plan.to_json()).unwrap();
    assert_eq!(&back, plan);
    check(plan, &plan.inventory).unwrap();
}

// ------------------------------------------------------------------ mapping

#[test]
fn four_disk_raid1_lvm_onto_nvme() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    // Largest first, each onto the smallest disk that holds its minimum.
    assert_eq!(mapping(&plan, "sdc"), Some("/dev/nvme1n1"));
    assert_eq!(mapping(&plan, "sdd"), Some("/dev/nvme2n1"));
    assert_eq!(mapping(&plan, "sda"), Some("/dev/nvme0n1"));
    assert_eq!(mapping(&plan, "sdb"), Some("/dev/nvme3n1"));
    let sdc = plan
        .disk_map
        .iter()
        .find(|m| m.source.name == "sdc")
        .unwrap();
    assert!(
        sdc.reason
            .starts_with("best fit: its layout needs at least 48.3 GiB"),
        "{}",
        sdc.reason
    );
    assert!(plan.unused_targets.is_empty());

    // NVMe partition names, BIOS boot kept, members of one array matched.
    assert_eq!(
        part_change(&plan, "sda1").device.to_string(),
        "/dev/nvme0n1p1"
    );
    assert_eq!(part_change(&plan, "sda1").new_bytes, MIB);
    assert_eq!(
        part_change(&plan, "sdb3").device.to_string(),
        "/dev/nvme3n1p3"
    );
    for (a, b) in [("sda2", "sdb2"), ("sda3", "sdb3"), ("sdc1", "sdd1")] {
        assert_eq!(
            part_change(&plan, a).new_bytes,
            part_change(&plan, b).new_bytes,
            "{a} {b}"
        );
    }
    assert!(part_change(&plan, "sdd1")
        .reason
        .starts_with("matched to the smallest member of md2"));
    // sda's last partition takes the rest of its disk.
    let sda3 = part_change(&plan, "sda3");
    assert!(
        sda3.reason.ends_with("takes the rest of the disk"),
        "{}",
        sda3.reason
    );

    // The steps: disks, then arrays, PVs, VGs and LVs, then filesystems, then mounts.
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::WipeSignatures { .. } => "wipe",
            Step::PartitionTable { .. } => "table",
            Step::CreateRaid { .. } => "raid",
            Step::CreateLuks { .. } => "luks",
            Step::CreatePv { .. } => "pv",
            Step::CreateVg { .. } => "vg",
            Step::CreateLv { .. } => "lv",
            Step::Mkfs { .. } => "mkfs",
            Step::Mkswap { .. } => "mkswap",
            Step::Mount { .. } => "mount",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "wipe", "table", "wipe", "table", "wipe", "table", "wipe", "table", "raid", "raid",
            "raid", "pv", "pv", "vg", "lv", "lv", "lv", "vg", "lv", "mkfs", "mkfs", "mkfs",
            "mkswap", "mkfs", "mount", "mount", "mount", "mount"
        ]
    );
    let Step::CreateRaid {
        device,
        devices,
        missing,
        metadata,
        uuid,
        ..
    } = &plan.steps[8]
    else {
        panic!("{:?}", plan.steps[8]);
    };
    assert_eq!(device.to_string(), "/dev/md0");
    assert_eq!(
        devices.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["/dev/nvme0n1p2", "/dev/nvme3n1p2"]
    );
    assert_eq!((*missing, metadata.as_deref()), (0, Some("1.0")));
    assert_eq!(
        uuid.as_deref(),
        Some("00000300-0000-4000-8000-000000000300")
    );
    let mounts: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount {
                device, mountpoint, ..
            } => Some(format!("{mountpoint} {device}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        mounts,
        [
            "/ /dev/vg0/root",
            "/boot /dev/md0",
            "/var /dev/vg0/var",
            "/srv /dev/vgdata/srv"
        ]
    );
    // PARTUUIDs and the disk GUID preserved.
    let Step::PartitionTable {
        label,
        table_id,
        partitions,
        ..
    } = &plan.steps[1]
    else {
        panic!()
    };
    assert_eq!(*label, TableLabel::Gpt);
    assert_eq!(
        table_id.as_deref(),
        Some("00000100-0000-4000-8000-000000000100")
    );
    assert_eq!(
        partitions[0].uuid.as_deref(),
        Some("00000200-0000-4000-8000-000000000200")
    );
    assert_eq!(partitions[0].part_type, BIOS_BOOT);
}

#[test]
fn explicit_map_wins() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let o = PlanOptions {
        disk_map: vec![
            ("sdc".into(), "/dev/nvme2n1".into()),
            ("/dev/sdd".into(), "nvme1n1".into()),
            ("wwn:0x5000c50000000a00".into(), "/dev/nvme3n1".into()),
        ],
        ..opts()
    };
    let plan = plan(&profile, &t, &o).unwrap();
    assert_sane(&plan);
    assert_eq!(mapping(&plan, "sdc"), Some("/dev/nvme2n1"));
    assert_eq!(mapping(&plan, "sdd"), Some("/dev/nvme1n1"));
    assert_eq!(mapping(&plan, "sda"), Some("/dev/nvme3n1"));
    assert_eq!(mapping(&plan, "sdb"), Some("/dev/nvme0n1"));
    let sdc = plan
        .disk_map
        .iter()
        .find(|m| m.source.name == "sdc")
        .unwrap();
    assert_eq!(sdc.reason, "given with --disk-map sdc=/dev/nvme2n1");
}

#[test]
fn bad_explicit_maps() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let with = |pairs: &[(&str, &str)]| {
        let o = PlanOptions {
            disk_map: pairs
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
            ..opts()
        };
        plan(&profile, &t, &o).unwrap_err().to_string()
    };
    let e = with(&[("sdz", "/dev/nvme0n1")]);
    assert!(
        e.starts_with(
            "--disk-map: the profile has no disk \"sdz\"\n\
             hint: its disks are: sda (wwn:0x5000c50000000a00)"
        ),
        "{e}"
    );
    let e = with(&[("sda", "/dev/sdq")]);
    assert_eq!(
        e,
        "--disk-map: /dev/sdq is not one of the target disks (/dev/nvme0n1, /dev/nvme1n1, \
         /dev/nvme2n1, /dev/nvme3n1)\nhint: every disk the plan touches must be given with --target"
    );
    let e = with(&[("sda", "/dev/nvme0n1"), ("sdb", "/dev/nvme0n1")]);
    assert_eq!(
        e,
        "--disk-map: /dev/nvme0n1 is mapped twice\nhint: map each disk once"
    );
    assert!(PlanOptions::parse_disk_map("sda").is_err());
    assert_eq!(
        PlanOptions::parse_disk_map(" sda = /dev/vdb ").unwrap(),
        ("sda".into(), "/dev/vdb".into())
    );
}

#[test]
fn the_original_disk_is_found_by_identity() {
    let profile = sample::raid_lvm_profile();
    let mut t = sample::nvme_targets(&[40 * GIB, 20 * GIB, 200 * GIB, 200 * GIB]);
    // nvme1n1 is sda itself (same WWN), although nvme0n1 would be the best fit by size.
    t[1].wwn = Some("0x5000C50000000A00".into());
    t[1].kind = DiskKind::Sata;
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    assert_eq!(mapping(&plan, "sda"), Some("/dev/nvme1n1"));
    let m = plan
        .disk_map
        .iter()
        .find(|m| m.source.name == "sda")
        .unwrap();
    assert_eq!(m.reason, "same WWN 0x5000c50000000a00: the original disk");
    assert_eq!(mapping(&plan, "sdb"), Some("/dev/nvme0n1"));
}

#[test]
fn same_kind_is_preferred_among_disks_that_fit() {
    let mut profile = virtio_server();
    profile.storage.disks[0].serial = None;
    let mut t = targets(DiskKind::Sata, "sd", &[30 * GIB]);
    t.extend(targets(DiskKind::Virtio, "vd", &[40 * GIB]));
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_eq!(mapping(&plan, "vda"), Some("/dev/vda"));
    assert!(
        plan.disk_map[0]
            .reason
            .ends_with("of the same kind (virtio)"),
        "{}",
        plan.disk_map[0].reason
    );
    assert_eq!(plan.unused_targets.len(), 1);
    assert_eq!(plan.unused_targets[0].path, "/dev/sda");
}

#[test]
fn more_targets_than_disks_leaves_the_rest_untouched() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[
        40 * GIB,
        40 * GIB,
        200 * GIB,
        200 * GIB,
        500 * GIB,
        10 * GIB,
    ]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    let unused: Vec<&str> = plan
        .unused_targets
        .iter()
        .map(|u| u.path.as_str())
        .collect();
    // The 10 GiB disk is the best fit for sda; the 500 GiB one is too large for anything.
    assert_eq!(mapping(&plan, "sda"), Some("/dev/nvme5n1"));
    assert_eq!(unused, ["/dev/nvme1n1", "/dev/nvme4n1"]);
    assert!(plan
        .steps
        .iter()
        .flat_map(Step::devices)
        .all(|d| d.disk().is_none_or(|d| !unused.contains(&d))));
}

#[test]
fn fewer_targets_needs_an_explicit_degraded_plan() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[12 * GIB, 12 * GIB, 60 * GIB]);
    let e = plan(&profile, &t, &opts()).unwrap_err();
    assert!(matches!(e, PlanError::NotEnoughDisks { .. }));
    assert_eq!(
        e.to_string(),
        "not enough target disks: the system's data is on 4 disks (sda, sdb, sdc, sdd) and 3 \
         target disks were given (/dev/nvme0n1, /dev/nvme1n1, /dev/nvme2n1)\n\
         sdd holds only RAID members (md2) whose other members are on other disks: a degraded \
         plan could leave it out and create those arrays with a member missing\n\
         hint: give another disk with --target (an image file will do), or accept degraded \
         arrays with --allow-degraded"
    );

    let o = PlanOptions {
        allow_degraded: true,
        ..opts()
    };
    let plan = plan(&profile, &t, &o).unwrap();
    assert_sane(&plan);
    assert_eq!(mapping(&plan, "sdd"), None);
    assert!(plan.allow_degraded);
    let raid = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::CreateRaid {
                device,
                devices,
                missing,
                ..
            } if device.to_string() == "/dev/md2" => Some((devices.len(), *missing)),
            _ => None,
        })
        .unwrap();
    assert_eq!(raid, (1, 1));
    assert!(plan
        .notes
        .iter()
        .any(|n| n.starts_with("md2 is created degraded, with 1 of 2 members")));
}

#[test]
fn fewer_targets_without_mirrors_is_an_error() {
    let mut profile = virtio_server();
    add_disk(&mut profile, "vdb", 50 * GIB, "virtio", None);
    add_fs(&mut profile, "/dev/vdb", "ext4", "data-uuid");
    add_mount(&mut profile, "data-uuid", "/data", "ext4", Some(GIB));
    let t = targets(DiskKind::Virtio, "vd", &[100 * GIB]);
    for allow_degraded in [false, true] {
        let o = PlanOptions {
            allow_degraded,
            ..opts()
        };
        let e = plan(&profile, &t, &o).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "not enough target disks: the system's data is on 2 disks (vda, vdb) and 1 \
                 target disk was given (/dev/vda)"
            ),
            "{e}"
        );
        assert!(
            e.ends_with(
                "only disks holding nothing but RAID mirrors can be left out (--allow-degraded)"
            ),
            "{e}"
        );
    }
}

#[test]
fn disks_nothing_is_mounted_from_are_not_rebuilt() {
    let mut profile = virtio_server();
    // A USB disk with a filesystem nothing mounts, and a snap-style loop device.
    add_disk(&mut profile, "sdx", 500 * GIB, "usb", None);
    add_fs(&mut profile, "/dev/sdx", "ext4", "backup-uuid");
    add_disk(&mut profile, "loop3", 64 * MIB, "loop", None);
    add_fs(&mut profile, "/dev/loop3", "squashfs", "snap-uuid");
    profile.meta.live = true;
    let t = targets(DiskKind::Virtio, "vd", &[20 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    assert_eq!(mapping(&plan, "sdx"), None);
    assert_eq!(
        plan.disk_map[1].reason,
        "not rebuilt: nothing the system mounts or swaps to is on it"
    );
    assert!(plan.disk_map[2]
        .reason
        .contains("a loop device of the running system"));
}

// ------------------------------------------------------------------ scaling

#[test]
fn larger_disks_scale_everything_up() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 40 * GIB, 200 * GIB, 200 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    let sda3 = part_change(&plan, "sda3");
    assert!(sda3.new_bytes > 2 * sda3.old_bytes - GIB, "{sda3:?}");
    assert!(sda3.reason.starts_with("scaled ×2.00"), "{}", sda3.reason);
    // LVs grow with their group; free space in the group stays in proportion.
    let root = volume(&plan, "vg0/root");
    assert!(
        root.new_bytes >= 15 * GIB && root.new_bytes <= 16 * GIB,
        "{root:?}"
    );
    assert!(
        root.reason.starts_with("scaled ×2.00 with vg0"),
        "{}",
        root.reason
    );
    let srv = volume(&plan, "vgdata/srv");
    assert_eq!(srv.old_bytes, 80 * GIB);
    assert!(srv.new_bytes > 159 * GIB, "{srv:?}");
}

#[test]
fn smaller_disks_shrink_but_never_below_the_data() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[8 * GIB, 8 * GIB, 50 * GIB, 50 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    let srv = volume(&plan, "vgdata/srv");
    // 40 GiB used × 1.2 + 256 MiB.
    assert_eq!(srv.min_bytes, 48 * GIB + 256 * MIB);
    assert_eq!(srv.new_bytes, 48 * GIB + 256 * MIB);
    assert!(
        srv.reason
            .contains("raised to its minimum: xfs on /srv: 40.0 GiB used × 1.2 + 256 MiB"),
        "{}",
        srv.reason
    );
    let root = volume(&plan, "vg0/root");
    // 3 GiB used × 1.2 + 256 MiB = 3.85 GiB, rounded up to whole extents.
    assert!(root.new_bytes >= 3 * GIB + 870 * MIB, "{root:?}");
    let swap = volume(&plan, "vg0/swap");
    assert!(
        swap.new_bytes >= 256 * MIB && swap.new_bytes < 2 * GIB,
        "{swap:?}"
    );
}

#[test]
fn too_small_says_exactly_why() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[12 * GIB, 12 * GIB, 40 * GIB, 40 * GIB]);
    let e = plan(&profile, &t, &opts()).unwrap_err();
    let PlanError::DoesNotFit(short) = &e else {
        panic!("{e}")
    };
    // srv: 48 GiB + 256 MiB; its PV adds 1 MiB of metadata; md adds its superblock and data
    // offset (1/1024 of the member, and 1 MiB); the GPT table and alignment take 2 MiB.
    let share = 48 * GIB + 256 * MIB + MIB;
    let member = (share + share / 1024 + MIB).div_ceil(MIB) * MIB;
    assert_eq!(short.needed_bytes(), member);
    assert_eq!(short.usable_bytes, 40 * GIB - 2 * MIB);
    assert_eq!(short.short_bytes(), member - (40 * GIB - 2 * MIB));
    assert_eq!(
        e.to_string(),
        format!(
            "disk sdc (100.0 GiB) does not fit on /dev/nvme2n1 (40.0 GiB; 39.9 GiB usable after \
             the partition table and alignment): it needs at least 48.2 GiB but 39.9 GiB is \
             usable, 8.3 GiB ({} bytes) short\n\
             sdc1    48.2 GiB  minimum: member of md2 (raid1, 2 devices), which needs 48.2 GiB: \
             LVM PV of vgdata, whose LVs need 48.2 GiB (srv 48.2 GiB), + 1 MiB metadata\n\
             hint: give a larger disk for sdc with --target, or map it onto another with \
             --disk-map sdc=DEV",
            member - (40 * GIB - 2 * MIB)
        )
    );
}

#[test]
fn too_small_lists_every_partition() {
    let profile = virtio_server();
    let t = targets(DiskKind::Virtio, "vd", &[3 * GIB]);
    let e = plan(&profile, &t, &opts()).unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(
        lines,
        [
            "disk vda (20.0 GiB) does not fit on /dev/vda (3.0 GiB; 2.9 GiB usable after the \
             partition table and alignment): it needs at least 4.1 GiB but 2.9 GiB is usable, \
             1.1 GiB (1184890880 bytes) short",
            "vda1     1.0 MiB  fixed: BIOS boot partition",
            "vda2     3.8 GiB  minimum: ext4 on /: 3.0 GiB used × 1.2 + 256 MiB",
            "vda3   256.0 MiB  minimum: swap holds no data: at least 256 MiB",
            "hint: give a larger disk for vda with --target, or map it onto another with \
             --disk-map vda=DEV",
        ]
    );
}

/// A small server: BIOS boot, a 600 MiB ext4 root (20 MiB used), a 400 MiB xfs /srv (22 MiB
/// used) and 64 MiB of swap on a 1100 MiB disk: every partition is under 1 GiB.
fn small_server() -> Profile {
    let mut p = Profile::default();
    add_disk(&mut p, "vda", 1100 * MIB, "virtio", Some("gpt"));
    add_part(&mut p, "vda", "vda1", 1, 1, MIB, BIOS_BOOT);
    add_part(&mut p, "vda", "vda2", 2, 2, 600 * MIB, LINUX_FS);
    add_part(&mut p, "vda", "vda3", 3, 602, 400 * MIB, LINUX_FS);
    add_part(&mut p, "vda", "vda4", 4, 1002, 64 * MIB, LINUX_SWAP);
    add_fs(&mut p, "/dev/vda2", "ext4", "root-uuid");
    add_fs(&mut p, "/dev/vda3", "xfs", "srv-uuid");
    add_fs(&mut p, "/dev/vda4", "swap", "swap-uuid");
    add_mount(&mut p, "root-uuid", "/", "ext4", Some(20 * MIB));
    add_mount(&mut p, "srv-uuid", "/srv", "xfs", Some(22 * MIB));
    add_mount(&mut p, "swap-uuid", "none", "swap", None);
    p
}

#[test]
fn small_partitions_keep_their_size_where_the_disk_has_room() {
    let profile = small_server();
    for size in [1100 * MIB, 2 * GIB] {
        let t = targets(DiskKind::Virtio, "vd", &[size]);
        let plan = plan(&profile, &t, &opts()).unwrap();
        assert_sane(&plan);
        for (p, bytes) in [("vda2", 600 * MIB), ("vda3", 400 * MIB), ("vda4", 64 * MIB)] {
            let c = part_change(&plan, p);
            assert_eq!(c.new_bytes, bytes, "{c:?}");
            assert_eq!(c.reason, "fixed: small (under 1 GiB)", "{c:?}");
        }
    }
}

#[test]
fn small_partitions_shrink_on_a_disk_without_room_for_them_but_never_below_their_data() {
    let profile = small_server();
    let t = targets(DiskKind::Virtio, "vd", &[900 * MIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    // The map counts the small partitions at their minimums: 1 + 280 + 300 + 64 MiB and the
    // table's 2 MiB.
    assert_eq!(plan.disk_map[0].source.min_bytes, 647 * MIB);
    assert_eq!(part_change(&plan, "vda1").new_bytes, MIB);
    let root = part_change(&plan, "vda2");
    // 20 MiB × 1.2 + 256 MiB.
    assert_eq!(root.min_bytes, 280 * MIB);
    assert!(
        root.new_bytes < 600 * MIB && root.new_bytes >= 280 * MIB,
        "{root:?}"
    );
    assert!(
        root.reason.starts_with(
            "small (under 1 GiB), but the disk has no room to keep its size: scaled ×0."
        ),
        "{}",
        root.reason
    );
    let srv = part_change(&plan, "vda3");
    // 22 MiB × 1.2 + 256 MiB is 283 MiB, less than mkfs.xfs makes.
    assert_eq!(srv.min_bytes, 300 * MIB);
    assert!(
        srv.new_bytes < 400 * MIB && srv.new_bytes >= 300 * MIB,
        "{srv:?}"
    );
    // Swap under 256 MiB keeps its size.
    let swap = part_change(&plan, "vda4");
    assert_eq!(swap.new_bytes, 64 * MIB, "{swap:?}");
    let total: u64 = plan.partitions.iter().map(|p| p.new_bytes).sum();
    assert!(total <= 900 * MIB - 2 * MIB, "{total}");

    // Too small even for the minimums: every line shows what the partition needs.
    let t = targets(DiskKind::Virtio, "vd", &[600 * MIB]);
    let e = plan_err(&profile, &t);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(
        &lines[1..4],
        [
            "vda1     1.0 MiB  fixed: BIOS boot partition",
            "vda2   280.0 MiB  minimum: ext4 on /: 20.0 MiB used × 1.2 + 256 MiB",
            "vda3   300.0 MiB  minimum: xfs on /srv: 22.0 MiB used × 1.2 + 256 MiB, raised to \
             300 MiB, the least mkfs.xfs makes",
        ],
        "{e}"
    );
}

fn plan_err(profile: &Profile, t: &[TargetDisk]) -> String {
    plan(profile, t, &opts()).unwrap_err().to_string()
}

#[test]
fn small_logical_volumes_shrink_in_a_volume_group_without_room_for_them() {
    let mut p = Profile::default();
    add_disk(&mut p, "sda", 2 * GIB, "sata", Some("gpt"));
    add_part(&mut p, "sda", "sda1", 1, 1, MIB, BIOS_BOOT);
    add_part(&mut p, "sda", "sda2", 2, 2, 2 * GIB - 3 * MIB, LINUX_FS);
    add_fs(&mut p, "/dev/sda2", "LVM2_member", "pv-uuid");
    add_fs(&mut p, "/dev/mapper/vg-root", "ext4", "root-uuid");
    add_fs(&mut p, "/dev/mapper/vg-data", "xfs", "data-uuid");
    add_fs(&mut p, "/dev/mapper/vg-swap", "swap", "swap-uuid");
    add_mount(&mut p, "root-uuid", "/", "ext4", Some(100 * MIB));
    add_mount(&mut p, "data-uuid", "/data", "xfs", Some(10 * MIB));
    add_mount(&mut p, "swap-uuid", "none", "swap", None);
    p.storage.lvm_pvs.push(LvmPv {
        uuid: "pv-uuid".into(),
        device: "/dev/sda2".into(),
        vg: "vg".into(),
        size_bytes: 2 * GIB - 3 * MIB,
    });
    p.storage.lvm_vgs.push(LvmVg {
        name: "vg".into(),
        extent_size: 4 * MIB,
        size_bytes: 2 * GIB - 8 * MIB,
        ..LvmVg::default()
    });
    for (name, size) in [
        ("root", 900 * MIB),
        ("data", 512 * MIB),
        ("swap", 512 * MIB),
    ] {
        p.storage.lvm_lvs.push(LvmLv {
            vg: "vg".into(),
            name: name.into(),
            size_bytes: size,
            segtype: "linear".into(),
            ..LvmLv::default()
        });
    }

    // Room for them: kept.
    let t = targets(DiskKind::Sata, "sd", &[4 * GIB]);
    let plan_big = plan(&p, &t, &opts()).unwrap();
    assert_sane(&plan_big);
    for name in ["vg/root", "vg/data", "vg/swap"] {
        assert_eq!(
            volume(&plan_big, name).reason,
            "fixed: small (under 1 GiB)",
            "{name}"
        );
    }

    // A 1 GiB disk: the group has about 1020 MiB for 1924 MiB of volumes.
    let t = targets(DiskKind::Sata, "sd", &[GIB]);
    let plan = plan(&p, &t, &opts()).unwrap();
    assert_sane(&plan);
    let root = volume(&plan, "vg/root");
    assert_eq!(root.min_bytes, 376 * MIB);
    assert!(
        root.new_bytes < 900 * MIB && root.new_bytes >= 376 * MIB,
        "{root:?}"
    );
    assert!(
        root.reason.starts_with(
            "small (under 1 GiB), but the volume group has no room to keep its size: scaled"
        ),
        "{}",
        root.reason
    );
    let data = volume(&plan, "vg/data");
    assert_eq!(data.min_bytes, 300 * MIB, "the least mkfs.xfs makes");
    assert!(data.new_bytes >= 300 * MIB, "{data:?}");
    let swap = volume(&plan, "vg/swap");
    assert!(
        swap.new_bytes >= 256 * MIB && swap.new_bytes < 512 * MIB,
        "{swap:?}"
    );
}

#[test]
fn virtio_to_nvme_names_and_small_partitions_stay() {
    let mut profile = virtio_server();
    // An ESP and a 512 MiB /boot in front of the root.
    add_part(
        &mut profile,
        "vda",
        "vda4",
        4,
        20 * 1024 - 600,
        512 * MIB,
        ESP,
    );
    add_fs(&mut profile, "/dev/vda4", "vfat", "ESP-UUID");
    add_mount(&mut profile, "ESP-UUID", "/boot/efi", "vfat", Some(5 * MIB));
    let t = sample::nvme_targets(&[64 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    let esp = part_change(&plan, "vda4");
    assert_eq!(esp.device.to_string(), "/dev/nvme0n1p4");
    assert_eq!((esp.old_bytes, esp.new_bytes), (512 * MIB, 512 * MIB));
    assert_eq!(esp.reason, "fixed: EFI system partition");
    assert_eq!(esp.content, "EFI system, vfat /boot/efi");
    let root = part_change(&plan, "vda2");
    assert_eq!(root.device.to_string(), "/dev/nvme0n1p2");
    assert!(root.new_bytes > 3 * root.old_bytes - GIB);
    // The swap partition is last but swap does not grow into the rest of the disk; the root
    // scaled with it.
    let swap = part_change(&plan, "vda3");
    assert!(!swap.reason.contains("rest of the disk"));
    let mkfs: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Mkfs { device, fstype, .. } => Some(format!("{fstype} {device}")),
            Step::Mkswap { device, .. } => Some(format!("swap {device}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        mkfs,
        [
            "ext4 /dev/nvme0n1p2",
            "swap /dev/nvme0n1p3",
            "vfat /dev/nvme0n1p4"
        ]
    );
    let mounts: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount { mountpoint, .. } => Some(mountpoint.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(mounts, ["/", "/boot/efi"]);
}

#[test]
fn mbr_with_a_logical_swap_partition() {
    // Debian's default MBR layout: a root primary, an extended one holding swap.
    let mut p = Profile::default();
    add_disk(&mut p, "sda", 16 * GIB, "sata", Some("dos"));
    add_part(&mut p, "sda", "sda1", 1, 1, 15 * GIB, "0x83");
    add_part(
        &mut p,
        "sda",
        "sda2",
        2,
        1 + 15 * 1024 + 1,
        1023 * MIB,
        "0x05",
    );
    add_part(
        &mut p,
        "sda",
        "sda5",
        5,
        1 + 15 * 1024 + 2,
        1022 * MIB,
        "0x82",
    );
    p.storage.partitions[0].flags = vec!["bootable".into()];
    add_fs(&mut p, "/dev/sda1", "ext4", "r");
    add_fs(&mut p, "/dev/sda5", "swap", "s");
    add_mount(&mut p, "r", "/", "ext4", Some(2 * GIB));
    add_mount(&mut p, "s", "none", "swap", None);
    let t = targets(DiskKind::Virtio, "vd", &[32 * GIB]);
    let plan = plan(&p, &t, &opts()).unwrap();
    assert_sane(&plan);
    let Step::PartitionTable {
        label, partitions, ..
    } = &plan.steps[1]
    else {
        panic!()
    };
    assert_eq!(*label, TableLabel::Dos);
    let by = |n: u32| partitions.iter().find(|p| p.number == n).unwrap();
    assert_eq!(by(1).flags, ["bootable"]);
    assert_eq!(by(1).start_bytes, MIB);
    assert!(by(1).size_bytes > 30 * GIB);
    // The extended partition holds the logical one, which starts 1 MiB into it.
    assert_eq!(by(2).start_bytes, by(1).start_bytes + by(1).size_bytes);
    assert_eq!(by(5).start_bytes, by(2).start_bytes + MIB);
    assert_eq!(
        by(2).start_bytes + by(2).size_bytes,
        by(5).start_bytes + by(5).size_bytes
    );
    assert_eq!(by(5).size_bytes, 1022 * MIB);
    assert_eq!(part_change(&plan, "sda5").device.to_string(), "/dev/vda5");
    assert_eq!(part_change(&plan, "sda2").content, "extended");
}

#[test]
fn luks_with_lvm_inside() {
    let mut p = Profile::default();
    add_disk(&mut p, "sda", 100 * GIB, "sata", Some("gpt"));
    add_part(&mut p, "sda", "sda1", 1, 1, 512 * MIB, ESP);
    add_part(&mut p, "sda", "sda2", 2, 513, 99 * GIB, LINUX_FS);
    add_fs(&mut p, "/dev/sda1", "vfat", "ABCD-1234");
    add_fs(&mut p, "/dev/sda2", "crypto_LUKS", "luks-uuid");
    add_fs(&mut p, "/dev/mapper/sda2_crypt", "LVM2_member", "pv-uuid");
    add_fs(&mut p, "/dev/mapper/vg-root", "ext4", "root-uuid");
    add_mount(&mut p, "root-uuid", "/", "ext4", Some(10 * GIB));
    add_mount(&mut p, "ABCD-1234", "/boot/efi", "vfat", Some(MIB));
    p.storage.luks.push(Luks {
        uuid: "luks-uuid".into(),
        device: "/dev/sda2".into(),
        version: 2,
        cipher: Some("aes-xts-plain64".into()),
        keyslots: 1,
        label: None,
    });
    p.storage.crypttab.push(CrypttabEntry {
        name: "sda2_crypt".into(),
        device: "UUID=luks-uuid".into(),
        keyfile: "none".into(),
        options: "luks,discard".into(),
    });
    p.storage.lvm_pvs.push(LvmPv {
        uuid: "pv-uuid".into(),
        device: "/dev/mapper/sda2_crypt".into(),
        vg: "vg".into(),
        size_bytes: 99 * GIB - 16 * MIB,
    });
    p.storage.lvm_vgs.push(LvmVg {
        name: "vg".into(),
        uuid: "vg-uuid".into(),
        extent_size: 4 * MIB,
        size_bytes: 99 * GIB - 20 * MIB,
        free_bytes: 0,
    });
    p.storage.lvm_lvs.push(LvmLv {
        vg: "vg".into(),
        name: "root".into(),
        uuid: "lv".into(),
        size_bytes: 99 * GIB - 20 * MIB,
        segtype: "linear".into(),
        attributes: String::new(),
    });
    let t = targets(DiskKind::Sata, "sd", &[30 * GIB]);
    let plan = plan(&p, &t, &opts()).unwrap();
    assert_sane(&plan);
    let steps: Vec<String> = plan.steps.iter().map(Step::describe).collect();
    assert_eq!(
        steps[2],
        "encrypt /dev/sda2 with LUKS2 and open it as sda2_crypt"
    );
    assert_eq!(
        steps[3],
        "create LVM physical volume /dev/mapper/sda2_crypt"
    );
    assert_eq!(
        steps[4],
        "create volume group vg on /dev/mapper/sda2_crypt (4.0 MiB extents)"
    );
    assert!(
        steps[5].starts_with("create linear logical volume vg/root of "),
        "{}",
        steps[5]
    );
    // 10 GiB used: the root needs 12.25 GiB; the LUKS header 16 MiB on top of the PV's.
    let sda2 = part_change(&plan, "sda2");
    assert_eq!(sda2.min_bytes, 12 * GIB + 256 * MIB + MIB + 16 * MIB);
    assert!(sda2.reason.ends_with("takes the rest of the disk"));
    assert_eq!(sda2.content, "LUKS sda2_crypt");
    let Step::CreateLuks { uuid, cipher, .. } = &plan.steps[2] else {
        panic!()
    };
    assert_eq!(
        (uuid.as_str(), cipher.as_deref()),
        ("luks-uuid", Some("aes-xts-plain64"))
    );
}

#[test]
fn a_disk_used_whole_as_a_physical_volume() {
    let mut p = virtio_server();
    add_disk(&mut p, "vdb", 50 * GIB, "virtio", None);
    add_fs(&mut p, "/dev/vdb", "LVM2_member", "pv");
    add_fs(&mut p, "/dev/mapper/data-srv", "ext4", "srv");
    add_mount(&mut p, "srv", "/srv", "ext4", Some(5 * GIB));
    p.storage.lvm_pvs.push(LvmPv {
        uuid: "pv".into(),
        device: "/dev/vdb".into(),
        vg: "data".into(),
        size_bytes: 50 * GIB,
    });
    p.storage.lvm_vgs.push(LvmVg {
        name: "data".into(),
        uuid: "vgu".into(),
        extent_size: 4 * MIB,
        size_bytes: 50 * GIB - 4 * MIB,
        free_bytes: 0,
    });
    p.storage.lvm_lvs.push(LvmLv {
        vg: "data".into(),
        name: "srv".into(),
        uuid: "lvu".into(),
        size_bytes: 40 * GIB,
        segtype: "linear".into(),
        attributes: String::new(),
    });
    // vdb needs only 6.25 GiB: the 20 GiB disk is its best fit, and vda gets the other.
    let t = targets(DiskKind::Virtio, "vd", &[20 * GIB, 100 * GIB]);
    let plan = plan(&p, &t, &opts()).unwrap();
    assert_sane(&plan);
    assert_eq!(mapping(&plan, "vdb"), Some("/dev/vda"));
    assert_eq!(mapping(&plan, "vda"), Some("/dev/vdb"));
    let whole = part_change(&plan, "vdb");
    assert_eq!(whole.number, None);
    assert_eq!(
        whole.device,
        Device::Disk {
            disk: "/dev/vda".into()
        }
    );
    assert_eq!(whole.new_bytes, 20 * GIB);
    assert!(!plan.steps.iter().any(
        |s| matches!(s, Step::PartitionTable { disk, .. } if disk.disk() == Some("/dev/vda"))
    ));
    let whole_vda = Device::Disk {
        disk: "/dev/vda".into(),
    };
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreatePv { device, .. } if *device == whole_vda)));
    // The group shrinks from 50 to 20 GiB: srv with it, above its 6.25 GiB minimum.
    let srv = volume(&plan, "data/srv");
    assert!(
        srv.new_bytes > 15 * GIB && srv.new_bytes < 16 * GIB,
        "{srv:?}"
    );
}

#[test]
fn thin_volumes_that_hold_mounts_are_refused() {
    let mut p = virtio_server();
    add_fs(&mut p, "/dev/vda2", "LVM2_member", "pv");
    p.storage
        .filesystems
        .retain(|f| f.uuid.as_deref() != Some("root-uuid"));
    add_fs(&mut p, "/dev/mapper/vg-root", "ext4", "root-uuid");
    p.storage.lvm_pvs.push(LvmPv {
        uuid: "pv".into(),
        device: "/dev/vda2".into(),
        vg: "vg".into(),
        size_bytes: 18 * GIB,
    });
    p.storage.lvm_vgs.push(LvmVg {
        name: "vg".into(),
        extent_size: 4 * MIB,
        size_bytes: 18 * GIB - 4 * MIB,
        ..LvmVg::default()
    });
    p.storage.lvm_lvs.push(LvmLv {
        vg: "vg".into(),
        name: "root".into(),
        size_bytes: 10 * GIB,
        segtype: "thin".into(),
        ..LvmLv::default()
    });
    let t = targets(DiskKind::Virtio, "vd", &[20 * GIB]);
    let e = plan(&p, &t, &opts()).unwrap_err().to_string();
    assert!(
        e.starts_with("vg/root is a thin logical volume, and the system mounts what is on it"),
        "{e}"
    );
}

// ------------------------------------------------------------------ format, check, execution

#[test]
fn serialisation_round_trip_and_shape() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    let json = plan.to_json();
    assert_eq!(Plan::from_json(&json).unwrap(), plan);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(
        v["steps"][0],
        serde_json::json!({"step": "wipe_signatures", "disk": {"kind": "disk", "disk": "/dev/nvme0n1"}})
    );
    assert_eq!(
        v["steps"][8]["devices"][1],
        serde_json::json!({"kind": "partition", "disk": "/dev/nvme3n1", "number": 2})
    );
    assert_eq!(v["inventory"][0]["kind"], "nvme");
    assert_eq!(v["disk_map"][0]["source"]["name"], "sda");
}

#[test]
fn the_format_1_fixture_still_reads() {
    let text = include_str!("../tests/fixtures/plan-v1.json");
    let plan = Plan::from_json(text).unwrap();
    assert_eq!(plan.format, 1);
    assert_eq!(plan.disk_map.len(), 4);
    assert!(!plan.steps.is_empty());
    check(&plan, &plan.inventory).unwrap();
}

#[test]
fn check_refuses_changed_disks() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    check(&plan, &t).unwrap();

    let mut now = t.clone();
    now[1].size_bytes = 32 * GIB;
    now[2].serial = Some("OTHER".into());
    now.remove(3);
    let e = check(&plan, &now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the target disks are not the ones the plan was made for:\n\
         /dev/nvme1n1: size was 64.0 GiB (68719476736 bytes), now 32.0 GiB (34359738368 bytes)\n\
         /dev/nvme2n1: serial number was SAMPLE-NVME-2, now OTHER: a different disk\n\
         /dev/nvme3n1: not present (the plan was made for /dev/nvme3n1 (48.0 GiB, nvme, wwn \
         eui.0000000000000003))\n\
         hint: make a new plan for the disks present (keel recover plan)"
    );

    let mut edited = plan.clone();
    edited.steps.push(Step::WipeSignatures {
        disk: Device::Disk {
            disk: "/dev/sdz".into(),
        },
    });
    let e = check(&edited, &t).unwrap_err();
    assert!(matches!(e, CheckError::NotInPlan { step: 29, .. }), "{e}");
    assert!(e
        .to_string()
        .starts_with("step 29 touches /dev/sdz, which is not a target disk of the plan"));

    let mut newer = plan.clone();
    newer.format = 99;
    assert!(matches!(
        check(&newer, &t),
        Err(CheckError::Format {
            found: 99,
            supported: 1
        })
    ));
}

#[test]
fn executors() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let plan = plan(&profile, &t, &opts()).unwrap();
    let mut dry = DryRun::default();
    assert_eq!(execute(&plan, &mut dry).unwrap(), plan.steps.len());
    assert_eq!(dry.lines[0], "1. would wipe all signatures on /dev/nvme0n1");
    assert_eq!(dry.lines.len(), plan.steps.len());

    let mut rec = Recording {
        fail_at: Some(3),
        ..Recording::default()
    };
    let e = execute(&plan, &mut rec).unwrap_err();
    assert_eq!(rec.steps.len(), 3);
    assert_eq!(rec.steps[2].1, plan.steps[2]);
    assert_eq!(
        e.to_string(),
        "step 3 (wipe all signatures on /dev/nvme3n1) failed: failing at step 3 as asked"
    );
}

#[test]
fn apply_checks_the_machine_first() {
    let (tmp, host) = crate::host::tests::fake();
    let profile = virtio_server();
    let inv = host.inventory(&["/dev/nvme1n1", "/images/b.img"]).unwrap();
    let o = PlanOptions {
        disk_map: vec![("vda".into(), "/dev/nvme1n1".into())],
        ..opts()
    };
    let plan = plan(&profile, &inv, &o).unwrap();
    assert_eq!(plan.unused_targets[0].path, "/images/b.img");
    let mut rec = Recording::default();
    assert_eq!(
        crate::apply(&plan, &host, &mut rec).unwrap(),
        plan.steps.len()
    );

    // The image shrank since: nothing runs.
    std::fs::File::options()
        .write(true)
        .open(tmp.path().join("images/b.img"))
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mut rec = Recording::default();
    let e = crate::apply(&plan, &host, &mut rec)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/images/b.img: size was 64.0 MiB (67108864 bytes), now 32.0 MiB"),
        "{e}"
    );
    assert!(rec.steps.is_empty());

    // A disk in use: nothing runs.
    let inv = host.inventory(&["/dev/nvme0n1"]).unwrap();
    let plan = crate::plan(&profile, &inv, &opts()).unwrap();
    let e = crate::apply(&plan, &host, &mut rec)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/dev/nvme0n1 is mounted: /dev/nvme0n1p1 at /mnt/old disk"),
        "{e}"
    );
    assert!(rec.steps.is_empty());
}

#[test]
fn the_plan_prints_for_people() {
    let profile = sample::raid_lvm_profile();
    let t = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB, GIB]);
    let mut plan = plan(&profile, &t, &opts()).unwrap();
    plan.source.profile_hash = Some("0123456789abcdef0123".into());
    let text = plan.to_string();
    assert!(
        text.starts_with(
            "Recovery plan for sample-raid-lvm (profile 0123456789ab), plan format 1\n\nDisk map\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  sdc  100.0 GiB sata  → /dev/nvme1n1 (64.0 GiB, nvme)   best fit: its layout \
             needs at least 48.3 GiB"
        ),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("  -  ")
            && l.contains(" /dev/nvme4n1 (1.0 GiB, nvme)  ")
            && l.ends_with("  not needed: left untouched")),
        "{text}"
    );
    assert!(
        text.contains(
            "\nPartitions\n  SOURCE  NEW DEVICE      HOLDS               OLD SIZE     NEW SIZE  \
             WHY\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  sda1    /dev/nvme0n1p1  BIOS boot           1.0 MiB   →  1.0 MiB   fixed: BIOS \
             boot partition\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  vgdata/srv  logical volume  80.0 GiB    →  51.1 GiB  scaled ×0.64 with vgdata\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\nSteps\n   1. wipe all signatures on /dev/nvme0n1\n"),
        "{text}"
    );
    assert!(
        text.contains("  28. mount /dev/vgdata/srv at /srv (xfs, defaults)\n"),
        "{text}"
    );
}

#[test]
fn the_encrypted_raid_sample_plans_every_layer_with_valid_commands() {
    let profile = sample::encrypted_raid_profile();
    let t: Vec<TargetDisk> = ["A", "B"]
        .iter()
        .enumerate()
        .map(|(i, s)| TargetDisk {
            path: format!("/dev/vd{}", ["b", "c"][i]),
            name: Some(format!("vd{}", ["b", "c"][i])),
            size_bytes: GIB,
            logical_sector_size: 512,
            serial: Some(format!("KEEL-ENC-{s}")),
            kind: DiskKind::Virtio,
            ..TargetDisk::default()
        })
        .collect();
    let plan = plan(&profile, &t, &opts()).unwrap();
    assert_sane(&plan);
    assert!(
        plan.disk_map[0].reason.contains("serial"),
        "{:?}",
        plan.disk_map
    );
    let steps: Vec<String> = plan.steps.iter().map(Step::describe).collect();
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::WipeSignatures { .. } => "wipe",
            Step::PartitionTable { .. } => "table",
            Step::CreateRaid { .. } => "raid",
            Step::CreateLuks { .. } => "luks",
            Step::CreatePv { .. } => "pv",
            Step::CreateVg { .. } => "vg",
            Step::CreateLv { .. } => "lv",
            Step::Mkfs { .. } => "mkfs",
            Step::Mkswap { .. } => "mkswap",
            Step::Mount { .. } => "mount",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "wipe", "table", "wipe", "table", "raid", "luks", "pv", "vg", "lv", "lv", "lv", "mkfs",
            "mkfs", "mkfs", "mkfs", "mkswap", "mount", "mount", "mount"
        ],
        "{steps:#?}"
    );
    let mut o = crate::SystemOptions::for_plan(&plan);
    o.luks_key_file = Some("/kit/luks.key".into());
    let system = crate::System::new(&plan, o);
    let mut all = Vec::new();
    for s in &plan.steps {
        all.extend(system.preview(s).unwrap());
    }
    let all = all.join("\n");
    for want in [
        "mdadm --create /dev/md0 --run --level=raid1 --raid-devices=2 --metadata=1.2 \
         --bitmap=internal --uuid=4b45454c:72656364:72616964:2d6d6430 \
         --homehost=sample-encrypted --name=0 /dev/vdb2 /dev/vdc2",
        "cryptsetup luksFormat --batch-mode --type luks2 --uuid \
         4b45454c-6c75-6b73-2d63-727970747430 --key-file /kit/luks.key --cipher aes-xts-plain64 \
         --label cryptroot /dev/md0",
        "--uuid KeelPV-samp-leen-cryp-tedr-aid0-pv0001 --norestorefile /dev/mapper/cryptroot",
        "mkfs.vfat -i 4B450E51 -n ESP /dev/vdb1",
        "mkfs.xfs -f -q -m uuid=4b45454c-7372-762d-7866-730000000002 -L srv /dev/mapper/vg0-srv",
        "mount -t vfat -o umask=0077 /dev/vdb1 /mnt/keel-target/boot/efi",
    ] {
        assert!(all.contains(want), "no {want:?} in\n{all}");
    }
}

// ------------------------------------------------------------------ refusals, one at a time

/// A fake machine for one refusal at a time: two blank 64 GiB `NVMe` disks, `nvme0n1` (serial
/// `FAKE-NVME-0`, partitions 1 and 2) and `nvme1n1` (serial `FAKE-NVME-1`, partition 1), with
/// nothing mounted from them (the root filesystem is an overlay), no swap and no arrays. Each
/// test makes one thing busy or changes one thing, then applies a plan made for `nvme0n1`.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        for (i, parts) in [(0u32, 2u32), (1, 1)] {
            let name = format!("nvme{i}n1");
            let sys = format!(
                "sys/devices/pci0000:00/0000:00:0{}.0/nvme/nvme{i}/{name}",
                4 + i
            );
            let devno = format!("259:{}", 10 * i);
            m.block(&sys, &name, &devno, 64 * GIB);
            m.write(&format!("{sys}/device/serial"), &format!("FAKE-NVME-{i}\n"));
            m.write(&format!("{sys}/wwid"), &format!("eui.00000000000000f{i}\n"));
            for n in 1..=parts {
                let p = format!("{name}p{n}");
                let dir = format!("{sys}/{p}");
                m.block(&dir, &p, &format!("259:{}", 10 * i + n), GIB);
                m.write(&format!("{dir}/partition"), &format!("{n}\n"));
            }
        }
        m.write(
            "proc/self/mountinfo",
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 0:30 / / rw,relatime - overlay overlay rw\n",
        );
        m.write(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        );
        m.write(
            "proc/mdstat",
            "Personalities : [raid1]\nunused devices: <none>\n",
        );
        m
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn link(&self, rel: &str, to: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(self.path(to), p).unwrap();
    }

    /// A block device's sysfs directory `sys`, its class and number links, and its /dev node.
    fn block(&self, sys: &str, name: &str, devno: &str, size: u64) {
        self.write(&format!("{sys}/size"), &format!("{}\n", size / 512));
        self.write(&format!("{sys}/queue/logical_block_size"), "512\n");
        for d in ["holders", "slaves"] {
            std::fs::create_dir_all(self.path(&format!("{sys}/{d}"))).unwrap();
        }
        self.link(&format!("sys/class/block/{name}"), sys);
        self.link(&format!("sys/dev/block/{devno}"), sys);
        self.write(&format!("dev/{name}"), "");
    }

    /// A virtual block device (an array or a device-mapper device) built on `on`.
    fn virtual_on(&self, name: &str, devno: &str, on: &str) -> String {
        let sys = format!("sys/devices/virtual/block/{name}");
        self.block(&sys, name, devno, GIB);
        self.link(
            &format!("{sys}/slaves/{on}"),
            &format!("sys/class/block/{on}"),
        );
        self.link(
            &format!("sys/class/block/{on}/holders/{name}"),
            &format!("sys/class/block/{name}"),
        );
        sys
    }

    fn host(&self) -> crate::Host {
        crate::Host::at(self.dir.path())
    }

    /// A plan rebuilding [`virtio_server`] onto `/dev/nvme0n1`, read from this machine.
    fn plan(&self) -> Plan {
        let inv = self.host().inventory(&["/dev/nvme0n1"]).unwrap();
        plan(&virtio_server(), &inv, &opts()).unwrap()
    }

    /// Applies `plan` with a recording executor; returns the error, having checked that no
    /// step ran.
    fn refused(&self, plan: &Plan) -> crate::ApplyError {
        let mut rec = Recording::default();
        let e = crate::apply(plan, &self.host(), &mut rec).unwrap_err();
        assert!(rec.steps.is_empty(), "steps ran before the refusal: {e}");
        e
    }

    /// The refusals [`crate::Host::check_safe`] finds for `/dev/nvme0n1`.
    fn refusals(&self) -> Vec<crate::Refusal> {
        let host = self.host();
        let inv = host.inventory(&["/dev/nvme0n1"]).unwrap();
        match host.check_safe(&inv) {
            Ok(()) => Vec::new(),
            Err(crate::SafetyError::Refused(found)) => found,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn the_fake_machine_is_safe_until_something_uses_it() {
    let m = Machine::new();
    assert_eq!(m.refusals(), []);
    let plan = m.plan();
    let mut rec = Recording::default();
    assert_eq!(
        crate::apply(&plan, &m.host(), &mut rec).unwrap(),
        plan.steps.len()
    );
}

#[test]
fn refuses_a_mounted_disk() {
    let m = Machine::new();
    let plan = m.plan();
    m.write(
        "proc/self/mountinfo",
        "27 1 0:30 / / rw,relatime - overlay overlay rw\n\
         40 27 259:1 / /srv rw,relatime - ext4 /dev/nvme0n1p1 rw\n",
    );
    assert_eq!(
        m.refusals(),
        [crate::Refusal {
            disk: "/dev/nvme0n1".into(),
            reason: crate::RefusalReason::Mounted {
                device: "/dev/nvme0n1p1".into(),
                mountpoint: "/srv".into(),
            },
        }]
    );
    let e = m.refused(&plan).to_string();
    assert!(
        e.starts_with(
            "refusing to touch a disk that is in use:\n\
             /dev/nvme0n1 is mounted: /dev/nvme0n1p1 at /srv\n\
             hint: unmount what is mounted from the disk (`umount MOUNTPOINT`)"
        ),
        "{e}"
    );
}

#[test]
fn refuses_the_disk_of_the_running_system() {
    let m = Machine::new();
    let plan = m.plan();
    m.write(
        "proc/self/mountinfo",
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
         27 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw\n",
    );
    assert_eq!(
        m.refusals(),
        [crate::Refusal {
            disk: "/dev/nvme0n1".into(),
            reason: crate::RefusalReason::RunningSystem {
                device: "/dev/nvme0n1p2".into(),
            },
        }]
    );
    let e = m.refused(&plan).to_string();
    assert!(
        e.starts_with(
            "refusing to touch a disk that is in use:\n\
             /dev/nvme0n1 holds the running system: / is mounted from /dev/nvme0n1p2\n\
             hint: a running system cannot be rebuilt onto its own disk: boot a rescue system \
             first"
        ),
        "{e}"
    );
}

#[test]
fn refuses_a_disk_holding_an_active_raid_member() {
    let m = Machine::new();
    let plan = m.plan();
    // md0 is assembled from nvme0n1p2 (and a disk that is not a target): sysfs shows md0 as
    // the partition's holder, and /proc/mdstat lists it. The two say the same: one refusal.
    let md0 = m.virtual_on("md0", "9:0", "nvme0n1p2");
    std::fs::create_dir_all(m.path(&format!("{md0}/md"))).unwrap();
    m.write(
        "proc/mdstat",
        "Personalities : [raid1]\n\
         md0 : active raid1 nvme0n1p2[0] sdz1[1]\n      1046528 blocks super 1.2 [2/2] [UU]\n\n\
         unused devices: <none>\n",
    );
    let want = [crate::Refusal {
        disk: "/dev/nvme0n1".into(),
        reason: crate::RefusalReason::RaidMember {
            device: "/dev/nvme0n1p2".into(),
            array: "/dev/md0".into(),
        },
    }];
    assert_eq!(m.refusals(), want);
    let e = m.refused(&plan).to_string();
    assert!(
        e.starts_with(
            "refusing to touch a disk that is in use:\n\
             /dev/nvme0n1 is a member of an active RAID array: /dev/nvme0n1p2 is in /dev/md0\n\
             hint: stop the array (`mdadm --stop ARRAY`)"
        ),
        "{e}"
    );
    // With only /proc/mdstat to go by (the holder link not there), it is still refused.
    std::fs::remove_file(m.path("sys/class/block/nvme0n1p2/holders/md0")).unwrap();
    assert_eq!(m.refusals(), want);
}

#[test]
fn refuses_a_disk_holding_an_active_lvm_physical_volume() {
    let m = Machine::new();
    let plan = m.plan();
    // nvme0n1p2 is the physical volume of vgold, whose logical volume root is active (dm-0).
    let dm0 = m.virtual_on("dm-0", "253:0", "nvme0n1p2");
    m.write(&format!("{dm0}/dm/name"), "vgold-root\n");
    assert_eq!(
        m.refusals(),
        [crate::Refusal {
            disk: "/dev/nvme0n1".into(),
            reason: crate::RefusalReason::Held {
                device: "/dev/nvme0n1p2".into(),
                holder: "/dev/mapper/vgold-root".into(),
            },
        }]
    );
    let e = m.refused(&plan).to_string();
    assert!(
        e.starts_with(
            "refusing to touch a disk that is in use:\n\
             /dev/nvme0n1 is in use: /dev/mapper/vgold-root is built on /dev/nvme0n1p2\n\
             hint: deactivate what is built on it (`vgchange -an VG` for LVM, `cryptsetup close \
             NAME` for LUKS)"
        ),
        "{e}"
    );
    // Mounted too, the volume's mount is named as well.
    m.write(
        "proc/self/mountinfo",
        "27 1 0:30 / / rw,relatime - overlay overlay rw\n\
         41 27 253:0 / /data rw,relatime - ext4 /dev/mapper/vgold-root rw\n",
    );
    let e = m.refused(&plan).to_string();
    assert!(
        e.contains("\n/dev/nvme0n1 is mounted: /dev/mapper/vgold-root at /data\n"),
        "{e}"
    );
}

#[test]
fn refuses_a_step_on_a_disk_outside_the_plan() {
    let m = Machine::new();
    let mut plan = m.plan();
    // nvme1n1 is present and idle, but the plan was not made for it: a step that touches it
    // (an edited plan) stops the apply before any step runs.
    plan.steps.push(Step::WipeSignatures {
        disk: Device::Disk {
            disk: "/dev/nvme1n1".into(),
        },
    });
    let n = plan.steps.len();
    let e = m.refused(&plan);
    assert!(
        matches!(
            &e,
            crate::ApplyError::Check(CheckError::NotInPlan { step, .. }) if *step == n
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "step {n} touches /dev/nvme1n1, which is not a target disk of the plan\n\
             hint: the plan was edited or is corrupt; make it again"
        )
    );
}

/// The one line a changed target produces when the plan made for `nvme0n1` is applied.
fn changed(m: &Machine, plan: &Plan) -> String {
    let e = m.refused(plan);
    let crate::ApplyError::Check(CheckError::Changed(lines)) = &e else {
        panic!("expected the disks to have changed: {e}");
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        e.to_string()
            .ends_with("\nhint: make a new plan for the disks present (keel recover plan)"),
        "{e}"
    );
    lines[0].clone()
}

#[test]
fn refuses_a_plan_when_the_disk_changed_size() {
    let m = Machine::new();
    let plan = m.plan();
    let sys = "sys/class/block/nvme0n1";
    m.write(&format!("{sys}/size"), &format!("{}\n", 48 * GIB / 512));
    assert_eq!(
        changed(&m, &plan),
        "/dev/nvme0n1: size was 64.0 GiB (68719476736 bytes), now 48.0 GiB (51539607552 bytes)"
    );
}

#[test]
fn refuses_a_plan_when_the_disk_has_another_serial() {
    let m = Machine::new();
    let plan = m.plan();
    // The same size and name, but another disk: its serial number differs.
    m.write("sys/class/block/nvme0n1/device/serial", "FAKE-NVME-9\n");
    assert_eq!(
        changed(&m, &plan),
        "/dev/nvme0n1: serial number was FAKE-NVME-0, now FAKE-NVME-9: a different disk"
    );
}

#[test]
fn refuses_a_plan_when_the_disk_is_gone() {
    let m = Machine::new();
    let plan = m.plan();
    // Unplugged: the kernel no longer lists it, and its node is gone.
    std::fs::remove_file(m.path("sys/class/block/nvme0n1")).unwrap();
    std::fs::remove_file(m.path("dev/nvme0n1")).unwrap();
    assert_eq!(
        changed(&m, &plan),
        "/dev/nvme0n1: not present (the plan was made for /dev/nvme0n1 (64.0 GiB, nvme, wwn \
         eui.00000000000000f0))"
    );
}
