//! The real `comfyd` binary under real signals: SIGKILL loses nothing, SIGTERM hands back.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comfy_sim::Timing;
use common::{drop_job, examples, names, start_sim};

fn comfyd(jobs: &Path, outputs: &Path, url: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args(["run", "--jobs"])
        .arg(jobs)
        .arg("--workflows")
        .arg(examples())
        .arg("--outputs")
        .arg(outputs)
        .args(["--comfy-url", url, "--lease-ttl", "3"])
        .args(extra)
        .env("COMFYD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting comfyd: {e}"))
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return s;
        }
        assert!(t.elapsed() < limit, "comfyd did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} failed");
}

fn manifests(outputs: &Path) -> usize {
    names(outputs)
        .iter()
        .filter(|j| outputs.join(j).join("manifest.json").is_file())
        .count()
}

#[tokio::test]
async fn sigkill_mid_job_then_restart_loses_nothing_and_reruns_nothing_finished() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = start_sim(
        &tmp.path().join("sim"),
        Timing {
            class_ms: [("ImageInvert".to_owned(), 400)].into(),
            ..Timing::default()
        },
    )
    .await;
    for i in 0..6 {
        drop_job(
            &jobs,
            &format!("k{i}.toml"),
            &format!("workflow = \"solid-color\"\n[inputs]\ncolor = {i}\nwidth = 8\nheight = 8\n"),
        );
    }
    let mut first = comfyd(&jobs, &outputs, &sim.url(), &[]);
    wait_until("two jobs are done", Duration::from_secs(60), || {
        manifests(&outputs) >= 2
    })
    .await;
    first.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = first.wait();
    let finished_before: Vec<String> = names(&outputs)
        .into_iter()
        .filter(|j| outputs.join(j).join("manifest.json").is_file())
        .collect();
    assert!(
        queued(&jobs)
            .iter()
            .any(|(_, files)| files.iter().any(|n| n.starts_with('L'))),
        "a job was mid-run when killed"
    );

    let mut second = comfyd(&jobs, &outputs, &sim.url(), &["--until-idle"]);
    let status = wait_exit(&mut second, Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        names(&jobs.join("done")).len(),
        6,
        "every file ended in done/"
    );
    assert!(queued(&jobs).is_empty() && names(&jobs.join("inbox")).is_empty());
    assert_eq!(manifests(&outputs), 6);
    // Jobs finished before the kill ran exactly once on the server.
    for j in &finished_before {
        let n = names(&tmp.path().join("sim/output/comfyd").join(j)).len();
        assert_eq!(n, 1, "{j} ran {n} times");
    }
    // And so did the ones in flight: the restart adopted their prompts instead of submitting
    // them again (counted where the work happens).
    let subs = sim.submitted_prefixes();
    for i in 0..6 {
        let n = subs
            .iter()
            .filter(|(_, p)| p.iter().any(|p| p.starts_with(&format!("comfyd/k{i}/"))))
            .count();
        assert_eq!(n, 1, "k{i} was submitted {n} times");
    }
}

#[tokio::test]
async fn sigterm_releases_a_job_that_does_not_finish_within_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = start_sim(
        &tmp.path().join("sim"),
        Timing {
            class_ms: [("ImageInvert".to_owned(), 5000)].into(),
            ..Timing::default()
        },
    )
    .await;
    drop_job(&jobs, "long.toml", "workflow = \"solid-color\"\n");
    let mut d = comfyd(&jobs, &outputs, &sim.url(), &["--grace", "1"]);
    wait_until("the job runs", Duration::from_secs(30), || {
        queued(&jobs)
            .iter()
            .any(|(f, files)| f.ends_with("~long.toml") && files.contains(&"L0.1".to_owned()))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&d, "-TERM");
    let status = wait_exit(&mut d, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(!outputs.join("long/manifest.json").exists());
    // Let go, not lost: the lease says released, so the next daemon takes it at once.
    let q = queued(&jobs);
    assert_eq!(q.len(), 1, "{q:?}");
    let lease: serde_json::Value = serde_json::from_slice(
        &std::fs::read(jobs.join("queue").join(&q[0].0).join("L0.1")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(lease["released"], true, "{lease}");
    sim.set_timing(Timing::default());
    let mut next = comfyd(&jobs, &outputs, &sim.url(), &["--until-idle", "--gpu", "3"]);
    let status = wait_exit(&mut next, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(names(&jobs.join("done")), ["long.toml"]);
    assert!(outputs.join("long/manifest.json").is_file());
}

#[tokio::test]
async fn sigterm_lets_a_short_job_finish() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = start_sim(
        &tmp.path().join("sim"),
        Timing {
            class_ms: [("ImageInvert".to_owned(), 1500)].into(),
            ..Timing::default()
        },
    )
    .await;
    drop_job(&jobs, "short.toml", "workflow = \"solid-color\"\n");
    let mut d = comfyd(&jobs, &outputs, &sim.url(), &["--grace", "20"]);
    wait_until("the job runs", Duration::from_secs(30), || {
        queued(&jobs)
            .iter()
            .any(|(f, files)| f.ends_with("~short.toml") && files.contains(&"L0.1".to_owned()))
    })
    .await;
    signal(&d, "-TERM");
    let status = wait_exit(&mut d, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(names(&jobs.join("done")), ["short.toml"]);
    assert!(outputs.join("short/manifest.json").is_file());
}

/// The job store's folders (`queue/TOKEN~NAME`) and what each holds.
fn queued(jobs: &Path) -> Vec<(String, Vec<String>)> {
    names(&jobs.join("queue"))
        .into_iter()
        .map(|f| {
            let files = names(&jobs.join("queue").join(&f));
            (f, files)
        })
        .collect()
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks as f64 / 100.0
}

#[tokio::test]
async fn an_idle_daemon_sleeps_instead_of_polling() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    let sim = start_sim(&tmp.path().join("sim"), Timing::default()).await;
    let mut d = comfyd(&jobs, &outputs, &sim.url(), &[]);
    wait_until("the job directory exists", Duration::from_secs(30), || {
        jobs.join("status/gpu-0.json").is_file()
    })
    .await;
    let before = cpu_seconds(d.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(d.id()) - before;
    // Reading the workflow repository (an editor, `git status`, CI) wakes nothing: the watch
    // asks for changes only.
    let switches = context_switches(d.id());
    for _ in 0..50 {
        for e in std::fs::read_dir(examples().join("workflows"))
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
        {
            let _ = std::fs::read(e.path());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let woke = context_switches(d.id()) - switches;
    // A job dropped now is still noticed at once (by the watcher, not a poll).
    drop_job(&jobs, "late.toml", "workflow = \"solid-color\"\n");
    wait_until("the late job is done", Duration::from_secs(10), || {
        outputs.join("late/manifest.json").is_file()
    })
    .await;
    signal(&d, "-TERM");
    let _ = wait_exit(&mut d, Duration::from_secs(30)).await;
    assert!(used < 0.6, "an idle daemon used {used:.2} s of CPU in 3 s");
    assert!(
        woke < 25,
        "reading the workflows 50 times woke the daemon's threads {woke} times"
    );
}

/// Context switches of all of a process's threads, from /proc.
fn context_switches(pid: u32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}
