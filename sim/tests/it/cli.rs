//! The real `comfy-sim` binary: it prints its URL and serves, logs without colour when its
//! output is not a terminal, and simulates a GPU from its memory flags.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{recorded_path, sd15};

/// Starts the binary on a free port with the recorded catalogue and these flags; returns the
/// child (stderr piped) and the URL it printed.
fn spawn(args: &[&str], root: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfy-sim"))
        .args(["--port", "0", "--catalogue"])
        .arg(recorded_path("object_info.json"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    (child, line.trim().to_owned())
}

/// Runs `check` against the child, then kills it whatever happened; returns its stderr.
fn with_child(mut child: Child, check: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let result = std::panic::catch_unwind(check);
    let _ = child.kill();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    stderr
}

#[test]
fn logs_have_no_colour_when_stderr_is_not_a_terminal() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (child, url) = spawn(&[], root.path());
    let stderr = with_child(child, || {
        assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
    });
    assert!(stderr.contains("comfy-sim listening"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

#[test]
fn memory_flags_simulate_a_gpu() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let flags = [
        "--model",
        "checkpoints/big.safetensors",
        "--vram-mb",
        "8192",
        "--model-mb",
        "big.safetensors=6144",
        "--working-mb",
        "512",
        "--leak-mb",
        "256",
    ];
    let (child, url) = spawn(&flags, root.path());
    with_child(child, move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let device = |http: &reqwest::blocking::Client| -> Value {
            let stats: Value = http
                .get(format!("{url}/system_stats"))
                .send()
                .and_then(reqwest::blocking::Response::json)
                .unwrap_or_else(|e| panic!("{e}"));
            stats["devices"][0].clone()
        };
        let before = device(&http);
        assert_eq!(before["type"], "cuda");
        assert_eq!(before["vram_total"], json!(8192u64 << 20));
        assert_eq!(before["vram_free"], json!(8192u64 << 20));
        let answer: Value = http
            .post(format!("{url}/prompt"))
            .json(&json!({"prompt": sd15("big.safetensors", 1, 2)}))
            .send()
            .and_then(reqwest::blocking::Response::json)
            .unwrap_or_else(|e| panic!("{e}"));
        let id = answer["prompt_id"].as_str().unwrap_or_default().to_owned();
        let mut entry = Value::Null;
        for _ in 0..400 {
            let h: Value = http
                .get(format!("{url}/history/{id}"))
                .send()
                .and_then(reqwest::blocking::Response::json)
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(e) = h.get(&id) {
                entry = e.clone();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(entry["status"]["status_str"], "success", "{entry}");
        // 6144 MiB resident and 256 MiB leaked of 8192.
        assert_eq!(device(&http)["vram_free"], json!(1792u64 << 20));
    });
}

#[test]
fn memory_flags_are_checked() {
    let cases: [(&[&str], &str); 3] = [
        (&["--leak-mb", "5"], "--vram-mb"),
        (
            &["--vram-mb", "100", "--model-mb", "big.safetensors"],
            "`--model-mb big.safetensors` is not `NAME=MB`",
        ),
        (
            &["--vram-mb", "99999999999999"],
            "`--vram-mb 99999999999999` is too large",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_comfy-sim"))
            .args(["--port", "0", "--catalogue"])
            .arg(recorded_path("object_info.json"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn the_binary_serves_and_prints_its_url() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfy-sim"))
        .args([
            "--port",
            "0",
            "--model",
            "checkpoints/x.safetensors",
            "--catalogue",
        ])
        .arg(recorded_path("object_info.json"))
        .arg("--root")
        .arg(root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let url = line.trim().to_owned();
    let result = std::panic::catch_unwind(|| {
        assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
        let models: serde_json::Value = reqwest::blocking::get(format!("{url}/models/checkpoints"))
            .and_then(reqwest::blocking::Response::json)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(models, serde_json::json!(["x.safetensors"]));
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_missing_catalogue_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_comfy-sim"))
        .args([
            "--port",
            "0",
            "--catalogue",
            "/nonexistent/object_info.json",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read `/nonexistent/object_info.json`"),
        "{err}"
    );
}

#[test]
fn the_protocol_flag_picks_the_2026_behaviours() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let prompt =
        json!({"prompt": crate::support::small_graph(1, "cli"), "prompt_id": "not-a-uuid"});
    let probe = |url: &str| -> (u16, u16) {
        let http = reqwest::blocking::Client::new();
        let jobs = http
            .get(format!("{url}/api/jobs"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{e}"));
        let submit = http
            .post(format!("{url}/prompt"))
            .json(&prompt)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{e}"));
        (jobs, submit)
    };
    let (child, url) = spawn(&["--protocol", "2026"], root.path());
    with_child(child, || assert_eq!(probe(&url), (200, 400)));
    let (child, url) = spawn(&[], root.path());
    with_child(child, || {
        assert_eq!(probe(&url), (404, 200), "0.3 by default")
    });
}
