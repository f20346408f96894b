//! A ComfyUI that comfyd starts and keeps running (`[comfyui] command` or `--comfy-cmd`).
//!
//! One task per daemon starts the command in its own process group, its output appended to a
//! log file, waits until ComfyUI answers `/system_stats`, runs the optional warm-up workflow,
//! and starts it again when it exits, when it does not answer within `ready_timeout`, when a
//! prompt runs with no progress event for `stall`, or when asked
//! ([`SupervisorHandle::restart`]). Whether, why and after what pause is [`decide`], a pure
//! function; the task only does the I/O. Stopping signals the whole group: SIGTERM with
//! SIGCONT (a stopped process gets to handle it), a grace period, SIGKILL.
//!
//! Jobs see restarts through the handle: the runner marks its executing prompts and their
//! progress events ([`SupervisorHandle::prompt_executing`], [`SupervisorHandle::progressed`]),
//! and counts the restarts that happened while its prompt executed toward the job's retries
//! ([`crate::retry`]), noting each in the job's manifest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::client::{Client, RunOptions, Timeouts};
use crate::config::ComfyuiConfig;

/// Seconds ComfyUI has to answer after a start, unless configured.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a running prompt may go without a progress event, unless configured.
pub const DEFAULT_STALL: Duration = Duration::from_secs(600);
/// How long ComfyUI gets to exit after SIGTERM before the group is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The first pause before starting again after a crash; it doubles per crash in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between starts of a crashing ComfyUI.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A ComfyUI that ran this long after answering did not crash "at once": the pause starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// How to run the supervised ComfyUI.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Program and arguments.
    pub command: Vec<String>,
    /// The folder it runs in; comfyd's own when `None`.
    pub cwd: Option<PathBuf>,
    /// Its stdout and stderr are appended here; `None`: [`default_log`], named after the GPU
    /// once the daemon knows its index.
    pub log: Option<PathBuf>,
    pub ready_timeout: Duration,
    /// `None`: stalls are never acted on.
    pub stall: Option<Duration>,
    /// A workflow (`name` or `name@version`) run with its defaults after each start.
    pub warmup: Option<String>,
    /// Where the warm-up workflow is found.
    pub workflows: PathBuf,
    pub stop_grace: Duration,
}

impl Config {
    /// The supervised ComfyUI from `[comfyui]` and `--comfy-cmd` (a shell-like string, which
    /// wins over the file's `command`); `None` when neither names a command.
    pub fn resolve(
        file: Option<&ComfyuiConfig>,
        flag: Option<&str>,
        workflows: &Path,
    ) -> Result<Option<Config>, String> {
        let command = match flag {
            Some(text) => shell_words::split(text).map_err(|e| {
                format!("--comfy-cmd: {e}\nhelp: quote it like a shell command line")
            })?,
            None => match file.and_then(|f| f.command.clone()) {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        if command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(if flag.is_some() {
                "--comfy-cmd: the command is empty".to_owned()
            } else {
                "comfyd.toml: `[comfyui] command` is empty\nhelp: name the program first: `command = [\"python\", \"main.py\"]`".to_owned()
            });
        }
        let file = file.cloned().unwrap_or_default();
        if file.ready_timeout == Some(0) {
            return Err(
                "comfyd.toml: `[comfyui] ready_timeout` must be at least 1 (seconds)".into(),
            );
        }
        Ok(Some(Config {
            command,
            cwd: file.cwd,
            log: file.log,
            ready_timeout: file
                .ready_timeout
                .map_or(DEFAULT_READY_TIMEOUT, Duration::from_secs),
            stall: match file.stall {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => Some(DEFAULT_STALL),
            },
            warmup: file.warmup,
            workflows: workflows.to_path_buf(),
            stop_grace: STOP_GRACE,
        }))
    }

    fn policy(&self) -> Policy {
        Policy {
            ready_timeout: self.ready_timeout,
            stall: self.stall,
            backoff_first: BACKOFF_FIRST,
            backoff_cap: BACKOFF_CAP,
            healthy_after: HEALTHY_AFTER,
        }
    }

    /// The command as one line, for logs.
    pub fn command_line(&self) -> String {
        shell_words::join(&self.command)
    }

    /// The log file: the configured one, or the default for the job directory and GPU.
    pub fn log_path(&self, jobs: &Path, gpu: u32) -> PathBuf {
        self.log.clone().unwrap_or_else(|| default_log(jobs, gpu))
    }
}

/// `logs/comfyui-gpu-N.log` beside the job directory.
pub fn default_log(jobs: &Path, gpu: u32) -> PathBuf {
    jobs.parent()
        .unwrap_or(Path::new("."))
        .join("logs")
        .join(format!("comfyui-gpu-{gpu}.log"))
}

/// The port a ComfyUI command line names (`--port N` or `--port=N`), so the daemon can find
/// the ComfyUI it starts without being told its URL too.
pub fn command_port(command: &[String]) -> Option<u16> {
    command.iter().enumerate().find_map(|(i, a)| {
        if a == "--port" {
            command.get(i + 1)?.parse().ok()
        } else {
            a.strip_prefix("--port=")?.parse().ok()
        }
    })
}

// ---- the decision ---------------------------------------------------------------------------

/// The bounds the decision applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ready_timeout: Duration,
    pub stall: Option<Duration>,
    pub backoff_first: Duration,
    pub backoff_cap: Duration,
    /// A run at least this long after answering resets the crash count.
    pub healthy_after: Duration,
}

