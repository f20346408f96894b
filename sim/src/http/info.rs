//! What the server says about itself: `/object_info` (with live image and model lists) and
//! `/models`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::respond;
use crate::recorded::MODEL_FOLDERS;
use crate::shared::Shared;

/// The whole catalogue, or `{class: ...}` for one class (`{}` when unknown, as recorded).
pub(crate) fn object_info(shared: &Shared, class: Option<&str>) -> Response {
    let served = shared
        .catalogue
        .served(class, &shared.dirs.input, &shared.models);
    respond::ok_json(&Value::Object(served))
}

fn folders(shared: &Shared) -> Vec<String> {
    let mut all: Vec<String> = MODEL_FOLDERS.iter().map(|f| (*f).to_owned()).collect();
    for folder in shared.models.keys() {
        if !all.contains(folder) {
            all.push(folder.clone());
        }
    }
    all
}

pub(crate) fn models(shared: &Shared) -> Response {
    respond::ok_json(&Value::Array(
        folders(shared).into_iter().map(Value::String).collect(),
    ))
}

pub(crate) fn model_folder(shared: &Shared, folder: &str) -> Response {
    if !folders(shared).iter().any(|f| f == folder) {
        return respond::empty(StatusCode::NOT_FOUND);
    }
    let mut names = shared.models.get(folder).cloned().unwrap_or_default();
    names.sort();
    respond::ok_json(&Value::Array(
        names.into_iter().map(Value::String).collect(),
    ))
}
