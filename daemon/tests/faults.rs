//! Faults as regression tests (issue 7): the real `comfyd` binary, several processes at once,
//! killed, paused, cut off from ComfyUI and starved of disk, against an in-process simulator.
//!
//! Executions are counted where they happen, at the simulator (`Sim::submitted_prefixes`: a
//! job `ID`'s save prefixes start with `comfyd/ID/`), not only from manifests. Every wait has
//! a limit, every child is killed when its guard drops (a panicking test included), and the
//! tests take one lock so their timings hold when the harness runs them in parallel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use comfy_sim::{Fault, Sim, TimelineEvent, Timing};
use common::{drop_job, examples, names, start_sim};

/// One test at a time: several daemons per test already share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A temporary root with `jobs/`, `outputs/`, `inputs/`, daemon logs and a simulator.
struct Rig {
    tmp: tempfile::TempDir,
    sim: Sim,
}

impl Rig {
    async fn new(timing: Timing) -> Rig {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = start_sim(&tmp.path().join("sim"), timing).await;
        for d in ["jobs", "outputs", "inputs", "logs"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap_or_else(|e| panic!("{e}"));
        }
        Rig { tmp, sim }
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

    fn inputs(&self) -> PathBuf {
        self.root().join("inputs")
    }

    /// Starts `comfyd run` on this rig; stderr goes to `logs/NAME.log`.
    fn comfyd(&self, name: &str, gpu: u32, extra: &[&str]) -> Daemon {
        self.comfyd_limited(name, gpu, extra, None)
    }

    /// Like [`Rig::comfyd`], with the address space limited to `limit_kib` when given, so a
    /// daemon that tries to allocate gigabytes fails alone instead of starving the machine.
    fn comfyd_limited(
        &self,
        name: &str,
        gpu: u32,
        extra: &[&str],
        limit_kib: Option<u64>,
    ) -> Daemon {
        let log = self.root().join("logs").join(format!("{name}.log"));
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), "--jobs".into()];
        args.push(self.jobs().into());
        args.push("--workflows".into());
        args.push(examples().into());
        args.push("--outputs".into());
        args.push(self.outputs().into());
        args.push("--inputs".into());
        args.push(self.inputs().into());
        args.push("--comfy-url".into());
        args.push(self.sim.url().into());
        args.push("--gpu".into());
        args.push(gpu.to_string().into());
        args.extend(extra.iter().map(Into::into));
        let mut cmd = match limit_kib {
            // `exec` keeps the pid, so signals reach comfyd itself.
            Some(kib) => {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    "ulimit -v \"$1\" || exit 97; shift; exec \"$@\"",
                    "sh",
                ])
                .arg(kib.to_string())
                .arg(env!("CARGO_BIN_EXE_comfyd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_comfyd")),
        };
        let child = cmd
            .args(&args)
            // `COMFYD_FAULTS_LOG=comfyd=debug` makes the daemons say more (their logs are printed
            // when a test fails).
            .env(
                "COMFYD_LOG",
                std::env::var("COMFYD_FAULTS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting comfyd: {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Writes a job file elsewhere with its modification time `age` in the past, then renames
    /// it into `inbox/` (a rename keeps the time): a backlog that waited while no daemon ran.
    fn drop_aged(&self, name: &str, text: &str, age: Duration) {
        std::fs::create_dir_all(self.jobs().join("inbox")).unwrap_or_else(|e| panic!("{e}"));
        let tmp = self.root().join(format!(".{name}.aged"));
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
        let f = OpenOptions::new()
            .write(true)
            .open(&tmp)
            .unwrap_or_else(|e| panic!("{e}"));
        f.set_modified(SystemTime::now() - age)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        std::fs::rename(&tmp, self.jobs().join("inbox").join(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Where things are, for failure messages.
    fn state(&self) -> String {
        let jobs = self.jobs();
        let mut s = String::new();
        for d in ["inbox", "queue", "running", "done", "failed"] {
            let t = tree(&jobs.join(d));
            let shown: Vec<&String> = t.iter().take(12).collect();
            s.push_str(&format!("{d}/ ({}): {shown:?}\n", t.len()));
        }
        s.push_str(&format!(
            "manifests: {}, prompts accepted by the simulator: {}\n",
            manifests(&self.outputs()).len(),
            self.sim.submitted_prefixes().len()
        ));
        for report in names(&jobs.join("failed"))
            .iter()
            .filter(|n| n.ends_with(".error.json"))
            .take(3)
        {
            let text =
                std::fs::read_to_string(jobs.join("failed").join(report)).unwrap_or_default();
            s.push_str(&format!("{report}: {}\n", clip(&text, 800)));
        }
        s
    }

    /// Polls `cond` every 20 ms for at most `limit`; panics with the rig's state on timeout.
    async fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let t = Instant::now();
        while !cond() {
            if t.elapsed() > limit {
                panic!(
                    "timed out after {:.1} s waiting until {what}\n{}",
                    limit.as_secs_f64(),
                    self.state()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every file in `files` is in `done/`, every id in `ids` has a manifest and
    /// `queue/` is empty; stops early with the reports when anything lands in `failed/`.
    async fn wait_finished(&self, files: &[String], ids: &BTreeSet<String>, limit: Duration) {
        let (jobs, outputs) = (self.jobs(), self.outputs());
        let t = Instant::now();
        loop {
            let failed = names(&jobs.join("failed"));
            assert!(failed.is_empty(), "jobs failed\n{}", self.state());
            let done = job_files(&jobs.join("done"));
            let finished = files.iter().all(|f| done.contains(f))
                && ids
                    .iter()
                    .all(|id| outputs.join(id).join("manifest.json").is_file())
                && tree(&jobs.join("queue")).is_empty();
            if finished {
                return;
            }
            if t.elapsed() > limit {
                panic!(
                    "timed out after {:.1} s waiting for {} files and {} jobs to finish\n{}",
                    limit.as_secs_f64(),
                    files.len(),
                    ids.len(),
                    self.state()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end state every test wants: each file in `done/` and nothing else anywhere, each
    /// job's manifest naming real outputs, each job submitted exactly once.
    fn assert_finished(&self, files: &[String], ids: &BTreeSet<String>) {
        let jobs = self.jobs();
        let state = self.state();
        let mut want: Vec<String> = files.to_vec();
        want.sort();
        assert_eq!(job_files(&jobs.join("done")), want, "done/\n{state}");
        assert!(names(&jobs.join("failed")).is_empty(), "failed/\n{state}");
        assert!(
            tree(&jobs.join("queue")).is_empty(),
            "orphans in queue/\n{state}"
        );
        assert!(
            tree(&jobs.join("running")).is_empty(),
            "leftovers in running/\n{state}"
        );
        let inbox: Vec<String> = names(&jobs.join("inbox"))
            .into_iter()
            .filter(|n| is_job_file(n))
            .collect();
        assert!(
            inbox.is_empty(),
            "job files left in inbox/: {inbox:?}\n{state}"
        );
        for id in ids {
            check_manifest(&self.outputs(), id);
        }
        assert_each_once(&self.sim, ids);
    }
}

/// A `comfyd` process, killed (SIGKILL) and reaped when dropped if it still runs.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        assert!(
            self.try_signal(sig),
            "kill {sig} {} ({}) failed",
            self.pid(),
            self.name
        );
    }

    fn try_signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("{e}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the daemon is no longer running.
    fn assert_alive(&mut self, when: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited {when}: {status:?}\nlog:\n{}",
                self.name,
                clip(&self.log_text(), 3000)
            );
        }
    }

    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                t.elapsed() < limit,
                "{} did not exit within {} s",
                self.name,
                limit.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (after a SIGCONT in case it is stopped), then waits for the exit.
    async fn stop(&mut self) -> ExitStatus {
        if self.exited().is_none() {
            self.try_signal("-CONT");
            self.try_signal("-TERM");
        }
        self.wait_exit(Duration::from_secs(20)).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() || std::env::var_os("COMFYD_FAULTS_LOGS").is_some() {
            eprintln!("--- {} log:\n{}", self.name, clip(&self.log_text(), 4000));
        }
    }
}

/// A small tmpfs, unmounted when dropped (declare it before the daemons that use it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `dir`; `Err` says why not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running `mount`: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(format!(
                "`mount -t tmpfs` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Fills the file system with `filler` until a write fails (no space left).
    fn fill(&self, filler: &Path) {
        let mut f = File::create(filler).unwrap_or_else(|e| panic!("{e}"));
        let block = vec![0x5au8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.sync_all();
        assert!(
            written > 0,
            "the filler wrote nothing on {}",
            self.0.display()
        );
        let mut probe = File::create(self.0.join(".probe")).ok();
        let probe_ok = probe
            .as_mut()
            .is_some_and(|p| p.write_all(&block).is_ok() && p.sync_all().is_ok());
        let _ = std::fs::remove_file(self.0.join(".probe"));
        assert!(
            !probe_ok,
            "{} still takes 64 KiB after filling",
            self.0.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Paths of every file below `dir`, relative to it (empty when `dir` does not exist).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn is_job_file(name: &str) -> bool {
    [".toml", ".json", ".jsonl"]
        .iter()
        .any(|ext| name.ends_with(ext))
        && !name.ends_with(".error.json")
}

/// Job files in a folder (reports left out), sorted.
fn job_files(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| is_job_file(n)).collect()
}

/// Job ids with a manifest.
fn manifests(outputs: &Path) -> Vec<String> {
    names(outputs)
        .into_iter()
        .filter(|j| outputs.join(j).join("manifest.json").is_file())
        .collect()
}

fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = s.len() - n;
    while !s.is_char_boundary(end) {
        end += 1;
    }
    format!("...{}", &s[end..])
}

/// How many prompts the simulator accepted for each job id.
fn submissions(sim: &Sim) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, prefixes) in sim.submitted_prefixes() {
        let ids: BTreeSet<&str> = prefixes
            .iter()
            .filter_map(|p| p.strip_prefix("comfyd/"))
            .filter_map(|rest| rest.split('/').next())
            .collect();
        for id in ids {
            *counts.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Every id in `ids` was submitted exactly once, and nothing else was.
fn assert_each_once(sim: &Sim, ids: &BTreeSet<String>) {
    let counts = submissions(sim);
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let never: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    let unknown: Vec<&String> = counts.keys().filter(|id| !ids.contains(*id)).collect();
    assert!(
        twice.is_empty() && never.is_empty() && unknown.is_empty(),
        "each job should run once at ComfyUI: {} of {} ran more than once {twice:?}; never \
         submitted: {never:?}; unknown ids: {unknown:?}",
        twice.len(),
        ids.len()
    );
}

/// The job's manifest names it and lists outputs that exist with the recorded, non-zero size.
fn check_manifest(outputs: &Path, id: &str) {
    let dir = outputs.join(id);
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .unwrap_or_else(|e| panic!("{id}: manifest.json: {e}"));
    let m: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{id}: manifest.json: {e}"));
    assert_eq!(m["job"]["id"], id, "{id}: {m}");
    let files = m["outputs"].as_array().cloned().unwrap_or_default();
    assert!(!files.is_empty(), "{id}: no outputs in {m}");
    for o in files {
        let path = o["path"].as_str().unwrap_or_default();
        let len = std::fs::metadata(dir.join(path))
            .unwrap_or_else(|e| panic!("{id}: output `{path}`: {e}"))
            .len();
        assert!(len > 0, "{id}: output `{path}` is empty");
        assert_eq!(Some(len), o["size"].as_u64(), "{id}: output `{path}`");
    }
}

/// A one-job TOML file for `solid-color`; its job id is the file's stem.
fn solid(color: u32) -> String {
    format!("workflow = \"solid-color\"\n[inputs]\ncolor = {color}\nwidth = 8\nheight = 8\n")
}

/// One JSONL line for `solid-color` with an explicit id.
fn solid_line(id: &str, color: u32) -> String {
    format!(
        "{{\"workflow\": \"solid-color\", \"id\": \"{id}\", \"inputs\": {{\"color\": {color}, \"width\": 8, \"height\": 8}}}}\n"
    )
}

/// A JSONL of `n` jobs `PREFIX000`, `PREFIX001`, ...; returns the text and the ids.
fn jsonl(prefix: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:03}")).collect();
    let text = ids
        .iter()
        .enumerate()
        .map(|(i, id)| solid_line(id, i as u32))
        .collect();
    (text, ids)
}

/// Some ImageInvert time, the rest instant: a `solid-color` job takes about `ms`.
fn invert_ms(ms: u64) -> Timing {
    Timing {
        class_ms: [("ImageInvert".to_owned(), ms)].into(),
        ..Timing::default()
    }
}

fn png_bytes(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..width * height * 3).map(|_| rng.u8(..)).collect();
        w.write_image_data(&data).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

fn set(ids: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    ids.into_iter().collect()
}

/// The prompt id of the first accepted prompt for job `id`.
fn prompt_of(sim: &Sim, id: &str) -> Option<String> {
    let want = format!("comfyd/{id}/");
    sim.submitted_prefixes()
        .into_iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| p.starts_with(&want)))
        .map(|(prompt, _)| prompt)
}

fn has_event(sim: &Sim, prompt: &str, pred: impl Fn(&TimelineEvent) -> bool) -> bool {
    sim.timeline()
        .iter()
        .any(|e| e.prompt_id == prompt && pred(&e.event))
}

// 1. An aged backlog and four daemons: claims must not go by modification times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_daemons_on_an_aged_backlog_run_every_job_once() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(15)).await;
    let age = Duration::from_secs(600);
    let (text, mut ids) = jsonl("a", 100);
    rig.drop_aged("backlog.jsonl", &text, age);
    let mut files = vec!["backlog.jsonl".to_owned()];
    for i in 0..20 {
        let name = format!("f{i:02}.toml");
        rig.drop_aged(&name, &solid(1000 + i), age);
        ids.push(format!("f{i:02}"));
        files.push(name);
    }
    let ids = set(ids);
    let mut daemons: Vec<Daemon> = (0..4)
        .map(|g| rig.comfyd(&format!("d{g}"), g, &["--lease-ttl", "2"]))
        .collect();
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    for d in &mut daemons {
        d.assert_alive("before the end");
        d.stop().await;
    }
    rig.assert_finished(&files, &ids);
}

// 2. A daemon frozen past its lease must not run, write or move what a survivor took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_past_the_lease_then_sigcont_runs_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(300)).await;
    let jobs = rig.jobs();
    let (text, mut ids) = jsonl("p", 6);
    drop_job(&jobs, "pair.jsonl", &text);
    let mut files = vec!["pair.jsonl".to_owned()];
    for i in 0..10 {
        let name = format!("s{i:02}.toml");
        drop_job(&jobs, &name, &solid(2000 + i));
        ids.push(format!("s{i:02}"));
        files.push(name);
    }
    let ids = set(ids);
    let mut a = rig.comfyd("a", 0, &["--lease-ttl", "2"]);
    rig.wait_until("the first daemon submits", Duration::from_secs(15), || {
        !rig.sim.submitted_prefixes().is_empty()
    })
    .await;
    let mut b = rig.comfyd("b", 1, &["--lease-ttl", "2"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.assert_alive("before SIGSTOP");
    a.signal("-STOP");
    // Past two lease lifetimes: the survivor takes the frozen daemon's jobs over.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    a.signal("-CONT");
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    // Give a resumed daemon that missed its fence time to show a second run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.assert_alive("after SIGCONT");
    b.assert_alive("at the end");
    a.stop().await;
    b.stop().await;
    rig.assert_finished(&files, &ids);
    for d in [&a, &b] {
        let log = d.log_text();
        for bad in ["could not move", "panicked"] {
            assert!(
                !log.contains(bad),
                "{} logged `{bad}`:\n{}",
                d.name,
                clip(&log, 3000)
            );
        }
    }
}

// 3. kill -9 at random moments, right after a submission and during expansion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let seed: u64 = std::env::var("COMFYD_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("kill -9 schedule seed: {seed} (set COMFYD_FAULTS_SEED to change it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rig = Rig::new(invert_ms(40)).await;
    let jobs = rig.jobs();
    let mut ids = Vec::new();
    let mut files = Vec::new();
    for i in 0..40 {
        let name = format!("k{i:02}.toml");
        drop_job(&jobs, &name, &solid(3000 + i));
        ids.push(format!("k{i:02}"));
        files.push(name);
    }
    let big = [jsonl("b", 120), jsonl("c", 40)];
    for (_, more) in &big {
        ids.extend(more.iter().cloned());
    }
    files.push("big.jsonl".to_owned());
    files.push("big2.jsonl".to_owned());
    let ids = set(ids);
    let mut log = Vec::new();
    for round in 0..10 {
        let mut d = rig.comfyd(&format!("r{round}"), 0, &["--lease-ttl", "2"]);
        let mut what = String::new();
        if round == 1 || round == 6 {
            // During expansion: the big file is dropped, taken, and the daemon dies with it.
            let (name, text) = if round == 1 {
                ("big.jsonl", &big[0].0)
            } else {
                ("big2.jsonl", &big[1].0)
            };
            // Once it submits, the restarted daemon watches the inbox (3 s at most).
            let before = rig.sim.submitted_prefixes().len();
            let t = Instant::now();
            while rig.sim.submitted_prefixes().len() == before
                && t.elapsed() < Duration::from_secs(3)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop_job(&jobs, name, text);
            let inbox = jobs.join("inbox").join(name);
            rig.wait_until("the big file is taken", Duration::from_secs(10), || {
                !inbox.exists()
            })
            .await;
            let extra = rng.u64(0..15);
            tokio::time::sleep(Duration::from_millis(extra)).await;
            what = format!("{extra} ms after `{name}` left the inbox");
        } else if round % 2 == 0 {
            // Between submit and record: the moment ComfyUI accepts a prompt.
            let before = rig.sim.submitted_prefixes().len();
            let t = Instant::now();
            while rig.sim.submitted_prefixes().len() == before
                && t.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            what = format!("right after submission #{}", before + 1);
        } else {
            let ms = rng.u64(150..1500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            what.push_str(&format!("{ms} ms after the start"));
        }
        d.assert_alive("before its kill");
        d.kill9();
        log.push(format!("round {round}: killed {what}"));
    }
    eprintln!("{}", log.join("\n"));
    let mut last = rig.comfyd("last", 0, &["--lease-ttl", "2", "--until-idle"]);
    let status = last.wait_exit(Duration::from_secs(40)).await;
    assert!(
        status.success(),
        "the last daemon: {status:?}\n{}\nlog:\n{}",
        rig.state(),
        clip(&last.log_text(), 3000)
    );
    rig.assert_finished(&files, &ids);
}

// 4a. ComfyUI goes away while a job's input image uploads: the job waits, it does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_down_during_upload_the_job_waits_and_finishes() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(50)).await;
    let jobs = rig.jobs();
    std::fs::write(rig.inputs().join("pic.png"), png_bytes(64, 64, 1))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5"]);
    // A first job shows the daemon is up and connected.
    drop_job(&jobs, "warm.toml", &solid(1));
    rig.wait_until("the warm-up job is done", Duration::from_secs(20), || {
        rig.outputs().join("warm/manifest.json").is_file()
    })
    .await;
    // From the next request on ComfyUI hangs; going down then cuts the upload in flight.
    rig.sim.inject(Fault::Stall(Duration::from_secs(3)));
    drop_job(
        &jobs,
        "up.toml",
        "workflow = \"invert-image\"\n[inputs]\nimage = \"pic.png\"\n",
    );
    let inbox = jobs.join("inbox/up.toml");
    rig.wait_until("the job is taken", Duration::from_secs(10), || {
        !inbox.exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        prompt_of(&rig.sim, "up").is_none(),
        "the fault came too late: the job was already submitted"
    );
    rig.sim.go_down().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_alive("while ComfyUI was down");
    assert!(
        names(&jobs.join("failed")).is_empty(),
        "a job failed while ComfyUI was down\n{}",
        rig.state()
    );
    rig.sim.come_back().await;
    let files = ["warm.toml".to_owned(), "up.toml".to_owned()];
    let ids = set(["warm".to_owned(), "up".to_owned()]);
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    d.stop().await;
    rig.assert_finished(&files, &ids);
}

// 4b. ComfyUI goes away after the prompt finished, before the daemon has its outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_down_while_a_finished_prompt_is_collected_the_job_waits_and_finishes() {
    down_after_the_end(false).await;
}

// 4c. The same, later: the history is read and the outputs are downloading. Assumes the
// daemon reads `/history/ID` after the end and then fetches the outputs, with no other
// history request while the prompt runs (else the slow answer lands elsewhere and the
// test says the fault came too late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comfyui_down_during_download_the_job_waits_and_finishes() {
    down_after_the_end(true).await;
}

/// ComfyUI finishes job `dl`, then goes down for 2 s while the daemon collects it: right
/// after the end, or (`downloading`) once the history has answered and outputs are fetched.
async fn down_after_the_end(downloading: bool) {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(800)).await;
    let jobs = rig.jobs();
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5"]);
    drop_job(&jobs, "warm.toml", &solid(1));
    rig.wait_until("the warm-up job is done", Duration::from_secs(20), || {
        rig.outputs().join("warm/manifest.json").is_file()
    })
    .await;
    drop_job(&jobs, "dl.toml", &solid(2));
    let mut prompt = None;
    rig.wait_until("the job is submitted", Duration::from_secs(15), || {
        prompt = prompt_of(&rig.sim, "dl");
        prompt.is_some()
    })
    .await;
    let prompt = prompt.unwrap_or_default();
    rig.wait_until("the job starts", Duration::from_secs(10), || {
        has_event(&rig.sim, &prompt, |e| *e == TimelineEvent::Started)
    })
    .await;
    if downloading {
        // The history request after the end answers 1.5 s late; the outputs come next.
        rig.sim
            .inject(Fault::SlowHistory(Duration::from_millis(1500)));
    } else {
        // The prompt runs 800 ms more; the next request (after the end, at the latest)
        // starts a 4 s hang that covers the collection.
        rig.sim.inject(Fault::Stall(Duration::from_secs(4)));
    }
    rig.wait_until("the prompt finishes", Duration::from_secs(10), || {
        has_event(&rig.sim, &prompt, |e| {
            matches!(e, TimelineEvent::Finished { .. })
        })
    })
    .await;
    if downloading {
        // While the history answer is on its way, hang the next request (the download).
        tokio::time::sleep(Duration::from_millis(700)).await;
        rig.sim.inject(Fault::Stall(Duration::from_secs(4)));
        tokio::time::sleep(Duration::from_millis(1300)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(
        !rig.outputs().join("dl/manifest.json").exists(),
        "the fault came too late: the job was already collected"
    );
    rig.sim.go_down().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_alive("while ComfyUI was down");
    assert!(
        names(&jobs.join("failed")).is_empty(),
        "a job failed while ComfyUI was down\n{}",
        rig.state()
    );
    rig.sim.come_back().await;
    let files = ["dl.toml".to_owned(), "warm.toml".to_owned()];
    let ids = set(["warm".to_owned(), "dl".to_owned()]);
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    d.stop().await;
    // A restart loses ComfyUI's history, so running the job again is allowed, not more.
    let n = submissions(&rig.sim).get("dl").copied().unwrap_or(0);
    assert!((1..=2).contains(&n), "dl was submitted {n} times");
    eprintln!("dl was submitted {n} times");
    assert_eq!(submissions(&rig.sim).get("warm"), Some(&1));
    assert_eq!(job_files(&jobs.join("done")), files);
    assert!(names(&jobs.join("failed")).is_empty());
    assert!(tree(&jobs.join("queue")).is_empty(), "{}", rig.state());
    assert!(tree(&jobs.join("running")).is_empty(), "{}", rig.state());
    check_manifest(&rig.outputs(), "dl");
    check_manifest(&rig.outputs(), "warm");
}

/// Ten one-job files `nNN.toml`; returns their names and ids.
fn drop_ten(jobs: &Path) -> (Vec<String>, BTreeSet<String>) {
    let mut files = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 0..10 {
        let name = format!("n{i:02}.toml");
        drop_job(jobs, &name, &solid(4000 + i));
        ids.insert(format!("n{i:02}"));
        files.push(name);
    }
    (files, ids)
}

// 5a. Outputs on a full file system: nothing is burned, everything runs once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outputs_file_system_burns_no_job() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(50)).await;
    let mount = match Tmpfs::mount(&rig.outputs(), "1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs for outputs/: {why}");
            return;
        }
    };
    let filler = rig.outputs().join("filler.bin");
    mount.fill(&filler);
    let jobs = rig.jobs();
    let (files, ids) = drop_ten(&jobs);
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5", "--min-free-mb", "0"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.assert_alive("with outputs/ full");
    let burned = submissions(&rig.sim).values().sum::<usize>();
    assert!(
        burned <= 2,
        "{burned} jobs were submitted while outputs/ had no space\n{}",
        rig.state()
    );
    assert!(
        names(&jobs.join("failed")).is_empty(),
        "jobs failed for want of space\n{}",
        rig.state()
    );
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    d.stop().await;
    rig.assert_finished(&files, &ids);
}

// 5b. The job folder on a full file system: no claim without its lease, no exit, no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_job_folder_loses_nothing_and_resumes() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(50)).await;
    let jobs = rig.jobs();
    let mount = match Tmpfs::mount(&jobs, "1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs for jobs/: {why}");
            return;
        }
    };
    for d in ["inbox", "queue", "done", "failed", "status"] {
        std::fs::create_dir_all(jobs.join(d)).unwrap_or_else(|e| panic!("{e}"));
    }
    let (files, ids) = drop_ten(&jobs);
    let filler = jobs.join("filler.bin");
    mount.fill(&filler);
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5", "--min-free-mb", "0"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.assert_alive("with jobs/ full");
    let burned = submissions(&rig.sim).values().sum::<usize>();
    assert!(
        burned <= 2,
        "{burned} jobs were submitted while jobs/ had no space\n{}",
        rig.state()
    );
    assert!(
        names(&jobs.join("failed")).is_empty(),
        "jobs failed for want of space\n{}",
        rig.state()
    );
    // No claim without its lease (`running/` is the old layout's claim folder).
    let running = names(&jobs.join("running"));
    let bare: Vec<&String> = running
        .iter()
        .filter(|n| {
            !n.starts_with('.')
                && !n.ends_with(".lease")
                && !running.contains(&format!("{n}.lease"))
        })
        .collect();
    assert!(
        bare.is_empty(),
        "claimed without a lease: {bare:?}\n{}",
        rig.state()
    );
    // No job file vanished: each is still somewhere under jobs/.
    let everything = tree(&jobs);
    for f in &files {
        assert!(
            everything.iter().any(|p| p.ends_with(f.as_str())),
            "`{f}` is gone\n{}",
            rig.state()
        );
    }
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    rig.wait_finished(&files, &ids, Duration::from_secs(30))
        .await;
    d.stop().await;
    rig.assert_finished(&files, &ids);
}

