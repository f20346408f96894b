//! JSON Schema (draft 2020-12) of a workflow's inputs.
//!
//! One schema per workflow: an object with one property per input, `required`, and
//! `additionalProperties: false`. It is meant to work in form libraries as emitted: every
//! input has a `title` (the definition's, else made from its name), every `enum` has a
//! `type`, file inputs carry `contentMediaType`, and seeds stop at 2^53 − 1 (see
//! [`JS_SAFE_MAX`]). Besides standard keywords it carries `x-` hints a form generator can use:
//! `x-multiline`, `x-upload` (image/mask/video/audio), `x-seed`, `x-model-folder`, `x-step`,
//! `x-order` (the definition's input order, since JSON object order is not meaningful) and
//! `x-comfyc`; [`EXTENSION_KEYWORDS`] lists them for validators that must be told (Ajv's
//! strict mode). How a form should draw each input is in [`crate::uischema`].

use serde_json::{Map, Value, json};

use crate::definition::InputType;
use crate::inputs::WorkflowInput;

pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The largest integer a JavaScript number holds exactly, 2^53 − 1, and so the largest seed
/// an input schema allows: a browser form parses numbers into doubles, where 2^53 + 1 would
/// silently become 2^53 and a job would run with a seed nobody typed.
pub const JS_SAFE_MAX: u64 = 9_007_199_254_740_991;

/// The non-standard keywords input schemas may carry, for validators that reject unknown
/// keywords (`ajv.addVocabulary(...)` in Ajv's strict mode).
pub const EXTENSION_KEYWORDS: &[&str] = &[
    "x-comfyc",
    "x-model-folder",
    "x-multiline",
    "x-order",
    "x-seed",
    "x-step",
    "x-upload",
];

/// The title a form shows for an input: the definition's, else its name made readable; none
/// for an array's items (named `loras[]` after their array), which a form numbers instead.
pub fn input_title(input: &WorkflowInput) -> Option<String> {
    match &input.title {
        Some(t) => Some(t.clone()),
        None if input.name.ends_with("[]") => None,
        None => Some(humanise(&input.name)),
    }
}

