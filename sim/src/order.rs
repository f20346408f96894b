//! The order ComfyUI runs nodes in: its `ExecutionList`, which stages the outputs' uncached
//! ancestors and, among the nodes ready to run, prefers output nodes, then nodes feeding an
//! output, then nodes two steps from one (`ux_friendly_pick_node`), else the first staged.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::catalogue::Catalogue;

/// `[node_id, slot]` when a value is a link.
pub(crate) fn link(value: &Value) -> Option<(&str, u64)> {
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(from), Value::Number(slot)]) => Some((from, slot.as_u64()?)),
        _ => None,
    }
}

pub(crate) struct ExecutionList<'a> {
    prompt: &'a Map<String, Value>,
    catalogue: &'a Catalogue,
    cached: &'a HashSet<String>,
    /// Staged nodes, in the order they were staged.
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    /// Node → the nodes waiting on it, in the order they were linked.
    blocking: HashMap<String, Vec<String>>,
}

impl<'a> ExecutionList<'a> {
    pub(crate) fn new(
        prompt: &'a Map<String, Value>,
        catalogue: &'a Catalogue,
        cached: &'a HashSet<String>,
    ) -> Self {
        ExecutionList {
            prompt,
            catalogue,
            cached,
            pending: Vec::new(),
            block_count: HashMap::new(),
            blocking: HashMap::new(),
        }
    }

    /// `add_node`: stages a node and its uncached ancestors (depth first, from a stack).
    pub(crate) fn add_node(&mut self, id: &str) {
        let mut stack = vec![id.to_owned()];
        let mut links = Vec::new();
        while let Some(node) = stack.pop() {
            if self.pending.contains(&node) {
                continue;
            }
            self.pending.push(node.clone());
            self.block_count.insert(node.clone(), 0);
            self.blocking.insert(node.clone(), Vec::new());
            let inputs = self
                .prompt
                .get(&node)
                .and_then(|n| n.get("inputs"))
                .and_then(Value::as_object);
            for value in inputs.into_iter().flat_map(|i| i.values()) {
                if let Some((from, _)) = link(value) {
                    if !self.cached.contains(from) {
                        stack.push(from.to_owned());
                    }
                    links.push((from.to_owned(), node.clone()));
                }
            }
        }
        for (from, to) in links {
            if self.cached.contains(&from) {
                continue;
            }
            self.add_node(&from);
            let blocked = self.blocking.entry(from).or_default();
            if !blocked.contains(&to) {
                blocked.push(to.clone());
                *self.block_count.entry(to).or_default() += 1;
            }
        }
    }

    /// The next node to run, or `None` when nothing is ready (a cycle).
    pub(crate) fn next(&self) -> Option<String> {
        let ready: Vec<&String> = self
            .pending
            .iter()
            .filter(|n| self.block_count.get(*n).copied().unwrap_or(0) == 0)
            .collect();
        let blocked = |n: &str| self.blocking.get(n).cloned().unwrap_or_default();
        let is_output = |n: &str| {
            let class = self
                .prompt
                .get(n)
                .and_then(|v| v.get("class_type"))
                .and_then(Value::as_str);
            class.is_some_and(|c| self.catalogue.is_output(c))
        };
        ready
            .iter()
            .find(|n| is_output(n))
            .or_else(|| {
                ready
                    .iter()
                    .find(|n| blocked(n).iter().any(|b| is_output(b)))
            })
            .or_else(|| {
                ready.iter().find(|n| {
                    blocked(n)
                        .iter()
                        .any(|b| blocked(b).iter().any(|c| is_output(c)))
                })
            })
            .or_else(|| ready.first())
            .map(|n| (*n).clone())
    }

    /// `complete_node_execution`: unblocks what waited on `id`.
    pub(crate) fn complete(&mut self, id: &str) {
        self.pending.retain(|n| n != id);
        for to in self.blocking.remove(id).unwrap_or_default() {
            if let Some(c) = self.block_count.get_mut(&to) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(
        prompt: &Value,
        outputs: &[&str],
        cached: &[&str],
        catalogue: &Catalogue,
    ) -> Vec<String> {
        let prompt = prompt.as_object().cloned().unwrap_or_default();
        let cached: HashSet<String> = cached.iter().map(|s| (*s).to_owned()).collect();
        let mut list = ExecutionList::new(&prompt, catalogue, &cached);
        for o in outputs {
            list.add_node(o);
        }
        let mut out = Vec::new();
        while let Some(n) = list.next() {
            list.complete(&n);
            out.push(n);
        }
        out
    }

    #[test]
    fn outputs_run_as_soon_as_they_can() {
        let catalogue = Catalogue::new(json!({
            "EmptyImage": {"output_node": false}, "GetImageSize": {"output_node": false},
            "PreviewAny": {"output_node": true}, "SaveImageWebsocket": {"output_node": true},
            "PreviewImage": {"output_node": true}, "RegexExtract": {"output_node": false}
        }));
        // ws_binary_*.jsonl: 1, 4, 5, 2, 3.
        let binary = json!({
            "1": {"class_type": "EmptyImage", "inputs": {}},
            "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
            "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
            "5": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
        });
        assert_eq!(
            order(&binary, &["3", "4", "5"], &[], &catalogue),
            ["1", "4", "5", "2", "3"]
        );
        // ws_NOT_an_error_invalid_regex_is_swallowed.jsonl: 3 cached; 4, 1, 2.
        let regex = json!({
            "1": {"class_type": "RegexExtract", "inputs": {}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
            "3": {"class_type": "EmptyImage", "inputs": {}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
        });
        assert_eq!(
            order(&regex, &["2", "4"], &["3"], &catalogue),
            ["4", "1", "2"]
        );
    }
}
