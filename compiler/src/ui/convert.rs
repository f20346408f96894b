//! UI format → API format, as the front end's `graphToPrompt` does it.
//!
//! The document is read into one [`Graph`] per canvas (the root and each subgraph
//! definition), then instances of subgraphs are unfolded into [`Frame`]s: a frame is one
//! canvas as seen from one instance, with the id prefix its nodes get (`232:` for the inner
//! nodes of instance 232). Every executable node of every frame becomes an API node; each of
//! its linked inputs is traced back through reroutes, bypassed nodes, primitives and subgraph
//! boundaries to the node that produces the value, or to a plain value.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Number, Value};

use crate::catalogue::{Catalogue, InputKind, InputSpec, NodeClass};

/// Subgraphs nest at most this deep; deeper (or self-containing) ones are reported.
const MAX_DEPTH: usize = 16;
/// Reroute chains, bypass chains and subgraph borders crossed while tracing one input.
const MAX_HOPS: usize = 256;

/// Front-end node types that never reach the server.
const VIRTUAL: &[&str] = &["Reroute", "PrimitiveNode", "Note", "MarkdownNote"];
/// `widgets_values_named` keys of front-end-only widgets.
const PSEUDO_WIDGET: &[&str] = &["control_after_generate", "upload"];

/// Widgets the front end adds to some node classes beyond the catalogue's inputs, the value
/// it submits for each (ComfyUI ignores them; they are kept to submit what it would), and
/// how many values at most its saves store for them after the catalogue's widgets.
const FRONT_END_WIDGETS: &[(&str, &str, &str, usize)] = &[
    ("LoadAudio", "audioUI", "", 1),
    ("SaveAudio", "audioUI", "", 0),
    ("SaveAudioMP3", "audioUI", "", 0),
    ("SaveAudioOpus", "audioUI", "", 0),
    ("PreviewAudio", "audioUI", "", 0),
    ("PreviewAny", "preview", "", 3),
    ("Preview3D", "image", "", 1),
    ("Preview3DAnimation", "image", "", 1),
    ("SaveGLB", "image", "", 1),
    ("LoadImageOutput", "refresh", "refresh", 2),
];
/// Display names the front end gives classes the server names none.
const FRONT_END_TITLES: &[(&str, &str)] = &[
    ("ImageScaleToTotalPixels", "Scale Image to Total Pixels"),
    ("ImageBlur", "Image Blur"),
];
/// Input types the catalogue lists as sockets but the front end draws as widgets.
const WIDGET_TYPES: &[&str] = &["AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION", "WEBCAM"];

/// Whether the front end draws an input of type `ty` as a widget (its value is a literal).
pub fn is_widget_type(ty: &str) -> bool {
    WIDGET_TYPES.contains(&ty)
}

/// Whether `class.input` is one the front end submits although the catalogue lacks it.
pub fn is_front_end_widget(class: &str, input: &str) -> bool {
    FRONT_END_WIDGETS
        .iter()
        .any(|(c, i, _, _)| *c == class && *i == input)
}

/// Node modes, as the front end stores them.
const MODE_MUTED: i64 = 2;
const MODE_BYPASS: i64 = 4;

/// The kinds of problem a conversion reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiProblemKind {
    /// A node type the catalogue does not have (nor a subgraph of the file).
    UnknownClass,
    /// A link id listed on a node but absent from the links table.
    MissingLink,
    /// A link whose other end does not exist (a node, a slot, a subgraph input or output).
    BrokenLink,
    /// `widgets_values` has more or fewer values than the catalogue's widgets need.
    WidgetCount,
    /// Part of the document is not shaped like a UI workflow.
    Shape,
}

/// One problem, with a JSON pointer into the UI document.
#[derive(Debug, Clone, PartialEq)]
pub struct UiProblem {
    pub kind: UiProblemKind,
    pub pointer: String,
    pub message: String,
    pub help: Option<String>,
}

/// The API graph of a UI document and what went wrong making it.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// The API graph: node id → `{inputs, class_type, _meta}`, in the front end's key order.
    pub prompt: Map<String, Value>,
    pub problems: Vec<UiProblem>,
    /// Node types the catalogue lacks, with how many nodes use each.
    pub missing_classes: BTreeMap<String, usize>,
    /// For each API node id: the JSON pointer of the UI node it came from.
    pub origins: HashMap<String, String>,
}

impl Conversion {
    /// API node ids whose class the catalogue lacks: kept so links to them stay, not checked.
    pub fn unknown_nodes(&self) -> impl Iterator<Item = &str> {
        self.prompt.iter().filter_map(|(id, n)| {
            let class = n.get("class_type").and_then(Value::as_str)?;
            self.missing_classes
                .contains_key(class)
                .then_some(id.as_str())
        })
    }
}

