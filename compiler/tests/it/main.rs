//! Integration tests of comfyc: one test binary, one module per area.

mod ajv;
mod build;
mod catalogue;
mod cli;
mod cli_edges;
mod comfy_errors;
mod corpus;
mod fixtures;
mod https;
mod property;
mod ui;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use comfyc::diagnostic::{RenderOptions, render_all};
use comfyc::{Compilation, MemLoader, compile};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `shared/` beside the checkout: recorded ComfyUI responses and the workflow corpus.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("COMFYC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    assert!(
        dir.join("comfyui/object_info.json").is_file(),
        "the shared fixtures are missing at {} (set COMFYC_SHARED to the folder holding comfyui/ and corpus/)",
        dir.display()
    );
    dir
}

/// The examples' node catalogue snapshot (ComfyUI 0.3.64, 496 classes), read once.
pub fn catalogue_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        std::fs::read_to_string(repo_root().join("examples/nodes/object_info.json"))
            .unwrap_or_else(|e| panic!("examples/nodes/object_info.json: {e}"))
    })
}

/// An in-memory repository with the real catalogue and default settings.
pub fn repo() -> MemLoader {
    MemLoader::new()
        .with("comfyc.toml", "catalogue = \"nodes/object_info.json\"\n")
        .with("nodes/object_info.json", catalogue_text())
}

/// The classes the examples and fixtures use, cut from the real catalogue: for tests that
/// compile thousands of times and do not need all 496 classes.
pub fn small_catalogue_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let all: serde_json::Value = serde_json::from_str(catalogue_text()).unwrap_or_default();
        let keep = [
            "CLIPTextEncode",
            "CheckpointLoaderSimple",
            "EmptyImage",
            "EmptyLatentImage",
            "ImageBlur",
            "ImageInvert",
            "ImageScale",
            "KSampler",
            "LoadImage",
            "LoraLoader",
            "SaveImage",
            "VAEDecode",
            "VAEEncode",
        ];
        let small: serde_json::Map<String, serde_json::Value> = keep
            .iter()
            .map(|k| ((*k).to_owned(), all[*k].clone()))
            .collect();
        serde_json::to_string(&small).unwrap_or_default()
    })
}

/// Like [`repo`], with [`small_catalogue_text`].
pub fn small_repo() -> MemLoader {
    MemLoader::new()
        .with("comfyc.toml", "catalogue = \"nodes/object_info.json\"\n")
        .with("nodes/object_info.json", small_catalogue_text())
}

pub fn compile_mem(loader: MemLoader) -> Compilation {
    compile(Arc::new(loader))
}

/// Diagnostics as a person sees them, without colour.
pub fn rendered(c: &Compilation) -> String {
    render_all(&c.diagnostics, &c.sources, RenderOptions::default())
}

/// The example workflow repository.
pub fn examples() -> Compilation {
    compile(Arc::new(comfyc::FsLoader::new(
        repo_root().join("examples"),
    )))
}
