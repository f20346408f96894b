//! The daemon: one owner task that holds the state and makes every decision.
//!
//! Event sources only wake it: the inbox and workflow watches set flags and notify (so
//! wake-ups are coalesced, never dropped), jobs in flight report their end, timers renew leases
//! and look at other daemons' leases, and the shutdown signal starts the two-phase stop. The
//! owner takes dropped files into the job store ([`crate::store`]), keeps an index of every job
//! of every file it knows (waiting ones grouped in buckets by class, priority and model set),
//! and whenever a slot at ComfyUI frees asks the scheduler ([`crate::scheduler`]) which job runs
//! next, claims it, and runs it ([`crate::runner`]). So jobs are the unit of work: any daemon
//! watching the directory can run any job of any file, and model affinity sees every waiting
//! job whichever file it came from.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::client::Client;
use crate::fsutil;
use crate::job::{self, Job, Parsed};
use crate::metrics::{self, Metrics, Outcome};
use crate::notify::Notifier;
use crate::report::{FileReport, JobFailure, MAX_REPORTED, RunningJob, Status};
use crate::runner::{self, Context, End, Failure, Guard, JobRun};
use crate::scheduler;
use crate::store::{
    self, Claim, DirStore, FileKey, Held, JobResult, JobStore, Lease, PromptRecord, Slot, TakenIn,
};
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
    /// Extra headers on every request to ComfyUI (`--header`, `headers` in comfyd.toml).
    pub headers: crate::client::Headers,
    pub gpu: u32,
    pub lease_ttl: Duration,
    /// An inbox file must keep its size and time this long before it is taken.
    pub settle: Duration,
    pub job_timeout: Option<Duration>,
    /// On shutdown, how long running jobs may take to finish before they are interrupted.
    pub grace: Duration,
    /// Exit once nothing is left to do (batch runs, tests, benchmarks).
    pub until_idle: bool,
    /// Prompts kept at ComfyUI at once: 2 keeps its queue fed while the daemon writes the
    /// previous job's outputs; 1 runs strictly one after another.
    pub pipeline: usize,
    /// How long a job waits for an unreachable ComfyUI before it fails.
    pub unreachable_patience: Duration,
    /// How long `inbox/ID.cancel` for an id no file has stays before it is removed.
    pub cancel_expiry: Duration,
    /// No job is claimed while the outputs or the job folder has this little space left.
    pub min_free_bytes: u64,
    /// Classes, weights, aging and model affinity.
    pub policy: scheduler::Policy,
    /// Inbox files that settle at once; no more are looked at while this many wait for intake.
    /// Bounds memory; with the settle time it bounds how fast files that were in the inbox
    /// before the daemon looked (no change events) are taken in: 4,096 per 500 ms.
    pub scan_limit: usize,
    /// Files indexed at once (taken in and not finished) before more are taken in: bounds
    /// memory when the inbox holds hundreds of thousands.
    pub open_files: usize,
    /// The GPU read through NVML (see [`crate::gpu`]); none: figures from `/system_stats`.
    pub probe: Option<Arc<dyn crate::gpu::Gpu>>,
    /// When to free ComfyUI's memory before a job.
    pub memory: crate::memory::Policy,
    /// The ComfyUI is the built-in simulator (`--sim`): manifests say so.
    pub simulated: bool,
    /// Which workflows may run partner (paid) nodes, and the account key.
    pub spend: crate::runner::Spend,
    /// Where events are counted for Prometheus (`--metrics`); disabled by default.
    pub metrics: Metrics,
    /// A ComfyUI to start and supervise; none: one someone else runs answers at `comfy_url`.
    pub comfyui: Option<crate::supervisor::Config>,
    /// Where the owner loop publishes its job counts (the terminal's progress bar); none: they
    /// are not published.
    pub counts: Option<tokio::sync::watch::Sender<crate::progress::Counts>>,
    /// How often a job that keeps executing logs its progress.
    pub progress_log_every: Duration,
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
            headers: Default::default(),
            gpu: 0,
            lease_ttl: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            job_timeout: None,
            grace: Duration::from_secs(30),
            until_idle: false,
            pipeline: 2,
            unreachable_patience: Duration::from_secs(24 * 3600),
            cancel_expiry: Duration::from_secs(600),
            min_free_bytes: 64 << 20,
            policy: crate::config::FileConfig::default().policy(),
            scan_limit: 4096,
            open_files: 1024,
            probe: None,
            memory: crate::memory::Policy::default(),
            simulated: false,
            spend: crate::runner::Spend::default(),
            metrics: Metrics::disabled(),
            comfyui: None,
            counts: None,
            progress_log_every: crate::progress::LOG_EVERY,
        }
    }

    /// Who this daemon is in leases and status files.
    pub fn owner(&self) -> String {
        format!("{}/gpu-{}", host(), self.gpu)
    }
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// What a run of the daemon did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub files_done: usize,
    pub files_failed: usize,
    pub jobs_done: usize,
    pub jobs_failed: usize,
    /// Jobs found finished already (a manifest from before a restart).
    pub jobs_skipped: usize,
    /// Jobs let go on shutdown, for any daemon to run later.
    pub jobs_released: usize,
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
    by_id: BTreeMap<String, Arc<Workflow>>,
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
            self.by_id.insert(w.id(), Arc::new(w));
        }
        tracing::info!(workflows = self.by_id.len(), "workflows loaded");
    }

    /// A hash of the model files a job will use (its model inputs, else their defaults): jobs
    /// with equal hashes run without a model switch. 0 for none.
    fn model_key(&self, w: &Workflow, job: &Job) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut key: Vec<&str> = w
            .inputs
            .iter()
            .filter(|i| i.ty == comfyc::definition::InputType::Model)
            .filter_map(|i| {
                job.inputs
                    .get(&i.name)
                    .or(i.default.as_ref())
                    .and_then(serde_json::Value::as_str)
            })
            .collect();
        key.extend(
            w.models
                .iter()
                .filter(|m| m.bound_by.is_none())
                .map(|m| m.name.as_str()),
        );
        if key.is_empty() {
            return 0;
        }
        key.sort_unstable();
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        h.finish().max(1)
    }

    /// `name` (highest version) or `name@version`, by the compiler's one version order.
    fn find(&self, spec: &str) -> Result<&Arc<Workflow>, String> {
        let w = comfyc::version::find_workflow(self.by_id.values().map(Arc::as_ref), spec)
            .map_err(|e| format!("{e} (in {})", self.dir.display()))?;
        self.by_id
            .get(&w.id())
            .ok_or_else(|| format!("no workflow `{spec}`"))
    }
}

/// A job of a file: the file's number in the index and the job's index in the file.
type JobRef = (u64, u32);

/// What this daemon knows of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// Waiting in a bucket for the scheduler.
    Open,
    /// Held and running here.
    Mine,
    /// Held by another daemon: its lease is watched.
    Theirs,
    /// Has its result.
    Resolved,
}

/// A file of the store, as indexed.
struct FileEntry {
    key: FileKey,
    parsed: Arc<Parsed>,
    /// The whole file was refused (its reason); it has no jobs.
    refused: Option<job::JobFileError>,
    jobs: Vec<JobState>,
    unresolved: usize,
    /// The file's length when last looked at, and since when (our clock): a JSONL is finished
    /// only after it has been quiet for [`JSONL_QUIET`], so a writer appending in place with
    /// pauses still gets every line run.
    last_len: usize,
    last_change: Instant,
    /// Renamed into the inbox whole: it cannot grow, and needs no quiet period.
    whole: bool,
}

/// How long a JSONL must keep its length before it is finished.
const JSONL_QUIET: Duration = Duration::from_secs(2);

/// A waiting job's place in its bucket.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    job: JobRef,
    since: Instant,
}

/// Jobs that wait, grouped so that picking looks at one head per group, never at every job.
#[derive(Default)]
struct Buckets {
    /// (class, priority, model set) to jobs by arrival.
    groups: BTreeMap<(String, i64, u64), BTreeMap<u64, Waiting>>,
    len: usize,
}

impl Buckets {
    fn push(&mut self, key: (String, i64, u64), seq: u64, w: Waiting) {
        if self.groups.entry(key).or_default().insert(seq, w).is_none() {
            self.len += 1;
        }
    }

    /// The head of every group: its key, arrival number and how long it has waited.
    fn heads(&self, now: Instant) -> Vec<((String, i64, u64), u64, Duration)> {
        self.groups
            .iter()
            .filter_map(|(k, q)| {
                let (seq, w) = q.iter().next()?;
                Some((k.clone(), *seq, now.saturating_duration_since(w.since)))
            })
            .collect()
    }

    fn pop(&mut self, key: &(String, i64, u64), seq: u64) -> Option<Waiting> {
        let q = self.groups.get_mut(key)?;
        let w = q.remove(&seq);
        if q.is_empty() {
            self.groups.remove(key);
        }
        if w.is_some() {
            self.len -= 1;
        }
        w
    }

    /// Removes one job wherever it waits (a cancel).
    fn remove(&mut self, job: JobRef) -> bool {
        let mut found = None;
        for (k, q) in &self.groups {
            if let Some((seq, _)) = q.iter().find(|(_, w)| w.job == job) {
                found = Some((k.clone(), *seq));
                break;
            }
        }
        found.is_some_and(|(k, s)| self.pop(&k, s).is_some())
    }

    fn by_class(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (k, q) in &self.groups {
            *out.entry(k.0.clone()).or_default() += q.len();
        }
        out
    }
}

