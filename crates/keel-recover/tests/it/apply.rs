//! Applying plans for real, onto image files attached to loop devices: a GPT layout (BIOS boot,
//! ext4 root, xfs /srv, swap) and an MBR one (primary /boot, logical root and swap), each
//! captured once and rebuilt onto a larger and a smaller image, with UUIDs, labels, PARTUUIDs,
//! disk ids and partition sizes checked with blkid and sfdisk; an interrupted apply that
//! resumes without redoing its done steps; and a dry run that writes nothing.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_profile::Profile;
use keel_recover::{
    apply_journaled, Executor, Host, Journal, Plan, PlanOptions, Resource, Step, StepError,
    StepState, System, SystemOptions,
};

use crate::support::{
    blkid, missing_privileges, run, skip, wait_released, LoopDevice, Mounted, Source, MIB,
};

pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
pub const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub const LINUX_SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
pub const DISK_GUID: &str = "3f0e9a1c-5b7d-4e2f-8a6b-1c2d3e4f5a6b";
pub const BIOS_PARTUUID: &str = "7a1b2c3d-4e5f-4a6b-9c8d-0e1f2a3b4c5d";
pub const ROOT_PARTUUID: &str = "6b1f0a2c-4d3e-4f5a-8b6c-7d8e9f0a1b2c";
pub const SWAP_PARTUUID: &str = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706";
pub const ROOT_UUID: &str = "0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5";
pub const SWAP_UUID: &str = "9f347fc7-1605-4788-98fd-fca828beedf1";
pub const BOOT_UUID: &str = "f6b08566-ea5e-46f9-8f73-5e8ffdaa7be6";

/// The UUID of the xfs /srv of [`gpt_source`]`(n)`: xfs refuses to mount two filesystems
/// with one UUID, so tests running at once each have their own.
pub fn srv_uuid(n: u8) -> String {
    format!("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b{n:02x}")
}

/// A BIOS-booted server on GPT: BIOS boot, ext4 root (by UUID), xfs /srv (by label), swap
/// (by PARTUUID).
pub fn gpt_source(n: u8) -> Source {
    let srv = srv_uuid(n);
    Source {
        size: 1100 * MIB,
        table: format!(
            "label: gpt\nlabel-id: {DISK_GUID}\n\
             start=2048, size=2048, type={BIOS_BOOT}, uuid={BIOS_PARTUUID}, name=\"bios\", \
             attrs=\"LegacyBIOSBootable\"\n\
             size=600MiB, type={LINUX_FS}, uuid={ROOT_PARTUUID}, name=\"root\", \
             attrs=\"GUID:63\"\n\
             size=400MiB, type={LINUX_FS}, name=\"srv\"\n\
             size=64MiB, type={LINUX_SWAP}, uuid={SWAP_PARTUUID}, name=\"swap\"\n"
        ),
        mkfs: vec![
            (2, "mkfs.ext4", args(&["-q", "-U", ROOT_UUID, "-L", "root"])),
            (
                3,
                "mkfs.xfs",
                args(&["-q", "-f", "-m", &format!("uuid={srv}"), "-L", "srv"]),
            ),
            (4, "mkswap", args(&["-U", SWAP_UUID, "-L", "swap"])),
        ],
        mounts: vec![(2, "/"), (3, "/srv")],
        fstab: format!(
            "UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             LABEL=srv /srv xfs defaults,noatime 0 2\n\
             PARTUUID={SWAP_PARTUUID} none swap sw 0 0\n"
        ),
    }
}

/// An older server on MBR: a bootable primary /boot, and root and swap in logical partitions.
pub fn mbr_source() -> Source {
    Source {
        size: 1024 * MIB,
        table: "label: dos\nlabel-id: 0x1a2b3c4d\n\
                start=2048, size=200MiB, type=83, bootable\n\
                type=5\n\
                size=500MiB, type=83\n\
                size=64MiB, type=82\n"
            .into(),
        mkfs: vec![
            (1, "mkfs.ext4", args(&["-q", "-U", BOOT_UUID, "-L", "boot"])),
            (5, "mkfs.ext4", args(&["-q", "-U", ROOT_UUID, "-L", "root"])),
            (6, "mkswap", args(&["-U", SWAP_UUID])),
        ],
        mounts: vec![(5, "/"), (1, "/boot")],
        fstab: format!(
            "UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             UUID={BOOT_UUID} /boot ext4 defaults 0 2\n\
             UUID={SWAP_UUID} none swap sw 0 0\n"
        ),
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_string()).collect()
}