/// What the supervisor sees of the current ComfyUI process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// It exited, in words: `exit status: 1`, `signal: 9 (SIGKILL)`.
    pub exited: Option<String>,
    /// The command could not be started (no such program, no permission), and why.
    pub cannot_start: Option<String>,
    /// A restart was asked for, and why.
    pub requested: Option<String>,
    /// It has answered `/system_stats` since it started.
    pub ready: bool,
    /// Time since it was started.
    pub since_start: Duration,
    /// Time since it answered, for how long it stayed healthy.
    pub since_ready: Duration,
    /// Some prompt of this daemon is executing at ComfyUI.
    pub prompt_running: bool,
    /// Time since the last progress event of any of those prompts (or since it answered,
    /// when that is later).
    pub since_progress: Duration,
}

/// Why ComfyUI is started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Exited(String),
    CannotStart(String),
    NotReady(Duration),
    Stalled(Duration),
    Requested(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Exited(status) => write!(f, "ComfyUI exited ({status})"),
            Why::CannotStart(e) => write!(f, "ComfyUI cannot be started: {e}"),
            Why::NotReady(t) => write!(
                f,
                "ComfyUI did not answer within {} s of its start",
                t.as_secs()
            ),
            Why::Stalled(t) => write!(f, "a running prompt made no progress for {} s", t.as_secs()),
            Why::Requested(reason) => write!(f, "restart asked for: {reason}"),
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it running (or starting).
    Keep,
    /// Stop what is left of it, wait `after`, start it again; `failures` is the new count of
    /// crashes in a row.
    Restart {
        why: Why,
        after: Duration,
        failures: u32,
    },
}

