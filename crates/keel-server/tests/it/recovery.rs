//! Recovery machines and jobs through the HTTP API, without touching a disk: a machine
//! registers, an admin plans a host's recovery onto it (and is refused an impossible one),
//! starts it by typing the host's name, the machine takes it, reports its phases and finishes.
//! Unauthenticated, read-only, enrollment and machine tokens cannot plan or start one.

use keel_profile::ProfileFile;
use keel_recover::{TargetDisk, GIB};
use serde_json::{json, Value};

use crate::Fixture;

/// The storage sample profile of one machine (`id` makes its machine id unique).
fn sample(id: &str, edit: impl FnOnce(&mut keel_profile::Profile)) -> ProfileFile {
    let mut profile = keel_recover::sample::bios_ext4_profile();
    profile.meta.machine_id = format!("4b45454c00000000000000000000{id}");
    edit(&mut profile);
    ProfileFile {
        profile,
        blobs: std::collections::BTreeMap::new(),
        signature: None,
    }
}

/// Puts `file` into the server as host `host`, through a real agent's enrollment and upload.
pub(crate) fn upload_as(fx: &Fixture, host: &str, file: &ProfileFile) {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let agent = keel_agent::Agent::new(state.path(), root.path());
    agent
        .enroll(
            &fx.url(),
            &fx.enroll,
            host,
            &file.profile.meta.machine_id,
            None,
        )
        .unwrap();
    let spool = state.path().join("agent/spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(
        spool.join("0000000000000001-0000.keel"),
        file.encode().unwrap(),
    )
    .unwrap();
    let r = agent.deliver().unwrap();
    assert_eq!((r.delivered, r.rejected), (1, 0), "{r:?}");
}

