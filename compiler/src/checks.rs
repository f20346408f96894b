//! Checks of an API graph: structure, the node catalogue, and lints.
//!
//! Every check pushes into one `Vec<Diagnostic>` and moves on, so a user sees all problems of
//! a graph at once. Each error lines up with the error ComfyUI itself would answer for the
//! same graph (see [`Code::comfy_error_type`]), so what passes here passes `POST /prompt`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde_json::Value;

use crate::catalogue::{Catalogue, InputKind, InputSpec, NodeClass};
use crate::definition::ModelDecl;
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::graph::{Graph, InputValue, classify, kind_of};
use crate::json_spans::{JsonSpans, pointer};
use crate::source::FileId;

/// Everything the graph checks need to know.
pub struct GraphCheck<'a> {
    pub graph: &'a Graph,
    pub spans: &'a JsonSpans,
    /// JSON pointer of the node map inside the document (`""`, or `"/prompt"`).
    pub base: &'a str,
    pub file: FileId,
    pub catalogue: &'a Catalogue,
    /// `(node, input)` pairs a workflow input sets: their literals are placeholders.
    pub bound: &'a HashSet<(String, String)>,
    pub models: &'a [ModelDecl],
}

impl GraphCheck<'_> {
    fn node_key(&self, id: &str) -> Range<usize> {
        self.spans
            .key(&format!("{}{}", self.base, pointer([id])))
            .unwrap_or(0..0)
    }

    fn value_span(&self, tokens: &[&str]) -> Range<usize> {
        self.spans
            .nearest(&format!("{}{}", self.base, pointer(tokens.iter().copied())))
    }

    fn input_key(&self, id: &str, input: &str) -> Range<usize> {
        let p = format!("{}{}", self.base, pointer([id, "inputs", input]));
        self.spans.key(&p).unwrap_or_else(|| self.spans.nearest(&p))
    }

    /// Runs every check and returns what they found.
    pub fn run(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        self.duplicates(&mut out);
        // Where a link is malformed, what depends on what is a guess: keep every error then.
        let reached = if self.links_unreadable() {
            None
        } else {
            self.reached()
        };
        for (id, node) in &self.graph.nodes {
            let Some(class) = self.catalogue.get(&node.class_type) else {
                let mut d = Diagnostic::new(
                    Code::UnknownClass,
                    format!(
                        "node `{id}` has class `{}`, which the node catalogue does not have",
                        node.class_type
                    ),
                )
                .primary(
                    self.file,
                    self.value_span(&[id, "class_type"]),
                    "unknown node class",
                );
                d = match self.catalogue.similar(&node.class_type) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(
                        "install the custom node that provides it, then run `comfyc nodes pull` to refresh the catalogue",
                    ),
                };
                out.push(d);
                continue;
            };
            let before = out.len();
            if class.api_node {
                out.push(
                    Diagnostic::new(
                        Code::PartnerNode,
                        format!(
                            "node `{id}` ({}) is a partner node: it runs on a paid remote service",
                            class.name
                        ),
                    )
                    .primary(self.file, self.node_key(id), "paid per run")
                    .note("ComfyUI sends it to the partner's API with the account key the prompt carries (`extra_data.api_key_comfy_org`), and each run is billed to that account"),
                );
            }
            self.node_inputs(id, node, class, &mut out);
            for d in &mut out[before..] {
                // ComfyUI follows links from each output node down; an exception while
                // following a node's links is "inner" unless that node is the output itself.
                if matches!(d.code, Code::LinkMissingNode | Code::LinkBadSlot) && !class.output_node
                {
                    d.comfy_error_type = Some("exception_during_inner_validation");
                }
                // It validates only what an output node depends on: a problem elsewhere
                // does not stop the prompt, since that node never runs.
                if d.is_error() && reached.as_ref().is_some_and(|r| !r.contains(id.as_str())) {
                    d.severity = Severity::Warning;
                    d.comfy_error_type = None;
                    d.notes.push(format!(
                        "node `{id}` feeds no output node, so ComfyUI neither checks nor runs it"
                    ));
                }
            }
        }
        self.cycles(&mut out);
        // After a broken link or node, "unreachable" warnings are only noise.
        let broken = out.iter().any(|d| {
            d.is_error()
                && matches!(
                    d.code,
                    Code::LinkMissingNode | Code::LinkBadSlot | Code::BadLink | Code::WrongType
                )
        }) || !self.graph.broken.is_empty();
        self.outputs_and_reachability(&mut out, broken);
        out
    }

    fn duplicates(&self, out: &mut Vec<Diagnostic>) {
        for (ptr, first, span) in &self.spans.duplicates {
            let Some(rest) = ptr.strip_prefix(self.base) else {
                continue;
            };
            let token = rest.trim_start_matches('/');
            if token.contains('/') {
                continue;
            }
            out.push(
                Diagnostic::new(
                    Code::DuplicateNodeId,
                    format!("node id `{token}` appears more than once"),
                )
                .primary(self.file, span.clone(), "repeated here")
                .secondary(self.file, first.clone(), "first defined here")
                .help("JSON keeps only the last node with a given id; give each node its own id"),
            );
        }
    }

    fn node_inputs(
        &self,
        id: &str,
        node: &crate::graph::Node,
        class: &NodeClass,
        out: &mut Vec<Diagnostic>,
    ) {
        if self.graph.unreadable_inputs.contains(id) {
            return;
        }
        for spec in class.visible_inputs() {
            let bound = self.bound.contains(&(id.to_owned(), spec.name.clone()));
            match node.inputs.get(&spec.name) {
                None if spec.required() && !bound => out.push(
                    Diagnostic::new(
                        Code::MissingInput,
                        format!(
                            "node `{id}` ({}) is missing its required input `{}`",
                            class.name, spec.name
                        ),
                    )
                    .primary(
                        self.file,
                        self.node_key(id),
                        format!("needs `{}`", spec.name),
                    )
                    .help(match &spec.kind {
                        InputKind::Link { types } => {
                            format!("link it to an output of type {}", types.join(" or "))
                        }
                        k => match k.default() {
                            Some(d) => format!("add `\"{}\": {d}` to its inputs", spec.name),
                            None => format!("add `\"{}\"` to its inputs", spec.name),
                        },
                    }),
                ),
                None => {}
                Some(value) => self.input_value(id, class, spec, value, bound, out),
            }
        }
        for name in node.inputs.keys() {
            // The front end submits a few widgets of its own (`audioUI`, ...); not a typo.
            if class.input(name).is_none() && !crate::ui::is_front_end_widget(&class.name, name) {
                let mut d = Diagnostic::new(
                    Code::UnknownInput,
                    format!(
                        "node `{id}` ({}) has no input `{name}`; ComfyUI ignores it",
                        class.name
                    ),
                )
                .primary(self.file, self.input_key(id, name), "unknown input");
                let similar = crate::catalogue::closest(
                    name,
                    class.visible_inputs().map(|i| i.name.as_str()),
                )
                .or_else(|| {
                    let lower = name.to_lowercase();
                    class
                        .visible_inputs()
                        .filter(|i| !node.inputs.contains_key(&i.name))
                        .find(|i| i.name.contains(&lower) || lower.contains(&i.name))
                        .map(|i| i.name.as_str())
                });
                if let Some(s) = similar {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                out.push(d);
            }
        }
    }

    fn input_value(
        &self,
        id: &str,
        class: &NodeClass,
        spec: &InputSpec,
        value: &Value,
        bound: bool,
        out: &mut Vec<Diagnostic>,
    ) {
        let span = self.value_span(&[id, "inputs", &spec.name]);
        match classify(value) {
            InputValue::BadLink(why) => out.push(
                Diagnostic::new(
                    Code::BadLink,
                    format!("input `{}` of node `{id}` is a malformed link", spec.name),
                )
                .primary(self.file, span, why),
            ),
            InputValue::Link { node: src, slot } => self.link(id, spec, src, slot, span, out),
            InputValue::Literal(v) => {
                if bound {
                    return;
                }
                if let Value::String(s) = v
                    && looks_like_base64(s)
                {
                    out.push(
                        Diagnostic::new(
                            Code::Base64Blob,
                            format!(
                                "input `{}` of node `{id}` ({}) embeds {} characters of base64 data",
                                spec.name,
                                class.name,
                                s.len()
                            ),
                        )
                        .primary(self.file, span, "embedded data")
                        .help("keep the file beside the workflow and bind an image input to it instead"),
                    );
                } else if let Some(problem) = check_literal(spec, v, self.models) {
                    out.push(problem.into_diagnostic(
                        format!("input `{}` of node `{id}` ({})", spec.name, class.name),
                        self.file,
                        span,
                    ));
                } else if spec.is_seed() {
                    out.push(
                        Diagnostic::new(
                            Code::HardcodedSeed,
                            format!("seed `{}` of node `{id}` ({}) is fixed at {v} and no input sets it", spec.name, class.name),
                        )
                        .primary(self.file, span, "every job gets this same seed")
                        .help(format!(
                            "bind it to a seed input: `[inputs.seed]` with `type = \"seed\"` and `to = \"{id}.{}\"`; the daemon then picks and records a seed for each job",
                            spec.name
                        )),
                    );
                }
            }
        }
    }

    fn link(
        &self,
        id: &str,
        spec: &InputSpec,
        src: &str,
        slot: u64,
        span: Range<usize>,
        out: &mut Vec<Diagnostic>,
    ) {
        let Some(src_node) = self.graph.nodes.get(src) else {
            if self.graph.broken.contains(src) {
                // Its own shape error says what is wrong with it.
                return;
            }
            out.push(
                Diagnostic::new(
                    Code::LinkMissingNode,
                    format!(
                        "input `{}` of node `{id}` links to node `{src}`, which does not exist",
                        spec.name
                    ),
                )
                .primary(self.file, span, format!("no node `{src}`")),
            );
            return;
        };
        let Some(src_class) = self.catalogue.get(&src_node.class_type) else {
            return;
        };
        let Some(output) = src_class.outputs.get(slot as usize) else {
            out.push(
                Diagnostic::new(
                    Code::LinkBadSlot,
                    format!(
                        "input `{}` of node `{id}` links to output {slot} of node `{src}` ({}), which has {}",
                        spec.name,
                        src_class.name,
                        plural(src_class.outputs.len(), "output")
                    ),
                )
                .primary(self.file, span, "no such output slot")
                .secondary(self.file, self.node_key(src), format!("`{}` is defined here", src_class.name)),
            );
            return;
        };
        let accepted = spec.kind.type_names();
        if !types_compatible(&output.ty, &accepted, &spec.kind) {
            out.push(
                Diagnostic::new(
                    Code::LinkTypeMismatch,
                    format!(
                        "input `{}` of node `{id}` takes {}, but output {slot} of node `{src}` ({}) is {}",
                        spec.name,
                        accepted.join(" or "),
                        src_class.name,
                        output.ty
                    ),
                )
                .primary(self.file, span, format!("{} where {} is expected", output.ty, accepted.join("/")))
                .secondary(self.file, self.node_key(src), format!("`{}` outputs {}", src_class.name, output_list(src_class))),
            );
        }
    }

    fn cycles(&self, out: &mut Vec<Diagnostic>) {
        // Iterative DFS with colours; a back edge closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            White,
            Grey,
            Black,
        }
        let ids: Vec<&str> = self.graph.nodes.keys().map(String::as_str).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let edges: Vec<Vec<usize>> = ids
            .iter()
            .map(|id| {
                self.graph
                    .links_of(&self.graph.nodes[*id])
                    .filter_map(|(_, src, _)| index.get(src).copied())
                    .collect()
            })
            .collect();
        let mut colour = vec![Colour::White; ids.len()];
        let mut reported: HashSet<Vec<usize>> = HashSet::new();
        for start in 0..ids.len() {
            if colour[start] != Colour::White {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = Colour::Grey;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                if let Some(&m) = edges[n].get(*next) {
                    *next += 1;
                    match colour[m] {
                        Colour::White => {
                            colour[m] = Colour::Grey;
                            stack.push((m, 0));
                        }
                        Colour::Grey => {
                            let pos = stack.iter().position(|(x, _)| *x == m).unwrap_or(0);
                            let mut cycle: Vec<usize> =
                                stack[pos..].iter().map(|(x, _)| *x).collect();
                            let mut key = cycle.clone();
                            key.sort_unstable();
                            if reported.insert(key) {
                                cycle.reverse();
                                out.push(self.cycle_diagnostic(
                                    &cycle.iter().map(|i| ids[*i]).collect::<Vec<_>>(),
                                ));
                            }
                        }
                        Colour::Black => {}
                    }
                } else {
                    colour[n] = Colour::Black;
                    stack.pop();
                }
            }
        }
    }

    fn cycle_diagnostic(&self, cycle: &[&str]) -> Diagnostic {
        let path = cycle
            .iter()
            .chain(cycle.first())
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" → ");
        let mut d = Diagnostic::new(Code::Cycle, format!("the graph has a cycle: {path}"))
            .help("a node cannot depend on its own output; remove one of these links");
        for (i, id) in cycle.iter().enumerate() {
            let next = cycle[(i + 1) % cycle.len()];
            let node = &self.graph.nodes[*id];
            let input = self
                .graph
                .links_of(node)
                .find(|(_, src, _)| *src == next)
                .map(|(name, _, _)| name);
            let span = match input {
                Some(name) => self.value_span(&[id, "inputs", name]),
                None => self.node_key(id),
            };
            let msg = format!("`{id}` takes its input from `{next}`");
            d = if i == 0 {
                d.primary(self.file, span, msg)
            } else {
                d.secondary(self.file, span, msg)
            };
        }
        d
    }

    /// Whether some link cannot be read: a malformed one, a literal where the catalogue
    /// expects a link, or a node that did not parse.
    fn links_unreadable(&self) -> bool {
        if !self.graph.broken.is_empty() || self.graph.root_invalid {
            return true;
        }
        self.graph.nodes.values().any(|n| {
            let class = self.catalogue.get(&n.class_type);
            n.inputs.iter().any(|(name, v)| match classify(v) {
                InputValue::BadLink(_) => true,
                InputValue::Literal(_) => class
                    .and_then(|c| c.input(name))
                    .is_some_and(|spec| matches!(spec.kind, InputKind::Link { .. })),
                InputValue::Link { .. } => false,
            })
        })
    }

    /// The nodes some output node depends on; `None` when the graph has no output node (then
    /// nothing runs, and every problem stays an error).
    fn reached(&self) -> Option<HashSet<&str>> {
        let outputs: Vec<&str> = self
            .graph
            .nodes
            .iter()
            .filter(|(_, n)| {
                self.catalogue
                    .get(&n.class_type)
                    .is_some_and(|c| c.output_node)
            })
            .map(|(id, _)| id.as_str())
            .collect();
        if outputs.is_empty() {
            return None;
        }
        let mut reached: HashSet<&str> = HashSet::new();
        let mut stack = outputs;
        while let Some(id) = stack.pop() {
            if !reached.insert(id) {
                continue;
            }
            if let Some(node) = self.graph.nodes.get(id) {
                stack.extend(self.graph.links_of(node).map(|(_, src, _)| src));
            }
        }
        Some(reached)
    }

    fn outputs_and_reachability(&self, out: &mut Vec<Diagnostic>, broken: bool) {
        let outputs: Vec<&str> = self
            .graph
            .nodes
            .iter()
            .filter(|(_, n)| {
                self.catalogue
                    .get(&n.class_type)
                    .is_some_and(|c| c.output_node)
            })
            .map(|(id, _)| id.as_str())
            .collect();
        let unknown = self
            .graph
            .nodes
            .values()
            .any(|n| self.catalogue.get(&n.class_type).is_none());
        if outputs.is_empty() {
            // An unknown class or an unreadable node might be the output node; its own error
            // says enough.
            if !unknown && !broken && !self.graph.root_invalid {
                out.push(
                    Diagnostic::new(Code::NoOutputNode, "the graph has no output node, so ComfyUI would run nothing")
                        .primary(self.file, self.spans.nearest(self.base), "no output node in this graph")
                        .help("add a node that saves or shows a result, such as `SaveImage` or `PreviewAny`"),
                );
            }
            return;
        }
        let mut reached: HashSet<&str> = HashSet::new();
        let mut stack = outputs.clone();
        while let Some(id) = stack.pop() {
            if !reached.insert(id) {
                continue;
            }
            if let Some(node) = self.graph.nodes.get(id) {
                stack.extend(self.graph.links_of(node).map(|(_, src, _)| src));
            }
        }
        for (id, node) in &self.graph.nodes {
            if !broken && !reached.contains(id.as_str()) {
                out.push(
                    Diagnostic::new(
                        Code::UnreachableNode,
                        format!(
                            "node `{id}` ({}) feeds no output node, so it never runs",
                            node.class_type
                        ),
                    )
                    .primary(self.file, self.node_key(id), "unreachable")
                    .help("link it to an output node or remove it"),
                );
            }
        }
    }
}

