//! comfyd: the per-GPU job-directory daemon, and the ComfyUI client it drives ComfyUI with.
//!
//! [`client`] speaks ComfyUI's HTTP and websocket protocol: every endpoint the daemon needs,
//! typed events and errors, and [`client::Client::run_prompt`], which runs a prompt from
//! submission to its outputs.

pub mod client;
pub mod config;
pub mod daemon;
pub mod job;
pub mod jobdir;
pub mod manifest;
pub mod runner;
