//! The client suite against a real ComfyUI. Run by `scripts/real-comfyui`, which installs and
//! starts one and sets `COMFYUI_URL`; or point `COMFYUI_URL` at any running ComfyUI and run
//! `cargo test -p comfyd --test real -- --ignored --test-threads=1`.

mod common;
mod suite;

use comfyd::client::Client;
use suite::Target;

pub struct RealTarget {
    pub target: Target,
}

pub async fn real_target() -> RealTarget {
    let url = std::env::var("COMFYUI_URL")
        .unwrap_or_else(|_| panic!("COMFYUI_URL is not set: run these through scripts/real-comfyui, or set it to a running ComfyUI"));
    let client = Client::new(&url).unwrap_or_else(|e| panic!("{e}"));
    RealTarget {
        target: Target {
            client,
            checkpoint: std::env::var("COMFYUI_TINY_CHECKPOINT").ok(),
            // On CPU, each blur of a 1024² image takes about a second.
            slow_blurs: 8,
            slow_size: 1024,
            // The lanes run 0.3.x, but `COMFYUI_URL` may name any release: what the client
            // detects is taken as it is.
            jobs_cancel: None,
        },
    }
}

cases!(real_target, #[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]);

/// The real lane's ComfyUI and its tiny checkpoint (set by `scripts/real-comfyui`).
fn lane_env() -> (String, String) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    (var("COMFYUI_URL"), var("COMFYUI_TINY_CHECKPOINT"))
}

