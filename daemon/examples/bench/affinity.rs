//! Scenario 1, model affinity across files: the same jobs over three checkpoints, in a seeded
//! random order, as one JSONL, as one file per job dropped at once, and as one file per job
//! trickling in. Counts the simulator's model loads against the minimum (one per checkpoint)
//! and compares each layout's total time with the JSONL's.

use std::time::{Duration, Instant};

use comfy_sim::Timing;

use super::Res;
use super::report::{Goal, Table, secs};
use super::rig::{CHECKPOINTS, Ctx, model_loads};

pub struct Params {
    pub jobs: usize,
    pub load_ms: u64,
    pub sample_ms: u64,
    pub trickle_ms: u64,
    pub seed: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Jsonl,
    Files,
    Trickle,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Jsonl => "one JSONL",
            Layout::Files => "one-job files",
            Layout::Trickle => "files trickling in",
        }
    }
}

struct Measured {
    time: Duration,
    loads: usize,
    manifests: usize,
    failed_files: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let mut checkpoints: Vec<&str> = (0..p.jobs).map(|i| CHECKPOINTS[i % 3]).collect();
    fastrand::Rng::with_seed(p.seed).shuffle(&mut checkpoints);
    let jobs: Vec<(String, String)> = checkpoints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = format!("a{i:05}");
            let line = serde_json::json!({
                "workflow": "txt2img",
                "id": id,
                "inputs": {
                    "prompt": "a benchmark",
                    "seed": i,
                    "steps": 1,
                    "width": 64,
                    "height": 64,
                    "checkpoint": c,
                },
            });
            (id, line.to_string())
        })
        .collect();
    let min_loads = checkpoints
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let timing = Timing {
        node_ms: 1,
        class_ms: [("KSampler".to_owned(), p.sample_ms)].into(),
        model_load_ms: p.load_ms,
        ..Timing::default()
    };

    let mut table = Table::new(
        format!(
            "1. model affinity: {} txt2img jobs over {min_loads} checkpoints (seed {}), load {} ms, sampling {} ms, trickle every {} ms",
            p.jobs, p.seed, p.load_ms, p.sample_ms, p.trickle_ms
        ),
        &[
            "layout",
            "time s",
            "vs JSONL",
            "loads",
            "vs min",
            "manifests",
            "failed files",
        ],
    );
    let mut goals = Vec::new();
    let mut baseline: Option<Duration> = None;
    let mut trickled: Option<Duration> = None;
    for layout in [Layout::Jsonl, Layout::Files, Layout::Trickle] {
        match one(ctx, p, layout, &jobs, timing.clone()).await {
            Ok(m) => {
                let vs = baseline.map(|b| m.time.as_secs_f64() / b.as_secs_f64());
                table.row(vec![
                    layout.name().into(),
                    secs(m.time),
                    vs.map(|r| format!("{r:.2}x"))
                        .unwrap_or_else(|| "1.00x".into()),
                    m.loads.to_string(),
                    format!("{:.2}x", m.loads as f64 / min_loads as f64),
                    format!("{}/{}", m.manifests, jobs.len()),
                    m.failed_files.to_string(),
                ]);
                goals.push(Goal::ratio(
                    "1 affinity",
                    &format!("{}: loads", layout.name()),
                    m.loads as f64,
                    min_loads as f64,
                    1.2,
                    "",
                ));
                if layout == Layout::Trickle {
                    trickled = Some(m.time);
                }
                match (layout, baseline) {
                    (Layout::Jsonl, _) => baseline = Some(m.time),
                    (_, Some(b)) => goals.push(Goal::ratio(
                        "1 affinity",
                        &format!("{}: time", layout.name()),
                        m.time.as_secs_f64(),
                        b.as_secs_f64(),
                        1.1,
                        " s",
                    )),
                    (_, None) => goals.push(Goal::missing(
                        "1 affinity",
                        &format!("{}: time vs JSONL", layout.name()),
                        "the JSONL run failed",
                    )),
                }
            }
            Err(e) => {
                table.failed_row(layout.name(), &e.to_string());
                goals.push(Goal::missing("1 affinity", layout.name(), &e.to_string()));
            }
        }
    }
    if let (Some(jsonl), Some(trickle)) = (baseline, trickled) {
        let per_job = jsonl.saturating_sub(Duration::from_millis(p.load_ms) * min_loads as u32)
            / jobs.len().max(1) as u32;
        let arrivals: Vec<(Duration, &str)> = checkpoints
            .iter()
            .enumerate()
            .map(|(i, c)| (Duration::from_millis(p.trickle_ms * i as u64), *c))
            .collect();
        let bound = fewest_loads_makespan(&arrivals, per_job, Duration::from_millis(p.load_ms));
        table.note(format!(
            "trickle with {min_loads} loads cannot finish before {} s ({:.2}x the JSONL run; measured {:.2}x): \
             each checkpoint's jobs must then run as one block, and a block cannot end before its \
             last job arrives (per job {} ms, as the JSONL run measured)",
            secs(bound),
            bound.as_secs_f64() / jsonl.as_secs_f64(),
            trickle.as_secs_f64() / jsonl.as_secs_f64(),
            per_job.as_millis(),
        ));
    }
    table.print();
    Ok(goals)
}

