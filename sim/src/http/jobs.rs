//! The 2026 jobs API (`shared/comfyui/NEWER.md`): `GET /api/jobs`, `GET /api/jobs/{id}`,
//! `POST /api/jobs/{id}/cancel` and `POST /api/jobs/cancel`, built from the queue and the
//! history as the server builds it.
//!
//! NEWER.md gives the statuses (`pending`, `in_progress`, `completed`, `failed`, `cancelled`),
//! the filters (`status=` a comma list, `sort_by=created_at|execution_duration`, `limit`,
//! `offset`), the item fields (`create_time`, `execution_start_time`, `execution_end_time`,
//! `execution_error`, `outputs_count`; with an id also `outputs`, `execution_status`,
//! `workflow{prompt,extra_data}`) and the cancel answer (`{"cancelled": bool}`, 200 with nothing
//! done for an unknown or finished id). It is silent on the rest, which is the simulator's own:
//! the list's envelope (`{"jobs": [...], "pagination": {...}}`), the `id` and `status` keys of an
//! item, times in ms since the epoch, newest (or longest) first, what `outputs_count` counts
//! (file entries), the 404 for an unknown id, the 400s for bad filters, and the batch cancel's
//! answer (`{"cancelled": [ids cancelled]}`). A pending job cancelled here leaves the queue
//! without a history entry, as `POST /queue {"delete"}` does, so it is unknown afterwards.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{first, respond};
use crate::history::Finished;
use crate::queue::QueueItem;
use crate::shared::{Shared, State, lock};

/// One job as the list shows it (and, with `detail`, as `/api/jobs/{id}` does).
struct Job<'a> {
    id: &'a str,
    status: &'static str,
    create_time: u64,
    start: Option<u64>,
    end: Option<u64>,
    error: Value,
    outputs: Option<&'a Value>,
    execution_status: Value,
    item: Option<&'a QueueItem>,
    /// The history's `prompt` array, when the queue no longer holds the item.
    recorded: Option<&'a Value>,
}

impl Job<'_> {
    fn duration(&self) -> Option<u64> {
        Some(self.end?.saturating_sub(self.start?))
    }

    fn to_json(&self, detail: bool) -> Value {
        let mut item = json!({
            "id": self.id,
            "status": self.status,
            "create_time": self.create_time,
            "execution_start_time": self.start,
            "execution_end_time": self.end,
            "execution_error": self.error,
            "outputs_count": self.outputs.map_or(0, count_files),
        });
        if detail && let Some(map) = item.as_object_mut() {
            let (prompt, extra_data) = match (self.item, self.recorded) {
                (Some(q), _) => (
                    Value::Object(q.prompt.clone()),
                    Value::Object(q.extra_data.clone()),
                ),
                (None, Some(Value::Array(a))) => (
                    a.get(2).cloned().unwrap_or(Value::Null),
                    a.get(3).cloned().unwrap_or(Value::Null),
                ),
                _ => (Value::Null, Value::Null),
            };
            map.insert(
                "outputs".to_owned(),
                self.outputs.cloned().unwrap_or_else(|| json!({})),
            );
            map.insert("execution_status".to_owned(), self.execution_status.clone());
            map.insert(
                "workflow".to_owned(),
                json!({"prompt": prompt, "extra_data": extra_data}),
            );
        }
        item
    }
}

/// File entries (objects with a `filename`) among a history entry's outputs.
fn count_files(outputs: &Value) -> usize {
    outputs
        .as_object()
        .into_iter()
        .flat_map(Map::values)
        .filter_map(Value::as_object)
        .flat_map(Map::values)
        .filter_map(Value::as_array)
        .flatten()
        .filter(|v| v.get("filename").is_some())
        .count()
}

fn queued<'a>(item: &'a QueueItem, running: bool) -> Job<'a> {
    Job {
        id: &item.prompt_id,
        status: if running { "in_progress" } else { "pending" },
        create_time: item.created_ms,
        start: running.then_some(item.started_ms),
        end: None,
        error: Value::Null,
        outputs: None,
        execution_status: Value::Null,
        item: Some(item),
        recorded: None,
    }
}

fn finished<'a>(id: &'a str, entry: &'a Value, job: &'a Finished) -> Job<'a> {
    Job {
        id,
        status: job.status,
        create_time: job.create_time,
        start: Some(job.start_time),
        end: Some(job.end_time),
        error: job.error.clone(),
        outputs: entry.get("outputs"),
        execution_status: entry.get("status").cloned().unwrap_or(Value::Null),
        item: None,
        recorded: entry.get("prompt"),
    }
}

