//! Scenario 7, the memory policy (issue 8): txt2img jobs over three checkpoints that do not all
//! fit on the simulated GPU (by default 10, 12 and 14 GiB on 24 GiB, 2 GiB of working memory per
//! prompt; the simulator evicts nothing on its own, as ComfyUI's "OOM on the second run"), in a
//! seeded random order, as one JSONL. Run in arrival order (`[scheduler] mode = "fifo"`, so the
//! checkpoints switch often) and with the default fair scheduler (model affinity groups them),
//! each with the daemon's memory policy on (`--free-below 25%`, the default) and off
//! (`--free-below off`: an out-of-memory error still frees and retries once).
//!
//! Counted where it happens: out-of-memory errors and `/free` calls at the simulator; OOM
//! retries and frees as the manifests (and the error report's failures) record them.

use std::time::{Duration, Instant};

use comfy_sim::{Memory, Timing};

use super::Res;
use super::report::{Goal, Table, secs};
use super::rig::{CHECKPOINTS, Ctx, interventions, model_loads, start_sim_with};

const GIB: u64 = 1 << 30;

pub struct Params {
    pub jobs: usize,
    pub vram_gib: u64,
    /// The three checkpoints' sizes, in the order of [`CHECKPOINTS`].
    pub checkpoint_gib: [u64; 3],
    pub working_gib: u64,
    pub load_ms: u64,
    pub sample_ms: u64,
    pub seed: u64,
}

struct Measured {
    done: usize,
    failed: usize,
    ooms: u64,
    free_calls: usize,
    oom_retries: usize,
    frees: usize,
    loads: usize,
    time: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Sched {
    Fifo,
    Fair,
}

impl Sched {
    fn name(self) -> &'static str {
        match self {
            Sched::Fifo => "fifo",
            Sched::Fair => "fair (default)",
        }
    }
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let mut checkpoints: Vec<&str> = (0..p.jobs).map(|i| CHECKPOINTS[i % 3]).collect();
    fastrand::Rng::with_seed(p.seed).shuffle(&mut checkpoints);
    let switches = checkpoints.windows(2).filter(|w| w[0] != w[1]).count();
    let ids: Vec<String> = (0..p.jobs).map(|i| format!("m{i:05}")).collect();
    let jsonl: String = checkpoints
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (c, id))| {
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
            format!("{line}\n")
        })
        .collect();
    let memory = Memory {
        vram_bytes: p.vram_gib * GIB,
        model_bytes: CHECKPOINTS
            .iter()
            .zip(p.checkpoint_gib)
            .map(|(c, g)| ((*c).to_owned(), g * GIB))
            .collect(),
        default_model_bytes: 0,
        leak_bytes_per_prompt: 0,
        working_bytes: p.working_gib * GIB,
    };
    let timing = Timing {
        node_ms: 5,
        class_ms: [("KSampler".to_owned(), p.sample_ms)].into(),
        model_load_ms: p.load_ms,
        ..Timing::default()
    };
    let [a, b, c] = p.checkpoint_gib;
    let mut table = Table::new(
        format!(
            "7. memory policy: {} txt2img jobs over checkpoints of {a}, {b} and {c} GiB on a {} GiB GPU, {} GiB working memory (seed {}, {switches} switches in arrival order), load {} ms, sampling {} ms",
            p.jobs, p.vram_gib, p.working_gib, p.seed, p.load_ms, p.sample_ms
        ),
        &[
            "scheduler",
            "policy",
            "done",
            "failed",
            "OOMs",
            "/free calls",
            "OOM retries",
            "frees",
            "loads",
            "time s",
            "vs off",
        ],
    );
    let mut goals = Vec::new();
    for sched in [Sched::Fifo, Sched::Fair] {
        let mut off: Option<Measured> = None;
        let mut on: Option<Measured> = None;
        // Off first: the row with the policy on is then shown against it.
        for policy_on in [false, true] {
            let policy = if policy_on { "on (25%)" } else { "off" };
            match one(ctx, sched, policy_on, &ids, &jsonl, &memory, &timing).await {
                Ok(m) => {
                    let vs = match (&off, policy_on) {
                        (Some(o), true) => {
                            format!("{:.2}x", m.time.as_secs_f64() / o.time.as_secs_f64())
                        }
                        _ => "1.00x".into(),
                    };
                    table.row(vec![
                        sched.name().into(),
                        policy.into(),
                        m.done.to_string(),
                        m.failed.to_string(),
                        m.ooms.to_string(),
                        m.free_calls.to_string(),
                        m.oom_retries.to_string(),
                        m.frees.to_string(),
                        m.loads.to_string(),
                        secs(m.time),
                        vs,
                    ]);
                    if policy_on {
                        on = Some(m);
                    } else {
                        off = Some(m);
                    }
                }
                Err(e) => table.failed_row(&format!("{} / {policy}", sched.name()), &e.to_string()),
            }
        }
        let label = format!("{}: policy on / off", sched.name());
        match (&on, &off) {
            (Some(on), Some(off)) => {
                table.note(format!(
                    "{}: OOMs {}, /free calls {}, time {}",
                    label,
                    ratio(on.ooms as f64, off.ooms as f64),
                    ratio(on.free_calls as f64, off.free_calls as f64),
                    ratio(on.time.as_secs_f64(), off.time.as_secs_f64()),
                ));
                goals.push(Goal::plain(
                    "7 memory",
                    format!(
                        "{}: OOMs with the policy {} vs {} without, {} of {} jobs failed (goal fewer OOMs, none failed)",
                        sched.name(),
                        on.ooms,
                        off.ooms,
                        on.failed,
                        p.jobs
                    ),
                    (on.ooms < off.ooms || off.ooms == 0) && on.failed == 0,
                ));
                goals.push(Goal::ratio(
                    "7 memory",
                    &format!("{label}: time"),
                    on.time.as_secs_f64(),
                    off.time.as_secs_f64(),
                    1.0,
                    " s",
                ));
            }
            _ => goals.push(Goal::missing(
                "7 memory",
                &label,
                "a run failed (see the table)",
            )),
        }
    }
    table.note(
        "OOMs, /free calls and model loads as the simulator counted them; OOM retries and frees as the manifests record them",
    );
    table.print();
    Ok(goals)
}

