//! JSON Schema (draft 2020-12) of a workflow's inputs.
//!
//! One schema per workflow: an object with one property per input, `required`, and
//! `additionalProperties: false`. Besides standard keywords it carries `x-` hints a form
//! generator can use: `x-multiline`, `x-upload` (image/mask/video/audio), `x-seed`,
//! `x-model-folder`, `x-step`, and `x-order` (the definition's input order, since JSON
//! object order is not meaningful).

use serde_json::{Map, Value, json};

use crate::definition::InputType;
use crate::inputs::WorkflowInput;

pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The schema of one input value.
pub fn input_schema(input: &WorkflowInput) -> Value {
    let mut s = Map::new();
    if let Some(t) = &input.title {
        s.insert("title".into(), t.clone().into());
    }
    if let Some(d) = &input.description {
        s.insert("description".into(), d.clone().into());
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            s.insert(k.into(), v);
        }
    };
    match input.ty {
        InputType::String => {
            put("type", Some("string".into()));
            put("minLength", input.min_length.map(Into::into));
            put("maxLength", input.max_length.map(Into::into));
            put("pattern", input.pattern.clone().map(Into::into));
            put("x-multiline", input.multiline.then_some(true.into()));
        }
        InputType::Integer | InputType::Number | InputType::Seed => {
            let ty = if input.ty == InputType::Number {
                "number"
            } else {
                "integer"
            };
            put("type", Some(ty.into()));
            put("minimum", input.min.clone());
            put("maximum", input.max.clone());
            put("multipleOf", input.multiple_of.clone());
            put("x-step", input.step.clone());
            put(
                "x-seed",
                (input.ty == InputType::Seed).then_some(true.into()),
            );
        }
        InputType::Boolean => put("type", Some("boolean".into())),
        InputType::Enum => {
            let options = input.options.clone().unwrap_or_default();
            if !options.is_empty() && options.iter().all(Value::is_string) {
                put("type", Some("string".into()));
            }
            put("enum", Some(Value::Array(options)));
        }
        InputType::Model => {
            put("type", Some("string".into()));
            put("minLength", Some(1.into()));
            put(
                "enum",
                input
                    .options
                    .clone()
                    .filter(|o| !o.is_empty())
                    .map(Value::Array),
            );
            put("x-model-folder", input.folder.clone().map(Into::into));
        }
        InputType::Image | InputType::Mask | InputType::Video | InputType::Audio => {
            put("type", Some("string".into()));
            put("minLength", Some(1.into()));
            let media = match input.ty {
                InputType::Video => "video/*",
                InputType::Audio => "audio/*",
                _ => "image/*",
            };
            put("contentMediaType", Some(media.into()));
            put("x-upload", Some(input.ty.as_str().into()));
        }
        InputType::Array => {
            put("type", Some("array".into()));
            put("items", input.items.as_deref().map(input_schema));
            put("minItems", input.min_items.map(Into::into));
            put("maxItems", input.max_items.map(Into::into));
        }
        InputType::Object => {
            put("type", Some("object".into()));
            if let Some(props) = &input.properties {
                let (properties, required) = properties(props);
                put("properties", Some(properties));
                put("required", Some(required));
                put("additionalProperties", Some(false.into()));
            }
        }
    }
    put("default", input.default.clone());
    Value::Object(s)
}

fn properties(inputs: &[WorkflowInput]) -> (Value, Value) {
    let props: Map<String, Value> = inputs
        .iter()
        .map(|i| (i.name.clone(), input_schema(i)))
        .collect();
    let required: Vec<Value> = inputs
        .iter()
        .filter(|i| i.required)
        .map(|i| i.name.clone().into())
        .collect();
    (Value::Object(props), Value::Array(required))
}

/// What the top of a workflow's schema says about the workflow.
pub struct SchemaMeta<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub hash: &'a str,
}

/// The schema of a whole job's `inputs` table.
pub fn workflow_schema(meta: &SchemaMeta<'_>, inputs: &[WorkflowInput]) -> Value {
    let (properties, required) = properties(inputs);
    let mut s = Map::new();
    s.insert("$schema".into(), DRAFT.into());
    let id = match meta.version {
        Some(v) => format!("urn:comfyc:workflow:{}@{v}", meta.name),
        None => format!("urn:comfyc:workflow:{}", meta.name),
    };
    s.insert("$id".into(), id.into());
    s.insert("title".into(), meta.title.unwrap_or(meta.name).into());
    if let Some(d) = meta.description {
        s.insert("description".into(), d.into());
    }
    s.insert("type".into(), "object".into());
    s.insert("properties".into(), properties);
    s.insert("required".into(), required);
    s.insert("additionalProperties".into(), false.into());
    s.insert(
        "x-order".into(),
        inputs.iter().map(|i| Value::from(i.name.clone())).collect(),
    );
    s.insert(
        "x-comfyc".into(),
        json!({"workflow": meta.name, "version": meta.version, "hash": meta.hash}),
    );
    Value::Object(s)
}
