//! Hostile job files: every file in `tests/hostile/` (and a few generated here: too big, a
//! symlink, a FIFO, names the file system or UTF-8 makes awkward) is dropped into a fresh
//! inbox beside the good jobs of `tests/hostile/good/`, and one daemon run (`until_idle`)
//! against the in-process simulator must end each hostile file in `failed/` with a reason that
//! names the problem, each good one in `done/` with its manifest, write nothing outside the job
//! and output folders, and keep running throughout.
//!
//! The daemon runs under a small supervisor: when it panics, stops with an error, or holds one
//! file in `queue/` for too long, the supervisor records that against the file, moves the
//! file aside and starts the daemon again, so one bug does not hide the other cases. Every
//! such incident fails the test.
//!
//! `HOSTILE_SHOW=1` prints the reason each file got (to write the table of [`CASES`]);
//! `COMFYD_LOG=info` shows the daemon's log.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use comfyd::daemon::{self, Settings};
use comfyd::store::{DirStore as JobDir, JobStore};
use serde_json::Value;
use tokio::sync::watch;

/// Generated in the test: a committed 16 MiB file would bloat the repository.
const OVER_LIMIT: &str = "over-16mib-limit.json";
/// Generated: a symlink in the inbox, pointing at the canary outside every folder.
const SYMLINK: &str = "symlink-to-canary.toml";
/// Generated: a named pipe in the inbox; reading it blocks until someone writes.
const FIFO: &str = "fifo-in-inbox.toml";
/// Generated: 100000 lines that are not JSON (200 KB).
const MANY_BAD_LINES: &str = "jsonl-100000-bad-lines.jsonl";
/// Generated: 100001 good lines, one more job than a file may expand to.
const TOO_MANY_JOBS: &str = "jsonl-100001-jobs.jsonl";
/// Generated: a name of 255 bytes, the longest a file name can be; `NAME.lease` and
/// `NAME.error.json` cannot exist beside it.
const LONG_NAME_PREFIX: &str = "long-file-name-";
/// Generated: a name short enough for `NAME.lease` (and its temp file) but too long for the
/// temp file of `NAME.error.json` (`.NAME.error.json.PID.tmp`).
const LONG_REPORT_PREFIX: &str = "long-report-name-";
/// Generated: a name that is not UTF-8 (`non-utf8-name-\xff.toml`).
const NON_UTF8_PREFIX: &str = "non-utf8-name-";

/// Largest error report accepted.
const MAX_REPORT_BYTES: u64 = 1024 * 1024;