/// Converts a UI-format document (already parsed) into the API graph.
pub fn convert(doc: &Value, catalogue: &Catalogue) -> Conversion {
    let mut reader = Reader {
        graphs: Vec::new(),
        subgraphs: HashMap::new(),
        sink: Sink::default(),
    };
    let Some(root) = doc.as_object() else {
        reader.sink.problem(
            UiProblemKind::Shape,
            "",
            "a UI-format workflow is a JSON object".into(),
            None,
        );
        return reader.sink.out;
    };
    let root_graph = reader.read_graph(root, String::new());
    reader.graphs.push(root_graph);
    reader.read_definitions(root, "");
    let Reader {
        graphs,
        subgraphs,
        sink,
    } = reader;
    let mut c = Converter {
        catalogue,
        graphs: &graphs,
        subgraphs: &subgraphs,
        frames: vec![Frame {
            graph: 0,
            prefix: String::new(),
            parent: None,
        }],
        children: HashMap::new(),
        sink,
    };
    c.unfold(0, &mut vec![]);
    c.emit_frame(0);
    c.drop_dangling_links();
    c.order_keys();
    c.sink.out
}

/// Problems and output, shared by reading and converting.
#[derive(Default)]
struct Sink {
    out: Conversion,
    /// Problems already reported, so a canvas seen from two instances reports once.
    reported: HashSet<(String, String)>,
}

impl Sink {
    fn problem(&mut self, kind: UiProblemKind, pointer: &str, message: String, help: Option<&str>) {
        if !self.reported.insert((pointer.to_owned(), message.clone())) {
            return;
        }
        self.out.problems.push(UiProblem {
            kind,
            pointer: pointer.to_owned(),
            message,
            help: help.map(str::to_owned),
        });
    }
}

/// Reads every canvas of the document.
struct Reader<'a> {
    graphs: Vec<Graph<'a>>,
    /// Subgraph definition id → index into `graphs`.
    subgraphs: HashMap<&'a str, usize>,
    sink: Sink,
}

struct Converter<'g, 'a> {
    catalogue: &'g Catalogue,
    graphs: &'g [Graph<'a>],
    subgraphs: &'g HashMap<&'a str, usize>,
    frames: Vec<Frame>,
    /// `(frame, node index)` of a subgraph instance → the frame of its inside.
    children: HashMap<(usize, usize), usize>,
    sink: Sink,
}

/// One canvas: the root graph or a subgraph definition.
struct Graph<'a> {
    nodes: Vec<UiNode<'a>>,
    index: HashMap<String, usize>,
    links: HashMap<String, Link>,
    /// A subgraph's input and output slots (`inputs`, `outputs`).
    io_inputs: Vec<IoSlot<'a>>,
    io_outputs: Vec<IoSlot<'a>>,
}

struct UiNode<'a> {
    id: String,
    ty: &'a str,
    mode: i64,
    title: Option<&'a str>,
    inputs: Vec<Slot<'a>>,
    outputs: Vec<&'a str>,
    raw: &'a Map<String, Value>,
    pointer: String,
}

struct Slot<'a> {
    name: &'a str,
    ty: &'a str,
    link: Option<String>,
    widget: Option<&'a str>,
}

struct Link {
    origin: String,
    slot: usize,
    pointer: String,
}

struct IoSlot<'a> {
    name: &'a str,
    links: Vec<String>,
}

/// A canvas as seen from one place: the root, or the inside of one subgraph instance.
struct Frame {
    graph: usize,
    prefix: String,
    /// The frame holding the instance, and the instance's node index there.
    parent: Option<(usize, usize)>,
}

/// Where an input's value comes from.
enum Source {
    Link(String, usize),
    Value(Value),
}

/// A node or link id as text: `5` and `"5"` are the same node.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn slot_index(v: &Value) -> Option<usize> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .and_then(|n| usize::try_from(n).ok())
}

impl<'a> Reader<'a> {
    fn read_definitions(&mut self, obj: &'a Map<String, Value>, base: &str) {
        let Some(list) = obj
            .get("definitions")
            .and_then(|d| d.get("subgraphs"))
            .and_then(Value::as_array)
        else {
            return;
        };
        for (i, sg) in list.iter().enumerate() {
            let pointer = format!("{base}/definitions/subgraphs/{i}");
            let Some(sg_obj) = sg.as_object() else {
                self.sink.problem(
                    UiProblemKind::Shape,
                    &pointer,
                    "a subgraph definition is not an object".into(),
                    None,
                );
                continue;
            };
            let Some(id) = sg_obj.get("id").and_then(Value::as_str) else {
                self.sink.problem(
                    UiProblemKind::Shape,
                    &pointer,
                    "a subgraph definition has no `id`".into(),
                    None,
                );
                continue;
            };
            let mut g = self.read_graph(sg_obj, pointer.clone());
            g.io_inputs = io_slots(sg_obj.get("inputs"));
            g.io_outputs = io_slots(sg_obj.get("outputs"));
            self.graphs.push(g);
            self.subgraphs.entry(id).or_insert(self.graphs.len() - 1);
            // Older saves nest definitions inside their subgraph.
            self.read_definitions(sg_obj, &pointer);
        }
    }

