//! What every scenario stands on: a workflow repository copied from `examples/`, a simulator
//! started in this process, `comfyd` run as a child process in a folder of its own, and reading
//! back what happened (job files finished, the simulator's timeline and submissions).
//!
//! Children are killed when their [`Daemon`] is dropped (a panic or Ctrl-C included), and every
//! folder lives under one temporary directory removed at the end.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use comfy_sim::{Sim, TimelineEntry, TimelineEvent, Timing};

use super::Res;

/// The three checkpoints scenario 1 spreads its jobs over; the simulator has them all.
pub const CHECKPOINTS: [&str; 3] = [
    "v1-5-pruned-emaonly-fp16.safetensors",
    "tiny-sd15.safetensors",
    "bench-xl.safetensors",
];

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// What one benchmark invocation shares between its scenarios.
pub struct Ctx {
    pub comfyd: Comfyd,
    /// Every run gets a folder under it.
    pub tmp: PathBuf,
    /// The workflow repository made by [`workflow_repo`].
    pub repo: PathBuf,
    /// Longest any one run may take.
    pub timeout: Duration,
    /// Flags added to every `comfyd run` (e.g. `--settle-ms`).
    pub extra: Vec<String>,
}

impl Ctx {
    /// A fresh folder for one run, named `name` (unique within the benchmark).
    pub fn run_dir(&self, name: &str) -> Res<RunDir> {
        RunDir::new(&self.tmp.join(name))
    }
}

/// Copies `examples/` to `dest` and adds what the scenarios need: the two extra checkpoints
/// declared in `comfyc.toml`, and `clip`, the txt2img graph as a workflow of class `video`.
pub fn workflow_repo(dest: &Path) -> Res<PathBuf> {
    copy_dir(&examples_dir(), dest)?;
    let config = dest.join("comfyc.toml");
    let mut text = std::fs::read_to_string(&config)?;
    for name in &CHECKPOINTS[1..] {
        text.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\nfolder = \"checkpoints\"\n"
        ));
    }
    std::fs::write(&config, text)?;
    let txt2img = std::fs::read_to_string(dest.join("workflows/txt2img.toml"))?;
    let clip = txt2img
        .replace("name = \"txt2img\"", "name = \"clip\"")
        .replace("class = \"image\"", "class = \"video\"");
    if !clip.contains("name = \"clip\"") || !clip.contains("class = \"video\"") {
        return Err("examples/workflows/txt2img.toml no longer has `name = \"txt2img\"` and `class = \"image\"`: update the benchmark's `clip` workflow".into());
    }
    std::fs::write(dest.join("workflows/clip.toml"), clip)?;
    Ok(dest.to_path_buf())
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Starts a simulator with the examples' catalogue and every checkpoint and LoRA the scenarios
/// use. Returns it with an instant taken just before it started: its timeline's offsets count
/// from (very slightly after) that instant.
pub async fn start_sim(root: &Path, timing: Timing) -> Res<(Sim, Instant)> {
    start_sim_with(root, timing, None).await
}

/// [`start_sim`] with a GPU memory model (`None`: the recorded CPU device, no accounting).
pub async fn start_sim_with(
    root: &Path,
    timing: Timing,
    memory: Option<comfy_sim::Memory>,
) -> Res<(Sim, Instant)> {
    let text = std::fs::read_to_string(examples_dir().join("nodes/object_info.json"))?;
    let mut config = comfy_sim::Config::new(serde_json::from_str(&text)?, root);
    config.models.insert(
        "checkpoints".into(),
        CHECKPOINTS.iter().map(|s| (*s).to_owned()).collect(),
    );
    config.models.insert(
        "loras".into(),
        vec![
            "add-detail.safetensors".into(),
            "film-grain.safetensors".into(),
        ],
    );
    config.timing = timing;
    config.memory = memory;
    let t0 = Instant::now();
    let sim = comfy_sim::start(config).await?;
    Ok((sim, t0))
}

