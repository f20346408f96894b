//! Scenario 4, starvation: a backlog of long `video` jobs (the `clip` workflow, class `video`)
//! dropped at once, then short `image` jobs (solid-color) trickling in. The worst wait of an
//! image job (from its drop to its start at ComfyUI) with the daemon's default, with
//! `[scheduler] mode = "fifo"`, and with fair classes (`image` weight 4, `video` weight 1).
//!
//! A daemon that refuses the `comfyd.toml` keys (the daemon before issue 7) gets its row marked
//! as needing the new daemon.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comfy_sim::{TimelineEvent, Timing};

use super::Res;
use super::plain::solid_color_inputs;
use super::report::{Goal, Table, secs};
use super::rig::{Ctx, jobs_by_prompt, start_sim};

pub struct Params {
    pub videos: usize,
    pub images: usize,
    pub video_ms: u64,
    pub image_ms: u64,
    pub every_ms: u64,
}

struct Waits {
    worst_image: Duration,
    mean_image: Duration,
    worst_video: Duration,
    time: Duration,
    failed_files: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    // An image job may wait about two videos long.
    let max_wait = (2 * p.video_ms).div_ceil(1000).max(1);
    let fair = format!(
        "[scheduler]\nmode = \"fair\"\n\n[classes.image]\nweight = 4\nmax_wait = {max_wait}\n\n[classes.video]\nweight = 1\n"
    );
    let modes: [(&str, Option<String>); 3] = [
        ("default (no comfyd.toml)", None),
        ("fifo", Some("[scheduler]\nmode = \"fifo\"\n".to_owned())),
        ("fair: image 4, video 1", Some(fair)),
    ];
    let mut table = Table::new(
        format!(
            "4. starvation: {} video jobs of {} ms dropped at once, then {} image jobs of {} ms, one every {} ms",
            p.videos, p.video_ms, p.images, p.image_ms, p.every_ms
        ),
        &[
            "scheduler",
            "worst image wait s",
            "vs first row",
            "mean image wait s",
            "worst video wait s",
            "time s",
            "failed files",
        ],
    );
    let mut goals = Vec::new();
    let mut first: Option<Duration> = None;
    for (i, (name, config)) in modes.iter().enumerate() {
        match one(ctx, p, i, config.as_deref()).await {
            Ok(w) => {
                let vs = first
                    .map(|f| format!("{:.2}x", w.worst_image.as_secs_f64() / f.as_secs_f64()))
                    .unwrap_or_else(|| "1.00x".into());
                first.get_or_insert(w.worst_image);
                table.row(vec![
                    (*name).into(),
                    secs(w.worst_image),
                    vs,
                    secs(w.mean_image),
                    secs(w.worst_video),
                    secs(w.time),
                    w.failed_files.to_string(),
                ]);
                if i == 2 {
                    goals.push(Goal::plain(
                        "4 starvation",
                        format!(
                            "fair classes: worst image wait {:.2} s (goal <= image max_wait {max_wait} s)",
                            w.worst_image.as_secs_f64()
                        ),
                        w.worst_image.as_secs_f64() <= max_wait as f64,
                    ));
                }
            }
            Err(e) => {
                let e = e.to_string();
                let why = if config.is_some() && e.contains("exited") {
                    let reason = e
                        .lines()
                        .find(|l| l.contains("error"))
                        .map(|l| match l.find("unknown field") {
                            Some(at) => l[at..].split(',').next().unwrap_or_default(),
                            None => l.trim(),
                        })
                        .unwrap_or("it exited at start");
                    format!("needs the new daemon: its comfyd.toml was refused ({reason})")
                } else {
                    e
                };
                table.failed_row(name, &why);
                if i == 2 {
                    goals.push(Goal::missing("4 starvation", "fair classes", &why));
                }
            }
        }
    }
    table.note(format!(
        "wait = drop to start at ComfyUI; the fair row's comfyd.toml gives `image` max_wait = {max_wait} s"
    ));
    table.print();
    Ok(goals)
}

async fn one(ctx: &Ctx, p: &Params, n: usize, config: Option<&str>) -> Res<Waits> {
    let run = ctx.run_dir(&format!("starvation-{n}"))?;
    let timing = Timing {
        class_ms: [
            ("KSampler".to_owned(), p.video_ms),
            ("ImageInvert".to_owned(), p.image_ms),
        ]
        .into(),
        ..Timing::default()
    };
    let (sim, sim_t0) = start_sim(&run.root.join("sim"), timing).await?;
    let mut args = Vec::new();
    if let Some(text) = config {
        let path = run.root.join("comfyd.toml");
        std::fs::write(&path, text)?;
        args = vec!["--config".into(), path.display().to_string()];
    }
    let mut daemon = run.spawn(ctx, &sim.url(), 0, &args)?;
    daemon.ready(&run.jobs, Duration::from_secs(30)).await?;

    let t0 = Instant::now();
    let mut dropped: HashMap<String, Instant> = HashMap::new();
    for i in 0..p.videos {
        let id = format!("video-{i:04}");
        let job = serde_json::json!({
            "workflow": "clip",
            "id": id,
            "inputs": {"prompt": "a long clip", "seed": i, "steps": 1, "width": 64, "height": 64},
        });
        run.drop_job(&format!("{id}.json"), &job.to_string())?;
        dropped.insert(id, Instant::now());
    }
    for i in 0..p.images {
        let at = t0 + Duration::from_millis(p.every_ms * (i as u64 + 1));
        tokio::time::sleep_until(at.into()).await;
        daemon.check_alive()?;
        let id = format!("image-{i:04}");
        let job = serde_json::json!({
            "workflow": "solid-color",
            "id": id,
            "inputs": solid_color_inputs(i, 4),
        });
        run.drop_job(&format!("{id}.json"), &job.to_string())?;
        dropped.insert(id, Instant::now());
    }
    let mut daemons = [daemon];
    let end = run
        .wait_finished(p.videos + p.images, &mut daemons, ctx.timeout)
        .await?;
    let [daemon] = daemons;
    daemon.stop().await;

    let jobs = jobs_by_prompt(&sim);
    let mut started: HashMap<&str, Duration> = HashMap::new();
    let timeline = sim.timeline();
    for e in &timeline {
        if e.event == TimelineEvent::Started
            && let Some(job) = jobs.get(&e.prompt_id)
        {
            started.entry(job.as_str()).or_insert(e.at);
        }
    }
    let mut image_waits = Vec::new();
    let mut worst_video = Duration::ZERO;
    for (id, at) in &dropped {
        let Some(start) = started.get(id.as_str()) else {
            return Err(format!("job `{id}` never started at ComfyUI").into());
        };
        let wait = start.saturating_sub(at.saturating_duration_since(sim_t0));
        if id.starts_with("image") {
            image_waits.push(wait);
        } else {
            worst_video = worst_video.max(wait);
        }
    }
    let worst_image = image_waits.iter().max().copied().unwrap_or_default();
    let mean_image = image_waits.iter().sum::<Duration>() / image_waits.len().max(1) as u32;
    Ok(Waits {
        worst_image,
        mean_image,
        worst_video,
        time: end - t0,
        failed_files: run.finished().1,
    })
}
