//! Set-up shared by the daemon's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/` beside the checkout (recorded ComfyUI responses); `COMFYC_SHARED` overrides.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("COMFYC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(
        dir.join("comfyui/object_info.json").is_file(),
        "shared fixtures missing at {}",
        dir.display()
    );
    dir
}

/// The example workflow repository.
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A simulator with the recorded catalogue and the examples' models, files under `root`.
pub async fn start_sim(root: &Path, timing: comfy_sim::Timing) -> comfy_sim::Sim {
    let text =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let mut config = comfy_sim::Config::new(
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
        root,
    );
    config.models.insert(
        "checkpoints".into(),
        vec![
            "v1-5-pruned-emaonly-fp16.safetensors".into(),
            "tiny-sd15.safetensors".into(),
        ],
    );
    config.models.insert(
        "loras".into(),
        vec![
            "add-detail.safetensors".into(),
            "film-grain.safetensors".into(),
        ],
    );
    config.timing = timing;
    comfy_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a job file elsewhere, then renames it into `inbox/`, as users should.
pub fn drop_job(jobs: &Path, name: &str, text: &str) {
    let tmp = jobs.join(format!(".{name}.tmp"));
    std::fs::create_dir_all(jobs.join("inbox")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, jobs.join("inbox").join(name)).unwrap_or_else(|e| panic!("{e}"));
}

/// Names in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for e in std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Live processes (zombies left out) whose arguments contain `--port PORT` and whose program
/// is not `comfyd` itself: the ComfyUI (or simulator) a daemon supervises on that port, and
/// anything it started with the same arguments.
pub fn procs_on_port(port: u16) -> Vec<u32> {
    let port = port.to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let args: Vec<String> = std::fs::read(e.path().join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_comfyd = args
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "comfyd"));
        let names_port = args.windows(2).any(|w| w[0] == "--port" && w[1] == port)
            || args.iter().any(|a| a.contains(&format!("--port {port}")));
        if !is_comfyd && names_port && process_state(pid).is_some_and(|s| s != 'Z') {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

/// The one-letter state of a process (`R`, `S`, `T`, `Z`...), or `None` when it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