/// The `comfyd` binary under test.
pub struct Comfyd {
    pub path: PathBuf,
    /// `comfyd run --help`, to tell which flags this build knows.
    help: String,
}

impl Comfyd {
    /// `explicit`, else `comfyd` in the folder above this example's executable
    /// (`target/<profile>/comfyd`).
    pub fn locate(explicit: Option<PathBuf>) -> Res<Comfyd> {
        let path = match explicit {
            Some(p) => p,
            None => {
                let exe = std::env::current_exe()?;
                let profile = exe
                    .parent()
                    .and_then(Path::parent)
                    .ok_or("cannot tell where this example was built")?;
                profile.join(format!("comfyd{}", std::env::consts::EXE_SUFFIX))
            }
        };
        // Absolute: it runs from each run's folder.
        let path = std::path::absolute(&path)?;
        if !path.is_file() {
            return Err(format!(
                "no comfyd binary at {}\nhelp: build it first: `cargo build --release -p comfyd` (or `cargo build -p comfyd` for a debug run), or pass `--comfyd PATH`",
                path.display()
            )
            .into());
        }
        let out = Command::new(&path).args(["run", "--help"]).output()?;
        Ok(Comfyd {
            path,
            help: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// A warning when a source file of the binary (the daemon's or the compiler's) is newer
    /// than the binary: cargo builds examples without rebuilding the package's binaries.
    pub fn staleness(&self) -> Option<String> {
        let built = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()?;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let newer = [root.join("src"), root.join("../compiler/src")]
            .iter()
            .filter_map(|dir| newest(dir))
            .any(|t| t > built);
        newer.then(|| {
            format!(
                "warning: {} is older than its sources\nhelp: rebuild it: `cargo build --release -p comfyd` (or without `--release` for a debug run)",
                self.path.display()
            )
        })
    }

    /// Whether `comfyd run` accepts `flag`.
    pub fn supports(&self, flag: &str) -> bool {
        self.help.contains(flag)
    }

    /// The binary's path and how long ago it was built, for the report's header.
    pub fn describe(&self) -> String {
        let age = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| match d.as_secs() {
                s if s < 120 => format!("built {s} s ago"),
                s if s < 7200 => format!("built {} min ago", s / 60),
                s => format!("built {} h ago", s / 3600),
            })
            .unwrap_or_default();
        format!("{} ({age})", self.path.display())
    }
}

/// The `comfy-sim` binary scenario 8 runs: `explicit`, else `comfy-sim` beside `comfyd`. A
/// warning comes with it when a source file of the simulator is newer than the binary.
pub fn locate_sim(explicit: Option<PathBuf>, comfyd: &Comfyd) -> Res<(PathBuf, Option<String>)> {
    let path = match explicit {
        Some(p) => p,
        None => comfyd
            .path
            .with_file_name(format!("comfy-sim{}", std::env::consts::EXE_SUFFIX)),
    };
    // Absolute: comfyd runs it from the run's folder.
    let path = std::path::absolute(&path)?;
    if !path.is_file() {
        return Err(format!(
            "no comfy-sim binary at {}\nhelp: build it first: `cargo build --release -p comfy-sim` (or `cargo build -p comfy-sim` for a debug run), or pass `--comfy-sim PATH`",
            path.display()
        )
        .into());
    }
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sim/src");
    let stale = match (built, newest(&sources)) {
        (Some(b), Some(t)) => t > b,
        _ => false,
    };
    let warning = stale.then(|| {
        format!(
            "warning: {} is older than its sources\nhelp: rebuild it: `cargo build --release -p comfy-sim` (or without `--release` for a debug run)",
            path.display()
        )
    });
    Ok((path, warning))
}

/// The newest modification time of a file under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let t = if e.file_type().ok()?.is_dir() {
            newest(&e.path())
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// The folders of one run: `jobs/`, `outputs/`, and a staging folder job files are written in
/// before they are renamed into the inbox.
pub struct RunDir {
    pub root: PathBuf,
    pub jobs: PathBuf,
    pub outputs: PathBuf,
    staging: PathBuf,
}

impl RunDir {
    fn new(root: &Path) -> Res<RunDir> {
        let run = RunDir {
            root: root.to_path_buf(),
            jobs: root.join("jobs"),
            outputs: root.join("outputs"),
            staging: root.join("staging"),
        };
        std::fs::create_dir_all(run.inbox())?;
        std::fs::create_dir_all(&run.staging)?;
        Ok(run)
    }

    pub fn inbox(&self) -> PathBuf {
        self.jobs.join("inbox")
    }

    /// Writes a job file elsewhere, then renames it into the inbox, as users should.
    pub fn drop_job(&self, name: &str, text: &str) -> Res<()> {
        let tmp = self.staging.join(name);
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.inbox().join(name))?;
        Ok(())
    }

    /// Job files that reached `done/` and `failed/` (error reports not counted).
    pub fn finished(&self) -> (usize, usize) {
        (
            count_job_files(&self.jobs.join("done")),
            count_job_files(&self.jobs.join("failed")),
        )
    }

    /// How many of `ids` have `outputs/ID/manifest.json`.
    pub fn manifests<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        ids.into_iter()
            .filter(|id| self.outputs.join(id).join("manifest.json").is_file())
            .count()
    }

