//! `/proc/self/mountinfo`: what is mounted where, by device number.

use std::collections::BTreeMap;
use std::path::Path;

use super::tabs::unescape_octal;
use crate::CollectError;

/// One line of mountinfo (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// Device major number (0 for filesystems without a block device, and for btrfs).
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// The directory of the filesystem that is mounted (not `/` for bind mounts and subvolumes).
    pub root: String,
    /// The mountpoint, in the reader's mount namespace.
    pub mountpoint: String,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type (`ext4`, `fuse.sshfs`).
    pub fstype: String,
    /// What was mounted (`/dev/sda1`, `server:/export`).
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountInfo {
    /// The options as `findmnt` shows them: per-mount, then per-superblock ones not already
    /// given.
    pub fn options(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for o in self
            .mount_options
            .split(',')
            .chain(self.super_options.split(','))
        {
            if !o.is_empty() && !seen.contains(&o) {
                seen.push(o);
            }
        }
        seen.join(",")
    }
}

/// Parses mountinfo text.
pub(crate) fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, CollectError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| {
            CollectError::parse(
                "/proc/self/mountinfo",
                format!("line {}: {why}: {line:?}", n + 1),
            )
        };
        let f: Vec<&str> = line.split(' ').collect();
        // Fields: id, parent, major:minor, root, mountpoint, options, optional fields…, "-",
        // fstype, source, super options.
        let sep = f
            .iter()
            .skip(6)
            .position(|x| *x == "-")
            .map(|p| p + 6)
            .ok_or_else(|| bad("no \"-\" separator after the optional fields"))?;
        if f.len() < sep + 3 {
            return Err(bad("expected type, source and options after \"-\""));
        }
        let (major, minor) = f[2]
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad("device number is not major:minor"))?;
        out.push(MountInfo {
            major,
            minor,
            root: unescape_octal(f[3]),
            mountpoint: unescape_octal(f[4]),
            mount_options: f[5].to_string(),
            fstype: f[sep + 1].to_string(),
            source: unescape_octal(f[sep + 2]),
            // The super options are the last field; nothing after them contains spaces.
            super_options: f[sep + 3..].join(" "),
        });
    }
    Ok(out)
}

/// How a filesystem type is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsClass {
    /// Kernel or memory filesystems that no disk backs: not recorded.
    Pseudo,
    /// Network filesystems: recorded, but never `statvfs`ed since a dead server hangs the call.
    Network,
    /// FUSE: recorded, never `statvfs`ed since the answer comes from a userspace daemon.
    Fuse,
    /// A local filesystem on a block device.
    Local,
}

/// Pseudo filesystems, including the FUSE ones that only present kernel or desktop state.
/// `autofs` is here because a `statvfs` on its trigger point would mount the real filesystem,
/// which then shows up as its own line.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "functionfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

const NETWORK: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "davfs",
    "glusterfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// Classifies a filesystem type.
pub(crate) fn classify(fstype: &str) -> FsClass {
    if PSEUDO.contains(&fstype) {
        FsClass::Pseudo
    } else if NETWORK.contains(&fstype) {
        FsClass::Network
    } else if fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.") {
        FsClass::Fuse
    } else {
        FsClass::Local
    }
}

/// The mounts a reader sees: for a mountpoint mounted over, the last (visible) one.
pub(crate) fn visible(mounts: Vec<MountInfo>) -> Vec<MountInfo> {
    let mut by_point: BTreeMap<String, MountInfo> = BTreeMap::new();
    for m in mounts {
        by_point.insert(m.mountpoint.clone(), m);
    }
    by_point.into_values().collect()
}

