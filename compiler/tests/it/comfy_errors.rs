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
            .filter_map(|d| d.comfy_error_type)
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

/// The verdicts a real ComfyUI 0.3.64 gave on single-error mutations of graphs its own front
/// end wrote (issue 10's corpus run), replayed on the recorded successful prompt and on the
/// examples' txt2img graph. `None`: ComfyUI accepts the prompt at submit time.
#[test]
fn server_verdicts_on_the_cases_where_comfyc_used_to_disagree() {
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("comfyui/prompt_request_success.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let small = rec["prompt"].clone();
    let txt2img: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::repo_root().join("examples/workflows/txt2img.api.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let with = |base: &Value, pointer: &str, v: Value| {
        let mut g = base.clone();
        *g.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}")) = v;
        g
    };
    let mut unreachable = small.clone();
    unreachable["4"] =
        serde_json::json!({"class_type": "ImageBlur", "inputs": {"blur_radius": 3, "sigma": 1.0}});
    let mut wrong_type_unreachable = small.clone();
    wrong_type_unreachable["4"] =
        serde_json::json!({"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}});
    wrong_type_unreachable["5"] = serde_json::json!({"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 48, "batch_size": 1, "color": 0}});
    let combo = serde_json::json!({
        "1": {"class_type": "CaseConverter", "inputs": {"string": "a", "mode": "upper"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "seed 2^64",
            with(
                &txt2img,
                "/3/inputs/seed",
                serde_json::json!(18446744073709551616.0),
            ),
            Some("value_bigger_than_max"),
        ),
        (
            "seed 2^64 - 1",
            with(&txt2img, "/3/inputs/seed", Value::from(u64::MAX)),
            None,
        ),
        (
            "link to a missing node below the output",
            with(&small, "/2/inputs/image", serde_json::json!(["99", 0])),
            Some("exception_during_inner_validation"),
        ),
        (
            "link past the outputs below the output",
            with(&small, "/2/inputs/image", serde_json::json!(["1", 5])),
            Some("exception_during_inner_validation"),
        ),
        (
            "link to a missing node on the output",
            with(&small, "/3/inputs/images", serde_json::json!(["99", 0])),
            Some("exception_during_validation"),
        ),
        ("an option of a `COMBO`-typed input", combo, None),
        ("a missing input on a node nothing needs", unreachable, None),
        (
            "a wrong type on a node nothing needs",
            wrong_type_unreachable,
            None,
        ),
        (
            "a cycle",
            with(&small, "/2/inputs/image", serde_json::json!(["2", 0])),
            Some("prompt_outputs_failed_validation"),
        ),
    ];
    for (what, graph, expected) in cases {
        let loader = repo()
            .with(
                "workflows/case.toml",
                "[workflow]\ngraph = \"case.api.json\"\n",
            )
            .with(
                "workflows/case.api.json",
                serde_json::to_string_pretty(&graph).unwrap_or_default(),
            );
        let c = compile_mem(loader);
        // What would make ComfyUI refuse the prompt: errors with a ComfyUI error type.
        let refused: Vec<&str> = c
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .filter_map(|d| d.comfy_error_type)
            .collect();
        match expected {
            Some(t) => assert!(
                refused.contains(&t)
                    && refused
                        .iter()
                        .all(|r| *r == t || *r == "prompt_outputs_failed_validation"),
                "{what}: ComfyUI answers `{t}`; comfyc gave {refused:?}:\n{}",
                rendered(&c)
            ),
            None => assert!(
                refused.is_empty(),
                "{what}: ComfyUI accepts it; comfyc would refuse with {refused:?}:\n{}",
                rendered(&c)
            ),
        }
    }
}