    fn read_graph(&mut self, obj: &'a Map<String, Value>, pointer: String) -> Graph<'a> {
        let mut g = Graph {
            nodes: Vec::new(),
            index: HashMap::new(),
            links: HashMap::new(),
            io_inputs: Vec::new(),
            io_outputs: Vec::new(),
        };
        match obj.get("nodes") {
            Some(Value::Array(nodes)) => {
                for (i, n) in nodes.iter().enumerate() {
                    let ptr = format!("{pointer}/nodes/{i}");
                    match read_node(n, ptr.clone()) {
                        Some(node) => {
                            g.index.insert(node.id.clone(), g.nodes.len());
                            g.nodes.push(node);
                        }
                        None => self.sink.problem(
                            UiProblemKind::Shape,
                            &ptr,
                            "a node without an `id` and a `type` is skipped".into(),
                            None,
                        ),
                    }
                }
            }
            _ => self.sink.problem(
                UiProblemKind::Shape,
                &pointer,
                "a UI-format graph has a `nodes` array".into(),
                None,
            ),
        }
        if let Some(Value::Array(links)) = obj.get("links") {
            for (i, l) in links.iter().enumerate() {
                let ptr = format!("{pointer}/links/{i}");
                let parts = match l {
                    Value::Array(a) => (a.first(), a.get(1), a.get(2)),
                    Value::Object(m) => (m.get("id"), m.get("origin_id"), m.get("origin_slot")),
                    _ => (None, None, None),
                };
                match parts {
                    (Some(id), Some(origin), Some(slot)) => {
                        if let (Some(id), Some(origin), Some(slot)) =
                            (id_text(id), id_text(origin), slot_index(slot))
                        {
                            g.links.insert(
                                id,
                                Link {
                                    origin,
                                    slot,
                                    pointer: ptr,
                                },
                            );
                            continue;
                        }
                        self.sink.problem(
                            UiProblemKind::Shape,
                            &ptr,
                            "a link is `[id, origin_id, origin_slot, target_id, target_slot, type]`"
                                .into(),
                            None,
                        );
                    }
                    _ if l.is_null() => {}
                    _ => self.sink.problem(
                        UiProblemKind::Shape,
                        &ptr,
                        "a link is `[id, origin_id, origin_slot, target_id, target_slot, type]`"
                            .into(),
                        None,
                    ),
                }
            }
        }
        g
    }
}

impl<'g, 'a> Converter<'g, 'a> {
    fn problem(&mut self, kind: UiProblemKind, pointer: &str, message: String, help: Option<&str>) {
        self.sink.problem(kind, pointer, message, help);
    }

    /// Creates a frame for every subgraph instance below `frame`, depth first.
    fn unfold(&mut self, frame: usize, stack: &mut Vec<usize>) {
        let graph = self.frames[frame].graph;
        for ni in 0..self.graphs[graph].nodes.len() {
            let node = &self.graphs[graph].nodes[ni];
            let Some(&inner) = self.subgraphs.get(node.ty) else {
                continue;
            };
            if stack.contains(&inner) || stack.len() >= MAX_DEPTH {
                let ptr = node.pointer.clone();
                self.problem(
                    UiProblemKind::Shape,
                    &ptr,
                    "this subgraph contains itself, or nests too deep".into(),
                    None,
                );
                continue;
            }
            let prefix = format!("{}{}:", self.frames[frame].prefix, node.id);
            self.frames.push(Frame {
                graph: inner,
                prefix,
                parent: Some((frame, ni)),
            });
            let child = self.frames.len() - 1;
            self.children.insert((frame, ni), child);
            stack.push(inner);
            self.unfold(child, stack);
            stack.pop();
        }
    }

    fn emit_frame(&mut self, frame: usize) {
        let graph = self.frames[frame].graph;
        for ni in 0..self.graphs[graph].nodes.len() {
            if let Some(&child) = self.children.get(&(frame, ni)) {
                // Instances are never output; this front end ignores their own mode.
                self.emit_frame(child);
                continue;
            }
            self.emit_node(frame, ni);
        }
    }

