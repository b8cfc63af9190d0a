//! The store contract: one story every backend must pass. SQLite always runs it.

mod recovery;

use keel_profile::{Change, ChangeKind, Hash, Volatility};
use keel_store::keel_schedule::{HostState, Schedule};
use keel_store::{
    DeliveryRecord, Ingest, NewAgent, NewAlert, SqliteStore, Store, StoreError, TokenKind,
    MISSING_RULE,
};

fn agent(id: &str, host: &str, machine_id: &str) -> NewAgent {
    NewAgent {
        id: id.into(),
        host: host.into(),
        machine_id: machine_id.into(),
        public_key: vec![7; 32],
        now: 1000,
        schedule: None,
    }
}

fn ingest(host_id: i64, n: u8, blobs: Vec<(Hash, Vec<u8>)>) -> Ingest {
    Ingest {
        host_id,
        hash: Hash::of(&[n]),
        previous: (n > 0).then(|| Hash::of(&[n - 1])),
        captured_at: i64::from(n) * 10,
        received_at: i64::from(n) * 10 + 1,
        agent_version: "0.1.0".into(),
        profile: vec![n; 100],
        delta: None,
        blobs,
        changes: vec![Change {
            section: "packages".into(),
            table: "packages".into(),
            key: format!("p{n}:amd64"),
            kind: ChangeKind::Added,
            field: None,
            old: serde_json::Value::Null,
            new: serde_json::json!({"name": format!("p{n}")}),
            volatility: Volatility::Config,
        }],
        alerts: Vec::new(),
        state_rules: Vec::new(),
    }
}

