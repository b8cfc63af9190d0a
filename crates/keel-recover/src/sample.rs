//! A synthetic server and synthetic target disks, for examples, tests and `keel bench plan`.
//!
//! The server has four SATA disks. `sda` and `sdb` (20 GiB) each hold a BIOS boot partition, a
//! 1 GiB member of `md0` (RAID 1, ext4 on `/boot`) and a member of `md1` (RAID 1, the physical
//! volume of `vg0`: `root` on `/`, `var` on `/var`, 2 GiB of swap). `sdc` and `sdd` (100 GiB)
//! each hold one member of `md2` (RAID 1, the physical volume of `vgdata`: `srv`, xfs on
//! `/srv`).
//!
//! [`encrypted_raid_profile`] is a small UEFI server whose RAID 1 holds LUKS2 with LVM inside:
//! every layer Keel rebuilds, on disks small enough for a test machine.
//!
//! One profile for each common layout, with fixed identities, sizes and usage, so that the
//! printed plans can be compared with snapshots: [`bios_ext4_profile`] (GPT, BIOS, one ext4
//! root), [`uefi_lvm_profile`] (GPT, UEFI, `/boot`, LVM with root, home and swap),
//! [`mirrored_lvm_profile`] (RAID 1 over two disks, LVM on top) and [`mbr_logical_profile`]
//! (MBR with logical partitions). [`targets`] makes target disks of any kind.

use keel_profile::{
    CrypttabEntry, Disk, Filesystem, FstabEntry, Luks, LvmLv, LvmPv, LvmVg, MdArray, Meta,
    Partition, Profile, Usage,
};

use crate::size::{GIB, MIB};
use crate::source::md_usable;
use crate::target::{DiskKind, TargetDisk};

/// GPT type of a BIOS boot partition.
pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
/// GPT type of a Linux RAID member.
pub const LINUX_RAID: &str = "a19d880f-05fc-4d3b-a006-743f0f84911e";
/// GPT type of a Linux filesystem.
pub const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/// GPT type of an EFI system partition.
pub const EFI_SYSTEM: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// GPT type of an LVM physical volume.
pub const LINUX_LVM: &str = "e6d6d379-f507-44c2-a23c-238f2a3df928";
/// GPT type of Linux swap.
pub const LINUX_SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";

/// A UUID-shaped string made from a number, so the sample is stable.
fn uuid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{n:012x}")
}

