//! A captured production server, rebuilt from its profile and verified against it.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keel_profile::Change;
use keel_system::{
    build, check, verify, Bootstrap, BuildOptions, BuildReport, Phase, Progress, SystemError,
    VerifyOptions,
};

use crate::support::{self, capture, note, Scratch, Server, HOSTNAME, SERVICES};

fn progress(p: Progress) {
    match p {
        Progress::Started(phase, what) => note(&format!("  {phase:<8} … {what}")),
        Progress::Finished(phase, took, detail) => note(&format!(
            "  {phase:<8} {:6.1} s  {detail}",
            took.as_secs_f64()
        )),
        Progress::Note(n) => note(&format!("  {n}")),
        Progress::Output(..) => {}
    }
}

fn phases(r: &BuildReport) -> String {
    let mut s = String::new();
    for p in &r.phases {
        let _ = write!(s, "{} {:.1} s, ", p.phase, p.seconds);
    }
    let _ = write!(s, "total {:.1} s", r.total_seconds);
    s
}

fn list(changes: &[Change]) -> String {
    let mut s = String::new();
    for c in changes {
        let _ = write!(
            s,
            "\n  {}.{} {} {} {}: {} -> {}",
            c.section,
            c.table,
            c.key,
            c.kind.as_str(),
            c.field.as_deref().unwrap_or(""),
            c.old,
            c.new
        );
    }
    s
}

fn untar(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    support::run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(archive)
            .arg("-C")
            .arg(dir),
        Duration::from_secs(600),
    );
}

#[test]
fn production_server_is_rebuilt_from_its_profile_and_verified() {
    let Some(server) = Server::new() else { return };
    let identity = age::x25519::Identity::generate();
    let file = capture(server.path(), Some(&identity.to_public().to_string()));
    let p = &file.profile;
    assert_eq!(p.os.host[0].hostname, HOSTNAME);
    for name in SERVICES.iter().chain(&["openssh-server", "ifupdown"]) {
        assert!(
            p.packages.packages.iter().any(|x| &x.name == name),
            "{name}"
        );
    }
    assert!(
        p.packages.packages.iter().any(|x| x.auto),
        "dependencies marked automatic"
    );
    assert!(p
        .users
        .users
        .iter()
        .any(|u| u.name == "deploy" && u.uid == 1001));
    assert!(p
        .schedules
        .cron
        .iter()
        .any(|j| j.command.contains("backup")));
    assert!(p
        .schedules
        .cron
        .iter()
        .any(|j| j.user.as_deref() == Some("deploy")));
    assert!(p
        .kernel
        .sysctl
        .iter()
        .any(|s| s.name == "vm.swappiness" && s.value == "10"));
    assert!(p.network.ifupdown.iter().any(|i| i.method == "static"));

    let scratch = Scratch::new("keel-tree-");
    let out = scratch.path().join("tree");
    let mut opts = BuildOptions::new(&out);
    opts.cache = Some(support::cache_dir().join("build-cache"));
    // Every phase runs, even when the cache holds a tree of this profile.
    opts.rebuild = true;
    note("build-tree (packages and base from the cache when warm):");
    let report = build(&file, &opts, Some(&identity), &mut progress)
        .unwrap_or_else(|e| panic!("build-tree failed: {e}"));
    note(&format!(
        "build-tree: {} (base from cache: {})",
        phases(&report),
        report.base_from_cache
    ));
    assert!(!report.tree_from_cache);
    assert!(
        report.secrets.secrets_skipped.is_empty(),
        "{:?}",
        report.secrets
    );
    assert!(report.secrets.secrets_restored >= 3, "{:?}", report.secrets);
    assert_eq!(report.packages.pinned, report.packages.installed);
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);

    let vopts = VerifyOptions {
        identity: Some(&identity),
        ..VerifyOptions::default()
    };
    let t = Instant::now();
    let v = verify(&file, &out, &vopts).unwrap();
    note(&format!(
        "verify: {:.1} s, {} expected differences, {} unexpected, {} secrets compared",
        t.elapsed().as_secs_f64(),
        v.expected.len(),
        v.unexpected.len(),
        v.secrets_compared
    ));
    for d in &v.expected {
        note(&format!(
            "  expected ({}):{}",
            d.reason,
            list(std::slice::from_ref(&d.change))
        ));
    }
    assert!(v.ok(), "unexpected differences:{}", list(&v.unexpected));
    assert!(
        v.secrets_not_compared.is_empty(),
        "{:?}",
        v.secrets_not_compared
    );

    // A few facts straight from the tree.
    let passwd = fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(passwd.contains("deploy:x:1001:1001:Deploy:/home/deploy:/bin/bash"));
    assert_eq!(fs::metadata(out.join("home/deploy")).unwrap().uid(), 1001);
    let tab = out.join("var/spool/cron/crontabs/deploy");
    assert!(fs::read_to_string(&tab)
        .unwrap()
        .contains("/home/deploy/bin/poll"));
    assert_eq!(fs::metadata(&tab).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(
        fs::read_link(out.join("etc/systemd/system/apt-daily.timer")).unwrap(),
        Path::new("/dev/null")
    );
    assert!(!out.join("usr/sbin/policy-rc.d").exists());
    assert!(!out.join("tmp/keel-build").exists());

    // A change planted on purpose is found and named.
    let sshd = out.join("etc/ssh/sshd_config");
    let mut text = fs::read_to_string(&sshd).unwrap();
    text.push_str("X11Forwarding yes\n");
    fs::write(&sshd, text).unwrap();
    let v = verify(&file, &out, &vopts).unwrap();
    assert!(!v.ok());
    assert!(
        v.unexpected
            .iter()
            .any(|c| c.key == "/etc/ssh/sshd_config" && c.field.as_deref() == Some("hash")),
        "{}",
        list(&v.unexpected)
    );
    assert!(
        v.unexpected
            .iter()
            .all(|c| c.key == "/etc/ssh/sshd_config" || c.table == "sshd"),
        "only the planted change: {}",
        list(&v.unexpected)
    );

    // Built ahead of time: the same profile again comes from the cache, into a tarball.
    let tarball = scratch.path().join("tree.tar");
    opts.output.clone_from(&tarball);
    opts.rebuild = false;
    let again = build(&file, &opts, Some(&identity), &mut progress)
        .unwrap_or_else(|e| panic!("build-tree from the cache failed: {e}"));
    note(&format!("build-tree from the cache: {}", phases(&again)));
    assert!(again.tree_from_cache);
    assert!(
        again.phases.iter().all(|p| p.phase != Phase::Check),
        "a cached tree is laid down without consulting the repositories"
    );
    assert_eq!(
        again.secrets.secrets_restored,
        report.secrets.secrets_restored
    );
    let laid = scratch.path().join("laid");
    untar(&tarball, &laid);
    let v = verify(&file, &laid, &vopts).unwrap();
    assert!(v.ok(), "unexpected differences:{}", list(&v.unexpected));

    // The other base tool gives a tree that verifies too.
    if support::which("mmdebstrap").is_some() {
        let other = scratch.path().join("debootstrap");
        opts.output.clone_from(&other);
        opts.rebuild = true;
        opts.bootstrap = Bootstrap::Debootstrap;
        let third = build(&file, &opts, Some(&identity), &mut progress)
            .unwrap_or_else(|e| panic!("build-tree with debootstrap failed: {e}"));
        note(&format!("build-tree with debootstrap: {}", phases(&third)));
        let v = verify(&file, &other, &vopts).unwrap();
        assert!(v.ok(), "unexpected differences:{}", list(&v.unexpected));
    }
}