/// Whether to start ComfyUI again, why, and after what pause. `failures` counts the crashes
/// in a row before this one (exits and starts that never answered, each within
/// `healthy_after` of answering): each doubles the pause, up to `backoff_cap`, so a command
/// that cannot start does not spin. A restart of a healthy process (asked for, or a stall)
/// comes at once. A request while ComfyUI has not answered yet is dropped: it is fresh.
pub fn decide(seen: &Seen, failures: u32, policy: &Policy) -> Decision {
    let crash = |why: Why| {
        let quick = !seen.ready || seen.since_ready < policy.healthy_after;
        let failures = if quick { failures + 1 } else { 1 };
        Decision::Restart {
            why,
            after: backoff(failures, policy),
            failures,
        }
    };
    let deliberate = |why: Why| Decision::Restart {
        why,
        after: Duration::ZERO,
        failures: 0,
    };
    if let Some(e) = &seen.cannot_start {
        return crash(Why::CannotStart(e.clone()));
    }
    if let Some(status) = &seen.exited {
        return crash(Why::Exited(status.clone()));
    }
    if !seen.ready {
        return if seen.since_start >= policy.ready_timeout {
            crash(Why::NotReady(policy.ready_timeout))
        } else {
            Decision::Keep
        };
    }
    if let Some(reason) = &seen.requested {
        return deliberate(Why::Requested(reason.clone()));
    }
    match policy.stall {
        Some(bound) if seen.prompt_running && seen.since_progress >= bound => {
            deliberate(Why::Stalled(bound))
        }
        _ => Decision::Keep,
    }
}

/// The pause before the next start after `failures` crashes in a row: `backoff_first`
/// doubling, capped; none before the first.
pub fn backoff(failures: u32, policy: &Policy) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    policy
        .backoff_first
        .saturating_mul(1u32 << (failures - 1).min(20))
        .min(policy.backoff_cap)
}

// ---- the handle -----------------------------------------------------------------------------

/// The last restart: when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRestart {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub reason: String,
}

/// What the supervisor task and the rest of the daemon share.
#[derive(Debug)]
struct Shared {
    restarts: AtomicU64,
    up: AtomicBool,
    /// The process group of the running ComfyUI (its pid); 0 when none.
    pid: AtomicU32,
    last: Mutex<Option<LastRestart>>,
    requested: Mutex<Option<String>>,
    stopping: AtomicBool,
    wake: Notify,
    executing: AtomicUsize,
    base: Instant,
    /// Milliseconds after `base` of the last progress event (or start, or answer).
    progress_ms: AtomicU64,
    log: PathBuf,
}

impl Shared {
    fn touch(&self) {
        self.progress_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since_progress(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(
            self.progress_ms.load(Ordering::Relaxed),
        ))
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// The daemon's view of its supervised ComfyUI; cheap to clone.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
}

impl SupervisorHandle {
    /// Asks for a restart now (the memory policy does, when `/free` did not give memory
    /// back). Dropped while ComfyUI is still starting: a fresh process has nothing to give.
    pub fn restart(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.shared.requested.lock() {
            *r = Some(reason.into());
        }
        self.shared.wake.notify_one();
    }

    /// Restarts so far (every start after the first).
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Acquire)
    }

    /// Whether ComfyUI is running and has answered since its last start.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// When ComfyUI was last restarted, and why.
    pub fn last_restart(&self) -> Option<LastRestart> {
        self.shared.last.lock().ok().and_then(|l| l.clone())
    }

    /// The running ComfyUI's process id (also its process group).
    pub fn pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::Acquire)).filter(|p| *p != 0)
    }

    /// The file ComfyUI's output goes to.
    pub fn log(&self) -> &Path {
        &self.shared.log
    }

    /// Marks one of the daemon's prompts as executing (ComfyUI sent its `execution_start`)
    /// until the guard drops: while any is, a ComfyUI silent past the stall bound is restarted.
    /// A prompt waiting in ComfyUI's queue is not marked: a long prompt ahead of it (a warm-up,
    /// another client's) is no stall.
    pub fn prompt_executing(&self) -> Executing {
        self.shared.executing.fetch_add(1, Ordering::AcqRel);
        self.shared.touch();
        Executing {
            shared: self.shared.clone(),
        }
    }

    /// A progress event of one of the daemon's prompts arrived.
    pub fn progressed(&self) {
        self.shared.touch();
    }
}

/// A prompt executing at ComfyUI; see [`SupervisorHandle::prompt_executing`].
#[derive(Debug)]
pub struct Executing {
    shared: Arc<Shared>,
}

