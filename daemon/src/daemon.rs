//! The daemon loop: watch the inbox, claim job files, run their jobs, finish the files.
//!
//! One owner task makes every decision; the inbox watcher (`notify`), the lease refresher and
//! the shutdown signal only wake it. At start it takes back its own running files (a restart
//! after SIGKILL) and any whose lease went stale (a daemon that died), skipping jobs whose
//! manifest already exists. On shutdown it stops claiming, lets the running job finish within
//! the grace period, else interrupts it, and hands the file back to `inbox/`: jobs finished so
//! far keep their manifests and are not run again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::Client;
use crate::job::{self, Job};
use crate::jobdir::{JobDir, write_unsynced};
use crate::manifest::GpuInfo;
use crate::runner::{self, Context, Failure};
use comfyc::Workflow;

/// How a daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jobs: PathBuf,
    pub workflows: PathBuf,
    pub outputs: PathBuf,
    /// Root that file inputs (images, masks) are read from.
    pub inputs: Option<PathBuf>,
    pub comfy_url: String,
    pub gpu: u32,
    pub lease_ttl: Duration,
    /// A file changed more recently than this may still be being written.
    pub settle: Duration,
    pub job_timeout: Option<Duration>,
    /// On shutdown, how long the running job may take to finish before it is interrupted.
    pub grace: Duration,
    /// Exit once the inbox is empty and nothing runs (batch runs, tests, benchmarks).
    pub until_idle: bool,
    /// Jobs submitted to ComfyUI at once: 2 keeps its queue fed while the daemon writes the
    /// previous job's outputs; 1 runs strictly one after another.
    pub pipeline: usize,
    /// How long a job waits for an unreachable ComfyUI before it fails.
    pub unreachable_patience: Duration,
}

impl Settings {
    pub fn new(
        jobs: impl Into<PathBuf>,
        workflows: impl Into<PathBuf>,
        comfy_url: impl Into<String>,
    ) -> Self {
        let jobs = jobs.into();
        let outputs = jobs
            .parent()
            .map_or_else(|| jobs.join("outputs"), |p| p.join("outputs"));
        Self {
            jobs,
            workflows: workflows.into(),
            outputs,
            inputs: None,
            comfy_url: comfy_url.into(),
            gpu: 0,
            lease_ttl: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            job_timeout: None,
            grace: Duration::from_secs(30),
            until_idle: false,
            pipeline: 2,
            unreachable_patience: Duration::from_secs(24 * 3600),
        }
    }

    /// Who this daemon is in leases and status files.
    pub fn owner(&self) -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "localhost".into());
        format!("{host}/gpu-{}", self.gpu)
    }
}

/// What a run of the daemon did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub files_done: usize,
    pub files_failed: usize,
    pub files_handed_back: usize,
    pub jobs_done: usize,
    pub jobs_failed: usize,
    pub jobs_skipped: usize,
}

/// A failure that stops the daemon (the others fail a job and the daemon goes on).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// The workflows the daemon can run, recompiled when their files change; a workflow that stops
/// compiling keeps its last good version.
struct Workflows {
    dir: PathBuf,
    by_id: BTreeMap<String, Workflow>,
    catalogue_hash: String,
}

impl Workflows {
    fn load(dir: &Path) -> Self {
        let mut w = Workflows {
            dir: dir.to_path_buf(),
            by_id: BTreeMap::new(),
            catalogue_hash: String::new(),
        };
        w.reload();
        w
    }

    fn reload(&mut self) {
        let c = comfyc::compile(Arc::new(comfyc::FsLoader::new(&self.dir)));
        let (errors, warnings) = comfyc::diagnostic::count(&c.diagnostics);
        if errors > 0 {
            let text =
                comfyc::diagnostic::render_all(&c.diagnostics, &c.sources, Default::default());
            tracing::error!(
                errors,
                warnings,
                "some workflows do not compile; their last good versions stay in use\n{text}"
            );
        }
        if let Some(cat) = &c.catalogue {
            self.catalogue_hash = cat.hash().to_owned();
        }
        for w in c.workflows {
            self.by_id.insert(w.id(), w);
        }
        tracing::info!(workflows = self.by_id.len(), "workflows loaded");
    }