/// A key as a label: `negative_prompt` → `Negative prompt`, `ckptName` → `Ckpt name`.
pub fn humanise(key: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == '.' || c.is_whitespace() {
            words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.push(c);
    }
    words.extend((!word.is_empty()).then_some(word));
    let all_caps = |w: &str| w.chars().count() > 1 && !w.chars().any(char::is_lowercase);
    let mut out = words
        .iter()
        .map(|w| {
            if all_caps(w) {
                w.clone()
            } else {
                w.to_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(first) = out.chars().next() {
        out.replace_range(..first.len_utf8(), &first.to_uppercase().to_string());
    }
    if out.is_empty() { key.to_owned() } else { out }
}

/// The media types a file input accepts, as `contentMediaType` and an upload's `accept` say.
pub fn media_type(ty: InputType) -> &'static str {
    match ty {
        InputType::Video => "video/*",
        InputType::Audio => "audio/*",
        _ => "image/*",
    }
}

/// What a form says under a seed input: its range and why it ends at 2^53 − 1.
pub fn seed_help(input: &WorkflowInput) -> String {
    let min = input.min.clone().unwrap_or_else(|| 0.into());
    let max = input.max.clone().unwrap_or_else(|| JS_SAFE_MAX.into());
    let why = if max.as_u64() == Some(JS_SAFE_MAX) {
        " (2^53 − 1, the largest whole number a browser keeps exact)"
    } else {
        ""
    };
    format!(
        "A whole number from {min} to {max}{why}. Left empty, a random seed is picked and recorded."
    )
}

/// The JSON type of an enum's options (`["integer", "string"]` when they mix), so a form
/// library knows what widget and value type to use; `None` for no options.
fn options_type(options: &[Value]) -> Option<Value> {
    let mut types: Vec<&str> = Vec::new();
    for o in options {
        let t = match o {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    // Integers are numbers too: one `number` covers both.
    if types.contains(&"number") {
        types.retain(|t| *t != "integer");
    }
    types.sort_unstable();
    match types.as_slice() {
        [] => None,
        [one] => Some((*one).into()),
        many => Some(many.iter().map(|t| Value::from(*t)).collect()),
    }
}

/// The schema of one input value.
/// Whether `value` certainly satisfies the input schema `schema`, judged without compiling
/// it: scalar types, ranges, lengths and string options. `false` means "not sure": the caller
/// asks a real validator.
pub fn surely_valid(schema: &Value, value: &Value) -> bool {
    let Some(s) = schema.as_object() else {
        return false;
    };
    for (key, rule) in s {
        let ok = match key.as_str() {
            "title" | "description" | "$comment" | "contentMediaType" | "default" => true,
            k if k.starts_with("x-") => true,
            "type" => match (rule.as_str(), value) {
                (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
                (Some("number"), Value::Number(_)) => true,
                (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
                _ => false,
            },
            "minimum" | "maximum" => match (rule, value) {
                (Value::Number(r), Value::Number(v)) => {
                    let below = compare(v, r) == Some(std::cmp::Ordering::Less);
                    let above = compare(v, r) == Some(std::cmp::Ordering::Greater);
                    compare(v, r).is_some() && if key == "minimum" { !below } else { !above }
                }
                _ => false,
            },
            "minLength" | "maxLength" => match (rule.as_u64(), value) {
                (Some(n), Value::String(v)) => {
                    let len = v.chars().count() as u64;
                    if key == "minLength" {
                        len >= n
                    } else {
                        len <= n
                    }
                }
                _ => false,
            },
            // Integers only: a float remainder would need the validator's own rounding.
            "multipleOf" => match (rule.as_i64(), value.as_i64()) {
                (Some(m), Some(v)) if m > 0 => v % m == 0,
                _ => false,
            },
            "enum" => match (rule, value) {
                (Value::Array(options), Value::String(_)) => {
                    options.iter().all(Value::is_string) && options.contains(value)
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether job inputs certainly satisfy a workflow schema (see [`workflow_schema`]), judged as
/// [`surely_valid`] judges each input; `false` means "ask the validator".
pub fn surely_valid_inputs(schema: &Value, inputs: &Map<String, Value>) -> bool {
    let Some(s) = schema.as_object() else {
        return false;
    };
    let understood = s.keys().all(|k| {
        matches!(
            k.as_str(),
            "$schema"
                | "$id"
                | "title"
                | "description"
                | "type"
                | "properties"
                | "required"
                | "additionalProperties"
        ) || k.starts_with("x-")
    });
    let (Some(props), Some(required)) = (
        s.get("properties").and_then(Value::as_object),
        s.get("required").and_then(Value::as_array),
    ) else {
        return false;
    };
    understood
        && s.get("type") == Some(&Value::from("object"))
        && s.get("additionalProperties") == Some(&Value::Bool(false))
        && required
            .iter()
            .all(|r| r.as_str().is_some_and(|r| inputs.contains_key(r)))
        && inputs
            .iter()
            .all(|(k, v)| props.get(k).is_some_and(|p| surely_valid(p, v)))
}

/// Two JSON numbers compared exactly where both are integers, else as floats.
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

pub fn input_schema(input: &WorkflowInput) -> Value {
    let mut s = Map::new();
    if let Some(t) = input_title(input) {
        s.insert("title".into(), t.into());
    }
    match &input.description {
        Some(d) => {
            s.insert("description".into(), d.clone().into());
        }
        None if input.ty == InputType::Seed => {
            s.insert("description".into(), seed_help(input).into());
        }
        None => {}
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
            if input.ty == InputType::Seed {
                put("x-seed", Some(true.into()));
                put(
                    "$comment",
                    Some(
                        "seeds stop at 2^53 - 1: a browser keeps no larger whole number exact"
                            .into(),
                    ),
                );
            }
        }
        InputType::Boolean => put("type", Some("boolean".into())),
        InputType::Enum => {
            let options = input.options.clone().unwrap_or_default();
            put("type", options_type(&options));
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
            put("contentMediaType", Some(media_type(input.ty).into()));
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

#[cfg(test)]
mod surely_valid_tests {
    use super::surely_valid;
    use serde_json::json;

    #[test]
    fn sure_only_when_every_keyword_is_understood_and_met() {
        let int =
            json!({"type": "integer", "minimum": 1, "maximum": 10, "title": "t", "x-step": 1});
        assert!(surely_valid(&int, &json!(5)));
        assert!(surely_valid(&int, &json!(10)));
        assert!(!surely_valid(&int, &json!(11)));
        assert!(!surely_valid(&int, &json!(2.5)));
        assert!(!surely_valid(&int, &json!("5")));
        let big = json!({"type": "integer", "maximum": 18446744073709551615_u64});
        assert!(surely_valid(&big, &json!(18446744073709551615_u64)));
        let num = json!({"type": "number", "minimum": 0.5});
        assert!(surely_valid(&num, &json!(1)));
        assert!(!surely_valid(&num, &json!(0.25)));
        let s = json!({"type": "string", "minLength": 1, "maxLength": 3, "enum": ["ab", "é"]});
        assert!(surely_valid(&s, &json!("é")));
        assert!(!surely_valid(&s, &json!("abc")));
        assert!(!surely_valid(&s, &json!("")));
        // Keywords it does not judge leave it unsure.
        assert!(!surely_valid(
            &json!({"type": "string", "pattern": "a"}),
            &json!("a")
        ));
        let multiple = json!({"type": "integer", "multipleOf": 8});
        assert!(surely_valid(&multiple, &json!(512)));
        assert!(!surely_valid(&multiple, &json!(500)));
        assert!(!surely_valid(
            &json!({"type": "number", "multipleOf": 0.5}),
            &json!(1.5)
        ));
        assert!(!surely_valid(&json!({"enum": [1, 2]}), &json!(1)));
    }
}

#[cfg(test)]
mod title_tests {
    use super::humanise;

    #[test]
    fn keys_become_readable_titles() {
        assert_eq!(humanise("negative_prompt"), "Negative prompt");
        assert_eq!(humanise("seed"), "Seed");
        assert_eq!(humanise("ckptName"), "Ckpt name");
        assert_eq!(humanise("CFG_scale"), "CFG scale");
        assert_eq!(humanise("lora-2"), "Lora 2");
        assert_eq!(humanise("__"), "__");
        assert_eq!(humanise("élan_vital"), "Élan vital");
    }
}