impl Drop for Executing {
    fn drop(&mut self) {
        self.shared.executing.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---- the task -------------------------------------------------------------------------------

/// The running supervisor; [`Supervisor::stop`] stops ComfyUI. Dropped without `stop` (a
/// panic), it kills ComfyUI's process group at once.
#[derive(Debug)]
pub struct Supervisor {
    handle: SupervisorHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Starts ComfyUI and the task that keeps it running; `url` is where it will answer. The
    /// config's log must be set ([`Config::log_path`]).
    pub fn start(config: Config, url: &str) -> Result<Supervisor, String> {
        let Some(log) = config.log.clone() else {
            return Err("the supervised ComfyUI has no log file".into());
        };
        let probe = Client::with_timeouts(
            url,
            Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(5),
                ..Timeouts::default()
            },
        )
        .map_err(|e| e.to_string())?;
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let shared = Arc::new(Shared {
            restarts: AtomicU64::new(0),
            up: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            last: Mutex::new(None),
            requested: Mutex::new(None),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            executing: AtomicUsize::new(0),
            base: Instant::now(),
            progress_ms: AtomicU64::new(0),
            log: log.clone(),
        });
        tracing::info!(command = %config.command_line(), log = %log.display(), "starting ComfyUI");
        let task = tokio::spawn(supervise(config, probe, shared.clone()));
        Ok(Supervisor {
            handle: SupervisorHandle { shared },
            task: Some(task),
        })
    }

    pub fn handle(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    /// Stops ComfyUI (SIGTERM to its group, the grace period, SIGKILL) and the task.
    pub async fn stop(mut self) {
        self.handle.shared.stopping.store(true, Ordering::Release);
        self.handle.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if let Some(pid) = self.handle.pid() {
                kill_group(pid, Signal::KILL);
            }
        }
    }
}

fn kill_group(pid: u32, signal: Signal) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(p, signal);
    }
}