/// Every hostile file, and a piece of the reason its error report must give (`|` separates
/// accepted alternatives). Cases marked `DAEMON BUG` fail today: see the comment on each.
const CASES: &[(&str, &str)] = &[
    // File formats and file-level limits.
    ("malformed-toml.toml", "invalid basic string"),
    ("malformed-json.json", "EOF while parsing"),
    // Refused, though the reason (`invalid type: map, expected a string`) does not say that a
    // job must be an object: serde reads a struct from an array by position (next case).
    ("json-array-not-object.json", "JSON object"),
    // DAEMON BUG: serde's derived `Deserialize` also reads a struct from an array, by field
    // position: `["solid-color", "array-job", 0, null, {...}, null]` is accepted and runs
    // (output folder `array-job`). A job must be a JSON object; an array should be refused.
    ("json-array-positional-fields.json", "object"),
    ("empty.json", "EOF while parsing"),
    ("empty.toml", "missing field `workflow`"),
    ("empty.jsonl", "holds no jobs"),
    ("comments-only.toml", "missing field `workflow`"),
    ("duplicate-key.json", "duplicate field `workflow`"),
    ("duplicate-key.toml", "duplicate key"),
    ("unsupported-extension.yaml", "`.yaml` is not a job file"),
    (
        "named-like-a-lease.toml.lease",
        "`.lease` is not a job file",
    ),
    // Ends in failed/ under its own name, `forged.toml.error.json`: it looks like the report
    // of a `forged.toml` and `JobDir::counts` does not count it.
    ("forged.toml.error.json", "unknown field `file`"),
    ("json-trailing-garbage.json", "trailing characters"),
    ("lone-surrogate.json", "unexpected end of hex escape"),
    ("no-extension", "is not a job file"),
    ("deeply-nested-10000.json", "recursion limit exceeded"),
    ("deeply-nested-10000.toml", "max recursion depth"),
    ("deeply-nested-tables-10000.toml", "max recursion depth"),
    ("binary-garbage.json", "not UTF-8"),
    ("invalid-utf8-in-prompt.toml", "not UTF-8"),
    (OVER_LIMIT, "over the 16777216-byte limit"),
    (SYMLINK, "symbolic link"),
    // DAEMON BUG: the daemon claims a FIFO like a file and blocks in `std::fs::read` until
    // someone opens the pipe for writing: one `mkfifo` in the inbox stops all work. It should
    // refuse anything that is not a regular file (before reading it) and fail it.
    (FIFO, "regular file|fifo|pipe"),
    // DAEMON BUG: every line's error goes into the report, 100000 of them (11 MB here). Within
    // the 16 MiB limit, a file of 8 million `x` lines took a debug daemon 108 s and 12 GB of
    // memory and left a 964 MB report. The report should be bounded: the first errors and a
    // count.
    (MANY_BAD_LINES, "expected value"),
    (TOO_MANY_JOBS, "more than 100000 jobs"),
    // DAEMON BUG (the same unbounded report): 1000 combinations of a prompt one character too
    // long; each failure repeats the 2001-character value in its message and again in its
    // details, so a 7 KB file gets a report of several MB (100000 combinations of a longer
    // value: gigabytes). Reports, and the values quoted in them, should be bounded.
    (
        "sweep-report-amplification.toml",
        "is longer than 2000 characters",
    ),
    // Top-level fields.
    ("unknown-top-level-field.toml", "unknown field `run_as`"),
    ("missing-workflow.toml", "missing field `workflow`"),
    ("workflow-null.json", "invalid type: null"),
    ("workflow-not-a-string.toml", "invalid type: integer `42`"),
    ("unknown-workflow.toml", "no workflow `rm-rf`"),
    ("workflow-path-traversal.toml", "is not a workflow name"),
    ("workflow-absolute-path.toml", "is not a workflow name"),
    ("workflow-two-at-signs.toml", "is not a workflow name"),
    ("workflow-name-300-chars.toml", "is not a workflow name"),
    (
        "workflow-version-missing.toml",
        "no workflow `txt2img@9.9.9`",
    ),
    ("inputs-not-a-table.toml", "invalid type: string"),
    (
        "priority-not-an-integer.json",
        "invalid type: floating point",
    ),
    ("timeout-negative.toml", "invalid value: integer `-1`"),
    ("timeout-float.json", "invalid type: floating point `1.5`"),
    ("timeout-string.toml", "invalid type: string \"600\""),
    // A timeout of u64::MAX (JSON) or i64::MAX (TOML) seconds used to overflow the client's
    // deadline (`Instant + Duration`) and panic the daemon; 9d7f15f refuses them.
    ("timeout-u64-max.json", "give seconds between 1 and"),
    ("timeout-i64-max.toml", "give seconds between 1 and"),
    ("timeout-zero.toml", "give seconds between 1 and"),
    // Ids: they name output folders.
    ("id-dotdot.toml", "job id `../../outside` is not allowed"),
    ("id-slash.toml", "job id `a/b` is not allowed"),
    ("id-backslash.toml", "is not allowed"),
    ("id-leading-dot.toml", "job id `.hidden` is not allowed"),
    ("id-empty.toml", "job id `` is not allowed"),
    ("id-200-chars.toml", "is not allowed: use 1-128"),
    ("id-nul.json", "is not allowed"),
    ("id-unicode-lookalike.toml", "is not allowed"),
    // DAEMON BUG: a job whose id already has a manifest is skipped as done, whichever file
    // that manifest came from: this file ends in done/ without running, and its owner finds
    // another job's outputs under its id (anyone can pre-empt an id). The skip is for a
    // restart re-running the same file; another file reusing the id should fail.
    ("id-collides-with-finished-job.toml", "already"),
    (
        "default-id-from-unsafe-file-name (spaces).toml",
        "job id `default-id-from-unsafe-file-name (spaces)` is not allowed",
    ),
    ("duplicate-ids.jsonl", "job id `twice` appears twice"),
    ("jsonl-every-line-bad.jsonl", "unknown field `shell`"),
    ("jsonl-one-good-line-one-bad.jsonl", "unknown field `shell`"),
    // Sweeps.
    ("sweep-empty-list.toml", "sweep `width` has no values"),
    (
        "sweep-over-100000.toml",
        "expands to 200000 jobs, more than 100000",
    ),
    ("sweep-astronomical.toml", "more than 100000"),
    (
        "sweep-key-also-in-inputs.toml",
        "`width` is both an input and a sweep",
    ),
    (
        "sweep-not-a-list.toml",
        "invalid type: integer `64`, expected a sequence",
    ),
    (
        "sweep-one-combination-invalid.toml",
        "99999 is greater than the maximum of 2048",
    ),
    // Inputs, checked against the workflow.
    (
        "wrong-type-string-for-integer.toml",
        "input `steps`: \"twenty\" is not of type \"integer\"",
    ),
    (
        "out-of-range-steps.toml",
        "1000 is greater than the maximum of 60",
    ),
    (
        "out-of-range-negative-width.toml",
        "-5 is less than the minimum of 1",
    ),
    ("width-not-multiple-of-8.toml", "65 is not a multiple of 8"),
    ("toml-datetime-input.toml", "is not of type \"string\""),
    (
        "nan-cfg.toml",
        "input `cfg`: null is not of type \"number\"",
    ),
    (
        "enum-not-in-options.toml",
        "input `sampler`: \"; rm -rf /\" is not one of",
    ),
    ("unknown-input-name.toml", "has no input `__proto__`"),
    ("missing-required-prompt.toml", "input `prompt` is required"),
    ("prompt-too-long.toml", "is longer than 2000 characters"),
    (
        "checkpoint-path-traversal.toml",
        "input `checkpoint`: \"../../../../etc/passwd\" is not one of",
    ),
    (
        "lora-name-path-traversal.toml",
        "input `loras` (at `0.name`)",
    ),
    ("lora-1000-items.json", "has more than 8 items"),
    // File inputs, confined to the input root.
    (
        "image-absolute-path.toml",
        "must be a path relative to the input root",
    ),
    ("image-dotdot-escape.toml", "leaves the input root"),
    ("image-dotdot-after-subdir.toml", "leaves the input root"),
    ("image-symlink-outside.toml", "leads outside the input root"),
    (
        "image-symlinked-dir-outside.toml",
        "leads outside the input root",
    ),
    ("image-missing-file.toml", "`missing.png`: No such file"),
    ("image-is-a-directory.toml", "is not a file"),
    ("image-empty-path.toml", "is shorter than 1 character"),
    (
        "image-nul-in-path.json",
        "must be a path relative to the input root",
    ),
    ("image-fifo-in-input-root.toml", "is not a file"),
    ("image-over-256mib.toml", "over the 268435456-byte limit"),
    ("image-not-an-image.toml", "cannot identify image file"),
    ("image-wrong-type.toml", "is not of type \"string\""),
];

