//! Recovery kits: a filesystem labelled [`KIT_LABEL`] holding `kit.json`, which names the
//! steps `keel rescue` runs, in order.
//!
//! ```json
//! {
//!   "format": 1,
//!   "description": "rebuild web-01",
//!   "env": {"TARGET": "/dev/nvme0n1"},
//!   "steps": [
//!     {"name": "inventory", "run": ["lsblk", "-o", "NAME,SIZE,SERIAL"]},
//!     {"name": "raid", "shell": "mdadm --create /dev/md0 --run --level=1 ...", "timeout_secs": 600}
//!   ]
//! }
//! ```
//!
//! Steps run with the kit's directory as their working directory (so a key file in the kit is
//! `./luks.key`), with `KEEL_KIT` naming that directory, standard input empty (a prompt fails
//! instead of hanging) and their output on the console. The first failing step stops the kit
//! unless it says `"allow_failure": true`.
//!
//! Unknown fields are refused: a kit written for a newer keel (one with a `plan` for
//! `keel recover apply`, say) fails loudly on an older rescue environment instead of
//! skipping what it does not understand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::KitError;

/// The filesystem label that marks a kit's disk.
pub const KIT_LABEL: &str = "KEELKIT";

/// The kit file's name at the root of the kit's filesystem.
pub const KIT_FILE: &str = "kit.json";

/// The newest kit format this version reads.
pub const KIT_FORMAT: u32 = 1;

/// How long a step may run unless it says otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A kit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kit {
    /// Format version ([`KIT_FORMAT`]).
    pub format: u32,
    /// What the kit is for, printed before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Environment variables every step gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The steps, run in order.
    pub steps: Vec<KitStep>,
}

/// One step: a program with arguments (`run`) or a shell snippet (`shell`, run by `/bin/sh
/// -ec`), never both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KitStep {
    /// A short name, unique in the kit, printed in the markers around its output.
    pub name: String,
    /// Program and arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Vec<String>>,
    /// A shell snippet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Longest the step may run, in seconds ([`DEFAULT_STEP_TIMEOUT`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Go on with the next step even if this one fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
}

impl KitStep {
    /// The argument vector the step runs.
    pub fn argv(&self) -> Vec<String> {
        match (&self.run, &self.shell) {
            (Some(run), _) => run.clone(),
            (None, Some(sh)) => vec!["/bin/sh".into(), "-ec".into(), sh.clone()],
            (None, None) => Vec::new(),
        }
    }

    /// The step for people: the command line or the shell snippet's first line.
    pub fn summary(&self) -> String {
        match (&self.run, &self.shell) {
            (Some(run), _) => run.join(" "),
            (None, Some(sh)) => {
                let first = sh.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                if sh.trim().lines().count() > 1 {
                    format!("sh: {} …", first.trim())
                } else {
                    format!("sh: {}", first.trim())
                }
            }
            (None, None) => String::new(),
        }
    }

    /// The step's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .map_or(DEFAULT_STEP_TIMEOUT, Duration::from_secs)
    }
}

