//! Planning is fast: the four-disk RAID 1 + LVM sample takes well under 100 ms.

use std::time::{Duration, Instant};

use keel_recover::{sample, PlanOptions, GIB};

#[test]
fn the_sample_plans_well_under_100_ms() {
    let profile = sample::raid_lvm_profile();
    let targets = sample::nvme_targets(&[40 * GIB, 64 * GIB, 200 * GIB, 48 * GIB]);
    let opts = PlanOptions::default();
    keel_recover::plan(&profile, &targets, &opts).unwrap();
    let mut times: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            keel_recover::plan(&profile, &targets, &opts).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    assert!(
        times[10] < Duration::from_millis(100),
        "median {:?}",
        times[10]
    );
}