fn story(store: &dyn Store) {
    // Tokens are looked up by hash only.
    store
        .put_token(&Hash::of(b"admin-token"), TokenKind::Admin, "first")
        .unwrap();
    assert_eq!(
        store.token_kind(&Hash::of(b"admin-token")).unwrap(),
        Some(TokenKind::Admin)
    );
    assert_eq!(store.token_kind(&Hash::of(b"other")).unwrap(), None);
    assert!(store.has_token(TokenKind::Admin).unwrap());
    assert!(!store.has_token(TokenKind::Enroll).unwrap());

    // Enrollment creates the host; the same machine re-enrolling replaces its agent; another
    // machine cannot take the name.
    let h = store.enroll(&agent("a1", "web1", "m1")).unwrap();
    assert_eq!(h.name, "web1");
    let again = store.enroll(&agent("a2", "web1", "m1")).unwrap();
    assert_eq!(again.id, h.id);
    assert!(store.agent("a1").unwrap().unwrap().revoked);
    assert!(!store.agent("a2").unwrap().unwrap().revoked);
    let err = store.enroll(&agent("a3", "web1", "m2")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(
        store.agent("a3").unwrap().is_none(),
        "a refused enrollment leaves nothing behind"
    );

    // Blobs travel once.
    let blob = (Hash::of(b"content"), b"content".to_vec());
    assert_eq!(store.missing_blobs(&[blob.0]).unwrap(), vec![blob.0]);
    let ids = store
        .ingest(&[ingest(h.id, 0, vec![blob.clone()]), ingest(h.id, 1, vec![])])
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(store.missing_blobs(&[blob.0]).unwrap().is_empty());
    assert_eq!(store.blob(&blob.0).unwrap().unwrap(), b"content");

    // The profile comes back byte for byte, with its changes and summary.
    let (summary, bytes) = store.profile(ids[1]).unwrap().unwrap();
    assert_eq!(bytes, vec![1u8; 100]);
    assert_eq!(summary.previous, Some(Hash::of(&[0])));
    assert_eq!(summary.changes, 1);
    assert_eq!(store.changes(ids[1]).unwrap()[0].key, "p1:amd64");
    assert_eq!(
        store.profile_by_hash(&Hash::of(&[1])).unwrap().unwrap().id,
        ids[1]
    );
    let host = store.host("web1").unwrap().unwrap();
    assert_eq!(host.last_profile_id, Some(ids[1]));
    let listed = store.profiles(h.id, None, 10).unwrap();
    assert_eq!(
        listed.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );

    // A batch with an already stored profile is refused whole.
    let err = store
        .ingest(&[ingest(h.id, 2, vec![]), ingest(h.id, 1, vec![])])
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(
        store.profile_by_hash(&Hash::of(&[2])).unwrap().is_none(),
        "no partial batch"
    );
    assert_eq!(store.profile_count().unwrap(), 2);

    // Alerts: a new fingerprint opens an alert once; a state rule's alert resolves when it
    // stops firing; admins acknowledge and resolve.
    let alert = |fp: &str, rule: &str| keel_store::NewAlert {
        fingerprint: fp.into(),
        rule: rule.into(),
        severity: "warning".into(),
        labels: [("alertname".to_string(), rule.to_string())].into(),
        annotations: [("summary".to_string(), format!("{rule} fired"))].into(),
        starts_at: 5,
    };
    let mut i3 = ingest(h.id, 3, vec![]);
    i3.alerts = vec![
        alert("fp-change", "package-installed"),
        alert("fp-state", "sshd-permit-root-login"),
    ];
    i3.state_rules = vec!["sshd-permit-root-login".into()];
    store.ingest(&[i3]).unwrap();
    let mut i4 = ingest(h.id, 4, vec![]);
    i4.alerts = vec![
        alert("fp-change", "package-installed"),
        alert("fp-state", "sshd-permit-root-login"),
    ];
    i4.state_rules = vec!["sshd-permit-root-login".into()];
    store.ingest(&[i4]).unwrap();
    assert_eq!(
        store
            .alerts(Some("firing"), Some(h.id), None, 10)
            .unwrap()
            .len(),
        2,
        "still firing, not duplicated"
    );
    let mut i5 = ingest(h.id, 5, vec![]);
    i5.state_rules = vec!["sshd-permit-root-login".into()];
    store.ingest(&[i5]).unwrap();
    let firing = store.alerts(Some("firing"), None, None, 10).unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(
        firing[0].alert.rule, "package-installed",
        "a change alert waits for a person"
    );
    let resolved = store.alerts(Some("resolved"), None, None, 10).unwrap();
    assert_eq!(resolved[0].alert.rule, "sshd-permit-root-login");
    assert!(resolved[0].ends_at.is_some());
    assert!(store.ack_alert(firing[0].id, "admin", 9).unwrap());
    assert!(store.resolve_alert(firing[0].id, 10).unwrap());
    assert!(
        !store.resolve_alert(firing[0].id, 11).unwrap(),
        "already resolved"
    );
    let all = store.alerts(None, None, None, 10).unwrap();
    assert_eq!(all.iter().filter(|a| a.status == "firing").count(), 0);
    assert_eq!(
        all.iter()
            .find(|a| a.id == firing[0].id)
            .unwrap()
            .acked_by
            .as_deref(),
        Some("admin")
    );

    // Rules are stored by name.
    store.put_rule("r1", "{}", 1).unwrap();
    store.put_rule("r1", "{\"x\":1}", 2).unwrap();
    assert_eq!(
        store.rules().unwrap(),
        vec![("r1".to_string(), "{\"x\":1}".to_string())]
    );
    assert!(store.delete_rule("r1").unwrap());
    assert!(!store.delete_rule("r1").unwrap());

    let hosts = store.hosts(None, 10).unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(store.hosts(Some("web1"), 10).unwrap().is_empty());

    rollback_story(store, h.id, &ids);
}

/// Rollback jobs: proposed, then approved (who and when recorded) or rejected; an approved
/// job is handed to the agent once and ends done or failed with a reason.
fn rollback_story(store: &dyn Store, host_id: i64, ids: &[i64]) {
    let new = |n: i64| keel_store::NewRollback {
        host_id,
        from_profile: ids[1],
        to_profile: ids[0],
        selection: vec!["users:mallory".into()],
        plan: serde_json::json!({ "steps": [n] }),
        created_by: "carol".into(),
        now: 100 + n,
    };
    let a = store.create_rollback(&new(1)).unwrap();
    assert_eq!(a.status, "proposed");
    assert_eq!(a.host, "web1");
    assert_eq!(a.selection, vec!["users:mallory".to_string()]);
    assert_eq!(a.plan["steps"][0], 1);
    let b = store.create_rollback(&new(2)).unwrap();
    let mut bad = new(3);
    bad.to_profile = 99_999;
    assert!(matches!(
        store.create_rollback(&bad),
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(
        store.next_rollback(host_id, 200).unwrap(),
        None,
        "proposed jobs wait"
    );
    let approved = store
        .decide_rollback(a.id, true, "alice", None, 201)
        .unwrap();
    assert_eq!(approved.status, "approved");
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    assert_eq!(approved.decided_at_ms, Some(201));
    let rejected = store
        .decide_rollback(b.id, false, "bob", Some("not now"), 202)
        .unwrap();
    assert_eq!(rejected.status, "rejected");
    assert_eq!(rejected.reason.as_deref(), Some("not now"));
    let again = store
        .decide_rollback(b.id, true, "alice", None, 203)
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again}");
    assert!(again.to_string().contains("rejected"), "{again}");

    let running = store.next_rollback(host_id, 210).unwrap().unwrap();
    assert_eq!((running.id, running.status.as_str()), (a.id, "running"));
    assert_eq!(running.started_at_ms, Some(210));
    // An agent that restarts mid-job gets the same job again.
    assert_eq!(store.next_rollback(host_id, 220).unwrap().unwrap().id, a.id);
    let end = keel_store::RollbackEnd {
        done: false,
        reason: Some("users.users:mallory is still there".into()),
        result_profile: Some(ids[1]),
        output: Some("1. remove user mallory: failed".into()),
    };
    let failed = store.finish_rollback(a.id, &end, 230).unwrap();
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.finished_at_ms, Some(230));
    assert_eq!(failed.result_profile, Some(ids[1]));
    assert!(matches!(
        store.finish_rollback(a.id, &end, 231),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.next_rollback(host_id, 240).unwrap(), None);
    let listed = store.rollbacks(Some(host_id), 10).unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![b.id, a.id],
        "newest first"
    );
    assert_eq!(store.rollback(a.id).unwrap().unwrap(), failed);
    assert!(store.rollback(12_345).unwrap().is_none());
}

fn missing_alert(host: &str, at: i64) -> NewAlert {
    NewAlert {
        fingerprint: format!("missing-{host}"),
        rule: MISSING_RULE.into(),
        severity: "critical".into(),
        labels: [("alertname", MISSING_RULE), ("host", host)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        annotations: std::collections::BTreeMap::new(),
        starts_at: at,
    }
}

/// The missing-profile watch and the notification log.
fn watch_story(store: &dyn Store) {
    let s = 1000;
    let mut new = agent("w1", "db1", "m-db1");
    new.schedule = Some(Schedule::interval("10s", "5s").unwrap());
    let h = store.enroll(&new).unwrap();
    assert_eq!(h.schedule.expr, "10s");
    assert_eq!(
        h.missing_at,
        Some(1000 + 15 * s),
        "enrolled at 1000, due 10 s later, 5 s grace"
    );
    assert_eq!(h.status(1000 + 5 * s).state, HostState::New);
    let other = store.enroll(&agent("w2", "db2", "m-db2")).unwrap();
    assert_eq!(other.schedule, Schedule::default());

    // Nothing overdue until the grace is over; then db1 only.
    assert!(store.overdue_hosts(1000 + 15 * s, 10).unwrap().is_empty());
    let overdue = store.overdue_hosts(1000 + 16 * s, 10).unwrap();
    assert_eq!(
        overdue.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["db1"]
    );
    assert_eq!(overdue[0].status(1000 + 16 * s).state, HostState::Missing);
    assert!(store
        .raise_alert(h.id, &missing_alert("db1", 17_000))
        .unwrap());
    assert!(
        !store
            .raise_alert(h.id, &missing_alert("db1", 18_000))
            .unwrap(),
        "already firing"
    );
    assert!(
        store.overdue_hosts(1000 + 16 * s, 10).unwrap().is_empty(),
        "a host with a firing missing alert is not raised again"
    );
    let states = store.host_states(1000 + 16 * s).unwrap();
    assert_eq!(states[&HostState::Missing], 1);
    assert_eq!(states[&HostState::New], 1);

    // A profile arrives: the alert resolves and the deadline moves.
    let mut ing = ingest(h.id, 0, vec![]);
    ing.received_at = 30 * s;
    store.ingest(&[ing]).unwrap();
    let h = store.host("db1").unwrap().unwrap();
    assert_eq!(h.missing_at, Some(45 * s));
    assert_eq!(h.status(41 * s).state, HostState::Late);
    assert_eq!(h.status(39 * s).state, HostState::Up);
    let alerts = store.alerts(None, Some(h.id), None, 10).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].status, "resolved");
    assert_eq!(alerts[0].ends_at, Some(30 * s));

    // Pausing silences the host and resolves its alert; resuming counts from then.
    store
        .raise_alert(h.id, &missing_alert("db1", 50 * s))
        .unwrap();
    let paused = store
        .set_host_flags(h.id, Some(true), None, 60 * s)
        .unwrap();
    assert_eq!(paused.status(1_000 * s).state, HostState::Paused);
    assert!(store
        .overdue_hosts(1_000 * s, 10)
        .unwrap()
        .iter()
        .all(|o| o.id != h.id));
    assert!(store
        .alerts(Some("firing"), Some(h.id), None, 10)
        .unwrap()
        .is_empty());
    let resumed = store
        .set_host_flags(h.id, Some(false), None, 100 * s)
        .unwrap();
    assert_eq!(resumed.missing_at, Some(115 * s));
    assert_eq!(resumed.status(105 * s).state, HostState::Up);

    // A new schedule moves the deadline.
    let cron = Schedule::cron("0 * * * *", "UTC", "1m").unwrap();
    let h = store.set_schedule(h.id, &cron).unwrap();
    assert_eq!(h.schedule, cron);
    assert_eq!(h.missing_at, Some(3600 * s + 60 * s));

    // Every status change was logged, in order, for the receivers.
    let log = store.notifications_after(0, 100).unwrap();
    let seen: Vec<(&str, i64)> = log.iter().map(|n| (n.status.as_str(), n.at)).collect();
    assert_eq!(
        seen,
        [
            ("firing", 17_000),
            ("resolved", 30 * s),
            ("firing", 50 * s),
            ("resolved", 60 * s)
        ]
    );
    assert_eq!(log[0].alert.alert.labels["host"], "db1");
    assert_eq!(store.last_notification_id().unwrap(), log[3].id);
    assert_eq!(store.notifications_after(log[1].id, 100).unwrap().len(), 2);
    assert_eq!(store.receiver_cursor("ops").unwrap(), None);
    store.set_receiver_cursor("ops", log[1].id).unwrap();
    store.set_receiver_cursor("ops", log[3].id).unwrap();
    assert_eq!(store.receiver_cursor("ops").unwrap(), Some(log[3].id));

    let attempt = DeliveryRecord {
        id: 0,
        receiver: "ops".into(),
        group_key: "{}:{host=\"db1\"}".into(),
        status: "firing".into(),
        fingerprints: vec!["missing-db1".into()],
        attempt: 1,
        at: 17_500,
        ok: false,
        outcome: serde_json::json!({"error": "connection refused", "retryable": true}),
    };
    store.record_delivery(&attempt).unwrap();
    store
        .record_delivery(&DeliveryRecord {
            attempt: 2,
            ok: true,
            outcome: serde_json::json!({"status": 200}),
            ..attempt.clone()
        })
        .unwrap();
    let log = store.deliveries(None, 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].attempt, log[0].ok), (2, true), "newest first");
    assert_eq!(log[1].fingerprints, ["missing-db1"]);
    assert_eq!(log[1].outcome["error"], "connection refused");
}

