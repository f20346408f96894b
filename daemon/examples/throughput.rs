//! Jobs per second through the daemon, beside the same jobs run by a plain loop that submits
//! one prompt and waits for it before the next. A benchmark, not a test.
//!
//!     cargo run --release -p comfyd --example throughput -- [JOBS]
//!     COMFYUI_URL=http://127.0.0.1:8188 cargo run -p comfyd --example throughput -- [JOBS]
//!
//! Without COMFYUI_URL both run against an in-process simulator with zero execution time.
//! The jobs are the examples' no-model `solid-color` workflow, 8×8, each with its own colour.

#[path = "bench/plain.rs"]
mod plain;

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir()?;
    let (url, _sim) = match std::env::var("COMFYUI_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let text = std::fs::read_to_string(root.join("../shared/comfyui/object_info.json"))?;
            let sim = comfy_sim::start(comfy_sim::Config::new(
                serde_json::from_str(&text)?,
                tmp.path().join("sim"),
            ))
            .await?;
            (sim.url(), Some(sim))
        }
    };
    let salt = std::process::id() as usize;

    // A plain loop: render, submit, wait, fetch, one job after the other.
    let plain = plain::plain_loop(&url, &root.join("examples"), jobs, salt, tmp.path()).await?;

    // The daemon: the same jobs as one JSONL file.
    let jobs_dir = tmp.path().join("jobs");
    std::fs::create_dir_all(jobs_dir.join("inbox"))?;
    let lines: String = (0..jobs)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"workflow": "solid-color", "inputs": plain::solid_color_inputs(i, salt + 1)})
            )
        })
        .collect();
    std::fs::write(jobs_dir.join("inbox/bench.jsonl"), lines)?;
    let mut settings = comfyd::daemon::Settings::new(&jobs_dir, root.join("examples"), url.clone());
    settings.outputs = tmp.path().join("outputs");
    settings.settle = Duration::ZERO;
    settings.until_idle = true;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let summary = comfyd::daemon::run(settings, rx).await?;
    let daemon = t.elapsed();
    if summary.jobs_done != jobs {
        return Err(format!(
            "the daemon finished {} of {jobs} jobs: {summary:?}",
            summary.jobs_done
        )
        .into());
    }
    let rate = |d: Duration| jobs as f64 / d.as_secs_f64();
    println!("{jobs} jobs of solid-color (8x8) against {url}:");
    println!(
        "  plain loop (submit, wait, fetch):          {:.1} jobs/s ({:.2} s)",
        rate(plain),
        plain.as_secs_f64()
    );
    println!(
        "  comfyd (manifests, hashes, atomic writes): {:.1} jobs/s ({:.2} s)",
        rate(daemon),
        daemon.as_secs_f64()
    );
    println!("  daemon / loop: {:.2}", rate(daemon) / rate(plain));
    Ok(())
}
