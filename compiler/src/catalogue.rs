//! The node catalogue: what ComfyUI says about each node class at `GET /object_info`.
//!
//! A snapshot is saved in the workflow repo (see [`normalize_snapshot`]) so checks run offline
//! and a ComfyUI upgrade shows up as a diff. This module turns the snapshot into typed
//! [`NodeClass`]es: inputs in order with their kind and constraints, outputs, whether the
//! node is an output node, and which inputs name model files.
//!
//! Input specs come in several shapes, all handled here:
//! - `["INT", {"min": 0, "max": 10, "default": 1}]` (also FLOAT, STRING, BOOLEAN);
//! - `[["a", "b"], {...}]`: a combo given as its option list (the classic form);
//! - `["COMBO", {"options": ["a", "b"], "multiselect": false}]`: the newer combo form;
//! - `["IMAGE"]`, `["IMAGE,MASK"]`, `["*"]`: a link of one of these types;
//! - `["COMFY_AUTOGROW_V3", {...}]` and other `COMFY_*` shapes of newer servers: kept as
//!   link-typed inputs so unknown shapes never break loading;
//! - hidden inputs: a bare string (`"PROMPT"`) or a one-element list.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Which section of the node's input spec an input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Required,
    Optional,
    Hidden,
}

/// Kinds of file a combo input uploads (`image_upload`, `video_upload`, `audio_upload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Image,
    Video,
    Audio,
}

/// What an input accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum InputKind {
    Int {
        min: Option<i128>,
        max: Option<i128>,
        step: Option<i128>,
        default: Option<Value>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
        step: Option<f64>,
        default: Option<Value>,
    },
    String {
        multiline: bool,
        default: Option<Value>,
    },
    Boolean {
        default: Option<Value>,
    },
    Combo {
        options: Vec<Value>,
        default: Option<Value>,
        multiselect: bool,
        /// Declared as the type name `"COMBO"` (the V3 node schema) rather than as a bare
        /// option list: ComfyUI 0.3.x does not check these options when a prompt is
        /// submitted, only when the node runs.
        typed: bool,
    },
    /// An input fed by another node's output: one of these types (`*` accepts anything).
    Link {
        types: Vec<String>,
    },
    /// A hidden input the server fills in (`PROMPT`, `UNIQUE_ID`, ...).
    Hidden {
        what: String,
    },
}

impl InputKind {
    /// The type name ComfyUI uses when comparing a link with this input.
    pub fn type_names(&self) -> Vec<String> {
        match self {
            InputKind::Int { .. } => vec!["INT".into()],
            InputKind::Float { .. } => vec!["FLOAT".into()],
            InputKind::String { .. } => vec!["STRING".into()],
            InputKind::Boolean { .. } => vec!["BOOLEAN".into()],
            InputKind::Combo { .. } => vec!["COMBO".into()],
            InputKind::Link { types } => types.clone(),
            InputKind::Hidden { what } => vec![what.clone()],
        }
    }

    /// Widget inputs take literal values; link inputs take only links.
    pub fn is_widget(&self) -> bool {
        !matches!(self, InputKind::Link { .. } | InputKind::Hidden { .. })
    }

    pub fn default(&self) -> Option<&Value> {
        match self {
            InputKind::Int { default, .. }
            | InputKind::Float { default, .. }
            | InputKind::String { default, .. }
            | InputKind::Boolean { default }
            | InputKind::Combo { default, .. } => default.as_ref(),
            InputKind::Link { .. } | InputKind::Hidden { .. } => None,
        }
    }
}

/// One input of a node class.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub section: Section,
    pub kind: InputKind,
    pub tooltip: Option<String>,
    /// The front end adds a "control after generate" widget (seeds).
    pub control_after_generate: bool,
    /// Shown as a socket rather than a widget in the UI.
    pub force_input: bool,
    /// For a combo that names model files: the models folder (`checkpoints`, `loras`, ...).
    pub model_folder: Option<String>,
    pub upload: Option<Upload>,
}

impl InputSpec {
    pub fn required(&self) -> bool {
        self.section == Section::Required
    }

    /// A seed in all but name: an integer input the front end randomises, or one named so.
    pub fn is_seed(&self) -> bool {
        matches!(self.kind, InputKind::Int { .. })
            && (self.control_after_generate || matches!(self.name.as_str(), "seed" | "noise_seed"))
    }
}