/// A host mountpoint as seen from inside `dir` (`dir` → `/`, `dir/srv` → `/srv`), or `None`
/// when it is outside.
pub(crate) fn relative_to(dir: &Path, mountpoint: &str) -> Option<String> {
    let dir = dir.to_str()?.trim_end_matches('/');
    if dir.is_empty() {
        return Some(mountpoint.to_string());
    }
    let rest = mountpoint.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("/".into())
    } else if rest.starts_with('/') {
        Some(rest.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<MountInfo> {
        let p = format!(
            "{}/tests/fixtures/storage/mountinfo.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_mountinfo(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn parses_fields() {
        let m = fixture();
        assert_eq!(m.len(), 29);
        let root = m.iter().find(|m| m.mountpoint == "/").unwrap();
        assert_eq!((root.major, root.minor), (254, 0));
        assert_eq!(root.fstype, "ext4");
        assert_eq!(root.source, "/dev/vda");
        assert_eq!(root.root, "/");
        assert_eq!(
            root.options(),
            "rw,relatime,discard,resv_strict,resuid=65534,resgid=65534"
        );
        let img = m
            .iter()
            .find(|m| m.mountpoint == "/tmp/stx/root/srv")
            .unwrap();
        assert_eq!((img.major, img.minor), (259, 2));
        assert_eq!(img.source, "/dev/loop0p3");
        // Optional fields (`shared:31`) are skipped; a subvolume's root is kept.
        let home = m.iter().find(|m| m.mountpoint == "/home").unwrap();
        assert_eq!(home.fstype, "btrfs");
        assert_eq!(home.root, "/@home");
        assert_eq!(home.source, "/dev/vdb2");
        assert_eq!(home.major, 0);
        let nfs = m.iter().find(|m| m.mountpoint == "/mnt/nfs").unwrap();
        assert_eq!(nfs.source, "fileserver:/export/home");
        assert!(nfs.super_options.starts_with("rw,vers=4.2"));
    }

    #[test]
    fn escapes_and_overmounts() {
        let all = fixture();
        assert_eq!(
            all.iter()
                .filter(|m| m.mountpoint == "/mnt/my disk")
                .count(),
            2
        );
        let v = visible(all);
        let disk: Vec<_> = v
            .iter()
            .filter(|m| m.mountpoint == "/mnt/my disk")
            .collect();
        assert_eq!(disk.len(), 1);
        assert_eq!(
            disk[0].fstype, "xfs",
            "the later mount hides the earlier one"
        );
        assert_eq!(v.iter().filter(|m| m.mountpoint == "/dev/pts").count(), 1);
    }

    #[test]
    fn classes() {
        let m = fixture();
        let class_of = |mp: &str| classify(&m.iter().find(|m| m.mountpoint == mp).unwrap().fstype);
        assert_eq!(class_of("/"), FsClass::Local);
        assert_eq!(class_of("/home"), FsClass::Local);
        assert_eq!(class_of("/proc"), FsClass::Pseudo);
        assert_eq!(class_of("/sys/fs/cgroup/unified"), FsClass::Pseudo);
        assert_eq!(class_of("/dev/shm"), FsClass::Pseudo);
        assert_eq!(class_of("/mnt/auto"), FsClass::Pseudo);
        assert_eq!(class_of("/mnt/nfs"), FsClass::Network);
        assert_eq!(class_of("/mnt/share"), FsClass::Network);
        assert_eq!(class_of("/mnt/remote"), FsClass::Fuse);
        assert_eq!(classify("fuseblk"), FsClass::Fuse);
        assert_eq!(classify("fuse.lxcfs"), FsClass::Pseudo);
    }

    #[test]
    fn relative_paths() {
        let d = Path::new("/tmp/stx/root");
        assert_eq!(relative_to(d, "/tmp/stx/root").as_deref(), Some("/"));
        assert_eq!(relative_to(d, "/tmp/stx/root/srv").as_deref(), Some("/srv"));
        assert_eq!(relative_to(d, "/tmp/stx/rootfs"), None);
        assert_eq!(relative_to(d, "/"), None);
        assert_eq!(relative_to(Path::new("/"), "/srv").as_deref(), Some("/srv"));
    }

    #[test]
    fn malformed_lines_are_errors() {
        let e = parse_mountinfo("1 2 3:4 / /x rw\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("separator"), "{e}");
        let e = parse_mountinfo("1 2 x / /x rw - ext4 /dev/a rw\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("major:minor"), "{e}");
    }
}