/// A sparse image file of `size` bytes.
pub fn blank(path: &Path, size: u64) -> String {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    path.display().to_string()
}

/// Captures `source` and plans it onto a blank image of `size` bytes; `None` (after saying
/// why) when this machine cannot run the test.
pub fn planned(test: &str, dir: &Path, source: &Source, size: u64) -> Option<(Plan, String)> {
    let profile = captured(test, dir, source)?;
    Some(plan_onto(&profile, dir, "target.img", size))
}

/// Captures `source` with 20 MiB of data in its root; `None` (after saying why) when this
/// machine cannot run the test.
pub fn captured(test: &str, dir: &Path, source: &Source) -> Option<Profile> {
    if let Some(why) = missing_privileges() {
        skip(test, &format!("needs root and loop devices ({why})"));
        return None;
    }
    for tool in ["mkfs.xfs", "mkswap", "wipefs", "blkid", "blockdev", "df"] {
        if !keel_collect::have(tool) {
            skip(test, &format!("{tool} is not on the PATH"));
            return None;
        }
    }
    match source.capture(dir, SOURCE_DATA_MIB) {
        Ok(p) => Some(p),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// The data [`captured`] puts in the source's root.
const SOURCE_DATA_MIB: usize = 20;

/// Plans `profile` onto a blank image `name` of `size` bytes in `dir`.
pub fn plan_onto(profile: &Profile, dir: &Path, name: &str, size: u64) -> (Plan, String) {
    let target = blank(&dir.join(name), size);
    let inv = Host::system().inventory(&[&target]).unwrap();
    let plan = keel_recover::plan(profile, &inv, &PlanOptions::default()).unwrap();
    (plan, target)
}

pub fn options(plan: &Plan, root: &Path) -> SystemOptions {
    let mut o = SystemOptions::for_plan(plan);
    o.target_root = root.to_path_buf();
    o
}

/// The loop device a system holds for its image.
pub fn loop_of(held: &[Resource]) -> String {
    held.iter()
        .find_map(|r| match r {
            Resource::LoopDevice { device, .. } => Some(device.clone()),
            _ => None,
        })
        .expect("a loop device is held")
}

/// The loop devices an image is attached to.
pub fn attached(image: &str) -> Vec<String> {
    let canonical = fs::canonicalize(image).unwrap();
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let f = e.path().join("loop/backing_file");
        if let Ok(b) = fs::read_to_string(f) {
            if Path::new(b.trim()) == canonical {
                out.push(name);
            }
        }
    }
    out
}

/// Whether no loop device holds `image`, waiting up to 30 s for it: `losetup --detach` of a
/// device that something still has open (a probe by udev or another test's blkid, a mount
/// namespace made while it was mounted) only marks it to go when the last user closes it.
pub fn detached(image: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if attached(image).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What is mounted under `root`, as (mountpoint, source).
pub fn mounts_under(root: &Path) -> Vec<(String, String)> {
    let root = fs::canonicalize(root).unwrap_or(root.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let mp = f[4].to_string();
            Path::new(&mp)
                .starts_with(&root)
                .then(|| (mp, f[sep + 2].to_string()))
        })
        .collect()
}

/// Wraps the real executor: counts what it runs and checks, and can stop before a step as
/// an interruption would.
pub struct Counting<'a> {
    pub inner: &'a mut System,
    pub stop_at: Option<usize>,
    pub ran: Vec<usize>,
    pub resumed: Vec<usize>,
}

