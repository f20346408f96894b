//! `outputs/ID/manifest.json`: what a finished job produced and everything needed to produce
//! it again. A job is done if and only if its manifest exists; it is written last, after every
//! output file and `graph.json`, by an atomic rename. Its JSON Schema is committed as
//! `schemas/manifest.schema.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of the manifest format.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "comfyd job manifest")]
pub struct Manifest {
    /// Format version.
    pub comfyd: u32,
    pub job: JobInfo,
    pub workflow: WorkflowInfo,
    /// Every input as resolved: defaults filled in, the seed actually used, uploaded file names.
    pub inputs: Map<String, Value>,
    /// Seed inputs the job left out, for which the daemon picked a value.
    pub picked_seeds: Vec<String>,
    /// Each file input: where it was read, its hash, and the name ComfyUI got it under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_files: Vec<InputFile>,
    pub comfyui: ComfyInfo,
    pub prompt_id: String,
    pub gpu: GpuInfo,
    pub timings: Timings,
    /// Nodes ComfyUI served from its cache.
    pub cached_nodes: Vec<String>,
    pub outputs: Vec<OutputInfo>,
    /// Outputs that are not files (text, numbers), by node.
    pub data: Vec<DataOutput>,
    /// What the daemon did for this job besides running it: ComfyUI's memory freed before it,
    /// an out-of-memory retry, ComfyUI restarted under it. Empty when nothing was needed.
    #[serde(default)]
    pub interventions: Vec<Intervention>,
}

/// One thing the daemon did about ComfyUI's memory or process while a job was its to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Intervention {
    /// `free` (`POST /free` before the job), `oom-retry` (out of memory: freed, run again),
    /// `comfyui-restart` (the supervised ComfyUI was started again under the job).
    pub kind: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Why, in words: "model set changed and 1.2 GiB free is under the 2 GiB threshold".
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_free_before_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_free_after_bytes: Option<u64>,
    /// Whether it worked: memory came back, ComfyUI answered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// A file input as it was uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InputFile {
    /// The input's name in the workflow.
    pub input: String,
    /// The path the job gave, relative to the daemon's input root.
    pub source: String,
    pub size: u64,
    pub sha256: String,
    /// The name in ComfyUI's `input/`: `comfyd-<first 16 hex of the sha256>.<ext>`, so the
    /// same bytes are one file there, however many jobs use them.
    pub uploaded_as: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobInfo {
    pub id: String,
    /// The job file's name, as dropped into `inbox/`.
    pub file: String,
    /// 1-based line of a JSONL file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Index of the combination of a sweep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_index: Option<usize>,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowInfo {
    pub name: String,
    pub version: Option<String>,
    /// `sha256:` over the definition, its graph and every template it includes.
    pub hash: String,
    pub class: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComfyInfo {
    pub url: String,
    pub version: String,
    /// `sha256:` of the node catalogue the workflow was compiled against.
    pub catalogue_hash: String,
    /// True when the job ran on comfyd's built-in simulator (`--sim`), not a real ComfyUI:
    /// its outputs are placeholders.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulated: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct GpuInfo {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// Where the figures come from: `nvml`, `system_stats`, or `none`.
    pub source: String,
    pub vram_total_bytes: Option<u64>,
    /// Free VRAM before the job was submitted.
    pub vram_free_before_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Used VRAM (the whole device, every process) before the job was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_before_bytes: Option<u64>,
    /// Highest used VRAM sampled while the job executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_peak_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_after_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_free_after_bytes: Option<u64>,
    /// GPU utilisation while the job executed, percent: the mean and the highest sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_mean_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_peak_percent: Option<u32>,
    /// How many samples the peak and utilisation come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
}

/// Times in milliseconds since the Unix epoch, durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    pub claimed_ms: u64,
    pub submitted_ms: u64,
    /// When ComfyUI started executing it (submitted + queue wait).
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Submitted to execution start: time in ComfyUI's queue.
    pub queue_wait_ms: u64,
    /// Execution start to end.
    pub execution_ms: u64,
    /// Each executed node, in order.
    pub nodes: Vec<NodeTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeTiming {
    pub node: String,
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputInfo {
    pub node: String,
    /// ComfyUI's output kind: `images`, `gifs`, `video`, `audio`, ...
    pub kind: String,
    /// Path relative to the job's output folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DataOutput {
    pub node: String,
    pub kind: String,
    pub value: Value,
}

/// The media type of an output file, from its extension.
pub fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "glb" => "model/gltf-binary",
        "obj" => "model/obj",
        "json" => "application/json",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Width and height of a PNG, from its header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    Some((w, h))
}

/// The JSON Schema of the manifest, as committed under `schemas/`.
pub fn schema() -> String {
    let mut text =
        serde_json::to_string_pretty(&schemars::schema_for!(Manifest)).unwrap_or_default();
    text.push('\n');
    text
}
