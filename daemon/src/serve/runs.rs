//! Runs: jobs submitted over HTTP, kept in the very job store the file path uses.
//!
//! A run is a one-job file `inbox/ID.json` (`{"workflow", "id": ID, "inputs"}`), renamed in
//! whole, so every daemon takes it like a dropped file and its outputs land in
//! `OUTPUTS/ID/manifest.json`. Beside the store, in `JOBS/serve/`, the server keeps what the
//! job file cannot say:
//! - `runs/ID.json`: the run's record (workflow, creation time, webhook, the job it wrote);
//! - `keys/SHA256(KEY)`: the record of the run an `Idempotency-Key` made (the same file as its
//!   `runs/ID.json`), linked into place with `link(2)` so that of two concurrent requests with
//!   one key exactly one makes the run, across processes and restarts;
//! - `hooks/ID.owed` / `hooks/ID.json`: a webhook still owed, and how its delivery ended.
//!
//! A run's state is read back from where its file is: `inbox/` or `queue/` (queued or
//! running, by its lease), `OUTPUTS/ID/manifest.json` (done), `failed/ID.json` and its report
//! (failed or cancelled).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::fsutil::write_atomic_unsynced;
use crate::manifest::Manifest;
use crate::report::{FileReport, JobFailure, Status};
use crate::store::{DirStore, FileKey, JobStore, Slot};

/// What the server records of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// `name@version` as it was validated.
    pub workflow: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// sha256 of the request (workflow, inputs, webhook) in canonical form.
    pub body: String,
    /// The job file's content.
    pub job: Value,
}

/// What a submission came to.
#[derive(Debug)]
pub enum Submitted {
    /// A new run.
    Created(String),
    /// The idempotency key was seen with this body: the run it made.
    Replayed(String),
    /// The idempotency key was seen with another body.
    Conflict(String),
}

/// Where a run's job is, as read from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Queued {
        position: usize,
    },
    Running {
        phase: Option<String>,
        progress: Option<Value>,
    },
    Done(Box<Manifest>),
    /// In `done/` without a manifest (nothing was run).
    DoneEmpty,
    Failed {
        failure: Option<JobFailure>,
        ended_ms: Option<u64>,
    },
    /// Nowhere: written a moment ago, or removed from the store by hand.
    Missing,
}

/// The runs of one job directory.
pub struct Runs {
    store: DirStore,
    outputs: PathBuf,
    dir: PathBuf,
    /// Requests with one idempotency key are taken one at a time in this process (striped by
    /// the key's hash); across processes the key file's exclusive creation decides.
    stripes: Vec<Mutex<()>>,
}

/// A fresh run id: the time in ms and 32 random bits, in hex, so ids sort by creation.
pub fn new_id(now_ms: u64) -> String {
    format!("{now_ms:012x}{:08x}", fastrand::u32(..))
}

