//! What changed between two node catalogue snapshots (`comfyc nodes diff`): classes added and
//! removed, and per class the inputs, types, ranges, options and outputs that changed.
//!
//! Which workflows a new snapshot breaks is not decided here but by compiling the repository
//! against each snapshot ([`OverlayLoader`] swaps the catalogue file): the checks are the
//! judge, so the diff never disagrees with `comfyc check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::catalogue::{Catalogue, InputKind, InputSpec, NodeClass, Section};
use crate::source::Loader;

/// The differences between two catalogues, classes in name order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CatalogueDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<ClassChange>,
}

/// What changed in one class, each change a short sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassChange {
    pub class: String,
    pub changes: Vec<String>,
}

impl CatalogueDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two catalogues.
pub fn diff(old: &Catalogue, new: &Catalogue) -> CatalogueDiff {
    let mut d = CatalogueDiff::default();
    for c in new.classes() {
        match old.get(&c.name) {
            None => d.added.push(c.name.clone()),
            Some(o) => {
                let changes = class_changes(o, c);
                if !changes.is_empty() {
                    d.changed.push(ClassChange {
                        class: c.name.clone(),
                        changes,
                    });
                }
            }
        }
    }
    d.removed = old
        .classes()
        .filter(|c| new.get(&c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    d
}

fn class_changes(old: &NodeClass, new: &NodeClass) -> Vec<String> {
    let mut out = Vec::new();
    for i in new.visible_inputs() {
        match old.input(&i.name) {
            None => out.push(format!(
                "new {} input `{}` ({})",
                section(i.section),
                i.name,
                types(&i.kind)
            )),
            Some(o) => input_changes(o, i, &mut out),
        }
    }
    for o in old.visible_inputs() {
        if new
            .input(&o.name)
            .is_none_or(|i| i.section == Section::Hidden)
        {
            out.push(format!("input `{}` removed", o.name));
        }
    }
    let outputs = |c: &NodeClass| {
        c.outputs
            .iter()
            .map(|o| o.ty.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if outputs(old) != outputs(new) {
        out.push(format!(
            "outputs `{}` are now `{}`",
            outputs(old),
            outputs(new)
        ));
    }
    if old.output_node != new.output_node {
        out.push(if new.output_node {
            "is now an output node".to_owned()
        } else {
            "is no longer an output node".to_owned()
        });
    }
    if !old.api_node && new.api_node {
        out.push("is now a partner (paid) node".to_owned());
    }
    if !old.deprecated && new.deprecated {
        out.push("is now deprecated".to_owned());
    }
    out
}

fn input_changes(old: &InputSpec, new: &InputSpec, out: &mut Vec<String>) {
    let name = &new.name;
    if old.section != new.section {
        out.push(format!("input `{name}` is now {}", section(new.section)));
    }
    if types(&old.kind) != types(&new.kind) {
        out.push(format!(
            "input `{name}` takes {} instead of {}",
            types(&new.kind),
            types(&old.kind)
        ));
        return;
    }
    match (&old.kind, &new.kind) {
        (
            InputKind::Int {
                min: a0, max: a1, ..
            },
            InputKind::Int {
                min: b0, max: b1, ..
            },
        ) => {
            bound(
                out,
                name,
                "minimum",
                a0.map(|v| v.to_string()),
                b0.map(|v| v.to_string()),
            );
            bound(
                out,
                name,
                "maximum",
                a1.map(|v| v.to_string()),
                b1.map(|v| v.to_string()),
            );
        }
        (
            InputKind::Float {
                min: a0, max: a1, ..
            },
            InputKind::Float {
                min: b0, max: b1, ..
            },
        ) => {
            bound(
                out,
                name,
                "minimum",
                a0.map(|v| v.to_string()),
                b0.map(|v| v.to_string()),
            );
            bound(
                out,
                name,
                "maximum",
                a1.map(|v| v.to_string()),
                b1.map(|v| v.to_string()),
            );
        }
        (InputKind::Combo { options: a, .. }, InputKind::Combo { options: b, .. }) => {
            let added: Vec<&Value> = b.iter().filter(|v| !a.contains(v)).collect();
            let removed: Vec<&Value> = a.iter().filter(|v| !b.contains(v)).collect();
            if !added.is_empty() {
                out.push(format!(
                    "input `{name}`: {} added: {}",
                    plural(added.len(), "option"),
                    preview(&added)
                ));
            }
            if !removed.is_empty() {
                out.push(format!(
                    "input `{name}`: {} removed: {}",
                    plural(removed.len(), "option"),
                    preview(&removed)
                ));
            }
        }
        _ => {}
    }
}

fn bound(out: &mut Vec<String>, name: &str, what: &str, old: Option<String>, new: Option<String>) {
    if old != new {
        let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        out.push(format!(
            "input `{name}`: {what} {} → {}",
            show(old),
            show(new)
        ));
    }
}

fn section(s: Section) -> &'static str {
    match s {
        Section::Required => "required",
        Section::Optional => "optional",
        Section::Hidden => "hidden",
    }
}

fn types(kind: &InputKind) -> String {
    kind.type_names().join(" or ")
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn preview(values: &[&Value]) -> String {
    let mut s: Vec<String> = values.iter().take(6).map(|v| v.to_string()).collect();
    if values.len() > 6 {
        s.push(format!("… ({} in all)", values.len()));
    }
    s.join(", ")
}

/// A loader that serves `text` at `path` and everything else from `inner`: a repository seen
/// with another catalogue snapshot.
#[derive(Clone)]
pub struct OverlayLoader {
    inner: Arc<dyn Loader>,
    path: PathBuf,
    text: String,
}

impl std::fmt::Debug for OverlayLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayLoader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OverlayLoader {
    pub fn new(inner: Arc<dyn Loader>, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            inner,
            path: path.into(),
            text: text.into(),
        }
    }
}

impl Loader for OverlayLoader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        if crate::fsutil::contained(path).as_deref() == Some(self.path.as_path()) {
            return Ok(self.text.clone());
        }
        self.inner.read(path)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        self.inner.list(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(text: &str) -> Catalogue {
        Catalogue::from_json(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    #[test]
    fn names_what_changed() {
        let old = cat(r#"{
            "A": {"input": {"required": {"n": ["INT", {"min": 0, "max": 10}], "m": [["x", "y"]], "gone": ["STRING", {}]}},
                  "output": ["IMAGE"], "output_name": ["IMAGE"], "output_is_list": [false], "output_node": false, "category": "t"},
            "B": {"input": {"required": {}}, "output": [], "output_name": [], "output_is_list": [], "output_node": true, "category": "t"}
        }"#);
        let new = cat(r#"{
            "A": {"input": {"required": {"n": ["INT", {"min": 1, "max": 10}], "m": [["x", "z"]], "new": ["FLOAT", {}]}},
                  "output": ["IMAGE"], "output_name": ["IMAGE"], "output_is_list": [false], "output_node": false, "category": "t"},
            "C": {"input": {"required": {}}, "output": [], "output_name": [], "output_is_list": [], "output_node": true, "category": "t"}
        }"#);
        let d = diff(&old, &new);
        assert_eq!(d.added, ["C"]);
        assert_eq!(d.removed, ["B"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            d.changed[0].changes,
            [
                "input `n`: minimum 0 → 1",
                "input `m`: 1 option added: \"z\"",
                "input `m`: 1 option removed: \"y\"",
                "new required input `new` (FLOAT)",
                "input `gone` removed",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
