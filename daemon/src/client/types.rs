//! What ComfyUI's HTTP endpoints take and answer, as typed values.
//!
//! Shapes follow the recordings in `shared/comfyui/`. Fields ComfyUI adds later are ignored;
//! fields it may omit are optional, so a newer or older server still parses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `error` of a rejected prompt, and each entry of a node's `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: String,
    #[serde(default)]
    pub extra_info: Value,
}

/// Why one node failed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeError {
    #[serde(default)]
    pub errors: Vec<ErrorInfo>,
    #[serde(default)]
    pub dependent_outputs: Vec<Value>,
    #[serde(default)]
    pub class_type: String,
}

impl NodeError {
    /// The input each error names (`extra_info.input_name`), where it names one.
    pub fn inputs(&self) -> impl Iterator<Item = (&ErrorInfo, Option<&str>)> {
        self.errors
            .iter()
            .map(|e| (e, e.extra_info.get("input_name").and_then(Value::as_str)))
    }
}

/// ComfyUI's answer to a prompt it rejected (400).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRejection {
    pub error: ErrorInfo,
    #[serde(default)]
    pub node_errors: BTreeMap<String, NodeError>,
}

impl std::fmt::Display for PromptRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error.message)?;
        if !self.error.details.is_empty() {
            write!(f, ": {}", self.error.details)?;
        }
        for (node, e) in &self.node_errors {
            for err in &e.errors {
                write!(f, "; node {node} ({}): {}", e.class_type, err.message)?;
                if !err.details.is_empty() {
                    write!(f, " ({})", err.details)?;
                }
            }
        }
        Ok(())
    }
}

/// ComfyUI's answer to a prompt it accepted (200). `node_errors` is not always empty: when
/// some output nodes are valid and others not, only the valid ones run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    pub prompt_id: String,
    #[serde(default)]
    pub number: f64,
    #[serde(default)]
    pub node_errors: BTreeMap<String, NodeError>,
}

/// A file ComfyUI wrote or holds: what `/view` and `/upload/image` speak in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    pub filename: String,
    #[serde(default)]
    pub subfolder: String,
    /// `output`, `temp` or `input`.
    #[serde(rename = "type", default = "output_type")]
    pub kind: String,
}

fn output_type() -> String {
    "output".into()
}

/// The answer of `POST /upload/image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uploaded {
    pub name: String,
    #[serde(default)]
    pub subfolder: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl Uploaded {
    /// The value a LoadImage `image` input takes for this file.
    pub fn image_value(&self) -> String {
        if self.subfolder.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.subfolder, self.name)
        }
    }
}

/// One entry of `GET /history/ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    #[serde(default)]
    pub prompt: Value,
    /// Node id → output kind (`images`, `gifs`, `audio`, `text`, ...) → values.
    #[serde(default)]
    pub outputs: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(default)]
    pub status: Option<HistoryStatus>,
    #[serde(default)]
    pub meta: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryStatus {
    #[serde(default)]
    pub status_str: String,
    #[serde(default)]
    pub completed: bool,
    /// `[event name, data]` pairs: the prompt's execution events.
    #[serde(default)]
    pub messages: Vec<(String, Value)>,
}

impl HistoryEntry {
    /// Every file among the outputs: any list entry with a `filename`.
    pub fn files(&self) -> Vec<OutputFile> {
        let mut files = Vec::new();
        for (node, kinds) in &self.outputs {
            for (kind, value) in kinds {
                for item in value.as_array().into_iter().flatten() {
                    if let Ok(file) = serde_json::from_value::<FileRef>(item.clone())
                        && item.get("filename").is_some()
                    {
                        files.push(OutputFile {
                            node: node.clone(),
                            kind: kind.clone(),
                            file,
                        });
                    }
                }
            }
        }
        files
    }

    /// Output values that are not files (text, numbers, ...), by node and kind.
    pub fn data(&self) -> Vec<(String, String, Value)> {
        let mut data = Vec::new();
        for (node, kinds) in &self.outputs {
            for (kind, value) in kinds {
                let all_files = value.as_array().is_some_and(|a| {
                    !a.is_empty() && a.iter().all(|i| i.get("filename").is_some())
                });
                if !all_files && !matches!(kind.as_str(), "animated") {
                    data.push((node.clone(), kind.clone(), value.clone()));
                }
            }
        }
        data
    }

    /// Timestamps (ms since the epoch) of events in `status.messages`, by name.
    pub fn timestamp(&self, event: &str) -> Option<u64> {
        self.status
            .as_ref()?
            .messages
            .iter()
            .find(|(name, _)| name == event)
            .and_then(|(_, d)| d.get("timestamp"))
            .and_then(Value::as_u64)
    }
}

/// A file output of one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputFile {
    pub node: String,
    /// The output kind it was listed under: `images`, `gifs`, `video`, `audio`, `3d`, ...
    pub kind: String,
    pub file: FileRef,
}

/// `GET /queue`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Queue {
    pub running: Vec<QueueItem>,
    pub pending: Vec<QueueItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub number: f64,
    pub prompt_id: String,
}

impl Queue {
    pub(crate) fn from_value(v: &Value) -> Queue {
        let items = |key: &str| {
            v.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| {
                    let a = item.as_array()?;
                    Some(QueueItem {
                        number: a.first()?.as_f64()?,
                        prompt_id: a.get(1)?.as_str()?.to_owned(),
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut pending = items("queue_pending");
        // ComfyUI lists pending items in heap order; the number is the execution order.
        pending.sort_by(|a, b| a.number.total_cmp(&b.number));
        Queue {
            running: items("queue_running"),
            pending,
        }
    }

    pub fn contains(&self, prompt_id: &str) -> bool {
        self.running
            .iter()
            .chain(&self.pending)
            .any(|i| i.prompt_id == prompt_id)
    }
}

/// `GET /system_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemStats {
    pub system: SystemInfo,
    #[serde(default)]
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub comfyui_version: String,
    #[serde(default)]
    pub python_version: String,
    #[serde(default)]
    pub pytorch_version: String,
    #[serde(default)]
    pub ram_total: u64,
    #[serde(default)]
    pub ram_free: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub vram_total: u64,
    #[serde(default)]
    pub vram_free: u64,
    #[serde(default)]
    pub torch_vram_total: u64,
    #[serde(default)]
    pub torch_vram_free: u64,
}