/// A run id as this server makes them (checked before any path is built from one).
pub fn is_run_id(id: &str) -> bool {
    id.len() == 20
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// JSON with object keys sorted at every depth: one text for one value.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// sha256 of a request, key order aside.
pub fn body_hash(workflow: &str, inputs: &Map<String, Value>, webhook: Option<&str>) -> String {
    let v = canonical(&json!({"workflow": workflow, "inputs": inputs, "webhook": webhook}));
    hex::encode(Sha256::digest(serde_json::to_vec(&v).unwrap_or_default()))
}

/// How many job files are ahead of `name` (a queued file's name in `queue/`, or `inbox/NAME`
/// when `in_inbox`): everything in `queue/` sorts before what still waits in the inbox, and
/// each part is in intake (name) order.
pub fn position(queue: &[String], inbox: &[String], name: &str, in_inbox: bool) -> usize {
    let is_job = |n: &&String| !n.starts_with('.') && !n.ends_with(".cancel");
    if in_inbox {
        queue.iter().filter(is_job).count()
            + inbox
                .iter()
                .filter(is_job)
                .filter(|n| n.as_str() < name)
                .count()
    } else {
        queue
            .iter()
            .filter(is_job)
            .filter(|n| n.as_str() < name)
            .count()
    }
}

/// Whether a run as shown has reached a final state.
pub fn is_final(run: &Value) -> bool {
    matches!(
        run.get("status").and_then(Value::as_str),
        Some("done" | "failed" | "cancelled")
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl Runs {
    /// The runs of job directory `jobs` (creating what is missing).
    pub fn open(jobs: &Path, outputs: &Path) -> io::Result<Runs> {
        let store = DirStore::new(jobs);
        store.create()?;
        let dir = jobs.join("serve");
        for d in ["runs", "keys", "hooks"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        Ok(Runs {
            store,
            outputs: outputs.to_path_buf(),
            dir,
            stripes: (0..64).map(|_| Mutex::new(())).collect(),
        })
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join("runs").join(format!("{id}.json"))
    }

    pub fn record(&self, id: &str) -> Option<Record> {
        if !is_run_id(id) {
            return None;
        }
        let bytes = std::fs::read(self.record_path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes a run: its record (with an idempotency key, first linked as the key's file,
    /// which fails when the key has one: `Ok(false)`, nothing written), then the webhook it
    /// owes, then its job file into the inbox (renamed in whole). The record is one file
    /// linked under two names: creating files is what costs on most file systems.
    fn write_run(&self, record: &Record, key_path: Option<&Path>) -> io::Result<bool> {
        let runs = self.dir.join("runs");
        let tmp = runs.join(format!(".t-{:016x}", fastrand::u64(..)));
        std::fs::write(&tmp, serde_json::to_vec(record).map_err(io::Error::other)?)?;
        if let Some(key_path) = key_path {
            match std::fs::hard_link(&tmp, key_path) {
                Ok(()) => {}
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return match e.kind() {
                        io::ErrorKind::AlreadyExists => Ok(false),
                        _ => Err(e),
                    };
                }
            }
        }
        if let Err(e) = std::fs::rename(&tmp, self.record_path(&record.id)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.write_job(record)?;
        Ok(true)
    }

    /// The webhook a run owes, then its job file, renamed into the inbox whole.
    fn write_job(&self, record: &Record) -> io::Result<()> {
        if let Some(url) = &record.webhook {
            write_atomic_unsynced(
                &self.dir.join("hooks").join(format!("{}.owed", record.id)),
                url.as_bytes(),
            )?;
        }
        write_atomic_unsynced(
            &self.store.inbox().join(format!("{}.json", record.id)),
            &serde_json::to_vec(&record.job).map_err(io::Error::other)?,
        )
    }

    /// Submits a validated run. With an idempotency key, the first request with that key
    /// makes the run and every later one gets it back (or a conflict, for another body).
    pub fn submit(
        &self,
        workflow: &str,
        inputs: Map<String, Value>,
        webhook: Option<String>,
        key: Option<&str>,
    ) -> io::Result<Submitted> {
        let body = body_hash(workflow, &inputs, webhook.as_deref());
        let now = crate::runner::now_ms();
        let id = new_id(now);
        let record = Record {
            id: id.clone(),
            workflow: workflow.to_owned(),
            created_ms: now,
            webhook,
            body: body.clone(),
            job: json!({"workflow": workflow, "id": id, "inputs": inputs}),
        };
        let Some(key) = key else {
            self.write_run(&record, None)?;
            return Ok(Submitted::Created(id));
        };
        let key_hash = Sha256::digest(key.as_bytes());
        let stripe = usize::from(key_hash[0]) % self.stripes.len();
        let _one_at_a_time = self.stripes[stripe].lock();
        let key_path = self.dir.join("keys").join(hex::encode(key_hash));
        if self.write_run(&record, Some(&key_path))? {
            return Ok(Submitted::Created(id));
        }
        let seen: Record = serde_json::from_slice(&std::fs::read(&key_path)?)
            .map_err(|e| io::Error::other(format!("{}: {e}", key_path.display())))?;
        if seen.body != body {
            return Ok(Submitted::Conflict(seen.id));
        }
        // The first request may have died between its key and its job: finish its work, under
        // its id, so the run exists exactly once.
        if !self.record_path(&seen.id).exists() {
            std::fs::hard_link(&key_path, self.record_path(&seen.id)).or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            self.write_job(&seen)?;
        } else if self.observe(&seen.id) == Observed::Missing
            && now.saturating_sub(seen.created_ms) > 5_000
        {
            self.write_job(&seen)?;
        }
        Ok(Submitted::Replayed(seen.id))
    }

    /// Where run `id`'s job is. Stages are looked at in the order a file moves through them,
    /// so a file moving meanwhile is still found.
    pub fn observe(&self, id: &str) -> Observed {
        let file = format!("{id}.json");
        if let Some(m) = self.manifest(id) {
            return Observed::Done(Box::new(m));
        }
        if let Some(f) = self.failed(&file) {
            return f;
        }
        let inbox = self.store.inbox().join(&file);
        let queue_names = names(&self.store.queue());
        if exists(&inbox) {
            let inbox_names = names(&self.store.inbox());
            return Observed::Queued {
                position: position(&queue_names, &inbox_names, &file, true),
            };
        }
        let queue_names = if queue_names
            .iter()
            .any(|n| n.ends_with(&format!("={file}")) || n.ends_with(&format!("~{file}")))
        {
            queue_names
        } else {
            // Taken in after the listing above.
            names(&self.store.queue())
        };
        if let Some(n) = queue_names
            .iter()
            .find(|n| n.ends_with(&format!("={file}")) || n.ends_with(&format!("~{file}")))
        {
            let position = position(&queue_names, &[], n, false);
            if n.ends_with(&format!("~{file}")) {
                let key = FileKey(n.clone());
                let state = self.store.state(&key).unwrap_or_default();
                let held = state.results.contains(&0)
                    || self
                        .store
                        .lease(&key, Slot::Job(0))
                        .ok()
                        .flatten()
                        .is_some_and(|l| !l.released);
                if held {
                    let (phase, progress) = self.progress(id);
                    return Observed::Running { phase, progress };
                }
            }
            return Observed::Queued { position };
        }
        if let Some(m) = self.manifest(id) {
            return Observed::Done(Box::new(m));
        }
        if exists(&self.store.done().join(&file)) {
            return Observed::DoneEmpty;
        }
        if let Some(f) = self.failed(&file) {
            return f;
        }
        Observed::Missing
    }

    fn manifest(&self, id: &str) -> Option<Manifest> {
        let bytes = std::fs::read(self.outputs.join(id).join("manifest.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn failed(&self, file: &str) -> Option<Observed> {
        let failed = self.store.failed();
        let report_path = failed.join(format!("{file}.error.json"));
        let meta = std::fs::metadata(&report_path).ok()?;
        if !exists(&failed.join(file)) {
            return None;
        }
        let report: Option<FileReport> = std::fs::read(&report_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let failure = report.and_then(|r| {
            r.failures
                .into_iter()
                .next()
                .or(r.error.map(|e| JobFailure {
                    job: None,
                    line: r.line,
                    sweep_index: None,
                    workflow: None,
                    kind: "job-file".into(),
                    message: e,
                    details: Vec::new(),
                }))
        });
        let ended_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Some(Observed::Failed { failure, ended_ms })
    }

    /// The phase and node progress of a running job, from the daemons' status files.
    fn progress(&self, id: &str) -> (Option<String>, Option<Value>) {
        for p in names(&self.store.status()) {
            if !p.ends_with(".json") || p.starts_with('.') {
                continue;
            }
            let Some(s) = std::fs::read(self.store.status().join(&p))
                .ok()
                .and_then(|b| serde_json::from_slice::<Status>(&b).ok())
            else {
                continue;
            };
            let Some(r) = s.running.iter().find(|r| r.job == id) else {
                continue;
            };
            let progress = s.progress.filter(|p| p.job == id).map(|p| {
                json!({
                    "node": p.node,
                    "class": p.class_type,
                    "value": p.value,
                    "max": p.max,
                    "nodes_done": p.nodes_done,
                    "nodes_total": p.nodes_total,
                })
            });
            return (Some(r.phase.clone()), progress);
        }
        (None, None)
    }

    /// The run as `GET /v1/runs/ID` shows it; `None` for an id this server never made.
    pub fn get(&self, id: &str) -> Option<Value> {
        let record = self.record(id)?;
        let observed = self.observe(id);
        let cancel_requested = exists(&self.store.inbox().join(format!("{id}.cancel")));
        Some(view(
            &record,
            &observed,
            cancel_requested,
            crate::runner::now_ms(),
        ))
    }

    /// Runs newest first: up to `limit` older than `cursor` (a run id), and the cursor of the
    /// next page.
    pub fn list(&self, limit: usize, cursor: Option<&str>) -> (Vec<Value>, Option<String>) {
        let mut ids: Vec<String> = names(&self.dir.join("runs"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .filter(|n| is_run_id(n))
            .collect();
        ids.reverse();
        let page: Vec<&String> = ids
            .iter()
            .filter(|id| cursor.is_none_or(|c| id.as_str() < c))
            .take(limit + 1)
            .collect();
        let next = (page.len() > limit)
            .then(|| page.get(limit.saturating_sub(1)).map(|s| s.to_string()))
            .flatten();
        let runs = page
            .into_iter()
            .take(limit)
            .filter_map(|id| self.get(id))
            .collect();
        (runs, next)
    }

    /// Cancels a run: one still in the inbox is moved to `failed/` at once (so no daemon ever
    /// runs it); otherwise `inbox/ID.cancel` tells the daemons (a waiting job fails as
    /// cancelled, a running one is interrupted).
    pub fn cancel(&self, id: &str) -> io::Result<()> {
        let file = format!("{id}.json");
        let inbox = self.store.inbox().join(&file);
        if exists(&inbox) {
            let failed = self.store.failed();
            let report_path = failed.join(format!("{file}.error.json"));
            let report = FileReport {
                file: file.clone(),
                error: None,
                line: None,
                jobs: 1,
                done: 0,
                failed: 1,
                failures: vec![JobFailure {
                    job: Some(id.to_owned()),
                    line: None,
                    sweep_index: None,
                    workflow: self.record(id).map(|r| r.workflow),
                    kind: "cancelled".into(),
                    message: "cancelled over HTTP before any daemon took it".into(),
                    details: Vec::new(),
                }],
                more: 0,
            };
            if !exists(&failed.join(&file)) {
                write_atomic_unsynced(
                    &report_path,
                    &serde_json::to_vec_pretty(&report).map_err(io::Error::other)?,
                )?;
                match std::fs::rename(&inbox, failed.join(&file)) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // A daemon took it first: it gets the cancel file below.
                        let _ = std::fs::remove_file(&report_path);
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&report_path);
                        return Err(e);
                    }
                }
            }
        }
        write_atomic_unsynced(&self.store.inbox().join(format!("{id}.cancel")), b"")
    }

    /// Runs owed a webhook (from before a restart too): id and URL.
    pub fn owed_webhooks(&self) -> Vec<(String, String)> {
        names(&self.dir.join("hooks"))
            .into_iter()
            .filter_map(|n| {
                let id = n.strip_suffix(".owed")?.to_owned();
                let url = std::fs::read_to_string(self.dir.join("hooks").join(&n)).ok()?;
                Some((id, url))
            })
            .collect()
    }

    /// Records how a run's webhook deliveries ended.
    pub fn webhook_ended(&self, id: &str, outcome: &str) {
        let hooks = self.dir.join("hooks");
        let text = json!({"outcome": outcome, "at_ms": crate::runner::now_ms()}).to_string();
        if write_atomic_unsynced(&hooks.join(format!("{id}.json")), text.as_bytes()).is_ok() {
            let _ = std::fs::remove_file(hooks.join(format!("{id}.owed")));
        }
    }

    /// An output file of a done run, when its manifest lists it: path, media type, size.
    pub fn output(&self, id: &str, file: &str) -> Option<(PathBuf, String)> {
        self.record(id)?;
        let m = self.manifest(id)?;
        let o = m.outputs.iter().find(|o| o.path == file)?;
        Some((self.outputs.join(id).join(&o.path), o.media_type.clone()))
    }
}

/// How long a run may be nowhere in the store (written a moment ago) before it counts as lost.
pub const LOST_AFTER_MS: u64 = 30_000;

/// The run as the API shows it at `now_ms`.
pub fn view(record: &Record, observed: &Observed, cancel_requested: bool, now_ms: u64) -> Value {
    let id = &record.id;
    let mut v = json!({
        "id": id,
        "workflow": record.workflow,
        "url": format!("/v1/runs/{id}"),
        "created": record.created_ms,
    });
    let status = match observed {
        Observed::Queued { position } => {
            v["position"] = json!(position);
            "queued"
        }
        // Written a moment ago and not yet in the inbox.
        Observed::Missing if now_ms.saturating_sub(record.created_ms) < LOST_AFTER_MS => "queued",
        // Removed from the job directory by hand.
        Observed::Missing => {
            v["error"] = json!({"kind": "lost", "message": "the run's job file is gone from the job directory, and it left no manifest"});
            "failed"
        }
        Observed::Running { phase, progress } => {
            if let Some(p) = phase {
                v["phase"] = json!(p);
            }
            if let Some(p) = progress {
                v["progress"] = p.clone();
            }
            "running"
        }
        Observed::Done(m) => {
            v["started"] = json!(m.timings.started_ms);
            v["ended"] = json!(m.timings.finished_ms);
            v["outputs"] = m
                .outputs
                .iter()
                .map(|o| {
                    json!({
                        "url": format!("/v1/runs/{id}/outputs/{}", o.path),
                        "file": o.path,
                        "kind": o.kind,
                        "node": o.node,
                        "media_type": o.media_type,
                        "size": o.size,
                        "sha256": o.sha256,
                        "width": o.width,
                        "height": o.height,
                    })
                })
                .collect();
            if !m.data.is_empty() {
                v["data"] = serde_json::to_value(&m.data).unwrap_or(Value::Null);
            }
            v["inputs"] = Value::Object(m.inputs.clone());
            "done"
        }
        Observed::DoneEmpty => {
            v["outputs"] = json!([]);
            "done"
        }
        Observed::Failed { failure, ended_ms } => {
            if let Some(e) = ended_ms {
                v["ended"] = json!(e);
            }
            let cancelled = failure.as_ref().is_some_and(|f| f.kind == "cancelled");
            v["error"] = match failure {
                Some(f) => json!({"kind": f.kind, "message": f.message, "details": f.details}),
                None => {
                    json!({"kind": "unknown", "message": "the job failed; its report is unreadable"})
                }
            };
            if cancelled { "cancelled" } else { "failed" }
        }
    };
    v["status"] = json!(status);
    if cancel_requested && !is_final(&v) {
        v["cancel_requested"] = json!(true);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_run_nowhere_in_the_store_is_queued_for_a_moment_then_lost() {
        let r = Record {
            id: new_id(1_000),
            workflow: "w".into(),
            created_ms: 1_000,
            webhook: None,
            body: String::new(),
            job: Value::Null,
        };
        assert_eq!(
            view(&r, &Observed::Missing, false, 2_000)["status"],
            "queued"
        );
        let lost = view(&r, &Observed::Missing, false, 1_000 + LOST_AFTER_MS);
        assert_eq!(
            (lost["status"].as_str(), lost["error"]["kind"].as_str()),
            (Some("failed"), Some("lost"))
        );
        let q = view(&r, &Observed::Queued { position: 3 }, true, 2_000);
        assert_eq!(
            (q["position"].as_u64(), q["cancel_requested"].as_bool()),
            (Some(3), Some(true))
        );
        let f = Observed::Failed {
            failure: Some(JobFailure {
                job: None,
                line: None,
                sweep_index: None,
                workflow: None,
                kind: "cancelled".into(),
                message: "m".into(),
                details: Vec::new(),
            }),
            ended_ms: Some(5),
        };
        let c = view(&r, &f, true, 2_000);
        assert_eq!(c["status"], "cancelled");
        assert!(
            c.get("cancel_requested").is_none(),
            "a final run asks nothing"
        );
    }

    #[test]
    fn position_counts_the_files_ahead() {
        let queue = s(&["0001~a.json", "0002=b.json", "0003~c.json", ".gone-x"]);
        let inbox = s(&["x.json", "y.json", "x.cancel", ".t-1"]);
        assert_eq!(position(&queue, &inbox, "0001~a.json", false), 0);
        assert_eq!(position(&queue, &inbox, "0003~c.json", false), 2);
        assert_eq!(position(&queue, &inbox, "x.json", true), 3);
        assert_eq!(position(&queue, &inbox, "y.json", true), 4);
    }

    #[test]
    fn ids_sort_by_time_and_are_checked() {
        let a = new_id(1_700_000_000_000);
        let b = new_id(1_700_000_000_001);
        assert!(a < b && is_run_id(&a) && is_run_id(&b), "{a} {b}");
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef012G",
            "0123456789ABCDEF0123",
        ] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_body_hash_ignores_key_order_only() {
        let a: Map<String, Value> =
            serde_json::from_str(r#"{"prompt":"x","lora":{"a":1,"b":2}}"#).unwrap_or_default();
        let b: Map<String, Value> =
            serde_json::from_str(r#"{"lora":{"b":2,"a":1},"prompt":"x"}"#).unwrap_or_default();
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"lora":{"b":2,"a":1},"prompt":"y"}"#).unwrap_or_default();
        assert_eq!(body_hash("w", &a, None), body_hash("w", &b, None));
        assert_ne!(body_hash("w", &a, None), body_hash("w", &c, None));
        assert_ne!(body_hash("w", &a, None), body_hash("v", &a, None));
        assert_ne!(
            body_hash("w", &a, None),
            body_hash("w", &a, Some("http://h"))
        );
    }

    #[test]
    fn one_key_makes_one_run_however_often_and_concurrently_it_comes() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let runs = std::sync::Arc::new(
            Runs::open(&t.path().join("jobs"), &t.path().join("out"))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let inputs: Map<String, Value> =
            serde_json::from_str(r#"{"prompt":"x"}"#).unwrap_or_default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let runs = runs.clone();
                let inputs = inputs.clone();
                std::thread::spawn(move || runs.submit("w@1", inputs, None, Some("k1")))
            })
            .collect();
        let mut created = Vec::new();
        let mut replayed = Vec::new();
        for t in threads {
            match t.join().ok().and_then(Result::ok) {
                Some(Submitted::Created(id)) => created.push(id),
                Some(Submitted::Replayed(id)) => replayed.push(id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(created.len(), 1);
        assert!(replayed.iter().all(|r| *r == created[0]));
        assert_eq!(
            names(&t.path().join("jobs/inbox")),
            [format!("{}.json", created[0])]
        );
        // Another body under the same key is a conflict; another key another run.
        let other: Map<String, Value> =
            serde_json::from_str(r#"{"prompt":"y"}"#).unwrap_or_default();
        assert!(matches!(
            runs.submit("w@1", other, None, Some("k1")),
            Ok(Submitted::Conflict(id)) if id == created[0]
        ));
        assert!(matches!(
            runs.submit("w@1", inputs.clone(), None, Some("k2")),
            Ok(Submitted::Created(id)) if id != created[0]
        ));
        // A server killed between a key's file and the run's: the replay finishes the work.
        let inputs3: Map<String, Value> =
            serde_json::from_str(r#"{"prompt":"z"}"#).unwrap_or_default();
        let orphan = Record {
            id: new_id(1_000),
            workflow: "w@1".into(),
            created_ms: 1_000,
            webhook: None,
            body: body_hash("w@1", &inputs3, None),
            job: json!({"workflow": "w@1", "id": new_id(1_000), "inputs": inputs3}),
        };
        let mut orphan = orphan;
        orphan.job["id"] = json!(orphan.id);
        std::fs::write(
            t.path()
                .join("jobs/serve/keys")
                .join(hex::encode(Sha256::digest(b"k3"))),
            serde_json::to_vec(&orphan).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            runs.submit("w@1", inputs3, None, Some("k3")),
            Ok(Submitted::Replayed(id)) if id == orphan.id
        ));
        assert!(
            t.path()
                .join("jobs/inbox")
                .join(format!("{}.json", orphan.id))
                .is_file()
        );
        assert!(runs.record(&orphan.id).is_some());
        // Cancelled in the inbox: straight to failed/, never run.
        runs.cancel(&created[0]).unwrap_or_else(|e| panic!("{e}"));
        let v = runs.get(&created[0]).unwrap_or_default();
        assert_eq!(v["status"], "cancelled", "{v}");
        assert_eq!(names(&t.path().join("jobs/inbox")).len(), 2);
        let (page, next) = runs.list(1, None);
        assert_eq!((page.len(), next.is_some()), (1, true));
        let (rest, next) = runs.list(5, next.as_deref());
        assert_eq!((rest.len(), next), (2, None));
        assert_ne!(page[0]["id"], rest[0]["id"]);
    }
}