/// A job this daemon holds: its lease (rewritten under the lock, so a renewal never drops a
/// prompt record) and what the owner needs to cancel or interrupt it.
struct HeldJob {
    store: Arc<dyn JobStore>,
    held: Held,
    lease: Mutex<Lease>,
    job_id: String,
    file_name: String,
    workflow: String,
    since_ms: u64,
    cancel: AtomicBool,
    phase: Mutex<&'static str>,
    prompt: Mutex<Option<(String, Client)>>,
}

impl HeldJob {
    /// Rewrites the lease with a fresh renewal time (and whatever else changed).
    fn write(&self, change: impl FnOnce(&mut Lease)) -> std::io::Result<()> {
        let mut lease = self.lease.lock().map_err(|_| store::lost())?;
        change(&mut lease);
        lease.renewed_ms = runner::now_ms();
        self.store.write_lease(&self.held, &lease)
    }
}

impl Guard for HeldJob {
    fn record_prompt(&self, record: &PromptRecord) -> bool {
        self.write(|l| l.prompt = Some(record.clone())).is_ok()
    }
    fn still_ours(&self) -> bool {
        self.store.still_held(&self.held).unwrap_or(false)
    }
}

/// Another daemon's lease being watched: what it said and since when (our clock).
struct Watched {
    seen: (u64, u64, bool),
    since: Instant,
}

/// Wake-up flags set by the watchers; one [`Notify`] wakes the owner for all of them.
#[derive(Default)]
struct Wakes {
    inbox: AtomicBool,
    queue: AtomicBool,
    workflows: AtomicBool,
    notify: Notify,
    /// How inbox files arrived, as the watcher saw it: `false` renamed in whole, `true` created
    /// or written in place (it may still be growing). Absent: not seen arrive (present at
    /// start, or a file system without change events).
    arrivals: Mutex<HashMap<PathBuf, bool>>,
}

/// An inbox file watched settle: a fingerprint of its size and time, since when it has had
/// them (our clock), and the last scan that saw it. Small, as thousands are kept.
struct Settling {
    look: u64,
    since: Instant,
    seen: u64,
}

/// The fingerprint of an inbox file's size and modification time.
fn look(meta: &std::fs::Metadata) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (meta.len(), meta.modified().ok()).hash(&mut h);
    h.finish()
}

/// The owner's state.
struct Owner {
    settings: Settings,
    store: Arc<DirStore>,
    ctx: Arc<Context>,
    wakes: Arc<Wakes>,
    workflows: Workflows,
    owner: String,
    host: String,
    files: HashMap<u64, FileEntry>,
    by_key: HashMap<FileKey, u64>,
    next_file: u64,
    ids: HashMap<String, JobRef>,
    buckets: Buckets,
    seq: u64,
    sched: scheduler::State,
    held: HashMap<JobRef, Arc<HeldJob>>,
    watched: HashMap<(u64, Slot), Watched>,
    /// Inbox files watched settle (at most the scan limit), by name.
    settling: HashMap<Arc<str>, Settling>,
    /// Inbox files waiting for intake, and whether each came in whole (renamed in: it cannot
    /// grow).
    waiting: HashMap<Arc<str>, bool>,
    /// Scans so far.
    scans: u64,
    /// When the first settling file has been still for the settle time.
    settle_due: Option<Instant>,
    last_inbox_scan: Instant,
    /// The last scan stopped at its limit: there is more in the inbox.
    inbox_more: bool,
    /// Inbox files waiting for intake, in the order found.
    ready: VecDeque<Arc<str>>,
    /// Files taken in but not settled or given a folder (another daemon's, seen by a rescan,
    /// or ours after an error), since when (our clock): looked at after [`TAKEN_GRACE`].
    taken_seen: HashMap<TakenIn, Instant>,
    /// Taken-in files due to be looked at.
    taken_due: VecDeque<TakenIn>,
    cancels: HashMap<String, Instant>,
    pending_results: Vec<(u64, JobResult)>,
    taken: Vec<Taken>,
    to_finish: HashSet<u64>,
    finish_at: HashMap<u64, Instant>,
    summary: Summary,
    stopping: bool,
    space_ok: bool,
    space_checked: Option<Instant>,
    status_dirty: bool,
    last_running: Vec<RunningJob>,
    last_progress: Option<crate::report::Progress>,
    status_written: Option<Instant>,
    started_ms: u64,
    last_renew: Instant,
    last_watch: Instant,
    last_rescan: Instant,
    /// Restarts of the supervised ComfyUI already counted in the metrics.
    restarts_counted: u64,
    /// systemd's `sd_notify` (a no-op outside a `Type=notify` unit).
    notify: Notifier,
    /// When the executing job's progress is next logged.
    progress_log: crate::progress::ProgressLog,
}

type Running = futures_util::stream::FuturesUnordered<BoxFuture<'static, (JobRef, End)>>;

/// Shortest time between two scans of `inbox/` prompted by change events (a writer filling
/// the inbox raises an event per file).
const INBOX_RESCAN: Duration = Duration::from_millis(100);

/// Shortest time between two reads of `queue/` prompted by change events.
const QUEUE_RESCAN: Duration = Duration::from_millis(500);

/// Synchronous work (intake, fast failures) done per turn of the loop before it looks at
/// events again, so a huge inbox never starves running jobs.
const TURN_BUDGET: usize = 512;

/// How long a file taken in by another daemon may stay without a folder before this one looks
/// at it (its taker settles it within a turn, or died). Only saves double work: whoever looks,
/// one rename decides where the file goes.
const TAKEN_GRACE: Duration = Duration::from_secs(2);

/// Most jobs of a file settled at intake (each is a look at its manifest); a bigger file gets
/// its folder and its jobs are settled one by one as they come up.
const SETTLE_AT_INTAKE_MAX: usize = 4096;