    fn emit_node(&mut self, frame: usize, ni: usize) {
        let g = &self.graphs[self.frames[frame].graph];
        let node = &g.nodes[ni];
        if node.mode == MODE_MUTED || node.mode == MODE_BYPASS || VIRTUAL.contains(&node.ty) {
            return;
        }
        if self.subgraphs.contains_key(node.ty) {
            // A subgraph instance whose inside could not be unfolded (already reported).
            return;
        }
        let id = format!("{}{}", self.frames[frame].prefix, node.id);
        let class = self.catalogue.get(node.ty);
        let mut inputs = Map::new();
        // The node's widget values in order, for promoted widgets the instance has no value for.
        let mut own_values = Vec::new();
        match class {
            Some(class) => {
                for (name, value) in self.widget_values(node, class) {
                    own_values.push(value.clone());
                    inputs.insert(name, value);
                }
                for (_, name, value, _) in FRONT_END_WIDGETS.iter().filter(|w| w.0 == node.ty) {
                    inputs.insert((*name).to_owned(), Value::String((*value).to_owned()));
                }
            }
            None => {
                let count = self
                    .sink
                    .out
                    .missing_classes
                    .entry(node.ty.to_owned())
                    .or_default();
                *count += 1;
                if *count == 1 {
                    let ptr = format!("{}/type", node.pointer);
                    // Group nodes (before subgraphs) are named `workflow>NAME`.
                    let (msg, help) = if node.ty.starts_with("workflow>")
                        || node.ty.starts_with("workflow/")
                    {
                        (
                            format!(
                                "node type `{}` is a legacy group node, which comfyc does not convert",
                                node.ty
                            ),
                            "in ComfyUI, convert the group node to a subgraph (or ungroup it) and save again",
                        )
                    } else {
                        (
                            format!("node type `{}` is not in the node catalogue", node.ty),
                            "it comes from a custom node pack or a newer ComfyUI: install it, then save the catalogue again with `comfyc nodes pull`",
                        )
                    };
                    self.problem(UiProblemKind::UnknownClass, &ptr, msg, Some(help));
                }
                // Without the catalogue only named values can be placed.
                if let Some(Value::Object(named)) = node.raw.get("widgets_values_named") {
                    for (k, v) in named {
                        if !is_pseudo(k) {
                            inputs.insert(k.clone(), normalize_number(v));
                        }
                    }
                }
            }
        }
        // Widget sockets fed straight from the subgraph's inputs, in slot order.
        let mut promoted = 0;
        for si in 0..node.inputs.len() {
            let slot = &g.nodes[ni].inputs[si];
            let Some(link) = slot.link.clone() else {
                continue;
            };
            if let (Some(w), Some(class)) = (slot.widget, class)
                && class.input(w).is_none()
            {
                // A socket for a widget this catalogue's node does not have (a newer save):
                // the front end drops it.
                continue;
            }
            let name = slot.widget.unwrap_or(slot.name).to_owned();
            let want = slot.ty.to_owned();
            let ptr = format!("{}/inputs/{si}/link", g.nodes[ni].pointer);
            let from_subgraph_input =
                slot.widget.is_some() && g.links.get(&link).is_some_and(|l| l.origin == "-10");
            let ordinal = promoted;
            promoted += usize::from(from_subgraph_input);
            match self.trace_link(frame, &link, &want, &ptr, 0) {
                Some(Source::Link(from, slot)) => {
                    inputs.insert(name, Value::Array(vec![from.into(), slot.into()]));
                }
                Some(Source::Value(v)) => {
                    inputs.insert(name, normalize_number(&v));
                }
                None if from_subgraph_input && self.frames[frame].parent.is_some() => {
                    // The instance holds no value for this promoted widget. The front end
                    // (1.27) then takes the inner node's widget values in order, the n-th
                    // for its n-th promoted widget: the widget's own value when the promoted
                    // widgets come first, a neighbour's otherwise.
                    if let Some(v) = own_values.get(ordinal) {
                        inputs.insert(name, v.clone());
                    }
                }
                None => {}
            }
        }
        let g = &self.graphs[self.frames[frame].graph];
        let node = &g.nodes[ni];
        let title = node
            .title
            .map(str::to_owned)
            .or_else(|| class.and_then(|c| c.display_name.clone()))
            .or_else(|| {
                FRONT_END_TITLES
                    .iter()
                    .find(|(c, _)| *c == node.ty)
                    .map(|(_, t)| (*t).to_owned())
            })
            .unwrap_or_else(|| node.ty.to_owned());
        let mut api = Map::new();
        api.insert("inputs".into(), Value::Object(inputs));
        api.insert("class_type".into(), Value::String(node.ty.to_owned()));
        let mut meta = Map::new();
        meta.insert("title".into(), Value::String(title));
        api.insert("_meta".into(), Value::Object(meta));
        self.sink
            .out
            .origins
            .insert(id.clone(), node.pointer.clone());
        self.sink.out.prompt.insert(id, Value::Object(api));
    }

