//! Turning an upload into a stored profile: verify, rebuild, check, diff, commit.
//!
//! Nothing is acknowledged before the store has committed it, and nothing half-checked is
//! ever written: every refusal happens before the write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_profile::{
    apply_patch, diff, make_patch, Change, DiffOptions, Hash, Profile, Upload, UploadBody,
};
use keel_store::{Ingest, Store, StoreError};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Why an upload was not stored; each maps to an HTTP status and a machine-readable code.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not a valid upload.
    #[error("{0}")]
    Malformed(String),
    /// Unknown agent, or the signature does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// A revoked agent.
    #[error("{0}")]
    Forbidden(String),
    /// A profile of another host than the agent's.
    #[error("{0}")]
    WrongHost(String),
    /// The profile is already stored (a replay, or a retry after a lost answer).
    #[error("profile {hash} is already stored as {id}")]
    AlreadyStored {
        /// Its hash.
        hash: Hash,
        /// Its id.
        id: i64,
    },
    /// Older than the host's newest profile.
    #[error("{0}")]
    Stale(String),
    /// The patch's base is not the host's newest stored profile: send the profile whole.
    #[error("base profile {0} is not this host's newest profile; send the whole profile")]
    UnknownBase(Hash),
    /// Blobs the profile refers to that neither the upload nor the store holds.
    #[error("{} blobs are missing", .0.len())]
    MissingBlobs(Vec<Hash>),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl IngestError {
    /// Short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::Forbidden(_) => "forbidden",
            IngestError::WrongHost(_) => "wrong_host",
            IngestError::AlreadyStored { .. } => "already_stored",
            IngestError::Stale(_) => "stale",
            IngestError::UnknownBase(_) => "unknown_base",
            IngestError::MissingBlobs(_) => "missing_blobs",
            IngestError::Store(_) => "store",
        }
    }
}

/// A stored profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    /// Store id.
    pub profile_id: i64,
    /// Its hash.
    pub hash: Hash,
    /// The host.
    pub host: String,
    /// Non-volatile changes against the previous profile.
    pub changes: usize,
    /// Alerts the rules raised on it (including ones already firing).
    pub alerts: usize,
    /// The schedule the host's agent is to capture on.
    pub schedule: keel_store::keel_schedule::Schedule,
}

/// A host's newest profile: hash, store id, content.
type Latest = (Hash, i64, Arc<Profile>);

struct Job {
    ingest: Ingest,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

/// The ingest pipeline: one per server.
pub struct Ingestor {
    store: Arc<dyn Store>,
    writer: std::sync::mpsc::Sender<Job>,
    /// Each host's newest profile, so a patch or a diff rarely needs the store.
    latest: Mutex<HashMap<i64, Latest>>,
    /// One upload at a time per host, so each diffs against the one before.
    host_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
    /// The rules every profile is checked against: the built-in pack and the stored rules.
    rules: std::sync::RwLock<Arc<Rules>>,
}

/// A compiled rule set and which of its rules describe a state (their alerts resolve by
/// themselves when the state ends).
pub struct Rules {
    set: keel_rules::RuleSet,
    state: Vec<String>,
}

impl Rules {
    /// Compiles the built-in pack, then the rule files' rules, then `stored` (saved through
    /// the API); a later rule replaces an earlier one of the same name. Broken rules are
    /// returned, not compiled.
    pub fn compile(
        files: &[keel_rules::Rule],
        stored: Vec<keel_rules::Rule>,
    ) -> (Rules, Vec<keel_rules::RuleError>) {
        let all = layered(files, stored)
            .into_iter()
            .map(|(_, rule)| rule)
            .collect::<Vec<_>>();
        let state = all
            .iter()
            .filter(|r| {
                matches!(
                    r.labels.get("kind").map(String::as_str),
                    Some("require" | "state")
                )
            })
            .map(|r| r.name.clone())
            .collect();
        let (set, errors) = keel_rules::RuleSet::compile_each(all);
        (Rules { set, state }, errors)
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Keel's built-in pack.
    Builtin,
    /// A rule file named in the settings.
    File,
    /// Saved through the API.
    Stored,
}

/// The rules in force, by layer: built-in, then files, then stored; a later rule replaces an
/// earlier one of the same name, keeping the earlier one's place.
pub fn layered(
    files: &[keel_rules::Rule],
    stored: Vec<keel_rules::Rule>,
) -> Vec<(Origin, keel_rules::Rule)> {
    let mut out: Vec<(Origin, keel_rules::Rule)> = Vec::new();
    let layers = [
        (Origin::Builtin, keel_rules::builtin_rules()),
        (Origin::File, files.to_vec()),
        (Origin::Stored, stored),
    ];
    for (origin, rules) in layers {
        for rule in rules {
            match out.iter_mut().find(|(_, r)| r.name == rule.name) {
                Some(slot) => *slot = (origin, rule),
                None => out.push((origin, rule)),
            }
        }
    }
    out
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.set.len())
            .field("state", &self.state)
            .finish()
    }
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor").finish_non_exhaustive()
    }
}

