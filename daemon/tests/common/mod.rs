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
