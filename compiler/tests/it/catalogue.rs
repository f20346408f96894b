//! The catalogue loader against the real `/object_info` of ComfyUI 0.3.64.

use comfyc::catalogue::{Catalogue, InputKind, Section, Upload, normalize_snapshot};
use serde_json::Value;

use crate::{catalogue_text, shared};

fn real() -> Catalogue {
    let text =
        std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default();
    let (c, issues) = Catalogue::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(issues.is_empty(), "{issues:?}");
    c
}

#[test]
fn loads_every_class_of_the_recorded_server() {
    let c = real();
    assert_eq!(c.len(), 496);
    // Input order follows `input_order`, also for the sorted snapshot the examples keep.
    let raw: Value = serde_json::from_str(catalogue_text()).unwrap_or_default();
    for class in c.classes() {
        let order = &raw[&class.name]["input_order"];
        let expected: Vec<&str> = ["required", "optional", "hidden"]
            .iter()
            .flat_map(|s| {
                order[s]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
            })
            .collect();
        let got: Vec<&str> = class.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(got, expected, "input order of {}", class.name);
    }
}

#[test]
fn the_examples_snapshot_is_the_recorded_one_normalized() {
    let raw: Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("comfyui/object_info.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(normalize_snapshot(&raw), catalogue_text());
    let (c, _) = Catalogue::from_json(catalogue_text()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.hash(),
        real().hash(),
        "the hash ignores key order and formatting"
    );
}

#[test]
fn input_kinds_and_constraints() {
    let c = real();
    let ks = c.get("KSampler").unwrap_or_else(|| panic!("KSampler"));
    let seed = ks.input("seed").unwrap_or_else(|| panic!("seed"));
    assert!(seed.is_seed());
    assert!(
        matches!(seed.kind, InputKind::Int { min: Some(0), max: Some(m), .. } if m == i128::from(u64::MAX))
    );
    assert!(
        matches!(ks.input("cfg").map(|i| &i.kind), Some(InputKind::Float { max: Some(m), .. }) if *m == 100.0)
    );
    assert!(
        matches!(ks.input("sampler_name").map(|i| &i.kind), Some(InputKind::Combo { options, .. }) if options.len() > 30)
    );
    assert_eq!(
        ks.input("model").map(|i| i.kind.type_names()),
        Some(vec!["MODEL".to_owned()])
    );
    assert!(!ks.output_node);
    assert!(c.get("SaveImage").is_some_and(|s| s.output_node));
    let save = c.get("SaveImage").unwrap_or_else(|| panic!("SaveImage"));
    assert!(
        save.inputs
            .iter()
            .any(|i| i.section == Section::Hidden && i.name == "prompt")
    );
    let clip = c
        .get("CLIPTextEncode")
        .and_then(|n| n.input("text"))
        .unwrap_or_else(|| panic!("text"));
    assert!(matches!(
        clip.kind,
        InputKind::String {
            multiline: true,
            ..
        }
    ));
    // The newer `["COMBO", {"options": [...]}]` form.
    let blend = c
        .get("ImageBlend")
        .and_then(|n| n.input("blend_mode"))
        .unwrap_or_else(|| panic!("blend_mode"));
    assert!(matches!(&blend.kind, InputKind::Combo { options, .. } if options.len() == 6));
    let load = c
        .get("LoadImage")
        .and_then(|n| n.input("image"))
        .unwrap_or_else(|| panic!("image"));
    assert_eq!(load.upload, Some(Upload::Image));
    assert_eq!(load.model_folder, None);
}

#[test]
fn model_inputs_are_recognised_with_their_folder() {
    let c = real();
    for (class, input, folder) in [
        ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
        ("LoraLoader", "lora_name", "loras"),
        ("VAELoader", "vae_name", "vae"),
        ("UNETLoader", "unet_name", "diffusion_models"),
        ("CLIPLoader", "clip_name", "text_encoders"),
        ("DualCLIPLoader", "clip_name2", "text_encoders"),
        ("ControlNetLoader", "control_net_name", "controlnet"),
        ("CLIPVisionLoader", "clip_name", "clip_vision"),
        ("UpscaleModelLoader", "model_name", "upscale_models"),
    ] {
        let spec = c
            .get(class)
            .and_then(|n| n.input(input))
            .unwrap_or_else(|| panic!("{class}.{input}"));
        assert_eq!(
            spec.model_folder.as_deref(),
            Some(folder),
            "{class}.{input}"
        );
    }
    for (class, input) in [
        ("KSampler", "sampler_name"),
        ("ImageScale", "upscale_method"),
        ("CheckpointLoaderSimple", "nope"),
    ] {
        assert!(
            c.get(class)
                .and_then(|n| n.input(input))
                .is_none_or(|s| s.model_folder.is_none()),
            "{class}.{input}"
        );
    }
}

#[test]
fn malformed_snapshots_are_errors_not_panics() {
    for text in [
        "",
        "[]",
        "{",
        "null",
        "{\"A\": 5}",
        "{\"A\": {\"input\": 5}}",
        "{\"A\": {\"input\": {\"required\": {\"x\": 5}}}}",
    ] {
        match Catalogue::from_json(text) {
            Ok((c, issues)) => assert!(c.len() + issues.len() <= 1, "{text}"),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}
