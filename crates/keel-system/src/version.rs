//! Debian version ordering, as dpkg defines it (`deb-version(7)`): epoch, then upstream
//! version, then revision, each compared in alternating runs of non-digits (where `~` sorts
//! before everything, even the end) and digits (compared as numbers).

use std::cmp::Ordering;

/// Compares two Debian versions the way `dpkg --compare-versions` does.
///
/// ```
/// use std::cmp::Ordering;
/// use keel_system::compare_versions;
///
/// assert_eq!(compare_versions("1:9.2p1-2+deb12u5", "1:9.2p1-2+deb12u1"), Ordering::Greater);
/// assert_eq!(compare_versions("1.0~rc1", "1.0"), Ordering::Less);
/// assert_eq!(compare_versions("1:0.1", "2.0"), Ordering::Greater);
/// ```
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// `(epoch, upstream, revision)`.
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(0), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// The sort weight of a non-digit character: `~` first, then the end of the part, then
/// letters, then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        loop {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (oa, ob) = (order(ca), order(cb));
            if oa != ob {
                return oa.cmp(&ob);
            }
            i += usize::from(ca.is_some());
            j += usize::from(cb.is_some());
        }
        // Digit run, compared as numbers without overflow: skip leading zeros, then the
        // longer run is larger, then the first differing digit decides.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let si = i;
        let sj = j;
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn dpkg_ordering() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("1.0-1", "1.0-2", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0a", "1.0", Greater),
            ("1.0+deb12u1", "1.0", Greater),
            ("1:1.0", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
            ("1.10", "1.9", Greater),
            ("1.001", "1.1", Equal),
            ("3.0pl1-162", "3.0pl1-161", Greater),
            ("a", "b", Less),
            ("1.2.3-1ubuntu1", "1.2.3-1", Greater),
            ("99999999999999999999999", "1", Greater),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
