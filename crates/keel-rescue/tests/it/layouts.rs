//! Storage layouts built in the rescue environment, captured with `keel capture --root` and
//! recreated on blank disks with `keel recover plan` and `keel recover apply`: GPT + UEFI with
//! an ESP, /boot and LVM on one disk, rebuilt onto a larger, a smaller and two disks; and
//! RAID 1 over two disks with LVM on top, rebuilt onto two larger and two smaller disks. Everything
//! runs inside the guest (the host's kernel may lack md, device-mapper and FAT); the test reads
//! what `blkid`, `sfdisk --json`, `lvs`, `mdadm --detail` and the mount table printed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use keel_rescue::{RescueResult, Status};
use serde_json::Value;

use crate::qemu::{Bus, Disk, Vm};
use crate::support::{
    blank_image, kit_image, note, rescue_env, secs, skip, step_output, vm_tests_unsupported,
    ShowConsoleOnPanic,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Longest a boot may take to reach `keel rescue`'s banner under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(240);

const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_LVM: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const LINUX_RAID: &str = "A19D880F-05FC-4D3B-A006-743F0F84911E";

/// Shell helpers every step sources: disks by serial number (device names are the kernel's
/// to choose), partition names, and wiping a disk so the next layout with the same UUIDs is
/// the only one the tools see.
const LIB_SH: &str = r#"by_serial() {
    for d in /sys/block/*; do
        s=$(cat "$d/serial" 2>/dev/null || cat "$d/device/serial" 2>/dev/null || true)
        if [ "$(echo $s)" = "$1" ]; then echo "/dev/${d##*/}"; return 0; fi
    done
    echo "no disk with serial $1" >&2; return 1
}
# The N-th partition of a disk: /dev/vda → /dev/vda1, /dev/nvme0n1 → /dev/nvme0n1p1.
part() { case $1 in *[0-9]) echo "${1}p$2";; *) echo "$1$2";; esac; }
wait_part() {
    for i in $(seq 1 50); do [ -b "$(part $1 $2)" ] && return 0; sleep 0.1; done
    echo "no $(part $1 $2)" >&2; return 1
}
wipe() {
    for d in "$@"; do
        for p in $(lsblk -lnpo NAME "$d" | tail -n +2); do wipefs -aq "$p"; done
        wipefs -aq "$d"
        partx -d "$d" 2>/dev/null || true
    done
}
uuid() { blkid -c /dev/null -s UUID -o value "$1"; }
now() { awk '{print $1}' /proc/uptime; }
"#;

/// A kit step running `script` under `sh -e` with the helpers loaded.
pub(crate) fn step(name: &str, script: &str) -> Value {
    serde_json::json!({
        "name": name,
        "shell": format!("set -e\n. ./lib.sh\n. ./disks.sh\n{script}"),
        "timeout_secs": 900,
    })
}

/// Writes the kit (kit.json, lib.sh, disks.sh) into `dir`.
pub(crate) fn write_kit(dir: &Path, description: &str, disks_sh: &str, steps: &[Value]) {
    fs::write(dir.join("lib.sh"), LIB_SH).unwrap();
    fs::write(dir.join("disks.sh"), disks_sh).unwrap();
    fs::write(
        dir.join("kit.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "format": 1,
            "description": description,
            "steps": steps,
        }))
        .unwrap(),
    )
    .unwrap();
}

