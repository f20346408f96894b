//! comfyc: typed, versioned ComfyUI workflow definitions compiled into validated API graphs
//! and JSON Schemas of their inputs.
//!
//! The pipeline, in module order:
//! [`source`] (every file through one [`source::Loader`]) →
//! [`definition`] (the TOML format) and [`catalogue`] (ComfyUI's `/object_info`) →
//! [`graph`] (the API graph) → [`inputs`] (typed inputs from bindings) →
//! [`checks`] and [`template`] → [`compile`] (a whole repository) →
//! [`schema`], [`uischema`], [`build`] and [`render`] (what comes out).
//! Problems are [`diagnostic::Diagnostic`]s, collected rather than returned one at a time.
//!
//! The library is pure: no network, no clock, no randomness, no global state.

pub mod build;
pub mod catalogue;
pub mod catalogue_diff;
pub mod checks;
pub mod compile;
pub mod definition;
pub mod diagnostic;
pub mod fsutil;
pub mod graph;
pub mod inputs;
pub mod inputs_file;
pub mod json_spans;
pub mod manpages;
pub mod render;
pub mod schema;
pub mod source;
pub mod template;
pub mod ui;
pub mod uischema;
pub mod version;

pub use compile::{Compilation, Workflow, compile};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use source::{FsLoader, Loader, MemLoader};

/// JSON Schemas of comfyc's own file formats, as committed under `schemas/`.
pub fn format_schemas() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (name, schema) in [
        (
            "workflow.schema.json",
            schemars::schema_for!(definition::Definition),
        ),
        (
            "comfyc.schema.json",
            schemars::schema_for!(definition::RepoConfig),
        ),
    ] {
        let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        text.push('\n');
        out.push((name, text));
    }
    out
}