/// One output slot of a node class.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    /// The type name (`IMAGE`, `MODEL`, ...); an output whose type is an option list is `COMBO`.
    pub ty: String,
    pub name: String,
    pub is_list: bool,
}

/// Everything the catalogue says about one node class.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClass {
    pub name: String,
    pub display_name: Option<String>,
    pub category: String,
    pub output_node: bool,
    pub api_node: bool,
    pub deprecated: bool,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
}

impl NodeClass {
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// Inputs a graph may set (not hidden), in the catalogue's order.
    pub fn visible_inputs(&self) -> impl Iterator<Item = &InputSpec> {
        self.inputs.iter().filter(|i| i.section != Section::Hidden)
    }
}

/// A snapshot of `GET /object_info`, read lazily: loading finds where each class's spec is
/// in the text, and a class is parsed the first time it is asked for. A check of a few
/// graphs reads a few dozen of the hundreds of classes, and most commands never need the
/// snapshot's hash. Clones share one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    inner: Arc<Snapshot>,
}

#[derive(Debug, Default)]
struct Snapshot {
    text: String,
    classes: BTreeMap<String, Entry>,
    hash: OnceLock<String>,
}

#[derive(Debug)]
struct Entry {
    /// Byte range of the class's spec in the snapshot text.
    span: Range<usize>,
    class: OnceLock<NodeClass>,
}

/// A problem with one class of a snapshot; the rest still loads.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueIssue {
    pub class: String,
    pub message: String,
}

impl Catalogue {
    /// Reads a snapshot. Classes that cannot be understood are skipped and reported; a
    /// document that is not a JSON object is an error.
    pub fn from_json(text: &str) -> Result<(Self, Vec<CatalogueIssue>), String> {
        let raw: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) if e.is_data() => {
                return Err(
                    "an `/object_info` snapshot is a JSON object of node classes".to_owned(),
                );
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut classes = BTreeMap::new();
        let mut issues = Vec::new();
        let base = text.as_ptr() as usize;
        for (name, spec) in raw {
            let spec_text = spec.get();
            if !spec_text.starts_with('{') {
                issues.push(CatalogueIssue {
                    class: name,
                    message: "not an object".into(),
                });
                continue;
            }
            // The raw value borrows from `text`: its offset is where it starts there.
            let start = spec_text.as_ptr() as usize - base;
            classes.insert(
                name,
                Entry {
                    span: start..start + spec_text.len(),
                    class: OnceLock::new(),
                },
            );
        }
        let inner = Snapshot {
            text: text.to_owned(),
            classes,
            hash: OnceLock::new(),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            issues,
        ))
    }

    pub fn from_value(value: &Value) -> Result<(Self, Vec<CatalogueIssue>), String> {
        Self::from_json(&value.to_string())
    }

    pub fn get(&self, class: &str) -> Option<&NodeClass> {
        let (name, entry) = self.inner.classes.get_key_value(class)?;
        Some(entry.class.get_or_init(|| {
            let spec: Value =
                serde_json::from_str(&self.inner.text[entry.span.clone()]).unwrap_or(Value::Null);
            parse_class(name, &spec)
        }))
    }

    pub fn len(&self) -> usize {
        self.inner.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.classes.is_empty()
    }

    /// Class names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.classes.keys().map(String::as_str)
    }

    /// Every class, sorted by name (parses those not yet parsed).
    pub fn classes(&self) -> impl Iterator<Item = &NodeClass> {
        self.inner.classes.keys().filter_map(|n| self.get(n))
    }

    /// `sha256:` of the snapshot's canonical form (sorted keys, compact), so formatting does
    /// not change it. Computed on first use.
    pub fn hash(&self) -> &str {
        self.inner.hash.get_or_init(|| text_hash(&self.inner.text))
    }

    /// Class names close to `name`, for "did you mean" help.
    pub fn similar(&self, name: &str) -> Option<&str> {
        closest(name, self.names())
    }
}

/// The canonical form of a snapshot as `comfyc nodes pull` writes it: object keys sorted at
/// every level, pretty-printed, trailing newline. Input order survives in `input_order`.
pub fn normalize_snapshot(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    s.push('\n');
    s
}

