//! Encode → decode returns exactly what was encoded, in both forms.

use keel_profile::{diff, ChangeKind, DiffOptions, ProfileFile, MAGIC};
use proptest::prelude::*;

use crate::gen::profile_file;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn binary_round_trip(file in profile_file()) {
        let bytes = file.encode().expect("encode");
        prop_assert_eq!(&bytes[..8], &MAGIC[..]);
        let back = ProfileFile::decode(&bytes).expect("decode what was just encoded");
        prop_assert_eq!(&back, &file);
        prop_assert_eq!(back.hash().unwrap(), file.hash().unwrap());
        // Equal profiles encode to equal bytes: the file is content-addressable.
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn json_round_trip(file in profile_file()) {
        let json = file.to_json().expect("to_json");
        let doc: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        prop_assert_eq!(&doc["format"], "keel-profile");
        let hash = file.hash().unwrap().to_string();
        prop_assert_eq!(doc["hash"].as_str(), Some(hash.as_str()));
        let back = ProfileFile::decode(json.as_bytes()).expect("decode the JSON form");
        prop_assert_eq!(&back, &file);
        // Canonical: the same profile always prints the same document.
        prop_assert_eq!(back.to_json().unwrap(), json);
    }

    #[test]
    fn diff_reports_exactly_the_edit(file in profile_file(), version in "[0-9][0-9a-z.~+-]{0,10}") {
        let p = &file.profile;
        prop_assert!(diff(p, p, DiffOptions::default()).is_empty());
        let mut edited = file.clone();
        edited.profile.normalize();
        let before = edited.profile.clone();
        let Some(pkg) = edited.profile.packages.packages.first_mut() else { return Ok(()) };
        // Two packages with the same key are one row to the diff; skip such draws.
        let key = if pkg.arch.is_empty() { pkg.name.clone() } else { format!("{}:{}", pkg.name, pkg.arch) };
        prop_assume!(before.packages.packages.iter().filter(|q| {
            (if q.arch.is_empty() { q.name.clone() } else { format!("{}:{}", q.name, q.arch) }) == key
        }).count() == 1);
        prop_assume!(pkg.version != version);
        pkg.version.clone_from(&version);
        let changes = diff(&before, &edited.profile, DiffOptions::default());
        prop_assert_eq!(changes.len(), 1, "{:?}", changes);
        prop_assert_eq!(changes[0].kind, ChangeKind::Changed);
        prop_assert_eq!(&changes[0].key, &key);
        prop_assert_eq!(changes[0].field.as_deref(), Some("version"));
        prop_assert_eq!(&changes[0].new, &serde_json::Value::from(version));
    }
}
