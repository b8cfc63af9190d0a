//! What the running kernel knows, read from sysfs and procfs, and device nodes made without
//! udev: a rescue system may have neither udev nor `/dev/disk/by-*`, and a kernel without a
//! partition-table parser shows partitions only when told about them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::Cmd;
use crate::error::SystemError;
use crate::host::{parse_mountinfo, MountLine};

/// The sysfs directory of a block device.
pub(crate) fn sys_block(name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/class/block/{name}"))
}

fn attr(path: &Path) -> Option<String> {
    let v = std::fs::read_to_string(path).ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// A block device's `major:minor`.
pub(crate) fn dev_numbers(name: &str) -> Option<(u32, u32)> {
    let v = attr(&sys_block(name).join("dev"))?;
    let (a, b) = v.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Whether the kernel has a block device of that name.
pub(crate) fn exists(name: &str) -> bool {
    sys_block(name).join("dev").exists()
}

/// A partition as the kernel sees it; start and size in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelPart {
    pub name: String,
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

/// The partitions the kernel has of `disk`, by number.
pub(crate) fn partitions(disk: &str) -> Vec<KernelPart> {
    let dir = PathBuf::from(format!("/sys/block/{disk}"));
    let mut out: Vec<KernelPart> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    let number = attr(&p.join("partition"))?.parse().ok()?;
                    Some(KernelPart {
                        name: e.file_name().to_string_lossy().into_owned(),
                        number,
                        start: attr(&p.join("start"))?.parse().ok()?,
                        size: attr(&p.join("size"))?.parse().ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|p| p.number);
    out
}

/// A disk's logical sector size.
pub(crate) fn logical_sector_size(disk: &str) -> u64 {
    attr(&sys_block(disk).join("queue/logical_block_size"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// A block device's size in bytes.
pub(crate) fn size_bytes(name: &str) -> Option<u64> {
    attr(&sys_block(name).join("size"))?
        .parse::<u64>()
        .ok()
        .map(|s| s * 512)
}

/// The `major:minor` of a block device node.
pub(crate) fn node_numbers(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    let dev = m.rdev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    Some((major as u32, minor as u32))
}

/// The kernel name of the block device a node is for.
pub(crate) fn name_of_node(path: &Path) -> Option<String> {
    let (major, minor) = node_numbers(path)?;
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Makes sure `path` is the device node of kernel device `name`: waits up to `wait` for
/// devtmpfs (or udev, where there is one) to make it, then makes it with mknod, replacing a
/// stale node of other numbers.
pub(crate) fn ensure_node(path: &Path, name: &str, wait: Duration) -> Result<(), SystemError> {
    let want = dev_numbers(name).ok_or_else(|| {
        SystemError::unexpected(format!(
            "the kernel has no block device {name} (no {}/dev)",
            sys_block(name).display()
        ))
    })?;
    let deadline = Instant::now() + wait;
    loop {
        // Follows symlinks: udev's /dev/mapper links to the right node are fine.
        match node_numbers(path) {
            Some(n) if n == want => return Ok(()),
            Some(_) => break,
            None if Instant::now() >= deadline => break,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).map_err(|e| SystemError::io(path, e))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SystemError::io(dir, e))?;
    }
    Cmd::new(
        "mknod",
        &[
            "-m".to_string(),
            "0660".into(),
            path.display().to_string(),
            "b".into(),
            want.0.to_string(),
            want.1.to_string(),
        ],
    )
    .run()?;
    Ok(())
}

/// The kernel name (`dm-3`) of the device-mapper device named `mapped`.
pub(crate) fn dm_kernel_name(mapped: &str) -> Option<String> {
    let rd = std::fs::read_dir("/sys/block").ok()?;
    rd.filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dm-"))
        .find(|n| attr(&sys_block(n).join("dm/name")).as_deref() == Some(mapped))
}

/// The device-mapper names in use.
pub(crate) fn dm_names() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dm-"))
        .filter_map(|n| attr(&sys_block(&n).join("dm/name")))
        .collect()
}

/// The loop devices an image file is attached to.
pub(crate) fn loops_of(image: &Path) -> Vec<String> {
    let want = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .filter(|n| {
            attr(&sys_block(n).join("loop/backing_file"))
                .is_some_and(|f| Path::new(f.trim_end_matches(" (deleted)")) == want)
        })
        .collect();
    out.sort();
    out
}

/// Whether md array `name` is running.
pub(crate) fn md_running(name: &str) -> bool {
    attr(&sys_block(name).join("md/array_state"))
        .is_some_and(|s| !matches!(s.as_str(), "clear" | "inactive"))
}

/// The devices an md array or device-mapper device is built on, by kernel name.
pub(crate) fn slaves(name: &str) -> Vec<String> {
    std::fs::read_dir(sys_block(name).join("slaves"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The disk a partition is on (`loop0p2` → `loop0`), or the name itself for a whole device.
pub(crate) fn whole_disk(name: &str) -> String {
    let node = sys_block(name);
    if node.join("partition").exists() {
        if let Some(parent) = std::fs::canonicalize(&node)
            .ok()
            .and_then(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
        {
            return parent;
        }
    }
    name.to_string()
}

/// The whole disks a block device is built on: a partition's disk, and through arrays and
/// device-mapper devices the disks of their members.
pub(crate) fn disks_under(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![name.to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let disk = whole_disk(&n);
        if disk != n {
            todo.push(disk);
            continue;
        }
        let below = slaves(&n);
        if below.is_empty() {
            out.push(n);
        } else {
            todo.extend(below);
        }
    }
    out.sort();
    out
}

/// The mounts of this process's namespace.
pub(crate) fn mounts() -> Result<Vec<MountLine>, SystemError> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| SystemError::io(path, e))?;
    Ok(parse_mountinfo(&text))
}

/// What is mounted on `dir` (the topmost mount), if anything.
pub(crate) fn mounted_on(dir: &Path) -> Result<Option<MountLine>, SystemError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(mounts()?
        .into_iter()
        .rev()
        .find(|m| Path::new(&m.mountpoint) == dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        // /dev/null is a character device: not a block device node.
        assert_eq!(node_numbers(Path::new("/dev/null")), None);
        assert!(mounts().unwrap().iter().any(|m| m.mountpoint == "/"));
        assert!(mounted_on(Path::new("/")).unwrap().is_some());
        assert_eq!(whole_disk("no-such-device"), "no-such-device");
        assert!(partitions("no-such-device").is_empty());
    }
}
