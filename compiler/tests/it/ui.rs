//! UI-format conversion against the front end's own output: every corpus file converts
//! without a panic, every file with a truth converts to exactly that graph, and every file
//! with node types the catalogue lacks names exactly those types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use comfyc::catalogue::Catalogue;
use serde_json::{Map, Value};

use crate::shared;

/// The recorded ComfyUI 0.3.64 catalogue, parsed once.
pub fn recorded_catalogue() -> &'static Catalogue {
    static CAT: OnceLock<Catalogue> = OnceLock::new();
    CAT.get_or_init(|| {
        let text = std::fs::read_to_string(shared().join("comfyui/object_info.json"))
            .unwrap_or_else(|e| panic!("object_info.json: {e}"));
        Catalogue::from_json(&text)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    })
}

/// Front-end-only widgets ComfyUI ignores; the truths carry them, a converter need not.
const FRONT_END_ONLY: &[&str] = &["audioUI", "preview"];

/// A graph as compared: node id → (class, inputs without front-end-only widgets).
fn comparable(prompt: &Map<String, Value>) -> BTreeMap<String, (Value, BTreeMap<String, Value>)> {
    prompt
        .iter()
        .map(|(id, n)| {
            let inputs = n
                .get("inputs")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !FRONT_END_ONLY.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (
                id.clone(),
                (n.get("class_type").cloned().unwrap_or(Value::Null), inputs),
            )
        })
        .collect()
}

/// Differences between a converted graph and the truth, one line each (empty: equal).
pub fn differences(got: &Map<String, Value>, truth: &Map<String, Value>) -> Vec<String> {
    let (got, truth) = (comparable(got), comparable(truth));
    let mut out = Vec::new();
    for (id, (class, inputs)) in &truth {
        let Some((gclass, ginputs)) = got.get(id) else {
            out.push(format!("missing node {id} ({class})"));
            continue;
        };
        if gclass != class {
            out.push(format!("node {id}: class {gclass}, expected {class}"));
        }
        for (k, v) in inputs {
            match ginputs.get(k) {
                None => out.push(format!("node {id} ({class}): missing input {k} = {v}")),
                Some(g) if g != v => {
                    out.push(format!(
                        "node {id} ({class}): input {k} = {g}, expected {v}"
                    ));
                }
                _ => {}
            }
        }
        for (k, g) in ginputs {
            if !inputs.contains_key(k) {
                out.push(format!("node {id} ({class}): extra input {k} = {g}"));
            }
        }
    }
    for (id, (class, _)) in &got {
        if !truth.contains_key(id) {
            out.push(format!("extra node {id} ({class})"));
        }
    }
    out
}

/// Which features a UI file uses, for the per-feature match rates.
fn features(doc: &Value) -> BTreeSet<&'static str> {
    let mut f = BTreeSet::new();
    let mut canvases: Vec<&Value> = vec![doc];
    if let Some(list) = doc
        .get("definitions")
        .and_then(|d| d.get("subgraphs"))
        .and_then(Value::as_array)
        && !list.is_empty()
    {
        f.insert("subgraphs");
        canvases.extend(list);
    }
    for c in canvases {
        for n in c
            .get("nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match n.get("mode").and_then(Value::as_i64) {
                Some(4) => {
                    f.insert("bypass");
                }
                Some(2) => {
                    f.insert("mute");
                }
                _ => {}
            }
            match n.get("type").and_then(Value::as_str) {
                Some("PrimitiveNode") => {
                    f.insert("primitives");
                }
                Some("Reroute") => {
                    f.insert("reroutes");
                }
                _ => {}
            }
            if n.get("widgets_values_named").is_some() {
                f.insert("named widgets");
            }
        }
    }
    f
}

