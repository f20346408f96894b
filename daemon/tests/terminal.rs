//! The real `comfyd` binary as a person at a terminal sees it: under a pseudo-terminal (util-linux
//! `script`), the overall progress bar is drawn and no log line ever shares a line with it; off a
//! terminal there is no bar, and a long job logs its progress every few seconds.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use comfy_sim::Timing;
use common::{drop_job, examples, start_sim};

fn txt2img(prompt: &str, steps: u32) -> String {
    format!(
        "{{\"workflow\": \"txt2img\", \"inputs\": {{\"prompt\": \"{prompt}\", \"steps\": {steps}}}}}"
    )
}

/// `comfyd run --until-idle` against `url`, its arguments.
fn run_args(jobs: &Path, outputs: &Path, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        env!("CARGO_BIN_EXE_comfyd").into(),
        "run".into(),
        "--jobs".into(),
        jobs.to_string_lossy().into_owned(),
        "--workflows".into(),
        examples().to_string_lossy().into_owned(),
        "--outputs".into(),
        outputs.to_string_lossy().into_owned(),
        "--comfy-url".into(),
        url.into(),
        "--until-idle".into(),
        "--settle-ms".into(),
        "50".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Runs `args` under a pseudo-terminal 100 columns wide; returns what the terminal received
/// and the exit status. `during` runs while it does.
async fn under_pty(
    args: &[String],
    env: &[(&str, &str)],
    during: impl std::future::Future<Output = ()>,
) -> (Vec<u8>, Option<i32>) {
    let line = format!(
        "stty cols 100 rows 40 && exec {}",
        shell_words::join(args.iter().map(String::as_str))
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start `script` (util-linux; `apt-get install -y bsdutils`): {e}")
    });
    let (out, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()),
        during
    );
    let out = out
        .unwrap_or_else(|_| panic!("comfyd did not finish in 120 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.stderr.is_empty(),
        "script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.stdout, out.status.code())
}

/// What a terminal shows after receiving `bytes`: carriage returns, line feeds, line erases
/// and cursor moves applied, colours dropped. Lines are not wrapped. Escape sequences it does
/// not know are returned, so a test can refuse to trust a screen it could not rebuild.
fn screen(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let mut unknown = Vec::new();
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\u{1b}' => {
                if chars.peek() != Some(&'[') {
                    unknown.push(format!("ESC {:?}", chars.next()));
                    continue;
                }
                chars.next();
                let mut params = String::new();
                let mut fin = None;
                for p in chars.by_ref() {
                    if p.is_ascii_alphabetic() || p == '~' {
                        fin = Some(p);
                        break;
                    }
                    params.push(p);
                }
                let n = params.parse::<usize>().unwrap_or(1).max(1);
                let line = &mut lines[row];
                match fin {
                    Some('m') => {}
                    Some('h' | 'l') if params.starts_with('?') => {}
                    Some('K') => match params.as_str() {
                        "" | "0" => line.truncate(col),
                        "2" => line.clear(),
                        "1" => line.iter_mut().take(col + 1).for_each(|ch| *ch = ' '),
                        _ => unknown.push(format!("CSI {params}K")),
                    },
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => {
                        row += n;
                        while lines.len() <= row {
                            lines.push(Vec::new());
                        }
                    }
                    Some('G') => col = n - 1,
                    Some('J') if params.is_empty() || params == "0" => {
                        line.truncate(col);
                        lines.truncate(row + 1);
                    }
                    other => unknown.push(format!("CSI {params}{other:?}")),
                }
            }
            c if c.is_control() => {}
            c => {
                let line = &mut lines[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    let lines = lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    (lines, unknown)
}

/// `2026-12-04T17:43:19.723854Z  INFO ...`: tracing's text format, from column 0.
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 28
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && line.contains("Z ")
        && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
            .iter()
            .any(|l| line.contains(l))
}

/// `[00:00:03] =====>    8/50 jobs, 2.4 jobs/s, ETA 12s (2 running)`.
fn is_bar_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[0] == b'['
        && b[3] == b':'
        && b[9] == b']'
        && line.contains(" jobs, ")
        && line.contains(" ETA ")
}

