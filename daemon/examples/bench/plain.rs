//! The baseline every daemon figure is held against: a plain loop that renders a job, submits it,
//! waits for it over the websocket and downloads its output, one job after the other. Shared by
//! the `throughput` and `bench_core` examples.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfyd::client::{Client, RunOptions};
use serde_json::{Map, Value};

/// Inputs of the examples' `solid-color` workflow, 8×8, a colour of its own per `(i, salt)`.
pub fn solid_color_inputs(i: usize, salt: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "color".into(),
        ((i * 7919 + salt * 104_729) % 0xFF_FFFF).into(),
    );
    m.insert("width".into(), 8.into());
    m.insert("height".into(), 8.into());
    m
}

/// Runs `jobs` solid-color jobs of the workflow repository `repo` against `url`, one after the
/// other, downloading each output into `out`; returns how long that took.
pub async fn plain_loop(
    url: &str,
    repo: &Path,
    jobs: usize,
    salt: usize,
    out: &Path,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let compiled = comfyc::compile(Arc::new(comfyc::FsLoader::new(repo)));
    let workflow = compiled.find("solid-color")?;
    let client = Client::new(url)?;
    std::fs::create_dir_all(out)?;
    let t = Instant::now();
    for i in 0..jobs {
        let r = workflow
            .resolve(&solid_color_inputs(i, salt), &mut || 0)
            .map_err(|e| format!("{e:?}"))?;
        let mut graph = workflow.render(&r.values).map_err(|e| e.message)?;
        comfyd::runner::prefix_outputs(&mut graph, &format!("loop-{i}"));
        let report = client
            .run_prompt(&graph, &RunOptions::default(), &mut |_| {})
            .await?;
        for f in &report.files {
            client
                .download(&f.file, &out.join(format!("loop-{i}.png")))
                .await?;
        }
    }
    Ok(t.elapsed())
}
