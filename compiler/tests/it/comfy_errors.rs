//! Error kinds line up with ComfyUI's own: for every recorded `POST /prompt` that ComfyUI
//! rejected (a 400, or a 200 carrying `node_errors`), the same graph written as a definition
//! gets a diagnostic whose `comfy_error_type` is the type ComfyUI answered.

use serde_json::Value;

use crate::{compile_mem, rendered, repo, shared};

/// The error types ComfyUI reported: `error.type` and every `node_errors[..].errors[..].type`.
fn recorded_types(body: &Value) -> Vec<String> {
    let mut types = Vec::new();
    if let Some(t) = body.pointer("/error/type").and_then(Value::as_str) {
        types.push(t.to_owned());
    }
    if let Some(nodes) = body.get("node_errors").and_then(Value::as_object) {
        for n in nodes.values() {
            for e in n
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = e.get("type").and_then(Value::as_str) {
                    types.push(t.to_owned());
                }
            }
        }
    }
    types
}

#[test]
fn every_recorded_rejection_has_a_matching_diagnostic() {
    let dir = shared().join("comfyui/errors");
    let mut checked = 0;
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let rec: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if rec.pointer("/request/path").and_then(Value::as_str) != Some("/prompt") {
            continue;
        }
        let Some(prompt) = rec
            .pointer("/request/json/prompt")
            .filter(|p| p.is_object())
        else {
            // Bodies without a node map (no `prompt`, a list, malformed JSON) cannot be
            // written as a definition.
            continue;
        };
        let body = rec
            .pointer("/response/body_json")
            .cloned()
            .unwrap_or(Value::Null);
        let mut expected = recorded_types(&body);
        // A cycle is answered with an empty node_errors; only the top-level type says so.
        expected.retain(|t| {
            t != "prompt_outputs_failed_validation"
                || body["node_errors"]
                    .as_object()
                    .is_some_and(|m| m.is_empty())
        });
        if expected.is_empty() {
            continue;
        }
        let graph = serde_json::to_string_pretty(prompt).unwrap_or_default();
        let loader = repo()
            .with(
                "workflows/case.toml",
                "[workflow]\ngraph = \"case.api.json\"\n",
            )
            .with("workflows/case.api.json", graph);
        let c = compile_mem(loader);
        let ours: Vec<&str> = c
            .diagnostics
            .iter()
            .filter_map(|d| d.code.comfy_error_type())
            .collect();
        for t in &expected {
            assert!(
                ours.contains(&t.as_str()),
                "{}: ComfyUI answered `{t}`; comfyc gave {ours:?}:\n{}",
                path.display(),
                rendered(&c)
            );
        }
        checked += 1;
    }
    // The recording holds 15 rejected prompts with a node map; all must have been compared.
    assert!(
        checked >= 15,
        "only {checked} recorded rejections were compared"
    );
}

#[test]
fn the_recorded_successful_prompt_checks_clean() {
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("comfyui/prompt_request_success.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let graph = serde_json::to_string_pretty(&rec["prompt"]).unwrap_or_default();
    let loader = repo()
        .with("workflows/ok.toml", "[workflow]\ngraph = \"ok.api.json\"\n")
        .with("workflows/ok.api.json", graph);
    let c = compile_mem(loader);
    assert!(c.diagnostics.is_empty(), "{}", rendered(&c));
    assert_eq!(c.workflows.len(), 1);
}
