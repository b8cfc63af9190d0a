//! Recovery as it runs for real: the rescue environment booted under QEMU (TCG) with two
//! blank disks and a kit holding a profile and a
//! LUKS key, whose steps are Keel's own `keel recover plan`, a dry run, `keel recover apply`
//! (RAID 1, LUKS2, LVM, ext4/XFS/FAT/swap with the profile's UUIDs and labels, mounted under
//! the target root), the same apply again (every step checked, none redone) and
//! `keel recover release`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use keel_profile::ProfileFile;
use keel_recover::sample::{
    encrypted_raid_profile, ENCRYPTED_FS_UUIDS, ENCRYPTED_LUKS_UUID, ENCRYPTED_MD_UUID,
    ENCRYPTED_PV_UUID,
};
use keel_rescue::{RescueResult, Status};

use crate::qemu::{Bus, Disk, Vm};
use crate::support::{
    blank_image, kit_image, note, rescue_env, secs, skip, step_output, vm_tests_unsupported,
    ShowConsoleOnPanic,
};

const MIB: u64 = 1 << 20;

/// Longest a boot may take to reach `keel rescue`'s banner under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(240);

/// The target for recreating the storage of a RAID + LVM server once the rescue environment
/// is up (reported, not enforced: TCG on a busy machine is no measure of real hardware).
const APPLY_TARGET: Duration = Duration::from_secs(15);

/// Where `keel recover apply` mounts the rebuilt system unless told otherwise.
const TARGET_ROOT: &str = "/mnt/keel-target";

/// The kit's steps, in order.
const STEPS: [&str; 7] = [
    "plan",
    "dry-run",
    "untouched",
    "apply",
    "check",
    "rerun",
    "release",
];

/// The `blkid` line of the device whose line contains `needle`.
fn blkid_line<'a>(blkid: &'a str, needle: &str) -> &'a str {
    blkid
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("blkid shows nothing with {needle}:\n{blkid}"))
}

/// The seconds in `applied: N steps run, M checked as done earlier, in S s`, with N and M.
fn applied(output: &str) -> (usize, usize, f64) {
    let line = output
        .lines()
        .find_map(|l| l.split_once("applied: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `applied:` line in\n{output}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |i: usize| -> &str { words.get(i).copied().unwrap_or("") };
    let run = number(0).parse().unwrap_or_else(|_| panic!("{line}"));
    let checked = number(3).parse().unwrap_or_else(|_| panic!("{line}"));
    let took = number(words.len().saturating_sub(2))
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    (run, checked, took)
}

/// The apply's steps that took longest: `(seconds, "[n/total] label")`, slowest first.
fn slowest(output: &str, n: usize) -> Vec<(f64, &str)> {
    let mut steps: Vec<(f64, &str)> = output
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| {
            let (label, took) = l.rsplit_once(" … done in ")?;
            Some((took.strip_suffix(" s")?.parse().ok()?, label))
        })
        .collect();
    steps.sort_by(|a, b| b.0.total_cmp(&a.0));
    steps.truncate(n);
    steps
}

/// The kit: the sample encrypted RAID server's profile, its LUKS key, and Keel's recovery
/// commands as steps.
fn recovery_kit(dir: &Path) {
    let profile = ProfileFile {
        profile: encrypted_raid_profile(),
        ..ProfileFile::default()
    };
    fs::write(
        dir.join("profile.keel"),
        profile.encode().expect("encode the profile"),
    )
    .unwrap();
    // The whole file is the key: no newline.
    fs::write(dir.join("luks.key"), "correct horse battery staple").unwrap();
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
"#,
    )
    .unwrap();
    let apply = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut argv = vec!["keel", "recover", "apply", "/tmp/plan.json"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--luks-key-file", "./luks.key"]);
        argv
    };
    let steps = serde_json::json!([
        {"name": "plan", "shell": ". ./disks.sh; keel recover plan --profile profile.keel \
            --target $(by_serial KEEL-ENC-A) --target $(by_serial KEEL-ENC-B) -o /tmp/plan.json"},
        {"name": "dry-run", "run": apply(&[])},
        {"name": "untouched", "shell": ". ./disks.sh\n\
            lsblk -rn -o NAME,PTTYPE,FSTYPE $(by_serial KEEL-ENC-A) $(by_serial KEEL-ENC-B)\n\
            if [ -e /tmp/plan.journal.json ]; then echo journal-made; else echo no-journal; fi"},
        {"name": "apply", "timeout_secs": 600, "run": apply(&["--yes", "--storage-only", "--keep-mounted"])},
        {"name": "check", "shell": format!("findmnt -R -rn -o TARGET,SOURCE,FSTYPE {TARGET_ROOT}\n\
            cat /proc/mdstat\n\
            blkid -o full")},
        {"name": "rerun", "timeout_secs": 600, "run": apply(&["--yes", "--storage-only", "--keep-mounted"])},
        {"name": "release", "run": ["keel", "recover", "release", "/tmp/plan.json"]},
    ]);
    fs::write(
        dir.join("kit.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "format": 1,
            "description": "keel recover: RAID 1 + LUKS2 + LVM + two EFI system partitions",
            "steps": steps,
        }))
        .unwrap(),
    )
    .unwrap();
}

