//! `POST /prompt` validation: ComfyUI's `validate_prompt`/`validate_inputs`, rule for rule,
//! against the catalogue, with its error types, messages and shapes.
//!
//! Like ComfyUI, validation converts literal values in place (`"5"` for an INT becomes `5`, an
//! INT input for a FLOAT becomes `5.0`), so the queued prompt holds the converted values. Where
//! ComfyUI raises instead of reporting (a link to a missing node, a bad output slot), the
//! simulator reports the same `exception_during_validation` with the recorded traceback text.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::catalogue::{Catalogue, InputDef, lists_input_images, options_with_models};
use crate::files::Dirs;
use crate::pyjson;

/// What validation needs besides the prompt.
pub(crate) struct Context<'a> {
    pub(crate) catalogue: &'a Catalogue,
    pub(crate) models: &'a BTreeMap<String, Vec<String>>,
    pub(crate) dirs: &'a Dirs,
}

/// The verdict: 200 with the outputs to run, or 400.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Accepted {
        outputs: Vec<String>,
        node_errors: Map<String, Value>,
    },
    Rejected {
        error: Value,
        node_errors: Map<String, Value>,
    },
}

/// A Python exception that escapes ComfyUI's handler: the caller answers a plain-text 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crash;

/// A Python exception raised inside validation and turned into a reason by ComfyUI.
#[derive(Debug, Clone)]
struct PyErr {
    kind: &'static str,
    message: String,
    traceback: Vec<String>,
}

const TB_PROMPT: &str = "  File \"/opt/ComfyUI/execution.py\", line 1010, in validate_prompt\n    m = await validate_inputs(prompt_id, prompt, o, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
const TB_NODE: &str = "  File \"/opt/ComfyUI/execution.py\", line 788, in validate_inputs\n    o_class_type = prompt[o_id]['class_type']\n                   ~~~~~~^^^^^^\n";
const TB_SLOT: &str = "  File \"/opt/ComfyUI/execution.py\", line 790, in validate_inputs\n    received_type = r[val[1]]\n                    ~^^^^^^^^\n";
const TB_INPUTS: &str = "  File \"/opt/ComfyUI/execution.py\", line 743, in validate_inputs\n    inputs = prompt[unique_id]['inputs']\n             ~~~~~~~~~~~~~~~~~^^^^^^^^^^\n";
const TB_INNER: &str = "  File \"/opt/ComfyUI/execution.py\", line 816, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";

fn error(kind: &str, message: &str, details: &str) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": {}})
}