#[tokio::test]
async fn on_a_terminal_the_bar_is_drawn_and_every_log_line_starts_at_column_0() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    // Slow sampler steps: jobs end while the bar is drawn, and some log their progress.
    let sim = start_sim(
        &tmp.path().join("sim"),
        Timing {
            node_ms: 2,
            class_ms: [("KSampler".to_owned(), 150)].into(),
            ..Timing::default()
        },
    )
    .await;
    let first: Vec<String> = (0..30).map(|i| txt2img(&format!("a{i}"), 3)).collect();
    drop_job(&jobs, "first.jsonl", &(first.join("\n") + "\n"));
    // The total grows while the bar is drawn: four more files arrive during the run.
    let later = {
        let jobs = jobs.clone();
        async move {
            for f in 0..4 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let lines: Vec<String> = (0..5).map(|i| txt2img(&format!("b{f}-{i}"), 3)).collect();
                drop_job(
                    &jobs,
                    &format!("later-{f}.jsonl"),
                    &(lines.join("\n") + "\n"),
                );
            }
        }
    };
    let args = run_args(&jobs, &outputs, &sim.url(), &[]);
    let (bytes, code) = under_pty(
        &args,
        &[("COMFYD_LOG", "info"), ("COMFYD_PROGRESS_LOG_MS", "100")],
        later,
    )
    .await;
    let raw = String::from_utf8_lossy(&bytes);
    assert_eq!(code, Some(0), "{raw}");
    let (lines, unknown) = screen(&bytes);
    assert!(
        unknown.is_empty(),
        "escape sequences not understood: {unknown:?}"
    );
    let shown = lines.join("\n");
    // Each log line on its own line, from column 0, with nothing of the bar before or after.
    for l in &lines {
        assert!(
            is_log_line(l) && !l.contains(" jobs, ") || is_bar_line(l) && !l.contains("Z  INFO"),
            "a line that is neither a log line nor the bar:\n{l}\n\nscreen:\n{shown}"
        );
    }
    let logged = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(logged("job done"), 50, "{shown}");
    assert!(logged("job progress") > 0, "{shown}");
    // The bar was drawn over and over as jobs ended, and cleared before every log line: what
    // stays on screen is its last state, just above the summary.
    assert!(
        raw.matches(" jobs, ").count() > 50,
        "the bar was redrawn as jobs ended:\n{raw}"
    );
    assert!(
        raw.contains("/30 jobs") && raw.contains("/50 jobs"),
        "the total grew as files came in:\n{raw}"
    );
    let bars: Vec<usize> = (0..lines.len())
        .filter(|&i| is_bar_line(&lines[i]))
        .collect();
    assert_eq!(bars.len(), 1, "one bar left on screen:\n{shown}");
    assert!(
        lines[bars[0]].contains(" 50/50 jobs, ") && lines[bars[0]].contains("(0 running)"),
        "{shown}"
    );
    assert!(
        lines[bars[0] + 1].contains(" stopped "),
        "the summary comes below the final bar:\n{shown}"
    );
}

#[tokio::test]
async fn no_bar_with_no_progress_or_json_logs_even_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sim = start_sim(&tmp.path().join("sim"), Timing::default()).await;
    for (n, flags) in [
        ("no-progress", &["--no-progress"][..]),
        ("json", &["--log-format", "json"][..]),
    ] {
        let (jobs, outputs) = (
            tmp.path().join(n).join("jobs"),
            tmp.path().join(n).join("out"),
        );
        let lines: Vec<String> = (0..3).map(|i| txt2img(&format!("c{i}"), 2)).collect();
        drop_job(&jobs, "c.jsonl", &(lines.join("\n") + "\n"));
        let args = run_args(&jobs, &outputs, &sim.url(), flags);
        let (bytes, code) = under_pty(&args, &[("COMFYD_LOG", "info")], async {}).await;
        let raw = String::from_utf8_lossy(&bytes);
        assert_eq!(code, Some(0), "{n}: {raw}");
        assert_eq!(raw.matches("job done").count(), 3, "{n}: {raw}");
        assert!(!raw.contains(" jobs, "), "{n}: no bar:\n{raw}");
        if n == "json" {
            for l in raw.lines() {
                let v: serde_json::Value = serde_json::from_str(l.trim_end_matches('\r'))
                    .unwrap_or_else(|e| panic!("{e}: not one JSON object a line: {l:?}"));
                assert!(v["timestamp"].is_string(), "{l}");
            }
        }
    }
}

#[tokio::test]
async fn a_long_job_logs_its_progress_every_interval() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (jobs, outputs) = (tmp.path().join("jobs"), tmp.path().join("outputs"));
    // 10 sampler steps of 200 ms: a 2 s job, logged every 250 ms.
    let sim = start_sim(
        &tmp.path().join("sim"),
        Timing {
            class_ms: [("KSampler".to_owned(), 2000)].into(),
            ..Timing::default()
        },
    )
    .await;
    drop_job(
        &jobs,
        "long.toml",
        "id = \"long\"\nworkflow = \"txt2img\"\n[inputs]\nprompt = \"a slow one\"\nsteps = 10\n",
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_comfyd"))
        .args(&run_args(&jobs, &outputs, &sim.url(), &[])[1..])
        .env("COMFYD_LOG", "info")
        .env("COMFYD_PROGRESS_LOG_MS", "250")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(" jobs, "), "no bar off a terminal:\n{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no escape codes off a terminal:\n{err}"
    );
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("job progress")).collect();
    assert!(
        progress.len() >= 3,
        "about one line per 250 ms of a 2 s job:\n{err}"
    );
    // Seconds of the day from `2026-12-04T17:45:37.432836Z`.
    let at = |l: &str| -> f64 {
        let t = l.get(11..26).unwrap_or_else(|| panic!("no timestamp: {l}"));
        let p: Vec<f64> = t.split(':').filter_map(|x| x.parse().ok()).collect();
        assert_eq!(p.len(), 3, "{l}");
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    for w in progress.windows(2) {
        assert!(
            at(w[1]) - at(w[0]) >= 0.25,
            "throttled to one line per 250 ms:\n{}\n{}",
            w[0],
            w[1]
        );
    }
    let steps: Vec<u32> = progress
        .iter()
        .filter(|l| l.contains("job=long") && l.contains("class=KSampler"))
        .filter_map(|l| l.split(" step=").nth(1)?.split('/').next()?.parse().ok())
        .collect();
    assert!(
        steps.len() >= 3 && steps.windows(2).all(|w| w[0] <= w[1]),
        "the sampler's steps, rising, in the log: {steps:?}\n{err}"
    );
    assert!(
        progress
            .iter()
            .all(|l| l.contains("nodes=") && l.contains("running_s=")),
        "{err}"
    );
}
