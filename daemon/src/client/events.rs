//! Websocket events of ComfyUI's `/ws?clientId=`, as typed values.
//!
//! Text frames are `{"type": NAME, "data": {...}}`. Binary frames start with a big-endian
//! `u32` event type: 1 a preview image (then a `u32` format, 1 JPEG / 2 PNG, then the image),
//! 3 text from a node (a `u32` length, the node id, the text), 4 a preview image with JSON
//! metadata (a `u32` length, the metadata, the image). Unknown events are kept as [`Event::Other`],
//! so a newer server never breaks the client.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// Progress of one node in a `progress_state` frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeProgress {
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub max: f64,
    #[serde(default)]
    pub state: String,
}

/// One execution failure, from `execution_error`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct ExecutionError {
    #[serde(default)]
    pub prompt_id: String,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub node_type: String,
    #[serde(default)]
    pub exception_message: String,
    #[serde(default)]
    pub exception_type: String,
    #[serde(default)]
    pub traceback: Vec<String>,
    #[serde(default)]
    pub executed: Vec<String>,
}

impl ExecutionError {
    /// ComfyUI's out-of-memory failures, on CUDA and elsewhere.
    pub fn is_out_of_memory(&self) -> bool {
        let m = self.exception_message.to_lowercase();
        self.exception_type.contains("OutOfMemory")
            || m.contains("out of memory")
            || m.contains("allocation on device")
    }
}

/// A websocket event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Queue length; the first frame after connecting also carries the session id.
    Status {
        queue_remaining: u64,
        sid: Option<String>,
    },
    ExecutionStart {
        prompt_id: String,
        timestamp: Option<u64>,
    },
    /// Nodes served from cache (not executed).
    ExecutionCached {
        prompt_id: String,
        nodes: Vec<String>,
    },
    /// A node started; `node: None` ends the prompt.
    Executing {
        prompt_id: Option<String>,
        node: Option<String>,
    },
    /// Step progress of a node (samplers).
    Progress {
        prompt_id: Option<String>,
        node: Option<String>,
        value: f64,
        max: f64,
    },
    ProgressState {
        prompt_id: String,
        nodes: BTreeMap<String, NodeProgress>,
    },
    /// An output node finished, with its outputs (`images`, `gifs`, `audio`, `text`, ...).
    Executed {
        prompt_id: String,
        node: String,
        /// The node of the submitted graph it shows on (differs from `node` under 2026
        /// subgraphs); `None` when the server does not say.
        display_node: Option<String>,
        output: Value,
    },
    ExecutionSuccess {
        prompt_id: String,
        timestamp: Option<u64>,
    },
    ExecutionError(ExecutionError),
    ExecutionInterrupted {
        prompt_id: String,
        node_id: String,
        node_type: String,
        executed: Vec<String>,
    },
    FeatureFlags(Value),
    /// A preview image (binary frame); metadata when the server sends it.
    Preview {
        media_type: String,
        metadata: Option<Value>,
        image: Bytes,
    },
    /// Text a node sent (binary frame).
    Text {
        node: String,
        text: String,
    },
    /// Anything else, kept whole.
    Other {
        kind: String,
        data: Value,
    },
}