/// Validates `prompt` in place.
/// `targets` is `partial_execution_targets`: only those outputs count.
pub(crate) fn validate_prompt(
    prompt: &mut Map<String, Value>,
    targets: Option<&[Value]>,
    cx: &Context<'_>,
) -> Result<Verdict, Crash> {
    let mut outputs = Vec::new();
    for (id, node) in prompt.iter() {
        let class_type = match node {
            Value::Object(node) => node.get("class_type"),
            Value::Array(_) | Value::String(_) => None,
            _ => return Err(Crash),
        };
        let Some(class_type) = class_type else {
            return Ok(invalid_prompt(
                "Cannot execute because a node is missing the class_type property.",
                id,
            ));
        };
        if matches!(class_type, Value::Array(_) | Value::Object(_)) {
            return Err(Crash);
        }
        let class_type = pyjson::str(class_type);
        if !cx.catalogue.has(&class_type) {
            return Ok(invalid_prompt(
                &format!("Cannot execute because node {class_type} does not exist."),
                id,
            ));
        }
        let targeted = targets.is_none_or(|t| t.iter().any(|t| t.as_str() == Some(id)));
        if cx.catalogue.is_output(&class_type) && targeted {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return Ok(Verdict::Rejected {
            error: error("prompt_no_outputs", "Prompt has no outputs", ""),
            node_errors: Map::new(),
        });
    }

    let mut v = Validator {
        prompt,
        cx,
        validated: Vec::new(),
        in_progress: Vec::new(),
    };
    let mut good = Vec::new();
    let mut failed: Vec<(String, Vec<Value>)> = Vec::new();
    let mut node_errors = Map::new();
    for o in &outputs {
        let (valid, reasons) = match v.validate_inputs(o) {
            Ok(r) => r,
            Err(ex) => {
                let reasons = vec![json!({
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": ex.message,
                    "extra_info": {
                        "exception_type": ex.kind,
                        "traceback": std::iter::once(TB_PROMPT.to_owned()).chain(ex.traceback).collect::<Vec<_>>(),
                    },
                })];
                v.set_validated(o, (false, reasons.clone()));
                (false, reasons)
            }
        };
        if valid {
            good.push(o.clone());
            continue;
        }
        failed.push((o.clone(), reasons));
        // ComfyUI walks every validated node here, so an earlier failure also lists this
        // output among its dependents: kept as it is.
        for (node_id, (valid, reasons)) in &v.validated {
            if *valid || reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                json!({"errors": reasons, "dependent_outputs": [], "class_type": v.class_of(node_id)})
            });
            if let Some(deps) = entry
                .get_mut("dependent_outputs")
                .and_then(Value::as_array_mut)
            {
                deps.push(Value::String(o.clone()));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failed
            .iter()
            .flat_map(|(_, reasons)| reasons)
            .map(|r| {
                format!(
                    "{}: {}",
                    pyjson::str(&r["message"]),
                    pyjson::str(&r["details"])
                )
            })
            .collect();
        return Ok(Verdict::Rejected {
            error: error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &details.join("\n"),
            ),
            node_errors,
        });
    }
    Ok(Verdict::Accepted {
        outputs: good,
        node_errors,
    })
}

fn invalid_prompt(message: &str, id: &str) -> Verdict {
    Verdict::Rejected {
        error: error("invalid_prompt", message, &format!("Node ID '#{id}'")),
        node_errors: Map::new(),
    }
}

/// `Fault::RejectNextPrompt`: what ComfyUI says when a node's own check fails on an output.
pub(crate) fn injected_rejection(prompt: &Map<String, Value>, output: &str) -> Verdict {
    let details = "injected by comfy-sim (Fault::RejectNextPrompt)";
    let class_type = prompt
        .get(output)
        .and_then(|n| n.get("class_type"))
        .cloned()
        .unwrap_or(Value::Null);
    let input_name = prompt
        .get(output)
        .and_then(|n| n.get("inputs"))
        .and_then(Value::as_object)
        .and_then(|i| i.keys().next().cloned())
        .unwrap_or_default();
    let mut node_errors = Map::new();
    node_errors.insert(
        output.to_owned(),
        json!({
            "errors": [{
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": format!("{input_name} - {details}"),
                "extra_info": {"input_name": input_name},
            }],
            "dependent_outputs": [output],
            "class_type": class_type,
        }),
    );
    Verdict::Rejected {
        error: error(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            &format!("Custom validation failed for node: {input_name} - {details}"),
        ),
        node_errors,
    }
}

type Result2 = (bool, Vec<Value>);

struct Validator<'p, 'c> {
    prompt: &'p mut Map<String, Value>,
    cx: &'c Context<'c>,
    /// ComfyUI's `validated` dict, in insertion order.
    validated: Vec<(String, Result2)>,
    in_progress: Vec<String>,
}

impl Validator<'_, '_> {
    fn set_validated(&mut self, id: &str, result: Result2) {
        match self.validated.iter_mut().find(|(k, _)| k == id) {
            Some((_, r)) => *r = result,
            None => self.validated.push((id.to_owned(), result)),
        }
    }

