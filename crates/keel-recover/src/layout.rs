//! Scaling a set of partitions or logical volumes into the space a new disk or volume group
//! has, never below what each one needs.

use crate::size::{align_down, align_up, mul_div};

/// One partition or volume to size.
#[derive(Debug, Clone)]
pub(crate) struct Scale {
    /// Its size on the source.
    pub orig: u64,
    /// The least it may have.
    pub min: u64,
    /// Kept at its size (rounded up to the alignment).
    pub fixed: bool,
    /// The most it may have (an array member matched to its smallest sibling).
    pub cap: Option<u64>,
}

/// How a size came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Fixed,
    Scaled,
    Raised,
    Reduced,
    Capped,
}

/// The result of [`scale`].
#[derive(Debug, Clone)]
pub(crate) struct Scaled {
    /// Size and how it came about, per item.
    pub sizes: Vec<(u64, How)>,
    /// The scale factor as a ratio: new room / old room for the scaled items.
    pub factor: (u64, u64),
}

/// Sizes `items` to fill `room_new` bytes as they filled `room_old`: fixed items keep their
/// size, the others scale in proportion, are raised to their minimum where scaling leaves them
/// short, and give back what is over their minimum when the total does not fit. `None` when
/// even the minimums do not fit.
pub(crate) fn scale(items: &[Scale], room_new: u64, room_old: u64, align: u64) -> Option<Scaled> {
    let min_of = |s: &Scale| align_up(s.min.max(1), align);
    let fixed_new: u64 = items
        .iter()
        .filter(|s| s.fixed)
        .map(|s| align_up(s.orig, align))
        .sum();
    let min_total: u64 = items.iter().filter(|s| !s.fixed).map(min_of).sum();
    if fixed_new + min_total > room_new {
        return None;
    }
    let fixed_old: u64 = items.iter().filter(|s| s.fixed).map(|s| s.orig).sum();
    let scaled_old: u64 = items.iter().filter(|s| !s.fixed).map(|s| s.orig).sum();
    let avail = room_new - fixed_new;
    let old_avail = room_old.saturating_sub(fixed_old).max(scaled_old).max(1);
    let mut sizes: Vec<(u64, How)> = items
        .iter()
        .map(|s| {
            if s.fixed {
                return (align_up(s.orig, align), How::Fixed);
            }
            let mut size = align_down(mul_div(s.orig, avail, old_avail), align);
            let mut how = How::Scaled;
            if let Some(c) = s.cap {
                if size > c {
                    size = align_down(c, align);
                    how = How::Capped;
                }
            }
            if size < min_of(s) {
                size = min_of(s);
                how = How::Raised;
            }
            (size, how)
        })
        .collect();
    let total: u64 = sizes.iter().map(|(s, _)| s).sum();
    if total > room_new {
        let slack = |i: usize, sizes: &[(u64, How)]| {
            if items[i].fixed {
                0
            } else {
                sizes[i].0 - min_of(&items[i])
            }
        };
        let deficit = total - room_new;
        let slack_total: u64 = (0..items.len()).map(|i| slack(i, &sizes)).sum();
        // Each gives back in proportion to what it has over its minimum…
        let mut given = 0;
        for i in 0..items.len() {
            let cut = align_up(mul_div(deficit, slack(i, &sizes), slack_total), align)
                .min(slack(i, &sizes));
            if cut > 0 {
                sizes[i] = (sizes[i].0 - cut, How::Reduced);
                given += cut;
            }
        }
        // …and rounding is settled by the largest.
        while given < deficit {
            let i = (0..items.len()).max_by_key(|&i| slack(i, &sizes))?;
            let cut = align_up(deficit - given, align).min(slack(i, &sizes));
            if cut == 0 {
                return None;
            }
            sizes[i] = (sizes[i].0 - cut, How::Reduced);
            given += cut;
        }
    }
    Some(Scaled {
        sizes,
        factor: (avail, old_avail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::{GIB, MIB};

    fn item(orig: u64, min: u64, fixed: bool) -> Scale {
        Scale {
            orig,
            min,
            fixed,
            cap: None,
        }
    }

    #[test]
    fn scales_in_proportion() {
        let items = [
            item(MIB, MIB, true),
            item(10 * GIB, GIB, false),
            item(30 * GIB, GIB, false),
        ];
        let s = scale(&items, 81 * GIB + MIB, 40 * GIB + MIB, MIB).unwrap();
        let sizes: Vec<u64> = s.sizes.iter().map(|x| x.0).collect();
        assert_eq!(sizes, [MIB, 20 * GIB + 256 * MIB, 60 * GIB + 768 * MIB]);
        assert!(s.sizes[1..].iter().all(|x| x.1 == How::Scaled));
    }

    #[test]
    fn raises_to_the_minimum_and_takes_it_from_the_others() {
        let items = [item(10 * GIB, 8 * GIB, false), item(10 * GIB, GIB, false)];
        let s = scale(&items, 10 * GIB, 20 * GIB, MIB).unwrap();
        assert_eq!(s.sizes[0], (8 * GIB, How::Raised));
        assert_eq!(s.sizes[1], (2 * GIB, How::Reduced));
        let total: u64 = s.sizes.iter().map(|x| x.0).sum();
        assert!(total <= 10 * GIB);
    }

    #[test]
    fn caps_and_refuses() {
        let mut a = item(10 * GIB, GIB, false);
        a.cap = Some(12 * GIB);
        let s = scale(&[a], 40 * GIB, 20 * GIB, MIB).unwrap();
        assert_eq!(s.sizes[0], (12 * GIB, How::Capped));
        assert!(scale(
            &[item(MIB, MIB, true), item(GIB, 5 * GIB, false)],
            5 * GIB,
            5 * GIB,
            MIB
        )
        .is_none());
    }
}