    /// The values of a node's widgets, by input name, in the catalogue's order.
    fn widget_values(&mut self, node: &UiNode<'a>, class: &NodeClass) -> Vec<(String, Value)> {
        let widgets: Vec<&InputSpec> = class.visible_inputs().filter(|i| is_widget(i)).collect();
        let named = match node.raw.get("widgets_values_named") {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        let mut out = Vec::new();
        match node.raw.get("widgets_values") {
            Some(Value::Array(values)) => {
                let mut at = 0;
                for w in &widgets {
                    let value = named
                        .and_then(|m| m.get(&w.name))
                        .or_else(|| values.get(at))
                        .cloned()
                        .or_else(|| widget_default(w));
                    at += 1 + extra_values(w);
                    if let Some(v) = value {
                        out.push((w.name.clone(), normalize_number(&v)));
                    }
                }
                // Newer front ends store values of their own widgets after these: a few more
                // are expected, fewer mean defaults were used.
                let allowance = FRONT_END_WIDGETS
                    .iter()
                    .filter(|w| w.0 == class.name)
                    .map(|w| w.3)
                    .sum::<usize>()
                    + widgets
                        .iter()
                        .filter(|w| w.upload.is_some() || !w.kind.is_widget())
                        .count();
                if (values.len() < at || values.len() > at + allowance) && !values.is_empty() {
                    let msg = format!(
                        "node `{}` ({}) has {} widget values where the catalogue's `{}` takes {at}",
                        node.id,
                        node.ty,
                        values.len(),
                        class.name
                    );
                    self.problem(
                        UiProblemKind::WidgetCount,
                        &format!("{}/widgets_values", node.pointer),
                        msg,
                        Some("the file may come from another ComfyUI version; values are assigned by position, so check them"),
                    );
                }
            }
            Some(Value::Object(values)) => {
                for w in &widgets {
                    if let Some(v) = values.get(&w.name).cloned().or_else(|| widget_default(w)) {
                        out.push((w.name.clone(), normalize_number(&v)));
                    }
                }
            }
            _ => {
                for w in &widgets {
                    if let Some(v) = named
                        .and_then(|m| m.get(&w.name))
                        .cloned()
                        .or_else(|| widget_default(w))
                    {
                        out.push((w.name.clone(), normalize_number(&v)));
                    }
                }
            }
        }
        out
    }

    /// Follows link `link` of `frame`'s canvas back to what produces its value.
    fn trace_link(
        &mut self,
        frame: usize,
        link: &str,
        want: &str,
        at: &str,
        hops: usize,
    ) -> Option<Source> {
        let g = &self.graphs[self.frames[frame].graph];
        let Some(l) = g.links.get(link) else {
            let msg = format!("link `{link}` is not in the links table");
            self.problem(
                UiProblemKind::MissingLink,
                at,
                msg,
                Some("reconnect the input in ComfyUI and save again"),
            );
            return None;
        };
        let (origin, slot, ptr) = (l.origin.clone(), l.slot, l.pointer.clone());
        self.trace_output(frame, &origin, slot, want, &ptr, hops + 1)
    }

    /// What output `slot` of node `origin` (in `frame`'s canvas) delivers.
    fn trace_output(
        &mut self,
        frame: usize,
        origin: &str,
        slot: usize,
        want: &str,
        at: &str,
        hops: usize,
    ) -> Option<Source> {
        if hops > MAX_HOPS {
            self.problem(
                UiProblemKind::BrokenLink,
                at,
                "this link goes round in circles".into(),
                None,
            );
            return None;
        }
        let gi = self.frames[frame].graph;
        if origin == "-10" {
            return self.trace_subgraph_input(frame, slot, want, at, hops);
        }
        let Some(&ni) = self.graphs[gi].index.get(origin) else {
            let msg = format!("a link starts at node `{origin}`, which does not exist");
            self.problem(UiProblemKind::BrokenLink, at, msg, None);
            return None;
        };
        let node = &self.graphs[gi].nodes[ni];
        if node.mode == MODE_BYPASS && node.ty != "Reroute" && node.ty != "PrimitiveNode" {
            // Bypassed subgraph instances too: their insides still run, but what they
            // output is bridged from their inputs.
            let out_ty = node.outputs.get(slot).copied().unwrap_or(want);
            let matches = |s: &Slot<'_>| s.ty == want || s.ty == out_ty;
            let pick = match node.inputs.get(slot) {
                Some(s) if matches(s) => Some(slot),
                _ => node.inputs.iter().position(matches),
            }?;
            let link = node.inputs[pick].link.clone()?;
            return self.trace_link(frame, &link, want, at, hops);
        }
        if let Some(&child) = self.children.get(&(frame, ni)) {
            let inner = self.frames[child].graph;
            let Some(first) = self.graphs[inner]
                .io_outputs
                .get(slot)
                .and_then(|o| o.links.first())
                .cloned()
            else {
                let msg = format!("subgraph output {slot} of node `{origin}` is not connected");
                self.problem(UiProblemKind::BrokenLink, at, msg, None);
                return None;
            };
            return self.trace_link(child, &first, want, at, hops);
        }
        match node.ty {
            "Reroute" => {
                let link = node.inputs.first().and_then(|s| s.link.clone())?;
                self.trace_link(frame, &link, want, at, hops)
            }
            "PrimitiveNode" => {
                let v = match node.raw.get("widgets_values") {
                    Some(Value::Array(a)) => a.first().cloned(),
                    _ => None,
                };
                v.map(Source::Value)
            }
            _ => Some(Source::Link(
                format!("{}{}", self.frames[frame].prefix, node.id),
                slot,
            )),
        }
    }

    /// What a subgraph's input `slot` delivers inside the instance that `frame` shows.
    fn trace_subgraph_input(
        &mut self,
        frame: usize,
        slot: usize,
        want: &str,
        at: &str,
        hops: usize,
    ) -> Option<Source> {
        let (parent, ni) = self.frames[frame].parent?;
        let gi = self.frames[frame].graph;
        let Some(name) = self.graphs[gi].io_inputs.get(slot).map(|s| s.name) else {
            let msg = format!("a link starts at subgraph input {slot}, which does not exist");
            self.problem(UiProblemKind::BrokenLink, at, msg, None);
            return None;
        };
        let pg = self.frames[parent].graph;
        let inst = &self.graphs[pg].nodes[ni];
        // The instance's sockets match the subgraph's inputs by name, not by position.
        let host_slot = inst.inputs.iter().position(|s| s.name == name);
        if let Some(link) = host_slot.and_then(|i| inst.inputs[i].link.clone()) {
            return self.trace_link(parent, &link, want, at, hops);
        }
        self.promoted_value(frame, inst, name).map(Source::Value)
    }

    /// The value a subgraph instance holds for its promoted widget `name`.
    fn promoted_value(&self, frame: usize, inst: &UiNode<'_>, name: &str) -> Option<Value> {
        if let Some(v) = inst
            .raw
            .get("widgets_values_named")
            .and_then(|m| m.get(name))
        {
            return Some(v.clone());
        }
        let values = match inst.raw.get("widgets_values") {
            Some(Value::Array(a)) => a,
            Some(Value::Object(m)) => return m.get(name).cloned(),
            _ => return None,
        };
        // The instance has one widget per subgraph input that feeds a widget inside, in the
        // subgraph's order (its own sockets list only some of them).
        let widgets = self.widget_inputs(self.frames[frame].graph);
        let at = widgets.iter().position(|w| *w == name)?;
        values.get(at).cloned()
    }

    /// The inputs of subgraph canvas `gi` that feed a widget of an inner node.
    fn widget_inputs(&self, gi: usize) -> Vec<&'a str> {
        let g = &self.graphs[gi];
        g.io_inputs
            .iter()
            .filter(|io| {
                io.links.iter().any(|l| {
                    g.nodes.iter().any(|n| {
                        n.inputs
                            .iter()
                            .any(|s| s.widget.is_some() && s.link.as_deref() == Some(l.as_str()))
                    })
                })
            })
            .map(|io| io.name)
            .collect()
    }