    fn class_of(&self, id: &str) -> Value {
        self.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn class_str(&self, id: &str) -> String {
        pyjson::str(&self.class_of(id))
    }

    fn validate_inputs(&mut self, id: &str) -> Result<Result2, PyErr> {
        if let Some((_, r)) = self.validated.iter().find(|(k, _)| k == id) {
            return Ok(r.clone());
        }
        // A cycle: ComfyUI rejects it with no reasons attached to any node.
        if self.in_progress.iter().any(|p| p == id) {
            return Ok((false, Vec::new()));
        }
        self.in_progress.push(id.to_owned());
        let result = self.validate_node(id);
        self.in_progress.pop();
        let result = result?;
        self.set_validated(id, result.clone());
        Ok(result)
    }

    fn validate_node(&mut self, id: &str) -> Result<Result2, PyErr> {
        let inputs = match self.prompt.get(id).and_then(|n| n.get("inputs")) {
            Some(Value::Object(inputs)) => inputs.clone(),
            Some(_) => Map::new(),
            None => {
                return Err(PyErr {
                    kind: "KeyError",
                    message: "'inputs'".to_owned(),
                    traceback: vec![TB_INPUTS.to_owned()],
                });
            }
        };
        let class_type = self.class_str(id);
        let mut errors = Vec::new();
        let mut valid = true;
        let mut converted = Vec::new();
        for def in self.cx.catalogue.inputs(&class_type) {
            let Some(val) = inputs.get(&def.name) else {
                if def.required {
                    errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": def.name,
                        "extra_info": {"input_name": def.name},
                    }));
                }
                continue;
            };
            if let Value::Array(link) = val {
                match self.check_link(&def, link)? {
                    LinkCheck::Error(e) => errors.push(e),
                    LinkCheck::Upstream(o_id) => match self.validate_inputs(&o_id) {
                        Ok((true, _)) => {}
                        Ok((false, _)) => valid = false,
                        Err(ex) => {
                            valid = false;
                            let reason = json!({
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": ex.message,
                                "extra_info": {
                                    "input_name": def.name,
                                    "input_config": def.config(),
                                    "exception_message": ex.message,
                                    "exception_type": ex.kind,
                                    "traceback": std::iter::once(TB_INNER.to_owned()).chain(ex.traceback).collect::<Vec<_>>(),
                                    "linked_node": val,
                                },
                            });
                            self.set_validated(&o_id, (false, vec![reason]));
                        }
                    },
                }
                continue;
            }
            match self.check_literal(&class_type, &def, val) {
                Ok(Some(value)) => converted.push((def.name.clone(), value)),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if let Some(node_inputs) = self
            .prompt
            .get_mut(id)
            .and_then(|n| n.get_mut("inputs"))
            .and_then(Value::as_object_mut)
        {
            for (name, value) in converted {
                node_inputs.insert(name, value);
            }
        }
        if errors.is_empty() && valid {
            Ok((true, Vec::new()))
        } else {
            Ok((false, errors))
        }
    }

