//! `build` output: deterministic, valid JSON Schemas, and our own formats' schemas kept fresh.

use serde_json::{Map, Value, json};

use comfyc::definition::InputType;

use crate::{examples, repo_root};

#[test]
fn building_twice_gives_identical_bytes() {
    let a = comfyc::build::outputs(&examples());
    let b = comfyc::build::outputs(&examples());
    assert_eq!(a, b);
    let names: Vec<&str> = a.iter().map(|f| f.path.as_str()).collect();
    for w in ["txt2img", "img2img", "lora", "solid-color", "invert-image"] {
        assert!(
            names.contains(&format!("{w}.workflow.json").as_str()),
            "{names:?}"
        );
        assert!(
            names.contains(&format!("{w}.schema.json").as_str()),
            "{names:?}"
        );
    }
    assert!(names.contains(&"index.json"));
}

#[test]
fn every_emitted_schema_is_a_valid_draft_2020_12_schema() {
    let c = examples();
    assert!(!c.workflows.is_empty());
    for w in &c.workflows {
        assert_eq!(
            w.schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        if let Err(e) = jsonschema::meta::validate(&w.schema) {
            panic!("schema of {} is invalid: {e}\n{:#}", w.name, w.schema);
        }
        assert_eq!(w.schema["additionalProperties"], false);
        // Defaults validate against their own schema, and so does the empty job when every
        // required input has a default.
        for (name, prop) in w.schema["properties"].as_object().into_iter().flatten() {
            if let Some(d) = prop.get("default") {
                assert!(
                    jsonschema::is_valid(prop, d),
                    "{}.{name}: default {d} fails {prop}",
                    w.name
                );
            }
        }
    }
}

#[test]
fn schemas_carry_form_hints() {
    let c = examples();
    let txt = c.find("txt2img").unwrap_or_else(|e| panic!("{e}"));
    let p = &txt.schema["properties"];
    assert_eq!(p["prompt"]["x-multiline"], true);
    assert_eq!(p["prompt"]["minLength"], 1);
    assert_eq!(p["seed"]["x-seed"], true);
    assert_eq!(p["seed"]["maximum"], json!(comfyc::schema::JS_SAFE_MAX));
    assert_eq!(p["steps"]["maximum"], 60);
    assert_eq!(p["steps"]["default"], 20);
    assert_eq!(p["cfg"]["maximum"], 20);
    assert_eq!(p["cfg"]["minimum"], 0.0);
    assert_eq!(p["width"]["multipleOf"], 8);
    assert_eq!(p["sampler"]["enum"].as_array().map(Vec::len), Some(5));
    assert!(
        p["scheduler"]["enum"]
            .as_array()
            .is_some_and(|o| o.len() > 5),
        "options come from the catalogue"
    );
    assert_eq!(p["checkpoint"]["x-model-folder"], "checkpoints");
    assert_eq!(txt.schema["required"], json!(["prompt"]));
    let img = c.find("img2img").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(img.schema["properties"]["image"]["x-upload"], "image");
    assert!(
        img.schema["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("image")))
    );
    let lora = c.find("lora").unwrap_or_else(|e| panic!("{e}"));
    let item = &lora.schema["properties"]["loras"]["items"];
    assert_eq!(item["properties"]["name"]["x-model-folder"], "loras");
    assert_eq!(item["required"], json!(["name"]));
}

#[test]
fn job_input_errors_name_the_input() {
    let c = examples();
    let w = c.find("txt2img").unwrap_or_else(|e| panic!("{e}"));
    let inputs: Map<String, Value> = serde_json::from_value(json!({
        "prompt": 5, "steps": 61, "sampler": "eulr", "width": 100, "stepz": 3
    }))
    .unwrap_or_default();
    let errors = w.validate(&inputs);
    let named: Vec<(Option<&str>, &str)> = errors
        .iter()
        .map(|e| (e.input.as_deref(), e.message.as_str()))
        .collect();
    for input in ["prompt", "steps", "sampler", "width", "stepz"] {
        assert!(
            named
                .iter()
                .any(|(i, m)| *i == Some(input) && m.contains(input)),
            "{input}: {named:?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.help.as_deref() == Some("did you mean `steps`?"))
    );
    assert!(
        w.validate(&Map::new())
            .iter()
            .any(|e| e.input.as_deref() == Some("prompt") && e.message.contains("required"))
    );
    let lora = c.find("lora").unwrap_or_else(|e| panic!("{e}"));
    let bad: Map<String, Value> = serde_json::from_value(
        json!({"loras": [{"name": "add-detail.safetensors", "strength_model": 9}]}),
    )
    .unwrap_or_default();
    let errors = lora.validate(&bad);
    assert!(
        errors
            .iter()
            .any(|e| e.pointer == "/loras/0/strength_model" && e.message.contains("loras")),
        "{errors:?}"
    );
}

#[test]
fn seeds_are_picked_only_when_absent_and_reported() {
    let c = examples();
    let w = c.find("txt2img").unwrap_or_else(|e| panic!("{e}"));
    let mut inputs: Map<String, Value> =
        serde_json::from_value(json!({"prompt": "a cat"})).unwrap_or_default();
    let r = w
        .resolve(&inputs, &mut || 42)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(r.values["seed"], 42);
    assert_eq!(r.picked_seeds, ["seed"]);
    let g = w.render(&r.values).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(g["3"]["inputs"]["seed"], 42);
    assert_eq!(g["3"]["inputs"]["steps"], 20);
    inputs.insert("seed".into(), json!(7));
    let r = w
        .resolve(&inputs, &mut || panic!("no seed should be picked"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(r.picked_seeds.is_empty());
    assert_eq!(
        w.render(&r.values).unwrap_or_default()["3"]["inputs"]["seed"],
        7
    );
}

#[test]
fn committed_format_schemas_are_fresh() {
    let bless = std::env::var_os("COMFYC_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, text) in comfyc::format_schemas() {
        let path = repo_root().join("schemas").join(name);
        let schema: Value = serde_json::from_str(&text).unwrap_or_default();
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name} is not a valid schema: {e}");
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            if bless {
                std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            } else {
                stale.push(name);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale: {stale:?}; regenerate with `COMFYC_BLESS=1 cargo test committed_format_schemas_are_fresh`"
    );
}

#[test]
fn example_definitions_validate_against_the_committed_definition_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas/workflow.schema.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{e}"));
    let dir = repo_root().join("examples/workflows");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "toml") {
            let t: toml::Table =
                toml::from_str(&std::fs::read_to_string(e.path()).unwrap_or_default())
                    .unwrap_or_default();
            let v = comfyc::inputs::toml_to_json(&toml::Value::Table(t));
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", e.path().display());
            n += 1;
        }
    }
    assert!(n >= 5);
    // And the schema rejects what the compiler rejects.
    assert!(
        !validator
            .is_valid(&json!({"workflow": {"graph": "g.json"}, "inputs": {"a": {"deafult": 1}}}))
    );
}

/// The uiSchema of every example, as `comfyc build` writes it.
#[test]
fn uischemas_of_the_examples() {
    let c = examples();
    let files = comfyc::build::outputs(&c);
    let mut names: Vec<&str> = c.workflows.iter().map(|w| w.name.as_str()).collect();
    names.sort_unstable();
    for name in names {
        let file = files
            .iter()
            .find(|f| f.path == format!("{name}.uischema.json"))
            .unwrap_or_else(|| panic!("no {name}.uischema.json"));
        let ui: Value = serde_json::from_str(&file.contents).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(format!("uischema-{name}"), ui);
    }
}

#[test]
fn uischemas_say_how_to_draw_each_input() {
    let c = examples();
    let txt = c.find("txt2img").unwrap_or_else(|e| panic!("{e}"));
    let ui = comfyc::uischema::ui_schema(txt);
    let order: Vec<&str> = txt.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(ui["ui:order"], json!(order));
    assert_eq!(ui["prompt"]["ui:widget"], "textarea");
    assert_eq!(
        ui["negative"]["ui:widget"], "textarea",
        "multiline from the node"
    );
    assert_eq!(ui["seed"]["ui:widget"], "seed");
    assert_eq!(ui["seed"]["ui:options"]["randomize"], true);
    assert_eq!(ui["steps"].get("ui:widget"), None);
    // One label per option, in the schema's order.
    for (input, enum_of) in [("sampler", "sampler"), ("checkpoint", "checkpoint")] {
        let labels = ui[input]["ui:enumNames"].as_array().map(Vec::len);
        let options = txt.schema["properties"][enum_of]["enum"]
            .as_array()
            .map(Vec::len);
        assert!(labels.is_some() && labels == options, "{input}: {ui:#}");
    }
    assert_eq!(ui["sampler"]["ui:enumNames"][0], "euler");
    assert_eq!(ui["cfg"]["ui:title"], "CFG scale");
    let img = c.find("img2img").unwrap_or_else(|e| panic!("{e}"));
    let ui = comfyc::uischema::ui_schema(img);
    assert_eq!(ui["image"]["ui:widget"], "file");
    assert_eq!(ui["image"]["ui:options"]["accept"], "image/*");
    assert_eq!(ui["seed"]["ui:title"], "Seed", "made from the name");
    let lora = c.find("lora").unwrap_or_else(|e| panic!("{e}"));
    let ui = comfyc::uischema::ui_schema(lora);
    let item = &ui["loras"]["items"];
    assert_eq!(
        item["ui:order"],
        json!(["name", "strength_model", "strength_clip"])
    );
    assert_eq!(item["strength_model"]["ui:title"], "Strength model");
    assert_eq!(ui["size"]["ui:enumNames"], json!(["512", "640", "768"]));
}

#[test]
fn picked_seeds_stay_within_what_a_browser_keeps_exact() {
    let c = examples();
    for w in &c.workflows {
        for input in w.inputs.iter().filter(|i| i.ty == InputType::Seed) {
            assert_eq!(
                input.max,
                Some(json!(comfyc::schema::JS_SAFE_MAX)),
                "{}.{}",
                w.name,
                input.name
            );
        }
    }
    let w = c.find("txt2img").unwrap_or_else(|e| panic!("{e}"));
    let inputs: Map<String, Value> =
        serde_json::from_value(json!({"prompt": "a cat"})).unwrap_or_default();
    for raw in [u64::MAX, comfyc::schema::JS_SAFE_MAX + 1, 5] {
        let r = w
            .resolve(&inputs, &mut || raw)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let seed = r.values["seed"].as_u64().unwrap_or_default();
        assert!(seed <= comfyc::schema::JS_SAFE_MAX, "{raw} became {seed}");
    }
}
