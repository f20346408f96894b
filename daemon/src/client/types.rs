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

impl FileRef {
    /// Whether the file is a result of the job, to be downloaded and kept: only entries of type
    /// `output` (what SaveImage-like nodes write into ComfyUI's output folder). `temp` entries
    /// are previews (PreviewImage; ComfyUI empties `temp/` when it restarts) and `input` entries
    /// name files already in ComfyUI's input folder (such as the image a LoadImage shows); a
    /// user does not expect either among a job's outputs.
    pub fn is_job_output(&self) -> bool {
        self.kind == "output"
    }
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
    /// `None` when ComfyUI wrote `null` (2026 servers can) or nothing.
    #[serde(default)]
    pub status: Option<HistoryStatus>,
    /// Output key → `{node_id, display_node, parent_node, real_node_id}`.
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

/// The node of the submitted graph that an `outputs` key belongs to:
/// `meta[key].display_node` when the server gives one, else the key itself. Under subgraphs a
/// 2026 server keys outputs by inner execution ids and names the user's node there
/// (`shared/comfyui/NEWER.md`); 0.3.x servers write the key itself.
pub fn display_node<'a>(meta: &'a Value, key: &'a str) -> &'a str {
    meta.get(key)
        .and_then(|m| m.get("display_node"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .unwrap_or(key)
}

impl HistoryEntry {
    /// Every file among the outputs: any list entry with a `filename`, of any type, named by
    /// its node in the submitted graph ([`display_node`]). Core SaveVideo/SaveWEBM list their
    /// file under `images` beside `"animated": [true]`; such files are marked `animated`. Other
    /// fields of an entry (`fullpath`, a server-local path) are ignored.
    pub fn files(&self) -> Vec<OutputFile> {
        let mut files = Vec::new();
        for (key, kinds) in &self.outputs {
            let node = display_node(&self.meta, key);
            let animated = kinds.get("animated").and_then(Value::as_array);
            for (kind, value) in kinds {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    if let Ok(file) = serde_json::from_value::<FileRef>(item.clone())
                        && item.get("filename").is_some()
                    {
                        files.push(OutputFile {
                            node: node.to_owned(),
                            kind: kind.clone(),
                            animated: animated
                                .and_then(|a| a.get(i).or(a.first()))
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                            file,
                        });
                    }
                }
            }
        }
        files
    }

    /// Output values that are not files (text, numbers, ...), by node ([`display_node`]) and
    /// kind.
    pub fn data(&self) -> Vec<(String, String, Value)> {
        let mut data = Vec::new();
        for (key, kinds) in &self.outputs {
            let node = display_node(&self.meta, key);
            for (kind, value) in kinds {
                let all_files = value.as_array().is_some_and(|a| {
                    !a.is_empty() && a.iter().all(|i| i.get("filename").is_some())
                });
                if !all_files && !matches!(kind.as_str(), "animated") {
                    data.push((node.to_owned(), kind.clone(), value.clone()));
                }
            }
        }
        data
    }

    /// Whether the prompt has ended: ComfyUI writes a history entry only when a prompt ends,
    /// so an entry whose `status` is null (2026 servers can write that) has ended too.
    pub fn finished(&self) -> bool {
        self.status
            .as_ref()
            .is_none_or(|s| s.completed || s.status_str == "error")
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
    /// Listed with `"animated": [true]`: a video or animation (core SaveVideo and SaveWEBM
    /// list theirs under `images`).
    #[serde(default)]
    pub animated: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> HistoryEntry {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn subgraph_output_keys_are_named_by_their_display_node() {
        let meta = json!({
            "12:3": {"node_id": "12:3", "display_node": "12", "parent_node": "12", "real_node_id": "12:3"},
            "5": {"display_node": "5"},
            "7": {"display_node": ""},
        });
        assert_eq!(display_node(&meta, "12:3"), "12");
        assert_eq!(display_node(&meta, "5"), "5");
        assert_eq!(display_node(&meta, "7"), "7", "an empty name is no name");
        assert_eq!(display_node(&meta, "9"), "9", "no meta: the key itself");
        assert_eq!(display_node(&Value::Null, "9"), "9");
        let e = entry(json!({
            "outputs": {
                "12:3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
                "12:4": {"text": ["hi"]}
            },
            "meta": {"12:3": {"display_node": "12"}, "12:4": {"display_node": "12"}},
            "status": null
        }));
        assert_eq!(e.files()[0].node, "12");
        assert_eq!(
            e.data(),
            [("12".to_owned(), "text".to_owned(), json!(["hi"]))]
        );
    }

    #[test]
    fn videos_under_images_are_animated_and_every_type_is_read() {
        let e = entry(json!({
            "outputs": {
                "4": {"images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
                      "animated": [true]},
                "2": {"images": [{"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": "", "type": "temp"}]},
                "1": {"images": [{"filename": "in.png", "subfolder": "sub", "type": "input"}]},
                "8": {"gifs": [{"filename": "v_00001.mp4", "subfolder": "", "type": "output",
                                "format": "video/h264-mp4", "fullpath": "/srv/comfy/output/v_00001.mp4"}]}
            },
            "status": {"status_str": "success", "completed": true, "messages": []},
            "meta": {}
        }));
        let files = e.files();
        let by_node = |n: &str| {
            files
                .iter()
                .find(|f| f.node == n)
                .unwrap_or_else(|| panic!("no file of node {n}: {files:?}"))
        };
        let video = by_node("4");
        assert!(video.animated && video.kind == "images", "{video:?}");
        assert_eq!(
            (video.file.subfolder.as_str(), video.file.is_job_output()),
            ("video", true)
        );
        assert!(!by_node("2").file.is_job_output() && !by_node("2").animated);
        assert_eq!(by_node("1").file.kind, "input");
        assert!(!by_node("1").file.is_job_output());
        let gif = by_node("8");
        assert_eq!(
            gif.file,
            FileRef {
                filename: "v_00001.mp4".into(),
                subfolder: String::new(),
                kind: "output".into()
            },
            "the server-local fullpath is not used"
        );
        assert!(e.data().is_empty(), "{:?}", e.data());
    }

    #[test]
    fn an_entry_with_a_null_status_has_ended() {
        let e = entry(json!({"outputs": {}, "status": null, "meta": {}}));
        assert!(e.status.is_none() && e.finished());
        let running = entry(json!({"status": {"status_str": "", "completed": false}}));
        assert!(!running.finished());
        let failed = entry(json!({"status": {"status_str": "error", "completed": false}}));
        assert!(failed.finished());
    }
}
