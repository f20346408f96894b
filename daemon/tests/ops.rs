//! The real `comfyd` binary in operations: its metrics read by `promtool` and scraped by a real
//! Prometheus, its `sd_notify` messages received on a real socket, its systemd unit verified.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`apt-get install
//! prometheus`; its service need not run). These tests fail, saying so, when they are missing.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use comfy_sim::Timing;
use common::{drop_job, examples, names};
use serde_json::Value;

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tool from Debian's `prometheus` package, or a failure saying how to get it.
fn prometheus_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: install it with `apt-get install prometheus` (Debian's package has promtool and prometheus; its service need not run)")
    })
}

/// `comfyd run` against `url` with `--metrics 127.0.0.1:0`; the address it reports.
fn start_comfyd(
    jobs: &Path,
    outputs: &Path,
    url: &str,
    env: &[(&str, &str)],
) -> (Killed, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfyd"));
    cmd.args(["run", "--jobs"])
        .arg(jobs)
        .arg("--workflows")
        .arg(examples())
        .arg("--outputs")
        .arg(outputs)
        .args([
            "--comfy-url",
            url,
            "--settle-ms",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .env("COMFYD_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting comfyd: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    // Drained to the end, so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("comfyd did not say where its metrics are"));
        if let Some(rest) = line.split("metrics at http://").nth(1) {
            let addr = rest.split('/').next().unwrap_or_default();
            let addr = addr
                .parse()
                .unwrap_or_else(|e| panic!("`{addr}` in `{line}`: {e}"));
            return (child, addr);
        }
    }
}

async fn get(url: &str) -> (String, String) {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (ctype, resp.text().await.unwrap_or_default())
}

/// The value of the one sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample `{series}` in\n{text}"))
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Job files that ended, in `done/` or `failed/` (error reports aside).
fn ended(jobs: &Path) -> usize {
    let failed = names(&jobs.join("failed"))
        .iter()
        .filter(|n| !n.ends_with(".error.json"))
        .count();
    names(&jobs.join("done")).len() + failed
}

fn sigterm(child: &Killed) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM failed");
}

#[tokio::test]
async fn metrics_count_what_the_daemon_did_and_promtool_accepts_them() {
    let promtool = prometheus_tool("promtool");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = common::start_sim(&tmp.path().join("sim"), Timing::default()).await;
    for i in 0..2 {
        drop_job(
            &jobs,
            &format!("solid{i}.toml"),
            &format!("workflow = \"solid-color\"\n[inputs]\ncolor = {i}\nwidth = 8\nheight = 8\n"),
        );
    }
    // Two model sets (a checkpoint; the checkpoint and a LoRA): whichever runs second is a
    // model switch. Solid colours need no model and switch nothing.
    drop_job(
        &jobs,
        "mug.toml",
        "workflow = \"txt2img\"\n[inputs]\nprompt = \"a mug\"\nseed = 1\nsteps = 1\n",
    );
    drop_job(
        &jobs,
        "lighthouse.toml",
        "workflow = \"lora\"\n[inputs]\nseed = 1\nsteps = 1\n",
    );
    // Refused by its schema where it is taken in: never claimed.
    drop_job(
        &jobs,
        "too-wide.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 0\nwidth = 99999999\nheight = 8\n",
    );
    // Never claimed: no such workflow.
    drop_job(&jobs, "typo.toml", "workflow = \"solid-colour\"\n");
    let (daemon, addr) = start_comfyd(&jobs, &outputs, &sim.url(), &[]);
    wait_until("every job file ended", Duration::from_secs(90), || {
        ended(&jobs) == 6
    })
    .await;
    let url = format!("http://{addr}/metrics");
    // Gauges follow the status file (at most four times a second).
    let t = Instant::now();
    let (ctype, text) = loop {
        let (ctype, text) = get(&url).await;
        if text.contains("comfyd_prompts_in_flight{gpu=\"0\"} 0\n")
            && text.contains("comfyd_queue_depth{gpu=\"0\",class=\"image\"} 0\n")
        {
            break (ctype, text);
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still busy:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let jobs_total = |workflow: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "comfyd_jobs_total{{gpu=\"0\",workflow=\"{workflow}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(jobs_total("solid-color", "done"), 2.0);
    assert_eq!(jobs_total("txt2img", "done"), 1.0);
    assert_eq!(jobs_total("lora", "done"), 1.0);
    assert_eq!(jobs_total("solid-color", "failed"), 1.0);
    assert_eq!(jobs_total("(unknown)", "failed"), 1.0);
    assert_eq!(sample(&text, "comfyd_claims_total{gpu=\"0\"}"), 4.0);
    assert_eq!(
        sample(&text, "comfyd_queue_wait_seconds_count{gpu=\"0\"}"),
        4.0
    );
    assert_eq!(
        sample(&text, "comfyd_execution_seconds_count{gpu=\"0\"}"),
        4.0
    );
    assert_eq!(sample(&text, "comfyd_model_switches_total{gpu=\"0\"}"), 1.0);
    assert_eq!(sample(&text, "comfyd_takeovers_total{gpu=\"0\"}"), 0.0);
    assert_eq!(sample(&text, "comfyd_oom_retries_total{gpu=\"0\"}"), 0.0);
    assert_eq!(sample(&text, "comfyd_comfyui_up{gpu=\"0\"}"), 1.0);
    // The VRAM figures are what this ComfyUI reports.
    let stats: Value = serde_json::from_str(&get(&format!("{}/system_stats", sim.url())).await.1)
        .unwrap_or_else(|e| panic!("{e}"));
    let (total, free) = (
        stats["devices"][0]["vram_total"].as_f64().unwrap_or(-1.0),
        stats["devices"][0]["vram_free"].as_f64().unwrap_or(-1.0),
    );
    assert_eq!(sample(&text, "comfyd_vram_total_bytes{gpu=\"0\"}"), total);
    assert_eq!(
        sample(&text, "comfyd_vram_used_bytes{gpu=\"0\"}"),
        total - free
    );

    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = check.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Success and no lint (promtool prints each problem, and exits 3 for lint only).
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}",
        out.status
    );
    sigterm(&daemon);
}

/// A free loopback port (bound, then let go: Prometheus takes a port, not a socket).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_daemon_and_sees_its_count() {
    let prometheus = prometheus_tool("prometheus");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = common::start_sim(&tmp.path().join("sim"), Timing::default()).await;
    for i in 0..3 {
        drop_job(
            &jobs,
            &format!("solid{i}.toml"),
            &format!("workflow = \"solid-color\"\n[inputs]\ncolor = {i}\nwidth = 8\nheight = 8\n"),
        );
    }
    let (daemon, addr) = start_comfyd(&jobs, &outputs, &sim.url(), &[]);
    wait_until("the jobs are done", Duration::from_secs(60), || {
        names(&jobs.join("done")).len() == 3
    })
    .await;
    let series = "comfyd_jobs_total{gpu=\"0\",workflow=\"solid-color\",outcome=\"done\"}";
    let reported = sample(&get(&format!("http://{addr}/metrics")).await.1, series);
    assert_eq!(reported, 3.0);

    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: comfyd\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let log = tmp.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let _prom = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e}")),
    );
    let client = reqwest::Client::new();
    let query = format!("http://127.0.0.1:{port}/api/v1/query");
    // The series as Prometheus stores it: with the scrape's `job` label.
    const PROMQL: &str =
        "comfyd_jobs_total{workflow=\"solid-color\",outcome=\"done\",gpu=\"0\",job=\"comfyd\"}";
    let t = Instant::now();
    let seen = loop {
        let answer = client.get(&query).query(&[("query", PROMQL)]).send().await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<Value>().await
            && let Some(value) = v["data"]["result"][0]["value"][1].as_str()
        {
            break value.to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Prometheus never had the series; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        seen.parse::<f64>().ok(),
        Some(reported),
        "Prometheus saw {seen}"
    );
    sigterm(&daemon);
}

