//! Strategies for generated profiles.

use keel_profile::{
    Collector, CollectorState, File, FileStatus, Group, Hash, Package, ProfileFile, Secret, User,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;

fn text() -> impl Strategy<Value = String> {
    // Mostly plausible names, sometimes anything at all (control characters, non-ASCII).
    prop_oneof![3 => "[a-z0-9][a-z0-9+.-]{0,24}", 1 => any::<String>()]
}

fn package() -> impl Strategy<Value = Package> {
    (
        text(),
        select(vec!["amd64", "all", "arm64", ""]),
        "[0-9][0-9a-z.:~+-]{0,15}",
        select(vec!["dpkg", "rpm"]),
        select(vec!["installed", "config-files", "half-configured"]),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(text()),
    )
        .prop_map(
            |(name, arch, version, manager, status, auto, hold, source)| Package {
                name,
                arch: arch.into(),
                version,
                manager: manager.into(),
                status: status.into(),
                auto,
                hold,
                source,
                ..Package::default()
            },
        )
}

const STATUSES: &[FileStatus] = &[
    FileStatus::Pristine,
    FileStatus::Modified,
    FileStatus::Unowned,
    FileStatus::Generated,
    FileStatus::Secret,
    FileStatus::Missing,
    FileStatus::TooLarge,
];

/// A file row and, when its content is kept, the content.
fn file() -> impl Strategy<Value = (File, Option<Vec<u8>>)> {
    (
        "/etc/[a-z0-9._/-]{1,40}",
        select(vec!["file", "dir", "symlink"]),
        0u32..0o10000,
        any::<u32>(),
        any::<u32>(),
        select(STATUSES.to_vec()),
        proptest::option::of(text()),
        prop_oneof![
            vec(any::<u8>(), 0..512),
            text().prop_map(String::into_bytes)
        ],
    )
        .prop_map(|(path, kind, mode, uid, gid, status, package, data)| {
            let keep = matches!(status, FileStatus::Modified | FileStatus::Unowned);
            let row = File {
                path,
                kind: kind.into(),
                mode,
                uid,
                gid,
                size: data.len() as u64,
                hash: (status != FileStatus::Pristine).then(|| Hash::of(&data)),
                status,
                package,
                content: keep,
                target: (kind == "symlink").then(|| "/usr/share/x".to_string()),
            };
            (row, keep.then_some(data))
        })
}

fn user() -> impl Strategy<Value = User> {
    (
        text(),
        any::<u32>(),
        any::<u32>(),
        text(),
        select(vec!["set", "locked", "empty", "no_login", "none"]),
    )
        .prop_map(|(name, uid, gid, gecos, password_status)| User {
            home: format!("/home/{name}"),
            shell: "/bin/sh".into(),
            name,
            uid,
            gid,
            gecos,
            password_status: password_status.into(),
            ..User::default()
        })
}

fn collector() -> impl Strategy<Value = Collector> {
    (
        "[a-z.]{1,16}",
        select(vec![
            CollectorState::Ok,
            CollectorState::Error,
            CollectorState::Timeout,
            CollectorState::NotApplicable,
        ]),
        any::<u64>(),
        proptest::option::of(text()),
    )
        .prop_map(|(name, state, duration_us, message)| Collector {
            tables: vec![format!("{name}.table")],
            name,
            state,
            duration_us,
            message,
        })
}

/// Profiles with generated packages, files (with content blobs), users, groups, secrets
/// (with ciphertext blobs) and collectors.
pub fn profile_file() -> impl Strategy<Value = ProfileFile> {
    (
        vec(package(), 0..16),
        vec(file(), 0..16),
        vec(user(), 0..6),
        vec(collector(), 0..6),
        vec(("/etc/[a-z/]{1,20}", vec(any::<u8>(), 1..64)), 0..4),
        text(),
        any::<i64>(),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(packages, files, users, collectors, secrets, hostname, started, previous)| {
                let mut f = ProfileFile::default();
                f.profile.meta.hostname = hostname;
                f.profile.meta.started_at_ms = started;
                f.profile.meta.previous = previous.map(Hash);
                f.profile.packages.packages = packages;
                f.profile.collectors = collectors;
                for (row, data) in files {
                    if let Some(data) = data {
                        f.add_blob(data);
                    }
                    f.profile.files.files.push(row);
                }
                f.profile.users.groups = users
                    .iter()
                    .map(|u| Group {
                        name: u.name.clone(),
                        gid: u.gid,
                        members: vec![u.name.clone()],
                    })
                    .collect();
                f.profile.users.users = users;
                for (path, ciphertext) in secrets {
                    let address = f.add_blob(ciphertext);
                    f.profile.security.secrets.push(Secret {
                        path,
                        fingerprint: Hash::keyed(&[7; 32], address.0.as_slice()),
                        ciphertext: Some(address),
                        withheld: false,
                        mode: 0o600,
                        uid: 0,
                        gid: 0,
                    });
                }
                f
            },
        )
}

/// One fixed, reasonably rich profile, encoded, for the corruption tests.
pub fn sample() -> ProfileFile {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut f = profile_file()
        .new_tree(&mut runner)
        .expect("generate a profile")
        .current();
    // Make sure every kind of content is present, whatever the generator drew.
    let blob = f.add_blob(b"# edited\nPermitRootLogin no\n".to_vec());
    f.profile.files.files.push(File {
        path: "/etc/ssh/sshd_config".into(),
        kind: "file".into(),
        mode: 0o644,
        size: 28,
        hash: Some(blob),
        status: FileStatus::Modified,
        package: Some("openssh-server".into()),
        content: true,
        ..File::default()
    });
    f.profile.packages.packages.push(Package {
        name: "openssh-server".into(),
        arch: "amd64".into(),
        version: "1:9.2p1-2+deb12u3".into(),
        manager: "dpkg".into(),
        status: "installed".into(),
        ..Package::default()
    });
    f
}