impl Executor for Counting<'_> {
    fn prepare(&mut self, plan: &Plan) -> Result<(), StepError> {
        self.inner.prepare(plan)
    }

    fn label(&self, step: &Step) -> String {
        self.inner.label(step)
    }

    fn run(&mut self, number: usize, step: &Step) -> Result<String, StepError> {
        if self.stop_at == Some(number) {
            return Err(format!("interrupted before step {number}").into());
        }
        self.ran.push(number);
        self.inner.run(number, step)
    }

    fn resume(&mut self, number: usize, step: &Step) -> Result<String, StepError> {
        self.resumed.push(number);
        self.inner.resume(number, step)
    }
}

fn described(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(Step::describe).collect()
}

/// The partitions `sfdisk --json` lists on `dev`, after checking the table's label and id.
fn table(dev: &str, label: &str, id: &str) -> Vec<serde_json::Value> {
    let table: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", dev]).unwrap()).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], label, "{table}");
    assert_eq!(pt["id"].as_str().unwrap().to_lowercase(), id, "{table}");
    pt["partitions"].as_array().unwrap().clone()
}

/// Checks that every partition on the disk starts and ends where the plan's table put it.
fn check_as_planned(plan: &Plan, parts: &[serde_json::Value]) {
    let Some(Step::PartitionTable { partitions, .. }) = plan
        .steps
        .iter()
        .find(|s| matches!(s, Step::PartitionTable { .. }))
    else {
        panic!("no partition table in the plan")
    };
    let sectors = |v: &serde_json::Value| v.as_u64().unwrap() * 512;
    let got: Vec<(u64, u64)> = parts
        .iter()
        .map(|p| (sectors(&p["start"]), sectors(&p["size"])))
        .collect();
    let want: Vec<(u64, u64)> = partitions
        .iter()
        .map(|p| (p.start_bytes, p.size_bytes))
        .collect();
    assert_eq!(got, want, "(start, size) of each partition");
}

/// The new size the plan gives partition `number`, and the least it could have had.
fn planned_size(plan: &Plan, number: u32) -> (u64, u64) {
    let p = plan
        .partitions
        .iter()
        .find(|p| p.number == Some(number))
        .unwrap_or_else(|| panic!("no partition {number} in {:#?}", plan.partitions));
    (p.new_bytes, p.min_bytes)
}

/// What the source used at `mountpoint`, as the profile recorded it.
fn source_used(profile: &Profile, mountpoint: &str) -> u64 {
    profile
        .storage
        .usage
        .iter()
        .find(|u| u.mountpoint == mountpoint)
        .unwrap_or_else(|| panic!("no usage of {mountpoint}: {:?}", profile.storage.usage))
        .used_bytes
}

/// Checks that the filesystem mounted at `at` has room for what the source used there, and
/// for the source's data file when `at` is the root.
fn holds_the_data(profile: &Profile, root: &Path, mountpoint: &str) {
    let at = root.join(mountpoint.trim_start_matches('/'));
    let df = run("df", &["-B1", "--output=avail", &at.display().to_string()]).unwrap();
    let avail: u64 = df.lines().nth(1).unwrap().trim().parse().unwrap();
    let used = source_used(profile, mountpoint);
    assert!(
        avail > used,
        "{mountpoint}: {avail} bytes free for the {used} the source used"
    );
    if mountpoint == "/" {
        let data = vec![7u8; SOURCE_DATA_MIB * MIB as usize];
        fs::write(at.join("data"), &data).unwrap();
        run("sync", &[]).unwrap();
        assert_eq!(fs::read(at.join("data")).unwrap(), data);
    }
}

