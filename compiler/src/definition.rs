//! The workflow definition format: a TOML file beside a graph file.
//!
//! These types are exactly what a user writes, with byte spans kept on every field a later
//! check may need to point at (`toml::Spanned`). Unknown fields are rejected so a typo such as
//! `deafult` is an error at its line rather than a silently ignored setting. The JSON Schema
//! of this format (`schemas/workflow.schema.json`) is generated from these types.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// A workflow definition file (`workflows/NAME.toml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "comfyc workflow definition")]
pub struct Definition {
    /// What the workflow is and which graph file it wraps.
    pub workflow: WorkflowSection,
    /// The workflow's inputs: what a job may set.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, InputDef>")]
    pub inputs: IndexMap<Spanned<String>, InputDef>,
    /// The workflow's named outputs, each an output node of the graph.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, OutputDef>")]
    pub outputs: IndexMap<Spanned<String>, OutputDef>,
    /// Model files this workflow needs, as under `[[models]]` in `comfyc.toml` (`comfyc
    /// import` writes them from the model lists a saved workflow's loaders carry).
    #[serde(default)]
    #[schemars(with = "Vec<ModelDecl>")]
    pub models: Vec<Spanned<ModelDecl>>,
}

/// The `[workflow]` table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSection {
    /// Workflow name used by jobs (`workflow = "NAME"`); defaults to the file stem.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Version of this definition (semantic versioning recommended); jobs may pin it with
    /// `NAME@VERSION`.
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// Human title, shown by form generators.
    pub title: Option<String>,
    /// Longer description, shown by form generators.
    pub description: Option<String>,
    /// Scheduling class (`image`, `video`, ...): the daemon ages classes separately so short
    /// jobs are not starved behind long ones.
    #[schemars(with = "Option<String>")]
    pub class: Option<Spanned<String>>,
    /// The graph file, relative to this file: API-format JSON (`*.json`) or a minijinja
    /// template of it (`*.j2`).
    #[schemars(with = "String")]
    pub graph: Spanned<String>,
}

/// Value types an input may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Enum,
    /// An integer seed, at most 2^53 - 1; when a job leaves it out the daemon picks one and
    /// records it.
    Seed,
    /// An image file the daemon uploads (the job gives a path under its input root).
    Image,
    /// A mask image the daemon uploads.
    Mask,
    /// A video file the daemon uploads.
    Video,
    /// An audio file the daemon uploads.
    Audio,
    /// A model file name from the catalogue's model list (or the repo's declared models).
    Model,
    /// A list, for templates.
    Array,
    /// A table of named fields, for templates.
    Object,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Enum => "enum",
            InputType::Seed => "seed",
            InputType::Image => "image",
            InputType::Mask => "mask",
            InputType::Video => "video",
            InputType::Audio => "audio",
            InputType::Model => "model",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    /// "an integer", "a string", ...
    pub fn with_article(self) -> String {
        let name = self.as_str();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    pub fn is_file(self) -> bool {
        matches!(
            self,
            InputType::Image | InputType::Mask | InputType::Video | InputType::Audio
        )
    }
}

/// A number as TOML writes it: integer or float.
#[derive(Debug, Clone, Copy, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub enum Num {
    Int(i64),
    Float(f64),
}

// Hand-written so a wrong type reads "expected a number", not "did not match any variant".
impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(i64::try_from(v).map_or(Num::Float(v as f64), Num::Int))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub fn as_json(self) -> serde_json::Value {
        match self {
            Num::Int(i) => i.into(),
            Num::Float(f) => {
                serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
            }
        }
    }
}

/// One binding target or several.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub enum Targets {
    One(String),
    Many(#[schemars(with = "Vec<String>")] Vec<Spanned<String>>),
}

impl Targets {
    /// Each target with its span; a single target spans `outer`, the span of the whole value.
    pub fn spanned(&self, outer: std::ops::Range<usize>) -> Vec<Spanned<String>> {
        match self {
            Targets::One(t) => vec![Spanned::new(outer, t.clone())],
            Targets::Many(v) => v.clone(),
        }
    }
}

