//! One job, from inputs to a manifest.
//!
//! Validate the inputs against the workflow's schema and resolve them (an absent seed gets a
//! random value, recorded); upload file inputs from the input root; render the graph; give
//! every save node a per-job filename prefix so jobs never overwrite each other; run it with
//! the client, waiting out a ComfyUI that is down or restarting; fetch every output; write each
//! file (temp + rename), then `graph.json`, then `manifest.json` last.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{
    Client, ClientError, Event, Outcome, PromptRejection, RunOptions, RunReport, UploadOptions,
};
use crate::fsutil::write_atomic;
use crate::gpu::{self, Gpu, Peak, Sample};
use crate::job::Job;
use crate::manifest::{
    self, ComfyInfo, DataOutput, GpuInfo, Intervention, JobInfo, Manifest, NodeTiming, OutputInfo,
    Timings, WorkflowInfo,
};
use crate::memory::{self, Before, Confirm};
use crate::report::Progress;
use crate::retry::{self, Decision, Problem, Tried};
use crate::store::PromptRecord;
use comfyc::Workflow;

/// Largest input file uploaded for a job.
pub const MAX_INPUT_FILE: u64 = 256 * 1024 * 1024;

/// Why a job failed: a message, and where the problem is when known.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// `invalid-inputs`, `unknown-workflow`, `rejected`, `execution-error`, `interrupted`,
    /// `timeout`, `cancelled`, `input-file`, `output`.
    pub kind: &'static str,
    pub message: String,
    /// Per-problem details: input errors, ComfyUI's node errors mapped to inputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

impl Failure {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The job's output folder.
pub fn output_dir(outputs: &Path, job_id: &str) -> PathBuf {
    outputs.join(job_id)
}

/// The job file a finished job came from, when the job id has a manifest: such a job must
/// not run again, and another file may not reuse its id.
pub fn finished_by(outputs: &Path, job_id: &str) -> Option<String> {
    let text = std::fs::read(output_dir(outputs, job_id).join("manifest.json")).ok()?;
    let m: Value = serde_json::from_slice(&text).ok()?;
    Some(
        m.pointer("/job/file")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Which workflows may run partner (paid) nodes, and the account key their prompts carry.
#[derive(Debug, Clone, Default)]
pub struct Spend {
    /// Workflow names, or `*`.
    pub allow: Vec<String>,
    pub api_key: Option<ApiKey>,
}

impl Spend {
    pub fn allows(&self, workflow: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == workflow)
    }
}

/// A comfy.org API key: sent to ComfyUI in `extra_data`, never printed.
#[derive(Clone)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// What every job needs from the daemon.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: Client,
    pub outputs: PathBuf,
    /// Where file inputs may come from; none: file inputs are refused.
    pub input_root: Option<PathBuf>,
    pub gpu: u32,
    /// ComfyUI's version and GPU as last read, refreshed per job.
    pub server: Arc<Mutex<ServerInfo>>,
    pub job_timeout: Option<Duration>,
    /// How long to keep retrying while ComfyUI is unreachable.
    pub unreachable_patience: Duration,
    /// Progress of the executing job, for the status file and the terminal.
    pub progress: Arc<Mutex<Option<Progress>>>,
    /// The daemon's one websocket, events routed by prompt id.
    pub hub: Option<crate::client::Hub>,
    /// The GPU read through NVML; none: VRAM figures come from ComfyUI's `/system_stats`.
    pub probe: Option<Arc<dyn Gpu>>,
    /// When to free ComfyUI's memory before a job.
    pub memory: memory::Policy,
    /// The model set of the job last sent to ComfyUI; none after a start (nothing known).
    pub last_models: Arc<Mutex<Option<u64>>>,
    /// How often VRAM is sampled while one of our prompts executes (NVML only).
    pub sample_every: Duration,
    /// Held from the memory decision to the prompt's submission, so jobs decide in the order
    /// they reach ComfyUI and each sees the model set of the one before it.
    pub submit_gate: Arc<tokio::sync::Mutex<()>>,
    /// Set when the prompt last sent has ended.
    pub last_ended: Arc<Mutex<Option<Arc<std::sync::atomic::AtomicBool>>>>,
    /// What each model set took on the GPU when it last loaded (the largest seen).
    pub footprints: Arc<Mutex<std::collections::HashMap<u64, u64>>>,
    /// Where `/free` calls, OOM retries, ComfyUI's up/down and VRAM figures are counted.
    pub metrics: crate::metrics::Metrics,
    /// The ComfyUI is comfyd's built-in simulator: manifests say so.
    pub simulated: bool,
    /// Partner nodes: who may run them, with which key.
    pub spend: Spend,
    /// The ComfyUI this daemon started and watches, when it did.
    pub supervisor: Option<crate::supervisor::SupervisorHandle>,
}

/// What the daemon last learned of ComfyUI and the GPU.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub version: Option<String>,
    pub gpu: GpuInfo,
    /// VRAM when it was read: NVML's, else `/system_stats`' for a GPU device.
    pub sample: Option<Sample>,
}

