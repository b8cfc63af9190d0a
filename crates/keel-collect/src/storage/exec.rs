//! Running the probing tools. They use [`crate::root::exec`], which hands back the exit status
//! and stderr on failure too: `blkid` exits 2 when a device simply has no signature and
//! `sfdisk` fails on a disk without a partition table, and neither is worth a warning.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use crate::root::{exec, Output};

/// Maps `f` over `items` on a few threads, keeping the order: probing is mostly waiting for
/// short-lived processes, so a handful at a time cuts the wall time without flooding a machine
/// that has hundreds of disks.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const WORKERS: usize = 8;
    if items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectError;
    use std::time::{Duration, Instant};

    #[test]
    fn status_and_output_come_back() {
        let o = exec(
            "sh",
            &["-c", "echo out; echo err >&2; exit 2"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(o.code, Some(2));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.why(), "err");
        assert!(!o.success());
    }

    #[test]
    fn deadline_kills() {
        let t = Instant::now();
        let e = exec("sleep", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, CollectError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn missing_program() {
        let e = exec("keel-no-such-program", &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("keel-no-such-program"), "{e}");
    }

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..50).collect();
        assert_eq!(
            par_map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(par_map(&[] as &[u32], |x| *x).is_empty());
    }
}