/// Starts, watches and restarts ComfyUI until the daemon stops.
async fn supervise(config: Config, probe: Client, sh: Arc<Shared>) {
    let log = sh.log.clone();
    stop_leftover(&log, config.stop_grace).await;
    let policy = config.policy();
    let mut failures = 0u32;
    let mut starts = 0u64;
    loop {
        starts += 1;
        let started = Instant::now();
        let (mut child, cannot_start) = match spawn(&config, &log, starts) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        let mut exited: Option<String> = None;
        let pid = child.as_ref().and_then(Child::id).unwrap_or(0);
        sh.pid.store(pid, Ordering::Release);
        write_pid_file(&log, pid);
        let mut ready_at: Option<Instant> = None;
        let mut warmup: Option<tokio::task::JoinHandle<()>> = None;
        let (why, after) = loop {
            if child.is_some()
                && exited.is_none()
                && ready_at.is_none()
                && probe.system_stats().await.is_ok()
            {
                // Answering, and it is ours: another process on the port does not count.
                if let Some(c) = child.as_mut()
                    && let Ok(None) = c.try_wait()
                {
                    ready_at = Some(Instant::now());
                    sh.touch();
                    sh.up.store(true, Ordering::Release);
                    tracing::info!(
                        pid,
                        took_ms = started.elapsed().as_millis() as u64,
                        "ComfyUI is up"
                    );
                    if let Some(name) = &config.warmup {
                        warmup = Some(tokio::spawn(warm_up(
                            probe.clone(),
                            config.workflows.clone(),
                            name.clone(),
                        )));
                    }
                }
            }
            let requested = sh.requested.lock().ok().and_then(|mut r| r.take());
            let seen = Seen {
                exited: exited.clone(),
                cannot_start: cannot_start.clone(),
                requested: requested.clone(),
                ready: ready_at.is_some(),
                since_start: started.elapsed(),
                since_ready: ready_at.map(|t| t.elapsed()).unwrap_or_default(),
                prompt_running: sh.executing.load(Ordering::Acquire) > 0,
                since_progress: sh.since_progress(),
            };
            match decide(&seen, failures, &policy) {
                Decision::Restart {
                    why,
                    after,
                    failures: f,
                } => {
                    failures = f;
                    break (why, after);
                }
                Decision::Keep => {
                    if let Some(r) = requested {
                        tracing::info!(reason = %r, "not restarting ComfyUI: it is starting already");
                    }
                }
            }
            let tick = if ready_at.is_some() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(250)
            };
            tokio::select! {
                status = wait_child(&mut child), if exited.is_none() => exited = Some(status),
                _ = tokio::time::sleep(tick) => {}
                _ = sh.wake.notified() => {}
            }
            if sh.stopping() {
                sh.up.store(false, Ordering::Release);
                if let Some(w) = warmup.take() {
                    w.abort();
                }
                stop_child(child.as_mut(), pid, config.stop_grace).await;
                sh.pid.store(0, Ordering::Release);
                let _ = std::fs::remove_file(pid_file(&log));
                tracing::info!("ComfyUI stopped");
                return;
            }
        };
        sh.up.store(false, Ordering::Release);
        if let Some(w) = warmup.take() {
            w.abort();
        }
        let restarts = sh.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(mut last) = sh.last.lock() {
            *last = Some(LastRestart {
                at_ms: crate::runner::now_ms(),
                reason: why.to_string(),
            });
        }
        let ran = match why {
            Why::CannotStart(_) => String::new(),
            _ => format!(" {:.1} s after its start", started.elapsed().as_secs_f64()),
        };
        tracing::warn!(
            restarts,
            log = %log.display(),
            "{why}{ran}; starting it again in {} s (its output is in the log)",
            after.as_secs()
        );
        note(
            &log,
            &format!("{why}; starting again in {} s", after.as_secs()),
        );
        stop_child(child.as_mut(), pid, config.stop_grace).await;
        sh.pid.store(0, Ordering::Release);
        // Prompts that were running are lost with it; their stall clock starts over.
        sh.touch();
        let until = tokio::time::Instant::now() + after;
        while tokio::time::Instant::now() < until && !sh.stopping() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = sh.wake.notified() => {}
            }
        }
        if sh.stopping() {
            let _ = std::fs::remove_file(pid_file(&log));
            tracing::info!("ComfyUI stopped");
            return;
        }
    }
}

/// `NAME.pid` beside the log: the running ComfyUI's pid and start time, so that a comfyd killed
/// before it could stop its ComfyUI stops that one at its next start instead of finding the
/// port taken.
fn pid_file(log: &Path) -> PathBuf {
    log.with_extension("pid")
}

/// A process's group and start time (clock ticks after boot), from `/proc/PID/stat`; `None`
/// when it is gone or a zombie.
fn proc_stat(pid: u32) -> Option<(u32, u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state, ppid, pgrp, ... starttime is the 20th.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if *f.first()? == "Z" {
        return None;
    }
    Some((
        f.get(1)?.parse().ok()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

fn write_pid_file(log: &Path, pid: u32) {
    if let Some((_, _, start)) = proc_stat(pid) {
        let _ = std::fs::write(pid_file(log), format!("{pid} {start}\n"));
    }
}

/// Stops the ComfyUI the pid file names when it is still that process (same start time), still
/// leads its own group, and no comfyd is its parent any more: it was left by a comfyd that was
/// killed. A live comfyd's ComfyUI (two daemons given one log) is left alone.
async fn stop_leftover(log: &Path, grace: Duration) {
    let path = pid_file(log);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(start))) = (words.next(), words.next()) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let Ok(pid) = u32::try_from(pid) else {
        return;
    };
    let Some((ppid, pgrp, started)) = proc_stat(pid) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    if pgrp != pid || started != start || parent.trim() == "comfyd" {
        if parent.trim() == "comfyd" {
            tracing::warn!(pid, comfyd = ppid, pid_file = %path.display(), "another comfyd runs the ComfyUI this log's pid file names; give each daemon its own `[comfyui] log`");
        }
        return;
    }
    tracing::warn!(
        pid,
        "stopping a ComfyUI left running by a comfyd that was killed"
    );
    kill_group(pid, Signal::TERM);
    kill_group(pid, Signal::CONT);
    let t = Instant::now();
    while proc_stat(pid).is_some() && t.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_group(pid, Signal::KILL);
    let t = Instant::now();
    while proc_stat(pid).is_some() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&path);
}