    /// The model files a job will use (its model inputs, else their defaults), for grouping
    /// jobs that share models.
    fn model_key(&self, job: &Job) -> Vec<String> {
        let Ok(w) = self.find(&job.workflow) else {
            return Vec::new();
        };
        let mut key: Vec<String> = w
            .inputs
            .iter()
            .filter(|i| i.ty == comfyc::definition::InputType::Model)
            .filter_map(|i| {
                job.inputs
                    .get(&i.name)
                    .or(i.default.as_ref())
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        key.extend(
            w.models
                .iter()
                .filter(|m| m.bound_by.is_none())
                .map(|m| m.name.clone()),
        );
        key.sort();
        key
    }

    /// `name` (highest version) or `name@version`.
    fn find(&self, spec: &str) -> Result<&Workflow, String> {
        if let Some(w) = self.by_id.get(spec) {
            return Ok(w);
        }
        let mut matches: Vec<&Workflow> = self.by_id.values().filter(|w| w.name == spec).collect();
        matches.sort_by(|a, b| {
            version_key(a.version.as_deref()).cmp(&version_key(b.version.as_deref()))
        });
        matches.pop().ok_or_else(|| {
            let known: Vec<&str> = self.by_id.keys().map(String::as_str).collect();
            format!(
                "no workflow `{spec}` in {}; known: {}",
                self.dir.display(),
                known.join(", ")
            )
        })
    }
}

fn version_key(v: Option<&str>) -> Vec<u64> {
    v.map(|v| v.split('.').map(|p| p.parse().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Runs the daemon until `shutdown` turns true (or the inbox is empty, with `until_idle`).
pub async fn run(
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, DaemonError> {
    let dir = JobDir::new(&settings.jobs);
    dir.create()
        .map_err(|e| DaemonError::Io(settings.jobs.display().to_string(), e))?;
    std::fs::create_dir_all(&settings.outputs)
        .map_err(|e| DaemonError::Io(settings.outputs.display().to_string(), e))?;
    let owner = settings.owner();
    let mut workflows = Workflows::load(&settings.workflows);
    let client = Client::new(&settings.comfy_url).map_err(|e| DaemonError::Setup(e.to_string()))?;
    let (comfy_version, gpu) = server_info(&client, settings.gpu).await;
    let ctx = Context {
        client: client.clone(),
        outputs: settings.outputs.clone(),
        input_root: settings.inputs.clone(),
        gpu,
        comfy_version,
        catalogue_hash: workflows.catalogue_hash.clone(),
        job_timeout: settings.job_timeout,
        unreachable_patience: settings.unreachable_patience,
        progress: Arc::default(),
    };

    // Wake-ups: inbox and workflow changes.
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<Wake>(64);
    let _watcher = watch_dirs(&dir.inbox(), &settings.workflows, wake_tx)
        .map_err(|e| DaemonError::Setup(format!("cannot watch the job directory: {e}")))?;

    // Keep the leases of held files fresh.
    let held: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let renewer = {
        let held = held.clone();
        let dir = dir.clone();
        let owner = owner.clone();
        let every = settings.lease_ttl / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let files = held.lock().map(|h| h.clone()).unwrap_or_default();
                for f in files {
                    if let Err(e) = dir.renew(&f, &owner) {
                        tracing::warn!(file = %f.display(), error = %e, "could not renew a lease");
                    }
                }
            }
        })
    };

    let mut summary = Summary::default();
    let status = Arc::new(Mutex::new(Status::new(
        &owner,
        &settings,
        ctx.progress.clone(),
    )));
    update(&status, &dir, |_| {});
    let ticker = spawn_progress(status.clone(), dir.clone());
    let env = Env {
        dir: &dir,
        ctx: &ctx,
        settings: &settings,
        held: &held,
        status: &status,
    };
    let mut last_reclaim = std::time::Instant::now() - settings.lease_ttl;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Running files of a dead daemon, or our own after a restart.
        if last_reclaim.elapsed() >= settings.lease_ttl / 2 {
            last_reclaim = std::time::Instant::now();
            let taken = dir
                .reclaimable(&owner, settings.lease_ttl)
                .map_err(|e| DaemonError::Io(dir.running().display().to_string(), e))?;
            for f in taken {
                tracing::info!(file = %f.display(), "taking over a running job file");
                process_file(&env, &f, &workflows, &mut shutdown, &mut summary).await;
            }
        }
        let (ready, settling) = dir
            .scan_inbox(settings.settle)
            .map_err(|e| DaemonError::Io(dir.inbox().display().to_string(), e))?;
        let mut claimed_any = false;
        for f in ready {
            if *shutdown.borrow() {
                break;
            }
            match dir.claim(&f, &owner) {
                Ok(Some(running)) => {
                    claimed_any = true;
                    process_file(&env, &running, &workflows, &mut shutdown, &mut summary).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "could not claim"),
            }
        }
        if claimed_any {
            continue;
        }
        if settings.until_idle && !settling && dir.counts()[1].1 == 0 {
            break;
        }
        // Idle: sleep until something changes (no polling loop while idle).
        let recheck = if settling {
            settings.settle
        } else {
            settings.lease_ttl
        };
        tokio::select! {
            w = wake_rx.recv() => {
                if let Some(Wake::Workflows) = w {
                    workflows.reload();
                }
            }
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(recheck) => {}
        }
    }
    renewer.abort();
    ticker.abort();
    update(&status, &dir, |s| {
        s.current = None;
        s.state = "stopped";
    });
    Ok(summary)
}

enum Wake {
    Inbox,
    Workflows,
}

fn watch_dirs(
    inbox: &Path,
    workflows: &Path,
    tx: tokio::sync::mpsc::Sender<Wake>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let workflows_dir = workflows.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            // Reading a folder or file raises access events, our own scans included: waking
            // on them would make an idle daemon spin.
            if matches!(
                event.kind,
                notify::EventKind::Access(_)
                    | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
            ) {
                return;
            }
            let wake = if event.paths.iter().any(|p| p.starts_with(&workflows_dir)) {
                Wake::Workflows
            } else {
                Wake::Inbox
            };
            // A full channel already holds a wake-up; dropping this one loses nothing.
            let _ = tx.try_send(wake);
        }
    })?;
    w.watch(inbox, notify::RecursiveMode::NonRecursive)?;
    if workflows.is_dir() {
        w.watch(workflows, notify::RecursiveMode::Recursive)?;
    }
    Ok(w)
}