/// Runs the daemon until `shutdown` turns true (or nothing is left, with `until_idle`).
pub async fn run(
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, DaemonError> {
    let store = Arc::new(DirStore::new(&settings.jobs));
    store
        .create()
        .map_err(|e| DaemonError::Io(settings.jobs.display().to_string(), e))?;
    std::fs::create_dir_all(&settings.outputs)
        .map_err(|e| DaemonError::Io(settings.outputs.display().to_string(), e))?;
    let client = Client::with_headers(
        &settings.comfy_url,
        Default::default(),
        settings.headers.clone(),
    )
    .map_err(|e| DaemonError::Setup(e.to_string()))?;
    // A certificate that is refused now will be refused later: say so instead of waiting.
    if let Err(e @ crate::client::ClientError::Tls { .. }) = client.system_stats().await {
        return Err(DaemonError::Setup(e.to_string()));
    }
    let supervisor = match settings.comfyui.clone() {
        Some(mut c) => {
            c.log = Some(c.log_path(&settings.jobs, settings.gpu));
            Some(
                crate::supervisor::Supervisor::start(c, &settings.comfy_url)
                    .map_err(DaemonError::Setup)?,
            )
        }
        None => None,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        outputs: settings.outputs.clone(),
        input_root: settings.inputs.clone(),
        gpu: settings.gpu,
        server: Arc::default(),
        job_timeout: settings.job_timeout,
        unreachable_patience: settings.unreachable_patience,
        progress: Arc::default(),
        hub: Some(crate::client::Hub::start(client.clone())),
        probe: settings.probe.clone(),
        memory: settings.memory.clone(),
        last_models: Arc::default(),
        sample_every: Duration::from_millis(100),
        submit_gate: Arc::default(),
        footprints: Arc::default(),
        last_ended: Arc::default(),
        metrics: settings.metrics.clone(),
        simulated: settings.simulated,
        spend: settings.spend.clone(),
        supervisor: supervisor.as_ref().map(|s| s.handle()),
    });
    if ctx.refresh_server().await.version.is_none() {
        tracing::warn!("ComfyUI is not answering yet; jobs will wait for it");
    }
    let wakes = Arc::new(Wakes::default());
    let _watcher = watch_dirs(&store, &settings.workflows, wakes.clone())
        .map_err(|e| DaemonError::Setup(format!("cannot watch the job directory: {e}")))?;
    let _workflows_watch = watch_workflows(&settings.workflows, wakes.clone())
        .map_err(|e| DaemonError::Setup(format!("cannot watch the workflows: {e}")))?;
    let now = Instant::now();
    let mut o = Owner {
        wakes: wakes.clone(),
        owner: settings.owner(),
        host: host(),
        workflows: Workflows::load(&settings.workflows),
        store,
        ctx,
        files: HashMap::new(),
        by_key: HashMap::new(),
        next_file: 0,
        ids: HashMap::new(),
        buckets: Buckets::default(),
        seq: 0,
        sched: scheduler::State::default(),
        held: HashMap::new(),
        watched: HashMap::new(),
        settling: HashMap::new(),
        waiting: HashMap::new(),
        scans: 0,
        settle_due: None,
        last_inbox_scan: now,
        inbox_more: false,
        ready: VecDeque::new(),
        taken_seen: HashMap::new(),
        taken_due: VecDeque::new(),
        cancels: HashMap::new(),
        pending_results: Vec::new(),
        taken: Vec::new(),
        to_finish: HashSet::new(),
        finish_at: HashMap::new(),
        summary: Summary::default(),
        stopping: *shutdown.borrow(),
        space_ok: true,
        space_checked: None,
        status_dirty: true,
        last_running: Vec::new(),
        last_progress: None,
        status_written: None,
        started_ms: runner::now_ms(),
        last_renew: now,
        last_watch: now,
        last_rescan: now,
        restarts_counted: 0,
        notify: Notifier::from_env(),
        progress_log: crate::progress::ProgressLog::new(settings.progress_log_every),
        settings,
    };
    let mut running: Running = Default::default();
    // What was in the store before we started: our own jobs from before a restart, other
    // daemons' work, files whose jobs wait.
    o.rescan_queue();
    // Our own jobs from before a restart are taken back now, not after a timer.
    o.check_watched();
    o.scan_inbox();
    o.notify.ready();
    let mut interrupt_at: Option<tokio::time::Instant> = None;
    loop {
        let busy = o.turn(&mut running);
        o.write_status(false);
        o.report_progress();
        if o.stopping && running.is_empty() {
            break;
        }
        if o.settings.until_idle && !busy && running.is_empty() && o.idle() {
            break;
        }
        let wake_in = if busy {
            Duration::ZERO
        } else {
            o.next_timer(!running.is_empty())
        };
        tokio::select! {
            Some((job, end)) = running.next(), if !running.is_empty() => o.ended(job, end),
            _ = wakes.notify.notified() => {}
            _ = tokio::time::sleep(wake_in) => {}
            _ = shutdown.changed(), if !o.stopping => {
                o.stopping = true;
                o.status_dirty = true;
                o.notify.stopping();
                tracing::info!(grace_s = o.settings.grace.as_secs(), running = running.len(), "shutting down: no new jobs; running ones may finish");
                interrupt_at = Some(tokio::time::Instant::now() + o.settings.grace);
            }
            _ = async { if let Some(t) = interrupt_at { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                interrupt_at = None;
                o.interrupt_all().await;
            }
        }
        if wakes.workflows.swap(false, Ordering::AcqRel) {
            o.workflows.reload();
        }
        // While a scan's worth of files waits for intake, another scan would only find them
        // again (our own intake renames raise inbox events too); below that, the next files
        // settle while these are taken in.
        if o.ready.len() < o.settings.scan_limit.max(1)
            && o.last_inbox_scan.elapsed() >= INBOX_RESCAN
            && (o.inbox_more | wakes.inbox.swap(false, Ordering::AcqRel))
        {
            o.scan_inbox();
        }
        // At most twice a second; a flag set meanwhile waits for its turn, it is not lost.
        if o.last_rescan.elapsed() >= QUEUE_RESCAN && wakes.queue.swap(false, Ordering::AcqRel) {
            o.rescan_queue();
        }
        o.timers();
        o.notify.watchdog();
    }
    // Anything still held (nothing runs now) goes back for others.
    let held: Vec<JobRef> = o.held.keys().copied().collect();
    for j in held {
        o.release(j);
    }
    o.stopping = true;
    o.notify.stopping();
    o.write_status(true);
    o.report_progress();
    if let Some(s) = supervisor {
        s.stop().await;
    }
    Ok(o.summary)
}

impl Owner {
    fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            generation: 0,
            renewed_ms: runner::now_ms(),
            released: false,
            prompt: None,
        }
    }

    /// One turn: intake, finish files, fill ComfyUI's slots. True when work is left that the
    /// budget cut short.
    fn turn(&mut self, running: &mut Running) -> bool {
        let mut budget = TURN_BUDGET;
        // Half the turn at most for intake, and only while the index is small: a huge inbox
        // is taken in as fast as its jobs end, never all at once into memory.
        while budget > TURN_BUDGET / 2
            && self.files.len() < self.settings.open_files
            && self.space_ok
            && !self.stopping
        {
            if let Some(t) = self.taken_due.pop_front() {
                budget -= 1;
                self.admit(t, false);
                continue;
            }
            let Some(name) = self.ready.pop_front() else {
                break;
            };
            budget -= 1;
            self.take_in(name);
        }
        self.spawn_taken(running);
        let finish: Vec<u64> = self.to_finish.drain().collect();
        for f in finish {
            self.try_finish(f);
        }
        if !self.stopping {
            self.check_space();
            if self.space_ok {
                budget = self.fill(running, budget);
            }
        }
        // More to do right away: the budget ran out, files wait for intake while the index has
        // room, or files wait to be finished. (More in the inbox than the last scan took is a
        // timer: scans are at least `INBOX_RESCAN` apart.)
        budget == 0
            || ((!self.ready.is_empty() || !self.taken_due.is_empty())
                && self.files.len() < self.settings.open_files
                && self.space_ok
                && !self.stopping)
            || !self.to_finish.is_empty()
    }

    fn idle(&self) -> bool {
        self.settling.is_empty()
            && self.waiting.is_empty()
            && self.taken_seen.is_empty()
            && self.taken_due.is_empty()
            && self.buckets.len == 0
            && self.held.is_empty()
            && self.watched.is_empty()
            && self.files.is_empty()
            && self.pending_results.is_empty()
            && self.finish_at.is_empty()
    }

    /// When a timer next needs the loop: lease renewals and watches while there are any,
    /// settling files, a status write; else a rare look at the queue for work other daemons
    /// took in (a network file system may not deliver change events).
    fn next_timer(&self, running: bool) -> Duration {
        let ttl = self.settings.lease_ttl;
        let mut next = ttl / 2;
        if !self.held.is_empty() {
            next = next.min((ttl / 3).saturating_sub(self.last_renew.elapsed()));
        }
        if !self.watched.is_empty() || !self.to_finish.is_empty() {
            next = next.min((ttl / 4).saturating_sub(self.last_watch.elapsed()));
        }
        if let Some(due) = self.settle_due {
            let due = due.max(self.last_inbox_scan + INBOX_RESCAN);
            next = next.min(due.saturating_duration_since(Instant::now()));
        }
        if self.inbox_more && self.settling.len() < self.settings.scan_limit {
            let due = self.last_inbox_scan + INBOX_RESCAN;
            next = next.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(first) = self.taken_seen.values().min() {
            next = next.min((TAKEN_GRACE).saturating_sub(first.elapsed()));
        }
        if let Some(t) = self.finish_at.values().min() {
            next = next.min(t.saturating_duration_since(Instant::now()));
        }
        if !self.cancels.is_empty() || !self.pending_results.is_empty() || !self.space_ok {
            next = next.min(Duration::from_secs(1));
        }
        if let Some(ping) = self.notify.next_ping() {
            next = next.min(ping);
        }
        if running
            || self.status_dirty
            || self.wakes.queue.load(Ordering::Acquire)
            || self.wakes.inbox.load(Ordering::Acquire)
        {
            next = next.min(Duration::from_millis(250));
        }
        next.max(Duration::from_millis(5))
    }

    fn timers(&mut self) {
        let ttl = self.settings.lease_ttl;
        if self.last_renew.elapsed() >= ttl / 3 {
            self.last_renew = Instant::now();
            self.renew();
        }
        if self.last_watch.elapsed() >= ttl / 4 {
            self.last_watch = Instant::now();
            self.check_watched();
        }
        if self.last_rescan.elapsed() >= ttl / 2 {
            self.rescan_queue();
        }
        if self
            .settle_due
            .is_some_and(|t| t <= Instant::now() && self.ready.len() < self.settings.scan_limit)
            && self.last_inbox_scan.elapsed() >= INBOX_RESCAN
        {
            self.scan_inbox();
        }
        let now = Instant::now();
        let due: Vec<TakenIn> = self
            .taken_seen
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= TAKEN_GRACE)
            .map(|(k, _)| k.clone())
            .collect();
        for t in due {
            self.taken_seen.remove(&t);
            self.taken_due.push_back(t);
        }
        if !self.pending_results.is_empty() {
            let pending = std::mem::take(&mut self.pending_results);
            for (f, r) in pending {
                self.record(f, r);
            }
        }
        self.expire_cancels();
        let now = Instant::now();
        let due: Vec<u64> = self
            .finish_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(f, _)| *f)
            .collect();
        for f in due {
            self.finish_at.remove(&f);
            self.to_finish.insert(f);
        }
    }

    // ---- intake -------------------------------------------------------------------------

    /// Looks at the inbox: job files whose size and time held still for the settle time are
    /// queued for intake; cancel files are applied; badly named files are refused. At most the
    /// scan limit of files settle at once, and no new ones are looked at while that many wait
    /// for intake; the next ones settle while earlier ones are taken in.
    fn scan_inbox(&mut self) {
        let Ok(rd) = std::fs::read_dir(self.store.inbox()) else {
            return;
        };
        let now = Instant::now();
        self.last_inbox_scan = now;
        self.inbox_more = false;
        self.scans += 1;
        let scan = self.scans;
        let limit = self.settings.scan_limit.max(1);
        let settle = self.settings.settle;
        // Settling files this scan has not come to yet: once there are none and no new one
        // fits, the rest of the inbox waits for a later scan.
        let mut unvisited = self.settling.len();
        let mut complete = true;
        for entry in rd.filter_map(Result::ok) {
            if unvisited == 0 && self.settling.len() >= limit {
                self.inbox_more = true;
                complete = false;
                break;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                self.refuse_name(&entry.path());
                continue;
            };
            let lower = name.to_ascii_lowercase();
            if name.starts_with('.') || lower.ends_with(".tmp") || lower.ends_with(".part") {
                continue;
            }
            if let Some(id) = name.strip_suffix(".cancel") {
                self.cancel(id, &entry.path());
                continue;
            }
            if name.len() > store::MAX_NAME_BYTES {
                self.refuse_name(&entry.path());
                continue;
            }
            if self.waiting.contains_key(name) {
                continue;
            }
            let full = self.settling.len() >= limit;
            match self.settling.get_mut(name) {
                Some(s) => {
                    s.seen = scan;
                    unvisited = unvisited.saturating_sub(1);
                    // Not still for long enough yet: the next look that counts is when it is
                    // due (a change meanwhile shows then as another size or time).
                    if now.duration_since(s.since) < settle {
                        continue;
                    }
                }
                None if full => {
                    self.inbox_more = true;
                    continue;
                }
                None => {}
            }
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) if !m.is_dir() => m,
                _ => {
                    self.settling.remove(name);
                    continue;
                }
            };
            let arrival = self
                .wakes
                .arrivals
                .lock()
                .ok()
                .and_then(|a| a.get(&path).copied());
            if arrival == Some(false) {
                // Renamed in whole, as files should be dropped: nothing to wait for.
                self.settling.remove(name);
                self.wait_for_intake(name.into(), true);
                continue;
            }
            let look = look(&meta);
            let since = match self.settling.get_mut(name) {
                Some(s) if s.look == look => s.since,
                Some(s) => {
                    (s.look, s.since) = (look, now);
                    continue;
                }
                None => {
                    let s = Settling {
                        look,
                        since: now,
                        seen: scan,
                    };
                    self.settling.insert(name.into(), s);
                    now
                }
            };
            if now.duration_since(since) < settle {
                continue;
            }
            // A JSONL whose last line has no newline may still be being written: it waits
            // until it has been still for longer.
            if lower.ends_with(".jsonl")
                && meta.is_file()
                && meta.len() > 0
                && last_byte(&path) != Some(b'\n')
                && now.duration_since(since) < JSONL_QUIET.max(settle)
            {
                continue;
            }
            self.settling.remove(name);
            self.wait_for_intake(name.into(), false);
        }
        // Settling files a whole scan did not find are gone.
        if complete {
            self.settling.retain(|_, s| s.seen == scan);
        }
        if self.settling.is_empty() {
            // A batch of thousands should not keep its table for good.
            self.settling = HashMap::new();
        }
        self.settle_due = self.settling.values().map(|s| s.since + settle).min();
    }

    fn wait_for_intake(&mut self, name: Arc<str>, whole: bool) {
        self.waiting.insert(name.clone(), whole);
        self.ready.push_back(name);
    }

    fn refuse_name(&mut self, path: &Path) {
        if let Err(e) = self.store.refuse_name(path) {
            tracing::warn!(error = %e, "could not refuse a badly named job file");
        }
    }

    /// Takes one inbox file into the store: settled at once when none of its jobs needs
    /// ComfyUI, else given its folder and indexed.
    fn take_in(&mut self, name: Arc<str>) {
        let whole = self.waiting.remove(&name).unwrap_or(false);
        if self.waiting.is_empty() && self.ready.is_empty() {
            // A batch of thousands should not keep its tables for good.
            self.waiting = HashMap::new();
            self.ready = VecDeque::new();
        }
        let path = self.store.inbox().join(&*name);
        if let Ok(mut a) = self.wakes.arrivals.lock() {
            a.remove(&path);
        }
        match self.store.take(&path) {
            Ok(Some(taken)) => {
                tracing::debug!(file = %taken, "taken in");
                self.admit(taken, whole);
            }
            Ok(None) => {}
            Err(e) if store::is_no_space(&e) => {
                self.no_space(&e);
                self.waiting.insert(name.clone(), whole);
                self.ready.push_front(name);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "could not take a job file in")
            }
        }
    }

    /// Looks at a taken-in file's jobs. A file that cannot grow and none of whose jobs needs
    /// ComfyUI (each failed from the file alone, or finished before) goes straight to
    /// `failed/` or `done/`: one report written, one rename, no folder, no lease. Any other
    /// gets its folder, lazily, now that a job needs a lease.
    fn admit(&mut self, taken: TakenIn, whole: bool) {
        let read = self.store.read_taken(&taken, job::MAX_FILE_BYTES);
        // Gone: another daemon settled it first.
        let Some((len, parsed)) = parse_read(taken.name(), read, whole) else {
            return;
        };
        let may_grow = !whole && taken.name().to_ascii_lowercase().ends_with(".jsonl");
        if (parsed.is_err() || !may_grow)
            && let Some(results) = self.settle_at_intake(taken.name(), &parsed)
        {
            self.finish_taken(taken, &parsed, results);
            return;
        }
        match self.store.open(&taken) {
            Ok(Some(key)) => self.index_parsed(key, true, whole, len, parsed),
            Ok(None) => {}
            Err(e) => {
                if store::is_no_space(&e) {
                    self.no_space(&e);
                } else {
                    tracing::warn!(file = %taken.name(), error = %e, "could not give a job file its folder");
                }
                // Looked at again later; it stays in queue/ meanwhile, never lost.
                self.taken_seen.insert(taken, Instant::now());
            }
        }
    }

    /// Every job's end, when the whole file ends without ComfyUI: refused whole, or each job
    /// skipped (its manifest exists) or failed from the file alone. `None` as soon as one job
    /// needs running.
    fn settle_at_intake(
        &self,
        name: &str,
        parsed: &Result<Parsed, job::JobFileError>,
    ) -> Option<Vec<(JobResult, String)>> {
        let Ok(parsed) = parsed else {
            return Some(Vec::new());
        };
        if parsed.len() > SETTLE_AT_INTAKE_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(parsed.len());
        for (i, job) in parsed.jobs().enumerate() {
            let failure = match self.verdict(&job, name) {
                Verdict::Run(_) => return None,
                Verdict::Skip => None,
                Verdict::Fail(f) => Some(f),
            };
            out.push((result(&self.owner, &job, i as u32, failure), job.workflow));
        }
        Some(out)
    }

    /// Moves a taken-in file whose jobs all ended at intake, its report first.
    fn finish_taken(
        &mut self,
        taken: TakenIn,
        parsed: &Result<Parsed, job::JobFileError>,
        ended: Vec<(JobResult, String)>,
    ) {
        let name = taken.name().to_owned();
        // How each job ended, for the summary and the metrics once the file has moved.
        let mut outcomes = Vec::with_capacity(ended.len());
        let mut results = Vec::with_capacity(ended.len());
        for (r, workflow) in ended {
            let outcome = match &r.failure {
                Some(f) => Outcome::of_failure(&f.kind),
                None => Outcome::Skipped,
            };
            outcomes.push((self.workflow_label(&workflow), outcome));
            results.push(r);
        }
        let report = match parsed {
            Ok(p) => file_report(&name, None, p, results),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "job file refused");
                file_report(&name, Some(e), &Parsed::default(), results)
            }
        };
        let bytes = report
            .as_ref()
            .map(|r| serde_json::to_vec_pretty(r).unwrap_or_default());
        match self.store.finish_taken(&taken, bytes.as_deref()) {
            Ok(Some(dest)) => {
                if report.is_some() {
                    self.summary.files_failed += 1;
                } else {
                    self.summary.files_done += 1;
                }
                for (workflow, outcome) in outcomes {
                    match outcome {
                        Outcome::Skipped => self.summary.jobs_skipped += 1,
                        _ => self.summary.jobs_failed += 1,
                    }
                    self.settings.metrics.job_finished(&workflow, outcome);
                }
                self.status_dirty = true;
                tracing::info!(file = %name, to = %dest.display(), "job file finished");
            }
            Ok(None) => {}
            Err(e) => {
                if store::is_no_space(&e) {
                    self.no_space(&e);
                } else {
                    tracing::warn!(file = %name, error = %e, "could not move a finished job file");
                }
                self.taken_seen.insert(taken, Instant::now());
            }
        }
    }

    /// What becomes of a job, when that is certain without ComfyUI: its manifest exists
    /// (done before: skipped, or another file's job under the same id), its workflow is
    /// unknown, or its inputs fail the workflow's schema. Else it runs.
    fn verdict(&self, job: &Job, file_name: &str) -> Verdict {
        match runner::finished_by(&self.settings.outputs, &job.id) {
            Some(by) if by == file_name || by == original_name(file_name) => return Verdict::Skip,
            Some(other) => {
                return Verdict::Fail(Failure::new(
                    "duplicate-id",
                    format!(
                        "job id `{}` is already used by a finished job from `{other}`; give this job another `id`",
                        job.id
                    ),
                ));
            }
            None => {}
        }
        let workflow = match self.workflows.find(&job.workflow) {
            Ok(w) => w.clone(),
            Err(msg) => return Verdict::Fail(Failure::new("unknown-workflow", msg)),
        };
        let errors = workflow.validate(&job.inputs);
        if !errors.is_empty() {
            return Verdict::Fail(runner::invalid_inputs(&errors));
        }
        Verdict::Run(workflow)
    }

    /// Reads `queue/` for files this daemon does not know (taken in by others, or by itself
    /// before a restart) and forgets those that are gone.
    fn rescan_queue(&mut self) {
        self.last_rescan = Instant::now();
        let Ok(listing) = self.store.list() else {
            return;
        };
        let keys = listing.files;
        let present: HashSet<&FileKey> = keys.iter().collect();
        let gone: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, e)| !present.contains(&e.key))
            .map(|(f, _)| *f)
            .collect();
        for f in gone {
            self.forget(f);
        }
        for key in keys {
            if !self.by_key.contains_key(&key) {
                self.index_file(key, false, false);
            }
        }
        // Files taken in and left without a folder: their taker is settling them right now,
        // or died. Looked at once they have been there a while.
        let taken: HashSet<&TakenIn> = listing.taken.iter().collect();
        self.taken_seen.retain(|t, _| taken.contains(t));
        let now = Instant::now();
        for t in listing.taken {
            if !self.taken_due.contains(&t) {
                self.taken_seen.entry(t).or_insert(now);
            }
        }
    }

    /// Parses a file of the store and puts its jobs where they belong: results are resolved,
    /// others' leases watched, our own orphans taken back, the rest waiting.
    fn index_file(&mut self, key: FileKey, fresh: bool, whole: bool) {
        let read = self.store.read(&key, job::MAX_FILE_BYTES);
        let Some((len, parsed)) = parse_read(key.name(), read, whole) else {
            // Finished by another daemon meanwhile, or a folder a killed daemon left behind.
            if let Err(e) = self.store.sweep(&key) {
                tracing::debug!(file = %key, error = %e, "could not remove a left-over folder");
            }
            return;
        };
        self.index_parsed(key, fresh, whole, len, parsed);
    }

    fn index_parsed(
        &mut self,
        key: FileKey,
        fresh: bool,
        whole: bool,
        len: usize,
        parsed: Result<Parsed, job::JobFileError>,
    ) {
        let f = self.next_file;
        self.next_file += 1;
        let (parsed, refused) = match parsed {
            Ok(p) => (p, None),
            Err(e) => {
                tracing::warn!(file = %key.name(), error = %e, "job file refused");
                (Parsed::default(), Some(e))
            }
        };
        let n = parsed.len();
        let state = if fresh {
            store::FileState::default()
        } else {
            match self.store.state(&key) {
                Ok(s) => s,
                Err(_) => return,
            }
        };
        let entry = FileEntry {
            whole,
            last_len: len,
            key: key.clone(),
            parsed: Arc::new(parsed),
            refused,
            jobs: vec![JobState::Open; n],
            unresolved: n,
            last_change: Instant::now(),
        };
        self.files.insert(f, entry);
        self.by_key.insert(key, f);
        for i in 0..n as u32 {
            self.add_job(f, i, &state);
        }
        if n == 0 || self.files.get(&f).is_some_and(|e| e.unresolved == 0) {
            self.to_finish.insert(f);
        }
        if let Some(g) = state.leases.get(&Slot::End) {
            let _ = g;
            self.watch(f, Slot::End);
        }
    }

    fn add_job(&mut self, f: u64, i: u32, state: &store::FileState) {
        let Some(entry) = self.files.get(&f) else {
            return;
        };
        let Some(id) = entry.parsed.id(i as usize) else {
            return;
        };
        self.ids.insert(id.to_owned(), (f, i));
        if state.results.contains(&i) {
            self.resolve_state(f, i);
            return;
        }
        if state.leases.contains_key(&Slot::Job(i)) {
            self.set_state(f, i, JobState::Theirs);
            self.watch(f, Slot::Job(i));
            return;
        }
        self.enqueue(f, i);
    }

    /// Puts a job into its bucket.
    fn enqueue(&mut self, f: u64, i: u32) {
        let Some(entry) = self.files.get(&f) else {
            return;
        };
        let Some(job) = entry.parsed.job(i as usize) else {
            return;
        };
        let (class, models) = match self.workflows.find(&job.workflow) {
            Ok(w) => (w.class.clone(), self.workflows.model_key(w, &job)),
            Err(_) => (String::new(), 0),
        };
        self.seq += 1;
        self.buckets.push(
            (class, job.priority, models),
            self.seq,
            Waiting {
                job: (f, i),
                since: Instant::now(),
            },
        );
        self.set_state(f, i, JobState::Open);
        self.status_dirty = true;
    }

    fn set_state(&mut self, f: u64, i: u32, s: JobState) {
        if let Some(e) = self.files.get_mut(&f)
            && let Some(j) = e.jobs.get_mut(i as usize)
        {
            *j = s;
        }
    }

    fn resolve_state(&mut self, f: u64, i: u32) {
        self.watched.remove(&(f, Slot::Job(i)));
        if let Some(e) = self.files.get_mut(&f)
            && let Some(j) = e.jobs.get_mut(i as usize)
            && *j != JobState::Resolved
        {
            *j = JobState::Resolved;
            e.unresolved -= 1;
            if e.unresolved == 0 {
                self.to_finish.insert(f);
            }
        }
    }

    fn forget(&mut self, f: u64) {
        if let Some(e) = self.files.remove(&f) {
            self.by_key.remove(&e.key);
            for i in 0..e.jobs.len() {
                if let Some(id) = e.parsed.id(i) {
                    self.ids.remove(id);
                }
                if e.jobs[i] == JobState::Open {
                    self.buckets.remove((f, i as u32));
                }
            }
            self.watched.retain(|(wf, _), _| *wf != f);
            self.status_dirty = true;
        }
    }

    // ---- scheduling and claims -----------------------------------------------------------

    /// Fills ComfyUI's slots: the scheduler picks among every waiting job when a slot is free.
    fn fill(&mut self, running: &mut Running, mut budget: usize) -> usize {
        while running.len() < self.settings.pipeline.max(1) && budget > 0 {
            let heads = self.buckets.heads(Instant::now());
            let cands: Vec<scheduler::Candidate<'_>> = heads
                .iter()
                .map(|(k, seq, waited)| scheduler::Candidate {
                    class: &k.0,
                    priority: k.1,
                    waited: *waited,
                    models: k.2,
                    seq: *seq,
                })
                .collect();
            let Some(pick) = scheduler::pick(&self.settings.policy, &self.sched, &cands) else {
                break;
            };
            let (key, seq) = (&heads[pick].0, heads[pick].1);
            let Some(w) = self.buckets.pop(key, seq) else {
                break;
            };
            budget -= 1;
            let (f, i) = w.job;
            match self.start(f, i, running) {
                Started::Yes => {
                    self.settings.metrics.claimed(w.since.elapsed());
                    scheduler::record(&self.settings.policy, &mut self.sched, &cands, pick);
                }
                Started::No => {}
                Started::Later => {
                    self.buckets.push(key.clone(), seq, w);
                    self.set_state(f, i, JobState::Open);
                    break;
                }
            }
        }
        budget
    }

    /// Claims a job and starts it, or settles it without ComfyUI when that is certain.
    fn start(&mut self, f: u64, i: u32, running: &mut Running) -> Started {
        let Some(entry) = self.files.get(&f) else {
            return Started::No;
        };
        let Some(job) = entry.parsed.job(i as usize) else {
            return Started::No;
        };
        let key = entry.key.clone();
        let file_name = key.name().to_owned();
        // Done before, a conflicting id, an unknown workflow, invalid inputs: all certain
        // without a lease.
        let workflow = match self.verdict(&job, &file_name) {
            Verdict::Run(w) => w,
            Verdict::Skip => {
                self.summary.jobs_skipped += 1;
                let name = self.workflow_label(&job.workflow);
                self.settings.metrics.job_finished(&name, Outcome::Skipped);
                self.record(f, result(&self.owner, &job, i, None));
                return Started::No;
            }
            Verdict::Fail(failure) => {
                self.fail(f, i, &job, failure);
                return Started::No;
            }
        };
        let held = match self.store.claim(&key, Slot::Job(i), &self.lease()) {
            Ok(Claim::Claimed(h)) => h,
            Ok(Claim::Held(_)) => {
                self.set_state(f, i, JobState::Theirs);
                self.watch(f, Slot::Job(i));
                return Started::No;
            }
            Ok(Claim::Finished) => {
                self.resolve_state(f, i);
                return Started::No;
            }
            Ok(Claim::Gone) => {
                self.forget(f);
                return Started::No;
            }
            Err(e) if store::is_no_space(&e) => {
                self.no_space(&e);
                return Started::Later;
            }
            Err(e) => {
                tracing::warn!(file = %file_name, job = %job.id, error = %e, "could not claim");
                return Started::Later;
            }
        };
        self.spawn(f, i, job, workflow, held, self.lease(), None, running);
        Started::Yes
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        f: u64,
        i: u32,
        job: Job,
        workflow: Arc<Workflow>,
        held: Held,
        lease: Lease,
        adopt: Option<PromptRecord>,
        running: &mut Running,
    ) {
        let file_name = held.file.name().to_owned();
        if self.settings.metrics.is_enabled() {
            let key = self.workflows.model_key(&workflow, &job);
            self.settings.metrics.job_started(key);
        }
        let h = Arc::new(HeldJob {
            store: self.store.clone() as Arc<dyn JobStore>,
            held,
            lease: Mutex::new(lease),
            job_id: job.id.clone(),
            file_name: file_name.clone(),
            workflow: job.workflow.clone(),
            since_ms: runner::now_ms(),
            cancel: AtomicBool::new(false),
            phase: Mutex::new("preparing"),
            prompt: Mutex::new(None),
        });
        self.held.insert((f, i), h.clone());
        self.set_state(f, i, JobState::Mine);
        self.status_dirty = true;
        let ctx = self.ctx.clone();
        let cancel_file = self.store.inbox().join(format!("{}.cancel", job.id));
        let hash = self.workflows.catalogue_hash.clone();
        let models = self.workflows.model_key(&workflow, &job);
        running.push(Box::pin(async move {
            let cancelled = || h.cancel.load(Ordering::Relaxed) || cancel_file.exists();
            let end = runner::run(
                &ctx,
                JobRun {
                    job: &job,
                    workflow: &workflow,
                    catalogue_hash: &hash,
                    file_name: &file_name,
                    claimed_ms: h.since_ms,
                    guard: h.as_ref(),
                    cancel: &cancelled,
                    adopt,
                    phase: &h.phase,
                    prompt: &h.prompt,
                    models,
                    interventions: Default::default(),
                    measured: Default::default(),
                },
            )
            .await;
            ((f, i), end)
        }));
    }

    /// A job in flight ended.
    fn ended(&mut self, (f, i): JobRef, end: End) {
        let Some(h) = self.held.get(&(f, i)).cloned() else {
            return;
        };
        let job = self.files.get(&f).and_then(|e| e.parsed.job(i as usize));
        let cancel_file = self.store.inbox().join(format!("{}.cancel", h.job_id));
        match end {
            End::Done(m) => {
                tracing::info!(job = %h.job_id, outputs = m.outputs.len(), "job done");
                self.count_done(&m);
                self.summary.jobs_done += 1;
                self.held.remove(&(f, i));
                if let Some(job) = job {
                    self.record(f, result(&self.owner, &job, i, None));
                }
            }
            End::Failed(failure)
                if self.stopping
                    && matches!(failure.kind, "interrupted" | "cancelled")
                    && !cancel_file.exists() =>
            {
                // Stopped by the shutdown, not by the job: it runs again, here or elsewhere.
                self.release((f, i));
            }
            End::Failed(failure) => {
                tracing::warn!(job = %h.job_id, kind = failure.kind, reason = %failure.message, "job failed");
                self.held.remove(&(f, i));
                if let Some(job) = job {
                    self.fail(f, i, &job, failure);
                }
            }
            End::Lost => {
                tracing::info!(job = %h.job_id, "another daemon took this job over; dropping it");
                self.held.remove(&(f, i));
                self.set_state(f, i, JobState::Theirs);
                self.watch(f, Slot::Job(i));
            }
        }
        if cancel_file.exists() {
            let _ = std::fs::remove_file(&cancel_file);
        }
        self.status_dirty = true;
    }

    fn fail(&mut self, f: u64, i: u32, job: &Job, failure: Failure) {
        self.summary.jobs_failed += 1;
        let name = self.workflow_label(&job.workflow);
        self.settings
            .metrics
            .job_finished(&name, Outcome::of_failure(failure.kind));
        let r = result(&self.owner, job, i, Some(failure));
        self.record(f, r);
    }

    /// The `workflow` label of a job's metrics: its workflow's name, whatever version the job
    /// asked for; a name the repository lacks is one label, not one per spelling.
    fn workflow_label(&self, spec: &str) -> String {
        if !self.settings.metrics.is_enabled() {
            return String::new();
        }
        self.workflows
            .find(spec)
            .map_or_else(|_| metrics::UNKNOWN_WORKFLOW.to_owned(), |w| w.name.clone())
    }

    /// Counts a job done; its workflow's loader nodes tell which timings were model loads.
    fn count_done(&self, m: &crate::manifest::Manifest) {
        if self.settings.metrics.is_enabled() {
            let spec = match &m.workflow.version {
                Some(v) => format!("{}@{v}", m.workflow.name),
                None => m.workflow.name.clone(),
            };
            let w = self.workflows.find(&spec).ok();
            let loaders: Vec<&str> = w
                .iter()
                .flat_map(|w| w.models.iter().map(|u| u.node.as_str()))
                .collect();
            self.settings.metrics.job_manifest(m, &loaders);
        }
    }

    /// Writes a job's result; a full disk keeps it for later, never loses it.
    fn record(&mut self, f: u64, r: JobResult) {
        let Some(entry) = self.files.get(&f) else {
            return;
        };
        match self.store.complete(&entry.key, &r) {
            Ok(()) => self.resolve_state(f, r.index),
            Err(e) if store::is_no_space(&e) => {
                self.no_space(&e);
                self.pending_results.push((f, r));
            }
            Err(e) => {
                tracing::warn!(file = %entry.key.name(), error = %e, "could not record a job's end");
                self.pending_results.push((f, r));
            }
        }
        self.status_dirty = true;
    }

    /// Lets a held job go (shutdown): the lease says so, and any daemon may take it at once.
    fn release(&mut self, j: JobRef) {
        if let Some(h) = self.held.remove(&j) {
            let _ = h.write(|l| l.released = true);
            self.summary.jobs_released += 1;
            self.set_state(j.0, j.1, JobState::Theirs);
        }
    }

    // ---- other daemons' leases --------------------------------------------------------------

    fn watch(&mut self, f: u64, slot: Slot) {
        self.watched.entry((f, slot)).or_insert(Watched {
            seen: (0, 0, false),
            since: Instant::now(),
        });
    }

    /// Looks at every watched lease: finished, still alive, or stale and taken over.
    fn check_watched(&mut self) {
        let keys: Vec<(u64, Slot)> = self.watched.keys().copied().collect();
        let now = Instant::now();
        for (f, slot) in keys {
            let Some(key) = self.files.get(&f).map(|e| e.key.clone()) else {
                self.watched.remove(&(f, slot));
                continue;
            };
            if let Slot::Job(i) = slot
                && self.held.contains_key(&(f, i))
            {
                self.watched.remove(&(f, slot));
                continue;
            }
            let lease = match self.store.lease(&key, slot) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // No lease: the file was finished and removed, or the job has its result.
                    self.watched.remove(&(f, slot));
                    match slot {
                        Slot::End => self.rescan_queue(),
                        Slot::Job(i) => self.refresh_job(f, i),
                    }
                    continue;
                }
                Err(_) => continue,
            };
            if let Slot::Job(i) = slot {
                let st = self.store.state(&key).map(|s| s.results.contains(&i));
                if matches!(st, Ok(true)) {
                    self.resolve_state(f, i);
                    continue;
                }
                if st.is_err() {
                    self.forget(f);
                    continue;
                }
            }
            let seen = (lease.generation, lease.renewed_ms, lease.released);
            let Some(w) = self.watched.get_mut(&(f, slot)) else {
                continue;
            };
            if w.seen != seen {
                w.seen = seen;
                w.since = now;
            }
            let stale =
                store::is_stale(
                    &lease,
                    now.duration_since(w.since),
                    runner::now_ms(),
                    self.settings.lease_ttl,
                ) || store::is_own_orphan(&lease, &self.owner, &self.host, fsutil::pid_alive);
            if stale && !self.stopping {
                self.take_over(f, slot, &key, &lease);
            }
        }
    }

    /// After a watched job's lease vanished: its result, or back to waiting.
    fn refresh_job(&mut self, f: u64, i: u32) {
        let Some(key) = self.files.get(&f).map(|e| e.key.clone()) else {
            return;
        };
        match self.store.state(&key) {
            Ok(s) if s.results.contains(&i) => self.resolve_state(f, i),
            Ok(s) if !s.has_file => self.forget(f),
            Ok(_) => self.enqueue(f, i),
            Err(_) => self.forget(f),
        }
    }

    fn take_over(&mut self, f: u64, slot: Slot, key: &FileKey, old: &Lease) {
        // The prompt record travels with the job from the first moment, so a daemon that takes
        // it over from us (we may die before our first renewal) adopts it too.
        let mut lease = self.lease();
        lease.prompt = old.prompt.clone();
        let taken = self.store.take_over(key, slot, old.generation, &lease);
        let held = match taken {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                if store::is_no_space(&e) {
                    self.no_space(&e);
                }
                return;
            }
        };
        self.watched.remove(&(f, slot));
        tracing::info!(file = %key.name(), ?slot, from = %old.owner, generation = held.generation, "took over a stale lease");
        if matches!(slot, Slot::Job(_)) {
            self.settings.metrics.took_over();
        }
        match slot {
            Slot::End => self.finish_held(f, held),
            Slot::Job(i) => {
                let job = self.files.get(&f).and_then(|e| e.parsed.job(i as usize));
                let Some(job) = job else { return };
                // The old holder may have recorded a prompt after we read its lease and before
                // our generation existed: its frozen lease says so now.
                if let Ok(Some(frozen)) = self.store.lease_at(key, slot, old.generation)
                    && frozen.prompt.is_some()
                    && frozen.prompt != lease.prompt
                {
                    lease.prompt = frozen.prompt;
                    let _ = self.store.write_lease(&held, &lease);
                }
                lease.generation = held.generation;
                let adopt = lease.prompt.clone();
                match self.workflows.find(&job.workflow) {
                    Ok(w) => {
                        let w = w.clone();
                        self.taken.push((f, i, job, w, held, lease, adopt));
                    }
                    Err(msg) => {
                        self.fail(f, i, &job, Failure::new("unknown-workflow", msg));
                    }
                }
            }
        }
    }
}