#[test]
fn a_version_the_repositories_lack_is_reported_before_anything_is_written() {
    let Some(server) = Server::new() else { return };
    let mut file = capture(server.path(), None);
    let pkg = |f: &mut keel_profile::ProfileFile| {
        f.profile
            .packages
            .packages
            .iter_mut()
            .find(|p| p.name == "openssh-server")
            .expect("openssh-server in the profile")
            .version
            .clone()
    };
    let carried = pkg(&mut file);
    let set = |f: &mut keel_profile::ProfileFile, v: &str| {
        for p in &mut f.profile.packages.packages {
            if p.name == "openssh-server" {
                p.version = v.to_string();
            }
        }
    };

    set(&mut file, "1:99.0p1-1");
    let scratch = Scratch::new("keel-missing-");
    let out = scratch.path().join("tree");
    let mut opts = BuildOptions::new(&out);
    let err = build(&file, &opts, None, &mut |_| {}).unwrap_err();
    let SystemError::MissingVersions(missing) = &err else {
        panic!("expected missing versions, got: {err}");
    };
    assert_eq!(missing.len(), 1, "{err}");
    assert_eq!(missing[0].name, "openssh-server");
    assert_eq!(missing[0].version, "1:99.0p1-1");
    assert!(missing[0].available.contains(&carried), "{err}");
    assert_eq!(missing[0].newer, None);
    let msg = err.to_string();
    assert!(msg.contains("openssh-server 1:99.0p1-1"), "{msg}");
    assert!(
        msg.contains("nothing was written") && msg.contains("--mirror"),
        "{msg}"
    );
    assert!(!out.exists(), "nothing may be written");
    assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);

    // A recorded version older than the repositories': the choice of the newer one.
    set(&mut file, "1:9.0p1-1");
    let err = check(&file, &opts, &mut |_| {}).unwrap_err();
    let SystemError::MissingVersions(missing) = &err else {
        panic!("expected missing versions, got: {err}");
    };
    assert_eq!(missing[0].newer.as_deref(), Some(carried.as_str()));
    assert!(err.to_string().contains("--allow-newer"), "{err}");
    opts.plan.allow_newer = true;
    let plan = check(&file, &opts, &mut |_| {}).unwrap();
    assert_eq!(
        plan.newer,
        [(
            "openssh-server".to_string(),
            "1:9.0p1-1".to_string(),
            carried.clone()
        )]
    );
    assert!(!out.exists(), "checking writes nothing");
}