/// `value` with every object's keys sorted.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `sha256:<hex>` of the canonical compact JSON of `value`.
pub fn content_hash(value: &Value) -> String {
    let bytes = serde_json::to_vec(&sorted(value)).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// [`content_hash`] of a JSON text (of `null` when it does not parse), computed without
/// building its [`Value`]: a 1 MB snapshot takes some 10 MB as values, and a daemon's heap
/// keeps its high-water mark.
pub fn text_hash(text: &str) -> String {
    use serde::de::DeserializeSeed;
    let mut out = Vec::with_capacity(text.len());
    let mut de = serde_json::Deserializer::from_str(text);
    let ok = Canonical(&mut out).deserialize(&mut de).is_ok() && de.end().is_ok();
    if !ok {
        out = b"null".to_vec();
    }
    format!("sha256:{}", hex::encode(Sha256::digest(&out)))
}

/// Writes the value it deserializes as [`content_hash`] serializes it: compact, object keys
/// sorted at every level, a repeated key's last value kept (as parsing into a map does).
struct Canonical<'a>(&'a mut Vec<u8>);

impl Canonical<'_> {
    fn scalar<E: serde::de::Error>(self, v: impl serde::Serialize) -> Result<(), E> {
        serde_json::to_writer(&mut *self.0, &v).map_err(E::custom)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Canonical<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // As `Value` holds it: a number, or null when not finite.
        self.scalar(serde_json::Number::from_f64(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canonical(self.0))?.is_none() {
                if !first {
                    self.0.pop();
                }
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let mut value = Vec::new();
            map.next_value_seed(Canonical(&mut value))?;
            entries.push((key, value));
        }
        // Stable: of equal keys the last one written is the last one after sorting.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.push(b'{');
        let mut first = true;
        for (i, (key, value)) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !first {
                self.0.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.0, key).map_err(serde::de::Error::custom)?;
            self.0.push(b':');
            self.0.extend_from_slice(value);
        }
        self.0.push(b'}');
        Ok(())
    }
}

fn parse_class(name: &str, v: &Value) -> NodeClass {
    let empty = Map::new();
    let obj = v.as_object().unwrap_or(&empty);
    let input = obj.get("input").and_then(Value::as_object);
    let order = obj.get("input_order").and_then(Value::as_object);
    let mut inputs = Vec::new();
    let category = obj
        .get("category")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    for (section_name, section) in [
        ("required", Section::Required),
        ("optional", Section::Optional),
        ("hidden", Section::Hidden),
    ] {
        let Some(specs) = input
            .and_then(|i| i.get(section_name))
            .and_then(Value::as_object)
        else {
            continue;
        };
        // `input_order` survives key sorting; fall back to the object's own order.
        let names: Vec<String> = match order
            .and_then(|o| o.get(section_name))
            .and_then(Value::as_array)
        {
            Some(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            None => specs.keys().cloned().collect(),
        };
        for input_name in names {
            let Some(spec) = specs.get(&input_name) else {
                continue;
            };
            inputs.push(parse_input(name, &category, &input_name, section, spec));
        }
        // Inputs present but missing from input_order still count.
        for (input_name, spec) in specs {
            if !inputs
                .iter()
                .any(|i: &InputSpec| &i.name == input_name && i.section == section)
            {
                inputs.push(parse_input(name, &category, input_name, section, spec));
            }
        }
    }
    let types = obj
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names = obj
        .get("output_name")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let lists = obj
        .get("output_is_list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let outputs = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = match t {
                Value::String(s) => s.clone(),
                Value::Array(_) => "COMBO".to_owned(),
                other => other.to_string(),
            };
            OutputSpec {
                name: names
                    .get(i)
                    .and_then(Value::as_str)
                    .unwrap_or(&ty)
                    .to_owned(),
                is_list: lists.get(i).and_then(Value::as_bool).unwrap_or(false),
                ty,
            }
        })
        .collect();
    NodeClass {
        name: name.to_owned(),
        display_name: obj
            .get("display_name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        category,
        output_node: obj
            .get("output_node")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        api_node: obj
            .get("api_node")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        deprecated: obj
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        inputs,
        outputs,
    }
}

