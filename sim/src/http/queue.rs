//! The queue and history endpoints: `GET/POST /queue`, `POST /interrupt`, `POST /free`,
//! `GET/POST /history`, `GET /history/{id}`, with ComfyUI's answers to odd bodies (malformed
//! JSON raises a 500 everywhere but `/interrupt`, which treats it as "no body").

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{first, respond};
use crate::memory::FreeCall;
use crate::queue::FreeFlags;
use crate::shared::{Shared, lock};

pub(crate) fn get_queue(shared: &Shared) -> Response {
    let state = lock(&shared.state);
    let running: Vec<Value> = state
        .queue
        .running()
        .map(|i| i.to_json())
        .into_iter()
        .collect();
    let pending: Vec<Value> = state.queue.pending().iter().map(|i| i.to_json()).collect();
    respond::ok_json(&json!({"queue_running": running, "queue_pending": pending}))
}

/// The ids a `delete` value names, iterating it as Python would; `None` when it cannot be.
fn ids(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Value::Object(map) => Some(map.keys().cloned().collect()),
        Value::String(s) => Some(s.chars().map(String::from).collect()),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A body with `clear`/`delete` keys (`/queue`, `/history`); lists and strings have no keys.
enum ClearDelete {
    Ops { clear: bool, delete: Vec<String> },
    Nothing,
    Crash,
}

fn clear_delete(body: &[u8]) -> ClearDelete {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let delete = match map.get("delete") {
                None => Vec::new(),
                Some(v) => match ids(v) {
                    Some(ids) => ids,
                    None => return ClearDelete::Crash,
                },
            };
            ClearDelete::Ops {
                clear: truthy(map.get("clear")),
                delete,
            }
        }
        Ok(Value::Array(_) | Value::String(_)) => ClearDelete::Nothing,
        _ => ClearDelete::Crash,
    }
}

/// The `clear`/`delete` operations of a body, or the answer ComfyUI gives when there are none
/// (200) or the body breaks its handler (500).
fn ops(body: &[u8]) -> Result<(bool, Vec<String>), Box<Response>> {
    match clear_delete(body) {
        ClearDelete::Ops { clear, delete } => Ok((clear, delete)),
        ClearDelete::Nothing => Err(Box::new(respond::empty(StatusCode::OK))),
        ClearDelete::Crash => Err(Box::new(respond::internal_error())),
    }
}

pub(crate) fn post_queue(shared: &Shared, body: &[u8]) -> Response {
    let (clear, delete) = match ops(body) {
        Ok(ops) => ops,
        Err(answer) => return *answer,
    };
    let mut state = lock(&shared.state);
    if clear {
        state.queue.wipe();
        shared.queue_updated(&state);
    }
    for id in delete {
        if state.queue.delete(&id) {
            shared.queue_updated(&state);
        }
    }
    respond::empty(StatusCode::OK)
}

pub(crate) fn post_history(shared: &Shared, body: &[u8]) -> Response {
    let (clear, delete) = match ops(body) {
        Ok(ops) => ops,
        Err(answer) => return *answer,
    };
    let mut state = lock(&shared.state);
    if clear {
        state.history.clear();
    }
    for id in delete {
        state.history.delete(&id);
    }
    respond::empty(StatusCode::OK)
}

/// No body (or not JSON): interrupt whatever runs; `{"prompt_id": X}`: only if X runs.
pub(crate) fn post_interrupt(shared: &Shared, body: &[u8]) -> Response {
    let target = match serde_json::from_slice::<Value>(body) {
        Err(_) => None,
        Ok(Value::Object(map)) => map.get("prompt_id").filter(|v| truthy(Some(v))).cloned(),
        Ok(_) => return respond::internal_error(),
    };
    let interrupt = match target {
        None => true,
        Some(id) => {
            let state = lock(&shared.state);
            state
                .queue
                .running()
                .is_some_and(|r| id.as_str() == Some(r.prompt_id.as_str()))
        }
    };
    if interrupt {
        shared.interrupt.store(true, Ordering::SeqCst);
    }
    respond::empty(StatusCode::OK)
}

/// Sets flags the worker applies once the running prompt is done.
pub(crate) fn post_free(shared: &Shared, body: &[u8]) -> Response {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return respond::internal_error();
    };
    let flags = FreeFlags {
        unload_models: truthy(map.get("unload_models")),
        free_memory: truthy(map.get("free_memory")),
    };
    lock(&shared.state).queue.set_flags(flags);
    lock(&shared.memory_log).frees.push(FreeCall {
        at: shared.timeline.elapsed(),
        unload_models: flags.unload_models,
        free_memory: flags.free_memory,
    });
    shared.work.notify_one();
    respond::empty(StatusCode::OK)
}

/// Python's `int()` on a query value.
fn py_int(s: &str) -> Option<i64> {
    s.trim().replace('_', "").parse().ok()
}

async fn slow_history(shared: &Shared) {
    let delay = lock(&shared.faults).take_slow_history();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

pub(crate) async fn get_history(shared: &Shared, query: &[(String, String)]) -> Response {
    let max_items = match first(query, "max_items").map(py_int) {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => return respond::internal_error(),
    };
    let offset = match first(query, "offset").map(py_int) {
        None => -1,
        Some(Some(n)) => n,
        Some(None) => return respond::internal_error(),
    };
    slow_history(shared).await;
    let list = lock(&shared.state).history.list(max_items, offset);
    respond::ok_json(&Value::Object(list))
}

pub(crate) async fn get_history_id(shared: &Shared, id: &str) -> Response {
    slow_history(shared).await;
    let one = lock(&shared.state).history.one(id);
    respond::ok_json(&Value::Object(one))
}