/// The four-disk RAID 1 + LVM server described in the module documentation.
pub fn raid_lvm_profile() -> Profile {
    let mut p = Profile {
        meta: Meta {
            hostname: "sample-raid-lvm".into(),
            ..Meta::default()
        },
        ..Profile::default()
    };
    let st = &mut p.storage;
    let small = 20 * GIB;
    let large = 100 * GIB;
    for (i, (name, size)) in [
        ("sda", small),
        ("sdb", small),
        ("sdc", large),
        ("sdd", large),
    ]
    .into_iter()
    .enumerate()
    {
        st.disks.push(Disk {
            id: format!("wwn:0x5000c50000000a{i:02x}"),
            name: name.into(),
            model: Some("SAMPLE DISK".into()),
            serial: Some(format!("SAMPLE-{name}")),
            wwn: Some(format!("0x5000c50000000a{i:02x}")),
            size_bytes: size,
            transport: Some("sata".into()),
            logical_sector_size: 512,
            physical_sector_size: 4096,
            pttype: Some("gpt".into()),
            ptuuid: Some(uuid(0x100 + i as u32)),
            ..Disk::default()
        });
    }
    let part = |disk: &str, name: &str, number: u32, start_mib: u64, size: u64, t: &str, u: u32| {
        Partition {
            disk: disk.into(),
            number,
            name: name.into(),
            start: start_mib * MIB / 512,
            size_bytes: size,
            part_type: t.into(),
            partuuid: Some(uuid(u)),
            partlabel: None,
            flags: Vec::new(),
        }
    };
    let boot_member = GIB;
    let lvm_member = small - 3 * MIB - GIB;
    let data_member = large - 2 * MIB;
    for (i, d) in ["sda", "sdb"].iter().enumerate() {
        let id = format!("wwn:0x5000c50000000a{i:02x}");
        let u = 0x200 + 0x10 * i as u32;
        st.partitions
            .push(part(&id, &format!("{d}1"), 1, 1, MIB, BIOS_BOOT, u));
        st.partitions.push(part(
            &id,
            &format!("{d}2"),
            2,
            2,
            boot_member,
            LINUX_RAID,
            u + 1,
        ));
        st.partitions.push(part(
            &id,
            &format!("{d}3"),
            3,
            1026,
            lvm_member,
            LINUX_RAID,
            u + 2,
        ));
    }
    for (i, d) in ["sdc", "sdd"].iter().enumerate() {
        let id = format!("wwn:0x5000c50000000a{:02x}", i + 2);
        st.partitions.push(part(
            &id,
            &format!("{d}1"),
            1,
            1,
            data_member,
            LINUX_RAID,
            0x240 + i as u32,
        ));
    }
    let md = |name: &str, u: u32, meta: &str, a: &str, b: &str, member: u64| MdArray {
        uuid: uuid(u),
        name: name.into(),
        level: "raid1".into(),
        metadata: Some(meta.into()),
        devices: vec![a.into(), b.into()],
        size_bytes: md_usable(member),
        state: Some("active".into()),
    };
    st.md_arrays = vec![
        md("md0", 0x300, "1.0", "/dev/sda2", "/dev/sdb2", boot_member),
        md("md1", 0x301, "1.2", "/dev/sda3", "/dev/sdb3", lvm_member),
        md("md2", 0x302, "1.2", "/dev/sdc1", "/dev/sdd1", data_member),
    ];
    let extent = 4 * MIB;
    let pv_size = |member: u64| md_usable(member);
    let vg_size = |member: u64| (pv_size(member) - MIB) / extent * extent;
    st.lvm_pvs = vec![
        LvmPv {
            uuid: "SAMPLE-pv0".into(),
            device: "/dev/md1".into(),
            vg: "vg0".into(),
            size_bytes: pv_size(lvm_member),
        },
        LvmPv {
            uuid: "SAMPLE-pv1".into(),
            device: "/dev/md2".into(),
            vg: "vgdata".into(),
            size_bytes: pv_size(data_member),
        },
    ];
    st.lvm_vgs = vec![
        LvmVg {
            name: "vg0".into(),
            uuid: "SAMPLE-vg0".into(),
            extent_size: extent,
            size_bytes: vg_size(lvm_member),
            free_bytes: vg_size(lvm_member) - 16 * GIB,
        },
        LvmVg {
            name: "vgdata".into(),
            uuid: "SAMPLE-vgdata".into(),
            extent_size: extent,
            size_bytes: vg_size(data_member),
            free_bytes: vg_size(data_member) - 80 * GIB,
        },
    ];
    let lv = |vg: &str, name: &str, size: u64| LvmLv {
        vg: vg.into(),
        name: name.into(),
        uuid: format!("SAMPLE-{vg}-{name}"),
        size_bytes: size,
        segtype: "linear".into(),
        attributes: "-wi-ao----".into(),
    };
    st.lvm_lvs = vec![
        lv("vg0", "root", 8 * GIB),
        lv("vg0", "var", 6 * GIB),
        lv("vg0", "swap", 2 * GIB),
        lv("vgdata", "srv", 80 * GIB),
    ];
    let fs = |dev: &str, fstype: &str, u: u32| keel_profile::Filesystem {
        uuid: Some(uuid(u)),
        device: dev.into(),
        fstype: fstype.into(),
        label: None,
        size_bytes: None,
    };
    st.filesystems = vec![
        fs("/dev/sda2", "linux_raid_member", 0x400),
        fs("/dev/sdb2", "linux_raid_member", 0x401),
        fs("/dev/sda3", "linux_raid_member", 0x402),
        fs("/dev/sdb3", "linux_raid_member", 0x403),
        fs("/dev/sdc1", "linux_raid_member", 0x404),
        fs("/dev/sdd1", "linux_raid_member", 0x405),
        fs("/dev/md0", "ext4", 0x500),
        fs("/dev/md1", "LVM2_member", 0x501),
        fs("/dev/md2", "LVM2_member", 0x502),
        fs("/dev/mapper/vg0-root", "ext4", 0x600),
        fs("/dev/mapper/vg0-var", "ext4", 0x601),
        fs("/dev/mapper/vg0-swap", "swap", 0x602),
        fs("/dev/mapper/vgdata-srv", "xfs", 0x603),
    ];
    let fstab = |u: u32, mp: &str, fstype: &str, options: &str, pass: u32| FstabEntry {
        spec: format!("UUID={}", uuid(u)),
        mountpoint: mp.into(),
        fstype: fstype.into(),
        options: options.into(),
        dump: 0,
        pass,
    };
    st.fstab = vec![
        fstab(0x600, "/", "ext4", "errors=remount-ro", 1),
        fstab(0x500, "/boot", "ext4", "defaults", 2),
        fstab(0x601, "/var", "ext4", "defaults", 2),
        fstab(0x603, "/srv", "xfs", "defaults", 2),
        fstab(0x602, "none", "swap", "sw", 0),
    ];
    let usage = |mp: &str, size: u64, used: u64| Usage {
        mountpoint: mp.into(),
        size_bytes: size,
        used_bytes: used,
        inodes_used: 0,
    };
    st.usage = vec![
        usage("/", 8 * GIB, 3 * GIB),
        usage("/boot", GIB, 200 * MIB),
        usage("/var", 6 * GIB, 2 * GIB),
        usage("/srv", 80 * GIB, 40 * GIB),
    ];
    p
}

