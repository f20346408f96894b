//! Scenario 3, the idle gap at ComfyUI between consecutive prompts: from the simulator's
//! timeline, each prompt's end to the next prompt's start, with `--pipeline 2`. One-job files
//! are the case the goal is about; a JSONL of the same jobs is shown beside it for reference.

use std::time::{Duration, Instant};

use comfy_sim::Timing;

use super::Res;
use super::plain::solid_color_inputs;
use super::report::{Goal, Table, percentile, secs};
use super::rig::{Ctx, prompt_spans, start_sim};

pub struct Params {
    pub jobs: usize,
    pub exec_ms: u64,
}

struct Gaps {
    /// Milliseconds, one per pair of consecutive prompts.
    gaps: Vec<f64>,
    time: Duration,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let mut table = Table::new(
        format!(
            "3. idle gap at ComfyUI between prompts: {} solid-color jobs of {} ms, --pipeline 2",
            p.jobs, p.exec_ms
        ),
        &["layout", "gaps", "median ms", "p90 ms", "max ms", "time s"],
    );
    let mut goals = Vec::new();
    for files in [true, false] {
        let name = if files {
            "one-job files"
        } else {
            "one JSONL (reference)"
        };
        match one(ctx, p, files).await {
            Ok(g) => {
                let median = percentile(&g.gaps, 50.0);
                table.row(vec![
                    name.into(),
                    g.gaps.len().to_string(),
                    format!("{median:.3}"),
                    format!("{:.3}", percentile(&g.gaps, 90.0)),
                    format!("{:.3}", percentile(&g.gaps, 100.0)),
                    secs(g.time),
                ]);
                if files {
                    goals.push(Goal::plain(
                        "3 idle gap",
                        format!(
                            "one-job files: median gap {median:.3} ms, p90 {:.3} ms (goal median < 1 ms)",
                            percentile(&g.gaps, 90.0)
                        ),
                        median < 1.0,
                    ));
                }
            }
            Err(e) => {
                table.failed_row(name, &e.to_string());
                if files {
                    goals.push(Goal::missing("3 idle gap", "median gap", &e.to_string()));
                }
            }
        }
    }
    table.print();
    Ok(goals)
}

async fn one(ctx: &Ctx, p: &Params, files: bool) -> Res<Gaps> {
    let run = ctx.run_dir(if files { "gap-files" } else { "gap-jsonl" })?;
    let timing = Timing {
        class_ms: [("ImageInvert".to_owned(), p.exec_ms)].into(),
        ..Timing::default()
    };
    let (sim, _) = start_sim(&run.root.join("sim"), timing).await?;
    let mut daemon = run.spawn(ctx, &sim.url(), 0, &["--pipeline".into(), "2".into()])?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;
    let lines: Vec<String> = (0..p.jobs)
        .map(|i| {
            serde_json::json!({
                "workflow": "solid-color",
                "id": format!("g{i:05}"),
                "inputs": solid_color_inputs(i, 3),
            })
            .to_string()
        })
        .collect();
    let t0 = Instant::now();
    let want = if files {
        for (i, line) in lines.iter().enumerate() {
            run.drop_job(&format!("g{i:05}.json"), line)?;
        }
        lines.len()
    } else {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        run.drop_job("gap.jsonl", &text)?;
        1
    };
    let mut daemons = [daemon];
    let end = run.wait_finished(want, &mut daemons, ctx.timeout).await?;
    let [daemon] = daemons;
    daemon.stop().await;
    let spans = prompt_spans(&sim.timeline());
    let gaps = spans
        .windows(2)
        .map(|w| w[1].1.saturating_sub(w[0].2).as_secs_f64() * 1000.0)
        .collect();
    Ok(Gaps {
        gaps,
        time: end - t0,
    })
}
