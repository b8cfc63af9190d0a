//! The rescue environment booted under QEMU (TCG) with blank disks attached.

use std::fs;
use std::path::Path;
use std::time::Duration;

use keel_rescue::{RescueResult, Status};

use crate::qemu::{Bus, Disk, Vm};
use crate::support::{
    blank_image, kit_image, note, rescue_env, secs, skip, step_output, vm_tests_unsupported,
    ShowConsoleOnPanic,
};

const MIB: u64 = 1 << 20;

/// Longest a boot may take to reach `keel rescue`'s banner under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(240);

/// The rescue target: at most 150 MB compressed for the whole fleet.
const SIZE_TARGET: u64 = 150 * 1000 * 1000;

const MD_UUID: &str = "4b45454c:72657363:75652d6d:64303031";
const PV_UUID: &str = "KeelPV-0000-1111-2222-3333-4444-555555";
const LUKS_UUID: &str = "6b65656c-6c75-6b73-2d75-756964303031";
const EXT_UUID: &str = "6b65656c-726f-6f74-2d75-756964303031";
const XFS_UUID: &str = "6b65656c-6461-7461-2d75-756964303031";
const SWAP_UUID: &str = "6b65656c-7377-6170-2d75-756964303031";
const FAT_ID: &str = "1A2B3C4D";

fn report_size(test: &str, env: &crate::support::RescueEnv) {
    let m = &env.manifest;
    note(&format!(
        "{test}: initrd.img {:.1} MiB compressed ({} bytes, zstd -{}), {:.1} MiB uncompressed; \
         vmlinuz {:.1} MiB; {} packages, {} of {} kernel modules",
        m.initrd.compressed_bytes as f64 / MIB as f64,
        m.initrd.compressed_bytes,
        m.initrd.level,
        m.initrd.uncompressed_bytes as f64 / MIB as f64,
        m.files[0].size as f64 / MIB as f64,
        m.packages.len(),
        m.modules.kept,
        m.modules.shipped,
    ));
    assert!(
        m.initrd.compressed_bytes + m.files[0].size <= SIZE_TARGET,
        "kernel + initramfs are {} bytes, over the {SIZE_TARGET} target",
        m.initrd.compressed_bytes + m.files[0].size
    );
}

#[test]
fn without_a_kit_it_lists_the_disks_explains_and_opens_a_shell() {
    const TEST: &str = "rescue_no_kit";
    if let Some(why) = vm_tests_unsupported() {
        return skip(TEST, &why);
    }
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    report_size(TEST, env);
    let dir = tempfile::tempdir().unwrap();
    let (v, n) = (dir.path().join("v.img"), dir.path().join("n.img"));
    blank_image(&v, 1024 * MIB);
    blank_image(&n, 2048 * MIB);
    let console = dir.path().join("console.log");
    let _show = ShowConsoleOnPanic(&console);
    let mut vm = Vm::boot(
        env,
        &[
            Disk::new(&v, Bus::Virtio, "KEEL-BLANK-V"),
            Disk::new(&n, Bus::Nvme, "KEEL-BLANK-N"),
        ],
        "keel.wait=2",
        &console,
        Duration::from_secs(400),
    );
    let banner = vm
        .wait_for("=== Keel rescue environment", BOOT_LIMIT)
        .expect("the banner of keel rescue");
    note(&format!(
        "{TEST}: QEMU start to the keel rescue banner under TCG: {}",
        secs(banner)
    ));
    vm.wait_for(keel_rescue::RESULT_PREFIX, Duration::from_secs(60))
        .expect("a result line");
    let text = vm.console();
    let r = RescueResult::find(&text).expect("a parsable result line");
    assert_eq!(r.status, Status::NoKit);
    let disks: Vec<(&str, u64, &str, &str)> = r
        .disks
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.size,
                d.serial.as_str(),
                d.transport.as_str(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [
            ("nvme0n1", 2048 * MIB, "KEEL-BLANK-N", "nvme"),
            ("vda", 1024 * MIB, "KEEL-BLANK-V", "virtio"),
        ]
    );
    for line in [
        "nvme0n1         2 GiB  nvme      QEMU NVMe Ctrl           KEEL-BLANK-N",
        "vda             1 GiB  virtio    -                        KEEL-BLANK-V",
        "No recovery kit found (no filesystem labelled KEELKIT).",
        "holding kit.json",
        "sfdisk/sgdisk, mdadm, lvm, cryptsetup",
    ] {
        assert!(text.contains(line), "console lacks {line:?}");
    }
    // The shell on the console works, and leaving it powers the machine off.
    vm.wait_for("Starting a shell", Duration::from_secs(30))
        .expect("a shell is offered");
    std::thread::sleep(Duration::from_secs(2));
    vm.send("echo shell-$((6*7)) on $(hostname)\n");
    vm.wait_for("shell-42 on keel-rescue", Duration::from_secs(60))
        .expect("the shell runs commands");
    vm.send("exit\n");
    let status = vm
        .wait_exit(Duration::from_secs(60))
        .expect("the guest powers off when the shell exits");
    assert!(status.success(), "qemu exited with {status}");
    assert!(vm.console().contains("Powering off."));
    note(&format!("{TEST}: whole run {}", secs(vm.elapsed())));
}