/// The array UUID of [`encrypted_raid_profile`]'s `md0`, as blkid shows it.
pub const ENCRYPTED_MD_UUID: &str = "4b45454c-7265-6364-7261-69642d6d6430";
/// The LUKS2 UUID of [`encrypted_raid_profile`].
pub const ENCRYPTED_LUKS_UUID: &str = "4b45454c-6c75-6b73-2d63-727970747430";
/// The physical volume UUID of [`encrypted_raid_profile`] (LVM's form).
pub const ENCRYPTED_PV_UUID: &str = "KeelPV-samp-leen-cryp-tedr-aid0-pv0001";
/// The filesystem UUIDs of [`encrypted_raid_profile`]: root (ext4), srv (xfs), swap, and the
/// two EFI system partitions (FAT volume ids).
pub const ENCRYPTED_FS_UUIDS: [&str; 5] = [
    "4b45454c-726f-6f74-2d65-787434000001",
    "4b45454c-7372-762d-7866-730000000002",
    "4b45454c-7377-6170-0000-000000000003",
    "4B45-0E51",
    "4B45-0E52",
];

/// A UEFI server with two 1 GiB virtio disks (serials `KEEL-ENC-A` and `KEEL-ENC-B`): each
/// holds a 64 MiB EFI system partition (vfat; the first is mounted at `/boot/efi`) and a
/// member of `md0` (RAID 1, metadata 1.2). `md0` is LUKS2 (`cryptroot` in crypttab), the
/// physical volume of `vg0`: `root` (ext4, `/`, 400 MiB), `srv` (xfs, `/srv`, 320 MiB) and
/// 64 MiB of swap. Every UUID and label is fixed, so a rebuild can be checked against them.
pub fn encrypted_raid_profile() -> Profile {
    let mut p = Profile {
        meta: Meta {
            hostname: "sample-encrypted".into(),
            ..Meta::default()
        },
        ..Profile::default()
    };
    let st = &mut p.storage;
    let disk_size = GIB;
    let esp = 64 * MIB;
    let member = disk_size - 2 * MIB - esp;
    for (i, name) in ["vda", "vdb"].into_iter().enumerate() {
        let serial = format!("KEEL-ENC-{}", ["A", "B"][i]);
        st.disks.push(Disk {
            id: format!("serial:{serial}"),
            name: name.into(),
            model: None,
            serial: Some(serial),
            size_bytes: disk_size,
            transport: Some("virtio".into()),
            logical_sector_size: 512,
            physical_sector_size: 512,
            pttype: Some("gpt".into()),
            ptuuid: Some(uuid(0x700 + i as u32)),
            ..Disk::default()
        });
        let disk = st.disks[i].id.clone();
        st.partitions.push(Partition {
            disk: disk.clone(),
            number: 1,
            name: format!("{name}1"),
            start: MIB / 512,
            size_bytes: esp,
            part_type: EFI_SYSTEM.into(),
            partuuid: Some(uuid(0x710 + 2 * i as u32)),
            partlabel: Some("EFI System".into()),
            flags: Vec::new(),
        });
        st.partitions.push(Partition {
            disk,
            number: 2,
            name: format!("{name}2"),
            start: (MIB + esp) / 512,
            size_bytes: member,
            part_type: LINUX_RAID.into(),
            partuuid: Some(uuid(0x711 + 2 * i as u32)),
            partlabel: Some("raid".into()),
            flags: Vec::new(),
        });
    }
    let array = md_usable(member);
    st.md_arrays.push(MdArray {
        uuid: ENCRYPTED_MD_UUID.into(),
        name: "md0".into(),
        level: "raid1".into(),
        metadata: Some("1.2".into()),
        devices: vec!["/dev/vda2".into(), "/dev/vdb2".into()],
        size_bytes: array,
        state: Some("active".into()),
    });
    st.luks.push(Luks {
        uuid: ENCRYPTED_LUKS_UUID.into(),
        device: "/dev/md0".into(),
        version: 2,
        cipher: Some("aes-xts-plain64".into()),
        keyslots: 1,
        label: Some("cryptroot".into()),
    });
    st.crypttab.push(CrypttabEntry {
        name: "cryptroot".into(),
        device: format!("UUID={ENCRYPTED_LUKS_UUID}"),
        keyfile: "none".into(),
        options: "luks,discard".into(),
    });
    let extent = 4 * MIB;
    let pv_size = array - 16 * MIB;
    let vg_size = (pv_size - MIB) / extent * extent;
    st.lvm_pvs.push(LvmPv {
        uuid: ENCRYPTED_PV_UUID.into(),
        device: "/dev/mapper/cryptroot".into(),
        vg: "vg0".into(),
        size_bytes: pv_size,
    });
    let lvs = [("root", 400 * MIB), ("srv", 320 * MIB), ("swap", 64 * MIB)];
    st.lvm_vgs.push(LvmVg {
        name: "vg0".into(),
        uuid: "SAMPLE-vg0-encrypted".into(),
        extent_size: extent,
        size_bytes: vg_size,
        free_bytes: vg_size - lvs.iter().map(|l| l.1).sum::<u64>(),
    });
    for (name, size) in lvs {
        st.lvm_lvs.push(LvmLv {
            vg: "vg0".into(),
            name: name.into(),
            uuid: format!("SAMPLE-vg0-{name}"),
            size_bytes: size,
            segtype: "linear".into(),
            attributes: "-wi-ao----".into(),
        });
    }
    let fs = |dev: &str, fstype: &str, uuid: &str, label: Option<&str>| Filesystem {
        uuid: Some(uuid.into()),
        device: dev.into(),
        fstype: fstype.into(),
        label: label.map(Into::into),
        size_bytes: None,
    };
    let [root, srv, swap, esp_a, esp_b] = ENCRYPTED_FS_UUIDS;
    st.filesystems = vec![
        fs("/dev/vda1", "vfat", esp_a, Some("ESP")),
        fs("/dev/vdb1", "vfat", esp_b, Some("ESP2")),
        fs("/dev/vda2", "linux_raid_member", ENCRYPTED_MD_UUID, None),
        fs("/dev/vdb2", "linux_raid_member", ENCRYPTED_MD_UUID, None),
        fs(
            "/dev/md0",
            "crypto_LUKS",
            ENCRYPTED_LUKS_UUID,
            Some("cryptroot"),
        ),
        fs(
            "/dev/mapper/cryptroot",
            "LVM2_member",
            ENCRYPTED_PV_UUID,
            None,
        ),
        fs("/dev/mapper/vg0-root", "ext4", root, Some("root")),
        fs("/dev/mapper/vg0-srv", "xfs", srv, Some("srv")),
        fs("/dev/mapper/vg0-swap", "swap", swap, None),
    ];
    let fstab = |spec: String, mp: &str, fstype: &str, options: &str, pass: u32| FstabEntry {
        spec,
        mountpoint: mp.into(),
        fstype: fstype.into(),
        options: options.into(),
        dump: 0,
        pass,
    };
    st.fstab = vec![
        fstab(format!("UUID={root}"), "/", "ext4", "errors=remount-ro", 1),
        fstab(
            format!("UUID={esp_a}"),
            "/boot/efi",
            "vfat",
            "umask=0077",
            1,
        ),
        fstab("LABEL=srv".into(), "/srv", "xfs", "defaults,nofail", 2),
        fstab(format!("UUID={swap}"), "none", "swap", "sw", 0),
    ];
    let usage = |mp: &str, size: u64, used: u64| Usage {
        mountpoint: mp.into(),
        size_bytes: size,
        used_bytes: used,
        inodes_used: 0,
    };
    st.usage = vec![
        usage("/", 400 * MIB, 150 * MIB),
        usage("/boot/efi", esp, 6 * MIB),
        usage("/srv", 320 * MIB, 20 * MIB),
    ];
    p
}

