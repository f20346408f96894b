//! What `comfyc build` writes: per workflow the compiled workflow, its input schema and the
//! RJSF uiSchema of its form, plus an index. Everything here is a pure function of the compilation, serialized with a fixed
//! key order, so rebuilding gives byte-identical files that a repo can commit and diff.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::compile::{Compilation, GraphSource, Workflow};

/// Version of the build output format.
pub const FORMAT: u32 = 1;

/// One file to write, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub path: String,
    pub contents: String,
}

/// The files `build` writes for a compilation (which must be free of errors).
pub fn outputs(c: &Compilation) -> Vec<OutputFile> {
    let catalogue_hash = c
        .catalogue
        .as_ref()
        .map(|c| c.hash().to_owned())
        .unwrap_or_default();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for w in &c.workflows {
        *names.entry(w.name.as_str()).or_default() += 1;
    }
    let mut sorted: Vec<&Workflow> = c.workflows.iter().collect();
    sorted.sort_by_key(|w| w.id());
    let mut files = Vec::new();
    let mut index = Vec::new();
    for w in sorted {
        // A name defined in several versions gets the version in its file names.
        let stem = if names[w.name.as_str()] > 1 {
            w.id()
        } else {
            w.name.clone()
        };
        let workflow_file = format!("{stem}.workflow.json");
        let schema_file = format!("{stem}.schema.json");
        let uischema_file = format!("{stem}.uischema.json");
        files.push(OutputFile {
            path: workflow_file.clone(),
            contents: pretty(&compiled_json(w, &catalogue_hash)),
        });
        files.push(OutputFile {
            path: schema_file.clone(),
            contents: pretty(&w.schema),
        });
        files.push(OutputFile {
            path: uischema_file.clone(),
            contents: pretty(&crate::uischema::ui_schema(w)),
        });
        index.push(json!({
            "id": w.id(),
            "name": w.name,
            "version": w.version,
            "title": w.title,
            "class": w.class,
            "hash": w.hash,
            "workflow": workflow_file,
            "schema": schema_file,
            "uischema": uischema_file,
            "inputs": w.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
            "outputs": w.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        }));
    }
    files.push(OutputFile {
        path: "index.json".into(),
        contents: pretty(
            &json!({"comfyc": FORMAT, "catalogue_hash": catalogue_hash, "workflows": index}),
        ),
    });
    files
}

/// The compiled form of one workflow.
pub fn compiled_json(w: &Workflow, catalogue_hash: &str) -> Value {
    let templates: Option<BTreeMap<String, String>> = match &w.source {
        GraphSource::Api(_) => None,
        GraphSource::Template(t) => Some(t.sources()),
    };
    json!({
        "comfyc": FORMAT,
        "name": w.name,
        "version": w.version,
        "title": w.title,
        "description": w.description,
        "class": w.class,
        "hash": w.hash,
        "catalogue_hash": catalogue_hash,
        "definition": w.definition_path.display().to_string(),
        "graph_file": w.graph_path.display().to_string(),
        "template": templates.is_some(),
        "inputs": w.inputs,
        "outputs": w.outputs,
        "models": w.models,
        "graph": w.default_graph,
        "templates": templates,
    })
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}
