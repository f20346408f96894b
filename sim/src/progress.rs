//! ComfyUI's per-prompt progress registry, which every `progress_state` frame shows whole.
//!
//! Its number types are part of the contract: a node that starts runs `0.0/1.0` (floats), a
//! step update carries the sampler's integers, and a node finished without starting (a cached
//! output replayed) is created as `0/1` integers, which is why fully cached runs show integers.

use serde_json::{Map, Value, json};

pub(crate) struct Progress {
    prompt_id: String,
    nodes: Vec<(String, Entry)>,
}

struct Entry {
    state: &'static str,
    value: Value,
    max: Value,
}

impl Progress {
    pub(crate) fn new(prompt_id: &str) -> Self {
        Progress {
            prompt_id: prompt_id.to_owned(),
            nodes: Vec::new(),
        }
    }

    fn entry(&mut self, node: &str) -> &mut Entry {
        let at = match self.nodes.iter().position(|(n, _)| n == node) {
            Some(at) => at,
            None => {
                self.nodes.push((
                    node.to_owned(),
                    Entry {
                        state: "pending",
                        value: json!(0),
                        max: json!(1),
                    },
                ));
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[at].1
    }

    pub(crate) fn start(&mut self, node: &str) {
        let e = self.entry(node);
        e.state = "running";
        e.value = json!(0.0);
        e.max = json!(1.0);
    }

    pub(crate) fn update(&mut self, node: &str, value: u64, max: u64) {
        let e = self.entry(node);
        e.state = "running";
        e.value = json!(value);
        e.max = json!(max);
    }

    pub(crate) fn finish(&mut self, node: &str) {
        let e = self.entry(node);
        e.state = "finished";
        e.value = e.max.clone();
    }

    /// The `progress_state` frame: every node that is not pending.
    pub(crate) fn frame(&self) -> Value {
        let nodes: Map<String, Value> = self
            .nodes
            .iter()
            .filter(|(_, e)| e.state != "pending")
            .map(|(id, e)| {
                (
                    id.clone(),
                    json!({
                        "value": e.value,
                        "max": e.max,
                        "state": e.state,
                        "node_id": id,
                        "prompt_id": self.prompt_id,
                        "display_node_id": id,
                        "parent_node_id": null,
                        "real_node_id": id,
                    }),
                )
            })
            .collect();
        json!({"type": "progress_state", "data": {"prompt_id": self.prompt_id, "nodes": nodes}})
    }
}
