//! ComfyUI's `PromptQueue`: pending prompts in a binary heap ordered by `(number, prompt_id)`,
//! the running one, and the `/free` flags.
//!
//! The heap is Python's `heapq` algorithm, step for step, because `GET /queue` shows the raw
//! heap array (`queue_pending` is not sorted: `[-28, 25, 27, 26]` in the recording) and clients
//! may rely on that order.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// One queued prompt: `(number, prompt_id, prompt, extra_data, outputs_to_execute)`.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    /// When `POST /prompt` took it, in ms since the epoch (the jobs API's `create_time`).
    pub(crate) created_ms: u64,
    /// When the worker took it (0 before), in ms since the epoch.
    pub(crate) started_ms: u64,
    pub(crate) number: Value,
    pub(crate) prompt_id: String,
    pub(crate) prompt: Map<String, Value>,
    pub(crate) extra_data: Map<String, Value>,
    pub(crate) outputs: Vec<String>,
}

impl QueueItem {
    /// The five-element array `/queue` and `/history` show.
    pub(crate) fn to_json(&self) -> Value {
        Value::Array(vec![
            self.number.clone(),
            Value::String(self.prompt_id.clone()),
            Value::Object(self.prompt.clone()),
            Value::Object(self.extra_data.clone()),
            Value::Array(self.outputs.iter().cloned().map(Value::String).collect()),
        ])
    }

    pub(crate) fn client_id(&self) -> Option<String> {
        self.extra_data.get("client_id").map(crate::pyjson::str)
    }

    fn less(&self, other: &QueueItem) -> bool {
        let a = self.number.as_f64().unwrap_or(0.0);
        let b = other.number.as_f64().unwrap_or(0.0);
        match a.partial_cmp(&b) {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => self.prompt_id < other.prompt_id,
            _ => false,
        }
    }
}

/// `/free` flags, applied by the worker between prompts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FreeFlags {
    pub(crate) unload_models: bool,
    pub(crate) free_memory: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PromptQueue {
    heap: Vec<QueueItem>,
    running: Option<QueueItem>,
    flags: FreeFlags,
}

impl PromptQueue {
    pub(crate) fn put(&mut self, item: QueueItem) {
        self.heap.push(item);
        let last = self.heap.len() - 1;
        sift_down(&mut self.heap, 0, last);
    }

    /// Pops the next prompt and marks it running.
    pub(crate) fn get(&mut self) -> Option<QueueItem> {
        let last = self.heap.pop()?;
        let mut item = if self.heap.is_empty() {
            last
        } else {
            let first = std::mem::replace(&mut self.heap[0], last);
            sift_up(&mut self.heap, 0);
            first
        };
        item.started_ms = crate::worker::now_ms();
        self.running = Some(item.clone());
        Some(item)
    }

    pub(crate) fn task_done(&mut self) -> Option<QueueItem> {
        self.running.take()
    }

    /// `delete_queue_item`: removes the first pending prompt with this id.
    pub(crate) fn delete(&mut self, prompt_id: &str) -> bool {
        let Some(at) = self.heap.iter().position(|i| i.prompt_id == prompt_id) else {
            return false;
        };
        self.heap.remove(at);
        heapify(&mut self.heap);
        true
    }

    pub(crate) fn wipe(&mut self) {
        self.heap.clear();
    }

    pub(crate) fn remaining(&self) -> usize {
        self.heap.len() + usize::from(self.running.is_some())
    }

    pub(crate) fn running(&self) -> Option<&QueueItem> {
        self.running.as_ref()
    }

    pub(crate) fn pending(&self) -> &[QueueItem] {
        &self.heap
    }

    pub(crate) fn set_flags(&mut self, flags: FreeFlags) {
        self.flags.unload_models |= flags.unload_models;
        self.flags.free_memory |= flags.free_memory;
    }

    pub(crate) fn take_flags(&mut self) -> FreeFlags {
        std::mem::take(&mut self.flags)
    }
}

/// `heapq._siftdown`.
fn sift_down(heap: &mut [QueueItem], start: usize, mut pos: usize) {
    while pos > start {
        let parent = (pos - 1) >> 1;
        if heap[pos].less(&heap[parent]) {
            heap.swap(pos, parent);
            pos = parent;
        } else {
            break;
        }
    }
}

/// `heapq._siftup`: walks the smaller child down to a leaf, then sifts back.
fn sift_up(heap: &mut [QueueItem], mut pos: usize) {
    let end = heap.len();
    let start = pos;
    let mut child = 2 * pos + 1;
    while child < end {
        let right = child + 1;
        if right < end && !heap[child].less(&heap[right]) {
            child = right;
        }
        heap.swap(pos, child);
        pos = child;
        child = 2 * pos + 1;
    }
    sift_down(heap, start, pos);
}

fn heapify(heap: &mut [QueueItem]) {
    for i in (0..heap.len() / 2).rev() {
        sift_up(heap, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(number: i64, id: &str) -> QueueItem {
        QueueItem {
            created_ms: 0,
            started_ms: 0,
            number: json!(number),
            prompt_id: id.to_owned(),
            prompt: Map::new(),
            extra_data: Map::new(),
            outputs: vec![],
        }
    }

    fn ids(q: &PromptQueue) -> Vec<&str> {
        q.pending().iter().map(|i| i.prompt_id.as_str()).collect()
    }

    #[test]
    fn pending_order_is_the_recorded_heap_array() {
        let mut q = PromptQueue::default();
        q.put(item(24, "a"));
        assert_eq!(q.get().map(|i| i.prompt_id), Some("a".to_owned()));
        q.put(item(25, "b"));
        q.put(item(26, "c"));
        q.put(item(27, "d"));
        q.put(item(-28, "front"));
        assert_eq!(ids(&q), ["front", "b", "d", "c"]);
        assert!(q.delete("b"));
        assert_eq!(ids(&q), ["front", "d", "c"]);
        assert_eq!(q.remaining(), 4);
    }
}