    /// Removes links to nodes that are not output (muted ones), once, as the front end does.
    fn drop_dangling_links(&mut self) {
        let ids: HashSet<String> = self.sink.out.prompt.keys().cloned().collect();
        for node in self.sink.out.prompt.values_mut() {
            if let Some(Value::Object(inputs)) = node.get_mut("inputs") {
                inputs.retain(|_, v| match v {
                    Value::Array(a) if a.len() == 2 => {
                        a[0].as_str().is_some_and(|id| ids.contains(id))
                    }
                    _ => true,
                });
            }
        }
    }

    /// JavaScript objects list integer-like keys first, ascending; the rest in insertion order.
    fn order_keys(&mut self) {
        let prompt = std::mem::take(&mut self.sink.out.prompt);
        let mut numeric: Vec<(u32, String, Value)> = Vec::new();
        let mut rest = Map::new();
        for (k, v) in prompt {
            match k.parse::<u32>() {
                Ok(n) if n.to_string() == k && n != u32::MAX => numeric.push((n, k, v)),
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        numeric.sort_by_key(|(n, _, _)| *n);
        let mut out: Map<String, Value> = numeric.into_iter().map(|(_, k, v)| (k, v)).collect();
        out.extend(rest);
        self.sink.out.prompt = out;
    }
}

fn read_node(n: &Value, pointer: String) -> Option<UiNode<'_>> {
    let raw = n.as_object()?;
    let id = id_text(raw.get("id")?)?;
    let ty = raw.get("type")?.as_str()?;
    let inputs = raw
        .get("inputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| Slot {
                    name: s.get("name").and_then(Value::as_str).unwrap_or_default(),
                    ty: s.get("type").and_then(Value::as_str).unwrap_or_default(),
                    link: s.get("link").and_then(id_text),
                    widget: s
                        .get("widget")
                        .and_then(|w| w.get("name"))
                        .and_then(Value::as_str),
                })
                .collect()
        })
        .unwrap_or_default();
    let outputs = raw
        .get("outputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.get("type").and_then(Value::as_str).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    Some(UiNode {
        id,
        ty,
        mode: raw.get("mode").and_then(Value::as_i64).unwrap_or(0),
        title: raw.get("title").and_then(Value::as_str),
        inputs,
        outputs,
        raw,
        pointer,
    })
}

