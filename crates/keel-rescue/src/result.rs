//! The machine-readable line `keel rescue` ends with, for whoever watches the console (a test,
//! a provisioning system reading the serial log).

use serde::{Deserialize, Serialize};

use crate::inventory::Disk;
use crate::kit::StepOutcome;
use crate::label::Labelled;

/// The prefix of the result line; the rest of the line is one JSON object.
pub const RESULT_PREFIX: &str = "KEEL-RESCUE-RESULT ";

/// The result's format version.
pub const RESULT_FORMAT: u32 = 1;

/// How the rescue run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The kit ran and every step succeeded (or was allowed to fail).
    Ok,
    /// A kit step failed; the steps after it did not run.
    Failed,
    /// No kit was found.
    NoKit,
    /// The kit could not be read or its disk mounted.
    Error,
    /// A kit was found but not run (outside a rescue environment without `--allow-host`).
    NotRun,
}

/// Everything the result line says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RescueResult {
    /// [`RESULT_FORMAT`].
    pub format: u32,
    /// The keel version that ran.
    pub keel_version: String,
    /// How it ended.
    pub status: Status,
    /// The disks seen.
    pub disks: Vec<Disk>,
    /// The kit's device, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kit: Option<Labelled>,
    /// What each step that ran did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepOutcome>,
    /// The error, for [`Status::Error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds from the start of `keel rescue` to this line.
    pub seconds: f64,
}

impl RescueResult {
    /// The result line: [`RESULT_PREFIX`] and one line of JSON.
    pub fn line(&self) -> String {
        format!(
            "{RESULT_PREFIX}{}",
            serde_json::to_string(self).expect("a result always serialises")
        )
    }

    /// The last result line in `text` (a console log), if any.
    pub fn find(text: &str) -> Option<RescueResult> {
        text.lines()
            .rev()
            .filter_map(|l| l.trim_end_matches('\r').split_once(RESULT_PREFIX))
            .find_map(|(_, json)| serde_json::from_str(json.trim()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_noisy_console() {
        let r = RescueResult {
            format: RESULT_FORMAT,
            keel_version: "0.1.0".into(),
            status: Status::NoKit,
            disks: Vec::new(),
            kit: None,
            steps: Vec::new(),
            error: None,
            seconds: 1.5,
        };
        let log = format!(
            "[    1.0] noise\r\n{}\r\n[    2.0] reboot: Power down\r\n",
            r.line()
        );
        assert_eq!(RescueResult::find(&log), Some(r.clone()));
        assert!(r.line().contains(r#""status":"no-kit""#));
        assert_eq!(RescueResult::find("nothing here"), None);
    }
}