impl Kit {
    /// Parses and checks a kit; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Kit, KitError> {
        let kit: Kit = serde_json::from_str(text).map_err(|source| KitError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| KitError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if kit.format == 0 || kit.format > KIT_FORMAT {
            return Err(invalid(format!(
                "kit format {} is not one this keel reads (it reads {KIT_FORMAT})\nhint: build \
                 the rescue environment with the keel that wrote the kit",
                kit.format
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, step) in kit.steps.iter().enumerate() {
            let n = i + 1;
            if step.name.trim().is_empty() {
                return Err(invalid(format!("step {n} has no name")));
            }
            if !seen.insert(step.name.as_str()) {
                return Err(invalid(format!(
                    "two steps are named {:?}\nhint: step names appear in the output markers \
                     and the result; make them unique",
                    step.name
                )));
            }
            match (&step.run, &step.shell) {
                (Some(run), None) if run.is_empty() || run[0].is_empty() => {
                    return Err(invalid(format!(
                        "step {:?}: \"run\" needs at least a program",
                        step.name
                    )));
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(format!(
                        "step {:?} needs exactly one of \"run\" (a program and its arguments) \
                         and \"shell\" (a shell snippet)",
                        step.name
                    )));
                }
            }
        }
        Ok(kit)
    }

    /// Reads `kit.json` from the kit directory `dir`.
    pub fn load(dir: &Path) -> Result<Kit, KitError> {
        let path = dir.join(KIT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| KitError::Read {
            path: path.clone(),
            source,
        })?;
        Kit::parse(&text, &path)
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The step's name.
    pub name: String,
    /// Its exit code; `None` when it was killed or could not start.
    pub exit: Option<i32>,
    /// Seconds it ran.
    pub seconds: f64,
    /// It ran out of time and was killed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// It could not be started: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StepOutcome {
    /// It exited with status 0.
    pub fn ok(&self) -> bool {
        self.exit == Some(0)
    }
}

/// Runs kit steps from a kit directory. The steps' output goes where this process's output
/// goes (the console, inside the rescue environment).
#[derive(Debug, Clone)]
pub struct Runner {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Runner {
    /// A runner for the kit in `dir`.
    pub fn new(dir: &Path, kit: &Kit) -> Runner {
        let mut env = kit.env.clone();
        env.insert("KEEL_KIT".into(), dir.to_string_lossy().into_owned());
        Runner {
            dir: dir.to_path_buf(),
            env,
        }
    }

    /// Runs one step to its end or its deadline. The step runs in its own process group, so
    /// a deadline kills whatever it started too.
    pub fn run(&self, step: &KitStep) -> StepOutcome {
        let argv = step.argv();
        let started = Instant::now();
        let outcome = |exit, timed_out, error| StepOutcome {
            name: step.name.clone(),
            exit,
            seconds: round_ms(started.elapsed()),
            timed_out,
            error,
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.dir)
            .envs(&self.env)
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let err = KitError::Spawn {
                    step: step.name.clone(),
                    program: argv[0].clone(),
                    source: e,
                };
                return outcome(None, false, Some(err.to_string()));
            }
        };
        let deadline = started + step.timeout();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return outcome(status.code(), false, None),
                Ok(None) => {}
                Err(e) => return outcome(None, false, Some(format!("cannot wait: {e}"))),
            }
            if Instant::now() >= deadline {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return outcome(None, true, None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Kit, KitError> {
        Kit::parse(s, Path::new("kit.json"))
    }

    #[test]
    fn parses_run_and_shell_steps() {
        let kit = parse(
            r#"{"format":1,"description":"d","env":{"A":"1"},"steps":[
                {"name":"a","run":["echo","hi"]},
                {"name":"b","shell":"echo one\necho two","timeout_secs":5,"allow_failure":true}]}"#,
        )
        .unwrap();
        assert_eq!(kit.steps[0].argv(), ["echo", "hi"]);
        assert_eq!(kit.steps[1].argv()[..2], ["/bin/sh", "-ec"]);
        assert_eq!(kit.steps[1].summary(), "sh: echo one …");
        assert_eq!(kit.steps[1].timeout(), Duration::from_secs(5));
        assert_eq!(kit.steps[0].timeout(), DEFAULT_STEP_TIMEOUT);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let msg = |s: &str| parse(s).unwrap_err().to_string();
        assert!(
            msg(r#"{"format":1,"steps":[],"plan":"plan.json"}"#).contains("unknown field `plan`")
        );
        assert!(msg(r#"{"format":2,"steps":[]}"#).contains("kit format 2"));
        assert!(msg(r#"{"format":1,"steps":[{"name":"a"}]}"#).contains("exactly one of"));
        assert!(
            msg(r#"{"format":1,"steps":[{"name":"a","run":["x"],"shell":"y"}]}"#)
                .contains("exactly one of")
        );
        assert!(
            msg(r#"{"format":1,"steps":[{"name":"a","run":[]}]}"#).contains("at least a program")
        );
        assert!(
            msg(r#"{"format":1,"steps":[{"name":"a","run":["x"]},{"name":"a","run":["y"]}]}"#)
                .contains("two steps are named")
        );
        assert!(msg(r#"{"format":1,"steps":[{"name":" ","run":["x"]}]}"#).contains("no name"));
        assert!(msg("{").contains("hint: a kit is"));
    }

    #[test]
    fn runs_steps_in_the_kit_directory_with_its_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "secret").unwrap();
        let kit = parse(
            r#"{"format":1,"env":{"WHO":"kit"},"steps":[
                {"name":"copy","shell":"cat ./key > \"$OUT\"; echo \" $WHO $KEEL_KIT\" >> \"$OUT\""},
                {"name":"fail","run":["sh","-c","exit 7"]},
                {"name":"missing","run":["/nonexistent/program"]}]}"#,
        )
        .unwrap();
        let out = dir.path().join("out");
        let mut runner = Runner::new(dir.path(), &kit);
        runner
            .env
            .insert("OUT".into(), out.to_string_lossy().into_owned());
        let first = runner.run(&kit.steps[0]);
        assert!(first.ok(), "{first:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("secret kit {}\n", dir.path().display())
        );
        assert_eq!(runner.run(&kit.steps[1]).exit, Some(7));
        let missing = runner.run(&kit.steps[2]);
        assert_eq!(missing.exit, None);
        assert!(missing
            .error
            .unwrap()
            .contains("cannot start `/nonexistent/program`"));
    }

    #[test]
    fn a_step_past_its_deadline_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let kit = parse(
            r#"{"format":1,"steps":[{"name":"hang","shell":"sleep 30 & sleep 30","timeout_secs":1}]}"#,
        )
        .unwrap();
        let started = Instant::now();
        let o = Runner::new(dir.path(), &kit).run(&kit.steps[0]);
        assert!(o.timed_out && o.exit.is_none(), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
