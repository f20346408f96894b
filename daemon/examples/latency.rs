//! Per-prompt latency of the client: `run_prompt` of the no-model graph (EmptyImage →
//! ImageInvert → SaveImage), one after another, each with a new colour so none is cached.
//! A benchmark, not a test.
//!
//!     COMFYUI_URL=http://127.0.0.1:8188 cargo run -p comfyd --example latency -- [RUNS] [SIZE]
//!
//! Without COMFYUI_URL it measures against an in-process simulator with zero execution time.

use std::time::{Duration, Instant};

use comfyd::client::{Client, Outcome, RunOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let size: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let (url, _sim, _dir) = match std::env::var("COMFYUI_URL") {
        Ok(url) => (url, None, None),
        Err(_) => {
            let dir = tempfile::tempdir()?;
            let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/comfyui/object_info.json");
            let catalogue = serde_json::from_str(&std::fs::read_to_string(shared)?)?;
            let sim = comfy_sim::start(comfy_sim::Config::new(catalogue, dir.path())).await?;
            (sim.url(), Some(sim), Some(dir))
        }
    };
    let client = Client::new(&url)?;
    let stats = client.system_stats().await?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let seed = std::process::id() as u64;
    for i in 0..runs {
        let color = (seed * 7919 + i as u64 * 104_729) % 0xFF_FFFF;
        let graph = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "latency"}}
        });
        let t = Instant::now();
        let report = client
            .run_prompt(&graph, &RunOptions::default(), &mut |_| {})
            .await?;
        times.push(t.elapsed());
        if report.outcome != Outcome::Success || report.files.len() != 1 {
            return Err(format!("run {i} did not succeed: {:?}", report.outcome).into());
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{runs} runs of the {size}x{size} no-model graph against {url} (ComfyUI {}): median {:.1} ms, min {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        stats.system.comfyui_version,
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[(runs * 9 / 10).min(runs - 1)]),
        ms(times[runs - 1])
    );
    Ok(())
}
