//! Space used per mount. `statvfs` blocks for as long as the filesystem wants (a dead NFS
//! server: for ever), so each call runs in its own thread and whatever has not answered by the
//! deadline is left behind with a warning instead of hanging the capture.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_profile::Usage;

/// A mount to measure: its mountpoint as recorded, and where it is on the host.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub mountpoint: String,
    pub host_path: PathBuf,
}

/// What `statvfs` says that usage needs.
#[derive(Debug, Clone, Copy)]
struct Stat {
    blocks: u64,
    bfree: u64,
    frsize: u64,
    files: u64,
    ffree: u64,
}

fn statvfs(path: &Path) -> std::io::Result<Stat> {
    let s = rustix::fs::statvfs(path)?;
    Ok(Stat {
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        frsize: s.f_frsize,
        files: s.f_files,
        ffree: s.f_ffree,
    })
}

/// `statvfs` of each target, each in its own thread, waiting at most `deadline` in all.
pub(crate) fn measure(targets: Vec<Target>, deadline: Duration) -> (Vec<Usage>, Vec<String>) {
    measure_with(targets, deadline, statvfs)
}

fn measure_with(
    targets: Vec<Target>,
    deadline: Duration,
    stat: fn(&Path) -> std::io::Result<Stat>,
) -> (Vec<Usage>, Vec<String>) {
    let end = Instant::now() + deadline;
    let (tx, rx) = mpsc::channel();
    let mut pending: Vec<Option<String>> = Vec::new();
    let mut warnings = Vec::new();
    for (i, t) in targets.into_iter().enumerate() {
        pending.push(Some(t.mountpoint.clone()));
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("keel-statvfs".into())
            .spawn(move || {
                let r = stat(&t.host_path);
                let _ = tx.send((i, t, r));
            });
        if let Err(e) = spawned {
            pending[i] = None;
            warnings.push(format!("cannot start a thread to measure usage: {e}"));
        }
    }
    drop(tx);
    let mut usage = Vec::new();
    while pending.iter().any(Option::is_some) {
        let wait = end.saturating_duration_since(Instant::now());
        let Ok((i, t, r)) = rx.recv_timeout(wait) else {
            break;
        };
        pending[i] = None;
        match r {
            Ok(s) => usage.push(Usage {
                mountpoint: t.mountpoint,
                size_bytes: s.blocks.saturating_mul(s.frsize),
                used_bytes: s.blocks.saturating_sub(s.bfree).saturating_mul(s.frsize),
                inodes_used: s.files.saturating_sub(s.ffree),
            }),
            Err(e) => warnings.push(format!(
                "cannot measure usage of {} (statvfs {}): {e}",
                t.mountpoint,
                t.host_path.display()
            )),
        }
    }
    for mp in pending.into_iter().flatten() {
        warnings.push(format!(
            "usage of {mp} is not recorded: statvfs did not answer within {deadline:?} \
             (a hung filesystem?)"
        ));
    }
    (usage, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_reports_failures() {
        let t = tempfile::tempdir().unwrap();
        let targets = vec![
            Target {
                mountpoint: "/".into(),
                host_path: t.path().to_path_buf(),
            },
            Target {
                mountpoint: "/gone".into(),
                host_path: t.path().join("missing"),
            },
        ];
        let (usage, warnings) = measure(targets, Duration::from_secs(10));
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].mountpoint, "/");
        assert!(usage[0].size_bytes > 0);
        assert!(usage[0].used_bytes <= usage[0].size_bytes);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("/gone"), "{warnings:?}");
    }

    #[test]
    fn a_hung_filesystem_does_not_hang_the_capture() {
        fn stat(path: &Path) -> std::io::Result<Stat> {
            if path.ends_with("hung") {
                std::thread::sleep(Duration::from_secs(30));
            }
            if path.ends_with("denied") {
                return Err(std::io::ErrorKind::PermissionDenied.into());
            }
            Ok(Stat {
                blocks: 100,
                bfree: 40,
                frsize: 4096,
                files: 10,
                ffree: 4,
            })
        }
        let targets = vec![
            Target {
                mountpoint: "/".into(),
                host_path: "/ok".into(),
            },
            Target {
                mountpoint: "/mnt/nfs".into(),
                host_path: "/hung".into(),
            },
            Target {
                mountpoint: "/private".into(),
                host_path: "/denied".into(),
            },
        ];
        let started = Instant::now();
        let (usage, warnings) = measure_with(targets, Duration::from_millis(200), stat);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].size_bytes, 409_600);
        assert_eq!(usage[0].used_bytes, 60 * 4096);
        assert_eq!(usage[0].inodes_used, 6);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("/private"), "{warnings:?}");
        assert!(warnings[1].contains("/mnt/nfs") && warnings[1].contains("did not answer"));
    }
}
