//! Scenario 8, a leaking ComfyUI (issue 8): the `comfy-sim` binary with a GPU memory model that
//! leaks with every prompt, so that after some prompts even one checkpoint and a prompt's
//! working memory no longer fit. Without supervision (the benchmark starts the simulator, comfyd
//! only talks to it) every job from then on runs out of memory, is freed and retried once, and
//! fails. With supervision (`--comfy-cmd`, comfyd starts the same command) the daemon's memory
//! policy sees memory not coming back after `/free` and has the supervisor restart ComfyUI
//! (at most once a minute), which clears the leak. Measured: jobs finished per hour (done jobs
//! over the wall time), failed jobs, restarts.
//!
//! Restarts are counted where they happen: starts of the simulator in the supervised log, less
//! the first; the `comfyui-restart` notes in manifests are shown beside them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Res;
use super::report::{Goal, Table, secs};
use super::rig::{CHECKPOINTS, Ctx, RunDir, interventions};

pub struct Params {
    pub jobs: usize,
    pub vram_mb: u64,
    pub model_mb: u64,
    pub working_mb: u64,
    pub leak_mb: u64,
    pub node_ms: u64,
    pub load_ms: u64,
    /// The `comfy-sim` binary.
    pub sim: PathBuf,
}

impl Params {
    /// Prompts a fresh simulator runs before the next one no longer fits: the checkpoint, the
    /// leak so far and the working memory must fit in the device.
    fn prompts_per_life(&self) -> u64 {
        match self.vram_mb.checked_sub(self.model_mb + self.working_mb) {
            Some(room) if self.leak_mb > 0 => room / self.leak_mb + 1,
            Some(_) => u64::MAX,
            None => 0,
        }
    }
}

struct Measured {
    done: usize,
    failed: usize,
    restarts: Option<usize>,
    noted_restarts: usize,
    time: Duration,
}

impl Measured {
    fn per_hour(&self) -> f64 {
        self.done as f64 * 3600.0 / self.time.as_secs_f64()
    }
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let per_life = p.prompts_per_life();
    let mut table = Table::new(
        format!(
            "8. leaking ComfyUI: {} txt2img jobs on the comfy-sim binary, {} MiB GPU, a {} MiB checkpoint, {} MiB working memory, {} MiB leaked per prompt ({} prompts fit per life), nodes {} ms, load {} ms",
            p.jobs,
            p.vram_mb,
            p.model_mb,
            p.working_mb,
            p.leak_mb,
            if per_life == u64::MAX {
                "all".to_owned()
            } else {
                per_life.to_string()
            },
            p.node_ms,
            p.load_ms
        ),
        &[
            "ComfyUI",
            "done",
            "failed",
            "restarts",
            "noted in manifests",
            "time s",
            "jobs/hour",
            "vs unsupervised",
        ],
    );
    let mut goals = Vec::new();
    let mut base: Option<f64> = None;
    for supervised in [false, true] {
        let name = if supervised {
            "supervised (--comfy-cmd)"
        } else {
            "unsupervised"
        };
        match one(ctx, p, supervised).await {
            Ok(m) => {
                let rate = m.per_hour();
                let vs = match base {
                    Some(b) if b > 0.0 => format!("{:.2}x", rate / b),
                    Some(_) => "-".into(),
                    None => "1.00x".into(),
                };
                table.row(vec![
                    name.into(),
                    m.done.to_string(),
                    m.failed.to_string(),
                    m.restarts.map_or_else(|| "-".into(), |r| r.to_string()),
                    m.noted_restarts.to_string(),
                    secs(m.time),
                    format!("{rate:.0}"),
                    vs,
                ]);
                if supervised && m.failed > 0 && m.restarts.is_some_and(|r| r > 0) {
                    let starts = m.restarts.unwrap_or(0) + 1;
                    table.note(format!(
                        "supervised: {} jobs failed although ComfyUI was restarted: comfyd restarts it for memory at most once a minute, and this run took {:.0} s over {starts} starts of the simulator",
                        m.failed,
                        m.time.as_secs_f64()
                    ));
                }
                if supervised {
                    match base {
                        Some(b) => goals.push(Goal::plain(
                            "8 leak",
                            format!(
                                "supervised: {rate:.0} jobs/hour vs {b:.0} unsupervised, {} of {} failed, {} restarts (goal more jobs/hour, none failed)",
                                m.failed,
                                p.jobs,
                                m.restarts.unwrap_or(0)
                            ),
                            rate > b && m.failed == 0,
                        )),
                        None => goals.push(Goal::missing(
                            "8 leak",
                            "supervised vs unsupervised",
                            "the unsupervised run failed",
                        )),
                    }
                } else {
                    base = Some(rate);
                }
            }
            Err(e) => {
                table.failed_row(name, &e.to_string());
                if supervised {
                    goals.push(Goal::missing("8 leak", name, &e.to_string()));
                }
            }
        }
    }
    table.note(
        "jobs/hour = done jobs / wall time; restarts = starts of the simulator less the first (none without supervision)",
    );
    table.print();
    Ok(goals)
}

