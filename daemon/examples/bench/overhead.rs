//! Scenario 2, per-job overhead with zero execution time: the same solid-color jobs through a
//! plain websocket loop, through the daemon as one JSONL, and as one file per job.

use std::time::{Duration, Instant};

use comfy_sim::Timing;

use super::Res;
use super::plain::{plain_loop, solid_color_inputs};
use super::report::{Goal, Table, secs};
use super::rig::{Ctx, start_sim};

pub struct Params {
    pub jobs: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let mut table = Table::new(
        format!(
            "2. per-job overhead: {} solid-color jobs (8x8), zero execution time",
            p.jobs
        ),
        &["way", "time s", "ms/job", "vs websocket", "vs JSONL"],
    );
    let ws = websocket(ctx, p).await;
    let jsonl = daemon(ctx, p, false).await;
    let files = daemon(ctx, p, true).await;
    let per_job = |d: Duration| d.as_secs_f64() * 1000.0 / p.jobs as f64;
    let ratio = |a: &Res<Duration>, b: &Res<Duration>| match (a, b) {
        (Ok(a), Ok(b)) => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    for (name, r) in [
        ("websocket loop", &ws),
        ("comfyd, one JSONL", &jsonl),
        ("comfyd, one-job files", &files),
    ] {
        match r {
            Ok(d) => table.row(vec![
                name.into(),
                secs(*d),
                format!("{:.2}", per_job(*d)),
                ratio(r, &ws),
                ratio(r, &jsonl),
            ]),
            Err(e) => table.failed_row(name, &e.to_string()),
        }
    }
    table.note(
        "comfyd's time runs from the drop of the job file(s) to the last in done/, any settle time included",
    );
    table.print();

    let mut goals = Vec::new();
    let mut goal = |label: &str, a: &Res<Duration>, b: &Res<Duration>, max: f64| match (a, b) {
        (Ok(a), Ok(b)) => goals.push(Goal::ratio(
            "2 overhead",
            label,
            per_job(*a),
            per_job(*b),
            max,
            " ms/job",
        )),
        (Err(e), _) | (_, Err(e)) => goals.push(Goal::missing("2 overhead", label, &e.to_string())),
    };
    goal("files vs JSONL", &files, &jsonl, 1.1);
    goal("files vs websocket", &files, &ws, 1.0);
    goal("JSONL vs websocket", &jsonl, &ws, 1.0);
    Ok(goals)
}

async fn websocket(ctx: &Ctx, p: &Params) -> Res<Duration> {
    let run = ctx.run_dir("overhead-websocket")?;
    let (sim, _) = start_sim(&run.root.join("sim"), Timing::default()).await?;
    let url = sim.url();
    let work = plain_loop(&url, &ctx.repo, p.jobs, 1, &run.outputs);
    tokio::time::timeout(ctx.timeout, work)
        .await
        .map_err(|_| format!("timed out after {} s", ctx.timeout.as_secs()))?
}

async fn daemon(ctx: &Ctx, p: &Params, files: bool) -> Res<Duration> {
    let run = ctx.run_dir(if files {
        "overhead-files"
    } else {
        "overhead-jsonl"
    })?;
    let (sim, _) = start_sim(&run.root.join("sim"), Timing::default()).await?;
    let mut daemon = run.spawn(ctx, &sim.url(), 0, &[])?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;
    let lines: Vec<String> = (0..p.jobs)
        .map(|i| {
            serde_json::json!({
                "workflow": "solid-color",
                "id": format!("o{i:05}"),
                "inputs": solid_color_inputs(i, 2),
            })
            .to_string()
        })
        .collect();
    let t0 = Instant::now();
    let want = if files {
        for (i, line) in lines.iter().enumerate() {
            run.drop_job(&format!("o{i:05}.json"), line)?;
        }
        lines.len()
    } else {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        run.drop_job("overhead.jsonl", &text)?;
        1
    };
    let mut daemons = [daemon];
    let end = run.wait_finished(want, &mut daemons, ctx.timeout).await?;
    let [daemon] = daemons;
    daemon.stop().await;
    let (_, failed) = run.finished();
    if failed > 0 {
        return Err(
            format!("{failed} job files ended in failed/ (rerun with --keep to look)").into(),
        );
    }
    Ok(end - t0)
}
