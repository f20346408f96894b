//! The record of what ran when, for tests that check ordering, caching and model loads without
//! parsing websocket frames.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One thing that happened to a prompt, [`TimelineEntry::at`] after the simulator started.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub at: Duration,
    pub prompt_id: String,
    pub event: TimelineEvent,
}

/// What happened; see [`TimelineEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineEvent {
    /// `POST /prompt` accepted it.
    Queued,
    /// The worker took it (`execution_start`).
    Started,
    /// A node began executing (not sent for cached nodes).
    NodeStarted { node: String, class_type: String },
    /// A node finished executing successfully.
    NodeFinished { node: String },
    /// A model was (re)loaded, costing `Timing::model_load_ms`.
    ModelLoad { name: String },
    /// The nodes listed in `execution_cached`.
    Cached { nodes: Vec<String> },
    /// `success`, `error` or `interrupted`.
    Finished { outcome: String },
}

pub(crate) struct Timeline {
    started: Instant,
    /// `Config::record_timeline`: when false nothing is kept.
    enabled: bool,
    entries: Mutex<Vec<TimelineEntry>>,
    /// Every accepted prompt's `filename_prefix` values, by prompt id, in submission order.
    prefixes: Mutex<Vec<(String, Vec<String>)>>,
    /// The sensitive `extra_data` entries (account keys) each prompt came with, before they
    /// were dropped as ComfyUI drops them: by prompt id, in submission order.
    sensitive: Mutex<Vec<Received>>,
}

/// A prompt id and the sensitive `extra_data` entries (name, value) it came with.
pub type Received = (String, Vec<(String, String)>);

impl Timeline {
    pub(crate) fn new(enabled: bool) -> Self {
        Timeline {
            started: Instant::now(),
            enabled,
            entries: Mutex::new(Vec::new()),
            prefixes: Mutex::new(Vec::new()),
            sensitive: Mutex::new(Vec::new()),
        }
    }

    /// Notes the save prefixes of an accepted prompt, so tests can count how often a job's
    /// graph was submitted (a daemon names each job's outputs `comfyd/ID/...`).
    pub(crate) fn record_prefixes(
        &self,
        prompt_id: &str,
        prompt: &serde_json::Map<String, serde_json::Value>,
    ) {
        if !self.enabled {
            return;
        }
        let found: Vec<String> = prompt
            .values()
            .filter_map(|node| node.pointer("/inputs/filename_prefix"))
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        crate::shared::lock(&self.prefixes).push((prompt_id.to_owned(), found));
    }

    pub(crate) fn record_sensitive(&self, prompt_id: &str, entries: Vec<(String, String)>) {
        if self.enabled {
            crate::shared::lock(&self.sensitive).push((prompt_id.to_owned(), entries));
        }
    }

    pub(crate) fn sensitive(&self) -> Vec<Received> {
        crate::shared::lock(&self.sensitive).clone()
    }

    pub(crate) fn prefixes(&self) -> Vec<(String, Vec<String>)> {
        crate::shared::lock(&self.prefixes).clone()
    }

    /// Time since the simulator started, the clock of every entry.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn record(&self, prompt_id: &str, event: TimelineEvent) {
        if !self.enabled {
            return;
        }
        let entry = TimelineEntry {
            at: self.started.elapsed(),
            prompt_id: prompt_id.to_owned(),
            event,
        };
        crate::shared::lock(&self.entries).push(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<TimelineEntry> {
        crate::shared::lock(&self.entries).clone()
    }
}