/// A profile with `n` packages and a capture time.
fn real_profile(packages: usize, at: i64) -> keel_profile::Profile {
    let mut p = keel_profile::Profile::default();
    p.meta.hostname = "db1".into();
    p.meta.machine_id = "m-db1".into();
    p.meta.started_at_ms = at;
    for i in 0..packages {
        p.packages.packages.push(keel_profile::Package {
            name: format!("package-{i:04}"),
            arch: "amd64".into(),
            version: format!("1.{i}"),
            ..keel_profile::Package::default()
        });
    }
    p
}

/// Profiles are stored as patches against the one before, whole again every
/// `MAX_DELTA_DEPTH` or when a patch is not much smaller, and always read back whole.
fn delta_story(store: &dyn Store) {
    let h = store.enroll(&agent("d1", "db1", "m-db1")).unwrap();
    let mut previous: Option<(i64, keel_profile::Profile)> = None;
    let mut expected = Vec::new();
    let total = keel_store::MAX_DELTA_DEPTH as usize + 5;
    for n in 0..total {
        let mut p = real_profile(200, 1000 + n as i64);
        // Every tenth profile changes most packages: its patch is not worth keeping.
        if n % 10 == 9 {
            for pkg in &mut p.packages.packages {
                pkg.version.push_str("+new");
            }
        }
        let bytes = keel_profile::profile_bytes(&p).unwrap();
        let hash = keel_profile::Hash::of(&bytes);
        let delta = previous.as_ref().map(|(id, base)| {
            let patch = keel_profile::make_patch(base, &p).unwrap();
            let mut cbor = Vec::new();
            ciborium::into_writer(&patch, &mut cbor).unwrap();
            keel_store::Delta {
                base_id: *id,
                patch: cbor,
            }
        });
        let id = store
            .ingest(&[Ingest {
                host_id: h.id,
                hash,
                previous: None,
                captured_at: 1000 + n as i64,
                received_at: 1000 + n as i64,
                agent_version: "0.1.0".into(),
                profile: bytes.clone(),
                delta,
                blobs: Vec::new(),
                changes: Vec::new(),
                alerts: Vec::new(),
                state_rules: Vec::new(),
            }])
            .unwrap()[0];
        expected.push((id, bytes));
        previous = Some((id, p));
    }
    for (id, bytes) in &expected {
        let (_, got) = store.profile(*id).unwrap().unwrap();
        assert!(got == *bytes, "profile {id} reads back byte for byte");
    }
}

