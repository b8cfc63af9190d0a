//! Applying plans for real, onto image files attached to loop devices: a GPT layout (BIOS boot,
//! ext4 root, xfs /srv, swap) and an MBR one (primary /boot, logical root and swap), with
//! UUIDs, labels, PARTUUIDs and disk ids checked with blkid and sfdisk; an interrupted apply
//! that resumes without redoing its done steps; and a dry run that writes nothing.

use std::fs;
use std::path::Path;
use std::time::Instant;

use keel_recover::{
    apply_journaled, Executor, Host, Journal, Plan, PlanOptions, Resource, Step, StepError,
    StepState, System, SystemOptions,
};

use crate::support::{blkid, missing_privileges, run, skip, LoopDevice, Mounted, Source, MIB};

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
    if let Some(why) = missing_privileges() {
        skip(test, &format!("needs root and loop devices ({why})"));
        return None;
    }
    for tool in ["mkfs.xfs", "mkswap", "wipefs", "blkid", "blockdev"] {
        if !keel_collect::have(tool) {
            skip(test, &format!("{tool} is not on the PATH"));
            return None;
        }
    }
    let profile = match source.capture(dir, 20) {
        Ok(p) => p,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let target = blank(&dir.join("target.img"), size);
    let host = Host::system();
    let inv = host.inventory(&[&target]).unwrap();
    let plan = keel_recover::plan(&profile, &inv, &PlanOptions::default()).unwrap();
    Some((plan, target))
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

#[test]
fn a_gpt_layout_is_rebuilt_with_its_ids_and_mounted_in_fstab_order() {
    let test = "a_gpt_layout_is_rebuilt_with_its_ids_and_mounted_in_fstab_order";
    let tmp = tempfile::tempdir().unwrap();
    let srv = srv_uuid(1);
    let Some((plan, target)) = planned(test, tmp.path(), &gpt_source(1), 2048 * MIB) else {
        return;
    };
    let t = |s: &str| s.replace("IMG", &target);
    assert_eq!(
        described(&plan),
        [
            t("wipe all signatures on IMG"),
            described(&plan)[1].clone(),
            t(&format!(
                "make ext4 on IMG:p2 (UUID {ROOT_UUID}, label root)"
            )),
            t(&format!("make swap on IMG:p4 (UUID {SWAP_UUID})")),
            t(&format!("make xfs on IMG:p3 (UUID {srv}, label srv)")),
            t("mount IMG:p2 at / (ext4, errors=remount-ro)"),
            t("mount IMG:p3 at /srv (xfs, defaults,noatime)"),
        ]
    );
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
    let part = |n: u32| format!("{lo}p{n}");

    // The table: disk GUID, PARTUUIDs, names, types and attributes as on the source.
    let table: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", &lo]).unwrap()).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(pt["id"].as_str().unwrap().to_lowercase(), DISK_GUID);
    let parts = pt["partitions"].as_array().unwrap();
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
        ("xfs", srv.as_str(), "srv"),
        "{b:?}"
    );
    let b = blkid(&part(4));
    assert_eq!(
        (b["TYPE"].as_str(), b["UUID"].as_str(), b["LABEL"].as_str()),
        ("swap", SWAP_UUID, "swap"),
        "{b:?}"
    );

    // Mounted under the target root, root first, with the data's mount options.
    let root_c = fs::canonicalize(&root).unwrap();
    assert_eq!(
        mounts_under(&root),
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
    assert!(attached(&target).is_empty());
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{test}: applied 7 steps in {:.2} s", took.as_secs_f64());
    }
}

#[test]
fn an_mbr_layout_with_logical_partitions_is_rebuilt() {
    let test = "an_mbr_layout_with_logical_partitions_is_rebuilt";
    let tmp = tempfile::tempdir().unwrap();
    let Some((plan, target)) = planned(test, tmp.path(), &mbr_source(), 1536 * MIB) else {
        return;
    };
    let root = tmp.path().join("target-root");
    let mut system = System::new(&plan, options(&plan, &root));
    let mut journal =
        Journal::open(&tmp.path().join("plan.journal.json"), &plan, Some(&root)).unwrap();
    let started = Instant::now();
    apply_journaled(&plan, &Host::system(), &mut system, &mut journal, &mut ()).unwrap();
    let took = started.elapsed();
    let lo = loop_of(&system.held());
    let part = |n: u32| format!("{lo}p{n}");

    let table: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", &lo]).unwrap()).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "dos");
    assert_eq!(pt["id"], "0x1a2b3c4d");
    let parts = pt["partitions"].as_array().unwrap();
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

    let root_c = fs::canonicalize(&root).unwrap();
    assert_eq!(
        mounts_under(&root),
        [
            (root_c.display().to_string(), part(5)),
            (root_c.join("boot").display().to_string(), part(1)),
        ]
    );
    // Dropped without keeping: everything is released.
    drop(system);
    assert!(mounts_under(&root).is_empty());
    assert!(attached(&target).is_empty());
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{test}: applied {} steps in {:.2} s",
            plan.steps.len(),
            took.as_secs_f64()
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
    assert!(attached(&target).is_empty(), "released when dropped");
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
    assert!(attached(&target).is_empty());
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
    assert!(attached(&target).is_empty());
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