/// What becomes of a job, as far as that is certain without ComfyUI.
enum Verdict {
    /// Its manifest exists: done before (a restart, or the file dropped again).
    Skip,
    /// Fails from the file alone.
    Fail(Failure),
    /// Needs running, with this workflow.
    Run(Arc<Workflow>),
}

/// Whether [`Owner::start`] started the job.
enum Started {
    Yes,
    /// Settled without running, or someone else has it.
    No,
    /// Not now (no space, a store error): it waits in its bucket.
    Later,
}

/// A job taken over from a stale lease, waiting to be spawned.
type Taken = (
    u64,
    u32,
    Job,
    Arc<Workflow>,
    Held,
    Lease,
    Option<PromptRecord>,
);

impl Owner {
    /// Spawns jobs taken over from dead daemons (they do not wait for a slot: their prompt may
    /// already be at ComfyUI).
    fn spawn_taken(&mut self, running: &mut Running) {
        for (f, i, job, w, held, lease, adopt) in std::mem::take(&mut self.taken) {
            self.spawn(f, i, job, w, held, lease, adopt, running);
        }
    }

    // ---- finishing files --------------------------------------------------------------------

    /// A file whose jobs all have results (or that was refused whole) is finished by whoever
    /// gets its `End` lease.
    fn try_finish(&mut self, f: u64) {
        let Some(entry) = self.files.get(&f) else {
            return;
        };
        if entry.unresolved > 0 {
            return;
        }
        let key = entry.key.clone();
        // A JSONL that grew while its jobs ran: index the new lines instead of finishing; one
        // that changed lately may still grow: look again once it has been quiet.
        if entry.refused.is_none()
            && !entry.whole
            && key.name().to_ascii_lowercase().ends_with(".jsonl")
        {
            let Ok(bytes) = self.store.read(&key, job::MAX_FILE_BYTES) else {
                self.forget(f);
                return;
            };
            let old_len = entry.parsed.len();
            let changed = bytes.len() != entry.last_len;
            if let Some(e) = self.files.get_mut(&f)
                && changed
            {
                e.last_len = bytes.len();
                e.last_change = Instant::now();
            }
            let quiet_for = self
                .files
                .get(&f)
                .map_or(JSONL_QUIET, |e| e.last_change.elapsed());
            // Quiet long enough: a last line without its newline is all there will be.
            let complete = quiet_for >= JSONL_QUIET;
            if (complete || !job::jsonl_incomplete(key.name(), &bytes))
                && let Ok(text) = String::from_utf8(bytes)
                && let Ok(p) = job::parse_with(key.name(), &text, complete)
                && p.len() > old_len
            {
                self.grow(f, p);
                return;
            }
            if quiet_for < JSONL_QUIET {
                self.finish_at
                    .insert(f, Instant::now() + (JSONL_QUIET - quiet_for));
                return;
            }
        }
        match self.store.claim(&key, Slot::End, &self.lease()) {
            Ok(Claim::Claimed(held)) => self.finish_held(f, held),
            Ok(Claim::Held(_)) => self.watch(f, Slot::End),
            Ok(Claim::Finished) | Ok(Claim::Gone) => self.forget(f),
            Err(e) if store::is_no_space(&e) => {
                self.no_space(&e);
                self.to_finish.insert(f);
            }
            Err(e) => tracing::warn!(file = %key.name(), error = %e, "could not finish a job file"),
        }
    }