/// Output folders hostile files may leave: the good lines and combinations of files that
/// fail as a whole because of another line or combination.
const PARTIAL_OUTPUTS: &[&str] = &["jsonl-partial-good", "sweep-one-combination-invalid-0001"];

/// How long one file may sit in `queue/` before the supervisor calls it stuck.
const STUCK: Duration = Duration::from_secs(15);
/// How long one daemon run may take at most.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    let dir = std::env::var_os("COMFYC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| here().join("../../shared"));
    assert!(
        dir.join("comfyui/object_info.json").is_file(),
        "shared fixtures missing at {}",
        dir.display()
    );
    dir
}

fn long_name() -> OsString {
    let mut s = LONG_NAME_PREFIX.to_owned();
    while s.len() < 250 {
        s.push('a');
    }
    s.push_str(".toml");
    OsString::from(s)
}

fn long_report_name() -> OsString {
    // `.NAME.lease.PID.tmp` fits in 255 bytes up to 243 - digits(PID) bytes of NAME,
    // `.NAME.error.json.PID.tmp` only up to 238 - digits(PID).
    let len = 241 - std::process::id().to_string().len();
    let mut s = LONG_REPORT_PREFIX.to_owned();
    while s.len() < len - ".toml".len() {
        s.push('a');
    }
    s.push_str(".toml");
    OsString::from(s)
}

