//! A real capture of a disk image (BIOS boot, ext4 root, ext4 /srv with data), planned onto
//! a larger image, a smaller one, and one too small.

use std::fs;
use std::path::Path;

use keel_recover::{human, Device, Host, PlanError, PlanOptions, Step};

use crate::support::{image, missing_privileges, run, skip, LoopDevice, Mounted, GIB, MIB};

const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const ROOT_PARTUUID: &str = "6b1f0a2c-4d3e-4f5a-8b6c-7d8e9f0a1b2c";
const ROOT_UUID: &str = "0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5";
const SRV_UUID: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";

/// Captures a 4 GiB image: 1 MiB BIOS boot, 2 GiB root, the rest /srv holding 200 MiB.
fn capture_image(dir: &Path) -> Result<keel_profile::Profile, String> {
    let img = dir.join("source.img");
    image(
        &img,
        4 * GIB,
        &format!(
            "label: gpt\n\
             start=2048, size=2048, type={BIOS_BOOT}, name=\"bios\"\n\
             size=2GiB, type={LINUX_FS}, uuid={ROOT_PARTUUID}, name=\"root\"\n\
             type={LINUX_FS}, name=\"srv\"\n"
        ),
    );
    let lo = LoopDevice::attach(&img)?;
    for (part, uuid, label) in [
        (lo.part(2), ROOT_UUID, "root"),
        (lo.part(3), SRV_UUID, "srv"),
    ] {
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                "-U",
                uuid,
                "-L",
                label,
                &part,
            ],
        )?;
    }
    let root = dir.join("root");
    let root_mount = Mounted::new(&lo.part(2), &root);
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/fstab"),
        format!(
            "UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             UUID={SRV_UUID} /srv ext4 defaults 0 2\n"
        ),
    )
    .unwrap();
    let srv_mount = Mounted::new(&lo.part(3), &root.join("srv"));
    fs::write(root.join("srv/data"), vec![7u8; 200 * MIB as usize]).unwrap();
    run("sync", &[])?;
    let mut opts = keel_collect::Options::new(&root);
    opts.state_dir = dir.join("state");
    let file = keel_collect::capture(&opts).map_err(|e| e.to_string())?;
    drop(srv_mount);
    drop(root_mount);
    drop(lo);
    Ok(file.profile)
}

fn sparse(path: &Path, size: u64) -> String {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    path.display().to_string()
}

