//! ComfyUI's prompt history: an insertion-ordered map of prompt id to entry, capped at 10000,
//! where an entry may be written "late" (`Timing::history_delay_ms`) and stays invisible until
//! then.

use serde_json::{Map, Value};
use tokio::time::Instant;

/// ComfyUI's `MAXIMUM_HISTORY_SIZE`.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct History {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    prompt_id: String,
    value: Value,
    visible_at: Instant,
}

impl History {
    /// Like a Python dict assignment: a known id keeps its place.
    pub(crate) fn insert(&mut self, prompt_id: String, value: Value, visible_at: Instant) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.prompt_id == prompt_id) {
            e.value = value;
            e.visible_at = visible_at;
            return;
        }
        if self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            prompt_id,
            value,
            visible_at,
        });
    }

    pub(crate) fn delete(&mut self, prompt_id: &str) {
        self.entries.retain(|e| e.prompt_id != prompt_id);
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// `GET /history/{id}`: `{id: entry}` or `{}`.
    pub(crate) fn one(&self, prompt_id: &str) -> Map<String, Value> {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(|e| e.prompt_id == prompt_id && e.visible_at <= now)
            .map(|e| (e.prompt_id.clone(), e.value.clone()))
            .collect()
    }

    /// `PromptQueue.get_history(max_items, offset)`, with its arithmetic.
    pub(crate) fn list(&self, max_items: Option<i64>, offset: i64) -> Map<String, Value> {
        let now = Instant::now();
        let visible: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.visible_at <= now)
            .collect();
        let len = i64::try_from(visible.len()).unwrap_or(i64::MAX);
        let offset = match max_items {
            Some(max) if offset < 0 => len - max,
            _ => offset,
        };
        let mut out = Map::new();
        for (i, e) in visible.iter().enumerate() {
            let i = i64::try_from(i).unwrap_or(i64::MAX);
            if i >= offset {
                out.insert(e.prompt_id.clone(), e.value.clone());
                if max_items.is_some_and(|max| i64::try_from(out.len()).unwrap_or(i64::MAX) >= max)
                {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_items_keeps_the_newest() {
        let mut h = History::default();
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            h.insert(id.to_owned(), json!({}), now);
        }
        let keys: Vec<String> = h.list(Some(2), -1).keys().cloned().collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(h.list(None, -1).len(), 3);
        assert_eq!(h.list(Some(1), 0).len(), 1);
    }
}