// ------------------------------------------------------------------ one layout each

/// A profile with one host name and nothing else yet.
fn named(hostname: &str) -> Profile {
    Profile {
        meta: Meta {
            hostname: hostname.into(),
            ..Meta::default()
        },
        ..Profile::default()
    }
}

/// A source disk with a fixed identity: serial `SAMPLE-{name}`, id `serial:SAMPLE-{name}`.
fn source_disk(name: &str, size: u64, transport: &str, pttype: &str, table_id: &str) -> Disk {
    let serial = format!("SAMPLE-{name}");
    Disk {
        id: format!("serial:{serial}"),
        name: name.into(),
        model: Some("SAMPLE DISK".into()),
        serial: Some(serial),
        size_bytes: size,
        transport: Some(transport.into()),
        logical_sector_size: 512,
        physical_sector_size: 4096,
        pttype: Some(pttype.into()),
        ptuuid: Some(table_id.into()),
        ..Disk::default()
    }
}

/// A partition of `disk` (its id) starting at `start_mib`.
fn partition(disk: &Disk, number: u32, start_mib: u64, size: u64, t: &str, u: u32) -> Partition {
    let sep = if disk.name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    Partition {
        disk: disk.id.clone(),
        number,
        name: format!("{}{sep}{number}", disk.name),
        start: start_mib * MIB / 512,
        size_bytes: size,
        part_type: t.into(),
        partuuid: Some(uuid(u)),
        partlabel: None,
        flags: Vec::new(),
    }
}