/// The kit: RAID 1 over a virtio and an NVM Express disk, LVM on it, LUKS2 on a logical volume,
/// ext4, XFS, FAT and swap with given UUIDs and labels, mounted, and GRUB for BIOS and UEFI.
fn storage_kit(dir: &Path) {
    fs::write(dir.join("luks.key"), "correct horse battery staple\n").unwrap();
    // Disks by serial number: device names are the kernel's to choose.
    fs::write(
        dir.join("disks.sh"),
        r#"by_serial() {
    for d in /sys/block/*; do
        s=$(cat "$d/serial" 2>/dev/null || cat "$d/device/serial" 2>/dev/null || true)
        if [ "$(echo $s)" = "$1" ]; then echo "/dev/${d##*/}"; return 0; fi
    done
    echo "no disk with serial $1" >&2; return 1
}
R1=$(by_serial KEEL-R1); R2=$(by_serial KEEL-R2); E3=$(by_serial KEEL-E3)
"#,
    )
    .unwrap();
    let steps = serde_json::json!([
        {"name": "disks", "shell": ". ./disks.sh; echo \"R1=$R1 R2=$R2 E3=$E3\"; lsblk -o NAME,SIZE,TYPE,SERIAL"},
        {"name": "partition", "shell": ". ./disks.sh\n\
            sgdisk -n1:1M:+1M -t1:ef02 -c1:bios -n2:0:+64M -t2:ef00 -c2:esp -n3:0:+32M -t3:8200 -c3:swap $E3\n\
            sfdisk --dump $E3\n\
            for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${E3}p3 ] && break; sleep 0.5; done; ls ${E3}p1 ${E3}p2 ${E3}p3"},
        {"name": "raid", "shell": format!(". ./disks.sh\n\
            mdadm --create /dev/md0 --run --assume-clean --level=1 --raid-devices=2 --metadata=1.2 \
              --uuid={MD_UUID} --name=keel:data $R1 $R2\n\
            cat /proc/mdstat")},
        {"name": "lvm", "shell": format!("pvcreate -y --norestorefile --uuid {PV_UUID} /dev/md0\n\
            vgcreate vg0 /dev/md0\n\
            lvcreate -y -L 64M -n root vg0\n\
            lvcreate -y -l 100%FREE -n secret vg0\n\
            lvs --noheadings -o lv_name,lv_size vg0")},
        {"name": "luks", "shell": format!("cryptsetup luksFormat --batch-mode --type luks2 --uuid {LUKS_UUID} \
              --label keel-secret --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file ./luks.key /dev/vg0/secret\n\
            cryptsetup open --key-file ./luks.key /dev/vg0/secret secret\n\
            cryptsetup status secret")},
        {"name": "mkfs", "shell": format!(". ./disks.sh\n\
            mkfs.ext4 -q -F -U {EXT_UUID} -L keel-root /dev/vg0/root\n\
            mkfs.xfs -q -f -m uuid={XFS_UUID} -L keel-data /dev/mapper/secret\n\
            mkfs.vfat -F 32 -i {FAT_ID} -n KEEL-ESP ${{E3}}p2\n\
            mkswap -U {SWAP_UUID} -L keel-swap ${{E3}}p3")},
        {"name": "mount", "shell": ". ./disks.sh\n\
            mkdir -p /mnt/root /mnt/data /mnt/esp\n\
            mount /dev/vg0/root /mnt/root\n\
            mount /dev/mapper/secret /mnt/data\n\
            mount ${E3}p2 /mnt/esp\n\
            swapon ${E3}p3\n\
            echo kept > /mnt/data/hello && cat /mnt/data/hello\n\
            findmnt -rn -o TARGET,SOURCE,FSTYPE | grep /mnt/\n\
            swapon --show=NAME,TYPE --noheadings"},
        {"name": "grub", "timeout_secs": 600, "shell": ". ./disks.sh\n\
            grub-install --target=i386-pc --boot-directory=/mnt/root/boot $E3\n\
            grub-install --target=x86_64-efi --efi-directory=/mnt/esp --boot-directory=/mnt/root/boot --removable --no-nvram\n\
            ls /mnt/esp/EFI/BOOT"},
        {"name": "blkid", "run": ["blkid", "-o", "full"]},
        {"name": "teardown", "shell": "swapoff -a\n\
            umount /mnt/esp /mnt/data /mnt/root\n\
            cryptsetup close secret\n\
            vgchange -an vg0\n\
            mdadm --stop /dev/md0"},
    ]);
    fs::write(
        dir.join("kit.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "format": 1,
            "description": "RAID 1 + LVM + LUKS2 + ext4/XFS/FAT/swap + GRUB for BIOS and UEFI",
            "steps": steps,
        }))
        .unwrap(),
    )
    .unwrap();
}