// 6. The sweep bomb: limits are checked before expansion, the daemon stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_bomb_fails_with_a_reason_and_the_daemon_runs_on() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(Timing::default()).await;
    let jobs = rig.jobs();
    // 4 GiB of address space: enough for the daemon, not for 100,000 copies of 200 KB.
    let mut d = rig.comfyd_limited("d", 0, &["--lease-ttl", "5"], Some(4 * 1024 * 1024));
    // 1000 seeds x 100 widths, every combination valid, each with a 200,000-character input.
    let seeds: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let widths: Vec<String> = (0..100).map(|i| (64 + 8 * i).to_string()).collect();
    let bomb = format!(
        "workflow = \"txt2img\"\n[inputs]\nprompt = \"a mug\"\nnegative = \"{}\"\n[sweep]\nseed = [{}]\nwidth = [{}]\n",
        "x".repeat(200_000),
        seeds.join(", "),
        widths.join(", ")
    );
    drop_job(&jobs, "bomb.toml", &bomb);
    let failed = jobs.join("failed/bomb.toml");
    let t = Instant::now();
    while !failed.is_file() {
        d.assert_alive("on the sweep bomb");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the bomb did not fail within 30 s\n{}",
            rig.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = std::fs::read_to_string(jobs.join("failed/bomb.toml.error.json"))
        .unwrap_or_else(|e| panic!("failed/bomb.toml.error.json: {e}"));
    let lower = report.to_lowercase();
    assert!(
        [
            "limit",
            "more than",
            "exceed",
            "too large",
            "too big",
            "over the"
        ]
        .iter()
        .any(|w| lower.contains(w)),
        "the report should name the limit: {}",
        clip(&report, 2000)
    );
    assert!(
        report.len() < 100_000,
        "the report repeats the bomb: {} bytes",
        report.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.assert_alive("after failing the bomb");
    drop_job(&jobs, "good.toml", &solid(5));
    rig.wait_until("the good job is done", Duration::from_secs(20), || {
        rig.outputs().join("good/manifest.json").is_file()
    })
    .await;
    d.assert_alive("at the end");
    d.stop().await;
    check_manifest(&rig.outputs(), "good");
    assert_each_once(&rig.sim, &set(["good".to_owned()]));
    assert!(tree(&jobs.join("queue")).is_empty(), "{}", rig.state());
}

// 7a. A JSONL written in place, one whole line every 1.2 s: lines added after the daemon
// took the file still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_written_line_by_line_in_place_runs_every_line() {
    slow_jsonl(false).await;
}