    /// Adds the jobs of lines appended to a JSONL after it was taken in.
    fn grow(&mut self, f: u64, p: Parsed) {
        let Some(entry) = self.files.get_mut(&f) else {
            return;
        };
        let old = entry.parsed.len();
        let added = p.len() - old;
        tracing::info!(file = %entry.key.name(), added, "lines were added to a job file; running them too");
        entry.parsed = Arc::new(p);
        entry
            .jobs
            .extend(std::iter::repeat_n(JobState::Open, added));
        entry.unresolved += added;
        let state = store::FileState::default();
        for i in old..old + added {
            self.add_job(f, i as u32, &state);
        }
    }

    /// Writes the report (if any job failed) and moves the file; we hold its `End` lease.
    fn finish_held(&mut self, f: u64, held: Held) {
        let Some(entry) = self.files.get(&f) else {
            return;
        };
        let name = entry.key.name().to_owned();
        let report = match &entry.refused {
            Some(e) => file_report(&name, Some(e), &entry.parsed, Vec::new()),
            None => {
                let results = match self.store.results(&entry.key) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "could not read job results");
                        let _ = self.store.write_lease(&held, &released(self.lease()));
                        return;
                    }
                };
                if results.len() < entry.parsed.len() {
                    // Our index was ahead of the store: let go and look again.
                    let _ = self.store.write_lease(&held, &released(self.lease()));
                    self.watch(f, Slot::End);
                    return;
                }
                file_report(&name, None, &entry.parsed, results)
            }
        };
        let bytes = report
            .as_ref()
            .map(|r| serde_json::to_vec_pretty(r).unwrap_or_default());
        match self.store.finish(&held, bytes.as_deref()) {
            Ok(Some(dest)) => {
                if report.is_some() {
                    self.summary.files_failed += 1;
                } else {
                    self.summary.files_done += 1;
                }
                tracing::info!(file = %name, to = %dest.display(), "job file finished");
                self.forget(f);
            }
            Ok(None) => self.forget(f),
            Err(e) if store::is_no_space(&e) => {
                self.no_space(&e);
                let _ = self.store.write_lease(&held, &released(self.lease()));
                self.to_finish.insert(f);
            }
            Err(e) => {
                tracing::error!(file = %name, error = %e, "could not move a finished job file");
                let _ = self.store.write_lease(&held, &released(self.lease()));
                self.watch(f, Slot::End);
            }
        }
    }

    // ---- leases, cancels, space, shutdown -----------------------------------------------------

    fn renew(&mut self) {
        let mut lost = Vec::new();
        for (j, h) in &self.held {
            if let Err(e) = h.write(|_| {}) {
                if e.to_string() == store::lost().to_string() {
                    lost.push(*j);
                } else {
                    tracing::warn!(job = %h.job_id, error = %e, "could not renew a lease");
                }
            }
        }
        for j in lost {
            if let Some(h) = self.held.get(&j) {
                tracing::warn!(job = %h.job_id, "lost the lease of a running job; stopping it here");
                h.cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    /// `inbox/ID.cancel`: a waiting job fails as cancelled, a running one is interrupted; one
    /// for a finished job is removed; one for an id nobody knows expires.
    fn cancel(&mut self, id: &str, path: &Path) {
        let Some(&(f, i)) = self.ids.get(id) else {
            let first = *self
                .cancels
                .entry(id.to_owned())
                .or_insert_with(Instant::now);
            if first.elapsed() >= self.settings.cancel_expiry {
                tracing::info!(job = %id, "removing a cancel file for a job no file has");
                let _ = std::fs::remove_file(path);
                self.cancels.remove(id);
            }
            return;
        };
        self.cancels.remove(id);
        let state = self
            .files
            .get(&f)
            .and_then(|e| e.jobs.get(i as usize).copied());
        match state {
            Some(JobState::Open) => {
                self.buckets.remove((f, i));
                if let Some(job) = self.files.get(&f).and_then(|e| e.parsed.job(i as usize)) {
                    tracing::info!(job = %id, "cancelled before it ran");
                    self.fail(
                        f,
                        i,
                        &job,
                        Failure::new("cancelled", format!("cancelled by `{id}.cancel`")),
                    );
                }
                let _ = std::fs::remove_file(path);
            }
            Some(JobState::Mine) => {
                if let Some(h) = self.held.get(&(f, i)) {
                    h.cancel.store(true, Ordering::Relaxed);
                    if let Some((pid, client)) = h.prompt.lock().ok().and_then(|p| p.clone()) {
                        tokio::spawn(async move {
                            let _ = client.cancel(&pid).await;
                        });
                    }
                }
            }
            // Its holder cancels it.
            Some(JobState::Theirs) => {}
            Some(JobState::Resolved) | None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn expire_cancels(&mut self) {
        if self.cancels.is_empty() {
            return;
        }
        let expired: Vec<String> = self
            .cancels
            .iter()
            .filter(|(_, t)| t.elapsed() >= self.settings.cancel_expiry)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let path = self.store.inbox().join(format!("{id}.cancel"));
            self.cancel(&id, &path);
        }
    }

    fn no_space(&mut self, e: &std::io::Error) {
        if self.space_ok {
            tracing::warn!(error = %e, "no space left: no new jobs until there is");
        }
        self.space_ok = false;
        self.space_checked = Some(Instant::now());
        self.status_dirty = true;
    }

    /// Looks at free space at most once a second; claiming stops below the minimum.
    fn check_space(&mut self) {
        if self
            .space_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.space_checked = Some(Instant::now());
        let min = self.settings.min_free_bytes;
        let enough = |p: &Path| fsutil::available_space(p).map_or(true, |a| a > min);
        let ok = enough(&self.settings.outputs) && enough(&self.settings.jobs);
        if ok != self.space_ok {
            if ok {
                tracing::info!("space is back: taking jobs again");
            } else {
                tracing::warn!(
                    min_free_bytes = min,
                    "too little space left: no new jobs until there is more"
                );
            }
            self.space_ok = ok;
            self.status_dirty = true;
        }
    }

    /// The grace period is over: every prompt of this daemon leaves ComfyUI's queue or is
    /// interrupted, and the jobs are let go.
    async fn interrupt_all(&mut self) {
        for h in self.held.values() {
            h.cancel.store(true, Ordering::Relaxed);
            let prompt = h.prompt.lock().ok().and_then(|p| p.clone());
            if let Some((pid, client)) = prompt {
                let _ = client.cancel(&pid).await;
            }
        }
    }

    // ---- status -------------------------------------------------------------------------------

    /// Writes the status file when something changed, at most four times a second.
    /// Publishes the job counts (for the terminal's bar) and logs a long job's progress when
    /// it is due.
    fn report_progress(&mut self) {
        if let Some(tx) = &self.settings.counts {
            let counts = crate::progress::Counts {
                done: self.summary.jobs_done as u64,
                failed: self.summary.jobs_failed as u64,
                skipped: self.summary.jobs_skipped as u64,
                running: self.held.len() as u64,
                queued: self.buckets.len as u64,
            };
            tx.send_if_modified(|c| std::mem::replace(c, counts) != counts);
        }
        let executing = self.ctx.progress.lock().ok().and_then(|p| p.clone());
        if let Some(ran) = self
            .progress_log
            .observe(Instant::now(), executing.as_ref())
            && let Some(p) = executing
        {
            let step = (p.max > 0.0).then(|| crate::progress::fraction(p.value, p.max));
            tracing::info!(
                job = %p.job,
                node = %p.node.as_deref().unwrap_or("-"),
                class = %p.class_type.as_deref().unwrap_or("-"),
                step = %step.as_deref().unwrap_or("-"),
                nodes = %format!("{}/{}", p.nodes_done.min(p.nodes_total), p.nodes_total),
                running_s = %format!("{:.1}", ran.as_secs_f64()),
                "job progress"
            );
        }
    }

    fn write_status(&mut self, force: bool) {
        if let Some(sup) = &self.ctx.supervisor {
            let n = sup.restarts();
            while self.restarts_counted < n {
                self.ctx.metrics.comfyui_restarted();
                self.restarts_counted += 1;
            }
        }
        let progress = self.ctx.progress.lock().ok().and_then(|p| p.clone());
        let mut running: Vec<RunningJob> = self
            .held
            .values()
            .map(|h| RunningJob {
                job: h.job_id.clone(),
                file: h.file_name.clone(),
                workflow: h.workflow.clone(),
                phase: h.phase.lock().map(|p| (*p).to_owned()).unwrap_or_default(),
                since_ms: h.since_ms,
            })
            .collect();
        running.sort_by(|a, b| (a.since_ms, &a.job).cmp(&(b.since_ms, &b.job)));
        let changed =
            self.status_dirty || running != self.last_running || progress != self.last_progress;
        let due = self
            .status_written
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if !(force || due && changed) {
            return;
        }
        let state = if force && self.stopping {
            "stopped"
        } else if self.stopping {
            "stopping"
        } else if !self.space_ok {
            "no-space"
        } else if running.iter().any(|r| r.phase == "waiting") {
            "waiting-for-comfyui"
        } else {
            "running"
        };
        self.last_running = running.clone();
        self.last_progress = progress.clone();
        let queued = self.buckets.by_class();
        self.settings.metrics.queue_depth(&queued);
        self.settings
            .metrics
            .prompts_in_flight(running.iter().filter(|r| r.phase == "queued").count());
        self.notify.status(&crate::notify::status_line(
            state,
            running.len(),
            self.buckets.len,
            self.summary.jobs_done,
            self.summary.jobs_failed,
        ));
        let status = Status {
            owner: self.owner.clone(),
            pid: std::process::id(),
            gpu: self.settings.gpu,
            comfy_url: self.settings.comfy_url.clone(),
            state: state.into(),
            started_ms: self.started_ms,
            updated_ms: runner::now_ms(),
            comfyui_version: self.ctx.server.lock().ok().and_then(|s| s.version.clone()),
            queued,
            running,
            jobs_done: self.summary.jobs_done,
            jobs_failed: self.summary.jobs_failed,
            progress,
        };
        let path = self
            .store
            .status()
            .join(format!("gpu-{}.json", self.settings.gpu));
        if let Err(e) = fsutil::write_atomic_unsynced(
            &path,
            &serde_json::to_vec_pretty(&status).unwrap_or_default(),
        ) {
            tracing::debug!(error = %e, "could not write the status file");
        }
        self.status_dirty = false;
        self.status_written = Some(Instant::now());
    }
}

/// A file's report: why it was refused whole, or every failed job (lines that did not parse
/// first, in file order); `None` when nothing failed.
fn file_report(
    name: &str,
    refused: Option<&job::JobFileError>,
    parsed: &Parsed,
    results: Vec<JobResult>,
) -> Option<FileReport> {
    if let Some(e) = refused {
        return Some(FileReport {
            file: name.to_owned(),
            error: Some(e.message.clone()),
            line: e.line,
            jobs: 0,
            done: 0,
            failed: 0,
            failures: Vec::new(),
            more: 0,
        });
    }
    let mut failures: Vec<JobFailure> = parsed
        .errors
        .iter()
        .map(|e| JobFailure {
            job: None,
            line: e.line,
            sweep_index: None,
            workflow: None,
            kind: "job-file".into(),
            message: e.message.clone(),
            details: Vec::new(),
        })
        .collect();
    let done = results.iter().filter(|r| r.ok).count();
    let failed_jobs: Vec<JobFailure> = results.into_iter().filter_map(|r| r.failure).collect();
    let failed = failed_jobs.len() + parsed.error_count;
    failures.extend(failed_jobs);
    failures.sort_by_key(|f| (f.line, f.sweep_index));
    (failed > 0).then(|| FileReport {
        file: name.to_owned(),
        error: None,
        line: None,
        jobs: parsed.len() + parsed.error_count,
        done,
        failed,
        more: failures.len().saturating_sub(MAX_REPORTED),
        failures: failures
            .into_iter()
            .take(MAX_REPORTED)
            .map(JobFailure::shortened)
            .collect(),
    })
}

/// A job file's bytes as read, parsed: their length and the jobs, or why the file is refused
/// whole. `None` when the file is gone.
fn parse_read(
    name: &str,
    read: std::io::Result<Vec<u8>>,
    whole: bool,
) -> Option<(usize, Result<Parsed, job::JobFileError>)> {
    let refused = |message: String| job::JobFileError {
        line: None,
        message,
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some((0, Err(refused(e.to_string())))),
    };
    let len = bytes.len();
    let parsed = String::from_utf8(bytes)
        .map_err(|e| refused(format!("the file is not UTF-8 text: {e}")))
        .and_then(|text| job::parse_with(name, &text, whole));
    Some((len, parsed))
}

fn released(mut l: Lease) -> Lease {
    l.released = true;
    l
}

/// A job's result as the store records it.
fn result(owner: &str, job: &Job, index: u32, failure: Option<Failure>) -> JobResult {
    JobResult {
        job: job.id.clone(),
        index,
        ok: failure.is_none(),
        failure: failure.map(|f| JobFailure {
            job: Some(job.id.clone()),
            line: job.origin.line,
            sweep_index: job.origin.sweep_index,
            workflow: Some(job.workflow.clone()),
            kind: f.kind.to_owned(),
            message: f.message,
            details: f.details,
        }),
        by: owner.to_owned(),
    }
}

/// `NAME.EXT` for a file kept as `NAME.N.EXT` because a file of the same name was there.
fn original_name(name: &str) -> String {
    let parts: Vec<&str> = name.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [ext, n, stem] if n.parse::<u32>().is_ok() => format!("{stem}.{ext}"),
        _ => name.to_owned(),
    }
}

fn last_byte(path: &Path) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::End(-1)).ok()?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).ok()?;
    Some(b[0])
}

