//! A supervised ComfyUI: the real `comfyd` binary starts the real simulator binary
//! (`comfy-sim`) as its ComfyUI, and the tests kill it, stop it, make it exit at once and shut
//! the daemon down, looking at jobs, manifests, logs and `/proc`.
//!
//! `cargo test --workspace` builds `comfy-sim` beside `comfyd`; under `cargo test -p comfyd`
//! alone the tests build it first (`cargo build -p comfy-sim --bin comfy-sim`, a no-op when
//! it is up to date).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use comfyd::client::Client;
use common::{drop_job, examples, free_port, names, process_state, procs_on_port, shared};
use serde_json::Value;

/// One test at a time: their timings assume the two cores are theirs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The simulator binary beside `comfyd`, brought up to date first (`cargo test --workspace` has
/// built it already; under `cargo test -p comfyd` it may be missing or stale).
fn sim_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = Path::new(env!("CARGO_BIN_EXE_comfyd")).with_file_name("comfy-sim");
            let profile = match path.parent().and_then(|p| p.file_name()) {
                Some(d) if d == "debug" => "dev".to_owned(),
                Some(d) => d.to_string_lossy().into_owned(),
                None => "dev".to_owned(),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let built = Command::new(cargo)
                .args(["build", "--quiet", "-p", "comfy-sim", "--bin", "comfy-sim"])
                .args(["--profile", &profile])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            assert!(
                matches!(built, Ok(s) if s.success()) && path.is_file(),
                "the simulator binary is missing at {} and building it failed ({built:?}): \
                 run `cargo build -p comfy-sim --bin comfy-sim` (`cargo test --workspace` builds it)",
                path.display()
            );
            path
        })
        .clone()
}