// 7b. The same with every write ending mid-line: a last line without its newline waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_written_in_place_mid_line_runs_every_line() {
    slow_jsonl(true).await;
}

/// Writes `inbox/slow.jsonl` in place, 5 jobs over 6 s: each write a whole line, or (with
/// `mid_line`) the end of one line and the start of the next; the last write ends a line.
async fn slow_jsonl(mid_line: bool) {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(20)).await;
    let jobs = rig.jobs();
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5"]);
    // Up and watching (the status file, or a second at most).
    let t = Instant::now();
    while !jobs.join("status/gpu-0.json").is_file() && t.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<String> = (0..5)
        .map(|i| solid_line(&format!("s{i}"), 6000 + i))
        .collect();
    let cut = |l: &str| if mid_line { l.len() / 2 } else { l.len() };
    let path = jobs.join("inbox/slow.jsonl");
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    f.write_all(&lines[0].as_bytes()[..cut(&lines[0])])
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        d.assert_alive("while the file is written");
        let mut chunk = lines[i][cut(&lines[i])..].to_owned();
        if let Some(next) = lines.get(i + 1) {
            chunk.push_str(&next[..cut(next)]);
        }
        f.write_all(chunk.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        f.flush().unwrap_or_else(|e| panic!("{e}"));
    }
    drop(f);
    let files = ["slow.jsonl".to_owned()];
    let ids = set((0..5).map(|i| format!("s{i}")));
    rig.wait_finished(&files, &ids, Duration::from_secs(15))
        .await;
    d.stop().await;
    rig.assert_finished(&files, &ids);
    let kept = std::fs::read_to_string(jobs.join("done/slow.jsonl")).unwrap_or_default();
    assert_eq!(kept, lines.concat(), "done/ keeps the whole file");
}

