//! The benchmarks of issues 7 and 8, side by side in one run: the real `comfyd` binary (child
//! processes) against simulators started in this process, each scenario's figures in a table
//! with ratios against its baseline, then a summary against the issues' goals.
//!
//!     cargo build --release -p comfyd
//!     cargo run --release -p comfyd --example bench_core -- [SCENARIO...] [--quick]
//!
//! Scenarios (all when none is named): `affinity` (1), `overhead` (2), `gap` (3),
//! `starvation` (4), `shared` (5), `inbox` (6), `memory` (7), `leak` (8); numbers work too. `--quick` shrinks every size
//! (a run of a minute or so in release); each size has its own flag (`--help`).
//! The daemon is `comfyd` beside this example's executable (`target/<profile>/comfyd`) unless
//! `--comfyd PATH` says otherwise, and `leak` runs the `comfy-sim` binary beside it (build both:
//! `cargo build --release -p comfyd -p comfy-sim`); temporary folders go under `$TMPDIR`.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench::report::{Goal, print_summary};
use bench::rig::{Comfyd, Ctx, locate_sim, workflow_repo};
use bench::{Res, affinity, gap, inbox, leak, memory, overhead, shared_dir, starvation};
use clap::Parser;

/// Issues 7 and 8's benchmarks: the real comfyd binary against in-process simulators.
#[derive(Parser)]
#[command(name = "bench_core", max_term_width = 100)]
struct Args {
    /// Scenarios to run: affinity, overhead, gap, starvation, shared, inbox, memory, leak
    /// (or 1-8) [default: all].
    scenarios: Vec<String>,
    /// Small sizes everywhere, for a run of a minute or so.
    #[arg(long)]
    quick: bool,
    /// The comfyd binary [default: target/<profile>/comfyd beside this example].
    #[arg(long, value_name = "PATH")]
    comfyd: Option<PathBuf>,
    /// The comfy-sim binary scenario 8 runs [default: comfy-sim beside the comfyd binary].
    #[arg(long, value_name = "PATH")]
    comfy_sim: Option<PathBuf>,
    /// Seed of scenarios 1 and 7's job order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Longest any one run may take, in seconds [default: 600, quick 120].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Passed to every daemon as `--settle-ms` when it knows that flag.
    #[arg(long, value_name = "MS")]
    settle_ms: Option<u64>,
    /// Keep the temporary folder (job directories, outputs, daemon logs) and print its path.
    #[arg(long)]
    keep: bool,