impl Context {
    /// Reads `/system_stats` now (free VRAM is measured per job); on failure the last figures
    /// stay, so a manifest says what was last known rather than "unknown".
    pub async fn refresh_server(&self) -> ServerInfo {
        let stats = self.client.system_stats().await;
        self.metrics
            .comfyui_up(stats.as_ref().err().is_none_or(answered));
        let mut info = self.server.lock().map(|g| g.clone()).unwrap_or_default();
        if let Ok(s) = &stats {
            info.version = Some(s.system.comfyui_version.clone());
        }
        match (&self.probe, &stats) {
            (Some(probe), _) => {
                let id = probe.identity();
                let sample = probe.sample();
                info.sample = sample;
                info.gpu = GpuInfo {
                    index: id.index,
                    name: id.name,
                    uuid: id.uuid,
                    source: probe.source().into(),
                    vram_total_bytes: sample.map(|s| s.total).or(id.total_bytes),
                    vram_free_before_bytes: sample.map(|s| s.free),
                    vram_used_before_bytes: sample.map(|s| s.used),
                    driver_version: id.driver_version,
                    cuda_version: id.cuda_version,
                    ..GpuInfo::default()
                };
            }
            (None, Ok(s)) => {
                let dev = s
                    .devices
                    .iter()
                    .find(|d| d.index == Some(u64::from(self.gpu)))
                    .or(s.devices.first());
                let sample = gpu::from_system_stats(s, self.gpu);
                info.sample = sample;
                info.gpu = GpuInfo {
                    index: self.gpu,
                    name: dev.map(|d| d.name.clone()),
                    uuid: None,
                    source: "system_stats".into(),
                    vram_total_bytes: dev.map(|d| d.vram_total),
                    vram_free_before_bytes: dev.map(|d| d.vram_free),
                    vram_used_before_bytes: sample.map(|s| s.used),
                    ..GpuInfo::default()
                };
            }
            (None, Err(_)) => {
                // The last figures stay, but they are not a reading of now.
                info.sample = None;
                if info.gpu.source.is_empty() {
                    info.gpu.index = self.gpu;
                    info.gpu.source = "none".into();
                }
            }
        }
        // As the device reports it (a CPU ComfyUI's "VRAM" is its RAM; the series' help says so).
        if let (Some(total), Some(free)) =
            (info.gpu.vram_total_bytes, info.gpu.vram_free_before_bytes)
        {
            self.metrics.vram(total.saturating_sub(free), total);
        }
        if let Ok(mut g) = self.server.lock() {
            *g = info.clone();
        }
        info
    }

    /// VRAM now: NVML when present, else ComfyUI's figures when its device is a GPU.
    pub async fn vram(&self) -> Option<Sample> {
        match &self.probe {
            Some(p) => p.sample(),
            None => self
                .client
                .system_stats()
                .await
                .ok()
                .and_then(|s| gpu::from_system_stats(&s, self.gpu)),
        }
    }

    fn footprint(&self, models: u64) -> Option<u64> {
        self.footprints.lock().ok()?.get(&models).copied()
    }

    fn learn_footprint(&self, models: u64, took: u64) {
        if models != 0
            && let Ok(mut f) = self.footprints.lock()
        {
            let e = f.entry(models).or_insert(0);
            *e = (*e).max(took);
        }
    }

    fn last_models(&self) -> Option<u64> {
        self.last_models.lock().ok().and_then(|g| *g)
    }

    fn set_last_models(&self, models: u64, ended: Arc<std::sync::atomic::AtomicBool>) {
        if let Ok(mut g) = self.last_models.lock() {
            *g = Some(models);
        }
        if let Ok(mut g) = self.last_ended.lock() {
            *g = Some(ended);
        }
    }

