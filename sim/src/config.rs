//! What a simulator is started with: the catalogue it validates against, where its files live,
//! how long things take, and optionally a GPU memory model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::memory::Memory;

/// How a simulator is set up; see [`crate::start`].
#[derive(Debug, Clone)]
pub struct Config {
    /// An `/object_info` document: the node classes the server knows.
    pub catalogue: serde_json::Value,
    /// `input/`, `output/` and `temp/` are created under it.
    pub root: PathBuf,
    /// 0 picks any free port; the simulator always binds 127.0.0.1.
    pub port: u16,
    /// How long nodes, model loads and history writes take.
    pub timing: Timing,
    /// Model folder (`checkpoints`, `loras`, ...) to the file names the server "has".
    pub models: BTreeMap<String, Vec<String>>,
    /// A simulated CUDA device: models take VRAM, a load that does not fit fails with
    /// torch's out-of-memory error, `/system_stats` reports a `cuda` device. `None` (the
    /// default): a CPU device as recorded, and no prompt ever runs out of memory.
    pub memory: Option<Memory>,
    /// Which server's behaviour: the recorded ComfyUI 0.3.64 (the default) or the 2026 releases
    /// described in `shared/comfyui/NEWER.md`; see [`Protocol`].
    pub protocol: Protocol,
    /// Whether [`crate::Sim::timeline`] and [`crate::Sim::submitted_prefixes`] are kept (they
    /// grow with every prompt). On by default; off where nobody can read them (the binary).
    pub record_timeline: bool,
}

impl Config {
    /// Any free port, no delays, no models, no memory model, a recorded timeline.
    pub fn new(catalogue: serde_json::Value, root: impl Into<PathBuf>) -> Self {
        Config {
            catalogue,
            root: root.into(),
            port: 0,
            timing: Timing::default(),
            models: BTreeMap::new(),
            memory: None,
            protocol: Protocol::default(),
            record_timeline: true,
        }
    }
}

/// The protocol a simulator speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// ComfyUI 0.3.64 as recorded in `shared/comfyui/`: any `prompt_id` is taken, there is no
    /// `/api/jobs`, SaveVideo and SaveWEBM are not evaluated.
    #[default]
    Recorded,
    /// ComfyUI as released in 2026 (`shared/comfyui/NEWER.md`): a client's `prompt_id` must be a
    /// canonical lowercase UUID (else 400 `invalid_prompt_id`); `GET /api/jobs`,
    /// `GET /api/jobs/{id}`, `POST /api/jobs/{id}/cancel` and `POST /api/jobs/cancel`; SaveVideo
    /// and SaveWEBM list their file under `images` with `"animated": [true]`; LoadImage lists
    /// the file it loaded as an entry of type `input`; a node of a subgraph (a prompt id
    /// `OUTER:INNER`, as front ends flatten them) keeps its outputs under that inner id, with
    /// `meta[id].display_node` naming the subgraph's node on the user's canvas.
    Y2026,
}

/// Simulated durations, in milliseconds. Changeable while running with [`crate::Sim::set_timing`].
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Execution time of every executed (not cached) node.
    pub node_ms: u64,
    /// Per `class_type` override of `node_ms`.
    pub class_ms: BTreeMap<String, u64>,
    /// Added when a loader's model differs from the one loaded (or models were unloaded).
    pub model_load_ms: u64,
    /// A finished prompt appears in `/history` this long after `execution_success`.
    pub history_delay_ms: u64,
}

impl Timing {
    pub(crate) fn node_time(&self, class_type: &str) -> std::time::Duration {
        let ms = self
            .class_ms
            .get(class_type)
            .copied()
            .unwrap_or(self.node_ms);
        std::time::Duration::from_millis(ms)
    }
}