/// `a / b = r x`, or `a / 0` when there is nothing to divide by.
fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        format!("{a} / {b}")
    } else {
        format!("{a:.0} / {b:.0} = {:.2}x", a / b)
    }
}

async fn one(
    ctx: &Ctx,
    sched: Sched,
    policy_on: bool,
    ids: &[String],
    jsonl: &str,
    memory: &Memory,
    timing: &Timing,
) -> Res<Measured> {
    if !ctx.comfyd.supports("--free-below") {
        return Err("needs the new daemon: this comfyd has no `--free-below`".into());
    }
    let tag = format!(
        "memory-{}-{}",
        if sched == Sched::Fifo { "fifo" } else { "fair" },
        if policy_on { "on" } else { "off" }
    );
    let run = ctx.run_dir(&tag)?;
    let (sim, _) =
        start_sim_with(&run.root.join("sim"), timing.clone(), Some(memory.clone())).await?;
    let mut args = vec![
        "--free-below".to_owned(),
        if policy_on { "25%" } else { "off" }.to_owned(),
    ];
    if sched == Sched::Fifo {
        let path = run.root.join("comfyd.toml");
        std::fs::write(&path, "[scheduler]\nmode = \"fifo\"\n")?;
        args.extend(["--config".to_owned(), path.display().to_string()]);
    }
    let mut daemon = run.spawn(ctx, &sim.url(), 0, &args)?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    run.drop_job("memory.jsonl", jsonl)?;
    let mut daemons = [daemon];
    let end = run.wait_finished(1, &mut daemons, ctx.timeout).await?;
    let [daemon] = daemons;
    daemon.stop().await;
    let done = run.manifests(ids.iter().map(String::as_str));
    let kinds = interventions(&run, ids);
    Ok(Measured {
        done,
        failed: ids.len() - done,
        ooms: sim.out_of_memory_count(),
        free_calls: sim.free_calls().len(),
        oom_retries: kinds.get("oom-retry").copied().unwrap_or(0),
        frees: kinds.get("free").copied().unwrap_or(0),
        loads: model_loads(&sim.timeline()),
        time: end - t0,
    })
}
