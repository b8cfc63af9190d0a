//! The recovery store's contract: machines register, a recovery goes planned → queued →
//! running → done or failed, a machine runs one at a time and only its own.

use keel_profile::Hash;
use keel_store::{
    NewAgent, NewMachine, NewRecovery, RecoveryEnd, RecoveryStore, SqliteStore, Store, StoreError,
};
use serde_json::json;

use crate::ingest;

pub(crate) fn recovery_story(store: &dyn Store) {
    let host = store
        .enroll(&NewAgent {
            id: "agent-r".into(),
            host: "db-1".into(),
            machine_id: "m-r".into(),
            public_key: vec![9; 32],
            now: 1000,
            schedule: None,
        })
        .unwrap();
    let profile = store.ingest(&[ingest(host.id, 0, Vec::new())]).unwrap()[0];
    let machine = |name: &str, token: &[u8]| {
        store
            .register_machine(&NewMachine {
                name: name.into(),
                token_hash: Hash::of(token),
                inventory: json!({ "disks": [{ "path": format!("/images/{name}.img") }] }),
                now: 2000,
            })
            .unwrap()
    };
    let a = machine("rescue-a", b"token-a");
    let b = machine("rescue-b", b"token-b");
    assert_eq!(
        store.machine_by_token(&Hash::of(b"token-a")).unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.machine_by_token(&Hash::of(b"nope")).unwrap(), None);
    assert_eq!(a.inventory["disks"][0]["path"], "/images/rescue-a.img");
    assert_eq!(store.machines(10).unwrap().len(), 2);

    let plan = |machine_id: i64| NewRecovery {
        host_id: host.id,
        profile_id: profile,
        machine_id,
        plan: json!({ "steps": [] }),
        nics: json!({ "map": [{ "old_name": "ens3", "new_name": "ens5" }], "unmapped": [] }),
        created_by: "ada".into(),
        now: 3000,
    };
    let job = store.create_recovery(&plan(a.id)).unwrap();
    assert_eq!(
        (job.status.as_str(), job.host.as_str()),
        ("planned", "db-1")
    );
    assert_eq!(
        job.nics["map"][0]["new_name"], "ens5",
        "the NIC map is kept"
    );
    assert_eq!(job.machine, "rescue-a");
    // Nothing runs before it is started; progress needs a running job.
    assert_eq!(store.take_recovery(a.id, 3500).unwrap(), None);
    assert!(matches!(
        store.record_progress(job.id, a.id, &json!({ "phase": "storage" })),
        Err(StoreError::Conflict(_))
    ));
    let queued = store.start_recovery(job.id, "ada", 4000).unwrap();
    assert_eq!(
        (queued.status.as_str(), queued.started_by.as_deref()),
        ("queued", Some("ada"))
    );
    assert!(matches!(
        store.start_recovery(job.id, "ada", 4000),
        Err(StoreError::Conflict(_))
    ));
    // One at a time per machine.
    let second = store.create_recovery(&plan(a.id)).unwrap();
    assert!(matches!(
        store.start_recovery(second.id, "ada", 4100),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.machine(a.id).unwrap().unwrap().busy_with,
        Some(job.id)
    );
    // Only its machine takes it, and takes it again after an interruption.
    assert_eq!(store.take_recovery(b.id, 4200).unwrap(), None);
    let running = store.take_recovery(a.id, 4300).unwrap().unwrap();
    assert_eq!((running.id, running.status.as_str()), (job.id, "running"));
    assert_eq!(running.taken_at_ms, Some(4300));
    let again = store.take_recovery(a.id, 4400).unwrap().unwrap();
    assert_eq!((again.id, again.taken_at_ms), (job.id, Some(4300)));
    assert_eq!(store.machine(a.id).unwrap().unwrap().seen_at_ms, 4400);
    assert!(matches!(
        store.record_progress(job.id, b.id, &json!({ "phase": "storage" })),
        Err(StoreError::Conflict(_))
    ));
    let p = store
        .record_progress(
            job.id,
            a.id,
            &json!({ "phase": "storage", "state": "started" }),
        )
        .unwrap();
    let p2 = store
        .record_progress(
            job.id,
            a.id,
            &json!({ "phase": "verify", "state": "finished" }),
        )
        .unwrap();
    assert_eq!(p.phase.as_deref(), Some("storage"));
    assert_eq!(
        (p2.phase.as_deref(), p2.progress.len()),
        (Some("verify"), 2)
    );
    let end = RecoveryEnd {
        ok: true,
        reason: None,
        report: Some(json!({ "ok": true })),
    };
    assert!(matches!(
        store.finish_recovery(job.id, b.id, &end, 5000),
        Err(StoreError::Conflict(_))
    ));
    let done = store.finish_recovery(job.id, a.id, &end, 5000).unwrap();
    assert_eq!(
        (done.status.as_str(), done.finished_at_ms),
        ("done", Some(5000))
    );
    assert_eq!(done.report, Some(json!({ "ok": true })));
    assert!(matches!(
        store.finish_recovery(job.id, a.id, &end, 5100),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.machine(a.id).unwrap().unwrap().busy_with, None);
    // The machine is free again: the second one starts, and fails.
    store.start_recovery(second.id, "ada", 6000).unwrap();
    store.take_recovery(a.id, 6100).unwrap().unwrap();
    let failed = store
        .finish_recovery(
            second.id,
            a.id,
            &RecoveryEnd {
                ok: false,
                reason: Some("mkfs failed".into()),
                report: None,
            },
            6200,
        )
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_deref()),
        ("failed", Some("mkfs failed"))
    );
    let all = store.recoveries(10).unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second.id, job.id]
    );
}

#[test]
fn sqlite_recovery_story() {
    recovery_story(&SqliteStore::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    recovery_story(&SqliteStore::open(&dir.path().join("keel.db")).unwrap());
    // Reopening a migrated file keeps the machines.
    let store = SqliteStore::open(&dir.path().join("keel.db")).unwrap();
    assert_eq!(RecoveryStore::machines(&store, 10).unwrap().len(), 2);
}
