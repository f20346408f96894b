//! Scenario 5, several daemons on one job directory: one JSONL of zero-time jobs dropped where
//! every daemon watches, each daemon with its own simulator (its own GPU). Counts how often each
//! job was submitted over all simulators, and each daemon's share (prompts at its simulator,
//! and manifests naming its `gpu.index`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use comfy_sim::Timing;

use super::Res;
use super::plain::solid_color_inputs;
use super::report::{Goal, Table, secs};
use super::rig::{Ctx, jobs_by_prompt, start_sim, stop_all, submissions_per_job};

pub struct Params {
    pub daemons: u32,
    pub jobs: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    match one(ctx, p).await {
        Ok(goals) => Ok(goals),
        Err(e) => {
            let mut table = Table::new(
                format!(
                    "5. {} daemons on one directory, one {}-line JSONL",
                    p.daemons, p.jobs
                ),
                &["run"],
            );
            table.failed_row("all", &e.to_string());
            table.print();
            Ok(vec![Goal::missing(
                "5 shared",
                "shared directory",
                &e.to_string(),
            )])
        }
    }
}

async fn one(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let run = ctx.run_dir("shared")?;
    let mut sims = Vec::new();
    for gpu in 0..p.daemons {
        let (sim, _) = start_sim(&run.root.join(format!("sim-{gpu}")), Timing::default()).await?;
        sims.push(sim);
    }
    let mut daemons = Vec::new();
    for (gpu, sim) in (0..p.daemons).zip(&sims) {
        daemons.push(run.spawn(ctx, &sim.url(), gpu, &[])?);
    }
    for d in &mut daemons {
        d.ready(&run.jobs, Duration::from_secs(30)).await?;
    }
    let ids: Vec<String> = (0..p.jobs).map(|i| format!("s{i:05}")).collect();
    let text: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let line = serde_json::json!({
                "workflow": "solid-color",
                "id": id,
                "inputs": solid_color_inputs(i, 5),
            });
            format!("{line}\n")
        })
        .collect();
    let t0 = Instant::now();
    run.drop_job("shared.jsonl", &text)?;
    let end = run.wait_finished(1, &mut daemons, ctx.timeout).await?;
    stop_all(daemons).await;
    let time = end - t0;

    // Manifests per GPU index.
    let mut by_manifest: BTreeMap<u64, usize> = BTreeMap::new();
    let mut manifests = 0;
    for id in &ids {
        let Ok(text) = std::fs::read_to_string(run.outputs.join(id).join("manifest.json")) else {
            continue;
        };
        manifests += 1;
        let gpu = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|m| m.pointer("/gpu/index").and_then(serde_json::Value::as_u64));
        if let Some(gpu) = gpu {
            *by_manifest.entry(gpu).or_insert(0) += 1;
        }
    }
    let counts = submissions_per_job(&sims);
    let once = ids.iter().filter(|id| counts.get(*id) == Some(&1)).count();
    let never = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    let twice = ids
        .iter()
        .filter(|id| counts.get(*id).is_some_and(|n| *n > 1))
        .count();
    let extra: usize = counts.values().map(|n| n.saturating_sub(1)).sum();

    let even = p.jobs as f64 / f64::from(p.daemons);
    let mut table = Table::new(
        format!(
            "5. {} daemons on one directory, one {}-line JSONL of zero-time jobs: {} s, {:.0} jobs/s",
            p.daemons,
            p.jobs,
            secs(time),
            p.jobs as f64 / time.as_secs_f64()
        ),
        &[
            "daemon",
            "prompts at its ComfyUI",
            "distinct jobs",
            "manifests",
            "share",
            "vs even",
        ],
    );
    let mut worst = 0.0f64;
    for (gpu, sim) in (0..p.daemons).zip(&sims) {
        let jobs = jobs_by_prompt(sim);
        let distinct = jobs
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let deviation = (distinct as f64 - even) / even;
        worst = worst.max(deviation.abs());
        table.row(vec![
            format!("gpu {gpu}"),
            jobs.len().to_string(),
            distinct.to_string(),
            by_manifest
                .get(&u64::from(gpu))
                .copied()
                .unwrap_or(0)
                .to_string(),
            format!("{:.1}%", 100.0 * distinct as f64 / p.jobs as f64),
            format!("{:+.0}%", 100.0 * deviation),
        ]);
    }
    table.note(format!(
        "jobs submitted exactly once: {once}, never: {never}, more than once: {twice} ({extra} extra submissions); manifests: {manifests}/{}",
        p.jobs
    ));
    table.print();
    Ok(vec![
        Goal::plain(
            "5 shared",
            format!(
                "each job once: {once}/{} once, {never} never, {twice} more than once (goal all once)",
                p.jobs
            ),
            once == p.jobs,
        ),
        Goal::plain(
            "5 shared",
            format!(
                "largest share off even: {:.0}% (goal <= 20%)",
                100.0 * worst
            ),
            worst <= 0.2,
        ),
    ])
}
