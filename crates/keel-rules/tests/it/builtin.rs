//! The built-in pack, one case per rule: each fires exactly for its case, once per item, with
//! its message and item key, and nothing else fires.

use std::collections::BTreeSet;

use keel_profile::{CollectorState, Memory, Profile};
use keel_rules::builtin_rules;

use crate::support::{base, builtin, disk, fired, listener, nic, one, pci, pkg, run, unit, user};

/// Runs the built-in pack on `base()` → `edit(base())`.
fn after(edit: impl FnOnce(&mut Profile)) -> Vec<(String, Option<String>, String)> {
    let old = base();
    let mut new = old.clone();
    edit(&mut new);
    fired(&run(&builtin(), Some(&old), &new))
}

#[test]
fn identical_profiles_fire_nothing() {
    let p = base();
    assert_eq!(after(|_| {}), vec![]);
    assert_eq!(fired(&run(&builtin(), Some(&p), &p)), vec![]);
}

#[test]
fn first_profile_fires_no_change_rule_and_raises_no_error() {
    assert_eq!(fired(&run(&builtin(), None, &base())), vec![]);
    // Even a profile full of things the change rules look for: only snapshot rules fire.
    let mut p = base();
    p.users.users.push(user("toor", 0));
    p.packages.packages.push(pkg("telnetd", "0.17-44"));
    p.security.sshd[0].value = "yes".into();
    let got = fired(&run(&builtin(), None, &p));
    assert_eq!(
        got,
        vec![one(
            "sshd-permit-root-login",
            None,
            "sshd permits root login (PermitRootLogin yes in /etc/ssh/sshd_config)"
        )]
    );
}

#[test]
fn package_installed() {
    assert_eq!(
        after(|p| {
            p.packages.packages.push(pkg("telnetd", "0.17-44"));
            p.packages.packages.push(pkg("rsh-server", "0.17-24"));
        }),
        vec![
            one(
                "package-installed",
                Some("rsh-server:amd64"),
                "package rsh-server 0.17-24 (amd64) installed"
            ),
            one(
                "package-installed",
                Some("telnetd:amd64"),
                "package telnetd 0.17-44 (amd64) installed"
            ),
        ]
    );
}

#[test]
fn package_removed() {
    assert_eq!(
        after(|p| p.packages.packages.retain(|x| x.name != "nano")),
        vec![one(
            "package-removed",
            Some("nano:amd64"),
            "package nano 7.2-1 (amd64) removed"
        )]
    );
}

#[test]
fn package_version_changed_is_info_and_other_fields_are_not_versions() {
    let old = base();
    let mut new = old.clone();
    new.packages.packages[1].version = "7.2-2".into();
    new.packages.packages[0].auto = true;
    let e = run(&builtin(), Some(&old), &new);
    assert_eq!(
        fired(&e),
        vec![one(
            "package-version-changed",
            Some("packages.packages:nano:amd64#version"),
            "package nano:amd64 changed version from 7.2-1 to 7.2-2"
        )]
    );
    assert_eq!(e.firings[0].severity, keel_rules::Severity::Info);
    assert_eq!(e.firings[0].labels["severity"], "info");
    assert_eq!(e.firings[0].labels["rule"], "package-version-changed");
    assert_eq!(e.firings[0].labels["category"], "packages");
}

#[test]
fn service_added_and_removed() {
    assert_eq!(
        after(|p| p.services.units.push(unit("nginx.service", "enabled"))),
        vec![one(
            "service-added",
            Some("nginx.service"),
            "service unit nginx.service added (enabled)"
        )]
    );
    assert_eq!(
        after(|p| p.services.units.retain(|u| u.name != "cron.service")),
        vec![one(
            "service-removed",
            Some("cron.service"),
            "service unit cron.service removed (was enabled)"
        )]
    );
}

#[test]
fn service_enabled_and_disabled() {
    assert_eq!(
        after(|p| p.services.units[2].unit_file_state = "enabled".into()),
        vec![one(
            "service-enabled",
            Some("services.units:getty@.service#unit_file_state"),
            "service unit getty@.service enabled (was disabled)"
        )]
    );
    assert_eq!(
        after(|p| p.services.units[1].unit_file_state = "masked".into()),
        vec![one(
            "service-disabled",
            Some("services.units:cron.service#unit_file_state"),
            "service unit cron.service no longer enabled (now masked)"
        )]
    );
    // Neither side enabled, or another field: not an enablement change.
    assert_eq!(
        after(|p| p.services.units[2].unit_file_state = "masked".into()),
        vec![]
    );
    assert_eq!(
        after(|p| p.services.units[0].drop_ins = vec!["override.conf".into()]),
        vec![]
    );
}