fn filesystem(dev: &str, fstype: &str, uuid: &str) -> Filesystem {
    Filesystem {
        uuid: Some(uuid.into()),
        device: dev.into(),
        fstype: fstype.into(),
        label: None,
        size_bytes: None,
    }
}

fn mount(uuid: &str, mp: &str, fstype: &str, options: &str, pass: u32) -> FstabEntry {
    FstabEntry {
        spec: format!("UUID={uuid}"),
        mountpoint: mp.into(),
        fstype: fstype.into(),
        options: options.into(),
        dump: 0,
        pass,
    }
}

fn usage(mp: &str, size: u64, used: u64) -> Usage {
    Usage {
        mountpoint: mp.into(),
        size_bytes: size,
        used_bytes: used,
        inodes_used: 0,
    }
}

/// Linear logical volumes of `vg`, with their sizes.
fn linear_lvs(vg: &str, lvs: &[(&str, u64)]) -> Vec<LvmLv> {
    lvs.iter()
        .map(|&(name, size)| LvmLv {
            vg: vg.into(),
            name: name.into(),
            uuid: format!("SAMPLE-{vg}-{name}"),
            size_bytes: size,
            segtype: "linear".into(),
            attributes: "-wi-ao----".into(),
        })
        .collect()
}

/// Volume group `vg` (4 MiB extents) on one physical volume of `pv_size` at `device`.
fn one_pv_vg(vg: &str, device: &str, pv_size: u64, used: u64) -> (LvmPv, LvmVg) {
    let extent = 4 * MIB;
    let size = (pv_size - MIB) / extent * extent;
    (
        LvmPv {
            uuid: format!("SAMPLE-{vg}-pv0"),
            device: device.into(),
            vg: vg.into(),
            size_bytes: pv_size,
        },
        LvmVg {
            name: vg.into(),
            uuid: format!("SAMPLE-{vg}"),
            extent_size: extent,
            size_bytes: size,
            free_bytes: size - used,
        },
    )
}

