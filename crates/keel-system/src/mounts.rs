//! Mounts inside a tree: the build's own mounts live in private mount namespaces (see
//! `cmd::in_root_mounted`), so these helpers only make sure nothing is left mounted inside a
//! directory before it is removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn unmount(target: &Path) {
    for attempt in 0..5 {
        let ok = Command::new("umount")
            .arg(target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok || !is_mounted(target) {
            return;
        }
        if attempt == 4 {
            // Last resort: detach it, so nothing later reaches through it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(target)
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_mounted(target: &Path) -> bool {
    mounts_under(target).iter().any(|m| m == target)
}

/// Mount points at or below `dir`, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// Unmounts everything at or below `dir`.
pub(crate) fn unmount_under(dir: &Path) {
    unmount_under_except(dir, &[]);
}

/// Unmounts everything at or below `dir` but the mounts in `keep` (the recovered disks a
/// tree is built onto were mounted before the build, and stay).
pub(crate) fn unmount_under_except(dir: &Path, keep: &[PathBuf]) {
    for m in mounts_under(dir) {
        if !keep.contains(&m) {
            unmount(&m);
        }
    }
}

pub(crate) fn unescape_mountinfo(field: &str) -> String {
    // mountinfo writes space, tab, newline and backslash as \ooo.
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A working directory removed when dropped, after everything mounted inside it has been
/// unmounted; never removed while something is still mounted there.
#[derive(Debug)]
pub(crate) struct WorkDir(pub PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        unmount_under(&self.0);
        if mounts_under(&self.0).is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
    }
}
