//! The input schemas in a strict Ajv2020, set up exactly as README's "Forms from the schemas"
//! says (`tests/ajv/comfyc-ajv.mjs`, which the README quotes verbatim), run by node: every
//! example schema and a handful imported from the corpus compile, their defaults validate,
//! and wrong values (a wrong type, an unknown input, a seed past 2^53 - 1 as a browser parses
//! it) fail. Skipped, saying why, only when `node` is missing; Ajv 8 is installed with npm
//! into `~/.cache/comfyc/ajv` (or `COMFYC_AJV_DIR`) on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use comfyc::Workflow;
use comfyc::definition::InputType;
use comfyc::schema::{EXTENSION_KEYWORDS, JS_SAFE_MAX};
use serde_json::{Map, Value, json};

use crate::{examples, repo_root};

fn ajv_sources() -> PathBuf {
    repo_root().join("compiler/tests/ajv")
}

/// `node` on `PATH`, or `None`.
fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
}

/// A folder holding `node_modules/ajv` (Ajv 8), installed with npm when absent.
fn ajv_dir() -> PathBuf {
    let dir = std::env::var_os("COMFYC_AJV_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/comfyc/ajv")))
        .unwrap_or_else(|| std::env::temp_dir().join("comfyc-ajv"));
    let installed = std::fs::read_to_string(dir.join("node_modules/ajv/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|p| p["version"].as_str().is_some_and(|v| v.starts_with("8.")));
    if !installed {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let o = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("ajv@8")
            .output()
            .unwrap_or_else(|e| panic!("running npm (to install ajv@8): {e}"));
        assert!(
            o.status.success(),
            "npm install ajv@8 into {} failed (set COMFYC_AJV_DIR to a folder with node_modules/ajv):\n{}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    dir
}

/// The `x-` keywords anywhere in a schema.
fn extension_keywords(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k.starts_with("x-") && !out.contains(k) {
                    out.push(k.clone());
                }
                // Values of `x-` keywords and of `default`/`enum` are data, not schemas.
                if !k.starts_with("x-") && k != "default" && k != "enum" {
                    extension_keywords(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| extension_keywords(v, out)),
        _ => {}
    }
}

/// A value of the wrong JSON type for an input.
fn wrong_value(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("string") => json!(12345),
        Some("integer" | "number") => json!("12"),
        Some("boolean") => json!("yes"),
        Some("array" | "object") => json!("x"),
        _ => json!({"not": "a value"}),
    }
}

/// One case for `check.mjs`: the schema, instances it must accept and ones it must refuse,
/// each as JSON text; every instance is first judged by comfyc's own validator, so both
/// validators are held to the same answers.
fn case(name: &str, w: &Workflow) -> Value {
    let all: Map<String, Value> = w
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.sample()))
        .collect();
    let required: Map<String, Value> = w
        .inputs
        .iter()
        .filter(|i| i.required)
        .map(|i| (i.name.clone(), i.sample()))
        .collect();
    let mut valid = vec![Value::Object(required.clone()), Value::Object(all.clone())];
    let mut invalid = Vec::new();
    let mut unknown = all.clone();
    unknown.insert("no_such_input".into(), json!(1));
    invalid.push(Value::Object(unknown));
    let props = &w.schema["properties"];
    for input in &w.inputs {
        let mut wrong = all.clone();
        wrong.insert(input.name.clone(), wrong_value(&props[&input.name]));
        invalid.push(Value::Object(wrong));
        if input.ty == InputType::Seed {
            let mut at = required.clone();
            at.insert(input.name.clone(), json!(JS_SAFE_MAX));
            valid.push(Value::Object(at));
        }
    }
    for v in &valid {
        let m = v.as_object().cloned().unwrap_or_default();
        let errors = w.validate(&m);
        assert!(errors.is_empty(), "{name}: comfyc refuses {v}: {errors:?}");
    }
    for v in &invalid {
        let m = v.as_object().cloned().unwrap_or_default();
        assert!(!w.validate(&m).is_empty(), "{name}: comfyc accepts {v}");
    }
    let texts = |vs: Vec<Value>| -> Vec<String> { vs.iter().map(Value::to_string).collect() };
    let valid = texts(valid);
    let mut invalid = texts(invalid);
    // Past 2^53 - 1 as a browser reads it: 2^53 + 1 parses as 2^53, and both are refused.
    for input in w.inputs.iter().filter(|i| i.ty == InputType::Seed) {
        for big in [
            "9007199254740992",
            "9007199254740993",
            "18446744073709551615",
        ] {
            let mut m = required.clone();
            m.insert(input.name.clone(), json!(0));
            let text = Value::Object(m).to_string().replace(
                &format!("\"{}\":0", input.name),
                &format!("\"{}\":{big}", input.name),
            );
            assert!(text.contains(big), "{text}");
            invalid.push(text);
        }
    }
    json!({"name": name, "schema": w.schema, "valid": valid, "invalid": invalid})
}

/// Definitions `comfyc import` writes for a few corpus workflows, compiled.
fn corpus_workflows() -> Vec<(String, comfyc::Compilation)> {
    crate::ui::IMPORTED
        .iter()
        .map(|rel| ((*rel).to_owned(), crate::ui::import_and_compile(rel)))
        .collect()
}