/// Checks what an apply of [`gpt_source`] made on loop device `lo`: the table with the
/// source's disk GUID, PARTUUIDs, names, types and attributes; the filesystems with their
/// UUIDs and labels; the mounts under `root`, root first, with the data's mount options.
/// Returns the partitions as `sfdisk --json` lists them.
fn check_gpt_rebuilt(lo: &str, root: &Path, srv: &str) -> Vec<serde_json::Value> {
    let part = |n: u32| format!("{lo}p{n}");
    let parts = table(lo, "gpt", DISK_GUID);
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0]["type"].as_str().unwrap().to_lowercase(), BIOS_BOOT);
    assert_eq!(
        parts[0]["uuid"].as_str().unwrap().to_lowercase(),
        BIOS_PARTUUID
    );
    assert_eq!(parts[0]["name"], "bios");
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[0]["size"], 2048);
    assert_eq!(
        parts[1]["uuid"].as_str().unwrap().to_lowercase(),
        ROOT_PARTUUID
    );
    assert_eq!(parts[1]["attrs"], "GUID:63");
    assert_eq!(parts[2]["name"], "srv");
    assert_eq!(
        parts[3]["uuid"].as_str().unwrap().to_lowercase(),
        SWAP_PARTUUID
    );
    assert_eq!(
        parts[3]["type"].as_str().unwrap().to_lowercase(),
        LINUX_SWAP
    );

    // The filesystems, probed from the partitions themselves.
    let b = blkid(&part(2));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str(), b["LABEL"].as_str()),
        ("ext4", ROOT_UUID, "root"),
        "{b:?}"
    );
    assert_eq!(b["PART_ENTRY_UUID"], ROOT_PARTUUID);
    assert_eq!(b["PART_ENTRY_NAME"], "root");
    let b = blkid(&part(3));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str(), b["LABEL"].as_str()),
        ("xfs", srv, "srv"),
        "{b:?}"
    );
    let b = blkid(&part(4));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str(), b["LABEL"].as_str()),
        ("swap", SWAP_UUID, "swap"),
        "{b:?}"
    );

    // Mounted under the target root, root first, with the data's mount options.
    let root_c = fs::canonicalize(root).unwrap();
    assert_eq!(
        mounts_under(root),
        [
            (root_c.display().to_string(), part(2)),
            (root_c.join("srv").display().to_string(), part(3)),
        ]
    );
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let srv_line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", root_c.join("srv").display())))
        .unwrap();
    assert!(srv_line.contains("noatime"), "{srv_line}");
    parts
}

