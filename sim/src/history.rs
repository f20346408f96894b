//! ComfyUI's prompt history: an insertion-ordered map of prompt id to entry, capped as
//! ComfyUI caps it, where an entry may be written "late" (`Timing::history_delay_ms`) and stays
//! invisible until then.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use tokio::time::Instant;

/// ComfyUI's `MAXIMUM_HISTORY_SIZE`.
const MAX_ENTRIES: usize = 10_000;

/// A Python dict in miniature: entries in insertion order (by a sequence number) and an index
/// by prompt id, so that lookups and dropping the oldest stay cheap at 10,000 entries.
#[derive(Debug, Default)]
pub(crate) struct History {
    entries: BTreeMap<u64, Entry>,
    index: HashMap<String, u64>,
    next: u64,
}

#[derive(Debug)]
struct Entry {
    prompt_id: String,
    value: Value,
    job: Finished,
    visible_at: Instant,
}

/// What the jobs API says about a finished prompt beyond its history entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finished {
    /// When it was queued, started and ended, in ms since the epoch.
    pub(crate) create_time: u64,
    pub(crate) start_time: u64,
    pub(crate) end_time: u64,
    /// `completed`, `failed` or `cancelled`.
    pub(crate) status: &'static str,
    /// The `execution_error` data of a failed prompt, else null.
    pub(crate) error: Value,
}

impl Finished {
    #[cfg(test)]
    pub(crate) fn test() -> Finished {
        Finished {
            create_time: 0,
            start_time: 0,
            end_time: 0,
            status: "completed",
            error: Value::Null,
        }
    }
}

impl History {
    /// `PromptQueue.task_done`: when the history holds more than `MAXIMUM_HISTORY_SIZE`
    /// entries the oldest is dropped, then the entry is assigned (a known id keeps its place,
    /// as in a Python dict). So it holds at most 10,001 entries, as ComfyUI's does.
    pub(crate) fn insert(
        &mut self,
        prompt_id: String,
        value: Value,
        job: Finished,
        visible_at: Instant,
    ) {
        if self.entries.len() > MAX_ENTRIES
            && let Some((_, oldest)) = self.entries.pop_first()
        {
            self.index.remove(&oldest.prompt_id);
        }
        if let Some(e) = self
            .index
            .get(&prompt_id)
            .and_then(|seq| self.entries.get_mut(seq))
        {
            e.value = value;
            e.job = job;
            e.visible_at = visible_at;
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(prompt_id.clone(), seq);
        self.entries.insert(
            seq,
            Entry {
                prompt_id,
                value,
                job,
                visible_at,
            },
        );
    }

    pub(crate) fn delete(&mut self, prompt_id: &str) {
        if let Some(seq) = self.index.remove(prompt_id) {
            self.entries.remove(&seq);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// `GET /history/{id}`: `{id: entry}` or `{}`.
    pub(crate) fn one(&self, prompt_id: &str) -> Map<String, Value> {
        let now = Instant::now();
        self.index
            .get(prompt_id)
            .and_then(|seq| self.entries.get(seq))
            .filter(|e| e.visible_at <= now)
            .map(|e| (e.prompt_id.clone(), e.value.clone()))
            .into_iter()
            .collect()
    }

    /// Every visible entry, oldest first: `(prompt id, entry, job)`.
    pub(crate) fn finished(&self) -> impl Iterator<Item = (&str, &Value, &Finished)> {
        let now = Instant::now();
        self.entries
            .values()
            .filter(move |e| e.visible_at <= now)
            .map(|e| (e.prompt_id.as_str(), &e.value, &e.job))
    }

    /// `PromptQueue.get_history(max_items, offset)`, with its arithmetic.
    pub(crate) fn list(&self, max_items: Option<i64>, offset: i64) -> Map<String, Value> {
        let now = Instant::now();
        let visible: Vec<&Entry> = self
            .entries
            .values()
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
            h.insert(id.to_owned(), json!({}), Finished::test(), now);
        }
        let keys: Vec<String> = h.list(Some(2), -1).keys().cloned().collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(h.list(None, -1).len(), 3);
        assert_eq!(h.list(Some(1), 0).len(), 1);
    }

    #[test]
    fn the_oldest_entries_go_first_past_comfyuis_maximum() {
        let mut h = History::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 5 {
            h.insert(format!("p{i}"), json!({"n": i}), Finished::test(), now);
        }
        // ComfyUI drops one when it holds more than 10,000, before adding: 10,001 stay.
        assert_eq!(h.len(), MAX_ENTRIES + 1);
        for gone in ["p0", "p1", "p2", "p3"] {
            assert!(h.one(gone).is_empty(), "{gone} should be gone");
        }
        assert_eq!(h.one("p4")["p4"], json!({"n": 4}));
        let newest: Vec<String> = h.list(Some(2), -1).keys().cloned().collect();
        assert_eq!(newest, ["p10003", "p10004"]);
        assert_eq!(
            h.list(Some(1), 0).keys().next().map(String::as_str),
            Some("p4")
        );
        // At the cap, rewriting the oldest id drops it first: it comes back as the newest.
        h.insert("p4".into(), json!({"n": "again"}), Finished::test(), now);
        assert_eq!(
            h.list(Some(1), 0).keys().next().map(String::as_str),
            Some("p5")
        );
        assert_eq!(h.list(Some(1), -1)["p4"], json!({"n": "again"}));
        // Under it, a rewritten id keeps its place; a deleted one comes back at the end.
        h.delete("p7");
        h.insert("p5".into(), json!({"n": 55}), Finished::test(), now);
        assert_eq!(h.list(Some(1), 0)["p5"], json!({"n": 55}));
        h.delete("p6");
        h.insert("p6".into(), json!({}), Finished::test(), now);
        assert_eq!(
            h.list(Some(1), -1).keys().next().map(String::as_str),
            Some("p6")
        );
        assert_eq!(h.len(), MAX_ENTRIES);
    }
}
