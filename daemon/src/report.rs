//! The daemon's typed outputs besides manifests: `failed/NAME.error.json` (why a job file
//! failed) and `status/gpu-N.json` (what a daemon is doing). Their JSON Schemas are committed as
//! `schemas/error-report.schema.json` and `schemas/status.schema.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why one job failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobFailure {
    /// The job id (absent for a line that did not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// 1-based line of the job file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Index of the sweep combination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// `job-file`, `invalid-inputs`, `unknown-workflow`, `rejected`, `execution-error`,
    /// `interrupted`, `timeout`, `cancelled`, `input-file`, `missing-model`, `output`,
    /// `duplicate-id`, `comfyui`.
    pub kind: String,
    pub message: String,
    /// Per-problem details: input errors, ComfyUI's node errors mapped to inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
}

/// `failed/NAME.error.json`: a job file that was refused whole, or one with failed jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "comfyd job file error report")]
pub struct FileReport {
    /// The file's name as dropped.
    pub file: String,
    /// Why the whole file was refused (it ran no job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The line of that problem, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Jobs in the file (lines that did not parse count as one each).
    pub jobs: usize,
    pub done: usize,
    pub failed: usize,
    /// The first failures ([`MAX_REPORTED`]), in file order.
    #[serde(default)]
    pub failures: Vec<JobFailure>,
    /// Failures beyond those listed.
    #[serde(default)]
    pub more: usize,
}

/// Failures written into one report; the rest are counted in `more`.
pub const MAX_REPORTED: usize = 100;

impl JobFailure {
    /// The same failure with long texts cut short, so a report stays readable and small.
    pub fn shortened(mut self) -> Self {
        fn cut(s: &mut String) {
            let n = s.chars().count();
            if n > 500 {
                *s = format!(
                    "{}… ({n} characters)",
                    s.chars().take(500).collect::<String>()
                );
            }
        }
        fn cut_value(v: &mut Value) {
            match v {
                Value::String(s) => cut(s),
                Value::Array(a) => {
                    a.truncate(20);
                    a.iter_mut().for_each(cut_value);
                }
                Value::Object(m) => m.values_mut().for_each(cut_value),
                _ => {}
            }
        }
        cut(&mut self.message);
        self.details.truncate(20);
        self.details.iter_mut().for_each(cut_value);
        self
    }
}

/// `status/gpu-N.json`, rewritten (coalesced) when something changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "comfyd daemon status")]
pub struct Status {
    pub owner: String,
    pub pid: u32,
    pub gpu: u32,
    pub comfy_url: String,
    /// `running`, `waiting-for-comfyui`, `no-space`, `stopping` or `stopped`.
    pub state: String,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// ComfyUI's version, when it answered.
    pub comfyui_version: Option<String>,
    /// Jobs this daemon sees waiting to be claimed, by class.
    pub queued: std::collections::BTreeMap<String, usize>,
    /// Jobs this daemon holds now, the one ComfyUI runs first.
    pub running: Vec<RunningJob>,
    /// Jobs this daemon finished since it started.
    pub jobs_done: usize,
    pub jobs_failed: usize,
    /// The job ComfyUI is executing for this daemon, node by node.
    pub progress: Option<Progress>,
}

/// A job a daemon holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunningJob {
    pub job: String,
    pub file: String,
    pub workflow: String,
    /// `preparing`, `queued` (at ComfyUI), `executing`, `collecting`, `waiting` (for ComfyUI or
    /// disk space).
    pub phase: String,
    pub since_ms: u64,
}

/// Where the executing job is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
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

impl Progress {
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

/// The JSON Schema of the error report, as committed under `schemas/`.
pub fn report_schema() -> String {
    pretty(schemars::schema_for!(FileReport))
}

/// The JSON Schema of the status file, as committed under `schemas/`.
pub fn status_schema() -> String {
    pretty(schemars::schema_for!(Status))
}

fn pretty(s: schemars::Schema) -> String {
    let mut text = serde_json::to_string_pretty(&s).unwrap_or_default();
    text.push('\n');
    text
}