fn parse_input(
    class: &str,
    category: &str,
    name: &str,
    section: Section,
    spec: &Value,
) -> InputSpec {
    let empty = Map::new();
    let (head, opts) = match spec {
        Value::Array(a) => (
            a.first().cloned().unwrap_or(Value::Null),
            a.get(1).and_then(Value::as_object).unwrap_or(&empty),
        ),
        other => (other.clone(), &empty),
    };
    let flag = |k: &str| opts.get(k).and_then(Value::as_bool).unwrap_or(false);
    let default = opts.get("default").cloned();
    let kind = if section == Section::Hidden {
        InputKind::Hidden {
            what: head.as_str().unwrap_or_default().to_owned(),
        }
    } else {
        match &head {
            Value::Array(options) => InputKind::Combo {
                options: options.clone(),
                default,
                multiselect: flag("multiselect"),
                typed: false,
            },
            Value::String(t) => match t.as_str() {
                "INT" => InputKind::Int {
                    min: opts.get("min").and_then(as_i128),
                    max: opts.get("max").and_then(as_i128),
                    step: opts.get("step").and_then(as_i128),
                    default,
                },
                "FLOAT" => InputKind::Float {
                    min: opts.get("min").and_then(Value::as_f64),
                    max: opts.get("max").and_then(Value::as_f64),
                    step: opts.get("step").and_then(Value::as_f64),
                    default,
                },
                "STRING" => InputKind::String {
                    multiline: flag("multiline"),
                    default,
                },
                "BOOLEAN" => InputKind::Boolean { default },
                "COMBO" => InputKind::Combo {
                    options: opts
                        .get("options")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    default,
                    multiselect: flag("multiselect"),
                    typed: true,
                },
                other => InputKind::Link {
                    types: other
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                },
            },
            _ => InputKind::Link {
                types: vec!["*".into()],
            },
        }
    };
    let upload = if flag("image_upload") {
        Some(Upload::Image)
    } else if flag("video_upload") {
        Some(Upload::Video)
    } else if flag("audio_upload") {
        Some(Upload::Audio)
    } else {
        None
    };
    let model_folder = match &kind {
        InputKind::Combo { options, .. } if upload.is_none() => {
            model_folder(class, category, name, options)
        }
        _ => None,
    };
    InputSpec {
        name: name.to_owned(),
        section,
        tooltip: opts
            .get("tooltip")
            .and_then(Value::as_str)
            .map(str::to_owned),
        control_after_generate: flag("control_after_generate"),
        force_input: flag("forceInput"),
        kind,
        model_folder,
        upload,
    }
}

/// Which models folder a combo input draws from, if it names model files. ComfyUI does not
/// say so directly; loader nodes name their model inputs consistently, and model lists hold
/// file names with model extensions.
fn model_folder(class: &str, category: &str, input: &str, options: &[Value]) -> Option<String> {
    let by_name = match input {
        "ckpt_name" => Some("checkpoints"),
        "lora_name" => Some("loras"),
        "vae_name" => Some("vae"),
        "unet_name" => Some("diffusion_models"),
        "control_net_name" => Some("controlnet"),
        "style_model_name" => Some("style_models"),
        "gligen_name" => Some("gligen"),
        "hypernetwork_name" => Some("hypernetworks"),
        "upscale_model" => Some("upscale_models"),
        "audio_encoder_name" => Some("audio_encoders"),
        "model_patch_name" | "name" if class.contains("ModelPatch") => Some("model_patches"),
        n if n.starts_with("clip_name") => {
            if class.contains("CLIPVision") {
                Some("clip_vision")
            } else {
                Some("text_encoders")
            }
        }
        "model_name" if class.contains("Upscale") => Some("upscale_models"),
        "model_name" if class.contains("PhotoMaker") => Some("photomaker"),
        _ => None,
    };
    if by_name.is_some() {
        return by_name.map(str::to_owned);
    }
    let is_loader = class.contains("Loader") || category.starts_with("loaders");
    let looks_like_files = !options.is_empty()
        && options.iter().all(|o| {
            o.as_str().is_some_and(|s| {
                [
                    ".safetensors",
                    ".ckpt",
                    ".pt",
                    ".pth",
                    ".bin",
                    ".gguf",
                    ".sft",
                ]
                .iter()
                .any(|ext| s.ends_with(ext))
            })
        });
    if is_loader && input.ends_with("_name") && (options.is_empty() || looks_like_files) {
        return Some(input.trim_end_matches("_name").to_owned() + "s");
    }
    None
}

