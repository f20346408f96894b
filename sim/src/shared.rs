//! The state every part of a running simulator shares: the HTTP handlers, the websocket hub and
//! the worker all hold one `Arc<Shared>`.
//!
//! Lock order, where two are held: `state` before the hub's. Nothing holds a lock across an
//! `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::json;
use tokio::sync::Notify;

use crate::catalogue::Catalogue;
use crate::config::{Protocol, Timing};
use crate::fault::Armed;
use crate::files::Dirs;
use crate::history::History;
use crate::memory::{Device, FreeCall, Memory};
use crate::queue::PromptQueue;
use crate::stall::Stall;
use crate::timeline::Timeline;
use crate::ws::Hub;

/// Locks, ignoring poisoning: a panicking handler must not take the whole simulator down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Shared {
    pub(crate) catalogue: Catalogue,
    pub(crate) protocol: Protocol,
    pub(crate) models: BTreeMap<String, Vec<String>>,
    /// `Config::memory`; the device's state is `State::device`.
    pub(crate) memory: Option<Memory>,
    /// What the memory model counted, kept across restarts.
    pub(crate) memory_log: Mutex<MemoryLog>,
    pub(crate) dirs: Dirs,
    pub(crate) timing: Mutex<Timing>,
    pub(crate) state: Mutex<State>,
    /// Wakes the worker: a prompt was queued or `/free` set a flag.
    pub(crate) work: Notify,
    pub(crate) hub: Hub,
    pub(crate) faults: Mutex<Armed>,
    pub(crate) stall: Stall,
    pub(crate) timeline: Timeline,
    /// ComfyUI's global `interrupt_processing` flag; reset when a prompt starts.
    pub(crate) interrupt: AtomicBool,
    /// `POST /api/jobs/{id}/cancel` and `POST /api/jobs/cancel` requests, kept across restarts.
    pub(crate) job_cancels: AtomicU64,
}

/// What a restart loses.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) queue: PromptQueue,
    pub(crate) history: History,
    /// `PromptServer.number`: counts every parsed `POST /prompt`, accepted or not.
    pub(crate) number: i64,
    /// What the simulated GPU holds (only used with `Config::memory`).
    pub(crate) device: Device,
}

/// Counted for tests and benchmarks; a restart keeps them.
#[derive(Debug, Default)]
pub(crate) struct MemoryLog {
    /// Prompts that failed with `torch.OutOfMemoryError`, simulated or injected.
    pub(crate) out_of_memory: u64,
    pub(crate) frees: Vec<FreeCall>,
}

impl Shared {
    /// `PromptServer.queue_updated()`: a `status` frame to every socket.
    pub(crate) fn queue_updated(&self, state: &State) {
        let remaining = state.queue.remaining();
        self.hub.send(
            None,
            &json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}}}),
        );
    }

    pub(crate) fn timing(&self) -> Timing {
        lock(&self.timing).clone()
    }
}