/// Node types of a UI file that neither the catalogue nor the file's subgraphs define.
pub fn expected_missing(doc: &Value, cat: &Catalogue) -> BTreeSet<String> {
    let subgraphs: Vec<&Value> = doc
        .get("definitions")
        .and_then(|d| d.get("subgraphs"))
        .and_then(Value::as_array)
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    let ids: BTreeSet<&str> = subgraphs
        .iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str))
        .collect();
    std::iter::once(doc)
        .chain(subgraphs)
        .flat_map(|c| {
            c.get("nodes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(|n| !matches!(n.get("mode").and_then(Value::as_i64), Some(2 | 4)))
        .filter_map(|n| n.get("type").and_then(Value::as_str))
        .filter(|t| {
            !ids.contains(t)
                && cat.get(t).is_none()
                && !["Reroute", "PrimitiveNode", "Note", "MarkdownNote"].contains(t)
        })
        .map(str::to_owned)
        .collect()
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_converts_as_the_front_end_does() {
    let cat = recorded_catalogue();
    let sets = [
        (
            "era-0.3.64",
            "corpus/era-0.3.64/workflows",
            "corpus/era-0.3.64/truth",
        ),
        ("2026", "corpus/workflows", "corpus/truth"),
    ];
    let mut failures = Vec::new();
    // feature → (matched, with truth)
    let mut rates: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let (mut files_total, mut with_truth, mut matched) = (0, 0, 0);
    // Titles are informative only: (equal, compared), and a few that differ.
    let mut titles = (0, 0);
    let mut title_misses = Vec::new();
    for (set, dir, truth_dir) in sets {
        for path in json_files(&shared().join(dir)) {
            files_total += 1;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
            let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let conv = comfyc::ui::convert(&doc, cat);
            let missing: BTreeSet<String> = conv.missing_classes.keys().cloned().collect();
            let expected = expected_missing(&doc, cat);
            if missing != expected {
                failures.push(format!(
                    "{set}/{name}: missing classes {missing:?}, expected {expected:?}"
                ));
            }
            let truth_path = shared().join(truth_dir).join(&name);
            let Ok(truth_text) = std::fs::read_to_string(&truth_path) else {
                continue;
            };
            with_truth += 1;
            let truth: Map<String, Value> = serde_json::from_str(&truth_text)
                .unwrap_or_else(|e| panic!("{}: {e}", truth_path.display()));
            let diff = differences(&conv.prompt, &truth);
            for (id, n) in &truth {
                let title = |g: &Map<String, Value>| g.get(id)?.pointer("/_meta/title").cloned();
                titles.1 += 1;
                if title(&conv.prompt) == n.pointer("/_meta/title").cloned() {
                    titles.0 += 1;
                } else if title_misses.len() < 8 {
                    title_misses.push(format!(
                        "{name} {id}: {:?} vs {:?}",
                        title(&conv.prompt),
                        n.pointer("/_meta/title")
                    ));
                }
            }
            let feats = features(&doc);
            for f in [
                "subgraphs",
                "bypass",
                "mute",
                "primitives",
                "reroutes",
                "named widgets",
                "all",
            ] {
                if f == "all" || feats.contains(f) {
                    let r = rates.entry(f).or_default();
                    r.1 += 1;
                    r.0 += usize::from(diff.is_empty());
                }
            }
            assert!(
                conv.missing_classes.is_empty(),
                "{set}/{name} has a truth, so every class exists: {:?}",
                conv.missing_classes
            );
            if diff.is_empty() {
                matched += 1;
            } else {
                failures.push(format!(
                    "{set}/{name}: {} differences, first: {}",
                    diff.len(),
                    diff.iter().take(6).cloned().collect::<Vec<_>>().join("; ")
                ));
            }
        }
    }
    println!("converted {files_total} files; {matched} of {with_truth} with a truth match it");
    for (f, (ok, n)) in &rates {
        println!("  {f:<14} {ok:>3} / {n:<3} match");
    }
    println!(
        "titles (informative): {} of {} equal; e.g. {title_misses:?}",
        titles.0, titles.1
    );
    assert!(files_total >= 634, "corpus has {files_total} files");
    assert!(
        failures.is_empty(),
        "{} files differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Corpus files `comfyc import` is tried on: App Mode, subgraphs (nested, bypassed),
/// primitives, named widgets, bypassed nodes, and the classic default.
pub(crate) const IMPORTED: &[&str] = &[
    "era-0.3.64/workflows/default.json",
    "era-0.3.64/workflows/flux1_dev_uso_reference_image_gen.json",
    "era-0.3.64/workflows/sdxl_refiner_prompt_example.json",
    "era-0.3.64/workflows/video_wan_vace_flf2v.json",
    "era-0.3.64/workflows/image_qwen_image_edit_2509.json",
    "workflows/template_sugar_coated_gummy_style_qwen.json",
    "workflows/3d_hunyuan3d-v2.1.json",
    "workflows/flux1_krea_dev.json",
    "workflows/sdxl_simple_example.json",
    "workflows/image_z_image_turbo.json",
    "workflows/flux_kontext_dev_basic.json",
];

/// The definition `comfyc import` writes for the corpus file `rel`, compiled beside its graph
/// as workflow `w` with the recorded catalogue.
pub(crate) fn import_and_compile(rel: &str) -> comfyc::Compilation {
    let cat = recorded_catalogue();
    let catalogue_text = std::fs::read_to_string(shared().join("comfyui/object_info.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(shared().join("corpus").join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let conv = comfyc::ui::convert(&doc, cat);
    let imported = comfyc::ui::import::scaffold(&doc, &conv, cat, "w", "w.json");
    crate::compile_mem(
        comfyc::MemLoader::new()
            .with("comfyc.toml", "")
            .with("nodes/object_info.json", catalogue_text)
            .with("workflows/w.json", text)
            .with("workflows/w.toml", imported.toml),
    )
}

#[test]
fn imported_definitions_check_and_render_back_to_the_graph() {
    let cat = recorded_catalogue();
    let catalogue_text = std::fs::read_to_string(shared().join("comfyui/object_info.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut app_mode = 0;
    for rel in IMPORTED {
        let path = shared().join("corpus").join(rel);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let conv = comfyc::ui::convert(&doc, cat);
        let imported = comfyc::ui::import::scaffold(&doc, &conv, cat, "w", "w.json");
        let c = crate::compile_mem(
            comfyc::MemLoader::new()
                .with("comfyc.toml", "")
                .with("nodes/object_info.json", catalogue_text.clone())
                .with("workflows/w.json", text.clone())
                .with("workflows/w.toml", imported.toml.clone()),
        );
        assert!(
            !c.has_errors(),
            "{rel}:\n{}\n{}",
            imported.toml,
            crate::rendered(&c)
        );
        let w = c.find("w").unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            w.default_graph,
            Value::Object(conv.prompt.clone()),
            "{rel}: the defaults render the converted graph"
        );
        // Rendering with the defaults, and the graph's own values for seeds and files (which
        // have no default), gives the converted graph back.
        let mut given = Map::new();
        for i in w.inputs.iter().filter(|i| i.default.is_none()) {
            let b = &i.bindings[0];
            given.insert(
                i.name.clone(),
                conv.prompt[&b.node]["inputs"][&b.input].clone(),
            );
        }
        let resolved = w
            .resolve(&given, &mut || 0)
            .unwrap_or_else(|e| panic!("{rel}: {e:?}"));
        let rendered = w
            .render(&resolved.values)
            .unwrap_or_else(|e| panic!("{rel}: {e:?}"));
        assert_eq!(
            rendered,
            Value::Object(conv.prompt.clone()),
            "{rel}: rendered"
        );
        assert!(w.inputs.len() >= 3, "{rel}: only {:?}", imported.report);
        assert!(!w.outputs.is_empty(), "{rel}: no output lifted");
        // App Mode's choices come first, in the author's order.
        if let Some(chosen) = doc
            .pointer("/extra/linearData/inputs")
            .and_then(Value::as_array)
            && !chosen.is_empty()
        {
            app_mode += 1;
            let first = chosen[0][1].as_str().unwrap_or_default();
            assert_eq!(w.inputs[0].name, first, "{rel}");
        }
        // Seeds left on randomize are picked per job.
        let seeds = w
            .inputs
            .iter()
            .filter(|i| i.ty == comfyc::definition::InputType::Seed)
            .count();
        let declared = imported.toml.matches("[[models]]").count();
        println!(
            "{rel}: {} inputs ({seeds} seeds), {} outputs, {declared} models",
            w.inputs.len(),
            w.outputs.len()
        );
        if rel.ends_with("default.json") {
            assert_eq!(seeds, 1, "the default workflow's seed is on randomize");
            assert_eq!(declared, 1);
            for name in [
                "prompt",
                "negative_prompt",
                "steps",
                "cfg",
                "width",
                "checkpoint",
            ] {
                assert!(w.input(name).is_some(), "default.json lacks `{name}`");
            }
        }
    }
    assert_eq!(app_mode, 1);
}

/// Every JSON pointer of `v`, depth first.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

#[test]
fn damaged_workflows_are_reported_not_crashed_on() {
    let cat = recorded_catalogue();
    for rel in [
        "era-0.3.64/workflows/flux1_dev_uso_reference_image_gen.json",
        "workflows/video_wan2_2_14B_s2v.json",
        "workflows/template_qwen_image_illustration_lora.json",
    ] {
        let text = std::fs::read_to_string(shared().join("corpus").join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let step = (all.len() / 300).max(1);
        let replacements = [
            Value::Null,
            serde_json::json!(-10),
            serde_json::json!("232"),
            serde_json::json!([]),
            serde_json::json!({}),
        ];
        for (n, ptr) in all.iter().step_by(step).enumerate() {
            let mut damaged = doc.clone();
            if let Some(slot) = damaged.pointer_mut(ptr) {
                *slot = replacements[n % replacements.len()].clone();
            }
            let conv = comfyc::ui::convert(&damaged, cat);
            // Every problem points at something the damaged document has (or an ancestor).
            for p in &conv.problems {
                let mut at = p.pointer.as_str();
                while damaged.pointer(at).is_none() {
                    at = &at[..at.rfind('/').unwrap_or(0)];
                }
                assert!(!p.message.is_empty(), "{rel} {ptr}");
            }
        }
    }
    // A subgraph that contains itself is reported, not followed forever.
    let looped = serde_json::json!({
        "nodes": [{"id": 1, "type": "sg", "mode": 0, "inputs": [], "outputs": []}],
        "links": [],
        "definitions": {"subgraphs": [{"id": "sg", "inputs": [], "outputs": [], "links": [],
            "nodes": [{"id": 2, "type": "sg", "mode": 0, "inputs": [], "outputs": []}]}]}
    });
    let conv = comfyc::ui::convert(&looped, cat);
    assert!(conv.prompt.is_empty());
    // So is a reroute that feeds itself.
    let circle = serde_json::json!({
        "nodes": [
            {"id": 3, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 5}], "outputs": []},
            {"id": 4, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 6}],
             "outputs": [], "widgets_values": ["x"]}
        ],
        "links": [[5, 3, 0, 3, 0, "*"], [6, 3, 0, 4, 0, "IMAGE"]]
    });
    let c = comfyc::ui::convert(&circle, cat);
    assert_eq!(
        c.prompt["4"]["inputs"],
        serde_json::json!({"filename_prefix": "x"})
    );
    assert!(
        c.problems
            .iter()
            .any(|p| p.message.contains("round in circles")),
        "{:?}",
        c.problems
    );
    assert!(
        conv.problems
            .iter()
            .any(|p| p.message.contains("contains itself")),
        "{:?}",
        conv.problems
    );
}

/// An instance that stores no values for its promoted widgets: the front end (1.27) gives the
/// inner node's n-th widget value to its n-th promoted widget, so a KSampler whose `steps` and
/// `cfg` are promoted gets the seed as steps. The graph converts to exactly that, and the
/// check rejects it as ComfyUI would, pointing at the node in the UI file.
#[test]
fn promoted_widgets_without_instance_values_take_the_front_ends_values() {
    let rel = "workflows/template_qwen_image_illustration_lora.json";
    let text = std::fs::read_to_string(shared().join("corpus").join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let conv = comfyc::ui::convert(&doc, recorded_catalogue());
    let ks = &conv.prompt["76:3"]["inputs"];
    assert_eq!(ks["seed"], ks["steps"]);
    assert_eq!(ks["cfg"], 45);
    let catalogue_text = std::fs::read_to_string(shared().join("comfyui/object_info.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = crate::compile_mem(
        comfyc::MemLoader::new()
            .with("comfyc.toml", "")
            .with("nodes/object_info.json", catalogue_text)
            .with("workflows/w.json", text)
            .with("workflows/w.toml", "[workflow]\ngraph = \"w.json\"\n"),
    );
    let rendered = crate::rendered(&c);
    assert!(
        rendered.contains(
            "input `steps` of node `76:3` (KSampler) is 1124798614324697, above its maximum 10000"
        ),
        "{rendered}"
    );
    assert!(rendered.contains("this node in the UI file"), "{rendered}");
}