#[tokio::test]
async fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = common::start_sim(&tmp.path().join("sim"), Timing::default()).await;
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if tx.send(line.to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    for i in 0..3 {
        drop_job(
            &jobs,
            &format!("solid{i}.toml"),
            &format!("workflow = \"solid-color\"\n[inputs]\ncolor = {i}\nwidth = 8\nheight = 8\n"),
        );
    }
    let socket_text = socket_path.to_string_lossy().into_owned();
    // A 0.4 s watchdog: a ping every 0.2 s.
    let (daemon, _) = start_comfyd(
        &jobs,
        &outputs,
        &sim.url(),
        &[("NOTIFY_SOCKET", &socket_text), ("WATCHDOG_USEC", "400000")],
    );
    let mut heard: Vec<String> = Vec::new();
    let pings = |h: &[String]| h.iter().filter(|m| *m == "WATCHDOG=1").count();
    listen(&rx, &mut heard, "the status says the jobs are done", |h| {
        h.iter()
            .any(|m| m == "STATUS=0 running, 0 waiting, 3 done, 0 failed")
    })
    .await;
    assert_eq!(heard[0], "READY=1", "READY=1 comes first: {heard:?}");
    let done_at = heard.len();
    // Idle, the daemon still pings (its loop wakes for the watchdog).
    listen(&rx, &mut heard, "three pings while idle", |h| {
        pings(&h[done_at..]) >= 3
    })
    .await;
    sigterm(&daemon);
    listen(&rx, &mut heard, "STOPPING=1", |h| {
        h.iter().any(|m| m == "STOPPING=1")
    })
    .await;
    assert_eq!(
        heard.iter().filter(|m| *m == "READY=1").count(),
        1,
        "{heard:?}"
    );
    let unknown: Vec<&String> = heard
        .iter()
        .filter(|m| {
            !(m.starts_with("STATUS=")
                || ["READY=1", "WATCHDOG=1", "STOPPING=1"].contains(&m.as_str()))
        })
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    let mut daemon = daemon;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "comfyd did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Collects the messages received until `until` holds of them (at most a minute).
async fn listen(
    rx: &mpsc::Receiver<String>,
    heard: &mut Vec<String>,
    what: &str,
    until: impl Fn(&[String]) -> bool,
) {
    let t = Instant::now();
    loop {
        heard.extend(rx.try_iter());
        if until(heard) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}; heard {heard:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("skipped: no `systemd-analyze` on PATH, so the units cannot be verified here");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (comfyd, comfyui) = (read("comfyd@.service"), read("comfyui@.service"));
    for line in [
        "Type=notify",
        "--gpu %i",
        "--metrics ${COMFYD_METRICS}",
        "KillSignal=SIGTERM",
        "EnvironmentFile=-/etc/comfyd/gpu%i.env",
    ] {
        assert!(comfyd.contains(line), "comfyd@.service lacks `{line}`");
    }
    assert!(comfyui.contains("--cuda-device %i"));
    // The stop timeout covers the daemon's default grace period, and the watchdog is on.
    let seconds = |key: &str| {
        comfyd
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_suffix('s')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no `{key}N s` in comfyd@.service"))
    };
    assert!(seconds("TimeoutStopSec=") > 30);
    assert!(seconds("WatchdogSec=") > 0);
    // `verify` wants the programs to exist: the installed paths become ones that do here.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let installed = [
        (
            "comfyd@.service",
            comfyd,
            "/usr/local/bin/comfyd",
            env!("CARGO_BIN_EXE_comfyd"),
        ),
        (
            "comfyui@.service",
            comfyui,
            "/opt/ComfyUI/venv/bin/python",
            "/bin/sh",
        ),
    ];
    let mut units = Vec::new();
    for (name, text, from, to) in installed {
        assert!(text.contains(from), "{name} no longer runs {from}");
        let path = tmp.path().join(name);
        std::fs::write(&path, text.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
        units.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys and bad values are only warnings: a clean verify says nothing.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        out.status
    );
}

#[test]
fn a_bad_metrics_address_or_a_taken_port_is_a_setup_error_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let taken = taken
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    for (addr, says) in [
        ("localhost", "is not PORT or HOST:PORT"),
        ("70000", "is not a port"),
        (taken.as_str(), "Address already in use"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_comfyd"))
            .args(["run", "--jobs"])
            .arg(tmp.path().join("jobs"))
            .arg("--workflows")
            .arg(examples())
            .args(["--sim", "--metrics", addr])
            .env("COMFYD_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {err}");
        assert!(
            err.contains("error: --metrics") && err.contains(says),
            "{addr}: {err}"
        );
    }
    // The same setting in comfyd.toml: the error names the file.
    let config = tmp.path().join("gpu0.toml");
    std::fs::write(&config, "metrics = \"9400:x\"\n").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--jobs", "j", "--workflows", "w"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gpu0.toml: `metrics`: `9400:x`"), "{err}");
}
