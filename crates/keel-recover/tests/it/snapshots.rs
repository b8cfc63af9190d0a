//! The plan as people read it, for each layout Keel rebuilds, compared with a snapshot checked
//! in under `tests/snapshots/`. A change to the planner or to the printed form shows here as a
//! line diff; when the change is meant, run the tests again with `KEEL_BLESS=1` to rewrite the
//! snapshots, and read the new ones before committing them.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use keel_profile::Profile;
use keel_recover::{sample, DiskKind, Plan, PlanOptions, TargetDisk, GIB};

/// The snapshot directory.
fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn blessing() -> bool {
    std::env::var_os("KEEL_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Plans `profile` onto `targets` and compares the printed plan with snapshot `name`.
fn check(name: &str, profile: &Profile, targets: &[TargetDisk]) {
    let plan = keel_recover::plan(profile, targets, &PlanOptions::default())
        .unwrap_or_else(|e| panic!("{name}: planning failed: {e}"));
    let text = plan.to_string();
    // The same inputs print the same plan, and so does the plan read back from its JSON.
    let again = keel_recover::plan(profile, targets, &PlanOptions::default()).unwrap();
    assert_eq!(again.to_string(), text, "{name}: planning twice differs");
    let back = Plan::from_json(&plan.to_json()).unwrap();
    assert_eq!(
        back.to_string(),
        text,
        "{name}: the JSON round trip differs"
    );
    compare(name, &text);
}

/// Compares `actual` with the snapshot `name`, or writes it when blessing.
fn compare(name: &str, actual: &str) {
    let path = dir().join(format!("{name}.txt"));
    if blessing() {
        fs::create_dir_all(dir()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let file = format!("tests/snapshots/{name}.txt");
    let Ok(expected) = fs::read_to_string(&path) else {
        panic!(
            "snapshot {file} is missing\nhint: run `KEEL_BLESS=1 cargo test -p keel-recover` to \
             write it, then read it"
        );
    };
    assert!(
        expected == actual,
        "the printed plan differs from snapshot {file}:\n{}\nhint: if the change is meant, run \
         `KEEL_BLESS=1 cargo test -p keel-recover` to rewrite the snapshot, then read it",
        diff(&expected, actual, &file)
    );
}

/// A unified-looking line diff of `old` (the snapshot) and `new` (the output), with two lines
/// of context around each change.
fn diff(old: &str, new: &str, file: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence, from the end.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Every line as (mark, old line number, new line number, text).
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, j, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i, j, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, j, b[j]));
            j += 1;
        }
    }
    let context = 2;
    let near_change = |k: usize| {
        let lo = k.saturating_sub(context);
        let hi = (k + context + 1).min(ops.len());
        ops[lo..hi].iter().any(|o| o.0 != ' ')
    };
    let mut out = format!("--- {file} (snapshot)\n+++ printed plan\n");
    let mut in_hunk = false;
    for (k, &(mark, oi, nj, text)) in ops.iter().enumerate() {
        if near_change(k) {
            if !in_hunk {
                let _ = writeln!(
                    out,
                    "@@ snapshot line {}, output line {} @@",
                    oi + 1,
                    nj + 1
                );
                in_hunk = true;
            }
            out.push(mark);
            out.push_str(text);
            out.push('\n');
        } else {
            in_hunk = false;
        }
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("(the two differ in the newline at the end)\n");
    }
    out
}

// ------------------------------------------------------------------ (a) GPT, BIOS, one ext4 root

#[test]
fn gpt_bios_ext4_onto_a_smaller_nvme_disk() {
    let targets = sample::targets(DiskKind::Nvme, &[16 * GIB]);
    check(
        "gpt-bios-ext4-smaller-nvme",
        &sample::bios_ext4_profile(),
        &targets,
    );
}