/// Watches the inbox and the workflows; each event sets its flag and wakes the owner. Flags
/// cannot overflow, so no wake-up is ever lost. The queue is not watched: our own intake and
/// finishing would wake us for every file; what other daemons take in is seen when it leaves
/// the inbox, and on a timer (a network file system sends no events at all).
fn watch_dirs(
    store: &DirStore,
    workflows: &Path,
    wakes: Arc<Wakes>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let workflows_dir = workflows.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Reading a folder or file raises access events, our own scans included: waking on
        // them would make an idle daemon spin.
        if matches!(
            event.kind,
            notify::EventKind::Access(_)
                | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
        ) {
            return;
        }
        note_arrival(&wakes, &event);
        for p in &event.paths {
            if p.starts_with(&workflows_dir) {
                wakes.workflows.store(true, Ordering::Release);
            } else {
                // A file arriving in or leaving the inbox; one that left may have been taken in
                // by another daemon, whose jobs are then in the queue for us too.
                wakes.inbox.store(true, Ordering::Release);
                wakes.queue.store(true, Ordering::Release);
            }
        }
        wakes.notify.notify_one();
    })?;
    w.watch(&store.inbox(), notify::RecursiveMode::NonRecursive)?;
    #[cfg(not(target_os = "linux"))]
    if workflows.is_dir() {
        w.watch(workflows, notify::RecursiveMode::Recursive)?;
    }
    Ok(w)
}