/// The steps that plan, apply, show and release recovery `n` onto `targets` (shell
/// variables), mounting under /mnt/t`n`.
fn recover_steps(n: usize, targets: &[&str], md: bool) -> Vec<Value> {
    let t = targets
        .iter()
        .map(|v| format!("--target ${v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let disks = targets
        .iter()
        .map(|v| format!("${v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut steps = vec![
        step(
            &format!("plan-{n}"),
            &format!("keel recover plan --profile /tmp/src.keel {t} -o /tmp/plan-{n}.json"),
        ),
        step(
            &format!("apply-{n}"),
            &format!(
                "echo \"uptime-before $(now)\"\n\
                 keel recover apply /tmp/plan-{n}.json --yes --storage-only --keep-mounted --target-root /mnt/t{n}\n\
                 echo \"uptime-after $(now)\""
            ),
        ),
        step(
            &format!("lsblk-{n}"),
            &format!("lsblk -o NAME,SIZE,TYPE,FSTYPE,UUID,LABEL,MOUNTPOINT {disks}"),
        ),
        step(&format!("blkid-{n}"), "blkid -c /dev/null"),
        step(
            &format!("sfdisk-{n}"),
            &format!(
                "for d in {disks}; do sfdisk --json $d 2>/dev/null || echo \"{{\\\"blank\\\": \\\"$d\\\"}}\"; done"
            ),
        ),
        step(
            &format!("lvs-{n}"),
            "lvs --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_size,devices",
        ),
        step(
            &format!("mounts-{n}"),
            &format!("awk '$5 ~ \"^/mnt/t{n}(/|$)\" {{ for (i = 7; i < NF; i++) if ($i == \"-\") {{ print $5, $(i + 1); break }} }}' /proc/self/mountinfo"),
        ),
    ];
    if md {
        steps.push(step(
            &format!("md-{n}"),
            "cat /proc/mdstat\nfor m in $(ls /sys/block | grep '^md'); do mdadm --detail --export /dev/$m; done",
        ));
    }
    steps.push(step(
        &format!("release-{n}"),
        &format!("keel recover release /tmp/plan-{n}.json\nwipe {disks}"),
    ));
    steps
}

/// The steps that show the source, capture it, and take it apart.
fn source_steps(mounts: &str, teardown: &str, md: bool) -> Vec<Value> {
    let mut steps = vec![
        step("mount", mounts),
        step("src-blkid", "blkid -c /dev/null"),
        step("src-sfdisk", "for d in $SRC; do sfdisk --json $d; done"),
        step(
            "src-lvs",
            "lvs --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_size,devices",
        ),
        step("src-df", "df -B1 -P | grep ' /mnt/src'"),
    ];
    if md {
        steps.push(step("src-md", "mdadm --detail --export /dev/md0"));
    }
    steps.push(step(
        "capture",
        "mkdir -p /tmp/keel-state\n\
         keel capture --root /mnt/src --output /tmp/src.keel --state-dir /tmp/keel-state\n\
         keel show /tmp/src.keel --section storage",
    ));
    steps.push(step("teardown", teardown));
    steps
}

/// A minimal system's files besides fstab, so the capture's other collectors have something.
const ETC: &str = "mkdir -p /mnt/src/etc /mnt/src/root\n\
    echo 'root:x:0:0:root:/root:/bin/sh' > /mnt/src/etc/passwd\n\
    echo 'root:x:0:' > /mnt/src/etc/group\n\
    echo layouts > /mnt/src/etc/hostname\n\
    dd if=/dev/urandom of=/mnt/src/root/data bs=1M count=24 status=none\n";

// ------------------------------------------------------------------ console parsing

/// `blkid` output: device → its tags.
fn parse_blkid(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((dev, rest)) = line.split_once(": ") else {
            continue;
        };
        if !dev.starts_with("/dev/") {
            continue;
        }
        let mut tags = BTreeMap::new();
        let mut s = rest.trim();
        while let Some(eq) = s.find("=\"") {
            let key = s[..eq].trim().to_string();
            let after = &s[eq + 2..];
            let Some(close) = after.find('"') else { break };
            tags.insert(key, after[..close].to_string());
            s = &after[close + 1..];
        }
        out.push((dev.to_string(), tags));
    }
    out
}

/// The filesystems (and swap) of a `blkid` listing: (type, UUID, label), sorted.
fn filesystems(blkid: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = parse_blkid(blkid)
        .into_iter()
        .filter_map(|(_, t)| {
            let ty = t.get("TYPE")?.clone();
            ["ext4", "xfs", "vfat", "swap"]
                .contains(&ty.as_str())
                .then(|| {
                    (
                        ty,
                        t.get("UUID").cloned().unwrap_or_default(),
                        t.get("LABEL").cloned().unwrap_or_default(),
                    )
                })
        })
        .filter(|(_, _, label)| label != keel_rescue::KIT_LABEL)
        .collect();
    v.sort();
    v
}

/// Every JSON object printed in `text`, in order.
fn json_values(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find('{') {
        let start = i + at;
        let mut it = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                out.push(v);
                i = start + it.byte_offset();
            }
            _ => i = start + 1,
        }
    }
    out
}