/// A BIOS machine on one 32 GiB SATA disk `sda` with a GPT: a BIOS boot partition and one
/// ext4 root filesystem (6 GiB used) filling the rest.
pub fn bios_ext4_profile() -> Profile {
    let mut p = named("sample-bios");
    let st = &mut p.storage;
    let sda = source_disk("sda", 32 * GIB, "sata", "gpt", &uuid(0x1000));
    st.partitions = vec![
        partition(&sda, 1, 1, MIB, BIOS_BOOT, 0x1001),
        partition(&sda, 2, 2, 32 * GIB - 3 * MIB, LINUX_FS, 0x1002),
    ];
    st.disks.push(sda);
    let root = uuid(0x1100);
    st.filesystems = vec![filesystem("/dev/sda2", "ext4", &root)];
    st.fstab = vec![mount(&root, "/", "ext4", "errors=remount-ro", 1)];
    st.usage = vec![usage("/", 32 * GIB - 3 * MIB, 6 * GIB)];
    p
}

/// A UEFI machine on one 128 GiB `NVMe` disk `nvme0n1` with a GPT: a 512 MiB EFI system
/// partition on `/boot/efi`, a 1 GiB ext4 `/boot`, and an LVM physical volume filling the rest
/// for `vg0`: `root` (ext4, `/`, 30 GiB, 9 GiB used), `home` (ext4, `/home`, 80 GiB, 45 GiB
/// used) and 8 GiB of swap.
pub fn uefi_lvm_profile() -> Profile {
    let mut p = named("sample-uefi-lvm");
    let st = &mut p.storage;
    let disk = source_disk("nvme0n1", 128 * GIB, "nvme", "gpt", &uuid(0x2000));
    let esp = 512 * MIB;
    let pv = 128 * GIB - 2 * MIB - esp - GIB;
    st.partitions = vec![
        partition(&disk, 1, 1, esp, EFI_SYSTEM, 0x2001),
        partition(&disk, 2, 513, GIB, LINUX_FS, 0x2002),
        partition(&disk, 3, 1537, pv, LINUX_LVM, 0x2003),
    ];
    st.disks.push(disk);
    let lvs = [("root", 30 * GIB), ("home", 80 * GIB), ("swap", 8 * GIB)];
    let (lvm_pv, vg) = one_pv_vg("vg0", "/dev/nvme0n1p3", pv, 118 * GIB);
    st.lvm_pvs = vec![lvm_pv];
    st.lvm_vgs = vec![vg];
    st.lvm_lvs = linear_lvs("vg0", &lvs);
    let (efi, boot, root, home, swap) = (
        "5A3E-0001".to_string(),
        uuid(0x2100),
        uuid(0x2101),
        uuid(0x2102),
        uuid(0x2103),
    );
    st.filesystems = vec![
        filesystem("/dev/nvme0n1p1", "vfat", &efi),
        filesystem("/dev/nvme0n1p2", "ext4", &boot),
        filesystem("/dev/nvme0n1p3", "LVM2_member", &uuid(0x2104)),
        filesystem("/dev/mapper/vg0-root", "ext4", &root),
        filesystem("/dev/mapper/vg0-home", "ext4", &home),
        filesystem("/dev/mapper/vg0-swap", "swap", &swap),
    ];
    st.fstab = vec![
        mount(&root, "/", "ext4", "errors=remount-ro", 1),
        mount(&boot, "/boot", "ext4", "defaults", 2),
        mount(&efi, "/boot/efi", "vfat", "umask=0077", 1),
        mount(&home, "/home", "ext4", "defaults", 2),
        mount(&swap, "none", "swap", "sw", 0),
    ];
    st.usage = vec![
        usage("/", 30 * GIB, 9 * GIB),
        usage("/boot", GIB, 180 * MIB),
        usage("/boot/efi", esp, 8 * MIB),
        usage("/home", 80 * GIB, 45 * GIB),
    ];
    p
}