    fn check_link(&self, def: &InputDef, link: &[Value]) -> Result<LinkCheck, PyErr> {
        let val = Value::Array(link.to_vec());
        if link.len() != 2 {
            return Ok(LinkCheck::Error(json!({
                "type": "bad_linked_input",
                "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                "details": def.name,
                "extra_info": {"input_name": def.name, "input_config": def.config(), "received_value": val},
            })));
        }
        let key_error = |key: &Value| PyErr {
            kind: "KeyError",
            message: pyjson::repr(key),
            traceback: vec![TB_NODE.to_owned()],
        };
        let o_id = match &link[0] {
            Value::String(s) if self.prompt.contains_key(s) => s.clone(),
            Value::Array(_) | Value::Object(_) => {
                return Err(PyErr {
                    kind: "TypeError",
                    message: format!("unhashable type: '{}'", py_type(&link[0])),
                    traceback: vec![TB_NODE.to_owned()],
                });
            }
            other => return Err(key_error(other)),
        };
        let returns = self.cx.catalogue.outputs(&self.class_str(&o_id));
        let index_error = |message: String| PyErr {
            kind: if message.starts_with("tuple index") {
                "IndexError"
            } else {
                "TypeError"
            },
            message,
            traceback: vec![TB_SLOT.to_owned()],
        };
        let slot = match &link[1] {
            Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
            Value::Bool(b) => i64::from(*b),
            other => {
                return Err(index_error(format!(
                    "tuple indices must be integers or slices, not {}",
                    py_type(other)
                )));
            }
        };
        let len = i64::try_from(returns.len()).unwrap_or(i64::MAX);
        let at = if slot < 0 { slot + len } else { slot };
        let Some(received) = usize::try_from(at).ok().and_then(|i| returns.get(i)) else {
            return Err(index_error("tuple index out of range".to_owned()));
        };
        if !type_matches(received, &def.kind) {
            return Ok(LinkCheck::Error(json!({
                "type": "return_type_mismatch",
                "message": "Return type mismatch between linked nodes",
                "details": format!("{}, received_type({}) mismatch input_type({})", def.name, pyjson::str(received), pyjson::str(&def.kind)),
                "extra_info": {
                    "input_name": def.name,
                    "input_config": def.config(),
                    "received_type": received,
                    "linked_node": val,
                },
            })));
        }
        Ok(LinkCheck::Upstream(o_id))
    }

    /// Converts and checks a literal; `Ok(Some(v))` when the converted value differs.
    fn check_literal(
        &self,
        class_type: &str,
        def: &InputDef,
        raw: &Value,
    ) -> Result<Option<Value>, Value> {
        let unwrapped = raw
            .as_object()
            .and_then(|o| o.get("__value__"))
            .unwrap_or(raw);
        let converted = match def.kind_str() {
            Some(kind @ ("INT" | "FLOAT" | "STRING" | "BOOLEAN")) => convert(kind, unwrapped)
                .map_err(|ex| {
                    json!({
                        "type": "invalid_input_type",
                        "message": format!("Failed to convert an input value to a {kind} value"),
                        "details": format!("{}, {}, {ex}", def.name, pyjson::str(unwrapped)),
                        "extra_info": {
                            "input_name": def.name,
                            "input_config": def.config(),
                            "received_value": unwrapped,
                            "exception_message": ex,
                        },
                    })
                })?,
            _ => unwrapped.clone(),
        };
        let changed = (&converted != raw).then(|| converted.clone());
        if lists_input_images(class_type, &def.name) {
            // LoadImage's VALIDATE_INPUTS replaces the list check with a file check.
            let exists = converted
                .as_str()
                .and_then(|name| self.cx.dirs.input_file(name))
                .is_some_and(|p| p.is_file());
            if !exists {
                return Err(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("{} - Invalid image file: {}", def.name, pyjson::str(&converted)),
                    "extra_info": {"input_name": def.name},
                }));
            }
            return Ok(changed);
        }
        let value_error = |kind: &str, message: String| {
            json!({
                "type": kind,
                "message": message,
                "details": def.name,
                "extra_info": {"input_name": def.name, "input_config": def.config(), "received_value": converted},
            })
        };
        if let (Some(min), Some(v)) = (
            def.extra.get("min").and_then(Value::as_f64),
            converted.as_f64(),
        ) && v < min
        {
            return Err(value_error(
                "value_smaller_than_min",
                format!(
                    "Value {} smaller than min of {}",
                    pyjson::str(&converted),
                    pyjson::str(&def.extra["min"])
                ),
            ));
        }
        if let (Some(max), Some(v)) = (
            def.extra.get("max").and_then(Value::as_f64),
            converted.as_f64(),
        ) && v > max
        {
            return Err(value_error(
                "value_bigger_than_max",
                format!(
                    "Value {} bigger than max of {}",
                    pyjson::str(&converted),
                    pyjson::str(&def.extra["max"])
                ),
            ));
        }
        if let Some(options) = options_with_models(def, class_type, self.cx.models)
            && !options.iter().any(|o| py_eq(o, &converted))
        {
            let (list_info, config) = if options.len() > 20 {
                (format!("(list of length {})", options.len()), Value::Null)
            } else {
                (pyjson::repr(&Value::Array(options)), def.config())
            };
            return Err(json!({
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": format!("{}: '{}' not in {list_info}", def.name, pyjson::str(&converted)),
                "extra_info": {"input_name": def.name, "input_config": config, "received_value": converted},
            }));
        }
        Ok(changed)
    }
}

