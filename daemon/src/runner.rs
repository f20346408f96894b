//! One job, from inputs to a manifest.
//!
//! Validate the inputs against the workflow's schema and resolve them (an absent seed gets a
//! random value, recorded); upload file inputs from the input root; render the graph; give
//! every save node a per-job filename prefix so jobs never overwrite each other; run it with
//! the client, waiting out a ComfyUI that is down or restarting; fetch every output; write each
//! file (temp + rename), then `graph.json`, then `manifest.json` last.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{
    Client, ClientError, Event, Outcome, PromptRejection, RunOptions, UploadOptions,
};
use crate::job::Job;
use crate::jobdir::write_atomic;
use crate::manifest::{
    self, ComfyInfo, DataOutput, GpuInfo, JobInfo, Manifest, NodeTiming, OutputInfo, Timings,
    WorkflowInfo,
};
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

/// What a job needs from the daemon.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: Client,
    pub outputs: PathBuf,
    /// Where file inputs may come from; none: file inputs are refused.
    pub input_root: Option<PathBuf>,
    pub gpu: GpuInfo,
    pub comfy_version: String,
    pub catalogue_hash: String,
    pub job_timeout: Option<Duration>,
    /// How long to keep retrying while ComfyUI is unreachable.
    pub unreachable_patience: Duration,
    /// Progress of the running job, for the status file and the terminal.
    pub progress: Arc<Mutex<Option<JobProgress>>>,
}

/// Where the running job is.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JobProgress {
    pub job: String,
    /// Nodes finished (executed or cached) of the graph's nodes.
    pub nodes_done: usize,
    pub nodes_total: usize,
    /// The node running now, and its step progress (samplers).
    pub node: Option<String>,
    pub class_type: Option<String>,
    pub value: f64,
    pub max: f64,
}

impl JobProgress {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}: node {}/{}",
            self.job,
            self.nodes_done.min(self.nodes_total),
            self.nodes_total
        );
        if let Some(n) = &self.node {
            s.push_str(&format!(", running {n}"));
            if let Some(c) = &self.class_type {
                s.push_str(&format!(" ({c})"));
            }
            if self.max > 0.0 {
                s.push_str(&format!(" {}/{}", self.value, self.max));
            }
        }
        s
    }
}