    /// Waits until the prompt last sent has ended (or the job is cancelled).
    async fn wait_last_ended(&self, run: &JobRun<'_>) {
        let ended = self.last_ended.lock().ok().and_then(|g| g.clone());
        let Some(ended) = ended else {
            return;
        };
        while !ended.load(std::sync::atomic::Ordering::Acquire) && !(run.cancel)() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The daemon's side of a job it holds in the job store: the write-ahead record of a prompt
/// before it is submitted, and the fencing check before anything is written.
pub trait Guard: Send + Sync {
    /// Records the prompt before it is submitted; false when the job is no longer ours.
    fn record_prompt(&self, record: &PromptRecord) -> bool;
    /// Whether the job is still ours (its lease is the newest generation).
    fn still_ours(&self) -> bool;
}

/// One job to run.
pub struct JobRun<'a> {
    pub job: &'a Job,
    pub workflow: &'a Workflow,
    pub catalogue_hash: &'a str,
    /// The job file's name, as dropped.
    pub file_name: &'a str,
    pub claimed_ms: u64,
    pub guard: &'a dyn Guard,
    /// True when the job should stop: a cancel file, or the daemon's shutdown.
    pub cancel: &'a (dyn Fn() -> bool + Sync),
    /// A prompt submitted for this job before (restart, takeover): followed, not resubmitted.
    pub adopt: Option<PromptRecord>,
    /// The job's phase, for the status file.
    pub phase: &'a Mutex<&'static str>,
    /// The prompt in flight and the ComfyUI it went to, for cancel and shutdown.
    pub prompt: &'a Mutex<Option<(String, Client)>>,
    /// The hash of the job's model set (0: it loads none), for the memory policy.
    pub models: u64,
    /// What was done about ComfyUI's memory or process for this job, for its manifest.
    pub interventions: Mutex<Vec<Intervention>>,
    /// The GPU figures of the attempt that ran, for the manifest.
    pub measured: Mutex<Option<GpuInfo>>,
}

impl JobRun<'_> {
    /// Notes an intervention for the job's manifest.
    pub fn note(&self, i: Intervention) {
        if let Ok(mut v) = self.interventions.lock() {
            v.push(i);
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub enum End {
    Done(Box<Manifest>),
    Failed(Failure),
    /// Another daemon holds the job now: nothing was written, nothing to record.
    Lost,
}

/// A job ready to submit.
struct Prepared {
    graph: Value,
    resolved: comfyc::render::Resolved,
    files: Vec<manifest::InputFile>,
    /// The graph has partner nodes (allowed): its prompt carries the account key.
    partner: bool,
}

fn set_phase(run: &JobRun<'_>, phase: &'static str) {
    if let Ok(mut p) = run.phase.lock() {
        *p = phase;
    }
}

/// Runs one job to its manifest: prepare, execute (or adopt), collect.
pub async fn run(ctx: &Context, run: JobRun<'_>) -> End {
    set_phase(&run, "preparing");
    let prepared = match prepare(ctx, &run).await {
        Ok(p) => p,
        Err(f) => return End::Failed(f),
    };
    let (client, report, submitted_ms) = match execute(ctx, &run, &prepared).await {
        Ok(r) => r,
        Err(end) => return end,
    };
    match &report.outcome {
        Outcome::Success => {}
        Outcome::Failed(e) => {
            let mut f = Failure::new(
                "execution-error",
                format!(
                    "node {} ({}) failed: {}",
                    e.node_id,
                    e.node_type,
                    e.exception_message.trim()
                ),
            );
            f.details
                .push(serde_json::to_value(e).unwrap_or(Value::Null));
            return End::Failed(f);
        }
        Outcome::Interrupted { node_id, node_type } => {
            let kind = if (run.cancel)() {
                "cancelled"
            } else {
                "interrupted"
            };
            return End::Failed(Failure::new(
                kind,
                format!("the prompt was interrupted at node {node_id} ({node_type})"),
            ));
        }
    }
    set_phase(&run, "collecting");
    collect(ctx, &run, &prepared, &client, &report, submitted_ms).await
}

/// A job whose inputs fail the workflow's schema: every error, each naming its input. The
/// daemon fails such a job at intake with the same words.
pub fn invalid_inputs(errors: &[comfyc::render::InputError]) -> Failure {
    Failure {
        kind: "invalid-inputs",
        message: errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        details: errors
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect(),
    }
}

/// Inputs resolved (an absent seed picked and recorded), file inputs uploaded, the graph
/// rendered with per-job output prefixes, and its models checked against ComfyUI's lists.
async fn prepare(ctx: &Context, run: &JobRun<'_>) -> Result<Prepared, Failure> {
    let (job, workflow) = (run.job, run.workflow);
    let mut resolved = workflow
        .resolve(&job.inputs, &mut || fastrand::u64(..(1u64 << 53)))
        .map_err(|errors| invalid_inputs(&errors))?;
    let mut files = Vec::new();
    for input in workflow.inputs.iter().filter(|i| i.ty.is_file()) {
        if let Some(Value::String(rel)) = resolved.values.get(&input.name).cloned() {
            let (uploaded, file) = upload(ctx, job, &input.name, &rel).await?;
            resolved
                .values
                .insert(input.name.clone(), Value::String(uploaded));
            files.push(file);
        }
    }
    let mut graph = workflow
        .render(&resolved.values)
        .map_err(|e| Failure::new("invalid-inputs", e.message))?;
    let partner = workflow.partner_nodes_in(&graph);
    if !partner.is_empty() && !ctx.spend.allows(&workflow.name) {
        let nodes: Vec<String> = partner
            .iter()
            .map(|(id, c)| format!("{id} ({c})"))
            .collect();
        return Err(Failure::new(
            "spend-refused",
            format!(
                "workflow `{}` uses partner nodes, which run on a paid service: {}; comfyd runs it only when comfyd.toml allows it: [spend] allow = [\"{}\"]",
                workflow.name,
                nodes.join(", "),
                workflow.name
            ),
        ));
    }
    prefix_outputs(&mut graph, &job.id);
    missing_models(ctx, workflow, &graph).await?;
    Ok(Prepared {
        graph,
        resolved,
        files,
        partner: !partner.is_empty(),
    })
}

/// Whether ComfyUI answered the call that failed this way (for `comfyd_comfyui_up`).
fn answered(e: &ClientError) -> bool {
    !matches!(
        e,
        ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Websocket { .. }
            | ClientError::Tls { .. }
    )
}

/// Which retry rule a client error falls under.
fn problem(e: &ClientError) -> Problem {
    match e {
        ClientError::Lost { .. } => Problem::Lost,
        e if e.is_transient() => Problem::Unreachable,
        _ => Problem::Final,
    }
}

/// Sleeps out a retry, counting it.
async fn wait(run: &JobRun<'_>, tried: &mut Tried, after: Duration) {
    set_phase(run, "waiting");
    tried.waits += 1;
    tried.waited += after;
    tokio::time::sleep(after).await;
}

/// Submits the prompt (its id recorded first) or follows the one submitted before, waiting out
/// a ComfyUI that is down or restarting, freeing memory and retrying once after an OOM.
async fn execute(
    ctx: &Context,
    run: &JobRun<'_>,
    prepared: &Prepared,
) -> Result<(Client, RunReport, u64), End> {
    let job = run.job;
    let mut opts = RunOptions {
        timeout: job.timeout_s.map(Duration::from_secs).or(ctx.job_timeout),
        hub: ctx.hub.clone(),
        // Only a prompt with partner nodes carries the key; ComfyUI keeps extra_data in its
        // history, so no other prompt gets it.
        extra_data: ctx
            .spend
            .api_key
            .as_ref()
            .filter(|_| prepared.partner)
            .map(|k| serde_json::json!({"api_key_comfy_org": k.0})),
        ..RunOptions::default()
    };
    let mut tried = Tried::default();
    let mut adopt = run.adopt.clone();
    let mut oom_free: Option<String> = None;
    let sup = ctx.supervisor.as_ref();
    let mut restarts_seen = sup.map_or(0, |s| s.restarts());
    // Where the prompt last submitted got to: a restart while it executed counts against the
    // job; one while it may have waited in ComfyUI's queue is only noted; one while ComfyUI was
    // down (it was never submitted) is neither.
    let mut exposure = Exposure::None;
    loop {
        if (run.cancel)() {
            return Err(End::Failed(Failure::new(
                "cancelled",
                format!("cancelled by `{}.cancel`", job.id),
            )));
        }
        let attempt_ms = now_ms();
        let (client, result) = if let Some(record) = adopt.take() {
            // Another process submitted it: follow it where it went.
            let Ok(client) = (if record.url == ctx.client.url() {
                Ok(ctx.client.clone())
            } else {
                ctx.client.at(&record.url)
            }) else {
                continue;
            };
            tracing::info!(job = %job.id, prompt_id = %record.id, "adopting a prompt submitted before");
            set_phase(run, "queued");
            remember_prompt(run, &record.id, &client);
            let r = client
                .await_prompt(&record.id, Duration::from_millis(100), opts.timeout)
                .await;
            if let Err(e) = &r
                && record.url != ctx.client.url()
                && e.is_transient()
            {
                // That ComfyUI is out of reach: run the job here instead.
                tracing::warn!(job = %job.id, url = %record.url, "the ComfyUI that ran this job does not answer; submitting it here");
                continue;
            }
            if let Err(e) = &r
                && e.is_transient()
                && !matches!(e, ClientError::Lost { .. })
            {
                // Still out of reach: ask again after the wait, never submit a second copy.
                adopt = Some(record.clone());
            }
            if let Ok(report) = &r
                && matches!(report.outcome, Outcome::Interrupted { .. })
                && !(run.cancel)()
            {
                // Interrupted when its daemon stopped: it did not run, so it runs now.
                tracing::info!(job = %job.id, "the adopted prompt had been interrupted; submitting it again");
                continue;
            }
            (client, r)
        } else {
            // Write-ahead: the prompt id is in the lease before ComfyUI sees it, so a restart
            // or a takeover asks about it instead of submitting again.
            let prompt_id = uuid::Uuid::new_v4().to_string();
            let record = PromptRecord {
                id: prompt_id.clone(),
                url: ctx.client.url().to_owned(),
            };
            let record_kept = record.clone();
            let gate = ctx.submit_gate.clone().lock_owned().await;
            let mut info = ctx.refresh_server().await;
            let last = ctx.last_models();
            if memory::is_switch(&ctx.memory, last, run.models) || oom_free.is_some() {
                set_phase(run, "switching");
                ctx.wait_last_ended(run).await;
                info = ctx.refresh_server().await;
            }
            let decision = match oom_free.take() {
                // After an out-of-memory error, free whatever the policy says.
                Some(reason) => Before::Free { reason },
                None => memory::before_job(
                    &ctx.memory,
                    last,
                    run.models,
                    info.sample.as_ref(),
                    ctx.footprint(run.models),
                ),
            };
            if let Before::Free { reason } = decision {
                set_phase(run, "freeing");
                let kind = if tried.oom > 0
                    && run.interventions.lock().is_ok_and(|v| {
                        v.iter().filter(|i| i.kind == "oom-retry").count() < tried.oom as usize
                    }) {
                    "oom-retry"
                } else {
                    "free"
                };
                tracing::info!(job = %job.id, %reason, "freeing ComfyUI's memory before the job");
                let note = free_and_confirm(ctx, run, kind, reason, info.sample).await;
                run.note(note);
                info = ctx.refresh_server().await;
            }
            if !run.guard.record_prompt(&record) || !run.guard.still_ours() {
                return Err(End::Lost);
            }
            let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
            if run.models != 0 {
                ctx.set_last_models(run.models, ended.clone());
            }
            // However the attempt ends, a job waiting to switch models goes on.
            let _ended = SetOnDrop(ended);
            let executing = Arc::new(std::sync::atomic::AtomicBool::new(false));
            remember_prompt(run, &prompt_id, &ctx.client);
            opts.prompt_id = Some(prompt_id.clone());
            set_phase(run, "queued");
            // The next job decides once this one is recorded; its own decision takes a
            // round trip to ComfyUI, by which time this prompt has been posted.
            drop(gate);
            restarts_seen = sup.map_or(0, |s| s.restarts());
            let up = sup.is_some_and(|s| s.is_up());
            let mut progress = progress_handler(ctx, run, &prepared.graph, executing.clone());
            // From its execution start to its end the supervisor's stall clock runs for it
            // (queued, it waits for others, which is no stall).
            let mut stall_clock: Option<crate::supervisor::Executing> = None;
            let mut on_event = |e: &Event| {
                if let Some(s) = sup {
                    s.progressed();
                    if matches!(e, Event::ExecutionStart { prompt_id: p, .. } if *p == prompt_id) {
                        stall_clock = Some(s.prompt_executing());
                    }
                }
                progress(e);
            };
            let mut peak = Peak::default();
            let prompt = ctx.client.run_prompt(&prepared.graph, &opts, &mut on_event);
            let r = match &ctx.probe {
                Some(probe) => {
                    sample_during(
                        prompt,
                        probe.as_ref(),
                        &executing,
                        &mut peak,
                        ctx.sample_every,
                    )
                    .await
                }
                None => prompt.await,
            };
            exposure = match (stall_clock.take().is_some(), up) {
                (true, _) => Exposure::Executing,
                (false, true) => Exposure::Queued,
                (false, false) => Exposure::None,
            };
            clear_progress(ctx, &job.id);
            let after = ctx.vram().await;
            if let (Some(before), Ok(_)) = (info.sample, &r) {
                let during = if peak.samples > 0 {
                    peak.max_used
                } else {
                    after.map_or(0, |a| a.used)
                };
                if let Some(took) = memory::footprint(before.used, during) {
                    ctx.learn_footprint(run.models, took);
                }
            }
            if let Ok(mut m) = run.measured.lock() {
                let mut g = info.gpu.clone();
                if peak.samples > 0 {
                    g.vram_peak_used_bytes = Some(peak.max_used);
                    g.utilization_mean_percent = peak.mean_util();
                    g.utilization_peak_percent =
                        Some(peak.max_util).filter(|_| peak.util_samples > 0);
                    g.samples = Some(peak.samples);
                }
                g.vram_used_after_bytes = after.map(|s| s.used);
                g.vram_free_after_bytes = after.map(|s| s.free);
                *m = Some(g);
            }
            if let Err(e) = &r
                && e.is_transient()
                && !matches!(e, ClientError::Lost { .. })
            {
                // It may have been submitted before ComfyUI went away: ask about it next time
                // rather than submit it twice.
                adopt = Some(record_kept);
            }
            (ctx.client.clone(), r)
        };
        ctx.metrics
            .comfyui_up(result.as_ref().err().is_none_or(answered));
        if result.is_err()
            && let Some(s) = sup
        {
            restarts_seen = note_restarts(run, s, restarts_seen, exposure, &mut tried);
        }
        let decision = match &result {
            Ok(r) => match &r.outcome {
                Outcome::Failed(e) if e.is_out_of_memory() => {
                    retry::decide(Problem::OutOfMemory, tried, ctx.unreachable_patience)
                }
                _ => Decision::Fail,
            },
            Err(e) => retry::decide(problem(e), tried, ctx.unreachable_patience),
        };
        match (decision, result) {
            (Decision::Retry { free: true, .. }, _) => {
                tracing::warn!(job = %job.id, "out of memory; freeing ComfyUI's memory and retrying once");
                tried.oom += 1;
                ctx.metrics.oom_retry();
                // Freed under the submit gate, with the resubmission: a prompt another job
                // pipelined meanwhile runs first, and the free applies after it.
                oom_free = Some("ComfyUI ran out of memory executing the prompt".to_owned());
            }
            (Decision::Retry { after, .. }, result) => {
                if let Err(e) = &result {
                    tracing::warn!(job = %job.id, error = %e, retry_in_ms = after.as_millis() as u64, "ComfyUI is not answering; the job waits");
                }
                wait(run, &mut tried, after).await;
            }
            (Decision::Fail, Err(e))
                if tried.restarts >= retry::RESTART_LIMIT
                    && matches!(problem(&e), Problem::Lost | Problem::Unreachable) =>
            {
                let last = sup
                    .and_then(|s| s.last_restart())
                    .map_or_else(String::new, |l| format!(" (the last: {})", l.reason));
                return Err(End::Failed(Failure::new(
                    "comfyui",
                    format!(
                        "ComfyUI restarted {} times while this job executed{last}; the job may be what brings it down, so it is not run again",
                        tried.restarts
                    ),
                )));
            }
            (Decision::Fail, Ok(r)) => {
                if let Outcome::Failed(e) = &r.outcome
                    && e.is_out_of_memory()
                {
                    return Err(End::Failed(out_of_memory(ctx, run, e)));
                }
                return Ok((client, r, attempt_ms));
            }
            (Decision::Fail, Err(ClientError::Rejected(r))) => {
                return Err(End::Failed(rejected(run.workflow, &r)));
            }
            (Decision::Fail, Err(ClientError::RunTimeout { after, .. })) => {
                return Err(End::Failed(Failure::new(
                    "timeout",
                    format!(
                        "the job ran longer than {} s and was interrupted",
                        after.as_secs()
                    ),
                )));
            }
            (Decision::Fail, Err(e)) => {
                return Err(End::Failed(Failure::new("comfyui", e.to_string())));
            }
        }
    }
}

/// How far the job's prompt got at a supervised ComfyUI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposure {
    /// Not submitted: ComfyUI was down.
    None,
    /// Submitted while ComfyUI was up; no sign it started executing.
    Queued,
    Executing,
}

/// Notes in the manifest the restarts of the supervised ComfyUI since `seen` that the job's
/// prompt was there for, and counts them toward the job's retries when it was executing; the
/// new count seen comes back.
fn note_restarts(
    run: &JobRun<'_>,
    sup: &crate::supervisor::SupervisorHandle,
    seen: u64,
    exposure: Exposure,
    tried: &mut Tried,
) -> u64 {
    let now = sup.restarts();
    if now <= seen || exposure == Exposure::None {
        return now;
    }
    let n = u32::try_from(now - seen).unwrap_or(u32::MAX);
    let executing = exposure == Exposure::Executing;
    if executing {
        tried.restarts = tried.restarts.saturating_add(n);
    }
    let last = sup.last_restart();
    let mut reason = last
        .as_ref()
        .map_or_else(|| "ComfyUI restarted".to_owned(), |l| l.reason.clone());
    if n > 1 {
        reason = format!("{n} restarts, the last: {reason}");
    }
    if !executing {
        reason.push_str("; the job's prompt was waiting in ComfyUI's queue");
    }
    tracing::warn!(job = %run.job.id, restarts = tried.restarts, %reason, "ComfyUI restarted under the job; it runs again");
    run.note(Intervention {
        kind: "comfyui-restart".into(),
        at_ms: last.map_or_else(now_ms, |l| l.at_ms),
        reason,
        vram_free_before_bytes: None,
        vram_free_after_bytes: None,
        ok: None,
    });
    now
}

fn remember_prompt(run: &JobRun<'_>, prompt_id: &str, client: &Client) {
    if let Ok(mut p) = run.prompt.lock() {
        *p = Some((prompt_id.to_owned(), client.clone()));
    }
}

/// Follows the executing job's events into the progress slot.
fn progress_handler(
    ctx: &Context,
    run: &JobRun<'_>,
    graph: &Value,
    executing: Arc<std::sync::atomic::AtomicBool>,
) -> impl FnMut(&Event) + Send + use<> {
    let total = graph.as_object().map_or(0, |g| g.len());
    let fresh = Progress {
        job: run.job.id.clone(),
        nodes_total: total,
        ..Progress::default()
    };
    let classes: std::collections::HashMap<String, String> = graph
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, n)| {
            n.get("class_type")
                .and_then(Value::as_str)
                .map(|c| (id.clone(), c.to_owned()))
        })
        .collect();
    let progress = ctx.progress.clone();
    let job_id = run.job.id.clone();
    move |e: &Event| {
        if matches!(e, Event::ExecutionStart { .. }) {
            executing.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let Ok(mut slot) = progress.lock() else {
            return;
        };
        // The progress slot shows the job ComfyUI is executing; a job queued behind it
        // takes the slot when its own execution starts.
        if matches!(e, Event::ExecutionStart { .. }) {
            *slot = Some(fresh.clone());
        }
        let Some(p) = slot.as_mut().filter(|p| p.job == job_id) else {
            return;
        };
        match e {
            Event::ExecutionCached { nodes, .. } => p.nodes_done += nodes.len(),
            Event::Executing { node: Some(n), .. } => {
                if p.node.is_some() {
                    p.nodes_done += 1;
                }
                p.class_type = classes.get(n).cloned();
                p.node = Some(n.clone());
                p.value = 0.0;
                p.max = 0.0;
            }
            Event::Executing { node: None, .. } => {
                p.nodes_done = p.nodes_total;
                p.node = None;
            }
            Event::Progress { value, max, .. } => {
                p.value = *value;
                p.max = *max;
            }
            _ => {}
        }
    }
}

/// Fetches every output (temp + rename), then `graph.json`, then the manifest last. A full
/// disk or an unreachable ComfyUI makes the job wait, not fail: its outputs stay on ComfyUI.
/// Nothing is written unless the job is still ours.
async fn collect(
    ctx: &Context,
    run: &JobRun<'_>,
    prepared: &Prepared,
    client: &Client,
    report: &RunReport,
    submitted_ms: u64,
) -> End {
    let mut tried = Tried::default();
    loop {
        if !run.guard.still_ours() {
            return End::Lost;
        }
        match write_outputs(ctx, run, prepared, client, report, submitted_ms).await {
            Ok(m) => return End::Done(Box::new(m)),
            Err((_, f)) if f.kind == "lost" => return End::Lost,
            Err((p, f)) => match retry::decide(p, tried, ctx.unreachable_patience) {
                Decision::Retry { after, .. } => {
                    tracing::warn!(job = %run.job.id, reason = %f.message, retry_in_ms = after.as_millis() as u64, "cannot write the outputs yet; the job waits");
                    wait(run, &mut tried, after).await;
                }
                Decision::Fail => return End::Failed(f),
            },
        }
    }
}

async fn write_outputs(
    ctx: &Context,
    run: &JobRun<'_>,
    prepared: &Prepared,
    client: &Client,
    report: &RunReport,
    submitted_ms: u64,
) -> Result<Manifest, (Problem, Failure)> {
    let job = run.job;
    let io_err = |what: String, e: std::io::Error| {
        let p = if crate::store::is_no_space(&e) {
            Problem::NoSpace
        } else {
            Problem::Final
        };
        (p, Failure::new("output", format!("{what}: {e}")))
    };
    let dir = output_dir(&ctx.outputs, &job.id);
    // A rerun starts from an empty folder: no partial file of an earlier attempt stays.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(dir.display().to_string(), e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display().to_string(), e))?;
    let mut outputs = Vec::new();
    for f in &report.files {
        let name = unique_name(&outputs, &f.node, &f.file.filename);
        let tmp = dir.join(format!(".t-{:016x}", fastrand::u64(..)));
        if let Err(e) = client.download(&f.file, &tmp).await {
            let _ = std::fs::remove_file(&tmp);
            let text = e.to_string();
            let p = if text.contains("No space left") || text.contains("os error 28") {
                Problem::NoSpace
            } else if e.is_transient() {
                Problem::Unreachable
            } else {
                Problem::Final
            };
            return Err((
                p,
                Failure::new("output", format!("fetching `{}`: {text}", f.file.filename)),
            ));
        }
        let bytes = std::fs::read(&tmp).map_err(|e| io_err(name.clone(), e))?;
        std::fs::rename(&tmp, dir.join(&name)).map_err(|e| io_err(name.clone(), e))?;
        let size = png_dims(&bytes, &name);
        outputs.push(OutputInfo {
            node: f.node.clone(),
            kind: f.kind.clone(),
            path: name.clone(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            media_type: manifest::media_type(&name).to_owned(),
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
        });
    }
    let graph_text = serde_json::to_vec_pretty(&prepared.graph).unwrap_or_default();
    write_atomic(&dir.join("graph.json"), &graph_text)
        .map_err(|e| io_err("graph.json".into(), e))?;
    let finished_ms = now_ms();
    let server = ctx.server.lock().map(|g| g.clone()).unwrap_or_default();
    let m = Manifest {
        comfyd: manifest::FORMAT,
        job: JobInfo {
            id: job.id.clone(),
            file: run.file_name.to_owned(),
            line: job.origin.line,
            sweep_index: job.origin.sweep_index,
            priority: job.priority,
        },
        workflow: WorkflowInfo {
            name: run.workflow.name.clone(),
            version: run.workflow.version.clone(),
            hash: run.workflow.hash.clone(),
            class: run.workflow.class.clone(),
        },
        inputs: prepared.resolved.values.clone(),
        picked_seeds: prepared.resolved.picked_seeds.clone(),
        input_files: prepared.files.clone(),
        comfyui: ComfyInfo {
            url: client.url().to_owned(),
            version: server.version.unwrap_or_else(|| "unknown".into()),
            catalogue_hash: run.catalogue_hash.to_owned(),
            simulated: ctx.simulated,
        },
        prompt_id: report.prompt_id.clone(),
        gpu: run
            .measured
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or(server.gpu),
        timings: Timings {
            claimed_ms: run.claimed_ms,
            submitted_ms,
            started_ms: submitted_ms + report.timings.queue_wait.as_millis() as u64,
            finished_ms,
            queue_wait_ms: report.timings.queue_wait.as_millis() as u64,
            execution_ms: report.timings.execution.as_millis() as u64,
            nodes: report
                .timings
                .nodes
                .iter()
                .map(|(n, d)| NodeTiming {
                    node: n.clone(),
                    ms: d.as_millis() as u64,
                })
                .collect(),
        },
        cached_nodes: report.cached.clone(),
        outputs,
        data: report
            .data
            .iter()
            .map(|(node, kind, value)| DataOutput {
                node: node.clone(),
                kind: kind.clone(),
                value: value.clone(),
            })
            .collect(),
        interventions: run
            .interventions
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    };
    let text = serde_json::to_vec_pretty(&m).unwrap_or_default();
    // The fencing check right before the write that makes the job done.
    if !run.guard.still_ours() {
        return Err((
            Problem::Final,
            Failure::new("lost", "the job was taken over"),
        ));
    }
    write_atomic(&dir.join("manifest.json"), &text)
        .map_err(|e| io_err("manifest.json".into(), e))?;
    Ok(m)
}

/// Empties the progress slot if it still shows `job`.
fn clear_progress(ctx: &Context, job: &str) {
    if let Ok(mut slot) = ctx.progress.lock()
        && slot.as_ref().is_some_and(|p| p.job == job)
    {
        *slot = None;
    }
}

fn png_dims(bytes: &[u8], name: &str) -> Option<(u32, u32)> {
    if manifest::media_type(name) == "image/png" {
        manifest::png_size(bytes)
    } else {
        None
    }
}

/// An output file name unique within the job's folder.
fn unique_name(taken: &[OutputInfo], node: &str, filename: &str) -> String {
    let base = Path::new(filename)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let base: String = base
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let base = if base.starts_with('.') || base == "manifest.json" || base == "graph.json" {
        format!("{node}-{base}")
    } else {
        base
    };
    if taken.iter().any(|o| o.path == base) {
        format!("{node}-{base}")
    } else {
        base
    }
}

/// Fails the job up front when a model file its graph names is not installed on this
/// ComfyUI, naming the file, instead of letting ComfyUI answer `value_not_in_list ... not in []`.
async fn missing_models(ctx: &Context, workflow: &Workflow, graph: &Value) -> Result<(), Failure> {
    let mut lists: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    for (folder, name) in workflow.models_in(graph) {
        if !lists.contains_key(&folder) {
            match ctx.client.models(&folder).await {
                Ok(list) => {
                    lists.insert(folder.clone(), list);
                }
                // A server that cannot list a folder is not second-guessed; ComfyUI still checks.
                Err(e) => {
                    tracing::debug!(%folder, error = %e, "cannot list models");
                    continue;
                }
            }
        }
        if lists.get(&folder).is_some_and(|l| !l.contains(&name)) {
            missing.push(json!({"folder": folder, "name": name}));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "`{}` ({})",
                m["name"].as_str().unwrap_or(""),
                m["folder"].as_str().unwrap_or("")
            )
        })
        .collect();
    Err(Failure {
        kind: "missing-model",
        message: format!(
            "this ComfyUI does not have {}; install it under models/ or pick another",
            names.join(", ")
        ),
        details: missing,
    })
}

/// Rewrites every `filename_prefix` to `comfyd/JOB/ORIGINAL`, so jobs never write over each
/// other's files and a job's files are easy to find on the server.
pub fn prefix_outputs(graph: &mut Value, job_id: &str) {
    let Some(nodes) = graph.as_object_mut() else {
        return;
    };
    for node in nodes.values_mut() {
        if let Some(Value::String(p)) = node
            .get_mut("inputs")
            .and_then(|i| i.get_mut("filename_prefix"))
        {
            let clean: String = p
                .split(['/', '\\'])
                .filter(|s| !s.is_empty() && *s != "." && *s != "..")
                .collect::<Vec<_>>()
                .join("_");
            *p = format!(
                "comfyd/{job_id}/{}",
                if clean.is_empty() {
                    "output".into()
                } else {
                    clean
                }
            );
        }
    }
}

/// Uploads a file input from the input root; the value ComfyUI's loader takes comes back.
/// Uploads a file input under a name made of its hash, so the same bytes are one file in
/// ComfyUI's `input/` whatever the number of jobs using them.
async fn upload(
    ctx: &Context,
    job: &Job,
    input: &str,
    rel: &str,
) -> Result<(String, manifest::InputFile), Failure> {
    let err = |m: String| Failure {
        kind: "input-file",
        message: format!("input `{input}`: {m}"),
        details: Vec::new(),
    };
    let Some(root) = &ctx.input_root else {
        return Err(err(
            "file inputs need an input root: start comfyd with `--inputs DIR`".into(),
        ));
    };
    let path = resolve_input_path(root, rel).map_err(err)?;
    let meta = std::fs::metadata(&path).map_err(|e| err(format!("`{rel}`: {e}")))?;
    if meta.len() > MAX_INPUT_FILE {
        return Err(err(format!(
            "`{rel}` is {} bytes, over the {MAX_INPUT_FILE}-byte limit",
            meta.len()
        )));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| err(format!("`{rel}`: {e}")))?;
    let ext = Path::new(rel)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_else(|| "png".into());
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let ext: String = ext
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let ext = if ext.is_empty() {
        "png".to_owned()
    } else {
        ext
    };
    let name = format!("comfyd-{}.{ext}", &sha256[..16]);
    let file = manifest::InputFile {
        input: input.to_owned(),
        source: rel.to_owned(),
        size: bytes.len() as u64,
        sha256,
        uploaded_as: name.clone(),
    };
    let mut tried = Tried::default();
    loop {
        let up = ctx
            .client
            .upload_image(
                bytes.clone(),
                &name,
                &UploadOptions {
                    overwrite: true,
                    ..UploadOptions::default()
                },
            )
            .await;
        match up {
            Ok(up) => {
                let value = up.image_value();
                return Ok((
                    value.clone(),
                    manifest::InputFile {
                        uploaded_as: value,
                        ..file
                    },
                ));
            }
            // An unreachable ComfyUI is waited for here as at submission.
            Err(e) => match retry::decide(problem(&e), tried, ctx.unreachable_patience) {
                Decision::Retry { after, .. } => {
                    tracing::warn!(job = %job.id, error = %e, retry_in_ms = after.as_millis() as u64, "ComfyUI is not answering; the upload waits");
                    tried.waits += 1;
                    tried.waited += after;
                    tokio::time::sleep(after).await;
                }
                Decision::Fail => return Err(err(format!("uploading `{rel}` failed: {e}"))),
            },
        }
    }
}

/// `rel` inside `root`, refusing absolute paths, `..` and symlinks that lead outside.
pub fn resolve_input_path(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() || rel.contains('\0') {
        return Err(format!("`{rel}` must be a path relative to the input root"));
    }
    let normal =
        comfyc::source::normalize(p).ok_or_else(|| format!("`{rel}` leaves the input root"))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("input root {}: {e}", root.display()))?;
    let full = root
        .join(normal)
        .canonicalize()
        .map_err(|e| format!("`{rel}`: {e}"))?;
    if !full.starts_with(&root) {
        return Err(format!("`{rel}` leads outside the input root"));
    }
    if !full.is_file() {
        return Err(format!("`{rel}` is not a file"));
    }
    Ok(full)
}