enum LinkCheck {
    Error(Value),
    Upstream(String),
}

/// `validate_node_input`: equal, `*` on either side, or overlapping comma-separated sets.
pub(crate) fn type_matches(received: &Value, input: &Value) -> bool {
    if received == input {
        return true;
    }
    let any = |v: &Value| matches!(v.as_str(), Some("*" | "COMFY_MATCHTYPE_V3"));
    if any(received) || any(input) {
        return true;
    }
    if received.is_array() && input.as_str() == Some("COMBO") {
        return true;
    }
    let (Some(r), Some(i)) = (received.as_str(), input.as_str()) else {
        return false;
    };
    let inputs: Vec<&str> = i.split(',').map(str::trim).collect();
    r.split(',').map(str::trim).any(|t| inputs.contains(&t))
}

/// Python's `int()`, `float()`, `str()`, `bool()` on a JSON value; the error is the
/// exception's message.
fn convert(kind: &str, v: &Value) -> Result<Value, String> {
    match kind {
        "INT" => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            Value::Number(n) => Ok(json!(n.as_f64().unwrap_or(0.0).trunc() as i64)),
            Value::Bool(b) => Ok(json!(i64::from(*b))),
            Value::String(s) => parse_py_int(s).map(|i| json!(i)).ok_or_else(|| {
                format!(
                    "invalid literal for int() with base 10: {}",
                    pyjson::repr_str(s)
                )
            }),
            other => Err(format!(
                "int() argument must be a string, a bytes-like object or a real number, not '{}'",
                py_type(other)
            )),
        },
        "FLOAT" => match v {
            Value::Number(n) => Ok(json!(n.as_f64().unwrap_or(0.0))),
            Value::Bool(b) => Ok(json!(if *b { 1.0 } else { 0.0 })),
            Value::String(s) => s
                .trim()
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| json!(f))
                .ok_or_else(|| {
                    format!("could not convert string to float: {}", pyjson::repr_str(s))
                }),
            other => Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                py_type(other)
            )),
        },
        "STRING" => Ok(Value::String(pyjson::str(v))),
        "BOOLEAN" => Ok(Value::Bool(match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        })),
        _ => Ok(v.clone()),
    }
}

fn parse_py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let valid = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !valid {
        return None;
    }
    let n: i64 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -n } else { n })
}

/// Python's `==` between loaded JSON values: `1 == 1.0 == True`.
fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_match_like_comfyui() {
        assert!(type_matches(&json!("IMAGE"), &json!("IMAGE")));
        assert!(type_matches(&json!("*"), &json!("IMAGE")));
        assert!(type_matches(&json!("INT,FLOAT"), &json!("FLOAT")));
        assert!(!type_matches(&json!("INT"), &json!("IMAGE")));
    }

    #[test]
    fn python_conversions() {
        assert_eq!(convert("INT", &json!(" 12 ")), Ok(json!(12)));
        assert_eq!(convert("INT", &json!(3.7)), Ok(json!(3)));
        assert_eq!(
            convert("INT", &json!("wide")),
            Err("invalid literal for int() with base 10: 'wide'".to_owned())
        );
        assert_eq!(convert("FLOAT", &json!(5)), Ok(json!(5.0)));
        assert_eq!(convert("STRING", &json!(5)), Ok(json!("5")));
    }
}