fn io_slots(v: Option<&Value>) -> Vec<IoSlot<'_>> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| IoSlot {
                    name: s.get("name").and_then(Value::as_str).unwrap_or_default(),
                    links: s
                        .get("linkIds")
                        .and_then(Value::as_array)
                        .map(|l| l.iter().filter_map(id_text).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The "control after generate" choice a UI node stores for its widget `input` (`randomize`,
/// `fixed`, ...), where it has one.
pub(crate) fn control_value<'v>(
    node: &'v Value,
    class: &NodeClass,
    input: &str,
) -> Option<&'v Value> {
    let widgets: Vec<&InputSpec> = class.visible_inputs().filter(|i| is_widget(i)).collect();
    if let Some(Value::Object(named)) = node.get("widgets_values_named") {
        // The n-th control widget is `control_after_generate`, then `#1`, `#2`, ...
        let nth = widgets
            .iter()
            .filter(|w| w.control_after_generate)
            .position(|w| w.name == input)?;
        let key = if nth == 0 {
            "control_after_generate".to_owned()
        } else {
            format!("control_after_generate#{nth}")
        };
        if let Some(v) = named.get(&key) {
            return Some(v);
        }
    }
    let values = node.get("widgets_values")?.as_array()?;
    let mut at = 0;
    for w in widgets {
        if w.name == input {
            return w
                .control_after_generate
                .then(|| values.get(at + 1))
                .flatten();
        }
        at += 1 + extra_values(w);
    }
    None
}

/// Whether the front end draws `input` as a widget with a stored value.
fn is_widget(input: &InputSpec) -> bool {
    match &input.kind {
        InputKind::Link { types } => types.iter().any(|t| WIDGET_TYPES.contains(&t.as_str())),
        kind => kind.is_widget() && !input.force_input,
    }
}

/// Values the front end stores after a widget's own: its "control after generate" choice,
/// and the upload button of file combos.
fn extra_values(w: &InputSpec) -> usize {
    usize::from(w.control_after_generate) + usize::from(w.upload.is_some())
}

/// What a widget holds when the file gives it no value.
fn widget_default(w: &InputSpec) -> Option<Value> {
    match &w.kind {
        InputKind::Combo {
            options, default, ..
        } => default.clone().or_else(|| options.first().cloned()),
        kind => kind.default().cloned(),
    }
}

fn is_pseudo(key: &str) -> bool {
    let base = key.split('#').next().unwrap_or(key);
    PSEUDO_WIDGET.contains(&base)
}

