//! Alert fingerprints equal Alertmanager's (Prometheus' `LabelSet.Fingerprint()`).

use keel_notify::{fingerprint, Labels};

use crate::labels;

/// An independent FNV-1a (64-bit) over the serialized label set: every name and value followed
/// by 0xff, names in byte-wise order. Written from the algorithm's definition, not from the
/// library's code.
fn reference(pairs: &[(&str, &str)]) -> String {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut bytes = Vec::new();
    for (name, value) in sorted {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0xff);
    }
    let hash = bytes
        .iter()
        .fold(14_695_981_039_346_656_037_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(1_099_511_628_211)
        });
    format!("{hash:016x}")
}

#[test]
fn prometheus_own_test_vectors() {
    // From prometheus/common model/signature_test.go (TestMetricToFingerprint), in decimal
    // there: 14695981039346656037 for the empty set, 5799056148416392346 for this one.
    assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
    assert_eq!(
        fingerprint(&labels(&[
            ("name", "garland, briggs"),
            ("fear", "love is not enough"),
        ])),
        format!("{:016x}", 5_799_056_148_416_392_346_u64)
    );
}

#[test]
fn fingerprints_match_an_independent_fnv1a() {
    let sets: &[&[(&str, &str)]] = &[
        &[("alertname", "PackageAdded"), ("host", "web1")],
        &[
            ("severity", "critical"),
            ("alertname", "NewRootAccount"),
            ("host", "db1"),
            ("rule_id", "new-root-account"),
            ("change_kind", "added"),
        ],
        &[
            ("host", "wéb1"),
            ("alertname", "Ünïcode"),
            ("Z", "upper sorts first"),
        ],
        &[("empty", "")],
    ];
    for set in sets {
        let expected = reference(set);
        assert_eq!(fingerprint(&labels(set)), expected, "{set:?}");
        assert_eq!(expected.len(), 16);
    }
}

#[test]
fn the_separator_keeps_names_and_values_apart() {
    assert_ne!(
        fingerprint(&labels(&[("a", "bc")])),
        fingerprint(&labels(&[("ab", "c")]))
    );
    assert_ne!(
        fingerprint(&labels(&[("a", "b"), ("c", "d")])),
        fingerprint(&labels(&[("a", "b\u{ff}c"), ("", "d")]))
    );
}