/// ComfyUI's rejection, with each node error mapped to the workflow input bound there.
fn rejected(workflow: &Workflow, r: &PromptRejection) -> Failure {
    let mut details = Vec::new();
    for (node, e) in &r.node_errors {
        for (err, input_name) in e.inputs() {
            let input = input_name.and_then(|i| workflow.input_for(node, i));
            details.push(json!({
                "node": node,
                "class_type": e.class_type,
                "node_input": input_name,
                "input": input,
                "type": err.kind,
                "message": err.message,
                "details": err.details,
            }));
        }
    }
    let mut message = format!("ComfyUI rejected the prompt: {r}");
    if let Some(i) = details.iter().find_map(|d| d["input"].as_str()) {
        message = format!("input `{i}`: {message}");
    }
    Failure {
        kind: "rejected",
        message,
        details,
    }
}

/// Runs `prompt` while sampling the GPU every `every` once the prompt executes (the flag is
/// set by its `execution_start`): the peak belongs to this job, not to one queued before it.
async fn sample_during<T>(
    prompt: impl std::future::Future<Output = T>,
    probe: &dyn Gpu,
    executing: &std::sync::atomic::AtomicBool,
    peak: &mut Peak,
    every: Duration,
) -> T {
    let mut prompt = std::pin::pin!(prompt);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            r = &mut prompt => return r,
            _ = tick.tick() => {
                if executing.load(std::sync::atomic::Ordering::Relaxed)
                    && let Some(s) = probe.sample()
                {
                    peak.add(&s);
                }
            }
        }
    }
}