// Hand-written because serde's untagged enums buffer their input and so lose toml's spans.
impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Targets;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a binding target `\"NODE.input\"` or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Targets, E> {
                Ok(Targets::One(s.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Targets, A::Error> {
                let mut v = Vec::new();
                while let Some(t) = seq.next_element::<Spanned<String>>()? {
                    v.push(t);
                }
                Ok(Targets::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An `[inputs.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// Value type. Inferred from the bound node input when omitted.
    #[serde(rename = "type")]
    #[schemars(with = "Option<InputType>")]
    pub ty: Option<Spanned<InputType>>,
    /// Where the value goes: `"NODE.input"` or a list of them. Omit for template variables.
    #[schemars(with = "Option<Targets>")]
    pub to: Option<Spanned<Targets>>,
    /// Human title, for forms.
    pub title: Option<String>,
    /// Help text, for forms.
    pub description: Option<String>,
    /// Whether a job must give a value. Defaults to true when there is no default.
    pub required: Option<bool>,
    /// Value used when a job gives none. Defaults to the value in the graph.
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<Spanned<toml::Value>>,
    /// Smallest allowed number; may only narrow the node's own range.
    #[schemars(with = "Option<Num>")]
    pub min: Option<Spanned<Num>>,
    /// Largest allowed number; may only narrow the node's own range. A seed's is at most
    /// 2^53 - 1, the largest whole number a browser form keeps exact.
    #[schemars(with = "Option<Num>")]
    pub max: Option<Spanned<Num>>,
    /// Increment a form should use.
    #[schemars(with = "Option<Num>")]
    pub step: Option<Spanned<Num>>,
    /// The value must be a multiple of this.
    #[schemars(with = "Option<Num>")]
    pub multiple_of: Option<Spanned<Num>>,
    /// Shortest allowed string, in characters.
    #[schemars(with = "Option<u64>")]
    pub min_length: Option<Spanned<u64>>,
    /// Longest allowed string, in characters.
    #[schemars(with = "Option<u64>")]
    pub max_length: Option<Spanned<u64>>,
    /// Regular expression a string must match (ECMA-262 syntax, as JSON Schema uses).
    #[schemars(with = "Option<String>")]
    pub pattern: Option<Spanned<String>>,
    /// Show a multi-line text box.
    pub multiline: Option<bool>,
    /// Allowed values of an enum (or model); for a bound combo, a subset of the node's options.
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub options: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    /// Models folder of a `model` input (`checkpoints`, `loras`, ...); inferred when bound.
    #[schemars(with = "Option<String>")]
    pub folder: Option<Spanned<String>>,
    /// Element type of an `array` input.
    pub items: Option<Box<InputDef>>,
    /// Fields of an `object` input.
    pub properties: Option<IndexMap<String, InputDef>>,
    /// Fewest elements of an `array` input.
    pub min_items: Option<u64>,
    /// Most elements of an `array` input.
    pub max_items: Option<u64>,
}

/// An `[outputs.NAME]` table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputDef {
    /// Id of the output node (`SaveImage`, `PreviewAny`, ...) in the graph.
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    /// Help text.
    pub description: Option<String>,
}

/// The repository's `comfyc.toml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "comfyc repository configuration")]
pub struct RepoConfig {
    /// Path of the node catalogue snapshot (`comfyc nodes pull` writes it).
    #[serde(default = "default_catalogue")]
    pub catalogue: String,
    /// Directories holding workflow definitions (`*.toml`), searched recursively.
    #[serde(default = "default_workflows")]
    pub workflows: Vec<String>,
    /// Directory of shared minijinja templates that graph templates may include.
    #[serde(default = "default_templates")]
    pub templates: String,
    /// Model files the workflows need, so checks accept them even where the catalogue's
    /// machine lacks them, and the daemon can say which file is missing before it runs a job.
    #[serde(default)]
    #[schemars(with = "Vec<ModelDecl>")]
    pub models: Vec<Spanned<ModelDecl>>,
}

fn default_catalogue() -> String {
    "nodes/object_info.json".into()
}

fn default_workflows() -> Vec<String> {
    vec!["workflows".into()]
}

fn default_templates() -> String {
    "templates".into()
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self {
            catalogue: default_catalogue(),
            workflows: default_workflows(),
            templates: default_templates(),
            models: Vec::new(),
        }
    }
}

/// A `[[models]]` entry.
#[derive(Debug, Clone, Deserialize, JsonSchema, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelDecl {
    /// File name as ComfyUI lists it (may include a subfolder: `sd15/model.safetensors`).
    pub name: String,
    /// Models folder: `checkpoints`, `loras`, `vae`, `diffusion_models`, `text_encoders`, ...
    pub folder: String,
    /// Expected SHA-256 of the file, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the file can be downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