/// A BIOS machine with two 64 GiB SATA disks `sda` and `sdb` (GPT): each holds a BIOS boot
/// partition and a member of `md0` (RAID 1, metadata 1.2) filling the rest. `md0` is the
/// physical volume of `vg0`: `root` (ext4, `/`, 20 GiB, 7 GiB used), `var` (ext4, `/var`,
/// 16 GiB, 5 GiB used) and 4 GiB of swap.
pub fn mirrored_lvm_profile() -> Profile {
    let mut p = named("sample-mirror");
    let st = &mut p.storage;
    let size = 64 * GIB;
    let member = size - 3 * MIB;
    for (i, name) in ["sda", "sdb"].into_iter().enumerate() {
        let n = 0x10 * i as u32;
        let d = source_disk(name, size, "sata", "gpt", &uuid(0x3000 + n));
        st.partitions
            .push(partition(&d, 1, 1, MIB, BIOS_BOOT, 0x3001 + n));
        st.partitions
            .push(partition(&d, 2, 2, member, LINUX_RAID, 0x3002 + n));
        st.filesystems.push(filesystem(
            &format!("/dev/{name}2"),
            "linux_raid_member",
            &uuid(0x3100),
        ));
        st.disks.push(d);
    }
    let array = md_usable(member);
    st.md_arrays.push(MdArray {
        uuid: uuid(0x3100),
        name: "md0".into(),
        level: "raid1".into(),
        metadata: Some("1.2".into()),
        devices: vec!["/dev/sda2".into(), "/dev/sdb2".into()],
        size_bytes: array,
        state: Some("active".into()),
    });
    let lvs = [("root", 20 * GIB), ("var", 16 * GIB), ("swap", 4 * GIB)];
    let (pv, vg) = one_pv_vg("vg0", "/dev/md0", array, 40 * GIB);
    st.lvm_pvs = vec![pv];
    st.lvm_vgs = vec![vg];
    st.lvm_lvs = linear_lvs("vg0", &lvs);
    let (root, var, swap) = (uuid(0x3200), uuid(0x3201), uuid(0x3202));
    st.filesystems.extend([
        filesystem("/dev/md0", "LVM2_member", &uuid(0x3203)),
        filesystem("/dev/mapper/vg0-root", "ext4", &root),
        filesystem("/dev/mapper/vg0-var", "ext4", &var),
        filesystem("/dev/mapper/vg0-swap", "swap", &swap),
    ]);
    st.fstab = vec![
        mount(&root, "/", "ext4", "errors=remount-ro", 1),
        mount(&var, "/var", "ext4", "defaults", 2),
        mount(&swap, "none", "swap", "sw", 0),
    ];
    st.usage = vec![
        usage("/", 20 * GIB, 7 * GIB),
        usage("/var", 16 * GIB, 5 * GIB),
    ];
    p
}