#[test]
fn gpt_bios_ext4_onto_a_larger_sata_disk() {
    let targets = sample::targets(DiskKind::Sata, &[120 * GIB]);
    check(
        "gpt-bios-ext4-larger-sata",
        &sample::bios_ext4_profile(),
        &targets,
    );
}

// ------------------------------------------------------------------ (b) GPT, UEFI, /boot, LVM

#[test]
fn gpt_uefi_lvm_onto_a_smaller_sata_disk() {
    let targets = sample::targets(DiskKind::Sata, &[80 * GIB]);
    check(
        "gpt-uefi-lvm-smaller-sata",
        &sample::uefi_lvm_profile(),
        &targets,
    );
}

#[test]
fn gpt_uefi_lvm_onto_a_larger_nvme_disk() {
    let targets = sample::targets(DiskKind::Nvme, &[512 * GIB]);
    check(
        "gpt-uefi-lvm-larger-nvme",
        &sample::uefi_lvm_profile(),
        &targets,
    );
}

#[test]
fn gpt_uefi_lvm_onto_two_nvme_disks() {
    // One source disk, two targets: the one that holds the layout is used, the other is left
    // alone, and the plan says why for both.
    let targets = sample::targets(DiskKind::Nvme, &[40 * GIB, 256 * GIB]);
    check(
        "gpt-uefi-lvm-two-nvme",
        &sample::uefi_lvm_profile(),
        &targets,
    );
}

// ------------------------------------------------------------------ (c) RAID 1 with LVM on top

#[test]
fn raid1_lvm_onto_smaller_nvme_disks() {
    let targets = sample::targets(DiskKind::Nvme, &[48 * GIB, 50 * GIB]);
    check(
        "raid1-lvm-smaller-nvme",
        &sample::mirrored_lvm_profile(),
        &targets,
    );
}

#[test]
fn raid1_lvm_onto_larger_sata_disks() {
    let targets = sample::targets(DiskKind::Sata, &[256 * GIB, 256 * GIB]);
    check(
        "raid1-lvm-larger-sata",
        &sample::mirrored_lvm_profile(),
        &targets,
    );
}

// ------------------------------------------------------------------ (d) MBR with logical partitions

#[test]
fn mbr_logical_onto_a_smaller_virtio_disk() {
    let targets = sample::targets(DiskKind::Virtio, &[16 * GIB]);
    check(
        "mbr-logical-smaller-virtio",
        &sample::mbr_logical_profile(),
        &targets,
    );
}

#[test]
fn mbr_logical_onto_a_larger_nvme_disk() {
    let targets = sample::targets(DiskKind::Nvme, &[64 * GIB]);
    check(
        "mbr-logical-larger-nvme",
        &sample::mbr_logical_profile(),
        &targets,
    );
}

// ------------------------------------------------------------------ the comparison itself

#[test]
fn every_snapshot_belongs_to_a_test() {
    let known = [
        "gpt-bios-ext4-smaller-nvme",
        "gpt-bios-ext4-larger-sata",
        "gpt-uefi-lvm-smaller-sata",
        "gpt-uefi-lvm-larger-nvme",
        "gpt-uefi-lvm-two-nvme",
        "raid1-lvm-smaller-nvme",
        "raid1-lvm-larger-sata",
        "mbr-logical-smaller-virtio",
        "mbr-logical-larger-nvme",
    ];
    let Ok(entries) = fs::read_dir(dir()) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".txt").unwrap_or(&name);
        assert!(
            known.contains(&stem),
            "tests/snapshots/{name} belongs to no test: remove it, or add its test"
        );
    }
}

#[test]
fn the_diff_shows_changed_lines_with_context() {
    let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
    let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n";
    assert_eq!(
        diff(old, new, "x.txt"),
        "--- x.txt (snapshot)\n+++ printed plan\n\
         @@ snapshot line 2, output line 2 @@\n b\n c\n-d\n+D\n e\n f\n\
         @@ snapshot line 9, output line 9 @@\n i\n j\n+k\n"
    );
}