    /// 1: jobs over three checkpoints [default: 300, quick 45].
    #[arg(long, value_name = "N")]
    affinity_jobs: Option<usize>,
    /// 1: model load time in ms [default: 200, quick 100].
    #[arg(long, value_name = "MS")]
    load_ms: Option<u64>,
    /// 1: sampling (KSampler) time per job in ms [default: 60].
    #[arg(long, value_name = "MS")]
    sample_ms: Option<u64>,
    /// 1: one file every this many ms in the trickling layout [default: 50].
    #[arg(long, value_name = "MS")]
    trickle_ms: Option<u64>,
    /// 2: jobs per way [default: 100, quick 40].
    #[arg(long, value_name = "N")]
    overhead_jobs: Option<usize>,
    /// 3: jobs [default: 100, quick 40].
    #[arg(long, value_name = "N")]
    gap_jobs: Option<usize>,
    /// 3: execution time per job in ms [default: 20].
    #[arg(long, value_name = "MS")]
    gap_exec_ms: Option<u64>,
    /// 4: video jobs in the backlog [default: 10, quick 4].
    #[arg(long, value_name = "N")]
    videos: Option<usize>,
    /// 4: image jobs trickling in [default: 20, quick 8].
    #[arg(long, value_name = "N")]
    images: Option<usize>,
    /// 4: a video job's time in ms (30 s scaled down) [default: 1500, quick 600].
    #[arg(long, value_name = "MS")]
    video_ms: Option<u64>,
    /// 4: an image job's time in ms (2 s scaled down) [default: 100, quick 40].
    #[arg(long, value_name = "MS")]
    image_ms: Option<u64>,
    /// 4: one image job every this many ms [default: 250, quick 150].
    #[arg(long, value_name = "MS")]
    image_every_ms: Option<u64>,
    /// 5: daemons on the one directory [default: 4].
    #[arg(long, value_name = "N")]
    daemons: Option<u32>,
    /// 5: lines of the JSONL [default: 2000, quick 400].
    #[arg(long, value_name = "N")]
    shared_jobs: Option<usize>,
    /// 6: files in the inbox [default: 100000, quick 10000].
    #[arg(long, value_name = "N")]
    inbox_files: Option<usize>,
    /// 6: length of each idle window in seconds [default: 3, quick 2].
    #[arg(long, value_name = "SECONDS")]
    idle_secs: Option<u64>,
    /// 7: jobs over three checkpoints [default: 60, quick 18].
    #[arg(long, value_name = "N")]
    memory_jobs: Option<usize>,
    /// 7: the simulated GPU's memory in GiB [default: 24].
    #[arg(long, value_name = "GIB")]
    vram_gib: Option<u64>,
    /// 7: the three checkpoints' sizes in GiB, comma-separated [default: 10,12,14].
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    checkpoint_gib: Option<Vec<u64>>,
    /// 7: working memory a prompt holds while it runs, in GiB [default: 2].
    #[arg(long, value_name = "GIB")]
    working_gib: Option<u64>,
    /// 7: model load time in ms [default: 300, quick 150].
    #[arg(long, value_name = "MS")]
    memory_load_ms: Option<u64>,
    /// 7: sampling (KSampler) time per job in ms [default: 100, quick 50].
    #[arg(long, value_name = "MS")]
    memory_sample_ms: Option<u64>,
    /// 8: jobs, all on one checkpoint [default: 50, quick 24].
    #[arg(long, value_name = "N")]
    leak_jobs: Option<usize>,
    /// 8: VRAM leaked by every prompt, in MiB [default: 1024].
    #[arg(long, value_name = "MB")]
    leak_mb: Option<u64>,
    /// 8: the simulated GPU's memory in MiB [default: 24576].
    #[arg(long, value_name = "MB")]
    leak_vram_mb: Option<u64>,
    /// 8: the checkpoint's size in MiB [default: 4096].
    #[arg(long, value_name = "MB")]
    leak_model_mb: Option<u64>,
    /// 8: working memory a prompt holds while it runs, in MiB [default: 2048].
    #[arg(long, value_name = "MB")]
    leak_working_mb: Option<u64>,
    /// 8: execution time of every node in ms [default: 20, quick 10].
    #[arg(long, value_name = "MS")]
    leak_node_ms: Option<u64>,
    /// 8: model load time in ms [default: 300, quick 150].
    #[arg(long, value_name = "MS")]
    leak_load_ms: Option<u64>,
}