/// Starts the command in its own process group, output appended to the log.
fn spawn(config: &Config, log: &Path, start: u64) -> Result<Child, String> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))
    };
    note(
        log,
        &format!(
            "start {start} (unix time {}): {}",
            crate::runner::now_ms() / 1000,
            config.command_line()
        ),
    );
    let (out, err) = (open()?, open()?);
    let mut cmd = Command::new(&config.command[0]);
    cmd.args(&config.command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(dir) = &config.cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn()
        .map_err(|e| format!("`{}`: {e}", config.command[0]))
}

/// A line of comfyd's own in ComfyUI's log, so the log tells its story by itself.
fn note(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "--- comfyd: {line}");
    }
}

/// The child's exit in words; pending forever without a child.
async fn wait_child(child: &mut Option<Child>) -> String {
    match child.as_mut() {
        Some(c) => match c.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot be waited for: {e}"),
        },
        None => std::future::pending().await,
    }
}

/// Stops what is left of ComfyUI's process group: SIGTERM and SIGCONT, `grace` for the
/// leader to exit, then SIGKILL to whatever of the group remains.
async fn stop_child(child: Option<&mut Child>, pid: u32, grace: Duration) {
    if pid == 0 {
        return;
    }
    if let Some(c) = child {
        if let Ok(None) = c.try_wait() {
            kill_group(pid, Signal::TERM);
            kill_group(pid, Signal::CONT);
            if tokio::time::timeout(grace, c.wait()).await.is_err() {
                tracing::warn!(
                    pid,
                    grace_s = grace.as_secs(),
                    "ComfyUI did not stop on SIGTERM; killing it"
                );
            }
        }
        kill_group(pid, Signal::KILL);
        let _ = c.wait().await;
    }
}

/// Runs the warm-up workflow with its defaults; its outputs stay on ComfyUI (under
/// `comfyd/warmup/`), nothing is fetched.
async fn warm_up(client: Client, workflows: PathBuf, name: String) {
    let spec = name.clone();
    let graph = match tokio::task::spawn_blocking(move || warmup_graph(&workflows, &spec)).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::warn!(workflow = %name, "no warm-up: {e}");
            return;
        }
        Err(_) => return,
    };
    let t = Instant::now();
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(3600)),
        ..RunOptions::default()
    };
    match client.run_prompt(&graph, &opts, &mut |_| {}).await {
        Ok(r) if r.succeeded() => {
            tracing::info!(workflow = %name, took_ms = t.elapsed().as_millis() as u64, "warm-up done")
        }
        Ok(r) => {
            tracing::warn!(workflow = %name, outcome = ?r.outcome, "the warm-up did not succeed")
        }
        Err(e) => tracing::warn!(workflow = %name, error = %e, "the warm-up failed"),
    }
}

