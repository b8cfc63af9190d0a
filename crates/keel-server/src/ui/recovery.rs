//! The recovery pages: the machines waiting in `keel rescue --server`, point-and-click
//! recovery (host and machine → the plan → typed host name → start → live progress → the
//! verification), and batches (several pairs, or a mapping file pasted as `keel recover
//! batch` takes it → all plans → one start → one progress table). They call the same
//! functions as the JSON API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use minijinja::{context, Value};
use serde::Deserialize;

use super::{q, see_other, with_msg, Fields, Ui, Q};
use crate::recovery::{job_or_404, plan_recovery, start_recovery, CreateRequest, RecoveryView};

/// A mapping file, as `keel recover batch` reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    recovery: Vec<Pair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    host: String,
    machine: String,
    #[serde(default)]
    profile: Option<i64>,
    #[serde(default)]
    disk_map: Vec<String>,
}

/// One row of the progress table: a phase's last state, its time, what it set out to do and
/// what came of it. A machine reports each phase twice (started, then finished or failed);
/// people read one line per phase.
#[derive(Debug, serde::Serialize)]
struct PhaseRow {
    phase: String,
    state: String,
    seconds: Option<f64>,
    what: Option<String>,
    result: Option<String>,
}

/// The progress events folded into one row per phase, in the order the phases began.
fn phase_rows(progress: &[serde_json::Value]) -> Vec<PhaseRow> {
    let mut rows: Vec<PhaseRow> = Vec::new();
    for e in progress {
        let text = |k: &str| e[k].as_str().map(str::to_string);
        let Some(phase) = text("phase") else { continue };
        let state = text("state").unwrap_or_default();
        let i = if let Some(i) = rows.iter().position(|r| r.phase == phase) {
            i
        } else {
            rows.push(PhaseRow {
                phase,
                state: String::new(),
                seconds: None,
                what: None,
                result: None,
            });
            rows.len() - 1
        };
        let r = &mut rows[i];
        if state == "started" {
            // A phase started again (a resumed recovery) has no result yet.
            r.what = text("detail");
            r.result = None;
            r.seconds = None;
        } else {
            r.result = text("detail");
            r.seconds = e["seconds"].as_f64();
        }
        r.state = state;
    }
    rows
}

/// A recovery for the templates: the view, with its verification summed up.
fn row(v: &RecoveryView) -> Value {
    let verify = v.job.report.as_ref().map(|r| &r["verify"]);
    let count = |key: &str| verify.and_then(|v| v[key].as_array()).map_or(0, Vec::len);
    let elapsed = v.job.taken_at_ms.map(|from| {
        let to = v.job.finished_at_ms.unwrap_or_else(crate::now_ms);
        format!("{} s", (to - from) / 1000)
    });
    context! {
        r => Value::from_serialize(v),
        phases => Value::from_serialize(phase_rows(&v.job.progress)),
        elapsed,
        verified => verify.is_some_and(serde_json::Value::is_object),
        expected => count("expected"),
        unexpected => count("unexpected"),
        unexpected_list => verify.map(|v| Value::from_serialize(&v["unexpected"])),
        active => matches!(v.job.status.as_str(), "queued" | "running"),
        planned => v.job.status == "planned",
    }
}

fn ids(query: &std::collections::HashMap<String, String>) -> Vec<i64> {
    q(query, "ids")
        .unwrap_or_default()
        .split(',')
        .filter_map(|i| i.trim().parse().ok())
        .collect()
}