/// A job directory, outputs and logs in a temporary root, and a port for the ComfyUI.
struct Rig {
    tmp: tempfile::TempDir,
    port: u16,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(tmp.path().join("jobs/inbox")).unwrap_or_else(|e| panic!("{e}"));
        Rig {
            tmp,
            port: free_port(),
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn jobs(&self) -> PathBuf {
        self.root().join("jobs")
    }

    fn outputs(&self) -> PathBuf {
        self.root().join("outputs")
    }

    /// The default ComfyUI log: `logs/comfyui-gpu-0.log` beside the job directory.
    fn comfy_log(&self) -> PathBuf {
        self.root().join("logs/comfyui-gpu-0.log")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The simulator's command line on this rig's port, each node taking `node_ms`.
    fn sim_command(&self, node_ms: u64) -> Vec<String> {
        vec![
            sim_binary().display().to_string(),
            "--port".into(),
            self.port.to_string(),
            "--node-ms".into(),
            node_ms.to_string(),
            "--catalogue".into(),
            shared()
                .join("comfyui/object_info.json")
                .display()
                .to_string(),
            "--root".into(),
            self.root().join("sim").display().to_string(),
        ]
    }

    /// `comfyd run` on this rig; its stderr goes to `comfyd.log` (`COMFYD_SUPERVISED_LOG=debug`
    /// makes it say more; it is printed when a test fails).
    fn comfyd(&self, extra: &[&str]) -> Daemon {
        let log = self.root().join("comfyd.log");
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_comfyd"))
            .arg("run")
            .arg("--jobs")
            .arg(self.jobs())
            .arg("--workflows")
            .arg(examples())
            .arg("--outputs")
            .arg(self.outputs())
            .args(["--settle-ms", "0", "--min-free-mb", "0"])
            .args(extra)
            .env(
                "COMFYD_LOG",
                std::env::var("COMFYD_SUPERVISED_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting comfyd: {e}"));
        Daemon { child, log }
    }

    /// The one supervised process on the port, once there is exactly one.
    async fn comfy_pid(&self, daemon: &mut Daemon, not: Option<u32>) -> u32 {
        let t = Instant::now();
        loop {
            let pids = procs_on_port(self.port);
            if let [pid] = pids[..]
                && Some(pid) != not
            {
                return pid;
            }
            daemon.assert_alive("while ComfyUI started");
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no single ComfyUI on port {} (found {pids:?})\n{}",
                self.port,
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a prompt executes at ComfyUI.
    async fn wait_running(&self, daemon: &mut Daemon) {
        let client = Client::new(&self.url()).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        loop {
            if let Ok(q) = client.queue().await
                && !q.running.is_empty()
            {
                return;
            }
            daemon.assert_alive("before the job ran");
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no prompt ran\n{}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `file` is in `done/` or `failed/`; true when done.
    async fn wait_file(&self, daemon: &mut Daemon, file: &str, limit: Duration) -> bool {
        let t = Instant::now();
        loop {
            if names(&self.jobs().join("done")).iter().any(|n| n == file) {
                return true;
            }
            if names(&self.jobs().join("failed")).iter().any(|n| n == file) {
                return false;
            }
            daemon.assert_alive("before the job ended");
            assert!(
                t.elapsed() < limit,
                "{file} did not end within {} s\n{}",
                limit.as_secs(),
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the daemon's log holds `text` `times` times.
    async fn wait_log(&self, daemon: &mut Daemon, text: &str, times: usize) {
        let t = Instant::now();
        while daemon.log_text().matches(text).count() < times {
            daemon.assert_alive("while waiting for its log");
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "`{text}` not {times} times in the log\n{}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prompts in the running ComfyUI's history that saved under `comfyd/warmup/`.
    async fn warmups_at_comfyui(&self) -> usize {
        let history: Value = reqwest::get(format!("{}/history", self.url()))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        history
            .as_object()
            .into_iter()
            .flat_map(|h| h.values())
            .filter(|entry| {
                entry["prompt"][2]
                    .as_object()
                    .into_iter()
                    .flat_map(|g| g.values())
                    .any(|node| {
                        node["inputs"]["filename_prefix"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("comfyd/warmup/"))
                    })
            })
            .count()
    }

    fn manifest(&self, id: &str) -> comfyd::manifest::Manifest {
        let path = self.outputs().join(id).join("manifest.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// After the daemon stopped: nothing of its ComfyUI is left.
    fn assert_no_comfyui(&self, pids: &[u32], daemon: &Daemon) {
        for &pid in pids {
            assert!(
                process_state(pid).is_none_or(|s| s == 'Z'),
                "ComfyUI process {pid} outlived the daemon (state {:?})\n{}",
                process_state(pid),
                daemon.log_text()
            );
        }
        let left = procs_on_port(self.port);
        assert!(
            left.is_empty(),
            "processes on port {} outlived the daemon: {left:?}\n{}",
            self.port,
            daemon.log_text()
        );
    }
}

/// A `comfyd` process, killed when dropped if it still runs.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_alive(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("comfyd exited {when}: {status:?}\n{}", self.log_text());
        }
    }

    /// SIGTERM, then the exit (within `limit`).
    async fn stop(&mut self, limit: Duration) -> ExitStatus {
        signal(self.child.id(), rustix::process::Signal::TERM);
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                t.elapsed() < limit,
                "comfyd did not stop within {} s of SIGTERM\n{}",
                limit.as_secs(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- comfyd log:\n{}", self.log_text());
        }
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let p = rustix::process::Pid::from_raw(pid as i32).unwrap_or_else(|| panic!("pid {pid}"));
    rustix::process::kill_process(p, sig).unwrap_or_else(|e| panic!("kill {pid}: {e}"));
}

/// Polls `cond` for at most 30 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not {what} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn restarts(m: &comfyd::manifest::Manifest) -> Vec<&comfyd::manifest::Intervention> {
    m.interventions
        .iter()
        .filter(|i| i.kind == "comfyui-restart")
        .collect()
}

/// `kill -9` of the supervised ComfyUI while a job executes: the supervisor starts it again
/// (a new process on the same port), the job is submitted again and finishes, its manifest
/// says ComfyUI restarted under it and why, and shutdown leaves no ComfyUI behind. The
/// warm-up workflow (from comfyd.toml, beside `--comfy-cmd`) runs after each start.
#[tokio::test]
async fn a_comfyui_killed_mid_job_is_restarted_and_the_job_finishes() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let config = rig.root().join("comfyd.toml");
    std::fs::write(&config, "[comfyui]\nwarmup = \"solid-color\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let cmd = shell_words::join(rig.sim_command(400));
    let mut daemon = rig.comfyd(&[
        "--config",
        &config.display().to_string(),
        "--comfy-cmd",
        &cmd,
        "--comfy-url",
        &rig.url(),
    ]);
    let first = rig.comfy_pid(&mut daemon, None).await;
    rig.wait_log(&mut daemon, "warm-up done", 1).await;
    assert_eq!(rig.warmups_at_comfyui().await, 1);
    drop_job(
        &rig.jobs(),
        "mug.toml",
        "workflow = \"solid-color\"\nid = \"mug\"\n",
    );
    rig.wait_running(&mut daemon).await;
    signal(first, rustix::process::Signal::KILL);
    let second = rig.comfy_pid(&mut daemon, Some(first)).await;
    assert!(
        rig.wait_file(&mut daemon, "mug.toml", Duration::from_secs(60))
            .await,
        "the job failed\n{}",
        daemon.log_text()
    );
    let m = rig.manifest("mug");
    let r = restarts(&m);
    assert_eq!(r.len(), 1, "{:?}", m.interventions);
    assert!(
        r[0].reason.contains("ComfyUI exited (signal: 9 (SIGKILL))"),
        "{}",
        r[0].reason
    );
    assert!(!m.outputs.is_empty());
    let log = daemon.log_text();
    assert!(
        log.contains("ComfyUI exited (signal: 9 (SIGKILL))")
            && log.contains(&rig.comfy_log().display().to_string()),
        "the daemon says what happened and where ComfyUI's output is\n{log}"
    );
    // Both starts wrote into the one log, each under comfyd's own line.
    let comfy_log = std::fs::read_to_string(rig.comfy_log()).unwrap_or_default();
    assert_eq!(
        comfy_log.matches("--- comfyd: start ").count(),
        2,
        "{comfy_log}"
    );
    assert!(comfy_log.contains("comfy-sim listening"), "{comfy_log}");
    // The new ComfyUI was warmed up too; the warm-up's outputs were not fetched.
    rig.wait_log(&mut daemon, "warm-up done", 2).await;
    assert_eq!(rig.warmups_at_comfyui().await, 1);
    assert_eq!(names(&rig.outputs()), ["mug"]);
    let status = daemon.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    rig.assert_no_comfyui(&[first, second], &daemon);
}

/// A prompt that stops making progress (the simulator frozen with SIGSTOP: it answers
/// nothing and sends nothing) restarts ComfyUI once the stall bound passes; the job runs
/// again on the new one. The settings come from `[comfyui]` in comfyd.toml, and the daemon
/// finds ComfyUI at the port its command names.
#[tokio::test]
async fn a_stalled_prompt_restarts_comfyui_after_the_bound() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let config = rig.root().join("comfyd.toml");
    let command: Vec<String> = rig
        .sim_command(300)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[comfyui]\ncommand = [{}]\nstall = 2\nlog = \"comfy.log\"\n",
            command.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = rig.comfyd(&["--config", &config.display().to_string()]);
    let first = rig.comfy_pid(&mut daemon, None).await;
    // Stalls are judged once ComfyUI has answered the supervisor (before that, the ready
    // timeout applies).
    rig.wait_log(&mut daemon, "ComfyUI is up", 1).await;
    drop_job(
        &rig.jobs(),
        "frozen.toml",
        "workflow = \"solid-color\"\nid = \"frozen\"\n",
    );
    rig.wait_running(&mut daemon).await;
    signal(first, rustix::process::Signal::STOP);
    let stalled_at = Instant::now();
    let second = rig.comfy_pid(&mut daemon, Some(first)).await;
    assert!(
        stalled_at.elapsed() >= Duration::from_secs(2),
        "restarted before the stall bound"
    );
    assert!(
        rig.wait_file(&mut daemon, "frozen.toml", Duration::from_secs(60))
            .await,
        "the job failed\n{}",
        daemon.log_text()
    );
    let m = rig.manifest("frozen");
    let r = restarts(&m);
    assert_eq!(r.len(), 1, "{:?}", m.interventions);
    assert_eq!(r[0].reason, "a running prompt made no progress for 2 s");
    // The frozen process is gone, not left stopped; the log is where the file says.
    assert!(
        process_state(first).is_none_or(|s| s == 'Z'),
        "the stalled ComfyUI is still there: {:?}",
        process_state(first)
    );
    let comfy_log = std::fs::read_to_string(rig.root().join("comfy.log")).unwrap_or_default();
    assert!(
        comfy_log.contains("--- comfyd: a running prompt made no progress for 2 s"),
        "{comfy_log}"
    );
    let status = daemon.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    rig.assert_no_comfyui(&[first, second], &daemon);
}

/// A command that exits at once is started again after pauses that grow (1, 2, 4 s), each
/// logged with its exit status and where its output went; the daemon stays up meanwhile and
/// stops at once on SIGTERM, pause or not.
#[tokio::test]
async fn a_command_that_exits_at_once_backs_off_and_the_daemon_stays_up() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let cmd = format!(
        "sh -c 'echo cannot start: no such model >&2; exit 3' --port {}",
        rig.port
    );
    let mut daemon = rig.comfyd(&[
        "--comfy-cmd",
        &cmd,
        "--comfy-url",
        &rig.url(),
        "--grace",
        "1",
    ]);
    let t = Instant::now();
    while !daemon.log_text().contains("starting it again in 4 s") {
        daemon.assert_alive("while its ComfyUI crashed");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no third restart\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = daemon.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ComfyUI exited (exit status: 3)"))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for (line, pause) in lines.iter().zip(["in 1 s", "in 2 s", "in 4 s"]) {
        assert!(line.contains(pause), "{line}");
        assert!(
            line.contains(&rig.comfy_log().display().to_string()),
            "{line}"
        );
    }
    let comfy_log = std::fs::read_to_string(rig.comfy_log()).unwrap_or_default();
    assert!(
        comfy_log.matches("cannot start: no such model").count() >= 3,
        "{comfy_log}"
    );
    // Jobs wait for a ComfyUI that is not there; they do not fail.
    drop_job(&rig.jobs(), "waits.toml", "workflow = \"solid-color\"\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(names(&rig.jobs().join("failed")).is_empty());
    daemon.assert_alive("after three crashes of its ComfyUI");
    // The job gets its second of grace; the pause before the next start is cut short.
    let status = daemon.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    rig.assert_no_comfyui(&[], &daemon);
}

/// Shutdown stops the whole process group, even a wrapper that ignores SIGTERM and a server
/// it started: after the grace period both get SIGKILL, and nothing is left in `/proc`.
#[tokio::test]
async fn shutdown_stops_comfyui_and_everything_it_started() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    // The shell ignores SIGTERM, and so does the simulator it starts (ignored signals stay
    // ignored across exec).
    let sim = shell_words::join(rig.sim_command(0));
    let cmd = shell_words::join(["sh", "-c", &format!("trap '' TERM; {sim} & wait")]);
    let mut daemon = rig.comfyd(&["--comfy-cmd", &cmd, "--comfy-url", &rig.url()]);
    let t = Instant::now();
    while !daemon.log_text().contains("ComfyUI is up") {
        daemon.assert_alive("while ComfyUI started");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids = procs_on_port(rig.port);
    assert_eq!(pids.len(), 2, "the shell and the simulator: {pids:?}");
    let status = daemon.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        daemon
            .log_text()
            .contains("ComfyUI did not stop on SIGTERM; killing it"),
        "{}",
        daemon.log_text()
    );
    rig.assert_no_comfyui(&pids, &daemon);
}

/// The poison-job guard: a job under which ComfyUI restarts three times (killed each time
/// the job executes) fails with the reason, instead of taking ComfyUI down forever; the
/// daemon and its ComfyUI carry on with the next job.
#[tokio::test]
async fn a_job_under_which_comfyui_restarts_three_times_fails() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let cmd = shell_words::join(rig.sim_command(400));
    let mut daemon = rig.comfyd(&[
        "--comfy-cmd",
        &cmd,
        "--comfy-url",
        &rig.url(),
        "--pipeline",
        "1",
    ]);
    let mut pid = rig.comfy_pid(&mut daemon, None).await;
    drop_job(
        &rig.jobs(),
        "poison.toml",
        "workflow = \"solid-color\"\nid = \"poison\"\n",
    );
    for _ in 0..3 {
        rig.wait_running(&mut daemon).await;
        signal(pid, rustix::process::Signal::KILL);
        pid = rig.comfy_pid(&mut daemon, Some(pid)).await;
    }
    assert!(
        !rig.wait_file(&mut daemon, "poison.toml", Duration::from_secs(60))
            .await,
        "the job should have failed\n{}",
        daemon.log_text()
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(rig.jobs().join("failed/poison.toml.error.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let message = report["failures"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("ComfyUI restarted 3 times while this job executed")
            && message.contains("signal: 9 (SIGKILL)"),
        "{report}"
    );
    // ComfyUI is up again and the next job runs.
    drop_job(
        &rig.jobs(),
        "next.toml",
        "workflow = \"solid-color\"\nid = \"next\"\n",
    );
    assert!(
        rig.wait_file(&mut daemon, "next.toml", Duration::from_secs(60))
            .await
    );
    assert!(restarts(&rig.manifest("next")).is_empty());
    let status = daemon.stop(Duration::from_secs(30)).await;
    assert!(!status.success(), "a job failed: exit status 1");
    rig.assert_no_comfyui(&[pid], &daemon);
}

/// A comfyd killed with SIGKILL cannot stop its ComfyUI, which keeps the port. The next comfyd
/// with the same settings finds it through the pid file beside the log, checks it is still
/// that process, stops it, and starts its own.
#[tokio::test]
async fn a_comfyui_left_by_a_killed_comfyd_is_stopped_by_the_next_one() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let cmd = shell_words::join(rig.sim_command(0));
    let args = ["--comfy-cmd", &cmd, "--comfy-url", &rig.url()];
    let mut daemon = rig.comfyd(&args);
    let left = rig.comfy_pid(&mut daemon, None).await;
    rig.wait_log(&mut daemon, "ComfyUI is up", 1).await;
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        process_state(left).is_some_and(|s| s != 'Z'),
        "the orphan runs on"
    );
    let mut daemon = rig.comfyd(&args);
    let own = rig.comfy_pid(&mut daemon, Some(left)).await;
    assert!(
        process_state(left).is_none_or(|s| s == 'Z'),
        "the orphan is gone"
    );
    rig.wait_log(&mut daemon, "ComfyUI is up", 1).await;
    assert!(
        daemon
            .log_text()
            .contains("stopping a ComfyUI left running by a comfyd that was killed"),
        "{}",
        daemon.log_text()
    );
    let status = daemon.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    rig.assert_no_comfyui(&[left, own], &daemon);
    assert!(!rig.root().join("logs/comfyui-gpu-0.pid").exists());
}

/// The handle, as the memory policy and the metrics use it: a restart asked for while
/// ComfyUI is up happens at once; the restart count, the up flag and the last restart's
/// reason follow; `stop` leaves no process.
#[tokio::test]
async fn a_restart_asked_through_the_handle_happens_and_is_counted() {
    use comfyd::supervisor::{Config, Supervisor};
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let mut config = Config::resolve(
        None,
        Some(&shell_words::join(rig.sim_command(0))),
        &examples(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|| panic!("a command"));
    config.log = Some(config.log_path(&rig.jobs(), 3));
    config.stop_grace = Duration::from_secs(2);
    let sup = Supervisor::start(config, &rig.url()).unwrap_or_else(|e| panic!("{e}"));
    let h = sup.handle();
    until("up", || h.is_up()).await;
    let first = h.pid().unwrap_or_default();
    assert_eq!((h.restarts(), h.last_restart()), (0, None));
    h.restart("memory did not come back after /free");
    until("restarted", || h.restarts() == 1 && h.is_up()).await;
    let second = h.pid().unwrap_or_default();
    assert_ne!(first, second);
    assert!(process_state(first).is_none_or(|s| s == 'Z'));
    let last = h.last_restart().unwrap_or_else(|| panic!("a last restart"));
    assert_eq!(
        last.reason,
        "restart asked for: memory did not come back after /free"
    );
    assert!(last.at_ms > 0);
    assert_eq!(h.log(), rig.root().join("logs/comfyui-gpu-3.log"));
    sup.stop().await;
    assert!(!h.is_up());
    assert_eq!(h.pid(), None);
    assert!(procs_on_port(rig.port).is_empty());
}

/// A ComfyUI that leaks a GiB per prompt on an 8 GiB device: once the leak and the model no
/// longer fit, the job runs out of memory, `/free` gives back the model but not the leak, and
/// the daemon restarts its ComfyUI; the job then runs. Every job finishes, the restarts are in
/// the manifests and in the metrics.
#[tokio::test]
async fn a_leaking_comfyui_is_restarted_when_freeing_does_not_give_enough_back() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new();
    let mut cmd = rig.sim_command(10);
    cmd.extend(
        [
            "--model",
            "checkpoints/v1-5-pruned-emaonly-fp16.safetensors",
            "--vram-mb",
            "8192",
            "--model-mb",
            "v1-5-pruned-emaonly-fp16.safetensors=3072",
            "--working-mb",
            "1024",
            "--leak-mb",
            "1024",
        ]
        .map(str::to_owned),
    );
    let metrics = free_port();
    let mut daemon = rig.comfyd(&[
        "--comfy-cmd",
        &shell_words::join(cmd),
        "--comfy-url",
        &rig.url(),
        "--metrics",
        &metrics.to_string(),
        "--pipeline",
        "1",
    ]);
    rig.comfy_pid(&mut daemon, None).await;
    let lines: String = (0..8)
        .map(|i| format!("{{\"id\": \"l{i}\", \"workflow\": \"txt2img\", \"inputs\": {{\"prompt\": \"a mug\", \"seed\": {i}}}}}\n"))
        .collect();
    drop_job(&rig.jobs(), "leak.jsonl", &lines);
    assert!(
        rig.wait_file(&mut daemon, "leak.jsonl", Duration::from_secs(120))
            .await,
        "a job failed\n{}",
        daemon.log_text()
    );
    let restarted: Vec<String> = (0..8)
        .flat_map(|i| {
            rig.manifest(&format!("l{i}"))
                .interventions
                .into_iter()
                .filter(|v| v.kind == "comfyui-restart")
                .map(|v| v.reason)
        })
        .collect();
    assert!(!restarted.is_empty(), "no restart\n{}", daemon.log_text());
    assert!(
        restarted
            .iter()
            .all(|r| r.contains("no memory came back after /free")),
        "{restarted:?}"
    );
    let text = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let count = text
        .lines()
        .find(|l| l.starts_with("comfyd_comfyui_restarts_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(-1.0);
    assert_eq!(count, restarted.len() as f64, "{text}");
    daemon.stop(Duration::from_secs(30)).await;
}