#[test]
fn keel_recover_rebuilds_the_encrypted_raid_server_inside_the_rescue_environment() {
    const TEST: &str = "rescue_recover_encrypted_raid";
    if let Some(why) = vm_tests_unsupported() {
        return skip(TEST, &why);
    }
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let kit_dir = dir.path().join("kit");
    fs::create_dir(&kit_dir).unwrap();
    recovery_kit(&kit_dir);
    let kit = dir.path().join("kit.img");
    kit_image(&kit_dir, &kit);
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    blank_image(&a, 1024 * MIB);
    blank_image(&b, 1024 * MIB);
    let mut kit_disk = Disk::new(&kit, Bus::Virtio, "KEEL-KIT");
    kit_disk.readonly = true;
    let console = dir.path().join("console.log");
    let _show = ShowConsoleOnPanic(&console);
    let mut vm = Vm::boot(
        env,
        &[
            // Both virtio: under TCG, LUKS's key derivation keeps the one guest CPU busy for
            // over a minute, long enough for QEMU's emulated NVM Express controller to have
            // its commands timed out by the guest (NVM Express targets are covered by the
            // layout and whole-system tests).
            Disk::new(&a, Bus::Virtio, "KEEL-ENC-A"),
            Disk::new(&b, Bus::Virtio, "KEEL-ENC-B"),
            kit_disk,
        ],
        // A failing step must power off, not wait at a shell.
        "keel.shell=0",
        &console,
        Duration::from_secs(1200),
    );
    let banner = vm
        .wait_for("=== Keel rescue environment", BOOT_LIMIT)
        .expect("the banner of keel rescue");
    note(&format!(
        "{TEST}: QEMU start to the keel rescue banner under TCG: {}",
        secs(banner)
    ));
    // When the apply step ends, as seen from outside (None if the kit stopped before it).
    let apply_end = vm.wait_for(" END apply: ", Duration::from_secs(900));
    let status = vm
        .wait_exit(Duration::from_secs(300))
        .expect("the guest powers off after the kit");
    let total = vm.elapsed();
    let text = vm.console();
    let r = RescueResult::find(&text).expect("a parsable result line");
    for s in &r.steps {
        note(&format!("{TEST}: step {:<10} {:>7.2} s", s.name, s.seconds));
    }
    assert_eq!(r.status, Status::Ok, "steps: {:?}", r.steps);
    assert!(status.success(), "qemu exited with {status}");
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STEPS);

    // The plan: both disks found by serial number, whatever their kind.
    let plan = step_output(&text, "plan");
    assert!(
        plan.contains("Recovery plan for sample-encrypted"),
        "{plan}"
    );
    assert!(plan.contains("\nDisk map\n"), "{plan}");
    for target in ["/dev/vda", "/dev/vdb"] {
        assert!(
            plan.contains(&format!("→ {target} (1.0 GiB, virtio)")),
            "{plan}"
        );
    }
    assert!(
        plan.contains("serial"),
        "the map's reasons name the serials:\n{plan}"
    );

    // The dry run says what it would do and does none of it.
    let dry = step_output(&text, "dry-run");
    for want in [
        "dry run: nothing is written; add --yes to apply",
        "check: ok: every target disk is as planned and none is in use",
        "journal: /tmp/plan.journal.json (would be made)",
        "cryptsetup luksFormat",
        "mdadm --create /dev/md0",
    ] {
        assert!(dry.contains(want), "dry run lacks {want:?}:\n{dry}");
    }
    let untouched = step_output(&text, "untouched");
    let lines: Vec<&str> = untouched.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "no partitions after the dry run:\n{untouched}"
    );
    assert!(
        lines[..2].iter().all(|l| l.split_whitespace().count() == 1),
        "no partition table or filesystem after the dry run:\n{untouched}"
    );
    assert_eq!(lines[2], "no-journal", "{untouched}");

    // The apply runs every step, and keeps what it built for the next phase.
    let apply = step_output(&text, "apply");
    assert!(
        apply.contains("journal: /tmp/plan.journal.json (new)"),
        "{apply}"
    );
    let (run, checked, apply_took) = applied(apply);
    assert!(run >= 19 && checked == 0, "{apply}");
    assert!(!apply.contains("failed after"), "{apply}");
    assert!(apply.contains("kept for the next phase:"), "{apply}");

    // What the apply built: the array, the mounts, and every UUID and label.
    let check = step_output(&text, "check");
    assert!(check.contains("md0 : active raid1"), "{check}");
    let mounts: Vec<&str> = check
        .lines()
        .filter(|l| l.starts_with(TARGET_ROOT))
        .collect();
    assert_eq!(mounts.len(), 3, "{check}");
    let [root, srv, swap, esp_a, esp_b] = ENCRYPTED_FS_UUIDS;
    assert!(
        mounts.contains(&format!("{TARGET_ROOT} /dev/mapper/vg0-root ext4").as_str()),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|l| l.starts_with(&format!("{TARGET_ROOT}/srv ")) && l.ends_with(" xfs")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|l| l.starts_with(&format!("{TARGET_ROOT}/boot/efi ")) && l.ends_with(" vfat")),
        "{mounts:?}"
    );
    let line = blkid_line(check, &format!(r#"UUID="{root}""#));
    assert!(
        line.contains(r#"TYPE="ext4""#) && line.contains(r#"LABEL="root""#),
        "{line}"
    );
    let line = blkid_line(check, &format!(r#"UUID="{srv}""#));
    assert!(
        line.contains(r#"TYPE="xfs""#) && line.contains(r#"LABEL="srv""#),
        "{line}"
    );
    let line = blkid_line(check, &format!(r#"UUID="{swap}""#));
    assert!(line.contains(r#"TYPE="swap""#), "{line}");
    let line = blkid_line(check, &format!(r#"UUID="{ENCRYPTED_LUKS_UUID}""#));
    assert!(
        line.contains(r#"TYPE="crypto_LUKS""#) && line.contains(r#"LABEL="cryptroot""#),
        "{line}"
    );
    let line = blkid_line(check, &format!(r#"UUID="{ENCRYPTED_PV_UUID}""#));
    assert!(line.contains(r#"TYPE="LVM2_member""#), "{line}");
    for (id, label) in [(esp_a, "ESP"), (esp_b, "ESP2")] {
        let line = blkid_line(check, &format!(r#"UUID="{id}""#));
        assert!(
            line.contains(r#"TYPE="vfat""#) && line.contains(&format!(r#"LABEL="{label}""#)),
            "{line}"
        );
    }
    let members = check
        .lines()
        .filter(|l| {
            l.contains(r#"TYPE="linux_raid_member""#)
                && l.contains(&format!(r#"UUID="{ENCRYPTED_MD_UUID}""#))
        })
        .count();
    assert_eq!(
        members, 2,
        "both RAID members carry the array UUID:\n{check}"
    );

    // Again: nothing to do, every step checked.
    let rerun = step_output(&text, "rerun");
    let (run_again, checked_again, rerun_took) = applied(rerun);
    assert_eq!((run_again, checked_again), (0, run), "{rerun}");
    assert!(rerun.contains("done earlier, still holds"), "{rerun}");

    // Release lets go of all of it.
    let release = step_output(&text, "release");
    for want in [
        "released RAID array /dev/md0",
        "released LUKS volume /dev/mapper/cryptroot",
        "released volume group vg0 (active)",
    ] {
        assert!(release.contains(want), "release lacks {want:?}:\n{release}");
    }
    assert_eq!(
        release
            .lines()
            .filter(|l| l.starts_with("released ") && l.contains(" mounted on "))
            .count(),
        3,
        "{release}"
    );

    let step_secs = |name: &str| {
        r.steps
            .iter()
            .find(|s| s.name == name)
            .map_or(0.0, |s| s.seconds)
    };
    let apply_step = step_secs("apply");
    note(&format!(
        "{TEST}: storage recreated in the VM (RAID 1 + LUKS2 + LVM + 4 filesystems + swap, \
         {run} steps): apply step {apply_step:.2} s (keel's own figure {apply_took:.1} s; \
         target under {} s){}",
        APPLY_TARGET.as_secs(),
        if apply_step <= APPLY_TARGET.as_secs_f64() {
            ""
        } else {
            ": OVER the target"
        }
    ));
    let slow = slowest(apply, 5);
    for (took, label) in &slow {
        note(&format!("{TEST}:   {took:>5.1} s  {label}"));
    }
    // LUKS2's key derivation is slow on purpose (cryptsetup tunes it to cost about 2 s per
    // unlock on the machine at hand): the rest is the storage itself.
    let luks: f64 = slow
        .iter()
        .filter(|(_, label)| label.contains("luksFormat"))
        .map(|(took, _)| took)
        .sum();
    note(&format!(
        "{TEST}: apply without LUKS2 format and open (key derivation): {:.1} s",
        apply_took - luks
    ));
    note(&format!(
        "{TEST}: QEMU start to the end of the apply step {}; plan {:.2} s, dry run {:.2} s, \
         rerun {:.2} s (keel: {rerun_took:.1} s), release {:.2} s",
        apply_end.map_or_else(|| "?".into(), secs),
        step_secs("plan"),
        step_secs("dry-run"),
        step_secs("rerun"),
        step_secs("release"),
    ));
    note(&format!(
        "{TEST}: whole run (QEMU start to power off) {}",
        secs(total)
    ));
}
