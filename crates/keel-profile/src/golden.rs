//! Golden files: one profile file per format version ever written, decoded by every build.
//!
//! `KEEL_BLESS=1 cargo test -p keel-profile golden` writes the current version's file; files of
//! past versions are never rewritten.

use std::path::PathBuf;

use crate::*;

fn fixture(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/profile-v{version}.keel"))
}

/// The profile every v1 golden file holds: a little of every section.
fn sample_v1() -> ProfileFile {
    let mut f = ProfileFile::default();
    let content = f.add_blob(b"PermitRootLogin no\nPasswordAuthentication no\n".to_vec());
    let sealed = f.add_blob(b"age-encryption.org/v1 (sample ciphertext)".to_vec());
    let p = &mut f.profile;
    p.meta = Meta {
        schema: 1,
        agent_version: "0.1.0".into(),
        hostname: "web1".into(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        root: "/".into(),
        live: true,
        started_at_ms: 1_795_600_000_000,
        duration_ms: 180,
        previous: Some(Hash::of(b"previous profile")),
        recovery_recipient: Some("age1sample".into()),
    };
    p.collectors.push(Collector {
        name: "packages".into(),
        state: CollectorState::Ok,
        duration_us: 4200,
        message: None,
        tables: vec!["packages.packages".into()],
    });
    p.collectors.push(Collector {
        name: "network.live".into(),
        state: CollectorState::Timeout,
        duration_us: 20_000_000,
        message: Some("ip did not finish".into()),
        tables: vec!["network.addresses".into()],
    });
    p.hardware.nics.push(Nic {
        mac: "52:54:00:12:34:56".into(),
        name: "ens3".into(),
        driver: Some("virtio_net".into()),
        ..Nic::default()
    });
    p.hardware.firmware.push(Firmware {
        mode: "uefi".into(),
        secure_boot: Some(false),
        tpm: false,
    });
    p.storage.disks.push(Disk {
        id: "wwn-0x5000c500a1b2c3d4".into(),
        name: "sda".into(),
        size_bytes: 64 << 30,
        pttype: Some("gpt".into()),
        ..Disk::default()
    });
    p.storage.partitions.push(Partition {
        disk: "wwn-0x5000c500a1b2c3d4".into(),
        number: 1,
        start: 2048,
        size_bytes: 512 << 20,
        part_type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into(),
        flags: vec![],
        ..Partition::default()
    });
    p.storage.filesystems.push(Filesystem {
        uuid: Some("5e2d-1a0c".into()),
        device: "/dev/sda1".into(),
        fstype: "vfat".into(),
        label: Some("EFI".into()),
        size_bytes: None,
    });
    p.storage.fstab.push(FstabEntry {
        spec: "UUID=5e2d-1a0c".into(),
        mountpoint: "/boot/efi".into(),
        fstype: "vfat".into(),
        options: "umask=0077".into(),
        dump: 0,
        pass: 1,
    });
    p.os.release.push(OsRelease {
        id: "debian".into(),
        version_id: Some("12".into()),
        codename: Some("bookworm".into()),
        pretty_name: None,
        arch: Some("amd64".into()),
    });
    p.packages.packages.push(Package {
        name: "openssh-server".into(),
        arch: "amd64".into(),
        version: "1:9.2p1-2+deb12u3".into(),
        manager: "dpkg".into(),
        status: "installed".into(),
        auto: false,
        hold: true,
        source: Some("openssh".into()),
        priority: Some("optional".into()),
    });
    p.users.users.push(User {
        name: "alice".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/alice".into(),
        shell: "/bin/bash".into(),
        password_status: "set".into(),
        hash_alg: Some("yescrypt".into()),
        password_fingerprint: Some(Hash::of(b"fp")),
        ..User::default()
    });
    p.users.groups.push(Group {
        name: "sudo".into(),
        gid: 27,
        members: vec!["alice".into()],
    });
    p.security.sshd.push(SshdSetting {
        name: "permitrootlogin".into(),
        value: "no".into(),
        file: "/etc/ssh/sshd_config".into(),
    });
    p.security.secrets.push(Secret {
        path: "/etc/shadow".into(),
        fingerprint: Hash::of(b"shadow"),
        ciphertext: Some(sealed),
        withheld: false,
        mode: 0o640,
        uid: 0,
        gid: 42,
    });
    p.network.listening.push(Listener {
        protocol: "tcp".into(),
        address: "0.0.0.0".into(),
        port: 22,
        process: Some("sshd".into()),
        unit: Some("ssh.service".into()),
    });
    p.services.units.push(Unit {
        name: "ssh.service".into(),
        unit_file_state: "enabled".into(),
        fragment_path: Some("/lib/systemd/system/ssh.service".into()),
        drop_ins: vec![],
        active_state: Some("active".into()),
    });
    p.schedules.cron.push(CronJob {
        id: "/etc/cron.d/backup: /usr/local/bin/backup".into(),
        source: "/etc/cron.d/backup".into(),
        schedule: "30 2 * * *".into(),
        user: Some("root".into()),
        command: "/usr/local/bin/backup".into(),
    });
    p.kernel.sysctl.push(Sysctl {
        name: "net.ipv4.ip_forward".into(),
        value: "1".into(),
        file: "/etc/sysctl.d/10-forward.conf".into(),
    });
    p.files.files.push(File {
        path: "/etc/ssh/sshd_config".into(),
        kind: "file".into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 45,
        hash: Some(content),
        status: FileStatus::Modified,
        package: Some("openssh-server".into()),
        content: true,
        target: None,
    });
    f
}

#[test]
fn golden_v1_decodes() {
    let path = fixture(1);
    if std::env::var_os("KEEL_BLESS").is_some() && FORMAT_VERSION == 1 {
        std::fs::write(&path, sample_v1().encode().unwrap()).unwrap();
    }
    let data = std::fs::read(&path).expect("golden file profile-v1.keel is missing");
    let decoded = ProfileFile::decode(&data).expect("a v1 profile must stay decodable");
    assert_eq!(decoded, sample_v1());
}
