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