/// The `blkid` line of the device whose line contains `needle`.
fn blkid_line<'a>(blkid: &'a str, needle: &str) -> &'a str {
    blkid
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("blkid shows nothing with {needle}:\n{blkid}"))
}

#[test]
fn a_kit_builds_raid_lvm_luks_filesystems_and_grub_on_blank_disks() {
    const TEST: &str = "rescue_kit_storage";
    if let Some(why) = vm_tests_unsupported() {
        return skip(TEST, &why);
    }
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    report_size(TEST, env);
    let dir = tempfile::tempdir().unwrap();
    let kit_dir = dir.path().join("kit");
    fs::create_dir(&kit_dir).unwrap();
    storage_kit(&kit_dir);
    let kit = dir.path().join("kit.img");
    kit_image(&kit_dir, &kit);
    let images: Vec<_> = ["r1", "r2", "e3"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.img")))
        .collect();
    blank_image(&images[0], 512 * MIB);
    blank_image(&images[1], 512 * MIB);
    blank_image(&images[2], 256 * MIB);
    let mut kit_disk = Disk::new(&kit, Bus::Virtio, "KEEL-KIT");
    kit_disk.readonly = true;
    let console = dir.path().join("console.log");
    let _show = ShowConsoleOnPanic(&console);
    let mut vm = Vm::boot(
        env,
        &[
            kit_disk,
            Disk::new(&images[0], Bus::Virtio, "KEEL-R1"),
            Disk::new(&images[1], Bus::Nvme, "KEEL-R2"),
            Disk::new(&images[2], Bus::Nvme, "KEEL-E3"),
        ],
        // A failing step must power off, not wait at a shell.
        "keel.shell=0",
        &console,
        Duration::from_secs(900),
    );
    let banner = vm
        .wait_for("=== Keel rescue environment", BOOT_LIMIT)
        .expect("the banner of keel rescue");
    note(&format!(
        "{TEST}: QEMU start to the keel rescue banner under TCG: {}",
        secs(banner)
    ));
    let status = vm
        .wait_exit(Duration::from_secs(800))
        .expect("the guest powers off after the kit");
    let text = vm.console();
    let r = RescueResult::find(&text).expect("a parsable result line");
    assert_eq!(r.status, Status::Ok, "steps: {:?}", r.steps);
    assert!(status.success(), "qemu exited with {status}");
    let kit_found = r.kit.expect("the kit's device");
    assert_eq!(kit_found.probe.label, "KEELKIT");
    assert_eq!(kit_found.probe.fstype, "ext4");
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "disks",
            "partition",
            "raid",
            "lvm",
            "luks",
            "mkfs",
            "mount",
            "grub",
            "blkid",
            "teardown"
        ]
    );
    for s in &r.steps {
        note(&format!("{TEST}: step {:<10} {:>7.2} s", s.name, s.seconds));
    }

    assert!(step_output(&text, "raid").contains("md0 : active raid1"));
    let mount = step_output(&text, "mount");
    assert!(mount.lines().any(|l| l == "kept"), "{mount}");
    for fs in [
        "/mnt/root /dev/mapper/vg0-root ext4",
        "/mnt/data /dev/mapper/secret xfs",
        "vfat",
    ] {
        assert!(mount.contains(fs), "mount step lacks {fs:?}:\n{mount}");
    }
    let grub = step_output(&text, "grub");
    assert_eq!(
        grub.matches("Installation finished. No error reported.")
            .count(),
        2,
        "{grub}"
    );
    assert!(grub.contains("BOOTX64.EFI"), "{grub}");

    let blkid = step_output(&text, "blkid");
    let line = blkid_line(blkid, EXT_UUID);
    assert!(
        line.contains(r#"LABEL="keel-root""#) && line.contains(r#"TYPE="ext4""#),
        "{line}"
    );
    let line = blkid_line(blkid, XFS_UUID);
    assert!(
        line.contains(r#"LABEL="keel-data""#) && line.contains(r#"TYPE="xfs""#),
        "{line}"
    );
    let line = blkid_line(blkid, LUKS_UUID);
    assert!(
        line.contains(r#"TYPE="crypto_LUKS""#) && line.contains(r#"LABEL="keel-secret""#),
        "{line}"
    );
    let line = blkid_line(blkid, SWAP_UUID);
    assert!(
        line.contains(r#"LABEL="keel-swap""#) && line.contains(r#"TYPE="swap""#),
        "{line}"
    );
    let line = blkid_line(blkid, r#"UUID="1A2B-3C4D""#);
    assert!(
        line.contains(r#"LABEL="KEEL-ESP""#) && line.contains(r#"TYPE="vfat""#),
        "{line}"
    );
    assert!(line.contains(r#"PARTLABEL="esp""#), "{line}");
    let line = blkid_line(blkid, PV_UUID);
    assert!(line.contains(r#"TYPE="LVM2_member""#), "{line}");
    let md: String = MD_UUID.chars().filter(char::is_ascii_hexdigit).collect();
    let members = blkid
        .lines()
        .filter(|l| l.contains(r#"TYPE="linux_raid_member""#))
        .filter(|l| {
            let hex: String = l
                .split("UUID=\"")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| *c != '"')
                .filter(char::is_ascii_hexdigit)
                .collect();
            hex.eq_ignore_ascii_case(&md)
        })
        .count();
    assert_eq!(
        members, 2,
        "both RAID members carry the array UUID:\n{blkid}"
    );
    note(&format!("{TEST}: whole run {}", secs(vm.elapsed())));
}
