//! The server's settings file (`keel-server.toml`): where alerts go, how they are grouped,
//! which rule files are loaded and how often the missing-profile watch looks.
//!
//! ```toml
//! external_url = "https://keel.example.net:8443/"
//! rules_files = ["/etc/keel/rules.toml"]
//! group_by = ["host"]
//!
//! # A waiting recovery machine that has not asked for work for this long is offline: it is
//! # not offered for recoveries, and a recovery is neither planned nor started on it.
//! machine_offline_after = "90s"
//!
//! [watch]
//! interval = "15s"
//!
//! [backoff]
//! initial = "1s"
//! max_attempts = 5
//!
//! [[receivers]]
//! type = "webhook"
//! name = "ops"
//! url = "https://hooks.example.net/keel"
//!
//! [[receivers]]
//! type = "email"
//! name = "oncall"
//! smtp_host = "mail.example.net"
//! from = "keel@example.net"
//! to = ["oncall@example.net"]
//! ```
//!
//! Every key is checked: a misspelt one is an error naming it, not a silently ignored setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The settings, with their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The address people reach the server at; links in alerts start with it. Default: the
    /// listening address.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Rule files (TOML or JSON) loaded at start, after the built-in pack (a rule of the same
    /// name replaces the built-in one) and before rules saved through the API (which win).
    #[serde(default)]
    pub rules_files: Vec<PathBuf>,
    /// Labels alerts are grouped on: one notification per group.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// A recovery machine that is not busy and has not asked for work for this long is
    /// offline (`90s`; machines ask every 20 s).
    #[serde(
        default = "default_machine_offline_after",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub machine_offline_after: Duration,
    /// The missing-profile watch.
    #[serde(default)]
    pub watch: Watch,
    /// Retries of a notification.
    #[serde(default)]
    pub backoff: keel_notify::Backoff,
    /// Where alerts are delivered.
    #[serde(default)]
    pub receivers: Vec<keel_notify::Receiver>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            external_url: None,
            rules_files: Vec::new(),
            group_by: default_group_by(),
            machine_offline_after: default_machine_offline_after(),
            watch: Watch::default(),
            backoff: keel_notify::Backoff::default(),
            receivers: Vec::new(),
        }
    }
}

fn default_machine_offline_after() -> Duration {
    Duration::from_secs(90)
}

fn default_group_by() -> Vec<String> {
    vec!["host".into()]
}

/// How often the watch looks for hosts whose profile is overdue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Time between two looks (`15s`).
    #[serde(
        default = "default_watch_interval",
        with = "jiff::fmt::serde::unsigned_duration::friendly::compact::required"
    )]
    pub interval: Duration,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            interval: default_watch_interval(),
        }
    }
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(15)
}

/// Why the settings file was refused.
#[derive(Debug, thiserror::Error)]
#[error("settings file {path}: {detail}")]
pub struct SettingsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub detail: String,
}

impl Settings {
    /// Reads and checks a settings file.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let err = |detail: String| SettingsError {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        // Relative rule files are read next to the settings file.
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut settings.rules_files {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        settings.check().map_err(err)?;
        Ok(settings)
    }

    /// Checks what can be checked before starting: receivers, names, intervals.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for r in &self.receivers {
            r.validate().map_err(|e| e.to_string())?;
            if !names.insert(r.name()) {
                return Err(format!("two receivers are named {:?}", r.name()));
            }
        }
        if self.watch.interval < Duration::from_millis(100) {
            return Err("watch.interval must be at least 100ms".into());
        }
        if let Some(url) = &self.external_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "external_url {url:?} must start with https:// or http://"
                ));
            }
        }
        Ok(())
    }

    /// The rules of the rule files, in order.
    pub fn file_rules(&self) -> Result<Vec<keel_rules::Rule>, SettingsError> {
        let mut out = Vec::new();
        for path in &self.rules_files {
            let err = |detail: String| SettingsError {
                path: path.clone(),
                detail,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let name = path.display().to_string();
            let rules = if path.extension().is_some_and(|e| e == "json") {
                keel_rules::rules_from_json(&text, &name)
            } else {
                keel_rules::rules_from_toml(&text, &name)
            }
            .map_err(|e| err(e.to_string()))?;
            out.extend(rules);
        }
        Ok(out)
    }
}
