//! The API-format graph: `{"ID": {"class_type": "...", "inputs": {...}}, ...}`.
//!
//! This is what ComfyUI's `POST /prompt` takes. Parsing is tolerant: every node that has the
//! right shape is kept, every one that does not becomes a [`ShapeProblem`], so checks can
//! still run over the rest. As in ComfyUI, any array input value is a link
//! `[source_node_id, output_slot]`.

use indexmap::IndexMap;
use serde_json::Value;

use crate::json_spans::pointer;

/// A parsed graph: nodes in file order.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: IndexMap<String, Node>,
    /// Ids present in the document whose node could not be read (reported as shape
    /// problems); links to them are not reported again.
    pub broken: std::collections::HashSet<String>,
    /// Nodes whose `inputs` could not be read; their inputs are not checked.
    pub unreadable_inputs: std::collections::HashSet<String>,
    /// The document is not a node map at all.
    pub root_invalid: bool,
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    pub class_type: String,
    pub inputs: IndexMap<String, Value>,
    pub title: Option<String>,
}

/// What an input of a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValue<'a> {
    /// Output `slot` of node `node`.
    Link { node: &'a str, slot: u64 },
    /// A literal value.
    Literal(&'a Value),
    /// An array that is not a well-formed link.
    BadLink(String),
}

/// Classifies an input value the way ComfyUI does: arrays are links.
pub fn classify(value: &Value) -> InputValue<'_> {
    match value {
        Value::Array(a) => match a.as_slice() {
            [Value::String(node), slot] => match slot.as_u64() {
                Some(slot) => InputValue::Link { node, slot },
                None => InputValue::BadLink(
                    "the output slot of a link is a non-negative integer".into(),
                ),
            },
            [Value::Number(n), slot] => InputValue::BadLink(format!(
                "node ids in links are strings: write `[\"{n}\", {slot}]`"
            )),
            _ => InputValue::BadLink("a link is `[\"NODE_ID\", OUTPUT_SLOT]`".into()),
        },
        other => InputValue::Literal(other),
    }
}

/// A part of the document that is not a valid graph node, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeProblem {
    pub pointer: String,
    pub message: String,
    pub help: Option<String>,
}

/// Which flavour of ComfyUI JSON a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Api,
    /// What ComfyUI's "Save" writes (`nodes` and `links` arrays).
    Ui,
}

pub fn detect_format(value: &Value) -> Format {
    match value {
        Value::Object(m)
            if m.get("nodes").is_some_and(Value::is_array) && m.contains_key("links") =>
        {
            Format::Ui
        }
        _ => Format::Api,
    }
}

impl Graph {
    /// Parses an API-format document; a `{"prompt": {...}}` request body is accepted too.
    pub fn parse(value: &Value) -> (Graph, Vec<ShapeProblem>, String) {
        let mut problems = Vec::new();
        let mut graph = Graph::default();
        let (root, base) = match value.get("prompt") {
            Some(p @ Value::Object(_))
                if value
                    .get("prompt")
                    .and_then(|p| p.get("class_type"))
                    .is_none() =>
            {
                (p, "/prompt".to_owned())
            }
            _ => (value, String::new()),
        };
        let Some(obj) = root.as_object() else {
            graph.root_invalid = true;
            problems.push(ShapeProblem {
                pointer: base.clone(),
                message: format!(
                    "an API-format graph is a JSON object of nodes, not {}",
                    kind_of(root)
                ),
                help: None,
            });
            return (graph, problems, base);
        };
        for (id, node) in obj {
            let ptr = format!("{base}{}", pointer([id.as_str()]));
            let Some(n) = node.as_object() else {
                graph.broken.insert(id.clone());
                problems.push(ShapeProblem {
                    pointer: ptr,
                    message: format!("node `{id}` is {}, not an object", kind_of(node)),
                    help: Some("a node is `{\"class_type\": \"...\", \"inputs\": {...}}`".into()),
                });
                continue;
            };
            let class_type = match n.get("class_type") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    graph.broken.insert(id.clone());
                    problems.push(ShapeProblem {
                        pointer: format!("{ptr}/class_type"),
                        message: format!(
                            "`class_type` of node `{id}` is {}, not a string",
                            kind_of(other)
                        ),
                        help: None,
                    });
                    continue;
                }
                None => {
                    graph.broken.insert(id.clone());
                    problems.push(ShapeProblem {
                        pointer: ptr,
                        message: format!("node `{id}` has no `class_type`"),
                        help: Some(
                            "every node names its class: `\"class_type\": \"KSampler\"`".into(),
                        ),
                    });
                    continue;
                }
            };
            let inputs = match n.get("inputs") {
                Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                None => IndexMap::new(),
                Some(other) => {
                    graph.unreadable_inputs.insert(id.clone());
                    problems.push(ShapeProblem {
                        pointer: format!("{ptr}/inputs"),
                        message: format!(
                            "`inputs` of node `{id}` is {}, not an object",
                            kind_of(other)
                        ),
                        help: None,
                    });
                    IndexMap::new()
                }
            };
            let title = n
                .get("_meta")
                .and_then(|m| m.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            graph.nodes.insert(
                id.clone(),
                Node {
                    class_type,
                    inputs,
                    title,
                },
            );
        }
        (graph, problems, base)
    }

    /// Node ids whose outputs feed `id`, with the input names.
    pub fn links_of<'a>(
        &'a self,
        node: &'a Node,
    ) -> impl Iterator<Item = (&'a str, &'a str, u64)> + 'a {
        node.inputs
            .iter()
            .filter_map(|(name, v)| match classify(v) {
                InputValue::Link { node, slot } => Some((name.as_str(), node, slot)),
                _ => None,
            })
    }
}

/// "a string", "an array", ... for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_nodes_and_reports_bad_ones() {
        let v = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 64}},
            "2": {"inputs": {}},
            "3": 7,
            "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}
        });
        let (g, problems, _) = Graph::parse(&v);
        assert_eq!(g.nodes.keys().collect::<Vec<_>>(), ["1", "4"]);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].pointer, "/2");
        let links: Vec<_> = g.links_of(&g.nodes["4"]).collect();
        assert_eq!(links, [("images", "1", 0)]);
    }

    #[test]
    fn request_body_is_accepted() {
        let v = json!({"prompt": {"1": {"class_type": "X", "inputs": {}}}, "client_id": "c"});
        let (g, problems, base) = Graph::parse(&v);
        assert!(problems.is_empty());
        assert_eq!(base, "/prompt");
        assert_eq!(g.nodes.len(), 1);
    }

    #[test]
    fn classify_links() {
        assert_eq!(
            classify(&json!(["4", 1])),
            InputValue::Link { node: "4", slot: 1 }
        );
        assert!(matches!(classify(&json!([4, 1])), InputValue::BadLink(_)));
        assert!(matches!(
            classify(&json!(["4", -1])),
            InputValue::BadLink(_)
        ));
        assert!(matches!(classify(&json!("x")), InputValue::Literal(_)));
    }
}
