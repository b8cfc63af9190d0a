//! `keel rescue --kit DIR` run by hand, outside a rescue environment: the kit's steps are
//! listed and not run unless `--allow-host` says so; the markers, the result line and the
//! exit code say what happened. Needs no root.

use std::fs;
use std::process::Command;

use keel_rescue::{RescueResult, Status};

use crate::support::{keel_bin, skip};

fn rescue(kit: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(keel_bin().expect("keel binary"))
        .args(["rescue", "--no-shell", "--kit"])
        .arg(kit)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keel rescue");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_kit_in_a_directory_is_listed_then_run_with_allow_host() {
    if let Err(why) = keel_bin() {
        return skip("by_hand", &why);
    }
    if std::path::Path::new(keel_rescue::MARKER_PATH).exists() {
        return skip("by_hand", "this machine is a rescue environment");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    fs::write(
        dir.path().join("kit.json"),
        format!(
            r#"{{"format": 1, "description": "by hand", "env": {{"OUT": "{}"}}, "steps": [
                {{"name": "first", "run": ["sh", "-c", "echo first-ran >> \"$OUT\"; echo to-console"]}},
                {{"name": "second", "shell": "echo second-ran >> \"$OUT\""}}]}}"#,
            out.display()
        ),
    )
    .unwrap();

    let (code, stdout) = rescue(dir.path(), &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("1. first: sh -c"), "{stdout}");
    assert!(stdout.contains("the steps were not run"), "{stdout}");
    assert!(!out.exists(), "steps ran without --allow-host");
    let r = RescueResult::find(&stdout).expect("result line");
    assert_eq!(r.status, Status::NotRun);

    let (code, stdout) = rescue(dir.path(), &["--allow-host"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "first-ran\nsecond-ran\n");
    let begin = stdout
        .find("----- KEEL-STEP 1/2 BEGIN first:")
        .expect("begin marker");
    let output = begin
        + stdout[begin..]
            .find("to-console")
            .expect("the step's output");
    let end = stdout
        .find("----- KEEL-STEP 1/2 END first: exit 0")
        .expect("end marker");
    assert!(begin < output && output < end, "{stdout}");
    let r = RescueResult::find(&stdout).expect("result line");
    assert_eq!(r.status, Status::Ok);
    assert_eq!(r.steps.len(), 2);
    assert!(r.steps.iter().all(keel_rescue::StepOutcome::ok));
}

#[test]
fn a_failing_step_stops_the_kit_and_the_exit_code_says_so() {
    if let Err(why) = keel_bin() {
        return skip("by_hand", &why);
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("kit.json"),
        r#"{"format": 1, "steps": [
            {"name": "tolerated", "run": ["false"], "allow_failure": true},
            {"name": "fails", "shell": "echo about to fail; exit 4"},
            {"name": "never", "run": ["true"]}]}"#,
    )
    .unwrap();
    let (code, stdout) = rescue(dir.path(), &["--allow-host"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("END fails: exit 4"), "{stdout}");
    assert!(!stdout.contains("BEGIN never"), "{stdout}");
    let r = RescueResult::find(&stdout).expect("result line");
    assert_eq!(r.status, Status::Failed);
    let exits: Vec<_> = r.steps.iter().map(|s| (s.name.as_str(), s.exit)).collect();
    assert_eq!(exits, [("tolerated", Some(1)), ("fails", Some(4))]);

    // A kit this version cannot read is an error, with the reason on the result line.
    fs::write(
        dir.path().join("kit.json"),
        r#"{"format": 1, "steps": [], "plan": "plan.json"}"#,
    )
    .unwrap();
    let (code, stdout) = rescue(dir.path(), &["--allow-host"]);
    assert_eq!(code, Some(2), "{stdout}");
    let r = RescueResult::find(&stdout).expect("result line");
    assert_eq!(r.status, Status::Error);
    assert!(r.error.unwrap().contains("unknown field `plan`"));
}