fn run_node(node: &Path, cases: &[Value]) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Node resolves `ajv` from the script's folder: the scripts go beside the installed modules.
    let modules = ajv_dir().join("node_modules");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&modules, tmp.path().join("node_modules"))
        .unwrap_or_else(|e| panic!("{e}"));
    #[cfg(not(unix))]
    panic!("the Ajv test links {} and needs a unix", modules.display());
    for f in ["comfyc-ajv.mjs", "check.mjs"] {
        std::fs::copy(ajv_sources().join(f), tmp.path().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let cases_file = tmp.path().join("cases.json");
    std::fs::write(&cases_file, Value::from(cases.to_vec()).to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let o = Command::new(node)
        .arg(tmp.path().join("check.mjs"))
        .arg(&cases_file)
        .output()
        .unwrap_or_else(|e| panic!("running node: {e}"));
    assert!(
        o.status.success(),
        "check.mjs failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "check.mjs output: {e}\n{}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

#[test]
fn input_schemas_work_in_a_strict_ajv2020_set_up_as_the_readme_says() {
    let Some(node) = node() else {
        println!("skipped: `node` is not on PATH (the Ajv check needs node and npm)");
        return;
    };
    let examples = examples();
    let corpus = corpus_workflows();
    let mut cases = Vec::new();
    let mut keywords = Vec::new();
    for w in &examples.workflows {
        extension_keywords(&w.schema, &mut keywords);
        cases.push(case(&format!("examples/{}", w.name), w));
    }
    for (rel, c) in &corpus {
        let w = c.find("w").unwrap_or_else(|e| panic!("{rel}: {e}"));
        extension_keywords(&w.schema, &mut keywords);
        cases.push(case(&format!("corpus/{rel}"), w));
    }
    assert!(cases.len() >= 10, "{}", cases.len());
    keywords.sort();
    for k in &keywords {
        assert!(
            EXTENSION_KEYWORDS.contains(&k.as_str()),
            "`{k}` is emitted but not in EXTENSION_KEYWORDS"
        );
    }
    let results = run_node(&node, &cases);
    assert_eq!(results.len(), cases.len());
    let mut seeds_checked = 0;
    for r in &results {
        let name = r["name"].as_str().unwrap_or_default();
        assert_eq!(r["compiled"], true, "{name}: {}", r["error"]);
        assert_eq!(
            r["plainStrictCompiles"], false,
            "{name}: a plain strict Ajv2020 should need the vocabulary"
        );
        for v in r["valid"].as_array().into_iter().flatten() {
            assert_eq!(
                v["ok"], true,
                "{name}: Ajv refuses {}: {}",
                v["text"], v["errors"]
            );
        }
        for v in r["invalid"].as_array().into_iter().flatten() {
            assert_eq!(v["ok"], false, "{name}: Ajv accepts {}", v["text"]);
            seeds_checked += usize::from(
                v["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("9007199254740993")),
            );
        }
    }
    assert!(
        seeds_checked >= 5,
        "only {seeds_checked} seed inputs checked"
    );
}

/// The README's snippet is the file the test runs, and its keyword list is comfyc's.
#[test]
fn the_readme_quotes_the_ajv_set_up_the_test_runs() {
    let snippet = std::fs::read_to_string(ajv_sources().join("comfyc-ajv.mjs"))
        .unwrap_or_else(|e| panic!("{e}"));
    let readme =
        std::fs::read_to_string(repo_root().join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        readme.contains(&format!("```js\n{snippet}```")),
        "README.md must quote compiler/tests/ajv/comfyc-ajv.mjs verbatim in a ```js block"
    );
    for k in EXTENSION_KEYWORDS {
        assert!(
            snippet.contains(&format!("\"{k}\"")),
            "the snippet lacks `{k}`"
        );
    }
}

/// Every property schema, with its JSON pointer.
fn property_schemas<'a>(schema: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    for (k, p) in schema["properties"].as_object().into_iter().flatten() {
        let here = format!("{at}/properties/{k}");
        out.push((here.clone(), p));
        property_schemas(p, &here, out);
        if p["items"].is_object() {
            property_schemas(&p["items"], &format!("{here}/items"), out);
        }
    }
}

/// What form libraries need without being told: JSON Forms drops an enum without a `type`,
/// and both it and RJSF show the raw key of an input without a `title`.
#[test]
fn every_input_has_a_title_and_every_enum_a_type() {
    let examples = examples();
    let corpus = corpus_workflows();
    let schemas = examples
        .workflows
        .iter()
        .map(|w| (w.name.clone(), &w.schema))
        .chain(
            corpus
                .iter()
                .filter_map(|(rel, c)| c.find("w").ok().map(|w| (rel.clone(), &w.schema))),
        );
    let mut enums = 0;
    for (name, schema) in schemas {
        let mut props = Vec::new();
        property_schemas(schema, "", &mut props);
        assert!(!props.is_empty(), "{name}");
        for (at, p) in props {
            assert!(
                p["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{name}{at} has no title: {p}"
            );
            if p.get("enum").is_some() {
                enums += 1;
                assert!(
                    p["type"].is_string(),
                    "{name}{at}: an enum without a single type: {p}"
                );
            }
        }
    }
    assert!(enums >= 10, "only {enums} enums seen");
}
