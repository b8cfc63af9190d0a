//! Damaged, truncated and foreign files given to `keel show` and `keel diff`: a clear error
//! naming the file and exit code 2, never a panic and never partial output.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{keel, tiny_root, Keel, Run};

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be reproduced.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[track_caller]
fn assert_clean_error(run: &Run, bad: &Path) {
    assert_eq!(
        run.code,
        Some(2),
        "`{}` must exit 2; stderr:\n{}",
        run.what,
        run.stderr
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "`{}` printed no `error:` line:\n{}",
        run.what,
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "`{}` panicked:\n{}",
        run.what,
        run.stderr
    );
    let name = bad.file_name().unwrap().to_string_lossy();
    assert!(
        run.stderr.contains(name.as_ref()),
        "`{}`: the error does not say which file is bad ({name}):\n{}",
        run.what,
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "`{}` printed output despite failing: {}",
        run.what,
        run.stdout_str()
    );
}

/// A valid profile of a small fake root, in both forms.
fn valid_profiles(dir: &Path) -> (PathBuf, PathBuf) {
    let root = tiny_root();
    let keel_state = Keel::new();
    let bin = dir.join("good.keel");
    keel_state.capture_file(root.path(), &bin, &[]);
    let json = dir.join("good.json");
    fs::write(
        &json,
        keel_state
            .capture(root.path(), &["--format", "json"])
            .stdout,
    )
    .unwrap();
    (bin, json)
}

#[test]
fn damaged_and_foreign_files_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (good, good_json) = valid_profiles(dir.path());
    let bytes = fs::read(&good).unwrap();
    assert!(
        bytes.len() > 100,
        "a profile of {} bytes is implausibly small",
        bytes.len()
    );
    keel(&["show", good.to_str().unwrap()]).expect_ok();
    keel(&["show", good_json.to_str().unwrap()]).expect_ok();

    let mid = bytes.len() / 2;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.keel", Vec::new()),
        ("header-only.keel", bytes[..20].to_vec()),
        ("half.keel", bytes[..mid].to_vec()),
        ("last-byte-missing.keel", bytes[..bytes.len() - 1].to_vec()),
        ("random.keel", noise(7, 4096)),
        (
            "magic-then-noise.keel",
            [&bytes[..12], &noise(11, 4096)[..]].concat(),
        ),
        ("not-json.json", b"{ this is not json".to_vec()),
        (
            "other-json.json",
            br#"{"format": "something-else", "version": 1}"#.to_vec(),
        ),
        ("array.json", b"[1, 2, 3]".to_vec()),
    ];
    let mut flipped = bytes.clone();
    flipped[mid] ^= 0x40;
    cases.push(("flipped-middle.keel", flipped));
    let mut wrong_hash = bytes.clone();
    wrong_hash[20] ^= 0x01;
    cases.push(("flipped-header-hash.keel", wrong_hash));
    let mut future = bytes.clone();
    future[8..10].copy_from_slice(&999u16.to_le_bytes());
    cases.push(("future-version.keel", future));
    let mut extra = bytes.clone();
    extra.extend_from_slice(b"trailing garbage");
    cases.push(("trailing-garbage.keel", extra));
    // A JSON profile whose content was edited after capture no longer matches its hash.
    let mut doc: Value = serde_json::from_slice(&fs::read(&good_json).unwrap()).unwrap();
    doc["profile"]["packages"]["packages"][0]["version"] = Value::from("9.9-tampered");
    cases.push(("tampered.json", serde_json::to_vec(&doc).unwrap()));
    let json_text = fs::read(&good_json).unwrap();
    cases.push(("truncated.json", json_text[..json_text.len() / 2].to_vec()));

    let mut files: Vec<PathBuf> = cases
        .into_iter()
        .map(|(name, data)| {
            let p = dir.path().join(name);
            fs::write(&p, data).unwrap();
            p
        })
        .collect();
    let passwd = dir.path().join("passwd");
    fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n",
    )
    .unwrap();
    files.push(passwd);
    if Path::new("/etc/passwd").is_file() {
        files.push(PathBuf::from("/etc/passwd"));
    }
    files.push(dir.path().join("does-not-exist.keel"));
    let a_dir = dir.path().join("a-directory.keel");
    fs::create_dir(&a_dir).unwrap();
    files.push(a_dir);

    let g = good.to_str().unwrap();
    for bad in &files {
        let b = bad.to_str().unwrap();
        assert_clean_error(&keel(&["show", b]), bad);
        assert_clean_error(&keel(&["show", b, "--format", "json"]), bad);
        assert_clean_error(&keel(&["diff", b, g]), bad);
        assert_clean_error(&keel(&["diff", g, b, "--format", "json"]), bad);
    }
}