/// ComfyUI's version and the GPU, from `/system_stats` (the NVML path comes separately).
async fn server_info(client: &Client, gpu: u32) -> (String, GpuInfo) {
    match client.system_stats().await {
        Ok(s) => {
            let dev = s
                .devices
                .iter()
                .find(|d| d.index == Some(u64::from(gpu)))
                .or(s.devices.first());
            tracing::info!("no NVML here; GPU figures come from ComfyUI's /system_stats");
            (
                s.system.comfyui_version.clone(),
                GpuInfo {
                    index: gpu,
                    name: dev.map(|d| d.name.clone()),
                    uuid: None,
                    source: "system_stats".into(),
                    vram_total_bytes: dev.map(|d| d.vram_total),
                    vram_free_before_bytes: dev.map(|d| d.vram_free),
                },
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "ComfyUI is not answering yet; jobs will wait for it");
            (
                "unknown".into(),
                GpuInfo {
                    index: gpu,
                    source: "none".into(),
                    ..GpuInfo::default()
                },
            )
        }
    }
}

/// The status file `jobs/status/gpu-N.json`, rewritten as work moves.
#[derive(serde::Serialize)]
struct Status {
    owner: String,
    pid: u32,
    gpu: u32,
    comfy_url: String,
    state: &'static str,
    started_ms: u64,
    updated_ms: u64,
    current: Option<Value>,
    jobs_done: usize,
    jobs_failed: usize,
    /// The running job's progress (a snapshot is written).
    #[serde(serialize_with = "snapshot")]
    progress: Arc<Mutex<Option<runner::JobProgress>>>,
}

