//! Turning a job's inputs into the API graph ComfyUI runs.
//!
//! 1. [`Workflow::resolve`] validates the inputs against the workflow's JSON Schema (each
//!    problem names its input), fills in defaults, and fills absent seeds from a caller-given
//!    source (the library has no randomness of its own, so callers record what they picked).
//! 2. [`Workflow::render`] renders the template (if any) with the resolved values and writes
//!    each bound value into its node input.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::{GraphSource, Workflow, apply_bindings};
use crate::definition::InputType;
use crate::diagnostic::{Code, Diagnostic};
use crate::inputs::WorkflowInput;
use crate::template;

/// Why a seed above 2^53 − 1 is refused, and what to do instead.
const SEED_HELP: &str = "seeds stop at 2^53 - 1 = 9007199254740991, the largest whole number a browser keeps exact, so a seed typed into a form runs as typed; pick a seed in range (or leave it out for a random one)";

/// A problem with a job's inputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputError {
    /// The workflow input it concerns, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// JSON pointer into the job's `inputs` (`/loras/0/strength_model`).
    pub pointer: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl InputError {
    /// As a diagnostic without labels (callers with the job file add them).
    pub fn to_diagnostic(&self) -> Diagnostic {
        let mut d = Diagnostic::new(Code::JobInput, self.message.clone());
        d.help = self.help.clone();
        d
    }
}

/// Inputs after validation, defaults and seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    /// Every input that has a value, in the definition's order.
    pub values: Map<String, Value>,
    /// Seed inputs that were absent and got a picked value.
    pub picked_seeds: Vec<String>,
}

impl Workflow {
    /// Validates job inputs against the schema; every problem, each naming its input.
    pub fn validate(&self, inputs: &Map<String, Value>) -> Vec<InputError> {
        // Compiling the validator costs more than a render; plainly valid inputs need none.
        if crate::schema::surely_valid_inputs(&self.schema, inputs) {
            return Vec::new();
        }
        let instance = Value::Object(inputs.clone());
        let validator = match self
            .validator
            .get_or_init(|| jsonschema::validator_for(&self.schema).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                return vec![InputError {
                    message: format!("the input schema of `{}` does not compile: {e}", self.name),
                    input: None,
                    pointer: String::new(),
                    help: None,
                }];
            }
        };
        validator
            .iter_errors(&instance)
            .flat_map(|e| {
                let pointer = e.instance_path().as_str().to_owned();
                let input = pointer
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(unescape);
                match e.kind() {
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }
                        if pointer.is_empty() =>
                    {
                        unexpected
                            .iter()
                            .map(|name| {
                                let help = crate::catalogue::closest(
                                    name,
                                    self.inputs.iter().map(|i| i.name.as_str()),
                                )
                                .map(|s| format!("did you mean `{s}`?"))
                                .or_else(|| {
                                    Some(format!(
                                        "`{}` takes: {}",
                                        self.id(),
                                        self.inputs
                                            .iter()
                                            .map(|i| format!("`{}`", i.name))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ))
                                });
                                InputError {
                                    input: Some(name.clone()),
                                    pointer: format!("/{}", crate::json_spans::escape_token(name)),
                                    message: format!(
                                        "workflow `{}` has no input `{name}`",
                                        self.id()
                                    ),
                                    help,
                                }
                            })
                            .collect::<Vec<_>>()
                    }
                    jsonschema::error::ValidationErrorKind::Required { property } => {
                        let name = property
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| property.to_string());
                        vec![InputError {
                            pointer: if pointer.is_empty() {
                                format!("/{}", crate::json_spans::escape_token(&name))
                            } else {
                                pointer.clone()
                            },
                            message: if pointer.is_empty() {
                                format!("input `{name}` is required")
                            } else {
                                format!(
                                    "input `{}`: field `{name}` is required",
                                    input.clone().unwrap_or_default()
                                )
                            },
                            input: input.clone().or(Some(name)),
                            help: None,
                        }]
                    }
                    kind => vec![InputError {
                        message: match &input {
                            Some(name) => {
                                format!("input `{name}`{}: {}", sub_path(&pointer), describe(&e))
                            }
                            None => describe(&e),
                        },
                        help: match kind {
                            jsonschema::error::ValidationErrorKind::Maximum { limit }
                                if limit.as_u64() == Some(crate::schema::JS_SAFE_MAX)
                                    && input
                                        .as_deref()
                                        .and_then(|i| self.input(i))
                                        .is_some_and(|i| {
                                            i.ty == InputType::Seed && sub_path(&pointer).is_empty()
                                        }) =>
                            {
                                Some(SEED_HELP.to_owned())
                            }
                            _ => None,
                        },
                        input,
                        pointer,
                    }],
                }
            })
            .collect()
    }

    /// Validates, fills defaults, and gives absent seeds a value from `pick_seed`.
    pub fn resolve(
        &self,
        inputs: &Map<String, Value>,
        pick_seed: &mut dyn FnMut() -> u64,
    ) -> Result<Resolved, Vec<InputError>> {
        let errors = self.validate(inputs);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut values = Map::new();
        let mut picked_seeds = Vec::new();
        for input in &self.inputs {
            if let Some(v) = inputs.get(&input.name).or(input.default.as_ref()) {
                let mut v = v.clone();
                fill_defaults(input, &mut v);
                values.insert(input.name.clone(), v);
            } else if input.ty == InputType::Seed {
                let max = input
                    .max
                    .as_ref()
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let min = input.min.as_ref().and_then(Value::as_u64).unwrap_or(0);
                let span = max.saturating_sub(min);
                let raw = pick_seed();
                let seed = if span == u64::MAX {
                    raw
                } else {
                    min + raw % (span + 1)
                };
                values.insert(input.name.clone(), seed.into());
                picked_seeds.push(input.name.clone());
            }
        }
        Ok(Resolved {
            values,
            picked_seeds,
        })
    }

    /// The API graph (the node map) for resolved values.
    pub fn render(&self, values: &Map<String, Value>) -> Result<Value, InputError> {
        let mut graph = match &self.source {
            GraphSource::Api(g) => g.clone(),
            GraphSource::Template(t) => {
                let mut ctx = values.clone();
                // Variables a job left out still exist for the template, as null.
                for i in &self.inputs {
                    if i.bindings.is_empty() {
                        ctx.entry(i.name.clone()).or_insert(Value::Null);
                    }
                }
                let text = t.render(&ctx).map_err(|e| InputError {
                    input: None,
                    pointer: String::new(),
                    message: format!(
                        "the template `{}` failed: {}",
                        e.template.unwrap_or_default(),
                        e.message
                    ),
                    help: None,
                })?;
                let graph = serde_json::from_str::<Value>(&text).map_err(|e| InputError {
                    input: None,
                    pointer: String::new(),
                    message: format!("the template rendered invalid JSON: {e}"),
                    help: None,
                })?;
                self.check_text_stays_text(t, &ctx, &graph)?;
                graph
            }
        };
        apply_bindings(&mut graph, &self.inputs, values);
        Ok(graph)
    }

    /// Renders again with every free-text value marked (see [`template::mark_text`]) and
    /// insists the graph has the same shape: whatever a template does with escaping, no
    /// input's text may add or change anything but the strings it was put in.
    fn check_text_stays_text(
        &self,
        t: &template::TemplateSet,
        ctx: &Map<String, Value>,
        graph: &Value,
    ) -> Result<(), InputError> {
        let marked = mark_free_text(&self.inputs, ctx);
        if &marked == ctx {
            return Ok(());
        }
        let shape = t
            .render(&marked)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        let problem = match &shape {
            Some(shape) => template::same_shape(shape, graph).err(),
            None => Some("/".to_owned()),
        };
        match problem {
            None => Ok(()),
            Some(at) => Err(InputError {
                input: None,
                pointer: String::new(),
                message: format!(
                    "the text of an input changed the graph's structure (at `{at}`), so the graph was not rendered"
                ),
                help: Some(
                    "the template lets text out of its JSON string (for example `replace` on escaped output); keep every `{{ value }}` a JSON literal".into(),
                ),
            }),
        }
    }

    /// Every input a graph node takes from this workflow, by `(node, input)`: used to map
    /// ComfyUI's `node_errors` back to the definition.
    pub fn input_for(&self, node: &str, node_input: &str) -> Option<&str> {
        self.inputs
            .iter()
            .find(|i| {
                i.bindings
                    .iter()
                    .any(|b| b.node == node && b.input == node_input)
            })
            .map(|i| i.name.as_str())
    }
}