impl Ingestor {
    /// Starts the writer thread.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, rules: Rules) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let s = Arc::clone(&store);
        std::thread::Builder::new()
            .name("keel-writer".into())
            .spawn(move || writer(&*s, &rx))
            .expect("cannot start the store writer thread");
        Ingestor {
            store,
            writer: tx,
            latest: Mutex::new(HashMap::new()),
            host_locks: Mutex::new(HashMap::new()),
            metrics,
            rules: std::sync::RwLock::new(Arc::new(rules)),
        }
    }

    /// Replaces the rules new profiles are checked against.
    pub fn set_rules(&self, rules: Rules) {
        *self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rules);
    }

    /// Verifies and stores one upload.
    pub async fn ingest(&self, body: &[u8], now_ms: i64) -> Result<Stored, IngestError> {
        let upload = Upload::decode(body).map_err(|e| IngestError::Malformed(e.to_string()))?;
        let agent = self.store.agent(&upload.agent_id)?.ok_or_else(|| {
            IngestError::Unauthorized(format!("unknown agent {}", upload.agent_id))
        })?;
        if agent.revoked {
            return Err(IngestError::Forbidden(format!(
                "agent {} was replaced by a newer enrollment of its host",
                agent.id
            )));
        }
        upload
            .verify(&agent.public_key)
            .map_err(|e| IngestError::Unauthorized(e.to_string()))?;
        let host = self
            .store
            .host_by_id(agent.host_id)?
            .ok_or_else(|| IngestError::Forbidden("the agent's host is gone".into()))?;

        let lock = {
            let mut locks = self
                .host_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(host.id).or_default())
        };
        let _guard = lock.lock().await;

        if let Some(p) = self.store.profile_by_hash(&upload.profile_hash)? {
            return Err(IngestError::AlreadyStored {
                hash: p.hash,
                id: p.id,
            });
        }
        let latest = self.latest_of(host.id)?;

        // Rebuild the profile and check it is exactly what was signed.
        let (profile, profile_bytes) = match &upload.body {
            UploadBody::Full(bytes) => {
                if Hash::of(&bytes.0) != upload.profile_hash {
                    return Err(IngestError::Malformed(
                        "profile bytes do not hash to the signed hash".into(),
                    ));
                }
                let p: Profile = ciborium::from_reader(&bytes.0[..])
                    .map_err(|e| IngestError::Malformed(format!("profile does not decode: {e}")))?;
                (p, bytes.0.clone())
            }
            UploadBody::Patch(patch) => {
                let Some((base_hash, _, base)) =
                    latest.as_ref().filter(|(h, _, _)| *h == patch.base)
                else {
                    return Err(IngestError::UnknownBase(patch.base));
                };
                debug_assert_eq!(*base_hash, patch.base);
                apply_patch(base, patch, upload.profile_hash)
                    .map_err(|e| IngestError::Malformed(e.to_string()))?
            }
        };

        // An agent writes only its own host.
        if profile.meta.machine_id != host.machine_id {
            return Err(IngestError::WrongHost(format!(
                "profile is of machine-id {:?}, but agent {} is enrolled for host {} (machine-id {})",
                profile.meta.machine_id, agent.id, host.name, host.machine_id
            )));
        }
        if let Some((_, _, prev)) = &latest {
            if profile.meta.started_at_ms <= prev.meta.started_at_ms {
                return Err(IngestError::Stale(format!(
                    "profile captured at {} ms is not newer than host {}'s newest profile ({} ms)",
                    profile.meta.started_at_ms, host.name, prev.meta.started_at_ms
                )));
            }
        }

        // Blobs: those sent must match their address; those referred to must all be present.
        for (h, b) in &upload.blobs {
            if Hash::of(&b.0) != *h {
                return Err(IngestError::Malformed(format!(
                    "blob {h} does not match its hash"
                )));
            }
        }
        let refs = profile.blob_refs();
        let not_sent: Vec<Hash> = refs
            .iter()
            .filter(|h| !upload.blobs.contains_key(h))
            .copied()
            .collect();
        let missing = self.store.missing_blobs(&not_sent)?;
        if !missing.is_empty() {
            return Err(IngestError::MissingBlobs(missing));
        }
        let blobs: Vec<(Hash, Vec<u8>)> = upload
            .blobs
            .into_iter()
            .filter(|(h, _)| refs.binary_search(h).is_ok())
            .map(|(h, b)| (h, b.0))
            .collect();

        let changes: Vec<Change> = match &latest {
            Some((_, _, prev)) => diff(prev, &profile, DiffOptions::default()),
            None => Vec::new(),
        };
        let n_changes = changes.len();
        let (alerts, state_rules) = self.evaluate(
            &host,
            &profile,
            latest.as_ref().map(|(_, _, p)| &**p),
            &changes,
            now_ms,
        );
        // Stored as a patch against the host's previous profile: the one the upload carried,
        // or one made here for a whole upload.
        let delta = latest.as_ref().and_then(|(_, base_id, base)| {
            let made;
            let patch = match &upload.body {
                UploadBody::Patch(p) => &**p,
                UploadBody::Full(_) => {
                    made = make_patch(base, &profile).ok()?;
                    &made
                }
            };
            let mut bytes = Vec::new();
            ciborium::into_writer(patch, &mut bytes).ok()?;
            Some(keel_store::Delta {
                base_id: *base_id,
                patch: bytes,
            })
        });
        let ingest = Ingest {
            host_id: host.id,
            hash: upload.profile_hash,
            previous: latest.as_ref().map(|(h, _, _)| *h),
            captured_at: profile.meta.started_at_ms,
            received_at: now_ms,
            agent_version: profile.meta.agent_version.clone(),
            profile: profile_bytes,
            delta,
            blobs,
            changes,
            alerts,
            state_rules,
        };
        let n_alerts = ingest.alerts.len();
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job { ingest, reply: tx })
            .map_err(|_| StoreError::Conflict("the store writer has stopped".into()))?;
        let id = rx
            .await
            .map_err(|_| StoreError::Conflict("the store writer has stopped".into()))??;
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(host.id, (upload.profile_hash, id, Arc::new(profile)));
        self.metrics
            .profiles_stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Stored {
            profile_id: id,
            hash: upload.profile_hash,
            host: host.name,
            changes: n_changes,
            alerts: n_alerts,
            schedule: host.schedule,
        })
    }

    /// Checks a profile against the rules: the alerts to raise, and the state rules whose
    /// alerts resolve when they did not fire.
    fn evaluate(
        &self,
        host: &keel_store::HostRecord,
        profile: &Profile,
        previous: Option<&Profile>,
        changes: &[Change],
        now_ms: i64,
    ) -> (Vec<keel_store::NewAlert>, Vec<String>) {
        let rules = Arc::clone(
            &self
                .rules
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let info = keel_rules::HostInfo {
            name: host.name.clone(),
            labels: host.labels.clone(),
        };
        let eval = rules.set.evaluate(&keel_rules::Input {
            profile,
            previous,
            changes,
            host: &info,
        });
        for (rule, _) in &eval.errors {
            self.metrics.rule_error(rule);
        }
        let alerts = eval
            .firings
            .into_iter()
            .map(|f| {
                let mut labels = f.labels.clone();
                labels.insert("alertname".into(), f.rule.clone());
                labels.insert("host".into(), host.name.clone());
                labels
                    .entry("severity".into())
                    .or_insert_with(|| f.severity.as_str().to_string());
                if let Some(item) = &f.item_key {
                    labels.insert("item".into(), item.clone());
                }
                let fingerprint = keel_notify::fingerprint(&labels);
                keel_store::NewAlert {
                    fingerprint,
                    rule: f.rule,
                    severity: f.severity.as_str().to_string(),
                    labels,
                    annotations: [("summary".to_string(), f.message)].into(),
                    starts_at: now_ms,
                }
            })
            .collect();
        (alerts, rules.state.clone())
    }

    fn latest_of(&self, host_id: i64) -> Result<Option<Latest>, IngestError> {
        if let Some(v) = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&host_id)
        {
            return Ok(Some(v.clone()));
        }
        let Some(summary) = self.store.profiles(host_id, None, 1)?.into_iter().next() else {
            return Ok(None);
        };
        let Some((_, bytes)) = self.store.profile(summary.id)? else {
            return Ok(None);
        };
        let p: Profile = ciborium::from_reader(&bytes[..])
            .map_err(|e| StoreError::Corrupt(format!("stored profile {}: {e}", summary.id)))?;
        let v = (summary.hash, summary.id, Arc::new(p));
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(host_id, v.clone());
        Ok(Some(v))
    }
}

/// The single writer: takes whatever jobs are waiting and commits them in one transaction, so
/// many concurrent uploads share one disk sync.
fn writer(store: &dyn Store, rx: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 128 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let batch: Vec<Ingest> = jobs.iter().map(|j| j.ingest.clone()).collect();
        match store.ingest(&batch) {
            Ok(ids) => {
                for (j, id) in jobs.into_iter().zip(ids) {
                    let _ = j.reply.send(Ok(id));
                }
            }
            Err(_) => {
                // One bad apple: commit the rest one by one so each gets its own answer.
                for j in jobs {
                    let r = store
                        .ingest(std::slice::from_ref(&j.ingest))
                        .map(|ids| ids[0]);
                    let _ = j.reply.send(r);
                }
            }
        }
    }
}
