//! Issue 11's load benchmark: `comfyd serve` (the real binary, a child process) taking
//! submissions with idempotency keys from concurrent clients, half of them retried, side by
//! side with the same jobs dropped as files; then a `comfyd run` daemon runs them all against
//! an in-process simulator, and every run is checked to have run exactly once.
//!
//!     cargo build --release -p comfyd --example bench_serve
//!     target/release/examples/bench_serve [--runs 500] [--clients 50] [--no-daemon]
//!
//! Figures: POST and GET latency (p50, p99), runs accepted per second over HTTP, the same for
//! file drops (write elsewhere, rename into `inbox/`), the p99 the HTTP door adds and the
//! throughput ratio, against the goals (≤ 2 ms added p99, ≥ 1,000 runs/s). A benchmark, not
//! a test: nothing here is asserted but exactly-once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

/// Issue 11's load benchmark: comfyd serve against file drops.
#[derive(Parser)]
#[command(name = "bench_serve", max_term_width = 100)]
struct Args {
    /// Runs submitted (each once, half of them twice: retried).
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Runs submitted one at a time afterwards (and as many files dropped one at a time): the
    /// latency the door adds without queueing behind other clients.
    #[arg(long, default_value_t = 200)]
    serial: usize,
    /// Skip running the jobs (only the submission side is measured and counted).
    #[arg(long)]
    no_daemon: bool,
    /// The comfyd binary [default: comfyd beside this example's folder].
    #[arg(long, value_name = "PATH")]
    comfyd: Option<PathBuf>,
    /// Keep the temporary folder and print its path.
    #[arg(long)]
    keep: bool,
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn ok_serial(status: u16) -> Res<()> {
    if status == 202 {
        Ok(())
    } else {
        Err(format!("a one-at-a-time POST answered {status}").into())
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd`; returns once a line of its stderr contains `marker`, with what follows.
fn spawn_until(mut cmd: Command, marker: &str, log: &Path) -> Res<(Killed, String)> {
    cmd.env("COMFYD_LOG", "warn,comfyd::serve=info,comfyd::daemon=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut file = std::fs::File::create(log)?;
    std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| format!("no `{marker}`; see {}", log.display()))?;
        if let Some(rest) = line.split(marker).nth(1) {
            let rest = rest.to_owned();
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Ok((child, rest));
        }
    }
}

/// CPU time (user and system) a process has used, from `/proc` (Linux; zero elsewhere).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn inputs(i: usize) -> Value {
    json!({"color": (i * 2654435761) % 0xFF_FFFF, "width": 64, "height": 48})
}

/// One POST: its latency, status and run id.
async fn post(c: &reqwest::Client, url: &str, i: usize) -> Res<(Duration, u16, String)> {
    let t = Instant::now();
    let resp = c
        .post(url)
        .header("Idempotency-Key", format!("bench-{i}"))
        .json(&json!({"inputs": inputs(i)}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    let took = t.elapsed();
    let id = v["id"]
        .as_str()
        .ok_or_else(|| format!("{status}: {v}"))?
        .to_owned();
    Ok((took, status, id))
}

/// Drops job `i` as a file: written beside the inbox, renamed in.
fn drop_file(dir: &Path, i: usize) -> Res<Duration> {
    let t = Instant::now();
    let id = format!("drop-{i:05}");
    let job = json!({"workflow": "solid-color@1.0.0", "id": id, "inputs": inputs(i)});
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&job)?)?;
    std::fs::rename(&tmp, dir.join("inbox").join(format!("{id}.json")))?;
    Ok(t.elapsed())
}

fn count_json(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let args = Args::parse();
    let comfyd = match args.comfyd.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("comfyd"))
            .ok_or("where is comfyd? give --comfyd PATH")?,
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    let (http_jobs, file_jobs, outputs) = (
        root.join("jobs"),
        root.join("jobs-files"),
        root.join("outputs"),
    );
    std::fs::create_dir_all(file_jobs.join("inbox"))?;

    let mut cmd = Command::new(&comfyd);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--jobs"])
        .arg(&http_jobs)
        .arg("--workflows")
        .arg(&repo)
        .arg("--outputs")
        .arg(&outputs)
        .current_dir(&root);
    let (_serve, rest) = spawn_until(cmd, "serving at http://", &root.join("serve.log"))?;
    let base = format!("http://{}", rest.split('/').next().unwrap_or_default());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Warm the connection pool and the server's caches (nothing written).
    for _ in 0..args.clients {
        client
            .get(format!("{base}/v1/workflows/solid-color"))
            .send()
            .await?
            .bytes()
            .await?;
    }

    // Over HTTP: every client takes the next run; even ones are retried, every fourth with
    // the retry in flight at once with the first request, the others after it answered.
    let url = format!("{base}/v1/workflows/solid-color/runs");
    let serve_pid = _serve.0.id();
    let cpu0 = cpu_time(serve_pid);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (c, url, next, n) = (client.clone(), url.clone(), next.clone(), args.runs);
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(usize, Duration, u16, String)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out);
                }
                if i % 4 == 0 {
                    let (a, b) = tokio::join!(post(&c, &url, i), post(&c, &url, i));
                    for (t, s, id) in [a?, b?] {
                        out.push((i, t, s, id));
                    }
                } else {
                    let (t, s, id) = post(&c, &url, i).await?;
                    out.push((i, t, s, id));
                    if i % 2 == 0 {
                        let (t, s, id) = post(&c, &url, i).await?;
                        out.push((i, t, s, id));
                    }
                }
            }
        }));
    }
    let mut posts = Vec::new();
    for t in tasks {
        posts.extend(t.await??);
    }
    let http_wall = t0.elapsed();
    let post_cpu = cpu_time(serve_pid).saturating_sub(cpu0);
    let mut by_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, _, s, id) in &posts {
        by_key.entry(*i).or_default().insert(id.clone());
        *statuses.entry(*s).or_default() += 1;
    }
    let ids: Vec<String> = by_key
        .values()
        .filter_map(|s| s.iter().next().cloned())
        .collect();
    let one_id_per_key = by_key.values().all(|s| s.len() == 1);
    let store_count = || {
        count_json(&http_jobs.join("inbox"))
            + std::fs::read_dir(http_jobs.join("queue"))
                .map(|r| r.count())
                .unwrap_or(0)
    };
    let mut post_times: Vec<Duration> = posts.iter().map(|p| p.1).collect();
    post_times.sort();

    // GET each run, from as many clients.
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (c, base, next, ids) = (client.clone(), base.clone(), next.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out);
                };
                let t = Instant::now();
                let resp = c.get(format!("{base}/v1/runs/{id}")).send().await?;
                let ok = resp.status().is_success();
                resp.bytes().await?;
                if !ok {
                    return Err(format!("GET /v1/runs/{id} failed").into());
                }
                out.push(t.elapsed());
            }
        }));
    }
    let mut get_times = Vec::new();
    for t in tasks {
        get_times.extend(t.await??);
    }
    get_times.sort();

    // The same jobs dropped as files: written beside the inbox, renamed in.
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (dir, next, n) = (file_jobs.clone(), next.clone(), args.runs);
        tasks.push(tokio::task::spawn_blocking(
            move || -> Res<Vec<Duration>> {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(out);
                    }
                    let t = Instant::now();
                    let id = format!("drop-{i:05}");
                    let job =
                        json!({"workflow": "solid-color@1.0.0", "id": id, "inputs": inputs(i)});
                    let tmp = dir.join(format!(".{id}.tmp"));
                    std::fs::write(&tmp, serde_json::to_vec(&job)?)?;
                    std::fs::rename(&tmp, dir.join("inbox").join(format!("{id}.json")))?;
                    out.push(t.elapsed());
                }
            },
        ));
    }
    let mut drop_times = Vec::new();
    for t in tasks {
        drop_times.extend(t.await??);
    }
    let drop_wall = t0.elapsed();
    drop_times.sort();

    // One at a time: no queueing behind other clients.
    let mut serial_posts = Vec::new();
    let mut serial_drops = Vec::new();
    let mut ids: Vec<String> = ids.iter().cloned().collect();
    for k in 0..args.serial {
        let i = args.runs + k;
        let (t, s, id) = post(&client, &url, i).await?;
        ok_serial(s)?;
        serial_posts.push(t);
        ids.push(id);
        serial_drops.push(drop_file(&file_jobs, i)?);
    }
    serial_posts.sort();
    serial_drops.sort();
    let total = args.runs + args.serial;

    let http_rate = args.runs as f64 / http_wall.as_secs_f64();
    let drop_rate = args.runs as f64 / drop_wall.as_secs_f64();
    println!(
        "comfyd serve: {} runs from {} clients, {} POSTs (half the runs retried), {} GETs",
        args.runs,
        args.clients,
        posts.len(),
        get_times.len()
    );
    println!(
        "{:<28} {:>9} {:>9} {:>12}",
        "", "p50 ms", "p99 ms", "runs/s"
    );
    println!(
        "{:<28} {:>9.2} {:>9.2} {:>12.0}",
        "POST /v1/workflows/…/runs",
        pct(&post_times, 0.50),
        pct(&post_times, 0.99),
        http_rate
    );
    println!(
        "{:<28} {:>9.2} {:>9.2} {:>12}",
        "GET /v1/runs/ID",
        pct(&get_times, 0.50),
        pct(&get_times, 0.99),
        "-"
    );
    println!(
        "{:<28} {:>9.2} {:>9.2} {:>12.0}",
        "file drop (write + rename)",
        pct(&drop_times, 0.50),
        pct(&drop_times, 0.99),
        drop_rate
    );
    println!("one client at a time ({} each):", args.serial);
    println!(
        "{:<28} {:>9.2} {:>9.2}",
        "POST /v1/workflows/…/runs",
        pct(&serial_posts, 0.50),
        pct(&serial_posts, 0.99)
    );
    println!(
        "{:<28} {:>9.2} {:>9.2}",
        "file drop (write + rename)",
        pct(&serial_drops, 0.50),
        pct(&serial_drops, 0.99)
    );
    let serial_added = pct(&serial_posts, 0.99) - pct(&serial_drops, 0.99);
    println!(
        "one at a time, HTTP adds {serial_added:.2} ms p99 over a file drop (goal ≤ 2 ms): {}",
        if serial_added <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "the server's CPU (user + system) while taking the {} POSTs: {:.0} ms, {:.2} ms per POST",
        posts.len(),
        post_cpu.as_secs_f64() * 1000.0,
        post_cpu.as_secs_f64() * 1000.0 / posts.len().max(1) as f64
    );
    let added = pct(&post_times, 0.99) - pct(&drop_times, 0.99);
    println!(
        "{} clients at once, HTTP adds {added:.2} ms p99 over a file drop (goal ≤ 2 ms): {}; accepts {http_rate:.0} runs/s (goal ≥ 1,000): {}; drop/HTTP throughput ratio {:.1}",
        args.clients,
        if added <= 2.0 { "met" } else { "NOT met" },
        if http_rate >= 1000.0 {
            "met"
        } else {
            "NOT met"
        },
        drop_rate / http_rate
    );
    println!(
        "statuses {statuses:?}; one run id per key: {one_id_per_key}; runs in the store: {} (want {total})",
        store_count()
    );
    let mut ok = one_id_per_key && store_count() == total && statuses.get(&202) == Some(&args.runs);

    if !args.no_daemon {
        let sim_dir = root.join("sim");
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/comfyui/object_info.json"),
        )
        .or_else(|_| std::fs::read_to_string(repo.join("nodes/object_info.json")))?;
        let sim = comfy_sim::start(comfy_sim::Config::new(
            serde_json::from_str(&text)?,
            &sim_dir,
        ))
        .await?;
        let mut cmd = Command::new(&comfyd);
        cmd.args(["run", "--jobs"])
            .arg(&http_jobs)
            .arg("--workflows")
            .arg(&repo)
            .arg("--outputs")
            .arg(&outputs)
            .args(["--comfy-url", &sim.url(), "--settle-ms", "0"])
            .current_dir(&root);
        let t0 = Instant::now();
        let (_daemon, _) = spawn_until(cmd, "workflows loaded", &root.join("run.log"))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = count_json(&http_jobs.join("done")) + count_json(&http_jobs.join("failed"));
            if done >= total {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {done} of {total} runs ended in 600 s").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ran = t0.elapsed();
        let prefixes = sim.submitted_prefixes();
        let mut executions: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, p) in &prefixes {
            for id in ids.iter() {
                if p.iter().any(|p| p.contains(id.as_str())) {
                    *executions.entry(id.as_str()).or_default() += 1;
                }
            }
        }
        let once = ids.iter().all(|id| executions.get(id.as_str()) == Some(&1));
        let manifests = ids
            .iter()
            .filter(|id| outputs.join(id.as_str()).join("manifest.json").is_file())
            .count();
        println!(
            "daemon: {total} runs done in {:.1} s; prompts at the simulator {}, each run executed exactly once: {once}; manifests {manifests}",
            ran.as_secs_f64(),
            prefixes.len()
        );
        ok &= once && manifests == total && prefixes.len() == total;
    }
    if args.keep {
        println!("kept {}", tmp.keep().display());
    }
    if !ok {
        return Err("exactly-once did not hold (see above)".into());
    }
    Ok(())
}
