//! Keel's agent: enrolls with a server, captures profiles, keeps them in an on-disk spool and
//! delivers them in order, as patches against the last profile the server acknowledged.
//!
//! The spool is what makes delivery safe: a capture is written to disk before any upload is
//! tried, and leaves the spool only once the server has acknowledged it. A server that is down
//! for a day receives every capture of that day, oldest first, when it comes back.
//!
//! State directory layout (`--state-dir`, default `/var/lib/keel`):
//!
//! ```text
//! agent/agent.json     server URL, agent id, host name, CA fingerprint
//! agent/ca.pem         the server's CA, pinned at enrollment
//! agent/agent.key      the agent's ed25519 secret key (0600)
//! agent/acked.keel     the last profile the server acknowledged (the base of patches)
//! agent/spool/*.keel   captures waiting for delivery, in order
//! agent/rejected/      captures the server refused for good, with the reason
//! agent/rollback/      the journals of rollback jobs (`ID.journal.json`)
//! ```
//!
//! Besides captures, the agent applies the rollback jobs an administrator approved on the
//! server ([`Agent::next_rollback`], [`Agent::run_rollback`]): a dry run, then the steps with a
//! journal, a new capture delivered, and a signed report.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_profile::{make_patch, AgentKey, Blob, Hash, ProfileFile, Upload, UploadBody};
use keel_schedule::Schedule;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A local file.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The agent is not enrolled yet.
    #[error("this agent is not enrolled (no {0})\nhint: run `keel agent enroll --server URL --token TOKEN` first")]
    NotEnrolled(PathBuf),
    /// The enrollment token is not one this server printed.
    #[error("malformed enrollment token\nhint: use the enrollment token `keel server` printed on its first start (keel-enroll-…)")]
    BadToken,
    /// The server's CA is not the one the token names.
    #[error("the server's CA fingerprint is {found}, but the enrollment token expects {expected}: refusing to trust this server")]
    CaMismatch {
        /// From the token.
        expected: String,
        /// From the server.
        found: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// The server refused the request.
    #[error("server refused {what}: HTTP {status}: {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Capturing failed.
    #[error(transparent)]
    Capture(#[from] keel_collect::CollectError),
    /// A rollback job could not be read or applied.
    #[error(transparent)]
    Rollback(#[from] keel_rollback::RollbackError),
    /// A profile file could not be read.
    #[error("{path}: {detail}")]
    Profile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// What enrollment leaves behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Server base URL (`https://host:port`).
    pub server: String,
    /// The id the server gave this agent.
    pub agent_id: String,
    /// The host name it is enrolled as.
    pub host: String,
    /// SHA-256 of the server's CA certificate.
    pub ca_fingerprint: String,
}

/// An agent's state directory.
#[derive(Debug, Clone)]
pub struct Agent {
    dir: PathBuf,
    /// Root directory captures read (normally `/`).
    pub root: PathBuf,
    /// The state directory the collectors use (the secrets' fingerprint key).
    pub state_dir: PathBuf,
    /// age recipient secrets are encrypted to.
    pub recovery_recipient: Option<String>,
}

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Profiles acknowledged by the server.
    pub delivered: usize,
    /// Profiles the server refused for good (moved to `rejected/`).
    pub rejected: usize,
    /// Profiles still waiting.
    pub pending: usize,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Why delivery stopped early, if it did.
    pub stopped: Option<String>,
}

impl Agent {
    /// The agent of a state directory.
    pub fn new(state_dir: &Path, root: &Path) -> Self {
        Agent {
            dir: state_dir.join("agent"),
            root: root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            recovery_recipient: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Enrolls with the server: checks the server's CA against the token, creates this
    /// agent's key and registers it for `host`.
    ///
    /// `schedule`, when given, becomes the host's schedule on the server: the agent captures
    /// on it and the server expects profiles on it.
    pub fn enroll(
        &self,
        server: &str,
        token: &str,
        host: &str,
        machine_id: &str,
        schedule: Option<&Schedule>,
    ) -> Result<AgentConfig, AgentError> {
        let server = server.trim_end_matches('/').to_string();
        let expected = token
            .strip_prefix("keel-enroll-")
            .and_then(|t| t.rsplit_once('-'))
            .map(|(_, fp)| fp.to_ascii_lowercase())
            .filter(|fp| fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(AgentError::BadToken)?;

        // The CA is fetched over an unverified connection, then checked against the
        // fingerprint the token carries: only the server that printed the token passes.
        let insecure = http_agent(None);
        let url = format!("{server}/api/v1/ca");
        let mut resp = insecure
            .get(&url)
            .call()
            .map_err(|e| AgentError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let ca_pem = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| AgentError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let found = ca_fingerprint(&ca_pem).ok_or_else(|| AgentError::Refused {
            what: "the CA certificate".into(),
            status: resp.status().as_u16(),
            message: "the answer holds no certificate".into(),
        })?;
        if found != expected {
            return Err(AgentError::CaMismatch { expected, found });
        }

        std::fs::create_dir_all(&self.dir).map_err(|e| file_err(&self.dir, e))?;
        let key =
            AgentKey::from_secret(random32().map_err(|e| file_err(Path::new("/dev/urandom"), e))?);
        let client = http_agent(Some(&ca_pem));
        let url = format!("{server}/api/v1/enroll");
        let mut body = serde_json::json!({
            "host": host,
            "machine_id": machine_id,
            "public_key": Hash(key.public_key()).to_hex(),
        });
        if let Some(schedule) = schedule {
            body["schedule"] = serde_json::to_value(schedule).expect("serialisable");
        }
        let mut resp = client
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| AgentError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 201 {
            return Err(AgentError::Refused {
                what: "enrollment".into(),
                status,
                message: error_message(&text),
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| AgentError::Refused {
                what: "enrollment".into(),
                status,
                message: e.to_string(),
            })?;
        let config = AgentConfig {
            server,
            agent_id: v["agent_id"].as_str().unwrap_or_default().to_string(),
            host: v["host"].as_str().unwrap_or(host).to_string(),
            ca_fingerprint: found,
        };
        write_atomic(&self.path("ca.pem"), ca_pem.as_bytes(), 0o644)?;
        if let Ok(schedule) = serde_json::from_value::<Schedule>(v["schedule"].clone()) {
            self.save_schedule(&schedule)?;
        }
        write_atomic(&self.path("agent.key"), &key.secret(), 0o600)?;
        // A new enrollment starts a new chain: the old acknowledged base means nothing now.
        let _ = std::fs::remove_file(self.path("acked.keel"));
        write_atomic(
            &self.path("agent.json"),
            serde_json::to_string_pretty(&config)
                .expect("serialisable")
                .as_bytes(),
            0o644,
        )?;
        Ok(config)
    }

    /// The schedule the server last gave this agent (every hour until it said otherwise).
    pub fn schedule(&self) -> Schedule {
        std::fs::read(self.path("schedule.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_schedule(&self, schedule: &Schedule) -> Result<(), AgentError> {
        if self.schedule() == *schedule && self.path("schedule.json").exists() {
            return Ok(());
        }
        write_atomic(
            &self.path("schedule.json"),
            serde_json::to_string_pretty(schedule)
                .expect("serialisable")
                .as_bytes(),
            0o644,
        )
    }

    /// The enrollment, if any.
    pub fn config(&self) -> Result<AgentConfig, AgentError> {
        let p = self.path("agent.json");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentError::NotEnrolled(p))
            }
            Err(e) => return Err(file_err(&p, e)),
        };
        serde_json::from_str(&text).map_err(|e| file_err(&p, e))
    }

    fn key(&self) -> Result<AgentKey, AgentError> {
        let p = self.path("agent.key");
        let b = std::fs::read(&p).map_err(|e| file_err(&p, e))?;
        let secret: [u8; 32] = b
            .try_into()
            .map_err(|_| file_err(&p, "not a 32-byte key"))?;
        Ok(AgentKey::from_secret(secret))
    }

    fn spool_dir(&self) -> PathBuf {
        self.path("spool")
    }

    /// Spooled captures, oldest first.
    pub fn spooled(&self) -> Result<Vec<PathBuf>, AgentError> {
        let dir = self.spool_dir();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "keel"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(file_err(&dir, e)),
        };
        files.sort();
        Ok(files)
    }

    /// Captures a profile and puts it in the spool; returns its path.
    pub fn capture_to_spool(&self) -> Result<PathBuf, AgentError> {
        self.config()?;
        // Chain to the newest capture we know of: the last spooled, else the acknowledged one.
        let previous_path = self
            .spooled()?
            .pop()
            .or_else(|| Some(self.path("acked.keel")).filter(|p| p.exists()));
        let previous = previous_path.as_deref().map(read_profile).transpose()?;
        let mut opts = keel_collect::Options::new(&self.root);
        opts.state_dir.clone_from(&self.state_dir);
        opts.recovery_recipient.clone_from(&self.recovery_recipient);
        opts.previous = previous;
        let file = keel_collect::capture(&opts)?;
        let bytes = file.encode().map_err(|e| file_err(&self.spool_dir(), e))?;
        let dir = self.spool_dir();
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        // Names sort in capture order: start time, then a counter for captures in the same ms.
        let mut n = 0u32;
        let path = loop {
            let p = dir.join(format!(
                "{:016}-{n:04}.keel",
                file.profile.meta.started_at_ms.max(0)
            ));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        write_atomic(&path, &bytes, 0o600)?;
        Ok(path)
    }

    /// Delivers spooled captures in order until the spool is empty or the server is away.
    pub fn deliver(&self) -> Result<Delivery, AgentError> {
        let config = self.config()?;
        let key = self.key()?;
        let ca_path = self.path("ca.pem");
        let ca = std::fs::read_to_string(&ca_path).map_err(|e| file_err(&ca_path, e))?;
        let client = http_agent(Some(&ca));
        let url = format!("{}/api/v1/upload", config.server);
        let mut report = Delivery::default();
        let files = self.spooled()?;
        // The base of the patches: the last acknowledged profile, read once and then kept up
        // to date in memory as captures are acknowledged.
        let mut base = read_profile(&self.path("acked.keel")).ok();
        for (i, path) in files.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
            let file = ProfileFile::decode(&bytes).map_err(|e| AgentError::Profile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            match Self::deliver_one(
                &client,
                &url,
                &config,
                &key,
                base.as_ref(),
                &file,
                &mut report,
            ) {
                Ok(Outcome::Acked(schedule)) => {
                    if let Some(schedule) = schedule {
                        self.save_schedule(&schedule)?;
                    }
                    write_atomic(&self.path("acked.keel"), &bytes, 0o600)?;
                    std::fs::remove_file(path).map_err(|e| file_err(path, e))?;
                    base = Some(file);
                    report.delivered += 1;
                }
                Ok(Outcome::Rejected(reason)) => {
                    let dir = self.path("rejected");
                    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
                    let name = path.file_name().expect("spool files have names");
                    std::fs::rename(path, dir.join(name)).map_err(|e| file_err(path, e))?;
                    let _ = std::fs::write(dir.join(name).with_extension("reason"), &reason);
                    report.rejected += 1;
                }
                Err(stop) => {
                    report.pending = files.len() - i;
                    report.stopped = Some(stop);
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_one(
        client: &ureq::Agent,
        url: &str,
        config: &AgentConfig,
        key: &AgentKey,
        base: Option<&ProfileFile>,
        file: &ProfileFile,
        report: &mut Delivery,
    ) -> Result<Outcome, String> {
        let hash = file.hash().map_err(|e| e.to_string())?;
        let mut upload = Upload {
            agent_id: config.agent_id.clone(),
            profile_hash: hash,
            signature: Blob(key.sign(&hash)),
            body: match base {
                Some(b) => UploadBody::Patch(Box::new(
                    make_patch(&b.profile, &file.profile).map_err(|e| e.to_string())?,
                )),
                None => UploadBody::Full(Blob(
                    keel_profile::profile_bytes(&file.profile).map_err(|e| e.to_string())?,
                )),
            },
            blobs: std::collections::BTreeMap::new(),
        };
        // At most three rounds: as sent, with the blobs the server lacks, whole.
        for _ in 0..3 {
            let body = upload.encode();
            report.bytes_sent += body.len() as u64;
            let mut resp = match client
                .post(url)
                .header("Content-Type", "application/octet-stream")
                .send(&body[..])
            {
                Ok(r) => r,
                Err(e) => return Err(format!("cannot reach {url}: {e}")),
            };
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            let code = v["code"].as_str().unwrap_or("");
            match (status, code) {
                (201, _) | (409, "already_stored") => {
                    return Ok(Outcome::Acked(
                        serde_json::from_value(v["schedule"].clone()).ok(),
                    ))
                }
                (409, "missing_blobs") => {
                    for h in v["missing"].as_array().into_iter().flatten() {
                        let h: Hash = h
                            .as_str()
                            .unwrap_or("")
                            .parse()
                            .map_err(|e| format!("{e}"))?;
                        let Some(b) = file.blobs.get(&h) else {
                            return Ok(Outcome::Rejected(format!(
                                "server asked for blob {h}, which this profile does not hold"
                            )));
                        };
                        upload.blobs.insert(h, b.clone());
                    }
                }
                (409, "unknown_base") => {
                    upload.body = UploadBody::Full(Blob(
                        keel_profile::profile_bytes(&file.profile).map_err(|e| e.to_string())?,
                    ));
                }
                (409 | 400 | 413, _) | (403, "wrong_host") => {
                    return Ok(Outcome::Rejected(format!(
                        "HTTP {status}: {}",
                        error_message(&text)
                    )))
                }
                _ => {
                    return Err(format!(
                        "server answered HTTP {status}: {}",
                        error_message(&text)
                    ))
                }
            }
        }
        Err("server kept asking for more; will retry".into())
    }
}

/// A rollback job the server handed to this agent.
#[derive(Debug, Clone, Deserialize)]
pub struct RollbackJob {
    /// The job's id on the server.
    pub id: i64,
    /// The plan to apply.
    pub plan: keel_rollback::Plan,
    /// Who approved it.
    #[serde(default)]
    pub decided_by: Option<String>,
}

/// How a rollback job ended, as the server recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackResult {
    /// The job.
    pub id: i64,
    /// `done` or `failed`.
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
}

impl Agent {
    /// Sends a signed JSON request to the server: the body carries the agent id and the time,
    /// the `X-Keel-Signature` header its signature with the agent's key.
    fn signed_post(
        &self,
        path: &str,
        mut body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), AgentError> {
        use base64::Engine as _;
        let config = self.config()?;
        let key = self.key()?;
        let ca_path = self.path("ca.pem");
        let ca = std::fs::read_to_string(&ca_path).map_err(|e| file_err(&ca_path, e))?;
        body["agent_id"] = config.agent_id.clone().into();
        body["at_ms"] = now_ms().into();
        let bytes = body.to_string().into_bytes();
        let sig = key.sign(&keel_rollback::agent_request_hash(&bytes));
        let url = format!("{}{path}", config.server);
        let mut resp = http_agent(Some(&ca))
            .post(&url)
            .header("Content-Type", "application/json")
            .header(
                "X-Keel-Signature",
                base64::engine::general_purpose::STANDARD.encode(sig),
            )
            .send(&bytes[..])
            .map_err(|e| AgentError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if status >= 400 {
            return Err(AgentError::Refused {
                what: path.to_string(),
                status,
                message: error_message(&text),
            });
        }
        Ok((status, v))
    }

    /// The next rollback job approved for this host, if any (the server marks it running).
    pub fn next_rollback(&self) -> Result<Option<RollbackJob>, AgentError> {
        let (status, v) =
            self.signed_post("/api/v1/agent/rollbacks/next", serde_json::json!({}))?;
        if status == 204 {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| AgentError::Refused {
                what: "rollback job".into(),
                status,
                message: format!("the server sent a job this agent cannot read: {e}"),
            })
    }

    /// Applies a rollback job: a dry run first, then the steps with a journal (a job cut short
    /// resumes where it stopped), then a capture delivered to the server and a signed report.
    /// The server marks the job done only when that capture shows the selected changes gone.
    /// `log` hears what happens, one line at a time.
    pub fn run_rollback(
        &self,
        job: &RollbackJob,
        identity: Option<&age::x25519::Identity>,
        log: &mut dyn FnMut(&str),
    ) -> Result<RollbackResult, AgentError> {
        let id = job.id;
        let plan = &job.plan;
        log(&format!(
            "rollback {id}: approved by {}, {} steps for {} selected changes",
            job.decided_by.as_deref().unwrap_or("?"),
            plan.steps.len(),
            plan.included_rows().len()
        ));
        for line in plan.to_string().lines().filter(|l| !l.is_empty()) {
            log(&format!("rollback {id}: {line}"));
        }
        let blobs = plan.blob_map()?;
        log(&format!("rollback {id}: dry run"));
        let dry = keel_rollback::apply(
            plan,
            &mut keel_rollback::DryRun {
                root: &self.root,
                blobs: &blobs,
            },
            None,
            &mut |o| log(&format!("rollback {id}:   {}. {}", o.number, o.output)),
        );
        let outcome: (bool, Option<String>, Vec<String>) = if let Err(e) = dry {
            (false, Some(format!("dry run failed: {e}")), Vec::new())
        } else {
            log(&format!("rollback {id}: applying"));
            let journal = self.path("rollback").join(format!("{id}.journal.json"));
            let mut real = keel_rollback::Real {
                root: &self.root,
                blobs: &blobs,
                identity,
            };
            let mut lines = Vec::new();
            let res = keel_rollback::apply(plan, &mut real, Some(&journal), &mut |o| {
                let l = format!("{}. {}: {}", o.number, o.description, o.output);
                log(&format!("rollback {id}:   {l}"));
                lines.push(l);
            });
            match res {
                Ok(_) => (true, None, lines),
                Err(e) => (false, Some(e.to_string()), lines),
            }
        };
        // A new capture, delivered, so the server can check the result.
        log(&format!("rollback {id}: capturing to check"));
        let spooled = self.capture_to_spool()?;
        let hash = read_profile(&spooled)?
            .hash()
            .map_err(|e| file_err(&spooled, e))?;
        let mut last_err = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            if let Err(e) = self.deliver() {
                last_err = Some(e);
                continue;
            }
            let report = serde_json::json!({
                "ok": outcome.0,
                "error": outcome.1,
                "profile_hash": hash,
                "output": outcome.2.join("\n"),
            });
            match self.signed_post(&format!("/api/v1/agent/rollbacks/{id}/report"), report) {
                Ok((_, v)) => {
                    let r = RollbackResult {
                        id,
                        status: v["status"].as_str().unwrap_or("?").to_string(),
                        reason: v["reason"].as_str().map(String::from),
                    };
                    log(&format!(
                        "rollback {id}: {}{}",
                        r.status,
                        r.reason
                            .as_deref()
                            .map(|x| format!(": {x}"))
                            .unwrap_or_default()
                    ));
                    return Ok(r);
                }
                // The capture is not stored yet: deliver again and retry.
                Err(AgentError::Refused { status: 409, .. }) if attempt < 4 => {}
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| AgentError::Refused {
            what: format!("report of rollback {id}"),
            status: 409,
            message: "the server did not take the report".into(),
        }))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

enum Outcome {
    /// Stored; the server says which schedule the host is on.
    Acked(Option<Schedule>),
    Rejected(String),
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn read_profile(path: &Path) -> Result<ProfileFile, AgentError> {
    let data = std::fs::read(path).map_err(|e| AgentError::Profile {
        path: path.into(),
        detail: e.to_string(),
    })?;
    ProfileFile::decode(&data).map_err(|e| AgentError::Profile {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// An HTTP client trusting only `ca_pem`, or (for fetching the CA itself) nothing at all.
fn http_agent(ca_pem: Option<&str>) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let tls = match ca_pem.and_then(|p| Certificate::from_pem(p.as_bytes()).ok()) {
        Some(cert) => TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[cert]))
            .build(),
        None => TlsConfig::builder().disable_verification(true).build(),
    };
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// SHA-256 (hex) of the first certificate in a PEM text.
pub fn ca_fingerprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(Hash(Sha256::digest(der).into()).to_hex())
}

fn random32() -> std::io::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
    Ok(k)
}

/// Writes a file atomically (temporary name, sync, rename).
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(path, e)
    })
}
