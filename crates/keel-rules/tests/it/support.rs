//! Profiles built in code, and one-call evaluation.

use keel_profile::{
    diff, Collector, CollectorState, DiffOptions, Disk, Listener, Nic, Package, PciDevice, Profile,
    SshdSetting, Unit, User,
};
use keel_rules::{builtin_rules, rules_from_toml, Evaluation, HostInfo, Input, RuleSet};

pub fn pkg(name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        arch: "amd64".into(),
        version: version.into(),
        manager: "dpkg".into(),
        status: "installed".into(),
        ..Package::default()
    }
}

pub fn user(name: &str, uid: u32) -> User {
    User {
        name: name.into(),
        uid,
        gid: uid,
        home: format!("/home/{name}"),
        shell: "/bin/bash".into(),
        password_status: "locked".into(),
        ..User::default()
    }
}

pub fn unit(name: &str, state: &str) -> Unit {
    Unit {
        name: name.into(),
        unit_file_state: state.into(),
        fragment_path: Some(format!("/lib/systemd/system/{name}")),
        ..Unit::default()
    }
}

pub fn listener(port: u16, process: Option<&str>) -> Listener {
    Listener {
        protocol: "tcp".into(),
        address: "0.0.0.0".into(),
        port,
        process: process.map(Into::into),
        unit: None,
    }
}

pub fn disk(id: &str, name: &str) -> Disk {
    Disk {
        id: id.into(),
        name: name.into(),
        model: Some("Samsung SSD 870".into()),
        serial: Some("S5XYZ".into()),
        size_bytes: 500_107_862_016,
        logical_sector_size: 512,
        physical_sector_size: 512,
        ..Disk::default()
    }
}

pub fn nic(mac: &str, name: &str) -> Nic {
    Nic {
        mac: mac.into(),
        name: name.into(),
        driver: Some("e1000e".into()),
        speed_mbps: Some(1000),
        operstate: Some("up".into()),
        ..Nic::default()
    }
}

pub fn pci(address: &str, device_id: &str) -> PciDevice {
    PciDevice {
        address: address.into(),
        vendor_id: "0x8086".into(),
        device_id: device_id.into(),
        class: "0x020000".into(),
        ..PciDevice::default()
    }
}

/// A small but complete-looking server: a few packages, users, units, ports, a disk, a NIC,
/// sshd settings and successful collectors.
pub fn base() -> Profile {
    let mut p = Profile::default();
    p.meta.agent_version = "0.1.0".into();
    p.meta.hostname = "web1".into();
    p.collectors = [
        "packages", "users", "services", "network", "storage", "hardware",
    ]
    .iter()
    .map(|n| Collector {
        name: (*n).into(),
        state: CollectorState::Ok,
        ..Collector::default()
    })
    .collect();
    p.packages.packages = vec![
        pkg("bash", "5.2.15-2"),
        pkg("nano", "7.2-1"),
        pkg("openssh-server", "9.2p1-2"),
    ];
    p.users.users = vec![user("root", 0), user("daemon", 1), user("alice", 1000)];
    p.services.units = vec![
        unit("ssh.service", "enabled"),
        unit("cron.service", "enabled"),
        unit("getty@.service", "disabled"),
    ];
    p.network.listening = vec![listener(22, Some("sshd"))];
    p.storage.disks = vec![disk("wwn-0x5002538e40a1b2c3", "sda")];
    p.hardware.nics = vec![nic("52:54:00:12:34:56", "eth0")];
    p.hardware.pci_devices = vec![pci("0000:00:1f.6", "0x15bc")];
    p.security.sshd = vec![
        SshdSetting {
            name: "permitrootlogin".into(),
            value: "prohibit-password".into(),
            file: "/etc/ssh/sshd_config".into(),
        },
        SshdSetting {
            name: "port".into(),
            value: "22".into(),
            file: "/etc/ssh/sshd_config".into(),
        },
    ];
    p
}

pub fn host() -> HostInfo {
    HostInfo {
        name: "web1".into(),
        labels: [("role".to_string(), "web".to_string())].into(),
    }
}

/// Evaluates `set` on `new` after `old` (or as a first profile).
pub fn run(set: &RuleSet, old: Option<&Profile>, new: &Profile) -> Evaluation {
    let changes = old.map_or_else(Vec::new, |o| diff(o, new, DiffOptions::default()));
    let host = host();
    set.evaluate(&Input {
        profile: new,
        previous: old,
        changes: &changes,
        host: &host,
    })
}

pub fn builtin() -> RuleSet {
    RuleSet::compile(builtin_rules()).expect("the built-in pack compiles")
}

/// One rule from TOML fields (without the `[[rule]]` header), compiled.
pub fn rule(fields: &str) -> RuleSet {
    let rules = rules_from_toml(&format!("[[rule]]\n{fields}"), "test").expect("rule parses");
    RuleSet::compile(rules).expect("rule compiles")
}

/// `(rule, item_key, message)` of every firing, for compact assertions.
pub fn fired(e: &Evaluation) -> Vec<(String, Option<String>, String)> {
    assert!(e.errors.is_empty(), "unexpected errors: {:#?}", e.errors);
    e.firings
        .iter()
        .map(|f| (f.rule.clone(), f.item_key.clone(), f.message.clone()))
        .collect()
}

pub fn one(rule: &str, key: Option<&str>, message: &str) -> (String, Option<String>, String) {
    (rule.to_string(), key.map(Into::into), message.to_string())
}