/// Whether an output of type `out` may feed an input accepting `accepted`.
pub fn types_compatible(out: &str, accepted: &[String], kind: &InputKind) -> bool {
    if out == "*" || accepted.iter().any(|a| a == "*") {
        return true;
    }
    if matches!(kind, InputKind::Combo { .. }) && matches!(out, "COMBO" | "STRING") {
        return true;
    }
    out.split(',')
        .map(str::trim)
        .any(|o| accepted.iter().any(|a| a == o))
}

fn output_list(class: &NodeClass) -> String {
    if class.outputs.is_empty() {
        return "nothing".into();
    }
    class
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| format!("{i}: {}", o.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, what: &str) -> String {
    match n {
        0 => format!("no {what}s"),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// Long strings made only of base64 characters, or `data:` URLs, are embedded files.
pub fn looks_like_base64(s: &str) -> bool {
    s.len() >= 1024
        && (s.starts_with("data:")
            || s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r')
            }))
}

/// What is wrong with a literal for an input, before it is tied to a place in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueProblem {
    pub code: Code,
    pub severity: Severity,
    /// Completes "`<what>` ...".
    pub message: String,
    pub label: String,
    pub help: Option<String>,
    pub note: Option<String>,
    /// What ComfyUI answers at submit time (`None`: it accepts the prompt).
    pub comfy_error_type: Option<&'static str>,
}