/// [`gpt_source`] (1100 MiB, every partition under 1 GiB) onto a larger image, where every
/// partition keeps its size, and onto a smaller one, where the disk has no room for that and
/// the root and /srv shrink: /srv to the least mkfs.xfs makes.
#[test]
fn a_gpt_layout_is_rebuilt_with_its_ids_and_mounted_in_fstab_order() {
    let test = "a_gpt_layout_is_rebuilt_with_its_ids_and_mounted_in_fstab_order";
    let tmp = tempfile::tempdir().unwrap();
    let srv = srv_uuid(1);
    let Some(profile) = captured(test, tmp.path(), &gpt_source(1)) else {
        return;
    };
    let (plan, target) = plan_onto(&profile, tmp.path(), "larger.img", 2048 * MIB);
    let t = |s: &str| s.replace("IMG", &target);
    let steps = [
        t("wipe all signatures on IMG"),
        t("write a gpt partition table on IMG: 1 1.0 MiB, 2 600.0 MiB, 3 400.0 MiB, 4 64.0 MiB"),
        t(&format!(
            "make ext4 on IMG:p2 (UUID {ROOT_UUID}, label root)"
        )),
        t(&format!("make swap on IMG:p4 (UUID {SWAP_UUID})")),
        t(&format!("make xfs on IMG:p3 (UUID {srv}, label srv)")),
        t("mount IMG:p2 at / (ext4, errors=remount-ro)"),
        t("mount IMG:p3 at /srv (xfs, defaults,noatime)"),
    ];
    assert_eq!(described(&plan), steps);
    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");
    let host = Host::system();

    let mut system = System::new(&plan, options(&plan, &root));
    let mut journal = Journal::open(&journal_path, &plan, Some(&root)).unwrap();
    let started = Instant::now();
    let applied = apply_journaled(&plan, &host, &mut system, &mut journal, &mut ()).unwrap();
    let took = started.elapsed();
    assert_eq!(applied.run, (1..=7).collect::<Vec<_>>());
    assert!(applied.verified.is_empty());
    let lo = loop_of(&system.held());
    let parts = check_gpt_rebuilt(&lo, &root, &srv);
    check_as_planned(&plan, &parts);
    // Every partition is small (under 1 GiB) and the disk has room: each keeps its size.
    for (n, mib) in [(2, 600), (3, 400), (4, 64)] {
        assert_eq!(planned_size(&plan, n).0, mib * MIB, "partition {n}");
    }
    holds_the_data(&profile, &root, "/");
    holds_the_data(&profile, &root, "/srv");

    // Every step journaled as done, with what it did.
    let j = Journal::load(&journal_path).unwrap().unwrap();
    assert!(j.steps().iter().all(|s| s.state == StepState::Done));
    assert!(
        j.steps()[2].output.as_deref().unwrap().contains(&format!(
            "UUID {ROOT_UUID}, label root (checked with blkid -p)"
        )),
        "{:?}",
        j.steps()[2]
    );

    // Kept mounted for the next phase; a rerun finds everything done and runs nothing.
    let kept = system.keep();
    assert_eq!(kept.len(), 3, "{kept:?}");
    drop(system);
    assert_eq!(mounts_under(&root).len(), 2);
    let mut system = System::new(&plan, options(&plan, &root));
    let mut counting = Counting {
        inner: &mut system,
        stop_at: None,
        ran: Vec::new(),
        resumed: Vec::new(),
    };
    let mut journal = Journal::open(&journal_path, &plan, None).unwrap();
    let again = apply_journaled(&plan, &host, &mut counting, &mut journal, &mut ()).unwrap();
    assert!(counting.ran.is_empty(), "{:?}", counting.ran);
    assert_eq!(counting.resumed, (1..=7).collect::<Vec<_>>());
    assert_eq!(again.verified.len(), 7);
    assert_eq!(
        loop_of(&system.held()),
        lo,
        "the attached loop device is reused"
    );

    // Released: unmounted, detached.
    let released = system.release();
    assert!(released.failed.is_empty(), "{:?}", released.failed);
    assert!(mounts_under(&root).is_empty());
    assert!(detached(&target), "{:?}", attached(&target));
    // The smaller image's /srv has this one's UUID, which xfs mounts only once.
    wait_released(&format!("{lo}p3"));

    // The same profile onto a 720 MiB image: the partitions at their sizes need 1067 MiB, at
    // their least (the root's data × 1.2 + 256 MiB, /srv's 300 MiB of xfs, the 64 MiB of swap
    // kept) about 650 MiB.
    let (small, small_target) = plan_onto(&profile, tmp.path(), "smaller.img", 720 * MIB);
    let t = |s: &str| s.replace(&target, &small_target);
    let described_small = described(&small);
    assert_eq!(described_small[0], t(&steps[0]));
    assert_eq!(
        described_small[2..],
        steps[2..].iter().map(|s| t(s)).collect::<Vec<_>>()
    );
    let (root_size, root_min) = planned_size(&small, 2);
    let (srv_size, srv_min) = planned_size(&small, 3);
    assert!(
        root_size < 600 * MIB && root_size >= root_min,
        "root {root_size} (least {root_min})"
    );
    // 20 MiB of data × 1.2 + 256 MiB, and whatever ext4's own use came to.
    assert!(root_min >= 280 * MIB, "{root_min}");
    assert!(root_min >= source_used(&profile, "/"), "{root_min}");
    assert_eq!((srv_size, srv_min), (300 * MIB, 300 * MIB));
    assert_eq!(planned_size(&small, 4).0, 64 * MIB, "swap keeps its size");
    let srv_reason = &small
        .partitions
        .iter()
        .find(|p| p.number == Some(3))
        .unwrap()
        .reason;
    assert!(
        srv_reason.starts_with("small (under 1 GiB), but the disk has no room to keep its size")
            && srv_reason.ends_with("raised to 300 MiB, the least mkfs.xfs makes"),
        "{srv_reason}"
    );

    let small_root = tmp.path().join("smaller-root");
    let mut system = System::new(&small, options(&small, &small_root));
    let mut journal = Journal::open(
        &tmp.path().join("smaller.journal.json"),
        &small,
        Some(&small_root),
    )
    .unwrap();
    let started = Instant::now();
    let applied = apply_journaled(&small, &host, &mut system, &mut journal, &mut ()).unwrap();
    let took_small = started.elapsed();
    assert_eq!(applied.run, (1..=7).collect::<Vec<_>>());
    let lo = loop_of(&system.held());
    let parts = check_gpt_rebuilt(&lo, &small_root, &srv);
    check_as_planned(&small, &parts);
    let end = parts
        .iter()
        .map(|p| (p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()) * 512)
        .max()
        .unwrap();
    assert!(
        end <= 719 * MIB,
        "inside the disk, before the backup table: {end}"
    );
    holds_the_data(&profile, &small_root, "/");
    holds_the_data(&profile, &small_root, "/srv");
    let released = system.release();
    assert!(released.failed.is_empty(), "{:?}", released.failed);
    assert!(mounts_under(&small_root).is_empty());
    assert!(detached(&small_target), "{:?}", attached(&small_target));
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{test}: applied 7 steps in {:.2} s onto 2048 MiB, {:.2} s onto 720 MiB \
             (root {} MiB, /srv {} MiB)",
            took.as_secs_f64(),
            took_small.as_secs_f64(),
            root_size / MIB,
            srv_size / MIB
        );
    }
}

