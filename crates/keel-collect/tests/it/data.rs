//! Data paths declared in `/etc/keel/data.toml` reach the profile; their backup password is
//! sealed like any secret; a wrong entry is a warning, not a failed capture.

use std::fs;

use keel_profile::{CollectorState, DataPath, FileStatus};

#[test]
fn data_paths_are_read_and_their_password_is_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/keel")).unwrap();
    fs::write(
        root.join("etc/keel/data.toml"),
        "[[data]]\npath = \"/srv/\"\nbackup = \"restic\"\nrepository = \"/backup/restic\"\n\
         password_file = \"/etc/keel/restic-password\"\n\n\
         [[data]]\npath = \"/var/lib/app\"\nbackup = \"restic\"\n",
    )
    .unwrap();
    fs::write(root.join("etc/keel/restic-password"), "correct horse\n").unwrap();

    let identity = age::x25519::Identity::generate();
    let mut opts = keel_collect::Options::new(&root);
    opts.state_dir = tmp.path().join("state");
    opts.recovery_recipient = Some(identity.to_public().to_string());
    let file = keel_collect::capture(&opts).unwrap();

    assert_eq!(
        file.profile.files.data_paths,
        [DataPath {
            path: "/srv".into(),
            backup: "restic".into(),
            repository: Some("/backup/restic".into()),
            password_file: Some("/etc/keel/restic-password".into()),
            restore_command: None,
        }]
    );
    let files = file
        .profile
        .collectors
        .iter()
        .find(|c| c.name == "files")
        .expect("files collector");
    assert_eq!(files.state, CollectorState::Ok, "{files:?}");
    let warnings = files.message.clone().unwrap_or_default();
    assert!(
        warnings.contains("/var/lib/app: restic needs a repository"),
        "{warnings}"
    );
    let password = file
        .profile
        .files
        .files
        .iter()
        .find(|f| f.path == "/etc/keel/restic-password")
        .expect("password file recorded");
    assert_eq!(password.status, FileStatus::Secret);
    assert!(
        !file
            .blobs
            .values()
            .any(|b| b.0.windows(13).any(|w| w == b"correct horse")),
        "the password is kept in clear"
    );
}
