//! `/proc/swaps`: active swap areas.

use keel_profile::Swap;

use super::tabs::unescape_octal;

/// Parses `/proc/swaps` (sizes are in KiB there).
pub(crate) fn parse_proc_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .filter(|l| !l.starts_with("Filename"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            Some(Swap {
                device: unescape_octal(f[0]),
                kind: f[1].to_string(),
                size_bytes: f[2].parse::<u64>().ok()? * 1024,
                priority: f[4].parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture() {
        let p = format!(
            "{}/tests/fixtures/storage/proc-swaps.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        let s = parse_proc_swaps(&std::fs::read_to_string(p).unwrap());
        assert_eq!(
            s,
            [
                Swap {
                    device: "/dev/loop0".into(),
                    kind: "partition".into(),
                    size_bytes: 16380 * 1024,
                    priority: -2,
                },
                Swap {
                    device: "/swap file".into(),
                    kind: "file".into(),
                    size_bytes: 1_048_572 * 1024,
                    priority: -3,
                },
            ]
        );
        assert!(parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n").is_empty());
    }
}