#[test]
fn a_captured_image_plans_onto_larger_and_smaller_images() {
    if let Some(why) = missing_privileges() {
        skip(
            "a_captured_image_plans_onto_larger_and_smaller_images",
            &format!("needs root and loop devices ({why})"),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let profile = match capture_image(tmp.path()) {
        Ok(p) => p,
        Err(why) => {
            skip(
                "a_captured_image_plans_onto_larger_and_smaller_images",
                &why,
            );
            return;
        }
    };
    let st = &profile.storage;
    assert_eq!(st.disks.len(), 1, "{:#?}", st.disks);
    assert_eq!(st.partitions.len(), 3);
    let used = |mp: &str| {
        st.usage
            .iter()
            .find(|u| u.mountpoint == mp)
            .unwrap()
            .used_bytes
    };
    assert!(used("/srv") >= 200 * MIB, "{:?}", st.usage);
    let source = st.disks[0].name.clone();
    let host = Host::system();

    // Larger: 10 GiB. BIOS boot stays, root and /srv scale, /srv takes the rest.
    let big = sparse(&tmp.path().join("big.img"), 10 * GIB);
    let inv = host.inventory(&[&big]).unwrap();
    host.check_safe(&inv).unwrap();
    let plan = keel_recover::plan(&profile, &inv, &PlanOptions::default()).unwrap();
    assert_eq!(plan.disk_map[0].target.as_deref(), Some(big.as_str()));
    assert!(
        plan.disk_map[0].reason.ends_with("of the same kind (loop)"),
        "{}",
        plan.disk_map[0].reason
    );
    let part = |plan: &keel_recover::Plan, n: u32| {
        plan.partitions
            .iter()
            .find(|p| p.number == Some(n))
            .unwrap()
            .clone()
    };
    assert_eq!(part(&plan, 1).new_bytes, MIB);
    assert_eq!(
        part(&plan, 2).device,
        Device::Partition {
            disk: big.clone(),
            number: 2
        }
    );
    assert_eq!(part(&plan, 2).device.to_string(), format!("{big}:p2"));
    assert!(part(&plan, 2).new_bytes > 4 * GIB, "{:?}", part(&plan, 2));
    let srv = part(&plan, 3);
    assert!(
        srv.reason.ends_with("takes the rest of the disk"),
        "{}",
        srv.reason
    );
    assert_eq!(part(&plan, 2).content, "ext4 /");
    let Step::PartitionTable { partitions, .. } = &plan.steps[1] else {
        panic!("{:?}", plan.steps[1])
    };
    let last = partitions.last().unwrap();
    assert_eq!(last.start_bytes + last.size_bytes, 10 * GIB - MIB);
    assert_eq!(partitions[1].uuid.as_deref(), Some(ROOT_PARTUUID));
    let described: Vec<String> = plan.steps[2..].iter().map(Step::describe).collect();
    assert_eq!(
        described,
        [
            format!("make ext4 on {big}:p2 (UUID {ROOT_UUID}, label root)"),
            format!("make ext4 on {big}:p3 (UUID {SRV_UUID}, label srv)"),
            format!("mount {big}:p2 at / (ext4, errors=remount-ro)"),
            format!("mount {big}:p3 at /srv (ext4, defaults)"),
        ]
    );
    keel_recover::recheck(&plan, &host).unwrap();

    // Smaller: 1.5 GiB, still above what the data needs.
    let small = sparse(&tmp.path().join("small.img"), 3 * GIB / 2);
    let inv = host.inventory(&[&small]).unwrap();
    let plan = keel_recover::plan(&profile, &inv, &PlanOptions::default()).unwrap();
    let srv = part(&plan, 3);
    assert!(srv.new_bytes >= srv.min_bytes && srv.min_bytes >= 200 * MIB);
    assert!(part(&plan, 2).new_bytes < GIB);

    // Too small: 400 MiB, with every partition's minimum and the exact shortfall.
    let tiny = sparse(&tmp.path().join("tiny.img"), 400 * MIB);
    let inv = host.inventory(&[&tiny]).unwrap();
    let e = keel_recover::plan(&profile, &inv, &PlanOptions::default()).unwrap_err();
    let PlanError::DoesNotFit(short) = &e else {
        panic!("{e}")
    };
    let need = |used: u64| (used + used / 5 + 256 * MIB).div_ceil(MIB) * MIB;
    let mins: Vec<u64> = short.lines.iter().map(|l| l.min_bytes).collect();
    assert_eq!(mins, [MIB, need(used("/")), need(used("/srv"))]);
    assert_eq!(short.usable_bytes, 398 * MIB);
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "disk {source} (4.0 GiB) does not fit on {tiny} (400.0 MiB; 398.0 MiB usable after \
             the partition table and alignment): it needs at least {} but 398.0 MiB is usable, {} \
             ({} bytes) short\n",
            human(short.needed_bytes()),
            human(short.short_bytes()),
            short.short_bytes()
        )),
        "{text}"
    );
    assert!(text.contains("minimum: ext4 on /srv: "), "{text}");

    // The target changes after planning: the plan is refused.
    let plan = keel_recover::plan(
        &profile,
        &host.inventory(&[&big]).unwrap(),
        &PlanOptions::default(),
    )
    .unwrap();
    fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(9 * GIB)
        .unwrap();
    let e = keel_recover::recheck(&plan, &host).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{big}: size was 10.0 GiB (10737418240 bytes), now 9.0 GiB"
        )),
        "{e}"
    );
}
