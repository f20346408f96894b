//! Resolving a definition's `[inputs.*]` into typed [`WorkflowInput`]s.
//!
//! A bound input (`to = "3.steps"`) takes its type, range, options and default from the
//! node input it is bound to, and may only narrow them: a wider range, an option the node
//! does not accept, or a type the node cannot take is an error at the offending line. This is
//! what makes invariant 2 hold statically for bindings: whatever validates against the input
//! schema is a value the node accepts.

use std::collections::HashSet;
use std::ops::Range;

use serde::Serialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::catalogue::{Catalogue, InputKind, InputSpec, Upload};
use crate::checks::{as_int, check_literal};
use crate::definition::{InputDef, InputType, ModelDecl, Num};
use crate::diagnostic::{Code, Diagnostic};
use crate::graph::{Graph, InputValue, classify};
use crate::schema::JS_SAFE_MAX;
use crate::source::FileId;

/// Where a bound input's value goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Binding {
    pub node: String,
    pub input: String,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.node, self.input)
    }
}

/// A resolved input: its type, constraints and where it goes.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowInput {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: InputType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub multiline: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<WorkflowInput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Vec<WorkflowInput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    /// Where this input is declared, to map job errors back to the definition.
    #[serde(skip)]
    pub span: Range<usize>,
}

impl WorkflowInput {
    fn new(name: &str, ty: InputType, span: Range<usize>) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            title: None,
            description: None,
            required: true,
            default: None,
            bindings: Vec::new(),
            min: None,
            max: None,
            step: None,
            multiple_of: None,
            min_length: None,
            max_length: None,
            pattern: None,
            multiline: false,
            options: None,
            folder: None,
            items: None,
            properties: None,
            min_items: None,
            max_items: None,
            span,
        }
    }

    /// A value of this input's type that a template can be rendered with when no default
    /// exists (checks only; never sent to ComfyUI).
    pub fn sample(&self) -> Value {
        if let Some(d) = &self.default {
            return d.clone();
        }
        match self.ty {
            InputType::String => {
                let n = self.min_length.unwrap_or(1).max(1) as usize;
                let n = self.max_length.map_or(n, |m| n.min(m as usize));
                Value::String("x".repeat(n))
            }
            InputType::Integer | InputType::Number | InputType::Seed => {
                self.min.clone().unwrap_or_else(|| 0.into())
            }
            InputType::Boolean => false.into(),
            InputType::Enum | InputType::Model => self
                .options
                .as_ref()
                .and_then(|o| o.first().cloned())
                .unwrap_or_else(|| "model.safetensors".into()),
            InputType::Image | InputType::Mask => "example.png".into(),
            InputType::Video => "example.mp4".into(),
            InputType::Audio => "example.flac".into(),
            InputType::Array => Value::Array(Vec::new()),
            InputType::Object => Value::Object(
                self.properties
                    .iter()
                    .flatten()
                    .map(|p| (p.name.clone(), p.sample()))
                    .collect(),
            ),
        }
    }
}

/// What resolution needs besides the definition itself.
pub struct Resolve<'a> {
    pub file: FileId,
    pub catalogue: &'a Catalogue,
    /// The graph bindings point into (for templates, rendered with defaults).
    pub graph: Option<&'a Graph>,
    pub models: &'a [ModelDecl],
    /// Whether the graph is a template (unbound inputs are template variables).
    pub template: bool,
}

struct Bound<'a> {
    binding: Binding,
    spec: &'a InputSpec,
    literal: Option<&'a Value>,
    span: Range<usize>,
}

