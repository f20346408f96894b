//! comfyd: the per-GPU job-directory daemon, and the ComfyUI client it drives ComfyUI with.
//!
//! [`client`] speaks ComfyUI's HTTP and websocket protocol: every endpoint the daemon needs,
//! typed events and errors, and [`client::Client::run_prompt`], which runs a prompt from
//! submission to its outputs.

pub mod client;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod gpu;
pub mod job;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod retry;
pub mod runner;
pub mod scheduler;
pub mod serve;
pub mod status;
pub mod store;
pub mod supervisor;