    /// Spawns `comfyd run` on this run's folders against `url`, with `args` after the common
    /// ones, in this run's folder (so no stray `comfyd.toml` is picked up), logging to a file.
    pub fn spawn(&self, ctx: &Ctx, url: &str, gpu: u32, args: &[String]) -> Res<Daemon> {
        let log = self.root.join(format!("comfyd-gpu{gpu}.log"));
        let file = File::create(&log)?;
        let mut cmd = Command::new(&ctx.comfyd.path);
        cmd.arg("run")
            .arg("--jobs")
            .arg(&self.jobs)
            .arg("--workflows")
            .arg(&ctx.repo)
            .arg("--outputs")
            .arg(&self.outputs)
            .arg("--comfy-url")
            .arg(url)
            .arg("--gpu")
            .arg(gpu.to_string())
            .args(&ctx.extra)
            .args(args)
            .current_dir(&self.root)
            .env("NO_COLOR", "1")
            // comfyd reads COMFYD_LOG; a supervised simulator logs its starts at its default.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if std::env::var_os("COMFYD_LOG").is_none() {
            cmd.env("COMFYD_LOG", "warn");
        }
        Ok(Daemon {
            child: cmd.spawn()?,
            gpu,
            log,
        })
    }

    /// Waits until `want` job files are in `done/` or `failed/`; returns when that was seen
    /// (polled every 10 ms). Fails when a daemon exits or `timeout` passes.
    pub async fn wait_finished(
        &self,
        want: usize,
        daemons: &mut [Daemon],
        timeout: Duration,
    ) -> Res<Instant> {
        let start = Instant::now();
        loop {
            let (done, failed) = self.finished();
            if done + failed >= want {
                return Ok(Instant::now());
            }
            for d in daemons.iter_mut() {
                d.check_alive()?;
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "timed out after {} s: {} of {want} job files finished",
                    timeout.as_secs(),
                    done + failed
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Entries of a folder that are job files: not hidden, not an `.error.json` report.
pub fn count_job_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with('.') && !name.ends_with(".error.json")
                })
                .count()
        })
        .unwrap_or(0)
}