impl Resolve<'_> {
    /// Resolves one input; pushes problems into `out` and returns `None` when the input is
    /// unusable.
    pub fn input(
        &self,
        name: &Spanned<String>,
        def: &InputDef,
        out: &mut Vec<Diagnostic>,
    ) -> Option<WorkflowInput> {
        let errors_before = out.iter().filter(|d| d.is_error()).count();
        let key = name.span();
        let bound = self.bindings(name.get_ref(), def, out);
        let ty = self.infer_type(name, def, &bound, out)?;
        let mut input = WorkflowInput::new(name.get_ref(), ty, key.clone());
        input.title = def.title.clone();
        input.description = def.description.clone();
        input.bindings = bound.iter().map(|b| b.binding.clone()).collect();
        input.multiline = def.multiline.unwrap_or(false);
        if def.to.is_none() && !self.template && ty != InputType::Object {
            out.push(
                Diagnostic::new(Code::InputInvalid, format!("input `{}` is bound to nothing", name.get_ref()))
                    .primary(self.file, key.clone(), "no `to`")
                    .help("add `to = \"NODE.input\"`: the graph is plain JSON, so only bindings can place a value"),
            );
        }

        self.constraints(&mut input, def, &bound, out);

        // Nested shapes, for templates.
        if let Some(items) = &def.items {
            let item_name = Spanned::new(key.clone(), format!("{}[]", name.get_ref()));
            let nested = Resolve {
                graph: None,
                template: true,
                ..*self
            };
            input.items = nested.input(&item_name, items, out).map(Box::new);
        }
        if let Some(props) = &def.properties {
            let nested = Resolve {
                graph: None,
                template: true,
                ..*self
            };
            input.properties = Some(
                props
                    .iter()
                    .filter_map(|(k, d)| {
                        nested.input(&Spanned::new(key.clone(), k.clone()), d, out)
                    })
                    .collect(),
            );
        }
        input.min_items = def.min_items;
        input.max_items = def.max_items;

        // A default cannot be judged against constraints that are themselves wrong.
        if out.iter().filter(|d| d.is_error()).count() == errors_before {
            self.default(&mut input, def, &bound, out);
        }
        let errors_after = out.iter().filter(|d| d.is_error()).count();
        (errors_after == errors_before).then_some(input)
    }

    fn bindings<'g>(
        &'g self,
        name: &str,
        def: &InputDef,
        out: &mut Vec<Diagnostic>,
    ) -> Vec<Bound<'g>> {
        let mut bound = Vec::new();
        let Some(to) = &def.to else { return bound };
        let Some(graph) = self.graph else {
            return bound;
        };
        for target in to.get_ref().spanned(to.span()) {
            let span = target.span();
            let Some((node_id, input_name)) = target.get_ref().rsplit_once('.') else {
                out.push(
                    Diagnostic::new(
                        Code::BadBinding,
                        format!("`{}` is not a binding target", target.get_ref()),
                    )
                    .primary(self.file, span, "expected `NODE.input`")
                    .help("write the node id and the input name, such as `to = \"3.seed\"`"),
                );
                continue;
            };
            let Some(node) = graph.nodes.get(node_id) else {
                let mut d = if self.template {
                    Diagnostic::new(
                        Code::BadBinding,
                        format!("input `{name}` is bound to node `{node_id}`, which the template does not emit when rendered with the defaults"),
                    )
                    .primary(self.file, span, format!("no node `{node_id}` with the defaults"))
                    .help("bind only nodes the template always emits; set values of other nodes through template variables")
                } else {
                    Diagnostic::new(
                        Code::BadBinding,
                        format!("input `{name}` is bound to node `{node_id}`, which the graph does not have"),
                    )
                    .primary(self.file, span, format!("no node `{node_id}`"))
                };
                if !self.template
                    && let Some(s) =
                        crate::catalogue::closest(node_id, graph.nodes.keys().map(String::as_str))
                {
                    d = d.help(format!("did you mean node `{s}`?"));
                }
                out.push(d);
                continue;
            };
            let Some(class) = self.catalogue.get(&node.class_type) else {
                continue;
            };
            let Some(spec) = class.visible_inputs().find(|i| i.name == input_name) else {
                let mut d = Diagnostic::new(
                    Code::BadBinding,
                    format!(
                        "node `{node_id}` ({}) has no input `{input_name}`",
                        class.name
                    ),
                )
                .primary(self.file, span, "no such input");
                d = match crate::catalogue::closest(
                    input_name,
                    class.visible_inputs().map(|i| i.name.as_str()),
                ) {
                    Some(s) => d.help(format!("did you mean `{node_id}.{s}`?")),
                    None => d.help(format!(
                        "`{}` takes: {}",
                        class.name,
                        class
                            .visible_inputs()
                            .map(|i| format!("`{}`", i.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                out.push(d);
                continue;
            };
            if let InputKind::Link { types } = &spec.kind {
                out.push(
                    Diagnostic::new(
                        Code::BadBinding,
                        format!(
                            "`{node_id}.{input_name}` takes a link from an output of type {}, not a value",
                            types.join(" or ")
                        ),
                    )
                    .primary(self.file, span, "cannot bind a value here"),
                );
                continue;
            }
            let current = node.inputs.get(input_name);
            if let Some(InputValue::Link { node: src, .. }) = current.map(classify) {
                out.push(
                    Diagnostic::new(
                        Code::BadBinding,
                        format!("`{node_id}.{input_name}` is fed by a link from node `{src}`; binding it would cut that link"),
                    )
                    .primary(self.file, span, "linked input")
                    .help(format!("bind the input of node `{src}` that produces this value instead")),
                );
                continue;
            }
            bound.push(Bound {
                binding: Binding {
                    node: node_id.to_owned(),
                    input: input_name.to_owned(),
                },
                spec,
                literal: current,
                span,
            });
        }
        bound
    }

    fn infer_type(
        &self,
        name: &Spanned<String>,
        def: &InputDef,
        bound: &[Bound<'_>],
        out: &mut Vec<Diagnostic>,
    ) -> Option<InputType> {
        let declared = def.ty.as_ref().map(|t| *t.get_ref());
        for b in bound {
            let natural = natural_type(b.spec);
            if let Some(d) = declared
                && !type_fits(d, b.spec)
            {
                let ty_span = def
                    .ty
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_else(|| name.span());
                out.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        format!(
                            "input `{}` is declared `{}`, but `{}` takes {}",
                            name.get_ref(),
                            d.as_str(),
                            b.binding,
                            describe_kind(b.spec)
                        ),
                    )
                    .primary(self.file, ty_span, format!("`{}` here", d.as_str()))
                    .secondary(
                        self.file,
                        b.span.clone(),
                        format!("bound to {} input", natural.with_article()),
                    )
                    .help(format!(
                        "use `type = \"{}\"`, or leave `type` out to infer it",
                        natural.as_str()
                    )),
                );
                return None;
            }
        }
        if let Some(d) = declared {
            return Some(d);
        }
        if let Some(first) = bound.first() {
            let ty = natural_type(first.spec);
            for b in &bound[1..] {
                if natural_type(b.spec) != ty {
                    out.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!(
                                "input `{}` is bound to inputs of different types",
                                name.get_ref()
                            ),
                        )
                        .primary(
                            self.file,
                            b.span.clone(),
                            format!("{} input", natural_type(b.spec).with_article()),
                        )
                        .secondary(
                            self.file,
                            first.span.clone(),
                            format!("{} input", ty.with_article()),
                        ),
                    );
                    return None;
                }
            }
            return Some(ty);
        }
        if def.to.is_some() {
            // Bindings failed; their errors say why.
            return None;
        }
        let inferred = def.default.as_ref().and_then(|d| match d.get_ref() {
            toml::Value::String(_) => Some(InputType::String),
            toml::Value::Integer(_) => Some(InputType::Integer),
            toml::Value::Float(_) => Some(InputType::Number),
            toml::Value::Boolean(_) => Some(InputType::Boolean),
            toml::Value::Array(_) => Some(InputType::Array),
            toml::Value::Table(_) => Some(InputType::Object),
            toml::Value::Datetime(_) => None,
        });
        if inferred.is_none() {
            if def.properties.is_some() {
                return Some(InputType::Object);
            }
            out.push(
                Diagnostic::new(Code::InputInvalid, format!("input `{}` has no type", name.get_ref()))
                    .primary(self.file, name.span(), "type unknown")
                    .help("give it a `type` (string, integer, number, boolean, enum, seed, image, model, array, ...) or a `default`"),
            );
        }
        inferred
    }

    fn constraints(
        &self,
        input: &mut WorkflowInput,
        def: &InputDef,
        bound: &[Bound<'_>],
        out: &mut Vec<Diagnostic>,
    ) {
        let numeric = matches!(
            input.ty,
            InputType::Integer | InputType::Number | InputType::Seed
        );
        // The node's own range: the intersection over every binding.
        let mut node_min: Option<(f64, Value, &Bound<'_>)> = None;
        let mut node_max: Option<(f64, Value, &Bound<'_>)> = None;
        for b in bound {
            let (lo, hi) = match &b.spec.kind {
                InputKind::Int { min, max, .. } => (min.map(int_value), max.map(int_value)),
                InputKind::Float { min, max, .. } => {
                    (min.and_then(float_value), max.and_then(float_value))
                }
                _ => (None, None),
            };
            if let Some(lo) = lo.and_then(|v| v.as_f64().map(|f| (f, v)))
                && node_min.as_ref().is_none_or(|(m, _, _)| lo.0 > *m)
            {
                node_min = Some((lo.0, lo.1, b));
            }
            if let Some(hi) = hi.and_then(|v| v.as_f64().map(|f| (f, v)))
                && node_max.as_ref().is_none_or(|(m, _, _)| hi.0 < *m)
            {
                node_max = Some((hi.0, hi.1, b));
            }
        }
        if input.ty == InputType::Seed && node_min.is_none() {
            input.min = Some(0.into());
        }
        input.min = node_min
            .as_ref()
            .map(|(_, v, _)| v.clone())
            .or(input.min.take());
        input.max = node_max.as_ref().map(|(_, v, _)| v.clone());

        let mut narrow = |field: &str,
                          given: &Option<Spanned<Num>>,
                          node: &Option<(f64, Value, &Bound<'_>)>,
                          lower: bool|
         -> Option<Value> {
            let g = given.as_ref()?;
            if !numeric {
                out.push(
                    Diagnostic::new(
                        Code::InputInvalid,
                        format!(
                            "`{field}` applies to numbers, not to {} input",
                            input.ty.with_article()
                        ),
                    )
                    .primary(self.file, g.span(), "not a number input"),
                );
                return None;
            }
            let v = g.get_ref().as_f64();
            if let Some((m, mv, b)) = node {
                let widened = if lower { v < *m } else { v > *m };
                if widened {
                    out.push(
                        Diagnostic::new(
                            Code::RangeWidened,
                            format!(
                                "`{field} = {}` widens the range of `{}`, whose {} is {mv}",
                                g.get_ref().as_json(),
                                b.binding,
                                if lower { "minimum" } else { "maximum" }
                            ),
                        )
                        .primary(self.file, g.span(), format!("{} than the node allows", if lower { "lower" } else { "higher" }))
                        .secondary(self.file, b.span.clone(), "bound here")
                        .help("an input may only narrow the node's range; ComfyUI would reject the value"),
                    );
                    return None;
                }
            }
            if input.ty != InputType::Number
                && matches!(g.get_ref(), Num::Float(f) if f.fract() != 0.0)
            {
                out.push(
                    Diagnostic::new(
                        Code::InputInvalid,
                        format!("`{field}` of an integer input must be a whole number"),
                    )
                    .primary(self.file, g.span(), "not an integer"),
                );
                return None;
            }
            Some(g.get_ref().as_json())
        };
        if let Some(v) = narrow("min", &def.min, &node_min, true) {
            input.min = Some(v);
        }
        if let Some(v) = narrow("max", &def.max, &node_max, false) {
            input.max = Some(v);
        }
        // A browser form would round a larger seed to another one without a word.
        if input.ty == InputType::Seed
            && input.max.as_ref().is_none_or(|m| {
                m.as_u64().is_some_and(|m| m > JS_SAFE_MAX)
                    || m.as_f64().is_some_and(|m| m > JS_SAFE_MAX as f64)
            })
        {
            input.max = Some(JS_SAFE_MAX.into());
        }
        if let (Some(lo), Some(hi)) = (&def.min, &def.max)
            && lo.get_ref().as_f64() > hi.get_ref().as_f64()
        {
            out.push(
                Diagnostic::new(Code::InputInvalid, "`min` is greater than `max`")
                    .primary(self.file, lo.span(), "min")
                    .secondary(self.file, hi.span(), "max"),
            );
        }
        for (field, v) in [("step", &def.step), ("multiple_of", &def.multiple_of)] {
            if let Some(v) = v {
                if !numeric {
                    out.push(
                        Diagnostic::new(
                            Code::InputInvalid,
                            format!(
                                "`{field}` applies to numbers, not to {} input",
                                input.ty.with_article()
                            ),
                        )
                        .primary(self.file, v.span(), "not a number input"),
                    );
                } else if v.get_ref().as_f64() <= 0.0 {
                    out.push(
                        Diagnostic::new(Code::InputInvalid, format!("`{field}` must be positive"))
                            .primary(self.file, v.span(), "not positive"),
                    );
                }
            }
        }
        input.step = def
            .step
            .as_ref()
            .map(|s| s.get_ref().as_json())
            .or_else(|| {
                bound.first().and_then(|b| match &b.spec.kind {
                    InputKind::Int { step: Some(s), .. } if *s > 1 => Some(int_value(*s)),
                    InputKind::Float { step: Some(s), .. } => float_value(*s),
                    _ => None,
                })
            });
        input.multiple_of = def.multiple_of.as_ref().map(|s| s.get_ref().as_json());

        // Strings.
        let stringy = input.ty == InputType::String;
        for (field, span) in [
            ("min_length", def.min_length.as_ref().map(Spanned::span)),
            ("max_length", def.max_length.as_ref().map(Spanned::span)),
            ("pattern", def.pattern.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span
                && !stringy
            {
                out.push(
                    Diagnostic::new(
                        Code::InputInvalid,
                        format!(
                            "`{field}` applies to strings, not to {} input",
                            input.ty.with_article()
                        ),
                    )
                    .primary(self.file, span, "not a string input"),
                );
            }
        }
        input.min_length = def.min_length.as_ref().map(|s| *s.get_ref());
        input.max_length = def.max_length.as_ref().map(|s| *s.get_ref());
        if let Some(p) = &def.pattern {
            match jsonschema::validator_for(&serde_json::json!({"pattern": p.get_ref()})) {
                Ok(_) => input.pattern = Some(p.get_ref().clone()),
                Err(e) => out.push(
                    Diagnostic::new(
                        Code::InputInvalid,
                        format!("`pattern` is not a valid regular expression: {e}"),
                    )
                    .primary(self.file, p.span(), "invalid pattern"),
                ),
            }
        }
        if !input.multiline {
            input.multiline = bound.iter().any(|b| {
                matches!(
                    b.spec.kind,
                    InputKind::String {
                        multiline: true,
                        ..
                    }
                )
            });
        }

        // Options: the node's list (intersected), narrowed by the definition's.
        let mut node_options: Option<Vec<Value>> = None;
        for b in bound {
            if let InputKind::Combo { options, .. } = &b.spec.kind {
                node_options = Some(match node_options {
                    None => options.clone(),
                    Some(prev) => prev.into_iter().filter(|o| options.contains(o)).collect(),
                });
            }
        }
        if input.ty == InputType::Model {
            input.folder = def
                .folder
                .as_ref()
                .map(|f| f.get_ref().clone())
                .or_else(|| bound.iter().find_map(|b| b.spec.model_folder.clone()));
            if input.folder.is_none() {
                out.push(
                    Diagnostic::new(
                        Code::InputInvalid,
                        format!("model input `{}` needs a `folder`", input.name),
                    )
                    .primary(self.file, input.span.clone(), "folder unknown")
                    .help("add `folder = \"checkpoints\"` (or `loras`, `vae`, ...)"),
                );
            }
            // Models declared in comfyc.toml count as available everywhere.
            let declared = self
                .models
                .iter()
                .filter(|m| Some(&m.folder) == input.folder.as_ref())
                .map(|m| Value::String(m.name.clone()));
            let mut all = node_options.clone().unwrap_or_default();
            for d in declared {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
            node_options = Some(all);
        }
        match &def.options {
            Some(given) => {
                if !matches!(input.ty, InputType::Enum | InputType::Model) {
                    out.push(
                        Diagnostic::new(
                            Code::InputInvalid,
                            format!(
                                "`options` applies to enum and model inputs, not to {} input",
                                input.ty.with_article()
                            ),
                        )
                        .primary(self.file, given.span(), "not an enum"),
                    );
                }
                let values: Vec<Value> = given
                    .get_ref()
                    .iter()
                    .map(|v| toml_to_json(v.get_ref()))
                    .collect();
                if values.is_empty() {
                    out.push(
                        Diagnostic::new(
                            Code::InputInvalid,
                            "`options` is empty, so no value would be accepted",
                        )
                        .primary(self.file, given.span(), "empty"),
                    );
                }
                if let Some(allowed) = &node_options
                    && (!allowed.is_empty() || input.ty != InputType::Model)
                {
                    for (v, item) in values.iter().zip(given.get_ref()) {
                        if !allowed.contains(v) {
                            let b = bound.first();
                            let mut d = Diagnostic::new(
                                Code::OptionNotAccepted,
                                format!(
                                    "option {v} is not accepted by {}",
                                    b.map_or("the node".to_owned(), |b| format!("`{}`", b.binding))
                                ),
                            )
                            .primary(
                                self.file,
                                item.span(),
                                "not one of the node's options",
                            );
                            if let Some(b) = b {
                                d = d.secondary(self.file, b.span.clone(), "bound here");
                            }
                            let strs: Vec<&str> =
                                allowed.iter().filter_map(Value::as_str).collect();
                            d = d.help(
                                match v.as_str().and_then(|s| {
                                    crate::catalogue::closest(s, strs.iter().copied())
                                }) {
                                    Some(s) => format!(
                                        "did you mean \"{s}\"? the node accepts: {}",
                                        crate::checks::preview(allowed)
                                    ),
                                    None => format!(
                                        "the node accepts: {}",
                                        crate::checks::preview(allowed)
                                    ),
                                },
                            );
                            out.push(d);
                        }
                    }
                }
                input.options = Some(values);
            }
            None => {
                if input.ty == InputType::Enum && node_options.is_none() {
                    out.push(
                        Diagnostic::new(
                            Code::InputInvalid,
                            format!("enum input `{}` has no `options`", input.name),
                        )
                        .primary(self.file, input.span.clone(), "options unknown")
                        .help("list the allowed values: `options = [\"a\", \"b\"]`"),
                    );
                }
                input.options =
                    node_options.filter(|o| !o.is_empty() || input.ty == InputType::Enum);
            }
        }
        if def.folder.is_some()
            && input.ty != InputType::Model
            && let Some(f) = &def.folder
        {
            out.push(
                Diagnostic::new(Code::InputInvalid, "`folder` applies to model inputs").primary(
                    self.file,
                    f.span(),
                    "not a model input",
                ),
            );
        }
    }

    /// A bound node input missing from the graph while the node has a similar, unknown one
    /// (`sampler_nme` for `sampler_name`): the value meant as the default is ignored, so the
    /// workflow input silently became required. Says so at the input.
    fn misspelt_graph_input(
        &self,
        input: &WorkflowInput,
        bound: &[Bound<'_>],
        out: &mut Vec<Diagnostic>,
    ) {
        let Some(graph) = self.graph else {
            return;
        };
        for b in bound.iter().filter(|b| b.literal.is_none()) {
            let Some(node) = graph.nodes.get(&b.binding.node) else {
                continue;
            };
            let class = self.catalogue.get(&node.class_type);
            let unknown: Vec<&str> = node
                .inputs
                .keys()
                .filter(|k| class.is_some_and(|c| c.input(k).is_none()))
                .map(String::as_str)
                .collect();
            let lower = b.spec.name.to_lowercase();
            let Some(typo) = crate::catalogue::closest(&b.spec.name, unknown.iter().copied())
                .or_else(|| {
                    unknown.iter().copied().find(|k| {
                        let k = k.to_lowercase();
                        k.contains(&lower) || lower.contains(&k)
                    })
                })
            else {
                continue;
            };
            out.push(
                Diagnostic::new(
                    Code::UnknownInput,
                    format!(
                        "input `{}` has no default, so every job must give it: node `{}` has no `{}` in the graph, only `{typo}`, which ComfyUI ignores",
                        input.name, b.binding.node, b.spec.name
                    ),
                )
                .primary(self.file, input.span.clone(), "now required")
                .help(format!(
                    "rename `{typo}` to `{}` in the graph, or give `{}` a `default`",
                    b.spec.name, input.name
                )),
            );
            return;
        }
    }

    fn default(
        &self,
        input: &mut WorkflowInput,
        def: &InputDef,
        bound: &[Bound<'_>],
        out: &mut Vec<Diagnostic>,
    ) {
        let (value, span, from_graph) = match &def.default {
            Some(d) => (Some(toml_to_json(d.get_ref())), d.span(), false),
            // A seed taken from the graph would make every job use the same seed, and a file
            // name in the graph names a file on one server, not one a job provides.
            None if input.ty == InputType::Seed || input.ty.is_file() => {
                (None, input.span.clone(), false)
            }
            None => match bound
                .first()
                .and_then(|b| b.literal.map(|l| (l, b.span.clone())))
            {
                Some((l, span)) => (Some(l.clone()), span, true),
                None => (None, input.span.clone(), false),
            },
        };
        input.required = def
            .required
            .unwrap_or(value.is_none() && input.ty != InputType::Seed);
        let Some(value) = value else {
            if def.default.is_none() && def.required.is_none() {
                self.misspelt_graph_input(input, bound, out);
            }
            if def.required == Some(false)
                && input.ty != InputType::Seed
                && !bound.is_empty()
                && bound
                    .iter()
                    .any(|b| b.literal.is_none() && b.spec.required())
            {
                out.push(
                    Diagnostic::new(
                        Code::InvalidDefault,
                        format!(
                            "optional input `{}` has no default, and the node needs a value",
                            input.name
                        ),
                    )
                    .primary(self.file, input.span.clone(), "no default")
                    .help("give it a `default`, or make it `required = true`"),
                );
            }
            return;
        };
        let origin = if from_graph {
            " (taken from the graph)"
        } else {
            ""
        };
        let schema = crate::schema::input_schema(input);
        // Compiling a validator costs more than the rest of a definition's check; most
        // defaults are plainly valid, and only the others need its exact message.
        let problems: Vec<String> = if crate::schema::surely_valid(&schema, &value) {
            Vec::new()
        } else {
            match jsonschema::validator_for(&schema) {
                Ok(v) => v.iter_errors(&value).map(|e| e.to_string()).collect(),
                Err(_) => Vec::new(),
            }
        };
        if let Some(p) = problems.first() {
            out.push(
                Diagnostic::new(
                    Code::InvalidDefault,
                    format!(
                        "the default of input `{}`{origin} is invalid: {p}",
                        input.name
                    ),
                )
                .primary(self.file, span.clone(), "invalid default"),
            );
            return;
        }
        for b in bound {
            if let Some(p) = check_literal(b.spec, &value, self.models) {
                let error = p.severity == crate::diagnostic::Severity::Error;
                out.push(p.into_diagnostic(
                    format!(
                        "the default of input `{}`{origin}, bound to `{}`,",
                        input.name, b.binding
                    ),
                    self.file,
                    span.clone(),
                ));
                if error {
                    return;
                }
            }
        }
        input.default = Some(value);
    }
}

/// Bindings that more than one input claims.
pub fn binding_conflicts(
    file: FileId,
    inputs: &[WorkflowInput],
    defs: &[(Spanned<String>, &InputDef)],
) -> Vec<Diagnostic> {
    let mut seen: std::collections::HashMap<&Binding, &str> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for input in inputs {
        let mut mine: HashSet<&Binding> = HashSet::new();
        for b in &input.bindings {
            if !mine.insert(b) {
                continue;
            }
            if let Some(other) = seen.insert(b, &input.name) {
                let span_of = |name: &str| {
                    defs.iter()
                        .find(|(k, _)| k.get_ref() == name)
                        .map(|(k, _)| k.span())
                        .unwrap_or(0..0)
                };
                out.push(
                    Diagnostic::new(
                        Code::BindingConflict,
                        format!("inputs `{other}` and `{}` both set `{b}`", input.name),
                    )
                    .primary(file, span_of(&input.name), format!("sets `{b}`"))
                    .secondary(
                        file,
                        span_of(other),
                        format!("also sets `{b}`"),
                    ),
                );
            }
        }
    }
    out
}

/// The input type a node input naturally has.
pub fn natural_type(spec: &InputSpec) -> InputType {
    match &spec.kind {
        InputKind::Int { .. } if spec.is_seed() => InputType::Seed,
        InputKind::Int { .. } => InputType::Integer,
        InputKind::Float { .. } => InputType::Number,
        InputKind::String { .. } => InputType::String,
        InputKind::Boolean { .. } => InputType::Boolean,
        InputKind::Combo { .. } => match spec.upload {
            Some(Upload::Image) if spec.name.contains("mask") => InputType::Mask,
            Some(Upload::Image) => InputType::Image,
            Some(Upload::Video) => InputType::Video,
            Some(Upload::Audio) => InputType::Audio,
            None if spec.model_folder.is_some() => InputType::Model,
            None => InputType::Enum,
        },
        InputKind::Link { .. } | InputKind::Hidden { .. } => InputType::Object,
    }
}

fn type_fits(ty: InputType, spec: &InputSpec) -> bool {
    match &spec.kind {
        InputKind::Int { .. } => matches!(ty, InputType::Integer | InputType::Seed),
        InputKind::Float { .. } => matches!(ty, InputType::Number | InputType::Integer),
        InputKind::String { .. } => matches!(ty, InputType::String),
        InputKind::Boolean { .. } => matches!(ty, InputType::Boolean),
        InputKind::Combo { .. } => match ty {
            InputType::Enum | InputType::Model => true,
            t if t.is_file() => spec.upload.is_some(),
            _ => false,
        },
        InputKind::Link { .. } | InputKind::Hidden { .. } => false,
    }
}

fn describe_kind(spec: &InputSpec) -> String {
    match &spec.kind {
        InputKind::Int { .. } => "an integer".into(),
        InputKind::Float { .. } => "a number".into(),
        InputKind::String { .. } => "a string".into(),
        InputKind::Boolean { .. } => "a boolean".into(),
        InputKind::Combo { .. } => format!(
            "one of its options ({} input)",
            natural_type(spec).with_article()
        ),
        InputKind::Link { types } => format!("a link of type {}", types.join("/")),
        InputKind::Hidden { what } => format!("the hidden value {what}"),
    }
}

fn int_value(i: i128) -> Value {
    if let Ok(v) = i64::try_from(i) {
        v.into()
    } else if let Ok(v) = u64::try_from(i) {
        v.into()
    } else {
        (i as f64).into()
    }
}

fn float_value(f: f64) -> Option<Value> {
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// TOML values as JSON (datetimes become strings).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => float_value(*f).unwrap_or(Value::Null),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// Whether `v` is a whole number (for integer-typed inputs).
pub fn is_integral(v: &Value) -> bool {
    as_int(v).is_some()
}
