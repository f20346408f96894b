//! The pieces of `bench_core`: a rig that starts simulators and real `comfyd` processes in
//! temporary folders (`rig`), tables and goals (`report`), the plain websocket loop (`plain`),
//! and one module per scenario of issues 7 and 8's benchmarks.

pub mod affinity;
pub mod gap;
pub mod inbox;
pub mod leak;
pub mod memory;
pub mod overhead;
pub mod plain;
pub mod report;
pub mod rig;
pub mod shared_dir;
pub mod starvation;

/// Errors end a run (one row of a table) or the whole benchmark; they are only printed.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;