/// Empties the progress slot if it still shows `job`.
fn clear_progress(ctx: &Context, job: &str) {
    if let Ok(mut slot) = ctx.progress.lock()
        && slot.as_ref().is_some_and(|p| p.job == job)
    {
        *slot = None;
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

/// Runs one job to its manifest.
pub async fn run(
    ctx: &Context,
    workflow: &Workflow,
    job: &Job,
    file_name: &str,
    claimed_ms: u64,
    cancel: &(dyn Fn() -> bool + Sync),
    prompt_slot: &Mutex<Option<String>>,
) -> Result<Manifest, Failure> {
    // Inputs.
    let mut resolved = workflow
        .resolve(&job.inputs, &mut || fastrand::u64(..(1u64 << 53)))
        .map_err(|errors| Failure {
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
        })?;
    for input in workflow.inputs.iter().filter(|i| i.ty.is_file()) {
        if let Some(Value::String(rel)) = resolved.values.get(&input.name).cloned() {
            let uploaded = upload(ctx, job, &input.name, &rel).await?;
            resolved
                .values
                .insert(input.name.clone(), Value::String(uploaded));
        }
    }
    let mut graph = workflow
        .render(&resolved.values)
        .map_err(|e| Failure::new("invalid-inputs", e.message))?;
    prefix_outputs(&mut graph, &job.id);
    missing_models(ctx, workflow, &graph).await?;

    // Run, waiting out a ComfyUI that is down or restarting.
    let mut opts = RunOptions {
        timeout: job.timeout_s.map(Duration::from_secs).or(ctx.job_timeout),
        ..RunOptions::default()
    };
    let started_waiting = Instant::now();
    let mut oom_retried = false;
    let mut delay = Duration::from_millis(250);
    let submitted_ms;
    let report = loop {
        if cancel() {
            return Err(Failure::new(
                "cancelled",
                format!("cancelled by `{}.cancel`", job.id),
            ));
        }
        let attempt_ms = now_ms();
        // Each attempt has its own prompt id, which the daemon uses to cancel or interrupt
        // exactly this job while others are queued beside it.
        let prompt_id = format!("comfyd-{}-{}", job.id, uuid::Uuid::new_v4().simple());
        if let Ok(mut slot) = prompt_slot.lock() {
            *slot = Some(prompt_id.clone());
        }
        opts.prompt_id = Some(prompt_id);
        let total = graph.as_object().map_or(0, |g| g.len());
        let fresh = JobProgress {
            job: job.id.clone(),
            nodes_total: total,
            ..JobProgress::default()
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
        let job_id = job.id.clone();
        let mut on_event = move |e: &Event| {
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
        };
        let result = ctx.client.run_prompt(&graph, &opts, &mut on_event).await;
        clear_progress(ctx, &job.id);
        match result {
            Ok(r) => match &r.outcome {
                Outcome::Failed(e) if e.is_out_of_memory() && !oom_retried => {
                    tracing::warn!(job = %job.id, "out of memory; freeing ComfyUI's memory and retrying once");
                    oom_retried = true;
                    let _ = ctx.client.free(true, true).await;
                }
                _ => {
                    submitted_ms = attempt_ms;
                    break r;
                }
            },
            Err(e) if e.is_transient() && started_waiting.elapsed() < ctx.unreachable_patience => {
                tracing::warn!(job = %job.id, error = %e, retry_in_ms = delay.as_millis() as u64, "ComfyUI is not answering; the job waits");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(ClientError::Rejected(r)) => return Err(rejected(workflow, &r)),
            Err(ClientError::RunTimeout { after, .. }) => {
                return Err(Failure::new(
                    "timeout",
                    format!(
                        "the job ran longer than {} s and was interrupted",
                        after.as_secs()
                    ),
                ));
            }
            Err(e) => return Err(Failure::new("comfyui", e.to_string())),
        }
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
            return Err(f);
        }
        Outcome::Interrupted { node_id, node_type } => {
            let kind = if cancel() { "cancelled" } else { "interrupted" };
            return Err(Failure::new(
                kind,
                format!("the prompt was interrupted at node {node_id} ({node_type})"),
            ));
        }
    }

    // Outputs, then graph.json, then the manifest.
    let dir = output_dir(&ctx.outputs, &job.id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new("output", format!("{}: {e}", dir.display())))?;
    let mut outputs = Vec::new();
    for f in &report.files {
        let name = unique_name(&outputs, &f.node, &f.file.filename);
        let tmp = dir.join(format!(".{name}.part"));
        ctx.client
            .download(&f.file, &tmp)
            .await
            .map_err(|e| Failure::new("output", format!("fetching `{}`: {e}", f.file.filename)))?;
        let bytes = std::fs::read(&tmp).map_err(|e| Failure::new("output", e.to_string()))?;
        std::fs::rename(&tmp, dir.join(&name))
            .map_err(|e| Failure::new("output", e.to_string()))?;
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
    let graph_text = serde_json::to_vec_pretty(&graph).unwrap_or_default();
    write_atomic(&dir.join("graph.json"), &graph_text)
        .map_err(|e| Failure::new("output", e.to_string()))?;
    let finished_ms = now_ms();
    let m = Manifest {
        comfyd: manifest::FORMAT,
        job: JobInfo {
            id: job.id.clone(),
            file: file_name.to_owned(),
            line: job.origin.line,
            sweep_index: job.origin.sweep_index,
            priority: job.priority,
        },
        workflow: WorkflowInfo {
            name: workflow.name.clone(),
            version: workflow.version.clone(),
            hash: workflow.hash.clone(),
            class: workflow.class.clone(),
        },
        inputs: resolved.values,
        picked_seeds: resolved.picked_seeds,
        comfyui: ComfyInfo {
            url: ctx.client.url().to_owned(),
            version: ctx.comfy_version.clone(),
            catalogue_hash: ctx.catalogue_hash.clone(),
        },
        prompt_id: report.prompt_id.clone(),
        gpu: ctx.gpu.clone(),
        timings: Timings {
            claimed_ms,
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
    };
    let text = serde_json::to_vec_pretty(&m).unwrap_or_default();
    write_atomic(&dir.join("manifest.json"), &text)
        .map_err(|e| Failure::new("output", e.to_string()))?;
    Ok(m)
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
async fn upload(ctx: &Context, job: &Job, input: &str, rel: &str) -> Result<String, Failure> {
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
    let name = format!("comfyd-{}-{input}.{ext}", job.id);
    let up = ctx
        .client
        .upload_image(
            bytes,
            &name,
            &UploadOptions {
                overwrite: true,
                ..UploadOptions::default()
            },
        )
        .await
        .map_err(|e| err(format!("uploading `{rel}` failed: {e}")))?;
    Ok(up.image_value())
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