impl ValueProblem {
    fn new(code: Code, message: String, label: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            message,
            label: label.into(),
            help: None,
            note: None,
            comfy_error_type: code.comfy_error_type(),
        }
    }

    pub fn into_diagnostic(self, what: String, file: FileId, span: Range<usize>) -> Diagnostic {
        let mut d = Diagnostic::new(self.code, format!("{what} {}", self.message))
            .with_severity(self.severity)
            .with_comfy_error_type(self.comfy_error_type)
            .primary(file, span, self.label);
        d.help = self.help;
        d.notes.extend(self.note);
        d
    }
}

/// Checks a literal value against an input's catalogue spec the way ComfyUI validates it.
pub fn check_literal(spec: &InputSpec, v: &Value, models: &[ModelDecl]) -> Option<ValueProblem> {
    let sv = short(v);
    let wrong = |expected: &str| {
        Some(ValueProblem::new(
            Code::WrongType,
            format!("takes {expected}, not {}", kind_of(v)),
            format!("expected {expected}"),
        ))
    };
    match &spec.kind {
        InputKind::Int { min, max, .. } => {
            let Some(n) = as_int(v) else {
                return wrong("an integer");
            };
            // Compared as integers: through f64, 2^64 and the seed maximum 2^64 - 1 are
            // the same number.
            if let Some(m) = min.filter(|m| n < *m) {
                return Some(ValueProblem::new(
                    Code::ValueTooSmall,
                    format!("is {n}, below its minimum {m}"),
                    format!("smallest allowed is {m}"),
                ));
            }
            if let Some(m) = max.filter(|m| n > *m) {
                return Some(ValueProblem::new(
                    Code::ValueTooLarge,
                    format!("is {n}, above its maximum {m}"),
                    format!("largest allowed is {m}"),
                ));
            }
            None
        }
        InputKind::Float { min, max, .. } => {
            let Some(n) = v.as_f64() else {
                return wrong("a number");
            };
            range_problem(n, *min, *max, || v.to_string(), |x| x.to_string())
        }
        InputKind::String { .. } => (!v.is_string()).then(|| wrong("a string")).flatten(),
        InputKind::Boolean { .. } => (!v.is_boolean()).then(|| wrong("a boolean")).flatten(),
        InputKind::Combo {
            options,
            multiselect,
            typed,
            ..
        } => {
            if *multiselect || options.contains(v) {
                return None;
            }
            if let Some(folder) = &spec.model_folder {
                let declared = v.as_str().is_some_and(|name| {
                    models.iter().any(|m| m.name == name && &m.folder == folder)
                });
                if declared {
                    return None;
                }
                let mut p = ValueProblem::new(
                    Code::ModelNotAvailable,
                    format!(
                        "names model {sv}, which is neither in the catalogue's `{folder}` list nor declared in `comfyc.toml`"
                    ),
                    "unknown model file",
                );
                p.help = Some(format!(
                    "declare it: `[[models]]` with `name = {sv}` and `folder = \"{folder}\"` in `comfyc.toml`"
                ));
                return Some(p);
            }
            if spec.upload.is_some() {
                let mut p = ValueProblem::new(
                    Code::InputFileMissing,
                    format!(
                        "names input file {sv}, which ComfyUI's input folder did not hold when the catalogue was pulled"
                    ),
                    "not on the server",
                );
                p.help = Some("bind it to an image input so each job uploads its own file".into());
                return Some(p);
            }
            let mut p = ValueProblem::new(
                Code::NotInList,
                format!("does not accept {sv}"),
                "not one of the options",
            );
            if *typed {
                p.note = Some(
                    "ComfyUI accepts this value when the prompt is submitted (it does not check the options of inputs typed `COMBO`), and the node fails when it runs".into(),
                );
                p.comfy_error_type = None;
            }
            if options.is_empty() {
                p.severity = Severity::Warning;
                p.message = format!("has no options in the catalogue, so {sv} cannot be checked");
                p.label = "unchecked".into();
            } else {
                let strs: Vec<&str> = options.iter().filter_map(Value::as_str).collect();
                p.help = Some(
                    match v
                        .as_str()
                        .and_then(|s| crate::catalogue::closest(s, strs.iter().copied()))
                    {
                        Some(s) => format!("did you mean \"{s}\"?"),
                        None => format!("expected one of: {}", preview(options)),
                    },
                );
            }
            Some(p)
        }
        // Types the front end draws as widgets (a recorder, a webcam) take its value as is.
        InputKind::Link { types } if types.iter().any(|t| crate::ui::is_widget_type(t)) => None,
        InputKind::Link { types } => Some(ValueProblem::new(
            Code::WrongType,
            format!(
                "takes a link from an output of type {}, not a literal",
                types.join(" or ")
            ),
            "expected a link `[\"NODE\", SLOT]`",
        )),
        InputKind::Hidden { .. } => None,
    }
}