impl Event {
    /// The prompt an event belongs to, where it says.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            Event::ExecutionStart { prompt_id, .. }
            | Event::ExecutionCached { prompt_id, .. }
            | Event::ProgressState { prompt_id, .. }
            | Event::Executed { prompt_id, .. }
            | Event::ExecutionSuccess { prompt_id, .. }
            | Event::ExecutionInterrupted { prompt_id, .. } => Some(prompt_id),
            Event::ExecutionError(e) => Some(&e.prompt_id),
            Event::Executing { prompt_id, .. } | Event::Progress { prompt_id, .. } => {
                prompt_id.as_deref()
            }
            Event::Preview { metadata, .. } => metadata
                .as_ref()
                .and_then(|m| m.get("prompt_id"))
                .and_then(Value::as_str),
            _ => None,
        }
    }

    /// The frame's event name, as ComfyUI spells it.
    pub fn name(&self) -> &str {
        match self {
            Event::Status { .. } => "status",
            Event::ExecutionStart { .. } => "execution_start",
            Event::ExecutionCached { .. } => "execution_cached",
            Event::Executing { .. } => "executing",
            Event::Progress { .. } => "progress",
            Event::ProgressState { .. } => "progress_state",
            Event::Executed { .. } => "executed",
            Event::ExecutionSuccess { .. } => "execution_success",
            Event::ExecutionError(_) => "execution_error",
            Event::ExecutionInterrupted { .. } => "execution_interrupted",
            Event::FeatureFlags(_) => "feature_flags",
            Event::Preview { .. } => "preview",
            Event::Text { .. } => "text",
            Event::Other { kind, .. } => kind,
        }
    }

    /// Parses a text frame. `Err` only when it is not JSON with a `type`.
    pub fn from_text(text: &str) -> Result<Event, String> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("a text frame that is not JSON: {e}"))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or("a text frame without `type`")?
            .to_owned();
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        Ok(Self::from_parts(kind, data))
    }

    fn from_parts(kind: String, data: Value) -> Event {
        let s = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
        let strings = |k: &str| {
            data.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let pid = || s("prompt_id").unwrap_or_default();
        let ts = || data.get("timestamp").and_then(Value::as_u64);
        match kind.as_str() {
            "status" => Event::Status {
                queue_remaining: data
                    .pointer("/status/exec_info/queue_remaining")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                sid: s("sid"),
            },
            "execution_start" => Event::ExecutionStart {
                prompt_id: pid(),
                timestamp: ts(),
            },
            "execution_cached" => Event::ExecutionCached {
                prompt_id: pid(),
                nodes: strings("nodes"),
            },
            "executing" => Event::Executing {
                prompt_id: s("prompt_id"),
                node: s("node"),
            },
            "progress" => Event::Progress {
                prompt_id: s("prompt_id"),
                node: s("node"),
                value: data.get("value").and_then(Value::as_f64).unwrap_or(0.0),
                max: data.get("max").and_then(Value::as_f64).unwrap_or(0.0),
            },
            "progress_state" => Event::ProgressState {
                prompt_id: pid(),
                nodes: data
                    .get("nodes")
                    .and_then(|n| serde_json::from_value(n.clone()).ok())
                    .unwrap_or_default(),
            },
            "executed" => Event::Executed {
                prompt_id: pid(),
                node: s("node").unwrap_or_default(),
                display_node: s("display_node"),
                output: data.get("output").cloned().unwrap_or(Value::Null),
            },
            "execution_success" => Event::ExecutionSuccess {
                prompt_id: pid(),
                timestamp: ts(),
            },
            "execution_error" => match serde_json::from_value(data.clone()) {
                Ok(e) => Event::ExecutionError(e),
                Err(_) => Event::Other { kind, data },
            },
            "execution_interrupted" => Event::ExecutionInterrupted {
                prompt_id: pid(),
                node_id: s("node_id").unwrap_or_default(),
                node_type: s("node_type").unwrap_or_default(),
                executed: strings("executed"),
            },
            "feature_flags" => Event::FeatureFlags(data),
            _ => Event::Other { kind, data },
        }
    }

    /// Parses a binary frame. `Err` when it is too short for its own header.
    pub fn from_binary(frame: &Bytes) -> Result<Event, String> {
        let word = |at: usize| -> Result<u32, String> {
            frame
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("a binary frame of {} bytes is too short", frame.len()))
        };
        match word(0)? {
            1 => {
                let media_type = match word(4)? {
                    1 => "image/jpeg",
                    2 => "image/png",
                    3 => "image/webp",
                    _ => "application/octet-stream",
                };
                Ok(Event::Preview {
                    media_type: media_type.into(),
                    metadata: None,
                    image: frame.slice(8..),
                })
            }
            3 => {
                let n = word(4)? as usize;
                let node = frame
                    .get(8..8 + n)
                    .ok_or("a text frame shorter than its node id")?;
                Ok(Event::Text {
                    node: String::from_utf8_lossy(node).into_owned(),
                    text: String::from_utf8_lossy(&frame[8 + n..]).into_owned(),
                })
            }
            4 => {
                let n = word(4)? as usize;
                let meta = frame
                    .get(8..8 + n)
                    .ok_or("a preview frame shorter than its metadata")?;
                let metadata: Value =
                    serde_json::from_slice(meta).map_err(|e| format!("preview metadata: {e}"))?;
                let media_type = metadata
                    .get("image_type")
                    .and_then(Value::as_str)
                    .unwrap_or("image/png")
                    .to_owned();
                Ok(Event::Preview {
                    media_type,
                    metadata: Some(metadata),
                    image: frame.slice(8 + n..),
                })
            }
            other => Ok(Event::Other {
                kind: format!("binary:{other}"),
                data: Value::Null,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames() {
        let e = Event::from_text(r#"{"type":"executing","data":{"node":null,"prompt_id":"p"}}"#);
        assert_eq!(
            e,
            Ok(Event::Executing {
                prompt_id: Some("p".into()),
                node: None
            })
        );
        let e = Event::from_text(
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":2}},"sid":"c"}}"#,
        );
        assert_eq!(
            e,
            Ok(Event::Status {
                queue_remaining: 2,
                sid: Some("c".into())
            })
        );
        assert!(matches!(
            Event::from_text(r#"{"type":"crystools.monitor","data":{}}"#),
            Ok(Event::Other { .. })
        ));
        assert!(Event::from_text("nope").is_err());
    }

    #[test]
    fn binary_frames() {
        let mut f = vec![0, 0, 0, 3, 0, 0, 0, 1, b'7'];
        f.extend_from_slice(b"hello");
        assert_eq!(
            Event::from_binary(&Bytes::from(f)),
            Ok(Event::Text {
                node: "7".into(),
                text: "hello".into()
            })
        );
        let meta = br#"{"node_id":"4","prompt_id":"p","image_type":"image/png"}"#;
        let mut f = vec![0, 0, 0, 4];
        f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        f.extend_from_slice(meta);
        f.extend_from_slice(b"\x89PNG");
        let e = Event::from_binary(&Bytes::from(f)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.prompt_id(), Some("p"));
        assert!(matches!(e, Event::Preview { ref image, .. } if image.len() == 4));
        assert!(Event::from_binary(&Bytes::from_static(&[0, 0])).is_err());
        assert!(Event::from_binary(&Bytes::from_static(&[0, 0, 0, 4, 0, 0, 1, 0])).is_err());
    }
}
