//! What the server says about itself: `/object_info` (with live image and model lists),
//! `/models` and `/system_stats` (the recorded CPU server, or the simulated CUDA device).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::respond;
use crate::recorded::MODEL_FOLDERS;
use crate::shared::{Shared, lock};

/// `GET /system_stats`: as recorded, but with a memory model the device is a CUDA GPU whose
/// figures are the model's. Torch has reserved what is allocated and all of it is in use, so
/// `torch_vram_total` is the allocated total and `torch_vram_free` is 0
/// (`model_management.get_total_memory`/`get_free_memory`).
pub(crate) fn system_stats(shared: &Shared) -> Response {
    let mut stats = crate::recorded::system_stats();
    if let Some(memory) = &shared.memory {
        let (used, free) = {
            let state = lock(&shared.state);
            (state.device.used(), state.device.free(memory))
        };
        stats["system"]["argv"] = json!([
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            "8188",
            "--disable-auto-launch"
        ]);
        stats["devices"] = json!([{
            "name": "cuda:0 NVIDIA Simulated GPU : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": memory.vram_bytes,
            "vram_free": free,
            "torch_vram_total": used.min(memory.vram_bytes),
            "torch_vram_free": 0
        }]);
    }
    respond::ok_json(&stats)
}

/// The whole catalogue, or `{class: ...}` for one class (`{}` when unknown, as recorded).
pub(crate) fn object_info(shared: &Shared, class: Option<&str>) -> Response {
    let served = shared
        .catalogue
        .served(class, &shared.dirs.input, &shared.models);
    respond::ok_json(&Value::Object(served))
}

fn folders(shared: &Shared) -> Vec<String> {
    let mut all: Vec<String> = MODEL_FOLDERS.iter().map(|f| (*f).to_owned()).collect();
    for folder in shared.models.keys() {
        if !all.contains(folder) {
            all.push(folder.clone());
        }
    }
    all
}

pub(crate) fn models(shared: &Shared) -> Response {
    respond::ok_json(&Value::Array(
        folders(shared).into_iter().map(Value::String).collect(),
    ))
}

pub(crate) fn model_folder(shared: &Shared, folder: &str) -> Response {
    if !folders(shared).iter().any(|f| f == folder) {
        return respond::empty(StatusCode::NOT_FOUND);
    }
    let mut names = shared.models.get(folder).cloned().unwrap_or_default();
    names.sort();
    respond::ok_json(&Value::Array(
        names.into_iter().map(Value::String).collect(),
    ))
}