async fn one(ctx: &Ctx, p: &Params, supervised: bool) -> Res<Measured> {
    if supervised && !ctx.comfyd.supports("--comfy-cmd") {
        return Err("needs the new daemon: this comfyd has no `--comfy-cmd`".into());
    }
    let run = ctx.run_dir(if supervised {
        "leak-supervised"
    } else {
        "leak-unsupervised"
    })?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let command = sim_command(ctx, p, &run, port);
    let mut sim = None;
    let mut args = Vec::new();
    if supervised {
        args = vec!["--comfy-cmd".to_owned(), shell_join(&command)];
    } else {
        let s = SimProcess::start(&command, &run.root.join("comfy-sim.log"))?;
        sim = Some(s);
        if let Some(s) = sim.as_mut() {
            s.answering(port, Duration::from_secs(30)).await?;
        }
    }
    let ids: Vec<String> = (0..p.jobs).map(|i| format!("l{i:05}")).collect();
    let jsonl: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let line = serde_json::json!({
                "workflow": "txt2img",
                "id": id,
                "inputs": {
                    "prompt": "a benchmark",
                    "seed": i,
                    "steps": 1,
                    "width": 64,
                    "height": 64,
                    "checkpoint": CHECKPOINTS[0],
                },
            });
            format!("{line}\n")
        })
        .collect();
    let mut daemon = run.spawn(ctx, &url, 0, &args)?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    run.drop_job("leak.jsonl", &jsonl)?;
    let mut daemons = [daemon];
    let end = run.wait_finished(1, &mut daemons, ctx.timeout).await;
    let [daemon] = daemons;
    daemon.stop().await;
    if let Some(s) = sim {
        s.stop();
    }
    let end = end?;
    let done = run.manifests(ids.iter().map(String::as_str));
    let restarts = if supervised {
        let log = run.root.join("logs").join("comfyui-gpu-0.log");
        let text = std::fs::read_to_string(&log)
            .map_err(|e| format!("no supervised log at {}: {e}", log.display()))?;
        let starts = text.matches("comfy-sim listening").count();
        Some(starts.saturating_sub(1))
    } else {
        None
    };
    Ok(Measured {
        done,
        failed: ids.len() - done,
        restarts,
        noted_restarts: interventions(&run, &ids)
            .get("comfyui-restart")
            .copied()
            .unwrap_or(0),
        time: end - t0,
    })
}

/// The simulator's command line: the scenario's memory model and timing, the examples'
/// catalogue, its files under the run's folder.
fn sim_command(ctx: &Ctx, p: &Params, run: &RunDir, port: u16) -> Vec<String> {
    let mut c: Vec<String> = vec![p.sim.display().to_string()];
    let mut arg = |flag: &str, value: String| {
        c.push(flag.to_owned());
        c.push(value);
    };
    arg("--port", port.to_string());
    arg(
        "--catalogue",
        ctx.repo
            .join("nodes")
            .join("object_info.json")
            .display()
            .to_string(),
    );
    arg("--root", run.root.join("sim").display().to_string());
    arg("--node-ms", p.node_ms.to_string());
    arg("--model-load-ms", p.load_ms.to_string());
    arg("--model", format!("checkpoints/{}", CHECKPOINTS[0]));
    arg("--vram-mb", p.vram_mb.to_string());
    arg("--default-model-mb", p.model_mb.to_string());
    arg("--working-mb", p.working_mb.to_string());
    arg("--leak-mb", p.leak_mb.to_string());
    c
}

/// A port nobody listens on now (the simulator binds it a moment later).
fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One command line as a shell would read it back: words with anything but plain characters
/// in single quotes.
fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `comfy-sim` binary started by the benchmark; killed when dropped.
struct SimProcess {
    child: Child,
    log: PathBuf,
}

impl SimProcess {
    fn start(command: &[String], log: &Path) -> Res<SimProcess> {
        let file = std::fs::File::create(log)?;
        let (program, args) = command.split_first().ok_or("empty simulator command")?;
        let child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        Ok(SimProcess {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits until the simulator accepts connections on `port`.
    async fn answering(&mut self, port: u16, timeout: Duration) -> Res<()> {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("comfy-sim exited with {status}:\n{text}").into());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "comfy-sim did not listen on port {port} within {} s",
                    timeout.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