/// The machines, the recoveries, and the forms to plan one or a batch.
pub(super) async fn index(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = &ui.app.store;
    let machines = match store.machines(200) {
        Ok(m) => m,
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let jobs = match store.recoveries(100) {
        Ok(j) => j,
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let hosts: Vec<String> = match store.hosts(None, 1000) {
        Ok(h) => h.into_iter().map(|h| h.name).collect(),
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let machine_rows: Vec<Value> = machines
        .iter()
        .map(|m| {
            let disks: Vec<String> = m.inventory["disks"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|d| {
                            let size = d["size_bytes"].as_u64().unwrap_or(0);
                            format!(
                                "{} ({})",
                                d["path"].as_str().unwrap_or("?"),
                                keel_recover::human(size)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            context! {
                id => m.id, name => m.name, disks,
                firmware => m.inventory["firmware"].as_str(),
                nics => m.inventory["nics"].as_array().map_or(0, Vec::len),
                seen_at_ms => m.seen_at_ms, busy_with => m.busy_with,
                offline => crate::recovery::offline_for(&ui.app, m).is_some(),
            }
        })
        .collect();
    let rows: Vec<Value> = jobs
        .into_iter()
        .map(|j| row(&RecoveryView::new(j)))
        .collect();
    ui.page(
        Some(&s),
        "recoveries.html",
        "recoveries",
        "Recovery",
        context! {
            machines => machine_rows, rows, hosts, msg => q(&query, "msg"),
            error => q(&query, "error"),
        },
    )
}

/// One recovery: its plan, the start form, its progress, its verification.
pub(super) async fn show(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let job = match job_or_404(&ui.app, id) {
        Ok(j) => j,
        Err(e) => return ui.api_error(&s, &e),
    };
    let view = RecoveryView::new(job);
    let title = format!("Recovery {id}: {}", view.job.host);
    ui.page(
        Some(&s),
        "recovery.html",
        "recoveries",
        &title,
        context! { msg => q(&query, "msg"), error => q(&query, "error"), ..row(&view) },
    )
}

/// Plans a recovery (point and click) or a batch (several `host machine` lines, or a pasted
/// mapping file), and shows the plans.
pub(super) async fn plan(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let field = |k: &str| form.get(k).map_or("", |v| v.trim());
    let mut pairs: Vec<CreateRequest> = Vec::new();
    if !field("host").is_empty() || !field("machine").is_empty() {
        pairs.push(CreateRequest {
            host: field("host").to_string(),
            machine: field("machine").to_string(),
            ..CreateRequest::default()
        });
    }
    let mapping = field("mapping");
    if mapping.contains("[[recovery]]") {
        match toml::from_str::<Mapping>(mapping) {
            Ok(m) => pairs.extend(m.recovery.into_iter().map(|p| CreateRequest {
                host: p.host,
                machine: p.machine,
                profile: p.profile,
                disk_map: p.disk_map,
                allow_degraded: false,
            })),
            Err(e) => {
                return see_other(&format!(
                    "/ui/recoveries?error={}",
                    super::encode(&format!("The mapping is not readable: {e}"))
                ))
            }
        }
    } else {
        for line in mapping.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut words = line.split_whitespace();
            pairs.push(CreateRequest {
                host: words.next().unwrap_or_default().to_string(),
                machine: words.next().unwrap_or_default().to_string(),
                ..CreateRequest::default()
            });
        }
    }
    if pairs.is_empty() {
        return see_other(&with_msg("/ui/recoveries", "Choose a host and a machine."));
    }
    let mut planned: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for p in &pairs {
        match plan_recovery(&ui.app, p, &s.user.name) {
            Ok(v) => planned.push(v.job.id.to_string()),
            Err(e) => refused.push(format!("{} → {}: {}", p.host, p.machine, e.message())),
        }
    }
    let error = if refused.is_empty() {
        String::new()
    } else {
        format!("&error={}", super::encode(&refused.join("\n")))
    };
    match planned.as_slice() {
        [] => see_other(&format!("/ui/recoveries?{}", error.trim_start_matches('&'))),
        [one] if pairs.len() == 1 => see_other(&format!("/ui/recoveries/{one}")),
        _ => see_other(&format!(
            "/ui/recoveries/batch?ids={}{error}",
            planned.join(",")
        )),
    }
}

/// Starts one recovery: the host's name must be typed.
pub(super) async fn start(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let confirm = form.get("confirm").map_or("", String::as_str);
    let started = start_recovery(&ui.app, id, confirm, &s.user.name);
    super::after(&format!("/ui/recoveries/{id}"), started, |v| {
        format!("Recovery of {} started on {}.", v.job.host, v.job.machine)
    })
}

/// Cancels a recovery its machine has not taken yet.
pub(super) async fn cancel(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let cancelled = ui
        .app
        .store
        .cancel_recovery(id, &s.user.name, crate::now_ms())
        .map_err(crate::api::ApiError::from);
    super::after(&format!("/ui/recoveries/{id}"), cancelled, |j| {
        format!("Recovery of {} onto {} cancelled.", j.host, j.machine)
    })
}

/// A batch: every plan together, one start, one progress table.
pub(super) async fn batch(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut rows = Vec::new();
    for id in ids(&query) {
        match job_or_404(&ui.app, id) {
            Ok(j) => rows.push(row(&RecoveryView::new(j))),
            Err(e) => return ui.api_error(&s, &e),
        }
    }
    let flag = |key: &str| {
        rows.iter()
            .any(|r| r.get_attr(key).is_ok_and(|a| a.is_true()))
    };
    let (active, any_planned) = (flag("active"), flag("planned"));
    ui.page(
        Some(&s),
        "recovery_batch.html",
        "recoveries",
        "Batch recovery",
        context! {
            rows, active, any_planned, ids => q(&query, "ids"), msg => q(&query, "msg"),
            error => q(&query, "error"),
        },
    )
}

/// Starts every planned recovery of a batch: each host's name must be typed (all of them,
/// separated by spaces or commas). One refusal does not stop the others.
pub(super) async fn batch_start(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ids_text = form.get("ids").cloned().unwrap_or_default();
    let mut query = std::collections::HashMap::new();
    query.insert("ids".to_string(), ids_text.clone());
    let typed: Vec<&str> = form
        .get("confirm")
        .map_or("", String::as_str)
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let mut started = 0;
    let mut refused: BTreeMap<i64, String> = BTreeMap::new();
    for id in ids(&query) {
        let Ok(job) = job_or_404(&ui.app, id) else {
            continue;
        };
        if job.status != "planned" {
            continue;
        }
        let confirm = if typed.contains(&job.host.as_str()) {
            job.host.as_str()
        } else {
            ""
        };
        match start_recovery(&ui.app, id, confirm, &s.user.name) {
            Ok(_) => started += 1,
            Err(e) => {
                refused.insert(id, format!("{}: {}", job.host, e.message()));
            }
        }
    }
    let mut to = with_msg(
        &format!("/ui/recoveries/batch?ids={ids_text}"),
        &format!(
            "{started} recover{} started.",
            if started == 1 { "y" } else { "ies" }
        ),
    );
    if !refused.is_empty() {
        let text: Vec<String> = refused.into_values().collect();
        to.push_str("&error=");
        to.push_str(&super::encode(&text.join("\n")));
    }
    see_other(&to)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::phase_rows;

    #[test]
    fn progress_reads_as_one_row_per_phase() {
        let events = [
            json!({"phase": "storage", "state": "started", "detail": "6 steps on 1 disk"}),
            json!({"phase": "storage", "state": "finished", "seconds": 0.1, "detail": "6 steps run"}),
            json!({"phase": "restore", "state": "started", "detail": "laying down the tree"}),
            json!({"phase": "restore", "state": "failed", "seconds": 2.5, "detail": "disk full"}),
            json!({"phase": "bootloader", "state": "started"}),
            json!({"phase": "data", "state": "started", "detail": "restic"}),
            json!({"phase": "data", "state": "failed", "seconds": 1.0, "detail": "no repository"}),
            json!({"phase": "data", "state": "started", "detail": "restic, again"}),
        ];
        let rows = phase_rows(&events);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.phase.as_str(),
                    r.state.as_str(),
                    r.seconds,
                    r.what.as_deref(),
                    r.result.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "storage",
                    "finished",
                    Some(0.1),
                    Some("6 steps on 1 disk"),
                    Some("6 steps run")
                ),
                (
                    "restore",
                    "failed",
                    Some(2.5),
                    Some("laying down the tree"),
                    Some("disk full")
                ),
                ("bootloader", "started", None, None, None),
                ("data", "started", None, Some("restic, again"), None),
            ]
        );
    }
}