/// Numbers as JavaScript writes them: whole floats without a decimal point, integers beyond
/// 2^53 rounded to the nearest double.
fn normalize_number(v: &Value) -> Value {
    const SAFE: u64 = 1 << 53;
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > SAFE {
                    return whole(u as f64).unwrap_or_else(|| v.clone());
                }
                return v.clone();
            }
            if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > SAFE {
                    return whole(i as f64).unwrap_or_else(|| v.clone());
                }
                return v.clone();
            }
            match n.as_f64() {
                Some(f) => whole(f).unwrap_or_else(|| v.clone()),
                None => v.clone(),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize_number).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize_number(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A whole double as an integer, where one holds it.
fn whole(f: f64) -> Option<Value> {
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        return Some(Value::Number(Number::from(f as u64)));
    }
    if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        return Some(Value::Number(Number::from(f as i64)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue() -> Catalogue {
        let text = json!({
            "Load": {"input": {"required": {}}, "output": ["IMAGE"]},
            "Blur": {"input": {"required": {"image": ["IMAGE"], "radius": ["INT", {"default": 1}]}},
                     "input_order": {"required": ["image", "radius"]}, "output": ["IMAGE"]},
            "Seeded": {"input": {"required": {"seed": ["INT", {"control_after_generate": true}],
                                              "ratio": ["FLOAT", {"default": 0.5}]}},
                       "input_order": {"required": ["seed", "ratio"]}, "output": ["IMAGE"]},
            "Save": {"input": {"required": {"images": ["IMAGE"], "prefix": ["STRING", {}]}},
                     "input_order": {"required": ["images", "prefix"]}, "output": [], "output_node": true}
        });
        Catalogue::from_json(&text.to_string())
            .map(|(c, _)| c)
            .unwrap_or_default()
    }

    fn node(id: u64, ty: &str, mode: u64, inputs: Value, widgets: Value) -> Value {
        json!({"id": id, "type": ty, "mode": mode, "inputs": inputs,
               "outputs": [{"name": "IMAGE", "type": "IMAGE"}], "widgets_values": widgets})
    }

    #[test]
    fn widgets_by_position_links_through_reroutes_bypass_and_mute() {
        let doc = json!({
            "nodes": [
                node(1, "Load", 0, json!([]), json!([])),
                node(2, "Reroute", 0, json!([{"name": "", "type": "*", "link": 1}]), json!([])),
                node(3, "Blur", 4, json!([{"name": "image", "type": "IMAGE", "link": 2}]), json!([5])),
                node(4, "Seeded", 0, json!([]), json!([12345, "randomize", 2.0])),
                node(5, "Save", 0, json!([{"name": "images", "type": "IMAGE", "link": 3}]), json!(["a"])),
                node(6, "Blur", 2, json!([{"name": "image", "type": "IMAGE", "link": 4}]), json!([7])),
                node(7, "Save", 0, json!([{"name": "images", "type": "IMAGE", "link": 5},
                                          {"name": "prefix", "type": "STRING", "widget": {"name": "prefix"}, "link": 9}]),
                     json!(["b"])),
                node(8, "Save", 0, json!([{"name": "images", "type": "IMAGE", "link": 6}]), json!(["c"]))
            ],
            "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 5, 0, "IMAGE"],
                      [4, 4, 0, 6, 0, "IMAGE"], [5, 6, 0, 7, 0, "IMAGE"], [6, 4, 0, 8, 0, "IMAGE"]]
        });
        let c = convert(&doc, &catalogue());
        let p = &c.prompt;
        // The reroute and the bypassed blur are bridged: the save reads the loader.
        assert_eq!(p["5"]["inputs"]["images"], json!(["1", 0]));
        assert!(!p.contains_key("2") && !p.contains_key("3") && !p.contains_key("6"));
        // The seed's control value is skipped; a whole float loses its decimal point.
        assert_eq!(p["4"]["inputs"], json!({"seed": 12345, "ratio": 2}));
        // A link to a muted node is dropped; link 9 is not in the table: reported, not fatal.
        assert_eq!(p["7"]["inputs"], json!({"prefix": "b"}));
        assert_eq!(p["8"]["inputs"]["images"], json!(["4", 0]));
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(c.problems[0].kind, UiProblemKind::MissingLink);
        assert_eq!(c.problems[0].pointer, "/nodes/6/inputs/1/link");
        assert_eq!(p["1"]["_meta"]["title"], "Load");
    }

    #[test]
    fn legacy_group_nodes_and_garbage_are_reported() {
        let doc = json!({
            "nodes": [node(1, "workflow>faces", 0, json!([]), json!([1, 2])), 5, {"id": 2}],
            "links": [[1, 1, 0, 2, 0, "IMAGE"], "x", null]
        });
        let c = convert(&doc, &catalogue());
        let messages: Vec<&str> = c.problems.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages[3].contains("`workflow>faces` is a legacy group node"),
            "{messages:?}"
        );
        assert_eq!(c.problems.len(), 4, "{messages:?}");
        assert!(convert(&json!([1]), &catalogue()).prompt.is_empty());
        assert!(
            convert(&json!({"nodes": 3, "links": {}}), &catalogue())
                .problems
                .len()
                == 1
        );
    }

    #[test]
    fn subgraphs_flatten_with_promoted_values_and_primitives_push_theirs() {
        let inner = json!({
            "id": "sg-1", "name": "inner",
            "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [10]},
                       {"name": "radius", "type": "INT", "linkIds": [11]}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [12]}],
            "nodes": [node(3, "Blur", 0, json!([{"name": "image", "type": "IMAGE", "link": 10},
                                                 {"name": "radius", "type": "INT", "widget": {"name": "radius"}, "link": 11}]),
                           json!([1]))],
            "links": [{"id": 10, "origin_id": -10, "origin_slot": 0, "target_id": 3, "target_slot": 0},
                      {"id": 11, "origin_id": -10, "origin_slot": 1, "target_id": 3, "target_slot": 1},
                      {"id": 12, "origin_id": 3, "origin_slot": 0, "target_id": -20, "target_slot": 0}]
        });
        let doc = json!({
            "nodes": [
                node(1, "Load", 0, json!([]), json!([])),
                node(9, "sg-1", 0, json!([{"name": "image", "type": "IMAGE", "link": 1}]), json!([8])),
                node(5, "Save", 0, json!([{"name": "images", "type": "IMAGE", "link": 2},
                                          {"name": "prefix", "type": "STRING", "widget": {"name": "prefix"}, "link": 3}]),
                     json!(["stale"])),
                node(6, "PrimitiveNode", 0, json!([]), json!(["from-primitive"])),
                node(7, "Widgety", 0, json!([]), json!([]))
            ],
            "links": [[1, 1, 0, 9, 0, "IMAGE"], [2, 9, 0, 5, 0, "IMAGE"], [3, 6, 0, 5, 1, "STRING"]],
            "definitions": {"subgraphs": [inner]}
        });
        let c = convert(&doc, &catalogue());
        let p = &c.prompt;
        assert_eq!(p["9:3"]["inputs"], json!({"radius": 8, "image": ["1", 0]}));
        assert_eq!(p["5"]["inputs"]["images"], json!(["9:3", 0]));
        assert_eq!(p["5"]["inputs"]["prefix"], "from-primitive");
        // The unknown class is reported once and kept, so links to it stay.
        assert_eq!(c.missing_classes.keys().collect::<Vec<_>>(), ["Widgety"]);
        assert_eq!(c.unknown_nodes().collect::<Vec<_>>(), ["7"]);
        // Integer-like ids first, ascending, as a JavaScript object lists them.
        assert_eq!(p.keys().collect::<Vec<_>>(), ["1", "5", "7", "9:3"]);
    }
}
