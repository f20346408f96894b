//! The RJSF uiSchema of a workflow's inputs (`NAME.uischema.json` beside `NAME.schema.json`).
//!
//! The input schema says what a value may be; this says how a form should ask for it, in the
//! vocabulary of react-jsonschema-form 6: `ui:order` (the definition's input order, which a
//! JSON object cannot carry), a textarea for multi-line strings, a `seed` widget with
//! randomising (a custom widget the page registers), RJSF's `file` widget with the accepted
//! media types for file inputs, `ui:enumNames` for option labels (RJSF 6 dropped the schema's
//! `enumNames` and reads this), and titles and descriptions. Pure: made from the compiled
//! inputs alone, so building twice gives the same bytes.

use serde_json::{Map, Value, json};

use crate::compile::Workflow;
use crate::definition::InputType;
use crate::inputs::WorkflowInput;
use crate::schema::{input_title, media_type, seed_help};

/// Rows of the textarea for multi-line strings.
const TEXTAREA_ROWS: u64 = 5;

/// The uiSchema of a compiled workflow's job inputs.
pub fn ui_schema(w: &Workflow) -> Value {
    ui_schema_of(&w.inputs)
}

/// The uiSchema of an object whose properties are `inputs`, in their order.
pub fn ui_schema_of(inputs: &[WorkflowInput]) -> Value {
    Value::Object(object_ui(inputs))
}

fn object_ui(inputs: &[WorkflowInput]) -> Map<String, Value> {
    let mut ui = Map::new();
    ui.insert(
        "ui:order".into(),
        inputs.iter().map(|i| Value::from(i.name.clone())).collect(),
    );
    for input in inputs {
        ui.insert(input.name.clone(), input_ui(input));
    }
    ui
}

/// The uiSchema of one input's value.
fn input_ui(input: &WorkflowInput) -> Value {
    let mut ui = Map::new();
    if let Some(t) = input_title(input) {
        ui.insert("ui:title".into(), t.into());
    }
    if let Some(d) = &input.description {
        ui.insert("ui:description".into(), d.clone().into());
    }
    match input.ty {
        InputType::String if input.multiline => {
            ui.insert("ui:widget".into(), "textarea".into());
            ui.insert("ui:options".into(), json!({"rows": TEXTAREA_ROWS}));
        }
        InputType::Seed => {
            ui.insert("ui:widget".into(), "seed".into());
            ui.insert("ui:options".into(), json!({"randomize": true}));
            ui.insert("ui:help".into(), seed_help(input).into());
        }
        t if t.is_file() => {
            ui.insert("ui:widget".into(), "file".into());
            ui.insert("ui:options".into(), json!({"accept": media_type(t)}));
        }
        InputType::Enum | InputType::Model => {
            if let Some(options) = input.options.as_ref().filter(|o| !o.is_empty()) {
                let labels = options
                    .iter()
                    .map(|o| Value::from(option_label(input.ty, o)))
                    .collect();
                ui.insert("ui:enumNames".into(), labels);
            }
        }
        InputType::Array => {
            if let Some(item) = &input.items {
                ui.insert("items".into(), input_ui(item));
            }
        }
        InputType::Object => {
            if let Some(props) = &input.properties {
                ui.extend(object_ui(props));
            }
        }
        _ => {}
    }
    Value::Object(ui)
}

/// The label a form shows for one option: a model file without its extension (the folder
/// path kept, as it tells models apart), anything else as written.
fn option_label(ty: InputType, option: &Value) -> String {
    let text = match option {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if ty != InputType::Model {
        return text;
    }
    const EXTENSIONS: &[&str] = &[
        ".safetensors",
        ".sft",
        ".ckpt",
        ".pt",
        ".pth",
        ".bin",
        ".gguf",
    ];
    EXTENSIONS
        .iter()
        .find_map(|e| text.strip_suffix(e))
        .filter(|s| !s.is_empty())
        .map_or(text.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::option_label;
    use crate::definition::InputType;
    use serde_json::json;

    #[test]
    fn model_labels_drop_the_extension_and_keep_the_folder() {
        assert_eq!(
            option_label(InputType::Model, &json!("sd15/dream.safetensors")),
            "sd15/dream"
        );
        assert_eq!(option_label(InputType::Model, &json!("x.ckpt")), "x");
        assert_eq!(
            option_label(InputType::Model, &json!(".safetensors")),
            ".safetensors"
        );
        assert_eq!(
            option_label(InputType::Enum, &json!("a.safetensors")),
            "a.safetensors"
        );
        assert_eq!(option_label(InputType::Enum, &json!(512)), "512");
    }
}