fn register(fx: &Fixture, name: &str, disk_bytes: u64) -> (i64, String) {
    let disks = vec![TargetDisk::image(format!("/images/{name}.img"), disk_bytes)];
    let body = json!({ "name": name, "inventory": { "disks": disks, "firmware": "bios" } });
    let (status, v) = fx.call(
        "POST",
        "/api/v1/machines/register",
        &fx.enroll,
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    (
        v["machine"]["id"].as_i64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_machine_takes_a_started_recovery_and_only_admins_plan_and_start() {
    let fx = Fixture::start();
    let file = sample("00db", |_| {});
    upload_as(&fx, "db-1", &file);
    let readonly = fx
        .server
        .issue_token(keel_server::TokenKind::Readonly, "test")
        .unwrap();
    let (a, a_token) = register(&fx, "rescue-a", 40 * GIB);
    let (_, b_token) = register(&fx, "rescue-tiny", GIB);

    // A registration needs a token that may enroll.
    let (status, _) = fx.call("POST", "/api/v1/machines/register", "", Some("{}"));
    assert_eq!(status, 401);
    let (status, _) = fx.call("POST", "/api/v1/machines/register", &readonly, Some("{}"));
    assert_eq!(status, 403);
    let (status, v) = fx.call("GET", "/api/v1/machines", &readonly, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    // Only an admin plans.
    let want = json!({ "host": "db-1", "machine": "rescue-a" }).to_string();
    for (token, expected) in [
        ("", 401),
        ("keel-admin-not-a-token", 401),
        (readonly.as_str(), 403),
        (fx.enroll.as_str(), 403),
        (a_token.as_str(), 401),
    ] {
        let (status, v) = fx.call("POST", "/api/v1/recoveries", token, Some(&want));
        assert_eq!(status, expected, "token {token:?}: {v}");
    }
    let (status, job) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&want));
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "planned");
    assert_eq!(job["machine_id"], a);
    assert!(
        job["plan_text"]
            .as_str()
            .unwrap()
            .contains("/images/rescue-a.img"),
        "{job}"
    );
    let id = job["id"].as_i64().unwrap();

    // A disk far too small: refused with the planner's reason, nothing stored.
    let tiny = json!({ "host": "db-1", "machine": "rescue-tiny" }).to_string();
    let (status, v) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&tiny));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], "impossible_plan", "{v}");

    // Nothing to do before it is started.
    let (status, _) = fx.call("POST", "/api/v1/machine/next", &a_token, None);
    assert_eq!(status, 204);

    // Only an admin starts, and only by typing the host's name.
    let start = format!("/api/v1/recoveries/{id}/start");
    let confirm = json!({ "confirm": "db-1" }).to_string();
    for (token, expected) in [
        ("", 401),
        (readonly.as_str(), 403),
        (fx.enroll.as_str(), 403),
        (a_token.as_str(), 401),
    ] {
        let (status, v) = fx.call("POST", &start, token, Some(&confirm));
        assert_eq!(status, expected, "token {token:?}: {v}");
    }
    let (status, v) = fx.call(
        "POST",
        &start,
        &fx.admin,
        Some(&json!({ "confirm": "db-2" }).to_string()),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("confirmation")),
        "{v}"
    );
    let (status, v) = fx.call("GET", &format!("/api/v1/recoveries/{id}"), &readonly, None);
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("planned")),
        "{v}"
    );
    let (status, v) = fx.call("POST", &start, &fx.admin, Some(&confirm));
    assert_eq!((status, v["status"].as_str()), (200, Some("queued")), "{v}");
    let (status, _) = fx.call("POST", &start, &fx.admin, Some(&confirm));
    assert_eq!(status, 409);

    // Another machine neither takes it nor reports on it; the admin token is no machine's.
    let (status, _) = fx.call("POST", "/api/v1/machine/next", &b_token, None);
    assert_eq!(status, 204);
    let (status, _) = fx.call("POST", "/api/v1/machine/next", &fx.admin, None);
    assert_eq!(status, 401);
    let (status, job) = fx.call("POST", "/api/v1/machine/next", &a_token, None);
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("running")),
        "{job}"
    );

    // The profile, as the plan was made from it.
    let mut resp = fx
        .client()
        .get(format!(
            "{}/api/v1/machine/recoveries/{id}/profile",
            fx.url()
        ))
        .header("Authorization", &format!("Bearer {a_token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.body_mut().read_to_vec().unwrap();
    let got = ProfileFile::decode(&bytes).unwrap();
    assert_eq!(
        job["plan"]["source"]["profile_hash"].as_str(),
        Some(got.hash().unwrap().to_hex().as_str())
    );

    let progress = format!("/api/v1/machine/recoveries/{id}/progress");
    let event = json!({ "phase": "storage", "state": "started", "detail": "4 steps" });
    let (status, _) = fx.call("POST", &progress, &b_token, Some(&event.to_string()));
    assert_eq!(status, 403);
    let (status, v) = fx.call("POST", &progress, &a_token, Some(&event.to_string()));
    assert_eq!(status, 200, "{v}");
    let event =
        json!({ "phase": "storage", "state": "finished", "seconds": 1.5, "detail": "4 steps run" });
    let (status, _) = fx.call("POST", &progress, &a_token, Some(&event.to_string()));
    assert_eq!(status, 200);
    let (_, v) = fx.call("GET", &format!("/api/v1/recoveries/{id}"), &readonly, None);
    assert_eq!(v["phase"], "storage", "{v}");
    assert_eq!(v["progress"].as_array().unwrap().len(), 2, "{v}");
    let (_, machine) = fx.call("GET", "/api/v1/machines/rescue-a", &readonly, None);
    assert_eq!(machine["busy_with"], id, "{machine}");

    let report = json!({ "ok": true, "verify": { "expected": [], "unexpected": [] } });
    let (status, v) = fx.call(
        "POST",
        &format!("/api/v1/machine/recoveries/{id}/finish"),
        &a_token,
        Some(&json!({ "ok": true, "report": report }).to_string()),
    );
    assert_eq!((status, v["status"].as_str()), (200, Some("done")), "{v}");
    assert_eq!(v["report"]["verify"]["unexpected"], json!([]));
    let (_, list): (u16, Value) = fx.call("GET", "/api/v1/recoveries", &readonly, None);
    assert_eq!(list[0]["id"], id, "{list}");
    let (_, machine) = fx.call("GET", "/api/v1/machines/rescue-a", &readonly, None);
    assert_eq!(machine["busy_with"], Value::Null, "{machine}");
}

#[test]
fn the_plan_shows_which_nic_takes_each_profile_nic_and_warns_of_those_left_over() {
    let fx = Fixture::start();
    let file = sample("00dc", |p| {
        let nic = |name: &str, mac: &str, bus: &str| keel_profile::Nic {
            mac: mac.into(),
            name: name.into(),
            driver: Some("e1000".into()),
            bus_info: Some(bus.into()),
            speed_mbps: None,
            operstate: None,
        };
        p.hardware.nics = vec![
            nic("ens3", "52:54:00:00:00:03", "0000:00:03.0"),
            nic("ens4", "52:54:00:00:00:04", "0000:00:04.0"),
        ];
    });
    upload_as(&fx, "web-1", &file);
    // The machine has one NIC of another model; its disks fit.
    let disks = vec![TargetDisk::image(
        "/images/rescue-n.img".to_string(),
        40 * GIB,
    )];
    let inventory = json!({
        "disks": disks,
        "firmware": "bios",
        "nics": [{ "name": "enp1s0", "mac": "52:54:00:aa:bb:01", "driver": "virtio_net",
                   "bus": "0000:01:00.0" }],
    });
    let body = json!({ "name": "rescue-n", "inventory": inventory }).to_string();
    let (status, v) = fx.call("POST", "/api/v1/machines/register", &fx.enroll, Some(&body));
    assert_eq!(status, 201, "{v}");

    let want = json!({ "host": "web-1", "machine": "rescue-n" }).to_string();
    let (status, job) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&want));
    assert_eq!(status, 201, "{job}");
    let map = job["nics"]["map"].as_array().expect("a NIC map");
    assert_eq!(map.len(), 1, "{job}");
    assert_eq!(
        (&map[0]["old_name"], &map[0]["new_name"], &map[0]["new_mac"]),
        (
            &json!("ens3"),
            &json!("enp1s0"),
            &json!("52:54:00:aa:bb:01")
        ),
        "the first NIC in bus order takes the only one: {job}"
    );
    assert_eq!(job["nics"]["unmapped"][0]["name"], "ens4", "{job}");
    let warned = job["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap_or_default().contains("NIC ens4"));
    assert!(warned, "the NIC left over is a warning: {job}");

    // What the API shows is what the store kept.
    let id = job["id"].as_i64().unwrap();
    let (status, shown) = fx.call("GET", &format!("/api/v1/recoveries/{id}"), &fx.admin, None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["nics"], job["nics"]);
}