fn non_utf8_name() -> OsString {
    let mut bytes = NON_UTF8_PREFIX.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff.toml");
    OsString::from_vec(bytes)
}

/// Every case: its file name and the expected piece of its reason.
fn cases() -> Vec<(OsString, &'static str)> {
    let mut all: Vec<(OsString, &'static str)> =
        CASES.iter().map(|(n, e)| (OsString::from(n), *e)).collect();
    // A name of 255 bytes: no folder `queue/TOKEN~NAME` or report `NAME.error.json` could
    // exist, so it is refused by name, unread, under a short name.
    all.push((long_name(), "not allowed|too long"));
    // Long, but short enough to be a file name: still over the job file name limit.
    all.push((long_report_name(), "not allowed|too long"));
    // DAEMON BUG: the inbox scan ignores a name that is not UTF-8, so the file stays in the
    // inbox forever and nobody is told. It should be claimed and failed like any other.
    all.push((non_utf8_name(), "not allowed|UTF-8|utf-8"));
    all
}

fn generated() -> BTreeSet<OsString> {
    [OVER_LIMIT, SYMLINK, FIFO, MANY_BAD_LINES, TOO_MANY_JOBS]
        .iter()
        .map(OsString::from)
        .chain([long_name(), long_report_name(), non_utf8_name()])
        .collect()
}

fn png_bytes(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..width * height).flat_map(|_| rgb).collect();
        w.write_image_data(&data).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Opens a FIFO for writing and closes it at once: a reader blocked on it sees end of file.
/// Non-blocking, so nothing waits when no reader is there.
fn unblock_fifo(path: &Path) -> bool {
    // O_NONBLOCK on Linux (x86, ARM and most others).
    const O_NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .is_ok()
}

/// Files and folders under `dir`, not following symlinks.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn names(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Job files in a folder: not leases, error reports or temp files.
fn job_files(dir: &Path) -> BTreeSet<OsString> {
    names(dir)
        .into_iter()
        .filter(|n| {
            let s = n.to_string_lossy();
            !s.starts_with('.') && !s.ends_with(".lease") && !s.ends_with(".error.json")
        })
        .collect()
}

fn show(name: &OsStr) -> String {
    let s = name.to_string_lossy();
    if s.len() > 60 {
        format!(
            "{}…({} bytes)",
            s.chars().take(40).collect::<String>(),
            name.len()
        )
    } else {
        s.into_owned()
    }
}

/// What went wrong with the daemon itself, per file it held at the time.
#[derive(Default)]
struct Incidents {
    by_file: BTreeMap<OsString, Vec<String>>,
    general: Vec<String>,
}

impl Incidents {
    fn add(&mut self, running: &BTreeSet<OsString>, what: String) {
        if running.is_empty() {
            self.general.push(what);
        } else {
            for f in running {
                self.by_file
                    .entry(f.clone())
                    .or_default()
                    .push(what.clone());
            }
        }
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("the daemon task ended: {e}");
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Names of the job files taken into the store and not finished (`queue/TOKEN~NAME/NAME`).
fn queued(dir: &JobDir) -> BTreeSet<OsString> {
    std::fs::read_dir(dir.queue())
        .map(|r| {
            r.filter_map(Result::ok)
                .filter_map(|e| {
                    let n = e.file_name();
                    let n = n.to_str()?;
                    n.split_once('~').map(|(_, name)| OsString::from(name))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where a queued file is.
fn queued_path(dir: &JobDir, name: &OsStr) -> PathBuf {
    std::fs::read_dir(dir.queue())
        .ok()
        .and_then(|r| {
            r.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split_once('~'))
                    .is_some_and(|(_, n)| OsStr::new(n) == name)
            })
        })
        .map(|folder| folder.join(name))
        .unwrap_or_else(|| dir.queue().join(name))
}

/// Runs the daemon until it goes idle, restarting it (after moving the file it choked on
/// aside) when it panics, stops with an error or gets stuck.
async fn supervise(settings: &Settings, quarantine: &Path) -> Incidents {
    let dir = JobDir::new(&settings.jobs);
    let mut incidents = Incidents::default();
    for attempt in 1..=8 {
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(daemon::run(settings.clone(), rx));
        let started = Instant::now();
        let mut first_seen: BTreeMap<OsString, Instant> = BTreeMap::new();
        let mut stopping: Option<Instant> = None;
        let mut abnormal = false;
        loop {
            if handle.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let running = queued(&dir);
            first_seen.retain(|n, _| running.contains(n));
            for name in &running {
                let since = *first_seen.entry(name.clone()).or_insert_with(Instant::now);
                if since.elapsed() < STUCK {
                    continue;
                }
                let path = queued_path(&dir, name);
                let is_fifo =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_fifo());
                if is_fifo {
                    let freed = unblock_fifo(&path);
                    incidents.add(
                        &BTreeSet::from([name.clone()]),
                        format!(
                            "the daemon blocked on this FIFO for {} s (all other work waited); the test then opened it for writing{}",
                            STUCK.as_secs(),
                            if freed { "" } else { " (nobody was reading it)" }
                        ),
                    );
                    first_seen.insert(name.clone(), Instant::now());
                } else if stopping.is_none() {
                    incidents.add(
                        &BTreeSet::from([name.clone()]),
                        format!(
                            "stuck in queue/ for {} s; the test stopped the daemon",
                            STUCK.as_secs()
                        ),
                    );
                    abnormal = true;
                    stopping = Some(Instant::now());
                    let _ = stop.send(true);
                }
            }
            if stopping.is_none() && started.elapsed() > RUN_LIMIT {
                incidents.general.push(format!(
                    "attempt {attempt}: the daemon did not go idle in {} s",
                    RUN_LIMIT.as_secs()
                ));
                abnormal = true;
                stopping = Some(Instant::now());
                let _ = stop.send(true);
            }
            if stopping.is_some_and(|t| t.elapsed() > Duration::from_secs(30)) {
                incidents.general.push(format!(
                    "attempt {attempt}: the daemon did not stop within 30 s of the shutdown signal"
                ));
                handle.abort();
                break;
            }
        }
        // The file the daemon was working on, from its status file (stale after a panic, which
        // is what tells which file it panicked on); else every file in queue/.
        let mut culprits = queued(&dir);
        let current = std::fs::read(dir.status().join(format!("gpu-{}.json", settings.gpu)))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["running"][0]["file"].as_str().map(str::to_owned));
        if let Some(current) = current {
            let held: BTreeSet<OsString> = culprits
                .iter()
                .filter(|n| n.to_string_lossy() == current)
                .cloned()
                .collect();
            if !held.is_empty() {
                culprits = held;
            }
        }
        if handle.is_finished() {
            match handle.await {
                Ok(Ok(_summary)) => {}
                Ok(Err(e)) => {
                    abnormal = true;
                    incidents.add(&culprits, format!("the daemon stopped with an error: {e}"));
                }
                Err(e) => {
                    abnormal = true;
                    incidents.add(&culprits, format!("the daemon panicked: {}", panic_text(e)));
                }
            }
        } else {
            culprits = queued(&dir);
        }
        // Move what it choked on aside, so that a restart does not choke on it again.
        for name in &culprits {
            let from = queued_path(&dir, name);
            let _ = std::fs::rename(&from, quarantine.join(name));
            if let Some(folder) = from.parent() {
                let _ = std::fs::remove_dir_all(folder);
            }
        }
        let waiting = job_files(&dir.inbox());
        if !abnormal || (waiting.is_empty() && queued(&dir).is_empty()) {
            break;
        }
    }
    incidents
}

/// The reasons an error report gives: `error`, and every `failures[].message`.
fn reasons(report: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = report["error"].as_str() {
        out.push(e.to_owned());
    }
    for f in report["failures"].as_array().into_iter().flatten() {
        if let Some(m) = f["message"].as_str() {
            out.push(m.to_owned());
        }
    }
    out
}

/// The error report of a file that went to failed/: `NAME.error.json`, or a report whose
/// `file` is the name (a name too long for `NAME.error.json`).
fn find_report(failed: &Path, name: &OsStr) -> Option<(PathBuf, Value)> {
    let mut exact = name.to_owned();
    exact.push(".error.json");
    let read = |p: &Path| -> Option<Value> {
        let text = std::fs::read(p).ok()?;
        serde_json::from_slice(&text).ok()
    };
    let p = failed.join(&exact);
    if let Some(v) = read(&p) {
        return Some((p, v));
    }
    let lossy = name.to_string_lossy();
    for n in names(failed) {
        if !n.to_string_lossy().ends_with(".error.json") {
            continue;
        }
        let p = failed.join(&n);
        if let Some(v) = read(&p)
            && v["file"].as_str() == Some(lossy.as_ref())
        {
            return Some((p, v));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_job_files_fail_with_a_reason_and_the_daemon_keeps_going() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COMFYD_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path().to_path_buf();
    let hostile = here().join("tests/hostile");
    let examples = here().join("../examples");

    // Every committed file is a case, and every case not generated here is committed.
    let committed: BTreeSet<OsString> = std::fs::read_dir(&hostile)
        .unwrap_or_else(|e| panic!("{}: {e}", hostile.display()))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name())
        .collect();
    let all = cases();
    let listed: BTreeSet<OsString> = all.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(listed.len(), all.len(), "a case is listed twice");
    let gen_names = generated();
    let expected_committed: BTreeSet<OsString> = listed.difference(&gen_names).cloned().collect();
    assert_eq!(
        committed, expected_committed,
        "tests/hostile/ and the CASES table disagree"
    );
    assert!(all.len() >= 30, "only {} cases", all.len());

    // The input root, and a canary outside every folder the daemon may write.
    let outside = root.join("outside");
    let inputs = root.join("inputs");
    for d in [&outside, &inputs, &inputs.join("subdir")] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    let canary = outside.join("canary.png");
    let canary_bytes = png_bytes(5, 3, [0xde, 0xad, 0x01]);
    write(&canary, &canary_bytes);
    let canary_mtime = std::fs::metadata(&canary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{e}"));
    write(
        &inputs.join("small.png"),
        png_bytes(8, 8, [0x20, 0x80, 0xf0]),
    );
    write(&inputs.join("not-an-image.png"), "this is not a PNG\n");
    std::os::unix::fs::symlink(&canary, inputs.join("escape.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("../outside", inputs.join("linkdir"))
        .unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&inputs.join("fifo.png"));
    std::fs::File::create(inputs.join("huge-sparse.png"))
        .and_then(|f| f.set_len(300 * 1024 * 1024))
        .unwrap_or_else(|e| panic!("{e}"));
    let inputs_before = walk(&inputs);

    // The job directory: every hostile file, the generated ones, and the good jobs.
    let jobs = root.join("jobs");
    let dir = JobDir::new(&jobs);
    dir.create().unwrap_or_else(|e| panic!("{e}"));
    let inbox = dir.inbox();
    for name in &committed {
        std::fs::copy(hostile.join(name), inbox.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", show(name)));
    }
    {
        use std::io::Write;
        let mut f = std::fs::File::create(inbox.join(OVER_LIMIT)).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"workflow\": \"solid-color\", \"inputs\": {\"x\": \"")
            .and_then(|()| f.write_all(&vec![b'a'; 16 * 1024 * 1024]))
            .and_then(|()| f.write_all(b"\"}}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    std::os::unix::fs::symlink(&canary, inbox.join(SYMLINK)).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&inbox.join(FIFO));
    write(&inbox.join(MANY_BAD_LINES), "x\n".repeat(100_000));
    write(
        &inbox.join(TOO_MANY_JOBS),
        "{\"workflow\": \"solid-color\"}\n".repeat(100_001),
    );
    write(&inbox.join(long_name()), "workflow = \"solid-color\"\n");
    write(
        &inbox.join(long_report_name()),
        "workflow = \"solid-color\"\n",
    );
    write(&inbox.join(non_utf8_name()), "workflow = \"solid-color\"\n");
    let good_dir = hostile.join("good");
    let good: BTreeSet<OsString> = names(&good_dir);
    assert!(good.iter().any(|n| n == "good-solid-color.toml"));
    for name in &good {
        std::fs::copy(good_dir.join(name), inbox.join(name)).unwrap_or_else(|e| panic!("{e}"));
    }

    // The simulator, with the example repository's models.
    let text = std::fs::read_to_string(shared().join("comfyui/object_info.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let catalogue = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let sim_root = root.join("sim");
    let mut config = comfy_sim::Config::new(catalogue, &sim_root);
    let repo_text =
        std::fs::read_to_string(examples.join("comfyc.toml")).unwrap_or_else(|e| panic!("{e}"));
    let repo: comfyc::definition::RepoConfig =
        toml::from_str(&repo_text).unwrap_or_else(|e| panic!("{e}"));
    for m in &repo.models {
        config
            .models
            .entry(m.get_ref().folder.clone())
            .or_default()
            .push(m.get_ref().name.clone());
    }
    let sim = comfy_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut settings = Settings::new(&jobs, &examples, sim.url());
    settings.outputs = root.join("outputs");
    settings.inputs = Some(inputs.clone());
    settings.settle = Duration::ZERO;
    settings.until_idle = true;
    settings.lease_ttl = Duration::from_secs(4);
    settings.job_timeout = Some(Duration::from_secs(60));
    settings.grace = Duration::from_secs(2);
    settings.unreachable_patience = Duration::from_secs(10);
    let quarantine = root.join("quarantine");
    std::fs::create_dir_all(&quarantine).unwrap_or_else(|e| panic!("{e}"));

    let t0 = SystemTime::now();
    let incidents = supervise(&settings, &quarantine).await;
    let took = t0.elapsed().unwrap_or_default();

    let mut problems: Vec<String> = incidents
        .general
        .iter()
        .map(|i| format!("daemon: {i}"))
        .collect();
    let (inbox_files, running_files, done_files) = (
        job_files(&dir.inbox()),
        queued(&dir),
        job_files(&dir.done()),
    );

    // Each hostile file: in failed/, with a report that names the problem.
    for (name, expect) in &all {
        let shown = show(name);
        let mut p = Vec::new();
        for i in incidents.by_file.get(name).into_iter().flatten() {
            p.push(i.clone());
        }
        for (folder, files) in [
            ("inbox", &inbox_files),
            ("running", &running_files),
            ("done", &done_files),
        ] {
            if files.contains(name) {
                p.push(format!("ended in {folder}/"));
            }
        }
        if quarantine.join(name).exists() {
            p.push("the test had to move it out of running/".into());
        }
        match find_report(&dir.failed(), name) {
            None => p.push("no error report in failed/".into()),
            Some((path, report)) => {
                let report_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let file_name = report_name.trim_end_matches(".error.json");
                if !dir.failed().join(file_name).exists() && !dir.failed().join(name).exists() {
                    p.push("an error report but no file in failed/".into());
                }
                let rs = reasons(&report);
                if std::env::var_os("HOSTILE_SHOW").is_some() {
                    let text = rs.join(" / ");
                    eprintln!("{shown}: {}", text.chars().take(300).collect::<String>());
                }
                if rs.is_empty() || rs.iter().any(String::is_empty) {
                    p.push(format!("the report gives no reason: {report}"));
                } else if !expect.split('|').any(|e| rs.iter().any(|r| r.contains(e))) {
                    let mut all_reasons = rs.join(" / ");
                    if all_reasons.len() > 400 {
                        all_reasons =
                            format!("{}…", all_reasons.chars().take(400).collect::<String>());
                    }
                    p.push(format!("the reason does not say `{expect}`: {all_reasons}"));
                }
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size > MAX_REPORT_BYTES {
                    p.push(format!(
                        "the error report is {size} bytes, over {MAX_REPORT_BYTES}"
                    ));
                }
            }
        }
        if !p.is_empty() {
            problems.push(format!("{shown}: {}", p.join("; ")));
        }
    }

    // Each line of the all-bad JSONL is reported.
    if let Some((_, r)) = find_report(&dir.failed(), OsStr::new("jsonl-every-line-bad.jsonl")) {
        let n = r["failures"].as_array().map_or(0, Vec::len);
        if n != 6 {
            problems.push(format!(
                "jsonl-every-line-bad.jsonl: {n} failures reported for 6 bad lines"
            ));
        }
    }

    // The good jobs: done, with their manifests; injected text stays text.
    let outputs = &settings.outputs;
    for name in &good {
        let stem = stem_of(&name.to_string_lossy());
        if !done_files.contains(name) {
            let why = find_report(&dir.failed(), name)
                .map(|(_, r)| reasons(&r).join(" / "))
                .unwrap_or_default();
            problems.push(format!(
                "good job {stem} is not in done/ {}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!("(failed: {why})")
                }
            ));
            continue;
        }
        if !outputs.join(&stem).join("manifest.json").is_file() {
            problems.push(format!("good job {stem}: no outputs/{stem}/manifest.json"));
        }
        let spec: toml::Table = std::fs::read_to_string(good_dir.join(name))
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default();
        if let Some(prompt) = spec
            .get("inputs")
            .and_then(|i| i.get("prompt"))
            .and_then(|p| p.as_str())
        {
            let graph: Value = std::fs::read(outputs.join(&stem).join("graph.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if graph["6"]["inputs"]["text"].as_str() != Some(prompt) {
                problems.push(format!(
                    "good job {stem}: node 6's text in graph.json is not the prompt: {}",
                    graph["6"]["inputs"]["text"]
                ));
            }
            for injected in ["99", "x", "z"] {
                if graph.get(injected).is_some() {
                    problems.push(format!(
                        "good job {stem}: graph.json has a node `{injected}`"
                    ));
                }
            }
        }
    }

    // Nothing written outside the job, output and simulator folders.
    let mut allowed_outputs: BTreeSet<String> =
        good.iter().map(|n| stem_of(&n.to_string_lossy())).collect();
    allowed_outputs.extend(PARTIAL_OUTPUTS.iter().map(|s| (*s).to_owned()));
    for n in names(outputs) {
        let n = n.to_string_lossy().into_owned();
        if n.contains("..") || n.contains('/') || n.contains('\\') || n.starts_with('.') {
            problems.push(format!("output folder with an unsafe name: {n:?}"));
        } else if !allowed_outputs.contains(&n) {
            problems.push(format!("output folder of a hostile job: {n:?}"));
        }
    }
    let top: BTreeSet<String> = names(&root)
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let expected_top: BTreeSet<String> =
        ["inputs", "jobs", "outputs", "outside", "quarantine", "sim"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    if top != expected_top {
        problems.push(format!("the temp folder holds {top:?}"));
    }
    if names(&outside) != BTreeSet::from([OsString::from("canary.png")]) {
        problems.push(format!("outside/ holds {:?}", names(&outside)));
    }
    let canary_now = std::fs::read(&canary).unwrap_or_default();
    let canary_mtime_now = std::fs::metadata(&canary).and_then(|m| m.modified()).ok();
    if canary_now != canary_bytes || canary_mtime_now != Some(canary_mtime) {
        problems.push("the canary outside the folders was changed".into());
    }
    if walk(&inputs) != inputs_before {
        problems.push("the input root was changed".into());
    }
    for p in walk(&root) {
        let rel = p.strip_prefix(&root).unwrap_or(&p);
        if rel.to_string_lossy().contains("pwned") {
            problems.push(format!(
                "a file named by an injected prefix: {}",
                rel.display()
            ));
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
            && !p.starts_with(&outside)
            && !p.starts_with(&inputs)
            && std::fs::read(&p).is_ok_and(|b| b == canary_bytes)
        {
            problems.push(format!(
                "the canary's bytes were copied to {}",
                rel.display()
            ));
        }
    }
    for p in walk(&sim_root.join("output")) {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            let rel = p.strip_prefix(sim_root.join("output")).unwrap_or(&p);
            let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
            let (first, id) = (parts.next(), parts.next());
            if first.as_deref() != Some("comfyd")
                || !id.is_some_and(|id| allowed_outputs.contains(id.as_ref()))
            {
                problems.push(format!("the simulator saved {}", rel.display()));
            }
        }
    }
    drop(sim);

    assert!(
        problems.is_empty(),
        "{} hostile files (plus {} good ones) ran in {:.1} s; {} problems:\n  {}",
        all.len(),
        good.len(),
        took.as_secs_f64(),
        problems.len(),
        problems.join("\n  ")
    );
}

/// A job file's default job id: its name without the extension.
fn stem_of(name: &str) -> String {
    name.rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_owned()
}