#[test]
fn sqlite_delta_story() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db");
    delta_story(&SqliteStore::open(&path).unwrap());
    // What is stored: patches, whole profiles where a chain would grow too long or a patch
    // would not pay, and far less than whole profiles would take.
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(Option<i64>, i64, i64)> = c
        .prepare("SELECT base_id, depth, length(body) FROM profiles ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let whole: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0.is_none())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(whole[0], 0, "the first profile is whole");
    assert!(
        whole.contains(&9),
        "a patch changing everything is stored whole: {whole:?}"
    );
    assert!(rows.iter().all(|r| r.1 <= keel_store::MAX_DELTA_DEPTH));
    let patch_bytes: i64 = rows
        .iter()
        .filter(|r| r.0.is_some())
        .map(|r| r.2)
        .max()
        .unwrap();
    let whole_bytes: i64 = rows
        .iter()
        .filter(|r| r.0.is_none())
        .map(|r| r.2)
        .min()
        .unwrap();
    assert!(
        patch_bytes * 4 < whole_bytes,
        "a stored patch ({patch_bytes} B) is much smaller than a whole profile ({whole_bytes} B)"
    );
    // A chain reaching the limit starts again whole.
    let long_path = dir.path().join("long.db");
    let long = SqliteStore::open(&long_path).unwrap();
    let h = long.enroll(&agent("d2", "db1", "m-db1")).unwrap();
    let mut prev: Option<(i64, keel_profile::Profile)> = None;
    for n in 0..(keel_store::MAX_DELTA_DEPTH + 3) {
        let p = real_profile(50, n);
        let bytes = keel_profile::profile_bytes(&p).unwrap();
        let delta = prev.as_ref().map(|(id, base)| {
            let mut cbor = Vec::new();
            ciborium::into_writer(&keel_profile::make_patch(base, &p).unwrap(), &mut cbor).unwrap();
            keel_store::Delta {
                base_id: *id,
                patch: cbor,
            }
        });
        let mut ing = ingest(h.id, 0, Vec::new());
        ing.hash = keel_profile::Hash::of(&bytes);
        ing.profile = bytes.clone();
        ing.delta = delta;
        let id = long.ingest(&[ing]).unwrap()[0];
        assert_eq!(long.profile(id).unwrap().unwrap().1, bytes);
        prev = Some((id, p));
    }
    let depths: Vec<i64> = rusqlite::Connection::open(&long_path)
        .unwrap()
        .prepare("SELECT depth FROM profiles ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let max = keel_store::MAX_DELTA_DEPTH;
    assert_eq!(depths[max as usize], max, "{depths:?}");
    assert_eq!(
        depths[max as usize + 1],
        0,
        "whole again after {max} patches: {depths:?}"
    );
    assert_eq!(depths[max as usize + 2], 1, "{depths:?}");
}

#[test]
fn sqlite_watch_story() {
    watch_story(&SqliteStore::open_in_memory().unwrap());
}

#[test]
fn sqlite_in_memory_story() {
    story(&SqliteStore::open_in_memory().unwrap());
}

#[test]
fn sqlite_file_story_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        story(&s);
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.profile_count().unwrap(),
        5,
        "committed profiles survive a reopen"
    );
    assert!(s.host("web1").unwrap().is_some());
}

#[test]
fn unreadable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("keel.db"), "{err}");
}