/// The partition type GUIDs of each disk `sfdisk --json` printed (empty for a blank disk),
/// by device.
fn partition_types(text: &str) -> Vec<(String, Vec<String>)> {
    json_values(text)
        .into_iter()
        .map(|v| {
            if let Some(d) = v.get("blank").and_then(Value::as_str) {
                return (d.to_string(), Vec::new());
            }
            let t = &v["partitiontable"];
            assert_eq!(t["label"], "gpt", "{v}");
            let types = t["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["type"].as_str().unwrap().to_uppercase())
                .collect();
            (t["device"].as_str().unwrap().to_string(), types)
        })
        .collect()
}

/// The partition sizes in MiB of each disk `sfdisk --json` printed (empty for a blank disk),
/// by device.
fn partition_sizes(text: &str) -> Vec<(String, Vec<u64>)> {
    json_values(text)
        .into_iter()
        .map(|v| {
            if let Some(d) = v.get("blank").and_then(Value::as_str) {
                return (d.to_string(), Vec::new());
            }
            let t = &v["partitiontable"];
            let sector = t["sectorsize"].as_u64().unwrap_or(512);
            let sizes = t["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["size"].as_u64().unwrap() * sector / MIB)
                .collect();
            (t["device"].as_str().unwrap().to_string(), sizes)
        })
        .collect()
}

/// LV sizes from `lvs --reportformat json --units b --nosuffix`: "vg/lv" → bytes.
fn lv_sizes(text: &str) -> BTreeMap<String, u64> {
    let v = json_values(text)
        .into_iter()
        .find(|v| v.get("report").is_some())
        .unwrap_or_else(|| panic!("no lvs report in:\n{text}"));
    let mut out = BTreeMap::new();
    for r in v["report"].as_array().unwrap() {
        for lv in r["lv"].as_array().unwrap() {
            let size: u64 = lv["lv_size"].as_str().unwrap().parse().unwrap();
            out.insert(
                format!(
                    "{}/{}",
                    lv["vg_name"].as_str().unwrap(),
                    lv["lv_name"].as_str().unwrap()
                ),
                size,
            );
        }
    }
    out
}

/// Used bytes per mountpoint from `df -B1 -P`, with /mnt/src taken off.
fn used(df: &str) -> BTreeMap<String, u64> {
    df.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mp = f.get(5)?.strip_prefix("/mnt/src")?;
            let mp = if mp.is_empty() { "/" } else { mp };
            Some((mp.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// `KEY=value` lines.
fn export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The two uptime readings an apply step printed: (before, after) in seconds since boot.
fn uptimes(apply: &str) -> (f64, f64) {
    let read = |key: &str| -> f64 {
        apply
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{apply}"))
    };
    (read("uptime-before "), read("uptime-after "))
}

/// Boots the kit in `kit_dir` with `disks` attached; returns the console and the result after
/// the guest powered off.
fn run_kit(
    test: &str,
    dir: &Path,
    kit_dir: &Path,
    disks: &[(&str, Bus, &str, u64)],
) -> (String, RescueResult, Duration) {
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    let kit = dir.join("kit.img");
    kit_image(kit_dir, &kit);
    let mut kit_disk = Disk::new(&kit, Bus::Virtio, "KEEL-KIT");
    kit_disk.readonly = true;
    let mut attached = vec![kit_disk];
    for (file, bus, serial, bytes) in disks {
        let image = dir.join(file);
        blank_image(&image, *bytes);
        attached.push(Disk::new(&image, *bus, serial));
    }
    let console = dir.join("console.log");
    let mut vm = Vm::boot(
        env,
        &attached,
        "keel.shell=0",
        &console,
        Duration::from_secs(1500),
    );
    let banner = vm
        .wait_for("=== Keel rescue environment", BOOT_LIMIT)
        .unwrap_or_else(|| panic!("no banner of keel rescue:\n{}", vm.console()));
    note(&format!(
        "{test}: QEMU start to the keel rescue banner under TCG: {}",
        secs(banner)
    ));
    let status = vm.wait_exit(Duration::from_secs(1400));
    let text = vm.console();
    let elapsed = vm.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("the guest did not power off after the kit:\n{text}"));
    let r = RescueResult::find(&text)
        .unwrap_or_else(|| panic!("no parsable result line in the console:\n{text}"));
    for s in &r.steps {
        note(&format!("{test}: step {:<12} {:>7.2} s", s.name, s.seconds));
    }
    assert_eq!(
        r.status,
        Status::Ok,
        "steps: {:?}\n----- console -----\n{text}",
        r.steps
    );
    assert!(status.success(), "qemu exited with {status}");
    assert!(r.steps.iter().all(keel_rescue::StepOutcome::ok));
    (text, r, elapsed)
}

/// Checks one recovery: the filesystems are the source's, the partition types the source's on
/// the disk that got a table, the mounts in fstab order, and the apply said it finished.
/// Returns the target's LV sizes.
fn check_recovery(
    text: &str,
    n: usize,
    src_fs: &[(String, String, String)],
    src_types: &[String],
    mounts: &[&str],
) -> BTreeMap<String, u64> {
    let apply = step_output(text, &format!("apply-{n}"));
    assert!(apply.contains("applied: "), "apply {n}:\n{apply}");
    assert!(apply.contains("kept for the next phase:"), "{apply}");

    let fs = filesystems(step_output(text, &format!("blkid-{n}")));
    assert_eq!(fs, src_fs, "recovery {n}: filesystems (type, UUID, label)");

    let tables = partition_types(step_output(text, &format!("sfdisk-{n}")));
    let with_table: Vec<_> = tables.iter().filter(|(_, t)| !t.is_empty()).collect();
    assert!(!with_table.is_empty(), "recovery {n}: no partition table");
    for (dev, types) in &with_table {
        assert_eq!(types, src_types, "recovery {n}: partition types of {dev}");
    }

    // Every fstab mount is there, each after the one it sits on. The planner mounts by depth
    // (`/`, then `/boot` and `/home`, then `/boot/efi`), which is not always fstab's order.
    let shown: Vec<String> = step_output(text, &format!("mounts-{n}"))
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = mounts
        .iter()
        .map(|m| {
            let (mp, fstype) = m.split_once(' ').unwrap();
            let mp = if mp == "/" { "" } else { mp };
            format!("/mnt/t{n}{mp} {fstype}")
        })
        .collect();
    let mut sorted = shown.clone();
    sorted.sort();
    let mut wanted = want.clone();
    wanted.sort();
    assert_eq!(sorted, wanted, "recovery {n}: the fstab mounts");
    for (i, m) in shown.iter().enumerate() {
        let mp = m.split(' ').next().unwrap();
        for later in &shown[i + 1..] {
            let other = later.split(' ').next().unwrap();
            assert!(
                !mp.starts_with(&format!("{other}/")),
                "recovery {n}: {mp} is mounted before {other}: {shown:?}"
            );
        }
    }
    if shown != want {
        note(&format!(
            "recovery {n}: mounted in the order {shown:?}; fstab has {want:?}"
        ));
    }

    // lsblk reads FSTYPE, UUID and LABEL from udev's database, which no udev fills here: its
    // output is printed for people, the checks use blkid.
    let lsblk = step_output(text, &format!("lsblk-{n}"));
    assert!(lsblk.contains(&format!("/mnt/t{n}")), "{lsblk}");
    assert!(
        step_output(text, &format!("release-{n}")).contains("released "),
        "release {n}"
    );
    lv_sizes(step_output(text, &format!("lvs-{n}")))
}

// ------------------------------------------------------------------ (b) GPT + UEFI + LVM

/// GPT + UEFI: BIOS boot, ESP (vfat), /boot (ext4) and LVM (root ext4, home xfs, swap) on one
/// 8 GiB disk; rebuilt onto a 12 GiB NVM Express disk, a 5 GiB disk, and a pair (6 GiB NVM Express, 10 GiB).
#[test]
fn layouts_gpt_uefi_lvm_is_captured_and_recreated_on_larger_smaller_and_two_disks() {
    const TEST: &str = "layouts_gpt_uefi_lvm";
    if let Some(why) = vm_tests_unsupported() {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let kit_dir = dir.path().join("kit");
    fs::create_dir(&kit_dir).unwrap();
    let disks_sh =
        "SRC=$(by_serial KEEL-SRC); BIG=$(by_serial KEEL-BIG); SMALL=$(by_serial KEEL-SMALL)\n\
                    TWOA=$(by_serial KEEL-TWO-A); TWOB=$(by_serial KEEL-TWO-B)\n";
    let mut steps = vec![
        step(
            "disks",
            "echo \"SRC=$SRC BIG=$BIG SMALL=$SMALL TWOA=$TWOA TWOB=$TWOB\"\nlsblk -o NAME,SIZE,TYPE,SERIAL",
        ),
        step(
            "build",
            "sgdisk -n1:1M:+1M -t1:ef02 -c1:bios -n2:0:+64M -t2:ef00 -c2:esp \
               -n3:0:+256M -t3:8300 -c3:boot -n4:0:0 -t4:8e00 -c4:lvm $SRC\n\
             wait_part $SRC 4\n\
             mkfs.vfat -F 32 -n ESP $(part $SRC 2)\n\
             mkfs.ext4 -q -F -L boot $(part $SRC 3)\n\
             pvcreate -y $(part $SRC 4)\n\
             vgcreate vgsys $(part $SRC 4)\n\
             lvcreate -y -L 2G -n root vgsys\n\
             lvcreate -y -L 2G -n home vgsys\n\
             lvcreate -y -L 512M -n swap vgsys\n\
             mkfs.ext4 -q -F -L root /dev/vgsys/root\n\
             mkfs.xfs -q -f -L home /dev/vgsys/home\n\
             mkswap -L swap /dev/vgsys/swap\n\
             sfdisk --dump $SRC",
        ),
    ];
    let mounts = format!(
        "mkdir -p /mnt/src\n\
         mount /dev/vgsys/root /mnt/src\n\
         mkdir -p /mnt/src/boot && mount $(part $SRC 3) /mnt/src/boot\n\
         mkdir -p /mnt/src/boot/efi && mount $(part $SRC 2) /mnt/src/boot/efi\n\
         mkdir -p /mnt/src/home && mount /dev/vgsys/home /mnt/src/home\n\
         swapon /dev/vgsys/swap\n\
         {ETC}\
         cat > /mnt/src/etc/fstab <<EOF\n\
         UUID=$(uuid /dev/vgsys/root) / ext4 errors=remount-ro 0 1\n\
         UUID=$(uuid $(part $SRC 3)) /boot ext4 defaults 0 2\n\
         UUID=$(uuid $(part $SRC 2)) /boot/efi vfat umask=0077 0 1\n\
         UUID=$(uuid /dev/vgsys/home) /home xfs defaults 0 2\n\
         UUID=$(uuid /dev/vgsys/swap) none swap sw 0 0\n\
         EOF\n\
         cat /mnt/src/etc/fstab\n\
         echo 'kernel' > /mnt/src/boot/vmlinuz\n\
         mkdir -p /mnt/src/boot/efi/EFI/BOOT && echo 'loader' > /mnt/src/boot/efi/EFI/BOOT/BOOTX64.EFI\n\
         mkdir -p /mnt/src/home/user && dd if=/dev/urandom of=/mnt/src/home/user/data bs=1M count=16 status=none\n\
         findmnt -rn -o TARGET,SOURCE,FSTYPE | grep /mnt/src"
    );
    steps.extend(source_steps(
        &mounts,
        "swapoff /dev/vgsys/swap\n\
         umount /mnt/src/home /mnt/src/boot/efi /mnt/src/boot /mnt/src\n\
         vgchange -an vgsys\n\
         wipe $SRC",
        false,
    ));
    steps.extend(recover_steps(1, &["BIG"], false));
    steps.extend(recover_steps(2, &["SMALL"], false));
    steps.extend(recover_steps(3, &["TWOA", "TWOB"], false));
    write_kit(
        &kit_dir,
        "GPT + UEFI + /boot + LVM, captured and recreated three ways",
        disks_sh,
        &steps,
    );
    let (text, r, whole) = run_kit(
        TEST,
        dir.path(),
        &kit_dir,
        &[
            ("src.img", Bus::Virtio, "KEEL-SRC", 8 * GIB),
            ("big.img", Bus::Nvme, "KEEL-BIG", 12 * GIB),
            ("small.img", Bus::Virtio, "KEEL-SMALL", 5 * GIB),
            ("two-a.img", Bus::Nvme, "KEEL-TWO-A", 6 * GIB),
            ("two-b.img", Bus::Virtio, "KEEL-TWO-B", 10 * GIB),
        ],
    );
    let console = dir.path().join("console.log");
    let _show = ShowConsoleOnPanic(&console);

    // The capture describes the source disk behind LVM.
    let storage = step_output(&text, "capture");
    assert!(
        storage.contains("[storage.swaps] 1 rows"),
        "the active swap on LVM is captured:\n{storage}"
    );
    for needle in ["vgsys", "KEEL-SRC", "/boot/efi", "/home"] {
        assert!(
            storage.contains(needle),
            "the captured storage lacks {needle}:\n{storage}"
        );
    }

    let src_fs = filesystems(step_output(&text, "src-blkid"));
    let mut kinds: Vec<(&str, &str)> = src_fs
        .iter()
        .map(|(t, _, l)| (t.as_str(), l.as_str()))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            ("ext4", "boot"),
            ("ext4", "root"),
            ("swap", "swap"),
            ("vfat", "ESP"),
            ("xfs", "home")
        ],
        "{src_fs:?}"
    );
    let src_tables = partition_types(step_output(&text, "src-sfdisk"));
    let src_types = src_tables[0].1.clone();
    assert_eq!(src_types, [BIOS_BOOT, ESP, LINUX_FS, LINUX_LVM]);
    let src_lvs = lv_sizes(step_output(&text, "src-lvs"));
    let used = used(step_output(&text, "src-df"));
    let mounts = ["/ ext4", "/boot ext4", "/boot/efi vfat", "/home xfs"];

    let big = check_recovery(&text, 1, &src_fs, &src_types, &mounts);
    let small = check_recovery(&text, 2, &src_fs, &src_types, &mounts);
    let two = check_recovery(&text, 3, &src_fs, &src_types, &mounts);
    note(&format!(
        "{TEST}: LV sizes (MiB) source {:?}, 12 GiB {:?}, 5 GiB {:?}, pair {:?}; used {:?}",
        mib(&src_lvs),
        mib(&big),
        mib(&small),
        mib(&two),
        mib(&used)
    ));
    for lv in ["vgsys/root", "vgsys/home"] {
        assert!(big[lv] > src_lvs[lv], "{lv} grows on the larger disk");
        assert!(small[lv] < src_lvs[lv], "{lv} shrinks on the smaller disk");
    }
    assert!(small["vgsys/root"] >= used["/"], "root holds its data");
    assert!(small["vgsys/home"] >= used["/home"], "home holds its data");
    assert_eq!(big["vgsys/swap"], src_lvs["vgsys/swap"]);
    assert_eq!(big.len(), 3);
    assert_eq!(small.len(), 3);
    assert_eq!(two.len(), 3);
    // One source disk onto two: one target gets the layout, the other stays blank.
    let pair = partition_types(step_output(&text, "sfdisk-3"));
    assert_eq!(pair.len(), 2, "{pair:?}");
    assert_eq!(
        pair.iter().filter(|(_, t)| t.is_empty()).count(),
        1,
        "{pair:?}"
    );

    for n in 1..=3 {
        let step = r
            .steps
            .iter()
            .find(|s| s.name == format!("apply-{n}"))
            .unwrap();
        let (before, after) = uptimes(step_output(&text, &format!("apply-{n}")));
        note(&format!(
            "{TEST}: apply {n}: {:.2} s (step), uptime {before:.1} s → {after:.1} s",
            step.seconds
        ));
    }
    note(&format!("{TEST}: boot to power-off {}", secs(whole)));
}

fn mib(m: &BTreeMap<String, u64>) -> BTreeMap<&str, u64> {
    m.iter().map(|(k, v)| (k.as_str(), v / MIB)).collect()
}

// ------------------------------------------------------------------ (c) RAID 1 + LVM

/// RAID 1 over partitions of two 3 GiB disks, LVM on the array (root ext4, swap); rebuilt onto
/// two 5 GiB disks, then onto two 2 GiB disks, all virtio (under TCG on a busy host QEMU's NVM
/// Express emulation stalls the array's long writes).
#[test]
fn layouts_raid1_lvm_is_captured_and_recreated_on_two_disks_of_another_size() {
    const TEST: &str = "layouts_raid1_lvm";
    if let Some(why) = vm_tests_unsupported() {
        return skip(TEST, &why);
    }
    let dir = tempfile::tempdir().unwrap();
    let kit_dir = dir.path().join("kit");
    fs::create_dir(&kit_dir).unwrap();
    let disks_sh = "R1=$(by_serial KEEL-R1); R2=$(by_serial KEEL-R2); SRC=\"$R1 $R2\"\n\
                    T1=$(by_serial KEEL-T1); T2=$(by_serial KEEL-T2)\n\
                    S1=$(by_serial KEEL-S1); S2=$(by_serial KEEL-S2)\n";
    let mut steps = vec![
        step(
            "disks",
            "echo \"R1=$R1 R2=$R2 T1=$T1 T2=$T2 S1=$S1 S2=$S2\"\nlsblk -o NAME,SIZE,TYPE,SERIAL",
        ),
        step(
            "build",
            "for d in $R1 $R2; do sgdisk -n1:1M:+1M -t1:ef02 -c1:bios -n2:0:0 -t2:fd00 -c2:raid $d; wait_part $d 2; done\n\
             mdadm --create /dev/md0 --run --assume-clean --level=1 --raid-devices=2 --metadata=1.2 \
               $(part $R1 2) $(part $R2 2)\n\
             pvcreate -y /dev/md0\n\
             vgcreate vgraid /dev/md0\n\
             lvcreate -y -L 1536M -n root vgraid\n\
             lvcreate -y -L 256M -n swap vgraid\n\
             mkfs.ext4 -q -F -L root /dev/vgraid/root\n\
             mkswap -L swap /dev/vgraid/swap\n\
             cat /proc/mdstat",
        ),
    ];
    let mounts = format!(
        "mkdir -p /mnt/src\n\
         mount /dev/vgraid/root /mnt/src\n\
         swapon /dev/vgraid/swap\n\
         {ETC}\
         cat > /mnt/src/etc/fstab <<EOF\n\
         UUID=$(uuid /dev/vgraid/root) / ext4 errors=remount-ro 0 1\n\
         UUID=$(uuid /dev/vgraid/swap) none swap sw 0 0\n\
         EOF\n\
         cat /mnt/src/etc/fstab\n\
         findmnt -rn -o TARGET,SOURCE,FSTYPE | grep /mnt/src"
    );
    steps.extend(source_steps(
        &mounts,
        "swapoff /dev/vgraid/swap\n\
         umount /mnt/src\n\
         vgchange -an vgraid\n\
         mdadm --stop /dev/md0\n\
         mdadm --zero-superblock $(part $R1 2) $(part $R2 2)\n\
         wipe $R1 $R2",
        true,
    ));
    steps.extend(recover_steps(1, &["T1", "T2"], true));
    steps.extend(recover_steps(2, &["S1", "S2"], true));
    write_kit(
        &kit_dir,
        "RAID 1 + LVM, captured and recreated on two larger and two smaller disks",
        disks_sh,
        &steps,
    );
    let (text, r, whole) = run_kit(
        TEST,
        dir.path(),
        &kit_dir,
        &[
            ("r1.img", Bus::Virtio, "KEEL-R1", 3 * GIB),
            ("r2.img", Bus::Virtio, "KEEL-R2", 3 * GIB),
            ("t1.img", Bus::Virtio, "KEEL-T1", 5 * GIB),
            ("t2.img", Bus::Virtio, "KEEL-T2", 5 * GIB),
            ("s1.img", Bus::Virtio, "KEEL-S1", 2 * GIB),
            ("s2.img", Bus::Virtio, "KEEL-S2", 2 * GIB),
        ],
    );
    let console = dir.path().join("console.log");
    let _show = ShowConsoleOnPanic(&console);

    let storage = step_output(&text, "capture");
    assert!(
        storage.contains("[storage.swaps] 1 rows"),
        "the active swap on LVM is captured:\n{storage}"
    );
    for needle in ["vgraid", "md0", "KEEL-R1", "KEEL-R2", "raid1"] {
        assert!(
            storage.contains(needle),
            "the captured storage lacks {needle}:\n{storage}"
        );
    }
    let src_fs = filesystems(step_output(&text, "src-blkid"));
    assert_eq!(src_fs.len(), 2, "{src_fs:?}");
    let src_tables = partition_types(step_output(&text, "src-sfdisk"));
    assert_eq!(src_tables.len(), 2);
    let src_types = src_tables[0].1.clone();
    assert_eq!(src_types, [BIOS_BOOT, LINUX_RAID]);
    let src_md = export(step_output(&text, "src-md"));
    let src_lvs = lv_sizes(step_output(&text, "src-lvs"));
    let src_parts = partition_sizes(step_output(&text, "src-sfdisk"));
    let used = used(step_output(&text, "src-df"));

    // Each recovery: both disks partitioned as the source, the array with the source's UUID on
    // two members, and the volumes on it.
    let recovered = |n: usize| {
        let lvs = check_recovery(&text, n, &src_fs, &src_types, &["/ ext4"]);
        let sfdisk = step_output(&text, &format!("sfdisk-{n}"));
        let tables = partition_types(sfdisk);
        assert_eq!(tables.len(), 2, "recovery {n}: {tables:?}");
        assert!(
            tables.iter().all(|(_, t)| *t == src_types),
            "recovery {n}: both targets partitioned as the source: {tables:?}"
        );
        let md = export(step_output(&text, &format!("md-{n}")));
        assert_eq!(
            md.get("MD_LEVEL").map(String::as_str),
            Some("raid1"),
            "recovery {n}: {md:?}"
        );
        assert_eq!(
            md.get("MD_DEVICES").map(String::as_str),
            Some("2"),
            "recovery {n}: {md:?}"
        );
        assert_eq!(
            md.get("MD_UUID"),
            src_md.get("MD_UUID"),
            "recovery {n}: array UUID"
        );
        let members = md
            .keys()
            .filter(|k| k.starts_with("MD_DEVICE_") && k.ends_with("_DEV"))
            .count();
        assert_eq!(members, 2, "recovery {n}: {md:?}");
        (lvs, partition_sizes(sfdisk))
    };
    let (larger, larger_parts) = recovered(1);
    let (smaller, smaller_parts) = recovered(2);
    note(&format!(
        "{TEST}: LV sizes (MiB) source {:?}, 5 GiB pair {:?}, 2 GiB pair {:?}; used {:?}",
        mib(&src_lvs),
        mib(&larger),
        mib(&smaller),
        mib(&used)
    ));
    note(&format!(
        "{TEST}: partitions (MiB) source {src_parts:?}, 5 GiB pair {larger_parts:?}, 2 GiB pair \
         {smaller_parts:?}"
    ));
    // The BIOS boot partitions keep their 1 MiB; the RAID members grow and shrink with their
    // disks, and each pair's members are the same size.
    let members = |parts: &[(String, Vec<u64>)]| -> Vec<u64> {
        parts
            .iter()
            .map(|(dev, sizes)| {
                assert_eq!(sizes.len(), 2, "{dev}: {sizes:?}");
                assert_eq!(sizes[0], 1, "{dev}: the BIOS boot partition");
                sizes[1]
            })
            .collect()
    };
    let src_member = members(&src_parts)[0];
    let big = members(&larger_parts);
    let small = members(&smaller_parts);
    assert!(big[0] > src_member && big[0] == big[1], "{big:?}");
    assert!(small[0] < src_member && small[0] == small[1], "{small:?}");
    assert!(small[0] < 2048, "{small:?}");

    assert!(larger["vgraid/root"] > src_lvs["vgraid/root"]);
    assert!(smaller["vgraid/root"] < src_lvs["vgraid/root"]);
    assert!(smaller["vgraid/root"] >= used["/"], "root holds its data");
    // The 256 MiB swap is small: both groups have room to keep its size.
    assert_eq!(larger["vgraid/swap"], src_lvs["vgraid/swap"]);
    assert_eq!(smaller["vgraid/swap"], src_lvs["vgraid/swap"]);
    assert_eq!(larger.len(), 2);
    assert_eq!(smaller.len(), 2);
    for n in 1..=2 {
        let apply = r
            .steps
            .iter()
            .find(|s| s.name == format!("apply-{n}"))
            .unwrap();
        note(&format!("{TEST}: apply {n}: {:.2} s", apply.seconds));
    }
    note(&format!("{TEST}: boot to power-off {}", secs(whole)));
}
