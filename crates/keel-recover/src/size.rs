//! Byte sizes: units, alignment and how sizes are shown to people.

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte: the alignment of every partition the planner places.
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte.
pub const GIB: u64 = 1024 * MIB;
/// One tebibyte.
pub const TIB: u64 = 1024 * GIB;

/// `x` rounded up to a multiple of `a` (`a` > 0).
pub(crate) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// `x` rounded down to a multiple of `a` (`a` > 0).
pub(crate) fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

/// `x * num / den` without overflow, rounded down; `x` when `den` is 0.
pub(crate) fn mul_div(x: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return x;
    }
    let v = u128::from(x) * u128::from(num) / u128::from(den);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A size for people, in binary units with one decimal: `512 B`, `1.0 MiB`, `20.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "PiB"),
        (TIB, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (KIB, "KiB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit {
            // Tenths, rounded down, so a size is never shown larger than it is.
            let tenths = u128::from(bytes) * 10 / u128::from(unit);
            return format!("{}.{} {name}", tenths / 10, tenths % 10);
        }
    }
    format!("{bytes} B")
}

/// A ratio for people: `×1.50`.
pub(crate) fn factor(num: u64, den: u64) -> String {
    if den == 0 {
        return "×1.00".into();
    }
    format!("×{:.2}", num as f64 / den as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(align_up(1, MIB), MIB);
        assert_eq!(align_up(MIB, MIB), MIB);
        assert_eq!(align_up(0, MIB), 0);
        assert_eq!(align_down(MIB + 1, MIB), MIB);
        assert_eq!(mul_div(u64::MAX, 2, 4), u64::MAX / 2);
        assert_eq!(mul_div(7, 1, 0), 7);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(MIB), "1.0 MiB");
        assert_eq!(human(20 * GIB + GIB / 2), "20.5 GiB");
        // Never rounded up: 1 byte short of 2 GiB is not "2.0 GiB".
        assert_eq!(human(2 * GIB - 1), "1.9 GiB");
        assert_eq!(human(3 * TIB), "3.0 TiB");
    }
}