/// The examples copied under `dir`, with the tiny checkpoint declared.
fn tiny_repo(dir: &std::path::Path, checkpoint: &str) -> std::path::PathBuf {
    let repo = dir.join("repo");
    common::copy_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        &repo,
    );
    let config = std::fs::read_to_string(repo.join("comfyc.toml")).unwrap_or_default();
    std::fs::write(
        repo.join("comfyc.toml"),
        format!("{config}\n[[models]]\nname = \"{checkpoint}\"\nfolder = \"checkpoints\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    repo
}

/// The daemon end to end against the real ComfyUI: a single job, a JSONL batch and a sweep of
/// the no-model workflow, and SD 1.5 text-to-image with the tiny checkpoint; every manifest's
/// hashes match the files it lists.
#[tokio::test]
#[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]
async fn daemon_runs_single_and_batch_jobs_against_real_comfyui() {
    use sha2::Digest;
    let (url, checkpoint) = lane_env();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = tiny_repo(tmp.path(), &checkpoint);
    let jobs = tmp.path().join("jobs");
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    let put = |name: &str, text: String| {
        std::fs::write(jobs.join("inbox").join(name), text).unwrap_or_else(|e| panic!("{e}"))
    };
    put(
        "one.toml",
        "workflow = \"solid-color\"\n[inputs]\ncolor = 16744448\n".into(),
    );
    put("batch.jsonl", (0..20).map(|i| format!("{{\"workflow\": \"solid-color\", \"inputs\": {{\"color\": {}, \"width\": 32, \"height\": 32}}}}\n", i * 4000)).collect());
    put(
        "sd15.toml",
        format!(
            "workflow = \"txt2img\"\n[inputs]\nprompt = \"a white ceramic mug\"\ncheckpoint = \"{checkpoint}\"\nwidth = 64\nheight = 64\nsteps = 4\n[sweep]\nseed = [1, 2]\n"
        ),
    );
    let mut settings = comfyd::daemon::Settings::new(&jobs, &repo, url);
    settings.outputs = tmp.path().join("outputs");
    settings.settle = std::time::Duration::ZERO;
    settings.until_idle = true;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let s = comfyd::daemon::run(settings.clone(), rx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (s.jobs_done, s.jobs_failed, s.files_done),
        (23, 0, 3),
        "{s:?}"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(&settings.outputs)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path().join("manifest.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        let m: comfyd::manifest::Manifest =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            m.comfyui.version.starts_with("0.3"),
            "{}",
            m.comfyui.version
        );
        // No NVML here: the figures come from ComfyUI, whose device is the CPU; nothing is
        // sampled and nothing freed (no VRAM pressure can be read from RAM figures).
        assert_eq!(
            (m.gpu.source.as_str(), m.gpu.name.as_deref()),
            ("system_stats", Some("cpu")),
            "{:?}",
            m.gpu
        );
        assert_eq!((m.gpu.vram_peak_used_bytes, m.gpu.samples), (None, None));
        assert!(
            !m.comfyui.simulated,
            "a real ComfyUI is not marked simulated"
        );
        assert!(m.interventions.is_empty(), "{:?}", m.interventions);
        for o in &m.outputs {
            let bytes = std::fs::read(entry.path().join(&o.path)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                o.sha256,
                "{}",
                o.path
            );
            assert_eq!(bytes.len() as u64, o.size);
            assert_eq!(o.media_type, "image/png");
            assert!(o.width.is_some());
        }
        if m.workflow.name == "txt2img" {
            assert_eq!(
                (m.outputs[0].width, m.outputs[0].height),
                (Some(64), Some(64))
            );
            assert!(
                m.timings.nodes.iter().any(|n| n.node == "3"),
                "the sampler ran: {:?}",
                m.timings.nodes
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 23);
}

/// Two real `comfyd` processes share a job directory in front of the real ComfyUI, and one is
/// killed with SIGKILL while a prompt of it runs, then restarted: every job runs exactly once,
/// counted in ComfyUI's own history (the restarted daemon adopts its prompts instead of
/// submitting them again).
#[tokio::test]
#[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]
async fn two_daemons_and_a_kill_9_run_each_job_once_at_real_comfyui() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let (url, checkpoint) = lane_env();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = tiny_repo(tmp.path(), &checkpoint);
    let jobs = tmp.path().join("jobs");
    let outputs = tmp.path().join("outputs");
    // A run-unique id prefix: the server's history holds other tests' prompts too.
    let tag = format!("k9-{}", std::process::id());
    let lines: String = (0..8)
        .map(|i| format!("{{\"workflow\": \"txt2img\", \"id\": \"{tag}-{i}\", \"inputs\": {{\"prompt\": \"a mug\", \"checkpoint\": \"{checkpoint}\", \"width\": 64, \"height\": 64, \"steps\": 4, \"seed\": {}}}}}\n", 1000 + i))
        .collect();
    common::drop_job(&jobs, "k9.jsonl", &lines);
    let daemon = |gpu: &str, until_idle: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_comfyd"));
        c.args(["run", "--jobs"])
            .arg(&jobs)
            .arg("--workflows")
            .arg(&repo)
            .arg("--outputs")
            .arg(&outputs)
            .args(["--comfy-url", &url, "--gpu", gpu, "--lease-ttl", "3"])
            .args(["--settle-ms", "0", "--min-free-mb", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if until_idle {
            c.arg("--until-idle");
        }
        c.spawn().unwrap_or_else(|e| panic!("{e}"))
    };
    let client = Client::new(&url).unwrap_or_else(|e| panic!("{e}"));
    let mut a = daemon("0", false);
    let mut b = daemon("1", true);
    // Kill A while one of the prompts runs at ComfyUI.
    let t = Instant::now();
    loop {
        let q = client.queue().await.unwrap_or_else(|e| panic!("{e}"));
        if !q.running.is_empty() || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = a.wait();
    let mut a2 = daemon("0", true);
    for child in [&mut b, &mut a2] {
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                assert!(status.success(), "{status:?}");
                break;
            }
            if t.elapsed() > Duration::from_secs(240) {
                let _ = child.kill();
                panic!("a daemon did not finish in 240 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        common::names(&jobs.join("done")),
        ["k9.jsonl"],
        "the file is done"
    );
    // Count at ComfyUI: every prompt in its history whose save prefix names one of our jobs.
    let history: serde_json::Value = reqwest::get(format!("{url}/history?max_items=10000"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut runs = std::collections::BTreeMap::<String, usize>::new();
    for entry in history.as_object().into_iter().flat_map(|h| h.values()) {
        let graph = &entry["prompt"][2];
        for node in graph.as_object().into_iter().flat_map(|g| g.values()) {
            if let Some(id) = node["inputs"]["filename_prefix"]
                .as_str()
                .and_then(|p| p.strip_prefix("comfyd/"))
                .and_then(|p| p.split('/').next())
                .filter(|id| id.starts_with(&tag))
            {
                *runs.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    for i in 0..8 {
        let id = format!("{tag}-{i}");
        assert_eq!(
            runs.get(&id),
            Some(&1),
            "{id} ran {:?} times: {runs:?}",
            runs.get(&id)
        );
        assert!(outputs.join(&id).join("manifest.json").is_file(), "{id}");
    }
}

/// comfyd supervises a real ComfyUI of its own (the lane's install on another free port, its
/// own output, temp, input and user folders), settings from `[comfyui]` in comfyd.toml: a
/// text-to-image job runs, ComfyUI is killed with SIGKILL while the job executes, comfyd
/// starts it again, the job runs again and finishes, its manifest says ComfyUI restarted
/// under it, and no ComfyUI is left once comfyd exits.
#[tokio::test]
#[ignore = "needs a real ComfyUI: scripts/real-comfyui runs these"]
async fn a_supervised_real_comfyui_killed_mid_job_is_restarted_and_the_job_finishes() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let (_, checkpoint) = lane_env();
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run this through scripts/real-comfyui"))
    };
    let (command, comfy_dir) = (var("COMFYUI_COMMAND"), var("COMFYUI_DIR"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = tiny_repo(tmp.path(), &checkpoint);
    let jobs = tmp.path().join("jobs");
    let outputs = tmp.path().join("outputs");
    let own = tmp.path().join("comfyui");
    for d in ["output", "temp", "input", "user"] {
        std::fs::create_dir_all(own.join(d)).unwrap_or_else(|e| panic!("{e}"));
    }
    let port = common::free_port();
    let mut argv = shell_words::split(&command).unwrap_or_else(|e| panic!("COMFYUI_COMMAND: {e}"));
    argv.extend(["--port".to_owned(), port.to_string()]);
    for (flag, dir) in [
        ("--output-directory", "output"),
        ("--temp-directory", "temp"),
        ("--input-directory", "input"),
        ("--user-directory", "user"),
    ] {
        argv.extend([flag.to_owned(), own.join(dir).display().to_string()]);
    }
    argv.extend([
        "--database-url".to_owned(),
        format!("sqlite:///{}", own.join("user/comfyui.db").display()),
    ]);
    let config = tmp.path().join("comfyd.toml");
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[comfyui]\ncommand = [{}]\ncwd = {comfy_dir:?}\nready_timeout = 300\n",
            quoted.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    common::drop_job(
        &jobs,
        "mug.toml",
        &format!(
            "workflow = \"txt2img\"\nid = \"mug\"\n[inputs]\nprompt = \"a white ceramic mug\"\ncheckpoint = \"{checkpoint}\"\nwidth = 64\nheight = 64\nsteps = 40\nseed = 7\n"
        ),
    );
    let log = tmp.path().join("comfyd.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args([
            "run",
            "--until-idle",
            "--settle-ms",
            "0",
            "--min-free-mb",
            "0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--jobs")
        .arg(&jobs)
        .arg("--workflows")
        .arg(&repo)
        .arg("--outputs")
        .arg(&outputs)
        .env("COMFYD_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // Kill ComfyUI once the job executes there.
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    loop {
        if let Ok(q) = client.queue().await
            && !q.running.is_empty()
        {
            break;
        }
        if let Ok(Some(s)) = daemon.try_wait() {
            panic!("comfyd exited before the job ran: {s:?}\n{}", log_text());
        }
        if t.elapsed() > Duration::from_secs(300) {
            let _ = daemon.kill();
            panic!("the job did not start within 300 s\n{}", log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = common::procs_on_port(port);
    assert_eq!(first.len(), 1, "one ComfyUI on port {port}: {first:?}");
    let pid = rustix::process::Pid::from_raw(first[0] as i32).unwrap_or_else(|| panic!("pid"));
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .unwrap_or_else(|e| panic!("{e}"));
    let killed_at = Instant::now();
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        if killed_at.elapsed() > Duration::from_secs(400) {
            let _ = daemon.kill();
            panic!(
                "the job did not finish within 400 s of the kill\n{}",
                log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", log_text());
    assert_eq!(
        common::names(&jobs.join("done")),
        ["mug.toml"],
        "{}",
        log_text()
    );
    let text = std::fs::read_to_string(outputs.join("mug/manifest.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let m: comfyd::manifest::Manifest =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let restarts: Vec<_> = m
        .interventions
        .iter()
        .filter(|i| i.kind == "comfyui-restart")
        .collect();
    assert_eq!(restarts.len(), 1, "{:?}", m.interventions);
    assert!(
        restarts[0].reason.contains("SIGKILL"),
        "{}",
        restarts[0].reason
    );
    assert_eq!(
        (m.outputs[0].width, m.outputs[0].height),
        (Some(64), Some(64))
    );
    assert!(
        m.comfyui.version.starts_with("0.3"),
        "{}",
        m.comfyui.version
    );
    let log = log_text();
    assert!(
        log.contains("ComfyUI exited (signal: 9 (SIGKILL))"),
        "{log}"
    );
    eprintln!(
        "restarted and finished {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    let left = common::procs_on_port(port);
    assert!(left.is_empty(), "ComfyUI outlived comfyd: {left:?}");
}