fn snapshot<S: serde::Serializer>(
    p: &Arc<Mutex<Option<runner::JobProgress>>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    p.lock().map(|g| g.clone()).unwrap_or(None).serialize(s)
}

/// Changes the status and rewrites its file.
fn update(status: &Arc<Mutex<Status>>, dir: &JobDir, change: impl FnOnce(&mut Status)) {
    if let Ok(mut s) = status.lock() {
        change(&mut s);
        s.write(dir);
    }
}

/// Twice a second while a job runs: the status file gets its progress, and a terminal a
/// progress line.
fn spawn_progress(status: Arc<Mutex<Status>>, dir: JobDir) -> tokio::task::JoinHandle<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last: Option<runner::JobProgress> = None;
        loop {
            tick.tick().await;
            let now = status
                .lock()
                .ok()
                .and_then(|s| s.progress.lock().ok().and_then(|p| p.clone()));
            if now == last {
                continue;
            }
            update(&status, &dir, |_| {});
            if tty {
                match &now {
                    Some(p) => eprint!("\r\x1b[2K{}", p.line()),
                    None => eprint!("\r\x1b[2K"),
                }
            }
            last = now;
        }
    })
}

impl Status {
    fn new(owner: &str, s: &Settings, progress: Arc<Mutex<Option<runner::JobProgress>>>) -> Self {
        let now = runner::now_ms();
        Status {
            owner: owner.into(),
            pid: std::process::id(),
            gpu: s.gpu,
            comfy_url: s.comfy_url.clone(),
            state: "running",
            started_ms: now,
            updated_ms: now,
            current: None,
            jobs_done: 0,
            jobs_failed: 0,
            progress,
        }
    }

    fn write(&mut self, dir: &JobDir) {
        self.updated_ms = runner::now_ms();
        let path = dir.status().join(format!("gpu-{}.json", self.gpu));
        if let Err(e) = write_unsynced(&path, &serde_json::to_vec_pretty(self).unwrap_or_default())
        {
            tracing::warn!(error = %e, "could not write the status file");
        }
    }
}

/// What handling a job file needs that stays the same from file to file.
#[derive(Clone, Copy)]
struct Env<'a> {
    dir: &'a JobDir,
    ctx: &'a Context,
    settings: &'a Settings,
    held: &'a Arc<Mutex<Vec<PathBuf>>>,
    status: &'a Arc<Mutex<Status>>,
}