#[test]
fn port_opened_and_closed() {
    assert_eq!(
        after(|p| {
            p.network.listening.push(listener(8080, Some("python3")));
            p.network.listening.push(listener(9100, None));
        }),
        vec![
            one(
                "port-opened",
                Some("tcp 0.0.0.0:8080"),
                "new listening port tcp 0.0.0.0:8080 (python3)"
            ),
            one(
                "port-opened",
                Some("tcp 0.0.0.0:9100"),
                "new listening port tcp 0.0.0.0:9100"
            ),
        ]
    );
    assert_eq!(
        after(|p| p.network.listening.clear()),
        vec![one(
            "port-closed",
            Some("tcp 0.0.0.0:22"),
            "port tcp 0.0.0.0:22 no longer listening (was sshd)"
        )]
    );
}

#[test]
fn disk_added_and_removed_but_not_renamed() {
    assert_eq!(
        after(|p| p.storage.disks.push(disk("wwn-0x5000c500a1b2c3d4", "sdb"))),
        vec![one(
            "disk-added",
            Some("wwn-0x5000c500a1b2c3d4"),
            "new disk wwn-0x5000c500a1b2c3d4 (Samsung SSD 870, 500107862016 bytes) as sdb"
        )]
    );
    assert_eq!(
        after(|p| {
            p.storage.disks.clear();
            let mut d = disk("usb-Generic_Flash-0:0", "sdc");
            d.model = None;
            p.storage.disks.push(d);
        }),
        vec![
            one("disk-added", Some("usb-Generic_Flash-0:0"), "new disk usb-Generic_Flash-0:0 (unknown model, 500107862016 bytes) as sdc"),
            one(
                "disk-removed",
                Some("wwn-0x5002538e40a1b2c3"),
                "disk wwn-0x5002538e40a1b2c3 (Samsung SSD 870, 500107862016 bytes) removed; it was sda"
            ),
        ]
    );
    assert_eq!(
        after(|p| p.storage.disks[0].name = "sdb".into()),
        vec![],
        "a rename is not a new disk"
    );
}

#[test]
fn nic_added_and_removed() {
    assert_eq!(
        after(|p| p.hardware.nics.push(nic("52:54:00:ab:cd:ef", "eth1"))),
        vec![one(
            "nic-added",
            Some("52:54:00:ab:cd:ef"),
            "new network adapter 52:54:00:ab:cd:ef (eth1)"
        )]
    );
    assert_eq!(
        after(|p| p.hardware.nics.clear()),
        vec![one(
            "nic-removed",
            Some("52:54:00:12:34:56"),
            "network adapter 52:54:00:12:34:56 (eth0) removed"
        )]
    );
}

#[test]
fn hardware_changes_but_not_volatile_ones() {
    assert_eq!(
        after(|p| p.hardware.pci_devices.push(pci("0000:03:00.0", "0x1533"))),
        vec![one(
            "hardware-added-or-removed",
            Some("hardware.pci_devices:0000:03:00.0"),
            "hardware pci_devices 0000:03:00.0 added"
        )]
    );
    let old = {
        let mut p = base();
        p.hardware.memory = vec![Memory {
            total_bytes: 8_589_934_592,
        }];
        p
    };
    let mut new = old.clone();
    new.hardware.memory[0].total_bytes = 17_179_869_184;
    new.hardware.nics[0].driver = Some("igb".into());
    assert_eq!(
        fired(&run(&builtin(), Some(&old), &new)),
        vec![
            one(
                "hardware-changed",
                Some("hardware.memory:memory#total_bytes"),
                "hardware memory memory: total_bytes changed from 8589934592 to 17179869184"
            ),
            one(
                "hardware-changed",
                Some("hardware.nics:52:54:00:12:34:56#driver"),
                "hardware nics 52:54:00:12:34:56: driver changed from e1000e to igb"
            ),
        ]
    );
    // Link speed and state are volatile: no alert.
    assert_eq!(
        after(|p| {
            p.hardware.nics[0].speed_mbps = Some(100);
            p.hardware.nics[0].operstate = Some("down".into());
        }),
        vec![]
    );
}