/// Every job the server knows: running, pending, then finished.
fn all(state: &State) -> Vec<Job<'_>> {
    let mut jobs: Vec<Job<'_>> = state
        .queue
        .running()
        .map(|r| queued(r, true))
        .into_iter()
        .collect();
    jobs.extend(state.queue.pending().iter().map(|i| queued(i, false)));
    jobs.extend(
        state
            .history
            .finished()
            .map(|(id, entry, job)| finished(id, entry, job)),
    );
    jobs
}

fn bad_request(message: &str) -> Response {
    respond::json(StatusCode::BAD_REQUEST, &json!({"error": message}))
}

/// A non-negative integer query value.
fn count(query: &[(String, String)], key: &str) -> Result<Option<usize>, Box<Response>> {
    match first(query, key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
            Box::new(bad_request(&format!(
                "{key} must be a non-negative integer"
            )))
        }),
    }
}

/// `GET /api/jobs`.
pub(crate) fn list(shared: &Shared, query: &[(String, String)]) -> Response {
    let limit = match count(query, "limit") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let offset = match count(query, "offset") {
        Ok(v) => v.unwrap_or(0),
        Err(r) => return *r,
    };
    let by_duration = match first(query, "sort_by").unwrap_or("created_at") {
        "created_at" => false,
        "execution_duration" => true,
        _ => return bad_request("sort_by must be created_at or execution_duration"),
    };
    let wanted: Option<Vec<&str>> =
        first(query, "status").map(|s| s.split(',').map(str::trim).collect());
    let state = lock(&shared.state);
    let mut jobs: Vec<Job<'_>> = all(&state)
        .into_iter()
        .filter(|j| wanted.as_ref().is_none_or(|w| w.contains(&j.status)))
        .collect();
    if by_duration {
        jobs.sort_by_key(|j| std::cmp::Reverse(j.duration()));
    } else {
        jobs.sort_by_key(|j| std::cmp::Reverse(j.create_time));
    }
    let total = jobs.len();
    let page: Vec<Value> = jobs
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|j| j.to_json(false))
        .collect();
    let has_more = offset.saturating_add(page.len()) < total;
    respond::ok_json(&json!({
        "jobs": page,
        "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": has_more},
    }))
}

/// `GET /api/jobs/{id}`.
pub(crate) fn one(shared: &Shared, id: &str) -> Response {
    let state = lock(&shared.state);
    match all(&state).into_iter().find(|j| j.id == id) {
        Some(job) => respond::ok_json(&job.to_json(true)),
        None => respond::json(StatusCode::NOT_FOUND, &json!({"error": "Job not found"})),
    }
}

/// Cancels one job under the state lock: the running prompt is interrupted (the worker stops
/// at its next check, and the flag is reset before any later prompt starts, so no other
/// prompt is hit), pending copies leave the queue. Whether anything was cancelled.
fn cancel_locked(shared: &Shared, state: &mut State, id: &str) -> bool {
    let mut cancelled = false;
    if state.queue.running().is_some_and(|r| r.prompt_id == id) {
        shared.interrupt.store(true, Ordering::SeqCst);
        cancelled = true;
    }
    // The server does not de-duplicate ids: every pending copy goes.
    while state.queue.delete(id) {
        cancelled = true;
    }
    if cancelled {
        shared.queue_updated(state);
    }
    cancelled
}

/// `POST /api/jobs/{id}/cancel`.
pub(crate) fn cancel(shared: &Shared, id: &str) -> Response {
    shared.job_cancels.fetch_add(1, Ordering::SeqCst);
    let mut state = lock(&shared.state);
    let cancelled = cancel_locked(shared, &mut state, id);
    tracing::debug!(job = id, cancelled, "job cancel");
    respond::ok_json(&json!({"cancelled": cancelled}))
}

/// `POST /api/jobs/cancel {"job_ids": [...]}`.
pub(crate) fn cancel_many(shared: &Shared, body: &[u8]) -> Response {
    shared.job_cancels.fetch_add(1, Ordering::SeqCst);
    let ids: Option<Vec<String>> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("job_ids").cloned())
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(ids) = ids else {
        return bad_request("job_ids must be a list of job ids");
    };
    let mut state = lock(&shared.state);
    let cancelled: Vec<&String> = ids
        .iter()
        .filter(|id| cancel_locked(shared, &mut state, id))
        .collect();
    respond::ok_json(&json!({"cancelled": cancelled}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_count_counts_file_entries() {
        let outputs = json!({
            "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"},
                             {"filename": "b.png", "subfolder": "", "type": "temp"}],
                  "animated": [true]},
            "4": {"text": ["hello"]},
        });
        assert_eq!(count_files(&outputs), 2);
        assert_eq!(count_files(&Value::Null), 0);
    }
}
