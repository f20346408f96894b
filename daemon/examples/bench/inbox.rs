//! Scenario 6, a big inbox: files of jobs that fail at once (an unknown workflow) are in the
//! inbox before the daemon starts; the rate at which they reach `failed/` is the claim rate.
//! Then the daemon idles: its memory (VmRSS), its CPU time and its context switches (wake-ups)
//! over a quiet window and over a window in which this process keeps reading the workflow
//! folder (which should wake nothing).

use std::path::Path;
use std::time::{Duration, Instant};

use comfy_sim::Timing;

use super::Res;
use super::report::{Goal, Table, secs};
use super::rig::{Ctx, count_job_files, start_sim};

pub struct Params {
    pub files: usize,
    pub idle_secs: u64,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    match one(ctx, p).await {
        Ok(goals) => Ok(goals),
        Err(e) => {
            let mut table = Table::new(format!("6. a {}-file inbox", p.files), &["run"]);
            table.failed_row("all", &e.to_string());
            table.print();
            Ok(vec![Goal::missing("6 inbox", "claim rate", &e.to_string())])
        }
    }
}

async fn one(ctx: &Ctx, p: &Params) -> Res<Vec<Goal>> {
    let run = ctx.run_dir("inbox")?;
    let (sim, _) = start_sim(&run.root.join("sim"), Timing::default()).await?;
    let t = Instant::now();
    let inbox = run.inbox();
    for i in 0..p.files {
        std::fs::write(
            inbox.join(format!("f{i:06}.json")),
            "{\"workflow\": \"no-such-workflow\"}\n",
        )?;
    }
    let written = t.elapsed();

    let mut daemon = run.spawn(ctx, &sim.url(), 0, &[])?;
    let t0 = Instant::now();
    let failed_dir = run.jobs.join("failed");
    let every = Duration::from_millis(if p.files > 20_000 { 1000 } else { 200 });
    let mut samples: Vec<(Duration, usize)> = vec![(Duration::ZERO, 0)];
    loop {
        let n = count_job_files(&failed_dir);
        samples.push((t0.elapsed(), n));
        if n >= p.files {
            break;
        }
        daemon.check_alive()?;
        if t0.elapsed() > ctx.timeout {
            return Err(format!(
                "timed out after {} s: {n} of {} files in failed/",
                ctx.timeout.as_secs(),
                p.files
            )
            .into());
        }
        tokio::time::sleep(every).await;
    }
    let done_at = samples.last().map(|s| s.0).unwrap_or_default();
    let first = crossing(&samples, 1).unwrap_or_default();
    let rate_all = p.files as f64 / done_at.as_secs_f64();
    // From the first file in failed/ to the last: the daemon's start-up left out.
    let rate_claiming = if done_at > first && p.files > 1 {
        (p.files - 1) as f64 / (done_at - first).as_secs_f64()
    } else {
        rate_all
    };
    let (lo, hi) = (p.files / 10, p.files * 9 / 10);
    let steady = match (crossing(&samples, lo.max(1)), crossing(&samples, hi.max(1))) {
        (Some(a), Some(b)) if b > a => Some((hi - lo) as f64 / (b - a).as_secs_f64()),
        _ => None,
    };

    // Idle: let it settle, then a quiet window and a window of reads of the workflows folder.
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.check_alive()?;
    let pid = daemon.pid();
    let window = Duration::from_secs(p.idle_secs);
    let tick = clock_tick();
    let quiet = Usage::over(pid, window, None).await?;
    let reading = Usage::over(pid, window, Some(&ctx.repo.join("workflows"))).await?;
    let (rss_kb, hwm_kb) = memory_kb(pid).ok_or("cannot read /proc/PID/status")?;
    daemon.stop().await;

    let mut table = Table::new(
        format!(
            "6. a {}-file inbox of jobs that fail at once (written in {} s), then {} s idle twice",
            p.files,
            secs(written),
            p.idle_secs
        ),
        &["figure", "value"],
    );
    table.row(vec!["all in failed/ after s".into(), secs(done_at)]);
    table.row(vec!["first in failed/ after s".into(), secs(first)]);
    table.row(vec!["files/s from start".into(), format!("{rate_all:.0}")]);
    table.row(vec![
        "files/s from the first".into(),
        format!("{rate_claiming:.0}"),
    ]);
    table.row(vec![
        "files/s from 10% to 90%".into(),
        steady
            .map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "-".into()),
    ]);
    table.row(vec![
        "idle RSS MiB".into(),
        format!("{:.1}", rss_kb as f64 / 1024.0),
    ]);
    table.row(vec![
        "peak RSS MiB".into(),
        format!("{:.1}", hwm_kb as f64 / 1024.0),
    ]);
    for (name, u) in [("quiet", &quiet), ("while workflows are read", &reading)] {
        table.row(vec![
            format!("idle CPU % ({name})"),
            format!("{:.2}", u.cpu_percent(tick, window)),
        ]);
        table.row(vec![format!("wake-ups ({name})"), u.switches.to_string()]);
    }
    table.note("wake-ups: context switches of all the daemon's threads over the window");
    table.print();

    let extra = reading.switches.saturating_sub(quiet.switches);
    Ok(vec![
        Goal::plain(
            "6 inbox",
            format!("claim rate {rate_claiming:.0} files/s (goal >= 5000 files/s)"),
            rate_claiming >= 5000.0,
        ),
        Goal::plain(
            "6 inbox",
            format!("idle RSS {:.1} MiB (goal <= 20 MB)", rss_kb as f64 / 1024.0),
            rss_kb <= 20 * 1024,
        ),
        Goal::plain(
            "6 inbox",
            format!(
                "wake-ups while the workflows folder is read: {} vs {} quiet, {extra} extra (goal 0 extra)",
                reading.switches, quiet.switches
            ),
            extra == 0,
        ),
    ])
}

