//! Integration tests of comfy-sim, one binary: the recorded ComfyUI contract replayed
//! (`contract_*`, with `contract_coverage` placing every recorded file), then the simulator's
//! own behaviour, its faults, its GPU memory model, and the real binary.
//!
//! The recordings are read from `$COMFYC_SHARED/comfyui/` or `shared/comfyui/` beside the
//! repository; without them every test fails, saying where it looked.

mod behaviour;
mod cli;
mod contract_coverage;
mod contract_errors;
mod contract_http;
mod contract_queue;
mod contract_runs;
mod faults;
mod memory;
mod newer;
mod support;