#[test]
fn no_damaged_byte_yields_a_different_profile() {
    // The file is hashed and checksummed end to end: a damaged byte is refused, or (where it
    // carries no information, as some compression header bits) changes nothing at all.
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = valid_profiles(dir.path());
    let bytes = fs::read(&good).unwrap();
    let original = keel(&["show", good.to_str().unwrap(), "--format", "json"]);
    original.expect_ok();
    let step = (bytes.len() / 32).max(1);
    let positions = (0..64.min(bytes.len())).chain((64..bytes.len()).step_by(step));
    let mut refused = 0;
    for at in positions {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let bad = dir.path().join(format!("flip-{at}.keel"));
        fs::write(&bad, b).unwrap();
        let run = keel(&["show", bad.to_str().unwrap(), "--format", "json"]);
        if run.code == Some(0) {
            assert_eq!(
                run.stdout_str(),
                original.stdout_str(),
                "a damaged byte at offset {at} was read as a different profile"
            );
        } else {
            assert_clean_error(&run, &bad);
            refused += 1;
        }
    }
    assert!(refused > 64, "only {refused} damaged files were refused");
}

#[test]
fn show_and_capture_refuse_bad_arguments_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = valid_profiles(dir.path());
    let g = good.to_str().unwrap();

    let run = keel(&["show", g, "--section", "no-such-section"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no-such-section"), "{}", run.stderr);

    let state = Keel::new();
    let st = state.state_dir().to_str().unwrap();
    let missing = dir.path().join("no-such-root");
    let no_etc = tempfile::tempdir().unwrap();
    let root = tiny_root();
    let r = root.path().to_str().unwrap();
    let bad_out = dir.path().join("no-such-dir/out.keel");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "capture",
            "--root",
            missing.to_str().unwrap(),
            "--state-dir",
            st,
            "--format",
            "json",
        ],
        vec![
            "capture",
            "--root",
            no_etc.path().to_str().unwrap(),
            "--state-dir",
            st,
            "--format",
            "json",
        ],
        vec![
            "capture",
            "--root",
            r,
            "--state-dir",
            st,
            "--format",
            "json",
            "--recovery-key",
            "age1notakey",
        ],
        vec![
            "capture",
            "--root",
            r,
            "--state-dir",
            st,
            "--output",
            bad_out.to_str().unwrap(),
        ],
        vec![
            "capture",
            "--root",
            r,
            "--state-dir",
            st,
            "--format",
            "json",
            "--previous",
            "/etc/passwd",
        ],
    ];
    for args in cases {
        let run = keel(&args);
        assert_eq!(
            run.code,
            Some(2),
            "`{}` must exit 2: {}",
            run.what,
            run.stderr
        );
        assert!(
            run.stderr.lines().any(|l| l.starts_with("error:")),
            "`{}`: {}",
            run.what,
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "`{}`: {}",
            run.what,
            run.stderr
        );
        assert!(
            run.stdout.is_empty(),
            "`{}` printed {}",
            run.what,
            run.stdout_str()
        );
    }
}