/// Watches the workflow repository for changes only (created, written, moved, deleted), so
/// another process reading it wakes nothing; the task ends when the guard is dropped.
#[cfg(target_os = "linux")]
fn watch_workflows(dir: &Path, wakes: Arc<Wakes>) -> std::io::Result<Option<AbortOnDrop>> {
    use futures_util::StreamExt;
    use inotify::{EventMask, Inotify, WatchMask};
    if !dir.is_dir() {
        return Ok(None);
    }
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    let inotify = Inotify::init()?;
    let mut watches = inotify.watches();
    watch_tree(&mut watches, dir, mask)?;
    let mut events = inotify.into_event_stream([0u8; 4096])?;
    let root = dir.to_path_buf();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            // A new folder: watch it (and anything made in it before the watch existed).
            if event.mask.contains(EventMask::ISDIR)
                && event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                let _ = watch_tree(&mut watches, &root, mask);
            }
            wakes.workflows.store(true, Ordering::Release);
            wakes.notify.notify_one();
        }
    });
    Ok(Some(AbortOnDrop(task)))
}

#[cfg(not(target_os = "linux"))]
fn watch_workflows(_dir: &Path, _wakes: Arc<Wakes>) -> std::io::Result<Option<AbortOnDrop>> {
    // Watched by `notify` with the inbox.
    Ok(None)
}