/// Asks ComfyUI to unload its models and free its memory, then waits (bounded) for the figures
/// to show it came back. `/free` applies once ComfyUI's current prompt ends, so the bound runs
/// from when ComfyUI is idle.
async fn free_and_confirm(
    ctx: &Context,
    run: &JobRun<'_>,
    kind: &str,
    reason: String,
    before: Option<Sample>,
) -> Intervention {
    let at_ms = now_ms();
    ctx.metrics.free_called();
    let asked = ctx.client.free(true, true).await;
    let mut after = None;
    let ok = match (&asked, before) {
        (Err(e), _) => {
            tracing::warn!(job = %run.job.id, error = %e, "ComfyUI did not take the request to free memory");
            Some(false)
        }
        (Ok(()), None) => None,
        (Ok(()), Some(before)) => {
            let mut idle_since: Option<std::time::Instant> = None;
            let mut stable: Option<(u64, std::time::Instant)> = None;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if (run.cancel)() {
                    break None;
                }
                let busy = ctx
                    .client
                    .queue()
                    .await
                    .map(|q| !q.running.is_empty())
                    .unwrap_or(false);
                let idle_for = if busy {
                    idle_since = None;
                    Duration::ZERO
                } else {
                    idle_since
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                };
                let Some(now) = ctx.vram().await else {
                    break None;
                };
                after = Some(now);
                let stable_for = match stable {
                    Some((free, since)) if now.free.abs_diff(free) < memory::SETTLED_DELTA => {
                        since.elapsed()
                    }
                    _ => {
                        stable = Some((now.free, std::time::Instant::now()));
                        Duration::ZERO
                    }
                };
                let need = ctx.footprint(run.models);
                match memory::confirm(&ctx.memory, &before, &now, busy, idle_for, stable_for, need)
                {
                    Confirm::Back => break Some(true),
                    Confirm::Partial => {
                        tracing::info!(
                            job = %run.job.id,
                            back = %memory::size(now.free.saturating_sub(before.free)),
                            free = %memory::size(now.free),
                            "memory came back after /free, though not enough"
                        );
                        if restart_for_memory(ctx, run, &now).await {
                            after = ctx.vram().await;
                        }
                        break Some(false);
                    }
                    Confirm::NotBack => {
                        tracing::warn!(
                            job = %run.job.id,
                            free = %memory::size(now.free),
                            total = %memory::size(now.total),
                            "no memory came back after /free: something holds it"
                        );
                        if restart_for_memory(ctx, run, &now).await {
                            after = ctx.vram().await;
                        }
                        break Some(false);
                    }
                    Confirm::Wait => {}
                }
            }
        }
    };
    Intervention {
        kind: kind.into(),
        at_ms,
        reason,
        vram_free_before_bytes: before.map(|s| s.free),
        vram_free_after_bytes: after.map(|s| s.free),
        ok,
    }
}