fn as_i128(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                .map(|f| f as i128)
        })
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let lower = name.to_lowercase();
    candidates
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Edit distance counting an adjacent transposition as one edit (`widht` → `width`).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_spec_form() {
        let text = r#"{"N": {"input": {
            "required": {"a": ["INT", {"min": 0, "max": 18446744073709551615, "control_after_generate": true}],
                         "b": [["x", "y"]], "c": ["COMBO", {"options": ["p"], "multiselect": false}],
                         "d": ["IMAGE,MASK"], "e": ["COMFY_AUTOGROW_V3", {"template": {}}]},
            "optional": {"f": ["STRING", {"multiline": true}]},
            "hidden": {"g": "PROMPT", "h": ["UNIQUE_ID"]}},
          "input_order": {"required": ["b", "a", "c", "d", "e"], "optional": ["f"], "hidden": ["g", "h"]},
          "output": ["IMAGE", ["x", "y"]], "output_name": ["IMAGE", "choice"], "output_is_list": [false, true],
          "output_node": false, "category": "test"}}"#;
        let (cat, issues) = Catalogue::from_json(text).unwrap_or_default();
        assert!(issues.is_empty());
        let n = cat.get("N").cloned().unwrap_or_else(|| panic!("class N"));
        let names: Vec<_> = n.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "c", "d", "e", "f", "g", "h"]);
        assert!(
            matches!(n.inputs[1].kind, InputKind::Int { max: Some(m), .. } if m == u64::MAX as i128)
        );
        assert!(n.inputs[1].is_seed());
        assert!(
            matches!(&n.inputs[2].kind, InputKind::Combo { options, .. } if options.len() == 1)
        );
        assert_eq!(n.inputs[3].kind.type_names(), ["IMAGE", "MASK"]);
        assert!(matches!(
            n.inputs[5].kind,
            InputKind::String {
                multiline: true,
                ..
            }
        ));
        assert!(matches!(&n.inputs[7].kind, InputKind::Hidden { what } if what == "UNIQUE_ID"));
        assert_eq!(n.outputs[1].ty, "COMBO");
        assert!(n.outputs[1].is_list);
    }

    #[test]
    fn classes_are_read_when_asked_for() {
        let text = r#"{"B": {"input": {"required": {"x": ["INT"]}}, "output": ["INT"]}, "A": 5}"#;
        let (cat, issues) = Catalogue::from_json(text).unwrap_or_default();
        assert_eq!(
            issues,
            [CatalogueIssue {
                class: "A".into(),
                message: "not an object".into()
            }]
        );
        assert_eq!(cat.len(), 1);
        assert_eq!(cat.get("B").map(|c| c.inputs.len()), Some(1));
        assert!(cat.get("A").is_none());
        let value: Value = serde_json::from_str(text).unwrap_or_default();
        assert_eq!(cat.hash(), content_hash(&value));
        assert!(Catalogue::from_json("[1, 2]").is_err());
        assert!(Catalogue::from_json("{").is_err());
    }

    #[test]
    fn the_text_hash_is_the_hash_of_the_parsed_value() {
        let cases = [
            r#"{"b": [1, -2, 3.5, 1e300, 0.1, 18446744073709551615, -9223372036854775808], "a": {"z": null, "y": true, "x": "\u00e9\n\"q\"\t\u0001"}}"#,
            r#"{"k": 1, "j": [], "k": {"n": [[], {}, [{"b": 2, "a": 1}]]}, "": "", "é": 0}"#,
            r#"[1, 2.0, "x", {"b": {}, "a": []}]"#,
            "  \"just a string\"  ",
            "12",
            "{",
            "{} trailing",
        ];
        for text in cases {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            assert_eq!(text_hash(text), content_hash(&value), "{text}");
        }
        let real = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/nodes/object_info.json"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let value: Value = serde_json::from_str(&real).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text_hash(&real), content_hash(&value));
    }

    #[test]
    fn closest_finds_typos() {
        let c = ["KSampler", "KSamplerAdvanced", "SaveImage"];
        assert_eq!(closest("KSampeler", c.into_iter()), Some("KSampler"));
        assert_eq!(closest("Zzz", c.into_iter()), None);
        assert_eq!(
            closest("widht", ["width", "height"].into_iter()),
            Some("width")
        );
    }
}