/// A BIOS machine on one 24 GiB SATA disk `sda` with an MBR partition table: a bootable
/// primary ext4 root (`sda1`, 18 GiB, 5 GiB used), and an extended partition (`sda2`) holding
/// two logical ones: 2 GiB of swap (`sda5`) and an ext4 `/home` (`sda6`, 1 GiB used).
pub fn mbr_logical_profile() -> Profile {
    let mut p = named("sample-mbr");
    let st = &mut p.storage;
    let sda = source_disk("sda", 24 * GIB, "sata", "dos", "0x5a3e0001");
    let root = 18 * GIB;
    let ext_start = 1 + 18 * 1024;
    let ext = 24 * GIB - MIB - root;
    let swap = 2 * GIB - MIB;
    let home = ext - 2 * MIB - swap;
    let mut primary = partition(&sda, 1, 1, root, "0x83", 0);
    primary.flags = vec!["bootable".into()];
    let mut parts = vec![
        primary,
        partition(&sda, 2, ext_start, ext, "0x05", 0),
        partition(&sda, 5, ext_start + 1, swap, "0x82", 0),
        partition(&sda, 6, ext_start + 2 + 2047, home, "0x83", 0),
    ];
    for p in &mut parts {
        p.partuuid = Some(format!("5a3e0001-{:02}", p.number));
    }
    st.partitions = parts;
    st.disks.push(sda);
    let (r, s, h) = (uuid(0x4100), uuid(0x4101), uuid(0x4102));
    st.filesystems = vec![
        filesystem("/dev/sda1", "ext4", &r),
        filesystem("/dev/sda5", "swap", &s),
        filesystem("/dev/sda6", "ext4", &h),
    ];
    st.fstab = vec![
        mount(&r, "/", "ext4", "errors=remount-ro", 1),
        mount(&h, "/home", "ext4", "defaults", 2),
        mount(&s, "none", "swap", "sw", 0),
    ];
    st.usage = vec![usage("/", root, 5 * GIB), usage("/home", home, GIB)];
    p
}

/// Target disks of one kind and the given sizes, with fixed identities: `NVMe` ones are
/// `/dev/nvme0n1`, `/dev/nvme1n1`, … (as [`nvme_targets`]); SATA ones `/dev/sda`, `/dev/sdb`,
/// …; virtio ones `/dev/vda`, `/dev/vdb`, …
pub fn targets(kind: DiskKind, sizes: &[u64]) -> Vec<TargetDisk> {
    if kind == DiskKind::Nvme {
        return nvme_targets(sizes);
    }
    let prefix = if kind == DiskKind::Virtio { "vd" } else { "sd" };
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let name = format!("{prefix}{}", char::from(b'a' + i as u8));
            TargetDisk {
                path: format!("/dev/{name}"),
                name: Some(name.clone()),
                size_bytes: size,
                logical_sector_size: 512,
                model: Some(format!("SAMPLE {}", kind.as_str().to_uppercase())),
                serial: Some(format!("SAMPLE-{}-{i}", kind.as_str().to_uppercase())),
                wwn: (kind != DiskKind::Virtio).then(|| format!("0x5000c500000001{i:02x}")),
                kind,
                rotational: kind == DiskKind::Sata,
                ..TargetDisk::default()
            }
        })
        .collect()
}

/// `NVMe` target disks of the given sizes: `/dev/nvme0n1`, `/dev/nvme1n1`, …
pub fn nvme_targets(sizes: &[u64]) -> Vec<TargetDisk> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| TargetDisk {
            path: format!("/dev/nvme{i}n1"),
            name: Some(format!("nvme{i}n1")),
            size_bytes: size,
            logical_sector_size: 512,
            model: Some("SAMPLE NVME".into()),
            serial: Some(format!("SAMPLE-NVME-{i}")),
            wwn: Some(format!("eui.00000000000000{i:02x}")),
            kind: DiskKind::Nvme,
            ..TargetDisk::default()
        })
        .collect()
}