/// `ctx` with the free text of every input replaced by [`template::mark_text`]: strings of
/// string and file inputs, and strings inside arrays and objects that are not enum or model
/// values (those come from a fixed list).
pub(crate) fn mark_free_text(
    inputs: &[WorkflowInput],
    ctx: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = ctx.clone();
    for (k, v) in out.iter_mut() {
        map_free_text(
            inputs.iter().find(|i| &i.name == k),
            v,
            &template::mark_text,
        );
    }
    out
}

/// Replaces every free-text string of `v` (a value of `input`) with `f` of it.
pub(crate) fn map_free_text(
    input: Option<&WorkflowInput>,
    v: &mut Value,
    f: &dyn Fn(&str) -> String,
) {
    match v {
        Value::String(s)
            if !input.is_some_and(|i| matches!(i.ty, InputType::Enum | InputType::Model)) =>
        {
            *s = f(s);
        }
        Value::Array(items) => {
            let item = input.and_then(|i| i.items.as_deref());
            for x in items {
                map_free_text(item, x, f);
            }
        }
        Value::Object(fields) => {
            for (k, x) in fields.iter_mut() {
                let p = input
                    .and_then(|i| i.properties.as_ref())
                    .and_then(|ps| ps.iter().find(|p| &p.name == k));
                map_free_text(p, x, f);
            }
        }
        _ => {}
    }
}

/// Fills defaults of object fields, also inside arrays, so templates see every field.
fn fill_defaults(input: &WorkflowInput, value: &mut Value) {
    match value {
        Value::Array(items) => {
            if let Some(item) = &input.items {
                for v in items {
                    fill_defaults(item, v);
                }
            }
        }
        Value::Object(fields) => {
            for p in input.properties.iter().flatten() {
                match fields.get_mut(&p.name) {
                    Some(v) => fill_defaults(p, v),
                    None => {
                        if let Some(d) = &p.default {
                            fields.insert(p.name.clone(), d.clone());
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The error with its value, or with "value" in its place when the value is long.
fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    if e.instance().to_string().chars().count() > 80 {
        e.masked().to_string()
    } else {
        e.to_string()
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn sub_path(pointer: &str) -> String {
    let mut parts = pointer.trim_start_matches('/').splitn(2, '/');
    parts.next();
    match parts.next() {
        Some(rest) => format!(
            " (at `{}`)",
            rest.split('/').map(unescape).collect::<Vec<_>>().join(".")
        ),
        None => String::new(),
    }
}