async fn process_file(
    env: &Env<'_>,
    file: &Path,
    workflows: &Workflows,
    shutdown: &mut watch::Receiver<bool>,
    summary: &mut Summary,
) {
    let Env {
        dir,
        ctx,
        settings,
        held,
        status,
    } = *env;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let claimed_ms = runner::now_ms();
    if let Ok(mut h) = held.lock() {
        h.push(file.to_path_buf());
    }
    let release = |held: &Arc<Mutex<Vec<PathBuf>>>| {
        if let Ok(mut h) = held.lock() {
            h.retain(|p| p != file);
        }
    };
    let parsed = read_job_file(file, &name);
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(file = %name, error = %e, "job file refused");
            let report = json!({"file": name, "error": e.to_string(), "line": e.line, "jobs": 0});
            finish(dir, file, Some(report), summary);
            release(held);
            return;
        }
    };
    let mut failures: Vec<Value> = parsed
        .errors
        .iter()
        .map(|e| json!({"line": e.line, "kind": "job-file", "message": e.message}))
        .collect();
    let mut jobs: Vec<&Job> = parsed.jobs.iter().collect();
    // Higher priority first; among equals, jobs that use the same models run together so
    // ComfyUI loads each model once rather than once per switch. The sort is stable: jobs with
    // the same models keep their file order.
    jobs.sort_by_cached_key(|j| (std::cmp::Reverse(j.priority), workflows.model_key(j)));
    let total = jobs.len();
    let mut done = 0usize;
    let mut pending = jobs.into_iter();
    // Set when the grace period is over: a job whose prompt was removed must not resubmit it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Jobs in flight: the next one is submitted while one runs, so ComfyUI's queue is never
    // empty and this daemon's downloads and writes overlap ComfyUI's work.
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let mut slots: Vec<(String, Arc<Mutex<Option<String>>>)> = Vec::new();
    let mut stopping = *shutdown.borrow();
    let mut interrupt_at: Option<tokio::time::Instant> = None;
    let mut handed_back = false;
    let mut cancel_tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        while !stopping && inflight.len() < settings.pipeline.max(1) {
            let Some(job) = pending.next() else { break };
            match runner::finished_by(&ctx.outputs, &job.id) {
                Some(f) if f == name || f == original_name(&name) => {
                    summary.jobs_skipped += 1;
                    done += 1;
                    continue;
                }
                Some(other) => {
                    summary.jobs_failed += 1;
                    failures.push(json!({
                        "job": job.id, "line": job.origin.line, "kind": "duplicate-id",
                        "message": format!("job id `{}` is already used by a finished job from `{other}`; give this job another `id`", job.id),
                    }));
                    continue;
                }
                None => {}
            }
            let slot: Arc<Mutex<Option<String>>> = Arc::default();
            slots.push((job.id.clone(), slot.clone()));
            let cancel_file = dir.inbox().join(format!("{}.cancel", job.id));
            let found = workflows.find(&job.workflow);
            let file_name = name.clone();
            let stop = &stop;
            inflight.push(async move {
                let cancelled =
                    || cancel_file.exists() || stop.load(std::sync::atomic::Ordering::Relaxed);
                let result = match found {
                    Err(msg) => Err(Failure::new("unknown-workflow", msg)),
                    Ok(w) => {
                        runner::run(ctx, w, job, &file_name, claimed_ms, &cancelled, &slot).await
                    }
                };
                if cancel_file.exists() {
                    let _ = std::fs::remove_file(&cancel_file);
                }
                (job, result)
            });
        }
        if inflight.is_empty() {
            break;
        }
        update(status, dir, |s| {
            s.current = Some(json!({
                "file": name, "job": slots.first().map(|(id, _)| id.clone()), "jobs": slots.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
                "of": total, "done": done,
            }));
        });
        tokio::select! {
            Some((job, result)) = inflight.next() => {
                slots.retain(|(id, _)| id != &job.id);
                match result {
                    Ok(m) => {
                        tracing::info!(job = %job.id, outputs = m.outputs.len(), "job done");
                        summary.jobs_done += 1;
                        update(status, dir, |s| s.jobs_done += 1);
                        done += 1;
                    }
                    // Interrupted because the daemon is stopping: it runs again later.
                    Err(_) if stopping => handed_back = true,
                    Err(f) => {
                        tracing::warn!(job = %job.id, kind = f.kind, reason = %f.message, "job failed");
                        summary.jobs_failed += 1;
                        update(status, dir, |s| s.jobs_failed += 1);
                        failures.push(json!({
                            "job": job.id, "line": job.origin.line, "sweep_index": job.origin.sweep_index,
                            "workflow": job.workflow, "kind": f.kind, "message": f.message, "details": f.details,
                        }));
                    }
                }
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                tracing::info!(grace_s = settings.grace.as_secs(), "shutting down: letting running jobs finish");
                // Queued prompts of this daemon leave ComfyUI's queue now; the running one gets
                // the grace period.
                interrupt_at = Some(tokio::time::Instant::now() + settings.grace);
            }
            _ = async { if let Some(t) = interrupt_at { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                interrupt_at = None;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                for (_, slot) in &slots {
                    if let Some(pid) = slot.lock().ok().and_then(|s| s.clone()) {
                        let _ = ctx.client.delete_queued(&[&pid]).await;
                        let _ = ctx.client.interrupt(Some(&pid)).await;
                    }
                }
            }
            _ = cancel_tick.tick() => {
                for (id, slot) in &slots {
                    if dir.inbox().join(format!("{id}.cancel")).exists()
                        && let Some(pid) = slot.lock().ok().and_then(|s| s.clone())
                    {
                        let _ = ctx.client.delete_queued(&[&pid]).await;
                        let _ = ctx.client.interrupt(Some(&pid)).await;
                    }
                }
            }
        }
    }
    if stopping && (handed_back || pending.len() > 0) {
        update(status, dir, |s| s.current = None);
        hand_back(dir, file, &name, summary);
        release(held);
        return;
    }
    update(status, dir, |s| s.current = None);
    let failed = failures.len() + parsed.error_count - parsed.errors.len();
    let report = (failed > 0).then(|| {
        let shown: Vec<Value> = failures
            .into_iter()
            .take(MAX_REPORTED)
            .map(shorten)
            .collect();
        json!({
            "file": name, "jobs": total + parsed.error_count, "done": done, "failed": failed,
            "failures": shown,
            "more": failed.saturating_sub(MAX_REPORTED),
        })
    });
    finish(dir, file, report, summary);
    release(held);
}