const SCENARIOS: [&str; 8] = [
    "affinity",
    "overhead",
    "gap",
    "starvation",
    "shared",
    "inbox",
    "memory",
    "leak",
];

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        // Dropping `run` on SIGINT or SIGTERM kills the daemons and removes the temporary folder.
        tokio::select! {
            r = run(args) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = interrupted() => {
                eprintln!("interrupted: daemons stopped, temporary files removed");
                ExitCode::from(130)
            }
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM (as sent by `timeout` or a CI runner).
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: Args) -> Res<()> {
    let mut chosen = Vec::new();
    for s in &args.scenarios {
        let name = match s.parse::<usize>() {
            Ok(n @ 1..=8) => SCENARIOS[n - 1],
            _ => SCENARIOS
                .iter()
                .find(|n| **n == s.as_str())
                .copied()
                .ok_or_else(|| {
                    format!(
                        "unknown scenario `{s}`\nhelp: pick from {} (or 1-{})",
                        SCENARIOS.join(", "),
                        SCENARIOS.len()
                    )
                })?,
        };
        if !chosen.contains(&name) {
            chosen.push(name);
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.to_vec();
    }
    chosen.sort_by_key(|n| SCENARIOS.iter().position(|s| s == n));

    let q = args.quick;
    let pick = |v: Option<u64>, full: u64, quick: u64| v.unwrap_or(if q { quick } else { full });
    let pick_n =
        |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });

    let comfyd = Comfyd::locate(args.comfyd.clone())?;
    let mut extra = Vec::new();
    if let Some(ms) = args.settle_ms {
        if comfyd.supports("--settle-ms") {
            extra = vec!["--settle-ms".to_owned(), ms.to_string()];
        } else {
            eprintln!("note: this comfyd has no `--settle-ms`; running it with its default");
        }
    }
    let tmp = tempfile::Builder::new().prefix("bench-core-").tempdir()?;
    let repo = workflow_repo(&tmp.path().join("repo"))?;
    let ctx = Ctx {
        comfyd,
        tmp: tmp.path().to_path_buf(),
        repo,
        timeout: Duration::from_secs(pick(args.timeout, 600, 120)),
        extra,
    };
    println!("comfyd: {}", ctx.comfyd.describe());
    if args.comfyd.is_none()
        && let Some(warning) = ctx.comfyd.staleness()
    {
        eprintln!("{warning}");
    }
    println!(
        "scenarios: {}{}",
        chosen.join(", "),
        if q { " (quick sizes)" } else { "" }
    );
    if cfg!(debug_assertions) {
        println!("note: this is a debug build; figures for the record come from --release");
    }

    let mut goals: Vec<Goal> = Vec::new();
    for name in &chosen {
        let g = match *name {
            "affinity" => {
                affinity::run(
                    &ctx,
                    &affinity::Params {
                        jobs: pick_n(args.affinity_jobs, 300, 45),
                        load_ms: pick(args.load_ms, 200, 100),
                        sample_ms: pick(args.sample_ms, 60, 60),
                        trickle_ms: pick(args.trickle_ms, 50, 50),
                        seed: args.seed,
                    },
                )
                .await?
            }
            "overhead" => {
                overhead::run(
                    &ctx,
                    &overhead::Params {
                        jobs: pick_n(args.overhead_jobs, 100, 40),
                    },
                )
                .await?
            }
            "gap" => {
                gap::run(
                    &ctx,
                    &gap::Params {
                        jobs: pick_n(args.gap_jobs, 100, 40),
                        exec_ms: pick(args.gap_exec_ms, 20, 20),
                    },
                )
                .await?
            }
            "starvation" => {
                starvation::run(
                    &ctx,
                    &starvation::Params {
                        videos: pick_n(args.videos, 10, 4),
                        images: pick_n(args.images, 20, 8),
                        video_ms: pick(args.video_ms, 1500, 600),
                        image_ms: pick(args.image_ms, 100, 40),
                        every_ms: pick(args.image_every_ms, 250, 150),
                    },
                )
                .await?
            }
            "shared" => {
                shared_dir::run(
                    &ctx,
                    &shared_dir::Params {
                        daemons: args.daemons.unwrap_or(4).max(1),
                        jobs: pick_n(args.shared_jobs, 2000, 400),
                    },
                )
                .await?
            }
            "memory" => {
                let checkpoint_gib = match args.checkpoint_gib.as_deref() {
                    None => [10, 12, 14],
                    Some(&[a, b, c]) => [a, b, c],
                    Some(_) => return Err("--checkpoint-gib takes three sizes: A,B,C".into()),
                };
                memory::run(
                    &ctx,
                    &memory::Params {
                        jobs: pick_n(args.memory_jobs, 60, 18).max(2),
                        vram_gib: args.vram_gib.unwrap_or(24).max(1),
                        checkpoint_gib,
                        working_gib: args.working_gib.unwrap_or(2),
                        load_ms: pick(args.memory_load_ms, 300, 150),
                        sample_ms: pick(args.memory_sample_ms, 100, 50),
                        seed: args.seed,
                    },
                )
                .await?
            }
            "leak" => {
                let (sim, warning) = locate_sim(args.comfy_sim.clone(), &ctx.comfyd)?;
                if let Some(w) = warning {
                    eprintln!("{w}");
                }
                leak::run(
                    &ctx,
                    &leak::Params {
                        jobs: pick_n(args.leak_jobs, 50, 24).max(1),
                        vram_mb: args.leak_vram_mb.unwrap_or(24_576),
                        model_mb: args.leak_model_mb.unwrap_or(4096),
                        working_mb: args.leak_working_mb.unwrap_or(2048),
                        leak_mb: args.leak_mb.unwrap_or(1024),
                        node_ms: pick(args.leak_node_ms, 20, 10),
                        load_ms: pick(args.leak_load_ms, 300, 150),
                        sim,
                    },
                )
                .await?
            }
            _ => {
                inbox::run(
                    &ctx,
                    &inbox::Params {
                        files: pick_n(args.inbox_files, 100_000, 10_000).max(1),
                        idle_secs: pick(args.idle_secs, 3, 2).max(1),
                    },
                )
                .await?
            }
        };
        goals.extend(g);
    }
    print_summary(&goals);
    if args.keep {
        let kept = tmp.keep();
        println!("\nkept: {}", kept.display());
    }
    Ok(())
}
