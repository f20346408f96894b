//! Fixed answers copied from the recorded server: what a CPU-only ComfyUI 0.3.64 says about
//! itself. The simulator has no hardware or front end of its own to describe.

use serde_json::{Value, json};

/// `GET /system_stats`: one `cpu` device, as recorded with `--cpu`.
pub(crate) fn system_stats() -> Value {
    let total: u64 = 25_276_514_304;
    let free: u64 = 23_782_821_888;
    json!({
        "system": {
            "os": "posix",
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
            "pytorch_version": "2.8.0+cu128",
            "embedded_python": false,
            "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8188", "--disable-auto-launch"]
        },
        "devices": [{
            "name": "cpu",
            "type": "cpu",
            "index": null,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": total,
            "torch_vram_free": free
        }]
    })
}

/// `GET /features`, and the `feature_flags` frame answering a client's own.
pub(crate) fn features() -> Value {
    json!({"supports_preview_metadata": true, "max_upload_size": 104_857_600})
}

/// `GET /extensions`: the core front-end extensions.
pub(crate) fn extensions() -> Value {
    let names = [
        "groupNode.js",
        "maskEditorOld.js",
        "clipspace.js",
        "maskEditorLayerFilenames.js",
        "widgetInputs.js",
        "groupNodeManage.js",
        "load3d/NodeStorage.js",
        "load3d/ViewHelperManager.js",
        "load3d/ControlsManager.js",
        "load3d/RecordingManager.js",
        "load3d/ModelExporter.js",
        "load3d/AnimationManager.js",
        "load3d/LoaderManager.js",
        "load3d/LightingManager.js",
        "load3d/CameraManager.js",
        "load3d/SceneModelManager.js",
        "load3d/SceneManager.js",
        "load3d/PreviewManager.js",
        "load3d/EventManager.js",
    ];
    Value::Array(
        names
            .iter()
            .map(|n| Value::String(format!("/extensions/core/{n}")))
            .collect(),
    )
}

/// The model folders `GET /models` lists, in ComfyUI's order.
pub(crate) const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

/// Which loader inputs list files of which model folder. ComfyUI fills these combos from
/// `folder_paths.get_filename_list(folder)`; the simulator adds `Config::models[folder]`.
pub(crate) const MODEL_INPUTS: &[(&str, &str, &str)] = &[
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
    ("CheckpointLoader", "ckpt_name", "checkpoints"),
    ("CheckpointLoader", "config_name", "configs"),
    ("unCLIPCheckpointLoader", "ckpt_name", "checkpoints"),
    ("ImageOnlyCheckpointLoader", "ckpt_name", "checkpoints"),
    ("VAELoader", "vae_name", "vae"),
    ("LoraLoader", "lora_name", "loras"),
    ("LoraLoaderModelOnly", "lora_name", "loras"),
    ("CLIPLoader", "clip_name", "text_encoders"),
    ("DualCLIPLoader", "clip_name1", "text_encoders"),
    ("DualCLIPLoader", "clip_name2", "text_encoders"),
    ("TripleCLIPLoader", "clip_name1", "text_encoders"),
    ("TripleCLIPLoader", "clip_name2", "text_encoders"),
    ("TripleCLIPLoader", "clip_name3", "text_encoders"),
    ("QuadrupleCLIPLoader", "clip_name1", "text_encoders"),
    ("QuadrupleCLIPLoader", "clip_name2", "text_encoders"),
    ("QuadrupleCLIPLoader", "clip_name3", "text_encoders"),
    ("QuadrupleCLIPLoader", "clip_name4", "text_encoders"),
    ("UNETLoader", "unet_name", "diffusion_models"),
    ("CLIPVisionLoader", "clip_name", "clip_vision"),
    ("StyleModelLoader", "style_model_name", "style_models"),
    ("ControlNetLoader", "control_net_name", "controlnet"),
    ("DiffControlNetLoader", "control_net_name", "controlnet"),
    ("GLIGENLoader", "gligen_name", "gligen"),
    ("UpscaleModelLoader", "model_name", "upscale_models"),
    ("HypernetworkLoader", "hypernetwork_name", "hypernetworks"),
    ("PhotoMakerLoader", "photomaker_model_name", "photomaker"),
    ("AudioEncoderLoader", "audio_encoder_name", "audio_encoders"),
];

/// ComfyUI's answer to anything its handlers raise on (`web.HTTPInternalServerError`).
pub(crate) const INTERNAL_ERROR: &str = "500 Internal Server Error\n\nServer got itself in trouble";

/// The tips ComfyUI appends to an out-of-memory `exception_message`.
pub(crate) const OOM_TIPS: &str = "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number.";