fn range_problem(
    n: f64,
    min: Option<f64>,
    max: Option<f64>,
    shown: impl Fn() -> String,
    fmt: impl Fn(f64) -> String,
) -> Option<ValueProblem> {
    if let Some(m) = min
        && n < m
    {
        return Some(ValueProblem::new(
            Code::ValueTooSmall,
            format!("is {}, below its minimum {}", shown(), fmt(m)),
            format!("smallest allowed is {}", fmt(m)),
        ));
    }
    if let Some(m) = max
        && n > m
    {
        return Some(ValueProblem::new(
            Code::ValueTooLarge,
            format!("is {}, above its maximum {}", shown(), fmt(m)),
            format!("largest allowed is {}", fmt(m)),
        ));
    }
    None
}

/// An integer, also when written as a whole float (`20.0`), as ComfyUI's `int()` accepts.
pub fn as_int(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                .map(|f| f as i128)
        })
}

/// A value for a message: JSON, cut short when long.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(50).collect::<String>())
    } else {
        s
    }
}

/// The first few options, for messages.
pub fn preview(options: &[Value]) -> String {
    let mut s: Vec<String> = options.iter().take(8).map(Value::to_string).collect();
    if options.len() > 8 {
        s.push(format!("… ({} in all)", options.len()));
    }
    s.join(", ")
}