/// A `comfyd run` child process; killed when dropped.
pub struct Daemon {
    child: Child,
    pub gpu: u32,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with the log's end when the process has exited.
    pub fn check_alive(&mut self) -> Res<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "comfyd (gpu {}) exited with {status}:\n{}",
                self.gpu,
                self.log_tail(12)
            )
            .into()),
        }
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the daemon has written its status file `jobs/status/gpu-N.json` (it does so
    /// once its workflows are loaded and ComfyUI answered). A daemon that never writes one is
    /// taken as ready after `timeout`, with a warning; one that exits is an error.
    pub async fn ready(&mut self, jobs: &Path, timeout: Duration) -> Res<()> {
        let status = jobs.join("status").join(format!("gpu-{}.json", self.gpu));
        let start = Instant::now();
        while !status.is_file() {
            self.check_alive()?;
            if start.elapsed() > timeout {
                eprintln!(
                    "warning: comfyd (gpu {}) wrote no {} within {} s; going on",
                    self.gpu,
                    status.display(),
                    timeout.as_secs()
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s; returns the exit status.
    pub async fn stop(mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        if term.is_ok_and(|s| s.success()) {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Some(status);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops every daemon (see [`Daemon::stop`]).
pub async fn stop_all(daemons: Vec<Daemon>) {
    for d in daemons {
        d.stop().await;
    }
}

/// Model loads in a simulator's timeline.
pub fn model_loads(timeline: &[TimelineEntry]) -> usize {
    timeline
        .iter()
        .filter(|e| matches!(e.event, TimelineEvent::ModelLoad { .. }))
        .count()
}

/// The job id in a save prefix `comfyd/ID/...`.
pub fn job_of_prefix(prefix: &str) -> Option<&str> {
    let mut parts = prefix.split('/');
    match (parts.next(), parts.next()) {
        (Some("comfyd"), Some(id)) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// Each accepted prompt's job id (from its save prefixes), by prompt id.
pub fn jobs_by_prompt(sim: &Sim) -> HashMap<String, String> {
    sim.submitted_prefixes()
        .into_iter()
        .filter_map(|(prompt, prefixes)| {
            let job = prefixes.iter().find_map(|p| job_of_prefix(p))?.to_owned();
            Some((prompt, job))
        })
        .collect()
}

/// How many times each job was submitted, over all `sims`.
pub fn submissions_per_job<'a>(sims: impl IntoIterator<Item = &'a Sim>) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for sim in sims {
        for job in jobs_by_prompt(sim).into_values() {
            *count.entry(job).or_insert(0) += 1;
        }
    }
    count
}

/// When each prompt started and finished at the simulator, in the order they started.
pub fn prompt_spans(timeline: &[TimelineEntry]) -> Vec<(String, Duration, Duration)> {
    let mut started: Vec<(String, Duration)> = Vec::new();
    let mut finished: HashMap<&str, Duration> = HashMap::new();
    for e in timeline {
        match e.event {
            TimelineEvent::Started => started.push((e.prompt_id.clone(), e.at)),
            TimelineEvent::Finished { .. } => {
                finished.entry(&e.prompt_id).or_insert(e.at);
            }
            _ => {}
        }
    }
    started.sort_by_key(|(_, at)| *at);
    started
        .into_iter()
        .filter_map(|(p, s)| {
            let f = *finished.get(p.as_str())?;
            Some((p, s, f))
        })
        .collect()
}

/// What the daemon did for the jobs `ids` besides running them, counted by kind (`free`,
/// `oom-retry`, `comfyui-restart`): the `interventions` of their manifests, and those listed in
/// the details of the failures in the run's error reports (a failed job has no manifest).
pub fn interventions(run: &RunDir, ids: &[String]) -> BTreeMap<String, usize> {
    fn count(list: &serde_json::Value, into: &mut BTreeMap<String, usize>) {
        for i in list.as_array().into_iter().flatten() {
            if let Some(kind) = i.get("kind").and_then(serde_json::Value::as_str) {
                *into.entry(kind.to_owned()).or_insert(0) += 1;
            }
        }
    }
    let read = |path: &Path| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    };
    let mut kinds = BTreeMap::new();
    for id in ids {
        if let Some(m) = read(&run.outputs.join(id).join("manifest.json")) {
            count(&m["interventions"], &mut kinds);
        }
    }
    let reports = std::fs::read_dir(run.jobs.join("failed"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".error.json"));
    for e in reports {
        let Some(report) = read(&e.path()) else {
            continue;
        };
        for f in report["failures"].as_array().into_iter().flatten() {
            for d in f["details"].as_array().into_iter().flatten() {
                count(d, &mut kinds);
            }
        }
    }
    kinds
}