/// The shortest time in which jobs arriving at the given times can all run with one model load
/// per checkpoint: every order of the checkpoints as blocks, each job as soon as it has arrived
/// and the one before it has ended. With one load per checkpoint each checkpoint's jobs must
/// run back to back, so no schedule with the fewest loads beats this.
fn fewest_loads_makespan(
    arrivals: &[(Duration, &str)],
    per_job: Duration,
    load: Duration,
) -> Duration {
    let mut blocks: Vec<&str> = arrivals.iter().map(|(_, c)| *c).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut best = Duration::MAX;
    permutations(&mut blocks, 0, &mut |order| {
        let mut t = Duration::ZERO;
        for block in order {
            t += load;
            for (at, _) in arrivals.iter().filter(|(_, c)| c == block) {
                t = t.max(*at) + per_job;
            }
        }
        best = best.min(t);
    });
    best
}

/// Calls `f` with every order of `items[k..]` (Heap-free, by swapping; few items).
fn permutations<'a>(items: &mut Vec<&'a str>, k: usize, f: &mut impl FnMut(&[&'a str])) {
    if k + 1 >= items.len() {
        f(items);
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, f);
        items.swap(k, i);
    }
}

async fn one(
    ctx: &Ctx,
    p: &Params,
    layout: Layout,
    jobs: &[(String, String)],
    timing: Timing,
) -> Res<Measured> {
    let tag = match layout {
        Layout::Jsonl => "jsonl",
        Layout::Files => "files",
        Layout::Trickle => "trickle",
    };
    let run = ctx.run_dir(&format!("affinity-{tag}"))?;
    let (sim, _) = super::rig::start_sim(&run.root.join("sim"), timing).await?;
    let mut daemon = run.spawn(ctx, &sim.url(), 0, &[])?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    let files = match layout {
        Layout::Jsonl => {
            let text: String = jobs.iter().map(|(_, line)| format!("{line}\n")).collect();
            run.drop_job("affinity.jsonl", &text)?;
            1
        }
        Layout::Files => {
            for (id, line) in jobs {
                run.drop_job(&format!("{id}.json"), line)?;
            }
            jobs.len()
        }
        Layout::Trickle => {
            for (i, (id, line)) in jobs.iter().enumerate() {
                let at = t0 + Duration::from_millis(p.trickle_ms * i as u64);
                tokio::time::sleep_until(at.into()).await;
                run.drop_job(&format!("{id}.json"), line)?;
                daemon.check_alive()?;
            }
            jobs.len()
        }
    };
    let mut daemons = [daemon];
    let end = run.wait_finished(files, &mut daemons, ctx.timeout).await?;
    let [daemon] = daemons;
    daemon.stop().await;
    Ok(Measured {
        time: end - t0,
        loads: model_loads(&sim.timeline()),
        manifests: run.manifests(jobs.iter().map(|(id, _)| id.as_str())),
        failed_files: run.finished().1,
    })
}