/// When the sampled count first reached `n` (linear between samples).
fn crossing(samples: &[(Duration, usize)], n: usize) -> Option<Duration> {
    samples.windows(2).find_map(|w| {
        let ((t0, c0), (t1, c1)) = (w[0], w[1]);
        (c0 < n && c1 >= n).then(|| {
            let f = (n - c0) as f64 / (c1 - c0) as f64;
            t0 + (t1 - t0).mul_f64(f)
        })
    })
}

/// CPU ticks and context switches of a process over a window.
struct Usage {
    ticks: u64,
    switches: u64,
}

impl Usage {
    /// Measures `pid` for `window`, reading every file of `read` every 50 ms meanwhile.
    async fn over(pid: u32, window: Duration, read: Option<&Path>) -> Res<Usage> {
        let before = (cpu_ticks(pid), switches(pid));
        let start = Instant::now();
        while start.elapsed() < window {
            if let Some(dir) = read {
                for e in std::fs::read_dir(dir)?.flatten() {
                    let _ = std::fs::read(e.path());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                tokio::time::sleep(window).await;
            }
        }
        let after = (cpu_ticks(pid), switches(pid));
        match (before, after) {
            ((Some(t0), Some(s0)), (Some(t1), Some(s1))) => Ok(Usage {
                ticks: t1.saturating_sub(t0),
                switches: s1.saturating_sub(s0),
            }),
            _ => Err(format!("cannot read /proc/{pid}: is this Linux?").into()),
        }
    }

    fn cpu_percent(&self, tick: u64, window: Duration) -> f64 {
        100.0 * self.ticks as f64 / tick as f64 / window.as_secs_f64()
    }
}

/// User + system time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Voluntary and involuntary context switches, summed over the process's threads.
fn switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += text
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Clock ticks per second (`getconf CLK_TCK`, else the usual 100).
fn clock_tick() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}
