//! `comfyc import`: a definition scaffold for a UI-format workflow.
//!
//! The usual parameters of the converted graph become typed inputs bound to their nodes, so
//! the definition renders back to the same graph with its defaults: the inputs the author
//! exposed in App Mode (`extra.linearData`) first, then prompts, seeds left on `randomize`,
//! sampler settings, latent size, loaded files and model choices. Model files the loaders
//! list in `properties.models` become `[[models]]`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Conversion;
use crate::catalogue::{Catalogue, InputSpec, NodeClass, Upload};

/// A definition scaffold and what went into it.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The definition, as TOML.
    pub toml: String,
    /// One line per lifted input, output and model, for the person importing.
    pub report: Vec<String>,
}

/// An input about to be written.
struct Lift {
    name: String,
    seed: bool,
    to: Vec<String>,
    value: Value,
    why: &'static str,
}

/// Inputs of samplers lifted under their own name.
const SAMPLER_INPUTS: &[&str] = &["steps", "cfg", "sampler_name", "scheduler", "denoise"];
/// Inputs of latent-making nodes lifted under their own name.
const SIZE_INPUTS: &[&str] = &["width", "height", "batch_size"];

/// Writes a definition named `name` for the UI document `doc`, saved as `graph_file` beside
/// it, whose conversion is `conv`.
pub fn scaffold(
    doc: &Value,
    conv: &Conversion,
    catalogue: &Catalogue,
    name: &str,
    graph_file: &str,
) -> Imported {
    let mut s = Scaffold {
        doc,
        conv,
        catalogue,
        lifts: Vec::new(),
        taken: HashSet::new(),
    };
    s.app_mode();
    s.usual();
    let outputs = s.outputs();
    let models = models(doc);

    let mut out = Imported::default();
    let t = &mut out.toml;
    let _ = writeln!(
        t,
        "# Written by `comfyc import` from `{graph_file}`: review the inputs, then commit."
    );
    let _ = writeln!(t, "[workflow]");
    let _ = writeln!(t, "name = {}", toml_str(name));
    let _ = writeln!(t, "graph = {}", toml_str(graph_file));
    for l in &s.lifts {
        let _ = writeln!(t, "\n[inputs.{}]", l.name);
        if l.seed {
            let _ = writeln!(t, "type = \"seed\"");
        }
        match l.to.as_slice() {
            [one] => {
                let _ = writeln!(t, "to = {}", toml_str(one));
            }
            many => {
                let list: Vec<String> = many.iter().map(|b| toml_str(b)).collect();
                let _ = writeln!(t, "to = [{}]", list.join(", "));
            }
        }
        out.report.push(format!(
            "input `{}` ← {} ({}; {})",
            l.name,
            l.to.join(", "),
            l.why,
            if l.seed {
                "picked per job".to_owned()
            } else {
                format!("default {}", shown(&l.value))
            }
        ));
    }
    for (name, node, class) in &outputs {
        let _ = writeln!(t, "\n[outputs.{name}]\nfrom = {}", toml_str(node));
        out.report
            .push(format!("output `{name}` ← node {node} ({class})"));
    }
    for m in &models {
        let _ = writeln!(t, "\n[[models]]");
        let _ = writeln!(t, "name = {}", toml_str(&m.0));
        let _ = writeln!(t, "folder = {}", toml_str(&m.1));
        if let Some(url) = &m.2 {
            let _ = writeln!(t, "url = {}", toml_str(url));
        }
        out.report.push(format!("model `{}` in `{}`", m.0, m.1));
    }
    out
}

struct Scaffold<'a> {
    doc: &'a Value,
    conv: &'a Conversion,
    catalogue: &'a Catalogue,
    lifts: Vec<Lift>,
    /// `(node, input)` already bound.
    taken: HashSet<(String, String)>,
}

