//! The `/object_info` catalogue the simulator validates and runs prompts against, and the
//! parts of it that depend on the server's files: LoadImage's list of `input/` images and the
//! model combos, both filled from what the simulator "has".

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::recorded::MODEL_INPUTS;

pub(crate) struct Catalogue {
    classes: Map<String, Value>,
}

/// One input of a class, as ComfyUI's `get_input_info` sees it.
#[derive(Debug, Clone)]
pub(crate) struct InputDef {
    pub(crate) name: String,
    pub(crate) required: bool,
    /// `"INT"`, `"IMAGE"`, `"COMBO"`, or the list of a legacy combo.
    pub(crate) kind: Value,
    /// The options object (`min`, `max`, `options`, ...), `{}` when absent.
    pub(crate) extra: Map<String, Value>,
}

impl InputDef {
    /// `input_config` in error bodies: `[kind, extra]`.
    pub(crate) fn config(&self) -> Value {
        Value::Array(vec![self.kind.clone(), Value::Object(self.extra.clone())])
    }

    pub(crate) fn kind_str(&self) -> Option<&str> {
        self.kind.as_str()
    }

    /// The allowed values when this is a combo.
    pub(crate) fn combo_options(&self) -> Option<Vec<Value>> {
        match &self.kind {
            Value::Array(options) => Some(options.clone()),
            Value::String(k) if k == "COMBO" => Some(
                self.extra
                    .get("options")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }
}

impl Catalogue {
    pub(crate) fn new(document: Value) -> Self {
        let classes = match document {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Catalogue { classes }
    }

    pub(crate) fn has(&self, class_type: &str) -> bool {
        self.classes.contains_key(class_type)
    }

    pub(crate) fn is_output(&self, class_type: &str) -> bool {
        self.classes
            .get(class_type)
            .and_then(|c| c.get("output_node"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// `RETURN_TYPES`.
    pub(crate) fn outputs(&self, class_type: &str) -> Vec<Value> {
        self.classes
            .get(class_type)
            .and_then(|c| c.get("output"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Required inputs, then optional ones, each in `input_order` when the class gives one.
    pub(crate) fn inputs(&self, class_type: &str) -> Vec<InputDef> {
        let Some(class) = self.classes.get(class_type) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (section, required) in [("required", true), ("optional", false)] {
            let Some(specs) = class
                .get("input")
                .and_then(|i| i.get(section))
                .and_then(Value::as_object)
            else {
                continue;
            };
            let ordered: Vec<String> = class
                .get("input_order")
                .and_then(|o| o.get(section))
                .and_then(Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|n| specs.contains_key(*n))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let rest = specs.keys().filter(|k| !ordered.contains(k)).cloned();
            let names: Vec<String> = ordered.iter().cloned().chain(rest).collect();
            for name in names {
                let spec = &specs[&name];
                let (kind, extra) = match spec {
                    Value::Array(parts) => (
                        parts.first().cloned().unwrap_or(Value::Null),
                        parts
                            .get(1)
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    other => (other.clone(), Map::new()),
                };
                out.push(InputDef {
                    name,
                    required,
                    kind,
                    extra,
                });
            }
        }
        out
    }

    pub(crate) fn input(&self, class_type: &str, name: &str) -> Option<InputDef> {
        self.inputs(class_type).into_iter().find(|i| i.name == name)
    }

    /// Hidden inputs (`PROMPT`, `EXTRA_PNGINFO`, `UNIQUE_ID`, ...) by name.
    pub(crate) fn hidden(&self, class_type: &str) -> Vec<(String, String)> {
        self.classes
            .get(class_type)
            .and_then(|c| c.get("input"))
            .and_then(|i| i.get("hidden"))
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), crate::pyjson::str(v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The catalogue (or one class of it) as served now: image lists from `input/`, model
    /// lists extended.
    pub(crate) fn served(
        &self,
        only: Option<&str>,
        input_dir: &Path,
        models: &BTreeMap<String, Vec<String>>,
    ) -> Map<String, Value> {
        let images = input_images(input_dir);
        let mut classes: Map<String, Value> = match only {
            None => self.classes.clone(),
            Some(name) => self
                .classes
                .get(name)
                .map(|c| (name.to_owned(), c.clone()))
                .into_iter()
                .collect(),
        };
        for (class_type, class) in classes.iter_mut() {
            let Some(sections) = class.get_mut("input").and_then(Value::as_object_mut) else {
                continue;
            };
            for section in ["required", "optional"] {
                let Some(specs) = sections.get_mut(section).and_then(Value::as_object_mut) else {
                    continue;
                };
                for (name, spec) in specs.iter_mut() {
                    if lists_input_images(class_type, name) {
                        set_options(spec, images.clone(), true);
                    } else if let Some(folder) = model_folder(class_type, name) {
                        let mut options = current_options(spec);
                        extend_unique(&mut options, models.get(folder));
                        set_options(spec, options, false);
                    }
                }
            }
        }
        classes
    }
}

/// The model folder a loader input lists, if it is one.
pub(crate) fn model_folder(class_type: &str, input: &str) -> Option<&'static str> {
    MODEL_INPUTS
        .iter()
        .find(|(c, i, _)| *c == class_type && *i == input)
        .map(|(_, _, folder)| *folder)
}

/// Inputs whose options are the images in `input/` and which ComfyUI validates by file
/// existence (`VALIDATE_INPUTS`) rather than against the list.
pub(crate) fn lists_input_images(class_type: &str, input: &str) -> bool {
    matches!(class_type, "LoadImage" | "LoadImageMask") && input == "image"
}

/// A combo's options, with the simulator's models for loader inputs.
pub(crate) fn options_with_models(
    def: &InputDef,
    class_type: &str,
    models: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<Value>> {
    let mut options = def.combo_options()?;
    if let Some(folder) = model_folder(class_type, &def.name) {
        extend_unique(&mut options, models.get(folder));
    }
    Some(options)
}

fn extend_unique(options: &mut Vec<Value>, extra: Option<&Vec<String>>) {
    for name in extra.into_iter().flatten() {
        let v = Value::String(name.clone());
        if !options.contains(&v) {
            options.push(v);
        }
    }
}

fn current_options(spec: &Value) -> Vec<Value> {
    match spec.get(0) {
        Some(Value::Array(options)) => options.clone(),
        Some(Value::String(k)) if k == "COMBO" => spec
            .get(1)
            .and_then(|e| e.get("options"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn set_options(spec: &mut Value, options: Vec<Value>, replace: bool) {
    let Some(parts) = spec.as_array_mut() else {
        return;
    };
    match parts.first() {
        Some(Value::Array(_)) => parts[0] = Value::Array(options),
        Some(Value::String(k)) if k == "COMBO" => {
            if let Some(extra) = parts.get_mut(1).and_then(Value::as_object_mut) {
                extra.insert("options".to_owned(), Value::Array(options));
            }
        }
        _ if replace => parts.insert(0, Value::Array(options)),
        _ => {}
    }
}

/// Image files directly in `input/`, sorted, as LoadImage lists them.
pub(crate) fn input_images(input_dir: &Path) -> Vec<Value> {
    const IMAGE_EXTENSIONS: &[&str] = &[
        "png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "avif", "heic", "heif", "jfif",
    ];
    let mut names: Vec<String> = std::fs::read_dir(input_dir)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.rsplit_once('.').is_some_and(|(_, ext)| {
                        IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.into_iter().map(Value::String).collect()
}
