//! Applying refuses, before writing anything, a disk that is in use and a plan whose disks
//! changed since it was made.

use std::fs;

use keel_recover::{apply_journaled, ApplyError, Host, Journal, PlanOptions, System};

use crate::apply::{attached, gpt_source, mounts_under, options, planned};
use crate::support::{image, missing_privileges, run, skip, LoopDevice, Mounted, GIB, MIB};

#[test]
fn applying_onto_a_mounted_loop_device_is_refused_naming_it() {
    let test = "applying_onto_a_mounted_loop_device_is_refused_naming_it";
    if let Some(why) = missing_privileges() {
        skip(test, &format!("needs root and loop devices ({why})"));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let profile = match gpt_source(4).capture(tmp.path(), 20) {
        Ok(p) => p,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    // The target is a loop device the test attached, with a filesystem of its own mounted.
    let img = tmp.path().join("busy.img");
    image(&img, 2 * GIB, "label: gpt\nsize=64MiB, type=linux\n");
    let lo = LoopDevice::attach(&img).unwrap();
    run("mkfs.ext4", &["-q", &lo.part(1)]).unwrap();
    let host = Host::system();
    let inv = host.inventory(&[&lo.dev]).unwrap();
    let plan = keel_recover::plan(&profile, &inv, &PlanOptions::default()).unwrap();
    let at = tmp.path().join("in-use");
    let mount = Mounted::new(&lo.part(1), &at);
    let table_before = run("sfdisk", &["--dump", &lo.dev]).unwrap();

    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");
    let mut system = System::new(&plan, options(&plan, &root));
    let mut journal = Journal::open(&journal_path, &plan, Some(&root)).unwrap();
    let e = apply_journaled(&plan, &host, &mut system, &mut journal, &mut ()).unwrap_err();
    assert!(matches!(e, ApplyError::Safety(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "refusing to touch a disk that is in use:\n{} is mounted: {} at {}",
            lo.dev,
            lo.part(1),
            at.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: unmount what is mounted from the disk"),
        "{text}"
    );
    assert!(system.held().is_empty());
    assert!(!journal_path.exists(), "nothing journaled");
    assert_eq!(run("sfdisk", &["--dump", &lo.dev]).unwrap(), table_before);

    // Unmounted, the same plan applies onto the loop device (a block device, not an image).
    drop(mount);
    let applied = apply_journaled(&plan, &host, &mut system, &mut journal, &mut ()).unwrap();
    assert_eq!(applied.run.len(), plan.steps.len());
    assert_eq!(mounts_under(&root).len(), 2);
    assert!(system
        .held()
        .iter()
        .all(|r| !matches!(r, keel_recover::Resource::LoopDevice { .. })));
    drop(system);
    assert!(mounts_under(&root).is_empty());
}

#[test]
fn a_plan_whose_image_was_resized_is_refused() {
    let test = "a_plan_whose_image_was_resized_is_refused";
    let tmp = tempfile::tempdir().unwrap();
    let Some((plan, target)) = planned(test, tmp.path(), &gpt_source(5), 2 * GIB) else {
        return;
    };
    fs::File::options()
        .write(true)
        .open(&target)
        .unwrap()
        .set_len(3 * GIB)
        .unwrap();
    let root = tmp.path().join("target-root");
    let journal_path = tmp.path().join("plan.journal.json");
    let mut system = System::new(&plan, options(&plan, &root));
    let mut journal = Journal::open(&journal_path, &plan, Some(&root)).unwrap();
    let e =
        apply_journaled(&plan, &Host::system(), &mut system, &mut journal, &mut ()).unwrap_err();
    assert!(matches!(e, ApplyError::Check(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{target}: size was 2.0 GiB (2147483648 bytes), now 3.0 GiB (3221225472 bytes)"
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: make a new plan for the disks present"),
        "{text}"
    );
    assert!(attached(&target).is_empty());
    assert!(!journal_path.exists());
    // Still all zeros where the table would go.
    let head = fs::read(&target).unwrap();
    assert!(head[..MIB as usize].iter().all(|b| *b == 0));
}