#[test]
fn uid0_account_added_or_changed_but_not_root() {
    assert_eq!(
        after(|p| p.users.users.push(user("toor", 0))),
        vec![one(
            "uid0-account",
            Some("toor"),
            "account toor now has uid 0: root privileges"
        )]
    );
    assert_eq!(
        after(|p| p.users.users[2].uid = 0),
        vec![one(
            "uid0-account",
            Some("alice"),
            "account alice now has uid 0: root privileges"
        )]
    );
    assert_eq!(after(|p| p.users.users.push(user("bob", 1001))), vec![]);
    assert_eq!(
        after(|p| p.users.users[0].shell = "/bin/zsh".into()),
        vec![]
    );
    let old = {
        let mut p = base();
        p.users.users[0].uid = 5;
        p
    };
    assert_eq!(
        fired(&run(&builtin(), Some(&old), &base())),
        vec![],
        "root itself"
    );
}

#[test]
fn agent_version_changed() {
    assert_eq!(
        after(|p| p.meta.agent_version = "0.2.0".into()),
        vec![one(
            "agent-version-changed",
            None,
            "Keel agent version changed from 0.1.0 to 0.2.0"
        )]
    );
    assert_eq!(after(|p| p.meta.duration_ms = 1234), vec![]);
}

#[test]
fn collector_failed_makes_the_profile_incomplete_not_empty() {
    let mut old = base();
    old.collectors[3].tables = vec!["network.listening".into()];
    let mut new = old.clone();
    new.collectors[3].state = CollectorState::Error;
    new.collectors[3].message = Some("cannot read /proc/net/tcp".into());
    new.network.listening.clear();
    assert_eq!(
        fired(&run(&builtin(), Some(&old), &new)),
        vec![one(
            "collector-failed",
            Some("network"),
            "collector network failed: cannot read /proc/net/tcp; the profile is incomplete"
        )],
        "no port-closed: the table is unknown"
    );
    new.collectors[3].state = CollectorState::Timeout;
    new.collectors[3].message = None;
    assert_eq!(
        fired(&run(&builtin(), None, &new)),
        vec![one(
            "collector-failed",
            Some("network"),
            "collector network timed out: no reason given; the profile is incomplete"
        )],
        "a snapshot rule: fires on a first profile too"
    );
    new.collectors[3].state = CollectorState::NotApplicable;
    assert_eq!(fired(&run(&builtin(), None, &new)), vec![]);
}

#[test]
fn sshd_permit_root_login_is_a_standing_violation() {
    let mut bad = base();
    bad.security.sshd[0].value = "Yes".into();
    let expected = vec![one(
        "sshd-permit-root-login",
        None,
        "sshd permits root login (PermitRootLogin yes in /etc/ssh/sshd_config)",
    )];
    assert_eq!(fired(&run(&builtin(), Some(&base()), &bad)), expected);
    assert_eq!(
        fired(&run(&builtin(), Some(&bad), &bad)),
        expected,
        "fires while it holds"
    );
    for ok in ["no", "prohibit-password", "without-password", "yes-please"] {
        let mut p = base();
        p.security.sshd[0].value = ok.into();
        assert_eq!(fired(&run(&builtin(), Some(&bad), &p)), vec![], "{ok}");
    }
}

#[test]
fn every_builtin_rule_is_covered_by_a_case() {
    let old = {
        let mut p = base();
        p.hardware.memory = vec![Memory { total_bytes: 1 }];
        p
    };
    let mut new = old.clone();
    new.packages.packages.push(pkg("telnetd", "1"));
    new.packages.packages.retain(|x| x.name != "bash");
    new.packages.packages[0].version = "7.3".into();
    new.services.units.push(unit("nginx.service", "enabled"));
    new.services.units.retain(|u| u.name != "ssh.service");
    new.services.units[0].unit_file_state = "disabled".into();
    new.services.units[1].unit_file_state = "enabled".into();
    new.network.listening = vec![listener(80, Some("nginx"))];
    new.storage.disks = vec![disk("nvme-eui.0025", "nvme0n1")];
    new.hardware.nics = vec![nic("52:54:00:00:00:01", "eth9")];
    new.hardware.pci_devices.clear();
    new.hardware.memory[0].total_bytes = 2;
    new.users.users.push(user("toor", 0));
    new.meta.agent_version = "9".into();
    new.collectors[0].state = CollectorState::Error;
    new.security.sshd[0].value = "yes".into();
    let e = run(&builtin(), Some(&old), &new);
    let fired: BTreeSet<String> = crate::support::fired(&e).into_iter().map(|f| f.0).collect();
    let all: BTreeSet<String> = builtin_rules().into_iter().map(|r| r.name).collect();
    assert_eq!(fired, all);
}