/// Failures written into one report; the rest are counted in `more`.
const MAX_REPORTED: usize = 100;

/// A failure entry with long texts cut short, so a report stays readable and small.
fn shorten(mut v: Value) -> Value {
    fn cut(v: &mut Value) {
        match v {
            Value::String(s) if s.chars().count() > 500 => {
                *s = format!(
                    "{}… ({} characters)",
                    s.chars().take(500).collect::<String>(),
                    s.chars().count()
                );
            }
            Value::Array(a) => {
                a.truncate(20);
                a.iter_mut().for_each(cut);
            }
            Value::Object(m) => m.values_mut().for_each(cut),
            _ => {}
        }
    }
    cut(&mut v);
    v
}

/// `NAME.EXT` for a file kept as `NAME.N.EXT` because a file of the same name was there.
fn original_name(name: &str) -> String {
    let parts: Vec<&str> = name.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [ext, n, stem] if n.parse::<u32>().is_ok() => format!("{stem}.{ext}"),
        _ => name.to_owned(),
    }
}

fn read_job_file(file: &Path, name: &str) -> Result<job::Parsed, job::JobFileError> {
    let err = |m: String| job::JobFileError {
        line: None,
        message: m,
    };
    let meta = std::fs::symlink_metadata(file).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(err("job files may not be symbolic links".into()));
    }
    if !meta.is_file() {
        return Err(err(
            "not a regular file (a FIFO, socket or device is never read)".into(),
        ));
    }
    if meta.len() > job::MAX_FILE_BYTES {
        return Err(err(format!(
            "the file is {} bytes, over the {}-byte limit",
            meta.len(),
            job::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let text =
        String::from_utf8(bytes).map_err(|e| err(format!("the file is not UTF-8 text: {e}")))?;
    job::parse(name, &text)
}

fn finish(dir: &JobDir, file: &Path, failure: Option<Value>, summary: &mut Summary) {
    let result = match failure {
        None => dir.finish_done(file).map(|_| summary.files_done += 1),
        Some(report) => dir
            .finish_failed(file, &report)
            .map(|_| summary.files_failed += 1),
    };
    if let Err(e) = result {
        tracing::error!(file = %file.display(), error = %e, "could not move a finished job file");
    }
}

fn hand_back(dir: &JobDir, file: &Path, name: &str, summary: &mut Summary) {
    match dir.hand_back(file) {
        Ok(_) => {
            summary.files_handed_back += 1;
            tracing::info!(file = %name, "handed back to the inbox");
        }
        Err(e) => tracing::error!(file = %name, error = %e, "could not hand a job file back"),
    }
}

/// Writes a job's failure report where a reader of `failed/` expects it (used by tests).
pub fn error_report_path(dir: &JobDir, file_name: &str) -> PathBuf {
    dir.failed().join(format!("{file_name}.error.json"))
}