/// Adds a watch for `dir` and every folder below it (symbolic links are not followed).
#[cfg(target_os = "linux")]
fn watch_tree(
    watches: &mut inotify::Watches,
    dir: &Path,
    mask: inotify::WatchMask,
) -> std::io::Result<()> {
    watches.add(dir, mask)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = watch_tree(watches, &entry.path(), mask);
        }
    }
    Ok(())
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Remembers whether an inbox file was renamed in whole or written in place.
fn note_arrival(wakes: &Wakes, event: &notify::Event) {
    use notify::EventKind::{Create, Modify, Remove};
    use notify::event::{ModifyKind, RenameMode};
    let Ok(mut arrivals) = wakes.arrivals.lock() else {
        return;
    };
    match (&event.kind, event.paths.as_slice()) {
        (Modify(ModifyKind::Name(RenameMode::To)), [to]) => {
            arrivals.insert(to.clone(), false);
        }
        (Modify(ModifyKind::Name(RenameMode::Both)), [from, to]) => {
            arrivals.remove(from);
            arrivals.insert(to.clone(), false);
        }
        (Modify(ModifyKind::Name(RenameMode::From)) | Remove(_), paths) => {
            for p in paths {
                arrivals.remove(p);
            }
        }
        (Create(_) | Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other), paths) => {
            for p in paths {
                arrivals.insert(p.clone(), true);
            }
        }
        _ => {}
    }
}

/// Where a job file's error report is.
pub fn error_report_path(store: &DirStore, file_name: &str) -> PathBuf {
    store.failed().join(format!("{file_name}.error.json"))
}
