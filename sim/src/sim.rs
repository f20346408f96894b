//! The handle a test holds: starting, faults, timing, the timeline, the memory model's
//! figures, and the restart cycle
//! (`go_down` refuses connections and forgets everything a ComfyUI restart forgets;
//! `come_back` listens again on the same port).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::catalogue::Catalogue;
use crate::config::{Config, Timing};
use crate::fault::{Fault, NodeFault};
use crate::files::Dirs;
use crate::listener::{Tracked, bind};
use crate::memory::FreeCall;
use crate::shared::{Shared, State, lock};
use crate::stall::Stall;
use crate::timeline::{Timeline, TimelineEntry};
use crate::ws::Hub;

/// A running simulator. Dropping it stops the server and the worker.
pub struct Sim {
    shared: Arc<Shared>,
    port: u16,
    running: Mutex<Option<Running>>,
}

/// One life of the server, between a start and a `go_down`.
struct Running {
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
    /// Sending `true` cuts every connection accepted in this life.
    down: watch::Sender<bool>,
}

impl Running {
    fn launch(shared: &Arc<Shared>, listener: tokio::net::TcpListener) -> Running {
        let (tracked, down) = Tracked::new(listener);
        let app = crate::http::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(tracked, app).await {
                tracing::error!("comfy-sim server stopped: {e}");
            }
        });
        let worker = tokio::spawn(crate::worker::run(shared.clone()));
        Running {
            server,
            worker,
            down,
        }
    }

    /// Stops accepting (the listener is dropped with the server task), cuts open
    /// connections, and stops the worker mid-prompt if need be.
    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        let _ = self.down.send(true);
        self.worker.abort();
        let _ = self.worker.await;
    }
}

/// Starts a simulator on 127.0.0.1 (`Config::port`, or any free port when 0).
pub async fn start(config: Config) -> io::Result<Sim> {
    let dirs = Dirs::create(&config.root)?;
    let listener = bind(config.port)?;
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared {
        catalogue: Catalogue::new(config.catalogue),
        protocol: config.protocol,
        models: config.models,
        memory: config.memory,
        memory_log: Mutex::default(),
        dirs,
        timing: Mutex::new(config.timing),
        state: Mutex::new(State::default()),
        work: Notify::new(),
        hub: Hub::default(),
        faults: Mutex::default(),
        stall: Stall::default(),
        timeline: Timeline::new(config.record_timeline),
        interrupt: Default::default(),
        job_cancels: Default::default(),
    });
    let running = Running::launch(&shared, listener);
    tracing::info!(port, "comfy-sim listening");
    Ok(Sim {
        shared,
        port,
        running: Mutex::new(Some(running)),
    })
}

impl Sim {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Arms a one-shot fault; see [`Fault`].
    pub fn inject(&self, fault: Fault) {
        tracing::debug!(?fault, "fault armed");
        let shared = &self.shared;
        match fault {
            Fault::RejectNextPrompt => lock(&shared.faults).arm_reject(),
            Fault::ExecutionError { node, message } => {
                lock(&shared.faults).arm_node_fault(node, NodeFault::Error(message));
            }
            Fault::OutOfMemory => lock(&shared.faults).arm_node_fault(None, NodeFault::OutOfMemory),
            Fault::InterruptNext => lock(&shared.faults).arm_interrupt(),
            Fault::DropWebsockets { after_frames } => shared.hub.drop_after(after_frames),
            Fault::SlowHistory(delay) => lock(&shared.faults).arm_slow_history(delay),
            Fault::Stall(length) => shared.stall.arm(length),
            Fault::NullHistoryStatus => lock(&shared.faults).arm_null_status(),
        }
    }

    /// Replaces the timing; nodes starting from now on use it.
    pub fn set_timing(&self, timing: Timing) {
        *lock(&self.shared.timing) = timing;
    }

    /// Everything that happened so far, in order (kept across `go_down`/`come_back`).
    pub fn timeline(&self) -> Vec<TimelineEntry> {
        self.shared.timeline.snapshot()
    }