/// Checks what an apply of [`mbr_source`] made on loop device `lo`: the table with the source's
/// disk id, the bootable primary, the extended and the two logical partitions; the
/// filesystems; the mounts under `root`, root first.
fn check_mbr_rebuilt(lo: &str, root: &Path) -> Vec<serde_json::Value> {
    let part = |n: u32| format!("{lo}p{n}");
    let parts = table(lo, "dos", "0x1a2b3c4d");
    let nodes: Vec<&str> = parts.iter().map(|p| p["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, [part(1), part(2), part(5), part(6)]);
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[1]["type"], "5");
    assert_eq!(parts[3]["type"], "82");

    let b = blkid(&part(1));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str(), b["LABEL"].as_str()),
        ("ext4", BOOT_UUID, "boot")
    );
    assert_eq!(b["PART_ENTRY_UUID"], "1a2b3c4d-01");
    let b = blkid(&part(5));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str()),
        ("ext4", ROOT_UUID)
    );
    assert_eq!(b["PART_ENTRY_UUID"], "1a2b3c4d-05");
    let b = blkid(&part(6));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str()),
        ("swap", SWAP_UUID)
    );

    let root_c = fs::canonicalize(root).unwrap();
    assert_eq!(
        mounts_under(root),
        [
            (root_c.display().to_string(), part(5)),
            (root_c.join("boot").display().to_string(), part(1)),
        ]
    );
    parts
}

/// [`mbr_source`] (1024 MiB) onto a larger image, where every partition keeps its size, and
/// onto a smaller one without room for that, where the logical root shrinks and /boot and
/// swap, already at their least, do not.
#[test]
fn an_mbr_layout_with_logical_partitions_is_rebuilt() {
    let test = "an_mbr_layout_with_logical_partitions_is_rebuilt";
    let tmp = tempfile::tempdir().unwrap();
    let Some(profile) = captured(test, tmp.path(), &mbr_source()) else {
        return;
    };
    let mut took = Vec::new();
    for (name, size) in [("larger", 1536 * MIB), ("smaller", 640 * MIB)] {
        let (plan, target) = plan_onto(&profile, tmp.path(), &format!("{name}.img"), size);
        let root = tmp.path().join(format!("{name}-root"));
        let mut system = System::new(&plan, options(&plan, &root));
        let mut journal = Journal::open(
            &tmp.path().join(format!("{name}.journal.json")),
            &plan,
            Some(&root),
        )
        .unwrap();
        let started = Instant::now();
        apply_journaled(&plan, &Host::system(), &mut system, &mut journal, &mut ()).unwrap();
        let elapsed = started.elapsed();
        let lo = loop_of(&system.held());
        let parts = check_mbr_rebuilt(&lo, &root);
        check_as_planned(&plan, &parts);
        let (boot, _) = planned_size(&plan, 1);
        let (root_size, root_min) = planned_size(&plan, 5);
        let (swap, _) = planned_size(&plan, 6);
        assert_eq!((boot, swap), (200 * MIB, 64 * MIB), "{name}");
        if size > 1024 * MIB {
            assert_eq!(
                root_size,
                500 * MIB,
                "{name}: room for every partition's size"
            );
        } else {
            // 200 MiB of /boot hold less than its 256 MiB of headroom: it stays.
            assert!(
                root_size < 500 * MIB && root_size >= root_min && root_min >= 280 * MIB,
                "{name}: root {root_size} (least {root_min})"
            );
            let end = parts
                .iter()
                .map(|p| (p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()) * 512)
                .max()
                .unwrap();
            assert!(end <= size, "{name}: inside the disk: {end}");
        }
        took.push((name, size, plan.steps.len(), elapsed, root_size));
        holds_the_data(&profile, &root, "/");
        holds_the_data(&profile, &root, "/boot");
        // Dropped without keeping: everything is released.
        drop(system);
        assert!(mounts_under(&root).is_empty());
        assert!(detached(&target), "{:?}", attached(&target));
    }
    #[allow(clippy::print_stderr)]
    for (name, size, steps, took, root_size) in took {
        eprintln!(
            "{test}: applied {steps} steps onto the {name} image ({} MiB) in {:.2} s (root {} \
             MiB)",
            size / MIB,
            took.as_secs_f64(),
            root_size / MIB
        );
    }
}