impl Scaffold<'_> {
    fn node(&self, id: &str) -> Option<(&Map<String, Value>, &NodeClass)> {
        let node = self.conv.prompt.get(id)?.as_object()?;
        let class = self.catalogue.get(node.get("class_type")?.as_str()?)?;
        Some((node, class))
    }

    /// A literal input value of an API node (not a link).
    fn literal(&self, id: &str, input: &str) -> Option<Value> {
        let v = self.conv.prompt.get(id)?.get("inputs")?.get(input)?;
        (!v.is_array()).then(|| v.clone())
    }

    /// API ids a UI node id names: itself at the top level, else inner nodes of that id.
    fn api_ids(&self, ui_id: &str) -> Vec<String> {
        if self.conv.prompt.contains_key(ui_id) {
            return vec![ui_id.to_owned()];
        }
        let suffix = format!(":{ui_id}");
        self.conv
            .prompt
            .keys()
            .filter(|k| k.ends_with(&suffix))
            .cloned()
            .collect()
    }

    fn lift(&mut self, base: &str, node: &str, input: &str, seed: bool, why: &'static str) {
        if !self.taken.insert((node.to_owned(), input.to_owned())) {
            return;
        }
        let Some(value) = self.literal(node, input) else {
            self.taken.remove(&(node.to_owned(), input.to_owned()));
            return;
        };
        let base = ident(base);
        let to = format!("{node}.{input}");
        // One value in several places is one input (two samplers with the same steps).
        if let Some(l) = self.lifts.iter_mut().find(|l| {
            (l.name == base || l.name.starts_with(&format!("{base}_")))
                && l.value == value
                && l.seed == seed
                && l.why == why
        }) {
            l.to.push(to);
            return;
        }
        let mut name = base.clone();
        let mut n = 1;
        while self.lifts.iter().any(|l| l.name == name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.lifts.push(Lift {
            name,
            seed,
            to: vec![to],
            value,
            why,
        });
    }

    /// The inputs the author exposed in App Mode, in their order.
    fn app_mode(&mut self) {
        let Some(list) = self
            .doc
            .pointer("/extra/linearData/inputs")
            .and_then(Value::as_array)
        else {
            return;
        };
        for entry in list {
            let (Some(id), Some(widget)) = (
                entry.get(0).and_then(id_text),
                entry.get(1).and_then(Value::as_str),
            ) else {
                continue;
            };
            for api in self.api_ids(&id) {
                let seed = self.is_random_seed(&api, widget);
                self.lift(widget, &api, widget, seed, "App Mode");
            }
        }
    }

    /// Prompts, seeds, sampler settings, sizes, files and models, in graph order.
    fn usual(&mut self) {
        let negative = self.conditioning_sources("negative");
        let positive = self.conditioning_sources("positive");
        let ids: Vec<String> = self.conv.prompt.keys().cloned().collect();
        for id in ids {
            let Some((node, class)) = self.node(&id) else {
                continue;
            };
            let makes_latent = class.outputs.iter().any(|o| o.ty == "LATENT")
                && !class
                    .inputs
                    .iter()
                    .any(|i| i.kind.type_names().iter().any(|t| t == "LATENT"));
            let names: Vec<String> = node
                .get("inputs")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let specs: Vec<InputSpec> = names
                .iter()
                .filter_map(|n| class.input(n).cloned())
                .collect();
            for spec in specs {
                let input = spec.name.as_str();
                if is_prompt(&spec) {
                    let base = if negative.contains(&id) && !positive.contains(&id) {
                        "negative_prompt"
                    } else {
                        "prompt"
                    };
                    self.lift(base, &id, input, false, "prompt text");
                } else if spec.is_seed() {
                    if self.is_random_seed(&id, input) {
                        self.lift("seed", &id, input, true, "seed left on randomize");
                    }
                } else if SAMPLER_INPUTS.contains(&input) {
                    self.lift(input, &id, input, false, "sampler setting");
                } else if makes_latent && SIZE_INPUTS.contains(&input) {
                    self.lift(input, &id, input, false, "size");
                } else if let Some(kind) = spec.upload {
                    let base = match kind {
                        Upload::Image => "image",
                        Upload::Video => "video",
                        Upload::Audio => "audio",
                    };
                    self.lift(base, &id, input, false, "loaded file");
                } else if let Some(folder) = &spec.model_folder {
                    let base = folder.strip_suffix('s').unwrap_or(folder).to_owned();
                    self.lift(&base, &id, input, false, "model choice");
                }
            }
        }
    }

    /// Nodes whose output reaches a sampler's `input` (positive or negative), a few links up.
    fn conditioning_sources(&self, input: &str) -> HashSet<String> {
        let mut found = HashSet::new();
        let mut frontier: Vec<String> = self
            .conv
            .prompt
            .values()
            .filter_map(|n| {
                n.get("inputs")?
                    .get(input)?
                    .get(0)?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        for _ in 0..4 {
            let mut next = Vec::new();
            for id in frontier {
                if !found.insert(id.clone()) {
                    continue;
                }
                if let Some(Value::Object(ins)) =
                    self.conv.prompt.get(&id).and_then(|n| n.get("inputs"))
                {
                    next.extend(ins.values().filter_map(|v| {
                        v.as_array()
                            .filter(|a| a.len() == 2)
                            .and_then(|a| a[0].as_str())
                            .map(str::to_owned)
                    }));
                }
            }
            frontier = next;
        }
        found
    }

    /// Whether the UI node behind API node `id` leaves its seed `input` on `randomize`.
    fn is_random_seed(&self, id: &str, input: &str) -> bool {
        let Some((_, class)) = self.node(id) else {
            return false;
        };
        if !class.input(input).is_some_and(InputSpec::is_seed) {
            return false;
        }
        let Some(ui) = self.conv.origins.get(id).and_then(|p| self.doc.pointer(p)) else {
            return false;
        };
        // Older saves stored the choice as a boolean: `true` was "randomize".
        super::convert::control_value(ui, class, input)
            .is_some_and(|v| v.as_str() == Some("randomize") || v == &Value::Bool(true))
    }

    /// App Mode's outputs, else every output node; names from their classes.
    fn outputs(&self) -> Vec<(String, String, String)> {
        let chosen: Vec<String> = self
            .doc
            .pointer("/extra/linearData/outputs")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(id_text)
                    .flat_map(|id| self.api_ids(&id))
                    .collect()
            })
            .unwrap_or_default();
        let ids: Vec<String> = if chosen.is_empty() {
            self.conv
                .prompt
                .keys()
                .filter(|id| self.node(id).is_some_and(|(_, c)| c.output_node))
                .cloned()
                .collect()
        } else {
            chosen
        };
        let mut used: HashMap<String, usize> = HashMap::new();
        ids.into_iter()
            .filter_map(|id| {
                let (_, class) = self.node(&id)?;
                if !class.output_node {
                    return None;
                }
                let base = ident(&snake(&class.name));
                let n = used.entry(base.clone()).or_default();
                *n += 1;
                let name = if *n == 1 { base } else { format!("{base}_{n}") };
                Some((name, id, class.name.clone()))
            })
            .collect()
    }
}

fn is_prompt(spec: &InputSpec) -> bool {
    matches!(
        spec.kind,
        crate::catalogue::InputKind::String {
            multiline: true,
            ..
        }
    ) && (spec.name.contains("text") || spec.name.contains("prompt"))
}

/// `(name, folder, url)` of every model file the document's loaders list, once each.
fn models(doc: &Value) -> Vec<(String, String, Option<String>)> {
    let mut canvases = vec![doc];
    if let Some(list) = doc
        .pointer("/definitions/subgraphs")
        .and_then(Value::as_array)
    {
        canvases.extend(list);
    }
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    for c in canvases {
        for n in c
            .get("nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for m in n
                .pointer("/properties/models")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(name), Some(folder)) = (
                    m.get("name").and_then(Value::as_str),
                    m.get("directory").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if out.iter().any(|(n, f, _)| n == name && f == folder) {
                    continue;
                }
                let url = m.get("url").and_then(Value::as_str).map(str::to_owned);
                out.push((name.to_owned(), folder.to_owned(), url));
            }
        }
    }
    out
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A TOML bare key: lowercase letters, digits and `_`.
fn ident(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `SaveImage` → `save_image`.
fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(39).collect::<String>())
    } else {
        s
    }
}
