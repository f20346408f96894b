//! A simulator of ComfyUI 0.3.64's HTTP and websocket protocol, for the tests and benchmarks of
//! the ComfyUI client and the job daemon.
//!
//! The contract is the recorded behaviour of a real server (`shared/comfyui/`): status codes,
//! content types, JSON shapes and websocket frame order. Prompts are validated against an
//! `/object_info` catalogue with ComfyUI's own rules and run by one serial worker that sends the
//! same frames in the same order, caches like ComfyUI and writes real PNG files for the few
//! image classes it evaluates. Faults (rejections, execution errors, out-of-memory, interrupts,
//! dropped websockets, slow history, GC-like stalls, restarts) are injected through [`Sim`].
//! An optional GPU memory model ([`Memory`]) makes model switches that do not fit fail with
//! ComfyUI's out-of-memory error, `/free` make room, and a leak grow until a restart.
//! [`Protocol::Y2026`] behaves like the 2026 releases (`shared/comfyui/NEWER.md`): UUID-only
//! client prompt ids, the `/api/jobs` API and its cancel, videos under `images`, `input`
//! entries, subgraph display nodes.
//!
//! Layout: [`Sim`] (in `sim.rs`) owns the listener and the worker; `http/` answers requests,
//! `ws.rs` holds the websocket hub, `validate.rs` checks prompts, `worker.rs` runs them with
//! `order.rs` (execution order), `cache.rs` (what is cached), `nodes.rs` (what a node
//! produces) and `memory.rs` (what fits on the simulated GPU). `pyjson.rs` writes JSON and
//! texts the way Python does.

mod cache;
mod catalogue;
mod config;
mod fault;
mod files;
mod history;
mod http;
mod image;
mod listener;
mod memory;
mod multipart;
mod nodes;
mod order;
mod progress;
mod pyjson;
mod queue;
mod recorded;
mod shared;
mod sim;
mod stall;
mod timeline;
mod validate;
mod worker;
mod ws;

pub use config::{Config, Protocol, Timing};
pub use fault::Fault;
pub use memory::{FreeCall, Memory};
pub use sim::{Sim, start};
pub use timeline::{TimelineEntry, TimelineEvent};
