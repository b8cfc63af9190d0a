//! Which target disk each source disk is rebuilt onto.
//!
//! In order: an explicit `--disk-map` wins; then a target with the source's WWN, serial number
//! or image file (it is the original disk); then the remaining source disks, largest first, each
//! take the smallest remaining target that holds their minimum layout, preferring one of the
//! same kind. Every decision carries its reason.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::error::PlanError;
use crate::plan::PlanOptions;
use crate::size::human;
use crate::source::{
    max_missing, member_is_spare, member_path, raid_devices, Content, Source, Special,
};
use crate::target::TargetDisk;

/// The outcome of mapping.
#[derive(Debug)]
pub(crate) struct DiskMap {
    /// Per source disk (index into `Source::disks`): its target (index into the targets).
    pub target: Vec<Option<usize>>,
    /// Per source disk: why.
    pub reason: Vec<String>,
    /// Source disks left out of a degraded plan.
    pub dropped: BTreeSet<usize>,
    /// Targets no source disk goes to, with why.
    pub unused: Vec<(usize, String)>,
}

pub(crate) fn map_disks(
    src: &Source,
    mins: &[u64],
    targets: &[TargetDisk],
    opts: &PlanOptions,
) -> Result<DiskMap, PlanError> {
    let n = src.disks.len();
    let disk = |i: usize| &src.st.disks[src.disks[i].idx];
    let mut target: Vec<Option<usize>> = vec![None; n];
    let mut reason = vec![String::new(); n];
    let mut taken = vec![false; targets.len()];

    for (s, d) in &opts.disk_map {
        let si = find_source(src, s).ok_or_else(|| PlanError::UnknownSource {
            given: s.clone(),
            known: src
                .disks
                .iter()
                .map(|x| {
                    let d = &src.st.disks[x.idx];
                    format!("{} ({})", d.name, d.id)
                })
                .collect(),
        })?;
        let ti = find_target(targets, d).ok_or_else(|| PlanError::UnknownTarget {
            given: d.clone(),
            targets: targets.iter().map(|t| t.path.clone()).collect(),
        })?;
        if target[si].is_some() {
            return Err(PlanError::MappedTwice { disk: s.clone() });
        }
        if taken[ti] {
            return Err(PlanError::MappedTwice { disk: d.clone() });
        }
        target[si] = Some(ti);
        taken[ti] = true;
        reason[si] = format!("given with --disk-map {s}={d}");
    }

    let needed: Vec<bool> = src.disks.iter().map(|d| src.disk_used(d)).collect();

    // The original disks, recognised by identity.
    for i in 0..n {
        if target[i].is_some() || !needed[i] {
            continue;
        }
        let d = disk(i);
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => !a.is_empty() && a.eq_ignore_ascii_case(b),
            _ => false,
        };
        let free = || (0..targets.len()).filter(|&t| !taken[t]);
        let found = free()
            .find(|&t| same(&d.wwn, &targets[t].wwn))
            .map(|t| {
                (
                    t,
                    format!(
                        "same WWN {}: the original disk",
                        d.wwn.as_deref().unwrap_or_default()
                    ),
                )
            })
            .or_else(|| {
                // Namespaces of one NVMe controller share its serial: only a unique match counts.
                let hits: Vec<usize> = free()
                    .filter(|&t| same(&d.serial, &targets[t].serial))
                    .collect();
                (hits.len() == 1).then(|| {
                    (
                        hits[0],
                        format!(
                            "same serial number {}: the original disk",
                            d.serial.as_deref().unwrap_or_default()
                        ),
                    )
                })
            })
            .or_else(|| {
                let file = d.backing_file.as_ref()?;
                free()
                    .find(|&t| {
                        targets[t].path == *file || targets[t].backing_file.as_ref() == Some(file)
                    })
                    .map(|t| (t, format!("same image file {file}: the original disk")))
            });
        if let Some((t, why)) = found {
            target[i] = Some(t);
            taken[t] = true;
            reason[i] = why;
        }
    }

    // Enough targets left for the rest? If not, a degraded plan may leave out mirrors.
    let remaining: Vec<usize> = (0..n)
        .filter(|&i| needed[i] && target[i].is_none())
        .collect();
    let free_count = taken.iter().filter(|t| !**t).count();
    let mut dropped = BTreeSet::new();
    if remaining.len() > free_count {
        let k = remaining.len() - free_count;
        let drops = choose_drops(src, &remaining, k);
        let names = |list: &[usize]| -> String {
            list.iter()
                .map(|&i| disk(i).name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all_needed: Vec<usize> = (0..n).filter(|&i| needed[i]).collect();
        let given = if targets.len() == 1 {
            "1 target disk was given".to_string()
        } else {
            format!("{} target disks were given", targets.len())
        };
        let mut message = format!(
            "not enough target disks: the system's data is on {} disks ({}) and {given} ({})",
            all_needed.len(),
            names(&all_needed),
            targets
                .iter()
                .map(|t| t.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match drops {
            Some(list) if opts.allow_degraded => {
                for (i, arrays) in list {
                    reason[i] = format!(
                        "left out (--allow-degraded): it holds only RAID members ({}) whose \
                         other members are on mapped disks; those arrays are created degraded",
                        arrays.join(", ")
                    );
                    dropped.insert(i);
                }
            }
            Some(list) => {
                let which: Vec<usize> = list.iter().map(|(i, _)| *i).collect();
                let arrays: BTreeSet<&String> = list.iter().flat_map(|(_, a)| a).collect();
                let arrays: Vec<&str> = arrays.into_iter().map(String::as_str).collect();
                let _ = write!(
                    message,
                    "\n{} only RAID members ({}) whose other members are on other disks: a \
                     degraded plan could leave {} out and create those arrays with a member \
                     missing\nhint: give another disk with --target (an image file will do), or \
                     accept degraded arrays with --allow-degraded",
                    if which.len() == 1 {
                        format!("{} holds", names(&which))
                    } else {
                        format!("{} hold", names(&which))
                    },
                    arrays.join(", "),
                    if which.len() == 1 { "it" } else { "them" },
                );
                return Err(PlanError::NotEnoughDisks { message });
            }
            None => {
                message.push_str(
                    "\nhint: give more disks with --target (an image file will do); only disks \
                     holding nothing but RAID mirrors can be left out (--allow-degraded)",
                );
                return Err(PlanError::NotEnoughDisks { message });
            }
        }
    }

    // Best fit, largest source first.
    let mut order: Vec<usize> = remaining
        .into_iter()
        .filter(|i| !dropped.contains(i))
        .collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(disk(i).size_bytes), i));
    for i in order {
        let kind = src.disks[i].kind;
        let need = mins[i];
        let free: Vec<usize> = (0..targets.len()).filter(|&t| !taken[t]).collect();
        let fits = free
            .iter()
            .copied()
            .filter(|&t| targets[t].size_bytes >= need)
            .min_by_key(|&t| (!targets[t].kind.same_as(kind), targets[t].size_bytes, t));
        let (t, why) = if let Some(t) = fits {
            let same = targets[t].kind.same_as(kind);
            let kind_note = if same {
                format!(", of the same kind ({kind})")
            } else if free.iter().any(|&x| targets[x].kind.same_as(kind)) {
                format!(" (the {kind} disks left are too small)")
            } else {
                format!(" (no {kind} disk left)")
            };
            (
                t,
                format!(
                    "best fit: its layout needs at least {}; {} is the smallest remaining disk \
                     that holds it{kind_note}",
                    human(need),
                    targets[t].path
                ),
            )
        } else {
            let Some(t) = free
                .iter()
                .copied()
                .max_by_key(|&t| (targets[t].size_bytes, std::cmp::Reverse(t)))
            else {
                unreachable!("there are as many free targets as source disks left");
            };
            (
                t,
                format!(
                    "no remaining disk holds its minimum layout of {}; the largest left, {}, is \
                     tried",
                    human(need),
                    targets[t].path
                ),
            )
        };
        target[i] = Some(t);
        taken[t] = true;
        reason[i] = why;
    }

    for i in 0..n {
        if target[i].is_none() && !dropped.contains(&i) {
            let d = disk(i);
            reason[i] = if src.live && d.transport.as_deref() == Some("loop") {
                "not rebuilt: a loop device of the running system (an attached image), and \
                 nothing the system mounts is on it"
                    .into()
            } else {
                "not rebuilt: nothing the system mounts or swaps to is on it".into()
            };
        }
    }
    let unused = (0..targets.len())
        .filter(|&t| !taken[t])
        .map(|t| (t, "not needed: left untouched".to_string()))
        .collect();
    Ok(DiskMap {
        target,
        reason,
        dropped,
        unused,
    })
}

/// The source disk a `--disk-map` source names: kernel name, device path, profile id, WWN
/// or serial.
fn find_source(src: &Source, s: &str) -> Option<usize> {
    let s = s.trim();
    src.disks.iter().position(|x| {
        let d = &src.st.disks[x.idx];
        d.name == s
            || x.path == s
            || d.id == s
            || d.wwn.as_deref().is_some_and(|w| w.eq_ignore_ascii_case(s))
            || d.serial.as_deref() == Some(s)
    })
}

/// The target a `--disk-map` destination names: its path or its kernel device path.
fn find_target(targets: &[TargetDisk], d: &str) -> Option<usize> {
    let d = d.trim();
    targets.iter().position(|t| {
        t.path == d || t.dev_path().as_deref() == Some(d) || t.name.as_deref() == Some(d)
    })
}

/// Picks `k` of the `candidates` (source disk positions) to leave out of a degraded plan,
/// latest first, with the arrays each one holds members of; `None` when fewer than `k` can go.
fn choose_drops(src: &Source, candidates: &[usize], k: usize) -> Option<Vec<(usize, Vec<String>)>> {
    let mut chosen: Vec<(usize, Vec<String>)> = Vec::new();
    for &c in candidates.iter().rev() {
        if chosen.len() == k {
            break;
        }
        let mut gone: Vec<usize> = chosen.iter().map(|(i, _)| *i).collect();
        gone.push(c);
        if let Some(arrays) = droppable(src, c, &gone) {
            chosen.push((c, arrays));
        }
    }
    (chosen.len() == k).then_some(chosen)
}

/// Whether source disk `c` can be left out when the disks in `gone` (which include it) are:
/// everything on it must be a member of an array that keeps enough members, a BIOS boot
/// partition, or an EFI system partition nothing mounts. Returns the arrays it is in.
fn droppable(src: &Source, c: usize, gone: &[usize]) -> Option<Vec<String>> {
    let st = src.st;
    let d = &src.disks[c];
    let on_gone = |path: &str| {
        gone.iter().any(|&g| {
            src.disks[g].path == path || src.disks[g].parts.iter().any(|p| p.path == path)
        })
    };
    let mut items: Vec<(String, Content, Special)> = d
        .parts
        .iter()
        .map(|p| (p.path.clone(), p.content, p.special))
        .collect();
    if items.is_empty() {
        items.push((d.path.clone(), d.whole, Special::None));
    }
    let mut arrays = Vec::new();
    for (path, content, special) in items {
        match content {
            Content::Md(m) => {
                let md = &st.md_arrays[m];
                let lost = md
                    .devices
                    .iter()
                    .filter(|x| !member_is_spare(x) && on_gone(&member_path(x)))
                    .count() as u64;
                if lost > max_missing(&md.level, raid_devices(md)) {
                    return None;
                }
                if !arrays.contains(&md.name) {
                    arrays.push(md.name.clone());
                }
            }
            Content::Extended => {}
            _ if special == Special::BiosBoot => {}
            _ if special == Special::Esp && !src.is_used(&path) => {}
            _ => return None,
        }
    }
    (!arrays.is_empty()).then_some(arrays)
}
