//! Disks in use are refused, naming the disk and what uses it.

use std::fs;

use keel_recover::{Host, RefusalReason, SafetyError};

use crate::support::{image, missing_privileges, run, skip, LoopDevice, Mounted, MIB};

#[test]
fn a_mounted_loop_device_is_refused() {
    if let Some(why) = missing_privileges() {
        skip(
            "a_mounted_loop_device_is_refused",
            &format!("needs root and loop devices ({why})"),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk.img");
    image(&img, 64 * MIB, "label: gpt\ntype=linux\n");
    let lo = match LoopDevice::attach(&img) {
        Ok(lo) => lo,
        Err(why) => {
            skip("a_mounted_loop_device_is_refused", &why);
            return;
        }
    };
    run("mkfs.ext4", &["-q", &lo.part(1)]).unwrap();
    let at = tmp.path().join("mnt");
    let mount = Mounted::new(&lo.part(1), &at);
    let host = Host::system();

    let inv = host.inventory(&[&lo.dev]).unwrap();
    let e = host.check_safe(&inv).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{} is mounted: {} at {}",
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

    // The image behind it is refused too.
    let image_path = img.display().to_string();
    let inv = host.inventory(&[&image_path]).unwrap();
    let text = host.check_safe(&inv).unwrap_err().to_string();
    assert!(
        text.contains(&format!(
            "{image_path} is mounted: {} at {}",
            lo.part(1),
            at.display()
        )),
        "{text}"
    );

    // A partition is never a target.
    let text = host.target(&lo.part(1)).unwrap_err().to_string();
    assert!(
        text.contains(&format!("it is a partition of {}", lo.dev)),
        "{text}"
    );

    drop(mount);
    let inv = host.inventory(&[&lo.dev]).unwrap();
    host.check_safe(&inv).unwrap();
}

#[test]
fn the_running_systems_disk_is_refused() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_dev = info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&"/")).then(|| f[2].to_string())
    });
    if root_dev.as_deref().is_none_or(|d| d.starts_with("0:")) {
        skip(
            "the_running_systems_disk_is_refused",
            "the root filesystem is not on a block device here",
        );
        return;
    }
    let host = Host::system();
    let mut refused = Vec::new();
    for name in fs::read_dir("/sys/block").unwrap().filter_map(Result::ok) {
        let path = format!("/dev/{}", name.file_name().to_string_lossy());
        let Ok(disk) = host.target(&path) else {
            continue;
        };
        if let Err(SafetyError::Refused(found)) = host.check_safe(std::slice::from_ref(&disk)) {
            refused.extend(found);
        }
    }
    assert!(
        refused
            .iter()
            .any(|r| matches!(r.reason, RefusalReason::RunningSystem { .. })),
        "no disk was refused as the running system's: {refused:?}"
    );
}