    /// Every accepted prompt (kept across restarts) with the `filename_prefix` inputs of its
    /// nodes, in submission order: how tests count submissions per job.
    pub fn submitted_prefixes(&self) -> Vec<(String, Vec<String>)> {
        self.shared.timeline.prefixes()
    }

    /// The account keys (`extra_data.api_key_comfy_org`, `auth_token_comfy_org`) each accepted
    /// prompt carried, by prompt id, in submission order: the server keeps them out of its queue
    /// and history, as ComfyUI does, so this is where a test sees what arrived.
    pub fn sensitive_received(&self) -> Vec<crate::timeline::Received> {
        self.shared.timeline.sensitive()
    }

    /// How many `POST /api/jobs/{id}/cancel` and `POST /api/jobs/cancel` requests arrived
    /// since the start (2026 mode; restarts do not reset it): how a test sees which way a
    /// client cancels.
    pub fn job_cancel_calls(&self) -> u64 {
        self.shared.job_cancels.load(Ordering::SeqCst)
    }

    /// How many prompts failed with `torch.OutOfMemoryError` since the start (simulated by the
    /// memory model or injected with [`Fault::OutOfMemory`]; restarts do not reset it).
    pub fn out_of_memory_count(&self) -> u64 {
        lock(&self.shared.memory_log).out_of_memory
    }

    /// Every `POST /free` accepted since the start, in order, with its flags.
    pub fn free_calls(&self) -> Vec<FreeCall> {
        lock(&self.shared.memory_log).frees.clone()
    }

    /// The models resident on the simulated GPU now, by file name, sorted (empty without a
    /// memory model).
    pub fn resident_models(&self) -> Vec<String> {
        lock(&self.shared.state)
            .device
            .resident()
            .cloned()
            .collect()
    }

    /// Bytes leaked so far in this life of the server (0 without a memory model).
    pub fn leaked_bytes(&self) -> u64 {
        lock(&self.shared.state).device.leaked()
    }

    /// `vram_free` as `/system_stats` reports it now; `None` without a memory model.
    pub fn vram_free(&self) -> Option<u64> {
        let memory = self.shared.memory.as_ref()?;
        Some(lock(&self.shared.state).device.free(memory))
    }

    /// Like a killed server: connections refused, every socket and open connection cut, the
    /// running prompt abandoned, queue and history gone, the simulated GPU emptied (leak
    /// included).
    pub async fn go_down(&self) {
        let running = lock(&self.running).take();
        if let Some(running) = running {
            running.stop().await;
        }
        self.shared.hub.close_all();
        self.shared.hub.set_executing(None);
        self.shared.interrupt.store(false, Ordering::SeqCst);
        *lock(&self.shared.state) = State::default();
        tracing::info!(port = self.port, "comfy-sim went down");
    }

    /// Listens again on the same port, as a freshly started server: empty queue, history and
    /// cache, no model loaded, `temp/` emptied.
    pub async fn come_back(&self) {
        if lock(&self.running).is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.shared.dirs.temp);
        let _ = std::fs::create_dir_all(&self.shared.dirs.temp);
        // The old listener is closed, but be patient with a slow kernel.
        let mut tries = 0;
        let listener = loop {
            match bind(self.port) {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!("rebinding port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::error!(
                        "comfy-sim could not listen again on port {}: {e}",
                        self.port
                    );
                    return;
                }
            }
        };
        *lock(&self.running) = Some(Running::launch(&self.shared, listener));
        tracing::info!(port = self.port, "comfy-sim came back");
    }

    /// Stops the server and the worker.
    pub async fn shutdown(self) {
        let running = lock(&self.running).take();
        if let Some(running) = running {
            running.stop().await;
        }
        self.shared.hub.close_all();
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            running.server.abort();
            running.worker.abort();
            let _ = running.down.send(true);
        }
        self.shared.hub.close_all();
    }
}