#[test]
fn a_machine_that_stopped_asking_for_work_is_offline_and_nothing_is_planned_on_it() {
    let fx = Fixture::with(keel_server::Settings {
        machine_offline_after: std::time::Duration::from_secs(1),
        ..keel_server::Settings::default()
    });
    let file = sample("00dd", |_| {});
    upload_as(&fx, "db-2", &file);
    let (_, token) = register(&fx, "rescue-gone", 40 * GIB);
    let want = json!({ "host": "db-2", "machine": "rescue-gone" }).to_string();
    let (status, planned) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&want));
    assert_eq!(
        status, 201,
        "a machine that just registered is waiting: {planned}"
    );
    let (_, m) = fx.call("GET", "/api/v1/machines/rescue-gone", &fx.admin, None);
    assert_eq!(m["offline"], false, "{m}");

    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (_, m) = fx.call("GET", "/api/v1/machines/rescue-gone", &fx.admin, None);
    assert_eq!(m["offline"], true, "{m}");
    let (status, v) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&want));
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["code"], "machine_offline", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rescue-gone is offline"),
        "{v}"
    );
    let id = planned["id"].as_i64().unwrap();
    let confirm = json!({ "confirm": "db-2" }).to_string();
    let (status, v) = fx.call(
        "POST",
        &format!("/api/v1/recoveries/{id}/start"),
        &fx.admin,
        Some(&confirm),
    );
    assert_eq!(
        status, 409,
        "a planned recovery does not start on it either: {v}"
    );
    let (_, job) = fx.call("GET", &format!("/api/v1/recoveries/{id}"), &fx.admin, None);
    assert_eq!(job["status"], "planned", "{job}");

    // Asking for work again brings it back.
    let (status, _) = fx.call("POST", "/api/v1/machine/next", &token, None);
    assert_eq!(status, 204);
    let (_, m) = fx.call("GET", "/api/v1/machines/rescue-gone", &fx.admin, None);
    assert_eq!(m["offline"], false, "{m}");
    let (status, v) = fx.call(
        "POST",
        &format!("/api/v1/recoveries/{id}/start"),
        &fx.admin,
        Some(&confirm),
    );
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_recovery_is_cancelled_until_its_machine_takes_it_and_not_after() {
    let fx = Fixture::start();
    let file = sample("00de", |_| {});
    upload_as(&fx, "db-3", &file);
    let (_, token) = register(&fx, "rescue-c", 40 * GIB);
    let readonly = fx
        .server
        .issue_token(keel_server::TokenKind::Readonly, "test")
        .unwrap();
    let want = json!({ "host": "db-3", "machine": "rescue-c" }).to_string();
    let plan = || {
        let (status, job) = fx.call("POST", "/api/v1/recoveries", &fx.admin, Some(&want));
        assert_eq!(status, 201, "{job}");
        job["id"].as_i64().unwrap()
    };
    let confirm = json!({ "confirm": "db-3" }).to_string();
    let start = |id: i64| {
        let (status, v) = fx.call(
            "POST",
            &format!("/api/v1/recoveries/{id}/start"),
            &fx.admin,
            Some(&confirm),
        );
        assert_eq!(status, 200, "{v}");
    };
    let cancel = |id: i64, token: &str| {
        fx.call(
            "POST",
            &format!("/api/v1/recoveries/{id}/cancel"),
            token,
            None,
        )
    };

    // A planned one: only an admin cancels it.
    let planned = plan();
    assert_eq!(cancel(planned, &readonly).0, 403);
    assert_eq!(cancel(planned, "").0, 401);
    let (status, v) = cancel(planned, &fx.admin);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cancelled by"),
        "{v}"
    );
    let (status, v) = fx.call(
        "POST",
        &format!("/api/v1/recoveries/{planned}/start"),
        &fx.admin,
        Some(&confirm),
    );
    assert_eq!(status, 409, "a cancelled recovery does not start: {v}");

    // A queued one: the machine never gets it, and is free for the next.
    let queued = plan();
    start(queued);
    let (_, m) = fx.call("GET", "/api/v1/machines/rescue-c", &fx.admin, None);
    assert_eq!(m["busy_with"], queued, "{m}");
    let (status, v) = cancel(queued, &fx.admin);
    assert_eq!(status, 200, "{v}");
    let (status, _) = fx.call("POST", "/api/v1/machine/next", &token, None);
    assert_eq!(status, 204, "nothing for the machine after the cancel");
    let (_, m) = fx.call("GET", "/api/v1/machines/rescue-c", &fx.admin, None);
    assert_eq!(m["busy_with"], Value::Null, "{m}");

    // A running one: the machine is rebuilding the disks; refused, and it runs on.
    let running = plan();
    start(running);
    let (status, job) = fx.call("POST", "/api/v1/machine/next", &token, None);
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], running, "{job}");
    let (status, v) = cancel(running, &fx.admin);
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is running"),
        "{v}"
    );
    let (_, job) = fx.call(
        "GET",
        &format!("/api/v1/recoveries/{running}"),
        &fx.admin,
        None,
    );
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(cancel(9999, &fx.admin).0, 404);
}
