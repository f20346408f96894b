//! `POST /prompt` and `GET /prompt`, as ComfyUI's `post_prompt`: the number counter, `front`,
//! caller-chosen prompt ids, validation, the queue, and the injected rejection.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::respond;
use crate::config::Protocol;
use crate::queue::QueueItem;
use crate::shared::{Shared, lock};
use crate::timeline::TimelineEvent;
use crate::validate::{Context, Verdict, injected_rejection, validate_prompt};

/// Extra-data keys ComfyUI keeps out of the queue and history.
const SENSITIVE: &[&str] = &["auth_token_comfy_org", "api_key_comfy_org"];

pub(crate) fn get_prompt(shared: &Shared) -> Response {
    let remaining = lock(&shared.state).queue.remaining();
    respond::ok_json(&json!({"exec_info": {"queue_remaining": remaining}}))
}

fn no_prompt() -> Response {
    let error = json!({"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}});
    respond::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "node_errors": {}}),
    )
}

/// 2026 servers take a client's `prompt_id` only as a canonical lowercase UUID (`str(uuid)`:
/// 8-4-4-4-12 lowercase hex digits, any version).
pub(crate) fn is_canonical_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| {
            g.len() == len && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// The 400 a 2026 server gives a `prompt_id` that is not a canonical UUID. NEWER.md gives the
/// status and the type, and says the error shape is that of `errors/` (`error` with `type`,
/// `message`, `details`, `extra_info`, and empty `node_errors`); it is silent on the message
/// and details texts, so these are the simulator's own.
fn invalid_prompt_id(given: &str) -> Response {
    let error = json!({
        "type": "invalid_prompt_id",
        "message": "Invalid prompt_id",
        "details": format!("prompt_id must be a canonical lowercase UUID, got {}", crate::pyjson::repr(&Value::String(given.to_owned()))),
        "extra_info": {},
    });
    respond::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "node_errors": {}}),
    )
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `float(x)` for a caller-given `number`.
fn py_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn post_prompt(shared: &Arc<Shared>, body: &[u8]) -> Response {
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return respond::internal_error();
    };
    let body = match parsed {
        Value::Object(body) => body,
        // `"number" in json_data` works on lists and strings too: counted, then no prompt.
        Value::Array(_) | Value::String(_) => {
            lock(&shared.state).number += 1;
            return no_prompt();
        }
        _ => return respond::internal_error(),
    };
    let number = match body.get("number") {
        Some(given) => match py_float(given).and_then(serde_json::Number::from_f64) {
            Some(n) => Value::Number(n),
            None => return respond::internal_error(),
        },
        None => {
            let mut state = lock(&shared.state);
            let n = state.number;
            state.number += 1;
            let front = body.get("front").is_some_and(truthy);
            json!(if front { -n } else { n })
        }
    };
    let Some(prompt) = body.get("prompt") else {
        return no_prompt();
    };
    let prompt_id = body
        .get("prompt_id")
        .map(crate::pyjson::str)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if shared.protocol == Protocol::Y2026 && !is_canonical_uuid(&prompt_id) {
        return invalid_prompt_id(&prompt_id);
    }
    let mut prompt = match prompt {
        Value::Object(p) => p.clone(),
        // Iterating an empty list or string finds no outputs; anything else makes ComfyUI raise.
        Value::Array(a) if a.is_empty() => Map::new(),
        Value::String(s) if s.is_empty() => Map::new(),
        _ => return respond::internal_error(),
    };
    let cx = Context {
        catalogue: &shared.catalogue,
        models: &shared.models,
        dirs: &shared.dirs,
    };
    let targets = body
        .get("partial_execution_targets")
        .and_then(Value::as_array)
        .map(Vec::as_slice);
    let Ok(verdict) = validate_prompt(&mut prompt, targets, &cx) else {
        return respond::internal_error();
    };
    let mut extra_data = match body.get("extra_data") {
        None => Map::new(),
        Some(Value::Object(e)) => e.clone(),
        Some(_) => return respond::internal_error(),
    };
    if let Some(client_id) = body.get("client_id") {
        extra_data.insert("client_id".to_owned(), client_id.clone());
    }
    let (outputs, node_errors) = match verdict {
        Verdict::Rejected { error, node_errors } => {
            return respond::json(
                StatusCode::BAD_REQUEST,
                &json!({"error": error, "node_errors": node_errors}),
            );
        }
        Verdict::Accepted {
            outputs,
            node_errors,
        } => (outputs, node_errors),
    };
    if lock(&shared.faults).take_reject()
        && let Some(first) = outputs.first()
        && let Verdict::Rejected { error, node_errors } = injected_rejection(&prompt, first)
    {
        return respond::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "node_errors": node_errors}),
        );
    }
    let mut sensitive = Vec::new();
    for key in SENSITIVE {
        if let Some(v) = extra_data.remove(*key) {
            sensitive.push(((*key).to_owned(), v.as_str().unwrap_or_default().to_owned()));
        }
    }
    shared.timeline.record_sensitive(&prompt_id, sensitive);
    shared.timeline.record_prefixes(&prompt_id, &prompt);
    let item = QueueItem {
        created_ms: crate::worker::now_ms(),
        started_ms: 0,
        number: number.clone(),
        prompt_id: prompt_id.clone(),
        prompt,
        extra_data,
        outputs,
    };
    {
        let mut state = lock(&shared.state);
        state.queue.put(item);
        shared.timeline.record(&prompt_id, TimelineEvent::Queued);
        shared.queue_updated(&state);
    }
    shared.work.notify_one();
    tracing::debug!(prompt_id = %prompt_id, "prompt queued");
    respond::ok_json(&json!({"prompt_id": prompt_id, "number": number, "node_errors": node_errors}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_lowercase_uuids_are_prompt_ids_in_2026() {
        assert!(is_canonical_uuid("0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9a11"));
        assert!(is_canonical_uuid("00000000-0000-0000-0000-000000000000"));
        for bad in [
            "0B7A2F44-9C1E-4F4E-8A53-2D7C1F0E9A11",
            "0b7a2f449c1e4f4e8a532d7c1f0e9a11",
            "{0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9a11}",
            "0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9a1",
            "0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9a11-",
            "0b7a2f44-9c1e-4f4e-8a53-2d7c1f0e9g11",
            "suite-0123456789abcdef-00ff00ff",
            "",
        ] {
            assert!(!is_canonical_uuid(bad), "{bad}");
        }
    }
}
