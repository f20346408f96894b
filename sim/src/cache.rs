//! What ComfyUI's classic cache would reuse: node outputs keyed by an input signature (class,
//! literal inputs, and the signatures of linked ancestors, not the node id), kept only for the
//! nodes of the latest prompt.
//!
//! A node whose class reports a change (`IS_CHANGED`) gets a fresh signature: LoadImage hashes
//! its file, SaveImageWebsocket changes every time.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::files::Dirs;
use crate::nodes::Val;

/// A cached node: its outputs and what it showed (`executed`'s `output`), if anything.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) outputs: Arc<Vec<Val>>,
    pub(crate) ui: Option<Value>,
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: HashMap<u64, Cached>,
}

impl Cache {
    pub(crate) fn get(&self, signature: u64) -> Option<&Cached> {
        self.entries.get(&signature)
    }

    pub(crate) fn insert(&mut self, signature: u64, cached: Cached) {
        self.entries.insert(signature, cached);
    }

    /// `clean_unused`: keeps only what the current prompt can use.
    pub(crate) fn retain(&mut self, signatures: &HashSet<u64>) {
        self.entries.retain(|k, _| signatures.contains(k));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Signatures of every node of a prompt.
pub(crate) fn signatures(prompt: &Map<String, Value>, dirs: &Dirs) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let mut visiting = HashSet::new();
    for id in prompt.keys() {
        signature(id, prompt, dirs, &mut out, &mut visiting);
    }
    out
}

fn signature(
    id: &str,
    prompt: &Map<String, Value>,
    dirs: &Dirs,
    done: &mut HashMap<String, u64>,
    visiting: &mut HashSet<String>,
) -> u64 {
    if let Some(s) = done.get(id) {
        return *s;
    }
    let mut h = DefaultHasher::new();
    let Some(node) = prompt.get(id) else {
        ("missing", id).hash(&mut h);
        return h.finish();
    };
    if !visiting.insert(id.to_owned()) {
        ("cycle", id).hash(&mut h);
        return h.finish();
    }
    let class_type = node
        .get("class_type")
        .map(crate::pyjson::str)
        .unwrap_or_default();
    class_type.hash(&mut h);
    let inputs = node.get("inputs").and_then(Value::as_object);
    let mut names: Vec<&String> = inputs.map(|i| i.keys().collect()).unwrap_or_default();
    names.sort();
    for name in names {
        name.hash(&mut h);
        let value = &inputs
            .map(|i| &i[name.as_str()])
            .cloned()
            .unwrap_or(Value::Null);
        match crate::order::link(value) {
            Some((from, slot)) => {
                ("link", signature(from, prompt, dirs, done, visiting), slot).hash(&mut h);
            }
            None => crate::pyjson::dumps(value).hash(&mut h),
        }
    }
    is_changed(&class_type, inputs, dirs).hash(&mut h);
    visiting.remove(id);
    let s = h.finish();
    done.insert(id.to_owned(), s);
    s
}

/// `IS_CHANGED` for the classes that have one.
fn is_changed(class_type: &str, inputs: Option<&Map<String, Value>>, dirs: &Dirs) -> Option<u64> {
    match class_type {
        "LoadImage" | "LoadImageMask" => {
            let name = inputs?.get("image")?.as_str()?;
            let bytes = std::fs::read(dirs.input_file(name)?).ok()?;
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            Some(h.finish())
        }
        "SaveImageWebsocket" => Some(fastrand::u64(..)),
        _ => None,
    }
}