/// The failure of a job that ran out of memory again after its retry, with the VRAM figures.
fn out_of_memory(ctx: &Context, run: &JobRun<'_>, e: &crate::client::ExecutionError) -> Failure {
    let figures = ctx
        .server
        .lock()
        .ok()
        .and_then(|g| g.sample)
        .map(|s| {
            format!(
                "; {} of {} VRAM was free before the last try",
                memory::size(s.free),
                memory::size(s.total)
            )
        })
        .unwrap_or_default();
    let mut f = Failure::new(
        "out-of-memory",
        format!(
            "node {} ({}) ran out of memory, again after ComfyUI's memory was freed{figures}",
            e.node_id, e.node_type
        ),
    );
    f.details
        .push(serde_json::to_value(e).unwrap_or(Value::Null));
    f.details.push(
        serde_json::to_value(
            run.interventions
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default(),
        )
        .unwrap_or(Value::Null),
    );
    f
}

/// Sets the flag when dropped.
struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Memory that `/free` did not bring back is held inside ComfyUI (a leak): a supervised ComfyUI
/// is restarted for it, once a minute at most (memory another process holds would otherwise
/// restart it at every switch), and the job waits until it is up again. True when it was.
async fn restart_for_memory(ctx: &Context, run: &JobRun<'_>, now: &Sample) -> bool {
    let Some(sup) = &ctx.supervisor else {
        return false;
    };
    let recent = sup.last_restart().is_some_and(|r| {
        now_ms().saturating_sub(r.at_ms) < MEMORY_RESTART_EVERY.as_millis() as u64
    });
    if recent {
        return false;
    }
    let reason = format!(
        "no memory came back after /free: {} free of {}",
        memory::size(now.free),
        memory::size(now.total)
    );
    tracing::warn!(job = %run.job.id, %reason, "restarting the supervised ComfyUI for its memory");
    let before = sup.restarts();
    sup.restart(reason.clone());
    let t0 = std::time::Instant::now();
    while (sup.restarts() == before || !sup.is_up()) && !(run.cancel)() {
        if t0.elapsed() > Duration::from_secs(600) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(mut g) = ctx.last_models.lock() {
        *g = None;
    }
    run.note(Intervention {
        kind: "comfyui-restart".into(),
        at_ms: now_ms(),
        reason,
        vram_free_before_bytes: Some(now.free),
        vram_free_after_bytes: None,
        ok: Some(sup.is_up()),
    });
    true
}

/// Restarts of a supervised ComfyUI for memory, at most one per this.
const MEMORY_RESTART_EVERY: Duration = Duration::from_secs(60);