#[test]
fn an_interrupted_apply_resumes_without_redoing_its_done_steps() {
    let test = "an_interrupted_apply_resumes_without_redoing_its_done_steps";
    let tmp = tempfile::tempdir().unwrap();
    let srv = srv_uuid(2);
    let Some((plan, target)) = planned(test, tmp.path(), &gpt_source(2), 2048 * MIB) else {
        return;
    };
    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");
    let host = Host::system();

    // Interrupted before step 5 (mkfs.xfs): 1–4 are done.
    let mut system = System::new(&plan, options(&plan, &root));
    let mut counting = Counting {
        inner: &mut system,
        stop_at: Some(5),
        ran: Vec::new(),
        resumed: Vec::new(),
    };
    let mut journal = Journal::open(&journal_path, &plan, Some(&root)).unwrap();
    let e = apply_journaled(&plan, &host, &mut counting, &mut journal, &mut ()).unwrap_err();
    assert_eq!(counting.ran, [1, 2, 3, 4]);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "step 5 (make xfs on {target}:p3 (UUID {srv}, label srv)) failed: interrupted"
        )),
        "{text}"
    );
    drop(system);
    assert!(detached(&target), "released when dropped");
    let j = Journal::load(&journal_path).unwrap().unwrap();
    let states: Vec<StepState> = j.steps().iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            StepState::Done,
            StepState::Done,
            StepState::Done,
            StepState::Done,
            StepState::Failed,
            StepState::Pending,
            StepState::Pending
        ]
    );

    // Between the runs, a file goes into the new root filesystem: if the rerun made that
    // filesystem again, the file would be gone.
    {
        let lo = LoopDevice::attach(Path::new(&target)).unwrap();
        let at = tmp.path().join("between");
        let m = Mounted::new(&lo.part(2), &at);
        fs::write(at.join("marker"), "made before the rerun").unwrap();
        drop(m);
    }

    let mut system = System::new(&plan, options(&plan, &root));
    let mut counting = Counting {
        inner: &mut system,
        stop_at: None,
        ran: Vec::new(),
        resumed: Vec::new(),
    };
    let mut journal = Journal::open(&journal_path, &plan, None).unwrap();
    let applied = apply_journaled(&plan, &host, &mut counting, &mut journal, &mut ()).unwrap();
    assert_eq!(counting.resumed, [1, 2, 3, 4], "done steps are checked");
    assert_eq!(counting.ran, [5, 6, 7], "and not run again");
    assert_eq!(applied.run, [5, 6, 7]);
    assert_eq!(
        fs::read_to_string(root.join("marker")).unwrap(),
        "made before the rerun"
    );
    let lo = loop_of(&system.held());
    assert_eq!(blkid(&format!("{lo}p3"))["UUID"], srv);
    let j = Journal::load(&journal_path).unwrap().unwrap();
    assert!(j.steps().iter().all(|s| s.state == StepState::Done));
    assert_eq!(j.steps()[4].attempts, 2);
    assert!(j.steps()[0].verified_at_ms.is_some());
    drop(system);
    assert!(mounts_under(&root).is_empty());
    assert!(detached(&target), "{:?}", attached(&target));
}