/// The warm-up workflow's graph, rendered with its defaults (seed 0).
pub fn warmup_graph(workflows: &Path, spec: &str) -> Result<serde_json::Value, String> {
    let c = comfyc::compile(Arc::new(comfyc::FsLoader::new(workflows)));
    let w = comfyc::version::find_workflow(c.workflows.iter(), spec)
        .map_err(|e| format!("{e} (in {})", workflows.display()))?;
    let resolved = w
        .resolve(&serde_json::Map::new(), &mut || 0)
        .map_err(|errors| {
            let msgs: Vec<String> = errors.into_iter().map(|e| e.message).collect();
            format!("workflow `{spec}` needs inputs to run: {}", msgs.join("; "))
        })?;
    let mut graph = w
        .render(&resolved.values)
        .map_err(|e| format!("workflow `{spec}`: {}", e.message))?;
    crate::runner::prefix_outputs(&mut graph, "warmup");
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy {
            ready_timeout: S * 300,
            stall: Some(S * 600),
            backoff_first: S,
            backoff_cap: S * 60,
            healthy_after: S * 60,
        }
    }

    fn up(for_: Duration) -> Seen {
        Seen {
            ready: true,
            since_start: for_ + S,
            since_ready: for_,
            ..Seen::default()
        }
    }

    #[test]
    fn an_exit_restarts_with_a_pause_that_doubles_per_crash_in_a_row_up_to_the_cap() {
        let crashed = Seen {
            exited: Some("exit status: 3".into()),
            since_start: Duration::from_millis(50),
            ..Seen::default()
        };
        let mut failures = 0;
        let mut pauses = Vec::new();
        for _ in 0..9 {
            match decide(&crashed, failures, &policy()) {
                Decision::Restart {
                    why,
                    after,
                    failures: f,
                } => {
                    assert_eq!(why, Why::Exited("exit status: 3".into()));
                    assert_eq!(why.to_string(), "ComfyUI exited (exit status: 3)");
                    pauses.push(after.as_secs());
                    failures = f;
                }
                Decision::Keep => panic!("an exited ComfyUI must be started again"),
            }
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // A huge count neither overflows nor passes the cap.
        assert_eq!(backoff(u32::MAX, &policy()), S * 60);
        assert_eq!(backoff(0, &policy()), Duration::ZERO);
    }

    #[test]
    fn a_command_that_cannot_be_started_backs_off_like_a_crash() {
        let seen = Seen {
            cannot_start: Some("`/opt/python`: No such file or directory (os error 2)".into()),
            ..Seen::default()
        };
        let d = decide(&seen, 2, &policy());
        assert_eq!(
            d,
            Decision::Restart {
                why: Why::CannotStart(
                    "`/opt/python`: No such file or directory (os error 2)".into()
                ),
                after: S * 4,
                failures: 3
            }
        );
        if let Decision::Restart { why, .. } = d {
            assert_eq!(
                why.to_string(),
                "ComfyUI cannot be started: `/opt/python`: No such file or directory (os error 2)"
            );
        }
    }

    #[test]
    fn an_exit_after_a_healthy_run_starts_the_pause_over() {
        let mut seen = up(S * 3600);
        seen.exited = Some("signal: 9 (SIGKILL)".into());
        assert_eq!(
            decide(&seen, 6, &policy()),
            Decision::Restart {
                why: Why::Exited("signal: 9 (SIGKILL)".into()),
                after: S,
                failures: 1
            }
        );
        // Answering for a moment and then dying is still a crash in a row.
        let mut brief = up(S * 5);
        brief.exited = Some("exit status: 1".into());
        assert!(matches!(
            decide(&brief, 3, &policy()),
            Decision::Restart { after, failures: 4, .. } if after == S * 8
        ));
    }

    #[test]
    fn a_start_that_never_answers_is_a_crash_once_the_ready_timeout_passes() {
        let starting = Seen {
            since_start: S * 299,
            ..Seen::default()
        };
        assert_eq!(decide(&starting, 0, &policy()), Decision::Keep);
        let late = Seen {
            since_start: S * 300,
            ..Seen::default()
        };
        assert_eq!(
            decide(&late, 0, &policy()),
            Decision::Restart {
                why: Why::NotReady(S * 300),
                after: S,
                failures: 1
            }
        );
    }

    #[test]
    fn a_running_prompt_without_progress_past_the_bound_restarts_at_once() {
        let mut seen = up(S * 3600);
        seen.prompt_running = true;
        seen.since_progress = S * 599;
        assert_eq!(decide(&seen, 0, &policy()), Decision::Keep);
        seen.since_progress = S * 600;
        assert_eq!(
            decide(&seen, 2, &policy()),
            Decision::Restart {
                why: Why::Stalled(S * 600),
                after: Duration::ZERO,
                failures: 0
            }
        );
        assert_eq!(
            Why::Stalled(S * 600).to_string(),
            "a running prompt made no progress for 600 s"
        );
        // No prompt running: an idle ComfyUI is quiet, not stalled.
        seen.prompt_running = false;
        assert_eq!(decide(&seen, 0, &policy()), Decision::Keep);
        // Stall detection off.
        seen.prompt_running = true;
        let off = Policy {
            stall: None,
            ..policy()
        };
        assert_eq!(decide(&seen, 0, &off), Decision::Keep);
    }

    #[test]
    fn a_requested_restart_comes_at_once_unless_comfyui_is_still_starting() {
        let mut seen = up(S * 10);
        seen.requested = Some("memory did not come back after /free".into());
        assert_eq!(
            decide(&seen, 0, &policy()),
            Decision::Restart {
                why: Why::Requested("memory did not come back after /free".into()),
                after: Duration::ZERO,
                failures: 0
            }
        );
        let starting = Seen {
            requested: Some("leak".into()),
            since_start: S,
            ..Seen::default()
        };
        assert_eq!(decide(&starting, 0, &policy()), Decision::Keep);
        // An exit wins over a request: the pause applies.
        seen.exited = Some("exit status: 1".into());
        assert!(matches!(
            decide(&seen, 0, &policy()),
            Decision::Restart {
                why: Why::Exited(_),
                ..
            }
        ));
    }

    #[test]
    fn the_command_comes_from_the_flag_or_the_file_and_names_its_port() {
        let jobs = Path::new("/srv/comfy/jobs");
        let repo = Path::new("/srv/comfy/workflows");
        assert_eq!(Config::resolve(None, None, repo), Ok(None));
        let file = ComfyuiConfig {
            command: Some(vec!["python".into(), "main.py".into()]),
            stall: Some(0),
            ..ComfyuiConfig::default()
        };
        let c = Config::resolve(
            Some(&file),
            Some("'/opt/comfy ui/python' main.py --port=8190 --cuda-device 1"),
            repo,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a command"));
        assert_eq!(
            c.command,
            [
                "/opt/comfy ui/python",
                "main.py",
                "--port=8190",
                "--cuda-device",
                "1"
            ]
        );
        assert_eq!(c.log, None);
        assert_eq!(
            c.log_path(jobs, 1),
            PathBuf::from("/srv/comfy/logs/comfyui-gpu-1.log")
        );
        assert_eq!(c.stall, None, "stall = 0 turns it off");
        assert_eq!(c.ready_timeout, DEFAULT_READY_TIMEOUT);
        assert_eq!(command_port(&c.command), Some(8190));
        assert_eq!(
            command_port(&["x".into(), "--port".into(), "8191".into()]),
            Some(8191)
        );
        assert_eq!(command_port(&["x".into(), "--port".into()]), None);
        let e = Config::resolve(None, Some("python 'main.py"), repo)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("--comfy-cmd: "), "{e}");
        let empty = ComfyuiConfig {
            command: Some(Vec::new()),
            ..ComfyuiConfig::default()
        };
        let e = Config::resolve(Some(&empty), None, repo)
            .err()
            .unwrap_or_default();
        assert!(e.contains("`[comfyui] command` is empty"), "{e}");
        let never = ComfyuiConfig {
            ready_timeout: Some(0),
            ..file
        };
        let e = Config::resolve(Some(&never), None, repo)
            .err()
            .unwrap_or_default();
        assert!(e.contains("ready_timeout` must be at least 1"), "{e}");
    }
}