// 8. A cancel file for an id no job has expires instead of waiting for a future job.
// Assumes the expiry is set with `--cancel-expiry SECONDS` (not in core-spec.md yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_file_for_an_unknown_id_expires() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(invert_ms(20)).await;
    let jobs = rig.jobs();
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    let cancel = jobs.join("inbox/nope.cancel");
    std::fs::write(&cancel, "").unwrap_or_else(|e| panic!("{e}"));
    let mut d = rig.comfyd("d", 0, &["--lease-ttl", "5", "--cancel-expiry", "2"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.assert_alive("with `--cancel-expiry 2`");
    assert!(cancel.exists(), "the cancel file went before its expiry");
    rig.wait_until("the cancel file expires", Duration::from_secs(10), || {
        !cancel.exists()
    })
    .await;
    // A job with that id dropped later is not cancelled by the expired file.
    drop_job(&jobs, "nope.toml", &solid(7));
    let files = ["nope.toml".to_owned()];
    let ids = set(["nope".to_owned()]);
    rig.wait_finished(&files, &ids, Duration::from_secs(20))
        .await;
    d.stop().await;
    rig.assert_finished(&files, &ids);
}

// 9. Several daemons racing for an inbox of files that fail at intake and files that run, plus
// two files a daemon killed right after its intake rename left in `queue/` without a folder:
// each file ends once, in one place, with its own report; each runnable job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_racing_for_failing_and_runnable_files_end_each_file_once() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::new(Timing::default()).await;
    let jobs = rig.jobs();
    let mut failing: BTreeMap<String, &str> = BTreeMap::new();
    let mut runnable = Vec::new();
    for i in 0..150 {
        let name = format!("u{i:03}.toml");
        drop_job(&jobs, &name, "workflow = \"no-such-workflow\"\n");
        failing.insert(name, "unknown-workflow");
    }
    for i in 0..50 {
        let name = format!("w{i:03}.json");
        drop_job(
            &jobs,
            &name,
            "{\"workflow\": \"solid-color\", \"inputs\": {\"width\": 99999}}\n",
        );
        failing.insert(name, "invalid-inputs");
    }
    for i in 0..20 {
        let name = format!("r{i:02}.toml");
        drop_job(&jobs, &name, &solid(i));
        runnable.push(name);
    }
    // Taken in (`queue/TOKEN=NAME`) by a daemon that died before it looked at them.
    std::fs::create_dir_all(jobs.join("queue")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        jobs.join("queue/0000000000010000=left-bad.toml"),
        "workflow = \"no-such-workflow\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    failing.insert("left-bad.toml".into(), "unknown-workflow");
    std::fs::write(jobs.join("queue/0000000000010001=left-ok.toml"), solid(99))
        .unwrap_or_else(|e| panic!("{e}"));
    runnable.push("left-ok.toml".into());
    runnable.sort();
    let ids = set(runnable
        .iter()
        .map(|n| n.trim_end_matches(".toml").to_owned()));

    let mut daemons: Vec<Daemon> = (0..3)
        .map(|g| {
            rig.comfyd(
                &format!("d{g}"),
                g,
                &["--lease-ttl", "2", "--settle-ms", "0"],
            )
        })
        .collect();
    rig.wait_until(
        "every file is done or failed",
        Duration::from_secs(60),
        || {
            job_files(&jobs.join("done")).len() + job_files(&jobs.join("failed")).len()
                >= runnable.len() + failing.len()
                && tree(&jobs.join("queue")).is_empty()
        },
    )
    .await;
    // Time for a late loser to leave something behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for d in &mut daemons {
        d.assert_alive("at the end");
        d.stop().await;
    }
    let state = rig.state();
    assert_eq!(job_files(&jobs.join("done")), runnable, "done/\n{state}");
    let failed = names(&jobs.join("failed"));
    let mut want: Vec<String> = failing
        .keys()
        .flat_map(|n| [n.clone(), format!("{n}.error.json")])
        .collect();
    want.sort();
    assert_eq!(
        failed, want,
        "each failed file once, with its report\n{state}"
    );
    for (name, kind) in &failing {
        let text = std::fs::read_to_string(jobs.join("failed").join(format!("{name}.error.json")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let r: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r["file"], name.as_str(), "{r}");
        assert_eq!(r["failures"][0]["kind"], *kind, "{name}: {r}");
    }
    // Not even an empty folder of a daemon that lost a race.
    let queue = names(&jobs.join("queue"));
    assert!(queue.is_empty(), "left in queue/: {queue:?}\n{state}");
    assert!(job_files(&jobs.join("inbox")).is_empty(), "{state}");
    for id in &ids {
        check_manifest(&rig.outputs(), id);
    }
    assert_each_once(&rig.sim, &ids);
}