#[test]
fn a_killed_apply_leaves_what_it_held_and_release_undoes_it() {
    let test = "a_killed_apply_leaves_what_it_held_and_release_undoes_it";
    let tmp = tempfile::tempdir().unwrap();
    let Some((plan, target)) = planned(test, tmp.path(), &gpt_source(3), 2048 * MIB) else {
        return;
    };
    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");
    let host = Host::system();

    // A run killed after mounting / (step 6): nothing was released.
    let mut system = System::new(&plan, options(&plan, &root));
    let mut counting = Counting {
        inner: &mut system,
        stop_at: Some(7),
        ran: Vec::new(),
        resumed: Vec::new(),
    };
    let mut journal = Journal::open(&journal_path, &plan, Some(&root)).unwrap();
    apply_journaled(&plan, &host, &mut counting, &mut journal, &mut ()).unwrap_err();
    let lo = loop_of(&system.held());
    let kept = system.keep();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(mounts_under(&root).len(), 1);

    // The disk is in use by the apply's own mount: a rerun still goes ahead, and finishes.
    let mut system = System::new(&plan, options(&plan, &root));
    let mut journal = Journal::open(&journal_path, &plan, None).unwrap();
    let applied = apply_journaled(&plan, &host, &mut system, &mut journal, &mut ()).unwrap();
    assert_eq!(applied.run, [7]);
    assert_eq!(loop_of(&system.held()), lo);
    system.keep();
    assert_eq!(mounts_under(&root).len(), 2);

    // A plain check still refuses the disk, naming what holds it.
    let e = keel_recover::recheck(&plan, &host).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{target} is mounted: {lo}p2 at ")),
        "{e}"
    );

    // release undoes it all, from the plan and the target root alone.
    let released = keel_recover::release(&plan, &root).unwrap();
    assert!(released.failed.is_empty(), "{:?}", released.failed);
    let kinds: Vec<String> = released.released.iter().map(ToString::to_string).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(kinds[0].ends_with("/target-root/srv"), "{kinds:?}");
    assert!(
        kinds[2].starts_with(&format!("loop device {lo} ")),
        "{kinds:?}"
    );
    assert!(mounts_under(&root).is_empty());
    assert!(detached(&target), "{:?}", attached(&target));
    keel_recover::recheck(&plan, &host).unwrap();
}

#[test]
fn the_dry_run_writes_nothing() {
    let test = "the_dry_run_writes_nothing";
    let tmp = tempfile::tempdir().unwrap();
    let Some((plan, target)) = planned(test, tmp.path(), &mbr_source(), 1536 * MIB) else {
        return;
    };
    // An old layout on the target, so there is something to lose.
    crate::support::run_with_input(
        "sfdisk",
        &["-q", &target],
        Some("label: gpt\nsize=100MiB, type=linux\ntype=linux\n"),
    )
    .unwrap();
    let hash = |p: &str| blake3::hash(&fs::read(p).unwrap());
    let before = hash(&target);
    let modified = fs::metadata(&target).unwrap().modified().unwrap();
    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");

    keel_recover::recheck(&plan, &Host::system()).unwrap();
    let system = System::new(&plan, options(&plan, &root));
    let mut lines = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        lines.push(format!("{}. {}", i + 1, system.label(step)));
        for c in system.preview(step).unwrap() {
            lines.push(format!("   {c}"));
        }
    }
    let text = lines.join("\n");
    assert!(
        text.contains("1. wipefs --all /dev/loop[target.img] and its partitions"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mkfs.ext4 -F -q -U {ROOT_UUID} -L root /dev/loop[target.img]p5"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mount -t ext4 /dev/loop[target.img]p1 {}",
            root.join("boot").display()
        )),
        "{text}"
    );
    drop(system);

    assert_eq!(hash(&target), before, "the image is unchanged");
    assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), modified);
    assert!(attached(&target).is_empty(), "nothing was attached");
    assert!(!journal_path.exists(), "no journal was written");
    assert!(!root.exists(), "no target root was made");
}
