//! The real `comfy-sim` binary: it prints its URL and serves.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::recorded_path;

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
